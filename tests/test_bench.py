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
