"""The first hidden layer of a deep network on a class-structured task: its class-mean measure
integrated on a grid, not by modes [DER].

Layer 1 has no class-shared shift (``C_1 = sigma_1^2 c I``), so a neuron's class means s (k of
them) carry its whole tilt (``layer``):

    q(s) ∝ exp(s^T Q s) prod_c sqrt(n_c / 2 pi kappa_c''(theta_c)) exp(-n_c [theta_c s_c - kappa_c(theta_c)]),
    s_c = kappa_c'(theta_c),

with ``kappa_c`` the one-input cumulant of ``shifted`` (u = 0, the layer's d_c and w_c).  In a deep
network the lower layers' tilt is weak enough that q(s) is broad, with maxima that merge as the
tilt changes (the paper's lower-layer codes that neurons switch between), where a sum over Laplace
modes breaks down; so the k-dimensional integral is done on a tensor grid.  Each class's axis is
uniform in ``tau = int sqrt(kappa''(theta)) d theta`` (``d tau = ds / sqrt(kappa'')``: equal grid
points per local width ``sqrt(kappa'' / n)`` of the Cramér density, which is
``sqrt(n / 2 pi) exp(-n J) d tau`` in tau), over ``|theta| <= FIELD_RANGE``.  The grid nodes are
exact points of the Legendre pair (theta, s), so J carries no interpolation error.

Codes are read off the measure as the samples' are: the code of a neuron is the set of classes with
``s_c`` above the activation's threshold (``widebayes.codes``), and a code's fraction is the mass of
its orthant.  The kernel, as in ``layer``: ``E[phi_mu phi_nu] = E[s_c s_c'] - delta Var_c / n_c`` off
the diagonal, within-class variance ``E[kappa_c''(theta_c(s_c))]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.interpolate import PchipInterpolator

from widebayes.theory.nonlazy.classmatrix import ClassMatrix, class_matrix
from widebayes.theory.nonlazy.shifted import shifted_law

FIELD_RANGE = 30.0
TABLE_POINTS = 201
#: total grid nodes (the per-class points are the k-th root, at most MAX_AXIS)
GRID_BUDGET = 300_000
MAX_AXIS = 72
#: a local maximum of the grid density counts when it holds this much of the peak density
PEAK_FRACTION = 1e-2


class ClassGrid(NamedTuple):
    """The measure of layer 1 on a grid.

    Attributes
    ----------
    kernel : ClassMatrix
        Activation kernel ``E[phi phi^T]``.
    second_ss : ndarray (k, k)
        ``E[s s^T]``.
    mean_s : ndarray (k,)
    codes : list of dict
        ``{"code", "fraction", "class_means"}`` per occupied orthant, heaviest first.
    num_peaks : int
        Local maxima of the grid density above ``PEAK_FRACTION`` of the highest.
    """

    kernel: ClassMatrix
    second_ss: np.ndarray
    mean_s: np.ndarray
    codes: list
    num_peaks: int


def axis_points(k: int) -> int:
    """Grid points per class axis for k classes."""
    return int(min(MAX_AXIS, np.floor(GRID_BUDGET ** (1.0 / k))))


def class_axis(act, d: float, w: float, n: float, points: int):
    """One class's axis: s, log of the Cramér density times the node's weight, within-class
    variance.  The nodes are uniform in tau, mapped to theta by a monotone cubic (PCHIP) fit of the
    tabulated ``theta(tau)``, and weighted with that map's exact Jacobian
    (``ds = kappa''(theta) (d theta / d tau) d tau``), so the rule is a change of variables."""
    theta = np.linspace(-FIELD_RANGE, FIELD_RANGE, TABLE_POINTS)
    law = shifted_law(act, theta, 0.0, d, w)
    root = np.sqrt(np.maximum(law.v_phi, 0.0))
    tau = np.concatenate([[0.0], np.cumsum(0.5 * (root[1:] + root[:-1]) * np.diff(theta))])
    fit = PchipInterpolator(tau, theta)
    nodes = np.linspace(0.0, tau[-1], points)
    th, slope = fit(nodes), fit.derivative()(nodes)
    law = shifted_law(act, th, 0.0, d, w)
    step = np.full(points, nodes[1] - nodes[0])
    step[[0, -1]] *= 0.5
    var = np.maximum(law.v_phi, 1e-300)
    logp = (0.5 * np.log(n * var / (2.0 * np.pi)) - n * (th * law.m_phi - law.kappa)
            + np.log(np.maximum(slope, 1e-300) * step))
    return law.m_phi, logp, law.v_phi


def class_grid(act, counts, d, Q, w, threshold: float | None = None, points: int | None = None) -> ClassGrid:
    """Integrate layer 1's class-mean measure on the grid (module docstring).

    Parameters
    ----------
    act : Activation
        Bounded (the axis covers the tilted means of ``|theta| <= FIELD_RANGE``).
    counts, d, w : ndarray (k,)
        Inputs per class, input-diagonal tilt, within-class prior variance.
    Q : ndarray (k, k)
        Class-mean tilt (``s^T Q s``).
    threshold : float, optional
        Code threshold of the activation; without it no codes or peaks are read off (the kernel
        alone, as the solver needs).
    """
    k = len(counts)
    points = axis_points(k) if points is None else points
    axes = [class_axis(act, d[c], w[c], counts[c], points) for c in range(k)]
    s = [a[0] for a in axes]
    logW = np.zeros((points,) * k)
    for c in range(k):
        shape = [1] * k
        shape[c] = points
        logW = logW + (axes[c][1] + Q[c, c] * s[c] ** 2).reshape(shape)
        for e in range(c + 1, k):
            shape2 = [1] * k
            shape2[e] = points
            logW = logW + 2.0 * Q[c, e] * s[c].reshape(shape) * s[e].reshape(shape2)
    W = np.exp(logW - logW.max())
    W /= W.sum()
    marg = [W.sum(axis=tuple(i for i in range(k) if i != c)) for c in range(k)]
    mean = np.array([m @ sc for m, sc in zip(marg, s)])
    second = np.empty((k, k))
    for c in range(k):
        second[c, c] = marg[c] @ s[c] ** 2
        for e in range(c + 1, k):
            pair = W.sum(axis=tuple(i for i in range(k) if i not in (c, e)))
            second[c, e] = second[e, c] = s[c] @ pair @ s[e]
    v = np.array([m @ a[2] for m, a in zip(marg, axes)])
    kernel = class_matrix(v, second - np.diag(v / counts), counts)
    if threshold is None:
        return ClassGrid(kernel, second, mean, [], 0)
    return ClassGrid(kernel, second, mean, _orthant_codes(W, s, threshold), grid_peaks(W))


def _orthant_codes(W, s, threshold) -> list:
    k = W.ndim
    above = [sc > threshold for sc in s]
    codes = []
    for bits in np.ndindex(*(2,) * k):
        mask = np.ones_like(W, dtype=bool)
        for c, b in enumerate(bits):
            shape = [1] * k
            shape[c] = len(s[c])
            mask = mask & (above[c] if b else ~above[c]).reshape(shape)
        mass = float(W[mask].sum())
        if mass <= 0.0:
            continue
        Wm = np.where(mask, W, 0.0)
        means = np.array([Wm.sum(axis=tuple(i for i in range(k) if i != c)) @ s[c] for c in range(k)]) / mass
        codes.append({"code": "".join(str(b) for b in bits), "fraction": mass, "class_means": means})
    return sorted(codes, key=lambda c: -c["fraction"])


def grid_peaks(W) -> int:
    """Local maxima (against the 2k axis neighbours) above PEAK_FRACTION of the top."""
    padded = np.pad(W, 1, constant_values=-1.0)
    core = tuple(slice(1, -1) for _ in range(W.ndim))
    is_max = np.ones_like(W, dtype=bool)
    for ax in range(W.ndim):
        for shift in (-1, 1):
            idx = list(core)
            idx[ax] = slice(1 + shift, padded.shape[ax] - 1 + shift)
            is_max &= W >= padded[tuple(idx)]
    return int(np.sum(is_max & (W > PEAK_FRACTION * W.max())))
