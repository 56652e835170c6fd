"""Neuron moves: exact Metropolis-Hastings moves that change one feature neuron's code.

Why.  In the non-lazy regime Langevin dynamics changes a neuron's code (which classes activate it)
on time scales far beyond any run (README, "Mixing"), so the code fractions stay where they
nucleated.  Replica exchange needs tens of replicas (the log-likelihood is extensive), and every
local move tried in ``widebayes.studies.code_moves`` costs tens of nats.  The mean-field theory of
the coding-schemes paper says what a typical neuron of another code looks like *given the rest of
the network*: a tilted Gaussian whose tilt is the readout times the network's residual field.
These moves propose exactly that.

The move (one hidden layer; inputs of the orthogonal toy task, ``x_mu . x_nu = N0 delta``).  The
first layer's preactivations on the training inputs, ``h_i = W1_i x / sqrt(N0)`` (column ``i`` of
``H``, P x N), are i.i.d. ``N(0, sigma_w^2)`` under the prior and independent of ``W1``'s part
orthogonal to the inputs, which the likelihood never sees.  The target is the collapsed posterior
of ``H`` (readout integrated out, :func:`widebayes.collapsed.marginal_loglik`).  At the current
``H`` take the readout's conditional mean ``mu`` (N x m) and the residual ``R = Y - Phi mu / N^g``.
Propose for neuron ``i``:

1. pick ``K`` other neurons ``S`` uniformly (auxiliary randomness independent of the state; the
   reverse move uses the same ``S``, so each ``S`` indexes a valid Metropolis-Hastings kernel and
   so does their mixture);
2. ``h_i' ~ q(. | H) = (1/K) sum_{j in S} prod_mu q_mu(h_mu | mu_j, R)`` with the one-neuron
   conditional of the joint model at readout ``mu_j`` (THEORY.md 1.2)
   ``q_mu(h) ∝ exp(-h^2 / 2 sigma_w^2 + alpha_mu phi(h) - beta phi(h)^2)``,
   ``alpha_mu = mu_j . R_mu / (N^g T_eff)``, ``beta = |mu_j|^2 / (2 N^2g T_eff)``, represented as the
   exact piecewise-exponential density through its values on a grid of ``GRID_POINTS`` over
   ``+- GRID_HALF_WIDTH`` prior standard deviations (sampled exactly by inverse CDF, its density
   known exactly: the Metropolis-Hastings ratio stays exact whatever the grid);
3. accept with ``min(1, pi(H') q(H | H') / (pi(H) q(H' | H)))``, ``q(H | H')`` from ``H'``'s own
   ``mu'`` and ``R'``.

The move changes ``W1_i`` by ``X^T (h_i' - h_i) / sqrt(N0)`` (in the span of the training inputs;
the test inputs, orthogonal to them, see no change).  With the joint readout an accepted move is
followed by an exact draw of the readout from its conditional given the new weights (Metropolis
within Gibbs on the marginal of the hidden weights, then the readout's exact conditional: the
joint posterior stays invariant).

Measured (README "Mixing"): from the end state of the demo's own Langevin run half the proposals
are accepted (float32; every move built from the neuron alone, ``widebayes.studies.code_moves``,
was accepted at 1e-4 or less); while recording at equilibrium 0.2-0.4% (N = P = 100) and 8.1%
(N = P = 500).  With a move after every 10th step the codes of the toy task reach the theory's
fractions at N = P = 500 (within 0.003) and at y- = 0.1, where Langevin alone stays frozen.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from widebayes.activations import get_activation
from widebayes.collapsed import (
    ReadoutConditional,
    cholesky_factor,
    draw_readout,
    loglik_value,
    readout_conditional,
    solve_with,
)
from widebayes.errors import InputError

GRID_POINTS = 256  # demo acceptance as with 512 or 1024 (0.50, float32) at half the cost of 512
GRID_HALF_WIDTH = 9.0  # prior standard deviations
MIXTURE_SIZE = 16  # K: readouts of other neurons the proposal mixes over


class Grid(NamedTuple):
    """The proposal's grid of preactivation values, with the activation and log prior on it."""

    h: jnp.ndarray  # (G,)
    phi: jnp.ndarray  # (G,)
    log_prior: jnp.ndarray  # (G,) -h^2 / (2 sigma_w^2)
    step: jnp.ndarray  # grid spacing


def make_grid(phi, sigma_w2, dtype, points: int = GRID_POINTS) -> Grid:
    sd = jnp.sqrt(jnp.asarray(sigma_w2, dtype))
    h = jnp.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, points, dtype=dtype) * sd
    return Grid(h, phi(h), -0.5 * h**2 / sigma_w2, h[1] - h[0])


# ----------------------------------------------------------------------------- 1-D densities
def tilted_log_values(grid: Grid, readout, residual, scale, T_eff):
    """Log of the one-neuron conditional (unnormalised) on the grid, per input: (P, G).

    ``-h^2/2 sigma^2 + alpha_mu phi(h) - beta phi(h)^2``, ``alpha = R a / (scale T_eff)``,
    ``beta = |a|^2 / (2 scale^2 T_eff)``, ``scale = N**gamma``.
    """
    alpha = residual @ readout / (scale * T_eff)
    beta = jnp.sum(readout**2) / (2.0 * scale**2 * T_eff)
    return grid.log_prior[None, :] + alpha[:, None] * grid.phi[None, :] - beta * grid.phi[None, :] ** 2


def _log_cell_masses(ell, step):
    """log of the integral over each cell of ``exp(ell)`` linearly interpolated: (P, G - 1)."""
    lo, hi = ell[:, :-1], ell[:, 1:]
    d = jnp.abs(hi - lo)
    small = d < 1e-6
    # integral of exp over a cell = step * (e^hi - e^lo) / (hi - lo) = step e^max (1 - e^-d) / d
    factor = jnp.where(small, 1.0 - 0.5 * d, -jnp.expm1(-d) / jnp.where(small, 1.0, d))
    return jnp.maximum(lo, hi) + jnp.log(step) + jnp.log(factor)


def piecewise_log_pdf(h, ell, grid: Grid):
    """Sum over inputs of the log density at ``h`` (P,) of the piecewise-exponential densities with
    grid log values ``ell`` (P, G); ``-inf`` outside the grid."""
    log_norm = jax.scipy.special.logsumexp(_log_cell_masses(ell, grid.step), axis=1)
    t = (h - grid.h[0]) / grid.step
    cell = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, grid.h.shape[0] - 2)
    frac = t - cell
    lo = jnp.take_along_axis(ell, cell[:, None], 1)[:, 0]
    hi = jnp.take_along_axis(ell, cell[:, None] + 1, 1)[:, 0]
    inside = (t >= 0) & (t <= grid.h.shape[0] - 1)
    return jnp.sum(jnp.where(inside, lo + frac * (hi - lo) - log_norm, -jnp.inf))


def piecewise_sample(key, ell, grid: Grid):
    """One exact draw per row of the piecewise-exponential densities (P, G): a cell by its mass,
    then the point within it by the inverse CDF of ``exp(linear)``."""
    k_cell, k_point = jax.random.split(key)
    cell = jax.random.categorical(k_cell, _log_cell_masses(ell, grid.step), axis=1)
    lo = jnp.take_along_axis(ell, cell[:, None], 1)[:, 0]
    hi = jnp.take_along_axis(ell, cell[:, None] + 1, 1)[:, 0]
    u = jax.random.uniform(k_point, lo.shape, ell.dtype)
    slope = hi - lo
    flat = jnp.abs(slope) < 1e-6
    frac = jnp.where(flat, u, jnp.log1p(u * jnp.expm1(slope)) / jnp.where(flat, 1.0, slope))
    return grid.h[cell] + jnp.clip(frac, 0.0, 1.0) * grid.step


# ----------------------------------------------------------------------------- the move
class Field(NamedTuple):
    """What the proposal reads from a state: the readout's conditional (its mean ``mu``, N x m,
    and the factor an exact draw needs), the residual, and the collapsed log posterior of the
    preactivations."""

    readout: ReadoutConditional
    residual: jnp.ndarray  # (P, m)
    logpost: jnp.ndarray


def field_of(H, Y, phi, sigma_w2, sigma_a2, T_eff, gamma) -> Field:
    """One factorisation of the smaller Gram system gives all three: the readout's conditional,
    and with ``alpha = C^-1 Y`` (``C = s Phi Phi^T + T_eff I``, ``s = sigma_a2 / N^2g``) the residual
    ``Y - Phi mu / N^g = Y - s Phi Phi^T alpha = T_eff alpha`` and the log marginal likelihood."""
    Phi = phi(H)
    cond = readout_conditional(Phi, Y, sigma_a2, T_eff, gamma)
    solved = solve_with(cholesky_factor(cond.chol), Phi, Y, cond.s, T_eff, cond.form, with_Q=False)
    logpost = loglik_value(Y, solved) - 0.5 * jnp.sum(H**2) / sigma_w2
    return Field(cond, T_eff * solved.alpha, logpost)


def mixture_log_pdf(h, field: Field, others, grid: Grid, scale, T_eff):
    """log q(h | state): the mixture over the readouts of ``others`` (K,) of the tilted densities."""
    def one(j):
        return piecewise_log_pdf(h, tilted_log_values(grid, field.readout.mean[j], field.residual, scale,
                                                       T_eff), grid)

    return jax.scipy.special.logsumexp(jax.vmap(one)(others)) - jnp.log(others.shape[0])


class Move(NamedTuple):
    """One neuron move: the next state, whether the proposal was accepted, the log Metropolis-
    Hastings ratio, and the proposal's readout conditional (a draw of the readout after an accepted
    move comes from it, without factorising again)."""

    H: jnp.ndarray
    accepted: jnp.ndarray
    log_ratio: jnp.ndarray
    proposal_readout: ReadoutConditional


def propose_and_accept(key, H, i, Y, *, phi, grid: Grid, sigma_w2, sigma_a2, T_eff, gamma,
                       mixture_size: int = MIXTURE_SIZE) -> Move:
    """One neuron move of neuron ``i``."""
    k_others, k_pick, k_draw, k_accept = jax.random.split(key, 4)
    N = H.shape[1]
    scale = jnp.asarray(N, H.dtype) ** gamma
    others = jax.random.choice(k_others, N - 1, (mixture_size,), replace=False)
    others = others + (others >= i)  # K distinct neurons other than i
    field = field_of(H, Y, phi, sigma_w2, sigma_a2, T_eff, gamma)
    j = others[jax.random.randint(k_pick, (), 0, mixture_size)]
    h_new = piecewise_sample(k_draw, tilted_log_values(grid, field.readout.mean[j], field.residual, scale,
                                                       T_eff), grid)
    H_new = H.at[:, i].set(h_new)
    field_new = field_of(H_new, Y, phi, sigma_w2, sigma_a2, T_eff, gamma)
    log_ratio = (field_new.logpost - field.logpost
                 + mixture_log_pdf(H[:, i], field_new, others, grid, scale, T_eff)
                 - mixture_log_pdf(h_new, field, others, grid, scale, T_eff))
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accepted = jnp.log(jax.random.uniform(k_accept, (), H.dtype)) < log_ratio
    return Move(jnp.where(accepted, H_new, H), accepted, log_ratio, field_new.readout)


# ----------------------------------------------------------------------------- on the network
def check_applicable(exp, cfg: dict) -> None:
    """Refuse, with one line, the runs the move does not cover (the key is ``sampler.neuron_moves``)."""
    key = "sampler.neuron_moves"
    if exp.model != "network_prior" or exp.spec.depth != 1:
        raise InputError("neuron moves act on the feature layer of a one-hidden-layer network_prior",
                         key=key)
    if cfg["kind"] not in ("langevin", "mala") or cfg["replica_exchange"]:
        raise InputError("neuron moves combine with kind = \"langevin\" or \"mala\" (no replica exchange)",
                         key=key)
    if exp.reduction is not None or exp.frozen:
        raise InputError("neuron moves need the full first layer (no reduce_inputs, no frozen blocks)",
                         key=key)
    if exp.spec.width < MIXTURE_SIZE + 1:
        raise InputError(f"neuron moves need at least {MIXTURE_SIZE + 1} neurons", key=key)
    X = np.asarray(exp.data.X_train, dtype=np.float64)
    gram = X @ X.T / X.shape[1]
    if not np.allclose(gram, np.eye(len(X)), atol=1e-6):
        raise InputError("neuron moves need training inputs with x_mu . x_nu = N0 delta_mu_nu (the "
                         "orthogonal task): only then are the preactivations i.i.d. under the prior",
                         key=key)


def network_move(rng_key, position: dict, data: dict, hyper: dict, T_eff, *, collapsed: bool):
    """The driver's move (``RunSetup.move``): one neuron move on the whitened position.

    Returns ``(position, accepted)``.  With the joint readout the readout is redrawn from its exact
    conditional after an accepted move.
    """
    spec = hyper["model"]["spec"]
    roots = hyper["roots"]
    X, Y = data["X_train"], data["Y_train"]
    W1 = position["W1"] * roots["W1"]
    N0 = X.shape[1]
    H = X @ W1.T / jnp.sqrt(jnp.asarray(N0, W1.dtype))
    phi = get_activation(spec.activation).phi
    sigma_w2 = spec.sigma_w2[0]
    grid = make_grid(phi, sigma_w2, W1.dtype)
    k_neuron, k_move, k_readout = jax.random.split(rng_key, 3)
    i = jax.random.randint(k_neuron, (), 0, spec.width)
    move = propose_and_accept(k_move, H, i, Y, phi=phi, grid=grid, sigma_w2=sigma_w2, sigma_a2=spec.sigma_a2,
                              T_eff=T_eff, gamma=spec.gamma)
    W1_next = W1.at[i].add(X.T @ (move.H[:, i] - H[:, i]) / jnp.sqrt(jnp.asarray(N0, W1.dtype)))
    out = {**position, "W1": W1_next / roots["W1"]}
    if not collapsed:
        drawn = draw_readout(k_readout, move.proposal_readout)
        a = jnp.where(move.accepted, drawn, position["a"] * roots["a"])
        out["a"] = a / roots["a"]
    return out, move.accepted
