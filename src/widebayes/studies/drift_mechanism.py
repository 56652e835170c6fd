"""The drift mechanism (perspective Eq. 16) on a sampled run, and tied weights against drift.

:func:`eq16_study` samples a lazy network with Langevin dynamics, stores the feature-layer
activations on the training inputs at every draw, and measures the three consequences of Eq. 16
(:mod:`widebayes.diagnostics.drift_mechanism`) against theory: the part of the activations
orthogonal to the targets has the NNGP's kernel; the part along the targets has the second moment
``G`` of the theory's mean kernel (BPKR: exact for linear networks, THEORY.md 2.6's heuristic for
nonlinear ones); and the orthogonal part decorrelates as the prior's Ornstein-Uhlenbeck process
predicts (one hidden layer).  Beside them the perspective's own measures, ``rho_u``, ``rho_v``,
``rho_{u,Y}``, raw and centred (:func:`widebayes.diagnostics.drift.drift_overlaps`).

:func:`tied_vs_untied` runs the frozen-readout experiment with prior-only dynamics after ``t0``
(no learning signal, :func:`widebayes.studies.frozen_readout.run_frozen_readout`) on the same
deep network with untied and with tied hidden weights.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import drift
from widebayes.diagnostics.drift_mechanism import Eq16Check, eq16_check, prior_residual_overlap


class Eq16Study(NamedTuple):
    check: Eq16Check
    lag_over_prior: np.ndarray  # (lag,) lag in units of tau_prior = sigma_1^2 / T_eff
    raw: drift.DriftOverlaps  # the perspective's definition
    centred: drift.DriftOverlaps
    baseline_u: float
    baseline_v: float
    width: int
    num_train: int


def eq16_study(resolved: dict, max_lag: int, progress: bool = False) -> Eq16Study:
    """Sample ``resolved`` (a lazy network, Langevin) and measure Eq. 16 on its feature layer."""
    from widebayes.sampling import sample_experiment
    from widebayes.theory.bpkr import bpkr_prediction

    out = sample_experiment(resolved, progress=progress)
    exp = out.experiment
    spec, data = exp.spec, exp.data
    Phis = np.asarray(out.result.draws["phi_L"], dtype=np.float64)
    bp = bpkr_prediction(data.X_train, data.Y_train, None, None, spec.activation, spec.layer_variances,
                         spec.sigma_a2, spec.width, exp.T_eff)
    K_prior, K_theory = bp.nngp.train[-1], bp.mean_kernels.train[-1]
    sigma2 = spec.layer_variances[0]
    lag_time = exp.thin * exp.paper_time_per_step("W1") * np.arange(max_lag + 1)
    lag_over_prior = lag_time * exp.T_eff / sigma2
    prior_overlap = None
    if spec.depth == 1:
        curve = prior_residual_overlap(spec.activation, bp.nngp.train[0], data.Y_train, sigma2,
                                       np.exp(-lag_over_prior))
        prior_overlap = curve / curve[0]
    Y = data.Y_train
    return Eq16Study(eq16_check(Phis, Y, K_prior, spec.width, max_lag, K_theory, prior_overlap),
                     lag_over_prior, drift.drift_overlaps(Phis, Y, max_lag),
                     drift.drift_overlaps(Phis, Y, max_lag, center=True),
                     float(drift.random_baseline(Phis.shape[-1])),
                     float(drift.random_baseline(Phis.shape[-2])),
                     spec.width, Phis.shape[-1])


class DriftByArchitecture(NamedTuple):
    tau_over_prior: np.ndarray  # (lag,) time after t0 in units of tau_prior
    err_full: dict  # {variant: (lag,)} chain-mean test error, plain run
    err_frozen: dict  # the same after t0 with the readout frozen and prior-only hidden weights
    err_limit: dict  # {variant: (chain,)} the frozen run's predicted error once the drift is complete
    #                  (theory.drift_limit: only the input norm survives, through E[phi])


TiedVsUntied = DriftByArchitecture  # the earlier name


def drift_by_architecture(resolved: dict, freeze_draw: int, variants: dict) -> DriftByArchitecture:
    """The prior-only frozen-readout experiment on ``resolved`` for each ``{name: network overrides}``
    (activation, tied weights, depth, ...), with the limit the frozen run tends to
    (:func:`widebayes.theory.drift_limit.frozen_readout_limit`, from each chain's frozen readout)."""
    from widebayes.experiment import build_experiment
    from widebayes.studies.frozen_readout import run_frozen_readout
    from widebayes.theory.drift_limit import frozen_readout_limit

    full, frozen, limit, tau = {}, {}, {}, None
    for name, overrides in variants.items():
        cfg = copy.deepcopy(resolved)
        cfg["network"].update(overrides)
        res = run_frozen_readout(cfg, freeze_draw, mode="prior")
        full[name], frozen[name] = res.err_full.mean(axis=0), res.err_frozen.mean(axis=0)
        exp = build_experiment(cfg)
        limit[name] = frozen_readout_limit(res.a_frozen, exp.data.X_test, exp.spec.activation,
                                           exp.spec.layer_variances, exp.gamma, exp.data.Y_test).error
        tau = res.tau_over_prior
    return DriftByArchitecture(tau, full, frozen, limit)


def tied_vs_untied(resolved: dict, freeze_draw: int) -> DriftByArchitecture:
    """The prior-only frozen-readout experiment on ``resolved`` with untied and with tied hidden weights."""
    return drift_by_architecture(resolved, freeze_draw, {"untied": {"tied_weights": False},
                                                         "tied": {"tied_weights": True}})
