"""The predictor section: fit on the training inputs, and on the test inputs the sampled mean
predictor and generalization error against the theory's and the infinite-width GP's."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import kernels as dkern
from widebayes.diagnostics import predictor as dpred
from widebayes.posterior import PosteriorView
from widebayes.report.common import MAX_PREDICTOR_PANELS, MAX_SHOWN_INPUTS, class_bounds, theory_array

GP_DEFINITION = "lazy infinite-width GP: kernel sigma_a2 K_L^NNGP, noise variance T_eff"


class TrainFit(NamedTuple):
    """Posterior-mean training output against the targets, and the predictor's mean and variance."""

    rmse_to_targets: float
    accuracy: float
    mean_variance: float
    mean: np.ndarray
    var: np.ndarray


class TestFit(NamedTuple):
    """Test inputs: the sampled predictor, its generalization error (``gen_error_dict`` form),
    the GP's, and the theory's error (its own dict; None without)."""

    accuracy: float
    gen_error: dict
    mean: np.ndarray
    var: np.ndarray
    gp_mean: np.ndarray
    gp_var: np.ndarray
    gen_error_theory: dict | None
    gen_error_gp: dict | None
    accuracy_gp: float
    gp_definition: str = GP_DEFINITION


class Predictor(NamedTuple):
    train: TrainFit
    test: TestFit | None


def gp_prediction(run: PosteriorView, theory):
    """GP mean/var on the test inputs: the theory's, else ``lazy_gp_prediction`` at T_eff."""
    from widebayes.theory.gp import lazy_gp_prediction

    if theory is not None and all(theory.get(k) is not None for k in ("f_test_mean_gp", "f_test_var_gp",
                                                                       "gen_error_gp")):
        return (np.asarray(theory["f_test_mean_gp"], dtype=np.float64),
                np.asarray(theory["f_test_var_gp"], dtype=np.float64), theory["gen_error_gp"])
    res = lazy_gp_prediction(run.X_train, run.Y_train, run.X_test, run.Y_test, run.activation,
                             run.sigma_w2, run.sigma_a2, run.T_eff)
    return res.prediction.mean, res.prediction.var, dpred.gen_error_dict(res.gen_error)


def predictor_section(run: PosteriorView, theory) -> tuple[Predictor, dict | None, dict | None]:
    """The predictor section and the figures of the test predictor and generalization error
    (None without a test set)."""
    train = dpred.predictor_stats(run.f_train)
    fit = TrainFit(dpred.training_fit(train.mean, run.Y_train), dpred.accuracy(train.mean, run.Y_train),
                   float(train.var.mean()), train.mean, train.var)
    if run.f_test is None:
        return Predictor(fit, None), None, None
    test = dpred.predictor_stats(run.f_test)
    err = dpred.gen_error_dict(dpred.generalization_error(test.mean, test.var, run.Y_test))
    gp_mean, gp_var, gp_err = gp_prediction(run, theory)
    th_err = theory.get("gen_error") if theory else None
    section = Predictor(fit, TestFit(dpred.accuracy(test.mean, run.Y_test), err, test.mean, test.var,
                                     gp_mean, gp_var, th_err, gp_err, dpred.accuracy(gp_mean, run.Y_test)))
    order = dkern.class_order(run.labels_test, MAX_SHOWN_INPUTS)
    th_mean = theory_array(theory, "f_test_mean")
    m = run.Y_test.shape[1]
    pred_fig = {"outputs": list(range(min(m, MAX_PREDICTOR_PANELS))), "inputs_shown": order,
                "mean": test.mean[order], "sd": np.sqrt(test.var[order]),
                "theory": None if th_mean is None else th_mean.reshape(-1, m)[order],
                "gp": np.asarray(gp_mean).reshape(-1, m)[order], "y": run.Y_test[order],
                "class_bounds": class_bounds(run.labels_test[order])[0]}
    err_fig = {"outputs": list(range(m)), "sampling": err,
               "theory": None if th_err is None else np.asarray(th_err["total"]),
               "gp": None if gp_err is None else np.asarray(gp_err["total"])}
    return section, pred_fig, err_fig
