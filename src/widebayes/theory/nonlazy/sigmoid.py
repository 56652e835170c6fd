"""Redundant coding in sigmoidal networks on class-structured tasks (THEORY.md 1.4b; paper,
"Redundant coding scheme").

The readout posterior is a mixture ``sum_gamma P_gamma delta(a - a_gamma)`` over codes gamma, the
maxima of F (``classes``).  The closed equations for the conjugate fields L (k x m), the occupied
codes G and their weights P_gamma (THEORY.md 1.4b):

    (i)   s_gamma are local maxima of F(.; L),
    (ii)  T0 lambda_c = y_c - sum_gamma P_gamma s_gamma,c a_gamma,
    (iii) F(s_gamma) = max_s F for every occupied code, P_gamma >= 0, sum_gamma P_gamma = 1.

Equivalently L minimises the convex ``Phi(L) = T0/2 sum rho |lambda|^2 - sum rho lambda . y +
max_s F(s; L)`` and the P_gamma are the weights of its subgradient at the kink.  We (1) minimise a
smoothed Phi (the max replaced by ``(1/beta) ln sum exp(beta F_gamma)``) for increasing beta,
(2) take the codes with weight as the active set and solve (ii)-(iii) exactly (square system in L
and P_gamma, Newton), and (3) check P_gamma >= 0 and that no other maximum lies higher.

Finite P: the m-dimensional integral over s by Laplace around every maximum
(``classes.laplace_log_weight``), with the spread of s inside each code in the output and the
readout width (THEORY.md 1.4b "Finite P"; the paper's "finite P correction" of Fig. 4a).

Other schemes: restricting the codes to a subset G and solving (i)-(iii) on G gives a scheme
with a higher free energy ``-min_L Phi_G(L)``; the theory prefers the lowest (the equilibrium).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from widebayes.codes import code_of_means
from widebayes.theory.nonlazy.classes import (
    ClassTask,
    Maximum,
    class_output,
    corner_starts,
    dual_objective,
    find_maxima,
    initial_fields,
    laplace_log_weight,
    maximum_at,
    start_field,
)
from widebayes.theory.nonlazy.cramer import cumulants
from widebayes.theory.nonlazy.solvers import newton

SMOOTHING = (30.0, 300.0, 1000.0)
ACTIVE_WEIGHT = 1e-3
MAX_SCHEME_CODES = 6
TOL = 1e-10


class CodeScheme(NamedTuple):
    """A solution of the redundant-code equations.

    Attributes
    ----------
    L : ndarray (k, m)
        Conjugate fields, one row per class.
    maxima : list of Maximum
        The codes (occupied ones first for P = inf; all local maxima for finite P).
    weights : ndarray
        ``P_gamma`` of each entry of ``maxima``.
    free_energy : float
        ``-Phi(L)`` (per P; lower is preferred).
    residual : float
        Largest residual of the equations solved.
    finite_P : bool
        Whether the weights include the finite-P (Laplace) masses.
    metastable : bool
        Whether a maximum outside the scheme lies higher than its codes.
    """

    L: np.ndarray
    maxima: list
    weights: np.ndarray
    free_energy: float
    residual: float
    finite_P: bool
    metastable: bool = False


def _starts(task, tracked):
    k = len(task.rho)
    base = corner_starts(k, start_field(task))
    return np.vstack([base] + [mx.theta[None, :] for mx in tracked]) if tracked else base


# ----------------------------------------------------------------------------- P = inf


def _smoothed(x, task, beta, tracked):
    """Smoothed dual ``Phi_beta`` and its gradient; ``tracked`` keeps the maxima between calls."""
    k, m = task.targets.shape
    L = x.reshape(k, m)
    maxima = find_maxima(L, task, _starts(task, tracked))
    if not maxima:  # e.g. y- = -1/2, where no P = inf equilibrium exists (deep.equilibrium_fields)
        raise RuntimeError("the search lost every maximum of the single-neuron action")
    tracked[:] = maxima
    F = np.array([mx.F for mx in maxima])
    w = softmax(beta * F)
    out = sum(wi * class_output(mx, L, task, False) for wi, mx in zip(w, maxima))
    value = dual_objective(L, task, 0.0) + logsumexp(beta * F) / beta
    grad = task.rho[:, None] * (task.T0 * L - task.targets + out)
    return value, grad.ravel()


def smoothed_solution(task: ClassTask, L0=None, betas=SMOOTHING):
    """Minimise the smoothed dual for increasing beta; returns L and the maxima with their weights."""
    L = initial_fields(task) if L0 is None else np.asarray(L0, dtype=np.float64)
    tracked: list = []
    for beta in betas:
        res = minimize(_smoothed, L.ravel(), args=(task, beta, tracked), jac=True, method="BFGS",
                       options={"gtol": 1e-7, "maxiter": 300})
        L = res.x.reshape(L.shape)
    maxima = find_maxima(L, task, _starts(task, tracked))
    return L, maxima, softmax(betas[-1] * np.array([mx.F for mx in maxima]))


def _same_code(a: Maximum, b: Maximum, task) -> bool:
    """Whether two maxima carry the same code (class means on the same side of the prior mean)."""
    mid = float(cumulants(task.activation, 0.0, task.variance).mean)
    return code_of_means(a.s, mid) == code_of_means(b.s, mid)


def _track(codes, L, task, state):
    """The maxima continuing ``codes`` at L, or None if one is lost or changes code.

    Each is searched from its last accepted position ``state[i]``, then from its original one.
    """
    out = []
    for i, mx in enumerate(codes):
        new = next((m for m in (maximum_at(th, L, task, ascend=False) for th in (state[i], mx.theta))
                    if m is not None and _same_code(m, mx, task)), None)
        if new is None:
            return None
        out.append(new)
    for i, mx in enumerate(out):
        state[i] = mx.theta
    return out


def _exact_residual(x, codes, task, state):
    """Residuals of (ii) and of the degeneracy (iii); x = (L, P_gamma without the first)."""
    k, m = task.targets.shape
    n = len(codes)
    L = x[:k * m].reshape(k, m)
    P = np.concatenate([[1.0 - np.sum(x[k * m:])], x[k * m:]])
    maxima = _track(codes, L, task, state)
    if maxima is None:
        return np.full(k * m + n - 1, 1e3)
    out = sum(p * class_output(mx, L, task, False) for p, mx in zip(P, maxima))
    eq = (task.T0 * L - task.targets + out).ravel()
    return np.concatenate([eq, [mx.F - maxima[0].F for mx in maxima[1:]]])


def solve_on_codes(task: ClassTask, L0, codes: list, P0, max_iter: int = 60) -> CodeScheme | None:
    """Solve (ii)-(iii) with exactly the codes ``codes`` occupied and degenerate (Newton).

    Returns None when the solver fails or a code is lost.  ``metastable`` flags a higher maximum
    outside the set.
    """
    k, m = task.targets.shape
    state = [mx.theta.copy() for mx in codes]
    x0 = np.concatenate([np.asarray(L0).ravel(), np.asarray(P0, dtype=np.float64)[1:]])
    sol = newton(lambda x: _exact_residual(x, codes, task, state), x0, max_iter=max_iter)
    res = _exact_residual(sol.x, codes, task, state)
    if np.max(np.abs(res)) > 1e-9:
        return None
    L = sol.x[:k * m].reshape(k, m)
    maxima = _track(codes, L, task, state)
    P = np.concatenate([[1.0 - np.sum(sol.x[k * m:])], sol.x[k * m:]])
    top = find_maxima(L, task, _starts(task, maxima))
    metastable = bool(top and top[0].F > maxima[0].F + 1e-9)
    return CodeScheme(L, maxima, P, -dual_objective(L, task, maxima[0].F),
                      float(np.max(np.abs(res))), False, metastable)


def solve_redundant(task: ClassTask, L0=None) -> CodeScheme:
    """Equilibrium redundant code at P = inf (module docstring; THEORY.md 1.4b).

    Raises
    ------
    RuntimeError
        If no consistent active set is found.
    """
    L, maxima, w = smoothed_solution(task, L0)
    order = [i for i in np.argsort(-w) if w[i] > ACTIVE_WEIGHT]
    codes, P0 = [maxima[i] for i in order], w[order] / w[order].sum()
    for _ in range(2 * len(maxima) + 4):
        scheme = solve_on_codes(task, L, codes, P0)
        if scheme is None:
            raise RuntimeError("redundant-code equations: the exact solve failed")
        L, codes = scheme.L, list(scheme.maxima)
        if np.min(scheme.weights) < -TOL:
            drop = int(np.argmin(scheme.weights))
            codes.pop(drop)
            P0 = np.clip(np.delete(scheme.weights, drop), 1e-3, None)
            P0 = P0 / P0.sum()
            continue
        if not scheme.metastable:
            return scheme
        codes.append(find_maxima(L, task, _starts(task, codes))[0])
        P0 = np.append(0.95 * scheme.weights, 0.05)
    raise RuntimeError("redundant-code equations: no consistent set of occupied codes")


# ----------------------------------------------------------------------------- finite P


def _finite_residual(x, task, tracked):
    """Residual of (ii) with every maximum weighted by its Laplace mass."""
    k, m = task.targets.shape
    L = x.reshape(k, m)
    maxima = find_maxima(L, task, _starts(task, tracked))
    if not maxima:  # no code at these fields: not a solution (a Newton trial point is halved back)
        return np.full(L.size, np.nan)
    tracked[:] = maxima
    w = softmax([laplace_log_weight(mx, task) for mx in maxima])
    out = sum(wi * class_output(mx, L, task, True) for wi, mx in zip(w, maxima))
    return (task.T0 * L - task.targets + out).ravel()


def solve_redundant_finite_P(task: ClassTask, L0) -> CodeScheme:
    """Finite-P redundant code: every maximum weighted by its Laplace mass (THEORY.md 1.4b).

    Solves ``T0 lambda_c = y_c - sum_gamma P_gamma E_gamma[s_c a]`` with
    ``P_gamma ∝ exp(laplace_log_weight)``, starting from the P = inf fields ``L0``.
    """
    tracked: list = []
    sol = newton(lambda x: _finite_residual(x, task, tracked), np.asarray(L0).ravel())
    L = sol.x.reshape(np.shape(L0))
    res = _finite_residual(sol.x, task, tracked)
    if not tracked or not np.all(np.isfinite(res)):
        raise RuntimeError("finite-P redundant code: no single-neuron maximum at the fields")
    maxima = tracked
    w = softmax([laplace_log_weight(mx, task) for mx in maxima])
    return CodeScheme(L, maxima, w, -dual_objective(L, task, maxima[0].F), float(np.max(np.abs(res))),
                      True)


# ----------------------------------------------------------------------------- other schemes


def code_schemes(task: ClassTask, equilibrium: CodeScheme, candidates: list | None = None) -> list:
    """The equilibrium and every other scheme that solves (i)-(iii) on a subset of the candidate
    codes, lowest free energy first (the first is the one the theory prefers).

    Candidates default to all local maxima of F at the equilibrium fields; with more than
    ``MAX_SCHEME_CODES`` of them only the equilibrium is returned.  Subsets smaller than the rank
    of the class-target matrix are skipped (their outputs cannot reach the targets).  A subset is
    a scheme when its exact solve converges with every ``P_gamma > 0``.
    """
    if candidates is None:
        candidates = find_maxima(equilibrium.L, task, _starts(task, equilibrium.maxima))
    if len(candidates) > MAX_SCHEME_CODES:
        return [equilibrium]
    mid = float(cumulants(task.activation, 0.0, task.variance).mean)
    def key(maxima):
        return sorted(code_of_means(m.s, mid) for m in maxima)
    found = [equilibrium]
    rank = np.linalg.matrix_rank(task.targets, tol=1e-8)
    for size in range(max(rank, 1), len(candidates) + 1):
        for subset in itertools.combinations(range(len(candidates)), size):
            codes = [candidates[i] for i in subset]
            if key(codes) == key(equilibrium.maxima):
                continue
            scheme = solve_on_codes(task, equilibrium.L, codes, np.full(size, 1.0 / size), max_iter=12)
            if scheme is not None and np.min(scheme.weights) > TOL:
                found.append(scheme)
    return sorted(found, key=lambda s: s.free_energy)
