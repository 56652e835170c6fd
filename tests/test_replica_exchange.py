"""Replica exchange: the swap move, exactness on a double well, and the driver's bookkeeping."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from widebayes.samplers import mala, replica_exchange
from widebayes.samplers.replica_exchange import swap_permutation

from widebayes.config import replica_ratios, resolve
from widebayes.sampling import sample_experiment

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def test_swap_permutation_exchanges_accepted_pairs_only():
    perm = swap_permutation(jnp.array([True, False, False, True]))
    np.testing.assert_array_equal(perm, [1, 0, 2, 4, 3])
    np.testing.assert_array_equal(swap_permutation(jnp.zeros(3, bool)), np.arange(4))


def test_ladder_is_geometric_from_the_target_or_as_given():
    r = replica_ratios({"num_replicas": 4, "T_max": 0.08, "temperatures": []}, 0.01)
    np.testing.assert_allclose(r, [1, 2, 4, 8])
    assert replica_ratios({"num_replicas": 2, "T_max": 0.0, "temperatures": [0.01, 0.03]}, 0.01) == (1.0, 3.0)
    with pytest.raises(ValueError, match="temperatures"):
        replica_ratios({"num_replicas": 2, "T_max": 0.0, "temperatures": [0.02, 0.03]}, 0.01)
    with pytest.raises(ValueError, match="T_max"):
        replica_ratios({"num_replicas": 3, "T_max": 0.005, "temperatures": []}, 0.01)


def double_well(T):
    """log p_T(x) = -(x^2 - 1)^2 / T: two wells at +-1 separated by a barrier 1/T."""
    def logdensity_at(ratio):
        return lambda th: -jnp.sum((th["x"] ** 2 - 1.0) ** 2) / (T * ratio)
    return logdensity_at


def run_sampler(sampler, logdensity_at, x0, step_size, num_steps, seed, tempered):
    def one_chain(key, x):
        target = logdensity_at if tempered else logdensity_at(1.0)
        state = sampler.init(x, target)
        params = {"step_size": step_size}

        def body(s, i):
            p = sampler.params_at(params, i) if sampler.params_at else params
            s, info = sampler.step(jax.random.fold_in(key, i), s, target, p)
            return s, (s.position["x"][0], (info.extra or {}).get("swap_accept", jnp.zeros(1)))

        return jax.lax.scan(body, state, jnp.arange(num_steps))[1]

    keys = jax.random.split(jax.random.PRNGKey(seed), x0["x"].shape[0])
    return jax.jit(jax.vmap(one_chain))(keys, x0)


def test_replica_exchange_crosses_the_barrier_that_stops_mala():
    T, chains, steps = 0.05, 8, 6000
    ladder = (1.0, 2.5, 6.0, 15.0, 40.0)
    K = len(ladder)
    base = mala()
    re = replica_exchange(base, ladder, swap_every=5)
    start = {"x": jnp.ones((chains, 1), jnp.float32)}  # every chain starts in the right well
    xs_plain, _ = run_sampler(base, double_well(T), start, jnp.float32(0.02), steps, 0, False)
    start_re = {"x": jnp.ones((chains, K, 1), jnp.float32)}
    xs_re, swaps = run_sampler(re, double_well(T), start_re, jnp.full(K, 0.02, jnp.float32), steps, 0, True)
    frac_plain = np.mean(np.asarray(xs_plain)[:, 1000:] < 0)
    per_chain = np.mean(np.asarray(xs_re)[:, 1000:] < 0, axis=1)
    assert frac_plain < 0.02  # the barrier (20 in units of T) holds plain MALA in its well
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    assert abs(per_chain.mean() - 0.5) < 4 * se + 0.03  # symmetric target: half the mass in each well
    rates = np.nanmean(np.asarray(swaps), axis=(0, 1))
    assert rates.shape == (K - 1,) and np.all(rates > 0.1)


def test_replica_exchange_keeps_a_gaussian_target_exact():
    """Target N(0, 1) at ratio 1 and N(0, r) above: the target replica's variance stays 1."""
    ladder = (1.0, 3.0, 9.0)

    def logdensity_at(ratio):
        return lambda th: -0.5 * jnp.sum(th["x"] ** 2) / ratio

    re = replica_exchange(mala(), ladder, swap_every=1)
    chains, steps = 16, 4000
    xs, _ = run_sampler(re, logdensity_at, {"x": jnp.zeros((chains, 3, 1), jnp.float32)},
                        jnp.full(3, 0.5, jnp.float32), steps, 1, True)
    x = np.asarray(xs)[:, 500:]
    per_chain = (x**2).mean(axis=1)
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    assert abs(per_chain.mean() - 1.0) < 4 * se


def small(**sampler):
    return resolve({
        "task": {"kind": "orthogonal", "num_train": 8, "input_dim": 12, "num_test": 3,
                 "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5},
        "network": {"depth": 1, "width": 16, "activation": "sigmoid", "temperature": 0.05},
        "sampler": {"step_size": 0.005, "num_steps": 600, "burn_in": 200, "thin": 40, "num_chains": 2,
                    "seed": 3, "progress": False,
                    "replica_exchange": {"num_replicas": 3, "T_max": 0.5, "swap_every": 4}, **sampler},
    })


def test_driver_records_the_target_and_the_swap_rates(tmp_path):
    out = sample_experiment(small(), out_dir=tmp_path)
    idata = az.from_netcdf(tmp_path / "posterior.nc")
    assert idata.posterior["a"].shape == (2, 10, 16, 3)
    swap = idata.sample_stats["swap_accept"]
    assert swap.dims == ("chain", "draw", "pair") and swap.shape == (2, 10, 2)
    assert np.all((swap.values >= 0) & (swap.values <= 1))
    assert np.all(np.isfinite(out.result.draws["loss"]))


def test_replica_exchange_resumes_bit_for_bit_whatever_the_chunking(tmp_path, killed_after_saves):
    reference = sample_experiment(small(chunk_draws=1)).result.draws
    cfg = small(chunk_draws=3, checkpoint_every=1)
    killed_after_saves(lambda: sample_experiment(cfg, out_dir=tmp_path), saves=2)
    resumed = sample_experiment(cfg, out_dir=tmp_path, resume=True).result.draws
    for name in reference:
        np.testing.assert_array_equal(reference[name], resumed[name])


def test_replica_exchange_with_hmc_tunes_each_replica():
    out = sample_experiment(small(kind="hmc", num_integration_steps=4, burn_in=100, num_steps=300, thin=20))
    tuned = np.asarray(out.result.params["step_size"])
    assert tuned.shape == (2, 3) and np.all(tuned > 0)
