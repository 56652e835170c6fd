"""Gaussian expectations of a nonlinearity with a nonzero mean, and quadrature grids in R^P.

The mean-field predictor on a test input needs ``E[phi(z(x)) | z]`` where ``z(x) | z`` is Gaussian
with a mean that depends on the training preactivations ``z`` (THEORY.md 1.2, test inputs):

    z(x) | z ~ N(h(x)^T z, Delta(x)),   h = C0^{-1} k,   Delta = C0(x, x) - k^T C0^{-1} k.

Closed forms are used where they exist (linear, the sigmoid ``(1 + erf(sqrt(pi) z / 2)) / 2``,
ReLU); everything else uses Gauss-Hermite quadrature in one or two dimensions.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import scipy.special as sps

from widebayes.activations import SIGMOID_SLOPE, Activation

GH_NODES_1D = 32
GH_NODES_2D = 32


class GaussGrid(NamedTuple):
    """Tensor Gauss-Hermite nodes for ``E_{z ~ N(0, C)}[g(z)]`` (importance-weighted when scaled).

    Attributes
    ----------
    z : ndarray (n, P)
        Nodes in preactivation space.
    logw : ndarray (n,)
        Log weights; ``sum exp(logw) g(z) ~ E_{N(0, C)}[g]``.
    """

    z: np.ndarray
    logw: np.ndarray


def _hermite(num_nodes: int):
    x, w = np.polynomial.hermite_e.hermegauss(num_nodes)
    return x, np.log(w / w.sum())


def gauss_grid(C, num_nodes: int, scale: float = 1.0) -> GaussGrid:
    """Tensor Gauss-Hermite grid for ``N(0, C)`` in R^P, optionally widened by ``scale``.

    The nodes are those of ``N(0, scale^2 C)``; the weights carry the density ratio
    ``N(x; 0, I) / N(x; 0, scale^2 I)`` in whitened coordinates, so integrands that grow like
    ``exp(b |x|^2 / 2)`` with ``b < 1 - 1/scale^2`` are still integrated accurately (needed for the
    ReLU tilt ``exp(sigma_a^2 |Lambda^T relu(z)|^2 / 2)``, THEORY.md 1.5).
    """
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    P = C.shape[0]
    x1, lw1 = _hermite(num_nodes)
    grids = np.meshgrid(*([x1] * P), indexing="ij")
    x = scale * np.stack([g.ravel() for g in grids], axis=1)
    logw = sum(np.meshgrid(*([lw1] * P), indexing="ij")).ravel()
    logw = logw + P * np.log(scale) - 0.5 * np.sum(x**2, axis=1) * (1.0 - 1.0 / scale**2)
    return GaussGrid(x @ psd_sqrt(C).T, logw)


def psd_sqrt(C) -> np.ndarray:
    """A square root ``S`` with ``S S^T = C`` of a positive semidefinite matrix (eigh; singular C allowed)."""
    w, V = np.linalg.eigh(0.5 * (C + C.T))
    return V * np.sqrt(np.maximum(w, 0.0))


def _sigmoid_mean(m, v):
    """``E[(1 + erf(s u)) / 2]``, ``u ~ N(m, v)``: ``(1 + erf(s m / sqrt(1 + 2 s^2 v))) / 2``."""
    return 0.5 * (1.0 + sps.erf(SIGMOID_SLOPE * m / np.sqrt(1.0 + 2.0 * SIGMOID_SLOPE**2 * v)))


def _relu_mean(m, v):
    """``E[relu(u)] = m Phi(m / sd) + sd phi(m / sd)``, ``u ~ N(m, v)``."""
    sd = np.sqrt(np.maximum(v, 1e-300))
    r = m / sd
    return m * sps.ndtr(r) + sd * np.exp(-0.5 * r**2) / np.sqrt(2.0 * np.pi)


def _relu_second(m, v):
    """``E[relu(u)^2] = (m^2 + v) Phi(m / sd) + m sd phi(m / sd)``."""
    sd = np.sqrt(np.maximum(v, 1e-300))
    r = m / sd
    return (m**2 + v) * sps.ndtr(r) + m * sd * np.exp(-0.5 * r**2) / np.sqrt(2.0 * np.pi)


def _gh_moment(phi_np, m, v, power):
    x, lw = _hermite(GH_NODES_1D)
    m, v = np.broadcast_arrays(np.asarray(m, dtype=np.float64), np.asarray(v, dtype=np.float64))
    u = m[..., None] + np.sqrt(np.maximum(v, 0.0))[..., None] * x
    return (phi_np(u) ** power) @ np.exp(lw)


def gaussian_mean(act: Activation | Callable, m, v):
    """``E[phi(u)]`` for ``u ~ N(m, v)``, elementwise (closed forms for linear, sigmoid, relu).

    Parameters
    ----------
    act : Activation or callable
        A callable is a NumPy ``phi`` (integrated by Gauss-Hermite quadrature).
    m, v : array_like
        Means and variances (broadcast).
    """
    m, v = np.asarray(m, dtype=np.float64), np.asarray(v, dtype=np.float64)
    name = getattr(act, "name", None)
    if name == "linear":
        return m + 0.0 * v
    if name == "sigmoid":
        return _sigmoid_mean(m, v)
    if name == "relu":
        return _relu_mean(m, v)
    return _gh_moment(getattr(act, "phi_np", act), m, v, 1)


def gaussian_second_moment(act: Activation | Callable, m, v):
    """``E[phi(u)^2]`` for ``u ~ N(m, v)`` (closed forms for linear and relu, else quadrature)."""
    m, v = np.asarray(m, dtype=np.float64), np.asarray(v, dtype=np.float64)
    name = getattr(act, "name", None)
    if name == "linear":
        return m**2 + v
    if name == "relu":
        return _relu_second(m, v)
    return _gh_moment(getattr(act, "phi_np", act), m, v, 2)


def gaussian_pair_moment(act: Activation | Callable, m1, m2, c11, c12, c22):
    """``E[phi(u) phi(w)]`` for ``(u, w) ~ N((m1, m2), [[c11, c12], [c12, c22]])``, elementwise.

    Two-dimensional Gauss-Hermite quadrature (``GH_NODES_2D`` per axis); zero means with a
    closed-form kernel map use the activation's kernel.
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (m1, m2, c11, c12, c22)))
    m1, m2, c11, c12, c22 = arrays
    if isinstance(act, Activation) and act.closed_form and not np.any(m1) and not np.any(m2):
        return act.kernel(c12, c11, c22)
    phi_np = getattr(act, "phi_np", act)
    x, lw = _hermite(GH_NODES_2D)
    xx, yy = (g.ravel() for g in np.meshgrid(x, x, indexing="ij"))
    ww = np.exp(np.add.outer(lw, lw).ravel())
    s1 = np.sqrt(np.maximum(c11, 0.0))
    rho = np.divide(c12, s1 * np.sqrt(np.maximum(c22, 0.0)), out=np.zeros_like(c12),
                    where=s1 * np.sqrt(np.maximum(c22, 0.0)) > 0)
    rho = np.clip(rho, -1.0, 1.0)
    u = m1[..., None] + s1[..., None] * xx
    w = m2[..., None] + np.sqrt(np.maximum(c22, 0.0))[..., None] * (
        rho[..., None] * xx + np.sqrt(1.0 - rho**2)[..., None] * yy)
    return (phi_np(u) * phi_np(w)) @ ww
