"""Coding schemes: which classes activate each neuron, and what kind of scheme the population uses.

What a code is (class means, code ids and labels, the threshold rule) is defined one floor down, in
:mod:`widebayes.codes`, and re-exported here.  This module holds what is measured on samples
(van Meegen & Sompolinsky, "Coding schemes in neural networks learning classification tasks",
Table 1; THEORY.md 1.4b, 1.5b):

- The *coding scheme* is the collection of codes in the population, with the fraction of
  neurons using each.  It is *sparse* when a few outlier neurons carry readout weights
  ``O(sqrt(N))`` times the bulk's (:func:`readout_outliers`), *redundant* when the readout
  vectors cluster by code (:func:`within_code_variance` small: many neurons share one readout
  vector ``a_gamma``), and *analog* otherwise (a continuum of readout strengths).

All functions are NumPy functions of arrays; leading axes (chain, draw) broadcast.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.activations import PRIOR_SD_ABOVE  # noqa: F401  (re-exported)
from widebayes.codes import (  # noqa: F401
    THRESHOLD_RULE,
    class_means,
    code_id_of,
    code_ids,
    code_of_means,
    code_string,
    default_threshold,
)

#: a neuron is an outlier when |a_i| > max(OUTLIER_FACTOR sqrt(N), OUTLIER_MIN_RATIO) median |a|
OUTLIER_FACTOR = 0.5
OUTLIER_MIN_RATIO = 4.0
#: a scheme is redundant when at most this fraction of the readout variance is within codes
REDUNDANT_MAX_WITHIN = 0.2
#: a code is "shared" when it holds at least this fraction of the neurons
SHARED_MIN_FRACTION = 0.05
#: a scheme with outliers is sparse when they are at most this fraction of the neurons
SPARSE_MAX_FRACTION = 0.1


def code_fractions(ids, codes) -> np.ndarray:
    """Fraction of neurons using each code, per draw.

    Parameters
    ----------
    ids : int array (..., neuron)
    codes : sequence of int

    Returns
    -------
    ndarray (..., code)
    """
    ids = np.asarray(ids)
    if not len(codes):
        return np.zeros((*ids.shape[:-1], 0))
    return np.stack([np.mean(ids == c, axis=-1) for c in codes], axis=-1)


def codes_by_use(ids) -> list[int]:
    """The codes present (ignoring -1), most used first (ties: smaller id first)."""
    ids = np.asarray(ids).ravel()
    present, counts = np.unique(ids[ids >= 0], return_counts=True)
    order = np.lexsort((present, -counts))
    return [int(c) for c in present[order]]


def neuron_strength(phi) -> np.ndarray:
    """Mean squared activity of every neuron over the inputs (the paper's sort key, Fig. 2b)."""
    return np.mean(np.asarray(phi, dtype=np.float64) ** 2, axis=-1)


def order_neurons(ids, strength, codes: list[int]) -> np.ndarray:
    """Permutation of the neurons of one draw: by code (in the order of ``codes``), then strength.

    Parameters
    ----------
    ids : int array (neuron,)
    strength : array (neuron,)
        Larger first within a code.
    codes : list of int
        Codes in display order; codes not listed go last.
    """
    rank = {c: r for r, c in enumerate(codes)}
    code_rank = np.array([rank.get(int(c), len(codes)) for c in ids])
    return np.lexsort((-np.asarray(strength), code_rank))


def code_boundaries(ids_sorted) -> list[tuple[int, int, int]]:
    """``(code, start, stop)`` runs of equal codes along sorted neurons."""
    ids_sorted = np.asarray(ids_sorted)
    cuts = np.flatnonzero(np.diff(ids_sorted)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(ids_sorted)]])
    return [(int(ids_sorted[a]), int(a), int(b)) for a, b in zip(starts, stops)]


class CodeSummary(NamedTuple):
    """The coding scheme of one layer, pooled over draws.

    Attributes
    ----------
    codes : list of str
        Codes present, most used first.
    fraction, fraction_sd : ndarray (code,)
        Mean and standard deviation over draws of the fraction of neurons using each code.
    class_means : ndarray (code, class)
        Mean of ``s_ic`` over the neurons (and draws) using each code.
    readout : ndarray (code, output) or None
        Mean readout vector ``a_gamma`` of each code's neurons (feature layer only).
    readout_sd : ndarray (code, output) or None
        Its standard deviation over those neurons (the cluster width).
    threshold : float
    """

    codes: list
    fraction: np.ndarray
    fraction_sd: np.ndarray
    class_means: np.ndarray
    readout: np.ndarray | None
    readout_sd: np.ndarray | None
    threshold: float


def summarize_codes(ids, s, threshold: float, a=None) -> CodeSummary:
    """Codes present, their neuron fractions, class means and (with ``a``) readout clusters.

    Parameters
    ----------
    ids : int array (..., neuron)
    s : array (..., neuron, class)
    threshold : float
    a : array (..., neuron, output), optional
        Readout weights of the same draws.
    """
    ids, s = np.asarray(ids), np.asarray(s, dtype=np.float64)
    m = s.shape[-1]
    codes = codes_by_use(ids)
    frac = code_fractions(ids.reshape(-1, ids.shape[-1]), codes)
    means = np.stack([s[ids == c].mean(axis=0) for c in codes]) if codes else np.zeros((0, m))
    readout = readout_sd = None
    if a is not None and codes:
        a = np.asarray(a, dtype=np.float64)
        readout = np.stack([a[ids == c].mean(axis=0) for c in codes])
        readout_sd = np.stack([a[ids == c].std(axis=0) for c in codes])
    return CodeSummary([code_string(c, m) for c in codes], frac.mean(axis=0), frac.std(axis=0),
                       means, readout, readout_sd, float(threshold))


def code_agreement(ids_a, ids_b) -> float:
    """Fraction of neurons (and draws) whose codes agree, e.g. on train and on test inputs."""
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    valid = (ids_a >= 0) & (ids_b >= 0)
    return float(np.mean(ids_a[valid] == ids_b[valid])) if valid.any() else float("nan")


# ---------------------------------------------------------------------------- classification
def readout_norms(a) -> np.ndarray:
    """``|a_i|``, the Euclidean norm of each neuron's readout vector: (..., neuron)."""
    return np.linalg.norm(np.asarray(a, dtype=np.float64), axis=-1)


def outlier_ratio_threshold(width: int) -> float:
    """``max(OUTLIER_FACTOR sqrt(N), OUTLIER_MIN_RATIO)``: outliers are O(sqrt(N)) x the bulk."""
    return max(OUTLIER_FACTOR * np.sqrt(width), OUTLIER_MIN_RATIO)


def readout_outliers(a, width: int | None = None, ratio: float | None = None) -> np.ndarray:
    """Outlier neurons: ``|a_i| > ratio * median_j |a_j|`` in the same draw, by default
    ``ratio = outlier_ratio_threshold(N)``.

    The sparse scheme of ReLU networks has a few neurons whose readout is ``sqrt(N) abar_i``
    against an O(1) bulk (paper, "Sparse coding scheme"; THEORY.md 1.5b).

    Parameters
    ----------
    a : array (..., neuron, output)
    width : int, optional
        N; default the size of the neuron axis.
    ratio : float, optional
        A fixed ratio instead (outliers that do not grow like sqrt(N): the ReLU tail at finite P,
        ``studies.relu_condensation``).

    Returns
    -------
    bool array (..., neuron)
    """
    norms = readout_norms(a)
    N = norms.shape[-1] if width is None else width
    median = np.median(norms, axis=-1, keepdims=True)
    return norms > (outlier_ratio_threshold(N) if ratio is None else ratio) * median


def within_code_variance(a, ids, exclude=None) -> np.ndarray:
    """Fraction of the readout variance left within codes, per draw.

    ``W = sum_gamma sum_{i in gamma} |a_i - abar_gamma|^2 / sum_i |a_i - abar|^2``: near 0 when
    the readout vectors sit on a few points ``a_gamma`` shared by many neurons (redundant), about
    ``1 - 2/pi`` when Gaussian readouts are cut into sign cones (analog).

    Parameters
    ----------
    a : array (..., neuron, output)
    ids : int array (..., neuron)
    exclude : bool array (..., neuron), optional
        Neurons left out (outliers).

    Returns
    -------
    ndarray (...)
    """
    a = np.asarray(a, dtype=np.float64)
    ids = np.asarray(ids)
    lead = ids.shape[:-1]
    a2, ids2 = a.reshape(-1, *a.shape[-2:]), ids.reshape(-1, ids.shape[-1])
    ex = np.zeros(ids2.shape, bool) if exclude is None else np.asarray(exclude).reshape(ids2.shape)
    out = np.array([_within_one(x[~e], i[~e]) for x, i, e in zip(a2, ids2, ex)])
    return out.reshape(lead)


def _within_one(a, ids) -> float:
    total = np.sum((a - a.mean(axis=0)) ** 2)
    if total <= 0 or len(a) < 2:
        return float("nan")
    within = sum(np.sum((a[ids == c] - a[ids == c].mean(axis=0)) ** 2) for c in np.unique(ids))
    return float(within / total)


def shared_fraction(ids, min_fraction: float = SHARED_MIN_FRACTION) -> np.ndarray:
    """Fraction of neurons whose code is used by at least ``min_fraction`` of the neurons, per draw."""
    ids = np.asarray(ids)
    flat = ids.reshape(-1, ids.shape[-1])
    out = []
    for row in flat:
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        out.append(np.mean(counts[inverse] >= min_fraction * len(row)))
    return np.array(out).reshape(ids.shape[:-1])


class SchemeClassification(NamedTuple):
    """Analog / redundant / sparse, with the numbers behind the call.

    Attributes
    ----------
    scheme : str
        The majority over draws.
    agreement : float
        Fraction of draws classified as ``scheme``.
    per_draw_counts : dict
        How many draws got each label.
    num_outliers : float
        Mean over draws of the number of outlier neurons.
    outlier_ratio : float
        Median over draws of ``max |a_i| / median |a_i|`` (compare ``outlier_ratio_threshold``).
    ratio_threshold : float
    within_code_variance : float
        Median over draws (outliers excluded).
    shared_fraction : float
        Mean over draws.
    num_shared_codes : float
        Mean over draws of the number of codes used by >= SHARED_MIN_FRACTION of the neurons.
    """

    scheme: str
    agreement: float
    per_draw_counts: dict
    num_outliers: float
    outlier_ratio: float
    ratio_threshold: float
    within_code_variance: float
    shared_fraction: float
    num_shared_codes: float


def classify_draws(a, ids, width: int | None = None) -> np.ndarray:
    """Scheme label of every draw.

    Rules, in order: *sparse* when 1 <= #outliers <= SPARSE_MAX_FRACTION N; *redundant* when the
    within-code readout variance (outliers excluded) is at most REDUNDANT_MAX_WITHIN; else *analog*.

    Parameters
    ----------
    a : array (..., neuron, output)
    ids : int array (..., neuron)

    Returns
    -------
    str array (...)
    """
    out = readout_outliers(a, width)
    n_out = out.sum(axis=-1)
    N = out.shape[-1]
    W = within_code_variance(a, ids, exclude=out)
    sparse = (n_out >= 1) & (n_out <= SPARSE_MAX_FRACTION * N)
    redundant = ~sparse & (W <= REDUNDANT_MAX_WITHIN)
    return np.where(sparse, "sparse", np.where(redundant, "redundant", "analog"))


def classify_scheme(a, ids, width: int | None = None) -> SchemeClassification:
    """Classify the coding scheme of the feature layer from readouts and codes of many draws.

    Parameters
    ----------
    a : array (..., neuron, output)
    ids : int array (..., neuron)
        Codes (:func:`code_ids`) of the same draws.
    width : int, optional
        N, default the neuron axis size.
    """
    a, ids = np.asarray(a, dtype=np.float64), np.asarray(ids)
    labels = classify_draws(a, ids, width).ravel()
    names, counts = np.unique(labels, return_counts=True)
    scheme = str(names[np.argmax(counts)])
    norms = readout_norms(a).reshape(-1, a.shape[-2])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.max(norms, axis=-1) / np.median(norms, axis=-1)
    out = readout_outliers(a, width)
    flat_ids = ids.reshape(-1, ids.shape[-1])
    n_shared = [np.sum(np.unique(r, return_counts=True)[1] >= SHARED_MIN_FRACTION * len(r)) for r in flat_ids]
    return SchemeClassification(
        scheme, float(counts.max() / counts.sum()), {str(n): int(c) for n, c in zip(names, counts)},
        float(out.sum(axis=-1).mean()), float(np.median(ratio)),
        outlier_ratio_threshold(a.shape[-2] if width is None else width),
        _nanmedian(within_code_variance(a, ids, exclude=out)),
        float(np.mean(shared_fraction(ids))), float(np.mean(n_shared)))


def _nanmedian(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")
