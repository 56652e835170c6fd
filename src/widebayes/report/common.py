"""Small helpers shared by the report's sections: display limits, relative differences, class
boundaries, the theory's arrays, and the way typed section results become report.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from widebayes.diagnostics import kernels as dkern
from widebayes.io import atomic_write, json_value

MAX_SHOWN_INPUTS = 200  # kernels and heatmaps show (and store) at most this many inputs
MAX_SHOWN_NEURONS = 200
MAX_PREDICTOR_PANELS = 3
AGREE_WITHIN = 0.1  # report.md marks agreements within 10 %
SPARSE_SHOWN = 9  # like the paper: the nine most active neurons (plus all outliers) for ReLU


def rel_diff(sample, theory) -> float:
    """``||sample - theory|| / ||theory||`` (Frobenius / absolute value); 0 when both vanish,
    inf when only the theory does."""
    sample, theory = np.asarray(sample, dtype=np.float64), np.asarray(theory, dtype=np.float64)
    if not np.any(theory):
        return 0.0 if not np.any(sample) else float("inf")
    return dkern.relative_difference(sample, theory)


def class_bounds(sorted_labels) -> tuple[list[int], list[int]]:
    """Boundaries ``[0, ..., n]`` of runs of equal labels, and the label of each run."""
    sorted_labels = np.asarray(sorted_labels)
    cuts = np.flatnonzero(np.diff(sorted_labels)) + 1
    bounds = [0, *cuts.tolist(), len(sorted_labels)]
    return bounds, [int(sorted_labels[b]) for b in bounds[:-1]]


def thin_out(order, limit: int = MAX_SHOWN_NEURONS) -> np.ndarray:
    """At most ``limit`` entries of ``order``, evenly spaced (first and last kept)."""
    if len(order) <= limit:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, limit).round().astype(int))]


def theory_array(theory, key):
    """``theory[key]`` as a float64 array, None when there is no theory or no such key."""
    if theory is None or theory.get(key) is None:
        return None
    return np.asarray(theory[key], dtype=np.float64)


def theory_kernels(theory, key, like):
    """The theory's layer kernels under ``key`` when they match the sampled kernels' shape."""
    K = theory_array(theory, key)
    return K if K is not None and K.shape == np.shape(like) else None


# ---------------------------------------------------------------------------------- typed -> JSON
def as_dict(value):
    """A typed section result as report.json's nested layout (arrays stay arrays).

    NamedTuples give their ``to_json()`` when they define one, else their ``_asdict()``;
    dictionaries, lists and tuples are converted element by element.
    """
    if hasattr(value, "to_json"):
        return as_dict(value.to_json())
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_dict(v) for v in value]
    return value


def jsonable(value):
    """Arrays, NumPy scalars, tuples -> lists and floats; NaN and inf -> None (``io.json_value``)."""
    return json_value(value)


def write_text(path: Path, text: str) -> None:
    """Write atomically (a uniquely named temporary file beside it, then rename: ``io.atomic_write``)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
