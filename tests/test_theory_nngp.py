"""Exact-tier checks of the NNGP kernels (theory/nngp.py) and GP regression (theory/gp.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widebayes import activations as acts
from widebayes import networks
from widebayes.theory import gp, nngp

COVARIANCES = [  # (c12, c11, c22)
    (0.5, 1.0, 1.0),
    (-0.3, 0.5, 2.0),
    (1.2, 1.5, 1.0),
    (0.99, 1.0, 1.0),
    (0.0, 0.2, 3.0),
    (-1.9, 2.0, 2.0),
]


def _gaussian_pairs(rng, c12, c11, c22, n):
    L = np.linalg.cholesky(np.array([[c11, c12], [c12, c22]]))
    return L @ rng.standard_normal((2, n))


@pytest.mark.parametrize("name", sorted(acts.ACTIVATIONS))
def test_kernel_map_matches_monte_carlo(name):
    """E[phi(u) phi(v)] against 2e5 Gaussian pairs, within 5 Monte Carlo standard errors."""
    act, rng = acts.get_activation(name), np.random.default_rng(42)
    for c12, c11, c22 in COVARIANCES:
        u, v = _gaussian_pairs(rng, c12, c11, c22, 200_000)
        prod = act.phi_np(u) * act.phi_np(v)
        se = prod.std(ddof=1) / np.sqrt(prod.size)
        assert abs(act.kernel(c12, c11, c22) - prod.mean()) < 5 * se, (c12, c11, c22)


@pytest.mark.parametrize("name,num_nodes,atol", [("linear", 64, 1e-12), ("sigmoid", 64, 1e-9),
                                                 ("relu", 256, 1e-3)])
def test_closed_forms_match_gauss_hermite(name, num_nodes, atol):
    """Closed-form maps against tensor Gauss-Hermite quadrature of the same phi (ReLU's kink
    limits quadrature to O(1/num_nodes), hence its looser tolerance)."""
    act = acts.get_activation(name)
    c12, c11, c22 = (np.array(c) for c in zip(*COVARIANCES))
    gh = acts.gauss_hermite_kernel(act.phi_np, c12, c11, c22, num_nodes=num_nodes)
    np.testing.assert_allclose(act.kernel(c12, c11, c22), gh, rtol=0, atol=atol)


def test_relu_quadrature_converges_to_closed_form():
    act = acts.get_activation("relu")
    c12, c11, c22 = (np.array(c) for c in zip(*COVARIANCES))
    err = [np.abs(acts.gauss_hermite_kernel(act.phi_np, c12, c11, c22, num_nodes=n)
                  - act.kernel(c12, c11, c22)).max() for n in (32, 128)]
    assert err[1] < 0.4 * err[0]


def _inputs(rng, P=6, N0=10):
    return rng.standard_normal((P, N0))


def test_linear_nngp_is_product_of_variances():
    X = _inputs(np.random.default_rng(0))
    k = nngp.nngp_kernels(X, "linear", [1.5, 0.5, 2.0])
    K0 = X @ X.T / X.shape[1]
    for layer, c in enumerate([1.0, 1.5, 0.75, 1.5]):
        np.testing.assert_allclose(k.train[layer], c * K0, rtol=1e-13)
    np.testing.assert_allclose(k.preact_train[1], 0.5 * k.train[1], rtol=1e-13)


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_test_kernels_agree_with_joint_recursion(name):
    """Cross, test-diagonal and full test kernels equal the blocks of the recursion on all inputs."""
    rng = np.random.default_rng(1)
    X, Xt = _inputs(rng, 5), _inputs(rng, 3)
    k = nngp.nngp_kernels(X, name, [1.3, 0.9], X_test=Xt, full_test=True)
    joint = nngp.nngp_kernels(np.vstack([X, Xt]), name, [1.3, 0.9]).train
    assert k.train.shape == (3, 5, 5) and k.preact_train.shape == (2, 5, 5)
    np.testing.assert_allclose(k.train, k.train.transpose(0, 2, 1), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(k.train, joint[:, :5, :5], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.cross, joint[:, :5, 5:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.test, joint[:, 5:, 5:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.test_diag, np.diagonal(joint[:, 5:, 5:], axis1=1, axis2=2), rtol=1e-12)


def _sample_layer_kernels(key, X, spec, num_nets):
    """phi(z_l) phi(z_l)^T / N for l = 1..L over num_nets prior draws (jax, float32)."""
    shapes, var = networks.param_shapes(spec), networks.param_prior_variances(spec)
    phi = acts.get_activation(spec.activation).phi

    def one(k):
        keys = jax.random.split(k, len(shapes))
        params = {n: jnp.sqrt(var[n]) * jax.random.normal(kk, shapes[n]) for kk, n in zip(keys, shapes)}
        zs, _ = networks.apply(params, X, spec)
        return jnp.stack([phi(z) @ phi(z).T / spec.width for z in zs])

    return np.asarray(jax.vmap(one)(jax.random.split(key, num_nets)), dtype=np.float64)


@pytest.mark.parametrize("name", ["relu", "sigmoid"])
def test_nngp_matches_wide_random_networks(name):
    """Empirical layer kernels of random networks average to the NNGP within 5 standard errors,
    and the error shrinks like 1/sqrt(width x samples): 16x more width x samples, 4x less error."""
    X = _inputs(np.random.default_rng(2))
    sw = (1.5, 0.8)
    theory = nngp.nngp_kernels(X, name, sw).train[1:]
    errs, ses = [], []
    for width, num_nets in [(64, 200), (256, 800)]:
        spec = networks.NetworkSpec(X.shape[1], width, 2, 1, name, 0.5, False, sw, 1.0)
        Ks = _sample_layer_kernels(jax.random.PRNGKey(width), jnp.asarray(X, jnp.float32), spec, num_nets)
        se = Ks.std(axis=0, ddof=1) / np.sqrt(num_nets)
        err = Ks.mean(axis=0) - theory
        assert np.all(np.abs(err) < 5 * se), np.abs(err / se).max()
        errs.append(np.sqrt(np.mean(err**2))), ses.append(np.sqrt(np.mean(se**2)))
    assert 3.0 < ses[0] / ses[1] < 5.5
    assert errs[1] < 0.5 * errs[0]


# ----------------------------------------------------------------------------- GP regression


def test_gp_interpolates_at_zero_temperature():
    rng = np.random.default_rng(3)
    X, Y = _inputs(rng, 6), rng.standard_normal((6, 2))
    k = nngp.nngp_kernels(X, "relu", [1.0], X_test=X)
    pred = gp.gp_posterior(k.train[-1], k.cross[-1], k.test_diag[-1], Y, 0.0)
    np.testing.assert_allclose(pred.mean, Y, atol=1e-10)
    np.testing.assert_allclose(pred.var, 0.0, atol=1e-10)
    assert pred.mean.shape == (6, 2) and pred.var.shape == (6,)


def test_gp_matches_weight_space_bayesian_regression():
    """Function-space GP == brute-force posterior of f = Phi w, w ~ N(0, I/D), noise variance T."""
    rng = np.random.default_rng(4)
    P, Pt, N0, D, T = 8, 5, 4, 12, 0.3
    W = rng.standard_normal((D, N0))
    def feats(X):
        return np.maximum(X @ W.T, 0.0)
    X, Xt, Y = rng.standard_normal((P, N0)), rng.standard_normal((Pt, N0)), rng.standard_normal((P, 2))
    F, Ft = feats(X), feats(Xt)
    precision = D * np.eye(D) + F.T @ F / T
    cov_w = np.linalg.inv(precision)
    mean_w = cov_w @ F.T @ Y / T
    pred = gp.gp_posterior(F @ F.T / D, F @ Ft.T / D, np.sum(Ft**2, axis=1) / D, Y, T)
    np.testing.assert_allclose(pred.mean, Ft @ mean_w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pred.var, np.einsum("ti,ij,tj->t", Ft, cov_w, Ft), rtol=1e-10)


def test_generalization_error_decomposition():
    mean = np.array([[1.0, 0.0], [0.0, 2.0]])
    Y = np.array([[0.0, 0.0], [0.0, 0.0]])
    err = gp.generalization_error(mean, np.array([0.2, 0.4]), Y)
    np.testing.assert_allclose(err.bias, [0.5, 2.0])
    np.testing.assert_allclose(err.variance, [0.3, 0.3])
    np.testing.assert_allclose(err.total, [0.8, 2.3])
    assert err.bias_total == pytest.approx(2.5) and err.variance_total == pytest.approx(0.6)
    assert err.total_sum == pytest.approx(3.1)
    per_output = gp.generalization_error(mean, np.array([[0.2, 0.0], [0.4, 1.0]]), Y)
    np.testing.assert_allclose(per_output.variance, [0.3, 0.5])


def test_lazy_gp_prediction_uses_scaled_last_layer_kernel():
    rng = np.random.default_rng(5)
    X, Xt = _inputs(rng, 7), _inputs(rng, 4)
    Y, Yt = rng.standard_normal(7), rng.standard_normal(4)
    res = gp.lazy_gp_prediction(X, Y, Xt, Yt, "tanh", [1.2, 0.7], 0.5, 0.1)
    k = nngp.nngp_kernels(X, "tanh", [1.2, 0.7], X_test=Xt)
    K = 0.5 * k.train[-1] + 0.1 * np.eye(7)
    np.testing.assert_allclose(res.prediction.mean[:, 0], 0.5 * k.cross[-1].T @ np.linalg.solve(K, Y),
                               rtol=1e-10)
    direct = 0.5 * k.test_diag[-1] - np.einsum("pt,pq,qt->t", 0.5 * k.cross[-1], np.linalg.inv(K),
                                               0.5 * k.cross[-1])
    np.testing.assert_allclose(res.prediction.var, direct, rtol=1e-9)
    assert res.gen_error.bias[0] == pytest.approx(np.mean((res.prediction.mean[:, 0] - Yt) ** 2))
