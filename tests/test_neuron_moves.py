"""Neuron-wise Metropolis moves on the collapsed posterior: exact algebra, exact in distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.neuron_moves import log_ratio, sweep_feature_neurons
from widebayes.networks import NetworkSpec
from widebayes.sampling import sample_experiment


def dense_loglik(Phi, Y, s, T):
    """log p(Y | W) of the collapsed readout, dense: -1/2 tr(Y^T C^-1 Y) - m/2 log det C - Pm/2 log 2 pi."""
    C = T * np.eye(len(Phi)) + s * Phi @ Phi.T
    sign, logdet = np.linalg.slogdet(C)
    return -0.5 * np.trace(Y.T @ np.linalg.solve(C, Y)) - 0.5 * Y.shape[1] * logdet - 0.5 * Y.size * np.log(2 * np.pi)


@pytest.mark.parametrize("P,N", [(6, 4), (4, 9)])
def test_log_ratio_is_the_change_of_the_marginal_likelihood(P, N):
    rng = np.random.default_rng(P)
    Phi, Y = rng.normal(size=(P, N)), rng.normal(size=(P, 3))
    s, T = 0.3, 0.05
    i = 2
    new = rng.normal(size=P)
    Phi_new = Phi.copy()
    Phi_new[:, i] = new
    C = T * np.eye(P) + s * Phi @ Phi.T
    with jax.enable_x64(True):
        lr, CU, S_inv = log_ratio(jnp.asarray(np.linalg.inv(C)), jnp.asarray(Y), jnp.asarray(new),
                                  jnp.asarray(Phi[:, i]), s)
        Cinv_new = np.linalg.inv(C) - np.asarray(CU) @ np.asarray(S_inv) @ np.asarray(CU).T
    np.testing.assert_allclose(float(lr), dense_loglik(Phi_new, Y, s, T) - dense_loglik(Phi, Y, s, T), rtol=1e-9)
    np.testing.assert_allclose(Cinv_new, np.linalg.inv(T * np.eye(P) + s * Phi_new @ Phi_new.T), atol=1e-9)


def test_a_sweep_changes_only_the_feature_layer_and_keeps_accepted_rows_prior_scaled():
    spec = NetworkSpec(input_dim=5, width=6, depth=2, num_outputs=2, activation="tanh", gamma=1.0,
                       sigma_w2=(1.0, 2.0), sigma_a2=0.2)
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        params = {"W1": jnp.asarray(rng.normal(size=(6, 5))), "W2": jnp.asarray(rng.normal(size=(6, 6))),
                  "a": jnp.zeros((6, 2))}
        X, Y = jnp.asarray(rng.normal(size=(7, 5))), jnp.asarray(rng.normal(size=(7, 2)))
        res = sweep_feature_neurons(jax.random.PRNGKey(0), params, X, Y, spec, 10.0, 1.0)  # hot: most accepted
    assert np.array_equal(res.params["W1"], params["W1"])
    changed = np.any(np.asarray(res.params["W2"]) != np.asarray(params["W2"]), axis=1)
    assert 0 < float(res.accept_rate) and changed.mean() == pytest.approx(float(res.accept_rate))


def tiny(**sampler):
    return resolve({
        "task": {"kind": "orthogonal", "num_train": 6, "input_dim": 10, "class_ratios": [0.5, 0.5], "y_minus": 0.0},
        "network": {"width": 6, "activation": "sigmoid", "readout": "nonlazy", "temperature": 0.2},
        "sampler": {"kind": "mala", "readout": "collapsed", "step_size": 0.02, "num_steps": 24000, "burn_in": 2000,
                    "thin": 20, "num_chains": 4, "seed": 2, "progress": False, **sampler}})


def observables(out):
    phi = out.result.draws["phi_L"]
    return {"kernel_trace": (phi**2).mean(axis=(2, 3)), "loss": out.result.draws["loss"]}


def test_moves_keep_the_collapsed_posterior():
    """Collapsed MALA alone and with a pCN neuron sweep after every step sample the same law: their
    means of the kernel trace and the loss agree within 4 combined Monte Carlo standard errors
    (the standard errors from the spread of the per-chain means over 4 chains each)."""
    from widebayes.diagnostics.convergence import rhat_ess

    plain = observables(sample_experiment(tiny()))
    moved_run = sample_experiment(tiny(neuron_moves={"every": 1, "beta": 1.0}))
    moved = observables(moved_run)
    assert 0.05 < np.nanmean(moved_run.result.draws["move_accept"]) < 0.95
    for k in plain:
        se = [x.std() / np.sqrt(rhat_ess(x)["ess_bulk"]) for x in (plain[k], moved[k])]
        assert abs(plain[k].mean() - moved[k].mean()) < 4 * np.hypot(*se), (k, plain[k].mean(), moved[k].mean())


def test_moves_need_the_collapsed_readout():
    with pytest.raises(InputError, match="sampler.neuron_moves"):
        tiny(readout="joint", neuron_moves={"every": 5})
    with pytest.raises(InputError, match="sampler.neuron_moves.beta"):
        tiny(neuron_moves={"beta": 0.0})
