"""Outlier neurons of a sampled non-lazy ReLU network on any task, read as the condensate of
THEORY.md 1.5 (the ReLU row of Fig. 6, which has no theory yet).

The condensation picture says: the conjugate field ``Lambda = (Y - f) / T`` sits at the margin,
``lambda* = sigma_a^2 sup_v |Lambda^T relu(v)|^2 / v^T C0^{-1} v = 1``, and a few outlier neurons
carry readouts ``a_i = sigma_a^2 Lambda^T relu(z_i)`` (stationarity of their action) with ``z_i``
along a maximiser of that ratio.  On a class-structured task each outlier codes one class and only
the mass per class ``sum |a_i|^2 / N`` is fixed.  This study measures each statement on a run:

* the field from the run's mean training output, and its margin (``meanfield.relu_margin``, started
  also from the outliers' own directions);
* per outlier (readout ``|a|^2`` above ``--threshold`` times the median, i.e. the report's
  ``diagnostics.codes.readout_outliers`` at the fixed norm ratio ``sqrt(threshold)``): the classes
  it is active on, ``|a - sigma_a^2 Lambda^T phi| / |a|``, and its ratio ``R`` along its own
  activations with the negative preactivations (not stored: ``phi = relu(z)``) at the values that
  maximise ``R`` (:func:`ratio_given_active`; an upper bound of ``R`` at the sampled ``z``, a lower
  bound of ``lambda*``);
* the outlier mass per class (``diagnostics.readout.outlier_mass_per_draw``: an outlier counts for
  each class of its code), the number of outliers and the quantiles of their ``|a|^2``, over
  the draws (a condensate of O(1) neurons has ``|a|^2`` growing like N; a tail of the single-neuron
  measure has a number of outliers growing like N at fixed ``|a|^2``).

``python -m widebayes.studies.relu_condensation runs/fig6-relu/posterior.nc [--threshold 30]``
(a few seconds).  What it found on the Fig. 6 ReLU run: README "Fig. 6 at the paper's parameters".
"""

from __future__ import annotations

import argparse
import tomllib
from typing import NamedTuple

import numpy as np
from scipy.optimize import lsq_linear

from widebayes.codes import class_means, code_ids, default_threshold
from widebayes.diagnostics.codes import readout_outliers
from widebayes.diagnostics.readout import outlier_mass_per_draw
from widebayes.theory.nonlazy.meanfield import relu_margin


def ratio_given_active(phi, Lam, C0_inv_chol, sigma_a2: float):
    """``max R(v)`` over the ``v`` with ``relu(v) = phi``: the inactive entries (``phi = 0``) at the
    nonpositive values that minimise ``v^T C0^{-1} v`` (bounded least squares with ``C0^{-1} = R^T R``).
    Returns ``(R, v)``."""
    phi = np.asarray(phi, dtype=np.float64)
    active = phi > 0
    R = C0_inv_chol
    v = phi.copy()
    if (~active).any():
        res = lsq_linear(R[:, ~active], -R[:, active] @ phi[active], bounds=(-np.inf, 0.0))
        v[~active] = res.x
    Rv = R @ v
    return sigma_a2 * float(np.sum((Lam.T @ phi) ** 2)) / float(Rv @ Rv), v


class Outlier(NamedTuple):
    chain: int
    neuron: int
    mass: float  # |a|^2 / N at the last draw
    class_means: np.ndarray  # mean activation per class
    stationarity: float  # |a - sigma_a^2 Lambda^T phi| / |a|
    ratio: float  # ratio_given_active


class Condensation(NamedTuple):
    margin: list  # per chain: lambda* of the chain's field
    outliers: list  # Outlier records at each chain's last draw
    mass_per_class: np.ndarray  # (chain, class): mean over draws of sum_{outliers coding c} |a|^2 / N
    count: np.ndarray  # (chain,): outliers per draw, mean over draws
    outlier_square: np.ndarray  # (chain, 3): 5%, 50% and 95% quantiles of the outliers' |a|^2 over draws


def analyse(idata, threshold: float = 30.0, seed: int = 0) -> Condensation:
    """The measurements of the module docstring on a posterior (``arviz.InferenceData`` with
    ``representations.phi_L``: a one-hidden-layer run)."""
    cfg = tomllib.loads(idata.posterior.attrs["config"])
    net = cfg["network"]
    T = float(net["temperature"])
    a = np.asarray(idata.posterior.a.values, dtype=np.float64)  # chain, draw, neuron, output
    phi = np.asarray(idata.representations.phi_L.values, dtype=np.float64)  # chain, draw, neuron, train
    X = np.asarray(idata.observed_data.X_train.values, dtype=np.float64)
    Y = np.asarray(idata.observed_data.y_train.values, dtype=np.float64)
    labels = np.asarray(idata.observed_data.labels_train.values)
    f = np.asarray(idata.posterior.f_train.values, dtype=np.float64)
    N = a.shape[2]
    sigma_a2 = float(net["sigma_a2"])
    C0 = float(net.get("sigma_w2", 1.0)) * X @ X.T / X.shape[1]
    R = np.linalg.cholesky(np.linalg.inv(C0)).T  # C0^{-1} = R^T R
    num_classes = int(labels.max()) + 1
    code_threshold = default_threshold(net["activation"], float(net.get("sigma_w2", 1.0)))
    margins, outliers, masses, counts, squares = [], [], [], [], []
    for c in range(a.shape[0]):
        Lam = (Y - f[c].mean(0)) / T
        sq = np.sum(a[c] ** 2, axis=-1)  # draw, neuron
        is_out = readout_outliers(a[c], ratio=np.sqrt(threshold))
        starts = []
        for i in np.flatnonzero(is_out[-1]):
            ratio, v = ratio_given_active(phi[c, -1, i], Lam, R, sigma_a2)
            starts.append(v)
            rel = np.linalg.norm(a[c, -1, i] - sigma_a2 * Lam.T @ phi[c, -1, i]) / np.linalg.norm(a[c, -1, i])
            outliers.append(Outlier(c, int(i), float(sq[-1, i] / N), class_means(phi[c, -1, i], labels),
                                    float(rel), ratio))
        margins.append(relu_margin(Lam, C0, sigma_a2, num_samples=2000, seed=seed,
                                   starts=np.array(starts) if starts else None))
        ids = code_ids(class_means(phi[c], labels, num_classes), code_threshold)  # (draw, neuron)
        masses.append(outlier_mass_per_draw(a[c], is_out, ids, num_classes).mean(axis=0))
        counts.append(is_out.sum(axis=-1).mean())
        squares.append(np.percentile(sq[is_out], [5, 50, 95]) if is_out.any() else np.full(3, np.nan))
    return Condensation(margins, outliers, np.array(masses), np.array(counts), np.array(squares))


def main(argv=None):
    import arviz as az

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("posterior")
    parser.add_argument("--threshold", type=float, default=30.0,
                        help="an outlier's |a|^2 is above this times the draw's median (default 30)")
    args = parser.parse_args(argv)
    result = analyse(az.from_netcdf(args.posterior), args.threshold)
    for c, lam in enumerate(result.margin):
        q = result.outlier_square[c]
        print(f"chain {c}: lambda* of the field (Y - f) / T = {lam:.3f}; outlier mass per class "
              + " / ".join(f"{m:.3f}" for m in result.mass_per_class[c])
              + f"; {result.count[c]:.1f} outliers per draw, |a|^2 {q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f} "
              "(5% / median / 95%)")
    print("chain neuron |a|^2/N  class means of phi            |a - sigma_a^2 Lambda^T phi|/|a|  R")
    for o in result.outliers:
        means = " ".join(f"{m:6.2f}" for m in o.class_means)
        print(f"{o.chain:5d} {o.neuron:6d} {o.mass:7.3f}  {means:28s} {o.stationarity:10.3f}"
              f"                  {o.ratio:.3f}")


if __name__ == "__main__":
    main()
