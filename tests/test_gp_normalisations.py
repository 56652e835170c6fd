"""The GP at both normalisations of a non-lazy network (non-lazy: ``sigma_a2 K_L``, noise T/N;
lazy: ``K_L``, noise T), the gain split into bias and variance, and report.json/report.md."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from widebayes import report
from widebayes.config import resolve
from widebayes.report.predictor import gain_split, gp_normalisation_markdown, gp_normalisation_section
from widebayes.sampling import sample_experiment
from widebayes.theory.gp import gp_normalisations, lazy_gp_prediction

RNG = np.random.default_rng(11)
P, N0, P_TEST, M, S_W = 6, 5, 4, 2, 1.3


def _tiny_problem():
    X, X_test = RNG.standard_normal((P, N0)), RNG.standard_normal((P_TEST, N0))
    Y, Y_test = RNG.standard_normal((P, M)), RNG.standard_normal((P_TEST, M))
    return X, Y, X_test, Y_test


def _direct(X, Y, X_test, Y_test, sigma_a2, noise):
    """Linear one-hidden-layer NNGP ``K = S_W X X^T / N0`` written out: mean
    ``s k^T (s K + noise)^-1 Y``, variance ``s k(x,x) - s^2 k^T (s K + noise)^-1 k``, and the
    generalization error per output ``mean_x (mean - y)^2`` + ``mean_x var``."""
    K, k, kxx = S_W * X @ X.T / N0, S_W * X @ X_test.T / N0, S_W * np.sum(X_test**2, 1) / N0
    A = np.linalg.inv(sigma_a2 * K + noise * np.eye(P))
    mean = sigma_a2 * k.T @ A @ Y
    var = sigma_a2 * kxx - sigma_a2**2 * np.einsum("pt,pq,qt->t", k, A, k)
    return mean, var, ((mean - Y_test) ** 2).mean(0), np.full(M, var.mean())


def test_both_normalisations_against_numpy():
    X, Y, X_test, Y_test = _tiny_problem()
    T, N = 0.3, 7
    norms = gp_normalisations(1.0 / P, T, T / N)
    assert (norms["nonlazy"].sigma_a2, norms["nonlazy"].noise) == (1.0 / P, T / N)
    assert (norms["lazy"].sigma_a2, norms["lazy"].noise) == (1.0, T)
    for norm in norms.values():
        res = lazy_gp_prediction(X, Y, X_test, Y_test, "linear", [S_W], norm.sigma_a2, norm.noise)
        mean, var, bias, variance = _direct(X, Y, X_test, Y_test, norm.sigma_a2, norm.noise)
        np.testing.assert_allclose(res.prediction.mean, mean, rtol=1e-10)
        np.testing.assert_allclose(res.prediction.var, var, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(res.gen_error.bias, bias, rtol=1e-10)
        np.testing.assert_allclose(res.gen_error.variance, variance, rtol=1e-10)


def test_at_N_equal_P_the_means_agree_and_the_lazy_variance_is_P_times():
    X, Y, X_test, Y_test = _tiny_problem()
    T = 0.2
    out = {name: lazy_gp_prediction(X, Y, X_test, Y_test, "sigmoid", [S_W], n.sigma_a2, n.noise)
           for name, n in gp_normalisations(1.0 / P, T, T / P).items()}
    np.testing.assert_allclose(out["lazy"].prediction.mean, out["nonlazy"].prediction.mean, rtol=1e-10)
    np.testing.assert_allclose(out["lazy"].prediction.var, P * out["nonlazy"].prediction.var, rtol=1e-10)


def test_gain_split():
    err = {"bias": [0.1, 0.2], "variance": [0.001, 0.002]}
    gp = {"bias": [0.1, 0.25], "variance": [0.05, 0.1]}
    g = gain_split(err, gp)
    np.testing.assert_allclose(g["bias"], [0.0, 0.05])
    np.testing.assert_allclose(g["variance"], [0.049, 0.098])
    assert g["mainly_variance"] and g["variance_share"] == pytest.approx(0.147 / 0.197)
    mostly_bias = gain_split(err, {"bias": [0.3, 0.4], "variance": [0.002, 0.003]})
    assert not mostly_bias["mainly_variance"]
    worse = gain_split(gp, err)
    assert worse["variance_share"] is None and not worse["mainly_variance"]


def _view(readout: str):
    X, Y, X_test, Y_test = _tiny_problem()
    return SimpleNamespace(config={"network": {"readout": readout, "temperature": 0.1}},
                           X_train=X, Y_train=Y, X_test=X_test, Y_test=Y_test, activation="linear",
                           sigma_w2=[S_W], sigma_a2=1.0 / P, T_eff=0.1 / 8)


def test_section_uses_each_normalisation_and_skips_lazy_runs():
    run = _view("nonlazy")
    err = {"bias": np.zeros(M), "variance": np.zeros(M)}
    sec = gp_normalisation_section(run, err, None)
    for name, (s, noise) in {"nonlazy": (1.0 / P, 0.1 / 8), "lazy": (1.0, 0.1)}.items():
        _, _, bias, variance = _direct(run.X_train, run.Y_train, run.X_test, run.Y_test, s, noise)
        np.testing.assert_allclose(sec[name]["gen_error"]["bias"], bias, rtol=1e-10)
        np.testing.assert_allclose(sec[name]["gain_samples"]["variance"], variance, rtol=1e-10)
        assert sec[name]["gain_theory"] is None and sec[name]["noise"] == noise
    assert gp_normalisation_section(_view("lazy"), err, None) is None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_report_json_and_markdown_carry_both_normalisations(tmp_path):
    cfg = {"task": {"kind": "orthogonal", "num_train": 12, "input_dim": 24, "num_test": 6,
                    "class_ratios": [0.5, 0.25, 0.25], "y_minus": -0.5},
           "network": {"depth": 1, "width": 16, "activation": "relu", "readout": "nonlazy",
                       "temperature": 0.05},
           "sampler": {"step_size": 0.002, "num_steps": 200, "burn_in": 0, "thin": 20,
                       "num_chains": 1, "seed": 3, "progress": False}}
    sample_experiment(resolve(cfg), out_dir=tmp_path)
    report.write_report(tmp_path)
    import json

    rep = json.loads((tmp_path / "report" / "report.json").read_text())
    test = rep["predictor"]["test"]
    np.testing.assert_allclose(rep["figures"]["gen_error"]["data"]["gp_lazy"],
                               test["gp_normalisations"]["lazy"]["gen_error"]["total"])
    norms = test["gp_normalisations"]
    assert set(norms) == {"nonlazy", "lazy"}
    assert norms["lazy"]["sigma_a2"] == 1.0 and norms["lazy"]["noise"] == pytest.approx(0.05)
    assert norms["nonlazy"]["noise"] == pytest.approx(0.05 / 16)
    for n in norms.values():
        g = n["gain_samples"]
        assert g["total_sum"] == pytest.approx(n["gen_error"]["total_sum"] - test["gen_error"]["total_sum"])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "GP lazy (sigma_a2 = 1" in md and "samples vs GP nonlazy" in md
    assert gp_normalisation_markdown({"gen_error": test["gen_error"]}) == []
