"""Drift measures (diagnostics/drift.py): THEORY.md 6.4, drift tests 10-12.

Exact tier: a planted rotating rank-1 representation.  Statistical tier (fixed seeds): overlaps
of independent random representations against the random-vector baseline, and the prior
Ornstein-Uhlenbeck weight overlap ``exp(-tau T / sigma^2)``.
"""

import numpy as np
import pytest

from widebayes.diagnostics import drift

# ------------------------------------------------------------------------ 10: planted rotation


def _rotating_rank1(T=120, N=30, P=12, omega=0.05, noise=1e-4, seed=0):
    """Phi_t = s v(t) u^T + noise, v(t) = cos(w t) e1 + sin(w t) e2, u fixed."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(P)
    u /= np.linalg.norm(u)
    t = np.arange(T)
    v = np.zeros((T, N))
    v[:, 0], v[:, 1] = np.cos(omega * t), np.sin(omega * t)
    Phis = 5.0 * v[:, :, None] * u[None, None, :] + noise * rng.standard_normal((T, N, P))
    return Phis, u, omega


def test_rotating_rank1_representation():
    Phis, u, omega = _rotating_rank1()
    sv = drift.singular_series(Phis, k=1)
    assert sv.u.shape == (120, 1, 12) and sv.v.shape == (120, 1, 30) and sv.s.shape == (120, 1)
    lags = np.arange(41)
    rho_v = drift.autocorr(sv.v, 40)[:, 0]
    assert np.max(np.abs(rho_v - np.abs(np.cos(omega * lags)))) < 1e-3
    np.testing.assert_allclose(drift.autocorr(sv.u, 40), 1.0, atol=1e-6)
    np.testing.assert_allclose(drift.label_alignment(sv.u, u), 1.0, atol=1e-6)
    np.testing.assert_allclose(drift.label_alignment(sv.u, 3.0 * u[:, None]), 1.0, atol=1e-6)
    sub = drift.subspace_autocorr(sv.v, 40)  # k = 1: the squared overlap
    assert np.max(np.abs(sub - np.cos(omega * lags) ** 2)) < 2e-3


def test_measures_ignore_svd_signs():
    """Flipping the sign of individual SVD outputs (per time) leaves every rho unchanged."""
    Phis, u, _ = _rotating_rank1()
    sv = drift.singular_series(Phis, k=1)
    rng = np.random.default_rng(1)
    flip_u, flip_v = rng.choice([-1.0, 1.0], (2, 120, 1, 1))
    U, V = sv.u * flip_u, sv.v * flip_v
    np.testing.assert_allclose(drift.autocorr(U, 30), drift.autocorr(sv.u, 30), rtol=1e-12)
    np.testing.assert_allclose(drift.autocorr(V, 30), drift.autocorr(sv.v, 30), rtol=1e-12)
    np.testing.assert_allclose(drift.subspace_autocorr(V, 30), drift.subspace_autocorr(sv.v, 30), rtol=1e-12)
    np.testing.assert_allclose(drift.label_alignment(U, u), drift.label_alignment(sv.u, u), rtol=1e-12)
    assert np.min(drift.autocorr(V, 30, absval=False)) < 0  # without |.| the flips show


def test_subspace_overlap_is_invariant_to_rotation_within_the_subspace():
    """Rank 2 with v1, v2 rotating inside a fixed plane: the top-2 subspace never moves."""
    T, N, P = 60, 20, 10
    rng = np.random.default_rng(2)
    u1, u2 = np.linalg.qr(rng.standard_normal((P, 2)))[0].T
    th = 0.1 * np.arange(T)
    v1 = np.zeros((T, N))
    v2 = np.zeros((T, N))
    v1[:, 0], v1[:, 1], v2[:, 0], v2[:, 1] = np.cos(th), np.sin(th), -np.sin(th), np.cos(th)
    Phis = 3.0 * v1[:, :, None] * u1 + 1.0 * v2[:, :, None] * u2
    sv = drift.singular_series(Phis, k=2)
    np.testing.assert_allclose(drift.subspace_autocorr(sv.v, 20), 1.0, atol=1e-10)
    assert drift.autocorr(sv.v, 20)[-1, 0] < 0.5


def test_top_singular_centering_removes_the_dc_mode():
    """Uncentred positive activations: u is the uniform mode; centred, u is the planted pattern."""
    rng = np.random.default_rng(3)
    N, P = 50, 16
    y = np.sign(rng.standard_normal(P))
    Phi = 2.0 + 0.8 * rng.standard_normal(N)[:, None] * y + 0.01 * rng.standard_normal((N, P))
    raw, cen = drift.top_singular(Phi), drift.top_singular(Phi, center=True)
    assert raw.u.shape == (1, P)
    assert drift.label_alignment(raw.u[None], np.ones(P))[0] > 0.95
    assert drift.label_alignment(cen.u[None], y - y.mean())[0] > 0.99


def _dc_plus_rotation(chains=2, T=50, N=20, P=12, omega=0.07, seed=8):
    """Phi_t = 5 b 1^T + w u(t)^T: a fixed DC mode (every neuron's mean over the inputs) and a
    mean-zero pattern u(t) = cos(w t) e1 + sin(w t) e2 rotating in input space (b, w orthogonal
    unit vectors; e1, e2 orthonormal and orthogonal to 1): an exact two-term SVD."""
    rng = np.random.default_rng(seed)
    b, w = np.linalg.qr(rng.standard_normal((N, 2)))[0].T
    basis = np.linalg.qr(np.column_stack([np.ones(P), rng.standard_normal((P, 2))]))[0]
    e1, e2 = basis[:, 1], basis[:, 2]
    t = np.arange(T)[:, None]
    u = np.cos(omega * t) * e1 + np.sin(omega * t) * e2  # (T, P)
    Phi = 5.0 * b[:, None] * np.ones(P) + w[None, :, None] * u[:, None, :]  # (T, N, P)
    return np.stack([Phi] * chains), omega


def test_raw_and_centred_drift_measures_differ_as_defined():
    """Raw (the perspective's definition): the top pair is the fixed DC mode, so rho_u = rho_v = 1 and
    u is the uniform vector (rho_{u,Y} = 1 for Y = 1).  Centred: the DC mode is gone and u is the
    rotating pattern, rho_u(tau) = |cos(omega tau)|, v = w fixed, and u is orthogonal to Y = 1."""
    Phis, omega = _dc_plus_rotation()
    Y = np.ones(Phis.shape[-1])
    raw = drift.drift_overlaps(Phis, Y, 20)
    centred = drift.drift_overlaps(Phis, Y, 20, center=True)
    np.testing.assert_allclose(raw.rho_u, 1.0, atol=1e-10)
    np.testing.assert_allclose(raw.rho_v, 1.0, atol=1e-10)
    assert raw.rho_uY == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(centred.rho_u, np.abs(np.cos(omega * np.arange(21))), atol=1e-10)
    np.testing.assert_allclose(centred.rho_v, 1.0, atol=1e-10)
    assert centred.rho_uY == pytest.approx(0.0, abs=1e-10)


def test_degenerate_top_singular_values_warn():
    Phi = np.zeros((6, 4))
    Phi[0, 0] = Phi[1, 1] = 1.0
    with pytest.warns(RuntimeWarning, match="near-degenerate"):
        drift.top_singular(Phi)


# ------------------------------------------------------------------------ 11: random baseline


def test_random_baseline_values():
    assert drift.random_baseline(1) == pytest.approx(1.0)
    assert drift.random_baseline(2) == pytest.approx(2 / np.pi)
    assert drift.random_baseline(3) == pytest.approx(0.5)
    large = drift.random_baseline(10_000, exact=False)
    assert drift.random_baseline(10_000) == pytest.approx(large, rel=1e-4)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200_000, 7))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.mean(np.abs(x[:, 0])) == pytest.approx(drift.random_baseline(7), abs=0.002)


def test_independent_representations_sit_at_the_random_baseline():
    """Independent Gaussian Phi_t: u(t), v(t) uniform and independent, so rho = baseline.

    Overlaps at distinct pairs of times are pairwise independent, so the standard error of
    their mean is sd / sqrt(number of pairs).
    """
    T, N, P, max_lag = 400, 40, 15, 5
    sv = drift.singular_series(np.random.default_rng(5).standard_normal((T, N, P)), k=1)
    for X, dim in ((sv.u, P), (sv.v, N)):
        rho = drift.autocorr(X, max_lag)[1:, 0]
        lagged = (np.sum(X[lag:, 0] * X[:-lag, 0], axis=-1) for lag in range(1, max_lag + 1))
        dots = np.abs(np.concatenate(list(lagged)))
        se = dots.std(ddof=1) / np.sqrt(dots.size)
        assert abs(dots.mean() - drift.random_baseline(dim)) < 3 * se, (dim, dots.mean(), se)
        assert np.all(np.abs(rho - drift.random_baseline(dim)) < 4 * dots.std(ddof=1) / np.sqrt(T - max_lag))
    y = np.random.default_rng(6).standard_normal(P)
    align = drift.label_alignment(sv.u, y, average=False)[:, 0]
    assert abs(align.mean() - drift.random_baseline(P)) < 3 * align.std(ddof=1) / np.sqrt(T)
    top3 = drift.singular_series(np.random.default_rng(7).standard_normal((T, N, P)), k=3)
    sub = drift.subspace_autocorr(top3.u, 3)
    assert sub[0] == pytest.approx(1.0) and np.all(np.abs(sub[1:] - 3 / P) < 0.03)  # E = k / P


# ------------------------------------------------------------------------ 12: prior OU overlap


def test_ou_weight_overlap_decays_as_exp_minus_tau_T_over_sigma2():
    """Exact OU samples from a stationary start: W(t).W(0)/|W(0)|^2 = exp(-t T / sigma^2)."""
    T, sigma2 = 0.01, 2.0
    tau_prior = drift.prior_relaxation_time(T, sigma2)
    assert tau_prior == pytest.approx(200.0)
    rng = np.random.default_rng(8)
    times = np.linspace(0, 3 * tau_prior, 31)
    W = drift.simulate_ou(rng, np.sqrt(sigma2) * rng.standard_normal((100, 80)), T, sigma2, times)
    rho = drift.weight_overlap(W)
    expected = drift.ou_overlap(times, T, sigma2)
    se = np.sqrt((1 - expected**2) / W[0].size)  # per-entry products, 8000 of them
    assert rho[0] == pytest.approx(1.0) and np.all(np.abs(rho - expected) < 4 * se + 1e-12)
    assert np.mean(W[-1] ** 2) == pytest.approx(sigma2, rel=0.05)


def test_euler_maruyama_in_paper_units_matches_ou_overlap():
    """dW = -(T/sigma^2) W dt + sqrt(2T) dB (the paper's Langevin time) has the same overlap.

    Guards the temperature/time convention: a missing factor 2 in the noise or drift would show
    as exp(-2 tau T / sigma^2) or a stationary variance off by 2.
    """
    T, sigma2, dt, n_steps, every = 0.02, 1.0, 0.25, 2000, 100
    rng = np.random.default_rng(9)
    W = rng.standard_normal(20_000) * np.sqrt(sigma2)
    series = [W]
    for step in range(1, n_steps + 1):
        W = W - (T / sigma2) * W * dt + np.sqrt(2 * T * dt) * rng.standard_normal(W.shape)
        if step % every == 0:
            series.append(W)
    times = dt * every * np.arange(len(series))
    rho, expected = drift.weight_overlap(np.stack(series)), drift.ou_overlap(times, T, sigma2)
    se = np.sqrt((1 - expected**2) / W.size)
    assert np.all(np.abs(rho - expected) < 4 * se + 2e-3)  # + O(dt T / sigma^2) discretisation bias
    assert np.mean(W**2) == pytest.approx(sigma2, rel=0.05)


def test_weight_overlap_reference_and_shapes():
    W = np.random.default_rng(10).standard_normal((5, 3, 4))
    np.testing.assert_allclose(drift.weight_overlap(W, W[2])[2], 1.0)
    np.testing.assert_allclose(drift.weight_overlap(W)[1], np.sum(W[1] * W[0]) / np.sum(W[0] ** 2))
