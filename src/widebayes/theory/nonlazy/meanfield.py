"""One hidden layer, any activation: the single-neuron tilted measure (THEORY.md 1.2), by quadrature.

For L = 1 the N neurons are exchangeable and, as N -> inf at fixed P, their empirical measure
concentrates on the tilted prior

    q(a, z) ∝ N(a; 0, sigma_a^2 I) N(z; 0, C0) exp(a^T Lambda^T phi(z)),   C0 = sigma_1^2 K0,
    q(a | z) = N(sigma_a^2 Lambda^T phi(z), sigma_a^2 I),
    q(z) ∝ N(z; 0, C0) exp(sigma_a^2 |Lambda^T phi(z)|^2 / 2),
    Lambda = (sigma_a^2 K_phi + T0 I)^{-1} Y,   K_phi = E_q[phi(z) phi(z)^T].

Lambda is the minimiser of the convex function (dual of the Sanov rate, THEORY.md 1.2)

    Psi(Lambda) = ln E_{N(0, C0)} exp(sigma_a^2 |Lambda^T phi(z)|^2 / 2) + T0/2 |Lambda|^2 - Tr Lambda^T Y,

whose gradient is ``sigma_a^2 K_phi Lambda + T0 Lambda - Y`` and whose Hessian is ``T0 I`` plus the
covariance under q of the per-neuron output statistic ``t = vec(phi(z) a^T)``.  Expectations over
z in R^P use a tensor Gauss-Hermite grid, so this general path is for small P (P <= ~5); the
class-structured reduction (``classes``) covers large P.

Test inputs: ``z(x) | z ~ N(h^T z, Delta(x))``, ``h = K0^+ k0(x)``, ``Delta = sigma_1^2 (K0(x,x) -
k0^T K0^+ k0)``; the mean predictor is ``f(x) = sigma_a^2 Lambda^T E_q[phi(z) g(x, z)]`` with
``g = E[phi(z(x)) | z]`` (THEORY.md 1.2).  Its O(1/N) variance is the Gaussian fluctuation of the
neuron average around the mean field with the training outputs pinned by the likelihood
(derived here, the standard second-order expansion of the tilted measure):

    N Var f_r(x) = E_q[a_r^2 Var(phi(z(x)) | z)] + S_gg - S_gt (S_tt + T0 I)^{-1} S_tg,

with ``g_r = a_r E[phi(z(x)) | z]`` and ``S`` the covariances under q.  For linear phi at T0 = 0
this is THEORY.md 1.3's ``Delta(x) U / N``; on a training input it is ``T0 S (S + T0)^{-1} / N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from widebayes.quadrature import psd_sqrt
from widebayes.theory.gp import as_2d
from widebayes.theory.nonlazy.gaussian import GaussGrid, gauss_grid, gaussian_mean, gaussian_second_moment

NODE_BUDGET = 100_000
MAX_NODES_PER_AXIS = 40
MIN_NODES_PER_AXIS = 8


class TiltedMeasure(NamedTuple):
    """The single-neuron measure on a quadrature grid.

    Attributes
    ----------
    phi : ndarray (n, P)
        ``phi(z)`` at the nodes.
    z : ndarray (n, P)
    w : ndarray (n,)
        Normalised weights of q(z) at the nodes.
    mu : ndarray (n, m)
        ``E[a | z] = sigma_a^2 Lambda^T phi(z)``.
    log_partition : float
        ``ln E_{N(0, C0)} exp(sigma_a^2 |Lambda^T phi|^2 / 2)``.
    """

    phi: np.ndarray
    z: np.ndarray
    w: np.ndarray
    mu: np.ndarray
    log_partition: float


class MeanFieldSolution(NamedTuple):
    """Solution of the single-neuron self-consistency (THEORY.md 1.2).

    Attributes
    ----------
    Lambda : ndarray (P, m)
    K_phi : ndarray (P, P)
        Posterior-averaged feature kernel ``E_q[phi phi^T]`` (= the stored layer-1 kernel).
    F_train : ndarray (P, m)
        ``sigma_a^2 K_phi Lambda`` (= ``Y - T0 Lambda`` at the solution).
    readout_mean : ndarray (m,)
        ``E[a] = sigma_a^2 Lambda^T E_q[phi]``.
    readout_second_moment : ndarray (m, m)
        ``E[a a^T] = sigma_a^2 I + sigma_a^4 Lambda^T K_phi Lambda``.
    residual : float
        ``max |sigma_a^2 K_phi Lambda + T0 Lambda - Y|``.
    measure : TiltedMeasure
    num_nodes : int
        Quadrature nodes per axis.
    scale : float
        Widening of the quadrature's reference Gaussian.
    """

    Lambda: np.ndarray
    K_phi: np.ndarray
    F_train: np.ndarray
    readout_mean: np.ndarray
    readout_second_moment: np.ndarray
    residual: float
    measure: TiltedMeasure
    num_nodes: int
    scale: float


def nodes_per_axis(P: int, budget: int = NODE_BUDGET) -> int:
    """Gauss-Hermite nodes per axis for a tensor grid in R^P within ``budget`` nodes."""
    return int(np.clip(np.floor(budget ** (1.0 / P)), MIN_NODES_PER_AXIS, MAX_NODES_PER_AXIS))


def tilted_measure(grid: GaussGrid, phi_z, Lam, sigma_a2: float) -> TiltedMeasure:
    """``q(z) ∝ N(z; 0, C0) exp(sigma_a^2 |Lambda^T phi(z)|^2 / 2)`` on the grid (THEORY.md 1.2)."""
    proj = phi_z @ Lam
    logq = grid.logw + 0.5 * sigma_a2 * np.sum(proj**2, axis=1)
    logZ = float(logsumexp(logq))
    return TiltedMeasure(phi_z, grid.z, np.exp(logq - logZ), sigma_a2 * proj, logZ)


def output_statistic_cov(q: TiltedMeasure, sigma_a2: float) -> np.ndarray:
    """Covariance under q of ``t = vec(phi(z) a^T)`` (row-major, index ``mu * m + r``).

    ``E[phi_mu a_r phi_nu a_s] = E_z[phi_mu phi_nu (mu_r mu_s + sigma_a^2 delta_rs)]``.
    """
    n, P = q.phi.shape
    m = q.mu.shape[1]
    t = (q.phi[:, :, None] * q.mu[:, None, :]).reshape(n, P * m)
    Kphi = (q.phi * q.w[:, None]).T @ q.phi
    second = (t * q.w[:, None]).T @ t + sigma_a2 * np.kron(Kphi, np.eye(m))
    mean = q.w @ t
    return second - np.outer(mean, mean)


def grid_measure(C0, phi: Callable, sigma_a2: float, num_nodes: int, scale: float = 1.0):
    """``Lambda -> TiltedMeasure`` on a fixed tensor Gauss-Hermite grid (any phi)."""
    grid = gauss_grid(C0, num_nodes, scale)
    phi_z = np.asarray(phi(grid.z), dtype=np.float64)
    return lambda Lam: tilted_measure(grid, phi_z, Lam, sigma_a2)


def _sphere(P: int, num_directions: int, seed: int = 0) -> np.ndarray:
    """Antithetic scrambled-Sobol directions on the unit sphere S^{P-1} (rows)."""
    if P == 1:
        return np.array([[1.0], [-1.0]])
    from scipy.special import ndtri
    from scipy.stats import qmc

    u = qmc.Sobol(d=P, scramble=True, seed=seed).random(num_directions // 2)
    x = ndtri(np.clip(u, 1e-12, 1 - 1e-12))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.vstack([x, -x])


def radial_measure(C0, sigma_a2: float, num_directions: int = 2**14, num_radial: int = 16):
    """``Lambda -> TiltedMeasure`` for ReLU, with the radial integral done exactly.

    ReLU is 1-homogeneous, so along ``z = r C0^{1/2} u`` (u on the unit sphere) the tilted density
    is ``r^{P-1} exp(-(1 - b(u)) r^2 / 2)``, ``b(u) = sigma_a^2 |Lambda^T relu(C0^{1/2} u)|^2``.
    With ``s = (1 - b) r^2 / 2`` this is generalised Gauss-Laguerre (alpha = P/2 - 1) times the
    direction weight ``(1 - b(u))^{-P/2}``; ``ln Z = ln mean_u (1 - b(u))^{-P/2}``.  Exact in r
    for every polynomial moment used here; the directions are quasi-random.  Returns None where
    ``max b >= 1`` (no normalisable bulk: THEORY.md 1.5's lambda* >= 1).
    """
    from scipy.special import roots_genlaguerre

    C0 = np.atleast_2d(np.asarray(C0, dtype=np.float64))
    P = C0.shape[0]
    dirs = _sphere(P, num_directions) @ psd_sqrt(C0).T                  # C0^{1/2} u
    s, ws = roots_genlaguerre(num_radial, P / 2.0 - 1.0)
    ws = ws / ws.sum()
    act_dirs = np.maximum(dirs, 0.0)

    def measure(Lam):
        b = sigma_a2 * np.sum((act_dirs @ Lam) ** 2, axis=1)
        if b.max() >= 1.0:
            return None
        logw_dir = -0.5 * P * np.log1p(-b)
        logZ = float(logsumexp(logw_dir) - np.log(b.size))
        radius = np.sqrt(2.0 * s[None, :] / (1.0 - b[:, None]))          # (M, R)
        z = (radius[:, :, None] * dirs[:, None, :]).reshape(-1, P)
        w = (np.exp(logw_dir - logsumexp(logw_dir))[:, None] * ws[None, :]).ravel()
        phi_z = np.maximum(z, 0.0)
        return TiltedMeasure(phi_z, z, w, sigma_a2 * phi_z @ Lam, logZ)

    return measure


def _psi(measure_fn, Lam, Y, sigma_a2, T0):
    q = measure_fn(Lam)
    if q is None:
        return np.inf, None, None
    Kphi = (q.phi * q.w[:, None]).T @ q.phi
    grad = sigma_a2 * Kphi @ Lam + T0 * Lam - Y
    return q.log_partition + 0.5 * T0 * np.sum(Lam**2) - np.sum(Lam * Y), grad, q


def _newton(measure_fn, Y, sigma_a2, T0, tol, max_iter=200):
    """Damped Newton on the convex Psi (module docstring) from ``Lambda = 0``."""
    Lam = np.zeros_like(Y)
    val, grad, q = _psi(measure_fn, Lam, Y, sigma_a2, T0)
    for _ in range(max_iter):
        if np.max(np.abs(grad)) < tol:
            break
        H = output_statistic_cov(q, sigma_a2) + T0 * np.eye(Lam.size)
        step = -np.linalg.lstsq(H, grad.ravel(), rcond=1e-14)[0].reshape(Lam.shape)
        t = 1.0
        while t > 1e-10:
            new = _psi(measure_fn, Lam + t * step, Y, sigma_a2, T0)
            if new[0] <= val + 1e-14 * abs(val):
                break
            t *= 0.5
        else:
            break
        Lam, (val, grad, q) = Lam + t * step, new
    return Lam, grad, q


def solve_mean_field(C0, Y, phi: Callable, sigma_a2: float, T0: float, num_nodes: int | None = None,
                     scale: float = 1.0, tol: float = 1e-12, radial: bool = False) -> MeanFieldSolution:
    """Solve the single-neuron tilted measure for one hidden layer (THEORY.md 1.2).

    Parameters
    ----------
    C0 : array (P, P)
        Prior covariance of a neuron's preactivations, ``sigma_1^2 K0``.
    Y : array (P, m)
    phi : callable
        NumPy activation (vectorised).
    sigma_a2, T0 : float
        Readout prior variance; rescaled temperature (``T_eff = T0 / N``).
    num_nodes : int, optional
        Gauss-Hermite nodes per axis (default from :func:`nodes_per_axis`).
    scale : float
        Widen the reference Gaussian (for unbounded phi, whose tilt grows like
        ``exp(c |z|^2)``; see :func:`gaussian.gauss_grid`).
    radial : bool
        phi is ReLU: integrate with :func:`radial_measure` (exact in the radius) instead of the
        Gauss-Hermite grid; ``num_nodes`` is then ignored.

    Returns
    -------
    MeanFieldSolution
    """
    C0, Y = np.atleast_2d(np.asarray(C0, dtype=np.float64)), as_2d(Y)
    n = nodes_per_axis(C0.shape[0]) if num_nodes is None else num_nodes
    fn = radial_measure(C0, sigma_a2) if radial else grid_measure(C0, phi, sigma_a2, n, scale)
    Lam, grad, q = _newton(fn, Y, sigma_a2, T0, tol)
    Kphi = 0.5 * ((q.phi * q.w[:, None]).T @ q.phi + ((q.phi * q.w[:, None]).T @ q.phi).T)
    second = sigma_a2 * np.eye(Y.shape[1]) + sigma_a2**2 * Lam.T @ Kphi @ Lam
    return MeanFieldSolution(Lam, Kphi, sigma_a2 * Kphi @ Lam, sigma_a2 * Lam.T @ (q.w @ q.phi),
                             0.5 * (second + second.T), float(np.max(np.abs(grad))), q, n, scale)


def _negative_margin_ratio(u, L, G, sigma_a2: float):
    """``-R(L u)`` and its gradient in whitened coordinates, ``R(v) = sigma_a^2 relu(v)^T G relu(v) /
    v^T C0^{-1} v`` with ``C0 = L L^T`` (so ``v^T C0^{-1} v = |u|^2``) and ``G = Lambda Lambda^T``."""
    x = L @ u
    s = np.maximum(x, 0.0)
    Gs = G @ s
    uu = u @ u
    value = sigma_a2 * s @ Gs / uu
    grad = 2.0 * sigma_a2 * L.T @ ((x > 0) * Gs) / uu - 2.0 * value * u / uu
    return -value, -grad


def relu_margin(Lam, C0, sigma_a2: float, num_samples: int = 20_000, seed: int = 0,
                num_polished: int = 20, starts=None) -> float:
    """``lambda* = sigma_a^2 sup_{v in R^P} |Lambda^T relu(v)|^2 / v^T C0^{-1} v`` (THEORY.md 1.5).

    The bulk of a ReLU (or softplus) network is normalisable only for ``lambda* < 1``.  The negative
    parts of ``v`` leave the numerator and change the denominator; where the inputs are correlated
    they lower it (the conditional mean of the inactive preactivations given the active ones is not
    0), so the sup is over all of R^P.  (This searched ``v >= 0`` only until 2026-12-07; at the field
    of the sampled Fig. 6 ReLU network on MNIST that gave 0.31, where the sampled outlier neurons'
    own directions reach 1.15.)  Random directions in whitened coordinates ``v = L u`` and on the
    positive orthant, the best ``num_polished`` polished by L-BFGS on the ratio, and every row of
    ``starts`` (directions ``v`` known to the caller) polished too.  A local search: at large P the
    value is a lower bound.
    """
    Lam = as_2d(Lam)
    C0 = np.atleast_2d(np.asarray(C0, dtype=np.float64))
    L = np.linalg.cholesky(C0)
    G = Lam @ Lam.T
    P = Lam.shape[0]
    rng = np.random.default_rng(seed)
    V = np.vstack([rng.standard_normal((num_samples, P)) @ L.T, np.abs(rng.standard_normal((num_samples, P))),
                   np.eye(P)])
    U = np.linalg.solve(L, V.T).T
    S = np.maximum(V, 0.0)
    ratios = sigma_a2 * np.einsum("ip,pq,iq->i", S, G, S) / np.einsum("ip,ip->i", U, U)
    best = float(ratios.max())
    polish = U[np.argsort(ratios)[len(ratios) - num_polished:]]
    if starts is not None:
        polish = np.vstack([polish, np.linalg.solve(L, np.atleast_2d(starts).T).T])
    for u0 in polish:
        res = minimize(_negative_margin_ratio, u0 / np.linalg.norm(u0), args=(L, G, sigma_a2), jac=True,
                       method="L-BFGS-B", options={"maxiter": 1000})
        best = max(best, -float(res.fun))
    return best


class MeanFieldTest(NamedTuple):
    """Mean-field predictions on test inputs.

    Attributes
    ----------
    mean : ndarray (P_test, m)
    var : ndarray (P_test, m)
        O(1/N) predictor variance (module docstring).
    k_phi : ndarray (P, P_test)
        Posterior-averaged kernel between training and test inputs, ``E_q[phi(z_mu) phi(z(x))]``.
    k_diag : ndarray (P_test,)
        ``E_q[phi(z(x))^2]``.
    """

    mean: np.ndarray
    var: np.ndarray
    k_phi: np.ndarray
    k_diag: np.ndarray


def mean_field_test(sol: MeanFieldSolution, act, K0, k0, K0_test_diag, sigma_w2: float,
                    sigma_a2: float, T0: float, width: int, chunk: int = 64) -> MeanFieldTest:
    """Mean predictor, its O(1/N) variance, and test kernels of the general path (THEORY.md 1.2).

    Parameters
    ----------
    act : Activation or callable
        For ``E[phi(u)]`` and ``E[phi(u)^2]`` of Gaussian ``u`` with a mean (the activation's
        closed forms where it has them, ``Activation.mean`` / ``second_moment``).
    K0 : (P, P); k0 : (P, P_test); K0_test_diag : (P_test,)
    sigma_w2 : float
        First-layer prior variance (``C0 = sigma_w2 K0``).
    """
    q = sol.measure
    h = np.linalg.lstsq(np.asarray(K0, dtype=np.float64), np.asarray(k0, dtype=np.float64),
                        rcond=1e-12)[0]
    delta = sigma_w2 * np.maximum(np.asarray(K0_test_diag) - np.sum(np.asarray(k0) * h, 0), 0.0)
    S_tt = output_statistic_cov(q, sigma_a2)
    reg = np.linalg.pinv(S_tt + T0 * np.eye(S_tt.shape[0]), rcond=1e-12)
    parts = [_test_chunk(q, act, h[:, i:i + chunk], delta[i:i + chunk], sol.Lambda, sigma_a2, reg)
             for i in range(0, h.shape[1], chunk)]
    mean, var, k_phi, k_diag = (np.concatenate(p, axis=ax) for p, ax in zip(zip(*parts), (0, 0, 1, 0)))
    return MeanFieldTest(mean, var / width, k_phi, k_diag)


def _test_chunk(q, act, h, delta, Lam, sigma_a2, reg):
    n, P = q.phi.shape
    m = q.mu.shape[1]
    means = q.z @ h                                                  # (n, T)
    g = gaussian_mean(act, means, delta[None, :])                    # E[phi(z(x)) | z]
    cond_var = np.maximum(gaussian_second_moment(act, means, delta[None, :]) - g**2, 0.0)
    k_phi = (q.phi * q.w[:, None]).T @ g                             # (P, T)
    mean = sigma_a2 * k_phi.T @ Lam                                  # (T, m)
    a2 = q.mu**2 + sigma_a2                                          # E[a_r^2 | z]  (n, m)
    noise = (q.w[:, None] * cond_var).T @ a2                         # (T, m)
    S_gg = (q.w[:, None] * g**2).T @ a2 - mean**2
    t = (q.phi[:, :, None] * q.mu[:, None, :]).reshape(n, P * m)
    t_mean = q.w @ t
    S_gt = np.empty((h.shape[1], m, P * m))
    for r in range(m):  # E[g_r t_(mu,s)] = E_z[g phi_mu (mu_r mu_s + sigma_a^2 delta_rs)]
        second = (q.w[:, None] * g * q.mu[:, [r]]).T @ t
        second += sigma_a2 * np.kron(k_phi.T, np.eye(m)[r])
        S_gt[:, r, :] = second - mean[:, [r]] * t_mean[None, :]
    explained = np.einsum("trk,kl,trl->tr", S_gt, reg, S_gt)
    k_diag = q.w @ (g**2 + cond_var)
    return mean, noise + np.maximum(S_gg - explained, 0.0), k_phi, k_diag
