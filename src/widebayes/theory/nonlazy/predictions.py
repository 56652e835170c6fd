"""``nonlazy_predictions(exp)``: the mean-field theory of a non-lazy experiment as the JSON dict of
``widebayes theory`` (DESIGN.md contract; THEORY.md section 1).

Coverage:

- linear, any depth: closed forms (``linear``), exact at any T0;
- bounded activations (sigmoid, tanh), depth 2 and 3, class-structured task: per-layer codes and
  kernels of the deep mean-field theory (``deep``; a middle layer on the shift grid, ``shiftgrid``)
  at the experiment's P (deeper refused: see ``deep``);
- bounded activations (sigmoid, tanh), depth 1, class-structured task (orthogonal inputs, one
  target vector per class): redundant codes (``sigmoid``) at the experiment's P (Laplace) and at
  P = inf; where the P = inf equilibrium does not exist (the sigmoid at y- = -1/2, the paper's
  Fig. 3 targets: ``sigmoid.solve_redundant`` fails) the deep theory's depth-1 solve at the experiment's
  P (``deep``, started from the solution at P = 12), without test-input predictions;
- relu (relu-like growth and 1-homogeneous, ``Activation.is_relu``), depth 1, class-structured
  task: sparse codes (``relu``);
- any other depth-1 case of a bounded or relu-like activation with few training inputs
  (P <= ``MAX_GENERAL_P``): the single-neuron tilted measure by quadrature (``meanfield``);
  relu-like activations only below condensation;
- bounded activations, depth 1, any other task (MNIST): preactivations at their mode given the
  readout (``conditional_mode``, the paper's MNIST approximation); for odd ones (tanh), where that
  search stalls on the mirror pairs of modes, the full single-neuron measure with the
  preactivations' fluctuations (``full_measure``, Monte Carlo);
- everything else raises :class:`widebayes.errors.InputError` naming what is not covered (among
  them the growth classes ``"quadratic"``, which has no normalisable bulk, and ``"linear"`` other
  than phi(z) = z).

Which case applies is read from the activation's facts (``widebayes.activations``), never from its
name.  Every result carries ``layers``: one record per hidden layer 1..L with its ``codes``
(``[{"code", "fraction", ...}]``; empty for the analog code of linear networks and for lower layers
a theory does not resolve), ``kernel_train`` and whether it is ``multimodal`` and breaks
permutation symmetry.

The GP comparison (``gen_error_gp``) is the NNGP of the same prior (kernel ``sigma_a^2 K_L``)
with the likelihood's noise variance ``T_eff = T0 / N`` (THEORY.md 1.3 (D), 1.6).
"""

from __future__ import annotations

import jax
import numpy as np

from widebayes.activations import get_activation
from widebayes.codes import class_means, code_of_means
from widebayes.errors import InputError
from widebayes.theory.gp import generalization_error, lazy_gp_prediction
from widebayes.theory.nngp import input_kernel
from widebayes.theory.nonlazy import classes as cl
from widebayes.theory.nonlazy import classpredict as cp
from widebayes.theory.nonlazy.classmatrix import dense
from widebayes.theory.nonlazy.conditional_mode import (
    MAX_OUTPUTS,
    conditional_mode_test,
    solve_conditional_mode,
)
from widebayes.theory.nonlazy.cramer import tilted_preactivation
from widebayes.theory.nonlazy.deep import (
    ACCEPTED_RESIDUAL,
    MAX_DEPTH,
    DeepTask,
    solve_deep,
    symmetry,
)
from widebayes.theory.nonlazy.linear import linear_test, solve_linear
from widebayes.theory.nonlazy.meanfield import mean_field_test, relu_margin, solve_mean_field
from widebayes.theory.nonlazy.relu import critical_temperatures, solve_sparse
from widebayes.theory.nonlazy.sigmoid import code_schemes, solve_redundant, solve_redundant_finite_P

MAX_GENERAL_P = 5
CLASS_TOL = 1e-8
MIN_FRACTION = 1e-4
MAX_TEST_KERNEL = 200
OUTLIER_NOTE = ("the number of outlier neurons is not a prediction (zero mode: only the mass per "
                "class is fixed); num_outliers is the equilibrium-favoured value, one per condensed "
                "class; outlier_mass (sum |a_i|^2/N per class) is the prediction")


# ----------------------------------------------------------------------------- data helpers


class _Data:
    """The kernels every path needs, computed once."""

    def __init__(self, exp):
        d = exp.data
        self.K0 = input_kernel(d.X_train)
        self.has_test = len(d.X_test) > 0
        if self.has_test:
            self.k0 = input_kernel(d.X_train, d.X_test)
            self.K0_test = input_kernel(d.X_test)
        self.T0 = exp.T
        self.N = exp.spec.width
        self.num_classes = int(max(d.labels_train.max(),
                                   d.labels_test.max() if len(d.labels_test) else 0)) + 1


def class_task(exp, activation: str | None = None) -> cl.ClassTask | None:
    """The class-structured reduction of an experiment, or None when the task is not one.

    Class-structured: ``K0 = c I`` (orthogonal inputs of equal norm) and every training target
    row equal to its class's target vector (checked to ``CLASS_TOL``).
    """
    d, s = exp.data, exp.spec
    K0 = input_kernel(d.X_train)
    c = float(np.mean(np.diag(K0)))
    if c <= 0 or np.max(np.abs(K0 - c * np.eye(len(K0)))) > CLASS_TOL * c:
        return None
    labels = np.asarray(d.labels_train)
    classes = np.unique(labels)
    if not np.array_equal(classes, np.arange(classes.size)):
        return None
    targets = np.stack([d.Y_train[labels == k][0] for k in classes])
    if np.max(np.abs(d.Y_train - targets[labels])) > CLASS_TOL * max(1.0, np.abs(targets).max()):
        return None
    P = len(labels)
    rho = np.bincount(labels) / P
    return cl.ClassTask(rho, targets, P, s.sigma_a2 * P, s.layer_variances[0] * c,
                        exp.T, activation or s.activation)


def _gp(exp):
    d, s = exp.data, exp.spec
    res = lazy_gp_prediction(d.X_train, d.Y_train, d.X_test, d.Y_test, s.activation,
                             s.layer_variances, s.sigma_a2, exp.T_eff)
    return res.prediction.mean, res.gen_error


def _with_test(out: dict, exp, mean, var) -> dict:
    """Add ``f_test_*`` and the generalization errors (mean-field and GP) when there is a test set."""
    d = exp.data
    gp_mean, gp_err = _gp(exp)
    err = generalization_error(mean, var, d.Y_test)
    out.update({"f_test_mean": mean, "f_test_var": var, "f_test_mean_gp": gp_mean,
                "gen_error": err._asdict(), "gen_error_gp": gp_err._asdict()})
    return out


def _no_outliers(k: int) -> dict:
    return {"num_outliers": 0, "outlier_mass": np.zeros(k)}


# ----------------------------------------------------------------------------- linear


def linear_predictions(exp) -> dict:
    """Deep linear network (THEORY.md 1.3, exact at any T0; module ``linear``)."""
    D, s = _Data(exp), exp.spec
    invertible = np.linalg.cond(D.K0) < 1e12
    if D.T0 == 0.0 and not invertible:
        raise InputError("T = 0 needs an invertible input kernel (P <= N0, independent inputs); "
                         "use T > 0", key="network.temperature")
    sol = solve_linear(D.K0, exp.data.Y_train, s.layer_variances, s.sigma_a2, D.T0)
    large = (solve_linear(D.K0, exp.data.Y_train, s.layer_variances, s.sigma_a2, 0.0, large_P=True).U
             if invertible else None)
    out = {"regime": "nonlazy", "method": "linear-analog", "readout_second_moment": sol.U,
           "U_large_P": large, "kernel_train": sol.kernels, "residual": sol.residual,
           "codes": [], "note": "analog code: Gaussian readout N(0, U), no discrete codes",
           **_no_outliers(D.num_classes)}
    if not D.has_test:
        return out
    te = linear_test(sol, D.K0, D.k0, D.K0_test, s.layer_variances, s.sigma_a2, D.T0, D.N)
    out["kernel_test"] = te.test
    return _with_test(out, exp, te.mean, te.var)


# ----------------------------------------------------------------------------- general path


def general_predictions(exp) -> dict:
    """Single-neuron tilted measure by quadrature (THEORY.md 1.2; module ``meanfield``), P small."""
    D, s = _Data(exp), exp.spec
    act = get_activation(s.activation)
    C0 = s.layer_variances[0] * D.K0
    sol, scale = _general_solution(act, C0, exp.data.Y_train, s.sigma_a2, D.T0)
    out = {"regime": "nonlazy", "method": "single-neuron-quadrature",
           "readout_second_moment": sol.readout_second_moment, "readout_mean": sol.readout_mean,
           "kernel_train": np.stack([D.K0, sol.K_phi]), "residual": sol.residual, "codes": [],
           "note": "small-P general path: codes need the class-structured large-P reduction",
           "quadrature_scale": scale, **_no_outliers(D.num_classes)}
    if not D.has_test:
        return out
    te = mean_field_test(sol, act, D.K0, D.k0, np.diag(D.K0_test), s.layer_variances[0], s.sigma_a2,
                         D.T0, D.N)
    return _with_test(out, exp, te.mean, te.var)


def conditional_mode_predictions(exp) -> dict:
    """Bounded activation, depth 1, any task: preactivations at their mode given the readout
    (the paper's MNIST theory; module ``conditional_mode``)."""
    D, s = _Data(exp), exp.spec
    act = get_activation(s.activation)
    _check_conditional_mode_task(exp, D)
    sol = solve_conditional_mode(s.layer_variances[0] * D.K0, exp.data.Y_train, act.phi_np, s.sigma_a2, D.T0)
    if sol.residual > 1e-6:
        raise InputError(f"the conditional-mode equations did not converge (residual {sol.residual:.1e})",
                         key="network.activation")
    out = {"regime": "nonlazy", "method": "conditional-mode",
           "readout_second_moment": sol.readout_second_moment, "readout_mean": sol.readout_mean,
           "kernel_train": np.stack([D.K0, sol.K_phi]), "residual": sol.residual,
           "codes": _mode_records(sol, exp, act), "fields": sol.Lambda,
           "note": "preactivation fluctuations given the readout neglected (the paper's MNIST theory); "
                   "codes are the local maxima of q(a) with their Laplace masses",
           **_no_outliers(D.num_classes)}
    return _with_measure_test(out, exp, D, act, sol)


# the full measure for odd activations: its start, its seed and the residual it must reach under its own
# random numbers (common to every evaluation; the model steps end at its Monte Carlo floor: 4e-3 on the
# toy task at P = 40, 0.016-0.032 on tanh on the Fig. 6 task, where fresh random numbers at the same field
# give 0.2-0.4 and move each code pair's fraction by about 0.04: README "Theory", tanh)
FULL_MEASURE_START_ITERATIONS = 12
FULL_MEASURE_SEED = 0
FULL_MEASURE_RESIDUAL = 5e-2


def full_measure_predictions(exp) -> dict:
    """Odd bounded activation (tanh), depth 1, any task: the full single-neuron measure with the
    preactivations' fluctuations (module ``full_measure``), started from the conditional-mode field
    after ``FULL_MEASURE_START_ITERATIONS`` Newton steps, its codes searched from those modes, their
    mirror images and the sign directions; Monte Carlo throughout (float64), seeded
    (``FULL_MEASURE_SEED``)."""
    with jax.enable_x64(True):
        return _full_measure_predictions(exp)


def _full_measure_predictions(exp) -> dict:
    from widebayes.theory.nonlazy.conditional_mode import sign_directions
    from widebayes.theory.nonlazy.full_measure import measure_draws, solve_full_measure

    D, s = _Data(exp), exp.spec
    act = get_activation(s.activation)
    _check_conditional_mode_task(exp, D)
    C0 = s.layer_variances[0] * D.K0
    Y, labels = exp.data.Y_train, np.asarray(exp.data.labels_train)
    thr = act.code_threshold(s.layer_variances[0])
    start = solve_conditional_mode(C0, Y, act.phi_np, s.sigma_a2, D.T0,
                                   max_iter=FULL_MEASURE_START_ITERATIONS)
    starts = np.concatenate([start.modes, -start.modes, sign_directions(Y.shape[1], 2.0)])
    key = jax.random.key(FULL_MEASURE_SEED)
    try:
        state = solve_full_measure(key, C0, Y, s.sigma_a2, D.T0, act.phi, act.phi_np, start.Lambda, starts,
                                   labels, thr, odd=act.odd)
    except ValueError as err:  # no mode with a Laplace mass at the start: the method does not apply
        raise InputError(f"the full single-neuron measure: {err}", key="network.activation") from None
    residual = float(np.max(np.abs(state.residual)))
    if not residual < FULL_MEASURE_RESIDUAL:
        raise InputError(f"the full single-neuron measure did not converge (residual {residual:.1e}, "
                         f"accepted below {FULL_MEASURE_RESIDUAL:g})", key="network.activation")
    draws = measure_draws(jax.random.fold_in(key, 1), C0, state, s.sigma_a2, act.phi, act.phi_np)
    second = (draws.a * draws.w[:, None]).T @ draws.a
    means = class_means(state.modes.mean_phi, labels)
    order = np.argsort(-state.fractions)  # every mode of a solved state has a mass (one_per_code)
    codes = [{"code": code_of_means(means[k], thr), "fraction": float(state.fractions[k]),
              "readout": state.modes.readout[k], "class_means": means[k]} for k in order]
    out = {"regime": "nonlazy", "method": "full-measure",
           "readout_second_moment": 0.5 * (second + second.T), "readout_mean": draws.w @ draws.a,
           "kernel_train": np.stack([D.K0, state.kernel]), "residual": residual, "codes": codes,
           "fields": state.Lambda,
           "note": "the full single-neuron measure, preactivation fluctuations given the readout included "
                   "(Monte Carlo: thermodynamic integration, Laplace volumes in a, Gibbs chains per code); "
                   "codes are the local maxima of q(a) with their masses",
           **_no_outliers(D.num_classes)}
    return _with_measure_test(out, exp, D, act, draws)


def _with_measure_test(out: dict, exp, D, act, measure) -> dict:
    """Test-input predictions of a single-neuron measure given by weighted points ``(a, z, phi, w)``
    (the conditional-mode quadrature or the full measure's Gibbs draws; ``conditional_mode_test``)."""
    if not D.has_test:
        return out
    s = exp.spec
    te = conditional_mode_test(measure, act, D.K0, D.k0, np.diag(D.K0_test), s.layer_variances[0], D.T0, D.N)
    if len(exp.data.X_test) <= MAX_TEST_KERNEL:
        out["kernel_train_test"] = te.k_phi
    return _with_test(out, exp, te.mean, te.var)


def _check_conditional_mode_task(exp, D):
    """What the theories of bounded activations on any task need: few outputs, an invertible kernel."""
    if exp.data.Y_train.shape[1] > MAX_OUTPUTS:
        raise InputError(f"the conditional-mode theory covers up to {MAX_OUTPUTS} outputs (its code search "
                         f"starts from 3^m - 1 directions), got m = {exp.data.Y_train.shape[1]}", key="task")
    if np.linalg.cond(D.K0) > 1e10:
        raise InputError("the conditional-mode theory needs an invertible input kernel (P <= N0, "
                         "independent inputs)", key="task")


def _mode_records(sol, exp, act) -> list:
    """One record per local maximum of q(a): its code (classes whose mean activation at the mode
    exceeds the threshold), Laplace mass, readout vector and class means of ``phi(z*)``."""
    thr = act.code_threshold(exp.spec.layer_variances[0])
    means = class_means(sol.mode_phi, exp.data.labels_train)  # (mode, class)
    order = np.argsort(-sol.mode_weights)
    return [{"code": code_of_means(means[i], thr), "fraction": float(sol.mode_weights[i]),
             "readout": sol.modes[i], "class_means": means[i]} for i in order]


def _general_solution(act, C0, Y, sigma_a2, T0):
    """Solve the single-neuron problem by quadrature; refuse condensed or unconverged cases.

    Bounded phi: Gauss-Hermite.  ReLU (``act.is_relu``): exact radial integral
    (``meanfield.radial_measure``).  Other relu-like phi (softplus): Gauss-Hermite on a widened
    grid, accepted only when a finer, wider grid agrees; the condensation margin is ReLU's, which
    a relu-like phi approaches along every ray (THEORY.md 1.5).
    """
    if act.bounded:
        return solve_mean_field(C0, Y, act.phi_np, sigma_a2, T0), 1.0
    if act.is_relu:
        sol = solve_mean_field(C0, Y, act.phi_np, sigma_a2, T0, radial=True)
        _refuse_condensed(act, relu_margin(sol.Lambda, C0, sigma_a2), sol.residual)
        return sol, 1.0
    sol, scale = solve_mean_field(C0, Y, act.phi_np, sigma_a2, T0, scale=2.0), 2.0
    for _ in range(4):
        lam = relu_margin(sol.Lambda, C0, sigma_a2)
        _refuse_condensed(act, lam, sol.residual)
        scale = max(scale, np.sqrt(4.0 / (1.0 - lam)))
        finer = solve_mean_field(C0, Y, act.phi_np, sigma_a2, T0, scale=1.3 * scale,
                                 num_nodes=min(sol.num_nodes + 10, 60))
        sol = solve_mean_field(C0, Y, act.phi_np, sigma_a2, T0, scale=scale)
        diff = np.max(np.abs(finer.readout_second_moment - sol.readout_second_moment))
        if diff <= 1e-3 * np.max(np.abs(sol.readout_second_moment)):
            return sol, scale
    raise InputError(f"{act.name}: the single-neuron quadrature does not converge (close to "
                     "condensation); not covered", key="network.activation")


def _refuse_condensed(act, lam: float, residual: float):
    if lam >= 1.0 - 1e-6 or residual > 1e-8:
        raise InputError(f"the {act.name} network condenses (lambda* = {lam:.3f}, THEORY.md 1.5: "
                         "sparse outliers); the small-P general path covers only the bulk phase",
                         key="network.activation")


# ----------------------------------------------------------------------------- sigmoid


def _mixture(scheme, task) -> cp.CodeMixture:
    mx = scheme.maxima
    return cp.CodeMixture(np.asarray(scheme.weights), np.stack([m.a for m in mx]),
                          np.stack([cl.readout_covariance(m, scheme.L, task, scheme.finite_P) for m in mx]),
                          np.stack([m.theta for m in mx]), np.stack([m.s for m in mx]),
                          np.stack([m.s_var for m in mx]))


def _threshold(task) -> float:
    return get_activation(task.activation).code_threshold(task.variance)


def _code_records(finite, infinite, task) -> list:
    """One record per code: finite-P fraction/readout (the experiment's P) and the P = inf ones."""
    thr = _threshold(task)
    inf = {code_of_means(m.s, thr): (w, m) for w, m in zip(infinite.weights, infinite.maxima)}
    records = []
    for w, m in sorted(zip(finite.weights, finite.maxima), key=lambda x: -x[0]):
        code = code_of_means(m.s, thr)
        if w < MIN_FRACTION and code not in inf:
            continue
        w_inf, m_inf = inf.get(code, (0.0, None))
        records.append({"code": code, "fraction": float(w), "readout": m.a,
                        "fraction_large_P": float(w_inf),
                        "readout_large_P": None if m_inf is None else m_inf.a,
                        "readout_cov": cl.readout_covariance(m, finite.L, task, True),
                        "F": m.F, **_class_laws(m, task)})
    return records


def _class_laws(m, task) -> dict:
    """Per class, the tilted law ``P(z | a_gamma)`` (THEORY.md 1.4b): its field and moments."""
    z = tilted_preactivation(task.activation, m.theta, task.variance)
    return {"class_means": m.s, "class_var": m.s_var, "class_fields": m.theta,
            "preactivation_mean": z.mean, "preactivation_var": z.var}


def _scheme_records(schemes, task) -> list:
    thr = _threshold(task)
    return [{"codes": [code_of_means(m.s, thr) for m in sc.maxima], "fractions": sc.weights,
             "free_energy": sc.free_energy, "metastable": sc.metastable, "preferred": i == 0}
            for i, sc in enumerate(schemes)]


def redundant_predictions(exp, task: cl.ClassTask, infinite) -> dict:
    """Sigmoidal network on a class-structured task: redundant codes (THEORY.md 1.4b) at the
    experiment's P, from the P = inf equilibrium ``infinite`` (``sigmoid.solve_redundant``)."""
    D, s = _Data(exp), exp.spec
    labels = exp.data.labels_train
    finite = solve_redundant_finite_P(task, infinite.L)
    mix = _mixture(finite, task)
    out = {"regime": "nonlazy", "method": "redundant-codes",
           "readout_second_moment": cp.mixture_second_moment(mix),
           "kernel_train": np.stack([D.K0, cp.train_kernel(mix, labels)]),
           "residual": max(infinite.residual, finite.residual),
           "codes": _code_records(finite, infinite, task),
           "schemes": _scheme_records(code_schemes(task, infinite), task),
           "fields": finite.L, "fields_large_P": infinite.L,
           "note": "fraction/readout at the experiment's P (Laplace); *_large_P at P = inf; "
                   "schemes: lowest free energy first (the one the theory prefers)",
           **_no_outliers(D.num_classes)}
    if not D.has_test:
        return out
    te = cp.class_test(mix, task, labels, D.K0, D.k0, np.diag(D.K0_test), s.layer_variances[0], D.N)
    if len(exp.data.X_test) <= MAX_TEST_KERNEL:
        out["kernel_test"] = cp.class_test_kernel(mix, task, labels, D.K0, D.k0, D.K0_test,
                                                  s.layer_variances[0])
    return _with_test(out, exp, te.mean, te.var)


# ----------------------------------------------------------------------------- relu


def sparse_predictions(exp, task: cl.ClassTask) -> dict:
    """ReLU network on a class-structured task: bulk plus outliers (THEORY.md 1.5b)."""
    D, s = _Data(exp), exp.spec
    labels = exp.data.labels_train
    sol = solve_sparse(task)
    tc = critical_temperatures(task)
    b = sol.bulk
    mix = cp.CodeMixture(np.ones(1), b.a[None, :], (task.beta_a / task.num_train) * np.eye(len(b.a))[None],
                         b.theta[None, :], b.s[None, :], b.s_var[None, :])
    outl = cp.Outliers(sol.outlier_mass, sol.outlier_direction, sol.kernel_mass)
    thr = _threshold(task)
    k = len(task.rho)
    codes = [{"code": code_of_means(b.s, thr), "kind": "bulk", "fraction": 1.0, "readout": b.a,
              **_class_laws(b, task)}]
    for c in np.flatnonzero(sol.condensed):
        codes.append({"code": "".join("1" if j == c else "0" for j in range(k)), "kind": "outlier",
                      "fraction": 1.0 / D.N, "outlier_mass": sol.outlier_mass[c],
                      "readout": np.sqrt(D.N * sol.outlier_mass[c]) * sol.outlier_direction[c],
                      "readout_direction": sol.outlier_direction[c]})
    out = {"regime": "nonlazy", "method": "sparse-codes",
           "readout_second_moment": cp.mixture_second_moment(mix, outl),
           "kernel_train": np.stack([D.K0, cp.train_kernel(mix, labels, outl)]),
           "residual": sol.residual, "codes": codes, "fields": sol.L,
           "num_outliers": int(sol.condensed.sum()), "outlier_mass": sol.outlier_mass,
           "outlier_kernel_mass": sol.kernel_mass, "outlier_direction": sol.outlier_direction,
           "critical_temperature": tc.T_c, "margin": sol.margin, "note": OUTLIER_NOTE}
    if not D.has_test:
        return out
    te = cp.class_test(mix, task, labels, D.K0, D.k0, np.diag(D.K0_test), s.layer_variances[0], D.N,
                       outl, sol.L)
    if len(exp.data.X_test) <= MAX_TEST_KERNEL:
        out["kernel_test"] = cp.class_test_kernel(mix, task, labels, D.K0, D.k0, D.K0_test,
                                                  s.layer_variances[0], outl)
    return _with_test(out, exp, te.mean, te.var)


# ----------------------------------------------------------------------------- deep


def _deep_layer(layer: int, result, K, sol, task, feature: bool) -> dict:
    """One hidden layer of the deep theory as a JSON record."""
    codes = []
    for c in result.codes:
        if c["fraction"] < MIN_FRACTION:
            continue
        rec = {"code": c["code"], "fraction": float(c["fraction"]), "class_means": c["class_means"]}
        if "preactivation_mean" in c:
            rec["preactivation_mean"] = c["preactivation_mean"]
        if feature:  # the readout of a code: a = sigma_a^2 Lambda^T phi = beta_a L^T (rho * s)
            rec["readout"] = task.beta_a * (task.rho * c["class_means"]) @ sol.L
        codes.append(rec)
    return {"layer": layer, "codes": codes, "kernel_train": K, "method": result.method,
            "num_modes": result.num_peaks, "kernel_within_class_variance": result.kernel.diag,
            "kernel_class_block": result.kernel.block, **symmetry(result, feature)}


def deep_predictions(exp, task: cl.ClassTask) -> dict:
    """Bounded activation, depth 2 or 3 (or depth 1 without a P = inf equilibrium), class-structured task:
    per-layer codes and kernels of the deep mean-field theory (module ``deep``) at the experiment's
    P."""
    D, s = _Data(exp), exp.spec
    deep = DeepTask(task, np.asarray(s.layer_variances, dtype=np.float64))
    if s.depth > MAX_DEPTH:
        raise InputError(f"non-lazy theory for {s.activation} at depth {s.depth}: the deep theory closes "
                         f"up to depth {MAX_DEPTH} (deeper networks are not checked; theory/nonlazy/deep.py)",
                         key="network.depth")
    try:
        sol = solve_deep(deep)
    except RuntimeError as err:
        raise InputError(f"the deep {s.activation} mean-field equations did not converge: {err}",
                         key="network.activation") from None
    if sol.residual > ACCEPTED_RESIDUAL:
        raise InputError(f"the deep {s.activation} mean-field equations did not converge (residual "
                         f"{sol.residual:.1e})", key="network.activation")
    labels = exp.data.labels_train
    kernels = [dense(layer.kernel, labels) for layer in sol.layers]
    layers = [_deep_layer(i, r, K, sol, task, i == s.depth)
              for i, (r, K) in enumerate(zip(sol.layers, kernels), start=1)]
    out = {"regime": "nonlazy", "method": "deep-codes",
           "readout_second_moment": sol.readout_second_moment,
           "kernel_train": np.stack([D.K0] + kernels), "residual": sol.residual,
           "codes": layers[-1]["codes"], "layers": layers, "fields": sol.L,
           "output_train_class": sol.output,
           "note": "deep mean-field theory at the experiment's P (N -> inf); codes of a layer are the "
                   "modes of its single-neuron preactivation measure (layer 1: orthants of its "
                   "class-mean measure); only the feature layer's codes are pinned by the readout; "
                   "no test-input predictions",
           **_no_outliers(D.num_classes)}
    return out


def _layers(out: dict, depth: int) -> list:
    """``layers`` for a one-layer or linear theory: the stacked kernels, the feature layer's codes
    (none below it: analog codes of linear networks have no discrete codes)."""
    K = np.asarray(out["kernel_train"])
    codes = out.get("codes") or []
    occupied = sum(1 for c in codes if c["fraction"] > MIN_FRACTION)
    return [{"layer": i, "codes": codes if i == depth else [], "kernel_train": K[i],
             "multimodal": bool(i == depth and occupied > 1),
             "breaks_permutation_symmetry": bool(i == depth and occupied > 1)}
            for i in range(1, depth + 1)]


# ----------------------------------------------------------------------------- dispatch


def nonlazy_predictions(exp) -> dict:
    """Mean-field predictions of a non-lazy (gamma = 1) experiment (module docstring).

    Raises
    ------
    InputError
        For a case the theory here does not cover (says which).
    """
    s = exp.spec
    act = get_activation(s.activation)
    if s.gamma != 1.0:
        raise InputError("the non-lazy theory needs readout = 'nonlazy' (gamma = 1)", key="network.readout")
    if s.tied_weights and s.depth > 1:
        raise InputError("tied hidden weights (recurrent network) are not covered by the non-lazy "
                         "theory", key="network.tied_weights")
    out = _dispatch(exp, s, act)
    if "layers" not in out:
        out["layers"] = _layers(out, s.depth)
    return out


def _dispatch(exp, s, act) -> dict:
    if act.is_linear:
        return linear_predictions(exp)
    task = class_task(exp)
    if s.depth != 1:
        if not act.bounded:
            raise InputError(f"non-lazy theory for {s.activation} at depth {s.depth}: not covered (a "
                             "growing activation's lower layers condense into outliers whose masses the "
                             "single-neuron problem leaves free; see theory/nonlazy/deep.py); covered: "
                             f"bounded activations up to depth {MAX_DEPTH}, linear networks at any depth",
                             key="network.depth")
        if task is None:
            raise InputError(f"non-lazy theory for {s.activation} at depth {s.depth} needs a "
                             "class-structured task (orthogonal inputs of equal norm, one target per "
                             "class)", key="task")
        return deep_predictions(exp, task)
    try:
        if task is not None and act.bounded:
            try:
                infinite = solve_redundant(task)
            except RuntimeError:  # no P = inf equilibrium (the sigmoid at y- = -1/2): finite P only
                return deep_predictions(exp, task)
            return redundant_predictions(exp, task, infinite)
        if task is not None and act.is_relu:
            return sparse_predictions(exp, task)
    except RuntimeError as err:
        raise InputError(f"the {s.activation} code equations did not converge for this task: {err}",
                         key="network.activation") from None
    if act.growth == "quadratic":
        raise InputError(f"{s.activation} grows quadratically: no normalisable bulk in the non-lazy "
                         "limit (THEORY.md 1.5); not covered", key="network.activation")
    if not (act.bounded or act.growth == "relu-like"):
        raise InputError(f"the non-lazy theory covers bounded and relu-like activations; {s.activation} "
                         f"has growth class {act.growth!r}", key="network.activation")
    if len(exp.data.X_train) <= MAX_GENERAL_P:
        return general_predictions(exp)
    if act.bounded:
        return full_measure_predictions(exp) if act.odd else conditional_mode_predictions(exp)
    raise InputError(f"non-lazy {s.activation} theory: the task is not class-structured "
                     "(orthogonal inputs, one target per class) and P = "
                     f"{len(exp.data.X_train)} > {MAX_GENERAL_P} is too large for the general "
                     "single-neuron quadrature", key="task")
