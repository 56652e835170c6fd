"""A middle hidden layer (2 <= l < L) of a deep network on a class-structured task: the class-shared
shift integrated on a grid, the class means given the shift by Laplace [DER].

The layer's single-neuron measure is ``layer``'s (module docstring there): the preactivation of a
neuron on an input of class c is ``z = u_c + eps``, the shift ``u = E xi`` (xi standard normal in r
dimensions, ``S = E E^T`` the class-block part of the prior) and iid ``eps ~ N(0, w_c)``; the class
means s of phi carry the tilt ``s^T Q s``.  Up to a constant the joint density of (xi, s) is

    q(xi, s) ∝ exp(-|xi|^2 / 2 + s^T Q s - sum_c n_c [theta_c s_c - kappa_c(theta_c, u_c)])
               prod_c sqrt(n_c / kappa''_c),

``s_c = kappa_theta(theta_c, u_c)``.  In a middle layer the tilt is weak and comes from the change it
causes above; the shift's measure is then not concentrated (measured: Laplace over xi gave
standard deviations 2.4-2.7 in prior units at L = 3, P = 20, so ``layer``'s Laplace step over the
shift is not an approximation there).  Given the shift, though, the class means are pinned by the
``n_c`` inputs of each class (the Cramér curvature ``n_c / kappa''_c``, about 1e4 against a tilt
curvature ``2 |Q|`` of about 1e2 at L = 3, P = 40), so:

- xi is integrated on a tensor grid (spacing ``SPACING`` prior units inside the ball ``|xi| <= R``, R
  grown until the mass on its outer shell is below ``EDGE_MASS``);
- at each node the class means are integrated by Laplace (Newton ascent of g in s, vectorised over
  the nodes; its error is O(1/n_c), as the Cramér density's).  Each node's weight is
  ``exp(g*) prod_c sqrt(n_c / kappa''_c) det(-H_ss)^{-1/2}`` times ``exp(-|xi|^2 / 2)``, with
  ``H_ss = 2 Q - diag(n / kappa''_c)``.

The layer's moments are then those of ``layer.mixture`` with one "mode" per node (its covariance
the Laplace covariance in s alone; the shift's spread is the grid's): the activation kernel
``E[phi phi^T]`` and the preactivation second moment ``E[z z^T]`` as class matrices.  Codes, as the
samples' are read: a neuron's code is the set of classes whose class mean of phi exceeds the
activation's threshold (``widebayes.codes``), a code's fraction the mass of the nodes carrying it.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from widebayes.activations import Activation
from widebayes.codes import code_ids, code_string
from widebayes.theory.nonlazy.classgrid import grid_peaks
from widebayes.theory.nonlazy.classmatrix import ClassMatrix, class_matrix
from widebayes.theory.nonlazy.shifted import ShiftedLaw, phi_bound, resolved_points, shifted_law

#: grid spacing in prior standard deviations of xi, for the solver's evaluations and for the codes
#: read off at the end (the kernel is a smooth integral, spectrally accurate on the coarse grid; a
#: code's fraction is the mass of a region with an edge, accurate to O(spacing) on the grid)
SPACING = 0.75
CODE_SPACING = 0.3
#: first half-width of the grid, its growth factor and largest value (prior standard deviations)
HALF_WIDTH = 6.0
GROWTH = 1.5
MAX_HALF_WIDTH = 24.0
#: largest mass on the grid's outer shell (the nodes within one spacing of the ball's surface)
EDGE_MASS = 1e-9
NEWTON_STEPS = 60
MAX_FIELD_STEP = 4.0
#: converged at a Newton decrement (twice the predicted gain of g) below this times 1 + |g|: g is
#: then at its maximum to rounding (an absolute 1e-20 left nodes of |g| ~ 1e2 halving their step 40
#: times per iteration, 4,000 law evaluations in one grid)
DECREMENT_TOL = 1e-15


class ShiftGrid(NamedTuple):
    """The measure of a middle layer on the shift grid.

    Attributes
    ----------
    kernel : ClassMatrix
        Activation kernel ``E[phi phi^T]``.
    preact : ClassMatrix
        ``E[z z^T]`` of the preactivations.
    second_ss : ndarray (k, k)
        ``E[s s^T]``.
    codes : list of dict
        ``{"code", "fraction", "class_means", "preactivation_mean"}`` per occupied code, heaviest
        first (empty without a threshold).
    num_peaks : int
        Local maxima of the shift's marginal density on the grid above ``classgrid.PEAK_FRACTION``
        of the highest.
    fields : ndarray (nodes, k)
        The class fields theta at every node (a warm start for the next evaluation on the same grid).
    half_width : float
        The grid's half-width R.
    """

    kernel: ClassMatrix
    preact: ClassMatrix
    second_ss: np.ndarray
    codes: list
    num_peaks: int
    fields: np.ndarray
    half_width: float


class _Nodes(NamedTuple):
    theta: np.ndarray
    law: ShiftedLaw
    g: np.ndarray


def _g(law: ShiftedLaw, theta, n, Q) -> np.ndarray:
    s = law.m_phi
    return np.einsum("bi,ij,bj->b", s, Q, s) - np.sum(n * (theta * s - law.kappa), 1)


def class_fields(act: Activation, n, d, Q, w, u, theta0=None) -> _Nodes:
    """The class fields theta maximising g in s given the shift, at every row of u (nodes, k):
    Newton in s (``H_ss = 2 Q - diag(n / kappa'')``, negative-definite part; ``d theta = ds /
    kappa''``) with backtracking on g, from ``theta0`` (or 0)."""
    # a maximum has theta = 2 Q s / n with s in phi's range: the fields stay in that box (in a
    # saturated class kappa'' is ~1e-30 and an unclipped Newton step runs off, widening the law's grid)
    box = 2.0 * np.abs(Q).sum(1) * phi_bound(act) / n
    theta = np.zeros_like(u) if theta0 is None else np.clip(theta0, -box, box)

    def law_at(th, rows):
        return shifted_law(act, th, u[rows], d[None, :], w[None, :],
                           points=resolved_points(act, th, d[None, :], w[None, :]))

    rows = np.arange(len(u))
    law = law_at(theta, rows)
    g = _g(law, theta, n, Q)
    for _ in range(NEWTON_STEPS):
        if not len(rows):
            break
        lw = ShiftedLaw(*(f[rows] for f in law))
        grad = 2.0 * lw.m_phi @ Q - n * theta[rows]
        root, lam, V = _scaled_hessian(lw.v_phi, n, Q)
        lam = -np.maximum(np.abs(lam), 1e-12)
        proj = np.einsum("bkj,bk->bj", V, grad * root)
        decrement = np.sum(proj**2 / -lam, axis=1)
        ds = -root * np.einsum("bij,bj->bi", V, proj / lam)
        step = np.clip(ds / np.maximum(lw.v_phi, 1e-300), -MAX_FIELD_STEP, MAX_FIELD_STEP)
        moving = decrement >= DECREMENT_TOL * (1.0 + np.abs(g[rows]))
        rows, step, decrement = rows[moving], step[moving], decrement[moving]
        if not len(rows):
            break
        t = np.ones(len(rows))
        todo = np.arange(len(rows))
        for _ in range(30):
            trial = np.clip(theta[rows[todo]] + t[todo, None] * step[todo], -box, box)
            trial_law = law_at(trial, rows[todo])
            g_new = _g(trial_law, trial, n, Q)
            ok = np.isfinite(g_new) & (g_new >= g[rows[todo]] - 1e-12 * np.abs(g[rows[todo]]))
            acc = rows[todo[ok]]
            theta[acc], g[acc] = trial[ok], g_new[ok]
            for f_all, f_new in zip(law, trial_law):
                f_all[acc] = f_new[ok]
            todo = todo[~ok]
            if not len(todo):
                break
            t[todo] *= 0.5
        rows = rows[t > 1e-8]
    return _Nodes(theta, law, g)


def _scaled_hessian(v_phi, n, Q):
    """``H_ss = 2 Q - diag(n / kappa'')`` as ``-D^{1/2} (I - 2 D^{-1/2} Q D^{-1/2}) D^{1/2}`` with
    ``D = n / kappa''``: returns ``D^{-1/2}`` (b, k) and the eigenpairs of the scaled Hessian
    ``2 D^{-1/2} Q D^{-1/2} - I`` (well conditioned where a saturated class has kappa'' of 1e-30)."""
    root = np.sqrt(np.maximum(v_phi, 1e-300) / n)
    lam, V = np.linalg.eigh(2.0 * root[:, :, None] * Q[None] * root[:, None, :] - np.eye(len(n))[None])
    return root, lam, V


def grid_nodes(r: int, half_width: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The nodes of the tensor grid of ``spacing`` inside the ball ``|xi| <= half_width`` (nodes, r),
    and their indices in the cube's flattened grid (last axis fastest)."""
    m = 2 * int(np.ceil(half_width / spacing)) + 1
    axis = spacing * (np.arange(m) - (m - 1) // 2)
    cube = np.array(list(itertools.product(axis, repeat=r))) if r else np.zeros((1, 0))
    inside = np.flatnonzero(np.sum(cube**2, 1) <= half_width**2)
    return cube[inside], inside


def shift_grid(act: Activation, counts, d, Q, w, E, threshold: float | None = None,
               fields=None, half_width: float = HALF_WIDTH, spacing: float = SPACING) -> ShiftGrid:
    """Integrate a middle layer's measure (module docstring).

    Parameters
    ----------
    act : Activation
        Bounded.
    counts, d, w : ndarray (k,)
        Inputs per class, input-diagonal tilt, within-class prior variance.
    Q : ndarray (k, k)
        Class-mean tilt.
    E : ndarray (k, r)
        Factor of the class-shared prior covariance (``layer.shift_factor``).
    threshold : float, optional
        Code threshold; without it no codes are read off (the kernels alone, as the solver needs).
    fields : ndarray, optional
        Warm start (``ShiftGrid.fields`` of an earlier evaluation on the same grid).
    half_width, spacing : float
        The first grid; the half-width grows (``GROWTH``) until the outer shell holds less than
        ``EDGE_MASS``.

    Raises
    ------
    RuntimeError
        If no grid up to ``MAX_HALF_WIDTH`` holds the measure, or a node's class-mean measure is
        not log-concave at its maximum (the Laplace step given the shift does not apply).
    """
    n = np.asarray(counts, dtype=np.float64)
    r = E.shape[1]
    while True:
        xi, index = grid_nodes(r, half_width, spacing)
        start = fields if fields is not None and len(fields) == len(xi) else None
        nodes = class_fields(act, n, d, Q, w, xi @ E.T, start)
        root, lam, V = _scaled_hessian(nodes.law.v_phi, n, Q)
        if np.any(lam.max(axis=1) >= 0.0):
            raise RuntimeError("shift grid: the class means given the shift are not at a maximum of "
                               "their measure at some node (the Laplace step does not apply)")
        # prod sqrt(n / kappa'') det(-H_ss)^{-1/2} = det(I - 2 D^-1/2 Q D^-1/2)^{-1/2}
        logw = -0.5 * np.sum(xi**2, 1) + nodes.g - 0.5 * np.sum(np.log(-lam), 1)
        cov_ss = root[:, :, None] * np.einsum("bik,bk,bjk->bij", V, -1.0 / lam, V) * root[:, None, :]
        W = np.exp(logw - logw.max())
        W /= W.sum()
        shell = np.sum(xi**2, 1) > (half_width - spacing) ** 2
        if r == 0 or W[shell].sum() < EDGE_MASS:
            break
        if half_width >= MAX_HALF_WIDTH:
            raise RuntimeError(f"shift grid: the measure reaches beyond {MAX_HALF_WIDTH} prior "
                               "standard deviations")
        half_width, fields = min(GROWTH * half_width, MAX_HALF_WIDTH), None
    return _moments(nodes, cov_ss, W, n, threshold, index, r, half_width, spacing)


def _moments(nodes: _Nodes, cov_ss, W, n, threshold, index, r, half_width, spacing) -> ShiftGrid:
    law = nodes.law
    s = law.m_phi
    ss = np.einsum("b,bi,bj->ij", W, s, s) + np.einsum("b,bij->ij", W, cov_ss)
    vphi = np.maximum(law.v_phi, 1e-300)
    G = law.c_phiz / vphi
    cond = np.maximum(law.v_z - law.c_phiz**2 / vphi, 0.0) / n
    zz = (np.einsum("b,bi,bj->ij", W, law.m_z, law.m_z)
          + np.einsum("b,bi,bij,bj->ij", W, G, cov_ss, G) + np.diag(W @ cond))
    v_phi, v_z = W @ law.v_phi, W @ law.v_z
    kernel = class_matrix(v_phi, ss - np.diag(v_phi / n), n)
    preact = class_matrix(v_z, zz - np.diag(v_z / n), n)
    codes, peaks = [], 0
    if threshold is not None:
        codes = _codes(W, s, law.m_z, threshold)
        m = 2 * int(np.ceil(half_width / spacing)) + 1
        cube = np.zeros(m**r)
        cube[index] = W
        peaks = grid_peaks(cube.reshape((m,) * r)) if r else 1
    return ShiftGrid(kernel, preact, 0.5 * (ss + ss.T), codes, peaks, nodes.theta, half_width)


def _codes(W, s, m_z, threshold) -> list:
    ids = code_ids(s, threshold)
    codes = []
    for code in np.unique(ids):
        at = ids == code
        mass = float(W[at].sum())
        if mass <= 0.0:
            continue
        codes.append({"code": code_string(int(code), s.shape[1]), "fraction": mass,
                      "class_means": W[at] @ s[at] / mass, "preactivation_mean": W[at] @ m_z[at] / mass})
    return sorted(codes, key=lambda c: -c["fraction"])
