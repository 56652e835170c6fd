"""Exact-tier checks of the back-propagating kernel renormalisation (theory/bpkr.py)."""

import numpy as np
import pytest
from scipy.optimize import minimize

from widebayes.theory import bpkr, gp, nngp


def _orthogonal_task(P=50, N0=60, per_class=25):
    """THEORY.md 3.5.3: x_mu = sqrt(N0) e_mu (K0 = I), one-hot targets, two classes."""
    X = np.zeros((P, N0))
    X[np.arange(P), np.arange(P)] = np.sqrt(N0)
    Y = np.zeros((P, 2))
    Y[:per_class, 0], Y[per_class:, 1] = 1.0, 1.0
    return X, Y


def _random_task(rng, P=20, N0=30, m=1):
    X = rng.standard_normal((P, N0))
    Y = rng.standard_normal((P, m)) + np.tanh(X[:, :m])
    return nngp.input_kernel(X), Y


def _spike_bulk(K, Y):
    """Mean eigenvalue of K inside span(Y) and orthogonal to it."""
    Q = np.linalg.qr(Y)[0]
    Pperp = np.eye(K.shape[0]) - Q @ Q.T
    return np.trace(Q.T @ K @ Q) / Q.shape[1], np.trace(Pperp @ K @ Pperp) / (K.shape[0] - Q.shape[1])


def test_deep_linear_orthogonal_task_matches_theory_table():
    """THEORY.md 3.5.3: L = 2, N = 100, P = 50, sigma = 1, T -> 0: u^2 (u - 1/2) = 1/4, u = 0.8478;
    exact-mean kernels: K_1 spike/bulk 1.328/0.980, K_2 1.596/0.960."""
    X, Y = _orthogonal_task()
    K0 = nngp.input_kernel(X)
    sol = bpkr.solve_U(K0, Y, depth=2, width=100, T=0.0)
    np.testing.assert_allclose(sol.U, 0.84781 * np.eye(2), atol=1e-5)
    assert sol.u[0] ** 2 * (sol.u[0] - 0.5) == pytest.approx(0.25, rel=1e-13)
    assert np.trace(bpkr.readout_second_moment(sol.U, 1.0)) / 2 == pytest.approx(0.8478, abs=1e-4)
    mk = bpkr.mean_layer_kernels(K0, Y, sol.U, 100, 0.0, [1.0, 1.0])
    for layer, (spike, bulk) in enumerate([(1.0, 1.0), (1.328, 0.980), (1.596, 0.960)]):
        got = _spike_bulk(mk.train[layer], Y)
        np.testing.assert_allclose(got, (spike, bulk), atol=1e-3)


SETTINGS = [  # depth, width, T, sigma_w2, sigma_a2
    (1, 40, 0.0, 1.0, 1.0),
    (2, 40, 0.0, [1.5, 0.6], 0.7),
    (3, 25, 0.0, 0.8, 2.0),
    (1, 40, 0.05, 1.0, 1.0),
    (2, 40, 0.01, [1.5, 0.6], 0.7),
    (3, 12, 0.2, 0.8, 2.0),  # alpha > 1 at finite T
]


@pytest.mark.parametrize("depth,width,T,sigma_w2,sigma_a2", SETTINGS)
def test_brentq_and_fixed_point_agree(depth, width, T, sigma_w2, sigma_a2):
    K0, Y = _random_task(np.random.default_rng(depth))
    a = bpkr.solve_u(K0, Y, depth, width, T, sigma_w2, sigma_a2)
    b = bpkr.solve_u_fixed_point(K0, Y, depth, width, T, sigma_w2, sigma_a2)
    assert a.u == pytest.approx(b.u, abs=1e-8)
    assert abs(a.residual) < 1e-10 * width and abs(b.residual) < 1e-8 * width
    assert a.renorm == pytest.approx(a.scale * a.u**depth)


def test_zero_temperature_equation_and_limit():
    """T = 0 solves u^L (u - 1 + alpha) = alpha r0 / s; the finite-T solution tends to it."""
    K0, Y = _random_task(np.random.default_rng(7))
    P, N, L, s = 20, 40, 2, 1.5 * 0.6 * 0.7
    sol = bpkr.solve_u(K0, Y, L, N, 0.0, [1.5, 0.6], 0.7)
    r0 = float(Y[:, 0] @ np.linalg.solve(K0, Y[:, 0])) / P
    assert sol.u**L * (sol.u - 1 + P / N) == pytest.approx(P / N * r0 / s, rel=1e-12)
    near = bpkr.solve_u(K0, Y, L, N, 1e-9, [1.5, 0.6], 0.7)
    assert near.u == pytest.approx(sol.u, rel=1e-6)


def test_limits_small_targets_large_temperature_small_alpha():
    K0, Y = _random_task(np.random.default_rng(8))
    P, N = 20, 40
    assert bpkr.solve_u(K0, 1e-8 * Y, 2, N, 0.0).u == pytest.approx(1 - P / N, abs=1e-9)
    assert bpkr.solve_u(K0, Y, 2, N, 1e6).u == pytest.approx(1.0, abs=1e-6)
    assert bpkr.solve_u(K0, Y, 2, 10**9, 0.1).u == pytest.approx(1.0, abs=1e-6)


def test_alpha_to_zero_recovers_the_nngp_predictor():
    rng = np.random.default_rng(9)
    X, Xt = rng.standard_normal((15, 20)), rng.standard_normal((6, 20))
    Y, Yt = rng.standard_normal((15, 2)), rng.standard_normal((6, 2))
    res = bpkr.bpkr_prediction(X, Y, Xt, Yt, "linear", [1.3, 0.8], 0.9, width=10**9, T=0.05)
    np.testing.assert_allclose(res.u, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.prediction.mean, res.gp.mean, rtol=1e-6)
    np.testing.assert_allclose(res.prediction.var, np.repeat(res.gp.var[:, None], 2, 1), rtol=1e-6)
    np.testing.assert_allclose(res.gen_error.total, res.gen_error_gp.total, rtol=1e-6)


def test_van_meegen_toy_numbers_in_the_nngp_limit():
    """THEORY.md 5: P = N0 = 3, K0 = I, y = (1, -1, 0.5), L = 1, non-lazy a/N = lazy with
    sigma_a2 = 1/N and T_eff = T0/N; at alpha -> 0: U = 2.0743 (T0 = 0.01), 2.0811 (T0 -> 0)."""
    N, y = 10**7, np.array([1.0, -1.0, 0.5])
    assert bpkr.solve_u(np.eye(3), y, 1, N, 0.01 / N, 1.0, 1.0 / N).u == pytest.approx(2.0743, abs=1e-4)
    assert bpkr.solve_u(np.eye(3), y, 1, N, 0.0, 1.0, 1.0 / N).u == pytest.approx(2.0811, abs=1e-4)


@pytest.mark.parametrize("T", [0.0, 0.03])
def test_single_output_U_equals_u(T):
    K0, Y = _random_task(np.random.default_rng(10))
    U = bpkr.solve_U(K0, Y, 2, 30, T, [1.2, 0.9], 0.8)
    u = bpkr.solve_u(K0, Y[:, 0], 2, 30, T, [1.2, 0.9], 0.8)
    assert U.U.shape == (1, 1) and U.U[0, 0] == pytest.approx(u.u, rel=1e-12)
    assert U.residual < 1e-9


def test_U_is_per_direction_u_when_G_is_diagonal_at_zero_T():
    """Y = C B with K0 = C C^T and orthogonal columns of B: G = Y^T K0^{-1} Y = B^T B diagonal."""
    rng = np.random.default_rng(11)
    K0, _ = _random_task(rng)
    B = np.linalg.qr(rng.standard_normal((20, 3)))[0] * np.array([1.0, 3.0, 6.0])
    Y = np.linalg.cholesky(K0) @ B
    sol = bpkr.solve_U(K0, Y, 2, 30, 0.0, 1.1, 0.9)
    per = [bpkr.solve_u(K0, Y[:, r], 2, 30, 0.0, 1.1, 0.9).u for r in range(3)]
    np.testing.assert_allclose(sol.U, np.diag(per), atol=1e-12)
    assert sol.method == "eigen" and sol.residual < 1e-10


def test_U_is_per_direction_u_for_one_hot_orthogonal_task_at_finite_T():
    X, Y = _orthogonal_task(P=30, N0=40, per_class=10)
    K0 = nngp.input_kernel(X)
    sol = bpkr.solve_U(K0, Y, 3, 60, 0.02)
    per = [bpkr.solve_u(K0, Y[:, r], 3, 60, 0.02).u for r in range(2)]
    np.testing.assert_allclose(sol.U, np.diag(per), atol=1e-12)
    assert sol.method == "eigen"


def _matrix_hamiltonian(U, K0, Y, depth, width, T, s):
    """H(U) with M = U^L, written directly with Kronecker products (independent of bpkr)."""
    w, Q = np.linalg.eigh(U)
    if w.min() <= 0:
        return np.inf
    K = s * np.kron(Q @ np.diag(w**depth) @ Q.T, K0) + T * np.eye(U.shape[0] * K0.shape[0])
    y = Y.T.reshape(-1)
    return (0.5 * width * depth * (np.trace(U) - np.log(w).sum()) + 0.5 * y @ np.linalg.solve(K, y)
            + 0.5 * np.linalg.slogdet(K)[1])


def test_coupled_directions_solve_the_matrix_saddle():
    """Finite T, random K0 and targets: the directions do not decouple; U minimises H(U)."""
    rng = np.random.default_rng(12)
    K0, Y = _random_task(rng, P=12, N0=20, m=2)
    Y[:, 1] += 0.5 * Y[:, 0] ** 2
    sol = bpkr.solve_U(K0, Y, 2, 30, 0.05, [1.3, 0.7], 0.8)
    assert sol.method == "matrix" and sol.residual < 1e-9
    def H(v):
        return _matrix_hamiltonian(_chol_to_U(v), K0, Y, 2, 30, 0.05, sol.scale)
    best = minimize(H, [1.0, 0.0, 1.0], method="Nelder-Mead",
                    options=dict(xatol=1e-11, fatol=1e-13, maxiter=20000))
    np.testing.assert_allclose(sol.U, _chol_to_U(best.x), atol=1e-6)


def _chol_to_U(v):
    C = np.array([[v[0], 0.0], [v[1], v[2]]])
    return C @ C.T


def test_readout_identity_from_the_envelope_theorem():
    """<|a|^2>/N = sigma_a2 + 2 sigma_a2^2 d ln Z / d sigma_a2 / N with ln Z = -min_u H(u):
    equals sigma_a2 u (finite differences in sigma_a2)."""
    K0, Y = _random_task(np.random.default_rng(13))
    L, N, T, sw, sa, h = 2, 40, 0.05, [1.3, 0.8], 0.7, 1e-5

    def H_min(sigma_a2):
        u = bpkr.solve_u(K0, Y, L, N, T, sw, sigma_a2).u
        return bpkr.effective_hamiltonian(u, K0, Y, L, N, T, sw, sigma_a2)

    dH = (H_min(sa + h) - H_min(sa - h)) / (2 * h)
    u = bpkr.solve_u(K0, Y, L, N, T, sw, sa).u
    assert sa - 2 * sa**2 * dH / N == pytest.approx(bpkr.readout_second_moment(u, sa)[0, 0], rel=1e-6)


def test_predictor_at_zero_T_is_the_kernel_interpolant_with_renormalised_variance():
    rng = np.random.default_rng(14)
    X, Xt = rng.standard_normal((15, 20)), rng.standard_normal((5, 20))
    Y = rng.standard_normal((15, 2))
    K0, Kc, kd = nngp.input_kernel(X), nngp.input_kernel(X, Xt), np.sum(Xt**2, 1) / 20
    sol = bpkr.solve_U(K0, Y, 2, 30, 0.0, [1.2, 0.9], 0.8)
    pred = bpkr.bpkr_predictor(K0, Kc, kd, Y, sol.U, 2, 0.0, [1.2, 0.9], 0.8)
    np.testing.assert_allclose(pred.mean, Kc.T @ np.linalg.solve(K0, Y), rtol=1e-9)
    delta0 = kd - np.einsum("pt,pq,qt->t", Kc, np.linalg.inv(K0), Kc)
    M = sol.scale * np.linalg.matrix_power(sol.U, 2)
    np.testing.assert_allclose(pred.cov, delta0[:, None, None] * M, rtol=1e-7, atol=1e-12)


def test_single_output_predictor_is_gp_with_renormalised_kernel():
    rng = np.random.default_rng(15)
    X, Xt = rng.standard_normal((15, 20)), rng.standard_normal((5, 20))
    y = rng.standard_normal(15)
    K0, Kc, kd = nngp.input_kernel(X), nngp.input_kernel(X, Xt), np.sum(Xt**2, 1) / 20
    sol = bpkr.solve_u(K0, y, 2, 30, 0.1, [1.2, 0.9], 0.8)
    pred = bpkr.bpkr_predictor(K0, Kc, kd, y, [[sol.u]], 2, 0.1, [1.2, 0.9], 0.8)
    ref = gp.gp_posterior(sol.renorm * K0, sol.renorm * Kc, sol.renorm * kd, y, 0.1)
    np.testing.assert_allclose(pred.mean, ref.mean, rtol=1e-10)
    np.testing.assert_allclose(pred.var[:, 0], ref.var, rtol=1e-10)


def test_one_layer_mean_kernel_matches_theory_2_5_at_finite_T():
    """THEORY.md 2.5 (all sigma^2 equal): <K_1> = sigma^2 K0 + (sigma^6 u / N) K0 [(K_u+T)^-1 Y Y^T
    (K_u+T)^-1 - (K_u+T)^-1] K0, K_u = sigma^4 u K0 (there K_1 = z_1 z_1^T / N)."""
    K0, Y = _random_task(np.random.default_rng(16))
    g, N, T = 0.7, 40, 0.05
    u = bpkr.solve_u(K0, Y, 1, N, T, g, g).u
    A = np.linalg.inv(g**2 * u * K0 + T * np.eye(20))
    expected = g * K0 + (g**3 * u / N) * K0 @ (A @ Y @ Y.T @ A - A) @ K0
    mk = bpkr.mean_layer_kernels(K0, Y, [[u]], N, T, [g], g)
    np.testing.assert_allclose(mk.train[1], expected, rtol=1e-9, atol=1e-12)
    feat = bpkr.mean_feature_kernel(g * K0, Y, [[u]], 1, N, T, g)
    np.testing.assert_allclose(feat.train[0], expected, rtol=1e-9, atol=1e-12)


def test_mean_kernel_bulk_is_unlearned_at_zero_T():
    """At T = 0, directions orthogonal to Y keep (1 - m/N)^l prod_{l' <= l} sigma_l'^2 K0."""
    rng = np.random.default_rng(17)
    X, Y = rng.standard_normal((12, 20)), rng.standard_normal((12, 2))
    K0, sw, N = nngp.input_kernel(X), [1.4, 0.6, 1.1], 30
    sol = bpkr.solve_U(K0, Y, 3, N, 0.0, sw, 0.9)
    mk = bpkr.mean_layer_kernels(K0, Y, sol.U, N, 0.0, sw, 0.9)
    Qperp = np.linalg.svd(Y, full_matrices=True)[0][:, 2:]
    for layer in range(4):
        factor = (1 - 2 / N) ** layer * np.prod(sw[:layer])
        np.testing.assert_allclose(Qperp.T @ mk.train[layer] @ Qperp, factor * Qperp.T @ K0 @ Qperp,
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("T", [0.0, 0.05])
def test_mean_kernel_test_blocks_at_training_inputs_equal_train_blocks(T):
    rng = np.random.default_rng(21)
    X, Y = rng.standard_normal((12, 20)), rng.standard_normal((12, 2))
    Xt, sw, N = X[:4], [1.4, 0.6, 1.1], 30
    K0 = nngp.input_kernel(X)
    U = bpkr.solve_U(K0, Y, 3, N, T, sw, 0.9).U
    mk = bpkr.mean_layer_kernels(K0, Y, U, N, T, sw, 0.9, nngp.input_kernel(X, Xt), nngp.input_kernel(Xt))
    assert mk.cross.shape == (4, 12, 4) and mk.test.shape == (4, 4, 4)
    np.testing.assert_allclose(mk.cross, mk.train[:, :, :4], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(mk.test, mk.train[:, :4, :4], rtol=1e-8, atol=1e-12)
    only_cross = bpkr.mean_layer_kernels(K0, Y, U, N, T, sw, 0.9, nngp.input_kernel(X, Xt))
    np.testing.assert_allclose(only_cross.cross, mk.cross, rtol=1e-12)
    assert only_cross.test is None


def test_bpkr_prediction_linear_routes_agree():
    """The nngp route (base K_L, s = sigma_a2) equals the K0 route with the sigma product."""
    rng = np.random.default_rng(18)
    X, Xt = rng.standard_normal((14, 20)), rng.standard_normal((5, 20))
    Y, Yt = rng.standard_normal((14, 2)), rng.standard_normal((5, 2))
    sw, sa, N, T = [1.3, 0.8], 0.9, 25, 0.02
    res = bpkr.bpkr_prediction(X, Y, Xt, Yt, "linear", sw, sa, N, T, full_test=True)
    direct = bpkr.solve_U(nngp.input_kernel(X), Y, 2, N, T, sw, sa)
    np.testing.assert_allclose(res.U, direct.U, rtol=1e-10)
    mk = bpkr.mean_layer_kernels(nngp.input_kernel(X), Y, direct.U, N, T, sw, sa, nngp.input_kernel(X, Xt),
                                 nngp.input_kernel(Xt))
    np.testing.assert_allclose(res.mean_kernels.train, mk.train, rtol=1e-9)
    np.testing.assert_allclose(res.mean_kernels.test, mk.test, rtol=1e-9)
    np.testing.assert_allclose(res.readout_second_moment, sa * res.U)
    err = gp.generalization_error(res.prediction.mean, res.prediction.var, Yt)
    assert res.gen_error.total_sum == pytest.approx(err.total_sum)


def test_relu_heuristic_runs_and_keeps_the_interpolant_at_zero_T():
    rng = np.random.default_rng(19)
    X, Xt = rng.standard_normal((14, 20)), rng.standard_normal((5, 20))
    Y = np.sign(X[:, :1])
    res = bpkr.bpkr_prediction(X, Y, Xt, None, "relu", [1.0, 1.0], 1.0, 20, 0.0)
    assert res.residual < 1e-9 and res.gen_error is None
    np.testing.assert_allclose(res.prediction.mean, res.gp.mean, rtol=1e-8)
    ratio = res.prediction.var[:, 0] / res.gp.var
    np.testing.assert_allclose(ratio, res.u[0] ** 2, rtol=1e-8)  # K_u = u^L sigma_a2 K_L
    np.testing.assert_allclose(res.mean_kernels.train[:2], res.nngp.train[:2])
    assert not np.allclose(res.mean_kernels.train[2], res.nngp.train[2])


def test_singular_kernel_at_zero_temperature_is_refused():
    X = np.random.default_rng(20).standard_normal((10, 4))  # P > N0: K0 has rank 4
    with pytest.raises(ValueError, match="singular"):
        bpkr.solve_u(nngp.input_kernel(X), np.ones(10), 1, 20, 0.0)
