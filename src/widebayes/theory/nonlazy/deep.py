"""Deep (L >= 1) non-lazy networks on class-structured tasks: per-layer codes and kernels.

Model (DESIGN.md, gamma = 1): ``z^1 = W^1 x / sqrt(N0)``, ``z^l = W^l phi(z^{l-1}) / sqrt(N)``,
``f = a^T phi(z^L) / N``, priors ``W^l ~ N(0, sigma_l^2)``, ``a ~ N(0, sigma_a^2)``, likelihood
``exp(-N |f - Y|^2 / 2 T0)`` (T_eff = T0 / N).

Mean-field theory (N -> inf at fixed P) [SRC: THEORY.md 1.2 "Deep nets" and the paper's
"Main theoretical result": the posterior factorises over neurons and layers, each layer's
single-neuron measure a tilted Gaussian of its preactivations, only the feature layer coupled to
the readout].  Given layer l-1, the preactivation vectors z_i^l in R^P of the N neurons of layer l
are iid ``N(0, C_l)``, ``C_l = sigma_l^2 K^{l-1}``, ``K^{l-1} = (1/N) sum_j phi(z_j^{l-1}) phi(z_j^{l-1})^T``
(``K^0 = K0``).  Sanov's theorem for the empirical measures of the layers gives the rate
``sum_l KL(q_l || N(0, sigma_l^2 K_{q_{l-1}})) + |F - Y|^2 / 2 T0 + readout KL``, whose stationary
point is [DER, the variations of this functional; Fischer et al.'s forward/backward equations
(THEORY.md 3.5.1) in the non-lazy scaling, where nothing carries a 1/N]:

    q_l(z) ∝ N(z; 0, C_l) exp(phi(z)^T Kt_l phi(z)),                K^l = E_{q_l}[phi phi^T],
    Kt_L = (sigma_a^2 / 2) Lambda Lambda^T,   T0 Lambda = Y - sigma_a^2 K^L Lambda   (readout, 1.2),
    Kt_l = (sigma_{l+1}^2 / 2) C_{l+1}^{-1} (M_{l+1} - C_{l+1}) C_{l+1}^{-1},   l < L,
    M_{l+1} = E_{q_{l+1}}[z z^T]  (preactivation second moment of the layer above).

(``d/dC ln E_{N(0, C)} e^{h} = (C^{-1} E_q[z z^T] C^{-1} - C^{-1}) / 2``.)  Only the feature layer
sees the readout (through Lambda); a lower layer sees the task only through the change its
kernel causes in the layer above.  The readout given z^L is ``N(sigma_a^2 Lambda^T phi, sigma_a^2)``,
so ``<a a^T> = sigma_a^2 I + sigma_a^4 Lambda^T K^L Lambda`` (THEORY.md 1.2).  Linear phi: all
Gaussian, the exact theory of ``linear`` (THEORY.md 1.3).

Class-structured task (``K0 = c I``, proportions rho_c, one target per class) [DER]: the
class-symmetric solution has every matrix above a class matrix ``diag(a) + U A U^T``
(``classmatrix``), ``Lambda_mu = lambda_c(mu)``.  Layer l's prior ``C_l = diag(w) + U S U^T`` splits
each preactivation into a class-shared shift ``u ~ N(0, S)`` (from the class-block part of K^{l-1};
absent in layer 1, ``K0 = c I``) and an iid part ``N(0, w_c)``; its tilt is an input-diagonal
``d_c phi^2`` plus a quadratic form ``s^T Q s`` of the class means ``s`` of phi
(``Q = n B n``).  ``layer`` solves each layer's single-neuron problem at the task's P: Cramér for the
class means given the shift, Laplace over the shift and the class means; its *modes* are the
layer's codes, with weights (fractions of neurons), class means, one-input laws, and the layer's
kernel.  Unknowns: the top fields L (k x m) and each lower layer's tilt (d_l, Q_l); equations: the
readout constraint and ``Kt_l`` above.  Solved nested (:func:`solve_deep`): for given lower tilts
the readout constraint is the stationarity of a convex function of Lambda
(:func:`readout_objective`), solved exactly (:func:`solve_readout`); the lower tilts by
Newton-Broyden on what remains (forward-difference Jacobian, modes tracked between evaluations),
with a continuation from the one-layer solution, and above P = 100 a continuation in P.  Residual
returned.

What this gives and its regime of validity:

- the equations above are exact for N -> inf at fixed P (the mean-field limit), T0 > 0, any depth;
  what is approximate is how a layer's single-neuron integral over its P preactivations is done
  (next items).  Linear phi: every step exact, ``linear`` reproduced to 1e-10 at L = 2, 3 (a test);
- the within-class sums by saddle-point (Cramér) densities: errors O(1 / n_c), n_c = rho_c P the
  inputs per class (depth 1 identical to ``sigmoid.solve_redundant_finite_P``; the untilted tanh
  network reproduces the NNGP kernels to about 1 / n_c: 3% at n_c = 10, a test);
- layer 1 of a deep network (no class-shared shift) is integrated on a grid over its k class means
  (``classgrid``): no Laplace step, its codes are orthants of a broad measure;
- a layer l >= 2 carries a class-shared shift u ~ N(0, S) whose prior cost is O(1), and its modes
  are integrated by Laplace jointly in the shift and the class means (``layer``).  The within-mode
  spread of the shift is *not* small against its prior (measured: standard deviations 0.25-0.8 in
  prior units at P = 40, L = 2 sigmoid), so the Laplace step over the shift is not controlled by
  1/n_c.  Checked once by importance sampling over the shift (proposal: the modes' Laplace
  Gaussians with doubled covariance, 150 draws each, Laplace over the class means given the
  shift; effective sample sizes about 100 of 150): feature-layer fractions 0.29 / 0.26 / 0.23 / 0.22
  for 111 / 101 / 110 / 011 against Laplace 0.30 / 0.23 / 0.23 / 0.23, equal within the Monte Carlo
  error (about 0.02; 101 and 110 are equal by symmetry).  Measured against Langevin samples (sigmoid,
  L = 2, P = 40, y- = 1/2; tests/test_theory_nonlazy_deep.py): layer 1's code fractions within 0.02
  and its kernel within 0.01; the feature layer's kernel block within 0.04-0.07 (N = 100 / 40), its
  codes the same four (111, 110, 101, 011) but 111 at 0.43 in samples against 0.30 in theory (at
  N = P = 100: layer 1 within 0.06 and 0.023, the feature layer's 111 at 0.58 against 0.29, its
  kernel block 0.12 above; README, open disagreements);
- a middle layer (1 < l < L) has the shift *and* a weak tilt (its tilt comes from the change of
  the layer above, not from the readout): its shift's measure is broad (Laplace over it gave
  standard deviations 2.4-2.7 prior units at L = 3, P = 20, and put seven sampled codes into one
  mode), so it is integrated on a grid over the shift with Laplace over the class means given it,
  which the n_c inputs of each class pin (``shiftgrid``, :func:`uses_shift_grid`).  Against
  Langevin with neuron moves (sigmoid, L = 3, y- = 1/2, N = 100, P = 20): every layer's code
  fractions within 0.01, kernel class blocks within 0.002 / 0.007 / 0.012 (layers 1 / 2 / 3), the
  output within 0.001 (README, "Deep nets");
- depth: L = 1, 2 and 3 (``MAX_DEPTH``; deeper networks have several middle layers, which the solver
  would treat alike, but no depth above 3 has been checked);
- no P = inf limit is taken for L >= 2: the shift u has an O(1) prior cost against O(P) gains, so as
  P -> inf a layer above the first saturates (u -> inf, within-class variability -> 0: the paper's
  "sharpening" across layers) at a rate set by P; the theory is evaluated at the experiment's P;
- N0 >= P (orthogonal inputs); inputs of a class exchangeable (the class-symmetric solution; the
  rate function is not convex for L >= 2, so other solutions may exist); bounded phi start from the
  one-layer equilibrium (``sigmoid.solve_redundant``); where it does not exist (the nonnegative
  sigmoid at y- = -1/2, the paper's Fig. 3 targets) from the one-layer solution at P = 12, and
  the deep solution is continued in P from P = 40 (:func:`start_size`: solved directly at P = 100
  it lands on a spurious branch whose saturated class-0 modes the mode search drops), up to
  P = 200 (``MAX_P_NO_EQUILIBRIUM``, the largest checked; a step in P of 1.5x, 88 -> 132, jumped
  to that branch, so a step that moves the readout fields by more than half is halved,
  :func:`_left_branch`);
- ReLU (and other unbounded nonlinear phi) in lower layers: not covered.  The tilted measures are
  the same, but for a 1-homogeneous phi the quadratic tilt ``phi^T Kt phi`` grows like |z|^2 along
  rays, so the measure is normalisable only below the margin
  ``2 sup_v phi(v)^T Kt_l phi(v) / v^T C_l^{-1} v < 1`` (THEORY.md 1.5); above it the layer condenses
  into O(sqrt(N)) outliers (the paper's Fig. 3 ReLU lower layers) whose O(1) rank-one kernel
  contributions enter the next layer's prior C_{l+1}: only their masses per class enter, and these
  are zero modes of the single-neuron problem, fixed (if at all) only jointly through Kt_l of the
  layer above, which itself depends on the masses; moreover the class-shared shift u of a layer
  l >= 2 has an unbounded gain for a growing phi (``sigma_a^2 = P^{-1/L}`` for ReLU), so the class
  reduction's Laplace step does not close.

Permutation symmetry [SRC: paper, "Dynamics"; DER for the criterion]: a layer's codes are *pinned*
when a per-neuron variable with a narrow prior carries the tilt: the readout a_i (prior variance
sigma_a^2 = 1/P, posterior a mixture of separated deltas a_gamma) pins the feature layer's codes,
which therefore break permutation symmetry (frozen codes) whenever the feature layer has more than
one mode.  A lower layer's tilt is carried collectively by N outgoing weights, each O(1/sqrt(N))
from its prior, so its modes are not pinned: a coding scheme in every draw (``multimodal``), but
neurons switch codes (the paper's Fig. 5).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize

from widebayes.activations import get_activation
from widebayes.codes import code_of_means
from widebayes.quadrature import pack_symmetric, unpack_symmetric
from widebayes.theory.nonlazy import classmatrix as cm
from widebayes.theory.nonlazy.classes import ClassTask, initial_fields
from widebayes.theory.nonlazy.classgrid import class_grid
from widebayes.theory.nonlazy.layer import LayerMixture, LayerProblem, find_modes, mixture, shift_factor
from widebayes.theory.nonlazy.shiftgrid import CODE_SPACING, shift_grid
from widebayes.theory.nonlazy.sigmoid import solve_redundant

NEWTON_ITERATIONS = 60
TOL = 3e-9
#: the tilts' tolerance: their residual carries the readout solve's noise (about 5e-9 relative at
#: P = 100, 1.4e-8 at P = 500, from mode sets and positions), so a tighter one stalls the solve
TILT_TOL = 5e-8
#: fraction above which a mode counts as occupied (multimodal layer / broken symmetry)
OCCUPIED = 1e-3
#: coupling levels (measured at P = 100 on the Fig. 5 task: with five levels the solve at 0.5
#: took 46 s with prior variance 1 and minutes with 1 - 1e-16, with nine 21 s for the whole)
COUPLINGS = tuple(np.linspace(0.0, 1.0, 9))
MAX_GRID_CLASSES = 3
#: largest relative change of a block of unknowns in one Newton step
TRUST = 0.2
INTERMEDIATE_TOL = 1e-5
#: a solve at coupling 1 that stalls above its tolerance is returned (with its residual) when below
#: this: the tilts' residual has a noise floor from the mode search (``TILT_TOL``) that varies with
#: the start
ACCEPTED_RESIDUAL = 1e-6
MIN_COUPLING_STEP = 1e-3
#: deepest network the theory answers for (module docstring: checked up to 3)
MAX_DEPTH = 3
#: Newton iterations over the whole continuation before the solver gives up (a converging L = 2
#: solve takes 60-150)
MAX_TOTAL_ITERATIONS = 400
#: training-set size of the one-layer start where the P = inf equilibrium does not exist
#: (:func:`_start_fields`); multiple of 4
START_P = 12
#: largest P solved directly; above it the solution is continued in P (:func:`_continue_in_P`),
#: each step at most P_STEP times the last
CONTINUATION_P = 100
#: the same for a bounded activation without a P = inf one-layer equilibrium (:func:`start_size`)
CONTINUATION_P_NO_EQUILIBRIUM = 40
#: ... and the largest P answered there (the largest checked: sigmoid, y- = -1/2, L = 2 and 3, the
#: paper's Fig. 3 at P = 200; each step in P is checked for a jump to another branch, ``BRANCH_JUMP``)
MAX_P_NO_EQUILIBRIUM = 200
P_STEP = 1.5
#: a step in P that moves the readout fields by more than this fraction of their size left the
#: branch it started on (:func:`_left_branch`): it is halved like a failed step
BRANCH_JUMP = 0.5
#: smallest step in P that a failed step is halved to
MIN_P_STEP = 8
#: Newton iterations of the readout solve from a warm start, and after the convex minimisation
READOUT_NEWTON_WARM = 25
READOUT_NEWTON = 30
#: a point converged on its tracked modes is searched for new ones; modes of negligible weight
#: found then move the residual by about 1e-9 relative, which is accepted up to this factor of
#: the tolerance
SEARCH_NOISE = 5.0


class DeepTask(NamedTuple):
    """A deep network on a class-structured task.

    Attributes
    ----------
    task : ClassTask
        Proportions, class targets, P, ``beta_a = sigma_a^2 P``, layer-1 prior variance
        ``sigma_1^2 c``, T0, activation.
    sigma_w2 : ndarray (L,)
        Prior variances of the hidden layers (``sigma_1^2`` first).
    """

    task: ClassTask
    sigma_w2: np.ndarray

    @property
    def depth(self) -> int:
        return len(self.sigma_w2)

    @property
    def counts(self) -> np.ndarray:
        return self.task.rho * self.task.num_train

    @property
    def sigma_a2(self) -> float:
        return self.task.beta_a / self.task.num_train


class DeepSolution(NamedTuple):
    """Per-layer modes and kernels of the deep mean-field theory.

    Attributes
    ----------
    L : ndarray (k, m)
        Readout fields ``lambda_c`` (Lambda_mu = lambda_c(mu)).
    tilts : list of (d, Q)
        Each layer's tilt (input-diagonal d (k,), class-mean Q (k, k)); the top one from L.
    layers : list of LayerResult
        Layers 1..L: codes, activation kernel, preactivation second moment.
    output : ndarray (k, m)
        Posterior-mean output on each class, ``sigma_a^2 (K^L Lambda)_c``.
    readout_second_moment : ndarray (m, m)
    residual : float
        Max-norm of the readout and tilt equations.
    iterations : int
    """

    L: np.ndarray
    tilts: list
    layers: list
    output: np.ndarray
    readout_second_moment: np.ndarray
    residual: float
    iterations: int


# ----------------------------------------------------------------------------- the equations


def top_tilt(L, deep: DeepTask):
    """``Kt_L = (sigma_a^2 / 2) Lambda Lambda^T``: d = 0, ``Q = n (sigma_a^2 / 2) L L^T n``."""
    n = deep.counts
    return np.zeros(len(n)), n[:, None] * (0.5 * deep.sigma_a2 * L @ L.T) * n[None, :]


def class_output(K: cm.ClassMatrix, L, sigma_a2: float) -> np.ndarray:
    """``sigma_a^2 K Lambda`` on each class: ``sigma_a^2 [v_c lambda_c + sum_c' n_c' k_cc' lambda_c']``."""
    return sigma_a2 * (K.diag[:, None] * L + K.block @ (K.counts[:, None] * L))


def backward_tilt(K_below: cm.ClassMatrix, M_above: cm.ClassMatrix, sigma2: float):
    """``Kt_l = (sigma^2 / 2) C^{-1} (M - C) C^{-1}``, ``C = sigma^2 K^l`` (module docstring), as
    (d, Q) with ``Q = n B n``."""
    C = cm.scale(K_below, sigma2)
    Ci = cm.inverse(C)
    Kt = cm.scale(cm.multiply(cm.multiply(Ci, cm.subtract(M_above, C)), Ci), 0.5 * sigma2)
    Kt = cm.symmetrised(Kt)
    n = K_below.counts
    return Kt.diag, n[:, None] * Kt.block * n[None, :]


def layer_prior(K_below: cm.ClassMatrix | None, deep: DeepTask, layer: int):
    """Within-class variance w and shift factor E of a layer (1-based) from the kernel below."""
    k = len(deep.task.rho)
    if K_below is None:  # layer 1: C_1 = sigma_1^2 c I
        return np.full(k, deep.task.variance), np.zeros((k, 0))
    s2 = deep.sigma_w2[layer - 1]
    return s2 * K_below.diag, shift_factor(s2 * K_below.block)


def readout_second_moment(K: cm.ClassMatrix, L, sigma_a2: float) -> np.ndarray:
    """``sigma_a^2 I + sigma_a^4 Lambda^T K^L Lambda`` (THEORY.md 1.2)."""
    n = K.counts
    LKL = (L * (n * K.diag)[:, None]).T @ L + (n[:, None] * L).T @ K.block @ (n[:, None] * L)
    out = sigma_a2 * np.eye(L.shape[1]) + sigma_a2**2 * LKL
    return 0.5 * (out + out.T)


# ----------------------------------------------------------------------------- packing


def _sizes(deep: DeepTask):
    k, m = deep.task.targets.shape
    return k, m, k + k * (k + 1) // 2


def pack(L, tilts, deep: DeepTask) -> np.ndarray:
    """Unknown vector: L, then (d, packed Q) of layers 1..L-1."""
    return np.concatenate([np.ravel(L)] + [np.concatenate([d, pack_symmetric(Q)]) for d, Q in tilts])


def unpack(x, deep: DeepTask):
    k, m, size = _sizes(deep)
    L = x[:k * m].reshape(k, m)
    tilts = []
    for i in range(deep.depth - 1):
        v = x[k * m + i * size:k * m + (i + 1) * size]
        tilts.append((v[:k], unpack_symmetric(v[k:], k)))
    return L, tilts


class LayerResult(NamedTuple):
    """One layer of the solution.

    Attributes
    ----------
    kernel : ClassMatrix
        Posterior-averaged activation kernel ``E[phi phi^T]`` on the training inputs.
    preact : ClassMatrix or None
        ``E[z z^T]`` of the preactivations (modes only; the grid layer is never above another).
    codes : list of dict
        ``{"code", "fraction", "class_means", ...}``, heaviest first.
    num_peaks : int
        Occupied modes (maxima of the single-neuron measure with weight above ``OCCUPIED``; on the
        grid, its local maxima).
    method : str
        ``"modes"`` (Laplace over the modes, ``layer``) or ``"grid"`` (``classgrid``).
    mixture : LayerMixture or None
        The modes (method "modes").
    """

    kernel: cm.ClassMatrix
    preact: cm.ClassMatrix | None
    codes: list
    num_peaks: int
    method: str
    mixture: LayerMixture | None


def _copied(tracked: list) -> list:
    """A copy of the tracked state of every layer: its modes, or a shift grid's fields."""
    return [t.copy() if isinstance(t, np.ndarray) else list(t) for t in tracked]


def _track_starts(modes, E) -> np.ndarray | None:
    """(xi, theta) starts for tracked modes, their shifts u mapped into the current frame E."""
    if not modes:
        return None
    u = np.array([m.u for m in modes])
    xi = np.linalg.lstsq(E, u.T, rcond=1e-12)[0].T if E.shape[1] else np.zeros((len(modes), 0))
    return np.hstack([xi, np.array([m.theta for m in modes])])


def uses_grid(deep: DeepTask, layer: int) -> bool:
    """The layer (1-based) is integrated on the class-mean grid (``classgrid``): the first layer of a deep
    network with a bounded activation and at most ``MAX_GRID_CLASSES`` classes."""
    act = get_activation(deep.task.activation)
    return layer == 1 and deep.depth > 1 and act.bounded and len(deep.task.rho) <= MAX_GRID_CLASSES


def uses_shift_grid(deep: DeepTask, layer: int) -> bool:
    """The layer (1-based) is a middle layer (``1 < layer < L``) integrated on the shift grid
    (``shiftgrid``): a bounded activation and at most ``MAX_GRID_CLASSES`` classes."""
    act = get_activation(deep.task.activation)
    return 1 < layer < deep.depth and act.bounded and len(deep.task.rho) <= MAX_GRID_CLASSES


def merged_codes(mix: LayerMixture, threshold: float) -> list:
    """Codes of a layer's modes: a mode's code is the set of classes whose class mean of phi exceeds
    the threshold (``widebayes.codes``); modes with the same code are merged (fractions added, class
    means and preactivation means averaged with the weights)."""
    merged: dict = {}
    for w, m in zip(mix.weights, mix.modes):
        e = merged.setdefault(code_of_means(m.s, threshold),
                              {"fraction": 0.0, "class_means": 0.0, "preactivation_mean": 0.0, "modes": 0})
        e["fraction"] += float(w)
        e["class_means"] = e["class_means"] + w * m.s
        e["preactivation_mean"] = e["preactivation_mean"] + w * m.law.m_z
        e["modes"] += 1
    return [{"code": code, "fraction": e["fraction"], "class_means": e["class_means"] / e["fraction"],
             "preactivation_mean": e["preactivation_mean"] / e["fraction"], "modes": e["modes"]}
            for code, e in sorted(merged.items(), key=lambda kv: -kv[1]["fraction"])]


def _layer(deep: DeepTask, layer: int, K_below, tilt, tracked: list, search: bool,
           track: bool) -> LayerResult:
    """Solve one layer (1-based) given the kernel below and its tilt (d, Q); ``tracked[layer - 1]``
    holds the modes to start from (updated when ``track``); ``search`` adds the sign-pattern corners
    (also used when the tracked modes are all lost)."""
    act = get_activation(deep.task.activation)
    threshold = act.code_threshold(deep.task.variance)
    w, E = layer_prior(K_below, deep, layer)
    d, Q = tilt
    if uses_grid(deep, layer):
        g = class_grid(act, deep.counts, d, Q, w, threshold if track else None)
        return LayerResult(g.kernel, None, g.codes, g.num_peaks, "grid", None)
    if uses_shift_grid(deep, layer):
        warm = tracked[layer - 1]
        g = shift_grid(act, deep.counts, d, Q, w, E, threshold if track else None,
                       fields=warm if isinstance(warm, np.ndarray) else None)
        if track:
            tracked[layer - 1] = g.fields
        return LayerResult(g.kernel, g.preact, g.codes, g.num_peaks, "shift-grid", None)
    prob = LayerProblem(act, deep.counts, d, Q, w, E)
    starts = _track_starts(tracked[layer - 1], E)
    modes = find_modes(prob, starts, search=search or starts is None)
    if not search and starts is not None and len(modes) < len(starts):
        # a tracked mode was lost (or merged): search the corners for where it went.  Measured at
        # P = 500 (Fig. 5 task): without this, trial points that lost a feature-layer mode left the
        # readout stuck at a residual of 3e-3 and the whole step in P failed
        modes = find_modes(prob, starts, search=True)
    if not modes:
        raise RuntimeError(f"layer {layer}: no mode of the single-neuron measure found")
    mix = mixture(prob, modes)
    if track:
        tracked[layer - 1] = mix.modes
    return LayerResult(mix.kernel, mix.preact, merged_codes(mix, threshold),
                       int(np.sum(mix.weights > OCCUPIED)), "modes", mix)


def lower_layers(lower: list, deep: DeepTask, tracked: list, search: bool, track: bool) -> list:
    """Layers 1..L-1 given their tilts (each layer's prior from the kernel of the one below)."""
    layers, K_below = [], None
    for layer, tilt in enumerate(lower, start=1):
        layers.append(_layer(deep, layer, K_below, tilt, tracked, search, track))
        K_below = layers[-1].kernel
    return layers


def readout_residual(L, top: LayerResult, deep: DeepTask) -> np.ndarray:
    """``T0 lambda_c - y_c + sigma_a^2 (K^L Lambda)_c`` (k, m): the readout equation per class."""
    return deep.task.T0 * L - deep.task.targets + class_output(top.kernel, L, deep.sigma_a2)


def tilt_residual(lower: list, layers: list, deep: DeepTask, coupling: float = 1.0,
                  anchor=None) -> np.ndarray:
    """``Kt_l - [c backward_l + (1 - c) anchor_l]`` of the lower layers, packed (module docstring)."""
    res = []
    for i, (d, Q) in enumerate(lower):
        d_new, Q_new = backward_tilt(layers[i].kernel, layers[i + 1].preact, deep.sigma_w2[i + 1])
        if coupling != 1.0:
            d_new = coupling * d_new + (1.0 - coupling) * anchor[i][0]
            Q_new = coupling * Q_new + (1.0 - coupling) * anchor[i][1]
        res.append(np.concatenate([d - d_new, pack_symmetric(Q - Q_new)]))
    return np.concatenate(res) if res else np.zeros(0)


# ----------------------------------------------------------------------------- solve


def equilibrium_fields(task: ClassTask) -> np.ndarray | None:
    """Readout fields of the one-layer equilibrium: for bounded phi the P = inf redundant code of
    ``sigmoid.solve_redundant`` (the minimiser of a convex dual, hence the equilibrium among the
    many solutions of the finite-P equations), None otherwise or when that solve fails."""
    if not get_activation(task.activation).bounded:
        return None
    try:
        return solve_redundant(task).L
    except (RuntimeError, ValueError):  # its search can lose every maximum (e.g. y- < 0)
        return None


def task_symmetries(deep: DeepTask) -> list:
    """Class transpositions that leave the task invariant: equal proportions and, with one output
    per class (m = k), targets invariant when classes and outputs are swapped together."""
    rho, Y = deep.task.rho, deep.task.targets
    k, m = Y.shape
    found = []
    for i in range(k):
        for j in range(i + 1, k):
            p = np.arange(k)
            p[[i, j]] = p[[j, i]]
            if m == k and abs(rho[i] - rho[j]) < 1e-12 and np.allclose(Y[p][:, p], Y, atol=1e-12):
                found.append(p)
    return found


def symmetry_basis(deep: DeepTask) -> np.ndarray:
    """Orthonormal basis (columns) of the unknowns invariant under :func:`task_symmetries` (the
    class-symmetric solution lives there; the equations are equivariant, so Newton stays in it)."""
    k, m, size = _sizes(deep)
    n = k * m + (deep.depth - 1) * size
    rows = []
    for p in task_symmetries(deep):
        G = np.empty((n, n))
        for i in range(n):
            e = np.zeros(n)
            e[i] = 1.0
            L, tilts = unpack(e, deep)
            G[:, i] = pack(L[p][:, p], [(d[p], Q[p][:, p]) for d, Q in tilts], deep)
        rows.append(G - np.eye(n))
    if not rows:
        return np.eye(n)
    _, sv, Vt = np.linalg.svd(np.vstack(rows))
    rank = int(np.sum(sv > 1e-10))
    return Vt[rank:].T


def block_bases(deep: DeepTask):
    """Orthonormal bases of the symmetric readout fields and of the symmetric lower tilts (the
    symmetries act on each block alone, so :func:`symmetry_basis` splits)."""
    k, m, _ = _sizes(deep)
    B = symmetry_basis(deep)

    def orth(A):
        U, sv, _ = np.linalg.svd(A, full_matrices=False)
        return U[:, sv > 1e-10]

    return orth(B[:k * m]), orth(B[k * m:]) if B.shape[0] > k * m else np.zeros((0, 0))


def _scale(v) -> float:
    return max(1.0, float(np.max(np.abs(v)))) if np.size(v) else 1.0


def _fd_jacobian(fun, z, f0, eps: float) -> np.ndarray:
    """Forward-difference Jacobian of ``fun`` at z (step ``eps`` times the scale of z)."""
    h = eps * _scale(z)
    return np.stack([(fun(z + h * e) - f0) / h for e in np.eye(len(z))], axis=1)


class _Broyden(NamedTuple):
    x: np.ndarray
    norm: float
    jacobian: np.ndarray | None
    iterations: int


def _relative(r, x) -> float:
    return float(np.max(np.abs(r))) / _scale(x)


def _broyden(accept, trial, x, r, done, max_iter: int, eps: float, jacobian=None,
             max_step: float = np.inf, min_t: float = 1e-3) -> _Broyden:
    """Newton-Broyden on a residual from x (residual r there) until ``done(norm)``, norm the
    residual's max-norm relative to the scale of x.

    ``accept(x)`` evaluates an accepted point (it may update tracked state); ``trial(x)`` a trial or
    difference point (RuntimeError / ValueError: no residual there).  Jacobian: ``jacobian``, else
    forward differences (step ``eps``), rank-one (Broyden) updates after accepted steps, fresh
    differences when a step fails; a step is capped at ``max_step`` times the scale of x and halved
    (down to ``min_t``) until the residual drops; a failed step on a fresh Jacobian ends the
    iteration.  Both the readout (:func:`solve_readout`) and the lower tilts (:func:`_solve_tilts`)
    use it."""
    J, fresh, norm, it = jacobian, False, _relative(r, x), 0
    while it < max_iter and not done(norm):
        it += 1
        if J is None:
            J, fresh = _fd_jacobian(trial, x, r, eps), True
        step = np.linalg.lstsq(J, -r, rcond=1e-13)[0]
        t = min(1.0, max_step * _scale(x) / max(float(np.max(np.abs(step))), 1e-300))
        r_new = None
        while t > min_t:
            try:
                r_new = trial(x + t * step)
            except (RuntimeError, ValueError):
                r_new = None
            if r_new is not None and _relative(r_new, x + t * step) < norm:
                break
            r_new, t = None, 0.5 * t
        if r_new is None:
            if fresh:
                break
            J = None
            continue
        dx = t * step
        J, fresh = J + np.outer(r_new - r - J @ dx, dx) / (dx @ dx), False
        x = x + dx
        r = accept(x)
        norm = _relative(r, x)
    return _Broyden(x, norm, J, it)


def _proper_fields(top_at, z):
    """Halve the readout fields until the feature layer's measure has a mode (a start too strongly
    tilted can be improper, e.g. a linear layer beyond its Gaussian's margin)."""
    for _ in range(40):
        try:
            top_at(z)
            return z
        except (RuntimeError, ValueError):
            z = 0.5 * z
    raise RuntimeError("no proper starting point for the deep mean-field equations")


class _Readout(NamedTuple):
    L: np.ndarray
    top: LayerResult
    residual: float
    jacobian: np.ndarray | None


def readout_objective(L, deep: DeepTask, top: LayerResult) -> float:
    """``G(Lambda) = T0 |Lambda|^2 / 2 - Lambda . Y + ln Z(Lambda)`` per input class, with ``ln Z``
    the feature layer's log-partition (``LayerMixture.log_partition``).

    [DER] ``Z(Lambda) = E_{N(0, C_L)} exp(sigma_a^2 (Lambda^T phi)^2 / 2)`` is an expectation of
    log-convex functions of Lambda, so ``ln Z`` and G are convex, and ``grad ln Z = sigma_a^2 K^L
    Lambda``: the readout equation is ``grad G = 0`` (the P = inf analogue is the convex dual of
    ``sigmoid.solve_redundant``).  With the Laplace log-weights the gradient matches ``n_c`` times
    :func:`readout_residual` up to the prefactors' O(1) terms against O(P) (0.1% at P = 200), so
    the minimiser is a start, polished by Newton on the residual itself.
    """
    n = deep.counts[:, None]
    return float(0.5 * deep.task.T0 * np.sum(n * L**2) - np.sum(n * L * deep.task.targets)
                 + top.mixture.log_partition)


def solve_readout(deep: DeepTask, below: list, L0, tracked: list, tol: float = TOL, jacobian=None,
                  search: bool = True, fallback: bool = True) -> _Readout:
    """The readout fields for fixed lower layers (``below``, layers 1..L-1): Newton on the readout
    equation from L0 (Newton-Broyden, starting from ``jacobian`` where given: a warm start's
    Jacobian, which saves the forward differences when the lower layers moved little); where that
    does not converge, the minimiser of the convex :func:`readout_objective` (BFGS), then Newton
    again.  In the symmetric subspace.  ``search=False`` keeps to the tracked modes of the feature
    layer (no corner search, unless one of them is lost): the outer iteration's difference quotients
    and trial points, which need the same mode set and cost a fifth as much.  ``fallback=False``
    (those same points) skips the convex minimisation and raises RuntimeError when Newton from the
    warm start ends above ``INTERMEDIATE_TOL``: near the last point the readout moves little, so a
    failure there means the step left the tracked branch (measured: such trial points took 12 s
    each through the fallback and still failed, 14 of them in one rejected step)."""
    BL, _ = block_bases(deep)
    k, m, _ = _sizes(deep)
    n = deep.counts[:, None]
    K_below = below[-1].kernel if below else None

    def top_at(z, search, track):
        L = (BL @ z).reshape(k, m)
        return L, _layer(deep, deep.depth, K_below, top_tilt(L, deep), tracked, search, track)

    def residual(z, search=False, track=False):
        L, top = top_at(z, search, track)
        return BL.T @ readout_residual(L, top, deep).ravel(), top

    def newton(z, iterations, J):
        """Newton-Broyden from z on the tracked modes (trial points included); a converged point
        is searched for new modes, and the iteration goes on from there if they moved it."""
        top = None

        def accept(v):
            nonlocal top
            r, top = residual(v, False, True)
            return r

        try:
            r, top = residual(z, search, True)
        except (RuntimeError, ValueError):
            return z, None, np.inf, J
        norm = _relative(r, z)
        while iterations > 0 and norm >= SEARCH_NOISE * tol:
            run = _broyden(accept, lambda v: residual(v)[0], z, r, lambda q: q < tol, iterations, 1e-7, J)
            z, J, iterations = run.x, run.jacobian, iterations - max(run.iterations, 1)
            r, top = residual(z, search, True)
            norm = _relative(r, z)
            if run.norm >= tol:  # stalled: no point in searching again
                break
        return z, top, norm, J

    z0 = _proper_fields(lambda v: top_at(v, search, True), BL.T @ np.ravel(L0))
    z, top, norm, J = newton(z0, READOUT_NEWTON_WARM, jacobian)
    if not fallback and not norm < INTERMEDIATE_TOL:
        raise RuntimeError(f"the readout did not converge from its warm start (residual {norm:.1e})")
    if norm >= tol and fallback:
        def objective(v):
            try:
                L, top_v = top_at(v, search, True)
            except (RuntimeError, ValueError):
                return np.inf, np.zeros_like(v)
            grad = BL.T @ (n * readout_residual(L, top_v, deep)).ravel()
            return readout_objective(L, deep, top_v), grad

        best = minimize(objective, z0, jac=True, method="BFGS", options={"gtol": 1e-8, "maxiter": 400})
        z, top, norm, J = newton(best.x, READOUT_NEWTON, None)
    if top is None:
        raise RuntimeError("the feature layer has no mode at any readout field tried")
    return _Readout((BL @ z).reshape(k, m), top, norm, J)


def _outer(y, deep: DeepTask, BT, state: dict, coupling: float, anchor, tracked: list,
           track: bool) -> np.ndarray:
    """Tilt residual (in the symmetric subspace) at lower tilts ``BT y``, the readout solved for
    them (warm start ``state["L"]``); updates ``state`` and the tracked modes when ``track``.

    Otherwise (trial and difference points) the readout solve tracks the feature layer's modes on
    a copy, so the residual there is a function of y alone.  Measured (sigmoid, L = 2, y- = 0.4,
    step P = 148 -> 224): when a rejected trial at the full step moved the tracked modes, every
    shorter trial then failed its readout (residual 3e-2) and the step in P failed after 100 s,
    where with the modes kept the half step reduced the residual from 0.26 to 0.12."""
    if not track:
        tracked = _copied(tracked)
    _, lower = unpack(np.concatenate([np.ravel(state["L"]), BT @ y]), deep)
    layers = lower_layers(lower, deep, tracked, track, track)
    ro = solve_readout(deep, layers, state["L"], tracked, jacobian=state.get("jacobian"), search=track,
                       fallback=track)
    layers.append(ro.top)
    res = BT.T @ tilt_residual(lower, layers, deep, coupling, anchor)
    if track:
        state.update(L=ro.L, layers=layers, readout_residual=ro.residual, jacobian=ro.jacobian)
    return res


def _solve_tilts(y, deep, BT, state, coupling, anchor, tracked, tol, max_iter):
    """Newton-Broyden (:func:`_broyden`) on the tilt residual at fixed ``coupling``
    (:func:`_outer`), steps capped at ``TRUST`` of the tilts' size; converged when the readout
    solved inside it is too.  Returns the tilts, the larger of the two residuals, the iterations."""
    def outer(v, track):
        return _outer(v, deep, BT, state, coupling, anchor, tracked, track)

    run = _broyden(lambda v: outer(v, True), lambda v: outer(v, False), y, outer(y, True),
                   lambda norm: norm < tol and state["readout_residual"] < tol, max_iter, 1e-6,
                   max_step=TRUST, min_t=1e-4)
    return run.x, max(run.norm, state["readout_residual"]), run.iterations


def _start_fields(task: ClassTask) -> np.ndarray:
    """Readout fields to start from: the P = inf one-layer equilibrium where it exists; for a
    bounded activation where it does not (the sigmoid at y- = -1/2), the one-layer solution at
    ``START_P`` inputs from ``initial_fields``; else ``initial_fields``.

    Why the small P [measured, sigmoid, y- = -1/2, T0 = 0.01]: from ``initial_fields`` at P = 100
    the readout converged to fields (100, -50, -50) on class 0, where the mode search abandons the
    saturated class-0 ascents as runaway (``layer.RUNAWAY_FIELD``) and the feature layer keeps only
    codes 001 and 010 (output 0.00 on class 0): a stationary point of an incomplete partition
    function.  At P = 12 the same start converges to fields of order 10 with six codes, and that
    solution carried to P = 12 ... 200 stays within 1e-3 of its fractions (a one-layer network's
    codes barely depend on P)."""
    start = equilibrium_fields(task)
    if start is not None:
        return start
    if not get_activation(task.activation).bounded or task.num_train <= START_P:
        return initial_fields(task)
    small = task._replace(num_train=START_P)
    one = solve_deep(DeepTask(small, np.ones(1)), x0=np.ravel(initial_fields(small)))
    return one.L if one.residual < INTERMEDIATE_TOL else initial_fields(task)


def solve_deep(deep: DeepTask, x0=None, tol: float = TOL, max_iter: int = NEWTON_ITERATIONS,
               couplings=COUPLINGS) -> DeepSolution:
    """Solve the deep mean-field equations (module docstring).

    Nested: for given lower tilts the readout fields solve the readout equation
    (:func:`solve_readout`: Newton, or the minimiser of a convex objective where Newton does not
    converge); the lower tilts solve their backward equations by Newton-Broyden on that reduced
    residual.  The feature layer's mode weights are exponential in P, so its fields are stiff;
    solved jointly with the tilts, Newton stalled at P >= 200 (the readout gives a smooth function
    of the tilts once solved exactly).  Continuation from the one-layer solution: the lower tilts
    solve ``Kt_l = c * (the backward equation) + (1 - c) * anchor`` for c = ``couplings`` (0: every
    lower layer tilted as a one-layer network's feature layer; 1: the theory), halving the increment
    of c when a solve fails.

    Raises
    ------
    RuntimeError
        If no readout solves the equations at the start or the continuation stalls.
    """
    if deep.depth > MAX_DEPTH and not get_activation(deep.task.activation).is_linear:
        raise RuntimeError(f"depth {deep.depth}: the deep theory closes for nonlinear networks up to "
                           f"depth {MAX_DEPTH} (module docstring: deeper ones are not checked)")
    k, m, _ = _sizes(deep)
    tracked: list = [[] for _ in range(deep.depth)]
    if deep.depth == 1:
        L0 = unpack(np.asarray(x0, dtype=np.float64), deep)[0] if x0 is not None else _start_fields(deep.task)
        ro = solve_readout(deep, [], L0, tracked, tol)
        return _solution(ro.L, [], [ro.top], deep, ro.residual, 1.0, 0)
    P = deep.task.num_train
    start = start_size(deep.task) if x0 is None else None
    if start is not None and P > start:
        return _continue_in_P(deep, start, tol, max_iter, couplings)
    if x0 is None:
        one = solve_deep(DeepTask(deep.task, deep.sigma_w2[:1]))
        if one.residual > INTERMEDIATE_TOL:
            raise RuntimeError(f"the one-layer start did not converge (residual {one.residual:.1e})")
        none = (np.zeros(k), np.zeros((k, k)))
        anchor = [one.tilts[-1]] + [none] * (deep.depth - 2)
        x, levels = pack(one.L, anchor, deep), list(couplings)
    else:  # a given start is solved at coupling 1 directly
        anchor, x, levels = None, np.asarray(x0, dtype=np.float64), [1.0]
    _, BT = block_bases(deep)
    y = BT.T @ x[k * m:]
    state = {"L": unpack(x, deep)[0]}
    done, iterations, norm, solved, best = None, 0, np.inf, None, (None, np.inf, None)
    # linear layers are Gaussian in closed form: no mode search, no noise floor
    final_tol = tol if get_activation(deep.task.activation).is_linear else max(tol, TILT_TOL)
    while levels and iterations < MAX_TOTAL_ITERATIONS:
        c = levels[0]
        saved_tracked, saved_state = _copied(tracked), dict(state)
        target = final_tol if c == 1.0 else INTERMEDIATE_TOL
        try:
            y_new, norm_new, it = _solve_tilts(y, deep, BT, state, c, anchor, tracked, target, max_iter)
        except RuntimeError:
            y_new, norm_new, it = y, np.inf, 1
        iterations += it
        if c == 1.0 and norm_new < best[1]:
            best = (y_new, norm_new, dict(state))
        if norm_new < target:
            y, norm, done, solved = y_new, norm_new, c, dict(state)
            levels.pop(0)
        elif done is not None and c - done > MIN_COUPLING_STEP:
            tracked[:], state = saved_tracked, saved_state
            levels.insert(0, 0.5 * (done + c))
        else:
            break
    if done != 1.0 and best[1] < ACCEPTED_RESIDUAL:  # stalled near the mode search's noise floor
        (y, norm, solved), done = best, 1.0
    if solved is None:
        raise RuntimeError("the deep mean-field equations did not converge at any coupling")
    _, lower = unpack(np.concatenate([np.ravel(solved["L"]), BT @ y]), deep)
    return _solution(solved["L"], lower, solved["layers"], deep, norm, done, iterations)


def start_size(task: ClassTask) -> int:
    """Largest P solved directly (the coupling continuation); above it the solution is continued in
    P.  ``CONTINUATION_P``, or ``CONTINUATION_P_NO_EQUILIBRIUM`` for a bounded activation whose
    one-layer P = inf equilibrium does not exist (:func:`_start_fields`).  Measured (sigmoid, L = 2,
    y- = -1/2, T0 = 0.01): solved directly at P = 100 the coupling continuation ends on fields
    whose feature layer keeps only codes 001 and 010 (output 0.00 on class 0, where Langevin with
    neuron moves at N = P = 100 gives 0.944); continued from P = 40 (40, 56, 72, 100) the output is
    0.944 and the feature layer has six codes.  Raises RuntimeError where that case is not answered
    (P above ``MAX_P_NO_EQUILIBRIUM``)."""
    if not (get_activation(task.activation).bounded and equilibrium_fields(task) is None):
        return CONTINUATION_P
    P = task.num_train
    if P > MAX_P_NO_EQUILIBRIUM:
        raise RuntimeError(f"P = {P}: without a one-layer equilibrium (sigmoid.solve_redundant fails on "
                           f"this task) the deep theory is answered up to P = {MAX_P_NO_EQUILIBRIUM}; above "
                           "it no solution has been checked (deep.MAX_P_NO_EQUILIBRIUM)")
    return CONTINUATION_P_NO_EQUILIBRIUM


def continuation_sizes(P: int, start: int = CONTINUATION_P) -> list:
    """Training-set sizes from ``start`` up to P, each at most ``P_STEP`` times the last
    (multiples of 4, so every class count of the toy task's 1/2, 1/4, 1/4 is whole)."""
    steps = int(np.ceil(np.log(P / start) / np.log(P_STEP)))
    sizes = [int(4 * round(start * (P / start) ** (i / steps) / 4)) for i in range(steps)]
    return sizes + [P]


def _step_in_P(sol: DeepSolution, deep: DeepTask, previous: int, P: int, tol: float,
               max_iter: int) -> DeepSolution | None:
    """Solve at P inputs from the solution at ``previous``: readout fields and input-diagonal tilts
    d as they are, class-mean tilts Q scaled with P (``Q = n B n`` with the block of ``Kt``
    O(1/P)); None when the solve fails (from a start, :func:`solve_deep` returns only residuals
    below ``tol`` or, at a stall, below ``ACCEPTED_RESIDUAL``)."""
    step = DeepTask(deep.task._replace(num_train=P), deep.sigma_w2)
    lower = [(d, (P / previous) * Q) for d, Q in sol.tilts[:-1]]
    try:
        return solve_deep(step, x0=pack(sol.L, lower, step), tol=tol, max_iter=max_iter, couplings=(1.0,))
    except RuntimeError:
        return None


def _continue_in_P(deep: DeepTask, start: int, tol: float, max_iter: int, couplings) -> DeepSolution:
    """Solve at ``start`` inputs (:func:`start_size`; the coupling continuation), then step P up to the task's
    with the coupling at 1, each solve starting from the last (:func:`_step_in_P`); a step that
    fails is halved (to ``MIN_P_STEP`` inputs).  Measured: started from the one-layer solution at
    P = 200 and 500 the coupling continuation jumps to a branch with every neuron of both layers in
    code 111 (a solution of the equations, far from the samples' layer-1 codes at N = P = 500) and
    then stalls; continued in P it stays on the coding branch.  On the Fig. 5 task with prior
    variance 1 - 1e-16 the step 336 -> 500 started at a tilt residual of 2e2 and failed (176 s),
    where 336 -> 416 -> 500 converged in 5 s."""
    P_final = deep.task.num_train
    pending = continuation_sizes(P_final, start)
    sol = solve_deep(DeepTask(deep.task._replace(num_train=pending.pop(0)), deep.sigma_w2), tol=tol,
                     max_iter=max_iter, couplings=couplings)
    if sol.residual > INTERMEDIATE_TOL:
        raise RuntimeError(f"no solution at P = {start} to continue from "
                           f"(residual {sol.residual:.1e})")
    previous, iterations = start, sol.iterations
    while pending:
        P = pending[0]
        new = _step_in_P(sol, deep, previous, P, tol if P == P_final else INTERMEDIATE_TOL, max_iter)
        if new is None or _left_branch(sol, new):
            middle = int(4 * round((previous + P) / 8))
            if P - previous <= MIN_P_STEP or middle in (previous, P):
                raise RuntimeError(f"the continuation in P stalled between P = {previous} and {P}")
            pending.insert(0, middle)
            continue
        sol, previous, iterations = new, pending.pop(0), iterations + new.iterations
    return sol._replace(iterations=iterations)


def _left_branch(before: DeepSolution, after: DeepSolution) -> bool:
    """Whether a step in P jumped to another branch: the readout fields moved by more than
    ``BRANCH_JUMP`` of their size (at least 1).  Measured (sigmoid, L = 2, y- = -1/2, T0 = 0.01):
    along the coding branch a step of 1.5x in P moves them by under 1% (5.64 -> 5.60 on class 0);
    the step 88 -> 132 jumped to fields (100, -50, -50), whose feature layer has no class-0 code
    (output 0.00 there), and the continuation stayed on that branch up to P = 200."""
    scale = max(1.0, float(np.max(np.abs(before.L))))
    return float(np.max(np.abs(after.L - before.L))) > BRANCH_JUMP * scale


def _refined_codes(layers: list, lower: list, deep: DeepTask) -> list:
    """The layers with a shift grid's codes read off again on the finer grid
    (``shiftgrid.CODE_SPACING``): a code's fraction is the mass of a region with an edge, accurate
    to O(spacing) on the solver's grid (measured: 0.007 between spacings 0.5 and 0.35), where the
    kernels are spectrally accurate."""
    act = get_activation(deep.task.activation)
    threshold = act.code_threshold(deep.task.variance)
    out = list(layers)
    for layer in range(2, deep.depth):
        if uses_shift_grid(deep, layer):
            w, E = layer_prior(layers[layer - 2].kernel, deep, layer)
            d, Q = lower[layer - 1]
            g = shift_grid(act, deep.counts, d, Q, w, E, threshold, spacing=CODE_SPACING)
            out[layer - 1] = out[layer - 1]._replace(codes=g.codes, num_peaks=g.num_peaks)
    return out


def _solution(L, lower, layers, deep, norm, done, iterations) -> DeepSolution:
    layers = _refined_codes(layers, lower, deep)
    top = layers[-1].kernel
    return DeepSolution(L, lower + [top_tilt(L, deep)], layers, class_output(top, L, deep.sigma_a2),
                        readout_second_moment(top, L, deep.sigma_a2), norm if done == 1.0 else max(norm, 1.0),
                        iterations)


# ----------------------------------------------------------------------------- reading it out


def symmetry(result: LayerResult, is_feature_layer: bool) -> dict:
    """Whether a layer has a coding scheme in every draw (``multimodal``: more than one occupied
    mode) and whether the readout pins it (``breaks_permutation_symmetry``: the feature layer,
    multimodal; module docstring)."""
    multimodal = result.num_peaks > 1
    return {"multimodal": multimodal, "breaks_permutation_symmetry": bool(is_feature_layer and multimodal)}
