"""What every sampler is: an (init, step) pair of pure functions, BlackJAX's shape.

``init(position, logdensity_fn) -> state`` and
``step(rng_key, state, logdensity_fn, params) -> (state, StepInfo)``, where ``params`` is a dict
of the sampler's numbers (``step_size`` and, for HMC, ``inverse_mass_matrix``...).  They are
arguments, not closures, so a sweep compiles once and tuned values can differ per chain.
The state is a NamedTuple with at least ``position`` and ``logdensity``.

Optional parts:
``warmup(rng_key, position, logdensity_fn, params, num_steps) -> (state, params)`` tunes the
parameters during burn-in (HMC/NUTS window adaptation) and replaces the driver's burn-in;
``params_at(params, step_index)`` changes the parameters along the run (the frozen readout).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp


class StepInfo(NamedTuple):
    """What the driver records of one step, the same for every sampler."""

    accept_prob: jnp.ndarray
    diverging: jnp.ndarray


class Sampler(NamedTuple):
    name: str
    init: Callable
    step: Callable
    warmup: Optional[Callable] = None
    params_at: Optional[Callable] = None
    has_accept: bool = True  # whether accept_prob means anything (False for unadjusted Langevin)
