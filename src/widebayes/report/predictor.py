"""The predictor section: fit on the training inputs, and on the test inputs the sampled mean
predictor and generalization error against the theory's and the infinite-width GP's.

Non-lazy runs also get the GP at both normalisations (``theory.gp.gp_normalisations``: the
non-lazy one, ``sigma_a2 K_L`` with noise ``T/N``, and the lazy one, ``K_L`` with noise ``T``),
each with the non-lazy gain over it split into its bias and variance parts (report.json
``predictor.test.gp_normalisations``; coding-schemes paper, Fig. 6d: "the reduced generalization
error is [mainly] an effect of the reduced variance of the predictor").
"""

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
    gp_normalisations: dict | None = None


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


def gain_split(err: dict, err_gp: dict) -> dict:
    """The gain of a predictor over a GP, ``eps_GP - eps``, per output (class) and summed, split as
    ``(bias_GP - bias) + (variance_GP - variance)`` (both ``gen_error_dict`` forms).

    ``variance_share`` is the variance part's fraction of the summed gain (None when there is
    no gain); ``mainly_variance``: a positive gain whose variance part exceeds its bias part.
    """
    bias = np.asarray(err_gp["bias"], dtype=np.float64) - np.asarray(err["bias"], dtype=np.float64)
    var = np.asarray(err_gp["variance"], dtype=np.float64) - np.asarray(err["variance"], dtype=np.float64)
    b, v = float(bias.sum()), float(var.sum())
    return {"total": bias + var, "bias": bias, "variance": var, "total_sum": b + v, "bias_sum": b,
            "variance_sum": v, "variance_share": v / (b + v) if b + v > 0 else None,
            "mainly_variance": bool(b + v > 0 and v > b)}


def gp_normalisation_section(run: PosteriorView, err: dict, th_err: dict | None) -> dict | None:
    """Per normalisation (``"nonlazy"``, ``"lazy"``): its ``sigma_a2``, ``noise`` and definition,
    the GP's generalization error (bias and variance per class), its accuracy, and the gain over
    it of the samples and of the theory (:func:`gain_split`; None without a theory's bias and
    variance).  None for a lazy run (its GP is the lazy one)."""
    from widebayes.config import readout_gamma
    from widebayes.theory.gp import gp_from_kernels, gp_normalisations
    from widebayes.theory.nngp import nngp_kernels

    net = run.config["network"]
    if readout_gamma(net["readout"]) == 0.5:
        return None
    kernels = nngp_kernels(run.X_train, run.activation, run.sigma_w2, run.X_test)
    split_theory = th_err is not None and {"bias", "variance"} <= set(th_err)
    out = {}
    for name, norm in gp_normalisations(run.sigma_a2, float(net["temperature"]), run.T_eff).items():
        res = gp_from_kernels(kernels, run.Y_train, run.Y_test, norm.sigma_a2, norm.noise)
        gp_err = dpred.gen_error_dict(res.gen_error)
        out[name] = {**norm._asdict(), "gen_error": gp_err,
                     "accuracy": dpred.accuracy(res.prediction.mean, run.Y_test),
                     "gain_samples": gain_split(err, gp_err),
                     "gain_theory": gain_split(th_err, gp_err) if split_theory else None}
    return out


def gp_normalisation_markdown(test: dict) -> list[str]:
    """report.md's table of the generalization error per class, ``total (bias + variance)``, of
    the samples, the theory and the GP at both normalisations, and the gains' split."""
    norms = test.get("gp_normalisations")
    if not norms:
        return []
    rows = [("samples", test["gen_error"])]
    if test.get("gen_error_theory"):
        rows.append(("theory", test["gen_error_theory"]))
    rows += [(f"GP {name} (sigma_a2 = {n['sigma_a2']:.4g}, noise {n['noise']:.4g})", n["gen_error"])
             for name, n in norms.items()]
    m = len(np.atleast_1d(test["gen_error"]["total"]))
    cell = lambda t, b, v: f"{t:.4g} ({b:.4g} + {v:.4g})"  # noqa: E731
    lines = ["", "Generalization error per class, total (bias + variance):", "",
             "| | " + " | ".join(f"class {r}" for r in range(m)) + " | sum |",
             "|---|" + "---|" * (m + 1)]
    for label, e in rows:
        parts = [np.atleast_1d(np.asarray(e[k], dtype=np.float64)) for k in ("total", "bias", "variance")]
        per = [cell(t, b, v) for t, b, v in zip(*parts)] + [cell(*(float(p.sum()) for p in parts))]
        lines.append(f"| {label} | " + " | ".join(per) + " |")
    lines += ["", "Gain over each GP, eps_GP - eps = bias part + variance part (summed over classes):", ""]
    for name, n in norms.items():
        for who in ("samples", "theory"):
            g = n[f"gain_{who}"]
            if g is not None:
                share = "" if g["variance_share"] is None else f", variance share {g['variance_share']:.2f}"
                lines.append(f"- {who} vs GP {name}: {g['total_sum']:.4g} = {g['bias_sum']:.4g} (bias) "
                             f"{g['variance_sum']:+.4g} (variance){share}: "
                             f"{'mainly' if g['mainly_variance'] else 'not mainly'} variance")
    return lines


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
    norms = gp_normalisation_section(run, err, th_err)
    section = Predictor(fit, TestFit(dpred.accuracy(test.mean, run.Y_test), err, test.mean, test.var,
                                     gp_mean, gp_var, th_err, gp_err, dpred.accuracy(gp_mean, run.Y_test),
                                     gp_normalisations=norms))
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
               "gp": None if gp_err is None else np.asarray(gp_err["total"]),
               "gp_lazy": None if norms is None else np.asarray(norms["lazy"]["gen_error"]["total"])}
    return section, pred_fig, err_fig
