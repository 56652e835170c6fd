"""Back-propagating kernel renormalisation (BPKR; Li & Sompolinsky, PRX 11, 031059 (2021)).

Lazy networks (gamma = 1/2) in the proportional limit ``P, N -> inf``, ``alpha = P / N`` fixed.
Exact for deep linear networks; a heuristic for nonlinear ones (THEORY.md 2.6).

Conventions (our parametrisation, DESIGN.md)
--------------------------------------------
``z_1 = W_1 x / sqrt(N0)``, ``z_l = W_l z_{l-1} / sqrt(N)``, ``f = a^T z_L / sqrt(N)``,
``W_l ~ N(0, sigma_l^2)``, ``a ~ N(0, sigma_a2)``, likelihood ``exp(-L / T)``.

Integrating the readout ``a`` against the Fourier variable ``t`` of the outputs gives
``(1 + sigma_a2 sigma_L^2 t^T K_{L-1} t / N)^{-N/2}`` after the next layer, and the Gamma identity
introduces ``u_L``; repeating down to ``W_1`` (THEORY.md 2.2) yields

    H(u) = sum_l (N/2)(u_l - ln u_l) + 1/2 Y^T (K_u + T)^{-1} Y + 1/2 ln det(K_u + T),
    K_u  = s (prod_l u_l) K0,     s = sigma_a2 * prod_{l=1}^L sigma_l^2,     K0 = X X^T / N0.

So every ``sigma^{2(L+1)}`` of THEORY.md 2.2 (all variances equal) reads ``s`` here.  The saddle
(equal widths, so all ``u_l = u``) is

    N (u - 1) = Y^T (K_u+T)^{-1} K_u (K_u+T)^{-1} Y - Tr[(K_u+T)^{-1} K_u],
    T = 0:  u^L (u - 1 + alpha) = alpha r0 / s,   r0 = Y^T K0^{-1} Y / P.

Meaning of u.  ``Z(sigma_a2)`` depends on ``sigma_a2`` only through ``K_u``; the envelope theorem at
the saddle gives ``<|a|^2> / N = sigma_a2 * u`` (for m outputs ``<a^T a> / N = sigma_a2 U``, the
``m x m`` readout second moment per neuron).  At ``alpha -> 0``, ``u -> 1`` (the NNGP).  The
perspective paper (section "Finite Width Kernel Renormalization") writes ``u_0 = sigma^2 u`` (its
layer kernels carry the sigma^2, Eq. 10) and ``u_0 = (1-alpha) sigma^2 + sigma^2 Y^T K~^{-1} Y / P``;
our derivation (and the Langevin check of THEORY.md 3.5.3) has ``/ N`` in place of ``/ P``.

m outputs (THEORY.md 2.4): ``H = sum_l (N/2)[Tr U_l - ln det U_l] + 1/2 vec(Y)^T (s M (x) K0 + T)^{-1}
vec(Y) + 1/2 ln det(...)``; we take all ``U_l = U`` and ``M = U^L`` (exact at T = 0 and whenever the
data directions decouple; for L = 1 exact at any T; for L > 1 at finite T with coupled directions it
is an equal-layer ansatz).  Its stationarity condition, multiplied by ``(2/L) U^{1/2} . U^{1/2}``, is

    R(U) = N (U - I) + (2/L) U^{1/2} [sum_{j=0}^{L-1} U^{L-1-j} Gamma U^j] U^{1/2} = 0,
    Gamma = dF/dM = 1/2 sum_k s l_k [B_k^{-1} - B_k^{-1} y_k y_k^T B_k^{-1}],  B_k = s l_k M + T,

with ``(l_k, v_k)`` the eigenpairs of K0 and ``y_k = Y^T v_k``.  It reduces to the scalar equation per
eigen-direction of U.  We solve it per eigen-direction of ``Y^T (K0 + T/s)^{-1} Y`` (exact at T = 0,
where it is ``G = Y^T K0^{-1} Y``: ``U^L (U - (1-alpha) I) = G / (N s)``), check ``R``, and when the
directions do not decouple we solve the full symmetric matrix equation ``R(U) = 0`` by a root finder.

Nonlinear heuristic (THEORY.md 2.6): replace ``K0`` by the NNGP kernel ``K_L`` of the last hidden
layer and ``s`` by ``sigma_a2`` (``K_L`` already carries the sigma_l^2); for ReLU the u's factor
out by homogeneity.  For linear networks this is identical to the exact route.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import cho_factor, cho_solve, eigh
from scipy.optimize import brentq, root

from widebayes.quadrature import unpack_symmetric
from widebayes.theory.gp import GenError, GPPrediction, as_2d, generalization_error, gp_posterior
from widebayes.theory.nngp import NNGPKernels, as_activation, layer_variances, nngp_kernels

_GRID_POINTS = 400


class BPKRSolution(NamedTuple):
    """Single-output renormalisation factor.

    Attributes
    ----------
    u : float
        Saddle value of every ``u_l`` (equal widths).
    residual : float
        ``N (u - 1) - [Y^T (K_u+T)^{-1} K_u (K_u+T)^{-1} Y - Tr (K_u+T)^{-1} K_u]``.
    alpha : float
        ``P / N``.
    scale : float
        ``s = sigma_a2 prod_l sigma_l^2``.
    renorm : float
        ``s u^L``, the factor in ``K_u = s u^L K0``.
    """

    u: float
    residual: float
    alpha: float
    scale: float
    renorm: float


class BPKRMatrixSolution(NamedTuple):
    """m-output renormalisation matrix.

    Attributes
    ----------
    U : ndarray (m, m)
    residual : float
        ``max |R(U)|`` of the matrix saddle equation (module docstring).
    u : ndarray (m,)
        Eigenvalues of U (ascending).
    directions : ndarray (m, m)
        Eigenvectors of U (columns): the output directions that decouple.
    alpha, scale : float
        ``P / N`` and ``s = sigma_a2 prod_l sigma_l^2``.
    method : str
        ``"eigen"`` (per-direction scalar solves) or ``"matrix"`` (full matrix root).
    """

    U: np.ndarray
    residual: float
    u: np.ndarray
    directions: np.ndarray
    alpha: float
    scale: float
    method: str


class BPKRPrediction(NamedTuple):
    """Predictor statistics on test inputs (THEORY.md 2.3, 2.4).

    Attributes
    ----------
    mean : ndarray (P_test, m)
    var : ndarray (P_test, m)
        Per-output variance (diagonal of ``cov``).
    cov : ndarray (P_test, m, m)
        Output covariance ``sum_r q_r q_r^T c_r Delta_r(x)``.
    """

    mean: np.ndarray
    var: np.ndarray
    cov: np.ndarray


class MeanKernels(NamedTuple):
    """Posterior-mean layer kernels ``<K_l>`` (layer 0 is K0); test blocks None when not asked."""

    train: np.ndarray
    cross: np.ndarray | None = None
    test: np.ndarray | None = None


class BPKRResult(NamedTuple):
    """Everything :func:`bpkr_prediction` computes, with the NNGP/GP values alongside."""

    solution: BPKRMatrixSolution
    U: np.ndarray
    u: np.ndarray
    residual: float
    alpha: float
    prediction: BPKRPrediction | None
    gen_error: GenError | None
    gp: GPPrediction | None
    gen_error_gp: GenError | None
    nngp: NNGPKernels
    mean_kernels: MeanKernels
    readout_second_moment: np.ndarray


# ----------------------------------------------------------------------------- conventions


def _variances(sigma_w2, depth: int) -> np.ndarray:
    """``sigma_l^2`` for l = 1..depth from a scalar or a sequence of length depth."""
    s2 = layer_variances(sigma_w2)
    if s2.size == 1:
        return np.full(depth, s2[0])
    if s2.size != depth:
        raise ValueError(f"sigma_w2 has {s2.size} entries for depth {depth}")
    return s2


def sigma_scale(sigma_w2, depth: int, sigma_a2: float) -> float:
    """``s = sigma_a2 prod_{l=1}^L sigma_l^2``, the prior scale of ``K_u = s (prod u_l) K0``."""
    return float(sigma_a2 * np.prod(_variances(sigma_w2, depth)))


def readout_second_moment(U, sigma_a2: float) -> np.ndarray:
    """``<a^T a> / N = sigma_a2 U`` (m x m, per neuron; ``<|a|^2/N> = sigma_a2 u`` for m = 1).

    Envelope theorem on ``d ln Z / d sigma_a2 = (<|a|^2> - N sigma_a2) / (2 sigma_a2^2)`` with
    ``H`` depending on ``sigma_a2`` only through ``K_u`` (module docstring).
    """
    return float(sigma_a2) * np.atleast_2d(np.asarray(U, dtype=np.float64))


# ----------------------------------------------------------------------------- spectral pieces


def _spectrum(K0, Y, T):
    """Eigenvalues of K0 and the targets in its eigenbasis, ``Yhat = V^T Y`` (P, m)."""
    lam, V = eigh(np.asarray(K0, dtype=np.float64))
    if T == 0 and lam.min() <= 1e-12 * lam.max():
        raise ValueError("K0 is singular: the T = 0 BPKR needs an invertible kernel; use T > 0")
    return np.maximum(lam, 0.0), V.T @ as_2d(Y)


def _saddle_rhs(u, lam, yhat2, depth, scale, T):
    """``Y^T (K_u+T)^{-1} K_u (K_u+T)^{-1} Y - Tr[(K_u+T)^{-1} K_u]`` in K0's eigenbasis
    (u may be an array)."""
    x = scale * np.asarray(u, dtype=np.float64)[..., None] ** depth * lam
    d = x + T
    return np.sum(yhat2 * x / d**2, axis=-1) - np.sum(x / d, axis=-1)


def _residual(u, lam, yhat2, width, depth, scale, T):
    """``N (u - 1) - rhs(u)`` (THEORY.md 2.2 saddle)."""
    return width * (np.asarray(u) - 1.0) - _saddle_rhs(u, lam, yhat2, depth, scale, T)


def _hamiltonian(u, lam, yhat2, width, depth, scale, T):
    """``H(u)`` at equal u_l (THEORY.md 2.2), up to a constant."""
    d = scale * u**depth * lam + T
    return 0.5 * width * depth * (u - np.log(u)) + 0.5 * np.sum(yhat2 / d + np.log(d))


def effective_hamiltonian(u, K0, Y, depth, width, T, sigma_w2=1.0, sigma_a2=1.0) -> float:
    """``H(u) = L (N/2)(u - ln u) + 1/2 Y^T (K_u+T)^{-1} Y + 1/2 ln det(K_u+T)`` (THEORY.md 2.2).

    Single output, all ``u_l = u``; ``K_u = sigma_a2 prod(sigma_l^2) u^L K0``.  Its minimum over u
    is ``-ln Z`` up to a constant independent of ``sigma_a2`` and ``u``.
    """
    lam, Yhat = _spectrum(K0, Y, T)
    s = sigma_scale(sigma_w2, depth, sigma_a2)
    return float(_hamiltonian(float(u), lam, Yhat[:, 0] ** 2, width, depth, s, T))


# ----------------------------------------------------------------------------- scalar solvers


def _solve_zero_T(b, alpha, depth):
    """Root of ``u^L (u - 1 + alpha) = b`` on ``u > max(0, 1 - alpha)`` (unique; brentq)."""
    lo = max(1.0 - alpha, 0.0)
    if b <= 0.0:
        if lo > 0.0:
            return lo
        raise ValueError("Y = 0 with alpha >= 1 at T = 0: u = 0, no finite solution")
    hi = abs(1.0 - alpha) + 1.0 + b ** (1.0 / (depth + 1))
    return brentq(lambda u: u**depth * (u - 1.0 + alpha) - b, lo, hi, xtol=1e-15, rtol=1e-15)


def _lower_bracket(f):
    """A u in (0, 0.5] with ``f(u) < 0`` (``f(0+) = -N``)."""
    lo = 0.5
    while f(lo) >= 0.0 and lo > 1e-300:
        lo *= 0.5
    return lo


def _solve_finite_T(lam, yhat2, width, depth, scale, T):
    """All roots of the finite-T saddle on a log grid, refined by brentq; the one of least H."""
    def f(u):
        return float(_residual(u, lam, yhat2, width, depth, scale, T))
    hi = 2.0 + np.sum(yhat2) / (4.0 * T * width)  # rhs <= |y|^2 / (4T), so f(hi) > 0
    grid = np.geomspace(_lower_bracket(f), hi, _GRID_POINTS)
    vals = _residual(grid, lam, yhat2, width, depth, scale, T)
    idx = np.nonzero(np.sign(vals[:-1]) != np.sign(vals[1:]))[0]
    roots = [brentq(f, grid[i], grid[i + 1], xtol=1e-15, rtol=1e-15) for i in idx]
    return min(roots, key=lambda u: _hamiltonian(u, lam, yhat2, width, depth, scale, T))


def _solve_direction(lam, yhat2, width, depth, scale, T):
    """Saddle u for one output direction (targets ``yhat`` in K0's eigenbasis)."""
    if T == 0:
        b = np.sum(yhat2 / lam) / (width * scale)
        return _solve_zero_T(b, lam.size / width, depth)
    return _solve_finite_T(lam, yhat2, width, depth, scale, T)


def _solution(u, lam, yhat2, width, depth, scale, T) -> BPKRSolution:
    res = float(_residual(u, lam, yhat2, width, depth, scale, T))
    return BPKRSolution(float(u), res, lam.size / width, scale, scale * u**depth)


def _scalar_setup(K0, Y, depth, T, sigma_w2, sigma_a2):
    Y = as_2d(Y)
    if Y.shape[1] != 1:
        raise ValueError("solve_u is single-output; use solve_U for m outputs")
    lam, Yhat = _spectrum(K0, Y, T)
    return lam, Yhat[:, 0] ** 2, sigma_scale(sigma_w2, depth, sigma_a2)


def solve_u(K0, Y, depth, width, T, sigma_w2=1.0, sigma_a2=1.0) -> BPKRSolution:
    """Single-output BPKR renormalisation factor u (THEORY.md 2.2), by brentq.

    Solves ``N (u - 1) = Y^T (K_u+T)^{-1} K_u (K_u+T)^{-1} Y - Tr[(K_u+T)^{-1} K_u]`` with
    ``K_u = s u^L K0``, ``s = sigma_a2 prod sigma_l^2``; at ``T = 0`` the equivalent
    ``u^L (u - 1 + alpha) = alpha r0 / s``, ``r0 = Y^T K0^{-1} Y / P``, ``alpha = P / N``.
    At finite T every root on a log grid is refined and the one of least ``H(u)`` is returned.

    Parameters
    ----------
    K0 : array (P, P)
        Input kernel ``X X^T / N0`` (or, for the nonlinear heuristic, the NNGP ``K_L`` with
        ``sigma_w2 = 1``).
    Y : array (P,) or (P, 1)
    depth, width : int
        L hidden layers of N neurons.
    T : float
        Noise variance T_eff (0 allowed when K0 is invertible).
    sigma_w2 : float or sequence of length L
    sigma_a2 : float
    """
    lam, yhat2, s = _scalar_setup(K0, Y, depth, T, sigma_w2, sigma_a2)
    u = _solve_direction(lam, yhat2, width, depth, s, T)
    return _solution(u, lam, yhat2, width, depth, s, T)


def width_neutral_scale(K_hat, Y, T) -> float:
    """The prior scale ``s_c`` at which the width drops out of BPKR (``u = 1`` at every N, the GP).

    With ``K_u = s u^L K_hat`` (``K_hat`` the kernel at unit variances; ReLU and linear networks,
    whose NNGP kernel is ``prod sigma_l^2`` times ``K_hat``, and ``s = sigma_a2 prod sigma_l^2``), the
    saddle ``N (u - 1) = rhs(u)`` (:func:`solve_u`) has the root ``u = 1`` for every N exactly when
    ``rhs(1) = 0``:

        Y^T (s K_hat + T)^{-1} s K_hat (s K_hat + T)^{-1} Y = Tr[(s K_hat + T)^{-1} s K_hat],

    at ``T = 0`` simply ``s_c = Y^T K_hat^{-1} Y / P``.  Below ``s_c``, ``rhs(1) > 0`` so ``u > 1``:
    the predictor variance ``u Delta`` grows with ``alpha = P/N`` (width helps); above it ``u < 1``
    and the error falls with ``alpha`` (width hurts): perspective paper, Fig. 5B.  Single output.
    """
    lam, Yhat = _spectrum(K_hat, Y, T)
    yhat2 = Yhat[:, 0] ** 2
    if T == 0:
        return float(np.sum(yhat2 / lam) / lam.size)
    log_s = brentq(lambda ls: _saddle_rhs(1.0, lam, yhat2, 1, np.exp(ls), T), -40.0, 40.0, xtol=1e-13)
    return float(np.exp(log_s))


def _damped_step(F, u, eta):
    """One step ``u + eta (F(u) - u)`` with eta halved until it lowers ``|F(u) - u|`` and stays > 0."""
    gap = abs(F(u) - u)
    while eta > 1e-12:
        new = u + eta * (F(u) - u)
        if new > 0 and abs(F(new) - new) < gap:
            return new, eta
        eta *= 0.5
    return u, eta


def solve_u_fixed_point(K0, Y, depth, width, T, sigma_w2=1.0, sigma_a2=1.0, u0=1.0, tol=1e-14,
                        max_iter=100_000) -> BPKRSolution:
    """Single-output u by damped fixed-point iteration ``u <- 1 + rhs(u) / N`` (cross-check).

    Same equation as :func:`solve_u` (THEORY.md 2.2; at T = 0 it reads
    ``u <- 1 - alpha + alpha r0 / (s u^L)``), iterated with a step ``eta`` halved whenever a
    full step would not decrease ``|F(u) - u|``.  Independent of the bracketing root finder.
    """
    lam, yhat2, s = _scalar_setup(K0, Y, depth, T, sigma_w2, sigma_a2)
    def F(u):
        return 1.0 + float(_saddle_rhs(u, lam, yhat2, depth, s, T)) / width
    u, eta = float(u0), 1.0
    for _ in range(max_iter):
        u_new, eta = _damped_step(F, u, eta)
        if abs(u_new - u) <= tol * max(1.0, abs(u)):
            u = u_new
            break
        u = u_new
    return _solution(u, lam, yhat2, width, depth, s, T)


# ----------------------------------------------------------------------------- matrix solver


def _gamma(w, Yq, lam, depth, scale, T):
    """``Gamma = dF/dM`` in the eigenbasis of U (eigenvalues w, targets ``Yq = V^T Y Q``)."""
    sl = scale * lam
    D = 1.0 / (sl[:, None] * w[None, :] ** depth + T)
    W = D * Yq
    return 0.5 * (np.diag(sl @ D) - W.T @ (sl[:, None] * W))


def _layer_sum_weights(w, depth):
    """``sqrt(w_a w_b) sum_{j<L} w_a^{L-1-j} w_b^j`` (the Frechet derivative of U^L, sandwiched)."""
    j = np.arange(depth)
    terms = w[:, None, None] ** (depth - 1 - j) * w[None, :, None] ** j
    return np.sqrt(np.outer(w, w)) * terms.sum(axis=-1)


def _matrix_residual(U, lam, Yhat, width, depth, scale, T):
    """``R(U) = N (U - I) + (2/L) U^{1/2} [sum_j U^{L-1-j} Gamma U^j] U^{1/2}`` (module docstring)."""
    w, Q = eigh(U)
    G = _gamma(w, Yhat @ Q, lam, depth, scale, T)
    R = width * np.diag(w - 1.0) + (2.0 / depth) * G * _layer_sum_weights(w, depth)
    return Q @ R @ Q.T


def _data_directions(lam, Yhat, scale, T):
    """Eigenvectors of ``Y^T (K0 + T/s)^{-1} Y`` (``G = Y^T K0^{-1} Y`` at T = 0)."""
    G = Yhat.T @ (Yhat / (lam + T / scale)[:, None])
    return eigh(G)[1]


def _polish(U0, lam, Yhat, width, depth, scale, T):
    """Solve the full symmetric equation ``R(U) = 0`` from U0 (scipy ``root``, hybr)."""
    m, iu = U0.shape[0], np.triu_indices(U0.shape[0])

    def fun(v):
        U = unpack_symmetric(v, m)
        if np.linalg.eigvalsh(U).min() <= 0.0:
            return np.full(v.size, 1e3 * width)
        return _matrix_residual(U, lam, Yhat, width, depth, scale, T)[iu]

    return unpack_symmetric(root(fun, U0[iu], method="hybr", options={"xtol": 1e-15}).x, m)


def solve_U(K0, Y, depth, width, T, sigma_w2=1.0, sigma_a2=1.0, tol=1e-10) -> BPKRMatrixSolution:
    """m-output BPKR renormalisation matrix U (THEORY.md 2.4).

    T = 0: ``U^L (U - (1 - alpha) I) = Y^T K0^{-1} Y / (N s)``, solved in the eigenbasis of
    ``G = Y^T K0^{-1} Y`` (one scalar root per eigenvalue).  Finite T: per eigen-direction q of
    ``Y^T (K0 + T/s)^{-1} Y``, the scalar saddle of :func:`solve_u` with targets ``Y q``; if the
    matrix residual ``R(U)`` (module docstring) then exceeds ``tol * N`` the directions do not
    decouple and the full matrix equation is solved (``method = "matrix"``).

    Parameters
    ----------
    K0 : array (P, P)
    Y : array (P, m)
    depth, width : int
    T : float
    sigma_w2 : float or sequence of length L
    sigma_a2 : float
    tol : float
        Relative residual (units of N) accepted from the per-direction solution.
    """
    lam, Yhat = _spectrum(K0, Y, T)
    s = sigma_scale(sigma_w2, depth, sigma_a2)
    Q = _data_directions(lam, Yhat, s, T)
    u = [_solve_direction(lam, (Yhat @ q) ** 2, width, depth, s, T) for q in Q.T]
    U, method = (Q * np.asarray(u)) @ Q.T, "eigen"
    if np.abs(_matrix_residual(U, lam, Yhat, width, depth, s, T)).max() > tol * width:
        U, method = _polish(U, lam, Yhat, width, depth, s, T), "matrix"
    residual = float(np.abs(_matrix_residual(U, lam, Yhat, width, depth, s, T)).max())
    w, Qu = eigh(U)
    return BPKRMatrixSolution(U, residual, w, Qu, lam.size / width, s, method)


# ----------------------------------------------------------------------------- predictor


def bpkr_predictor(K0, K0_cross, k0_test_diag, Y, U, depth, T, sigma_w2=1.0, sigma_a2=1.0) -> BPKRPrediction:
    """Predictor mean and covariance on test inputs given U (THEORY.md 2.3, 2.4).

    Along each eigen-direction ``q_r`` of U (eigenvalue ``w_r``) the outputs ``f q_r`` form a GP
    with kernel ``c_r K0``, ``c_r = s w_r^L``:
    ``mean_r(x) = k0^T (K0 + T / c_r)^{-1} Y q_r``,
    ``var_r(x) = c_r [K0(x,x) - k0^T (K0 + T / c_r)^{-1} k0]``;
    ``mean = sum_r mean_r q_r^T``, ``cov(x) = sum_r var_r(x) q_r q_r^T``.
    At T = 0 the mean is ``k0^T K0^{-1} Y`` whatever U.
    """
    s = sigma_scale(sigma_w2, depth, sigma_a2)
    w, Q = eigh(np.atleast_2d(U))
    Yq = as_2d(Y) @ Q
    preds = [gp_posterior(c * K0, c * K0_cross, c * k0_test_diag, Yq[:, r], T)
             for r, c in enumerate(s * w**depth)]
    mean = np.column_stack([p.mean[:, 0] for p in preds]) @ Q.T
    cov = np.einsum("tr,ar,br->tab", np.column_stack([p.var for p in preds]), Q, Q)
    return BPKRPrediction(mean, np.diagonal(cov, axis1=1, axis2=2).copy(), cov)


# ----------------------------------------------------------------------------- mean layer kernels


def _joint_kernel(K0, K0_cross, K0_test):
    """Train+test kernel ``[[K0, Kc], [Kc^T, Kt]]`` (Kt = 0 when not given: it feeds no other block)."""
    if K0_cross is None:
        return np.asarray(K0, dtype=np.float64)
    Kt = np.zeros((K0_cross.shape[1],) * 2) if K0_test is None else K0_test
    return np.block([[K0, K0_cross], [K0_cross.T, Kt]])


def _gp_second_moment(Kc, P, y, T):
    """``<f f^T>`` over the joint inputs for a GP with kernel Kc observed at the first P (noise T)."""
    chol = cho_factor(Kc[:P, :P] + T * np.eye(P), lower=True)
    B = Kc[:, :P]
    mean = B @ cho_solve(chol, y)
    return np.outer(mean, mean) + Kc - B @ cho_solve(chol, B.T)


def _learned_moments(Kj, P, Y, U, scale, depth, T):
    """Eigenvalues w_r of U and ``<(f q_r)(f q_r)^T>`` on the joint inputs, per direction."""
    w, Q = eigh(np.atleast_2d(U))
    Yq = as_2d(Y) @ Q
    return w, [_gp_second_moment(scale * w[r] ** depth * Kj, P, Yq[:, r], T) for r in range(w.size)]


def _split(Kl, P, with_test):
    """Blocks (train, cross, test) of the joint layer kernels (layer, n, n)."""
    cross = Kl[:, :P, P:] if Kl.shape[1] > P else None
    return MeanKernels(Kl[:, :P, :P], cross, Kl[:, P:, P:] if with_test else None)


def mean_layer_kernels(K0, Y, U, width, T, sigma_w2, sigma_a2=1.0, K0_cross=None,
                       K0_test=None) -> MeanKernels:
    """Posterior-mean layer kernels of a deep linear lazy network (THEORY.md 2.5, 3.5.2).

    With ``K_l = z_l z_l^T / N`` (layer 0: ``K0``) and the effective readout ``A_l`` of layer l
    (``f = z_l A_l / sqrt(N)``; ``A_L = a``, ``A_{l-1} = W_l^T A_l / sqrt(N)``), splitting the
    neuron space of layer l into the m directions of ``A_l`` and ``N - m`` free ones gives

        <K_l> = (1 - m/N) sigma_l^2 <K_{l-1}> + <f (A_l^T A_l)^{-1} f^T>,
        A_l^T A_l ~= N s_l U^{L+1-l},   s_l = sigma_a2 prod_{l' > l} sigma_{l'}^2,

    where the second term, at T = 0, is ``Y (A_l^T A_l)^{-1} Y^T``; at finite T we use the GP
    posterior of the outputs given U: ``sum_r [mean_r mean_r^T + Cov_r] / (N s_l w_r^{L+1-l})``
    (for L = 1 this equals THEORY.md 2.5's finite-T formula).  Exact for L = 1 (given self-averaging
    ``a^T a``); for L >= 2 the derivation sketch of 3.5.2, checked there against Langevin at L = 2.
    On test inputs, ``f`` at those inputs enters the same way.

    Parameters
    ----------
    K0 : array (P, P)
    Y : array (P, m)
    U : array (m, m)
        From :func:`solve_U` (the same for any split of s between K0 and the sigmas).
    width : int
    T : float
    sigma_w2 : sequence of float, length L (the depth)
    sigma_a2 : float
    K0_cross, K0_test : arrays (P, P_test), (P_test, P_test), optional

    Returns
    -------
    MeanKernels
        ``train`` (L+1, P, P), ``cross`` (L+1, P, P_test), ``test`` (L+1, P_test, P_test).
    """
    s2 = layer_variances(sigma_w2)
    Kj = _joint_kernel(K0, K0_cross, K0_test)
    bulk = np.cumprod(np.concatenate([[1.0], s2]))[:, None, None] * Kj
    return _split(_spiked_layers(bulk, np.shape(K0)[0], Y, U, width, T, s2, sigma_a2), np.shape(K0)[0],
                  K0_test is not None)


def _spiked_layers(bulk, P, Y, U, width, T, s2, sigma_a2) -> np.ndarray:
    """``<K_l> = (1 - m/N)^l B_l + S_l``, ``S_l = (1 - m/N) sigma_l^2 S_{l-1} + spike_l``, ``S_0 = 0``.

    ``B_l`` (``bulk``, (L+1, n, n)) is the prior kernel of layer l on the joint inputs (the first
    P observed) and ``spike_l = sum_r <(f q_r)(f q_r)^T> / (N s_l w_r^{L+1-l})`` with the outputs'
    GP of kernel ``sigma_a2 w_r^L B_L``.  With ``B_l = prod_{l' <= l} sigma_l'^2 K0`` this is the
    unrolled recursion of :func:`mean_layer_kernels`; with the NNGP kernels it is
    :func:`heuristic_layer_kernels`.
    """
    depth, m = s2.size, np.atleast_2d(U).shape[0]
    w, moments = _learned_moments(bulk[-1], P, Y, U, sigma_a2, depth, T)
    learned, layers = np.zeros_like(bulk[0]), [bulk[0]]
    for layer in range(1, depth + 1):
        s_l = sigma_a2 * np.prod(s2[layer:])
        spike = sum(M / (width * s_l * w[r] ** (depth + 1 - layer)) for r, M in enumerate(moments))
        learned = (1.0 - m / width) * s2[layer - 1] * learned + spike
        layers.append((1.0 - m / width) ** layer * bulk[layer] + learned)
    return np.stack(layers)


def heuristic_layer_kernels(nngp_joint, P, Y, U, width, T, sigma_w2, sigma_a2=1.0) -> np.ndarray:
    """Mean kernels of every layer of a nonlinear lazy network, perspective Eq. 15's heuristic.

    ``<K_l> ~= K_l^GP + N^-1 Y G_l(U) Y^T`` (perspective paper, "Mean layer-wise kernels", Eq. 15):
    the exact deep-linear recursion of :func:`mean_layer_kernels` unrolled,
    ``<K_l> = (1 - m/N)^l B_l + S_l`` (:func:`_spiked_layers`), with the NNGP kernels ``K_l^GP`` as
    the bulk ``B_l`` and the learned spikes propagated upward as in the linear network (by
    ``(1 - m/N) sigma_l^2``).  Identical to :func:`mean_layer_kernels` for linear phi; for nonlinear
    phi a heuristic like THEORY.md 2.6 (the spikes do not pass through phi).

    Parameters
    ----------
    nngp_joint : array (L+1, n, n)
        NNGP kernels ``K_0 .. K_L`` of the joint inputs, the first P of them training inputs.
    P : int
    Y : array (P, m)
    U : array (m, m)
        From :func:`solve_U` with ``K_L^GP`` as base kernel and ``s = sigma_a2``.
    width : int
    T : float
    sigma_w2 : sequence of float, length L
    sigma_a2 : float

    Returns
    -------
    ndarray (L+1, n, n)
    """
    return _spiked_layers(np.asarray(nngp_joint, dtype=np.float64), P, Y, U, width, T,
                          layer_variances(sigma_w2), sigma_a2)


def mean_feature_kernel(K_L, Y, U, depth, width, T, sigma_a2=1.0, K_cross=None, K_test=None) -> MeanKernels:
    """Heuristic mean feature-layer kernel of a nonlinear lazy network (THEORY.md 2.5/2.6).

    ``<K_L> ~= (1 - m/N) K_L^GP + sum_r <(f q_r)(f q_r)^T> / (N sigma_a2 w_r)``: the readout split of
    :func:`mean_layer_kernels` applied to the feature layer, with the NNGP kernel ``K_L^GP`` in place
    of ``sigma_L^2 <K_{L-1}>`` and the renormalised GP ``sigma_a2 w_r^L K_L^GP``.  Exact for a
    one-hidden-layer linear network; a heuristic otherwise (it ignores the O(1/N) tilt of the
    nonlinear units and the learned changes of the layers below: perspective paper Eq. 15's
    ``G_l(U)`` is a GAP for nonlinear networks).  Returns one layer, shape (1, ., .).
    """
    P, m = np.shape(K_L)[0], np.atleast_2d(U).shape[0]
    Kj = _joint_kernel(K_L, K_cross, K_test)
    w, moments = _learned_moments(Kj, P, Y, U, sigma_a2, depth, T)
    spike = sum(M / (width * sigma_a2 * w[r]) for r, M in enumerate(moments))
    return _split(((1.0 - m / width) * Kj + spike)[None], P, K_test is not None)


# ----------------------------------------------------------------------------- everything at once


def _mean_kernels(kernels, act, Y, U, sigma_w2, sigma_a2, width, T, has_test, full_test):
    """Exact mean kernels for linear networks; NNGP below + heuristic feature layer otherwise."""
    test = kernels.test if full_test else None
    if act.is_linear:
        cross0 = kernels.cross[0] if has_test else None
        return mean_layer_kernels(kernels.train[0], Y, U, width, T, sigma_w2, sigma_a2, cross0,
                                  test[0] if full_test else None)
    top = mean_feature_kernel(kernels.train[-1], Y, U, len(sigma_w2), width, T, sigma_a2,
                              kernels.cross[-1] if has_test else None, test[-1] if full_test else None)
    def glue(low, hi):
        return None if low is None else np.concatenate([low[:-1], hi])
    return MeanKernels(glue(kernels.train, top.train), glue(kernels.cross, top.cross), glue(test, top.test))


def bpkr_prediction(X_train, Y_train, X_test, Y_test, activation, sigma_w2, sigma_a2, width, T,
                    full_test=False) -> BPKRResult:
    """BPKR theory of a lazy network, with the NNGP/GP values alongside.

    Solves U with the last-layer NNGP kernel ``K_L`` as base kernel and ``s = sigma_a2`` (for linear
    networks ``K_L = prod sigma_l^2 K0``, so this is the exact theory; for nonlinear ones it is the
    heuristic of THEORY.md 2.6), then the predictor (2.3/2.4), its generalization error, the
    GP (``N -> inf``) predictor with kernel ``sigma_a2 K_L``, the readout second moment
    ``sigma_a2 U`` and the mean layer kernels (:func:`mean_layer_kernels`, or for nonlinear networks
    the NNGP kernels with the heuristic :func:`mean_feature_kernel` at layer L).

    Parameters
    ----------
    X_train : array (P, N0)
    Y_train : array (P,) or (P, m)
    X_test, Y_test : arrays or None
    activation : str or Activation
    sigma_w2 : sequence of float, length L
    sigma_a2 : float
    width : int
    T : float
        T_eff; 0 allowed when ``K_L`` is invertible.
    full_test : bool
        Also compute test x test mean kernels.
    """
    act, s2 = as_activation(activation), layer_variances(sigma_w2)
    kernels = nngp_kernels(X_train, act, s2, X_test, full_test=full_test)
    sol = solve_U(kernels.train[-1], Y_train, s2.size, width, T, 1.0, sigma_a2)
    pred = gp = err = err_gp = None
    if X_test is not None:
        base = (kernels.train[-1], kernels.cross[-1], kernels.test_diag[-1])
        pred = bpkr_predictor(*base, Y_train, sol.U, s2.size, T, 1.0, sigma_a2)
        gp = gp_posterior(*(sigma_a2 * k for k in base), Y_train, T)
    if Y_test is not None and pred is not None:
        err, err_gp = (generalization_error(pred.mean, pred.var, Y_test),
                       generalization_error(gp.mean, gp.var, Y_test))
    mk = _mean_kernels(kernels, act, Y_train, sol.U, s2, sigma_a2, width, T, X_test is not None, full_test)
    return BPKRResult(sol, sol.U, sol.u, sol.residual, sol.alpha, pred, err, gp, err_gp, kernels, mk,
                      readout_second_moment(sol.U, sigma_a2))
