"""Cumulant functions of phi(z), z ~ N(0, c): the Cramér rates of class means (THEORY.md 1.4b, 1.5b).

For n iid preactivations ``z ~ N(0, c)`` the class mean ``s = mean phi(z)`` obeys
``p_n(s) ≍ exp(-n I(s))`` with

    kappa(theta) = ln E exp(theta phi(z)),   I(s) = sup_theta [theta s - kappa(theta)],
    s = kappa'(theta),   I''(s) = 1 / kappa''(theta).

``kappa'`` and ``kappa''`` are the mean and variance of phi under the tilted law
``N(z; 0, c) exp(theta phi(z) - kappa(theta))``, which is also the single-neuron preactivation
posterior of one class within a code (THEORY.md 1.4b).  ReLU (``Activation.is_relu``) has closed
forms (THEORY.md 1.5b: ``kappa(t) = ln(1/2 + exp(t^2/2) Phi(t))`` for c = 1, and 1-homogeneity
scales c out); other activations use the trapezoid rule on a uniform grid (spectrally accurate for
smooth phi), tabulated once per variance for bounded phi.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import scipy.special as sps
from scipy.interpolate import CubicSpline
from scipy.special import logsumexp

from widebayes.activations import Activation, get_activation

GRID_HALF_WIDTH = 10.0
GRID_POINTS = 2001
_SQRT_2PI = np.sqrt(2.0 * np.pi)
#: tabulated range and step of theta for the grid-based activations (cubic splines, error ~1e-10)
TABLE_LIMIT = 60.0
TABLE_STEP = 0.01


class Cumulants(NamedTuple):
    """``kappa(theta)``, ``kappa'(theta)`` (tilted mean of phi) and ``kappa''(theta)`` (its variance)."""

    kappa: np.ndarray
    mean: np.ndarray
    var: np.ndarray


class TiltedMoments(NamedTuple):
    """Mean and variance of the preactivation z under the tilted law."""

    mean: np.ndarray
    var: np.ndarray


def _relu_unit(t):
    """Closed forms for relu, c = 1, through ``1/A``, ``A = exp(t^2/2) Phi(t)`` (no overflow)."""
    log_inv_A = -0.5 * t**2 - sps.log_ndtr(t)
    inv_A = np.exp(log_inv_A)
    denom = 1.0 + 0.5 * inv_A
    kappa = np.log(denom) - log_inv_A
    mean = (t + inv_A / _SQRT_2PI) / denom
    second = (1.0 + t**2 + t * inv_A / _SQRT_2PI) / denom
    z_mean = t / denom
    z_second = (0.5 * inv_A + 1.0 + t**2 + t * inv_A / _SQRT_2PI) / denom
    return kappa, mean, np.maximum(second - mean**2, 0.0), z_mean, np.maximum(z_second - z_mean**2, 0.0)


def _grid(act: Activation, theta, variance):
    """Uniform x-grid per theta (``z = sqrt(c) x``), shifted right for relu-like phi (growth class
    ``"relu-like"``: for theta > 0 the tilted law's mode moves out to ``z ~ theta c``)."""
    shift = np.maximum(theta * np.sqrt(variance), 0.0) if act.growth == "relu-like" else 0.0 * theta
    u = np.linspace(0.0, 1.0, GRID_POINTS)
    lo, hi = -GRID_HALF_WIDTH, GRID_HALF_WIDTH + shift
    x = lo + (hi - lo)[..., None] * u
    return x, (hi - lo) / (GRID_POINTS - 1)


def _grid_moments(activation: str, theta, variance):
    act = get_activation(activation)
    phi = act.phi_np
    theta = np.asarray(theta, dtype=np.float64)
    x, dx = _grid(act, theta, variance)
    z = np.sqrt(variance) * x
    f = phi(z)
    trap = np.full(GRID_POINTS, 1.0)
    trap[[0, -1]] = 0.5
    logq = -0.5 * x**2 + theta[..., None] * f + np.log(trap)
    kappa = logsumexp(logq, axis=-1) + np.log(dx) - 0.5 * np.log(2.0 * np.pi)
    w = np.exp(logq - logsumexp(logq, axis=-1)[..., None])
    mean = np.sum(w * f, -1)
    zm = np.sum(w * z, -1)
    return (kappa, mean, np.maximum(np.sum(w * f**2, -1) - mean**2, 0.0), zm,
            np.maximum(np.sum(w * z**2, -1) - zm**2, 0.0))


@lru_cache(maxsize=32)
def _table(activation: str, variance: float):
    """Cubic splines over ``|theta| <= TABLE_LIMIT``: (kappa, kappa', kappa'') and (E z, Var z)."""
    theta = np.arange(-TABLE_LIMIT, TABLE_LIMIT + TABLE_STEP / 2, TABLE_STEP)
    values = [np.concatenate(parts) for parts in zip(*(
        _grid_moments(activation, chunk, variance) for chunk in np.array_split(theta, 40)))]
    return CubicSpline(theta, np.stack(values[:3], -1)), CubicSpline(theta, np.stack(values[3:], -1))


def _tabulated(activation: str, theta) -> bool:
    """Bounded phi within the table's range (the grid does not move with theta)."""
    return get_activation(activation).bounded and bool(np.all(np.abs(theta) <= TABLE_LIMIT))


def _cumulant_values(activation: str, theta, variance):
    theta = np.asarray(theta, dtype=np.float64)
    if get_activation(activation).is_relu:
        k, m, v, _, _ = _relu_unit(np.sqrt(variance) * theta)
        return k, np.sqrt(variance) * m, variance * v
    if _tabulated(activation, theta):
        out = _table(activation, float(variance))[0](theta)
        return out[..., 0], out[..., 1], out[..., 2]
    return _grid_moments(activation, theta, variance)[:3]


def _all(activation: str, theta, variance):
    """All five: kappa, kappa', kappa'', and the tilted mean and variance of z."""
    theta = np.asarray(theta, dtype=np.float64)
    if get_activation(activation).is_relu:
        k, m, v, zm, zv = _relu_unit(np.sqrt(variance) * theta)
        return k, np.sqrt(variance) * m, variance * v, np.sqrt(variance) * zm, variance * zv
    if _tabulated(activation, theta):
        a, b = (spline(theta) for spline in _table(activation, float(variance)))
        return a[..., 0], a[..., 1], a[..., 2], b[..., 0], b[..., 1]
    return _grid_moments(activation, theta, variance)


def cumulants(activation: str, theta, variance: float = 1.0) -> Cumulants:
    """``kappa``, ``kappa'``, ``kappa''`` of ``phi(z)``, ``z ~ N(0, variance)``, elementwise in theta.

    Parameters
    ----------
    activation : str
        A name of ``widebayes.activations.ACTIVATIONS``.
    theta : array_like
        Tilt (the class field ``lambda_c . a``, THEORY.md 1.4b).
    variance : float
        Prior variance of the preactivation, ``sigma_1^2 K0_mumu``.
    """
    return Cumulants(*_cumulant_values(activation, theta, variance))


def tilted_preactivation(activation: str, theta, variance: float = 1.0) -> TiltedMoments:
    """Mean and variance of z under ``N(z; 0, variance) exp(theta phi(z) - kappa(theta))``: the
    conditional preactivation posterior ``P(z | a_gamma)`` on one class (THEORY.md 1.4b)."""
    _, _, _, zm, zv = _all(activation, theta, variance)
    return TiltedMoments(zm, zv)


def rate(activation: str, theta, variance: float = 1.0) -> np.ndarray:
    """``I(s)`` at ``s = kappa'(theta)``: ``theta s - kappa(theta)`` (Legendre transform)."""
    c = cumulants(activation, theta, variance)
    return np.asarray(theta) * c.mean - c.kappa
