"""The two phases of Langevin learning (perspective Fig. 4A-B; issue 17, item 2).

Langevin trajectories of a lazy network from several prior draws (the chains), recorded from step
0 (no burn-in) in the clock ``t = step_size / T_eff`` per step (the paper time under ``[sampler]
preconditioner = "isotropic"``, the perspective's Eq. 14), by the real driver
(:func:`widebayes.sampling.sample_experiment`).  A log-spaced record comes from several runs of
the same experiment and seed that differ only in ``thin`` and ``num_steps``: the driver draws the
noise of step ``s`` from ``fold_in(chain_key, s)`` and the chains start at the same prior draws, so
the runs are one trajectory recorded at different intervals (:func:`log_segments`; the agreement
of the runs where their times coincide is measured, ``TwoPhases.segment_mismatch``).

Measured, against :mod:`widebayes.theory.ntk` (infinite width):

* **first phase** (gradient-driven): the training error ``L_t = 1/2 sum (f_t(X) - y)^2``, mean
  over chains, against the linearised SDE's ``E[L_t]`` (NTK gradient flow from the prior plus the
  noise floor ``T (1 - exp(-2 Theta t))``), for ``t <= t_phase1 = PHASE1_END / rate``; and, without
  the spread of the initialisations, each chain against the same SDE started from its own first
  record ``f_1``: ``L_t = 1/2 |E (f_1 - y)|^2 + (m T / 2) tr(I - E^2)``, ``E = exp(-Theta (t - t_1))``
  (``loss_ntk_conditional``);
* **second phase** (diffusive): the squared distance of the chain-mean test predictor to the
  NNGP posterior mean ``m_inf = k^T (K + T I)^{-1} y`` (the N -> inf posterior; BPKR coincides
  with it there), ``D2(t) = |fbar_t - m_inf|^2 - sum_x s_x^2(t) / n_chains`` (``s_x^2`` the
  variance over chains: the estimate of ``|m_t - m_inf|^2`` without the chains' spread), against
  ``|m_t - m_inf|^2`` of the Volterra equation (2) of :mod:`widebayes.theory.ntk`; its relaxation
  time scale is fitted from ``t = PHASE2_START / rate`` on (``D2(t) ~ D2_theory(t / s)``, ``s`` =
  measured / predicted relaxation time), and the time at which D2 falls to 1/e of the theory's
  value at ``PHASE2_START / rate`` is read off both curves.  The chain mean over a finite set of
  prior draws carries their fluctuation through the first phase; ``dist2_controlled`` removes the
  part that each chain's own initial draw explains (the regression control variate of
  :func:`chain_mean_distance2` on :func:`initial_draw_residual`, of mean zero), and its relaxation
  time and amplitude-free fit are read off the same way.

The prior relaxation time of the weights is ``sigma^2 / T`` (``Experiment.tau_prior``); the
predictor's relaxation rate is set by all blocks together (``sum_b T M_b / sigma_b^2`` for a deep
linear network).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from widebayes.errors import InputError
from widebayes.theory import ntk as ntk_theory
from widebayes.theory.gp import gp_posterior

#: the first phase is compared with the NTK up to t = PHASE1_END / rate (rate = sum_b T M_b / sigma_b^2):
#: the kernel has decayed by O(rate t) there (O(sqrt(rate t)) for relu, theory/ntk.py)
PHASE1_END = 0.02
#: the relaxation to the posterior is measured from t = PHASE2_START / rate on
PHASE2_START = 0.1


class Trajectory(NamedTuple):
    """Langevin trajectories recorded at increasing times (the union of the segments' draws).

    Attributes
    ----------
    times : ndarray (n,)
        Clock of the dynamics, ``step * step_size / T_eff``.
    steps : ndarray (n,)
        Step index of each record (the state after that many steps).
    f_train : ndarray (chain, n, P, m)
    f_test : ndarray (chain, n, P_test, m)
    segment_mismatch : float
        Largest ``|f|`` difference between two segments at a step both recorded (0: one trajectory).
    """

    times: np.ndarray
    steps: np.ndarray
    f_train: np.ndarray
    f_test: np.ndarray
    segment_mismatch: float


class TwoPhases(NamedTuple):
    """Samples against the NTK and the Langevin-mean theory (see the module docstring).

    Times are in the clock of the dynamics (paper time for the isotropic preconditioner).
    """

    times: np.ndarray  # (n,)
    train_loss: np.ndarray  # (chain, n)
    loss_mean: np.ndarray  # (n,) over chains
    loss_se: np.ndarray  # (n,) standard error over chains
    loss_ntk: np.ndarray  # (n,) linearised SDE (first phase)
    loss_ntk_conditional: np.ndarray  # (chain, n) the same SDE from each chain's first record
    loss_langevin: np.ndarray  # (n,) 1/2 |m_t - y|^2 of the Langevin mean (both phases; no spread)
    dist2: np.ndarray  # (n,) D2(t) measured
    dist2_se: np.ndarray  # (n,) its standard error (jackknife over chains)
    dist2_theory: np.ndarray  # (n,) |m_t - m_inf|^2
    dist2_ntk: float  # |NTK predictor - m_inf|^2: the plateau between the phases
    theory_times: np.ndarray  # the theory's own grid
    theory_dist2: np.ndarray  # |m_t - m_inf|^2 on it
    theory_loss_ntk: np.ndarray  # linearised E[L_t] on it
    t_phase1: float  # PHASE1_END / relaxation rate
    relaxation_rate: float  # sum_b T M_b / sigma_b^2
    tau_prior: float  # sigma_1^2 / T (the hidden weights' prior relaxation time)
    phase1_z: float  # max |loss_mean - loss_ntk| / (loss_se + 0.05 loss_ntk) over t <= t_phase1
    phase1_rel: float  # max |loss_mean / loss_ntk - 1| over t <= t_phase1
    phase1_rel_conditional: float  # max |<L> / <L_conditional> - 1| over t_1 < t <= t_phase1
    relaxation_scale: float  # fitted s: measured / predicted time scale of D2
    relaxation_time_theory: float  # time at which D2_theory falls to 1/e of its value at PHASE2_START / rate
    relaxation_time_measured: float  # the same on the measured D2 (interpolated), NaN if not reached
    segment_mismatch: float
    ntk_eigenvalues: np.ndarray  # (P,)
    posterior_mean: np.ndarray  # (P_test, m) NNGP posterior mean at T
    posterior_var: np.ndarray  # (P_test,) its variance
    ntk_predictor: np.ndarray  # (P_test, m) the NTK interpolant Theta_xX Theta^{-1} y
    theory_test_mean: np.ndarray  # (n_grid, P_test, m) the Langevin mean m_t on theory_times
    relaxation_fit: tuple = (float("nan"), float("nan"))  # (A, s): D2(t) ~ A D2_theory(t / s)
    #: the same with the initial draws' control variate (chain_mean_distance2's ``control``)
    dist2_controlled: np.ndarray | None = None
    dist2_controlled_se: np.ndarray | None = None
    relaxation_time_controlled: float = float("nan")
    relaxation_fit_controlled: tuple = (float("nan"), float("nan"))


# --------------------------------------------------------------------------- the example


def example_config(T: float = 0.01, width: int = 512, num_chains: int = 16, dt: float = 0.02,
                   num_steps: int = 30000, seed: int = 1) -> dict:
    """The README's experiment (unresolved): a lazy erf-sigmoid network, N = ``width``, on normalised
    XOR (12 training, 256 test inputs, N0 = 20), ``sigma_w2 = sigma_a2 = 4``, temperature ``T``,
    isotropic Langevin with ``dt = step_size / T`` of paper time per step (NTK eigenvalues
    0.14-3.3: dt lam_max = 0.065 at dt = 0.02)."""
    return {"task": {"kind": "xor", "input_dim": 20, "noise": 1.0, "separation": 0.9, "normalize": True,
                     "num_train": 12, "num_test": 256, "seed": 0},
            "network": {"depth": 1, "width": width, "activation": "sigmoid", "readout": "lazy",
                        "sigma_w2": 4.0, "sigma_a2": 4.0, "temperature": T},
            "sampler": {"kind": "langevin", "preconditioner": "isotropic", "step_size": dt * T,
                        "num_steps": num_steps, "burn_in": 0, "thin": 1, "num_chains": num_chains,
                        "seed": seed}}


# --------------------------------------------------------------------------- recording


def log_segments(num_steps: int, draws_per_segment: int = 100, factor: int = 10, first_thin: int = 1) -> list:
    """``[(thin, steps), ...]``: thin 1, 10, 100, ... (``factor``), each segment recording at most
    ``draws_per_segment`` draws, the last reaching ``num_steps``.

    Segment k records every ``thin_k`` steps up to ``min(num_steps, thin_k draws_per_segment)``
    (rounded down to a multiple of ``thin_k``), so the union of the records is roughly log-spaced.
    """
    if num_steps < 1 or draws_per_segment < 1 or factor < 2 or first_thin < 1:
        raise InputError("need num_steps, draws_per_segment, first_thin >= 1 and factor >= 2",
                         key="segments")
    segments, thin = [], first_thin
    while True:
        steps = min(num_steps, thin * draws_per_segment) // thin * thin
        if steps >= thin:
            segments.append((thin, steps))
        if thin * draws_per_segment >= num_steps:
            return segments
        thin *= factor


def segment_config(resolved: dict, thin: int, num_steps: int) -> dict:
    """A copy of ``resolved`` that records every ``thin`` steps from step 0 up to ``num_steps``."""
    smp = resolved["sampler"]
    if smp["kind"] != "langevin":
        raise InputError('the two-phase study follows the Langevin dynamics: kind = "langevin"',
                         key="sampler.kind")
    if smp["anneal"]:
        raise InputError("the two-phase study records from step 0 at the target temperature: no annealing",
                         key="sampler.anneal")
    cfg = copy.deepcopy(resolved)
    cfg["sampler"].update({"thin": int(thin), "num_steps": int(num_steps), "burn_in": 0, "chunk_draws": 0})
    return cfg


def sample_segment(resolved: dict, folder=None) -> dict:
    """``f_train`` and ``f_test`` (chain, draw, ...) of one segment, sampled by
    :func:`widebayes.sampling.sample_experiment`; with ``folder`` cached there
    (:func:`widebayes.studies.notebook.cached_posterior`)."""
    if folder is not None:
        from widebayes.studies.notebook import cached_posterior

        post = cached_posterior(resolved, folder).posterior
    else:
        from widebayes.sampling import sample_experiment

        resolved = {**resolved, "sampler": {**resolved["sampler"], "progress": False}}
        post = sample_experiment(resolved).idata.posterior
    return {name: np.asarray(post[name].values, dtype=np.float64) for name in ("f_train", "f_test")
            if name in post}


def sample_trajectory(resolved: dict, segments, time_per_step: float, folder=None) -> Trajectory:
    """Sample every segment of ``segments`` (``[(thin, steps), ...]``) and merge their records.

    Where two segments record the same step the finer one is kept and their difference measured
    (``Trajectory.segment_mismatch``).  With ``folder`` each segment is cached in its own folder
    beside it, ``{folder}-thin{thin}``.
    """
    records = {}
    mismatch = 0.0
    for thin, steps in segments:
        sub = None if folder is None else f"{folder}-thin{thin}"
        seg = sample_segment(segment_config(resolved, thin, steps), sub)
        for d, step in enumerate(range(thin, steps + 1, thin)):
            here = {k: v[:, d] for k, v in seg.items()}
            if step in records:
                mismatch = max(mismatch, float(np.nanmax(np.abs(records[step]["f_train"] - here["f_train"]))))
            else:
                records[step] = here
    steps = np.array(sorted(records))
    f_train = np.stack([records[s]["f_train"] for s in steps], axis=1)
    if "f_test" not in records[steps[0]]:
        raise InputError("the two-phase study needs test inputs (num_test > 0)", key="task.num_test")
    f_test = np.stack([records[s]["f_test"] for s in steps], axis=1)
    return Trajectory(steps * time_per_step, steps, f_train, f_test, mismatch)


# --------------------------------------------------------------------------- analysis


def train_loss(f_train, Y) -> np.ndarray:
    """``L = 1/2 sum_{mu, r} (f - y)^2`` per chain and record: (chain, n)."""
    return 0.5 * np.sum((np.asarray(f_train) - np.asarray(Y)[None, None]) ** 2, axis=(-2, -1))


def chain_mean_distance2(f_test, target, control=None) -> tuple[np.ndarray, np.ndarray]:
    """``D2 = |fbar - target|^2 - sum_x s_x^2 / n`` over chains (an unbiased estimate of
    ``|E f - target|^2``) per record, and its jackknife standard error over chains.

    ``f_test`` (chain, n, P_test, m), ``target`` (P_test, m).  ``control`` (chain, P_test, m), a
    per-chain quantity of known mean zero (:func:`initial_draw_residual`): each record's chains are
    replaced by ``f - b g`` with ``b = <f - fbar, g - gbar> / |g - gbar|^2`` pooled over chains and
    inputs (fitted afresh in every jackknife subset), the regression control variate that removes
    from the chain mean the part the chains' own initial draws explain.
    """
    f = np.asarray(f_test, dtype=np.float64)
    g = None if control is None else np.asarray(control, dtype=np.float64)[:, None]   # (chain, 1, ...)
    n = f.shape[0]
    if n < 2:
        raise InputError("the distance to the posterior needs at least 2 chains", key="sampler.num_chains")

    def estimate(fc, gc):
        k = fc.shape[0]
        if gc is not None:
            dg = gc - gc.mean(axis=0)
            b = np.sum((fc - fc.mean(axis=0)) * dg, axis=(0, -2, -1)) / np.sum(dg**2, axis=(0, -2, -1))
            fc = fc - b[None, :, None, None] * gc
        mean = fc.mean(axis=0)
        spread = fc.var(axis=0, ddof=1).sum(axis=(-2, -1)) / k
        return np.sum((mean - target) ** 2, axis=(-2, -1)) - spread

    if n == 2:
        return estimate(f, g), np.full(f.shape[1], np.nan)
    full = estimate(f, g)
    leave = np.stack([estimate(np.delete(f, c, axis=0), None if g is None else np.delete(g, c, axis=0))
                      for c in range(n)])
    se = np.sqrt((n - 1) / n * np.sum((leave - leave.mean(axis=0)) ** 2, axis=0))
    return full, se


def initial_draw_residual(ntk, f_train0, f_test0) -> np.ndarray:
    """``g = f_test(0) - Theta_xX Theta_XX^-1 f_train(0)`` per chain: the part of a chain's initial
    function that the NTK phase leaves on the test inputs (gradient flow removes the rest with the
    training residual).  Its mean over prior draws is zero, so it is a control variate for the
    chain-mean predictor: ``f_train0`` (chain, P, m), ``f_test0`` (chain, P_test, m).  A record after
    the first steps serves as well: a linearised gradient step moves ``f_test`` by ``Theta_xX d``
    and ``f_train`` by ``Theta_XX d``, which leaves ``g`` unchanged, and the noise has mean zero."""
    A = np.linalg.solve(ntk.train, ntk.cross).T                                      # (P_test, P)
    return np.asarray(f_test0) - np.einsum("tp,cpm->ctm", A, np.asarray(f_train0))


def fit_time_scale(t, measured, se, theory_t, theory, scales=np.geomspace(0.25, 4.0, 801)) -> float:
    """The factor ``s`` minimising ``sum ((measured - theory(t / s)) / se)^2`` (theory interpolated
    in log t): the measured relaxation is ``s`` times slower than the theory's."""
    fallback = np.nanmedian(se[se > 0]) if np.any(se > 0) else 1.0
    w = 1.0 / np.where(np.isfinite(se) & (se > 0), se, fallback) ** 2
    logt = np.log(theory_t[1:])
    cost = [np.sum(w * (measured - np.interp(np.log(t / s), logt, theory[1:])) ** 2) for s in scales]
    return float(scales[int(np.argmin(cost))])


def fit_amplitude_and_time_scale(t, measured, se, theory_t, theory,
                                 scales=np.geomspace(0.25, 4.0, 801)) -> tuple:
    """``(A, s)`` minimising ``sum ((measured - A theory(t / s)) / se)^2``: the time scale with the
    curve's amplitude free (A is linear: solved in closed form for every s).  A chain mean over a
    finite set of prior draws carries its draws' fluctuation through the first phase, which moves
    the whole curve up or down; with A fixed to 1 that shift reads as a faster or slower relaxation."""
    fallback = np.nanmedian(se[se > 0]) if np.any(se > 0) else 1.0
    w = 1.0 / np.where(np.isfinite(se) & (se > 0), se, fallback) ** 2
    logt = np.log(theory_t[1:])
    best = (np.inf, float("nan"), float("nan"))
    for s in scales:
        g = np.interp(np.log(t / s), logt, theory[1:])
        A = np.sum(w * g * measured) / np.sum(w * g * g)
        cost = np.sum(w * (measured - A * g) ** 2)
        if cost < best[0]:
            best = (cost, float(A), float(s))
    return best[1], best[2]


def crossing_time(t, values, level) -> float:
    """First time after which ``values`` stays below ``level`` (interpolated in log t); NaN if never."""
    above = np.nonzero(values >= level)[0]
    if above.size == 0:
        return float(t[0])
    i = above[-1]
    if i + 1 >= t.size:
        return float("nan")
    v0, v1 = values[i], values[i + 1]
    frac = (v0 - level) / (v0 - v1) if v0 != v1 else 0.0
    return float(np.exp(np.log(t[i]) + frac * (np.log(t[i + 1]) - np.log(t[i]))))


def conditional_ntk_loss(ntk, f_start, Y, T: float, dt) -> np.ndarray:
    """Linearised SDE from a known start: ``E[L] = 1/2 |E (f_start - y)|^2 + (m T / 2) tr(I - E^2)``,
    ``E = exp(-Theta dt)``, per chain: ``f_start`` (chain, P, m), ``dt`` (n,) -> (chain, n)."""
    lam, V = np.linalg.eigh(ntk.train)
    decay = np.exp(-lam[None, :] * np.asarray(dt)[:, None])                   # (n, P)
    r = np.einsum("ip,cir->cpr", V, np.asarray(f_start) - np.asarray(Y)[None])  # (chain, P, m)
    mean_part = 0.5 * np.einsum("np,cpr->cn", decay**2, r**2)
    return mean_part + 0.5 * Y.shape[1] * T * np.sum(1.0 - decay**2, axis=1)[None]


def analyse(traj: Trajectory, exp, points_per_decade: int = 150) -> TwoPhases:
    """Compare a recorded trajectory with the NTK (first phase) and the Langevin mean (both)."""
    args = ntk_theory.experiment_arguments(exp)
    X, Xt, T = args["X_train"], args["X_test"], args["T"]
    Y = np.asarray(exp.data.Y_train, dtype=np.float64)
    kw = {k: args[k] for k in ("activation", "sigma_w2", "sigma_a2", "block_scales")}
    ntk = ntk_theory.ntk_kernels(X, X_test=Xt, **kw)
    gp = gp_posterior(ntk.gp_train, ntk.gp_cross, ntk.gp_test_diag, Y, T)
    rate = sum(ntk_theory.decay_rates(kw["sigma_w2"], kw["sigma_a2"], T, kw["block_scales"]).values())
    t_max = max(float(traj.times[-1]), 10.0 / rate)
    mean = ntk_theory.langevin_mean(X, Y, T=T, t_max=t_max, X_test=Xt, points_per_decade=points_per_decade,
                                    t_min=min(float(traj.times[0]), 0.01 / np.linalg.eigvalsh(ntk.train)[-1]),
                                    **kw)
    lin_grid = ntk_theory.linearised_prediction(ntk, Y, T, mean.times)
    lin = ntk_theory.linearised_prediction(ntk, Y, T, traj.times)
    train_m, test_m = mean.at(traj.times)
    theory_d2_grid = np.sum((mean.test - gp.mean[None]) ** 2, axis=(1, 2))
    dist2_theory = np.sum((test_m - gp.mean[None]) ** 2, axis=(1, 2))

    loss = train_loss(traj.f_train, Y)
    n = loss.shape[0]
    loss_mean, loss_se = loss.mean(axis=0), loss.std(axis=0, ddof=1) / np.sqrt(n)
    d2, d2_se = chain_mean_distance2(traj.f_test, gp.mean)
    control = initial_draw_residual(ntk, traj.f_train[:, 0], traj.f_test[:, 0]) if n > 2 else None
    d2c, d2c_se = (None, None) if control is None else chain_mean_distance2(traj.f_test, gp.mean, control)

    t_phase1 = PHASE1_END / rate
    first = traj.times <= t_phase1
    z = np.abs(loss_mean - lin.train_loss) / (loss_se + 0.05 * lin.train_loss)
    rel = np.abs(loss_mean / lin.train_loss - 1.0)
    cond = conditional_ntk_loss(ntk, traj.f_train[:, 0], Y, T, traj.times - traj.times[0])
    rel_cond = np.abs(loss_mean / cond.mean(axis=0) - 1.0)
    ntk_pred = ntk.cross.T @ np.linalg.solve(ntk.train, Y)
    t_phase2 = PHASE2_START / rate
    second = traj.times >= t_phase2
    level = np.interp(np.log(t_phase2), np.log(mean.times[1:]), theory_d2_grid[1:]) / np.e
    tau_th = crossing_time(mean.times[1:], theory_d2_grid[1:], level)
    nan2 = (float("nan"), float("nan"))
    scale = tau_meas = tau_c = float("nan")
    joint = joint_c = nan2
    if second.sum() >= 2:  # else the record ends before the second phase
        ts = traj.times[second]
        scale = fit_time_scale(ts, d2[second], d2_se[second], mean.times, theory_d2_grid)
        joint = fit_amplitude_and_time_scale(ts, d2[second], d2_se[second], mean.times, theory_d2_grid)
        tau_meas = crossing_time(ts, d2[second], level)
        if d2c is not None:
            joint_c = fit_amplitude_and_time_scale(ts, d2c[second], d2c_se[second], mean.times,
                                                   theory_d2_grid)
            tau_c = crossing_time(ts, d2c[second], level)
    return TwoPhases(
        traj.times, loss, loss_mean, loss_se, lin.train_loss, cond,
        0.5 * np.sum((train_m - Y[None]) ** 2, axis=(1, 2)),
        d2, d2_se, dist2_theory, float(np.sum((ntk_pred - gp.mean) ** 2)), mean.times, theory_d2_grid,
        lin_grid.train_loss, float(t_phase1), float(rate), float(exp.tau_prior("W1")),
        float(np.max(z[first])) if first.any() else float("nan"),
        float(np.max(rel[first])) if first.any() else float("nan"),
        float(np.max(rel_cond[first][1:])) if first.sum() > 1 else float("nan"),
        scale, tau_th, tau_meas, traj.segment_mismatch, np.linalg.eigvalsh(ntk.train), gp.mean, gp.var,
        ntk_pred, mean.test, joint, d2c, d2c_se, tau_c, joint_c)


def run(resolved: dict, num_steps: int, draws_per_segment: int = 100, folder=None, segments=None,
        **analyse_kw) -> TwoPhases:
    """Sample the trajectories of ``resolved`` up to ``num_steps`` (log-spaced records,
    :func:`log_segments`, unless ``segments = [(thin, steps), ...]`` is given) and analyse them
    (:func:`analyse`); with ``folder`` the segments are cached beside it (:func:`sample_trajectory`)."""
    from widebayes.experiment import build_experiment

    exp = build_experiment(resolved)
    ntk_theory.experiment_arguments(exp)  # refuse what the NTK does not describe before sampling
    segments = log_segments(num_steps, draws_per_segment) if segments is None else segments
    traj = sample_trajectory(resolved, segments, ntk_theory.time_per_step(exp), folder)
    return analyse(traj, exp, **analyse_kw)


def summary(res: TwoPhases) -> dict:
    """The study's numbers, rounded for the README and the notebook."""
    lam = res.ntk_eigenvalues
    return {"ntk_eigenvalue_range": [round(float(lam[0]), 4), round(float(lam[-1]), 4)],
            "relaxation_rate": round(res.relaxation_rate, 5), "tau_prior": round(res.tau_prior, 3),
            "t_phase1": round(res.t_phase1, 3), "phase1_max_rel_dev": round(res.phase1_rel, 4),
            "phase1_max_z": round(res.phase1_z, 3),
            "phase1_max_rel_dev_conditional": round(res.phase1_rel_conditional, 4),
            "dist2_ntk_plateau": round(res.dist2_ntk, 4),
            "relaxation_time_theory": round(res.relaxation_time_theory, 3),
            "relaxation_time_measured": round(res.relaxation_time_measured, 3),
            "relaxation_scale_fit": round(res.relaxation_scale, 3),
            "relaxation_fit_amplitude_and_scale": [round(v, 3) for v in res.relaxation_fit],
            "relaxation_time_controlled": round(res.relaxation_time_controlled, 3),
            "relaxation_fit_controlled": [round(v, 3) for v in res.relaxation_fit_controlled],
            "dist2_first_record_controlled": None if res.dist2_controlled is None else
            [round(float(res.dist2_controlled[0]), 2), round(float(res.dist2_controlled_se[0]), 2)],
            "dist2_first_record": [round(float(res.dist2[0]), 2), round(float(res.dist2_se[0]), 2),
                                   round(float(res.dist2_theory[0]), 2)],
            "segment_mismatch": float(f"{res.segment_mismatch:.3g}")}


def figure(res: TwoPhases, traj: Trajectory, test_index: int = 0):
    """The two phases (perspective Fig. 4B): (A) training error against time, chains and their
    mean, the NTK's linearised SDE; (B) the chain-mean test predictor's squared distance to the
    NNGP posterior mean, against the Langevin mean theory and the NTK plateau; (C) one test
    point's predictor in every chain, the Langevin mean and the posterior mean +- sd.  Log time
    axis; dotted: ``t_phase1``, dashed: ``sigma^2 / T`` of the hidden weights."""
    from widebayes.plots import new_figure

    fig = new_figure(13.5, 3.6)
    axes = fig.subplots(1, 3)
    t, tt = res.times, res.theory_times[1:]

    def marks(ax):
        ax.axvline(res.t_phase1, color="0.5", ls=":", lw=1)
        ax.axvline(res.tau_prior, color="0.3", ls="--", lw=1, label=r"$\sigma^2/T$")
        ax.set_xscale("log")
        ax.set_xlabel("paper time t")

    ax = axes[0]
    ax.plot(t, res.train_loss.T, color="C0", alpha=0.15, lw=0.7)
    ax.errorbar(t, res.loss_mean, res.loss_se, color="C0", lw=1.2, label="Langevin, chain mean")
    ax.plot(tt, res.theory_loss_ntk[1:], color="C3", lw=1.2, label="NTK (linearised SDE)")
    ax.set_yscale("log")
    ax.set_ylabel("training error L")
    marks(ax)
    ax.legend(fontsize=7)
    ax.set_title("(A) first phase: gradient-driven", fontsize=9)

    ax = axes[1]
    ax.errorbar(t, res.dist2, res.dist2_se, color="C0", lw=1.0, label="chains")
    ax.plot(tt, res.theory_dist2[1:], color="C3", lw=1.2, label="Langevin mean (Volterra)")
    ax.axhline(res.dist2_ntk, color="C2", ls="-.", lw=1, label="NTK predictor")
    ax.set_ylabel(r"$|\bar f_t - m_\infty|^2$ (test)")
    marks(ax)
    ax.legend(fontsize=7)
    fitted = f"time scale x{res.relaxation_scale:.2f} of theory" if np.isfinite(res.relaxation_scale) \
        else "record ends before it"
    ax.set_title(f"(B) relaxation to the posterior: {fitted}", fontsize=9)

    ax = axes[2]
    ax.plot(t, traj.f_test[:, :, test_index, 0].T, lw=0.7, alpha=0.7)
    ax.plot(tt, res.theory_test_mean[1:, test_index, 0], color="k", lw=1.2, label="Langevin mean")
    mu, sd = res.posterior_mean[test_index, 0], np.sqrt(res.posterior_var[test_index])
    ax.axhspan(mu - sd, mu + sd, color="C3", alpha=0.15, label="posterior mean +- sd")
    ax.axhline(res.ntk_predictor[test_index, 0], color="C2", ls="-.", lw=1, label="NTK predictor")
    ax.set_ylabel(f"f_t(x_test[{test_index}])")
    marks(ax)
    ax.legend(fontsize=7)
    ax.set_title("(C) one test input, every chain", fontsize=9)
    return fig


def main(argv=None) -> None:
    """``python -m widebayes.studies.two_phases``: the README's numbers (JSON on stdout)."""
    import argparse
    import json
    import sys

    from widebayes.config import resolve
    from widebayes.io import json_value

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperature", type=float, default=0.01)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--dt", type=float, default=0.02, help="paper time per step")
    parser.add_argument("--draws-per-segment", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1, help="the sampler's seed (the chains' prior draws)")
    args = parser.parse_args(argv)
    cfg = example_config(args.temperature, args.width, args.chains, args.dt, args.steps, args.seed)
    try:
        res = run(resolve(cfg), args.steps, args.draws_per_segment)
    except InputError as err:  # one line, exit status 2, as the widebayes command
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(json_value(summary(res)), indent=1))


if __name__ == "__main__":
    main()
