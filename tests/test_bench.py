"""The benchmark's code path and FLOP count (no timing is asserted: targets live in the README)."""

from widebayes.bench import run_bench, step_flops


def test_flop_count_of_a_one_layer_step():
    # forward 2*P*N0*N + 2*P*N*m, backward 2*P*N0*N + 4*P*N*m
    assert step_flops(P=500, N0=520, N=500, m=3, depth=1) == 4 * 500 * 520 * 500 + 6 * 500 * 500 * 3


def test_flop_count_adds_the_hidden_products_of_deeper_layers():
    assert step_flops(10, 12, 8, 2, 2) - step_flops(10, 12, 8, 2, 1) == 6 * 10 * 8 * 8


def test_bench_runs_the_real_driver_at_toy_size(capsys):
    results = run_bench(repeats=1, num_steps=5, size=16, matmul_size=256)
    assert len(results) == 2 and all(r.steps_per_s > 0 and r.gflops > 0 for r in results)
    assert "device: cpu" in capsys.readouterr().out


def test_mixing_kernel_series_equal_the_direct_formulas_over_blocks_of_draws():
    import numpy as np

    from widebayes.bench_mixing import _kernel_series

    rng = np.random.default_rng(0)
    phi = rng.random((2, 7, 5, 6)).astype(np.float32)  # chain, draw, neuron, train
    Y = rng.standard_normal((6, 3))
    got = _kernel_series(phi, Y, block=3)
    x = phi.astype(np.float64)
    np.testing.assert_allclose(got["kernel_trace"], np.sum(x**2, axis=(2, 3)) / 30, rtol=1e-12)
    proj = np.einsum("cdnp,pr->cdnr", x, Y)
    np.testing.assert_allclose(got["task_projection"], np.sum(proj**2, axis=(2, 3)) / (5 * 36), rtol=1e-12)


def test_between_chain_share_tells_stuck_chains_from_agreeing_ones():
    import numpy as np

    from widebayes.bench_mixing import between_chain_share

    rng = np.random.default_rng(0)
    agree = rng.standard_normal((4, 2000))
    assert between_chain_share(agree) < 0.01
    stuck = agree * 0.1 + np.arange(4)[:, None]  # each chain at its own level
    assert between_chain_share(stuck) > 0.99
    np.testing.assert_allclose(between_chain_share(np.stack([agree, stuck], axis=-1)),
                               np.median([between_chain_share(agree), between_chain_share(stuck)]))


def test_mixing_measure_reduces_each_chunk_and_finds_the_code_fractions():
    """The real driver chunk on a small toy network: each chunk is reduced to its series as it
    arrives (the raw draws of a 4-chain N = P = 500 reference filled 24 GB), and the code fractions
    of the whole run sum to at most 1 per draw."""
    import numpy as np

    from widebayes.bench_mixing import _toy, measure

    base = {"task": _toy(24, 24, 30), "network": {"depth": 1, "width": 24, "activation": "sigmoid",
                                                 "readout": "nonlazy", "temperature": 0.05}}
    (fig,) = measure(base, {"langevin": {"step_size": 0.01}}, num_steps=400, burn_in=100, thin=10,
                     chains=2, repeats=1, activation="sigmoid", nonlazy=True)
    assert {"train_loss", "kernel_trace", "task_projection", "test_mean"} <= set(fig.ess_per_s)
    codes = [k for k in fig.mean if k.startswith("code_fraction[")]
    assert codes and sum(fig.mean[k] for k in codes) <= 1 + 1e-9
    assert all(np.isfinite(fig.ess_per_s[k]) and fig.ess_per_s[k] > 0 for k in ("train_loss", "kernel_trace"))
    assert all(0 <= fig.between_share[k] <= 1 for k in ("train_loss", "kernel_trace"))


def test_mixing_runs_start_where_the_reference_sampler_equilibrated():
    """``--equilibrate``: the chains' positions after the reference sampler's steps are every timed
    run's start, for the blocks each sampler moves (no readout when it is collapsed) and on every
    replica of a ladder; a run from there measures the stationary chain."""
    import numpy as np

    from widebayes.bench_mixing import _toy, equilibrated_start, measure, sampler_config
    from widebayes.experiment import prepare_run, restart_at

    base = {"task": _toy(24, 24, 30), "network": {"depth": 1, "width": 24, "activation": "sigmoid",
                                                 "readout": "nonlazy", "temperature": 0.05}}
    start = equilibrated_start(base, {"step_size": 0.01, "neuron_moves": 10}, 200, 2)
    assert set(start) == {"W1", "a"} and start["W1"].shape == (2, 24, 50)
    prior = prepare_run(sampler_config(base, {"step_size": 0.01}, 200, 100, 10, 2, 1000)).carry.state.position
    assert not np.allclose(prior["W1"], start["W1"])  # it moved from the prior draws of its seed
    ladder = {"num_replicas": 3, "T_max": 0.2, "swap_every": 10}
    for over, blocks in [({"step_size": 0.01}, {"W1", "a"}),
                         ({"readout": "collapsed", "step_size": 0.01}, {"W1"}),
                         ({"step_size": 0.01, "replica_exchange": ladder}, {"W1", "a"})]:
        carry = restart_at(prepare_run(sampler_config(base, over, 200, 100, 10, 2, 1)), start)
        positions = getattr(carry.state, "replicas", carry.state).position
        assert set(positions) == blocks
        for b, x in positions.items():
            x = np.asarray(x).reshape(2, -1, *start[b].shape[1:])
            np.testing.assert_array_equal(x, np.broadcast_to(start[b][:, None], x.shape))
    (fig,) = measure(base, {"langevin": {"step_size": 0.01}}, num_steps=300, burn_in=100, thin=10,
                     chains=2, repeats=1, activation="sigmoid", nonlazy=True, start=start)
    assert np.isfinite(fig.mean["kernel_trace"]) and fig.ess_per_s["kernel_trace"] > 0
