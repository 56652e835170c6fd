"""Sparse coding in ReLU networks on class-structured tasks: condensation (THEORY.md 1.5b; paper,
"Sparse coding scheme").

ReLU is 1-homogeneous, so a neuron can carry a readout ``a_i = sqrt(N) abar_i`` and preactivations
``z_i = sqrt(N) zbar_i``: an *outlier*.  Outliers exist exactly at the margin of the bulk,

    max_{u >= 0, |u| = 1} sigma_a^2 |Lambda^T u|^2 = 1   ->   beta_a rho_c |lambda_c|^2 = 1

for every condensed class c (u uniform on one class; ``beta_a = sigma_a^2 P``).  An outlier
coding class c has own-class activation s_i and ``a_i = beta_a rho_c s_i lambda_c``; only the
mass ``M_c = sum_{i codes c} |a_i|^2 / N = beta_a rho_c K_c``, ``K_c = sum s_i^2 / N``, is fixed
(the split over neurons is a zero mode).  The bulk is a single code ``s* = argmax F(s)`` (``classes``
with the ReLU Cramér rate), readout ``a0 = a(s*)``, bulk output ``B_c = s*_c a0``.  Closure
(derived in THEORY.md 1.5b, here with general beta_a):

    (T0 + M_c) lambda_c = y_c - B_c,   condensed:  lambda_c = (y_c - B_c) / (sqrt(beta_a rho_c) |y_c - B_c|),
                                                   M_c = sqrt(beta_a rho_c) |y_c - B_c| - T0,
    not condensed (M_c = 0):  T0 lambda_c = y_c - B_c,  beta_a rho_c |lambda_c|^2 <= 1.

While all classes are condensed, L, s*, a0 do not depend on T0 and ``M_c(T0) = M_c(0) - T0``
(i.e. ``K_c(T0) = K_c(0) - T0 / rho_c`` for beta_a = 1).  A class decondenses at the critical
temperature where its mass reaches 0, ``T_c = sqrt(beta_a rho_c) |y_c - B_c|`` evaluated in the
phase just below; classes that decondense first change the bulk, so the T_c are found in turn.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq, root

from widebayes.theory.nonlazy.classes import ClassTask, Maximum, corner_starts, find_maxima, initial_fields

MASS_TOL = 1e-12


class SparseSolution(NamedTuple):
    """Condensed (sparse) solution.

    Attributes
    ----------
    L : ndarray (k, m)
        Conjugate fields.
    bulk : Maximum
        The bulk code: class means ``s*``, readout ``a0``, fields.
    condensed : ndarray of bool (k,)
        Classes with outliers.
    outlier_mass : ndarray (k,)
        ``M_c = sum_{i codes c} |a_i|^2 / N`` (0 where not condensed).
    outlier_direction : ndarray (k, m)
        Unit readout direction of class c's outliers, ``lambda_c / |lambda_c|``.
    kernel_mass : ndarray (k,)
        ``K_c = sum_{i codes c} s_i^2 / N = M_c / (beta_a rho_c)``.
    output : ndarray (k, m)
        Mean output on each class, ``B_c + M_c lambda_c`` (= ``y_c - T0 lambda_c``).
    margin : float
        ``max_{u >= 0} sigma_a^2 |Lambda^T u|^2 / |u|^2`` (<= 1; = 1 when something condenses).
    residual : float
    """

    L: np.ndarray
    bulk: Maximum
    condensed: np.ndarray
    outlier_mass: np.ndarray
    outlier_direction: np.ndarray
    kernel_mass: np.ndarray
    output: np.ndarray
    margin: float
    residual: float


def bulk_code(L, task: ClassTask, previous: Maximum | None = None) -> Maximum:
    """The bulk: the global maximum of F (ReLU Cramér rate), found from corner starts."""
    starts = corner_starts(len(task.rho), 1.0)
    if previous is not None:
        starts = np.vstack([starts, previous.theta[None, :]])
    maxima = find_maxima(L, task, starts)
    if not maxima:
        raise RuntimeError("ReLU bulk: F has no finite maximum at these fields")
    return maxima[0]


def margin(L, task: ClassTask) -> float:
    """``max_{alpha >= 0, |alpha| = 1} alpha^T M alpha``, ``M_cc' = beta_a sqrt(rho_c rho_c')
    lambda_c . lambda_c'`` (the class-uniform form of THEORY.md 1.5's lambda*), by enumerating
    supports (nonnegative top eigenvectors of principal submatrices)."""
    r = np.sqrt(task.beta_a * task.rho)[:, None] * L
    M = r @ r.T
    best = float(np.max(np.diag(M)))
    k = len(task.rho)
    for size in range(2, k + 1):
        for S in itertools.combinations(range(k), size):
            w, V = np.linalg.eigh(M[np.ix_(S, S)])
            v = V[:, -1] * np.sign(V[:, -1].sum() or 1.0)
            if np.all(v >= -1e-12):
                best = max(best, float(w[-1]))
    return best


def _fields(L, task, condensed, state):
    """The closure map ``L -> L'`` (module docstring) at fixed condensed set."""
    bulk = bulk_code(L, task, state.get("bulk"))
    state["bulk"] = bulk
    D = task.targets - bulk.s[:, None] * bulk.a[None, :]
    norms = np.linalg.norm(D, axis=1)
    cond = D / (np.sqrt(task.beta_a * task.rho) * np.maximum(norms, 1e-300))[:, None]
    free = D / task.T0 if task.T0 > 0 else cond
    return np.where(condensed[:, None], cond, free), bulk, D


def solve_sparse_fixed_set(task: ClassTask, condensed, L0=None):
    """Solve the closure with a given condensed set (hybr on ``L - L'(L)``)."""
    condensed = np.asarray(condensed, dtype=bool)
    L0 = initial_fields(task) if L0 is None else L0
    state: dict = {}
    def fun(x):
        return (x.reshape(L0.shape) - _fields(x.reshape(L0.shape), task, condensed, state)[0]).ravel()
    sol = root(fun, np.asarray(L0, dtype=np.float64).ravel(), method="hybr", options={"xtol": 1e-14})
    L = sol.x.reshape(L0.shape)
    L_new, bulk, D = _fields(L, task, condensed, state)
    mass = np.where(condensed, np.sqrt(task.beta_a * task.rho) * np.linalg.norm(D, axis=1) - task.T0, 0.0)
    return L, bulk, mass, float(np.max(np.abs(L - L_new)))


def solve_sparse(task: ClassTask, L0=None) -> SparseSolution:
    """Equilibrium sparse code at T0: the condensed set is found self-consistently.

    Start with every class condensed; a class whose mass comes out <= 0 decondenses, a free class
    whose ``beta_a rho_c |lambda_c|^2`` exceeds 1 condenses; repeat until consistent.
    """
    k = len(task.rho)
    condensed = np.ones(k, dtype=bool)
    for _ in range(2 * k + 2):
        L, bulk, mass, res = solve_sparse_fixed_set(task, condensed, L0)
        over = (~condensed) & (task.beta_a * task.rho * np.sum(L**2, 1) > 1.0 + 1e-9)
        under = condensed & (mass <= MASS_TOL)
        if not over.any() and not under.any():
            return _assemble(task, L, bulk, condensed, mass, res)
        condensed = (condensed & ~under) | over
        L0 = L
    raise RuntimeError("sparse-code equations: no consistent set of condensed classes")


def _assemble(task, L, bulk, condensed, mass, res) -> SparseSolution:
    mass = np.maximum(mass, 0.0)
    direction = L / np.maximum(np.linalg.norm(L, axis=1, keepdims=True), 1e-300)
    output = bulk.s[:, None] * bulk.a[None, :] + mass[:, None] * L
    res = max(res, float(np.max(np.abs(output - (task.targets - task.T0 * L)))))
    return SparseSolution(L, bulk, condensed, mass, direction, mass / (task.beta_a * task.rho),
                          output, margin(L, task), res)


class CriticalTemperatures(NamedTuple):
    """``T_c`` per class and the order in which classes decondense as T0 rises."""

    T_c: np.ndarray
    order: list


def critical_temperatures(task: ClassTask, tol: float = 1e-9) -> CriticalTemperatures:
    """Critical temperature of every class (module docstring; THEORY.md 1.5b).

    In the fully condensed phase ``M_c(T0) = M_c(0) - T0``, so the first classes to lose their
    outliers do so at ``T = min_c M_c(0)``.  Above it the bulk changes; the next T_c solves
    ``M_c(T) = 0`` in that phase (brentq), and so on.
    """
    k = len(task.rho)
    condensed = np.ones(k, dtype=bool)
    T_c, order = np.full(k, np.nan), []
    L, _, mass0, _ = solve_sparse_fixed_set(task._replace(T0=0.0), condensed)
    first = mass0 <= mass0.min() + tol
    T_c[first], T_low = mass0.min(), mass0.min()
    order.append(np.flatnonzero(first).tolist())
    condensed &= ~first
    while condensed.any():
        def mass_at(T):
            return solve_sparse_fixed_set(task._replace(T0=T), condensed, L)[2]
        T_hi = T_low * 1.5 + 0.1
        while np.any(mass_at(T_hi)[condensed] > 0):
            T_hi *= 2.0
        cands = {c: brentq(lambda T: mass_at(T)[c], T_low * (1 + 1e-9), T_hi, xtol=1e-12)
                 for c in np.flatnonzero(condensed)}
        T_next = min(cands.values())
        group = [c for c, T in cands.items() if T <= T_next + 1e-7]
        T_c[group], T_low = T_next, T_next
        order.append(group)
        condensed[group] = False
        L = solve_sparse_fixed_set(task._replace(T0=T_next), condensed, L)[0]
    return CriticalTemperatures(T_c, order)
