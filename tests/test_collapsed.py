"""Exact tier for the collapsed readout (``widebayes.collapsed``): closed forms computed independently
in NumPy/SciPy float64, the hand-written gradient against autodiff and finite differences, and the
Gaussian identity joint = marginal + conditional through the NumPyro model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.stats import multivariate_normal
from widebayes.models import model_logdensity as _bridge
from widebayes.models import network_prior

from widebayes.collapsed import (
    FORMS,
    METHODS,
    choose_form,
    collapsed_logdensity,
    complete_readout,
    draw_readout,
    marginal_loglik,
    rao_blackwell_predictor,
    readout_conditional,
    readout_covariance,
)
from widebayes.networks import NetworkSpec, effective_temperature, param_shapes
from widebayes.observables import layer_features


def model_logdensity(spec):
    """The joint model's log density ``f(params, data, T_eff)`` (the NumPyro bridge)."""
    return lambda params, data, T_eff: _bridge(network_prior)(params, data, {"spec": spec}, T_eff)

GAMMAS = [0.5, 0.75, 1.0]  # lazy, numeric, non-lazy
SHAPES = [(9, 4), (4, 9), (6, 6)]  # (P, N): features form, samples form, equal


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def problem(P, N, m=3, seed=0):
    """Features in (0, 1) like a sigmoid layer's, targets of order one."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (P, N)), rng.normal(size=(P, m))


# ----------------------------------------------------------------------------------- independent closed forms
def numpy_posterior(Phi, Y, sigma_a2, T_eff, gamma):
    """Bayesian linear regression posterior, written out: Sigma = (I/sa2 + Phi^T Phi/(T N^2g))^-1."""
    N = Phi.shape[1]
    Sigma = np.linalg.inv(np.eye(N) / sigma_a2 + Phi.T @ Phi / (T_eff * N ** (2 * gamma)))
    return Sigma @ Phi.T @ Y / (T_eff * N**gamma), Sigma


def scipy_marginal(Phi, Y, s, T_eff):
    C = s * Phi @ Phi.T + T_eff * np.eye(len(Phi))
    return sum(multivariate_normal(np.zeros(len(Phi)), C).logpdf(y) for y in Y.T)


def dense_loglik(Phi, Y, s, T_eff):
    """log p(Y | W) through the dense P x P covariance, differentiated by JAX (reference for the VJP)."""
    P, m = Y.shape
    C = s * Phi @ Phi.T + T_eff * jnp.eye(P)
    return (-0.5 * jnp.sum(Y * jnp.linalg.solve(C, Y)) - 0.5 * m * jnp.linalg.slogdet(C)[1]
            - 0.5 * P * m * jnp.log(2 * jnp.pi))


# ----------------------------------------------------------------------------------- (ii) value
def test_form_follows_the_smaller_dimension():
    assert choose_form(10, 4) == "features" and choose_form(4, 10) == "samples"
    assert choose_form(5, 5) == "features" and choose_form(4, 10, "features") == "features"
    with pytest.raises(ValueError):
        choose_form(4, 10, "rows")


@pytest.mark.parametrize("P,N", SHAPES)
@pytest.mark.parametrize("form", [None, *FORMS])
@pytest.mark.parametrize("method", METHODS)
def test_marginal_equals_scipy_density(P, N, form, method):
    Phi, Y = problem(P, N)
    got = marginal_loglik(jnp.asarray(Phi), jnp.asarray(Y), 0.4, 0.05, form=form, method=method)
    np.testing.assert_allclose(got, scipy_marginal(Phi, Y, 0.4, 0.05), rtol=1e-11)


# ----------------------------------------------------------------------------------- (iii) gradient
@pytest.mark.parametrize("P,N", SHAPES)
@pytest.mark.parametrize("method", METHODS)
def test_gradient_matches_autodiff_of_dense_density(P, N, method):
    Phi, Y = problem(P, N, seed=1)
    args = (jnp.asarray(Phi), jnp.asarray(Y), jnp.asarray(0.4), jnp.asarray(0.05))
    want = jax.grad(dense_loglik, argnums=(0, 1, 2, 3))(*args)
    got = jax.grad(lambda *a: marginal_loglik(*a, method=method), argnums=(0, 1, 2, 3))(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10 * np.max(np.abs(w)))


@pytest.mark.parametrize("form", FORMS)
def test_gradient_passes_finite_differences(form):
    Phi, Y = problem(5, 4, m=2, seed=2)
    args = (jnp.asarray(Phi), jnp.asarray(Y), jnp.asarray(0.3), jnp.asarray(0.2))
    check_grads(lambda *a: marginal_loglik(*a, form=form), args, order=1, modes=("rev",))


def test_float32_agrees_with_float64_and_vmaps():
    Phi, Y = problem(12, 8, seed=3)
    want = jax.value_and_grad(marginal_loglik)(jnp.asarray(Phi), jnp.asarray(Y), 0.1, 0.05)
    f32 = jax.jit(jax.vmap(jax.value_and_grad(marginal_loglik), in_axes=(0, None, None, None)))
    value, grad = f32(jnp.asarray(np.stack([Phi, Phi]), jnp.float32), jnp.asarray(Y, jnp.float32), 0.1, 0.05)
    assert value.dtype == jnp.float32 and grad.dtype == jnp.float32
    np.testing.assert_allclose(value, [want[0]] * 2, rtol=1e-5)
    np.testing.assert_allclose(grad[1], want[1], rtol=1e-3, atol=1e-3 * np.max(np.abs(want[1])))


# ----------------------------------------------------------------------------------- (i) readout conditional
@pytest.mark.parametrize("P,N", SHAPES)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_readout_conditional_equals_closed_form(P, N, gamma):
    Phi, Y = problem(P, N, seed=4)
    mu, Sigma = numpy_posterior(Phi, Y, 0.7, 0.03, gamma)
    cond = readout_conditional(jnp.asarray(Phi), jnp.asarray(Y), 0.7, 0.03, gamma)
    assert cond.form == choose_form(P, N)
    np.testing.assert_allclose(cond.mean, mu, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(readout_covariance(cond), Sigma, rtol=1e-8, atol=1e-10 * np.max(np.abs(Sigma)))


@pytest.mark.parametrize("P,N", [(8, 3), (3, 8)])
def test_draw_readout_mean_and_covariance_within_standard_errors(P, N):
    Phi, Y = problem(P, N, m=2, seed=5)
    mu, Sigma = numpy_posterior(Phi, Y, 0.5, 0.1, 0.75)
    cond = readout_conditional(jnp.asarray(Phi), jnp.asarray(Y), 0.5, 0.1, 0.75)
    n = 40_000
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    a = np.asarray(jax.jit(jax.vmap(lambda k: draw_readout(k, cond)))(keys))
    se_mean = np.sqrt(np.diag(Sigma) / n)[:, None]
    assert np.all(np.abs(a.mean(0) - mu) < 5 * se_mean)
    sd = np.sqrt(np.diag(Sigma))
    se_cov = np.sqrt((np.outer(sd**2, sd**2) + Sigma**2) / n)
    for r in range(2):
        assert np.all(np.abs(np.cov(a[:, :, r].T) - Sigma) < 5 * se_cov)
    assert abs(np.corrcoef(a[:, 0, 0], a[:, 0, 1])[0, 1]) < 5 / np.sqrt(n)  # outputs independent


@pytest.mark.parametrize("P,N", SHAPES)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_rao_blackwell_predictor_equals_closed_form(P, N, gamma):
    Phi, Y = problem(P, N, seed=6)
    Phi_test = np.random.default_rng(7).uniform(0.0, 1.0, (5, N))
    mu, Sigma = numpy_posterior(Phi, Y, 0.7, 0.03, gamma)
    cond = readout_conditional(jnp.asarray(Phi), jnp.asarray(Y), 0.7, 0.03, gamma)
    got = rao_blackwell_predictor(jnp.asarray(Phi_test), cond)
    np.testing.assert_allclose(got.mean, Phi_test @ mu / N**gamma, rtol=1e-9)
    np.testing.assert_allclose(got.var, np.diag(Phi_test @ Sigma @ Phi_test.T) / N ** (2 * gamma), rtol=1e-7)


# ----------------------------------------------------------------------------------- (iv)-(v) the network
def network_case(depth, gamma, m, width, num_train, activation="sigmoid", tied=False, seed=0):
    spec = NetworkSpec(input_dim=6, width=width, depth=depth, num_outputs=m, activation=activation,
                       gamma=gamma, tied_weights=tied, sigma_w2=(1.3,) * depth, sigma_a2=0.6)
    rng = np.random.default_rng(seed)
    data = {"X_train": jnp.asarray(rng.normal(size=(num_train, 6))),
            "Y_train": jnp.asarray(rng.normal(size=(num_train, m))),
            "X_test": jnp.asarray(rng.normal(size=(4, 6)))}
    params = {name: jnp.asarray(rng.normal(size=shape)) for name, shape in param_shapes(spec).items()}
    return spec, data, params, effective_temperature(0.2, width, gamma)


def conditional_logpdf(a, params, data, spec, T_eff):
    Phi = np.asarray(layer_features(params, data["X_train"], spec)[-1])
    mu, Sigma = numpy_posterior(Phi, np.asarray(data["Y_train"]), spec.sigma_a2, T_eff, spec.gamma)
    return sum(multivariate_normal(mu[:, r], Sigma).logpdf(a[:, r]) for r in range(a.shape[1]))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("depth,tied,activation,width,num_train",
                         [(1, False, "sigmoid", 5, 8), (2, True, "relu", 8, 5), (3, False, "tanh", 4, 4)])
def test_joint_equals_marginal_plus_conditional(gamma, depth, tied, activation, width, num_train):
    """log p(W, a, Y) = log p(W, Y) + log p(a | W, Y) at a random a, through the NumPyro model."""
    spec, data, params, T_eff = network_case(depth, gamma, 3, width, num_train, activation, tied)
    hidden = {k: v for k, v in params.items() if k != "a"}
    joint = model_logdensity(spec)(params, data, T_eff)
    marginal = collapsed_logdensity(spec)(hidden, data, T_eff)
    conditional = conditional_logpdf(np.asarray(params["a"]), params, data, spec, T_eff)
    np.testing.assert_allclose(marginal + conditional, joint, rtol=1e-10)


def test_collapsed_logdensity_is_the_joint_integrated_over_a():
    """Linear network, N = 2, m = 1: integrate exp(joint) over a numerically (Gauss-Legendre, 150^2
    nodes on the posterior mean +- 12 sd, which the Gaussian integrand leaves negligible mass outside)."""
    spec, data, params, T_eff = network_case(1, 1.0, 1, 2, 3, "linear", seed=3)
    hidden = {"W1": params["W1"]}
    joint = jax.jit(jax.vmap(lambda a: model_logdensity(spec)({**hidden, "a": a.reshape(2, 1)}, data, T_eff)))
    Phi = np.asarray(layer_features(params, data["X_train"], spec)[-1])
    mu, Sigma = numpy_posterior(Phi, np.asarray(data["Y_train"]), spec.sigma_a2, T_eff, spec.gamma)
    x, w = np.polynomial.legendre.leggauss(150)
    half = 12 * np.sqrt(np.diag(Sigma))
    a0, a1 = np.meshgrid(mu[0, 0] + half[0] * x, mu[1, 0] + half[1] * x, indexing="ij")
    logf = np.asarray(joint(jnp.asarray(np.stack([a0.ravel(), a1.ravel()], axis=1))))
    c = logf.max()  # keep exp() in range
    integral = np.sum(np.outer(w, w).ravel() * np.exp(logf - c)) * half[0] * half[1]
    np.testing.assert_allclose(collapsed_logdensity(spec)(hidden, data, T_eff), c + np.log(integral),
                               rtol=1e-10)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_collapsed_gradient_through_the_network(gamma):
    """The custom VJP, chained through the forward pass, equals autodiff through the dense density."""
    spec, data, params, T_eff = network_case(2, gamma, 2, 5, 7)
    hidden = {k: v for k, v in params.items() if k != "a"}
    s = spec.sigma_a2 / spec.width ** (2 * gamma)

    def dense(p):
        Phi = layer_features(p, data["X_train"], spec)[-1]
        return dense_loglik(Phi, data["Y_train"], s, T_eff)

    got = jax.grad(lambda p: marginal_loglik(layer_features(p, data["X_train"], spec)[-1], data["Y_train"], s,
                                             T_eff))(hidden)
    for name, g in jax.grad(dense)(hidden).items():
        np.testing.assert_allclose(got[name], g, rtol=1e-8, atol=1e-12)


def test_complete_readout_draws_a_and_the_predictor():
    spec, data, params, T_eff = network_case(2, 1.0, 3, 6, 9, tied=True)
    hidden = {k: v for k, v in params.items() if k != "a"}
    out = jax.jit(lambda k, p: complete_readout(k, p, data, spec, T_eff))(jax.random.PRNGKey(1), hidden)
    assert set(out.params) == set(params) and out.params["a"].shape == (6, 3)
    assert out.train.mean.shape == (9, 3) and out.train.var.shape == (9,)
    assert out.test.mean.shape == (4, 3) and out.test.var.shape == (4,)
    Phi = layer_features(hidden, data["X_train"], spec)[-1]
    cond = readout_conditional(Phi, data["Y_train"], spec.sigma_a2, T_eff, spec.gamma)
    np.testing.assert_allclose(out.train.mean, Phi @ cond.mean / spec.width, rtol=1e-10)
    assert not np.allclose(out.params["a"], cond.mean)  # a draw, not the mean
    no_test = complete_readout(jax.random.PRNGKey(1), hidden, {k: data[k] for k in ("X_train", "Y_train")},
                               spec, T_eff)
    assert no_test.test is None
    np.testing.assert_allclose(no_test.params["a"], out.params["a"], rtol=1e-12)  # same key, same draw


def test_float32_readout_conditional_and_draw():
    Phi, Y = problem(10, 6, seed=8)
    want = readout_conditional(jnp.asarray(Phi), jnp.asarray(Y), 0.5, 0.05, 1.0)
    cond = readout_conditional(jnp.asarray(Phi, jnp.float32), jnp.asarray(Y, jnp.float32), 0.5, 0.05, 1.0)
    assert cond.mean.dtype == jnp.float32 and draw_readout(jax.random.PRNGKey(0), cond).dtype == jnp.float32
    np.testing.assert_allclose(cond.mean, want.mean, rtol=1e-4, atol=1e-5 * np.max(np.abs(want.mean)))
    pred = rao_blackwell_predictor(jnp.asarray(Phi, jnp.float32), cond)
    np.testing.assert_allclose(pred.var, rao_blackwell_predictor(jnp.asarray(Phi), want).var, rtol=1e-3)


def test_bench_newton_schulz_gradient_from_the_exact_inverse_is_exact():
    """The benchmark's iterative candidate (collapsed_bench) computes the same gradient when converged."""
    from widebayes.collapsed_bench import (
        Timing,
        bench_problem,
        collapsed_density,
        exact_inverse,
        format_table,
        hidden,
        newton_schulz_gradient,
    )

    for N, P in [(6, 9), (9, 6)]:
        pb = bench_problem(N, P, dtype=jnp.float64)
        p = hidden(pb.params)
        got, X = jax.jit(newton_schulz_gradient(pb, 2))(p, exact_inverse(pb, p))
        want = jax.jit(jax.grad(collapsed_density(pb)))(p)
        np.testing.assert_allclose(got["W1"], want["W1"], rtol=1e-9, atol=1e-12 * np.max(np.abs(want["W1"])))
    table = format_table([Timing(6, 9, "joint", 1.0, 1.0), Timing(6, 9, "collapsed cholesky", 2.0, 2.0)])
    assert "| collapsed cholesky | 2 ms (2.00x) |" in table


def test_method_follows_the_aspect_ratio():
    from widebayes.collapsed import choose_method

    assert choose_method(100, 100) == "cholesky" and choose_method(150, 100) == "cholesky"
    assert choose_method(500, 100) == "cholinv" and choose_method(100, 500) == "cholinv"
    assert choose_method(500, 100, "eigh") == "eigh"
    with pytest.raises(ValueError):
        choose_method(5, 5, "qr")
