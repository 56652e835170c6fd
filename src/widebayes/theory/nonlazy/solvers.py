"""A damped Newton root finder with central-difference Jacobians.

The code equations track local maxima of F numerically (to ~1e-13), so forward differences with
the tiny steps of MINPACK's hybr are dominated by that noise; central differences with a step
~1e-6 are not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class RootResult(NamedTuple):
    """Solution, the max-norm of the residual there, and whether ``tol`` was reached."""

    x: np.ndarray
    residual: float
    converged: bool


def jacobian(fun: Callable, x, eps: float = 1e-6) -> np.ndarray:
    """Central-difference Jacobian of ``fun`` at x."""
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps * max(1.0, abs(x[i]))
        cols.append((fun(x + e) - fun(x - e)) / (2.0 * e[i]))
    return np.stack(cols, axis=1)


def newton(fun: Callable, x0, tol: float = 1e-12, max_iter: int = 60) -> RootResult:
    """Solve ``fun(x) = 0`` by Newton steps, halved until the max-norm residual decreases."""
    x = np.asarray(x0, dtype=np.float64).copy()
    r = fun(x)
    norm = float(np.max(np.abs(r)))
    for _ in range(max_iter):
        if norm < tol:
            break
        step = np.linalg.lstsq(jacobian(fun, x), -r, rcond=1e-13)[0]
        t = 1.0
        while t > 1e-6:
            r_new = fun(x + t * step)
            if np.max(np.abs(r_new)) < norm:
                break
            t *= 0.5
        else:
            break
        x, r, norm = x + t * step, r_new, float(np.max(np.abs(r_new)))
    return RootResult(x, norm, norm < tol)
