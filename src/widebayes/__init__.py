"""widebayes: Bayesian posterior sampling of wide neural networks, held against theory."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU's concurrency-optimised scheduler (on by default in jax 0.10) can leave a computation
# waiting forever, every thread idle: the driver's chunk with a batch of Cholesky factorisations
# inside its lax.cond inside lax.scan hung in 9 of 9 runs of `widebayes sample
# experiments/mnist_codes_moves.toml` (6,000 steps, the neuron moves' components vmapped), and once
# in the 4-chain neuron-move run at N = P = 500 of `widebayes bench --mixing`; with this flag
# the same vmapped run finished 4 of 4 times (2026-12-06), and the Langevin step's speed is unchanged
# (N = P = 500, 4 chains: 31.1 s against 31.5 s per 1,500 steps; `--xla_cpu_multi_thread_eigen=false`,
# another cure reported for such hangs, did not help: 3 of 3 hung).  XLA reads XLA_FLAGS when JAX
# first creates its CPU client, so this holds unless JAX ran a computation before widebayes was
# imported; a flag the user set for the scheduler is left as it is.
_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _SCHEDULER_FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} {_SCHEDULER_FLAG}=false".strip()
