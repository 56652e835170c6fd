"""Asymptotic tier: sampled lazy networks against NNGP/GP and kernel renormalisation (BPKR).

Tolerances combine three sources, each named where it is used: the Monte Carlo error (from the
spread between independent chains), the unadjusted-Langevin step bias (O(step), checked by
halving the step in the slow tests), and the finite-width corrections (O(1/N) at fixed P).
"""

import numpy as np
import pytest

from widebayes.config import resolve
from widebayes.sampling import sample_experiment
from widebayes.theory.predict import predictions


def chain_mcse(per_chain):
    """Standard error of the mean over independent chains (axis 0)."""
    per_chain = np.asarray(per_chain)
    return per_chain.std(axis=0, ddof=1) / np.sqrt(per_chain.shape[0])


def wide_lazy(width=1000, steps=30000, step_size=0.002, activation="relu"):
    return resolve({
        "task": {"kind": "xor", "num_train": 20, "num_test": 10, "seed": 0},
        "network": {"depth": 1, "width": width, "activation": activation, "readout": "lazy",
                    "temperature": 0.01},
        "sampler": {"step_size": step_size, "num_steps": steps, "burn_in": steps // 5, "thin": 100,
                    "num_chains": 4, "seed": 2, "progress": False},
    })


@pytest.fixture(scope="module")
def wide_relu():
    out = sample_experiment(wide_lazy())
    return out, predictions(out.experiment)


def test_wide_lazy_predictor_mean_is_the_gp_mean(wide_relu):
    """N = 1000, P = 20: the mean differs from the GP's by O(P/N) = 2% at most (BPKR's own
    correction to the mean is below 0.1% here); Monte Carlo error from 4 chains, 4 MCSE."""
    out, th = wide_relu
    f = out.result.draws["f_test"][..., 0]
    per_chain = f.mean(axis=1)
    gp = np.asarray(th["f_test_mean_gp"])[:, 0]
    tol = 4 * chain_mcse(per_chain) + 0.02 * np.abs(gp).max()
    assert np.all(np.abs(per_chain.mean(0) - gp) < tol)


def test_wide_lazy_predictor_variance_is_the_gp_variance(wide_relu):
    """Test-averaged posterior variance within 10% of the GP's: the variance estimate from
    4 x 240 correlated draws carries about 4% Monte Carlo error, the step bias about 2%."""
    out, th = wide_relu
    f = out.result.draws["f_test"][..., 0]
    sampled = f.var(axis=1).mean()
    assert sampled == pytest.approx(np.mean(th["f_test_var_gp"]), rel=0.10)


def test_wide_lazy_feature_kernel_is_the_nngp_kernel(wide_relu):
    """Posterior-mean feature kernel vs NNGP, max error relative to the largest entry: 3%
    (O(P/N) = 2% learned correction plus 1.5% chain spread measured at this size)."""
    out, th = wide_relu
    K = out.result.kernels["train"][:, -1].mean(axis=0)
    K_nngp = np.asarray(th["kernel_train_nngp"])[-1]
    assert np.abs(K - K_nngp).max() / np.abs(K_nngp).max() < 0.03
