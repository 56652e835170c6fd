"""Kernel adaptation (THEORY.md 3.5.4): forward/backward saddle, perturbative, mean, alignment."""

import numpy as np
import pytest
from scipy.optimize import minimize

from widebayes.diagnostics.kernels import target_alignment as centred_kernel_alignment
from widebayes.tasks import make_task
from widebayes.theory.kernel_adaptation import (
    gradient_signal,
    nngp_fixed_point,
    response_chi,
    solve_kernels,
)
from widebayes.theory.nngp import input_kernel, nngp_kernels


def _random_problem(P=5, m=2, N0=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N0))
    return input_kernel(X), rng.standard_normal((P, m))


def _spike_bulk(K, Y):
    """Mean eigenvalue of K in span(Y) and orthogonal to it."""
    Q, _ = np.linalg.qr(Y)
    inside = np.trace(Q.T @ K @ Q)
    return inside / Q.shape[1], (np.trace(K) - inside) / (K.shape[0] - Q.shape[1])


# ----------------------------------------------------------------------------- T1


def _rate_objective(K0, Y, g, N, T):
    """Minus the log posterior of (C^(2) .. C^(L+1)) with the Wishart rate function (3.5.1/3.5.2).

    ``I(C'|C) = N/2 [tr((gC)^-1 C') - P - ln det((gC)^-1 C')]`` per layer, plus the Gaussian
    likelihood of the m outputs; returns value and gradient in the upper-triangle parameters.
    """
    P, L = K0.shape[0], len(g) - 1
    iu = np.triu_indices(P)

    def unpack(x):
        Cs = [g[0] * K0]
        for v in x.reshape(L, -1):
            C = np.zeros((P, P))
            C[iu] = v
            Cs.append(C + np.triu(C, 1).T)
        return Cs

    def fun(x):
        Cs = unpack(x)
        val, grads = 0.0, [np.zeros((P, P)) for _ in Cs]
        for layer in range(L):
            A, B, gl = Cs[layer], Cs[layer + 1], g[layer + 1]
            M = np.linalg.solve(gl * A, B)
            sign, logdet = np.linalg.slogdet(M)
            if sign <= 0:
                return np.inf, np.zeros_like(x)
            val += 0.5 * N * (np.trace(M) - P - logdet)
            Ai, Bi = np.linalg.inv(A), np.linalg.inv(B)
            grads[layer + 1] += 0.5 * N * (Ai / gl - Bi)
            grads[layer] += 0.5 * N * (Ai - Ai @ B @ Ai / gl)
        K = Cs[-1] + T * np.eye(P)
        Ki = np.linalg.inv(K)
        val += 0.5 * np.sum(Y * (Ki @ Y)) + 0.5 * Y.shape[1] * np.linalg.slogdet(K)[1]
        grads[-1] -= 0.5 * (Ki @ Y @ Y.T @ Ki - Y.shape[1] * Ki)
        gv = [(2.0 * G - np.diag(np.diag(G)))[iu] for G in grads[1:]]
        return val, np.concatenate(gv)

    return fun, unpack, iu


def test_T1_linear_saddle_equals_direct_maximisation_of_rate_function():
    K0, Y = _random_problem()
    g, N, T = [1.2, 0.8, 1.5], 10.0, 0.3
    fun, unpack, iu = _rate_objective(K0, Y, g, N, T)
    start = solve_kernels(K0, Y, "linear", g, N, T, "nngp").C[1:]
    x0 = np.concatenate([C[iu] for C in start])
    opt = minimize(fun, x0, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 10000})
    direct = np.stack(unpack(opt.x))
    saddle = solve_kernels(K0, Y, "linear", g, N, T, "saddle", tol=1e-14)
    assert saddle.residual < 1e-12
    assert np.abs(saddle.C - direct).max() < 1e-6
    assert np.abs(saddle.C - start[None, 0]).max() > 1e-2    # the adaptation is not trivial


def test_T1_strong_learning_saddle_is_found_and_is_stationary():
    """Three layers, N = 10, T = 1e-3: learning is strong (the output kernel doubles).  The damped
    fixed point ``Ct <- (1 - eta) Ct + eta Phi(Ct)`` diverges here at eta = 0.5 and 0.1 (checked
    below); the Newton-Krylov continuation finds the saddle, a stationary point of the rate
    function (its gradient, written independently, vanishes)."""
    K0, Y = _random_problem(P=5, m=2, N0=8, seed=4)
    g, N, T = [0.5, 0.5, 0.5, 0.5], 10.0, 1e-3
    saddle = solve_kernels(K0, Y, "linear", g, N, T, "saddle", tol=1e-13)
    nngp = solve_kernels(K0, Y, "linear", g, N, T, "nngp")
    assert saddle.residual < 1e-12
    assert np.trace(saddle.C[-1]) > 1.8 * np.trace(nngp.C[-1])
    fun, _, iu = _rate_objective(K0, Y, g, N, T)
    gradient = lambda C: np.abs(fun(np.concatenate([c[iu] for c in C[1:]]))[1]).max()  # noqa: E731
    assert gradient(saddle.C) < 1e-9 * gradient(nngp.C)      # a stationary point of the rate function
    assert not _damped_fixed_point_converges(K0, Y, g, N, T, eta=0.5)
    assert not _damped_fixed_point_converges(K0, Y, g, N, T, eta=0.1)


def _damped_fixed_point_converges(K0, Y, g, N, T, eta, steps=3000):
    """The solver the Newton-Krylov continuation replaced (linear closed forms)."""
    from widebayes.theory import kernel_adaptation as ka

    s = ka._Setup(ka.as_activation("linear"), K0, Y, np.asarray(g), N, T, True, 0, 0)
    Cts = [np.zeros_like(K0) for _ in g[1:]]
    with np.errstate(all="ignore"):
        for _ in range(steps):
            Cs, _, back = ka._forward(s, Cts)
            new = back[1:] + [ka.output_conjugate(Cs[-1], Y, N, T)]
            if not all(np.all(np.isfinite(c)) for c in new):
                return False
            if max(np.abs(a - b).max() for a, b in zip(new, Cts)) < 1e-10:
                return True
            Cts = [(1 - eta) * a + eta * b for a, b in zip(Cts, new)]
    return False


def test_saddle_reports_the_pareto_khat_of_its_monte_carlo_tilt():
    """The tilt's importance weights grow heavier as the width falls (measured k-hat per layer
    0.01 / 0.07 at N = 10^4, 0.28 / 0.48 at N = 3); the closed forms have no tilt to diagnose."""
    K0, Y = _random_problem(P=6, m=1, N0=10, seed=2)
    g, T = [1.5, 2.0, 1.0], 0.05
    khat = {N: solve_kernels(K0, Y, "relu", g, N, T, "saddle", num_samples=2**14).tilt_khat
            for N in (10_000, 3)}
    assert khat[10_000].shape == (2,) and np.all(khat[10_000] < 0.15)
    assert np.all(khat[3] > khat[10_000] + 0.1) and khat[3].max() > 0.4
    assert solve_kernels(K0, Y, "linear", g, 3, T, "saddle").tilt_khat is None
    assert solve_kernels(K0, Y, "relu", g, 3, T, "perturbative").tilt_khat is None


# ----------------------------------------------------------------------------- T2


def test_T2_linear_closed_form_equals_generic_monte_carlo_path():
    K0, Y = _random_problem(P=4, m=1, seed=1)
    g, N, T = [1.0, 1.0, 1.0], 100.0, 0.2
    exact = solve_kernels(K0, Y, "linear", g, N, T, "saddle")
    pert_exact = solve_kernels(K0, Y, "linear", g, N, T, "perturbative")
    nngp = solve_kernels(K0, Y, "linear", g, N, T, "nngp")
    shift = np.abs(exact.layer_kernels - nngp.layer_kernels).max()
    assert shift > 1e-2
    mc = dict(closed_form=False, num_samples=2**16)
    runs = [(solve_kernels(K0, Y, "linear", g, N, T, "saddle", tol=1e-10, seed=s, **mc),
             solve_kernels(K0, Y, "linear", g, N, T, "perturbative", seed=s, **mc)) for s in range(4)]
    for saddle, pert in runs:      # per seed: the MC error of the tilt (observed 1-6% of the shift)
        assert np.abs(saddle.layer_kernels - exact.layer_kernels).max() < 0.1 * shift
        assert np.abs(saddle.preact_kernels - exact.preact_kernels).max() < 0.1 * shift
        assert np.abs(pert.layer_kernels - pert_exact.layer_kernels).max() < 0.1 * shift
    mean = np.mean([saddle.layer_kernels for saddle, _ in runs], axis=0)
    assert np.abs(mean - exact.layer_kernels).max() < 0.05 * shift     # shrinks with more seeds


def test_nngp_method_matches_nngp_recursion():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 9))
    ref = nngp_kernels(X, "relu", [1.3, 0.7]).train
    got = solve_kernels(input_kernel(X), np.ones(6), "relu", [1.3, 0.7, 2.0], 50, 0.1, "nngp")
    np.testing.assert_allclose(got.layer_kernels, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.C[0], 1.3 * input_kernel(X))


# ----------------------------------------------------------------------------- T3


@pytest.mark.parametrize("activation,kw", [("linear", {}), ("relu", {"num_samples": 2**14})])
def test_T3_methods_tend_to_nngp_and_perturbative_is_saddle_to_order_inverse_N_squared(activation, kw):
    K0, Y = _random_problem(P=6, m=1, N0=10, seed=2)
    g, T = [1.5, 2.0, 1.0], 0.05
    nngp = solve_kernels(K0, Y, activation, g, 100, T, "nngp").layer_kernels
    to_nngp, pert_vs_saddle = [], []
    for N in (100, 1000, 10000):
        saddle = solve_kernels(K0, Y, activation, g, N, T, "saddle", tol=1e-15, **kw).layer_kernels
        pert = solve_kernels(K0, Y, activation, g, N, T, "perturbative", **kw).layer_kernels
        to_nngp.append(N * np.abs(saddle - nngp).max())
        pert_vs_saddle.append(N**2 * np.abs(saddle - pert).max())
    assert to_nngp[0] > 0.1                                  # a real O(1/N) adaptation
    assert max(to_nngp) / min(to_nngp) < 1.5                 # |K - K_NNGP| ~ 1/N
    assert max(pert_vs_saddle) / min(pert_vs_saddle) < 1.6  # |saddle - perturbative| ~ 1/N^2


def test_linear_mean_tends_to_nngp():
    K0, Y = _random_problem(P=6, m=2, N0=10, seed=4)
    g = [1.0, 1.0, 1.0]
    nngp = solve_kernels(K0, Y, "linear", g, 100, 1e-3, "nngp").layer_kernels
    dev = [N * np.abs(solve_kernels(K0, Y, "linear", g, N, 1e-3, "linear_mean").layer_kernels - nngp).max()
           for N in (1000, 10000)]
    assert dev[1] < 1.2 * dev[0]


def test_linear_mean_rejects_nonlinear():
    K0, Y = _random_problem()
    with pytest.raises(ValueError, match="linear"):
        solve_kernels(K0, Y, "relu", [1, 1], 100, 0.1, "linear_mean")
    with pytest.raises(ValueError, match="method"):
        solve_kernels(K0, Y, "linear", [1, 1], 100, 0.1, "mean")


# ----------------------------------------------------------------------------- T4


def _deep_linear_setup():
    P, m = 50, 2
    Y = np.zeros((P, m))
    Y[:25, 0], Y[25:, 1] = 1.0, 1.0
    return np.eye(P), Y


@pytest.mark.parametrize("method,expected", [
    ("saddle", [(1.164, 0.980), (1.355, 0.960)]),
    ("linear_mean", [(1.328, 0.980), (1.596, 0.960)]),
])
def test_T4_deep_linear_numbers_of_theory_3_5_3(method, expected):
    K0, Y = _deep_linear_setup()
    res = solve_kernels(K0, Y, "linear", [1.0, 1.0, 1.0], 100, 1e-3, method)
    for K, (spike, bulk) in zip(res.layer_kernels[1:], expected):
        got = _spike_bulk(K, Y)
        assert got[0] == pytest.approx(spike, abs=3e-3)
        assert got[1] == pytest.approx(bulk, abs=1e-3)
    assert np.all(np.abs(_spike_bulk(res.layer_kernels[0], Y)) == pytest.approx(1.0))


def test_T6_bulk_is_one_minus_m_over_N_to_the_l_for_the_saddle():
    K0, Y = _deep_linear_setup()
    res = solve_kernels(K0, Y, "linear", [1.0, 1.0, 1.0], 100, 1e-3, "saddle")
    for layer, K in enumerate(res.layer_kernels[1:], start=1):
        assert _spike_bulk(K, Y)[1] == pytest.approx((1 - 2 / 100) ** layer, abs=1e-3)


# ----------------------------------------------------------------------------- T5 / T7


def _xor(num_train=32):
    data = make_task({"kind": "xor", "num_train": num_train, "input_dim": 10, "separation": 0.9,
                      "noise": 0.45})
    return input_kernel(data.X_train), data.Y_train


def test_T5_xor_relu_alignment_table():
    K0, Y = _xor()
    assert set(np.unique(Y)) == {-1.0, 1.0} and Y.shape == (32, 1)
    args = (K0, Y, "relu", [1.0, 1.0], 200, 0.01)
    nngp = centred_kernel_alignment(solve_kernels(*args, "nngp").layer_kernels[1], Y)
    pert = centred_kernel_alignment(solve_kernels(*args, "perturbative").layer_kernels[1], Y)
    # THEORY 3.5.3 (its own draw of the 32 points): NNGP 0.1877, O(1/N) 0.2099
    assert nngp == pytest.approx(0.1877, abs=5e-3)
    assert pert == pytest.approx(0.2099, abs=5e-3)
    assert pert - nngp == pytest.approx(0.2099 - 0.1877, rel=0.25)


def test_T5_xor_relu_saddle_close_to_perturbative():
    K0, Y = _xor()
    args = (K0, Y, "relu", [1.0, 1.0], 200, 0.01)
    pert = centred_kernel_alignment(solve_kernels(*args, "perturbative").layer_kernels[1], Y)
    saddle = centred_kernel_alignment(solve_kernels(*args, "saddle", tol=1e-10).layer_kernels[1], Y)
    nngp = centred_kernel_alignment(solve_kernels(*args, "nngp").layer_kernels[1], Y)
    assert nngp < saddle < pert + 2e-3
    assert abs(saddle - pert) < 0.3 * (pert - nngp)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_T7_odd_activation_xor_alignment_vanishes_by_symmetry(activation):
    K0, Y = _xor(16)
    Ks = np.block([[K0, -K0], [-K0, K0]])          # every point with its mirror image -x
    Ys = np.vstack([Y, Y])
    args = (Ks, Ys, activation, [1.0, 1.0], 200, 0.01)
    # phi - 1/2 odd: K(-x, x') - const = -(K(x, x') - const) for any weights, so every method gives 0
    for method in ("nngp", "perturbative"):
        K = solve_kernels(*args, method, num_samples=2**14).layer_kernels[1]
        assert abs(centred_kernel_alignment(K, Ys)) < 1e-10
    # without exact mirror pairs: small NNGP alignment, and the O(1/N) correction raises it
    args = (K0, Y, activation, [1.0, 1.0], 200, 0.01)
    relu = centred_kernel_alignment(solve_kernels(K0, Y, "relu", [1.0, 1.0], 200, 0.01, "nngp")
                                    .layer_kernels[1], Y)
    nngp = centred_kernel_alignment(solve_kernels(*args, "nngp").layer_kernels[1], Y)
    pert = centred_kernel_alignment(solve_kernels(*args, "perturbative", num_samples=2**15)
                                    .layer_kernels[1], Y)
    assert abs(nngp) < 0.25 * relu
    assert pert > nngp


def test_centred_kernel_alignment_properties():
    rng = np.random.default_rng(5)
    Y = rng.standard_normal((7, 2))
    assert centred_kernel_alignment(3.0 * Y @ Y.T + 2.0, Y) == pytest.approx(1.0)
    K = rng.standard_normal((7, 7))
    assert -1.0 <= centred_kernel_alignment(K @ K.T, Y) <= 1.0


@pytest.mark.parametrize("activation,g,chi", [
    ("linear", 1.0, 1.0), ("linear", 2.0, 2.0), ("relu", 2.0, 1.0), ("relu", 1.0, 0.5),
])
def test_response_chi_closed_values(activation, g, chi):
    assert response_chi(activation, g, 0.7) == pytest.approx(chi, rel=1e-9)


def test_response_chi_tanh_edge_of_chaos():
    # tanh, no bias: g = 1 is the edge of chaos (q* = 0, chi = 1); g = 2 chaotic (q* > 0, chi > 1);
    # g = 0.5 ordered (q* = 0, chi = 0.5)
    assert response_chi("tanh", 1.0, 1e-10) == pytest.approx(1.0, abs=1e-6)
    q = nngp_fixed_point("tanh", 2.0)
    assert q == pytest.approx(2.0 * float(np.mean(np.tanh(np.sqrt(q) * np.random.default_rng(0)
                                                           .standard_normal(400000)) ** 2)), rel=1e-2)
    assert response_chi("tanh", 2.0, q) > 1.0
    assert nngp_fixed_point("tanh", 0.5) < 1e-10
    assert response_chi("tanh", 0.5, 0.0) == pytest.approx(0.5)


def test_gradient_signal_linear_and_relu():
    K0, _ = _random_problem(P=5, m=1)
    lin = gradient_signal("linear", [1.0, 2.0, 0.5], K0)
    np.testing.assert_allclose(lin.chi, [2.0, 0.5])
    np.testing.assert_allclose(lin.cumulative, [1.0, 0.5])
    relu = gradient_signal("relu", [1.0, 2.0, 2.0, 1.0], K0)
    np.testing.assert_allclose(relu.chi, [1.0, 1.0, 0.5], rtol=1e-9)
