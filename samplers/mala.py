"""Metropolis-adjusted Langevin (MALA): BlackJAX's kernel in our (init, step) shape.

    Theta* = Theta + eps grad log p(Theta) + sqrt(2 eps) xi,   xi ~ N(0, I),
    accept Theta* with probability min(1, p(Theta*) q(Theta | Theta*) / (p(Theta) q(Theta* | Theta))),

the Langevin step of ``langevin.py`` followed by a Metropolis-Hastings test, so the chain leaves
p exactly invariant whatever ``eps`` (Roberts & Tweedie 1996; ``blackjax.mcmc.mala``).  On the
driver's whitened coordinates it is the M-preconditioned MALA of DESIGN.md.
"""

from __future__ import annotations

import jax.numpy as jnp
from blackjax.mcmc import mala as bj_mala

from widebayes.base import Sampler, StepInfo

init = bj_mala.init
_kernel = bj_mala.build_kernel()


def step(rng_key, state: bj_mala.MALAState, logdensity_fn, params):
    """One MALA step at ``params["step_size"]``; reports the Metropolis acceptance probability."""
    new_state, info = _kernel(rng_key, state, logdensity_fn, params["step_size"])
    return new_state, StepInfo(info.acceptance_rate, jnp.zeros((), bool))


def mala() -> Sampler:
    return Sampler("mala", init, step)
