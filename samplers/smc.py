"""Adaptive tempered sequential Monte Carlo from the prior to the posterior (BlackJAX).

Particles move through the tempered posteriors

    pi_lambda(Theta) ∝ P0(Theta) exp(lambda l(Theta)),   0 = lambda_0 < lambda_1 < ... < lambda_K = 1,

with l the log-likelihood.  Each tempering step resamples, moves every particle by
``num_mcmc_steps`` MCMC steps that leave pi_lambda invariant, and reweights by
exp((lambda' - lambda) l); lambda' is chosen so that the effective sample size of the new weights
is ``target_ess`` times the number of particles (Jasra et al. 2011; Del Moral, Doucet & Jasra 2006;
``blackjax.smc.adaptive_tempered``).  The mean weight of each step estimates Z_lambda'/Z_lambda,
so their product estimates the evidence Z = ∫ P0(Theta) exp(l(Theta)) dTheta when P0 is normalised.

The mutation kernel (HMC or MALA) is tuned between steps from the particles themselves: its
diagonal inverse mass matrix (HMC) or its step scale (MALA) is the particles' variance, and its
step size is multiplied by exp(acceptance - target_accept) after each step (Buchholz, Chopin &
Jacob 2021 tune the same way).

For a widebayes experiment, on the driver's whitened coordinates (``sampling.run_setup``)::

    prior_var = networks.param_prior_variances(exp.spec)           # sigma_b^2 per block
    logdensity = lambda th: setup.logdensity(th, data, exp.T_eff)  # whitened model log density
    logprior, loglik = split_gaussian_prior(logdensity, prior_var, exp.preconditioner)
    particles0 = prior_particles(key_init, networks.param_shapes(exp.spec), prior_var,
                                 exp.preconditioner, num_particles, dtype)
    particles, info = jax.jit(lambda k, p: run_smc(k, logprior, loglik, p, num_mcmc_steps))(key, particles0)
    # particles: whitened, (particle, ...) per block; inference.unwhiten(particles, setup.roots)
    # gives Theta; info.log_evidence is log p(Y | X) at T_eff.
"""

from __future__ import annotations

from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc import adaptive_tempered, resampling
from blackjax.smc.tempered import TemperedSMCState
from jax.flatten_util import ravel_pytree


class SMCInfo(NamedTuple):
    """What a run reports: the tempering ladder, the evidence, the mutation acceptance."""

    tempering_params: jnp.ndarray  # (max_steps,) lambda after each step, NaN after the last
    num_steps: jnp.ndarray  # number of tempering steps taken (lambda reached 1 at this step)
    log_evidence: jnp.ndarray  # log ∫ P0 exp(l): log p(Y | X) when P0 and l are exact
    acceptance_rate: jnp.ndarray  # (max_steps,) mean acceptance of the mutation, NaN after the last
    step_size: jnp.ndarray  # the mutation step size at the end


class _Carry(NamedTuple):
    rng_key: jnp.ndarray
    state: TemperedSMCState
    step_size: jnp.ndarray
    log_evidence: jnp.ndarray
    index: jnp.ndarray
    lambdas: jnp.ndarray
    accept: jnp.ndarray


def particle_variance(particles, weights) -> jnp.ndarray:
    """Weighted variance of every coordinate, flattened in ``ravel_pytree`` order, (dimension,)."""
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(particles)
    mean = weights @ flat
    return weights @ (flat - mean) ** 2 + 1e-12


def _hmc_mutation(num_integration_steps: int):
    kernel = blackjax.hmc.build_kernel()

    def step(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix):
        return kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps)

    def params(variance, step_size):
        return {"step_size": step_size[None], "inverse_mass_matrix": variance[None]}

    return step, blackjax.hmc.init, params


def _mala_mutation():
    kernel = blackjax.mala.build_kernel()

    def params(variance, step_size):
        return {"step_size": (step_size * jnp.mean(variance))[None]}

    return kernel, blackjax.mala.init, params


def _mutation(kernel: str, num_integration_steps: int):
    if kernel == "hmc":
        return _hmc_mutation(num_integration_steps)
    if kernel == "mala":
        return _mala_mutation()
    raise ValueError(f"unknown SMC mutation kernel {kernel!r}; choose 'hmc' or 'mala'")


def run_smc(rng_key, logprior_fn, loglikelihood_fn, initial_particles, num_mcmc_steps: int = 10,
            target_ess: float = 0.5, *, kernel: str = "hmc", step_size: float = 0.5,
            num_integration_steps: int = 5, target_accept: float = 0.65, max_steps: int = 500):
    """Adaptive tempered SMC from the prior (lambda = 0) to the posterior (lambda = 1).

    Parameters
    ----------
    rng_key
        PRNG key.
    logprior_fn, loglikelihood_fn
        ``f(position) -> scalar`` for ONE particle (a dict of arrays).  ``logprior_fn`` must be
        normalised for ``log_evidence`` to be log p(Y | X).  For a widebayes experiment, pass
        the pair from :func:`split_gaussian_prior` (which see): the prior on the driver's
        whitened coordinates and l = model log density at T_eff minus it.
    initial_particles
        Draws from the prior, a dict whose leaves have a leading particle axis.
    num_mcmc_steps
        Mutation steps per tempering step.
    target_ess
        Fraction of the particles that stay effective at each reweighting.
    kernel, step_size, num_integration_steps, target_accept
        The mutation: ``"hmc"`` (``num_integration_steps`` leapfrog steps, inverse mass matrix =
        the particles' variance, so ``step_size`` ~ 1/d**(1/4) suits a near-Gaussian target) or
        ``"mala"`` (step ``step_size`` times the particles' mean variance); the step size
        is adapted towards ``target_accept`` between tempering steps.
    max_steps
        At most this many tempering steps (static: the length of the recorded ladder).

    Returns
    -------
    particles
        Equally weighted draws from the posterior, same structure as ``initial_particles``:
        after lambda reaches 1 they are resampled once more and moved by ``num_mcmc_steps``
        mutation steps at lambda = 1.
    info : SMCInfo
        The ladder of lambdas, the number of steps, the log evidence, the acceptance rates.
        If ``num_steps == max_steps`` and the last lambda is below 1, the run stopped early.

    The whole run is pure JAX (one ``lax.while_loop``), so it jits and vmaps over independent runs.
    """
    mcmc_step, mcmc_init, params_of = _mutation(kernel, num_integration_steps)
    smc_kernel = adaptive_tempered.build_kernel(logprior_fn, loglikelihood_fn, mcmc_step, mcmc_init,
                                                resampling.systematic, target_ess)
    dtype = ravel_pytree(jax.tree.map(lambda x: x[0], initial_particles))[0].dtype
    # the tempering bookkeeping (weights, lambda, evidence) in the widest float enabled: BlackJAX's
    # bisection for the next lambda mixes it with Python floats, which are float64 under x64
    wide = jnp.result_type(float)

    def advance(carry: _Carry) -> _Carry:
        key, sub = jax.random.split(carry.rng_key)
        params = params_of(particle_variance(carry.state.particles, carry.state.weights).astype(dtype),
                           carry.step_size)
        state, info = smc_kernel(sub, carry.state, num_mcmc_steps, params)
        accept = jnp.mean(info.update_info.acceptance_rate)
        step_size = carry.step_size * jnp.exp(jnp.nan_to_num(accept) - target_accept)
        return _Carry(key, state, step_size.astype(dtype),
                      carry.log_evidence + info.log_likelihood_increment.astype(wide),
                      carry.index + 1, carry.lambdas.at[carry.index].set(state.tempering_param),
                      carry.accept.at[carry.index].set(accept))

    def not_done(carry: _Carry):
        return (carry.state.tempering_param < 1.0) & (carry.index < max_steps)

    num = jax.tree.leaves(initial_particles)[0].shape[0]
    state = TemperedSMCState(initial_particles, jnp.full(num, 1.0 / num, wide), jnp.zeros((), wide))
    nan = jnp.full(max_steps + 1, jnp.nan, wide)
    carry = _Carry(rng_key, state, jnp.asarray(step_size, dtype), jnp.zeros((), wide),
                   jnp.zeros((), jnp.int32), nan, nan)
    carry = jax.lax.while_loop(not_done, advance, carry)
    num_steps = carry.index
    final = advance(carry)  # lambda = 1: resample, move, uniform weights (increment 0)
    info = SMCInfo(carry.lambdas[:max_steps], num_steps, carry.log_evidence, carry.accept[:max_steps],
                   final.step_size)
    return final.state.particles, info


# ------------------------------------------------------------------------ widebayes models
def split_gaussian_prior(logdensity_fn, prior_variances: dict, scales: dict | None = None):
    """(logprior_fn, loglikelihood_fn) of a posterior with a Gaussian prior, on whitened coordinates.

    The driver samples Theta'_b = Theta_b / sqrt(M_b) (``scales`` M, ``exp.preconditioner``) with
    the whitened model log density ``logdensity_fn(Theta') = log P0(Theta) + l(Theta)`` (no
    Jacobian).  With Theta_b ~ N(0, sigma_b^2) (``prior_variances``,
    ``networks.param_prior_variances(spec)``), Theta'_b ~ N(0, sigma_b^2 / M_b) (standard normal
    with the default preconditioner M = sigma^2), and

        log P0(Theta) = sum_b log N(Theta'_b; 0, sigma_b^2 / M_b) - 1/2 sum_b n_b log M_b,

    so ``logprior_fn`` is the first (normalised) sum and
    ``loglikelihood_fn = logdensity_fn - logprior_fn + 1/2 sum_b n_b log M_b`` is exactly l, the
    tempered Gaussian log-likelihood (normalisation at T_eff included): :func:`run_smc` then
    returns log p(Y | X) as its log evidence.  ``scales=None`` means M = 1 (plain coordinates).
    """
    scales = scales or {}
    white_var = {b: v / scales.get(b, 1.0) for b, v in prior_variances.items()}
    half_log_m = {b: 0.5 * float(np.log(scales.get(b, 1.0))) for b in prior_variances}

    def logprior_fn(theta):
        return sum(jnp.sum(jax.scipy.stats.norm.logpdf(theta[b], 0.0, np.sqrt(white_var[b])))
                   for b in sorted(theta))

    def loglikelihood_fn(theta):
        jacobian = sum(half_log_m[b] * theta[b].size for b in theta)
        return logdensity_fn(theta) - logprior_fn(theta) + jacobian

    return logprior_fn, loglikelihood_fn


def prior_particles(rng_key, shapes: dict, prior_variances: dict, scales: dict | None,
                    num_particles: int, dtype=jnp.float32) -> dict:
    """Draws of Theta' from the whitened prior N(0, sigma_b^2 / M_b), (particle, *shape) per block."""
    scales = scales or {}
    keys = jax.random.split(rng_key, len(shapes))
    return {b: jax.random.normal(k, (num_particles, *shapes[b]), dtype)
            * jnp.asarray(np.sqrt(prior_variances[b] / scales.get(b, 1.0)), dtype)
            for b, k in zip(sorted(shapes), keys)}
