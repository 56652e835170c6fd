"""Activations: each nonlinearity ``phi`` beside its NNGP kernel map.

The kernel map of an activation is the Gaussian expectation

    k(c12, c11, c22) = E[phi(u) phi(v)],  (u, v) ~ N(0, [[c11, c12], [c12, c22]]),

evaluated elementwise (broadcasting).  It is the one-layer step of the NNGP recursion
``K_l = sigma_l^2 k(K_{l-1})`` (Neal 1996; Williams 1998; Cho & Saul 2009).  Closed forms are
used for linear, the erf sigmoid and ReLU; the others use two-dimensional Gauss-Hermite
quadrature.  ``phi`` is written once against an array namespace ``xp`` so that the same formula
serves the JAX samplers (``phi``) and the float64 NumPy theory (``phi_np``).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import scipy.special as sps

ArrayFn = Callable[..., object]

SIGMOID_SLOPE = float(np.sqrt(np.pi) / 2.0)  # phi(z) = (1 + erf(sqrt(pi) z / 2)) / 2, slope 1/2 at 0
QUADRATURE_NODES = 64
_PAIRS_PER_BLOCK = 2048


class Activation(NamedTuple):
    """A nonlinearity and its Gaussian kernel map.

    Attributes
    ----------
    name : str
    phi : callable
        ``phi(z)`` on JAX arrays (used by the networks and samplers).
    phi_np : callable
        The same function on NumPy arrays, float64 (used by the theory).
    kernel : callable
        ``kernel(c12, c11, c22) -> E[phi(u) phi(v)]``, NumPy float64, elementwise.
    bounded : bool
        Whether ``phi`` is bounded (decides the ``sigma_a2 = "auto"`` rule).
    closed_form : bool
        Whether ``kernel`` is a closed form (else Gauss-Hermite quadrature).
    """

    name: str
    phi: ArrayFn
    phi_np: ArrayFn
    kernel: ArrayFn
    bounded: bool
    closed_form: bool


def _erf(xp):
    return jsp.erf if xp is jnp else sps.erf


def _linear(z, xp):
    return z


def _sigmoid(z, xp):
    return 0.5 * (1.0 + _erf(xp)(SIGMOID_SLOPE * z))


def _relu(z, xp):
    return xp.maximum(z, 0.0)


def _tanh(z, xp):
    return xp.tanh(z)


def _softplus(z, xp):
    return xp.logaddexp(z, 0.0)


def _relu2(z, xp):
    return xp.maximum(z, 0.0) ** 2


def linear_kernel(c12, c11, c22):
    """E[u v] = c12."""
    return np.asarray(c12, dtype=np.float64) + 0.0 * (np.asarray(c11) + np.asarray(c22))


def sigmoid_kernel(c12, c11, c22):
    """Erf sigmoid: E[phi phi] = 1/4 + (1/(2 pi)) arcsin(2 s^2 c12 / sqrt((1+2 s^2 c11)(1+2 s^2 c22))).

    With phi = (1 + erf(s z))/2, s = sqrt(pi)/2, and Williams (1998):
    E[erf(s u) erf(s v)] = (2/pi) arcsin(2 s^2 c12 / sqrt((1 + 2 s^2 c11)(1 + 2 s^2 c22))).
    """
    a = 2.0 * SIGMOID_SLOPE**2
    arg = a * np.asarray(c12) / np.sqrt((1.0 + a * np.asarray(c11)) * (1.0 + a * np.asarray(c22)))
    return 0.25 + np.arcsin(np.clip(arg, -1.0, 1.0)) / (2.0 * np.pi)


def relu_kernel(c12, c11, c22):
    """Arc-cosine kernel of degree 1 (Cho & Saul 2009).

    E[relu(u) relu(v)] = sqrt(c11 c22) / (2 pi) [sin t + (pi - t) cos t],  cos t = c12/sqrt(c11 c22).
    """
    norm = np.sqrt(np.asarray(c11, dtype=np.float64) * np.asarray(c22, dtype=np.float64))
    cos_t = np.clip(np.divide(c12, norm, out=np.zeros(np.broadcast(c12, norm).shape), where=norm > 0),
                    -1.0, 1.0)
    t = np.arccos(cos_t)
    return norm / (2.0 * np.pi) * (np.sin(t) + (np.pi - t) * cos_t)


def gauss_hermite_kernel(phi_np, c12, c11, c22, num_nodes=QUADRATURE_NODES):
    """E[phi(u) phi(v)] by tensor Gauss-Hermite quadrature (probabilists' weights).

    Writes ``u = sqrt(c11) x``, ``v = sqrt(c22) (rho x + sqrt(1 - rho^2) y)`` with x, y iid N(0, 1).
    That treats u and v differently, so the quadrature error (~1e-8 for tanh) is not symmetric
    under exchanging them; the result is the mean of both orders, so that kernel matrices are
    exactly symmetric and train, cross and test blocks agree.
    """
    return 0.5 * (_gauss_hermite_one_order(phi_np, c12, c11, c22, num_nodes)
                  + _gauss_hermite_one_order(phi_np, c12, c22, c11, num_nodes))


def _gauss_hermite_one_order(phi_np, c12, c11, c22, num_nodes):
    """One order of the tensor quadrature, evaluated in blocks of pairs to bound memory."""
    c12, c11, c22 = np.broadcast_arrays(*(np.asarray(c, dtype=np.float64) for c in (c12, c11, c22)))
    x, w = np.polynomial.hermite_e.hermegauss(num_nodes)
    w = w / w.sum()
    xx, yy = (g.ravel() for g in np.meshgrid(x, x, indexing="ij"))
    ww = np.outer(w, w).ravel()
    flat = [c.ravel() for c in (c12, c11, c22)]
    out = np.empty(flat[0].shape)
    for start in range(0, out.size, _PAIRS_PER_BLOCK):
        block = slice(start, start + _PAIRS_PER_BLOCK)
        out[block] = _gh_block(phi_np, *(f[block] for f in flat), xx, yy, ww)
    return out.reshape(c12.shape)


def _gh_block(phi_np, c12, c11, c22, xx, yy, ww):
    s1, s2 = np.sqrt(c11), np.sqrt(c22)
    rho = np.clip(np.divide(c12, s1 * s2, out=np.zeros_like(c12), where=s1 * s2 > 0), -1.0, 1.0)
    u = s1[:, None] * xx[None, :]
    v = s2[:, None] * (rho[:, None] * xx[None, :] + np.sqrt(1.0 - rho**2)[:, None] * yy[None, :])
    return (phi_np(u) * phi_np(v)) @ ww


def _make(name, fn, kernel=None, bounded=False):
    phi_np = partial(fn, xp=np)
    closed = kernel is not None
    kernel = kernel if closed else partial(gauss_hermite_kernel, phi_np)
    return Activation(name, partial(fn, xp=jnp), phi_np, kernel, bounded, closed)


ACTIVATIONS = {
    "linear": _make("linear", _linear, linear_kernel),
    "sigmoid": _make("sigmoid", _sigmoid, sigmoid_kernel, bounded=True),
    "relu": _make("relu", _relu, relu_kernel),
    "tanh": _make("tanh", _tanh, bounded=True),
    "softplus": _make("softplus", _softplus),
    "relu2": _make("relu2", _relu2),
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name; raises ``ValueError`` naming the choices."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def kernel_matrix(activation: Activation, C):
    """E[phi(z) phi(z)^T] for z ~ N(0, C): the kernel map applied to a covariance matrix."""
    C = np.asarray(C, dtype=np.float64)
    d = np.diag(C)
    return activation.kernel(C, d[:, None], d[None, :])


def kernel_cross(activation: Activation, C12, diag1, diag2):
    """E[phi(z_a) phi(z_b)] for a cross-covariance block C12 with variances diag1 (rows), diag2 (cols)."""
    return activation.kernel(np.asarray(C12, dtype=np.float64), np.asarray(diag1)[:, None],
                             np.asarray(diag2)[None, :])
