"""Neuron-wise Metropolis moves on the collapsed posterior: one feature neuron redrawn at a time.

Why.  The mean-field theory of wide networks (van Meegen & Sompolinsky; THEORY.md 1.2) describes
the posterior as nearly independent neurons, each drawn from a single-neuron measure: its prior
tilted by an O(1) field.  A neuron's code (which classes it responds to) is a mode of that
measure, and the modes are separated by barriers that grow with the number of inputs P: gradient
dynamics (Langevin, HMC) leave a neuron in the code where it nucleated for a very long time, and
tempering the whole network (replica exchange) fights an energy that is extensive in N and P.
But the tilt of one neuron is O(1): a proposal drawn from the neuron's PRIOR is accepted with
probability of order exp(-O(1)), wherever the current code is.  So a sweep of single-neuron
Metropolis-Hastings moves equilibrates the code fractions in a few sweeps.

The move.  The target is the collapsed posterior of the hidden weights (the readout integrated
out, ``widebayes.collapsed``): ``pi(W) ∝ P0(W) p(Y | W)``.  For a feature-layer neuron i (row i of
``W_L``), propose by the preconditioned Crank-Nicolson rule (Cotter, Roberts, Stuart & White 2013,
Stat. Sci. 28, 424), which leaves the Gaussian prior N(0, sigma_L^2) invariant,

    w_i' = sqrt(1 - beta^2) w_i + beta sigma_L xi,   xi ~ N(0, I)     (beta = 1: a fresh prior draw),

and accept with probability ``min(1, p(Y | W') / p(Y | W))``: the prior cancels against the
proposal, so the move is exact for any ``beta`` in (0, 1].  Only the neuron's features change,
``phi_i -> phi_i'`` (P), so with ``C = T_eff I + s Phi Phi^T`` (``s = sigma_a2 / N^(2 gamma)``) the
new Gram matrix is a rank-2 update ``C' = C + U D U^T``, ``U = [phi', phi]``, ``D = diag(s, -s)``.
With ``G = U^T C^-1 U``, ``B = U^T C^-1 Y`` and ``S = D^-1 + G`` (2 x 2), Woodbury and the matrix
determinant lemma give

    log p(Y|W') - log p(Y|W) = 1/2 tr(B^T S^-1 B) - m/2 log det(I_2 + D G),
    C'^-1 = C^-1 - (C^-1 U) S^-1 (C^-1 U)^T,

O(P^2) per proposal.  A sweep visits the N feature neurons in order (``lax.fori_loop``), keeping
``C^-1`` (factorised afresh at the start of every sweep, so rank-2 updates never accumulate) and
the features.  For depth L > 1 only the feature layer (whose neurons couple to the readout) is
moved; the lower layers are left to the gradient sampler, which is exact on its own.  Tied hidden
weights couple every layer to the shared matrix and are not supported.

Measured (``tests/test_neuron_moves.py``; README, "Mixing"): on the sigmoid toy task and on the
first three MNIST digits, a sweep every 10 Langevin steps brings the code fractions from where
they froze during burn-in to the theory's within the run, where plain and collapsed Langevin and
replica exchange at affordable ladders leave them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from widebayes.activations import get_activation
from widebayes.networks import NetworkSpec, hidden_layers, layer_weight_name


class SweepResult(NamedTuple):
    params: dict
    accept_rate: jnp.ndarray  # fraction of the N proposals accepted


def log_ratio(Cinv, Y, phi_new, phi_old, s):
    """log p(Y | W') - log p(Y | W) for the rank-2 change of one neuron's features (docstring).

    Returns ``(log ratio, C^-1 U, S^-1)``; the 2 x 2 algebra is written out (no LAPACK call per
    neuron: a sweep is a sequential loop over the neurons).
    """
    U = jnp.stack([phi_new, phi_old], axis=1)  # P x 2
    CU = Cinv @ U
    G = U.T @ CU
    B = CU.T @ Y  # 2 x m
    S = jnp.array([[1.0 / s + G[0, 0], G[0, 1]], [G[1, 0], -1.0 / s + G[1, 1]]], dtype=Cinv.dtype)
    det_S = S[0, 0] * S[1, 1] - S[0, 1] * S[1, 0]
    S_inv = jnp.array([[S[1, 1], -S[0, 1]], [-S[1, 0], S[0, 0]]], dtype=Cinv.dtype) / det_S
    quad = jnp.sum(B * (S_inv @ B))
    # det(I + D G) = det(D) det(D^-1 + G) = -s^2 det S
    det_update = -(s**2) * det_S
    value = 0.5 * quad - 0.5 * Y.shape[1] * jnp.log(det_update)
    return jnp.where(det_update > 0, value, -jnp.inf), CU, S_inv


def sweep_feature_neurons(rng_key, params: dict, X, Y, spec: NetworkSpec, T_eff, beta) -> SweepResult:
    """One pCN Metropolis sweep over the feature-layer neurons of the collapsed posterior."""
    phi = get_activation(spec.activation).phi
    zs = hidden_layers(params, X, spec)
    below = X if spec.depth == 1 else phi(zs[-2])  # inputs of the feature layer, P x fan_in
    fan_in = below.shape[1]
    name = layer_weight_name(spec, spec.depth)
    W = params[name]
    Phi = phi(zs[-1])  # P x N
    s = spec.sigma_a2 / spec.width ** (2.0 * spec.gamma)
    P = X.shape[0]
    C = T_eff * jnp.eye(P, dtype=Phi.dtype) + s * Phi @ Phi.T
    Cinv = cho_solve((jnp.linalg.cholesky(C), True), jnp.eye(P, dtype=Phi.dtype))
    sigma = jnp.sqrt(spec.layer_variances[spec.depth - 1])
    k_prop, k_acc = jax.random.split(rng_key)
    # every neuron is visited once, so all proposals can be made up front: one matrix product
    W_prop = jnp.sqrt(1.0 - beta**2) * W + beta * sigma * jax.random.normal(k_prop, W.shape, W.dtype)
    Phi_prop = phi(below @ W_prop.T / math.sqrt(fan_in))
    log_u = jnp.log(jax.random.uniform(k_acc, (spec.width,), Cinv.dtype))

    def one(i, carry):
        Phi, Cinv, accepted = carry
        lr, CU, S_inv = log_ratio(Cinv, Y, Phi_prop[:, i], Phi[:, i], s)
        accept = log_u[i] < lr
        Phi = Phi.at[:, i].set(jnp.where(accept, Phi_prop[:, i], Phi[:, i]))
        Cinv = Cinv - jnp.where(accept, 1.0, 0.0).astype(Cinv.dtype) * (CU @ S_inv @ CU.T)
        return Phi, Cinv, accepted.at[i].set(accept)

    _, _, accepted = jax.lax.fori_loop(0, spec.width, one, (Phi, Cinv, jnp.zeros(spec.width, bool)))
    W = jnp.where(accepted[:, None], W_prop, W)
    return SweepResult({**params, name: W}, jnp.mean(accepted.astype(Cinv.dtype)))
