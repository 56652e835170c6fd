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
