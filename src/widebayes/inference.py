"""The one driver ``run_chains``: any (init, step) sampler on any log density, as jitted chunks.

Inside a chunk a ``lax.scan`` over draws, each an inner ``lax.scan`` over ``thin`` steps, ``vmap``
over chains.  Observables (the per-draw arrays and the running sums of the layer kernels) are
computed on device; the host sees the chains only between chunks (progress bar, checkpoint).

The driver knows no model and no sampler package: it takes a :class:`RunSetup` (a sampler in the
shape of :mod:`widebayes.base`, a log density ``f(params, data, kwargs, T_eff)``, a forward map
``f(params, X, kwargs) -> (features, f)`` and optionally a completion that draws the blocks a
sampler does not move, e.g. the collapsed readout; optionally a side state that the sampler does
not move either, carried per chain and advanced exactly at recorded draws, e.g. the first layer's
part outside the training inputs' span) and traced numbers ``hyper`` (the model's
keyword arguments, the whitening roots), so runs that differ only in numbers reuse one compiled
chunk (:func:`make_chunk_fn` caches by ``RunSetup.key``).

The random key of step ``s`` of chain ``c`` is ``fold_in(key_c, s)``, so draws do not depend on
how the run is cut into chunks, and a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from widebayes.base import Sampler
from widebayes.observables import draw_observables


# ----------------------------------------------------------------------------------- BLAS threads
def blas_threads(limit: int | None = 1):
    """A context with the BLAS/LAPACK thread pool limited to ``limit`` threads (``None``: as it is).

    JAX's CPU factorisations (Cholesky, triangular solves: the collapsed readout) run on the
    OpenBLAS that jaxlib shares with SciPy, whose threads spin against XLA's own: on this two-core
    machine a loop of 100 rank-2 updates of a 100 x 100 inverse after one Cholesky took 21-39 ms with
    OpenBLAS's two threads and 3.1 ms with one, and a 500 x 500 Cholesky 45-69 ms against 2.0-4.7 ms
    (``widebayes.collapsed_bench``).  The driver's runs therefore hold the pool at one thread.
    """
    import contextlib

    from threadpoolctl import threadpool_limits

    return threadpool_limits(limit, user_api="blas") if limit else contextlib.nullcontext()


# ----------------------------------------------------------------------------------- whitening
def unwhiten(theta_white: dict, roots: dict) -> dict:
    """Theta = Theta' sqrt(M) per block: the sampler moves Theta' = Theta / sqrt(M).

    A plain kernel on Theta' is the M-preconditioned kernel on Theta (the Jacobian is constant).
    """
    return {name: x * roots[name] for name, x in theta_white.items()}


def roots_of(scales: dict) -> dict:
    """sqrt(M) per block: the factor from the sampler's whitened position to the parameters."""
    return {name: float(np.sqrt(m)) for name, m in scales.items()}


def whiten(logdensity: Callable, scales: dict) -> Callable:
    """``logdensity(Theta, *args)`` as a function of whitened Theta' (per-block scales M)."""
    roots = roots_of(scales)

    def whitened(theta_white, *args):
        return logdensity(unwhiten(theta_white, roots), *args)

    return whitened


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
    dtype = jnp.result_type(schedule.T_eff)
    frac = jnp.clip(step_index / jnp.maximum(schedule.num_anneal, 1), 0.0, 1.0).astype(dtype)
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
    side: dict = {}  # the side state of RunSetup.side (checkpointed with the rest), {} without one


class RunSetup(NamedTuple):
    """What a compiled chunk closes over; ``key`` says when two setups compile to the same chunk."""

    key: tuple  # hashable: equal keys mean equal functions below (the chunk cache's key)
    sampler: Sampler
    logdensity: Callable  # f(params, data, kwargs, T_eff), params unwhitened
    forward: Callable  # f(params, X, kwargs) -> (features bottom to top, output)
    store_all_layers: bool
    schedule_geometric: bool
    complete: Callable | None = None  # f(key, params, data, kwargs, T_eff) -> (params, extra draws)
    # f(key, side, params, data, hyper, sampler_params, step_index) -> (side, params, data): advance
    # the side state to the end of step ``step_index`` and give the observation's view of params and data
    side: Callable | None = None
    # f(key, position_white, data, hyper, T_eff) -> (position_white, accepted): a move applied after
    # every ``move_every``-th step (the neuron moves, widebayes.neuron_moves); None: no move
    move: Callable | None = None
    move_every: int = 0
    # f(key, position_white) -> position_white: the sign flips of odd activations (widebayes.sign_flips),
    # applied after every ``flip_every``-th step; None: none
    flip: Callable | None = None
    flip_every: int = 0


def _logdensity_at(setup: RunSetup, data, hyper, T):
    """The whitened log density at temperature ``T``: a function of the sampler's position."""
    def logdensity(theta_white):
        return setup.logdensity(unwhiten(theta_white, hyper["roots"]), data, hyper["model"], T)

    return logdensity


def _target(setup: RunSetup, data, hyper, T):
    """What the sampler's step receives: the log density at T, or the tempered family around T."""
    if setup.sampler.tempered:
        return lambda ratio: _logdensity_at(setup, data, hyper, T * ratio)
    return _logdensity_at(setup, data, hyper, T)


def _advance(setup: RunSetup, carry: ChainCarry, chain_key, step_index, data, hyper, schedule):
    """One sampler step of one chain; a chain whose log density stops being finite is frozen."""
    T = temperature_at(schedule, step_index, setup.schedule_geometric)
    params = setup.sampler.params_at(carry.params, step_index) if setup.sampler.params_at else carry.params
    new_state, info = setup.sampler.step(jax.random.fold_in(chain_key, step_index), carry.state,
                                         _target(setup, data, hyper, T), params)
    extra = info.extra if info.extra is not None else {}
    ok = jnp.isfinite(new_state.logdensity) & ~carry.dead
    state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, carry.state)
    newly_dead = ~carry.dead & ~ok
    carry = carry._replace(state=state, dead=carry.dead | newly_dead,
                           dead_at=jnp.where(newly_dead, step_index, carry.dead_at))
    if setup.move is not None:
        carry, extra = _move(setup, carry, chain_key, step_index, data, hyper, T, extra)
    if setup.flip is not None:
        carry = _flip(setup, carry, chain_key, step_index, data, hyper, T)
    return carry, (jnp.where(ok, info.accept_prob, 0.0), info.diverging | newly_dead, extra)


def _rebuilt_at(setup: RunSetup, carry: ChainCarry, position, data, hyper, T) -> ChainCarry:
    """The carry with the sampler's state rebuilt at ``position`` (its cached log density and
    gradient), a dead chain's state kept as it was: after a neuron move or the sign flips."""
    state = setup.sampler.init(position, _target(setup, data, hyper, T))
    kept = jax.tree.map(lambda new, old: jnp.where(carry.dead, old, new), state, carry.state)
    return carry._replace(state=kept)


MOVE_STREAM = 4  # the key of a move after step s: fold_in(fold_in(chain_key, s), 4)


def _move(setup: RunSetup, carry: ChainCarry, chain_key, step_index, data, hyper, T, extra):
    """After every ``setup.move_every``-th step: the setup's move, then the sampler's state rebuilt
    at the new position (its cached log density and gradient).  A real branch in the chains' vmap:
    whether to move depends on the step index only.  ``extra["move_accept"]``: NaN between moves."""
    dtype = jnp.result_type(T)

    def do(c):
        position, accepted = setup.move(observation_key(chain_key, step_index, MOVE_STREAM), c.state.position,
                                        data, hyper, T)
        return _rebuilt_at(setup, c, position, data, hyper, T), accepted.astype(dtype)

    def skip(c):
        return c, jnp.asarray(jnp.nan, dtype)

    carry, accepted = jax.lax.cond((step_index + 1) % setup.move_every == 0, do, skip, carry)
    return carry, {**extra, "move_accept": accepted}


FLIP_STREAM = 5  # the key of the sign flips after step s: fold_in(fold_in(chain_key, s), 5)


def _flip(setup: RunSetup, carry: ChainCarry, chain_key, step_index, data, hyper, T):
    """After every ``setup.flip_every``-th step: the sign flips (always accepted: a symmetry of the
    posterior), then the sampler's state rebuilt at the flipped position."""
    def do(c):
        position = setup.flip(observation_key(chain_key, step_index, FLIP_STREAM), c.state.position)
        return _rebuilt_at(setup, c, position, data, hyper, T)

    return jax.lax.cond((step_index + 1) % setup.flip_every == 0, do, lambda c: c, carry)


def _run_steps(setup, carry, chain_key, start, num_steps, data, hyper, schedule):
    def body(c, i):
        return _advance(setup, c, chain_key, start + i, data, hyper, schedule)

    carry, (accept, diverging, extra) = jax.lax.scan(body, carry, jnp.arange(num_steps))
    extra = jax.tree.map(lambda x: jnp.nanmean(x, axis=0), extra)
    return carry, jnp.mean(accept), jnp.any(diverging), extra


def observation_key(chain_key, step_index, stream: int = 1):
    """Key of what is drawn at a recorded draw, disjoint from the step keys.

    ``stream`` 1: the completion (collapsed readout); 2: the side state (the input reduction).
    """
    return jax.random.fold_in(jax.random.fold_in(chain_key, step_index), stream)


SIDE_STREAM = 2


def _view(setup: RunSetup, carry: ChainCarry, chain_key, step_index, params, data, hyper):
    """The side state advanced to ``step_index`` and the observation's params and data (or as they are)."""
    if setup.side is None:
        return carry, params, data
    side, params, data = setup.side(observation_key(chain_key, step_index, SIDE_STREAM), carry.side, params,
                                    data, hyper, carry.params, step_index)
    return carry._replace(side=side), params, data


def _observe(setup: RunSetup, carry: ChainCarry, chain_key, step_index, data, hyper, schedule):
    params = unwhiten(carry.state.position, hyper["roots"])
    carry, params, data = _view(setup, carry, chain_key, step_index, params, data, hyper)
    extra = {}
    if setup.complete is not None:
        T = temperature_at(schedule, step_index, setup.schedule_geometric)
        params, extra = setup.complete(observation_key(chain_key, step_index), params, data,
                                       hyper["model"], T)
    forward = partial(setup.forward, kwargs=hyper["model"])
    draw, kernels = draw_observables(forward, params, data, setup.store_all_layers)
    draw = {**draw, **extra}
    alive = ~carry.dead
    draw = jax.tree.map(lambda x: jnp.where(alive, x, jnp.nan), draw)
    kernel_sum = jax.tree.map(lambda s, k: s + jnp.where(alive, k, 0.0), carry.kernel_sum, kernels)
    return carry._replace(kernel_sum=kernel_sum,
                          num_observed=carry.num_observed + alive.astype(carry.num_observed.dtype)), draw


def run_chunk_one_chain(setup, carry, chain_key, data, hyper, schedule, start, num_draws, num_steps):
    """A chunk of one chain: burn-in steps, or ``num_draws`` x (``thin`` steps, then observe)."""
    if num_draws == 0:
        carry, _, _, _ = _run_steps(setup, carry, chain_key, start, num_steps, data, hyper, schedule)
        return carry, {}
    thin = num_steps // num_draws

    def one_draw(c, d):
        first = start + d * thin
        c, accept, diverging, extra = _run_steps(setup, c, chain_key, first, thin, data, hyper, schedule)
        c, draw = _observe(setup, c, chain_key, first + thin - 1, data, hyper, schedule)
        return c, {**draw, **extra, "accept_prob": accept, "diverging": diverging | c.dead}

    return jax.lax.scan(one_draw, carry, jnp.arange(num_draws))


_CHUNK_CACHE: dict = {}


class ChainLayout(NamedTuple):
    """How the chains are spread: the devices they run on and the block of chains one call holds.

    The block is fixed by the machine, not by how many devices a run uses: ``num_chains / D``, D the
    largest count of this machine's devices that divides ``num_chains``.  A run on fewer devices
    runs more blocks on each (one device: all D blocks, one after the other).
    """

    devices: tuple
    block: int


def chain_layout(num_chains: int, max_devices: int = 0) -> ChainLayout:
    """The layout of ``num_chains`` chains on this process's devices (at most ``max_devices`` if > 0)."""
    devices = jax.local_devices()
    full = max(d for d in range(1, len(devices) + 1) if num_chains % d == 0)
    limit = max_devices or full
    used = max(d for d in range(1, min(limit, full) + 1) if full % d == 0)
    return ChainLayout(tuple(devices[:used]), num_chains // full)


def make_chunk_fn(setup: RunSetup):
    """The jitted chunk over a block of chains:
    ``(carry, keys, data, hyper, schedule, start, ...) -> (carry, draws)``.

    Cached by ``setup.key``: a sweep whose points differ only in traced numbers (temperature,
    step size, prior variances, readout exponent, data of equal shapes) compiles once per shape
    (and once per device the chains are spread over).
    """
    if setup.key in _CHUNK_CACHE:
        return _CHUNK_CACHE[setup.key]
    one = partial(run_chunk_one_chain, setup)

    @partial(jax.jit, static_argnames=("num_draws", "num_steps"))
    def chunk(carry, chain_keys, data, hyper, schedule, start, num_draws, num_steps):
        fn = partial(one, data=data, hyper=hyper, schedule=schedule, start=start, num_draws=num_draws,
                     num_steps=num_steps)
        return jax.vmap(lambda c, k: fn(c, k))(carry, chain_keys)

    _CHUNK_CACHE[setup.key] = chunk
    return chunk


class ChainBlocks(NamedTuple):
    """The chains of a run cut into the blocks of a :class:`ChainLayout`, each placed on its device.

    Every block runs the same single-device program (:func:`make_chunk_fn`), wherever it runs, so
    the draws are bit-identical however many devices the chains are spread over.  A partitioned
    program (``jax.shard_map`` or a sharded ``vmap`` over a mesh of chains) is not: measured on
    forced host devices (XLA:CPU, JAX 0.10), its draws differed from the single-device run's in
    the last bits (1e-7 in float32 after one draw), because XLA compiles a partitioned program and
    a single-device one to differently rounded kernels.  The blocks are dispatched asynchronously,
    one call per block, so the devices run at the same time.
    """

    carries: list
    keys: list
    devices: list  # the device of each block

    @classmethod
    def split(cls, carry, chain_keys, layout: ChainLayout) -> ChainBlocks:
        num_blocks = len(chain_keys) // layout.block
        per_device = num_blocks // len(layout.devices)
        devices = [layout.devices[b // per_device] for b in range(num_blocks)]
        cut = [slice(b * layout.block, (b + 1) * layout.block) for b in range(num_blocks)]
        if num_blocks == 1:
            return cls([carry], [chain_keys], devices)
        carries = [jax.device_put(jax.tree.map(lambda x, c=c: x[c], carry), d) for c, d in zip(cut, devices)]
        keys = [jax.device_put(chain_keys[c], d) for c, d in zip(cut, devices)]
        return cls(carries, keys, devices)

    def joined(self, tree_list):
        """Per-block trees (leading chain axis) as one tree over all chains, on the host."""
        if len(tree_list) == 1:
            return tree_list[0]
        return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *tree_list)


def initial_positions(rng_key, shapes: dict, factors: dict, num_chains: int, dtype) -> dict:
    """Starting points in whitened coordinates, (chain, ...) per block: ``factor_b * xi``, xi ~ N(0, 1).

    With ``factor_b = sqrt(prior variance / M_b)`` this is a prior draw of a Gaussian block (the
    factor is exactly 1 for the default preconditioner M = prior variance).
    """
    keys = jax.random.split(rng_key, len(shapes))
    out = {}
    for (name, shape), k in zip(sorted(shapes.items()), keys):
        xi = jax.random.normal(k, (num_chains, *shape), dtype)
        out[name] = xi if factors[name] == 1.0 else xi * jnp.asarray(factors[name], dtype)
    return out


def _init_state(setup: RunSetup, positions, data, hyper, T_init):
    return jax.vmap(lambda p: setup.sampler.init(p, _target(setup, data, hyper, T_init)))(positions)


def init_carry(setup: RunSetup, positions, params, data, hyper, num_chains: int, T_init,
               side: dict | None = None) -> ChainCarry:
    """Initial sampler states and empty accumulators for every chain (one compiled call, cached).

    ``side`` is the initial side state (chain, ...) per entry when ``setup.side`` is set.
    """
    return _init_fn(setup, num_chains)(positions, params, data, hyper, T_init, {} if side is None else side)


_INIT_CACHE: dict = {}


def _init_fn(setup: RunSetup, num_chains: int):
    key = (setup.key, num_chains)
    if key not in _INIT_CACHE:
        @jax.jit
        def build(positions, params, data, hyper, T_init, side):
            state = _init_state(setup, positions, data, hyper, T_init)
            carry = ChainCarry(state, params, jnp.zeros(num_chains, bool), jnp.full(num_chains, -1),
                               {}, jnp.zeros(num_chains, jnp.int32), side)
            kernels = jax.eval_shape(lambda: _first_kernels(setup, carry, data, hyper, T_init))
            zeros = jax.tree.map(lambda k: jnp.zeros((num_chains, *k.shape), k.dtype), kernels)
            return carry._replace(kernel_sum=zeros)

        _INIT_CACHE[key] = build
    return _INIT_CACHE[key]


def _first_kernels(setup, carry, data, hyper, T):
    first = jax.tree.map(lambda x: x[0], carry)  # chain 0
    params = unwhiten(first.state.position, hyper["roots"])
    _, params, data = _view(setup, first, jax.random.PRNGKey(0), 0, params, data, hyper)
    if setup.complete is not None:
        params, _ = setup.complete(jax.random.PRNGKey(0), params, data, hyper["model"], T)
    return draw_observables(partial(setup.forward, kwargs=hyper["model"]), params, data)[1]


def warmup(setup: RunSetup, carry: ChainCarry, rng_key, data, hyper, T_eff, num_steps: int) -> ChainCarry:
    """Tune the sampler (HMC/NUTS adaptation) for ``num_steps`` steps in place of the burn-in."""
    target = _target(setup, data, hyper, T_eff)
    keys = jax.random.split(jax.random.fold_in(rng_key, 1), carry.dead.shape[0])
    warm = jax.jit(jax.vmap(lambda k, st, p: setup.sampler.warmup(k, st, target, p, num_steps)))
    state, params = warm(keys, carry.state, carry.params)
    return carry._replace(state=state, params=params)


# ----------------------------------------------------------------------------------- host loop
class RunResult(NamedTuple):
    draws: dict  # name -> (chain, draw, ...) NumPy arrays, NaN after a chain stopped
    kernels: dict  # "train" (chain, layer, P, P) and "test": posterior means over draws
    dead_at: np.ndarray  # (chain,) step at which a chain stopped, -1 if it did not
    seconds: float  # wall time of the chunks (compilation included)
    params: dict  # the sampler's parameters per chain at the end (tuned step sizes)


def run_chains(setup: RunSetup, carry: ChainCarry, chain_keys, data, hyper, schedule: Schedule,
               chunks: list[Chunk], *, first_chunk: int = 0, host_draws: list | None = None,
               on_chunk: Callable | None = None, layout: ChainLayout | None = None) -> RunResult:
    """Run ``chunks[first_chunk:]``; ``on_chunk(index, carry, host_draws, chunk_draws)`` after each.

    The chains are spread as ``layout`` says (default: :func:`chain_layout` over every device).
    """
    layout = chain_layout(len(chain_keys)) if layout is None else layout
    blocks = ChainBlocks.split(carry, chain_keys, layout)
    inputs = (data, hyper, schedule)
    spread = len(layout.devices) > 1
    placed = {d: jax.device_put(inputs, d) if spread else inputs for d in set(blocks.devices)}
    chunk_fn = make_chunk_fn(setup)
    host_draws = [] if host_draws is None else host_draws
    t0 = time.perf_counter()
    carries = blocks.carries
    for index in range(first_chunk, len(chunks)):
        ch = chunks[index]
        out = [chunk_fn(c, k, *placed[d], ch.start, ch.num_draws, ch.num_steps)
               for c, k, d in zip(carries, blocks.keys, blocks.devices)]
        carries = [c for c, _ in out]
        draws = blocks.joined([jax.device_get(d) for _, d in out])
        if ch.num_draws:
            host_draws.append(draws)
        if on_chunk is not None:
            on_chunk(index + 1, blocks.joined(carries), host_draws, draws)
    return collect(blocks.joined(carries), host_draws, time.perf_counter() - t0)


def collect(carry: ChainCarry, host_draws: list, seconds: float) -> RunResult:
    """Stack the per-chunk draws along the draw axis and divide the kernel sums."""
    draws = {name: np.concatenate([d[name] for d in host_draws], axis=1) for name in host_draws[0]}
    count = np.maximum(np.asarray(carry.num_observed), 1).reshape(-1, 1, 1, 1)
    kernels = {name: np.asarray(s) / count for name, s in carry.kernel_sum.items()}
    return RunResult(draws, kernels, np.asarray(carry.dead_at), seconds, jax.device_get(carry.params))
