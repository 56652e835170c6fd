"""Gaussian expectations of a nonlinearity with a nonzero mean, and quadrature grids in R^P.

The mean-field predictor on a test input needs ``E[phi(z(x)) | z]`` where ``z(x) | z`` is Gaussian
with a mean that depends on the training preactivations ``z`` (THEORY.md 1.2, test inputs):

    z(x) | z ~ N(h(x)^T z, Delta(x)),   h = C0^{-1} k,   Delta = C0(x, x) - k^T C0^{-1} k.

The activation's closed forms are used where it has them (``Activation.mean_closed_form``,
``second_closed_form``, a closed-form kernel map at zero means); everything else uses Gauss-Hermite
quadrature (``widebayes.quadrature``) in one or two dimensions at the orders below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from widebayes.activations import Activation
from widebayes.quadrature import gauss_hermite_1d, gauss_hermite_2d, hermite_rule, psd_sqrt

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


def gauss_grid(C, num_nodes: int, scale: float = 1.0) -> GaussGrid:
    """Tensor Gauss-Hermite grid for ``N(0, C)`` in R^P, optionally widened by ``scale``.

    The nodes are those of ``N(0, scale^2 C)``; the weights carry the density ratio
    ``N(x; 0, I) / N(x; 0, scale^2 I)`` in whitened coordinates, so integrands that grow like
    ``exp(b |x|^2 / 2)`` with ``b < 1 - 1/scale^2`` are still integrated accurately (needed for the
    ReLU tilt ``exp(sigma_a^2 |Lambda^T relu(z)|^2 / 2)``, THEORY.md 1.5).
    """
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    P = C.shape[0]
    x1, w1 = hermite_rule(num_nodes)
    lw1 = np.log(w1)
    grids = np.meshgrid(*([x1] * P), indexing="ij")
    x = scale * np.stack([g.ravel() for g in grids], axis=1)
    logw = sum(np.meshgrid(*([lw1] * P), indexing="ij")).ravel()
    logw = logw + P * np.log(scale) - 0.5 * np.sum(x**2, axis=1) * (1.0 - 1.0 / scale**2)
    return GaussGrid(x @ psd_sqrt(C).T, logw)


def _phi(act: Activation | Callable):
    return getattr(act, "phi_np", act)


def gaussian_mean(act: Activation | Callable, m, v):
    """``E[phi(u)]`` for ``u ~ N(m, v)``, elementwise (the activation's closed form where it has one).

    Parameters
    ----------
    act : Activation or callable
        A callable is a NumPy ``phi`` (integrated by Gauss-Hermite quadrature, ``GH_NODES_1D``).
    m, v : array_like
        Means and variances (broadcast).
    """
    if isinstance(act, Activation):
        return act.mean(m, v, GH_NODES_1D)
    return gauss_hermite_1d(act, m, v, GH_NODES_1D)


def gaussian_second_moment(act: Activation | Callable, m, v):
    """``E[phi(u)^2]`` for ``u ~ N(m, v)`` (the activation's closed form, else quadrature)."""
    if isinstance(act, Activation):
        return act.second_moment(m, v, GH_NODES_1D)
    return gauss_hermite_1d(lambda u: act(u) ** 2, m, v, GH_NODES_1D)


def gaussian_pair_moment(act: Activation | Callable, m1, m2, c11, c12, c22):
    """``E[phi(u) phi(w)]`` for ``(u, w) ~ N((m1, m2), [[c11, c12], [c12, c22]])``, elementwise.

    Two-dimensional Gauss-Hermite quadrature (``GH_NODES_2D`` per axis); zero means with a
    closed-form kernel map use the activation's kernel.
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (m1, m2, c11, c12, c22)))
    m1, m2, c11, c12, c22 = arrays
    if isinstance(act, Activation) and act.closed_form and not np.any(m1) and not np.any(m2):
        return act.kernel(c12, c11, c22)
    return gauss_hermite_2d(_phi(act), m1, m2, c11, c12, c22, GH_NODES_2D)
