"""Exact-tier checks of the nonlinear non-lazy theory: the single-neuron tilted measure (THEORY.md
1.2), Cramér functions, redundant codes (1.4b) and sparse codes (1.5b)."""

import numpy as np
import pytest
import scipy.special as sps

from widebayes.activations import get_activation, kernel_matrix
from widebayes.codes import code_of_means
from widebayes.theory.nonlazy import classes as cl
from widebayes.theory.nonlazy import cramer
from widebayes.theory.nonlazy import meanfield as mf
from widebayes.theory.nonlazy import relu as rl
from widebayes.theory.nonlazy import sigmoid as sg

RHO = np.array([0.5, 0.25, 0.25])


def _targets(y_plus, y_minus, k=3):
    Y = np.full((k, k), y_minus)
    np.fill_diagonal(Y, y_plus)
    return Y


def _task(activation, y_minus, T0=0.01, P=100):
    return cl.ClassTask(RHO, _targets(1.0, y_minus), P, 1.0, 1.0, T0, activation)


@pytest.fixture(scope="module")
def redundant():
    """THEORY.md 1.4b's example: rho = (1/2, 1/4, 1/4), y+ = 1, y- = 1/2, T0 = 0.01, P = 100."""
    task = _task("sigmoid", 0.5)
    eq = sg.solve_redundant(task)
    return task, eq, sg.solve_redundant_finite_P(task, eq.L)


def _by_code(scheme, threshold=0.5):
    return {code_of_means(mx.s, threshold): (w, mx) for w, mx in zip(scheme.weights, scheme.maxima)}


# ----------------------------------------------------------------------------- THEORY.md 1.2


def test_erf_toy_single_neuron_measure():
    """THEORY.md 1.2/5: erf network, L = 1, P = 3, m = 1, K0 = I, y = (1, -1, 0.5), T0 = 0.01:
    <a^2> = 3.2584 (THEORY, a Monte Carlo solve; Langevin 3.2553), K_phi diagonal .575/.575/.486
    (Langevin .577/.576/.487).  Our converged quadrature gives 3.2565 and .5751/.5751/.4871."""
    Y = np.array([[1.0], [-1.0], [0.5]])
    sol = mf.solve_mean_field(np.eye(3), Y, sps.erf, 1.0, 0.01)
    assert sol.residual < 1e-10
    assert sol.readout_second_moment[0, 0] == pytest.approx(3.2584, abs=3e-3)
    assert sol.readout_second_moment[0, 0] == pytest.approx(3.25651, abs=2e-5)
    np.testing.assert_allclose(np.diag(sol.K_phi), [0.575, 0.575, 0.487], atol=1.5e-3)
    np.testing.assert_allclose(sol.F_train, Y - 0.01 * sol.Lambda, atol=1e-10)
    assert sol.readout_mean[0] == pytest.approx(0.0, abs=1e-12)  # odd phi


def test_relu_toy_stays_below_condensation():
    """THEORY.md 1.5/5: the ReLU toy (P = 3, K0 = I) is below threshold, lambda* ~ 0.72-0.76."""
    Y = np.array([[1.0], [-1.0], [0.5]])
    sol = mf.solve_mean_field(np.eye(3), Y, get_activation("relu").phi_np, 1.0, 0.01, radial=True)
    assert sol.residual < 1e-10
    assert 0.70 < mf.relu_margin(sol.Lambda, np.eye(3), 1.0) < 0.77


def test_relu_radial_quadrature():
    """ReLU integrals with the radius done exactly: without tilt they give the arc-cosine (NNGP)
    kernel; with a weak tilt they agree with self-normalised importance sampling (2e6 draws)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, 3))
    C0, Y = A @ A.T / 3 + 0.5 * np.eye(3), rng.standard_normal((3, 2))
    relu = get_activation("relu")
    q = mf.radial_measure(C0, 0.05)(np.zeros((3, 2)))
    np.testing.assert_allclose((q.phi * q.w[:, None]).T @ q.phi, kernel_matrix(relu, C0), atol=5e-4)
    sol = mf.solve_mean_field(C0, Y, relu.phi_np, 0.05, 2.0, radial=True)
    assert sol.residual < 1e-10 and mf.relu_margin(sol.Lambda, C0, 0.05) < 0.1
    f = np.maximum(rng.standard_normal((2_000_000, 3)) @ np.linalg.cholesky(C0).T, 0.0)
    logw = 0.025 * np.sum((f @ sol.Lambda) ** 2, axis=1)
    w = np.exp(logw - logw.max())
    np.testing.assert_allclose((f * (w / w.sum())[:, None]).T @ f, sol.K_phi, atol=3e-3)


# ----------------------------------------------------------------------------- Cramér functions


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_cumulants_are_consistent(activation):
    """kappa' and kappa'' are the derivatives of kappa (tabulated / closed forms vs differences)."""
    theta, eps = np.linspace(-8.0, 8.0, 33) + 0.0123, 1e-4
    c = cramer.cumulants(activation, theta, 1.7)
    plus, minus = (cramer.cumulants(activation, theta + d, 1.7) for d in (eps, -eps))
    np.testing.assert_allclose((plus.kappa - minus.kappa) / (2 * eps), c.mean, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose((plus.mean - minus.mean) / (2 * eps), c.var, rtol=1e-5, atol=1e-7)
    assert np.all(cramer.cumulants(activation, 0.0, 1.7).kappa == pytest.approx(0.0, abs=1e-12))


def test_relu_closed_form_matches_grid():
    theta = np.array([-5.0, -0.5, 0.0, 0.7, 3.0])
    closed = np.array(cramer._all("relu", theta, 1.3))
    grid = np.array(cramer._grid_moments("relu", theta, 1.3))
    np.testing.assert_allclose(closed, grid, atol=1e-4)


# ----------------------------------------------------------------------------- THEORY.md 1.4b


def test_redundant_codes_reproduce_theory_table(redundant):
    """Codes 110/101/011/111 with P_gamma 0.302/0.302/0.308/0.089 at P = inf, a_gamma
    (1.66, 1.45, -0.27), (1.66, -0.27, 1.45), (-0.30, 1.51, 1.51), (1.09, 1.25, 1.25); class means of
    110 (0.896, 0.915, 0.117); output on class 0 (0.953, 0.507, 0.507)."""
    task, eq, _ = redundant
    codes = _by_code(eq)
    assert sorted(codes) == ["011", "101", "110", "111"]
    expect = {"110": (0.302, [1.66, 1.45, -0.27]), "101": (0.302, [1.66, -0.27, 1.45]),
              "011": (0.308, [-0.30, 1.51, 1.51]), "111": (0.089, [1.09, 1.25, 1.25])}
    for code, (w, a) in expect.items():
        assert codes[code][0] == pytest.approx(w, abs=1e-3)
        np.testing.assert_allclose(codes[code][1].a, a, atol=6e-3)
    np.testing.assert_allclose(codes["110"][1].s, [0.896, 0.915, 0.117], atol=1e-3)
    out = sum(w * cl.class_output(mx, eq.L, task, False) for w, mx in zip(eq.weights, eq.maxima))
    np.testing.assert_allclose(out[0], [0.953, 0.507, 0.507], atol=1e-3)
    np.testing.assert_allclose(out, task.targets - task.T0 * eq.L, atol=1e-12)
    F = [mx.F for mx in eq.maxima]
    assert max(F) - min(F) < 1e-12 and eq.residual < 1e-10 and not eq.metastable
    assert sum(eq.weights) == pytest.approx(1.0, abs=1e-14)


def test_redundant_codes_only_four_maxima(redundant):
    """F has exactly four maxima at the equilibrium fields (100, 010, 001, 000 are not maxima)."""
    task, eq, _ = redundant
    maxima = cl.find_maxima(eq.L, task, cl.corner_starts(3, 6.0))
    assert sorted(code_of_means(mx.s, 0.5) for mx in maxima) == ["011", "101", "110", "111"]


def test_redundant_codes_zero_temperature():
    """T0 -> 0: P_gamma = 0.315/0.315/0.332/0.038 (THEORY.md 1.4b)."""
    codes = _by_code(sg.solve_redundant(_task("sigmoid", 0.5, T0=0.0)))
    for code, w in {"110": 0.315, "101": 0.315, "011": 0.332, "111": 0.038}.items():
        assert codes[code][0] == pytest.approx(w, abs=1e-3)


def test_redundant_codes_finite_P(redundant):
    """P = 100 (Laplace): same four codes, weights near THEORY's grid values 0.300/0.300/0.305/0.095
    (Langevin 0.29/0.285/0.295/0.13); the code 111 gains weight relative to P = inf."""
    task, eq, finite = redundant
    codes = _by_code(finite)
    assert finite.residual < 1e-10 and sum(finite.weights) == pytest.approx(1.0)
    for code, w in {"110": 0.300, "101": 0.300, "011": 0.305, "111": 0.095}.items():
        assert codes[code][0] == pytest.approx(w, abs=0.015)
    assert codes["111"][0] > _by_code(eq)["111"][0]
    cov = cl.readout_covariance(codes["110"][1], finite.L, task, True)
    assert np.all(np.linalg.eigvalsh(cov) > 1.0 / task.num_train - 1e-12)


def test_schemes_prefer_the_equilibrium(redundant):
    """Alternative scheme {110, 101, 011} solves the equations too, with a higher free energy and a
    higher unoccupied maximum (111): the theory prefers the four-code equilibrium."""
    task, eq, _ = redundant
    schemes = sg.code_schemes(task, eq)
    assert len(schemes) >= 2
    first = _by_code(schemes[0])
    assert sorted(first) == ["011", "101", "110", "111"]
    np.testing.assert_allclose(sorted(schemes[0].weights), sorted(eq.weights), atol=1e-9)
    three = [s for s in schemes if len(s.maxima) == 3]
    assert three and three[0].metastable and three[0].free_energy > schemes[0].free_energy
    assert sorted(_by_code(three[0])) == ["011", "101", "110"]


def test_y_minus_scan():
    """THEORY.md 1.4b: only {110, 101, 011} below y- ~ 0.45; P_111 = 0.28 at y- = 0.6."""
    low = _by_code(sg.solve_redundant(_task("sigmoid", 0.3)))
    assert sorted(low) == ["011", "101", "110"]
    high = _by_code(sg.solve_redundant(_task("sigmoid", 0.6)))
    assert high["111"][0] == pytest.approx(0.28, abs=0.006)


# ----------------------------------------------------------------------------- THEORY.md 1.5b


@pytest.fixture(scope="module")
def sparse():
    task = _task("relu", -0.5)
    return task, rl.solve_sparse(task)


def test_sparse_codes_reproduce_theory_table(sparse):
    """lambda rows, outlier masses 0.802/0.617/0.617, direction (.816, -.408, -.408), bulk a0
    (.129, -.064, -.064), s* (.484, .346, .346), output (.9885, -.4942, -.4942) (THEORY.md 1.5b).
    Our masses of classes 1, 2 are 0.6165 (THEORY rounds to 0.617)."""
    task, sol = sparse
    np.testing.assert_allclose(sol.L, [[1.155, -0.577, -0.577], [-0.869, 1.632, -0.763],
                                       [-0.869, -0.763, 1.632]], atol=1e-3)
    np.testing.assert_allclose(sol.outlier_mass, [0.802, 0.617, 0.617], atol=1e-3)
    np.testing.assert_allclose(sol.outlier_direction[0], [0.816, -0.408, -0.408], atol=1e-3)
    np.testing.assert_allclose(sol.bulk.a, [0.129, -0.064, -0.064], atol=1e-3)
    np.testing.assert_allclose(sol.bulk.s, [0.484, 0.346, 0.346], atol=1e-3)
    np.testing.assert_allclose(sol.output[0], [0.9885, -0.4942, -0.4942], atol=1e-4)
    assert sol.bulk.F == pytest.approx(0.005, abs=1e-3)
    assert sol.residual < 1e-10 and sol.margin == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(RHO * np.sum(sol.L**2, axis=1), 1.0, atol=1e-12)
    # one outlier per class at N = 100: |a|^2 = 80.2 / 61.6, s = 12.67 / 15.70
    s_one = np.sqrt(100 * sol.kernel_mass)
    np.testing.assert_allclose(s_one, [12.67, 15.70, 15.70], atol=0.01)


def test_sparse_critical_temperatures(sparse):
    """T_c = 0.784 (class 0) and 0.627 (classes 1, 2), found in turn (THEORY.md 1.5b)."""
    task, _ = sparse
    tc = rl.critical_temperatures(task)
    np.testing.assert_allclose(tc.T_c, [0.784, 0.627, 0.627], atol=1e-3)
    assert sorted(tc.order[0]) == [1, 2] and list(tc.order[1]) == [0]
    above = rl.solve_sparse(task._replace(T0=0.7))
    assert list(above.condensed) == [True, False, False]
    assert rl.solve_sparse(task._replace(T0=0.8)).condensed.sum() == 0


def test_sparse_mass_is_linear_in_temperature(sparse):
    """While every class is condensed, L, s*, a0 do not depend on T0 and K_c(T0) = K_c(0) - T0/rho_c."""
    task, _ = sparse
    zero = rl.solve_sparse(task._replace(T0=0.0))
    for T0 in (0.05, 0.3):
        sol = rl.solve_sparse(task._replace(T0=T0))
        np.testing.assert_allclose(sol.L, zero.L, atol=1e-10)
        np.testing.assert_allclose(sol.bulk.a, zero.bulk.a, atol=1e-10)
        np.testing.assert_allclose(sol.kernel_mass, zero.kernel_mass - T0 / RHO, atol=1e-10)


def test_relu_margin_counts_negative_preactivations():
    """The margin is a sup over all v: with anticorrelated inputs the inactive preactivation's
    negative value lowers v^T C0^{-1} v (grid over the circle: 0.5; over v >= 0 only: 0.18)."""
    C0, Lam = np.array([[1.0, -0.8], [-0.8, 1.0]]), np.array([[1.0], [0.3]])
    theta = np.linspace(0.0, 2.0 * np.pi, 200_001)
    V = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    R = 0.5 * (np.maximum(V, 0.0) @ Lam)[:, 0] ** 2 / np.einsum("ip,pq,iq->i", V, np.linalg.inv(C0), V)
    assert R[(V >= 0).all(axis=1)].max() < 0.2
    assert mf.relu_margin(Lam, C0, 0.5) == pytest.approx(R.max(), rel=1e-6)
    assert mf.relu_margin(Lam, C0, 0.5, num_samples=1, num_polished=0, starts=[[1.0, -0.8]]) == pytest.approx(
        R.max(), rel=1e-6)
