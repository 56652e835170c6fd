"""What every task kind shares: the Dataset, the common defaults, value checks, class counts,
targets, normalisation and the selection of inputs by class.

Every check raises :class:`widebayes.errors.InputError` naming the ``task.<key>`` at fault.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from widebayes.errors import InputError


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
MAX_INPUTS = 2**31 - 1  # rows and input dimensions must index as int32 on the accelerator
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
MAX_CLASSES = {"mnist": 10, "cifar10": 10, "xor": 2}
RNG_ROLES = ("inputs", "labels", "test_inputs", "test_labels", "train_order", "test_order",
             "projection")


# ----------------------------------------------------------------------------- value checks


def check_int(cfg: dict, key: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``cfg[key]`` as an int (bools refused), in ``[minimum, maximum]``."""
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"must be an integer, got {value!r}", key=f"task.{key}")
    if minimum is not None and value < minimum:
        raise InputError(f"must be >= {minimum}, got {value}", key=f"task.{key}")
    if maximum is not None and value > maximum:
        raise InputError(f"must be <= {maximum}, got {value}", key=f"task.{key}")
    return int(value)


def check_real(cfg: dict, key: str, minimum: float | None = None) -> float:
    """``cfg[key]`` as a finite float, at least ``minimum``."""
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise InputError(f"must be a finite number, got {value!r}", key=f"task.{key}")
    if minimum is not None and value < minimum:
        raise InputError(f"must be >= {minimum}, got {value}", key=f"task.{key}")
    return float(value)


def check_bool(cfg: dict, key: str) -> bool:
    if not isinstance(cfg[key], bool):
        raise InputError(f"must be true or false, got {cfg[key]!r}", key=f"task.{key}")
    return cfg[key]


def check_common(cfg: dict) -> None:
    """Validate the keys every kind shares (``num_train`` may be None only for npz)."""
    if cfg["num_train"] is not None or cfg["kind"] != "npz":
        check_int(cfg, "num_train", 1, MAX_INPUTS)
    if cfg["num_test"] is not None:
        check_int(cfg, "num_test", 0, MAX_INPUTS)
    check_int(cfg, "seed", 0)
    check_real(cfg, "y_plus")
    check_real(cfg, "y_minus")
    check_bool(cfg, "normalize")
    if cfg["targets"] not in ("onehot", "binary"):
        raise InputError(f"must be 'onehot' or 'binary', got {cfg['targets']!r}",
                         key="task.targets")
    cfg["class_ratios"] = class_ratios(cfg)


def class_ratios(cfg: dict) -> np.ndarray | None:
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
    if abs(math.fsum(ratios) - 1.0) > RATIO_TOLERANCE:
        raise InputError(f"must sum to 1 (within 1e-9), sum is {math.fsum(ratios)!r}",
                         key="task.class_ratios")
    return np.asarray(ratios, dtype=np.float64)


def num_classes(cfg: dict) -> int:
    """Number of classes: ``len(class_ratios)``, else ``num_classes`` (checked per kind)."""
    ratios, kind = cfg["class_ratios"], cfg["kind"]
    if ratios is not None and "num_classes" in cfg["_given"] and cfg["num_classes"] != len(ratios):
        raise InputError(f"is {cfg['num_classes']!r} but class_ratios has {len(ratios)} entries",
                         key="task.num_classes")
    k = len(ratios) if ratios is not None else check_int(cfg, "num_classes", 1, MAX_INPUTS)
    if k > MAX_CLASSES.get(kind, k):
        raise InputError(f"{kind} allows at most {MAX_CLASSES[kind]} classes, got {k}",
                         key="task.class_ratios" if ratios is not None else "task.num_classes")
    if kind == "xor" and k != 2:
        raise InputError(f"xor has exactly 2 classes, got {k}", key="task.num_classes")
    return k


def num_outputs(cfg: dict, k: int) -> int:
    """Outputs of the network: ``k`` one-hot targets, or 1 binary output (needs ``k = 2``)."""
    if cfg["targets"] == "binary":
        if k != 2:
            raise InputError(f"'binary' needs exactly 2 classes, got {k}", key="task.targets")
        return 1
    return k


def input_dim(cfg: dict, maximum: int | None = None) -> int:
    """``input_dim``, a positive int no larger than ``maximum`` (the raw image dimension)."""
    dim = check_int(cfg, "input_dim", 1, MAX_INPUTS)
    if maximum is not None and dim > maximum:
        raise InputError(f"must be <= {maximum} (the raw {cfg['kind']} dimension; a smaller "
                         f"value projects at random), got {dim}", key="task.input_dim")
    return dim


# ----------------------------------------------------------------------------- shared pieces


def rng(cfg: dict, role: str) -> np.random.Generator:
    """An independent generator per role, from ``seed`` (explicit, no global seeding)."""
    return np.random.default_rng([cfg["seed"], RNG_ROLES.index(role)])


def class_counts(ratios: np.ndarray, total: int) -> np.ndarray:
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


def block_labels(ratios: np.ndarray, total: int) -> np.ndarray:
    """Labels in blocks, class 0 first, with the exact counts of :func:`class_counts`."""
    counts = class_counts(ratios, total)
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def targets(labels: np.ndarray, k: int, cfg: dict) -> np.ndarray:
    """One-hot targets (``y_plus`` own class, ``y_minus`` elsewhere) or one binary output."""
    y_plus, y_minus = float(cfg["y_plus"]), float(cfg["y_minus"])
    if num_outputs(cfg, k) == 1:
        return np.where(labels == 0, y_plus, y_minus)[:, None].astype(np.float64)
    Y = np.full((len(labels), k), y_minus, dtype=np.float64)
    Y[np.arange(len(labels)), labels] = y_plus
    return Y


def normalize(X: np.ndarray) -> np.ndarray:
    """Rescale every row to norm ``sqrt(N0)``, so that ``|x|^2 / N0 = 1``."""
    with np.errstate(over="ignore"):  # an overflowing norm is refused below
        norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InputError("an input is all zeros and cannot be rescaled to norm sqrt(N0); "
                         "set normalize = false", key="task.normalize")
    if not np.all(np.isfinite(norms)):
        raise InputError("an input's norm overflows (entries near the largest float); "
                         "rescale the data or set normalize = false", key="task.normalize")
    return X * (np.sqrt(X.shape[1]) / norms)


def empty_inputs(dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, dim)), np.zeros(0, dtype=np.int64)


def select(labels: np.ndarray, order: np.ndarray, k: int, ratios, total: int, key: str,
           source: str) -> np.ndarray:
    """Indices of ``total`` items of classes ``< k``, taken in ``order``.

    Without ``ratios`` the first ``total`` eligible items; with ``ratios`` the exact class
    counts, in blocks (class 0 first).
    """
    order = order[labels[order] < k]
    if ratios is None:
        check_available(total, len(order), key, source)
        return order[:total]
    counts = class_counts(ratios, total)
    parts = [order[labels[order] == c] for c in range(k)]
    for c, (n, part) in enumerate(zip(counts, parts)):
        check_available(int(n), len(part), key, f"{source}, class {c}")
    return np.concatenate([part[:n] for n, part in zip(counts, parts)]).astype(np.int64)


def check_available(wanted: int, available: int, key: str, source: str) -> None:
    if wanted > available:
        raise InputError(f"asks for {wanted} inputs but only {available} are available "
                         f"({source})", key=key)
