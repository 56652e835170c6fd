"""The closed-form predictions for an experiment, as the JSON of ``widebayes theory``.

Keys (DESIGN.md), where the theory for the experiment provides them: ``readout_second_moment``
(m x m, per neuron: <a a^T>), ``kernel_train`` (layer x train x train, layer 0 the input kernel,
the posterior mean where the theory gives it), ``kernel_train_nngp``, ``f_test_mean`` and
``f_test_var`` (test x output), ``gen_error`` and ``gen_error_gp`` (per output, with ``bias`` and
``variance``), ``codes``, ``num_outliers``, ``outlier_mass``; for lazy networks the kernel-adaptation
kernels ``kernel_train_saddle`` (linear: the rate function's mode, closed form) or
``kernel_train_perturbative`` (nonlinear: the O(1/N) correction at fixed P), and
``kernel_train_methods`` (what made each layer of ``kernel_train``: for nonlinear lazy networks the
O(1/N) kernel adaptation below the feature layer, BPKR's heuristic at it); for non-lazy networks
``layers``, one record per hidden layer 1..L with its ``codes`` (``[{"code", "fraction", ...}]``),
``kernel_train`` (P x P) and permutation-symmetry flags (``theory/nonlazy/predictions.py``); plus
``inputs`` (what it used) and ``regime``/``method`` (which theory made them).

Lazy networks (gamma = 1/2): NNGP + GP at T, and back-propagating kernel renormalisation (exact for
deep linear networks, the heuristic NNGP-kernel extension otherwise).  Non-lazy networks (gamma = 1):
the mean-field theory of ``theory/nonlazy``, when it covers the activation.  Readouts between the
two (1/2 < gamma < 1) have no theory here: only the NNGP kernels are reported, with a note.
"""

from __future__ import annotations

import numpy as np

from widebayes.activations import get_activation
from widebayes.errors import InputError
from widebayes.experiment import Experiment
from widebayes.theory.bpkr import bpkr_prediction
from widebayes.theory.nngp import nngp_kernels

COVERED_MODELS = ("network_prior",)  # the models whose posterior these theories describe


def experiment_inputs(exp: Experiment) -> dict:
    s = exp.spec
    return {"num_train": len(exp.data.X_train), "num_test": len(exp.data.X_test),
            "input_dim": s.input_dim, "width": s.width, "depth": s.depth, "num_outputs": s.num_outputs,
            "activation": s.activation, "gamma": s.gamma, "sigma_w2": list(s.layer_variances),
            "sigma_a2": s.sigma_a2, "temperature": exp.T,
            "T_eff": exp.T_eff}


def per_output(var, m: int) -> np.ndarray:
    """A predictor variance as (test, output): one shared column is repeated for every output."""
    var = np.asarray(var)
    return np.repeat(var[:, None], m, axis=1) if var.ndim == 1 else var


def adapted_kernels(exp: Experiment, method: str, **solver) -> np.ndarray:
    """Layer kernels ``K_0 .. K_L`` on the training inputs from ``theory/kernel_adaptation.py`` by
    ``method``: 'saddle' (the MAP of the kernels' rate function, which misses the posterior mean's
    learned spike by O(alpha)), 'perturbative' (the O(1/N) correction to the NNGP at fixed P),
    'linear_mean' or 'nngp'.  ``g = [sigma_1^2 .. sigma_L^2, sigma_a^2]``, ``T = T_eff``; ``solver``
    goes to ``solve_kernels`` (``num_samples``, ``seed``, ...).  Lazy readout (gamma = 1/2) only:
    a ValueError otherwise."""
    from widebayes.theory.kernel_adaptation import solve_kernels
    from widebayes.theory.nngp import input_kernel

    s = exp.spec
    if not s.lazy:
        raise ValueError(f"kernel-adaptation theory is for lazy readout (gamma = 1/2), got {s.gamma}")
    g = [*s.layer_variances, s.sigma_a2]
    res = solve_kernels(input_kernel(exp.data.X_train), exp.data.Y_train, s.activation, g, s.width,
                        exp.T_eff, method, **solver)
    return np.asarray(res.layer_kernels)


def kernel_methods(depth: int, linear: bool) -> list:
    """What made each layer's ``kernel_train`` of a lazy network, layer 0 (the input kernel) first.

    Linear: BPKR's exact mean kernels (``'bpkr'``) at every layer.  Nonlinear: the O(1/N)
    kernel adaptation (``'perturbative'``, THEORY.md 3.5.4) at the hidden layers ``1..L-1`` and
    BPKR's heuristic feature kernel (``'bpkr-heuristic'``, THEORY.md 2.6; it carries the
    proportional-limit renormalisation U) at the feature layer L.
    """
    hidden = ["bpkr"] * depth if linear else ["perturbative"] * (depth - 1) + ["bpkr-heuristic"]
    return ["input", *hidden]


def lazy_predictions(exp: Experiment) -> dict:
    """NNGP/GP and BPKR for a lazy network; per-layer mean kernels labelled by
    :func:`kernel_methods` (``kernel_train_methods``)."""
    d, s = exp.data, exp.spec
    linear = get_activation(s.activation).is_linear
    has_test = len(d.X_test) > 0
    res = bpkr_prediction(d.X_train, d.Y_train, d.X_test if has_test else None,
                          d.Y_test if has_test else None, s.activation, s.layer_variances,
                          s.sigma_a2, s.width, exp.T_eff)
    out = {"regime": "lazy", "method": "bpkr" if linear else "bpkr-heuristic",
           "U": res.U, "u": res.u, "residual": res.residual, "alpha": res.alpha,
           "readout_second_moment": res.readout_second_moment,
           "kernel_train": res.mean_kernels.train, "kernel_train_nngp": res.nngp.train}
    if linear:  # the rate-function mode (Fischer et al.); closed form, cheap
        try:
            out["kernel_train_saddle"] = adapted_kernels(exp, "saddle")
        except RuntimeError as err:  # Newton-Krylov may find no saddle: BPKR stands without it
            out["note"] = f"no kernel-adaptation saddle: {err}"
    else:  # the saddle is a Newton-Krylov solve over Monte Carlo tilts (minutes); O(1/N), seconds
        adapted = adapted_kernels(exp, "perturbative")
        out["kernel_train_perturbative"] = adapted
        out["kernel_train"] = np.concatenate([res.mean_kernels.train[:1], adapted[1:-1],
                                              res.mean_kernels.train[-1:]])
    out["kernel_train_methods"] = kernel_methods(s.depth, linear)
    if has_test:
        m = d.Y_train.shape[1]
        out.update({"f_test_mean": res.prediction.mean, "f_test_var": per_output(res.prediction.var, m),
                    "f_test_mean_gp": res.gp.mean, "f_test_var_gp": per_output(res.gp.var, m),
                    "gen_error": res.gen_error._asdict(),
                    "gen_error_gp": res.gen_error_gp._asdict()})
    return out


GP_KEYS = ("kernel_train_nngp", "f_test_mean_gp", "f_test_var_gp", "gen_error_gp")


def frozen_predictions(exp: Experiment) -> dict:
    """A network with blocks frozen at a prior draw (``[network] trainable``) is not the trained
    network the theories describe: only its infinite-width limit, the NNGP kernels and the GP
    predictor, is given (for the random-feature model ``widebayes sweep`` adds its own theory,
    ``rf_theory`` and ``rf_exact``)."""
    full = lazy_predictions(exp) if exp.spec.gamma == 0.5 else nngp_only(exp, "")
    note = (f"blocks {list(exp.frozen)} frozen at a prior draw ([network] trainable): the trained "
            "network's theory does not apply; the NNGP/GP (N -> inf) is shown")
    return {"regime": "frozen", "method": "nngp", "note": note, **{k: full[k] for k in GP_KEYS if k in full}}


def nngp_only(exp: Experiment, note: str) -> dict:
    d, s = exp.data, exp.spec
    K = nngp_kernels(d.X_train, s.activation, s.layer_variances)
    return {"regime": "intermediate", "method": "nngp", "kernel_train_nngp": K.train, "note": note}


def predictions(exp: Experiment) -> dict:
    """Every prediction the theory modules make for this experiment, plus the inputs used.

    Only the models in ``COVERED_MODELS`` have a theory: any other model is an InputError.
    """
    if exp.model not in COVERED_MODELS:
        raise InputError(f"no theory covers model {exp.model!r}; the theories cover {list(COVERED_MODELS)}",
                         key="network.model")
    if exp.frozen:
        out = frozen_predictions(exp)
    elif exp.spec.gamma == 0.5:
        out = lazy_predictions(exp)
    elif exp.spec.gamma == 1.0:
        from widebayes.theory.nonlazy import nonlazy_predictions

        out = nonlazy_predictions(exp)
    else:
        out = nngp_only(exp, "no closed-form theory for 1/2 < gamma < 1; NNGP kernels only")
    return {**out, "inputs": experiment_inputs(exp)}
