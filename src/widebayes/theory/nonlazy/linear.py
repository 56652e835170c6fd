"""Deep linear non-lazy networks: the analog code (THEORY.md 1.3; coding-schemes paper, "Analog coding").

Model (DESIGN.md, gamma = 1): ``z_1 = W_1 x / sqrt(N0)``, ``z_l = W_l z_{l-1} / sqrt(N)``,
``f = a^T z_L / N``, ``W_l ~ N(0, sigma_l^2)``, ``a ~ N(0, sigma_a^2)``, likelihood
``exp(-N L / T0)``.  In the limit N -> inf at fixed P the single-neuron readout posterior is
``N(0, U)`` and the layer kernels concentrate.  Notation: ``K0 = X X^T / N0``,
``G = Y^T K0^{-1} Y``, ``s_l = prod_{l' <= l} sigma_{l'}^2``, ``C_L = sigma_L^2 K^{L-1}``.

Stationarity of the deep rate function of THEORY.md 1.2 (Wishart rates ``I(K|C) = 1/2 [Tr C^{-1} K
- ln det C^{-1} K - P]`` for the hidden layers, ``I_out(C) = sup_Lambda [Tr Lambda^T Y - T0/2
|Lambda|^2 + 1/2 ln det(I - sigma_a^2 Lambda^T C Lambda)]`` for the readout) gives, for any L and
T0 >= 0 (derived here from THEORY.md 1.2/1.3; reduces to THEORY.md 1.3 at T0 -> 0 and at L = 1):

    K^l = s_l K0 A^l,   A = I + s_L Lambda V Lambda^T K0,   V = U^L / sigma_a^{2(L-1)},
    T0 Lambda + s_L K0 Lambda V = Y,                                   (output constraint)
    sigma_a^{-2} I - U^{-1} = s_L (Lambda^T K0 Lambda) (U / sigma_a^2)^{L-1}   (readout covariance).

At T0 = 0 this is ``U^L (U - sigma_a^2 I) = sigma_a^{2L} G / s_L`` and
``K^l = s_l [K0 + Y ((U / sigma_a^2)^l - I) G^{-1} Y^T]`` (THEORY.md 1.3); the paper's large-P form
is ``U^{L+1} = sigma_a^{2L} G`` (here ``/ s_L``; identical for unit hidden variances).

The stored kernel of a linear network, ``phi(z_l) . phi(z_l) / N = z_l . z_l / N``, is the
preactivation kernel ``K^l`` above (layer 0: ``K0``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import eigh
from scipy.optimize import brentq, minimize, root

from widebayes.quadrature import pack_symmetric, symmetric_part, unpack_symmetric
from widebayes.theory.gp import as_2d


class LinearSolution(NamedTuple):
    """Mean-field solution of a deep linear non-lazy network.

    Attributes
    ----------
    U : ndarray (m, m)
        Readout covariance per neuron, ``<a a^T>`` (the readout posterior is ``N(0, U)``).
    Lambda : ndarray (P, m)
        Conjugate field ``(Y - F_train) / T0`` (its T0 -> 0 limit at T0 = 0).
    F_train : ndarray (P, m)
        Posterior-mean output on the training inputs, ``Y - T0 Lambda``.
    kernels : ndarray (L+1, P, P)
        ``K0, K^1, ..., K^L`` (posterior-mean preactivation kernels; layer 0 the input kernel).
    residual : float
        Largest absolute residual of the equations solved.
    method : str
        ``"exact"`` (the exact equations) or ``"large_P"`` (the paper's ``U^{L+1}`` form, T0 = 0).
    """

    U: np.ndarray
    Lambda: np.ndarray
    F_train: np.ndarray
    kernels: np.ndarray
    residual: float
    method: str


class LinearTest(NamedTuple):
    """Predictions on test inputs.

    Attributes
    ----------
    mean : ndarray (P_test, m)
        ``f(x) = k0(x)^T K0^+ F_train`` (``k0^T K0^{-1} Y`` at T0 = 0, the GP mean).
    var : ndarray (P_test, m)
        O(1/N) predictor variance (see :func:`linear_test`).
    cross : ndarray (L+1, P, P_test)
        ``K^l(x_mu, x)``.
    test : ndarray (L+1, P_test, P_test)
        ``K^l(x, x')``.
    """

    mean: np.ndarray
    var: np.ndarray
    cross: np.ndarray
    test: np.ndarray


# ----------------------------------------------------------------------------- small helpers


def layer_products(sigma_w2) -> np.ndarray:
    """``s_l = prod_{l' <= l} sigma_{l'}^2`` for l = 1..L."""
    return np.cumprod(np.atleast_1d(np.asarray(sigma_w2, dtype=np.float64)))


def matrix_function(M, fn) -> np.ndarray:
    """``fn(M)`` for a symmetric matrix through its eigendecomposition."""
    w, Q = eigh(0.5 * (M + M.T))
    return (Q * fn(w)) @ Q.T


def task_gram(K0, Y) -> np.ndarray:
    """``G = Y^T K0^{-1} Y`` (m x m; THEORY.md 1.3)."""
    K0, Y = np.asarray(K0, dtype=np.float64), as_2d(Y)
    G = Y.T @ np.linalg.solve(K0, Y)
    return 0.5 * (G + G.T)


# ----------------------------------------------------------------------------- T0 -> 0


def _readout_root(g, sigma_a2, s_L, depth, large_P):
    """Scalar ``u`` of ``u^L (u - sigma_a^2) = sigma_a^{2L} g / s_L`` (or ``u^{L+1} = ...``)."""
    b = sigma_a2**depth * max(g, 0.0) / s_L
    if large_P:
        return b ** (1.0 / (depth + 1))
    if b == 0.0:
        return sigma_a2
    hi = sigma_a2 + b ** (1.0 / (depth + 1)) + 1.0
    return brentq(lambda u: u**depth * (u - sigma_a2) - b, sigma_a2, hi, xtol=1e-15, rtol=1e-15)


def readout_covariance_zero_T(G, sigma_a2: float, sigma_w2, large_P: bool = False):
    """Readout covariance U at T0 -> 0 (THEORY.md 1.3), and the residual of its equation.

    Exact: ``U^L (U - sigma_a^2 I) = sigma_a^{2L} G / s_L``; with ``large_P`` the paper's
    leading-order form ``U^{L+1} = sigma_a^{2L} G / s_L`` (coding-schemes paper, "Analog coding
    scheme"; ``s_L = 1`` there).  U is a matrix function of G: one scalar root per eigenvalue.

    Returns
    -------
    U : ndarray (m, m)
    residual : float
        ``max |U^L (U - sigma_a^2) - sigma_a^{2L} G / s_L|`` (``sigma_a^2`` dropped for large P).
    """
    s = layer_products(sigma_w2)
    depth, s_L = s.size, s[-1]
    g, Q = eigh(symmetric_part(np.atleast_2d(G)))
    u = np.array([_readout_root(gi, sigma_a2, s_L, depth, large_P) for gi in g])
    U = (Q * u) @ Q.T
    shift = 0.0 if large_P else sigma_a2
    lhs = np.linalg.matrix_power(U, depth) @ (U - shift * np.eye(len(u)))
    return U, float(np.max(np.abs(lhs - sigma_a2**depth * np.atleast_2d(G) / s_L)))


def kernels_zero_T(K0, Y, U, sigma_w2, sigma_a2: float) -> np.ndarray:
    """``K^l = s_l [K0 + Y ((U / sigma_a^2)^l - I) G^{-1} Y^T]``, l = 0..L (THEORY.md 1.3).

    Directions with ``G = 0`` carry no target and are dropped (their ``Y q`` vanishes).
    """
    K0, Y = np.asarray(K0, dtype=np.float64), as_2d(Y)
    s = layer_products(sigma_w2)
    g, Q = eigh(task_gram(K0, Y))
    keep = g > 1e-12 * max(g.max(), 1e-300)
    Qk, gk = Q[:, keep], g[keep]
    u = np.diag(Qk.T @ U @ Qk)
    YQ = Y @ Qk
    out = [K0]
    for layer, s_l in enumerate(s, start=1):
        d = ((u / sigma_a2) ** layer - 1.0) / gk
        out.append(s_l * (K0 + (YQ * d) @ YQ.T))
    return np.stack([symmetric_part(K) for K in out])


def solve_linear_zero_T(K0, Y, sigma_w2, sigma_a2: float, large_P: bool = False) -> LinearSolution:
    """Deep linear network at T0 -> 0 (THEORY.md 1.3): U, kernels, ``Lambda = K0^{-1} Y V^{-1} / s_L``.

    Parameters
    ----------
    K0 : array (P, P), invertible
    Y : array (P, m)
    sigma_w2 : sequence of float, length L
    sigma_a2 : float
    large_P : bool
        Use the paper's ``U^{L+1} = sigma_a^{2L} G`` instead of the exact equation.
    """
    K0, Y = np.asarray(K0, dtype=np.float64), as_2d(Y)
    s = layer_products(sigma_w2)
    U, res = readout_covariance_zero_T(task_gram(K0, Y), sigma_a2, sigma_w2, large_P)
    V = matrix_function(U, lambda w: w**s.size / sigma_a2 ** (s.size - 1))
    Lam = np.linalg.solve(K0, Y) @ np.linalg.inv(V) / s[-1]
    return LinearSolution(U, Lam, Y.copy(), kernels_zero_T(K0, Y, U, sigma_w2, sigma_a2), res,
                          "large_P" if large_P else "exact")


# ----------------------------------------------------------------------------- finite T0


def _field(kappa, Yhat, V, s_L, T0):
    """``Lambda`` (in K0's eigenbasis) from ``T0 Lambda + s_L K0 Lambda V = Y``."""
    w, Q = eigh(symmetric_part(V))
    return ((Yhat @ Q) / (T0 + s_L * kappa[:, None] * w[None, :])) @ Q.T


def _readout_residual(U, kappa, Yhat, s, sigma_a2, T0):
    """``sigma_a^{-2} I - U^{-1} - s_L (Lambda^T K0 Lambda) (U / sigma_a^2)^{L-1}``."""
    L = s.size
    V = matrix_function(U, lambda w: np.maximum(w, 1e-300) ** L / sigma_a2 ** (L - 1))
    Lam = _field(kappa, Yhat, V, s[-1], T0)
    S = s[-1] * Lam.T @ (kappa[:, None] * Lam)
    Up = matrix_function(U, lambda w: (np.maximum(w, 1e-300) / sigma_a2) ** (L - 1))
    return np.eye(U.shape[0]) / sigma_a2 - np.linalg.inv(U) - S @ Up, Lam, V


def _initial_U(kappa, Yhat, s, sigma_a2, T0):
    """T0 -> 0 solution with ``K0`` regularised by ``T0 / s_L`` (a starting point)."""
    G = Yhat.T @ (Yhat / (kappa + T0 / s[-1])[:, None])
    return readout_covariance_zero_T(G, sigma_a2, s)[0]


def solve_linear(K0, Y, sigma_w2, sigma_a2: float, T0: float, large_P: bool = False) -> LinearSolution:
    """Deep linear non-lazy network at temperature T0 (module docstring; THEORY.md 1.3).

    ``T0 = 0`` (or ``large_P``) uses the closed forms of :func:`solve_linear_zero_T`.  For
    ``T0 > 0`` the m x m equation for U is solved by a root finder (hybr) from the T0 -> 0
    solution; ``Lambda`` follows in K0's eigenbasis and the kernels from ``K^l = s_l K0 A^l``.
    L = 1 reproduces THEORY.md 1.3 "Finite T0": ``Y - C0 Lambda U = T0 Lambda``,
    ``U = (sigma_a^{-2} - Lambda^T C0 Lambda)^{-1}``, ``K^1 = C0 + C0 Lambda U Lambda^T C0``.

    Returns
    -------
    LinearSolution
        ``residual``: the larger of the U-equation and output-constraint residuals.
    """
    if T0 == 0.0 or large_P:
        return solve_linear_zero_T(K0, Y, sigma_w2, sigma_a2, large_P)
    K0, Y = np.asarray(K0, dtype=np.float64), as_2d(Y)
    s = layer_products(sigma_w2)
    kappa, Vk = eigh(K0)
    kappa = np.maximum(kappa, 0.0)
    Yhat = Vk.T @ Y
    m = Y.shape[1]
    def fun(v):
        return pack_symmetric(symmetric_part(
            _readout_residual(unpack_symmetric(v, m), kappa, Yhat, s, sigma_a2, T0)[0]))
    sol = root(fun, pack_symmetric(_initial_U(kappa, Yhat, s, sigma_a2, T0)), method="hybr",
               options={"xtol": 1e-14})
    U = unpack_symmetric(sol.x, m)
    R, Lam_hat, V = _readout_residual(U, kappa, Yhat, s, sigma_a2, T0)
    Lam = Vk @ Lam_hat
    out_res = Y - T0 * Lam - s[-1] * K0 @ Lam @ V
    residual = max(float(np.max(np.abs(R))), float(np.max(np.abs(out_res))))
    return LinearSolution(U, Lam, Y - T0 * Lam, _kernels_from_field(K0, Lam, V, s), residual, "exact")


def _kernels_from_field(K0, Lam, V, s) -> np.ndarray:
    """``K^l = sigma_l^2 K^{l-1} A``, ``A = I + s_L Lambda V Lambda^T K0`` (module docstring)."""
    A = np.eye(K0.shape[0]) + s[-1] * Lam @ V @ Lam.T @ K0
    out, K = [K0], K0
    sig = np.concatenate([[s[0]], s[1:] / s[:-1]])
    for sig_l in sig:
        K = sig_l * K @ A
        out.append(symmetric_part(K))
    return np.stack(out)


# ----------------------------------------------------------------------------- test inputs


def test_coefficients(K0, k0):
    """``h(x) = K0^+ k0(x)`` (P, P_test): the regression of a test preactivation on the training ones."""
    return np.linalg.lstsq(np.asarray(K0, dtype=np.float64), np.asarray(k0, dtype=np.float64),
                           rcond=1e-12)[0]


def linear_test(sol: LinearSolution, K0, k0, K0_test, sigma_w2, sigma_a2: float, T0: float,
                width: int) -> LinearTest:
    """Predictor and kernels on test inputs (THEORY.md 1.3; paper, "Generalization").

    Every layer's test preactivation splits exactly as ``z_l(x) = Z_l h + xi_l`` with
    ``h = K0^+ k0(x)`` (linear network), so

        f(x) = h^T F_train,   K^l(x_mu, x) = (K^l h)_mu,   K^l(x, x') = h^T K^l h' + s_l Delta0(x, x'),
        Delta0(x, x') = K0(x, x') - k0(x)^T h(x').

    At T0 = 0, ``f = k0^T K0^{-1} Y`` (the lazy/GP mean) and ``K^l`` is the training kernel with Y
    replaced by the predictor (paper).  Variance, O(1/N):

        Var f_r(x) = (1/N) [ s_L Delta0(x) U_rr + T0 (h e_r)^T (dF_train / dY) (h e_r) ],

    the first term THEORY.md 1.3 (exact at L = 1; the leading term for L > 1), the second the
    fluctuation of the training outputs, ``Cov F_train = (T0 / N) dF_train / dY``
    (fluctuation-dissipation for the likelihood ``exp(-N |Y - F|^2 / 2 T0)``), with the derivative
    taken through the solution (implicit differentiation of the U equation); 0 at T0 = 0.

    Parameters
    ----------
    K0 : (P, P); k0 : (P, P_test) ``X_train X_test^T / N0``; K0_test : (P_test, P_test)
    """
    s = layer_products(sigma_w2)
    h = test_coefficients(K0, k0)
    mean = h.T @ sol.F_train
    D = np.asarray(K0_test, dtype=np.float64) - np.asarray(k0).T @ h
    cross = np.stack([K @ h for K in sol.kernels])
    scales = np.concatenate([[1.0], s])
    test = np.stack([symmetric_part(h.T @ K @ h + sc * D) for K, sc in zip(sol.kernels, scales)])
    var = s[-1] * np.maximum(np.diag(D), 0.0)[:, None] * np.diag(sol.U)[None, :]
    if T0 > 0.0 and sol.method == "exact":
        Y = sol.F_train + T0 * sol.Lambda
        var = var + T0 * training_response(K0, Y, h, sol.U, s, sigma_a2, T0)
    return LinearTest(mean, var / width, cross, test)


def training_response(K0, Y, h, U, s, sigma_a2: float, T0: float) -> np.ndarray:
    """``(h e_r)^T (dF_train / dY) (h e_r)`` for every test column of h and output r (P_test, m).

    ``F = Y - T0 Lambda(Y, U(Y))``.  The fixed-U part is block diagonal in K0's eigenbasis,
    ``(T0 + s_L kappa_k V)^{-1}``; the part through U uses ``dU = -J^{-1} dR`` with J the Jacobian
    of the symmetrised U equation and ``dR = -dS (U / sigma_a^2)^{L-1}``,
    ``dS = s_L (dLambda^T K0 Lambda + Lambda^T K0 dLambda)`` (implicit differentiation; the
    U-derivatives by central differences, m(m+1)/2 of them).
    """
    kappa, Vk = eigh(np.asarray(K0, dtype=np.float64))
    kappa = np.maximum(kappa, 0.0)
    L, m = s.size, U.shape[0]
    Yhat, hh = Vk.T @ as_2d(Y), Vk.T @ h                              # (P, m), (P, T)
    w, Q = eigh(matrix_function(U, lambda x: x**L / sigma_a2 ** (L - 1)))
    inv = np.einsum("rj,kj,sj->krs", Q, 1.0 / (T0 + s[-1] * kappa[:, None] * w[None, :]), Q)
    fixed = np.einsum("kt,krr->tr", hh**2, inv)
    Lh = _field(kappa, Yhat, matrix_function(U, lambda x: x**L / sigma_a2 ** (L - 1)), s[-1], T0)
    M = np.einsum("kt,k,krb,ka->trab", hh, kappa, inv, Lh)           # dLambda^T K0 Lambda, E = h e_r
    Up = matrix_function(U, lambda x: (x / sigma_a2) ** (L - 1))
    dR = -s[-1] * (M + np.swapaxes(M, -1, -2)) @ Up
    iu = np.triu_indices(m)
    b = (0.5 * (dR + np.swapaxes(dR, -1, -2)))[..., iu[0], iu[1]]    # (T, m, n_p)
    J, dLam = _u_derivatives(kappa, Yhat, U, s, sigma_a2, T0)
    dU = -np.einsum("ij,trj->tri", np.linalg.inv(J), b)
    through_U = np.einsum("kt,ikr,tri->tr", hh, dLam, dU)
    return np.sum(hh**2, axis=0)[:, None] - T0 * (fixed + through_U)


def _u_derivatives(kappa, Yhat, U, s, sigma_a2, T0, eps=1e-6):
    """Jacobian of the packed symmetrised U residual, and ``dLambda_hat / du_i``, by central differences."""
    m = U.shape[0]
    n_p = m * (m + 1) // 2
    J, dLam = np.empty((n_p, n_p)), np.empty((n_p,) + Yhat.shape)
    for i in range(n_p):
        e = np.zeros(n_p)
        e[i] = eps * max(1.0, np.abs(pack_symmetric(U)).max())
        Rp, Lp, _ = _readout_residual(U + unpack_symmetric(e, m), kappa, Yhat, s, sigma_a2, T0)
        Rm, Lm, _ = _readout_residual(U - unpack_symmetric(e, m), kappa, Yhat, s, sigma_a2, T0)
        J[:, i] = (pack_symmetric(symmetric_part(Rp)) - pack_symmetric(symmetric_part(Rm))) / (2 * e[i])
        dLam[i] = (Lp - Lm) / (2 * e[i])
    return J, dLam


# ----------------------------------------------------------------------------- rate function


def wishart_rate(K, C) -> float:
    """``I(K|C) = 1/2 [Tr C^{-1} K - ln det(C^{-1} K) - P]``: the large-deviation rate of the
    empirical kernel of N iid ``N(0, C)`` vectors (per N; THEORY.md 1.2 for linear phi)."""
    M = np.linalg.solve(C, K)
    sign, logdet = np.linalg.slogdet(M)
    return 0.5 * (np.trace(M) - logdet - K.shape[0]) if sign > 0 else np.inf


class OutputRate(NamedTuple):
    """``I_out(C)`` of THEORY.md 1.2 (linear phi) and its maximiser."""

    value: float
    Lambda: np.ndarray
    U: np.ndarray
    residual: float


def _out_objective(Lam, C, Y, sigma_a2, T0):
    B = np.eye(Y.shape[1]) - sigma_a2 * Lam.T @ C @ Lam
    sign, logdet = np.linalg.slogdet(B)
    if sign <= 0 or np.linalg.eigvalsh(symmetric_part(B)).min() <= 0:
        return -np.inf, None
    val = np.sum(Lam * Y) - 0.5 * T0 * np.sum(Lam**2) + 0.5 * logdet
    grad = Y - T0 * Lam - sigma_a2 * C @ Lam @ np.linalg.inv(B)
    return val, grad


def output_rate(C, Y, sigma_a2: float, T0: float, tol: float = 1e-13) -> OutputRate:
    """``I_out(C) = sup_Lambda [Tr Lambda^T Y - T0/2 |Lambda|^2 + 1/2 ln det(I - sigma_a^2 Lambda^T C
    Lambda)]`` (THEORY.md 1.2 with ``E exp(sigma_a^2 |Lambda^T z|^2 / 2) = det(...)^{-1/2}``).

    Concave in Lambda; maximised by Newton steps (finite-difference Hessian of the analytic
    gradient) with backtracking inside the domain.  ``U = (sigma_a^{-2} - Lambda^T C Lambda)^{-1}``.
    """
    C, Y = np.asarray(C, dtype=np.float64), as_2d(Y)
    Lam = np.zeros_like(Y)
    val, grad = _out_objective(Lam, C, Y, sigma_a2, T0)
    for _ in range(200):
        H = _fd_hessian(lambda L: _out_objective(L, C, Y, sigma_a2, T0)[1], Lam)
        step = -np.linalg.solve(H, grad.ravel()).reshape(Lam.shape)
        t = 1.0
        while True:
            new_val, new_grad = _out_objective(Lam + t * step, C, Y, sigma_a2, T0)
            if new_val >= val - 1e-15 * abs(val):
                break
            t *= 0.5
            if t < 1e-12:
                return _output_result(Lam, val, grad, C, Y, sigma_a2)
        Lam, val, grad = Lam + t * step, new_val, new_grad
        if np.max(np.abs(grad)) < tol:
            break
    return _output_result(Lam, val, grad, C, Y, sigma_a2)


def _output_result(Lam, val, grad, C, Y, sigma_a2) -> OutputRate:
    U = np.linalg.inv(np.eye(Y.shape[1]) / sigma_a2 - Lam.T @ C @ Lam)
    return OutputRate(float(val), Lam, symmetric_part(U), float(np.max(np.abs(grad))))


def _fd_hessian(grad_fn, x, eps=1e-6):
    n = x.size
    H = np.empty((n, n))
    for i in range(n):
        d = np.zeros(n)
        d[i] = eps * max(1.0, abs(x.ravel()[i]))
        gp, gm = grad_fn(x + d.reshape(x.shape)), grad_fn(x - d.reshape(x.shape))
        if gp is None or gm is None:
            gp, gm, d[i] = grad_fn(x + d.reshape(x.shape)), grad_fn(x), d[i] / 2
        H[:, i] = (gp - gm).ravel() / (2 * d[i])
    return 0.5 * (H + H.T)


class RateMinimum(NamedTuple):
    """Direct minimiser of the deep linear rate function (an independent check of the closed forms)."""

    kernels: np.ndarray  # (L+1, P, P): K0, K^1..K^{L-1} (minimised), K^L = C + C Lambda U Lambda^T C
    U: np.ndarray
    Lambda: np.ndarray
    value: float
    gradient: float


def linear_rate(hidden, K0, Y, sigma_w2, sigma_a2: float, T0: float):
    """Deep rate ``sum_{l<L} I(K^l | sigma_l^2 K^{l-1}) + I_out(sigma_L^2 K^{L-1})`` (THEORY.md 1.2)
    and its gradient with respect to the hidden kernels ``K^1 .. K^{L-1}`` (envelope theorem)."""
    sig = np.atleast_1d(np.asarray(sigma_w2, dtype=np.float64))
    Ks = [np.asarray(K0, dtype=np.float64)] + list(hidden)
    C = [sig[layer] * Ks[layer] for layer in range(len(sig))]  # C[l] = cov of layer l+1
    value = sum(wishart_rate(Ks[layer], C[layer - 1]) for layer in range(1, len(Ks)))
    out = output_rate(C[-1], Y, sigma_a2, T0)
    grads = []
    for layer in range(1, len(Ks)):
        Ci, Ki = np.linalg.inv(C[layer - 1]), np.linalg.inv(Ks[layer])
        g = 0.5 * (Ci - Ki)
        if layer + 1 < len(Ks):
            Cn = np.linalg.inv(C[layer])
            g = g + sig[layer] * 0.5 * (Cn - Cn @ Ks[layer + 1] @ Cn)
        else:
            g = g - sig[layer] * 0.5 * out.Lambda @ out.U @ out.Lambda.T
        grads.append(symmetric_part(g))
    return value + out.value, grads, out


def minimise_linear_rate(K0, Y, sigma_w2, sigma_a2: float, T0: float) -> RateMinimum:
    """Minimise the deep linear rate function over ``K^1..K^{L-1}`` (Cholesky parametrisation,
    L-BFGS with the analytic gradient).  For small P only; used to check :func:`solve_linear`.

    The minimum value is ``-(1/N) ln Z`` up to a constant (``I_out`` is the output's free energy
    given the top kernel, ``min_q KL + |F - Y|^2 / (2 T0)`` in dual form).
    """
    K0 = np.asarray(K0, dtype=np.float64)
    s = layer_products(sigma_w2)
    P, nh = K0.shape[0], s.size - 1
    il = np.tril_indices(P)

    def unpack(v):
        Ls = [np.zeros((P, P)) for _ in range(nh)]
        for i in range(nh):
            Ls[i][il] = v[i * len(il[0]):(i + 1) * len(il[0])]
        return Ls

    def fun(v):
        Ls = unpack(v)
        val, grads, _ = linear_rate([L @ L.T for L in Ls], K0, Y, sigma_w2, sigma_a2, T0)
        return val, np.concatenate([(2.0 * g @ L)[il] for g, L in zip(grads, Ls)]) if nh else np.zeros(0)

    v0 = np.concatenate([np.linalg.cholesky(s[i] * K0)[il] for i in range(nh)]) if nh else np.zeros(0)
    if nh:
        v = minimize(fun, v0, jac=True, method="L-BFGS-B",
                     options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 5000}).x
    else:
        v = v0
    Ls = unpack(v)
    hidden = [L @ L.T for L in Ls]
    val, grads, out = linear_rate(hidden, K0, Y, sigma_w2, sigma_a2, T0)
    C = (s[-1] / (s[-2] if nh else 1.0)) * (hidden[-1] if nh else K0)
    top = C + C @ out.Lambda @ out.U @ out.Lambda.T @ C
    gmax = max([float(np.max(np.abs(g))) for g in grads], default=0.0)
    return RateMinimum(np.stack([K0] + hidden + [symmetric_part(top)]), out.U, out.Lambda, float(val), gmax)
