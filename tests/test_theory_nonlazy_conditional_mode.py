"""The conditional-mode theory (one hidden layer, any task; ``theory/nonlazy/conditional_mode.py``).

Exactness checks: the inner maximiser against a general-purpose optimiser, the readout density's
gradient and Hessian against finite differences, the Laplace-frame quadrature on a Gaussian, and the
whole solver against the closed-form linear network (where neglecting the conditional fluctuations
of the preactivations is exact for U, Lambda and the mean predictor).
"""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import erf

from widebayes.activations import get_activation
from widebayes.theory.nonlazy import conditional_mode as cm
from widebayes.theory.nonlazy.linear import linear_test, solve_linear


def sigmoid(z):
    return 0.5 * (1.0 + erf(np.sqrt(np.pi) / 2.0 * z))


def problem(P=12, N0=30, m=3, seed=0, num_test=5):
    rng = np.random.default_rng(seed)
    X, Xt = rng.standard_normal((P, N0)), rng.standard_normal((num_test, N0))
    K0 = X @ X.T / N0
    Y = np.eye(m)[rng.integers(0, m, P)]
    return K0, Y, rng, (X @ Xt.T / N0, Xt @ Xt.T / N0)


def test_conditional_modes_maximise_the_tilted_log_density():
    K0, Y, rng, _ = problem()
    B = 5.0 * rng.standard_normal((4, len(K0)))
    Ci = np.linalg.inv(K0)
    z, s, res = cm.conditional_modes(K0, Ci, B, sigmoid)
    assert res < 1e-6
    for b, zb, sb in zip(B, z, s):
        def neg(x):
            return 0.5 * x @ Ci @ x - b @ sigmoid(x)
        ref = minimize(neg, zb + 0.3 * rng.standard_normal(len(zb)), method="BFGS", options={"gtol": 1e-10})
        assert -ref.fun <= sb + 1e-8
        np.testing.assert_allclose(ref.x, zb, atol=1e-4)


def test_readout_density_gradient_and_hessian_match_finite_differences():
    K0, Y, rng, _ = problem()
    Ci = np.linalg.inv(K0)
    Lam = 3.0 * rng.standard_normal(Y.shape)
    a = 0.5 * rng.standard_normal((1, 3))
    r = cm.readout_density(K0, Ci, Lam, 0.1, sigmoid, a)
    h = 1e-4
    grad, hess = np.zeros(3), np.zeros((3, 3))
    for i in range(3):
        e = np.zeros((1, 3))
        e[0, i] = h
        up = cm.readout_density(K0, Ci, Lam, 0.1, sigmoid, a + e, r.z)
        down = cm.readout_density(K0, Ci, Lam, 0.1, sigmoid, a - e, r.z)
        grad[i] = (up.log_q[0] - down.log_q[0]) / (2 * h)
        hess[i] = (up.grad[0] - down.grad[0]) / (2 * h)
    np.testing.assert_allclose(r.grad[0], grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.hess[0], hess, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sigma_a2, T0", [(1 / 20, 0.01), (0.5, 0.1)])
def test_linear_network_matches_the_closed_form(sigma_a2, T0):
    """For phi(z) = z, z*(a) is linear in a and q(a) = N(0, U): one mode, Gauss-Hermite exact."""
    K0, Y, rng, (k0, Kt) = problem(P=20, N0=40)
    sol = cm.solve_conditional_mode(K0, Y, lambda z: z, sigma_a2, T0)
    lin = solve_linear(K0, Y, [1.0], sigma_a2, T0)
    assert sol.residual < 1e-8 and len(sol.modes) == 1
    np.testing.assert_allclose(sol.readout_second_moment, lin.U, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sol.Lambda, lin.Lambda, rtol=1e-7, atol=1e-9)
    ref = linear_test(lin, K0, k0, Kt, [1.0], sigma_a2, T0, 100)
    te = cm.conditional_mode_test(sol, get_activation("linear"), K0, k0, np.diag(Kt), 1.0, T0, 100)
    np.testing.assert_allclose(te.mean, ref.mean, rtol=1e-7, atol=1e-9)


def test_sigmoid_solution_is_self_consistent_and_finds_codes():
    """Strong tilt (sigma_a2 = 1/P, T0 = 0.01): several modes (codes); the field solves
    E_q[phi a^T] + T0 Lambda = Y, so the training outputs sit within T0 |Lambda| of the targets."""
    K0, Y, _, _ = problem(P=30, N0=60)
    sol = cm.solve_conditional_mode(K0, Y, sigmoid, 1 / 30, 0.01)
    assert sol.residual < 1e-8
    assert len(sol.modes) >= 2
    np.testing.assert_allclose(sol.F_train + 0.01 * sol.Lambda, Y, atol=1e-7)
    np.testing.assert_allclose(sol.w.sum(), 1.0)
    np.testing.assert_allclose(sol.mode_weights.sum(), 1.0)
