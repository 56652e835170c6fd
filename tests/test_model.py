"""Exact tier: the NumPyro bridge's log density equals the hand-written posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from widebayes.models import model_logdensity, network_prior

from widebayes.activations import get_activation
from widebayes.inference import whiten
from widebayes.networks import NetworkSpec, apply, effective_temperature, param_shapes


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def hand_log_posterior(params, X, Y, spec, T_eff):
    """log P0(Theta) - L / T_eff with every normalising constant, written out from DESIGN.md."""
    phi = get_activation(spec.activation).phi
    h = phi(X @ params["W1"].T / np.sqrt(spec.input_dim))
    for layer in range(2, spec.depth + 1):
        h = phi(h @ params[f"W{layer}"].T / np.sqrt(spec.width))
    f = h @ params["a"] / spec.width**spec.gamma
    logp = 0.0
    variances = list(spec.sigma_w2) + [spec.sigma_a2]
    for name, var in zip([f"W{layer}" for layer in range(1, spec.depth + 1)] + ["a"], variances):
        w = params[name]
        logp += -0.5 * jnp.sum(w**2) / var - 0.5 * w.size * np.log(2 * np.pi * var)
    loss = 0.5 * jnp.sum((Y - f) ** 2)
    return logp - loss / T_eff - 0.5 * Y.size * np.log(2 * np.pi * T_eff)


def random_params(key, spec):
    shapes = param_shapes(spec)
    keys = jax.random.split(key, len(shapes))
    return {n: jax.random.normal(k, s, jnp.float64) for (n, s), k in zip(shapes.items(), keys)}


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("gamma", [0.5, 1.0])
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_bridge_equals_hand_formula(depth, gamma, activation):
    key = jax.random.PRNGKey(depth)
    spec = NetworkSpec(input_dim=7, width=11, depth=depth, num_outputs=3, activation=activation,
                       gamma=gamma, sigma_w2=tuple(0.5 + 0.5 * layer for layer in range(depth)), sigma_a2=0.3)
    kx, ky, kp = jax.random.split(key, 3)
    X = jax.random.normal(kx, (5, 7), jnp.float64)
    Y = jax.random.normal(ky, (5, 3), jnp.float64)
    data = {"X_train": X, "Y_train": Y}
    T_eff = effective_temperature(0.05, spec.width, gamma)
    params = random_params(kp, spec)
    got = model_logdensity(network_prior)(params, data, {"spec": spec}, T_eff)
    want = hand_log_posterior(params, X, Y, spec, T_eff)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_effective_temperature_lazy_and_nonlazy():
    assert effective_temperature(0.01, 100, 0.5) == 0.01
    assert effective_temperature(0.01, 100, 1.0) == pytest.approx(1e-4)


def test_whitened_density_is_the_same_density():
    spec = NetworkSpec(input_dim=4, width=6, depth=2, num_outputs=1, activation="tanh", sigma_a2=0.25)
    params = random_params(jax.random.PRNGKey(3), spec)
    data = {"X_train": jnp.ones((3, 4)), "Y_train": jnp.zeros((3, 1))}
    scales = {"W1": 2.0, "W2": 0.5, "a": 0.25}
    white = {n: v / np.sqrt(scales[n]) for n, v in params.items()}
    ld = model_logdensity(network_prior)
    kw = {"spec": spec}
    np.testing.assert_allclose(whiten(ld, scales)(white, data, kw, 0.1), ld(params, data, kw, 0.1),
                               rtol=1e-12)


def test_tied_weights_share_one_matrix():
    spec = NetworkSpec(input_dim=4, width=6, depth=3, num_outputs=2, tied_weights=True)
    assert set(param_shapes(spec)) == {"W1", "W", "a"}
    params = random_params(jax.random.PRNGKey(0), spec)
    untied_spec = spec._replace(tied_weights=False)
    untied = {"W1": params["W1"], "W2": params["W"], "W3": params["W"], "a": params["a"]}
    X = jnp.ones((2, 4))
    np.testing.assert_allclose(apply(params, X, spec)[1], apply(untied, X, untied_spec)[1])
