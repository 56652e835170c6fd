"""Exact reduction of the first layer to the span of the training inputs (issue 13, item 7).

The first layer enters the likelihood only through ``X_train W1^T``.  When the input dimension
``N0`` exceeds the rank ``r`` of ``X_train`` (MNIST, ``N0 = 784``, with ``P = 20 ... 200``), the
part of ``W1`` orthogonal to the training inputs never meets the data: under the isotropic prior
it is a Gaussian (Ornstein-Uhlenbeck) process that the sampler need not move.  This module holds
the bases, the projections and that process's exact ``k``-step transition; the driver's side of
it (the state carried per chain, advanced at recorded draws) is in :mod:`widebayes.experiment`.

Bases
-----
``X_train`` (P x N0) has the SVD ``X_train = A S B^T``; the first ``r`` columns of ``B`` (those of
the singular values above ``max(P, N0) eps s_max``, the rank rule of ``numpy.linalg.matrix_rank``)
form ``Q`` (N0 x r), an orthonormal basis of the row space, computed on the host in float64.
A test set ``X_test`` (P' x N0) splits as ``X_test^T = Q Q^T X_test^T + (I - Q Q^T) X_test^T``;
``R`` (N0 x q) is an orthonormal basis of the second term's column space (same rank rule,
relative to the largest singular value of ``X_test``), so ``Q^T R = 0`` and

    X_test = (X_test Q) Q^T + (X_test R) R^T.                                            (1)

Split of the first layer
------------------------
With ``Q_perp`` (N0 x (N0 - r)) completing ``Q`` to an orthonormal basis, write
``W1 = U Q^T + Z Q_perp^T``, ``U = W1 Q`` (N x r), ``Z = W1 Q_perp``, ``W_perp = Z Q_perp^T``.
Then

* likelihood: ``X_train W1^T = X_train Q U^T`` (``X_train Q_perp = 0``), so
  ``z1 = X_train W1^T / sqrt(N0) = (X_train Q) U^T / sqrt(N0)``: the network on the reduced
  inputs ``X_train Q`` with the **same** ``1/sqrt(N0)`` scaling;
* prior: ``||W1||_F^2 = ||U||_F^2 + ||Z||_F^2``, so ``W1_ij ~ N(0, sigma^2)`` iid makes ``U`` and
  ``Z`` independent with iid ``N(0, sigma^2)`` entries (rotation invariance);
* hence ``log p(W1, rest | D) = log p_r(U, rest | D) + log N(Z; 0, sigma^2 I)`` exactly, where
  ``p_r`` is the same model with ``W1`` of shape (N, r) on the inputs ``X_train Q``.

The potential is separable, and so is the sampler's step.  The driver runs Euler-Maruyama on
whitened coordinates ``W' = W1 / sqrt(M)`` (M the block's preconditioner): in unwhitened units
``W1 <- W1 + eps M grad_W1 log p + sqrt(2 eps M) Xi`` with ``Xi`` iid ``N(0, 1)``.  Multiplying
on the right by ``Q`` and by ``Q_perp`` (``grad_W1 log p Q = grad_U log p_r``; ``Xi Q`` and
``Xi Q_perp`` are independent with iid ``N(0, 1)`` entries, as ``[Q, Q_perp]`` is orthogonal):

    U <- U + eps M grad_U log p_r + sqrt(2 eps M) Xi_U          (the same sampler on p_r)
    Z <- (1 - a) Z + sqrt(2 eps M) Xi_Z,    a = eps M / sigma^2  (prior only, no data)     (2)

So the reduced run moves the ``N x r`` block ``U`` with the ordinary sampler, and every entry of
``Z`` is an independent AR(1) process (2), whatever the temperature or annealing schedule (the
prior is not tempered).

The AR(1) process, exactly
--------------------------
With ``rho = 1 - a``, ``k`` steps of (2) give ``x_k = rho^k x_0 + sqrt(2 eps M) sum_{j<k}
rho^j xi_j``, an exact Gaussian transition:

    E[x_k | x_0] = rho^k x_0,
    Var[x_k | x_0] = 2 eps M (1 - rho^(2k)) / (1 - rho^2) = s^2 (1 - rho^(2k)),            (3)
    s^2 = 2 eps M / (a (2 - a)) = sigma^2 / (1 - a / 2)        (stationary, for 0 < a < 2).

``s^2`` is not ``sigma^2``: it carries the ``O(eps)`` bias ``sigma^2 (a/2 + a^2/4 + ...)`` of the
Euler step, exactly as the orthogonal part of an unreduced run does, so the reduced run equals
the full run in distribution, step bias included.  Composition is exact: the ``k1``-step
transition followed by the ``k2``-step one is the ``(k1 + k2)``-step transition, so the state
can be advanced lazily, only when an observable needs it.  ``a >= 2`` makes (2) unstable (the
full run diverges there too).  For ``1 < a < 2``, ``rho < 0`` and (3) holds with ``rho^k``
alternating in sign.

Test inputs
-----------
By (1), ``X_test W1^T = (X_test Q) U^T + (X_test R) (W1 R)^T`` and ``W1 R = W_perp R =: V``
(N x q), because ``Q^T R = 0``.  ``V = Z (Q_perp^T R)`` with ``Q_perp^T R`` (N0 - r) x q and
orthonormal columns (``R = Q_perp Q_perp^T R``), so the entries of ``V`` are again iid
independent AR(1) processes (2).  The reduced run carries ``V`` per chain (a prior draw at the
start, like ``U``), advances it by (3) over the steps since the last recorded draw, and forms
``z1_test = [X_test Q, X_test R] [U, V]^T / sqrt(N0)``.  The input kernel keeps its definition
``K_0 = X X^T / N0``: ``X_train Q (X_train Q)^T = X_train X_train^T`` and
``[X_test Q, X_test R] [X_test Q, X_test R]^T = X_test X_test^T`` by (1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class InputBasis(NamedTuple):
    """Orthonormal bases of the training inputs' row space and of the test inputs' rest."""

    Q: np.ndarray  # (N0, r): row space of X_train
    R: np.ndarray  # (N0, q): column space of (I - Q Q^T) X_test^T

    @property
    def input_dim(self) -> int:
        return self.Q.shape[0]

    @property
    def rank(self) -> int:
        return self.Q.shape[1]

    @property
    def test_rank(self) -> int:
        return self.R.shape[1]


def _range_basis(M: np.ndarray, scale: float) -> np.ndarray:
    """Orthonormal basis of the column space of ``M`` (float64 SVD, numpy's rank rule at ``scale``)."""
    if M.size == 0:
        return np.zeros((M.shape[0], 0))
    left, s, _ = np.linalg.svd(M, full_matrices=False)
    tol = max(M.shape) * np.finfo(np.float64).eps * scale
    return left[:, s > tol]


def input_basis(X_train, X_test=None) -> InputBasis:
    """``Q`` (N0 x r) spanning the rows of ``X_train`` and ``R`` (N0 x q) spanning the rest of ``X_test``.

    Parameters
    ----------
    X_train : array_like, shape (P, N0)
    X_test : array_like, shape (P', N0), optional

    Returns
    -------
    InputBasis
        ``Q^T Q = I_r``, ``R^T R = I_q``, ``Q^T R = 0`` and Eq. (1) of the module docstring.
    """
    X = np.asarray(X_train, dtype=np.float64)
    norm = np.linalg.norm(X, 2) if X.size else 0.0
    Q = _range_basis(X.T, norm)
    if X_test is None or len(X_test) == 0:
        return InputBasis(Q, np.zeros((X.shape[1], 0)))
    Xt = np.asarray(X_test, dtype=np.float64)
    rest = Xt.T - Q @ (Q.T @ Xt.T)
    R = _range_basis(rest, max(np.linalg.norm(Xt, 2), norm))
    return InputBasis(Q, R)


def reduced_inputs(basis: InputBasis, X_train, X_test=None):
    """``X_train Q`` (P x r) and ``[X_test Q, X_test R]`` (P' x (r + q)): Eq. (1), float64."""
    train = np.asarray(X_train, dtype=np.float64) @ basis.Q
    if X_test is None or len(X_test) == 0:
        return train, None
    Xt = np.asarray(X_test, dtype=np.float64)
    return train, np.concatenate([Xt @ basis.Q, Xt @ basis.R], axis=1)


def split_first_layer(W1, basis: InputBasis):
    """``(U, V) = (W1 Q, W1 R)``: the in-span part and the part the test inputs see outside it."""
    W1 = np.asarray(W1, dtype=np.float64)
    return W1 @ basis.Q, W1 @ basis.R


def observation_view(U, V, X_train_reduced):
    """First layer ``[U, V]`` and training inputs ``[X_train Q, 0]``, both ``r + q`` wide.

    In this view the training and the reduced test inputs ``[X_test Q, X_test R]`` share one
    first layer: ``[X_train Q, 0] [U, V]^T = X_train Q U^T`` and Eq. (1) for the test inputs.
    """
    pad = jnp.zeros((X_train_reduced.shape[0], V.shape[-1]), X_train_reduced.dtype)
    return jnp.concatenate([U, V], axis=-1), jnp.concatenate([X_train_reduced, pad], axis=-1)


# ----------------------------------------------------------------------------------- AR(1)
def decay_per_step(step_size, M, prior_variance):
    """``a = eps M / sigma^2``: one Euler step multiplies the orthogonal part by ``rho = 1 - a``."""
    return step_size * M / prior_variance


def stationary_variance(a, prior_variance):
    """``s^2 = sigma^2 / (1 - a/2)``: the stationary variance of the Euler recursion (2), ``0 < a < 2``."""
    return prior_variance / (1.0 - a / 2.0)


def transition_moments(num_steps, a, prior_variance):
    """Mean factor ``rho^k`` and variance ``s^2 (1 - rho^(2k))`` of ``k`` steps of Eq. (2), Eq. (3).

    Written with ``log|rho|`` (``expm1`` for ``1 - rho^(2k)``), accurate when ``a`` is small and
    ``k`` large or small; ``rho < 0`` (``1 < a < 2``) alternates the sign of ``rho^k``.
    """
    rho = 1.0 - a
    log_abs = jnp.log(jnp.abs(rho))
    steps = jnp.asarray(num_steps)
    k = steps.astype(jnp.result_type(a, float))
    sign = jnp.where((rho < 0) & (steps % 2 == 1), -1.0, 1.0)
    mean_factor = jnp.where(steps == 0, 1.0, sign * jnp.exp(k * log_abs))  # k = 0 with rho = 0: 0^0 = 1
    variance = stationary_variance(a, prior_variance) * -jnp.expm1(2.0 * k * log_abs)
    variance = jnp.where(steps == 0, 0.0, variance)
    return mean_factor, variance


def advance(rng_key, x, num_steps, a, prior_variance):
    """``x`` after ``num_steps`` steps of Eq. (2), drawn exactly from Eq. (3) (iid entries)."""
    mean_factor, variance = transition_moments(num_steps, a, prior_variance)
    xi = jax.random.normal(rng_key, x.shape, x.dtype)
    return (mean_factor * x + jnp.sqrt(variance) * xi).astype(x.dtype)
