"""Activations: every per-activation fact in one place, the ``ACTIVATIONS`` table.

An :class:`Activation` carries the nonlinearity ``phi`` and every fact about it that the rest of
widebayes uses: its NNGP kernel map, Gaussian moments, inverse, growth class, range, whether it is
linear or positively homogeneous, and the code threshold rule.  Adding an activation means adding
one :func:`make_activation` entry to ``ACTIVATIONS``; the facts it does not give have generic
defaults (quadrature for the kernel and the moments, no inverse) and the theories that need a fact
it lacks say so (``InputError``, exit 2).

The kernel map of an activation is the Gaussian expectation

    k(c12, c11, c22) = E[phi(u) phi(v)],  (u, v) ~ N(0, [[c11, c12], [c12, c22]]),

evaluated elementwise (broadcasting).  It is the one-layer step of the NNGP recursion
``K_l = sigma_l^2 k(K_{l-1})`` (Neal 1996; Williams 1998; Cho & Saul 2009).  Closed forms are
used for linear, the erf sigmoid, ReLU and ReLU^2 (the arc-cosine kernels of degree 1 and 2); the
others use the adaptive trapezoid rule of :func:`widebayes.quadrature.trapezoid_kernel` (relative
error about 1e-10 or below, at any variance).  ``phi`` is written once against an array namespace
``xp`` so that the same formula serves the JAX samplers (``phi``) and the float64 NumPy theory
(``phi_np``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
import scipy.special as sps

from widebayes import quadrature
from widebayes.quadrature import gauss_hermite_kernel  # noqa: F401  (public name, used by tests)

ArrayFn = Callable[..., object]

# a Python float: no float64 constant in float32 chains; phi(z) = (1 + erf(sqrt(pi) z / 2)) / 2,
# slope 1/2 at 0
SIGMOID_SLOPE = float(np.sqrt(np.pi) / 2.0)
#: the code threshold of an unbounded, nonlinear activation: prior mean + this many prior sd
PRIOR_SD_ABOVE = 2.0
#: growth classes of |phi(z)| as |z| -> inf (see :class:`Activation`)
GROWTH_CLASSES = ("bounded", "relu-like", "linear", "quadratic")


class Activation(NamedTuple):
    """A nonlinearity and every fact about it that widebayes uses.

    Attributes
    ----------
    name : str
    phi : callable
        ``phi(z)`` on JAX arrays (used by the networks and samplers).
    phi_np : callable
        The same function on NumPy arrays, float64 (used by the theory).
    kernel : callable
        ``kernel(c12, c11, c22) -> E[phi(u) phi(v)]``, NumPy float64, elementwise.
    closed_form : bool
        Whether ``kernel`` is a closed form (else the adaptive trapezoid rule).
    growth : str
        How ``phi`` grows, one of :data:`GROWTH_CLASSES`: ``"bounded"`` (``sup |phi| < inf``);
        ``"relu-like"`` (asymptotically ReLU: ``phi(t v) / t -> max(v, 0)`` as ``t -> inf``, e.g.
        relu, softplus); ``"linear"`` (``|phi(z)| ~ |z|`` otherwise, e.g. the identity);
        ``"quadratic"`` (``|phi(z)| ~ z^2``).  It decides the ``sigma_a2 = "auto"`` rule (1/P for
        bounded phi, else 1/P^(1/L)) and which non-lazy theory applies (THEORY.md 1.4-1.5:
        bounded phi code redundantly, relu-like phi condense into sparse codes, a quadratic phi has
        no normalisable bulk).
    value_range : (float, float)
        ``(inf_z phi(z), sup_z phi(z))``, infinite where unbounded.  Finite both ways exactly when
        ``growth == "bounded"``.
    is_linear : bool
        ``phi(z) = z``: every Gaussian theory is exact (deep linear networks).
    homogeneous : bool
        Positively 1-homogeneous, ``phi(a z) = a phi(z)`` for ``a > 0`` (linear, relu).
    inverse : callable or None
        ``z = inverse(phi(z))`` on NumPy arrays inside the open range, for strictly monotone phi;
        None where phi cannot be inverted (relu: every negative z maps to 0).
    mean_closed_form, second_closed_form : callable or None
        ``(m, v) -> E[phi(u)]`` and ``E[phi(u)^2]`` for ``u ~ N(m, v)``, where a closed form exists
        (:meth:`mean` and :meth:`second_moment` fall back to Gauss-Hermite quadrature).
    derivative_kernel : callable or None
        ``(c12, c11, c22) -> E[phi'(u) phi'(v)]``, the derivative kernel of the NTK recursion
        (``widebayes.theory.ntk``), where a closed form exists (else quadrature there).
    odd : bool
        ``phi(-z) = -phi(z)`` (linear, tanh): a non-lazy neuron's measure is symmetric under
        ``a -> -a``, its codes come in mirror pairs, and the non-lazy theory on tasks without class
        structure keeps the preactivations' fluctuations (``theory/nonlazy/full_measure.py``), where
        the conditional-mode search stalls.
    """

    name: str
    phi: ArrayFn
    phi_np: ArrayFn
    kernel: ArrayFn
    closed_form: bool
    growth: str
    value_range: tuple
    is_linear: bool = False
    homogeneous: bool = False
    inverse: ArrayFn | None = None
    mean_closed_form: ArrayFn | None = None
    second_closed_form: ArrayFn | None = None
    derivative_kernel: ArrayFn | None = None
    odd: bool = False

    @property
    def bounded(self) -> bool:
        """``sup |phi| < inf`` (growth class ``"bounded"``)."""
        return self.growth == "bounded"

    @property
    def is_relu(self) -> bool:
        """Relu-like and 1-homogeneous, hence ``phi(v) = lim_t phi(t v)/t = max(v, 0)``: the facts
        behind the sparse-code theory, the radial integral and the closed-form Cramér cumulants of
        THEORY.md 1.5-1.5b."""
        return self.growth == "relu-like" and self.homogeneous

    def mean(self, m, v, num_nodes: int | None = None):
        """``E[phi(u)]``, ``u ~ N(m, v)``, elementwise: the closed form where there is one; else
        the adaptive trapezoid rule (:func:`widebayes.quadrature.trapezoid_expectation`, relative
        error about 1e-10 at any variance) or, with ``num_nodes``, Gauss-Hermite quadrature of that
        order (cheaper, and accurate only while ``v`` is of order 1 or below)."""
        m, v = np.asarray(m, dtype=np.float64), np.asarray(v, dtype=np.float64)
        if self.mean_closed_form is not None:
            return self.mean_closed_form(m, v)
        return _expectation(self.phi_np, m, v, num_nodes)

    def second_moment(self, m, v, num_nodes: int | None = None):
        """``E[phi(u)^2]``, ``u ~ N(m, v)``, elementwise (closed form, else as :meth:`mean`)."""
        m, v = np.asarray(m, dtype=np.float64), np.asarray(v, dtype=np.float64)
        if self.second_closed_form is not None:
            return self.second_closed_form(m, v)
        return _expectation(lambda u: self.phi_np(u) ** 2, m, v, num_nodes)

    def code_threshold(self, prior_var: float = 1.0) -> float:
        """The activation threshold ``theta`` of a neuron's code (``widebayes.codes``).

        A function of the activation and, for unbounded nonlinear phi only, of the prior (NNGP)
        variance ``q = prior_var`` of the preactivations:

        - bounded phi: the midpoint of the range (sigmoid 0.5, tanh 0), whatever q;
        - linear phi: 0 (the sign of the response), whatever q;
        - otherwise: ``E[phi(z)] + PRIOR_SD_ABOVE sd[phi(z)]``, ``z ~ N(0, q)``: activity well
          above what the prior gives (relu, softplus, relu2).
        """
        if self.bounded:
            return 0.5 * (self.value_range[0] + self.value_range[1])
        if self.is_linear:
            return 0.0
        q = float(prior_var)
        mean = float(self.mean(0.0, q))
        sd = float(np.sqrt(max(float(self.second_moment(0.0, q)) - mean**2, 0.0)))
        return mean + PRIOR_SD_ABOVE * sd


def _expectation(f, m, v, num_nodes):
    if num_nodes is None:
        return quadrature.trapezoid_expectation(f, m, v)
    return quadrature.gauss_hermite_1d(f, m, v, num_nodes)


# ----------------------------------------------------------------------------- phi


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


# ----------------------------------------------------------------------------- kernel maps


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


def _arc_cosine_angle(c12, c11, c22):
    """``sqrt(c11 c22)`` and the angle ``t``, ``cos t = c12 / sqrt(c11 c22)`` (0 where a variance is 0)."""
    norm = np.sqrt(np.asarray(c11, dtype=np.float64) * np.asarray(c22, dtype=np.float64))
    cos_t = np.clip(np.divide(c12, norm, out=np.zeros(np.broadcast(c12, norm).shape), where=norm > 0),
                    -1.0, 1.0)
    return norm, cos_t, np.arccos(cos_t)


def relu_kernel(c12, c11, c22):
    """Arc-cosine kernel of degree 1 (Cho & Saul 2009).

    E[relu(u) relu(v)] = sqrt(c11 c22) / (2 pi) [sin t + (pi - t) cos t],  cos t = c12/sqrt(c11 c22).
    """
    norm, cos_t, t = _arc_cosine_angle(c12, c11, c22)
    return norm / (2.0 * np.pi) * (np.sin(t) + (np.pi - t) * cos_t)


def relu2_kernel(c12, c11, c22):
    """Arc-cosine kernel of degree 2 (Cho & Saul 2009, ``k_2 = (1/pi) |x|^2 |y|^2 J_2(t)`` for
    ``E[2 relu(w.x)^2 relu(w.y)^2]``):

    E[relu(u)^2 relu(v)^2] = (c11 c22) / (2 pi) [3 sin t cos t + (pi - t)(1 + 2 cos^2 t)].

    At ``t = 0`` (u = v) it is ``3 c^2 / 2 = E[u^4; u > 0]``.
    """
    norm, cos_t, t = _arc_cosine_angle(c12, c11, c22)
    return norm**2 / (2.0 * np.pi) * (3.0 * np.sin(t) * cos_t + (np.pi - t) * (1.0 + 2.0 * cos_t**2))


# ----------------------------------------------------------------------------- derivative kernels


def linear_derivative_kernel(c12, c11, c22):
    """E[phi'(u) phi'(v)] = 1 for phi(z) = z."""
    return np.ones(np.broadcast(np.asarray(c12), np.asarray(c11), np.asarray(c22)).shape)


def sigmoid_derivative_kernel(c12, c11, c22):
    """Erf sigmoid, ``phi' = (s / sqrt(pi)) exp(-s^2 z^2)``, s = sqrt(pi)/2 (Williams 1998):

    E[phi'(u) phi'(v)] = (s^2 / pi) / sqrt((1 + 2 s^2 c11)(1 + 2 s^2 c22) - 4 s^4 c12^2),

    the Gaussian integral ``E[exp(-s^2 (u^2 + v^2))] = det(I + 2 s^2 C)^(-1/2)``; 1/4 at C = 0.
    """
    a = 2.0 * SIGMOID_SLOPE**2
    c12, c11, c22 = (np.asarray(c, dtype=np.float64) for c in (c12, c11, c22))
    det = (1.0 + a * c11) * (1.0 + a * c22) - a**2 * c12**2
    return SIGMOID_SLOPE**2 / np.pi / np.sqrt(det)


def relu_derivative_kernel(c12, c11, c22):
    """Arc-cosine kernel of degree 0 (Cho & Saul 2009): E[step(u) step(v)] = (pi - t) / (2 pi)."""
    return (np.pi - _arc_cosine_angle(c12, c11, c22)[2]) / (2.0 * np.pi)


def relu2_derivative_kernel(c12, c11, c22):
    """``phi' = 2 relu``: E[phi'(u) phi'(v)] = 4 E[relu(u) relu(v)] (:func:`relu_kernel`)."""
    return 4.0 * relu_kernel(c12, c11, c22)


# ----------------------------------------------------------------------------- Gaussian moments


def _standardised(m, v):
    """``sd = sqrt(v)``, ``r = m / sd`` (v floored at 1e-300), the normal pdf at r."""
    sd = np.sqrt(np.maximum(v, 1e-300))
    r = m / sd
    return sd, r, np.exp(-0.5 * r**2) / np.sqrt(2.0 * np.pi)


def linear_mean(m, v):
    """``E[u] = m``."""
    return m + 0.0 * v


def linear_second(m, v):
    """``E[u^2] = m^2 + v``."""
    return m**2 + v


def sigmoid_mean(m, v):
    """``E[(1 + erf(s u)) / 2]``, ``u ~ N(m, v)``: ``(1 + erf(s m / sqrt(1 + 2 s^2 v))) / 2``."""
    return 0.5 * (1.0 + sps.erf(SIGMOID_SLOPE * m / np.sqrt(1.0 + 2.0 * SIGMOID_SLOPE**2 * v)))


def sigmoid_second(m, v):
    """``E[phi(u)^2]``, ``u ~ N(m, v)``, for ``phi(z) = (1 + erf(s z))/2 = Phi(k z)``, ``k = sqrt(2) s``.

    ``E[Phi(k u)^2] = P(X1 <= k u, X2 <= k u)`` with X iid N(0, 1): the bivariate normal
    distribution ``Phi_2(h, h; rho)``, ``h = k m / sqrt(1 + k^2 v)``, ``rho = k^2 v / (1 + k^2 v)``,
    and ``Phi_2(h, h; rho) = Phi(h) - 2 T(h, sqrt((1 - rho) / (1 + rho)))`` with Owen's T function
    (Owen 1956, eq. 3.1).  At m = 0 it is the kernel ``1/4 + arcsin(rho) / (2 pi)``.
    """
    k2 = 2.0 * SIGMOID_SLOPE**2
    h = np.sqrt(k2) * m / np.sqrt(1.0 + k2 * v)
    rho = k2 * v / (1.0 + k2 * v)
    return sps.ndtr(h) - 2.0 * sps.owens_t(h, np.sqrt((1.0 - rho) / (1.0 + rho)))


def relu_mean(m, v):
    """``E[relu(u)] = m Phi(m / sd) + sd phi(m / sd)``, ``u ~ N(m, v)``."""
    sd, r, pdf = _standardised(m, v)
    return m * sps.ndtr(r) + sd * pdf


def relu_second(m, v):
    """``E[relu(u)^2] = (m^2 + v) Phi(m / sd) + m sd phi(m / sd)``."""
    sd, r, pdf = _standardised(m, v)
    return (m**2 + v) * sps.ndtr(r) + m * sd * pdf


def relu_fourth(m, v):
    """``E[relu(u)^4] = (m^4 + 6 m^2 v + 3 v^2) Phi(m / sd) + sd (m^3 + 5 m v) phi(m / sd)``.

    From the partial moments ``int_a^inf y^k phi(y) dy`` (k = 0..4, ``a = -m/sd``) of
    ``E[(m + sd y)^4; y > a]``.  At m = 0 it is ``3 v^2 / 2``.
    """
    sd, r, pdf = _standardised(m, v)
    return (m**4 + 6.0 * m**2 * v + 3.0 * v**2) * sps.ndtr(r) + sd * (m**3 + 5.0 * m * v) * pdf


# ----------------------------------------------------------------------------- inverses


def _sigmoid_inverse(p):
    return 2.0 / np.sqrt(np.pi) * sps.erfinv(2.0 * p - 1.0)


def _softplus_inverse(p):
    return np.log(np.expm1(p))


# ----------------------------------------------------------------------------- the table


def make_activation(name: str, fn, *, growth: str, value_range, kernel=None, is_linear=False,
                    homogeneous=False, inverse=None, mean=None, second=None,
                    derivative_kernel=None, odd=False) -> Activation:
    """An :class:`Activation` from ``fn(z, xp)`` (written against the array namespace ``xp``:
    ``jax.numpy`` or ``numpy``) and its facts; checks that the facts agree with each other.

    Parameters
    ----------
    name : str
    fn : callable
        ``fn(z, xp) -> phi(z)``.
    growth : str
        One of :data:`GROWTH_CLASSES` (see :class:`Activation`).
    value_range : (float, float)
        ``(inf phi, sup phi)``; finite both ways exactly for ``growth = "bounded"``.
    kernel : callable, optional
        Closed-form ``kernel(c12, c11, c22)``; default the adaptive trapezoid rule.
    is_linear, homogeneous : bool
    inverse : callable, optional
        NumPy inverse of a strictly monotone phi.
    mean, second : callable, optional
        Closed forms ``(m, v) -> E[phi(u)]``, ``E[phi(u)^2]`` for ``u ~ N(m, v)``.
    derivative_kernel : callable, optional
        Closed form ``(c12, c11, c22) -> E[phi'(u) phi'(v)]``.
    odd : bool
        ``phi(-z) = -phi(z)`` (checked on a grid).

    Raises
    ------
    ValueError
        When the facts contradict each other (an unknown growth class, a bounded growth with an
        infinite range, homogeneous phi that does not grow linearly, ...).
    """
    lo, hi = (float(b) for b in value_range)
    if growth not in GROWTH_CLASSES:
        raise ValueError(f"activation {name!r}: growth must be one of {GROWTH_CLASSES}, got {growth!r}")
    if (growth == "bounded") != (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"activation {name!r}: growth {growth!r} disagrees with the range ({lo}, {hi})")
    if homogeneous and growth not in ("relu-like", "linear"):
        raise ValueError(f"activation {name!r}: a 1-homogeneous phi grows linearly, not {growth!r}")
    if is_linear and not (homogeneous and growth == "linear"):
        raise ValueError(f"activation {name!r}: phi(z) = z is homogeneous with linear growth")
    phi_np = partial(fn, xp=np)
    grid = np.linspace(-4.0, 4.0, 33)
    if odd and not np.allclose(phi_np(-grid), -phi_np(grid), rtol=1e-12, atol=1e-12):
        raise ValueError(f"activation {name!r}: declared odd, but phi(-z) != -phi(z)")
    closed = kernel is not None
    kernel = kernel if closed else partial(quadrature.trapezoid_kernel, phi_np)
    return Activation(name, partial(fn, xp=jnp), phi_np, kernel, closed, growth, (lo, hi),
                      is_linear, homogeneous, inverse, mean, second, derivative_kernel, odd)


_INF = float("inf")

ACTIVATIONS = {
    "linear": make_activation("linear", _linear, growth="linear", value_range=(-_INF, _INF),
                              kernel=linear_kernel, is_linear=True, homogeneous=True,
                              inverse=lambda p: p, mean=linear_mean, second=linear_second,
                              derivative_kernel=linear_derivative_kernel, odd=True),
    "sigmoid": make_activation("sigmoid", _sigmoid, growth="bounded", value_range=(0.0, 1.0),
                               kernel=sigmoid_kernel, inverse=_sigmoid_inverse, mean=sigmoid_mean,
                               second=sigmoid_second, derivative_kernel=sigmoid_derivative_kernel),
    "relu": make_activation("relu", _relu, growth="relu-like", value_range=(0.0, _INF),
                            kernel=relu_kernel, homogeneous=True, mean=relu_mean, second=relu_second,
                            derivative_kernel=relu_derivative_kernel),
    "tanh": make_activation("tanh", _tanh, growth="bounded", value_range=(-1.0, 1.0),
                            inverse=np.arctanh, odd=True),
    "softplus": make_activation("softplus", _softplus, growth="relu-like", value_range=(0.0, _INF),
                                inverse=_softplus_inverse),
    "relu2": make_activation("relu2", _relu2, growth="quadratic", value_range=(0.0, _INF),
                             kernel=relu2_kernel, mean=relu_second, second=relu_fourth,
                             derivative_kernel=relu2_derivative_kernel),
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name; raises ``ValueError`` naming the choices."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def as_activation(activation) -> Activation:
    """An :class:`Activation` from itself or its name."""
    return get_activation(activation) if isinstance(activation, str) else activation


def kernel_matrix(activation: Activation, C):
    """E[phi(z) phi(z)^T] for z ~ N(0, C): the kernel map applied to a covariance matrix.

    Evaluated on the upper triangle (diagonal included) and mirrored, so the result is exactly
    symmetric (C is taken as symmetric: its lower triangle is not read).
    """
    C = np.asarray(C, dtype=np.float64)
    d = np.diag(C)
    i, j = np.triu_indices(C.shape[0])
    K = np.empty_like(C)
    K[i, j] = activation.kernel(C[i, j], d[i], d[j])
    K[j, i] = K[i, j]
    return K


def kernel_cross(activation: Activation, C12, diag1, diag2):
    """E[phi(z_a) phi(z_b)] for a cross-covariance block C12 with variances diag1 (rows), diag2 (cols)."""
    return activation.kernel(np.asarray(C12, dtype=np.float64), np.asarray(diag1)[:, None],
                             np.asarray(diag2)[None, :])
