"""The science sweeps of issue 15: frozen blocks (``[network] trainable``), the random-feature theory,
the new sweep quantities and the sweep files in ``sweeps/``."""

import math
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from widebayes.config import resolve
from widebayes.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SCIENCE_SWEEPS = sorted(p for p in (ROOT / "sweeps").glob("*.toml") if p.name != "example_width.toml")

RF_CFG = {
    "task": {"kind": "xor", "num_train": 12, "num_test": 20, "seed": 0},
    "network": {"depth": 1, "width": 16, "activation": "relu", "readout": "lazy", "temperature": 0.1,
                "sigma_w2": 1.0, "sigma_a2": 1.0, "trainable": ["a"]},
    "sampler": {"kind": "mala", "step_size": 0.03, "num_steps": 6000, "burn_in": 1000, "thin": 5,
                "num_chains": 4, "seed": 5, "progress": False},
}


def with_network(**network):
    return {**RF_CFG, "network": {**RF_CFG["network"], **network}}


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("trainable, words", [
    ([], "non-empty"),
    (["b"], "no parameter block 'b'"),
    (["a", "a"], "twice"),
    ("a", "non-empty list"),
    ([1], "non-empty list"),
])
def test_trainable_refuses_bad_values(trainable, words):
    with pytest.raises(InputError, match=words) as err:
        resolve(with_network(trainable=trainable))
    assert err.value.key == "network.trainable"


def test_trainable_refuses_combinations_that_cannot_freeze():
    collapsed = {**RF_CFG, "sampler": {**RF_CFG["sampler"], "kind": "langevin", "readout": "collapsed"}}
    with pytest.raises(InputError, match="collapsed") as err:
        resolve(collapsed)
    assert err.value.key == "network.trainable"
    smc = {**RF_CFG, "sampler": {**RF_CFG["sampler"], "kind": "smc"}}
    with pytest.raises(InputError, match="SMC"):
        resolve(smc)
    assert resolve(with_network(trainable="all"))["network"]["trainable"] == "all"
    assert resolve(with_network(depth=2, trainable=["W2", "a"]))["network"]["trainable"] == ["W2", "a"]


# ----------------------------------------------------------------------------- frozen blocks, sampled


@pytest.fixture(scope="module")
def rf_run():
    from widebayes.sampling import sample_experiment

    out = sample_experiment(resolve(RF_CFG))
    assert not out.divergences
    return out


def exact_readout_posterior(Phi, Y, sigma_a2, T, N):
    """``a | W, D ~ N(m, S)``: ``S^-1 = I / sigma_a2 + Phi^T Phi / (N T)``, ``m = S Phi^T Y / (sqrt(N) T)``.
    """
    precision = np.eye(N) / sigma_a2 + Phi.T @ Phi / (N * T)
    S = np.linalg.inv(precision)
    return S @ Phi.T @ Y[:, 0] / (np.sqrt(N) * T), S


def test_frozen_hidden_weights_stay_at_the_prior_draw(rf_run):
    from widebayes.experiment import frozen_draw

    idata, exp = rf_run.idata, rf_run.experiment
    assert exp.frozen == ("W1",) and idata.posterior.attrs["frozen_blocks"] == ["W1"]
    W1 = idata.constant_data["W1"].values
    key_init = jax.random.split(jax.random.PRNGKey(RF_CFG["sampler"]["seed"]))[0]
    np.testing.assert_array_equal(W1, np.asarray(frozen_draw(key_init, exp, np.float32)["W1"]))
    assert abs(W1.std() - 1.0) < 0.15 and abs(W1.mean()) < 0.15  # a N(0, sigma_w2 = 1) draw
    X = exp.data.X_train
    phi = np.maximum(X @ W1.T.astype(np.float64) / np.sqrt(X.shape[1]), 0.0)  # (P, N)
    stored = idata.representations["phi_L"].values  # chain, draw, neuron, train
    assert np.ptp(stored, axis=(0, 1)).max() == 0.0  # never changes, in any chain
    np.testing.assert_allclose(stored[0, 0].T, phi, rtol=1e-5, atol=1e-5)


def test_sampled_readout_matches_the_exact_gaussian_given_the_features(rf_run):
    import arviz as az

    idata, exp = rf_run.idata, rf_run.experiment
    W1 = idata.constant_data["W1"].values.astype(np.float64)
    X, Y = exp.data.X_train, exp.data.Y_train
    N = exp.spec.width
    phi = np.maximum(X @ W1.T / np.sqrt(X.shape[1]), 0.0)
    mean, S = exact_readout_posterior(phi, Y, exp.spec.sigma_a2, exp.T_eff, N)
    a = idata.posterior["a"].values[..., 0].astype(np.float64)  # chain, draw, neuron
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        m_err = np.array([float(az.mcse(a[..., i], method="mean")) for i in range(N)])
        centred = (a - mean) ** 2
        v_err = np.array([float(az.mcse(centred[..., i], method="mean")) for i in range(N)])
    z_mean = (a.mean(axis=(0, 1)) - mean) / m_err
    z_var = (centred.mean(axis=(0, 1)) - np.diag(S)) / v_err
    assert np.max(np.abs(z_mean)) < 4.5, z_mean
    assert np.max(np.abs(z_var)) < 4.5, z_var


def test_rf_exact_column_is_the_exact_gp_of_the_drawn_features(rf_run):
    from widebayes.sweep.quantities import random_features, rf_errors
    from widebayes.theory.random_features import exact_given_features

    idata, exp = rf_run.idata, rf_run.experiment
    assert random_features(idata)
    d = exp.data
    W1 = idata.constant_data["W1"].values.astype(np.float64)
    feats = [np.maximum(Z @ W1.T / np.sqrt(Z.shape[1]), 0.0) for Z in (d.X_train, d.X_test)]
    direct = exact_given_features(*feats, d.Y_train, d.Y_test, exp.spec.sigma_a2, exp.T_eff)
    errs = rf_errors(idata)
    np.testing.assert_allclose(errs["rf_exact"]["total"], direct.total, rtol=1e-4)
    assert 0 < errs["rf_theory"]["total"][0] < math.inf  # N = 16 > P + 1 = 13


def test_frozen_readout_is_stored_at_its_prior_draw():
    from widebayes.sampling import sample_experiment

    cfg = with_network(trainable=["W1"])
    cfg["sampler"] = {**cfg["sampler"], "kind": "langevin", "step_size": 1e-3, "num_steps": 200,
                      "burn_in": 100,
                      "num_chains": 2}
    out = sample_experiment(resolve(cfg))
    a = out.idata.posterior["a"].values
    assert np.ptp(a, axis=(0, 1)).max() == 0.0
    np.testing.assert_array_equal(a[0, 0], out.idata.constant_data["a"].values)


# ----------------------------------------------------------------------------- RF theory


def test_rf_theory_against_a_monte_carlo_of_gaussian_features():
    """The closed form (inverse-Wishart mean) against the average of the exact T -> 0 error over draws
    of Gaussian features with the kernel's covariance."""
    from widebayes.theory.random_features import exact_given_features, rf_gen_error

    rng = np.random.default_rng(0)
    P, Q, N, draws = 6, 5, 14, 6000
    A = rng.standard_normal((P + Q, P + Q + 3))
    C = A @ A.T / (P + Q + 3) + 0.2 * np.eye(P + Q)
    Y = rng.standard_normal((P, 2))
    Yt = rng.standard_normal((Q, 2))
    theory = rf_gen_error(C[:P, :P], C[:P, P:], np.diag(C)[P:], Y, Yt, N)
    L = np.linalg.cholesky(C)
    totals = np.empty((draws, 2))
    for k in range(draws):
        F = L @ rng.standard_normal((P + Q, N))  # columns iid N(0, C); sigma_a2 = 1, K_N = F F^T / N
        totals[k] = exact_given_features(F[:P], F[P:], Y, Yt, 1.0, 0.0).total  # K_N = F F^T / N
    mc, se = totals.mean(axis=0), totals.std(axis=0, ddof=1) / np.sqrt(draws)
    assert np.all(np.abs(mc - theory.total) < 4 * se), (mc, theory.total, se)
    assert np.all(se < 0.05 * theory.total)


def test_rf_theory_diverges_at_alpha_one_and_reduces_to_the_gp_at_infinite_width():
    from widebayes.theory.gp import generalization_error, gp_posterior
    from widebayes.theory.random_features import rf_gen_error

    rng = np.random.default_rng(1)
    P, Q = 8, 6
    A = rng.standard_normal((P + Q, 30))
    C = A @ A.T / 30
    Y, Yt = rng.standard_normal((P, 1)), rng.standard_normal((Q, 1))
    args = (C[:P, :P], C[:P, P:], np.diag(C)[P:], Y, Yt)
    gp = gp_posterior(*args[:3], Y, 0.0)
    gp_err = generalization_error(gp.mean, gp.var, Yt).total
    errs = {N: rf_gen_error(*args, N).total[0] for N in (P + 2, P + 3, 10 * P, 10**7)}
    assert errs[P + 2] > errs[P + 3] > errs[10 * P]  # the divergence as N -> P + 1 (alpha -> 1)
    np.testing.assert_allclose(errs[10**7], gp_err[0], rtol=1e-5)  # the GP at infinite width
    assert math.isinf(rf_gen_error(*args, P + 1).total[0])
    assert math.isinf(rf_gen_error(*args, P // 2).total[0])


# ----------------------------------------------------------------------------- the new quantities


def test_correction_series_is_the_gradient_of_the_relative_correction():
    from widebayes.studies.kernel_sweeps import relative_correction
    from widebayes.sweep.quantities import correction_series

    rng = np.random.default_rng(2)
    P, N = 5, 7
    phi = rng.standard_normal((2, 3, N, P))
    K_ref = np.eye(P) + 0.1
    K_mean = np.einsum("cdnp,cdnq->pq", phi, phi) / (N * 6)
    series = correction_series(phi, K_mean, K_ref)
    dK = np.einsum("cdnp,cdnq->cdpq", phi, phi) / N - K_mean  # each draw's departure from the mean
    eps = 1e-6
    for c, d in [(0, 0), (1, 2)]:
        moved = relative_correction(K_mean + eps * dK[c, d], K_ref)
        numeric = (moved - relative_correction(K_mean, K_ref)) / eps
        linear = series[c, d] - series.mean()
        assert abs(numeric - linear) < 1e-4 * max(1.0, abs(linear))


def test_kernel_correction_on_constructed_chains():
    """Chains scattered about a known mean kernel: the debiased correction finds the mean's distance."""
    from widebayes.studies.kernel_sweeps import debiased_correction

    rng = np.random.default_rng(3)
    P = 6
    K_ref = np.eye(P)
    D = np.zeros((P, P))
    D[0, 1] = D[1, 0] = 0.3
    chains = np.stack([K_ref + D + 0.05 * rng.standard_normal((P, P)) for _ in range(400)])[:, None]
    got = debiased_correction(chains, K_ref[None])[0]
    assert abs(got - np.linalg.norm(D) / np.linalg.norm(K_ref)) < 0.01


# ----------------------------------------------------------------------------- sweep files


@pytest.mark.parametrize("path", SCIENCE_SWEEPS, ids=lambda p: p.name)
def test_science_sweep_file_parses_and_dry_runs(path, tmp_path, capsys):
    from widebayes.cli import main

    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "[to run]" in line]
    assert len(listed) >= 2
    assert not (tmp_path / "out" / "points").exists() or not any((tmp_path / "out" / "points").iterdir())


def test_every_science_sweep_is_there():
    names = {p.stem for p in SCIENCE_SWEEPS}
    assert {"learning_curves", "random_features", "random_features_small_T", "criticality_fixed_output",
            "output_scale"} <= names
    assert {"kernel_criticality", "kernel_readout_exponent", "kernel_tied_weights"} <= names


def test_width_neutral_scale_makes_bpkr_width_independent():
    """At s_c the BPKR u is 1 at every width; below it u > 1 (width helps), above it u < 1."""
    from widebayes.theory.bpkr import solve_u, width_neutral_scale

    rng = np.random.default_rng(4)
    P = 12
    A = rng.standard_normal((P, 40))
    K_hat = A @ A.T / 40
    Y = np.sign(rng.standard_normal(P))
    for T in (0.0, 0.05):
        s_c = width_neutral_scale(K_hat, Y, T)
        if T == 0:
            np.testing.assert_allclose(s_c, Y @ np.linalg.solve(K_hat, Y) / P)
        for N in (6, 24, 200):
            assert abs(solve_u(K_hat, Y, 1, N, T, 1.0, s_c).u - 1.0) < 1e-7
            below, above = (solve_u(K_hat, Y, 1, N, T, 1.0, f * s_c).u for f in (0.5, 2.0))
            assert below > 1.0 > above


def test_criticality_samples_can_hold_the_output_scale_fixed():
    from widebayes.experiment import build_experiment
    from widebayes.studies import kernel_sweeps as ks

    seen = []

    def fake_sample(resolved):  # no sampling: the NNGP kernels as two identical "chains"
        seen.append((resolved["network"]["sigma_w2"], resolved["network"]["sigma_a2"]))
        exp = build_experiment(resolved)
        return ks.SampledKernels(exp, np.stack([ks.nngp_layer_kernels(exp)] * 2))

    ks.criticality_samples(ks.XOR_TOY, [0.5, 2.0], method=None, sample=fake_sample, sigma_a2=0.3)
    ks.criticality_samples(ks.XOR_TOY, [0.5, 2.0], method=None, sample=fake_sample)
    assert seen == [(0.5, 0.3), (2.0, 0.3), (0.5, 0.5), (2.0, 2.0)]
