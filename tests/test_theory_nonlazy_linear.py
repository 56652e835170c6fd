"""Exact-tier checks of the deep linear non-lazy theory (theory/nonlazy/linear.py; THEORY.md 1.3, 5)."""

import numpy as np
import pytest

from widebayes.activations import get_activation
from widebayes.theory import gp
from widebayes.theory.nonlazy import linear as lin
from widebayes.theory.nonlazy import meanfield as mf

TOY_K0 = np.eye(3)
TOY_Y = np.array([[1.0], [-1.0], [0.5]])  # THEORY.md 5: P = N0 = 3, K0 = I, sigma's = 1


def _random_task(seed=0, P=4, N0=6, m=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P + 3, N0))
    return X[:P] @ X[:P].T / N0, rng.standard_normal((P, m)), X


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("T0", [0.0, 0.05])
def test_closed_form_matches_rate_function_minimum(depth, T0):
    """U and every layer kernel from the closed forms equal the direct minimiser of the deep rate
    function (Wishart rates plus the output rate; THEORY.md 1.2), general K0, m = 2, unequal sigmas."""
    K0, Y, _ = _random_task()
    sigma_w2 = [1.0, 0.7, 1.3][:depth]
    closed = lin.solve_linear(K0, Y, sigma_w2, 0.5, T0)
    direct = lin.minimise_linear_rate(K0, Y, sigma_w2, 0.5, T0)
    assert closed.residual < 1e-12
    assert direct.gradient < 1e-6
    np.testing.assert_allclose(closed.U, direct.U, atol=1e-6)
    np.testing.assert_allclose(closed.kernels, direct.kernels, atol=1e-6)


def test_theory_section5_numbers_L1():
    """THEORY.md 1.3/5: U = 2.0811 (T0 -> 0), 2.0743 (T0 = 0.01), large-P form 1.50; F = 0.99520;
    K^1 off-diagonals -0.477 / 0.239 / -0.239."""
    zero = lin.solve_linear(TOY_K0, TOY_Y, [1.0], 1.0, 0.0)
    warm = lin.solve_linear(TOY_K0, TOY_Y, [1.0], 1.0, 0.01)
    large = lin.solve_linear(TOY_K0, TOY_Y, [1.0], 1.0, 0.0, large_P=True)
    assert zero.U[0, 0] == pytest.approx(0.5 + np.sqrt(0.25 + 2.25), abs=1e-12)
    assert zero.U[0, 0] == pytest.approx(2.0811, abs=1e-4)
    assert warm.U[0, 0] == pytest.approx(2.0743, abs=1e-4)
    assert large.U[0, 0] == pytest.approx(1.5, abs=1e-12)
    assert warm.F_train[0, 0] == pytest.approx(0.99520, abs=1e-5)
    K1 = warm.kernels[1]
    np.testing.assert_allclose([K1[0, 1], K1[0, 2], K1[1, 2]], [-0.477, 0.239, -0.239], atol=1e-3)
    assert max(zero.residual, warm.residual) < 1e-12


def test_theory_section5_numbers_L2():
    """THEORY.md 5, linear L = 2, T0 = 0.02: U = 1.736, K^1_01 = -0.327, K^2_01 = -0.896."""
    sol = lin.solve_linear(TOY_K0, TOY_Y, [1.0, 1.0], 1.0, 0.02)
    assert sol.U[0, 0] == pytest.approx(1.736, abs=1e-3)
    assert sol.kernels[1][0, 1] == pytest.approx(-0.327, abs=1e-3)
    assert sol.kernels[2][0, 1] == pytest.approx(-0.896, abs=1e-3)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_exact_equation_and_kernel_recursions(depth):
    """T0 = 0: U^L (U - sigma_a^2) = sigma_a^{2L} G / s_L; the kernels obey the top-layer identity
    K^L = sigma_L^2 K^{L-1} + Y U^{-1} Y^T and K^{l+1} = sigma_{l+1}^2 K^l (sigma_l^2 K^{l-1})^{-1} K^l;
    the task-direction eigenvalues of K^l are U^l for K0 = I, sigmas = 1 (THEORY.md 1.3)."""
    K0, Y, _ = _random_task(seed=1, m=2)
    sigma_w2 = np.linspace(0.8, 1.4, depth)
    sa2 = 0.3
    sol = lin.solve_linear(K0, Y, sigma_w2, sa2, 0.0)
    s = np.cumprod(sigma_w2)
    G = lin.task_gram(K0, Y)
    lhs = np.linalg.matrix_power(sol.U, depth) @ (sol.U - sa2 * np.eye(2))
    np.testing.assert_allclose(lhs, sa2**depth * G / s[-1], rtol=1e-10, atol=1e-12)
    K = sol.kernels
    top = sigma_w2[-1] * K[-2] + Y @ np.linalg.solve(sol.U, Y.T)
    np.testing.assert_allclose(K[-1], top, atol=1e-10)
    for layer in range(1, depth):
        prev = sigma_w2[layer - 1] * K[layer - 1]
        np.testing.assert_allclose(K[layer + 1], sigma_w2[layer] * K[layer] @ np.linalg.solve(prev, K[layer]),
                                   atol=1e-9)
    eye = lin.solve_linear(np.eye(3), TOY_Y, [1.0] * depth, 1.0, 0.0)
    v = TOY_Y[:, 0] / np.linalg.norm(TOY_Y)
    for layer in range(1, depth + 1):
        assert v @ eye.kernels[layer] @ v == pytest.approx(eye.U[0, 0] ** layer, rel=1e-12)


def test_paper_kernel_form_at_unit_variances():
    """Paper ("Analog coding scheme"): K_l = K0 + sigma_a^{2(L-l)} Y U^{-(L-l+1)} Y^T with U from
    U^{L+1} = sigma_a^{2L} G.  THEORY.md's form with the large-P U differs only by -Y G^{-1} Y^T
    sigma-free terms, which vanish relative to the learned part as G grows."""
    K0, Y, _ = _random_task(seed=2, P=5, m=2)
    depth, sa2 = 3, 0.2
    sol = lin.solve_linear(K0, Y, [1.0] * depth, sa2, 0.0, large_P=True)
    Ui = np.linalg.inv(sol.U)
    for layer in range(1, depth + 1):
        paper = K0 + sa2 ** (depth - layer) * Y @ np.linalg.matrix_power(Ui, depth - layer + 1) @ Y.T
        ours = sol.kernels[layer] + Y @ np.linalg.solve(lin.task_gram(K0, Y), Y.T)
        np.testing.assert_allclose(ours, paper, atol=1e-9)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_large_P_form_is_the_limit_of_the_exact_form(depth):
    """U_exact / U_large -> 1 as G grows (G = O(P)): the gap falls monotonically and approaches
    its leading order sigma_a^2 / ((L + 1) U_large)."""
    K0, Y, _ = _random_task(seed=3, m=1)
    gaps, lead = [], []
    for scale in (1.0, 1e2, 1e4, 1e6, 1e8):
        G = scale * lin.task_gram(K0, Y)
        exact = lin.readout_covariance_zero_T(G, 0.5, [1.0] * depth)[0][0, 0]
        large = lin.readout_covariance_zero_T(G, 0.5, [1.0] * depth, large_P=True)[0][0, 0]
        gaps.append(exact / large - 1.0)
        lead.append(0.5 / ((depth + 1) * large))
    assert all(g > 0 for g in gaps)
    assert np.all(np.diff(gaps) < 0)
    assert gaps[-1] < 0.1 * gaps[0]
    assert gaps[-1] == pytest.approx(lead[-1], rel=0.05)


def test_finite_T_tends_to_zero_T():
    K0, Y, _ = _random_task(seed=4)
    a = lin.solve_linear(K0, Y, [1.0, 0.9], 0.4, 1e-9)
    b = lin.solve_linear(K0, Y, [1.0, 0.9], 0.4, 0.0)
    np.testing.assert_allclose(a.U, b.U, atol=1e-6)
    np.testing.assert_allclose(a.kernels, b.kernels, atol=1e-6)


def test_test_predictor_is_gp_mean_and_kernels_extend_training():
    """T0 = 0: f(x) = k0^T K0^{-1} Y (the GP mean, paper); the test kernel evaluated on the training
    inputs reproduces the training kernels; Var f = s_L Delta0 U_rr / N (THEORY.md 1.3)."""
    K0, Y, X = _random_task(seed=5, P=4, N0=6)
    sigma_w2, sa2, N = [1.0, 1.2], 0.3, 100
    sol = lin.solve_linear(K0, Y, sigma_w2, sa2, 0.0)
    Xtr, Xte = X[:4], X[4:]
    k0, Kt = Xtr @ Xte.T / 6, Xte @ Xte.T / 6
    te = lin.linear_test(sol, K0, k0, Kt, sigma_w2, sa2, 0.0, N)
    ref = gp.gp_posterior(K0, k0, np.diag(Kt), Y, 0.0)
    np.testing.assert_allclose(te.mean, ref.mean, atol=1e-10)
    delta = np.diag(Kt) - np.sum(k0 * np.linalg.solve(K0, k0), 0)
    np.testing.assert_allclose(te.var, 1.2 * delta[:, None] * np.diag(sol.U)[None, :] / N, rtol=1e-8)
    on_train = lin.linear_test(sol, K0, K0, K0, sigma_w2, sa2, 0.0, N)
    np.testing.assert_allclose(on_train.test, sol.kernels, atol=1e-9)
    np.testing.assert_allclose(on_train.var, 0.0, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2])
def test_training_response_is_the_derivative_of_the_output(depth):
    """The T0 part of the predictor variance, (h e_r)^T dF/dY (h e_r), by implicit differentiation
    equals central differences of the full solve."""
    K0, Y, _ = _random_task(seed=6, P=3, m=2)
    sigma_w2, sa2, T0 = [1.0, 0.8][:depth], 0.7, 0.2
    sol = lin.solve_linear(K0, Y, sigma_w2, sa2, T0)
    h = np.array([[0.3], [-1.0], [0.6]])
    resp = lin.training_response(K0, Y, h, sol.U, lin.layer_products(sigma_w2), sa2, T0)
    eps = 1e-6
    for r in range(2):
        E = np.zeros_like(Y)
        E[:, r] = h[:, 0]
        plus = lin.solve_linear(K0, Y + eps * E, sigma_w2, sa2, T0).F_train[:, r]
        minus = lin.solve_linear(K0, Y - eps * E, sigma_w2, sa2, T0).F_train[:, r]
        assert resp[0, r] == pytest.approx(h[:, 0] @ (plus - minus) / (2 * eps), rel=1e-6)


def test_general_single_neuron_path_reproduces_linear_closed_form():
    """The quadrature solver of THEORY.md 1.2 with phi(z) = z gives the linear closed forms (U, K^1,
    test mean and the full O(1/N) variance, including its T0 part) — two independent derivations."""
    K0, Y, X = _random_task(seed=7, P=3, N0=4, m=2)
    act, sa2, T0, N = get_activation("linear"), 0.7, 0.05, 100
    k0, Kt = X[:3] @ X[3:].T / 4, X[3:] @ X[3:].T / 4
    general = mf.solve_mean_field(K0, Y, act.phi_np, sa2, T0)
    closed = lin.solve_linear(K0, Y, [1.0], sa2, T0)
    # agreement to the Gauss-Hermite accuracy of the strongly tilted measure (~1e-6)
    np.testing.assert_allclose(general.readout_second_moment, closed.U, rtol=2e-5)
    np.testing.assert_allclose(general.K_phi, closed.kernels[1], rtol=2e-5, atol=1e-7)
    g_test = mf.mean_field_test(general, act, K0, k0, np.diag(Kt), 1.0, sa2, T0, N)
    c_test = lin.linear_test(closed, K0, k0, Kt, [1.0], sa2, T0, N)
    np.testing.assert_allclose(g_test.mean, c_test.mean, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(g_test.var, c_test.var, rtol=1e-4)
    np.testing.assert_allclose(g_test.k_diag, np.diag(c_test.test[1]), rtol=2e-5)
