"""One hidden layer of a deep non-lazy network on a class-structured task: the modes (codes) of its
single-neuron preactivation measure, with their Laplace weights at the task's P [DER].

The measure (``deep``, THEORY.md 1.2 "Deep nets") is a tilted Gaussian on the P preactivations,

    q(z) ∝ N(z; 0, C) exp(phi(z)^T Kt phi(z)),   C = diag(w) + U S U^T,   Kt = diag(d) + U B U^T / P,

all matrices class-structured (``classmatrix``).  Write ``z_mu = u_c(mu) + eps_mu`` with the
class-shared shift ``u ~ N(0, S)`` (``S = E E^T``, ``u = E xi``, xi standard normal) and iid
``eps_mu ~ N(0, w_c)``.  Then ``phi^T Kt phi = sum_mu d_c phi_mu^2 + s^T Q s`` with the class means
``s_c = mean_{mu in c} phi_mu`` and ``Q = n B n / P`` (``n = diag(n_c)``).  Given u, the inputs of a
class are iid; the class means obey Cramér with the one-input law of ``shifted`` (cumulant
``kappa_c(theta, u_c)``, which includes the d-tilt), with saddle-point density
``p_n(s | u) = sqrt(n / 2 pi kappa'') exp(-n [theta s - kappa])``.  So the joint density of
``y = (xi, s)`` is, up to a constant,

    q(xi, s) ∝ exp(g) prod_c sqrt(n_c / kappa''_c),
    g(xi, s) = -|xi|^2 / 2 + s^T Q s - sum_c n_c [theta_c s_c - kappa_c(theta_c, u_c)],

parametrised by ``(xi, theta)`` with ``s = kappa_theta(theta, u)``.  Stationarity:
``theta = 2 Q s / n`` and ``xi = E^T (n kappa_u)``.  Hessian in y (``kappa`` derivatives from
``shifted``):

    H_ss = 2 Q - diag(n / kappa_tt),   H_su = diag(n kappa_tu / kappa_tt),
    H_uu = diag(n (kappa_uu - kappa_tu^2 / kappa_tt)),   H_xi = -I + E^T H_uu E.

A *mode* (a code) is a strict local maximum of g (Hessian negative definite, Newton decrement
below ``ACCEPT_DECREMENT``), found by Newton ascent in y (steps mapped back to
theta by ``dtheta = (ds - kappa_tu du) / kappa_tt``) from sign-pattern corners and tracked modes.
Laplace: weight ``∝ exp(g) prod sqrt(n_c / kappa''_c) det(-H)^{-1/2}``, within-mode covariance
``(-H)^{-1}``.  Within a mode, the class-c inputs are iid from the one-input law (O(1) within-class
fluctuations), and

    E[phi_mu phi_nu] = E[s_c s_c'] - delta_cc' Var_c(phi) / n_c  (mu != nu),
    E[phi_mu^2] - that = Var_c(phi),

so the layer's activation kernel and preactivation second moment are class matrices (the class
mean of z has mean ``E z``, Jacobian ``d zbar / ds = Cov(phi, z) / Var phi``,
``d zbar / du |_s = Var z / w - Cov^2 / (w Var phi)`` and conditional variance
``(Var z - Cov^2 / Var phi) / n`` given s).  For linear phi every step is exact (all Gaussian).  For
one hidden layer (no shift, d = 0, ``Q = P beta_a R L L^T R / 2``) this is the class reduction of
THEORY.md 1.4b with the finite-P Laplace weights of ``classes.laplace_log_weight``.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from scipy.special import logsumexp

from widebayes.activations import Activation
from widebayes.theory.nonlazy.classmatrix import ClassMatrix, class_matrix
from widebayes.theory.nonlazy.shifted import ShiftedLaw, shifted_law

NEWTON_STEPS = 80
MAX_FIELD_STEP = 4.0
#: stop and accept at a Newton decrement (twice the predicted gain of g) below this
DECREMENT_TOL = 1e-18
ACCEPT_DECREMENT = 1e-12
DEDUPE_TOL = 1e-5
#: corner starts: field magnitude for bounded phi, shift in prior standard deviations
START_FIELD = 6.0
START_SHIFT = 2.0
#: a start whose class field exceeds this is abandoned: it runs off towards saturation, where g keeps
#: rising on the grid (measured: tanh, L = 2, P = 60, fields past -250 after the 80 steps, 6% of the
#: ascents and half of their time); the modes of the solved tasks have fields below 60
RUNAWAY_FIELD = 150.0
#: a start whose accepted step was cut below this fraction of Newton's is abandoned (a maximum is
#: reached with full steps; measured: 1% of the ascents crawled at steps near 1e-9 for all 80
#: iterations, 30 evaluations each, and took most of the deep solver's time)
STALLED_STEP = 1e-6
#: ... after this many iterations (early steps of a stiff ascent may need such cuts: P = 500), or at
#: once when the decrement is below CONVERGED_DECREMENT (a maximum reached to rounding: g cannot rise)
STALLED_AFTER = 12
CONVERGED_DECREMENT = 1e-14
#: modes whose weight is below this are dropped from the mixture
MIN_WEIGHT = 1e-14


class LayerProblem(NamedTuple):
    """The single-neuron problem of one layer (module docstring).

    Attributes
    ----------
    act : Activation
    counts : ndarray (k,)
        ``n_c``.
    d : ndarray (k,)
        Input-diagonal tilt.
    Q : ndarray (k, k)
        Class-mean tilt ``n B n / P`` (``s^T Q s`` in the exponent).
    w : ndarray (k,)
        Within-class prior variance of the preactivations.
    E : ndarray (k, r)
        Factor of the class-shared prior covariance ``S = E E^T`` (r = 0: no shift).
    """

    act: Activation
    counts: np.ndarray
    d: np.ndarray
    Q: np.ndarray
    w: np.ndarray
    E: np.ndarray


class Mode(NamedTuple):
    """A local maximum of g: a code of the layer.

    Attributes
    ----------
    xi : ndarray (r,)
    theta : ndarray (k,)
        Class fields.
    u : ndarray (k,)
        Class-shared shift ``E xi``.
    law : ShiftedLaw
        One-input law of each class (arrays (k,)); ``law.m_phi`` are the class means s.
    g : float
    log_weight : float
        Unnormalised Laplace log-mass.
    hessian : ndarray (r+k, r+k)
        Hessian of g in ``y = (xi, s)``.
    cov : ndarray (r+k, r+k)
        ``(-H)^{-1}``, the within-mode covariance of y.
    """

    xi: np.ndarray
    theta: np.ndarray
    u: np.ndarray
    law: ShiftedLaw
    g: float
    log_weight: float
    hessian: np.ndarray
    cov: np.ndarray

    @property
    def s(self) -> np.ndarray:
        """Class means of phi."""
        return self.law.m_phi


class _Eval(NamedTuple):
    u: np.ndarray
    law: ShiftedLaw
    g: np.ndarray
    grad: np.ndarray
    hess: np.ndarray


def _evaluate(prob: LayerProblem, X) -> _Eval:
    """g, its gradient and Hessian in y = (xi, s) at a batch of points X = (xi, theta) (n, r+k)."""
    r = prob.E.shape[1]
    xi, theta = X[:, :r], X[:, r:]
    u = xi @ prob.E.T
    law = shifted_law(prob.act, theta, u, prob.d[None, :], prob.w[None, :])
    n = prob.counts[None, :]
    s = law.m_phi
    k_tt = np.maximum(law.v_phi, 1e-300)
    k_u = (law.m_z - u) / prob.w
    k_tu = law.c_phiz / prob.w
    k_uu = law.v_z / prob.w**2 - 1.0 / prob.w
    g = (-0.5 * np.sum(xi**2, 1) + np.einsum("bi,ij,bj->b", s, prob.Q, s)
         - np.sum(n * (theta * s - law.kappa), 1))
    grad_s = 2.0 * s @ prob.Q - n * theta
    grad_xi = -xi + (n * k_u) @ prob.E
    H_ss = 2.0 * prob.Q[None] - _diag(n / k_tt)
    H_us = n * k_tu / k_tt                                              # diagonal (b, k)
    H_uu = n * (k_uu - k_tu**2 / k_tt)
    H_xx = -np.eye(r)[None] + np.einsum("ci,bc,cj->bij", prob.E, H_uu, prob.E)
    H_xs = prob.E.T[None] * H_us[:, None, :]
    hess = np.block([[H_xx, H_xs], [np.swapaxes(H_xs, 1, 2), H_ss]])
    return _Eval(u, law, g, np.concatenate([grad_xi, grad_s], 1), hess)


def _diag(v):
    return v[..., :, None] * np.eye(v.shape[-1])


def _newton_direction(ev: _Eval, prob: LayerProblem):
    """Newton step in y with the Hessian made negative definite, mapped to (xi, theta); and the
    Newton decrement ``grad^T (-H)^{-1} grad`` (twice the predicted gain of g)."""
    lam, V = np.linalg.eigh(ev.hess)
    scale = np.maximum(np.max(np.abs(lam), axis=1, keepdims=True), 1e-300)
    lam = -np.maximum(np.abs(lam), 1e-12 * scale)
    proj = np.einsum("bkj,bk->bj", V, ev.grad)
    dy = -np.einsum("bij,bj->bi", V, proj / lam)
    decrement = np.sum(proj**2 / -lam, axis=1)
    r = prob.E.shape[1]
    d_xi, d_s = dy[:, :r], dy[:, r:]
    d_u = d_xi @ prob.E.T
    k_tt = np.maximum(ev.law.v_phi, 1e-300)
    d_theta = (d_s - ev.law.c_phiz / prob.w * d_u) / k_tt
    d_theta = np.clip(d_theta, -MAX_FIELD_STEP, MAX_FIELD_STEP)
    return np.concatenate([d_xi, d_theta], 1), decrement


def ascend(prob: LayerProblem, X0, steps: int = NEWTON_STEPS) -> np.ndarray:
    """Newton ascent of g from every row of X0 (backtracking on g); returns the end points."""
    X = np.array(X0, dtype=np.float64, ndmin=2)
    active = np.ones(len(X), dtype=bool)
    for iteration in range(steps):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        ev = _evaluate(prob, X[idx])
        step, decrement = _newton_direction(ev, prob)
        t = np.ones(len(idx))
        todo = np.arange(len(idx))
        new = X[idx].copy()
        for _ in range(40):
            trial = X[idx[todo]] + t[todo, None] * step[todo]
            g_new = _evaluate(prob, trial).g
            ok = np.isfinite(g_new) & (g_new >= ev.g[todo] - 1e-12 * np.abs(ev.g[todo]))
            new[todo[ok]] = trial[ok]
            todo = todo[~ok]
            if not len(todo):
                break
            t[todo] *= 0.5
        X[idx] = new
        r = prob.E.shape[1]
        runaway = np.max(np.abs(new[:, r:]), axis=1) > RUNAWAY_FIELD
        stalled = (t < STALLED_STEP) & ((iteration >= STALLED_AFTER) | (decrement < CONVERGED_DECREMENT))
        done = (decrement < DECREMENT_TOL) | (t < 1e-10) | runaway | stalled
        active[idx[done]] = False
    return X


def mode_at(prob: LayerProblem, x) -> Mode | None:
    """The Mode at a point ``x = (xi, theta)`` if it is a strict local maximum of g (gradient
    small, Hessian negative definite), else None."""
    ev = _evaluate(prob, np.asarray(x, dtype=np.float64)[None, :])
    H = ev.hess[0]
    if not np.all(np.isfinite(H)):
        return None
    lam, V = np.linalg.eigh(H)
    if lam.max() >= 0.0 or np.sum((V.T @ ev.grad[0]) ** 2 / -lam) > ACCEPT_DECREMENT:
        return None
    r = prob.E.shape[1]
    law = ShiftedLaw(*(np.asarray(f)[0] for f in ev.law))
    logdet = float(np.sum(np.log(-lam)))
    log_weight = float(ev.g[0] + 0.5 * np.sum(np.log(prob.counts / np.maximum(law.v_phi, 1e-300)))
                       - 0.5 * logdet)
    return Mode(x[:r].copy(), x[r:].copy(), ev.u[0], law, float(ev.g[0]), log_weight, H,
                np.linalg.inv(-H))


def corner_starts(prob: LayerProblem) -> np.ndarray:
    """Starting points: fields at every sign pattern (and 0), with no shift and with the shift at
    the same sign pattern ``START_SHIFT`` prior standard deviations out."""
    k, r = len(prob.counts), prob.E.shape[1]
    field = START_FIELD if prob.act.bounded else 1.0
    signs = np.vstack([np.array(list(itertools.product((-1.0, 1.0), repeat=k))), np.zeros((1, k))])
    starts = [np.hstack([np.zeros((len(signs), r)), field * signs])]
    if r:
        sd = np.sqrt(np.maximum(np.sum(prob.E**2, 1), 1e-300))
        xi = np.linalg.lstsq(prob.E, (START_SHIFT * sd * signs).T, rcond=1e-10)[0].T
        starts.append(np.hstack([xi, field * signs]))
    return np.vstack(starts)


def find_modes(prob: LayerProblem, starts=None, search: bool = True) -> list[Mode]:
    """Local maxima of g reached from ``starts`` (and the corners when ``search``), deduplicated,
    heaviest first."""
    pts = [] if starts is None else [np.atleast_2d(np.asarray(starts, dtype=np.float64))]
    if search or starts is None:
        pts.append(corner_starts(prob))
    ends = ascend(prob, np.vstack(pts))
    modes: list[Mode] = []
    for x in ends:
        if not np.all(np.isfinite(x)):
            continue
        if any(np.max(np.abs(x - np.concatenate([m.xi, m.theta]))) < DEDUPE_TOL * max(1.0, np.abs(x).max())
               for m in modes):
            continue
        mode = mode_at(prob, x)
        if mode is not None:
            modes.append(mode)
    return sorted(modes, key=lambda m: -m.log_weight)


def mode_points(modes: list[Mode]) -> np.ndarray:
    """The (xi, theta) of modes, as starts for tracking."""
    return np.array([np.concatenate([m.xi, m.theta]) for m in modes])


class LayerMixture(NamedTuple):
    """The layer's measure as a mixture of modes.

    Attributes
    ----------
    modes : list of Mode
    weights : ndarray
        Normalised Laplace weights (the fraction of neurons in each mode).
    kernel : ClassMatrix
        Posterior-averaged activation kernel ``E[phi phi^T]`` (the layer's stored kernel).
    preact : ClassMatrix
        ``E[z z^T]`` of the preactivations.
    second_ss : ndarray (k, k)
        ``E[s s^T]`` of a neuron's class means (mixture).
    log_partition : float
        ``logsumexp`` of the unnormalised log-weights.
    """

    modes: list
    weights: np.ndarray
    kernel: ClassMatrix
    preact: ClassMatrix
    second_ss: np.ndarray
    log_partition: float


def mixture(prob: LayerProblem, modes: list[Mode]) -> LayerMixture:
    """Weights, kernel and preactivation second moment of the layer (module docstring)."""
    logw = np.array([m.log_weight for m in modes])
    logZ = float(logsumexp(logw))
    w = np.exp(logw - logZ)
    keep = w > MIN_WEIGHT
    modes, w = [m for m, kp in zip(modes, keep) if kp], w[keep] / w[keep].sum()
    n, r = prob.counts, prob.E.shape[1]
    ss = np.zeros((len(n), len(n)))
    zz = np.zeros_like(ss)
    v_phi = np.zeros(len(n))
    v_z = np.zeros(len(n))
    for wg, m in zip(w, modes):
        law = m.law
        cov_ss = m.cov[r:, r:]
        ss += wg * (np.outer(law.m_phi, law.m_phi) + cov_ss)
        vphi = np.maximum(law.v_phi, 1e-300)
        gs = law.c_phiz / vphi
        gu = law.v_z / prob.w - law.c_phiz**2 / (prob.w * vphi)
        J = np.hstack([gu[:, None] * prob.E, np.diag(gs)])
        cond = np.maximum(law.v_z - law.c_phiz**2 / vphi, 0.0) / n
        zz += wg * (np.outer(law.m_z, law.m_z) + J @ m.cov @ J.T + np.diag(cond))
        v_phi += wg * law.v_phi
        v_z += wg * law.v_z
    kernel = class_matrix(v_phi, ss - np.diag(v_phi / n), n)
    preact = class_matrix(v_z, zz - np.diag(v_z / n), n)
    return LayerMixture(modes, w, kernel, preact, 0.5 * (ss + ss.T), logZ)


def shift_factor(S, tol: float = 1e-12) -> np.ndarray:
    """``E`` with ``E E^T = S`` over the positive eigenvalues of the class-shared covariance S
    (directions below ``tol`` times the largest are dropped: no shift there)."""
    lam, V = np.linalg.eigh(0.5 * (S + S.T))
    keep = lam > tol * max(lam.max(initial=0.0), 1e-300)
    return V[:, keep] * np.sqrt(lam[keep])[None, :]
