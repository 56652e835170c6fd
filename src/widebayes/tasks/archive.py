"""The ``npz`` task: a user's archive with ``X``, ``labels`` and optionally ``X_test``,
``labels_test`` (read by :mod:`widebayes.tasks.readers`), checked and selected.

The shapes are checked from the arrays' headers before any data is read, so that
:func:`sizes` can tell how large the task is (and a run be refused if it cannot fit) without
loading the archive.
"""

from __future__ import annotations

import os

import numpy as np

from widebayes.errors import InputError
from widebayes.tasks import readers
from widebayes.tasks.common import empty_inputs, num_classes, select

EXTRAS = {"npz": {"path": None, "num_test": None}}  # num_test None: all of X_test
_LABELS = ("labels", "labels_test")


def npz(cfg: dict):
    """A user ``.npz``: the first ``num_train`` rows of ``X`` (exact class counts with ratios)."""
    X, labels, X_test, labels_test = _arrays(cfg)
    k = _classes(cfg, labels, labels_test)
    P, P_test = _counts(cfg, len(labels), len(labels_test))
    source = f"in {cfg['path']}"
    idx = select(labels, np.arange(len(labels)), k, cfg["class_ratios"], P,
                 "task.num_train", source)
    idx_te = select(labels_test, np.arange(len(labels_test)), k, cfg["class_ratios"], P_test,
                    "task.num_test", source + ", X_test")
    return X[idx], labels[idx], X_test[idx_te], labels_test[idx_te], k


def sizes(cfg: dict) -> tuple[int, int, int, int, int]:
    """``(P, P_test, N0, k, stored)`` before ``X`` is read: ``stored`` is the archive's arrays'
    size in memory (bytes, from their headers); the labels are read to find ``k``."""
    path = path_of(cfg)
    shapes = readers.npz_shapes(path)
    _check_shapes(path, {name: shape for name, (shape, _) in shapes.items()})
    labels = readers.read_npz(path, names=_LABELS)
    labels = {name: _check_labels(path, value, name) for name, value in labels.items()}
    train, test = labels["labels"], labels.get("labels_test", np.zeros(0, np.int64))
    k = _classes(cfg, train, test)
    P, P_test = _counts(cfg, len(train), len(test))
    stored = sum(int(np.prod(shape)) * itemsize for shape, itemsize in shapes.values())
    return P, P_test, shapes["X"][0][1], k, stored


def path_of(cfg: dict) -> str:
    """``task.path``, an existing file."""
    path = cfg["path"]
    if path is None:
        raise InputError("missing; give the .npz file with arrays X and labels", key="task.path")
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise InputError(f"file not found: {path!r}", key="task.path")
    return os.fspath(path)


def _counts(cfg: dict, rows: int, test_rows: int) -> tuple[int, int]:
    """Training and test inputs used: ``num_train``/``num_test``, by default every row."""
    P = rows if cfg["num_train"] is None else cfg["num_train"]
    P_test = test_rows if cfg["num_test"] is None else cfg["num_test"]
    if P == 0:
        raise InputError(f"{cfg['path']} holds no training inputs (X has 0 rows)",
                         key="task.path")
    return P, P_test


def _check_shapes(path: str, shapes: dict) -> None:
    """Arrays present and shaped consistently: X (P, N0), labels (P,), X_test (P', N0),
    labels_test (P',)."""
    for name in ("X", "labels"):
        if name not in shapes:
            raise InputError(f"{path} has no array {name!r} (found {sorted(shapes)})",
                             key="task.path")
    if ("X_test" in shapes) != ("labels_test" in shapes):
        raise InputError(f"{path} must hold both X_test and labels_test, or neither",
                         key="task.path")
    dim = None
    for x_name, l_name in (("X", "labels"), ("X_test", "labels_test")):
        if x_name not in shapes:
            continue
        X, labels = shapes[x_name], shapes[l_name]
        if len(X) != 2 or X[1] == 0 or (dim is not None and X[1] != dim):
            raise InputError(f"{x_name} in {path} must be a (P, N0) array with N0 >= 1"
                             f"{'' if dim is None else f' and N0 = {dim}'}, got shape {X}",
                             key="task.path")
        if labels != X[:1]:
            raise InputError(f"{l_name} in {path} has shape {labels}, {x_name} has "
                             f"{X[0]} rows", key="task.path")
        dim = X[1]


def _arrays(cfg: dict) -> tuple:
    """``X``, ``labels``, ``X_test``, ``labels_test`` (empty when absent), checked."""
    path = path_of(cfg)
    arrays = readers.read_npz(path)
    _check_shapes(path, {name: a.shape for name, a in arrays.items()})
    X, labels = _inputs(path, arrays["X"], "X"), _check_labels(path, arrays["labels"], "labels")
    if "X_test" not in arrays:
        return (X, labels, *empty_inputs(X.shape[1]))
    return (X, labels, _inputs(path, arrays["X_test"], "X_test"),
            _check_labels(path, arrays["labels_test"], "labels_test"))


def _inputs(path: str, X: np.ndarray, name: str) -> np.ndarray:
    """Real, finite inputs as float64."""
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise InputError(f"{name} in {path} must hold real numbers, got {X.dtype}",
                         key="task.path")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise InputError(f"{name} in {path} contains NaN or inf (or numbers beyond float64)",
                         key="task.path")
    return X


def _check_labels(path: str, labels: np.ndarray, name: str) -> np.ndarray:
    """Non-negative integer labels as int64."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{name} in {path} must be integers, got {labels.dtype}",
                         key="task.path")
    if labels.size and labels.min() < 0:
        raise InputError(f"{name} in {path} has negative labels", key="task.path")
    if labels.size and labels.max() > np.iinfo(np.int64).max:
        raise InputError(f"{name} in {path} has labels beyond int64", key="task.path")
    return labels.astype(np.int64)


def _classes(cfg: dict, labels: np.ndarray, labels_test: np.ndarray) -> int:
    """``num_classes`` (default: largest label + 1); every label must lie below it."""
    top = int(max(labels.max(initial=-1), labels_test.max(initial=-1)))
    if cfg["class_ratios"] is None and "num_classes" not in cfg["_given"]:
        cfg = {**cfg, "num_classes": max(top + 1, 1)}
    k = num_classes(cfg)
    if top >= k:
        key = "task.class_ratios" if cfg["class_ratios"] is not None else "task.num_classes"
        raise InputError(f"labels must lie in [0, {k}), found label {top} in {cfg['path']}",
                         key=key)
    return k
