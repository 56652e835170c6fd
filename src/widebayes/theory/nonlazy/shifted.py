"""The one-input law of a deep layer: a shifted Gaussian, tilted linearly and quadratically in phi.

In a hidden layer l >= 2 of a deep network on a class-structured task the preactivation of a
neuron on an input of class c is ``z = u_c + eps``: a class-shared shift ``u_c`` (from the
class-block part of the layer below's kernel) plus an input-private ``eps ~ N(0, w_c)`` (from its
input-diagonal part).  Given the neuron's mode, the inputs of class c are iid from (derived in
``deep``)

    p(z) ∝ N(z; u, w) exp(theta phi(z) + d phi(z)^2),

with the class field ``theta`` (conjugate to the class mean of phi) and the input-diagonal tilt
``d`` (conjugate to phi^2, from the layer above).  Its cumulant function and the derivatives the
mode equations need [DER, elementary]:

    kappa(theta, u) = ln E_{N(u, w)} exp(theta phi + d phi^2),
    kappa_theta = E phi,   kappa_theta,theta = Var phi,
    kappa_u = (E z - u) / w,   kappa_theta,u = Cov(phi, z) / w,   kappa_uu = Var z / w^2 - 1 / w

(the u-derivatives from ``d/du ln N(z; u, w) = (z - u) / w``).  Linear phi (``Activation.is_linear``)
has closed forms (a Gaussian of precision ``1/w - 2d``); other activations use the trapezoid rule on
a uniform grid wide enough for the tilt, which is spectrally accurate for smooth phi.  Bounded phi
only for the grid (a growing phi makes the quadratic tilt unbounded).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from widebayes.activations import Activation

#: grid: points (301: max error 1e-13 against 4001 for sigmoid and tanh over |theta| <= 12,
#: |d| <= 5, |u| <= 3, 0.01 <= w <= 3), and the log-density drop the half-width covers beyond the tilt
GRID_POINTS = 301
TAIL_NATS = 40.0


class ShiftedLaw(NamedTuple):
    """Moments of ``N(z; u, w) exp(theta phi + d phi^2)`` (normalised), elementwise.

    Attributes
    ----------
    kappa : log-normaliser ``ln E_{N(u, w)} exp(theta phi + d phi^2)``
    m_phi, v_phi : mean and variance of phi(z)
    m_z, v_z : mean and variance of z
    c_phiz : covariance of phi(z) and z
    """

    kappa: np.ndarray
    m_phi: np.ndarray
    v_phi: np.ndarray
    m_z: np.ndarray
    v_z: np.ndarray
    c_phiz: np.ndarray


def _linear(theta, u, d, w) -> ShiftedLaw:
    prec = 1.0 / w - 2.0 * d
    if np.any(prec <= 0.0):
        raise ValueError("quadratic tilt too large: the linear layer's law is not normalisable")
    var = 1.0 / prec
    mean = (u / w + theta) * var
    kappa = -0.5 * np.log(w * prec) + 0.5 * prec * mean**2 - 0.5 * u**2 / w
    return ShiftedLaw(kappa, mean, var, mean, var, var)


def phi_bound(act: Activation) -> float:
    """``max |phi|`` of a bounded activation."""
    return max(abs(act.value_range[0]), abs(act.value_range[1]))


def _half_width(act: Activation, theta, d) -> float:
    """Half-width of the trapezoid grid in x = (z - u) / sqrt(w): ``TAIL_NATS`` beyond the batch's
    largest tilt."""
    phi_max = phi_bound(act)
    tilt = np.max(np.abs(theta)) * phi_max + np.max(np.abs(d)) * phi_max**2
    return float(np.sqrt(2.0 * (TAIL_NATS + 2.0 * tilt)))


def _grid(act: Activation, theta, u, d, w, points: int) -> ShiftedLaw:
    half = _half_width(act, theta, d)
    x = np.linspace(-half, half, points)
    dx = x[1] - x[0]
    sd = np.sqrt(w)[..., None]
    z = u[..., None] + sd * x
    f = act.phi_np(z)
    trap = np.full(points, 1.0)
    trap[[0, -1]] = 0.5
    logq = -0.5 * x**2 + theta[..., None] * f + d[..., None] * f**2 + np.log(trap)
    top = np.max(logq, axis=-1, keepdims=True)
    p = np.exp(logq - top)
    total = np.sum(p, -1)
    kappa = top[..., 0] + np.log(total) + np.log(dx) - 0.5 * np.log(2.0 * np.pi)
    p = p / total[..., None]
    m_phi = np.sum(p * f, -1)
    dz = sd * x                                                 # z - u: better conditioned
    m_dz = np.sum(p * dz, -1)
    v_phi = np.maximum(np.sum(p * (f - m_phi[..., None]) ** 2, -1), 0.0)
    v_z = np.maximum(np.sum(p * (dz - m_dz[..., None]) ** 2, -1), 0.0)
    c = np.sum(p * (f - m_phi[..., None]) * (dz - m_dz[..., None]), -1)
    return ShiftedLaw(kappa, m_phi, v_phi, u + m_dz, v_z, c)


#: the trapezoid spacing of :func:`resolved_points`, in local standard deviations of the tilted law,
#: and its fewest points
RESOLVED_SPACING = 0.35
MIN_POINTS = 31


@functools.cache
def _curvature_bounds(act: Activation) -> tuple[float, float]:
    """``max |phi''|`` and ``max (phi'^2 + |phi phi''|)`` over the real line (bounded phi)."""
    z = np.linspace(-40.0, 40.0, 80001)
    f = act.phi_np(z)
    d1 = np.gradient(f, z)
    d2 = np.gradient(d1, z)
    return float(np.max(np.abs(d2))), float(np.max(d1**2 + np.abs(f * d2)))


def resolved_points(act: Activation, theta, d, w) -> int:
    """Trapezoid points that resolve every law of the batch: the spacing ``RESOLVED_SPACING`` over
    the square root of a bound on the log-density's curvature in x = (z - u) / sqrt(w),
    ``1 + sqrt(w)^2 (|theta| max|phi''| + 2 |d| max(phi'^2 + |phi phi''|))``, over the half-width of
    :func:`shifted_law`; between ``MIN_POINTS`` and ``GRID_POINTS``.  Measured against 301 points on
    the batches of the L = 3 sigmoid solve and on random laws inside the range the default was
    checked on (a test)."""
    if act.is_linear:
        return GRID_POINTS
    c2, c3 = _curvature_bounds(act)
    theta, d, w = (np.abs(np.asarray(v, dtype=np.float64)) for v in (theta, d, w))
    half = _half_width(act, theta, d)
    curvature = 1.0 + np.max(w * (theta * c2 + 2.0 * d * c3))
    points = int(np.ceil(2.0 * half * np.sqrt(curvature) / RESOLVED_SPACING)) + 1
    return int(min(max(points, MIN_POINTS), GRID_POINTS))


def shifted_law(act: Activation, theta, u, d, w, points: int = GRID_POINTS) -> ShiftedLaw:
    """Moments of the one-input law (module docstring), broadcasting theta, u, d, w; ``points``: the
    trapezoid grid's size for nonlinear phi.

    Raises
    ------
    ValueError
        For an unbounded nonlinear activation (no grid covers its quadratic tilt) or a linear
        layer whose quadratic tilt makes the law improper.
    """
    theta, u, d, w = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (theta, u, d, w)))
    if act.is_linear:
        return _linear(theta, u, d, w)
    if not act.bounded:
        raise ValueError(f"{act.name}: the shifted tilted law is implemented for bounded and linear phi")
    return _grid(act, theta, u, d, w, points)
