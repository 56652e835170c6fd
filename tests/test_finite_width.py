"""Deep linear lazy networks at finite width (theory/finite_width.py): the GP mixture over S, exact."""

import numpy as np
import pytest
from scipy import stats

from widebayes.diagnostics.kernels import relative_difference
from widebayes.studies.finite_width import moments_of
from widebayes.theory.finite_width import (
    deep_linear_finite_width,
    deep_linear_posterior_moments,
    wishart_product_prior,
)
from widebayes.theory.gp import gp_posterior


def _problem(P=3, N0=3, P_test=2, m=1, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((P_test, N0))
    Y = rng.standard_normal((P, m))
    return X @ X.T / N0, Y, X @ Xt.T / N0, np.sum(Xt**2, axis=1) / N0, X, Xt


def test_mixture_equals_brute_force_over_all_weights():
    """L = 2, N = 4, tiny task: prior draws of (W1, W2, a) weighted by the likelihood, against the
    mixture over S (measured: variances 0.2069/1.4185 against 0.2072/1.4193, mean to 5e-4)."""
    K0, Y, Kc, kd, X, Xt = _problem()
    N0, N, T, s2, sa2 = 3, 4, 0.3, [1.3, 0.7], 1.5
    r = deep_linear_finite_width(K0, Y, Kc, kd, 2, N, T, s2, sa2, num_samples=200_000, seed=1)
    rng = np.random.default_rng(2)
    n = 1_000_000
    W1 = np.sqrt(s2[0]) * rng.standard_normal((n, N, N0))
    W2 = np.sqrt(s2[1]) * rng.standard_normal((n, N, N))
    a = np.sqrt(sa2) * rng.standard_normal((n, N, 1))

    def f(Xin):
        z1 = np.einsum("pi,nji->npj", Xin, W1) / np.sqrt(N0)
        return np.einsum("npj,nkj,nkm->npm", z1, W2, a) / N

    log_lik = -np.sum((f(X) - Y) ** 2, axis=(1, 2)) / (2 * T)
    w = np.exp(log_lik - log_lik.max())
    w /= w.sum()
    fte = f(Xt)
    mean = np.tensordot(w, fte, 1)
    var = np.tensordot(w, fte**2, 1) - mean**2
    np.testing.assert_allclose(r.mean, mean, atol=3e-3)
    np.testing.assert_allclose(r.var, var, rtol=5e-3)


def test_one_layer_one_output_is_a_chi_square_integral():
    """L = 1, m = 1: S = sigma_a^2 chi^2_N / N; the mixture by quadrature over the chi-square density."""
    K0, Y, Kc, kd, *_ = _problem(P=4, seed=3)
    N, T, s1, sa2 = 6, 0.2, 0.8, 1.2
    r = deep_linear_finite_width(K0, Y, Kc, kd, 1, N, T, s1, sa2, num_samples=400_000, seed=4)
    q = np.linspace(1e-4, 60.0, 20001)  # chi^2_N values
    dens = stats.chi2.pdf(q, N)
    means, variances, logliks = [], [], []
    for s in sa2 * q / N:
        g = gp_posterior(s1 * s * K0, s1 * s * Kc, s1 * s * kd, Y, T)
        C = s1 * s * K0 + T * np.eye(len(K0))
        logliks.append(stats.multivariate_normal(np.zeros(len(K0)), C).logpdf(Y[:, 0]))
        means.append(np.ravel(g.mean))
        variances.append(np.ravel(g.var))
    weight = dens * np.exp(np.array(logliks) - max(logliks))
    weight /= weight.sum()
    means, variances = np.array(means), np.array(variances)
    mean = weight @ means
    var = weight @ (variances + means**2) - mean**2
    np.testing.assert_allclose(r.mean.ravel(), mean, atol=2e-3)
    np.testing.assert_allclose(r.var.ravel(), var, rtol=4e-3)


def test_wide_limit_is_the_gp():
    K0, Y, Kc, kd, *_ = _problem(P=5, m=2, seed=5)
    s2, sa2, T = [1.5, 0.5], 2.0, 0.1
    r = deep_linear_finite_width(K0, Y, Kc, kd, 2, 200_000, T, s2, sa2, num_samples=20_000)
    scale = sa2 * np.prod(s2)
    g = gp_posterior(scale * K0, scale * Kc, scale * kd, Y, T)
    np.testing.assert_allclose(r.mean, g.mean, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(r.var, np.broadcast_to(np.reshape(g.var, (-1, 1)), r.var.shape), rtol=2e-3)


def test_prior_of_S_has_the_product_moments():
    """E[S] = sigma_a^2 prod_{l >= 2} sigma_l^2 I (sigma_1^2 multiplies S in the kernel), and for one
    output S is a product of L scaled chi-squares: Var[S]/E[S]^2 = (1 + 2/N)^L - 1."""
    rng = np.random.default_rng(6)
    S = wishart_product_prior(rng, 400_000, 10, 3, 1, [2.0, 0.5, 1.5], 0.8)[:, 0, 0]
    mean = 0.8 * 0.5 * 1.5
    assert S.mean() == pytest.approx(mean, rel=5e-3)
    assert S.var() / mean**2 == pytest.approx((1 + 2 / 10) ** 3 - 1, rel=2e-2)


def _sampled_against_exact(num_train, width, steps):
    import arviz as az
    from test_agreement_lazy import deep_linear

    from widebayes.sampling import sample_experiment
    from widebayes.theory.predict import predictions

    out = sample_experiment(deep_linear(num_train, width=width, steps=steps))
    exp = out.experiment
    d, N0 = exp.data, exp.data.X_train.shape[1]
    exact = deep_linear_finite_width(d.X_train @ d.X_train.T / N0, d.Y_train, d.X_train @ d.X_test.T / N0,
                                     np.sum(d.X_test**2, axis=1) / N0, 2, width, exp.T_eff,
                                     exp.spec.layer_variances, exp.spec.sigma_a2)
    # the test inputs are orthogonal to the training set: the posterior mean there is exactly 0, so
    # the mean of f^2 over draws, test points and outputs is the predictor variance
    per_draw = (out.result.draws["f_test"] ** 2).mean(axis=(2, 3))
    return (per_draw.mean(), float(az.mcse(per_draw)), exact.var.mean(),
            float(np.mean(predictions(exp)["f_test_var"])))


@pytest.mark.slow
@pytest.mark.parametrize("num_train,width", [(6, 12), (10, 20)])
def test_sampled_variance_follows_the_exact_finite_width_value(num_train, width):
    """Deep linear L = 2, alpha = 1/2, T = 0.01 (tests/test_agreement_lazy.py's setting at small N),
    400k Langevin steps: measured 0.770 +- 0.018 (N = 12) and 0.768 +- 0.013 (N = 20) against the
    exact 0.793 and 0.762, while BPKR (N -> inf at fixed alpha) says 0.716 for both."""
    sampled, mcse, exact, bpkr = _sampled_against_exact(num_train, width, 400_000)
    assert abs(exact - bpkr) > 3 * mcse  # the finite-width offset is resolved by this run
    assert abs(sampled - exact) < 3 * mcse


def _brute_force_moments(X, Y, depth, width, T, s2, sa2, gamma, rng, n=400_000, reps=5):
    """``E[A^T A / N]`` and ``E[z_l z_l^T / N]`` by prior draws of every weight, weighted by the
    likelihood (ratio estimator, standard errors from the repetitions); depth 2 only."""
    N0 = X.shape[1]
    per_rep = []
    for _ in range(reps):
        W1 = np.sqrt(s2[0]) * rng.standard_normal((n, width, N0))
        W2 = np.sqrt(s2[1]) * rng.standard_normal((n, width, width))
        a = np.sqrt(sa2) * rng.standard_normal((n, width, Y.shape[1]))
        z1 = np.einsum("pi,nji->npj", X, W1) / np.sqrt(N0)
        z2 = np.einsum("npj,nkj->npk", z1, W2) / np.sqrt(width)
        f = np.einsum("npk,nkm->npm", z2, a) / width**gamma
        w = np.exp(-np.sum((f - Y) ** 2, axis=(1, 2)) / (2 * T * width ** (1 - 2 * gamma)))
        values = [np.einsum("nim,nir->nmr", a, a) / width, np.einsum("npj,nqj->npq", z1, z1) / width,
                  np.einsum("npj,nqj->npq", z2, z2) / width]
        per_rep.append(np.concatenate([np.tensordot(w, v, 1).ravel() for v in values]) / w.sum())
    per_rep = np.array(per_rep)
    return per_rep.mean(axis=0), per_rep.std(axis=0, ddof=1) / np.sqrt(reps)


@pytest.mark.parametrize("gamma,T", [pytest.param(0.5, 0.5, marks=pytest.mark.slow), (1.0, 2.0)])
def test_chain_moments_equal_brute_force_over_all_weights(gamma, T):
    """L = 2, N = 4, two outputs, lazy and non-lazy: the readout second moment and both layer
    kernels from the Wishart chain (NUTS) against prior draws of all the weights weighted by the
    likelihood.  Measured: every entry within 2.4 combined standard errors, 0.25% of the largest."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
    s2, sa2 = [1.3, 0.7], 1.5
    r = deep_linear_posterior_moments(X @ X.T / 3, Y, 2, 4, T, s2, sa2, gamma, num_samples=3000,
                                      num_chains=2)
    exact = np.concatenate([r.readout_second_moment.ravel(), r.kernels[1].ravel(), r.kernels[2].ravel()])
    exact_se = np.concatenate([r.readout_second_moment_se.ravel(), r.kernels_se[1].ravel(),
                               r.kernels_se[2].ravel()])
    brute, brute_se = _brute_force_moments(X, Y, 2, 4, T, s2, sa2, gamma, rng)
    assert r.divergences == 0
    assert np.all(np.abs(exact - brute) < 4 * np.hypot(exact_se, brute_se) + 1e-3 * np.abs(brute).max())


def _coding_linear(width, depth=3):
    from widebayes.models.presets import preset

    from widebayes.config import resolve
    from widebayes.experiment import build_experiment

    cfg = preset("coding-linear")
    cfg["network"].update(depth=depth, width=width)
    return build_experiment(resolve(cfg))


@pytest.mark.slow
def test_analog_code_at_large_width_is_the_mean_field_theory():
    """L = 3 analog code (preset coding-linear, P = 100, T = 0.01) at N = 10,000: the exact
    moments within 0.5% of the N -> inf theory (measured 0.0008 for U, 0.0006-0.0017 for the
    kernels and task blocks: the 1/N law from 0.072 / 0.067-0.18 at N = 100; 45 s)."""
    from widebayes.theory.predict import predictions

    exp = _coding_linear(10_000)
    th = predictions(exp)
    r = moments_of(exp)
    Q = np.linalg.qr(exp.data.Y_train)[0]
    K = np.asarray(th["kernel_train"])
    assert r.divergences == 0
    assert relative_difference(r.readout_second_moment, np.asarray(th["readout_second_moment"])) < 0.005
    for layer in (1, 2, 3):
        assert relative_difference(Q.T @ r.kernels[layer] @ Q, Q.T @ K[layer] @ Q) < 0.005
        assert relative_difference(r.kernels[layer], K[layer]) < 0.005


def test_study_refuses_what_the_exact_result_does_not_cover(capsys):
    """A nonlinear activation is one line and exit code 2, before any sampling."""
    from widebayes.studies.finite_width import main

    assert main(["coding-linear", "--set", "network.activation=relu", "--widths", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "network.activation" in err[0]


@pytest.mark.slow
def test_study_prints_the_offsets_per_width(capsys, tmp_path):
    """The README's command on a small case (depth 2, P = 20, N = 400 and 1600): one JSON line per
    width, offsets shrinking about fourfold (1/N) and small at N = 1600."""
    import json

    from widebayes.studies.finite_width import main

    out = tmp_path / "offsets.json"
    assert main(["coding-linear", "--set", "network.depth=2", "--set", "task.num_train=20",
                 "--set", "task.input_dim=40", "--widths", "400", "1600", "--samples", "400",
                 "--json", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["width"] for r in rows] == [400, 1600] == [r["width"] for r in json.loads(out.read_text())]
    assert rows[1]["U"] < rows[0]["U"] / 2 and rows[1]["task2"] < 0.02
