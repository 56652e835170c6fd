"""Representational drift: singular vectors of activation matrices over Langevin time.

The perspective paper ("Representational Drift", Fig. 8) tracks the top singular vectors of the
feature-layer activation matrix ``Phi_t = phi(h_t(X)) (N, P)`` along a Langevin run: ``u(t)`` in
example space (``R^P``; ``u u^T`` is the top eigencomponent of the kernel ``Phi^T Phi / N``) and
``v(t)`` in neuron space (``R^N``).  Learning keeps ``u`` aligned with the labels while ``v``
drifts.  Definitions follow THEORY.md 6.3:

* ``rho_u(tau) = <|u(t+tau).u(t)|>_t``, ``rho_v(tau)`` likewise, ``rho_{u,Y} = <|u(t).Y|>_t/|Y|``;
  the absolute value makes them invariant to the SVD sign ambiguity ``(u, v) -> (-u, -v)``;
* the top-k subspace overlap ``||U_k(t+tau)^T U_k(t)||_F^2 / k`` removes the sign and the
  near-degeneracy ambiguities together;
* compare with the random-vector baseline ``E|u.u'| ~ sqrt(2/(pi dim))``, not with 0.

Time is Langevin time in the paper's units, ``dtheta = -grad L dt + T grad log P0 dt +
sqrt(2T) dB``; the prior alone is an Ornstein-Uhlenbeck process with relaxation time
``sigma^2 / T`` (helpers at the end, used to check integrators and the temperature convention).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy.special import gammaln


class Singular(NamedTuple):
    """Top-k singular triplets of ``Phi (N, P) = sum_k s_k v_k u_k^T`` (leading axes broadcast)."""

    u: np.ndarray  # (..., k, P) example space
    v: np.ndarray  # (..., k, N) neuron space
    s: np.ndarray  # (..., k) descending


def _warn_degenerate(s, k, tol=1e-3):
    """Warn when ``s_k`` and ``s_{k+1}`` are too close for the k-th vectors to be defined."""
    if s.shape[-1] > k:
        gap = (s[..., k - 1] - s[..., k]) / np.where(s[..., k - 1] > 0, s[..., k - 1], 1.0)
        if np.any(gap < tol):
            warnings.warn(
                f"near-degenerate singular values (relative gap < {tol}) make u_{k}, v_{k} ill-defined; "
                "prefer subspace_autocorr",
                RuntimeWarning,
                stacklevel=3,
            )


def singular_series(Phis, k=1, center=False) -> Singular:
    """Top-k singular vectors of each activation matrix in a series ``Phis (..., N, P)``.

    Parameters
    ----------
    Phis : array_like, shape (..., N, P)
        Activation matrices, neurons x inputs (e.g. (T, N, P) over stored draws).
    k : int
        Number of leading singular triplets.
    center : bool
        Subtract each neuron's mean over the inputs first, which removes the uniform "DC" mode
        that dominates uncentred ReLU-type activations (THEORY 6.3).

    Returns
    -------
    Singular
        ``u (..., k, P)``, ``v (..., k, N)``, ``s (..., k)``.  A RuntimeWarning flags a relative
        gap ``(s_k - s_{k+1})/s_k < 1e-3``.
    """
    Phi = np.asarray(Phis, dtype=np.float64)
    if center:
        Phi = Phi - Phi.mean(axis=-1, keepdims=True)
    left, s, right = np.linalg.svd(Phi, full_matrices=False)
    _warn_degenerate(s, k)
    return Singular(right[..., :k, :], np.swapaxes(left[..., :, :k], -1, -2), s[..., :k])


def top_singular(Phi, k=1, center=False) -> Singular:
    """Top-k singular triplets of one activation matrix ``Phi (N, P)``; see :func:`singular_series`."""
    return singular_series(Phi, k, center)


def _as_series(X) -> np.ndarray:
    """A series of vectors as ``(T, k, d)``: ``(T, d)`` becomes ``(T, 1, d)``."""
    X = np.asarray(X, dtype=np.float64)
    return X[:, None, :] if X.ndim == 2 else X


def autocorr(X, max_lag, absval=True) -> np.ndarray:
    """Lagged overlap ``rho(tau) = <|x(t+tau).x(t)|>_t`` of unit vectors, per component (THEORY 6.3).

    Vectors are normalised first (cosines), and the average runs over all start times ``t``
    (stationarity), so ``rho(0) = 1``.

    Parameters
    ----------
    X : array_like, shape (T, k, d) or (T, d)
        A time series of k vectors (e.g. ``Singular.u`` over draws).
    max_lag : int
        Largest lag, ``< T``.
    absval : bool
        Take ``|.|`` (sign-invariant; default).  Without it, fix signs beforehand.

    Returns
    -------
    ndarray, shape (max_lag + 1, k)
    """
    X = _as_series(X)
    X = X / np.linalg.norm(X, axis=-1, keepdims=True)
    f = np.abs if absval else (lambda z: z)
    lagged = (np.sum(X[lag:] * X[: len(X) - lag], axis=-1) for lag in range(max_lag + 1))
    return np.stack([f(dots).mean(axis=0) for dots in lagged])


def subspace_autocorr(U, max_lag) -> np.ndarray:
    """Top-k subspace overlap ``<||U(t+tau) U(t)^T||_F^2>_t / k`` (THEORY 6.3).

    Invariant to signs and to rotations within the subspace; 1 at lag 0, ``k/d`` on average for
    independent random subspaces.

    Parameters
    ----------
    U : array_like, shape (T, k, d)
        Orthonormal rows at each time.

    Returns
    -------
    ndarray, shape (max_lag + 1,)
    """
    U = _as_series(U)
    k = U.shape[1]
    lagged = (U[lag:] @ np.swapaxes(U[: len(U) - lag], -1, -2) for lag in range(max_lag + 1))
    return np.array([np.mean(np.sum(overlap**2, axis=(-2, -1))) / k for overlap in lagged])


def label_alignment(U, Y, average=True) -> np.ndarray:
    """Alignment of example-space vectors with the labels, ``rho_{u,Y} = <|u(t).Y|>_t / |Y|``.

    For several outputs ``Y (P, m)`` it is the norm of the projection of ``u`` on the span of
    ``Y`` (the same number for ``m = 1``).  Perspective paper, Fig. 8B; THEORY 6.3.

    Parameters
    ----------
    U : array_like, shape (T, k, P) or (T, P)
    Y : array_like, shape (P,) or (P, m)
    average : bool
        Average over time (default) or return the series.

    Returns
    -------
    ndarray, shape (k,) or (T, k)
    """
    U = _as_series(U)
    U = U / np.linalg.norm(U, axis=-1, keepdims=True)
    Y = np.asarray(Y, dtype=np.float64)
    Q, _ = np.linalg.qr(Y[:, None] if Y.ndim == 1 else Y)
    rho = np.linalg.norm(U @ Q, axis=-1)
    return rho.mean(axis=0) if average else rho


class DriftOverlaps(NamedTuple):
    """The perspective's drift measures of one activation series, averaged over chains."""

    rho_u: np.ndarray  # (max_lag + 1,) top right singular vector (example space)
    rho_v: np.ndarray  # (max_lag + 1,) top left singular vector (neuron space)
    rho_uY: float  # alignment of u with the targets


def drift_overlaps(Phis, Y, max_lag, center=False) -> DriftOverlaps:
    """``rho_u(tau)``, ``rho_v(tau)`` and ``rho_{u,Y}`` of the top singular vectors of
    ``Phis (chain, T, N, P)``, each chain's time average then the mean over chains (THEORY.md 6.3).

    The perspective paper (Fig. 8B, the text around Eq. 16) takes the top singular vectors of the
    raw activation matrix ``phi(h_t(X))`` (``center=False``, the default); ``center=True`` first
    removes each neuron's mean over the inputs, whose uniform "DC" mode otherwise dominates the top
    singular pair of nonnegative activations such as ReLU's (THEORY.md 6.3).

    Parameters
    ----------
    Phis : array_like, shape (chain, T, N, P)
    Y : array_like, shape (P,) or (P, m)
        Targets for ``rho_{u,Y}`` (:func:`label_alignment`).
    max_lag : int
        Largest lag in stored draws, ``< T``.
    center : bool

    Returns
    -------
    DriftOverlaps
    """
    series = [singular_series(chain, k=1, center=center) for chain in np.asarray(Phis)]
    return DriftOverlaps(np.mean([autocorr(s.u, max_lag)[:, 0] for s in series], axis=0),
                         np.mean([autocorr(s.v, max_lag)[:, 0] for s in series], axis=0),
                         float(np.mean([label_alignment(s.u, Y) for s in series])))


def random_baseline(dim, exact=True):
    """``E|u.u'|`` for independent uniformly random unit vectors in ``R^dim``.

    Exactly ``Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2))``; ``exact=False`` gives its large-d form
    ``sqrt(2/(pi d))`` (THEORY 6.3).  The floor that drift overlaps decay to.
    """
    d = np.asarray(dim, dtype=np.float64)
    if not exact:
        return np.sqrt(2.0 / (np.pi * d))
    return np.exp(gammaln(d / 2) - gammaln((d + 1) / 2)) / np.sqrt(np.pi)


def weight_overlap(W_series, W0=None) -> np.ndarray:
    """Normalised overlap ``W(t).W0 / |W0|^2`` along a series of weights (THEORY 6.3).

    Parameters
    ----------
    W_series : array_like, shape (T, ...)
        Weights at successive times (flattened per time).
    W0 : array_like, optional
        Reference, default ``W_series[0]`` (so the result starts at 1).

    Returns
    -------
    ndarray, shape (T,)
    """
    W = np.asarray(W_series, dtype=np.float64).reshape(len(W_series), -1)
    W0 = W[0] if W0 is None else np.asarray(W0, dtype=np.float64).ravel()
    return W @ W0 / (W0 @ W0)


# ------------------------------------------------------------------------ prior OU dynamics


def prior_relaxation_time(T, sigma2=1.0):
    """Relaxation time ``tau_prior = sigma^2 / T`` of a weight under the prior alone (THEORY 6.3)."""
    return sigma2 / T


def ou_overlap(tau, T, sigma2=1.0):
    """Expected ``<W(t+tau).W(t)> / <|W|^2> = exp(-tau T / sigma^2)`` of the prior OU process.

    The SDE ``dW = -(T / sigma^2) W dt + sqrt(2T) dB`` (Langevin on ``-log P0`` at temperature
    ``T``, paper time units; THEORY 6.3) has stationary variance ``sigma^2``.
    """
    return np.exp(-np.asarray(tau, dtype=np.float64) * T / sigma2)


def simulate_ou(rng, W0, T, sigma2, times) -> np.ndarray:
    """Exact samples of the prior OU process at ``times`` (increasing, ``times[0]`` is ``W0``'s).

    ``W(t + dt) = e^{-dt T/sigma^2} W(t) + sqrt(sigma^2 (1 - e^{-2 dt T/sigma^2})) xi``.

    Parameters
    ----------
    rng : numpy.random.Generator or int
    W0 : array_like
        State at ``times[0]``.
    T, sigma2 : float
        Temperature and prior variance.
    times : array_like, shape (n,)

    Returns
    -------
    ndarray, shape (n, *W0.shape)
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    W = [np.asarray(W0, dtype=np.float64)]
    for dt in np.diff(np.asarray(times, dtype=np.float64)):
        decay = np.exp(-dt * T / sigma2)
        W.append(decay * W[-1] + np.sqrt(sigma2 * (1 - decay**2)) * gen.standard_normal(W[-1].shape))
    return np.stack(W)
