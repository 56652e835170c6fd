"""Class-structured tasks: the single-neuron problem reduced to the m class means (THEORY.md 1.4b).

Setting: one hidden layer, orthogonal inputs (``K0 = c I``), classes with proportions ``rho_c``
(``n_c = rho_c P`` inputs each) and one target vector ``y_c`` per class.  With the class ansatz
``Lambda_mu = lambda_c(mu)`` (rows of ``L``, k x m), the tilt of q(z) depends on z only through the
class means ``s_c = mean_{mu in c} phi(z_mu)``:

    (sigma_a^2 / 2) |Lambda^T phi(z)|^2 = P |a(s)|^2 / (2 beta_a),   a(s) = beta_a L^T (rho * s),

with ``beta_a = sigma_a^2 P`` (1 for the paper's ``sigma_a^2 = 1/P``).  By Cramér,
``q(s) ≍ exp(P F(s))`` with

    F(s) = |a(s)|^2 / (2 beta_a) - sum_c rho_c I(s_c).

Codes are the local maxima of F.  Stationarity: ``theta_c = lambda_c . a(s)``,
``s_c = kappa'(theta_c)``; iterating this map increases F (THEORY.md 1.4b).  Within a code the
z_mu of class c are iid from the tilted law with field ``theta_c``, and the readout is
``q(a | z) = N(a(s), sigma_a^2 I)``, so a code carries the readout ``a_gamma = a(s_gamma)``.
We parametrise s by the fields theta (``s = kappa'(theta)``), which makes ``I(s) = theta s -
kappa(theta)`` exact.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from widebayes.activations import get_activation
from widebayes.theory.nonlazy.cramer import cumulants

FIXED_POINT_ITERATIONS = 4000
ASCENT_BEFORE_NEWTON = 150
FIXED_POINT_TOL = 1e-12
NEWTON_STEPS = 30
THETA_LIMIT = 60.0
DEDUPE_TOL = 1e-6
#: magnitude of the corner starting fields: saturating for bounded phi (tanh(6), Phi(6 sqrt(pi/2))
#: are within 1e-5 of the bounds), O(1) for phi that grow (their tilted mean moves like theta c)
START_FIELD_BOUNDED = 6.0
START_FIELD_GROWING = 1.0


class ClassTask(NamedTuple):
    """A class-structured task for the one-hidden-layer reduction.

    Attributes
    ----------
    rho : ndarray (k,)
        Class proportions.
    targets : ndarray (k, m)
        Target vector of each class.
    num_train : int
        P.
    beta_a : float
        ``sigma_a^2 P``.
    variance : float
        Prior variance of a preactivation, ``sigma_1^2 K0_mumu``.
    T0 : float
        Rescaled temperature.
    activation : str
    """

    rho: np.ndarray
    targets: np.ndarray
    num_train: int
    beta_a: float
    variance: float
    T0: float
    activation: str


class Maximum(NamedTuple):
    """A local maximum of F (a code).

    Attributes
    ----------
    theta : ndarray (k,)
        Class fields ``lambda_c . a``.
    s : ndarray (k,)
        Class means ``kappa'(theta)``.
    a : ndarray (m,)
        Readout ``a(s)``.
    F : float
    hessian : ndarray (k, k)
        Hessian of F in s.
    s_var : ndarray (k,)
        ``kappa''(theta)``, the variance of phi within the class.
    """

    theta: np.ndarray
    s: np.ndarray
    a: np.ndarray
    F: float
    hessian: np.ndarray
    s_var: np.ndarray


def readout(s, L, task: ClassTask):
    """``a(s) = beta_a L^T (rho * s)`` (rows of s broadcast)."""
    return task.beta_a * (np.asarray(s) * task.rho) @ L


def field_map(theta, L, task: ClassTask):
    """One stationarity step ``theta -> L a(kappa'(theta))`` (rows of theta broadcast)."""
    c = cumulants(task.activation, theta, task.variance)
    return readout(c.mean, L, task) @ L.T, c


def action(theta, L, task: ClassTask):
    """``F`` at ``s = kappa'(theta)`` (THEORY.md 1.4b), rows of theta broadcast."""
    c = cumulants(task.activation, theta, task.variance)
    a = readout(c.mean, L, task)
    rate = np.asarray(theta) * c.mean - c.kappa
    return 0.5 * np.sum(a**2, -1) / task.beta_a - rate @ task.rho


def hessian(s_var, L, task: ClassTask):
    """``d^2 F / ds^2 = beta_a diag(rho) L L^T diag(rho) - diag(rho / kappa'')``."""
    R = task.rho[:, None] * L
    return task.beta_a * R @ R.T - np.diag(task.rho / np.maximum(s_var, 1e-300))


def _iterate(theta, L, task, iterations=FIXED_POINT_ITERATIONS):
    """Fixed-point ascent from many starts at once; rows that run away are marked NaN."""
    theta = np.array(theta, dtype=np.float64)
    for _ in range(iterations):
        new = np.clip(field_map(theta, L, task)[0], -THETA_LIMIT, THETA_LIMIT)
        done = np.max(np.abs(new - theta)) < FIXED_POINT_TOL
        theta = new
        if done:
            break
    theta[np.any(np.abs(theta) >= THETA_LIMIT, axis=1)] = np.nan
    return theta


def _newton(theta, L, task):
    """Polish a stationary point: Newton on ``r(theta) = L a(kappa'(theta)) - theta``."""
    for _ in range(NEWTON_STEPS):
        mapped, c = field_map(theta, L, task)
        r = mapped - theta
        if not np.all(np.isfinite(r)) or np.max(np.abs(r)) < 1e-14:
            break
        J = task.beta_a * (L @ L.T) * (task.rho * c.var)[None, :] - np.eye(theta.size)
        try:
            step = np.linalg.solve(J, r)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(J, r, rcond=1e-14)[0]
        theta = np.clip(theta - step, -THETA_LIMIT, THETA_LIMIT)
    return theta


def stationary_residual(theta, L, task: ClassTask) -> float:
    """``max |L a(kappa'(theta)) - theta|``."""
    return float(np.max(np.abs(field_map(theta, L, task)[0] - theta)))


def _as_maximum(theta, L, task) -> Maximum | None:
    """A Maximum at a stationary theta, or None if theta is not a strict local maximum."""
    if not np.all(np.isfinite(theta)) or stationary_residual(theta, L, task) > 1e-9:
        return None
    c = cumulants(task.activation, theta, task.variance)
    H = hessian(c.var, L, task)
    if np.linalg.eigvalsh(H).max() >= 0.0:
        return None
    return Maximum(theta, c.mean, readout(c.mean, L, task), float(action(theta, L, task)), H, c.var)


def maximum_at(theta, L, task: ClassTask, ascend: bool = True) -> Maximum | None:
    """The local maximum near ``theta``: Newton first (fast when theta is close, as when tracking
    a maximum while L changes), else fixed-point ascent then Newton.  None if there is none."""
    theta = np.asarray(theta, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        found = _as_maximum(_newton(theta, L, task), L, task)
    if found is not None or not ascend:
        return found
    theta = _iterate(np.atleast_2d(theta), L, task)[0]
    if np.any(np.isnan(theta)):
        return None
    return _as_maximum(_newton(theta, L, task), L, task)


def start_field(task: ClassTask) -> float:
    """Magnitude of the corner starting fields for the task's activation (bounded or growing)."""
    return START_FIELD_BOUNDED if get_activation(task.activation).bounded else START_FIELD_GROWING


def corner_starts(k: int, magnitude: float) -> np.ndarray:
    """All ``2^k`` sign patterns of ``+-magnitude`` and the origin (starting fields)."""
    corners = np.array(list(itertools.product((-magnitude, magnitude), repeat=k)))
    return np.vstack([corners, np.zeros((1, k))])


def find_maxima(L, task: ClassTask, starts=None) -> list[Maximum]:
    """All local maxima of F reached from ``starts`` (default: corners), deduplicated, best first."""
    k = len(task.rho)
    if starts is None:
        starts = corner_starts(k, start_field(task))
    thetas = _iterate(starts, L, task, ASCENT_BEFORE_NEWTON)
    found: list[Maximum] = []
    for theta in thetas[~np.any(np.isnan(thetas), axis=1)]:
        mx = maximum_at(theta, L, task)
        if mx is not None and all(np.max(np.abs(mx.theta - f.theta)) > DEDUPE_TOL for f in found):
            found.append(mx)
    return sorted(found, key=lambda mx: -mx.F)


def initial_fields(task: ClassTask) -> np.ndarray:
    """A starting L: the targets, centred over classes, scaled to ``rho |lambda|^2 ~ 1``."""
    Y = task.targets - task.rho @ task.targets
    norms = np.linalg.norm(Y, axis=1, keepdims=True)
    return Y / np.maximum(norms, 1e-12) / np.sqrt(task.beta_a * task.rho[:, None] + 1e-300)


def laplace_log_weight(mx: Maximum, task: ClassTask) -> float:
    """Log mass of a maximum at finite P (Laplace, THEORY.md 1.4b "Finite P"):

    ``P F - 1/2 sum_c ln kappa''_c - 1/2 ln det(-H)`` (from ``p_n(s) = sqrt(n / 2 pi kappa'')
    exp(-n I(s))`` and the Gaussian integral around the maximum; constants dropped).
    """
    sign, logdet = np.linalg.slogdet(-mx.hessian)
    return task.num_train * mx.F - 0.5 * np.sum(np.log(mx.s_var)) - 0.5 * logdet


def within_code_covariance(mx: Maximum, task: ClassTask) -> np.ndarray:
    """Covariance of the class means within a code at finite P: ``(-P H)^{-1}`` (k x k)."""
    return np.linalg.inv(-task.num_train * mx.hessian)


def class_output(mx: Maximum, L, task: ClassTask, finite_P: bool) -> np.ndarray:
    """Mean output on each class from one code, ``E[s_c a]`` (k, m).

    P = inf: ``s_gamma,c a_gamma``.  Finite P adds the spread of s within the code,
    ``beta_a L^T (rho * Cov(s)[c, :])``.
    """
    out = mx.s[:, None] * mx.a[None, :]
    if finite_P:
        out = out + task.beta_a * (within_code_covariance(mx, task) * task.rho[None, :]) @ L
    return out


def readout_covariance(mx: Maximum, L, task: ClassTask, finite_P: bool) -> np.ndarray:
    """Readout covariance within a code: ``sigma_a^2 I`` plus, at finite P, the spread of ``a(s)``."""
    m = L.shape[1]
    cov = (task.beta_a / task.num_train) * np.eye(m)
    if finite_P:
        R = task.rho[:, None] * L
        cov = cov + task.beta_a**2 * R.T @ within_code_covariance(mx, task) @ R
    return cov


def dual_objective(L, task: ClassTask, F_max: float) -> float:
    """``Phi(L) = T0/2 sum rho |lambda|^2 - sum rho lambda . y + max_s F`` (THEORY.md 1.4b);
    convex, minimised by the equilibrium L.  Its value is the action of a scheme."""
    return float(0.5 * task.T0 * np.sum(task.rho[:, None] * L**2)
                 - np.sum(task.rho[:, None] * L * task.targets) + F_max)
