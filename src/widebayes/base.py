"""What every sampler is: an (init, step) pair of pure functions, BlackJAX's shape (blackjax/base.py).

``init(position, logdensity_fn) -> state`` and
``step(rng_key, state, logdensity_fn, params) -> (state, StepInfo)``, where ``params`` is a dict
of the sampler's numbers (``step_size`` and, for HMC, ``inverse_mass_matrix``...).  They are
arguments, not closures, so a sweep compiles once and tuned values can differ per chain.
The state is a NamedTuple with at least ``position`` and ``logdensity``.

Optional parts:
``warmup(rng_key, state, logdensity_fn, params, num_steps) -> (state, params)`` tunes the
parameters during burn-in (HMC/NUTS window adaptation) and replaces the driver's burn-in;
``params_at(params, step_index)`` changes the parameters along the run (the frozen readout).

A *tempered* sampler (``tempered=True``, replica exchange) receives, wherever the others receive
``logdensity_fn``, a family ``logdensity_at(ratio) -> logdensity_fn`` of the target tempered by
``ratio`` (the log density at temperature ``ratio * T``; ``ratio = 1`` is the target).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp


class StepInfo(NamedTuple):
    """What the driver records of one step, the same for every sampler.

    ``extra`` holds sampler-specific per-step numbers (a dict of arrays, NaN where a step has
    nothing to say); the driver stores their mean over each thinning interval, ignoring NaN.
    """

    accept_prob: jnp.ndarray
    diverging: jnp.ndarray
    extra: dict | None = None


class Sampler(NamedTuple):
    name: str
    init: Callable
    step: Callable
    warmup: Callable | None = None
    params_at: Callable | None = None
    has_accept: bool = True  # whether accept_prob means anything (False for unadjusted Langevin)
    tempered: bool = False  # receives a family logdensity_at(ratio) instead of one log density
    num_replicas: int = 0  # positions carry a leading replica axis of this length (0: none)
