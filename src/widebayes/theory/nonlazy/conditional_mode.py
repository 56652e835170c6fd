"""One hidden layer, any task: preactivations at their mode given the readout (the paper's MNIST theory).

THEORY.md 1.2 writes a neuron's posterior as the tilted prior
``q(a, z) ∝ N(a; 0, sigma_a^2 I) N(z; 0, C0) exp(a^T Lambda^T phi(z))`` over its readout ``a``
(m values) and its preactivations ``z`` on the P training inputs.  For a task without class
structure (MNIST) the integral over ``z in R^P`` is out of reach for P of order 100; the coding-schemes
paper (sigmoid networks on MNIST) makes it tractable by *neglecting the fluctuations of the
preactivations conditioned on the readout weights*:

    z*(a) = argmax_z s(z),  s(z) = -1/2 z^T C0^{-1} z + b^T phi(z),  b = Lambda a,
    q(a)  ∝ N(a; 0, sigma_a^2 I) exp(s(z*(a))),     z | a = z*(a).

``q(a)`` lives in R^m.  In the non-lazy regime it is concentrated far out in the prior's tail
(readouts of order 1 against a prior width ``sigma_a = P^{-1/2}``), around a few *codes* (the
paper's readout vectors ``a_gamma``; several for sigmoids).  We find its local maxima by Newton
ascent from many starts and integrate it with a Gauss-Hermite grid in the Laplace frame of every
mode (``GH_NODES`` per axis), weighted by ``q / mixture of the Laplace Gaussians`` (deterministic-
mixture importance weights: exact where q is Gaussian, correct where modes overlap).  The
conjugate field solves

    R(Lambda) = E_q[phi(z*) a^T] + T0 Lambda - Y = 0

by Newton steps with the Gauss-Newton Jacobian ``Cov_q(phi a^T) + E_q[(D C0 D) (x) a a^T] + T0``
(``D = diag phi'(z*)``), halved until ``|R|`` falls.  For linear ``phi`` the approximation is exact:
``z*`` is linear in ``a``, ``q(a) = N(0, U)`` is one Gaussian mode and the results equal
``nonlazy.linear`` (tested).

Test inputs: ``z(x) | z* ~ N(h(x)^T z*, Delta(x))`` with ``h = K0^{-1} k0``; the mean predictor is
``E_q[E[phi(z(x)) | z*] a^T]`` and the O(1/N) predictor variance is the part of
``Var_neurons(phi(z(x)) a)`` that the training constraint does not fix (as in ``meanfield``).

Our own code: the field has no implementation of this approximation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.special import logsumexp

from widebayes.quadrature import hermite_rule
from widebayes.theory.nonlazy.gaussian import gaussian_mean, gaussian_second_moment

GH_NODES = 3  # Gauss-Hermite nodes per readout axis around each mode
INNER_TOL = 1e-7  # |C0 (phi' * b) - z|: preactivations are O(1)
INNER_MAX_ITER = 100
MODE_TOL = 1e-9
MODE_MAX_ITER = 200
MAX_FIELD_CHANGE = 5.0  # largest change of a neuron's field |b| = |Lambda a| in one outer step
MIN_MODE_WEIGHT = 1e-10
MAX_OUTPUTS = 4  # the code search starts from all 3^m - 1 sign directions
DIFF_STEP = 1e-4
MERGE_DISTANCE = 1e-3  # starts closer than this (in prior widths) are one


class ConditionalModeSolution(NamedTuple):
    """The solved measure and what it predicts on the training inputs.

    Attributes
    ----------
    Lambda : (P, m) conjugate field.
    a : (n, m) quadrature nodes of q(a); ``w`` (n,) their normalised weights.
    z : (n, P) preactivations at the mode given each node's readout; ``phi`` = phi(z).
    modes : (k, m) local maxima of q(a) (the codes); ``mode_weights`` (k,) their Laplace masses;
        ``mode_phi`` (k, P) phi(z*) at each of them.
    K_phi : (P, P) posterior-averaged feature kernel ``E_q[phi phi^T]``.
    F_train : (P, m) mean network output on the training inputs.
    readout_second_moment : (m, m) ``E_q[a a^T]``; ``readout_mean`` (m,).
    residual : max |R(Lambda)|; ``inner_residual``: largest |z - C0 (phi'(z) * Lambda a)| over nodes.
    """

    Lambda: np.ndarray
    a: np.ndarray
    w: np.ndarray
    z: np.ndarray
    phi: np.ndarray
    modes: np.ndarray
    mode_weights: np.ndarray
    mode_phi: np.ndarray
    K_phi: np.ndarray
    F_train: np.ndarray
    readout_second_moment: np.ndarray
    readout_mean: np.ndarray
    residual: float
    inner_residual: float


# ----------------------------------------------------------------------------- z given a


def derivatives(phi: Callable, z, h: float = DIFF_STEP):
    """``phi'(z)`` and ``phi''(z)`` by central differences (errors ~1e-8, float64)."""
    up, mid, down = phi(z + h), phi(z), phi(z - h)
    return (up - down) / (2.0 * h), (up - 2.0 * mid + down) / h**2


def conditional_modes(C0, C0_inv, B, phi: Callable, z0=None):
    """``z*`` for each row ``b`` of ``B (n, P)``: the maximiser of ``s(z) = -1/2 z^T C0^{-1} z + b^T phi(z)``.

    Damped Newton ascent, ``z <- z + t (I - C0 E)^{-1} (C0 (phi' * b) - z)``, ``E = diag(phi'' * b)``
    (:func:`_newton_direction`), ``t`` halved per node until ``s`` rises.
    Returns ``(z, s(z), max residual |C0 (phi' * b) - z|)``.
    """
    z = np.zeros_like(B) if z0 is None else np.array(z0, dtype=np.float64)
    s = _objective(C0_inv, z, phi(z), B)
    active = np.arange(len(B))
    for _ in range(INNER_MAX_ITER):
        d1, d2 = derivatives(phi, z[active])
        grad = (d1 * B[active]) @ C0 - z[active]
        moving = np.max(np.abs(grad), axis=1) >= INNER_TOL
        active, grad, d2 = active[moving], grad[moving], d2[moving]
        if active.size == 0:
            break
        step = _newton_direction(C0, C0_inv, d2 * B[active], grad)
        t = np.ones(active.size)
        todo = np.ones(active.size, dtype=bool)
        for _ in range(40):
            idx = active[todo]
            trial = z[idx] + t[todo, None] * step[todo]
            s_trial = _objective(C0_inv, trial, phi(trial), B[idx])
            ok = s_trial >= s[idx] - 1e-13 * np.abs(s[idx])
            z[idx[ok]], s[idx[ok]] = trial[ok], s_trial[ok]
            todo[np.flatnonzero(todo)[ok]] = False
            t[todo] *= 0.5
            if not todo.any():
                break
        active = active[~todo]  # a node whose step failed 40 halvings is at its maximum (round-off)
    d1, _ = derivatives(phi, z)
    return z, s, float(np.max(np.abs((d1 * B) @ C0 - z)))


def _newton_direction(C0, C0_inv, curvature, grad):
    """``(I - C0 E)^{-1} grad`` with ``E = diag(curvature)`` (the Newton step of ``s``); where that is not
    an ascent direction, the same with ``E`` clipped to ``min(E, 0)`` (always one)."""
    eye = np.eye(C0.shape[0])[None]
    step = np.linalg.solve(eye - C0[None] * curvature[:, None, :], grad[..., None])[..., 0]
    bad = np.einsum("np,pq,nq->n", grad, C0_inv, step) <= 0.0
    if bad.any():
        clipped = np.minimum(curvature[bad], 0.0)
        step[bad] = np.linalg.solve(eye - C0[None] * clipped[:, None, :], grad[bad][..., None])[..., 0]
    return step


def _objective(C0_inv, z, phi_z, B):
    return -0.5 * np.einsum("np,pq,nq->n", z, C0_inv, z) + np.sum(B * phi_z, axis=1)


# ----------------------------------------------------------------------------- q(a): modes and quadrature


class _Readout(NamedTuple):
    """``log q(a)`` (unnormalised) at readouts ``a`` with the conditional modes and curvature."""

    a: np.ndarray
    z: np.ndarray
    log_q: np.ndarray
    grad: np.ndarray  # d log q / da
    hess: np.ndarray  # d^2 log q / da^2
    inner: float


def readout_density(C0, C0_inv, Lam, sigma_a2: float, phi: Callable, a, z0=None) -> _Readout:
    """``log q(a) = -|a|^2 / (2 sigma_a^2) + s(z*(a))`` with its gradient
    ``-a / sigma_a^2 + Lambda^T phi(z*)`` and Hessian
    ``-I / sigma_a^2 + Lambda^T D (I - C0 E)^{-1} C0 D Lambda`` (implicit function theorem
    on ``z* = C0 (phi'(z*) * Lambda a)``, ``D = diag phi'``, ``E = diag(phi'' * Lambda a)``)."""
    B = a @ Lam.T
    z, s, inner = conditional_modes(C0, C0_inv, B, phi, z0)
    d1, d2 = derivatives(phi, z)
    m = a.shape[1]
    DL = d1[:, :, None] * Lam[None]  # (n, P, m)
    sens = np.linalg.solve(np.eye(len(C0))[None] - C0[None] * (d2 * B)[:, None, :], C0[None] @ DL)
    hess = -np.eye(m)[None] / sigma_a2 + np.einsum("npr,nps->nrs", DL, sens)
    return _Readout(a, z, -0.5 * np.sum(a**2, axis=1) / sigma_a2 + s, -a / sigma_a2 + phi(z) @ Lam,
                    0.5 * (hess + np.swapaxes(hess, 1, 2)), inner)


def readout_modes(C0, C0_inv, Lam, sigma_a2: float, phi: Callable, starts, z0=None) -> _Readout:
    """Local maxima of ``log q(a)`` reached by damped Newton ascent from each row of ``starts``,
    best first; duplicates (closer than ``MERGE_DISTANCE`` prior widths) and saddles removed."""
    r = readout_density(C0, C0_inv, Lam, sigma_a2, phi, starts, z0)
    for _ in range(MODE_MAX_ITER):
        if np.max(np.abs(r.grad) * np.sqrt(sigma_a2)) < MODE_TOL:
            break
        step = _ascent_direction(r.hess, r.grad, sigma_a2)
        t = np.ones((len(step), 1))
        trial = readout_density(C0, C0_inv, Lam, sigma_a2, phi, r.a + step, r.z)
        for _ in range(30):
            worse = trial.log_q < r.log_q - 1e-12 * np.abs(r.log_q)
            if not worse.any():
                break
            t[worse] *= 0.5
            retry = readout_density(C0, C0_inv, Lam, sigma_a2, phi, r.a[worse] + t[worse] * step[worse],
                                    r.z[worse])
            trial = _replace(trial, worse, retry)
        else:
            trial = _replace(trial, worse, _subset(r, worse))
        if np.allclose(trial.a, r.a, rtol=0.0, atol=1e-14):
            break
        r = _subset(trial, _first_of_each_cluster(trial.a, MERGE_DISTANCE * np.sqrt(sigma_a2)))
    return _distinct_maxima(r, sigma_a2)


def _first_of_each_cluster(a, radius: float) -> np.ndarray:
    """Indices of the rows of ``a`` not within ``radius`` of an earlier kept row (starts that met
    on their way up would follow the same path from there)."""
    keep = []
    for i in range(len(a)):
        if all(np.linalg.norm(a[i] - a[j]) > radius for j in keep):
            keep.append(i)
    return np.array(keep, dtype=int)


def _ascent_direction(hess, grad, sigma_a2):
    """Newton step where ``log q`` is concave, else a gradient step of one prior width."""
    step = np.empty_like(grad)
    for i, (H, g) in enumerate(zip(hess, grad)):
        if np.all(np.linalg.eigvalsh(H) < 0):
            step[i] = -np.linalg.solve(H, g)
        else:
            step[i] = g * np.sqrt(sigma_a2) / max(np.linalg.norm(g), 1e-300)
    return step


def _subset(r: _Readout, mask) -> _Readout:
    return _Readout(r.a[mask], r.z[mask], r.log_q[mask], r.grad[mask], r.hess[mask], r.inner)


def _replace(r: _Readout, mask, new: _Readout) -> _Readout:
    fields = []
    for old, upd in zip(r[:-1], new[:-1]):
        old = old.copy()
        old[mask] = upd
        fields.append(old)
    return _Readout(*fields, max(r.inner, new.inner))


def _distinct_maxima(r: _Readout, sigma_a2: float) -> _Readout:
    is_max = np.array([np.all(np.linalg.eigvalsh(H) < 0) for H in r.hess], dtype=bool)
    r = _subset(r, np.flatnonzero(is_max)[np.argsort(-r.log_q[is_max])])
    return _subset(r, _first_of_each_cluster(r.a, MERGE_DISTANCE * np.sqrt(sigma_a2)))


def sign_directions(m: int, radius: float) -> np.ndarray:
    """The ``3^m - 1`` sign directions ``{-1, 0, 1}^m`` (zero excluded) at ``radius``."""
    dirs = np.array([d for d in itertools.product((-1.0, 0.0, 1.0), repeat=m) if any(d)])
    return radius * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def mode_starts(modes, sigma_a2: float, scale: float, m: int) -> np.ndarray:
    """Where to start the ascent: the known modes, the origin and the sign directions
    (:func:`sign_directions`) at radius ``scale`` (at least three prior widths)."""
    radius = max(scale, 3.0 * np.sqrt(sigma_a2))
    return np.concatenate([modes.reshape(-1, m), np.zeros((1, m)), sign_directions(m, radius)])


class _Measure(NamedTuple):
    Lambda: np.ndarray
    a: np.ndarray
    w: np.ndarray
    z: np.ndarray
    phi: np.ndarray
    modes: _Readout
    mode_weights: np.ndarray
    inner: float


def mode_quadrature(C0, C0_inv, Lam, sigma_a2, phi, modes: _Readout, num_nodes: int = GH_NODES) -> _Measure:
    """Nodes and normalised weights of q(a): a Gauss-Hermite grid in every mode's Laplace frame,
    importance-weighted by ``q / sum_gamma pi_gamma N(a_gamma, Sigma_gamma)``."""
    m = modes.a.shape[1]
    x, wx = hermite_rule(num_nodes)  # probabilists' nodes: E_{N(0,1)}[f] ~ sum wx f(x)
    log_wx = np.log(wx)
    xi = np.array(list(itertools.product(x, repeat=m)))
    log_w_xi = np.sum(np.array(list(itertools.product(log_wx, repeat=m))), axis=1)
    covs = np.linalg.inv(-modes.hess)
    chols = np.linalg.cholesky(covs)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chols, axis1=1, axis2=2)), axis=1)
    log_pi = modes.log_q + 0.5 * log_det  # Laplace masses (up to a common constant)
    keep = log_pi - log_pi.max() > np.log(MIN_MODE_WEIGHT)
    modes, covs, chols, log_det, log_pi = (_subset(modes, keep), covs[keep], chols[keep], log_det[keep],
                                           log_pi[keep])
    log_pi -= logsumexp(log_pi)
    a = (modes.a[:, None, :] + np.einsum("krs,ns->knr", chols, xi)).reshape(-1, m)
    z0 = np.repeat(modes.z, len(xi), axis=0)
    dens = readout_density(C0, C0_inv, Lam, sigma_a2, phi, a, z0)
    diff = a[None, :, :] - modes.a[:, None, :]  # (k, n, m)
    maha = np.einsum("knr,krs,kns->kn", diff, np.linalg.inv(covs), diff)
    log_mix = logsumexp(log_pi[:, None] - 0.5 * maha - 0.5 * log_det[:, None] - 0.5 * m * np.log(2 * np.pi),
                        axis=0)
    log_w = np.repeat(log_pi, len(xi)) + np.tile(log_w_xi, len(log_pi)) + dens.log_q - log_mix
    w = np.exp(log_w - logsumexp(log_w))
    return _Measure(Lam, a, w, dens.z, phi(dens.z), modes, np.exp(log_pi), max(dens.inner, modes.inner))


# ----------------------------------------------------------------------------- the field Lambda


def _residual(q: _Measure, Lam, Y, T0):
    return q.phi.T @ (q.w[:, None] * q.a) + T0 * Lam - Y


def _jacobian(q: _Measure, C0, phi, T0):
    """Jacobian of R in vec(Lambda) (row-major P x m) at fixed quadrature nodes: the change of the
    weights, ``Cov_q(phi a^T)``, plus the moving modes, ``E_q[a a^T (x) D (C0^{-1} - E)^{-1} D]``
    (``dz* / db = (I - C0 E)^{-1} C0 D``, implicit function theorem), plus ``T0``."""
    n, P = q.phi.shape
    k = q.a.shape[1]
    t = (q.phi[:, :, None] * q.a[:, None, :]).reshape(n, P * k)
    mean = q.w @ t
    cov = (t * q.w[:, None]).T @ t - np.outer(mean, mean)
    d1, d2 = derivatives(phi, q.z)
    E = d2 * (q.a @ q.Lambda.T)
    response = np.linalg.solve(np.eye(P)[None] - C0[None] * E[:, None, :], np.broadcast_to(C0, (n, P, P)))
    response = d1[:, :, None] * response * d1[:, None, :]  # D (C0^{-1} - E)^{-1} D per node
    curv = np.einsum("n,nr,ns,npq->prqs", q.w, q.a, q.a, response).reshape(P * k, P * k)
    curv = 0.5 * (curv + curv.T)
    return cov + curv + T0 * np.eye(P * k)


def _measure(C0, C0_inv, Lam, sigma_a2, phi, previous: _Measure | None, num_nodes: int) -> _Measure | None:
    m = Lam.shape[1]
    if previous is None:
        known, scale = np.zeros((0, m)), 0.0
    else:
        known = previous.modes.a
        scale = float(np.sqrt(np.max(np.sum(previous.w[:, None] * previous.a**2, axis=0))))
    starts = mode_starts(known, sigma_a2, scale, m)
    modes = readout_modes(C0, C0_inv, Lam, sigma_a2, phi, starts)
    if len(modes.a) == 0:  # q(a) not normalisable at this field: no local maximum
        return None
    return mode_quadrature(C0, C0_inv, Lam, sigma_a2, phi, modes, num_nodes)


def solve_conditional_mode(C0, Y, phi: Callable, sigma_a2: float, T0: float, num_nodes: int = GH_NODES,
                           tol: float = 1e-8, max_iter: int = 100, Lambda0=None) -> ConditionalModeSolution:
    """Solve the conditional-mode theory (module docstring) for one hidden layer.

    Parameters
    ----------
    C0 : (P, P) prior covariance of a neuron's preactivations, ``sigma_1^2 K0`` (invertible).
    Y : (P, m) targets.
    phi : NumPy activation.
    sigma_a2, T0 : readout prior variance; rescaled temperature (``T = T0 / N``).
    num_nodes : Gauss-Hermite nodes per readout axis around each mode.
    Lambda0 : starting field (default zero: q(a) is the prior, one mode at the origin, and the
        codes appear as the field grows).
    """
    C0, Y = np.asarray(C0, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.shape[1] > MAX_OUTPUTS:
        raise ValueError(f"the code search starts from 3^m - 1 directions; m = {Y.shape[1]} > {MAX_OUTPUTS}")
    C0_inv = np.linalg.inv(C0)
    C0_inv = 0.5 * (C0_inv + C0_inv.T)
    Lam = np.zeros_like(Y) if Lambda0 is None else np.asarray(Lambda0, dtype=np.float64)
    q = _measure(C0, C0_inv, Lam, sigma_a2, phi, None, num_nodes)
    R = _residual(q, Lam, Y, T0)
    norm = float(np.linalg.norm(R))
    for _ in range(max_iter):
        if np.max(np.abs(R)) < tol:
            break
        step = -np.linalg.solve(_jacobian(q, C0, phi, T0), R.ravel()).reshape(Lam.shape)
        field = np.max(np.abs(q.modes.a @ step.T))
        t = min(1.0, MAX_FIELD_CHANGE / max(field, 1e-300))
        while t > 1e-6:
            trial_q = _measure(C0, C0_inv, Lam + t * step, sigma_a2, phi, q, num_nodes)
            if trial_q is not None:
                trial_R = _residual(trial_q, Lam + t * step, Y, T0)
                if np.linalg.norm(trial_R) < norm:
                    break
            t *= 0.5
        else:
            break
        Lam, q, R, norm = Lam + t * step, trial_q, trial_R, float(np.linalg.norm(trial_R))
    K_phi = q.phi.T @ (q.w[:, None] * q.phi)
    second = (q.a * q.w[:, None]).T @ q.a
    return ConditionalModeSolution(Lam, q.a, q.w, q.z, q.phi, q.modes.a, q.mode_weights, phi(q.modes.z),
                                   0.5 * (K_phi + K_phi.T), q.phi.T @ (q.w[:, None] * q.a),
                                   0.5 * (second + second.T), q.w @ q.a, float(np.max(np.abs(R))), q.inner)


# ----------------------------------------------------------------------------- test inputs


class ConditionalModeTest(NamedTuple):
    mean: np.ndarray  # (P_test, m)
    var: np.ndarray  # (P_test, m), O(1/N)
    k_phi: np.ndarray  # (P, P_test) E_q[phi(z_mu) phi(z(x))]


def conditional_mode_test(sol: ConditionalModeSolution, act, K0, k0, K0_test_diag, sigma_w2: float,
                          T0: float, width: int, chunk: int = 32) -> ConditionalModeTest:
    """Mean predictor, O(1/N) variance and train-test kernel on test inputs (module docstring)."""
    h = np.linalg.lstsq(np.asarray(K0, np.float64), np.asarray(k0, np.float64), rcond=1e-12)[0]
    delta = sigma_w2 * np.maximum(np.asarray(K0_test_diag) - np.sum(np.asarray(k0) * h, axis=0), 0.0)
    a, w, P = sol.a, sol.w, sol.phi.shape[1]
    k = a.shape[1]
    t = (sol.phi[:, :, None] * a[:, None, :]).reshape(len(a), P * k)
    t_mean = w @ t
    S_tt = (t * w[:, None]).T @ t - np.outer(t_mean, t_mean)
    reg = np.linalg.pinv(S_tt + T0 * np.eye(P * k), rcond=1e-12, hermitian=True)
    means, variances, kernels = [], [], []
    for i in range(0, h.shape[1], chunk):
        mu = sol.z @ h[:, i:i + chunk]  # (n, T)
        v = delta[None, i:i + chunk]
        g = gaussian_mean(act, mu, v)
        cond_var = np.maximum(gaussian_second_moment(act, mu, v) - g**2, 0.0)
        mean = (g * w[:, None]).T @ a  # (T, m)
        noise = (cond_var * w[:, None]).T @ a**2
        S_gg = (g**2 * w[:, None]).T @ a**2 - mean**2
        S_gt = np.einsum("nt,nr,nk->trk", g * w[:, None], a, t) - mean[:, :, None] * t_mean[None, None, :]
        explained = np.einsum("trk,kl,trl->tr", S_gt, reg, S_gt)
        means.append(mean)
        variances.append((noise + np.maximum(S_gg - explained, 0.0)) / width)
        kernels.append(sol.phi.T @ (g * w[:, None]))
    return ConditionalModeTest(np.concatenate(means), np.concatenate(variances),
                               np.concatenate(kernels, axis=1))
