"""Neuron moves: exact Metropolis-Hastings moves that change one feature neuron's code.

Why.  In the non-lazy regime Langevin dynamics changes a neuron's code (which classes activate it)
on time scales far beyond any run (README, "Mixing"), so the code fractions stay where they
nucleated.  Replica exchange needs tens of replicas (the log-likelihood is extensive), and every
local move tried in ``widebayes.studies.code_moves`` costs tens of nats.  The mean-field theory of
the coding-schemes paper says what a typical neuron of another code looks like *given the rest of
the network*: a tilted Gaussian whose tilt is the readout times the network's residual field.
These moves propose exactly that.

The move (the grid proposal: one hidden layer, inputs of the orthogonal toy task,
``x_mu . x_nu = N0 delta``).  The
first layer's preactivations on the training inputs, ``h_i = W1_i x / sqrt(N0)`` (column ``i`` of
``H``, P x N), are i.i.d. ``N(0, sigma_w^2)`` under the prior and independent of ``W1``'s part
orthogonal to the inputs, which the likelihood never sees.  The target is the collapsed posterior
of ``H`` (readout integrated out, :func:`widebayes.collapsed.marginal_loglik`).  At the current
``H`` take the readout's conditional mean ``mu`` (N x m) and the cavity residual ``R = Y - Phi mu /
N^g + phi_i mu_i^T / N^g`` (the network without neuron ``i``, :func:`without_neuron`).
Propose for neuron ``i``:

1. pick ``K`` other neurons ``S`` uniformly and a sign ``s_j`` per pick (-1 with probability
   ``REFLECTED_SHARE``), with weights ``w_j`` (the reflected ones ``REFLECTED_WEIGHT`` together;
   auxiliary randomness independent of the state; the reverse move uses the same draw, so each
   draw indexes a valid Metropolis-Hastings kernel and so does their mixture);
2. ``h_i' ~ q(. | H) = sum_{j in S} w_j prod_mu q_mu(h_mu | s_j mu_j, R)`` with the one-neuron
   conditional of the joint model at readout ``s_j mu_j`` (THEORY.md 1.2; the reflected readout
   proposes the complement of ``j``'s code, :class:`Components` says why)
   ``q_mu(h) ∝ exp(-h^2 / 2 sigma_w^2 + alpha_mu phi(h) - beta phi(h)^2)``,
   ``alpha_mu = s_j mu_j . R_mu / (N^g T_eff)``, ``beta = |mu_j|^2 / (2 N^2g T_eff)``, represented as the
   exact piecewise-constant density through its values at the midpoints of ``GRID_POINTS`` cells
   over ``+- GRID_HALF_WIDTH`` prior standard deviations (sampled exactly by inverse CDF, its
   density known exactly: the Metropolis-Hastings ratio stays exact whatever the grid);
3. accept with ``min(1, pi(H') q(H | H') / (pi(H) q(H' | H)))``, ``q(H | H')`` from ``H'``'s own
   ``mu'`` and ``R'``.

The move changes ``W1_i`` by ``X^T (h_i' - h_i) / sqrt(N0)`` (in the span of the training inputs;
the test inputs, orthogonal to them, see no change).  With the joint readout a sweep of moves in
which one was accepted is followed by an exact draw of the readout from its conditional given the
new weights (Metropolis within Gibbs on the marginal of the hidden weights, then the readout's exact
conditional: the joint posterior stays invariant).

Correlated inputs and deeper networks (the Laplace proposal).  On other inputs (MNIST), or for the
feature layer ``L > 1`` of a deep network (its inputs are the activations ``U`` of layer L - 1,
held fixed during the move), a neuron's preactivations ``h = A w`` (``A = U / sqrt(n)``, P x n,
``w`` the neuron's incoming weights, prior ``N(0, sigma^2 I)``) are correlated across inputs under
the prior, ``K = sigma^2 A A^T``, and the one-neuron conditional no longer factorises.  Each mixture
component is then the Laplace approximation of the same tilted density, written over the weights
``w`` (so that ``K`` may be singular, ``P > n``): Newton steps from neuron ``j``'s own
preactivations (Rasmussen & Williams 2006, Algorithm 3.1), a Gaussian with precision
``I / sigma^2 + A^T W A`` whose draws and density need one P x P Cholesky factor.  Its component in
the null space of ``A`` is the prior, which is also that part's posterior.  The move replaces the
whole row ``w_i``; the ratio stays exact (the component's density is evaluated, not assumed).

Sweeps (:func:`sweep`, ``[sampler] neuron_sweep``).  The driver makes ``M`` moves at a time, one
after another, sharing one factorisation of the Gram system (:class:`Gram`, updated by rank two
after each accepted move), then rebuilds the sampler's state and redraws the readout once.

Measured (README "Mixing"): from the end state of the demo's own Langevin run half the proposals
are accepted (float32; every move built from the neuron alone, ``widebayes.studies.code_moves``,
was accepted at 1e-4 or less); while recording at equilibrium 0.2-0.4% (N = P = 100) and 8.1%
(N = P = 500).  With a move after every 10th step the codes of the toy task reach the theory's
fractions at N = P = 500 (within 0.003) and at y- = 0.1, where Langevin alone stays frozen.  The
Laplace proposal on the first three MNIST digits (N = P = 100, T = 0.01, a move after every 5th
step): 13-16% accepted while recording, and every neuron changes code during the run; at the
feature layer of a two-hidden-layer toy network (N = P = 40) 0.1-0.2%.  Before the reflected
components, on MNIST at step 0.005 exactly one neuron stayed in each single-class code in all six
chains; with them none does: at equal weights the codes came within 0.004 of the theory (0.54%
accepted while recording, 0.51% before), at the shipped 1/16 within 0.002 (0.39% accepted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from widebayes.activations import get_activation
from widebayes.collapsed import draw_readout, readout_conditional
from widebayes.collapsed import gram as gram_matrix
from widebayes.errors import InputError
from widebayes.networks import hidden_layers

GRID_POINTS = 256  # cells; demo acceptance 0.18 (piecewise-linear log density on 256 points: 0.20; README)
GRID_HALF_WIDTH = 9.0  # prior standard deviations
MIXTURE_SIZE = 16  # K: readouts of other neurons the proposal mixes over
REFLECTED_SHARE = 0.25  # chance that a component takes the other neuron's readout with its sign flipped
REFLECTED_WEIGHT = 1.0 / 16  # the reflected components' total weight in the mixture (when both kinds occur)
LAPLACE_ITERATIONS = 8  # Newton steps of each Laplace component
OUTLIER_COMPONENTS = 4  # with outlier_moves: components proposing an outlier neuron (Components says why)
OUTLIER_WEIGHT = 0.25  # their total weight in the mixture
OUTLIER_MASSES = (0.003, 0.01, 0.03)  # |a|^2 / N of an outlier component's readout: seeds (Components)


class Grid(NamedTuple):
    """The proposal's grid: ``G`` cells of width ``step`` from ``edge``, the activation and log prior
    at their midpoints ``h``, and the activation's range over them."""

    h: jnp.ndarray  # (G,) cell midpoints
    phi: jnp.ndarray  # (G,)
    log_prior: jnp.ndarray  # (G,) -h^2 / (2 sigma_w^2)
    step: jnp.ndarray  # cell width
    edge: jnp.ndarray  # the first cell's lower edge
    phi_range: jnp.ndarray  # (2,) min and max of phi(h)


def make_grid(phi, sigma_w2, dtype, points: int = GRID_POINTS) -> Grid:
    sd = jnp.sqrt(jnp.asarray(sigma_w2, dtype))
    step = 2.0 * GRID_HALF_WIDTH * sd / points
    edge = -GRID_HALF_WIDTH * sd
    h = edge + (jnp.arange(points, dtype=dtype) + 0.5) * step
    values = phi(h)
    return Grid(h, values, -0.5 * h**2 / sigma_w2, step, edge, jnp.stack([jnp.min(values), jnp.max(values)]))


# ----------------------------------------------------------------------------- 1-D densities
def tilted_log_values(grid: Grid, alpha, beta):
    """Log of the one-neuron conditional (unnormalised) at the cell midpoints, per input: (P, G),
    ``-h^2/2 sigma^2 + alpha_mu phi(h) - beta phi(h)^2`` (the tilt: :func:`tilt_at`) less the tilt's
    largest value over the activation's range, ``max_phi (alpha_mu phi - beta phi^2)`` (closed form),
    so that every value is at most 0 and the largest no lower than the log prior at the grid's
    edge (-40.5 at 9 standard deviations): the sum of exponentials needs no max pass."""
    low, high = grid.phi_range[0], grid.phi_range[1]
    star = jnp.clip(alpha / jnp.maximum(2.0 * beta, jnp.finfo(alpha.dtype).tiny), low, high)
    bound = alpha * star - beta * star**2
    return (grid.log_prior[None, :] + alpha[:, None] * grid.phi[None, :] - beta * grid.phi[None, :] ** 2
            - bound[:, None])


def _cell_of(h, grid: Grid):
    """The cell holding ``h`` and whether it lies on the grid."""
    t = jnp.floor((h - grid.edge) / grid.step)
    inside = (t >= 0) & (t < grid.h.shape[0])
    return jnp.clip(t, 0, grid.h.shape[0] - 1).astype(jnp.int32), inside


def piecewise_log_pdf(h, ell, grid: Grid):
    """Sum over inputs of the log density at ``h`` (P,) of the piecewise-constant densities with
    cell log values ``ell`` (P, G) (at most 0, the largest not below -80: :func:`tilted_log_values`);
    ``-inf`` outside the grid."""
    log_norm = jnp.log(jnp.sum(jnp.exp(ell), axis=1) * grid.step)
    cell, inside = _cell_of(h, grid)
    value = jnp.take_along_axis(ell, cell[:, None], 1)[:, 0]
    return jnp.sum(jnp.where(inside, value - log_norm, -jnp.inf))


def piecewise_sample(key, ell, grid: Grid):
    """One exact draw per row of the piecewise-constant densities (P, G): a cell by the inverse CDF
    of the cell masses (one uniform per row; Gumbel-max takes two logarithms per cell), then a point
    uniform within it.  A point that rounding puts in the next cell (about 2e-5 per input in float32)
    is taken at its cell's midpoint, so that the density evaluated is always the drawn cell's.

    Why piecewise constant.  The mixture's density needs the normaliser of every component on every
    input (16 x 500 rows of 256 cells at N = P = 500); with the log density linear in each cell (the
    first version) each cell cost an ``expm1``, a ``log`` and the ``exp`` of a log-sum-exp, with one
    exponential per cell and the tilt's closed-form bound it is one exponential and no max pass:
    15.5 against 2.5 ms for 4 chains (float32, two quiet cores)."""
    k_cell, k_point = jax.random.split(key)
    cdf = jnp.cumsum(jnp.exp(ell), axis=1)
    level = jax.random.uniform(k_cell, (ell.shape[0], 1), ell.dtype) * cdf[:, -1:]
    cell = jnp.minimum(jnp.sum(cdf < level, axis=1), ell.shape[1] - 1)
    u = jax.random.uniform(k_point, cell.shape, ell.dtype)
    h = grid.edge + (cell + u) * grid.step
    return jnp.where(_cell_of(h, grid)[0] == cell, h, grid.h[cell])


# ----------------------------------------------------------------------------- Laplace proposal
def tilt_derivatives(h, phi, alpha, beta):
    """First and second derivatives in ``h`` of the tilt ``alpha_mu phi(h_mu) - beta phi(h_mu)^2``,
    per input: ``f' = (alpha - 2 beta phi) phi'``, ``f'' = (alpha - 2 beta phi) phi'' - 2 beta phi'^2``."""
    ones = jnp.ones_like(h)

    def first(x):
        return jax.jvp(phi, (x,), (ones,))

    (value, d1), (_, d2) = jax.jvp(first, (h,), (ones,))
    coef = alpha - 2.0 * beta * value
    return coef * d1, coef * d2 - 2.0 * beta * d1**2


class Laplace(NamedTuple):
    """A Gaussian over one neuron's incoming weights ``w`` (n,), ``N(mean, Sigma)`` with
    ``Sigma^-1 = I / sigma^2 + A^T diag(W) A``: the Laplace approximation of the tilted density in
    weight space.  Held as R&W's stable factor ``B = I + W^1/2 K W^1/2 = L_B L_B^T`` (P x P),
    ``K = sigma^2 A A^T``."""

    mean: jnp.ndarray  # (n,) weights
    sqrt_w: jnp.ndarray  # (P,) W^1/2
    chol_b: jnp.ndarray  # (P, P)


def _factor_b(K, w):
    sqrt_w = jnp.sqrt(w)
    B = jnp.eye(K.shape[0], dtype=K.dtype) + sqrt_w[:, None] * K * sqrt_w[None, :]
    return sqrt_w, jnp.linalg.cholesky(B)


def laplace_fit(A, sigma2, start, phi, alpha, beta, iterations: int) -> Laplace:
    """The Laplace approximation of ``p(w) ∝ N(w; 0, sigma^2 I) exp(sum_mu alpha_mu phi(h_mu) -
    beta phi(h_mu)^2)``, ``h = A w`` (P,), reached by ``iterations`` Newton steps from the
    preactivations ``start``.

    Rasmussen & Williams (2006), Algorithm 3.1 (the GP-classification mode finder; it never
    inverts ``K = sigma^2 A A^T``, which may be singular): with ``W = max(-f'', 0)`` (the tilt's
    curvature where it is log-concave, a Gauss-Newton floor where it is not),
    ``B = I + W^1/2 K W^1/2``, ``b = W h + f'``, the step is ``a = b - W^1/2 B^-1 W^1/2 K b``,
    ``h <- K a``; in weight space the mode is ``w = sigma^2 A^T a`` (``h = A w``).  The Newton steps
    are unrolled (no inner loop).  Whether they converge does not matter for exactness: the result
    is a deterministic function of the state seen by the move, and its density is evaluated
    exactly (:func:`laplace_log_pdf`).
    """
    K = sigma2 * A @ A.T

    def a_of(h):
        d1, d2 = tilt_derivatives(h, phi, alpha, beta)
        w = jnp.maximum(-d2, 0.0)
        sqrt_w, chol_b = _factor_b(K, w)
        b = w * h + d1
        return b - sqrt_w * cho_solve((chol_b, True), sqrt_w * (K @ b))

    h = start
    a = jnp.zeros_like(start)
    for _ in range(iterations):
        a = a_of(h)
        h = K @ a
    _, d2 = tilt_derivatives(h, phi, alpha, beta)
    sqrt_w, chol_b = _factor_b(K, jnp.maximum(-d2, 0.0))
    return Laplace(sigma2 * A.T @ a, sqrt_w, chol_b)


def laplace_sample(key, fit: Laplace, A, sigma2):
    """An exact draw of ``N(mean, Sigma)`` without ``Sigma``'s square root ("perturb, then solve"):
    ``v = e1 / sigma + A^T W^1/2 e2 ~ N(0, Sigma^-1)``, then ``Sigma v``, with Woodbury's
    ``Sigma = sigma^2 I - sigma^4 A^T W^1/2 B^-1 W^1/2 A``."""
    k1, k2 = jax.random.split(key)
    e1 = jax.random.normal(k1, fit.mean.shape, fit.mean.dtype)
    e2 = jax.random.normal(k2, fit.sqrt_w.shape, fit.mean.dtype)
    v = e1 / jnp.sqrt(sigma2) + A.T @ (fit.sqrt_w * e2)
    inner = fit.sqrt_w * cho_solve((fit.chol_b, True), fit.sqrt_w * (A @ v))
    return fit.mean + sigma2 * v - sigma2**2 * A.T @ inner


def laplace_log_pdf(w, fit: Laplace, A, sigma2):
    """``log N(w; mean, Sigma)`` up to ``-n/2 log(2 pi sigma^2)`` (the same for every component and
    both directions of a move): ``-1/2 d^T Sigma^-1 d + 1/2 log det B``, because
    ``det(sigma^2 Sigma^-1) = det(I + sigma^2 A^T W A) = det B`` (matrix determinant lemma)."""
    d = w - fit.mean
    quad = jnp.sum(d**2) / sigma2 + jnp.sum((fit.sqrt_w * (A @ d)) ** 2)
    return -0.5 * quad + jnp.sum(jnp.log(jnp.diagonal(fit.chol_b)))


# ----------------------------------------------------------------------------- proposals
class Proposal(NamedTuple):
    """A one-neuron proposal family over a coordinate ``x`` of the neuron (its preactivations on the
    training inputs, or its incoming weights): ``sample(key, tilt, start)`` and
    ``log_pdf(x, tilt, start)`` of the component at ``tilt = (alpha, beta)`` started from ``start``
    (another neuron's preactivations), ``prior_logpdf(x)`` up to a constant, and
    ``preactivations(x)`` (P,); ``vectorised``: whether the mixture evaluates its components in
    one ``vmap`` (else one after another, :func:`mixture_log_pdf` says why)."""

    sample: Callable
    log_pdf: Callable
    prior_logpdf: Callable
    preactivations: Callable
    vectorised: bool = False


def grid_proposal(phi, sigma_w2, dtype, points: int = GRID_POINTS) -> Proposal:
    """Orthogonal inputs (prior ``N(0, sigma_w^2 I)`` of the preactivations, i.i.d. per input): the
    exact one-dimensional conditionals per input, over the preactivations."""
    grid = make_grid(phi, sigma_w2, dtype, points)
    return Proposal(lambda key, tilt, start: piecewise_sample(key, tilted_log_values(grid, *tilt), grid),
                    lambda h, tilt, start: piecewise_log_pdf(h, tilted_log_values(grid, *tilt), grid),
                    lambda h: -0.5 * jnp.sum(h**2) / sigma_w2,
                    lambda h: h, vectorised=True)


def laplace_proposal(phi, A, sigma2, iterations: int = LAPLACE_ITERATIONS) -> Proposal:
    """Any inputs ``A`` (P x n, preactivations ``h = A w``, prior ``w ~ N(0, sigma^2 I)``): the
    component's Laplace Gaussian over the weights, found by Newton from the other neuron's
    preactivations."""
    def fit(tilt, start):
        return laplace_fit(A, sigma2, start, phi, tilt[0], tilt[1], iterations)

    return Proposal(lambda key, tilt, start: laplace_sample(key, fit(tilt, start), A, sigma2),
                    lambda w, tilt, start: laplace_log_pdf(w, fit(tilt, start), A, sigma2),
                    lambda w: -0.5 * jnp.sum(w**2) / sigma2,
                    lambda w: A @ w)


# ----------------------------------------------------------------------------- the move
class Gram(NamedTuple):
    """The samples-form Gram system ``C = s Phi Phi^T + T_eff I_P`` (``s = sigma_a2 / N^2g``) of the
    collapsed likelihood, held as its explicit inverse with ``alpha = C^-1 Y``: what a move reads
    (:func:`field_of`) and, when it replaces one neuron's column of ``Phi``, updates by rank two
    (:func:`replace_column`) instead of factorising again.

    Why.  A move needs the field before and after the proposal; two factorisations per move were
    40% of its cost at N = P = 500 (4 chains: the Gram product and Cholesky 20 ms, the two mixture
    densities 36 ms), and a sweep of moves (``[sampler] neuron_sweep``) shares one factorisation
    among all of them."""

    Phi: jnp.ndarray  # (P, N) activations of the feature layer on the training inputs
    inverse: jnp.ndarray  # (P, P) C^-1
    alpha: jnp.ndarray  # (P, m) C^-1 Y
    s: jnp.ndarray  # sigma_a2 / N^2g


def gram_of(H, Y, phi, sigma_a2, T_eff, gamma) -> Gram:
    """:class:`Gram` at preactivations ``H`` (P x N): one Cholesky factorisation of ``C``."""
    Phi = phi(H)
    P, N = Phi.shape
    s = sigma_a2 / jnp.asarray(N, Phi.dtype) ** (2 * gamma)
    chol = jnp.linalg.cholesky(gram_matrix(Phi, s, T_eff, "samples"))
    inverse = cho_solve((chol, True), jnp.eye(P, dtype=Phi.dtype))
    return Gram(Phi, 0.5 * (inverse + inverse.T), cho_solve((chol, True), jnp.asarray(Y, Phi.dtype)), s)


def replace_column(system: Gram, i, phi_new):
    """``system`` with column ``i`` of ``Phi`` replaced by ``phi_new`` (P,), and the change of the
    collapsed log likelihood ``log p(Y | Phi)`` that the replacement makes.

    ``C' = C + U D U^T`` with ``U = sqrt(s) [phi_new, phi_i]`` (P x 2), ``D = diag(1, -1)``.  With
    ``V = C^-1 U``, ``S = D + U^T V`` (2 x 2) and ``b = U^T alpha`` (Woodbury; the determinant lemma):
    ``C'^-1 = C^-1 - V S^-1 V^T``, ``alpha' = alpha - V S^-1 b``, ``log det C' - log det C =
    log det(I + D U^T V)``, and the log likelihood changes by ``1/2 tr(b^T S^-1 b) - m/2`` times that.
    O(P^2) work in matrix-vector products; the change is computed as such, not as the difference of
    two log likelihoods of size ``P m / T_eff``."""
    m = system.alpha.shape[1]
    U = jnp.sqrt(system.s) * jnp.stack([phi_new, system.Phi[:, i]], axis=1)
    V = system.inverse @ U
    M = U.T @ V
    det_lemma = (1.0 + M[0, 0]) * (1.0 - M[1, 1]) + M[0, 1] * M[1, 0]  # det(I + D M) = -det S
    S_inverse = jnp.array([[M[1, 1] - 1.0, -M[0, 1]], [-M[1, 0], 1.0 + M[0, 0]]]) / -det_lemma
    b = U.T @ system.alpha
    S_inverse_b = S_inverse @ b
    delta = 0.5 * jnp.sum(b * S_inverse_b) - 0.5 * m * jnp.log(det_lemma)
    inverse = system.inverse - V @ (S_inverse @ V.T)
    new = system._replace(Phi=system.Phi.at[:, i].set(phi_new), inverse=0.5 * (inverse + inverse.T),
                          alpha=system.alpha - V @ S_inverse_b)
    return new, delta


class Field(NamedTuple):
    """What the proposal reads from a state: the readout's conditional mean ``mu`` (N x m) and the
    residual ``Y - Phi mu / N^g`` (P x m)."""

    mean: jnp.ndarray  # (N, m)
    residual: jnp.ndarray  # (P, m)


def field_of(gram: Gram, sigma_a2, T_eff, scale) -> Field:
    """The readout's conditional mean ``mu = sigma_a2 Phi^T alpha / N^g`` and the residual
    ``Y - Phi mu / N^g = Y - s Phi Phi^T alpha = T_eff alpha`` (``alpha = C^-1 Y``)."""
    return Field(sigma_a2 * (gram.Phi.T @ gram.alpha) / scale, T_eff * gram.alpha)


def without_neuron(field: Field, phi_i, i, scale) -> Field:
    """The field seen by neuron ``i``'s replacement: the residual of the network without neuron
    ``i`` (its activations ``phi_i`` (P,) at its readout's conditional mean, ``R + phi_i mu_i^T /
    N^g``), the cavity field.

    Why.  The move replaces neuron ``i``; a residual that still holds it proposes a neuron for a
    network in which ``i`` does the work already, so the proposed neurons under-fit by one neuron's
    contribution, ``|a|^2 phi / (N T)`` per input (O(1) at T = 0.01), summed over P inputs.
    Measured at the end of 6,000 steps of the toy task (N = P = 100, T = 0.01, y- = -1/2, a move
    every 5th step; 400 proposals at one state): mean acceptance 3.5e-10 with the full residual and
    0.22 with the cavity's for tanh, 0.015 and 0.15 for the sigmoid.  Any state-dependent
    proposal keeps the move exact: the reverse density uses the new state's own cavity field."""
    residual = field.residual + phi_i[:, None] * field.mean[i][None, :] / scale
    return field._replace(residual=residual)


def tilt_at(field: Field, readout, scale, T_eff):
    """The one-neuron conditional's tilt at the readout ``readout`` (m,): ``alpha = R readout /
    (N^g T_eff)`` (P,), ``beta = |readout|^2 / (2 N^2g T_eff)`` (THEORY.md 1.2)."""
    return field.residual @ readout / (scale * T_eff), jnp.sum(readout**2) / (2.0 * scale**2 * T_eff)


class Components(NamedTuple):
    """The mixture's components, drawn independently of the state (so that every draw indexes a valid
    Metropolis-Hastings kernel, and the reverse move uses the same draw): ``K`` distinct neurons other
    than the moved one, and a sign per component.  A component of sign -1 takes its neuron's readout
    reflected, ``-mu_j``, and starts Newton from ``-h_j``: it proposes the complement of ``j``'s code
    (for the sigmoid ``phi(-h) = 1 - phi(h)``).

    Why the reflection: built from the other neurons' readouts alone, the mixture proposes only codes
    that other neurons hold, so the last neuron of a code could never leave it (the reverse move, which
    would recreate the code, has no component near it).  On MNIST (digits 0-2, N = P = 100, T = 0.01)
    exactly one neuron stayed in each single-class code in all six chains, against a theory mass of
    3e-7 (README "Mixing").  The single-class codes are the complements of the two-class codes, which
    the posterior holds, so the reflected components give the reverse move its component.

    Their weight: together ``REFLECTED_WEIGHT`` of the mixture.  A reflected proposal is mostly
    rejected (it offers a code the posterior does not hold), so at equal weights a quarter of the
    moves were wasted and the y- = 0.45 bracketing (a slow test) no longer met within 0.01 in 300k
    steps (0.040 against 0.025); in the reverse density the small weight costs only
    ``log(1/4 / REFLECTED_WEIGHT)`` nats against equal weights.

    Outlier components (``[sampler] outlier_moves = true``; ``mass > 0``).  Below a class's critical
    temperature a non-lazy ReLU network condenses: a few outlier neurons carry readouts far above
    the bulk's (THEORY.md 1.5b).  Where no neuron is one yet, every other neuron's readout is of the
    bulk's size and none builds the conditional of a neuron that would start one, so outliers
    nucleated only through Langevin, slowly near the transition (README "Open disagreements", the
    ReLU sparse-code transition).  An outlier component builds the tilt at a readout of norm
    ``sqrt(N mass)`` along the residual ``R_mu`` of a training input ``mu`` (uniform): a neuron
    coding that input's class coherently, the seed of an outlier, which Langevin then grows.  The
    masses are seeds, not grown outliers: on the ReLU toy task at T = 0.7, N = P = 100, 2,000 steps
    from prior draws (no outlier yet), a bulk neuron is replaced by a class-0 proposal at mass
    0.003 / 0.01 / 0.03 with probability 0.93 / 0.09-0.14 / 2e-4-0.03, and at 0.1 (``|a|^2 = 10``)
    2e-5-2e-9; a grown outlier (|a|^2 about 20 at T = 0.6) proposed whole was never accepted
    (log ratios -35 to -125: a factorised proposal over 50 coherent preactivations is far from the
    neuron's conditional).  ``OUTLIER_COMPONENTS`` of them share ``OUTLIER_WEIGHT``; each starts
    Newton (Laplace proposal) from a further neuron's preactivations."""

    neurons: jnp.ndarray  # (K,) int
    signs: jnp.ndarray  # (K,) +-1
    log_weights: jnp.ndarray  # (K,) log mixture weights, summing to one
    inputs: jnp.ndarray  # (K,) int: the training input whose residual an outlier component follows
    masses: jnp.ndarray  # (K,) |a|^2 / N of an outlier component's readout; 0: a neuron's readout


def draw_components(key, N: int, i, mixture_size: int, dtype, outliers: int = 0, P: int = 1) -> Components:
    k_neurons, k_signs = jax.random.split(key)
    others = jax.random.choice(k_neurons, N - 1, (mixture_size,), replace=False)
    reflected = jax.random.uniform(k_signs, (mixture_size,)) < REFLECTED_SHARE
    n_reflected = jnp.sum(reflected)
    both = (n_reflected > 0) & (n_reflected < mixture_size)
    weight = jnp.where(reflected, REFLECTED_WEIGHT / jnp.maximum(n_reflected, 1),
                       (1.0 - REFLECTED_WEIGHT) / jnp.maximum(mixture_size - n_reflected, 1))
    weight = jnp.where(both, weight, 1.0 / mixture_size)
    signs = jnp.where(reflected, -1.0, 1.0)
    inputs = jnp.zeros(mixture_size, jnp.int32)
    masses = jnp.zeros(mixture_size)
    if outliers:  # from a key of their own: without them the components are drawn as before
        k_starts, k_inputs, k_masses = jax.random.split(jax.random.fold_in(key, 1), 3)
        others = jnp.concatenate([others, jax.random.randint(k_starts, (outliers,), 0, N - 1)])
        weight = jnp.concatenate([(1.0 - OUTLIER_WEIGHT) * weight,
                                  jnp.full(outliers, OUTLIER_WEIGHT / outliers)])
        signs = jnp.concatenate([signs, jnp.ones(outliers)])
        inputs = jnp.concatenate([inputs, jax.random.randint(k_inputs, (outliers,), 0, P)])
        ladder = jnp.asarray(OUTLIER_MASSES)
        masses = jnp.concatenate([masses, ladder[jax.random.randint(k_masses, (outliers,), 0, len(ladder))]])
    return Components(others + (others >= i), signs.astype(dtype), jnp.log(weight).astype(dtype),
                      inputs, masses.astype(dtype))


def component_tilt(field: Field, components: Components, k, scale, T_eff):
    """Component ``k``'s tilt: at ``s_j mu_j``, or for an outlier component (``mass > 0``) at the
    readout of norm ``sqrt(N mass)`` along the residual of its training input, ``R_mu / |R_mu|``."""
    N = field.mean.shape[0]
    r = field.residual[components.inputs[k]]
    direction = r / jnp.maximum(jnp.sqrt(jnp.sum(r**2)), jnp.finfo(r.dtype).tiny)
    mass = components.masses[k]
    readout = jnp.where(mass > 0, jnp.sqrt(N * mass) * direction,
                        components.signs[k] * field.mean[components.neurons[k]])
    return tilt_at(field, readout, scale, T_eff)


def component_start(H, components: Components, k):
    """Where component ``k``'s Newton starts: ``s_j h_j``."""
    return components.signs[k] * H[:, components.neurons[k]]


def mixture_log_pdf(x, H, field: Field, components: Components, proposal: Proposal, scale, T_eff):
    """log q(x | state): the mixture of the ``components`` (K) with their weights."""
    def one(k):
        return proposal.log_pdf(x, component_tilt(field, components, k, scale, T_eff),
                                component_start(H, components, k))

    # The grid components in one vmap; the Laplace components one after another (lax.map).  Grid:
    # at N = P = 500 (16 components of 500 inputs x 256 grid points, float32, two quiet cores) the
    # mixture's density alone took 42 ms with lax.map and 7.9 ms with vmap (one chain, jitted); in
    # the driver's 4-chain chunk the move's cost did not change measurably (README "Mixing").
    # Laplace: with its components vmapped (a batch of Cholesky factorisations and triangular solves
    # inside the driver's cond and scan) XLA:CPU deadlocked in 5 of 5 runs of 6,000 steps (jax
    # 0.10.2; every thread idle, the computation never completing); with lax.map, 0 of 4.  The cause
    # is XLA:CPU's concurrency-optimised scheduler, now off (widebayes/__init__.py: with it off, the
    # vmapped components finished 4 of 4 runs); lax.map stays there, at no measured cost.
    indices = jnp.arange(components.neurons.shape[0])
    values = jax.vmap(one)(indices) if proposal.vectorised else jax.lax.map(one, indices)
    return jax.scipy.special.logsumexp(components.log_weights + values)


class Move(NamedTuple):
    """One neuron move: the next state (preactivations ``H``, the moved neuron's coordinate ``x`` and
    the :class:`Gram` system), whether the proposal was accepted, and the log Metropolis-Hastings
    ratio."""

    H: jnp.ndarray
    x: jnp.ndarray
    gram: Gram
    accepted: jnp.ndarray
    log_ratio: jnp.ndarray


def move_in(key, gram: Gram, H, x, i, *, phi, proposal: Proposal, sigma_a2, T_eff, gamma,
            mixture_size: int = MIXTURE_SIZE, outliers: int = 0) -> Move:
    """One neuron move of neuron ``i`` at the state ``(H, gram)``, whose coordinate is ``x``
    (``proposal.preactivations(x)`` is ``H[:, i]``); ``outliers``: how many outlier components join
    the mixture.  The proposed state's field and log likelihood come from ``gram`` by a rank-two
    update (:func:`replace_column`), no factorisation."""
    k_components, k_pick, k_draw, k_accept = jax.random.split(key, 4)
    P, N = H.shape
    scale = jnp.asarray(N, H.dtype) ** gamma
    components = draw_components(k_components, N, i, mixture_size, H.dtype, outliers, P)
    cavity = without_neuron(field_of(gram, sigma_a2, T_eff, scale), gram.Phi[:, i], i, scale)
    pick = jax.random.categorical(k_pick, components.log_weights)
    x_new = proposal.sample(k_draw, component_tilt(cavity, components, pick, scale, T_eff),
                            component_start(H, components, pick))
    h_new = proposal.preactivations(x_new)
    H_new = H.at[:, i].set(h_new)
    gram_new, loglik_change = replace_column(gram, i, phi(h_new))
    cavity_new = without_neuron(field_of(gram_new, sigma_a2, T_eff, scale), gram_new.Phi[:, i], i, scale)
    log_ratio = (loglik_change + proposal.prior_logpdf(x_new) - proposal.prior_logpdf(x)
                 + mixture_log_pdf(x, H_new, cavity_new, components, proposal, scale, T_eff)
                 - mixture_log_pdf(x_new, H, cavity, components, proposal, scale, T_eff))
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accepted = jnp.log(jax.random.uniform(k_accept, (), H.dtype)) < log_ratio
    kept = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), gram_new, gram)
    return Move(jnp.where(accepted, H_new, H), jnp.where(accepted, x_new, x), kept, accepted, log_ratio)


def propose_and_accept(key, H, x, i, Y, *, phi, sigma_a2, T_eff, gamma, **kw) -> Move:
    """:func:`move_in` from a fresh factorisation at ``H`` (one move on its own)."""
    return move_in(key, gram_of(H, Y, phi, sigma_a2, T_eff, gamma), H, x, i, phi=phi, sigma_a2=sigma_a2,
                   T_eff=T_eff, gamma=gamma, **kw)


def sweep(key, H, coordinates, Y, moves: int, *, phi, proposal: Proposal, sigma_a2, T_eff, gamma, **kw):
    """``moves`` neuron moves one after another, each of a neuron drawn uniformly, sharing one
    factorisation (:class:`Gram`, updated by rank two after each accepted move).  ``coordinates``
    (N, ...): row ``i`` is neuron ``i``'s coordinate.  Returns ``(H, coordinates, gram, accepted)``,
    ``accepted`` (moves,) per move.  Each move is an exact Metropolis-Hastings move of the collapsed
    posterior of ``H``, so their sequence is one too."""
    N = H.shape[1]

    def one(carry, move_key):
        H, coordinates, gram = carry
        k_neuron, k_move = jax.random.split(move_key)
        i = jax.random.randint(k_neuron, (), 0, N)
        move = move_in(k_move, gram, H, coordinates[i], i, phi=phi, proposal=proposal, sigma_a2=sigma_a2,
                       T_eff=T_eff, gamma=gamma, **kw)
        return (move.H, coordinates.at[i].set(move.x), move.gram), move.accepted

    start = (H, coordinates, gram_of(H, Y, phi, sigma_a2, T_eff, gamma))
    # Unrolled: as a loop (lax.scan) inside the driver's cond and scan, 4 chains at N = P = 500 hung
    # XLA:CPU within 100 steps in 4 of 4 runs (jax 0.10.2; every thread idle, with or without
    # XNNPACK); unrolled, 5 short runs (100-400 steps) finished and one long one (8,000 steps) hung
    # after about 6 minutes, as single moves did before sweeps existed (README "Mixing").
    # widebayes.config.MAX_NEURON_SWEEP bounds the compile time.
    (H, coordinates, gram), accepted = jax.lax.scan(one, start, jax.random.split(key, moves), unroll=True)
    return H, coordinates, gram, accepted


# ----------------------------------------------------------------------------- on the network
def check_applicable(exp, cfg: dict) -> str:
    """Refuse, with one line, the runs the move does not cover (the key is ``sampler.neuron_moves``);
    otherwise name the proposal: ``"grid"`` for one hidden layer on orthogonal inputs with
    ``|x|^2 = N0`` (the preactivations i.i.d. under the prior), ``"laplace"`` for any other."""
    key = "sampler.neuron_moves"
    if exp.model != "network_prior" or exp.spec.tied_weights:
        raise InputError("neuron moves act on the feature layer of network_prior (untied weights)", key=key)
    if cfg["kind"] not in ("langevin", "mala") or cfg["replica_exchange"]:
        raise InputError("neuron moves combine with kind = \"langevin\" or \"mala\" (no replica exchange)",
                         key=key)
    if exp.reduction is not None or exp.frozen:
        raise InputError("neuron moves need the full network (no reduce_inputs, no frozen blocks)", key=key)
    if exp.spec.width < MIXTURE_SIZE + 1:
        raise InputError(f"neuron moves need at least {MIXTURE_SIZE + 1} neurons", key=key)
    if exp.spec.depth > 1:
        return "laplace"
    X = np.asarray(exp.data.X_train, dtype=np.float64)
    orthogonal = np.allclose(X @ X.T / X.shape[1], np.eye(len(X)), atol=1e-6)
    return "grid" if orthogonal else "laplace"


def network_move(rng_key, position: dict, data: dict, hyper: dict, T_eff, *, collapsed: bool, proposal: str,
                 outliers: int = 0, moves: int = 1):
    """The driver's move (``RunSetup.move``): a :func:`sweep` of ``moves`` neuron moves of the feature
    layer (layer L) on the whitened position, the layers below held fixed.

    Returns ``(position, accepted)``, ``accepted`` the share of the sweep's moves accepted.  The
    feature layer's preactivations are ``H = U W_L^T / sqrt(n)`` with ``U`` the inputs (L = 1,
    ``n = N0``) or the activations of layer L - 1 (``n = N``).  The grid proposal moves ``H[:, i]``
    and changes ``W_L[i]`` by the minimum-norm ``U^T dh / sqrt(n)`` (orthogonal inputs: the part of
    the row orthogonal to the training inputs, independent of them under the prior and unseen by the
    likelihood, is kept); the Laplace proposal moves the whole row ``W_L[i]``.  With the joint
    readout the readout is redrawn from its exact conditional after a sweep in which a move was
    accepted.  ``outliers``: outlier components in the mixture (``[sampler] outlier_moves``,
    :class:`Components`).
    """
    spec = hyper["model"]["spec"]
    roots = hyper["roots"]
    X, Y = data["X_train"], data["Y_train"]
    params = {name: x * roots[name] for name, x in position.items()}
    name = f"W{spec.depth}"
    phi = get_activation(spec.activation).phi
    U = X if spec.depth == 1 else phi(hidden_layers(params, X, spec)[-2])
    W = params[name]
    root_n = jnp.sqrt(jnp.asarray(U.shape[1], W.dtype))
    A = U / root_n
    H = A @ W.T
    sigma2 = spec.sigma_w2[spec.depth - 1]
    k_sweep, k_readout = jax.random.split(rng_key)
    kw = dict(phi=phi, sigma_a2=spec.sigma_a2, T_eff=T_eff, gamma=spec.gamma, outliers=outliers)
    if proposal == "grid":
        H_next, _, gram, accepted = sweep(k_sweep, H, H.T, Y, moves,
                                          proposal=grid_proposal(phi, sigma2, W.dtype), **kw)
        W_next = W + (A.T @ (H_next - H)).T  # A A^T = I: each row changes by X^T dh / sqrt(N0)
    else:
        _, W_next, gram, accepted = sweep(k_sweep, H, W, Y, moves, proposal=laplace_proposal(phi, A, sigma2),
                                          **kw)
    out = {**position, name: W_next / roots[name]}
    if not collapsed:  # the readout's conditional from a fresh factorisation (one per sweep)
        drawn = draw_readout(k_readout, readout_conditional(gram.Phi, Y, spec.sigma_a2, T_eff, spec.gamma))
        out["a"] = jnp.where(jnp.any(accepted), drawn, params["a"]) / roots["a"]
    return out, jnp.mean(accepted.astype(W.dtype))
