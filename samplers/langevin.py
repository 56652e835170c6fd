"""Unadjusted (Euler-Maruyama) Langevin dynamics, with blocks that can be frozen.

    Theta <- Theta + eps * grad log p(Theta) + sqrt(2 eps) xi,   xi ~ N(0, I).

The driver runs it on whitened coordinates Theta' = Theta / sqrt(M) (M the per-block
preconditioner), which is exactly the preconditioned step of DESIGN.md,
Theta <- Theta - eps M grad U + sqrt(2 eps M) xi.
``params["frozen_blocks"]`` (name -> bool) holds blocks fixed: the frozen-readout experiment.

BlackJAX's SGLD kernel has the same update but draws its noise with ``jax.random.normal``; ours
is written out so that the noise generator can be chosen: on the CPU the default ``hash32``
generator makes the step about 1.4x faster at the reference size (``noise.py``, README figures).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from widebayes.samplers.noise import gaussian_like

from widebayes.base import Sampler, StepInfo


class LangevinState(NamedTuple):
    position: dict
    logdensity: jnp.ndarray
    logdensity_grad: dict


def init(position, logdensity_fn) -> LangevinState:
    value, grad = jax.value_and_grad(logdensity_fn)(position)
    return LangevinState(position, value, grad)


def _block_steps(params, names):
    eps = params["step_size"]
    frozen = params.get("frozen_blocks", {})
    return {name: jnp.where(frozen[name], 0.0, eps) if name in frozen else eps for name in names}


def build_kernel(noise: str = "hash32"):
    """The Euler-Maruyama step with the named noise generator (``samplers/noise.py``)."""

    def step(rng_key, state: LangevinState, logdensity_fn, params):
        """One step at ``params["step_size"]``, holding ``params["frozen_blocks"]`` fixed."""
        return _step(rng_key, state, logdensity_fn, params, noise)

    return step


def _step(rng_key, state: LangevinState, logdensity_fn, params, generator):
    eps = _block_steps(params, state.position)
    noise = gaussian_like(rng_key, state.position, generator)
    position = {
        name: x + eps[name] * state.logdensity_grad[name] + jnp.sqrt(2.0 * eps[name]) * noise[name]
        for name, x in state.position.items()
    }
    new_state = init(position, logdensity_fn)
    return new_state, StepInfo(jnp.ones((), new_state.logdensity.dtype), ~jnp.isfinite(new_state.logdensity))


step = build_kernel()


def freeze_readout(freeze_at: int):
    """``params_at`` hook: from step ``freeze_at`` on, the readout ``a`` is held fixed."""

    def params_at(params, step_index):
        return {**params, "frozen_blocks": {"a": step_index >= freeze_at}}

    return params_at


def langevin(freeze_at: int = -1, noise: str = "hash32") -> Sampler:
    """Unadjusted Langevin; ``freeze_at >= 0`` holds the readout fixed from that step on."""
    return Sampler("langevin", init, build_kernel(noise),
                   params_at=freeze_readout(freeze_at) if freeze_at >= 0 else None, has_accept=False)
