"""Replica exchange (parallel tempering) around any (init, step) sampler.

K replicas of a chain run the base sampler at temperatures ``T_k = r_k T`` (``r_0 = 1``, the
target), all in one ``vmap``.  Every ``swap_every`` steps neighbouring replicas try to exchange
their positions, with the Metropolis probability

    alpha_k = min(1, p_k(x_{k+1}) p_{k+1}(x_k) / (p_k(x_k) p_{k+1}(x_{k+1}))),

which leaves the product of the tempered targets invariant (Swendsen & Wang 1986; Geyer 1991;
Earl & Deem 2005).  The pairs alternate deterministically, even pairs (0,1), (2,3)... on one
attempt and odd pairs (1,2), (3,4)... on the next: the non-reversible scheme of Okabe et al.
(2001) and Syed et al. (2022, JRSS B), whose round trips between the ends of the ladder take
O(K) rather than O(K^2) attempts.  The tempered family is the driver's: ``p_k`` is the posterior
at temperature ``r_k T`` (for the built-in model, the likelihood at ``r_k T_eff``; for the
collapsed readout, the marginal at ``r_k T_eff``), so the scheme is exact for any family.

After a swap the moved replicas' cached log densities and gradients belong to their old
temperature; all replicas are re-initialised at their own temperature (K extra gradients per
attempt, a fraction ``1 / swap_every`` of the steps' cost).  The swap schedule comes from the
step index (``params_at``), so it is a real branch inside the chains' ``vmap`` and a resumed
run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from widebayes.base import Sampler, StepInfo

PER_REPLICA_PARAMS = ("step_size", "inverse_mass_matrix")


class ReplicaState(NamedTuple):
    """The replicas' base states (leading axis K, replica k at temperature ratio ``r_k``)."""

    replicas: Any

    @property
    def position(self):
        """The target replica's position (what the driver records)."""
        return jax.tree.map(lambda x: x[0], self.replicas.position)

    @property
    def logdensity(self):
        """The target's log density, NaN as soon as any replica's is not finite."""
        finite = jnp.all(jnp.isfinite(self.replicas.logdensity))
        return jnp.where(finite, self.replicas.logdensity[0], jnp.nan)


def swap_permutation(accept):
    """Permutation of K replicas exchanging each accepted pair (k, k+1); ``accept`` has K - 1 entries."""
    K = accept.shape[0] + 1
    k = jnp.arange(K)
    up = jnp.concatenate([accept, jnp.zeros(1, bool)])  # pair (k, k+1) accepted
    down = jnp.concatenate([jnp.zeros(1, bool), accept])  # pair (k-1, k) accepted
    return jnp.where(up, k + 1, jnp.where(down, k - 1, k))


def replica_exchange(base: Sampler, ratios: tuple, swap_every: int) -> Sampler:
    """Wrap ``base`` in replica exchange over temperatures ``ratios[k] * T`` (``ratios[0] = 1``)."""
    ratio_arr = tuple(float(r) for r in ratios)
    K = len(ratio_arr)

    def r():
        return jnp.asarray(ratio_arr)

    def split_params(params):
        per = {k: v for k, v in params.items() if k in PER_REPLICA_PARAMS}
        shared = {k: v for k, v in params.items() if k not in PER_REPLICA_PARAMS}
        return per, shared

    def init_all(positions, logdensity_at):
        return jax.vmap(lambda x, rk: base.init(x, logdensity_at(rk)))(
            positions, r().astype(_dtype(positions)))

    def init(position, logdensity_at) -> ReplicaState:
        return ReplicaState(init_all(position, logdensity_at))

    def log_alpha(replicas, logdensity_at):
        rk = r().astype(replicas.logdensity.dtype)
        x = replicas.position
        x_lo = jax.tree.map(lambda v: v[:-1], x)
        x_hi = jax.tree.map(lambda v: v[1:], x)
        cross_lo = jax.vmap(lambda xx, rr: logdensity_at(rr)(xx))(x_hi, rk[:-1])  # p_k(x_{k+1})
        cross_hi = jax.vmap(lambda xx, rr: logdensity_at(rr)(xx))(x_lo, rk[1:])  # p_{k+1}(x_k)
        own = replicas.logdensity
        return cross_lo + cross_hi - own[:-1] - own[1:]

    def swap(rng_key, state: ReplicaState, parity, logdensity_at):
        la = jnp.nan_to_num(log_alpha(state.replicas, logdensity_at), nan=-jnp.inf)
        attempted = (jnp.arange(K - 1) % 2) == parity
        u = jax.random.uniform(rng_key, (K - 1,), la.dtype)
        accept = attempted & (jnp.log(u) < la)
        perm = swap_permutation(accept)
        positions = jax.tree.map(lambda v: v[perm], state.replicas.position)
        prob = jnp.where(attempted, jnp.exp(jnp.minimum(la, 0.0)), jnp.nan)
        return ReplicaState(init_all(positions, logdensity_at)), prob

    def no_swap(rng_key, state, parity, logdensity_at):
        return state, jnp.full(K - 1, jnp.nan, state.replicas.logdensity.dtype)

    def step(rng_key, state: ReplicaState, logdensity_at, params):
        per, shared = split_params(params)
        k_move, k_swap = jax.random.split(rng_key)
        keys = jax.random.split(k_move, K)
        rk = r().astype(state.replicas.logdensity.dtype)

        def one(key, st, ratio, p):
            return base.step(key, st, logdensity_at(ratio), {**shared, **p})

        moved, info = jax.vmap(one)(keys, state.replicas, rk, per)
        state = ReplicaState(moved)
        state, prob = jax.lax.cond(shared["swap_now"], partial(swap, logdensity_at=logdensity_at),
                                   partial(no_swap, logdensity_at=logdensity_at), k_swap, state,
                                   shared["swap_parity"])
        extra = {**(info.extra or {}), "swap_accept": prob}
        return state, StepInfo(info.accept_prob[0], jnp.any(info.diverging), extra)

    def params_at(params, step_index):
        params = base.params_at(params, step_index) if base.params_at else params
        attempt = (step_index + 1) // swap_every
        return {**params, "swap_now": (step_index + 1) % swap_every == 0, "swap_parity": (attempt - 1) % 2}

    warmup = None
    if base.warmup is not None:
        def warmup(rng_key, state: ReplicaState, logdensity_at, params, num_steps: int):
            per, shared = split_params(params)
            keys = jax.random.split(rng_key, K)
            rk = r().astype(state.replicas.logdensity.dtype)

            def one(key, st, ratio, p):
                return base.warmup(key, st, logdensity_at(ratio), {**shared, **p}, num_steps)

            replicas, tuned = jax.vmap(one)(keys, state.replicas, rk, per)
            return ReplicaState(replicas), {**shared, **tuned}

    return Sampler(f"{base.name}+replica_exchange", init, step, warmup, params_at, base.has_accept,
                   tempered=True, num_replicas=K)


def _dtype(positions):
    return jax.tree.leaves(positions)[0].dtype
