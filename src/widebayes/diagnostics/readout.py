"""Readout weights: pooled histograms, code clusters, outliers against the bulk, theory densities.

The readout posterior of one neuron (paper, "Analog/Redundant/Sparse coding scheme"; THEORY.md
1.3-1.5b) is Gaussian ``N(0, U)`` for linear networks, a weighted sum of Dirac deltas
``sum_gamma P_gamma delta(a - a_gamma)`` for sigmoidal networks (each broadened by the finite-P
width of ``q(a | z) = N(., sigma_a^2 I)``), and a bulk delta at ``a0`` plus ``O(1)`` outliers at
``sqrt(N) abar_i`` for ReLU networks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Histogram(NamedTuple):
    """A density histogram: ``density`` integrates to 1 over ``edges``."""

    edges: np.ndarray
    density: np.ndarray


def histogram(values, bins: int = 60, value_range=None) -> Histogram:
    """Density histogram of finite values (empty bins when there are none)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if value_range is None:
        value_range = (values.min(), values.max()) if values.size else (0.0, 1.0)
    lo, hi = value_range
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    density, edges = np.histogram(values, bins=bins, range=(lo, hi), density=values.size > 0)
    return Histogram(edges, density.astype(np.float64))


def readout_histograms(a, mask=None, bins: int = 60, value_range=None) -> list[Histogram]:
    """One density histogram per output of the readout weights, pooled over draws and neurons.

    Parameters
    ----------
    a : array (..., neuron, output)
    mask : bool array (..., neuron), optional
        Neurons to include (e.g. the bulk).
    value_range : (float, float), optional
        Common range for all outputs; default the range of all of ``a``.
    """
    a = np.asarray(a, dtype=np.float64)
    sel = a if mask is None else a[np.asarray(mask)]
    flat = sel.reshape(-1, a.shape[-1])
    if value_range is None and flat.size:
        finite = flat[np.isfinite(flat)]
        value_range = (finite.min(), finite.max()) if finite.size else None
    return [histogram(flat[:, r], bins, value_range) for r in range(a.shape[-1])]


def readout_second_moment(a) -> np.ndarray:
    """``<a a^T>`` per neuron, averaged over draws and neurons: (output, output).

    Same definition as the theory's ``readout_second_moment`` (THEORY.md 1.2).
    """
    a = np.asarray(a, dtype=np.float64)
    flat = a.reshape(-1, a.shape[-1])
    return flat.T @ flat / len(flat)


def readout_norm_per_class(a) -> np.ndarray:
    """``sum_i a_ir^2 / N`` per draw: (..., output); permutation invariant."""
    a = np.asarray(a, dtype=np.float64)
    return np.mean(a**2, axis=-2)


def gaussian_density(grid, mean, var) -> np.ndarray:
    """``N(grid; mean, var)``."""
    grid = np.asarray(grid, dtype=np.float64)
    return np.exp(-0.5 * (grid - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


def theory_readout_density(grid, theory: dict, sigma_a2: float, output: int, bulk_only: bool = False):
    """Theory density of readout component ``output`` on ``grid``, or None.

    From ``theory["codes"]`` (a list of ``{code, fraction, readout}``, optionally ``readout_cov``
    and ``kind``): the mixture ``sum_gamma P_gamma N(a_gamma, v_gamma)`` of the code readouts,
    with ``v_gamma`` the code's ``readout_cov[r, r]`` when given, else ``sigma_a2`` (the width of
    ``q(a | z)``, THEORY.md 1.4b).  With ``bulk_only`` codes of kind ``"outlier"`` are left out
    and the weights renormalised (the histogram of a sparse scheme shows the bulk).  Else from
    ``theory["readout_second_moment"]`` (m x m): the Gaussian ``N(0, <a_r^2>)`` of linear and lazy
    networks (THEORY.md 1.3).

    Returns
    -------
    (ndarray, str) or None
        The density and a label saying which form was used.
    """
    codes = theory.get("codes") if theory else None
    if codes:
        codes = [c for c in codes if not (bulk_only and c.get("kind") == "outlier")]
        total = sum(float(c["fraction"]) for c in codes)
        if codes and total > 0:
            weights = [float(c["fraction"]) / total for c in codes]
            centers = [float(np.asarray(c["readout"], dtype=np.float64)[output]) for c in codes]
            variances = [_code_variance(c, output, sigma_a2) for c in codes]
            density = sum(w * gaussian_density(grid, m, v) for w, m, v in zip(weights, centers, variances))
            return density, "codes: $\\sum_\\gamma P_\\gamma N(a_\\gamma, v_\\gamma)$"
    second = theory.get("readout_second_moment") if theory else None
    if second is not None:
        var = float(np.atleast_2d(np.asarray(second, dtype=np.float64))[output, output])
        if var > 0:
            return gaussian_density(grid, 0.0, var), r"Gaussian $N(0, \langle a_r^2\rangle)$"
    return None


def _code_variance(code: dict, output: int, sigma_a2: float) -> float:
    cov = code.get("readout_cov")
    if cov is not None:
        var = float(np.atleast_2d(np.asarray(cov, dtype=np.float64))[output, output])
        if var > 0:
            return var
    return sigma_a2


class OutlierBulk(NamedTuple):
    """Sparse schemes: outlier neurons against the bulk.

    Attributes
    ----------
    num_outliers : float
        Mean over draws.
    outlier_mass : ndarray (class,)
        Mean over draws of ``sum_{i outlier coding c} |a_i|^2 / N`` (an outlier codes the classes
        of its code; one coding several classes counts for each).
    bulk_mean : ndarray (output,)
        ``a0``, the mean readout of the bulk neurons.
    bulk_sd : ndarray (output,)
    outlier_codes : dict
        Code string -> mean number of outliers with that code per draw.
    """

    num_outliers: float
    outlier_mass: np.ndarray
    bulk_mean: np.ndarray
    bulk_sd: np.ndarray
    outlier_codes: dict


def outlier_bulk(a, outliers, ids, num_classes: int) -> OutlierBulk:
    """Outlier masses per class and the bulk readout (THEORY.md 1.5b, ``outlier_mass``).

    Parameters
    ----------
    a : array (..., neuron, output)
    outliers : bool array (..., neuron)
    ids : int array (..., neuron)
        Codes (bit c set when class c activates the neuron).
    num_classes : int
    """
    from widebayes.diagnostics.codes import code_string

    a = np.asarray(a, dtype=np.float64)
    outliers, ids = np.asarray(outliers, bool), np.asarray(ids)
    draws = int(np.prod(outliers.shape[:-1]))
    mass = outlier_mass_per_draw(a, outliers, ids, num_classes).reshape(draws, num_classes).mean(axis=0)
    bulk = a[~outliers]
    codes, counts = np.unique(ids[outliers], return_counts=True)
    return OutlierBulk(float(outliers.sum() / draws), mass, bulk.mean(axis=0),
                       bulk.std(axis=0),
                       {code_string(c, num_classes): float(n / draws) for c, n in zip(codes, counts)})


def outlier_mass_per_draw(a, outliers, ids, num_classes: int) -> np.ndarray:
    """``sum_{i outlier coding c} |a_i|^2 / N`` per draw and class (THEORY.md 1.5b): (..., class).

    The prediction of the sparse scheme is this mass, ``rho_c K_c``, not the number of outliers (a
    zero mode). An outlier codes the classes of its code (bit c of ``ids``); one coding several
    classes counts for each; neurons with ``ids < 0`` count for none.

    Parameters
    ----------
    a : array (..., neuron, output)
    outliers : bool array (..., neuron)
    ids : int array (..., neuron)
    num_classes : int
    """
    a = np.asarray(a, dtype=np.float64)
    outliers, ids = np.asarray(outliers, bool), np.asarray(ids)
    sq = np.sum(a**2, axis=-1) / a.shape[-2]
    return np.stack([np.sum(np.where(outliers & ((ids >> c) & 1 == 1) & (ids >= 0), sq, 0.0), axis=-1)
                     for c in range(num_classes)], axis=-1)
