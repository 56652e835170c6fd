"""The ``npz`` task: a user's archive with ``X`` and ``labels`` and/or ``Y``, and optionally
``X_test`` with ``labels_test`` and/or ``Y_test`` (read by :mod:`widebayes.tasks.readers`),
checked and selected.

``Y (P, m)`` and ``Y_test (P', m)`` are arbitrary target matrices (for example four one-hot
digits plus an even/odd output, perspective Fig. 6D): when the archive carries them they are the
targets as given, and ``targets``, ``y_plus``, ``y_minus`` do not apply.  Labels are then
optional; without them every input is class 0 (class-wise diagnostics see one class) and
``class_ratios`` and ``heldout_classes`` cannot be used.

The shapes are checked from the arrays' headers before any data is read, so that
:func:`sizes` can tell how large the task is (and a run be refused if it cannot fit) without
loading the archive.
"""

from __future__ import annotations

import os

import numpy as np

from widebayes.errors import InputError
from widebayes.tasks import readers
from widebayes.tasks.common import (
    HELDOUT_DEFAULTS,
    Split,
    empty_inputs,
    heldout_classes,
    heldout_list,
    num_classes,
    select,
    select_heldout,
)

EXTRAS = {"npz": {"path": None, "num_test": None, **HELDOUT_DEFAULTS}}  # num_test None: all of X_test
_LABELS = ("labels", "labels_test")
_TARGET_KEYS = ("targets", "y_plus", "y_minus")  # made from labels; not with Y


def npz(cfg: dict) -> Split:
    """A user ``.npz``: the first ``num_train`` rows of ``X`` (exact class counts with ratios),
    their targets ``Y`` when the archive holds it, and the held-out pool of ``heldout_classes``
    (``heldout_per_class`` rows of ``X`` of each)."""
    path, arrays = _arrays(cfg)
    X, X_test = arrays["X"], arrays["X_test"]
    labels, labels_test = _labels_of(cfg, arrays)
    k, held = _trained_and_heldout(cfg, labels, labels_test)
    P, P_test = _counts(cfg, int(np.sum(labels < k)), int(np.sum(labels_test < k)))
    source = f"in {cfg['path']}"
    idx = select(labels, np.arange(len(labels)), k, cfg["class_ratios"], P,
                 "task.num_train", source)
    idx_te = select(labels_test, np.arange(len(labels_test)), k, cfg["class_ratios"], P_test,
                    "task.num_test", source + ", X_test")
    idx_ho = select_heldout(cfg, labels, held, source)
    Y, Y_test = arrays.get("Y"), arrays.get("Y_test")
    return Split(X[idx], labels[idx], X_test[idx_te], labels_test[idx_te], k,
                 None if Y is None else Y[idx],
                 None if Y is None else (Y_test[idx_te] if Y_test is not None else Y[:0]),
                 X[idx_ho] if len(held) else None, labels[idx_ho] if len(held) else None)


def sizes(cfg: dict) -> tuple[int, int, int, int, int, int | None]:
    """``(P, P_test, N0, k, stored, m)`` before ``X`` is read: ``stored`` is the archive's
    arrays' size in memory (bytes, from their headers), ``m`` the number of columns of ``Y``
    (None without ``Y``: made from the labels); the labels are read to find ``k``."""
    path = path_of(cfg)
    shapes = readers.npz_shapes(path)
    _check_shapes(path, {name: shape for name, (shape, _) in shapes.items()})
    _check_target_keys(cfg, "Y" in shapes)
    labels = readers.read_npz(path, names=_LABELS)
    labels = {name: _check_labels(path, value, name) for name, value in labels.items()}
    rows = {name: shapes[x][0][0] for name, x in (("labels", "X"), ("labels_test", "X_test")) if x in shapes}
    train, test = (labels.get(name, np.zeros(rows.get(name, 0), np.int64)) for name in _LABELS)
    _labels_of(cfg, labels)  # class_ratios and heldout_classes need labels
    k, _ = _trained_and_heldout(cfg, train, test)
    P, P_test = _counts(cfg, int(np.sum(train < k)), int(np.sum(test < k)))
    stored = sum(int(np.prod(shape)) * itemsize for shape, itemsize in shapes.values())
    m = shapes["Y"][0][1] if "Y" in shapes else None
    return P, P_test, shapes["X"][0][1], k, stored, m


def path_of(cfg: dict) -> str:
    """``task.path``, an existing file."""
    path = cfg["path"]
    if path is None:
        raise InputError("missing; give the .npz file with arrays X and labels (or Y)", key="task.path")
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise InputError(f"file not found: {path!r}", key="task.path")
    return os.fspath(path)


def _counts(cfg: dict, rows: int, test_rows: int) -> tuple[int, int]:
    """Training and test inputs used: ``num_train``/``num_test``, by default every row of a
    trained class."""
    P = rows if cfg["num_train"] is None else cfg["num_train"]
    P_test = test_rows if cfg["num_test"] is None else cfg["num_test"]
    if P == 0:
        raise InputError(f"{cfg['path']} holds no training inputs (X has 0 rows)",
                         key="task.path")
    return P, P_test


def _check_shapes(path: str, shapes: dict) -> None:
    """Arrays present and shaped consistently: X (P, N0) with labels (P,) and/or Y (P, m);
    X_test (P', N0) with the same kinds of targets, labels_test (P',) and/or Y_test (P', m)."""
    if "X" not in shapes:
        raise InputError(f"{path} has no array 'X' (found {sorted(shapes)})", key="task.path")
    if "labels" not in shapes and "Y" not in shapes:
        raise InputError(f"{path} has neither 'labels' nor 'Y' (found {sorted(shapes)}); "
                         f"give class labels, a target matrix Y (P, m), or both", key="task.path")
    for train, test in (("labels", "labels_test"), ("Y", "Y_test")):
        if test in shapes and train not in shapes:
            raise InputError(f"{path} holds {test} but not {train}", key="task.path")
        if train in shapes and ("X_test" in shapes) != (test in shapes):
            raise InputError(f"{path} must hold both X_test and {test}, or neither",
                             key="task.path")
    dim = None
    for x_name, l_name, y_name in (("X", "labels", "Y"), ("X_test", "labels_test", "Y_test")):
        if x_name not in shapes:
            continue
        X = shapes[x_name]
        if len(X) != 2 or X[1] == 0 or (dim is not None and X[1] != dim):
            raise InputError(f"{x_name} in {path} must be a (P, N0) array with N0 >= 1"
                             f"{'' if dim is None else f' and N0 = {dim}'}, got shape {X}",
                             key="task.path")
        if l_name in shapes and shapes[l_name] != X[:1]:
            raise InputError(f"{l_name} in {path} has shape {shapes[l_name]}, {x_name} has "
                             f"{X[0]} rows", key="task.path")
        if y_name in shapes:
            Y, m = shapes[y_name], shapes["Y"][1:2] if len(shapes["Y"]) == 2 else None
            if len(Y) != 2 or Y[0] != X[0] or Y[1] == 0 or (m is not None and Y[1:] != m):
                raise InputError(f"{y_name} in {path} must be a ({X[0]}, m) array, m >= 1"
                                 f"{'' if y_name == 'Y' else ' as in Y'}, with a row per row "
                                 f"of {x_name}; got shape {Y}", key="task.path")
        dim = X[1]


def _check_target_keys(cfg: dict, has_Y: bool) -> None:
    given = [key for key in _TARGET_KEYS if key in cfg["_given"]]
    if has_Y and given:
        raise InputError(f"{cfg['path']} holds the targets Y; {given[0]} does not apply to it",
                         key=f"task.{given[0]}")


def _arrays(cfg: dict) -> tuple[str, dict]:
    """The archive's arrays, checked: ``X``, ``X_test`` (empty when absent), and those of
    ``labels``, ``labels_test``, ``Y``, ``Y_test`` it holds."""
    path = path_of(cfg)
    arrays = readers.read_npz(path)
    _check_shapes(path, {name: a.shape for name, a in arrays.items()})
    _check_target_keys(cfg, "Y" in arrays)
    out = {"X": _reals(path, arrays["X"], "X")}
    out["X_test"] = (_reals(path, arrays["X_test"], "X_test") if "X_test" in arrays
                     else empty_inputs(out["X"].shape[1])[0])
    out.update({name: _check_labels(path, arrays[name], name) for name in _LABELS if name in arrays})
    out.update({name: _reals(path, arrays[name], name) for name in ("Y", "Y_test") if name in arrays})
    return path, out


def _labels_of(cfg: dict, arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` and ``labels_test``; an archive without labels has one class, 0, and then
    ``class_ratios`` and ``heldout_classes`` are refused."""
    if "labels" not in arrays:
        needs = {"class_ratios": cfg["class_ratios"] is not None,
                 "heldout_classes": len(heldout_list(cfg)) > 0}
        for key in (key for key, used in needs.items() if used):
                raise InputError(f"needs class labels; {cfg['path']} holds targets Y without "
                                 f"'labels'", key=f"task.{key}")
    rows = lambda x: 0 if x not in arrays else len(arrays[x])  # noqa: E731
    return tuple(arrays[name] if name in arrays else np.zeros(rows(x), np.int64)
                 for name, x in (("labels", "X"), ("labels_test", "X_test")))


def _trained_and_heldout(cfg: dict, labels: np.ndarray, labels_test: np.ndarray):
    """``(k, held)``: the number of trained classes (default: the largest label that is not
    held out, + 1) and the checked held-out classes (each must occur in the labels)."""
    held = heldout_list(cfg)
    keep, keep_test = labels[~np.isin(labels, held)], labels_test[~np.isin(labels_test, held)]
    if len(held) and not (len(keep) or len(keep_test)):
        raise InputError(f"holds out every class of {cfg['path']}: nothing left to train on",
                         key="task.heldout_classes")
    k = _classes(cfg, keep, keep_test)
    return k, heldout_classes(cfg, k, np.union1d(labels, labels_test))


def _reals(path: str, X: np.ndarray, name: str) -> np.ndarray:
    """Real, finite numbers as float64."""
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
