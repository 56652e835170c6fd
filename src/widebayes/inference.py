"""From a model to draws: the log-density bridge, the one driver ``run_chains``, and ArviZ output.

The driver runs any sampler of ``widebayes.samplers`` as jitted chunks: inside a chunk a
``lax.scan`` over draws, each an inner ``lax.scan`` over ``thin`` steps, ``vmap`` over chains.
Observables (the per-draw arrays and the running sums of the layer kernels) are computed on
device; the host sees the chain only between chunks (progress bar, checkpoint).

The random key of step ``s`` of chain ``c`` is ``fold_in(key_c, s)``, so draws do not depend on
how the run is cut into chunks, and a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.util import log_density

from widebayes.models.network_prior import network_prior
from widebayes.networks import NetworkSpec, param_shapes
from widebayes.observables import draw_observables
from widebayes.posterior import to_inferencedata  # noqa: F401 - moved; re-exported for now
from widebayes.samplers.base import Sampler


# ----------------------------------------------------------------------------------- bridge
def model_logdensity(spec: NetworkSpec, model=network_prior) -> Callable:
    """log p(Theta, Y | X) of the NumPyro model, as ``f(params, data, T_eff)`` (exact, via numpyro)."""

    def logdensity(params, data, T_eff):
        value, _ = log_density(model, (data["X_train"], data["Y_train"]),
                               {"spec": spec, "T_eff": T_eff}, params)
        return value

    return logdensity


def whiten(logdensity: Callable, scales: dict) -> Callable:
    """The same density on whitened coordinates Theta' = Theta / sqrt(M) (per-block scales M).

    A plain kernel on Theta' is the M-preconditioned kernel on Theta (the Jacobian is constant).
    """
    roots = {name: float(np.sqrt(m)) for name, m in scales.items()}

    def whitened(theta_white, *args):
        return logdensity(unwhiten(theta_white, roots), *args)

    return whitened


def unwhiten(theta_white: dict, roots: dict) -> dict:
    return {name: x * roots[name] for name, x in theta_white.items()}


# ----------------------------------------------------------------------------------- plan
class Chunk(NamedTuple):
    start: int  # first step index
    num_draws: int  # draws recorded (0: burn-in)
    num_steps: int


def plan_chunks(num_steps: int, burn_in: int, thin: int, draws_per_chunk: int) -> list[Chunk]:
    """Cut a run into chunks: burn-in (steps that do not fill a whole ``thin`` go there), then draws.

    ``num_draws = (num_steps - burn_in) // thin``; the ``(num_steps - burn_in) % thin`` leftover
    steps are added to the burn-in so that the last step is a recorded draw.
    """
    num_draws = (num_steps - burn_in) // thin
    burn = num_steps - num_draws * thin
    size = thin * draws_per_chunk
    chunks = [Chunk(s, 0, min(size, burn - s)) for s in range(0, burn, size)]
    for d in range(0, num_draws, draws_per_chunk):
        n = min(draws_per_chunk, num_draws - d)
        chunks.append(Chunk(burn + d * thin, n, n * thin))
    return chunks


def auto_draws_per_chunk(thin: int, num_draws: int, target_steps: int = 2000) -> int:
    return int(max(1, min(num_draws, target_steps // thin)))


# ----------------------------------------------------------------------------------- driver
class Schedule(NamedTuple):
    """Temperature along the run: T_start_eff -> T_eff over ``num_anneal`` steps, then T_eff.

    Numbers only (traced); whether the schedule is geometric or linear is fixed in ``RunSetup``.
    """

    T_eff: float
    T_start_eff: float = 1.0
    num_anneal: int = 0


def temperature_at(schedule: Schedule, step_index, geometric: bool):
    """T_eff at a step: geometric T_start (T/T_start)^s or linear interpolation during annealing."""
    frac = jnp.clip(step_index / jnp.maximum(schedule.num_anneal, 1), 0.0, 1.0)
    if geometric:
        T = schedule.T_start_eff * (schedule.T_eff / schedule.T_start_eff) ** frac
    else:
        T = schedule.T_start_eff + (schedule.T_eff - schedule.T_start_eff) * frac
    return jnp.where(step_index < schedule.num_anneal, T, schedule.T_eff)


class ChainCarry(NamedTuple):
    """Everything one chain carries between chunks (checkpointed as plain arrays)."""

    state: tuple
    params: dict
    dead: jnp.ndarray  # the chain hit a NaN/inf and is stopped
    dead_at: jnp.ndarray  # step index of that, -1 if alive
    kernel_sum: dict  # running sums of the layer kernels over recorded draws
    num_observed: jnp.ndarray


class RunSetup(NamedTuple):
    sampler: Sampler
    logdensity: Callable  # whitened, f(theta_white, data, T_eff)
    roots: dict  # sqrt of the per-block scales
    spec: NetworkSpec
    store_all_layers: bool
    schedule_geometric: bool


def _advance(setup: RunSetup, carry: ChainCarry, chain_key, step_index, data, schedule):
    """One sampler step of one chain; a chain whose log density stops being finite is frozen."""
    T = temperature_at(schedule, step_index, setup.schedule_geometric)
    logdensity = partial(_bound, setup.logdensity, data=data, T=T)
    params = setup.sampler.params_at(carry.params, step_index) if setup.sampler.params_at else carry.params
    new_state, info = setup.sampler.step(jax.random.fold_in(chain_key, step_index), carry.state,
                                         logdensity, params)
    ok = jnp.isfinite(new_state.logdensity) & ~carry.dead
    state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, carry.state)
    newly_dead = ~carry.dead & ~ok
    carry = carry._replace(state=state, dead=carry.dead | newly_dead,
                           dead_at=jnp.where(newly_dead, step_index, carry.dead_at))
    return carry, (jnp.where(ok, info.accept_prob, 0.0), info.diverging | newly_dead)


def _bound(logdensity, theta, data, T):
    return logdensity(theta, data, T)


def _run_steps(setup, carry, chain_key, start, num_steps, data, schedule):
    def body(c, i):
        return _advance(setup, c, chain_key, start + i, data, schedule)

    carry, (accept, diverging) = jax.lax.scan(body, carry, jnp.arange(num_steps))
    return carry, jnp.mean(accept), jnp.any(diverging)


def _observe(setup: RunSetup, carry: ChainCarry, data):
    params = unwhiten(carry.state.position, setup.roots)
    draw, kernels = draw_observables(params, data, setup.spec, setup.store_all_layers)
    alive = ~carry.dead
    draw = jax.tree.map(lambda x: jnp.where(alive, x, jnp.nan), draw)
    kernel_sum = jax.tree.map(lambda s, k: s + jnp.where(alive, k, 0.0), carry.kernel_sum, kernels)
    return carry._replace(kernel_sum=kernel_sum, num_observed=carry.num_observed + alive), draw


def run_chunk_one_chain(setup, carry, chain_key, data, schedule, start, num_draws, num_steps):
    """A chunk of one chain: burn-in steps, or ``num_draws`` x (``thin`` steps, then observe)."""
    if num_draws == 0:
        carry, _, _ = _run_steps(setup, carry, chain_key, start, num_steps, data, schedule)
        return carry, {}
    thin = num_steps // num_draws

    def one_draw(c, d):
        c, accept, diverging = _run_steps(setup, c, chain_key, start + d * thin, thin, data, schedule)
        c, draw = _observe(setup, c, data)
        return c, {**draw, "accept_prob": accept, "diverging": diverging | c.dead}

    return jax.lax.scan(one_draw, carry, jnp.arange(num_draws))


def make_chunk_fn(setup: RunSetup):
    """The jitted chunk over all chains: ``(carry, keys, data, schedule, start, ...) -> (carry, draws)``."""
    one = partial(run_chunk_one_chain, setup)

    @partial(jax.jit, static_argnames=("num_draws", "num_steps"))
    def chunk(carry, chain_keys, data, schedule, start, num_draws, num_steps):
        fn = partial(one, data=data, schedule=schedule, start=start, num_draws=num_draws,
                     num_steps=num_steps)
        return jax.vmap(lambda c, k: fn(c, k))(carry, chain_keys)

    return chunk


def initial_positions(rng_key, spec: NetworkSpec, num_chains: int, dtype) -> dict:
    """Prior draws in whitened coordinates: standard normal in every block, (chain, ...)."""
    shapes = param_shapes(spec)
    keys = jax.random.split(rng_key, len(shapes))
    return {name: jax.random.normal(k, (num_chains, *shape), dtype)
            for (name, shape), k in zip(sorted(shapes.items()), keys)}


def init_carry(setup: RunSetup, positions, params, data, num_chains: int, T_init) -> ChainCarry:
    """Initial sampler states and empty accumulators for every chain (one compiled call)."""

    @jax.jit
    def build(positions, params, data, T_init):
        logdensity = partial(_bound, setup.logdensity, data=data, T=T_init)
        state = jax.vmap(lambda p: setup.sampler.init(p, logdensity))(positions)
        first = unwhiten(jax.tree.map(lambda x: x[0], positions), setup.roots)
        kernels = jax.eval_shape(lambda: draw_observables(first, data, setup.spec)[1])
        zeros = jax.tree.map(lambda k: jnp.zeros((num_chains, *k.shape), k.dtype), kernels)
        return ChainCarry(state, params, jnp.zeros(num_chains, bool), jnp.full(num_chains, -1),
                          zeros, jnp.zeros(num_chains, jnp.int32))

    return build(positions, params, data, T_init)


# ----------------------------------------------------------------------------------- host loop
class RunResult(NamedTuple):
    draws: dict  # name -> (chain, draw, ...) NumPy arrays, NaN after a chain stopped
    kernels: dict  # "train" (chain, layer, P, P) and "test": posterior means over draws
    dead_at: np.ndarray  # (chain,) step at which a chain stopped, -1 if it did not
    seconds: float  # wall time of the chunks (compilation included)
    params: dict  # the sampler's parameters per chain at the end (tuned step sizes)


def run_chains(setup: RunSetup, carry: ChainCarry, chain_keys, data, schedule: Schedule,
               chunks: list[Chunk], *, first_chunk: int = 0, host_draws: list | None = None,
               on_chunk: Callable | None = None) -> RunResult:
    """Run ``chunks[first_chunk:]``; ``on_chunk(index, carry, host_draws, chunk_draws)`` after each."""
    chunk_fn = make_chunk_fn(setup)
    host_draws = [] if host_draws is None else host_draws
    t0 = time.perf_counter()
    for index in range(first_chunk, len(chunks)):
        ch = chunks[index]
        carry, draws = chunk_fn(carry, chain_keys, data, schedule, ch.start, ch.num_draws, ch.num_steps)
        draws = jax.device_get(draws)
        if ch.num_draws:
            host_draws.append(draws)
        if on_chunk is not None:
            on_chunk(index + 1, carry, host_draws, draws)
    return collect(carry, host_draws, time.perf_counter() - t0)


def collect(carry: ChainCarry, host_draws: list, seconds: float) -> RunResult:
    """Stack the per-chunk draws along the draw axis and divide the kernel sums."""
    draws = {name: np.concatenate([d[name] for d in host_draws], axis=1) for name in host_draws[0]}
    count = np.maximum(np.asarray(carry.num_observed), 1).reshape(-1, 1, 1, 1)
    kernels = {name: np.asarray(s) / count for name, s in carry.kernel_sum.items()}
    return RunResult(draws, kernels, np.asarray(carry.dead_at), seconds, jax.device_get(carry.params))
