"""Gaussian expectations by quadrature, and the small matrix helpers the theory shares.

One copy each of:

- Gauss-Hermite rules (probabilists' nodes, weights normalised to sum 1) and the expectations
  ``E[f(u)]``, ``u ~ N(m, v)``, and ``E[f(u) f(w)]`` for a Gaussian pair with means, at an order the
  caller chooses (:func:`hermite_rule`, :func:`gauss_hermite_1d`, :func:`gauss_hermite_2d`,
  :func:`gauss_hermite_kernel`);
- the adaptive trapezoid rule for ``E[f(u)]`` and for the zero-mean pair expectation
  ``E[f(u) f(v)]``, accurate at any variance (the moments and the NNGP kernel map of an activation
  without a closed form, :func:`trapezoid_expectation`, :func:`trapezoid_kernel`);
- a square root of a positive semidefinite matrix (:func:`psd_sqrt`);
- the two meanings of "symmetrise": the symmetric part ``(A + A^T)/2`` of a square matrix
  (:func:`symmetric_part`), and the symmetric matrix whose upper triangle is a packed vector
  (:func:`unpack_symmetric`, inverse :func:`pack_symmetric`).

All functions are NumPy float64 and broadcast over leading shapes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: elements of the largest temporary array (pairs x nodes) evaluated at once
_BLOCK_ELEMENTS = 2**21
#: trapezoid rule: coarsest step and half-width of the grid in whitened units (N(0, 1))
TRAPEZOID_STEP = 0.5
TRAPEZOID_HALF_WIDTH = 9.0
#: finest level: step TRAPEZOID_STEP / 2**TRAPEZOID_LEVELS (pairs), / 2**TRAPEZOID_LEVELS_1D (1-d)
TRAPEZOID_LEVELS = 3
TRAPEZOID_LEVELS_1D = 6
#: relative accuracy asked of the trapezoid kernel (relative to sqrt(E[f(u)^2] E[f(v)^2]))
TRAPEZOID_TOL = 1e-10


# ----------------------------------------------------------------------------- Gauss-Hermite


@lru_cache(maxsize=64)
def hermite_rule(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes ``x`` and weights ``w`` (``sum w = 1``).

    ``sum_k w_k f(x_k) ~ E[f(x)]``, ``x ~ N(0, 1)``, exact for polynomials of degree
    ``< 2 num_nodes`` (``numpy.polynomial.hermite_e.hermegauss``).  The arrays are read-only.
    """
    x, w = np.polynomial.hermite_e.hermegauss(int(num_nodes))
    w = w / w.sum()
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def gauss_hermite_1d(f, mean, var, num_nodes: int) -> np.ndarray:
    """``E[f(u)]``, ``u ~ N(mean, var)``, elementwise over broadcast ``mean`` and ``var``.

    ``u = mean + sqrt(var) x`` at the nodes of :func:`hermite_rule` (negative ``var`` counts as 0).
    """
    x, w = hermite_rule(num_nodes)
    mean, var = np.broadcast_arrays(np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64))
    u = mean[..., None] + np.sqrt(np.maximum(var, 0.0))[..., None] * x
    return f(u) @ w


def gauss_hermite_2d(f, m1, m2, c11, c12, c22, num_nodes: int) -> np.ndarray:
    """``E[f(u) f(w)]``, ``(u, w) ~ N((m1, m2), [[c11, c12], [c12, c22]])``, elementwise.

    Tensor Gauss-Hermite rule in the Cholesky order ``u = m1 + sqrt(c11) x``,
    ``w = m2 + sqrt(c22) (rho x + sqrt(1 - rho^2) y)``, ``x, y`` iid N(0, 1), ``rho`` clipped to
    [-1, 1]; evaluated in blocks of pairs to bound memory.  The order treats u and w differently,
    so the quadrature error is not symmetric under exchanging them (:func:`gauss_hermite_kernel`
    averages both orders).
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (m1, m2, c11, c12, c22)))
    shape = arrays[0].shape
    flat = [a.ravel() for a in arrays]
    x, w = hermite_rule(num_nodes)
    xx, yy = (g.ravel() for g in np.meshgrid(x, x, indexing="ij"))
    ww = np.outer(w, w).ravel()
    out = np.empty(flat[0].shape)
    step = max(1, _BLOCK_ELEMENTS // xx.size)
    for start in range(0, out.size, step):
        block = slice(start, start + step)
        out[block] = _gh2_block(f, *(a[block] for a in flat), xx, yy, ww)
    return out.reshape(shape)


def _gh2_block(f, m1, m2, c11, c12, c22, xx, yy, ww):
    s1, s2 = np.sqrt(np.maximum(c11, 0.0)), np.sqrt(np.maximum(c22, 0.0))
    rho = np.clip(np.divide(c12, s1 * s2, out=np.zeros_like(c12), where=s1 * s2 > 0), -1.0, 1.0)
    u = m1[:, None] + s1[:, None] * xx[None, :]
    r = np.sqrt(1.0 - rho**2)
    w = m2[:, None] + s2[:, None] * (rho[:, None] * xx[None, :] + r[:, None] * yy[None, :])
    return (f(u) * f(w)) @ ww


def gauss_hermite_kernel(f, c12, c11, c22, num_nodes: int = 64) -> np.ndarray:
    """``E[f(u) f(v)]``, ``(u, v) ~ N(0, [[c11, c12], [c12, c22]])``: the mean of both orders of
    :func:`gauss_hermite_2d`, so that the result is exactly symmetric under exchanging u and v.

    Its error grows with the variances (the nodes do not resolve ``f(sqrt(c) x)`` once c is large:
    for tanh, relative error 2e-7 at c = 2, 1e-3 at c = 16 with 64 nodes); the activations' kernel
    maps use :func:`trapezoid_kernel` instead.
    """
    zero = 0.0 * np.asarray(c12, dtype=np.float64)
    return 0.5 * (gauss_hermite_2d(f, zero, zero, c11, c12, c22, num_nodes)
                  + gauss_hermite_2d(f, zero, zero, c22, c12, c11, num_nodes))


# ----------------------------------------------------------------------------- trapezoid


@lru_cache(maxsize=8)
def trapezoid_rule(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``x_k = k h`` on ``|x| <= TRAPEZOID_HALF_WIDTH``, ``h = TRAPEZOID_STEP / 2**level``,
    and weights ``h N(x_k; 0, 1)`` normalised to sum 1 (read-only).

    For ``E[g(x)]`` with ``g`` analytic in the strip ``|Im x| < d`` the error of the trapezoid rule
    falls like ``exp(-2 pi d / h)`` (Trefethen & Weideman, SIAM Review 56, 2014), so it roughly
    squares each time h halves; the truncation at ``|x| = 9`` leaves ``exp(-81/2)``.
    """
    h = TRAPEZOID_STEP / 2**level
    K = int(round(TRAPEZOID_HALF_WIDTH / h))
    x = h * np.arange(-K, K + 1)
    w = np.exp(-0.5 * x**2)
    w = w / w.sum()
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def trapezoid_kernel(f, c12, c11, c22, tol: float = TRAPEZOID_TOL, max_level: int = TRAPEZOID_LEVELS):
    """``E[f(u) f(v)]``, ``(u, v) ~ N(0, [[c11, c12], [c12, c22]])``, elementwise, to relative
    accuracy about ``tol``: the tensor trapezoid rule of :func:`trapezoid_rule`, refined per pair.

    ``u = sqrt(c11) x``, ``v = sqrt(c22) (rho x + sqrt(1 - rho^2) y)``.  Every pair is evaluated at
    levels 0 and 1; a pair is accepted at level l when its estimated error
    ``|I_l - I_{l-1}|^2 / S`` (the error squares per halving, :func:`trapezoid_rule`) is at most
    ``tol S``, ``S = sqrt(E[f(u)^2] E[f(v)^2]) >= |E[f(u) f(v)]|``, else it is refined, up to
    ``max_level`` (whose value is returned as it is: for f with a kink, where convergence is only
    O(h^2), that is about 1e-5 relative).  The step needed shrinks like ``1/sqrt(c)``: tanh stays
    at level 1 up to c of about 2 and reaches level 3 at c = 16 (relative error below 1e-12
    there).  Each pair is evaluated with ``c11 <= c22`` (exchanging u and v otherwise), so the
    result is exactly symmetric under the exchange.
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (c12, c11, c22)))
    shape = arrays[0].shape
    c12, c11, c22 = (a.ravel() for a in arrays)
    swap = c11 > c22
    c11, c22 = np.where(swap, c22, c11), np.where(swap, c11, c22)
    def levels(idx, level):
        return _trapezoid_levels(f, c12[idx], c11[idx], c22[idx], level)

    return _refined(levels, c12.size, tol, max_level).reshape(shape)


def _refined(levels, size: int, tol: float, max_level: int) -> np.ndarray:
    """Per-element adaptive refinement: ``levels(idx, level) -> (value, scale)`` at the elements
    ``idx``; an element is accepted at level l when ``|I_l - I_{l-1}|^2 <= tol S^2``."""
    todo = np.arange(size)
    previous = levels(todo, 0)[0]
    out = previous.copy()
    for level in range(1, max_level + 1):
        value, scale = levels(todo, level)
        out[todo] = value
        if level == max_level:
            break
        converged = (value - previous[todo]) ** 2 <= tol * scale**2
        todo = todo[~converged]
        previous = out.copy()
        if not todo.size:
            break
    return out


def _trapezoid_levels(f, c12, c11, c22, level: int):
    """``(E[f(u) f(v)], sqrt(E[f(u)^2] E[f(v)^2]))`` at one level, in blocks of pairs."""
    x, w = trapezoid_rule(level)
    value, scale = np.empty(c12.shape), np.empty(c12.shape)
    step = max(1, _BLOCK_ELEMENTS // x.size**2)
    for start in range(0, c12.size, step):
        block = slice(start, start + step)
        value[block], scale[block] = _trapezoid_block(f, c12[block], c11[block], c22[block], x, w)
    return value, scale


def _trapezoid_block(f, c12, c11, c22, x, w):
    s1, s2 = np.sqrt(np.maximum(c11, 0.0)), np.sqrt(np.maximum(c22, 0.0))
    rho = np.clip(np.divide(c12, s1 * s2, out=np.zeros_like(c12), where=s1 * s2 > 0), -1.0, 1.0)
    fu = f(s1[:, None] * x[None, :])                                            # (B, n)
    fv = f(s2[:, None, None] * (rho[:, None, None] * x[None, :, None]
                                + np.sqrt(1.0 - rho**2)[:, None, None] * x[None, None, :]))  # (B, n, n)
    value = (fu * (fv @ w)) @ w
    scale = np.sqrt((fu**2 @ w) * ((fv**2 @ w) @ w))
    return value, scale


def trapezoid_expectation(f, mean, var, tol: float = TRAPEZOID_TOL, max_level: int = TRAPEZOID_LEVELS_1D):
    """``E[f(u)]``, ``u ~ N(mean, var)``, elementwise over broadcast ``mean`` and ``var``, to
    relative accuracy about ``tol``: the trapezoid rule of :func:`trapezoid_rule` in
    ``u = mean + sqrt(var) x``, refined per element as in :func:`trapezoid_kernel` (accepted at
    level l when ``|I_l - I_{l-1}|^2 <= tol S^2``, ``S = sqrt(E[f(u)^2])``), up to ``max_level``.
    """
    mean, var = np.broadcast_arrays(np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64))
    shape = mean.shape
    mean, sd = mean.ravel(), np.sqrt(np.maximum(var.ravel(), 0.0))
    def levels(idx, level):
        return _trapezoid_1d(f, mean[idx], sd[idx], level)

    return _refined(levels, mean.size, tol, max_level).reshape(shape)


def _trapezoid_1d(f, mean, sd, level: int):
    """``(E[f(u)], sqrt(E[f(u)^2]))`` at one level, in blocks."""
    x, w = trapezoid_rule(level)
    value, scale = np.empty(mean.shape), np.empty(mean.shape)
    step = max(1, _BLOCK_ELEMENTS // x.size)
    for start in range(0, mean.size, step):
        block = slice(start, start + step)
        fu = f(mean[block, None] + sd[block, None] * x[None, :])
        value[block], scale[block] = fu @ w, np.sqrt(fu**2 @ w)
    return value, scale


# ----------------------------------------------------------------------------- matrices


def psd_sqrt(C, symmetric: bool = False) -> np.ndarray:
    """A square root ``S`` with ``S S^T = C`` of a positive semidefinite matrix (eigh; singular C
    allowed; negative eigenvalues of round-off count as 0).

    ``C = V diag(lam) V^T`` (of the symmetric part of C); ``S = V diag(sqrt(lam))``, or with
    ``symmetric=True`` the symmetric square root ``V diag(sqrt(lam)) V^T`` (then also ``S S = C``).
    """
    lam, V = np.linalg.eigh(symmetric_part(np.asarray(C, dtype=np.float64)))
    S = V * np.sqrt(np.maximum(lam, 0.0))
    return S @ V.T if symmetric else S


def symmetric_part(A) -> np.ndarray:
    """``(A + A^T) / 2`` over the last two axes."""
    A = np.asarray(A)
    return 0.5 * (A + np.swapaxes(A, -1, -2))


def pack_symmetric(U) -> np.ndarray:
    """The upper triangle of a square matrix (row-major, diagonal included) as a vector."""
    U = np.asarray(U)
    return U[np.triu_indices(U.shape[0])]


def unpack_symmetric(v, m: int) -> np.ndarray:
    """The symmetric m x m matrix whose upper triangle is ``v`` (inverse of :func:`pack_symmetric`)."""
    U = np.zeros((m, m))
    U[np.triu_indices(m)] = v
    return U + U.T - np.diag(np.diag(U))
