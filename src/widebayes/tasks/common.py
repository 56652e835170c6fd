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
    """Train and test arrays of a task (float64 inputs and targets, int64 labels), and the
    held-out pool: inputs of ``heldout_classes`` (never in training or test), with their
    original class labels, for few-shot learning of new classes (empty without held-out
    classes)."""

    X_train: np.ndarray
    Y_train: np.ndarray
    labels_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    labels_test: np.ndarray
    name: str
    X_heldout: np.ndarray | None = None
    labels_heldout: np.ndarray | None = None


class Split(NamedTuple):
    """What a task kind's builder returns: train and test inputs and labels, the number of
    classes ``k``, targets when the data carries them (npz ``Y``, ``Y_test``; else None: made
    from the labels) and the held-out pool (None without held-out classes)."""

    X_train: np.ndarray
    labels_train: np.ndarray
    X_test: np.ndarray
    labels_test: np.ndarray
    num_classes: int
    Y_train: np.ndarray | None = None
    Y_test: np.ndarray | None = None
    X_heldout: np.ndarray | None = None
    labels_heldout: np.ndarray | None = None


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
CLASS_LIST_KEYS = {"mnist": "digits", "cifar10": "classes"}  # [task] key listing the trained classes
CLASS_SAMPLING = ("pool", "random")
RNG_ROLES = ("inputs", "labels", "test_inputs", "test_labels", "train_order", "test_order",
             "projection", "heldout_order")
HELDOUT_DEFAULTS = {"heldout_classes": [], "heldout_per_class": 100}  # class-labelled kinds


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
    """Number of classes: ``len(digits)`` / ``len(classes)`` (the kind's class list), else
    ``len(class_ratios)``, else ``num_classes`` (checked per kind)."""
    ratios, kind, listed = cfg["class_ratios"], cfg["kind"], class_list(cfg)
    if listed is not None:
        if ratios is not None and len(ratios) != len(listed):
            raise InputError(f"has {len(ratios)} entries but {CLASS_LIST_KEYS[kind]} lists "
                             f"{len(listed)} classes", key="task.class_ratios")
        return len(listed)
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


def class_list(cfg: dict) -> np.ndarray | None:
    """The trained classes as listed by ``digits`` (mnist) or ``classes`` (cifar10), int64 in the
    given order (they become classes ``0 .. k-1`` in that order); None when not given.

    Raises
    ------
    InputError
        Naming the key: not a non-empty list of integers, a repeated or unknown class; naming
        ``task.num_classes`` when it is given too (the list sets the number of classes).
    """
    name = CLASS_LIST_KEYS.get(cfg["kind"])
    value = cfg.get(name) if name else None
    if value is None:
        return None
    key, top = f"task.{name}", MAX_CLASSES[cfg["kind"]]
    if not isinstance(value, (list, tuple)) or len(value) == 0 or any(
            isinstance(c, bool) or not isinstance(c, Integral) for c in value):
        raise InputError(f"must be a non-empty list of class numbers (integers), got {value!r}",
                         key=key)
    if len(set(int(c) for c in value)) != len(value):
        raise InputError(f"lists a class twice: {value!r}", key=key)
    bad = [int(c) for c in value if not 0 <= c < top]
    if bad:
        raise InputError(f"unknown class {bad[0]}: {cfg['kind']} classes are 0 .. {top - 1}", key=key)
    if "num_classes" in cfg.get("_given", ()):
        raise InputError(f"give {name} or num_classes, not both ({name} sets the number of "
                         "classes)", key="task.num_classes")
    return np.asarray([int(c) for c in value], dtype=np.int64)


def trained_classes(cfg: dict, k: int) -> np.ndarray:
    """The original class numbers of the trained classes ``0 .. k-1``: the class list
    (``digits``, ``classes``) when given, else the first ``k`` classes."""
    listed = class_list(cfg)
    return np.arange(k, dtype=np.int64) if listed is None else listed


def relabel(labels: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """Original labels mapped to their position in ``trained`` (class ``0 .. k-1``), -1 for a
    class not trained."""
    table = np.full(max(int(labels.max(initial=0)), int(trained.max())) + 1, -1, dtype=np.int64)
    table[trained] = np.arange(len(trained))
    return table[labels]


def check_class_sampling(cfg: dict) -> str:
    """``class_sampling``: ``"pool"`` (default) or ``"random"``."""
    value = cfg["class_sampling"]
    if value not in CLASS_SAMPLING:
        raise InputError(f"must be one of {list(CLASS_SAMPLING)}, got {value!r}",
                         key="task.class_sampling")
    return value


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
    """Indices of ``total`` items of classes ``0 .. k-1``, taken in ``order``.

    Without ``ratios`` the first ``total`` eligible items; with ``ratios`` the exact class
    counts, in blocks (class 0 first).
    """
    order = order[(labels[order] >= 0) & (labels[order] < k)]
    if ratios is None:
        check_available(total, len(order), key, source)
        return order[:total]
    return select_drawn(labels, order, block_labels(ratios, total), key, source)


def drawn_labels(cfg: dict, k: int, total: int, role: str) -> np.ndarray:
    """Every input's class drawn i.i.d. from the ``role`` generator: with probability
    ``class_ratios`` (``1/k`` each without), so that the class counts vary with the seed
    (``class_sampling = "random"``; the coding-schemes paper's Fig. 6)."""
    gen = rng(cfg, role)
    if cfg["class_ratios"] is None:
        return gen.integers(k, size=total).astype(np.int64)
    return gen.choice(k, size=total, p=cfg["class_ratios"]).astype(np.int64)


def select_drawn(labels: np.ndarray, order: np.ndarray, drawn: np.ndarray, key: str,
                 source: str, names=None) -> np.ndarray:
    """Indices ``idx`` with ``labels[idx] == drawn``: the items of every class taken in
    ``order``, first come first.  ``names[c]`` names class ``c`` in a refusal."""
    idx = np.empty(len(drawn), dtype=np.int64)
    for c in np.unique(drawn):
        where, part = np.flatnonzero(drawn == c), order[labels[order] == c]
        check_available(len(where), len(part), key,
                        f"{source}, class {c if names is None else names[c]}")
        idx[where] = part[:len(where)]
    return idx


def check_available(wanted: int, available: int, key: str, source: str) -> None:
    if wanted > available:
        raise InputError(f"asks for {wanted} inputs but only {available} are available "
                         f"({source})", key=key)


# ----------------------------------------------------------------------------- held-out classes


def heldout_list(cfg: dict) -> np.ndarray:
    """``heldout_classes`` as sorted int64: distinct non-negative integers (empty: none).

    Raises
    ------
    InputError
        Naming ``task.heldout_classes``: not a list of integers, a negative or repeated class.
    """
    key, value = "task.heldout_classes", cfg.get("heldout_classes", [])
    if not isinstance(value, (list, tuple)) or any(
            isinstance(c, bool) or not isinstance(c, Integral) for c in value):
        raise InputError(f"must be a list of class numbers (integers), got {value!r}", key=key)
    classes = np.asarray([int(c) for c in value], dtype=np.int64)
    if len(set(classes.tolist())) != len(classes):
        raise InputError(f"lists a class twice: {value!r}", key=key)
    if np.any(classes < 0):
        raise InputError(f"unknown class {int(classes.min())}: classes are 0, 1, ...", key=key)
    return np.sort(classes)


def heldout_classes(cfg: dict, k: int, known, trained=None) -> np.ndarray:
    """``heldout_classes`` checked against the task: each a ``known`` class (of the kind, or
    found in the archive's labels) and none among the ``trained`` classes (original numbers;
    default the first ``k``, ``0 .. k-1``).  Without ``digits`` / ``classes`` held-out classes
    therefore lie above the trained ones: train on digits 0-4 (``num_classes = 5``), hold out
    5-9; with ``digits = [0, 3, 7]`` any of the other seven may be held out.

    Raises
    ------
    InputError
        Naming ``task.heldout_classes``: as :func:`heldout_list`, an unknown class, every
        trained class held out, or a trained class held out.
    """
    key, classes = "task.heldout_classes", heldout_list(cfg)
    trained = set(range(k) if trained is None else (int(c) for c in trained))
    known = {int(c) for c in known}
    unknown = [int(c) for c in classes if int(c) not in known]
    if unknown:
        raise InputError(f"unknown class {unknown[0]}; this task's classes are "
                         f"{sorted(known) if len(known) <= 20 else f'{min(known)} .. {max(known)}'}",
                         key=key)
    held_trained = sorted(int(c) for c in classes if int(c) in trained)
    if len(held_trained) == len(trained):
        raise InputError(f"holds out every trained class {sorted(trained)}: nothing left to train "
                         "on", key=key)
    if held_trained:
        raise InputError(f"class {held_trained[0]} is trained (trained classes "
                         f"{sorted(trained)}); held-out classes must lie outside them", key=key)
    return classes


def select_heldout(cfg: dict, labels: np.ndarray, classes: np.ndarray, source: str) -> np.ndarray:
    """Indices of ``heldout_per_class`` items of every held-out class (in ``classes`` order),
    each class's taken in a random order of the ``heldout_order`` generator."""
    if len(classes) == 0:
        return np.zeros(0, dtype=np.int64)
    per_class = check_int(cfg, "heldout_per_class", 2, MAX_INPUTS)
    order = rng(cfg, "heldout_order").permutation(len(labels))
    parts = []
    for c in classes:
        part = order[labels[order] == c]
        check_available(per_class, len(part), "task.heldout_per_class", f"{source}, class {c}")
        parts.append(part[:per_class])
    return np.concatenate(parts).astype(np.int64)
