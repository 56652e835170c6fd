"""``widebayes bench``: Langevin throughput against this machine's float32 matmul rate.

Times the real code path (the driver's jitted chunk: ``lax.scan`` over steps, ``vmap`` over
chains) after compilation, and counts the matrix-product FLOPs of one step:

    forward  2 P n_{l-1} N per hidden layer + 2 P N m for the readout,
    backward 2 P n_{l-1} N (weight gradient) per layer, 2 P N N (activation gradient) for
             layers 2..L, and 2 P N m twice at the readout (its gradient, and back into phi).

The reference rate is a float32 2048^3 product measured in the same process.  The step's own two
big products (X W^T and its weight gradient) are also timed alone, at the step's shapes: their
share of the step time says how close the loop is to its arithmetic floor.  ``noise`` picks the
Langevin generator (default hash32, the shipped default).

:func:`bench_reduce_inputs` (``widebayes bench --reduce-inputs``) times the input-subspace
reduction (:mod:`widebayes.input_reduction`) against the full first layer on issue 13's case.
"""

from __future__ import annotations

import statistics
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp

REFERENCE_CONFIGS = {
    "sigmoid-L1-N500 (1 chain)": {"num_chains": 1},
    "sigmoid-L1-N500 (4 chains)": {"num_chains": 4},
}


class BenchResult(NamedTuple):
    name: str
    steps_per_s: float
    gflops: float
    fraction: float  # of the 2048^3 matmul rate (median of per-repeat ratios)
    floor_fraction: float  # time of the step's own matrix products alone / time of the step
    matmul_gflops: float  # the reference rate measured alongside


def reference_experiment(num_chains: int, width: int = 500, num_train: int = 500, input_dim: int = 520):
    """Non-lazy sigmoid, L = 1, N = P = 500, N0 = 520, m = 3 (the issue's reference config)."""
    from widebayes.config import resolve

    return resolve({
        "task": {"kind": "orthogonal", "num_train": num_train, "input_dim": input_dim,
                 "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5},
        "network": {"depth": 1, "width": width, "activation": "sigmoid", "temperature": 0.01},
        "sampler": {"step_size": 0.01, "num_steps": 2, "burn_in": 1, "thin": 1,
                    "num_chains": num_chains, "progress": False},
    })


def step_flops(P: int, N0: int, N: int, m: int, depth: int) -> float:
    """Matrix-product FLOPs of one Langevin step (forward and backward), see the module docstring."""
    forward = 2 * P * N0 * N + (depth - 1) * 2 * P * N * N + 2 * P * N * m
    backward = 2 * P * N0 * N + (depth - 1) * 4 * P * N * N + 4 * P * N * m
    return float(forward + backward)


def matmul_runner(size: int = 2048):
    """A zero-argument function computing one float32 ``size^3`` product (compiled, warm)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    return lambda: mm(a).block_until_ready()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def chunk_runner(resolved: dict, num_steps: int, num_draws: int = 0):
    """A zero-argument function running ``num_steps`` steps of the real driver chunk: burn-in steps,
    or ``num_draws`` recorded draws (``num_steps / num_draws`` steps each, then the observables)."""
    from widebayes.experiment import prepare_run
    from widebayes.inference import make_chunk_fn

    run = prepare_run(resolved)
    chunk = make_chunk_fn(run.setup)

    def go():
        out = chunk(run.carry, run.chain_keys, run.data, run.hyper, run.schedule, 0, num_draws, num_steps)
        jax.block_until_ready(out)

    return go, run.experiment


def products_runner(P: int, N0: int, N: int, chains: int):
    """The step's two big products alone, in their best (merged-chain, 2-D) form: X W^T and D^T X."""
    X = jax.random.normal(jax.random.PRNGKey(0), (P, N0), jnp.float32)
    W = jax.random.normal(jax.random.PRNGKey(1), (chains * N, N0), jnp.float32)
    D = jax.random.normal(jax.random.PRNGKey(2), (P, chains * N), jnp.float32)
    both = jax.jit(lambda X, W, D: (X @ W.T, D.T @ X))
    jax.block_until_ready(both(X, W, D))
    return lambda: jax.block_until_ready(both(X, W, D))


def bench_config(name: str, resolved: dict, num_steps: int = 200, repeats: int = 5,
                 matmul_size: int = 2048) -> BenchResult:
    """Time the step, the reference product and the step's own products back to back, ``repeats``
    times, and take medians of the per-repeat ratios (robust to a machine whose speed drifts)."""
    run, exp = chunk_runner(resolved, num_steps)
    run()  # compile
    chains = resolved["sampler"]["num_chains"]
    spec, P = exp.spec, len(exp.data.X_train)
    products = products_runner(P, spec.input_dim, spec.width, chains)
    reference = matmul_runner(matmul_size)
    flops = step_flops(P, spec.input_dim, spec.width, spec.num_outputs, spec.depth) * chains * num_steps
    rows = []
    for _ in range(repeats):
        t_ref, t_step, t_prod = _timed(reference), _timed(run), _timed(products)
        peak = 2 * matmul_size**3 / t_ref
        rows.append((num_steps / t_step, flops / t_step / 1e9, flops / t_step / peak,
                     t_prod * num_steps / t_step, peak / 1e9))
    med = [statistics.median(col) for col in zip(*rows)]
    return BenchResult(name, *med)


def run_bench(repeats: int = 7, num_steps: int = 200, size: int = 500, matmul_size: int = 2048,
              noise: str = "hash32") -> list[BenchResult]:
    """Print and return the throughput of the reference configs (64 chains too on a GPU)."""
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}); reference: float32 {matmul_size}^3 "
          f"matmul, timed alongside each config; medians of {repeats} repeats; noise = {noise}")
    configs = dict(REFERENCE_CONFIGS)
    if device.platform == "gpu":
        configs["sigmoid-L1-N500 (64 chains)"] = {"num_chains": 64}
    results = []
    for name, over in configs.items():
        resolved = reference_experiment(width=size, num_train=size, input_dim=size + 20, **over)
        resolved["sampler"]["noise"] = noise
        r = bench_config(name, resolved, num_steps, repeats, matmul_size)
        results.append(r)
        print(f"{r.name:28s} {r.steps_per_s:7.1f} steps/s {r.gflops:6.1f} GFLOP/s = "
              f"{100 * r.fraction:5.1f}% of matmul ({r.matmul_gflops:.0f} GFLOP/s); "
              f"the step's own products alone take {100 * r.floor_fraction:5.1f}% of its time")
    return results


# ----------------------------------------------------------------------------------- input reduction
class ReduceInputsResult(NamedTuple):
    full_ms_per_step: float  # medians over interleaved repeats, observables of the recorded draws included
    reduced_ms_per_step: float
    speedup: float  # median of the per-repeat ratios full / reduced
    rank: int  # r = rank of X_train: the reduced first layer is N x r
    test_rank: int  # q: columns of V = W1 R, the part the test inputs see outside the span


def reduce_inputs_experiment(reduce_inputs: bool, width: int = 1000, num_train: int = 20, num_test: int = 40,
                             num_chains: int = 4, thin: int = 10) -> dict:
    """Issue 13's case: lazy sigmoid, N = 1000, binary MNIST 0/1 (P = 20 + 40 test, N0 = 784), 4 chains."""
    from widebayes.config import resolve

    return resolve({
        "task": {"kind": "mnist", "num_train": num_train, "num_test": num_test, "num_classes": 2,
                 "targets": "binary"},
        "network": {"depth": 1, "width": width, "activation": "sigmoid", "readout": "lazy",
                    "temperature": 0.1},
        "sampler": {"step_size": 0.01, "num_steps": 2 * thin, "burn_in": thin, "thin": thin,
                    "num_chains": num_chains, "progress": False, "reduce_inputs": reduce_inputs},
    })


def bench_reduce_inputs(repeats: int = 7, num_draws: int = 10, thin: int = 10, width: int = 1000,
                        num_chains: int = 4) -> ReduceInputsResult:
    """Full against reduced first layer through the real driver chunk, after compilation, interleaved.

    Each repeat runs ``num_draws`` recorded draws of ``thin`` steps (the side state's transition
    and the test inputs' observables included) once with the full and once with the reduced
    first layer; the figures are medians over repeats.
    """
    device = jax.devices()[0]
    runs = {}
    for flag in (False, True):
        resolved = reduce_inputs_experiment(flag, width=width, num_chains=num_chains, thin=thin)
        runs[flag], exp = chunk_runner(resolved, num_draws * thin, num_draws)
        runs[flag]()  # compile
    steps = num_draws * thin
    rows = []
    for _ in range(repeats):
        t_full, t_red = _timed(runs[False]), _timed(runs[True])
        rows.append((1e3 * t_full / steps, 1e3 * t_red / steps, t_full / t_red))
    full, red, ratio = (statistics.median(col) for col in zip(*rows))
    b = exp.reduction
    result = ReduceInputsResult(full, red, ratio, b.rank, b.test_rank)
    print(f"device: {device.platform} ({device.device_kind}); lazy sigmoid N = {width}, binary MNIST 0/1, "
          f"P = {exp.data.X_train.shape[0]} + {exp.data.X_test.shape[0]} test, N0 = {exp.spec.input_dim}, "
          f"{num_chains} chains, thin = {thin}; medians of {repeats} interleaved repeats of {steps} steps")
    print(f"full first layer    N x {exp.spec.input_dim:<4d} {full:8.2f} ms/step "
          f"({3000 * full / 1e3:6.1f} s per 3,000 steps)")
    print(f"reduced (r = {b.rank}, q = {b.test_rank}) N x {b.rank:<4d} {red:8.2f} ms/step "
          f"({3000 * red / 1e3:6.1f} s per 3,000 steps): {ratio:.1f}x faster")
    return result
