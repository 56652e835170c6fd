"""The infinite-width NTK and the Langevin predictor of widebayes.theory.ntk.

Closed-form derivative kernels against Price's theorem and quadrature; the NTK against the empirical
NTK of wide random networks (jax Jacobians) and the exact deep-linear formula; the first phase's
moments against a direct Euler integration of the linear SDE; the Volterra solver against the exact
single-exponential solution; the two-time kernel against the NNGP (tau = 0) and the NTK (its slope,
the fluctuation-dissipation response); the long-time limit against the GP posterior.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl

from widebayes.activations import ACTIVATIONS, get_activation
from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.experiment import build_experiment
from widebayes.networks import NetworkSpec, apply
from widebayes.quadrature import gauss_hermite_kernel
from widebayes.theory import ntk as nt
from widebayes.theory.gp import gp_posterior
from widebayes.theory.nngp import input_kernel, nngp_kernels

CLOSED = [name for name, act in ACTIVATIONS.items() if act.derivative_kernel is not None]


def _covariances(seed=0, n=40):
    rng = np.random.default_rng(seed)
    c11, c22 = rng.uniform(0.2, 3.0, n), rng.uniform(0.2, 3.0, n)
    c12 = rng.uniform(-0.95, 0.95, n) * np.sqrt(c11 * c22)
    return c12, c11, c22


def _inputs(P=6, P_test=3, N0=8, seed=0):
    rng = np.random.default_rng(seed)
    X, Xt = rng.normal(size=(P, N0)), rng.normal(size=(P_test, N0))
    return X, Xt, np.sign(rng.normal(size=(P, 1)))


# ----------------------------------------------------------------------------- derivative kernels


def test_closed_forms_cover_the_closed_form_nngp_kernels():
    assert set(CLOSED) == {name for name, act in ACTIVATIONS.items() if act.closed_form}


@pytest.mark.parametrize("name", CLOSED)
def test_closed_derivative_kernel_is_the_c12_derivative_of_the_kernel(name):
    """Price's theorem: E[phi'(u) phi'(v)] = d E[phi(u) phi(v)] / d c12."""
    act = get_activation(name)
    c12, c11, c22 = _covariances()
    h = 1e-6
    slope = (act.kernel(c12 + h, c11, c22) - act.kernel(c12 - h, c11, c22)) / (2 * h)
    np.testing.assert_allclose(act.derivative_kernel(c12, c11, c22), slope, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", CLOSED)
def test_closed_derivative_kernel_against_quadrature(name):
    """The closed form against the generic path (trapezoid rule on the central-difference phi')."""
    act = get_activation(name)
    c12, c11, c22 = _covariances(1)
    if name == "relu":  # relu' is a step: Sheppard's orthant probability 1/4 + arcsin(rho) / (2 pi)
        generic = 0.25 + np.arcsin(c12 / np.sqrt(c11 * c22)) / (2 * np.pi)
    else:
        generic = nt.derivative_kernel(act._replace(derivative_kernel=None), c12, c11, c22)
    rtol = 1e-2 if name == "relu2" else 1e-7  # relu2' = 2 relu has a kink: the trapezoid rule is crude
    np.testing.assert_allclose(act.derivative_kernel(c12, c11, c22), generic, rtol=rtol, atol=1e-9)


def test_quadrature_derivative_kernel_of_tanh_against_gauss_hermite():
    c12, c11, c22 = _covariances(2)
    exact = gauss_hermite_kernel(lambda z: 1.0 - np.tanh(z) ** 2, c12, c11, c22, num_nodes=120)
    np.testing.assert_allclose(nt.derivative_kernel("tanh", c12, c11, c22), exact, rtol=1e-6)


# ----------------------------------------------------------------------------- the NTK


def test_linear_ntk_is_the_exact_formula():
    X, Xt, _ = _inputs()
    s2, sa = [1.3, 0.7, 2.0], 0.8
    ntk = nt.ntk_kernels(X, "linear", s2, sa, Xt)
    c = nt.linear_ntk_factor(s2, sa)
    assert c == pytest.approx(1.3 * 0.7 * 2.0 + 0.8 * (0.7 * 2.0 + 1.3 * 2.0 + 1.3 * 0.7))
    np.testing.assert_allclose(ntk.train, c * input_kernel(X), rtol=1e-12)
    np.testing.assert_allclose(ntk.cross, c * input_kernel(X, Xt), rtol=1e-12)
    np.testing.assert_allclose(ntk.test_diag, c * np.sum(Xt**2, 1) / 8, rtol=1e-12)
    np.testing.assert_allclose(sum(ntk.blocks.values()), ntk.train, rtol=1e-12)
    # block scales weight each block's term
    scaled = nt.ntk_kernels(X, "linear", s2, sa, block_scales={"W2": 3.0, "a": 0.5})
    expected = ntk.blocks["W1"] + 3.0 * ntk.blocks["W2"] + ntk.blocks["W3"] + 0.5 * ntk.blocks["a"]
    np.testing.assert_allclose(scaled.train, expected, rtol=1e-12)


def test_ntk_gp_kernel_is_the_nngp_output_kernel():
    X, Xt, _ = _inputs()
    ntk = nt.ntk_kernels(X, "relu", [2.0, 1.5], 0.7, Xt)
    ref = nngp_kernels(X, "relu", [2.0, 1.5], Xt)
    np.testing.assert_allclose(ntk.gp_train, 0.7 * ref.train[-1], rtol=1e-12)
    np.testing.assert_allclose(ntk.gp_cross, 0.7 * ref.cross[-1], rtol=1e-12)
    np.testing.assert_allclose(ntk.gp_test_diag, 0.7 * ref.test_diag[-1], rtol=1e-12)


def _empirical_ntk(X, spec, seeds):
    """Mean over seeds of J J^T (all blocks) of prior networks, from jax Jacobians."""
    out = []
    for seed in seeds:
        keys = jax.random.split(jax.random.PRNGKey(seed), spec.depth + 1)
        params = {f"W{layer}": jax.random.normal(keys[layer - 1], (spec.width, spec.input_dim if layer == 1
                                                                       else spec.width))
                  * np.sqrt(spec.sigma_w2[layer - 1]) for layer in range(1, spec.depth + 1)}
        params["a"] = jax.random.normal(keys[-1], (spec.width, 1)) * np.sqrt(spec.sigma_a2)
        jac = jax.jacrev(lambda p: apply(p, jnp.asarray(X), spec)[1][:, 0])(params)
        flat = [np.asarray(j).reshape(X.shape[0], -1).astype(np.float64) for j in jac.values()]
        out.append(sum(j @ j.T for j in flat))
    return np.mean(out, axis=0)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "linear"])
def test_ntk_against_the_empirical_ntk_of_a_wide_network(name):
    """At N = 1500, depth 2, the empirical NTK (two prior draws) is within its O(N^-1/2) scatter
    of the infinite-width one (measured relative deviations 1.1-3.4%); without the readout's term
    (48-90% of the NTK here) it is far off."""
    X, Xt, _ = _inputs(P=5, P_test=2)
    Z = np.vstack([X, Xt])
    s2, sa = (2.0, 1.5), 0.8
    spec = NetworkSpec(input_dim=8, width=1500, depth=2, num_outputs=1, activation=name, gamma=0.5,
                       sigma_w2=s2, sigma_a2=sa)
    emp = _empirical_ntk(Z, spec, seeds=(0, 1))
    ntk = nt.ntk_kernels(X, name, s2, sa, Xt)
    full = np.block([[ntk.train, ntk.cross], [ntk.cross.T, np.diag(ntk.test_diag)]])
    mask = np.ones_like(full, bool)
    mask[5:, 5:] = np.eye(2, dtype=bool)  # the test-test block: only its diagonal is computed
    rel = np.linalg.norm((emp - full)[mask]) / np.linalg.norm(full[mask])
    assert rel < 0.06
    without_readout = np.linalg.norm(emp[:5, :5] - (ntk.train - ntk.blocks["a"])) / np.linalg.norm(ntk.train)
    assert without_readout > 0.4


# ----------------------------------------------------------------------------- the first phase


def _joint_ntk(X, Xt, name, s2, sa):
    """The NTK and NNGP output kernel on the union of the inputs (train first)."""
    Z = np.vstack([X, Xt])
    k = nt.ntk_kernels(Z, name, s2, sa)
    return k.train, k.gp_train


@pytest.mark.parametrize("T", [0.0, 0.05])
def test_linearised_prediction_against_euler_integration(T):
    """Mean and variance of the linear SDE df = -Theta_{.X} (f_X - y) dt + sqrt(2T) J dB, started
    at f_0 ~ N(0, K), integrated by small Euler steps of the moment equations."""
    X, Xt, Y = _inputs()
    name, s2, sa = "relu", [2.0], 1.0
    ntk = nt.ntk_kernels(X, name, s2, sa, Xt)
    Th, K = _joint_ntk(X, Xt, name, s2, sa)
    P, Q = X.shape[0], Th.shape[0]
    A = np.zeros((Q, Q))
    A[:, :P] = Th[:, :P]
    b = np.concatenate([Th[:P, :P] @ Y[:, 0], Th[P:, :P] @ Y[:, 0]])
    m, S = np.zeros(Q), K.copy()
    dt, times = 1e-4, [0.5, 2.0, 6.0]
    pred = nt.linearised_prediction(ntk, Y, T, times)
    t, k = 0.0, 0
    while k < len(times):
        if t >= times[k] - 1e-12:
            np.testing.assert_allclose(m[:P], pred.train_mean[k, :, 0], atol=2e-3)
            np.testing.assert_allclose(m[P:], pred.test_mean[k, :, 0], atol=2e-3)
            np.testing.assert_allclose(np.diag(S)[:P], pred.train_var[k], rtol=2e-3, atol=2e-4)
            np.testing.assert_allclose(np.diag(S)[P:], pred.test_var[k], rtol=2e-3, atol=2e-4)
            loss = 0.5 * (np.sum((m[:P] - Y[:, 0]) ** 2) + np.trace(S[:P, :P]))
            assert pred.train_loss[k] == pytest.approx(loss, rel=2e-3)
            k += 1
            continue
        m = m + dt * (b - A @ m)
        S = S + dt * (-A @ S - S @ A.T + 2.0 * T * Th)
        t += dt


def test_gradient_flow_interpolates_with_the_ntk_predictor():
    X, Xt, Y = _inputs()
    ntk = nt.ntk_kernels(X, "sigmoid", [3.0], 2.0, Xt)
    pred = nt.linearised_prediction(ntk, Y, 0.0, [1e7])
    np.testing.assert_allclose(pred.train_mean[0], Y, atol=1e-8)
    np.testing.assert_allclose(pred.test_mean[0], ntk.cross.T @ np.linalg.solve(ntk.train, Y), atol=1e-8)


# ----------------------------------------------------------------------------- both phases


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "linear"])
def test_two_time_kernel_starts_at_the_nngp_and_its_slope_is_the_ntk(name):
    """C(0) = sigma_a^2 K_L, and -C'(0) / T = Theta with the block scales (fluctuation-dissipation)."""
    X, Xt, _ = _inputs()
    s2, sa, T, M = [2.0, 1.5], 0.8, 0.03, {"W1": 0.5, "a": 2.0}
    rates = nt.decay_rates(s2, sa, T, M)
    assert rates["W1"] == pytest.approx(T * 0.5 / 2.0) and rates["a"] == pytest.approx(T * 2.0 / 0.8)
    h = 1e-6 if name != "relu" else 1e-9  # relu's kernel has a (1 - rho)^(3/2) term at tau = 0
    C = nt.two_time_kernel(X, name, s2, sa, rates, [0.0, h, 2 * h], Xt)
    ntk = nt.ntk_kernels(X, name, s2, sa, Xt, block_scales=M)
    np.testing.assert_allclose(C[0, :, :6], ntk.gp_train, rtol=1e-10)
    np.testing.assert_allclose(C[0, :, 6:], ntk.gp_cross, rtol=1e-10)
    slope = -(-3 * C[0] + 4 * C[1] - C[2]) / (2 * h) / T
    np.testing.assert_allclose(slope[:, :6], ntk.train, rtol=2e-4, atol=1e-4)
    np.testing.assert_allclose(slope[:, 6:], ntk.cross, rtol=2e-4, atol=1e-4)


def _exact_linear_mean(X, Xt, Y, s2, sa, T, times):
    """Deep linear network: C(tau) = K e^{-mu tau}, so (2) is the ODE u' = -mu u + y - (mu/T) K u,
    m = (mu / T) K u, solved exactly."""
    mu = sum(nt.decay_rates(s2, sa, T).values())
    c = float(np.prod(s2)) * sa
    K, Kc = c * input_kernel(X), c * input_kernel(X, Xt)
    G = mu * np.eye(len(X)) + mu * K / T
    us = [np.linalg.solve(G, (np.eye(len(X)) - sl.expm(-G * t)) @ Y) for t in times]
    return np.stack([mu / T * K @ u for u in us]), np.stack([mu / T * Kc.T @ u for u in us])


def test_volterra_solver_against_the_exact_deep_linear_solution():
    X, Xt, Y = _inputs()
    s2, sa, T = [1.3, 0.7], 0.8, 0.02
    errors = []
    for ppd in (50, 150):
        mean = nt.langevin_mean(X, Y, "linear", s2, sa, T, t_max=2000.0, X_test=Xt, points_per_decade=ppd)
        train, test = _exact_linear_mean(X, Xt, Y, s2, sa, T, mean.times)
        errors.append(max(np.abs(mean.train - train).max(), np.abs(mean.test - test).max()))
    assert errors[1] < 5e-3  # first order in the step ratio 10^(1/ppd) - 1
    assert errors[0] / errors[1] == pytest.approx(3.0, rel=0.3)


@pytest.mark.parametrize("name", ["relu", "sigmoid"])
def test_langevin_mean_relaxes_to_the_gp_posterior_and_starts_as_the_ntk_flow(name):
    X, Xt, Y = _inputs()
    s2, sa, T = [2.0, 1.0], 1.0, 0.002
    mean = nt.langevin_mean(X, Y, name, s2, sa, T, t_max=20.0 / T, X_test=Xt)
    ntk = nt.ntk_kernels(X, name, s2, sa, Xt)
    gp = gp_posterior(ntk.gp_train, ntk.gp_cross, ntk.gp_test_diag, Y, T)
    np.testing.assert_allclose(mean.test[-1], gp.mean, atol=1e-6)
    # the NTK predictor is not the GP one: the second phase has something to relax
    assert np.abs(ntk.cross.T @ np.linalg.solve(ntk.train, Y) - gp.mean).max() > 0.05
    # first phase: the NTK gradient flow while t << sigma^2 / T.  The kernel's decay is O(T t / sigma^2)
    # for smooth phi but O(sqrt(T t / sigma^2)) for relu (neurons switch on and off as the weights
    # diffuse: E[step step] = 1/4 + arcsin(rho) / (2 pi)), hence the small T here
    T = 1e-6
    t = np.array([0.3, 1.0, 3.0])
    early = nt.langevin_mean(X, Y, name, s2, sa, T, t_max=10.0, X_test=Xt)
    flow = nt.linearised_prediction(ntk, Y, 0.0, t)
    train, test = early.at(t)
    np.testing.assert_allclose(train, flow.train_mean, atol=0.01)
    np.testing.assert_allclose(test, flow.test_mean, atol=0.01)


# ----------------------------------------------------------------------------- experiments


def _config(readout="lazy", **network):
    return {"task": {"kind": "xor", "num_train": 6, "num_test": 4},
            "network": {"width": 16, "activation": "relu", "readout": readout, "sigma_a2": 1.0, **network},
            "sampler": {"preconditioner": "isotropic", "step_size": 0.001}}


def test_experiment_arguments_read_the_experiment():
    exp = build_experiment(resolve(_config(temperature=0.02, depth=2, sigma_w2=[2.0, 1.5])))
    args = nt.experiment_arguments(exp)
    assert args["T"] == pytest.approx(0.02) and args["sigma_w2"] == [2.0, 1.5]
    assert args["block_scales"] == {"W1": 1.0, "W2": 1.0, "a": 1.0}
    assert nt.time_per_step(exp) == pytest.approx(exp.paper_time_per_step("W1"))


@pytest.mark.parametrize("change", [{"readout": "nonlazy"}, {"readout": 0.75},
                                   {"depth": 2, "tied_weights": True}])
def test_networks_outside_the_lazy_ntk_limit_are_refused(change):
    exp = build_experiment(resolve(_config(**change)))
    with pytest.raises(InputError, match="network"):
        nt.experiment_arguments(exp)
