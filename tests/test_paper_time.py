"""One conversion from steps to paper Langevin time, per block, with the preconditioner M in it.

Checked where the answer is known: with the likelihood switched off (a huge temperature) every
weight is an Ornstein-Uhlenbeck process of the paper's dynamics, dTheta = -(T_eff/sigma^2) Theta dt
+ sqrt(2 T_eff) dB, whose autocorrelation after paper time tau is exp(-tau / tau_prior),
tau_prior = sigma^2 / T_eff.  Measured at sigma^2 = 2 under the default preconditioner (M =
sigma^2) and under the isotropic one (M = 1): one step is a different paper time, the decay per
paper time is the same.
"""

import numpy as np
import pytest

from widebayes.config import resolve
from widebayes.experiment import build_experiment
from widebayes.sampling import sample_experiment


def prior_dominated(preconditioner, thin=10):
    return resolve({
        "task": {"kind": "orthogonal", "num_train": 6, "input_dim": 8, "class_ratios": [0.5, 0.5]},
        "network": {"width": 64, "activation": "tanh", "readout": "lazy", "temperature": 1e6,
                    "sigma_w2": 2.0, "sigma_a2": 2.0},
        "sampler": {"step_size": 0.01, "num_steps": 40000, "burn_in": 0, "thin": thin, "num_chains": 2,
                    "seed": 0, "progress": False, "preconditioner": preconditioner},
    })


def test_paper_time_per_step_carries_the_preconditioner():
    exp = build_experiment(prior_dominated({}))
    assert exp.paper_time_per_step("W1") == pytest.approx(0.01 * 2.0 / 1e6)
    iso = build_experiment(prior_dominated("isotropic"))
    assert iso.paper_time_per_step("W1") == pytest.approx(0.01 / 1e6)
    assert iso.tau_prior("W1") == exp.tau_prior("W1") == pytest.approx(2.0 / 1e6)


@pytest.mark.parametrize("tied", [False, True])
def test_posterior_attrs_carry_each_hidden_layers_paper_time(tied):
    """``paper_time_per_step_W{l}`` for l >= 2 is the step time of that layer's block (the shared
    ``W`` when tied), with its own preconditioner: here a layer variance of 3 against W1's 2."""
    from widebayes.sampling import run_attrs

    cfg = prior_dominated({})
    cfg["network"].update(depth=3, sigma_w2=[2.0, 3.0, 3.0], tied_weights=tied)
    exp = build_experiment(resolve(cfg))
    attrs = run_attrs(exp, "")
    assert attrs["paper_time_per_step"] == pytest.approx(0.01 * 2.0 / 1e6)
    for layer in (2, 3):
        assert attrs[f"paper_time_per_step_W{layer}"] == pytest.approx(0.01 * 3.0 / 1e6)


@pytest.mark.parametrize("preconditioner", [{}, "isotropic"])
def test_prior_relaxation_in_paper_time_is_the_same_under_both_dynamics(preconditioner):
    out = sample_experiment(prior_dominated(preconditioner))
    exp = out.experiment
    a = out.result.draws["a"]
    a = a.reshape(a.shape[0], a.shape[1], -1)  # chain, draw, entry
    x, y = a[:, :-1].ravel(), a[:, 1:].ravel()
    rho = np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y))
    tau = exp.thin * exp.paper_time_per_step("a")
    decay = 1.0 - exp.step_size * exp.preconditioner["a"] / exp.blocks["a"].prior_variance
    expected = decay**exp.thin  # the Euler step's exact autocorrelation ...
    assert expected == pytest.approx(np.exp(-tau / exp.tau_prior("a")), rel=0.02)  # ... is the OU one
    se = (1 - expected**2) / np.sqrt(x.size)
    assert abs(rho - expected) < 5 * se + 0.01, (rho, expected)
    assert out.idata.attrs["paper_time_per_step_readout"] == pytest.approx(exp.paper_time_per_step("a"))
