"""Hamiltonian Monte Carlo and NUTS: BlackJAX kernels in our (init, step) shape, with a warmup.

Both integrate Hamilton's equations for H(Theta, p) = -log p(Theta) + p^T C p / 2 with the
leapfrog (velocity Verlet) step ``eps`` and the diagonal inverse mass matrix C, then accept
(HMC: the end point of ``num_integration_steps`` leapfrog steps, Metropolis test; Duane et al.
1987, Neal 2011) or sample a point of a trajectory grown until it turns back on itself (NUTS,
multinomial variant: Hoffman & Gelman 2014, Betancourt 2017; at most ``2**max_num_doublings``
leapfrog steps).  On the driver's whitened coordinates C = 1 is the M-preconditioned kernel.

``params`` per chain: ``{"step_size": eps, "inverse_mass_matrix": C}`` with C of shape
(number of parameters,), flattened in ``jax.flatten_util.ravel_pytree`` order (absent: C = 1).
``warmup`` tunes both during burn-in: dual averaging of ``log eps`` towards ``target_accept``
(Hoffman & Gelman 2014, section 3.2) and, with ``adapt_mass_matrix``, C from the draws' variance
in Stan's doubling windows (BlackJAX ``window_adaptation``, which in BlackJAX 1.7 is
``staged_adaptation(metric="welford_diag")``, called here directly so that the step-size-only
warmup can use the same engine with a schedule of fast windows only).
"""

from __future__ import annotations

import blackjax
import jax.numpy as jnp
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.adaptation.window_adaptation import build_schedule
from jax.flatten_util import ravel_pytree

from widebayes.base import Sampler, StepInfo

init = blackjax.hmc.init


def inverse_mass_of(params: dict, position) -> jnp.ndarray:
    """The diagonal inverse mass matrix of ``params``, or ones when it is not there yet."""
    if "inverse_mass_matrix" in params:
        return params["inverse_mass_matrix"]
    return jnp.ones_like(ravel_pytree(position)[0])


def step_size_only_schedule(num_steps: int) -> jnp.ndarray:
    """A warmup schedule of fast windows only: dual averaging of the step size, C held at 1."""
    return jnp.zeros((num_steps, 2), jnp.int32)


def make_warmup(algorithm, target_accept: float, adapt_mass_matrix: bool, **kernel_args):
    """``warmup(rng_key, state, logdensity_fn, params, num_steps) -> (state, params)``, one chain.

    Starts the dual averaging at ``params["step_size"]``; pure JAX, so it vmaps over chains.
    """
    schedule_fn = build_schedule if adapt_mass_matrix else step_size_only_schedule

    def warmup(rng_key, state, logdensity_fn, params, num_steps: int):
        position = state.position
        if num_steps == 0:
            return init(position, logdensity_fn), {"step_size": params["step_size"],
                                                    "inverse_mass_matrix": inverse_mass_of({}, position)}
        adaptation = blackjax.staged_adaptation(
            algorithm, logdensity_fn, metric="welford_diag", initial_step_size=params["step_size"],
            target_acceptance_rate=target_accept, adaptation_info_fn=get_filter_adapt_info_fn(),
            schedule_fn=schedule_fn, **kernel_args)
        (state, tuned), _ = adaptation.run(rng_key, position, num_steps)
        dtype = jnp.result_type(params["step_size"])
        return state, {"step_size": jnp.asarray(tuned["step_size"], dtype),
                       "inverse_mass_matrix": tuned["inverse_mass_matrix"]}

    return warmup


def _sampler(name: str, algorithm, kernel, target_accept, adapt_mass_matrix, **kernel_args) -> Sampler:
    def step(rng_key, state, logdensity_fn, params):
        new_state, info = kernel(rng_key, state, logdensity_fn, params["step_size"],
                                 inverse_mass_of(params, state.position), **kernel_args)
        return new_state, StepInfo(info.acceptance_rate, info.is_divergent)

    return Sampler(name, init, step, warmup=make_warmup(algorithm, target_accept, adapt_mass_matrix,
                                                        **kernel_args))


def hmc(num_integration_steps: int = 10, target_accept: float = 0.8,
        adapt_mass_matrix: bool = False) -> Sampler:
    """HMC with ``num_integration_steps`` leapfrog steps per proposal (fixed at build time)."""
    return _sampler("hmc", blackjax.hmc, blackjax.hmc.build_kernel(), target_accept, adapt_mass_matrix,
                    num_integration_steps=int(num_integration_steps))


def nuts(max_num_doublings: int = 6, target_accept: float = 0.8, adapt_mass_matrix: bool = False) -> Sampler:
    """NUTS with trajectories of at most ``2**max_num_doublings`` leapfrog steps."""
    return _sampler("nuts", blackjax.nuts, blackjax.nuts.build_kernel(), target_accept, adapt_mass_matrix,
                    max_num_doublings=int(max_num_doublings))
