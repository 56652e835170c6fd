"""The collapsed readout samples the joint sampler's posterior: permutation-invariant observables agree.

Statistical tier: each observable's mean under the joint sampler and under the collapsed one
(readout integrated out, drawn back at every recorded draw) must agree within 4 combined Monte
Carlo standard errors (ArviZ bulk ESS over chains and draws).  Observables: the train loss, the
readout norm <|a|^2>/(N m), the feature kernel's trace tr K_L / P and its task projection
tr(Y^T K_L Y) / P^2, and the mean predictor on test inputs (each test output).  The samplers are
exact (HMC, MALA) or run at a step whose bias is below the standard errors (checked by the slow
demo-size test against the step the demo uses).
"""

import numpy as np
import pytest

from widebayes.config import resolve
from widebayes.diagnostics.convergence import rhat_ess
from widebayes.sampling import sample_experiment

Z_MAX = 4.0


def observables(out) -> dict:
    d = out.result.draws
    phi = np.asarray(d["phi_L"], np.float64)  # chain, draw, neuron, train
    N, P = phi.shape[2], phi.shape[3]
    Y = out.experiment.data.Y_train
    proj = np.einsum("cdnp,pr->cdnr", phi, Y)
    obs = {"loss": np.asarray(d["loss"], np.float64),
           "readout_norm": np.mean(np.asarray(d["a"], np.float64) ** 2, axis=(2, 3)),
           "kernel_trace": np.sum(phi**2, axis=(2, 3)) / (N * P),
           "task_projection": np.sum(proj**2, axis=(2, 3)) / (N * P**2)}
    f = np.asarray(d["f_test"], np.float64)
    for k in range(min(f.shape[2], 3)):
        obs[f"f_test[{k}]"] = f[:, :, k, 0]
    return obs


def mean_and_se(x) -> tuple[float, float]:
    ess = rhat_ess(x)["ess_bulk"]
    return float(np.mean(x)), float(np.std(x) / np.sqrt(ess))


def assert_same_law(joint, collapsed):
    a, b = observables(joint), observables(collapsed)
    z = {}
    for k in a:
        (ma, sa), (mb, sb) = mean_and_se(a[k]), mean_and_se(b[k])
        z[k] = (ma - mb) / np.hypot(sa, sb)
    assert all(abs(v) < Z_MAX for v in z.values()), z
    return z


def toy(**sampler):
    return resolve({
        "task": {"kind": "orthogonal", "num_train": 16, "input_dim": 24, "num_test": 4,
                 "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5},
        "network": {"width": 24, "activation": "sigmoid", "readout": "nonlazy", "temperature": 0.05},
        "sampler": {"num_chains": 4, "seed": 5, "progress": False, **sampler}})


def test_collapsed_matches_joint_on_a_small_nonlazy_sigmoid_network():
    """Joint and collapsed HMC (exact) on the toy task, N = 24, P = 16, T = 0.05."""
    run = {"kind": "hmc", "num_integration_steps": 10, "step_size": 0.05, "num_steps": 3000,
           "burn_in": 1000, "thin": 5}
    assert_same_law(sample_experiment(toy(**run)), sample_experiment(toy(**run, readout="collapsed")))


def deep_linear(width, num_train, **sampler):
    return resolve({
        "task": {"kind": "orthogonal", "num_train": num_train, "input_dim": num_train + 10, "num_test": 6,
                 "class_ratios": [0.5, 0.5], "y_plus": 1.0, "y_minus": 0.0},
        "network": {"depth": 2, "width": width, "activation": "linear", "readout": "lazy",
                    "temperature": 0.01},
        "sampler": {"num_chains": 4, "seed": 2, "progress": False, **sampler}})


def test_collapsed_matches_joint_on_a_deep_linear_lazy_network():
    """Deep linear lazy network (L = 2, N = 30, P = 16, T = 0.01), joint and collapsed HMC."""
    run = {"kind": "hmc", "num_integration_steps": 10, "step_size": 0.01, "num_steps": 3000,
           "burn_in": 1000, "thin": 5}
    assert_same_law(sample_experiment(deep_linear(30, 16, **run)),
                    sample_experiment(deep_linear(30, 16, **run, readout="collapsed")))


@pytest.mark.slow
def test_collapsed_matches_joint_on_the_demo_config():
    """The demo (sigmoid, N = P = 100, N0 = 120, T = 0.01): joint Langevin at the demo's step
    0.01 against collapsed MALA (exact), 4 chains each."""
    base = {"task": {"kind": "orthogonal", "num_train": 100, "input_dim": 120, "num_test": 20,
                     "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5},
            "network": {"width": 100, "activation": "sigmoid", "readout": "nonlazy", "temperature": 0.01}}
    joint = {"step_size": 0.01, "num_steps": 200000, "burn_in": 50000, "thin": 100}
    coll = {"kind": "mala", "readout": "collapsed", "step_size": 0.03, "num_steps": 60000, "burn_in": 15000,
            "thin": 30}
    runs = [sample_experiment(resolve({**base, "sampler": {"num_chains": 4, "seed": 1, "progress": False,
                                                           **s}})) for s in (joint, coll)]
    assert_same_law(*runs)


@pytest.mark.slow
def test_collapsed_matches_joint_on_the_bpkr_deep_linear_preset():
    """Deep linear lazy network at the issue's size (L = 2, N = 100, P = 50, T = 0.001)."""
    joint = {"step_size": 5e-5, "num_steps": 400000, "burn_in": 100000, "thin": 1000}
    coll = {"kind": "hmc", "readout": "collapsed", "num_integration_steps": 20, "step_size": 1e-3,
            "num_steps": 4000, "burn_in": 1000, "thin": 5}
    cfg = {"task": {"kind": "orthogonal", "num_train": 50, "input_dim": 60, "num_test": 10,
                    "class_ratios": [0.5, 0.5], "y_plus": 1.0, "y_minus": 0.0},
           "network": {"depth": 2, "width": 100, "activation": "linear", "readout": "lazy",
                       "temperature": 0.001}}
    runs = [sample_experiment(resolve({**cfg, "sampler": {"num_chains": 4, "seed": 1, "progress": False,
                                                          **s}})) for s in (joint, coll)]
    assert_same_law(*runs)
