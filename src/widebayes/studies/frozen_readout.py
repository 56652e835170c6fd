"""Frozen-readout experiment: does performance survive representational drift without the readout?

Perspective paper, "Representational Drift"; THEORY.md 6.3 and 6.4 item 13.  The same
experiment is sampled twice from the same seed: once with plain Langevin dynamics, once with
``[sampler] freeze_readout_at`` set to the step of the freezing time ``t0``; from then on the
readout ``a`` is held at ``a(t0)`` while the hidden weights keep their Langevin dynamics.  The
driver draws the noise of step ``s`` from ``fold_in(chain_key, s)``, so both runs share every
step before ``t0`` exactly and their draws up to ``t0`` are identical.

Measured along both runs, per chain and stored draw:

* the test error (classification error of the sign of ``f`` for binary targets, else the MSE);
* the drift measures of the feature-layer activations on the training inputs (``phi_L``):
  ``rho_u``, ``rho_v`` (overlaps with the top singular vectors at ``t0``) and ``rho_{u,Y}``, with
  the random-vector baselines (:mod:`widebayes.diagnostics.drift`).

Time after freezing is reported in the paper's Langevin units (one step is
``Experiment.paper_time_per_step("W1") = step_size * M / T_eff``, ``M`` the hidden weights'
preconditioner) and in units of the prior relaxation time ``tau_prior = sigma^2 / T_eff``.

The draw with index ``d`` is the state after step ``burn + (d + 1) * thin - 1`` (``burn`` the
burn-in the driver actually runs, :func:`widebayes.inference.plan_chunks`).  Freezing at draw
``d0`` sets ``freeze_readout_at = burn + (d0 + 1) * thin``: draws ``0 .. d0`` agree in both runs
and draw ``d0`` is the state at ``t0``.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np

from widebayes.config import num_draws
from widebayes.diagnostics import drift
from widebayes.errors import InputError

MODES = ("langevin", "prior")


class FrozenReadout(NamedTuple):
    """Both runs measured against the freezing time ``t0`` (lags ``0 .. num_lags - 1`` draws)."""

    tau: np.ndarray  # (lag,) paper time since t0
    tau_over_prior: np.ndarray  # (lag,) the same in units of tau_prior
    tau_prior: float  # sigma^2 / T_eff, paper units
    err_pre: np.ndarray  # (chain, draw) full-run test error before t0 (stationary band)
    err_full: np.ndarray  # (chain, lag) from t0 on
    err_frozen: np.ndarray  # (chain, lag)
    rho_u_full: np.ndarray  # (lag,) <|u(t0 + tau).u(t0)|>_chains
    rho_v_full: np.ndarray  # (lag,)
    rho_uY_full: np.ndarray  # (lag,) <|u(t0 + tau).Y|>_chains / |Y|
    rho_u_frozen: np.ndarray  # (lag,)
    rho_v_frozen: np.ndarray  # (lag,)
    rho_uY_frozen: np.ndarray  # (lag,)
    baseline_u: float  # E|u.u'| for random unit vectors in R^P
    baseline_v: float  # ... in R^N
    shared_draws_equal: bool  # the draws up to t0 agree between the runs
    a_frozen: np.ndarray | None = None  # (chain, N, m) the readout held from t0 on


# --------------------------------------------------------------------------- configuration


def burn_in_steps(sampler_cfg: dict) -> int:
    """Steps the driver runs before the first draw (leftover steps join the burn-in)."""
    return sampler_cfg["num_steps"] - num_draws(sampler_cfg) * sampler_cfg["thin"]


def freeze_step(sampler_cfg: dict, freeze_draw: int) -> int:
    """``freeze_readout_at`` that holds ``a`` fixed right after stored draw ``freeze_draw``."""
    draws = num_draws(sampler_cfg)
    if not 0 <= freeze_draw < draws - 1:
        raise InputError(f"must lie in [0, {draws - 1}) for {draws} draws, got {freeze_draw}",
                         key="freeze_draw")
    return burn_in_steps(sampler_cfg) + (freeze_draw + 1) * sampler_cfg["thin"]


def frozen_config(resolved: dict, freeze_draw: int) -> dict:
    """A copy of ``resolved`` that freezes the readout after draw ``freeze_draw``."""
    if resolved["sampler"]["kind"] != "langevin":
        raise InputError("the frozen-readout experiment needs kind = 'langevin'", key="sampler.kind")
    cfg = copy.deepcopy(resolved)
    cfg["sampler"]["freeze_readout_at"] = freeze_step(cfg["sampler"], freeze_draw)
    return cfg


# --------------------------------------------------------------------------- measures


def is_binary(Y) -> bool:
    """One output taking two values: a sign task."""
    Y = np.asarray(Y)
    return Y.ndim == 2 and Y.shape[1] == 1 and len(np.unique(Y)) == 2


def prediction_error(f, Y) -> np.ndarray:
    """Test error per draw of ``f (..., test, output)`` against targets ``Y (test, output)``.

    Binary targets (one output, two values): the fraction of test points on the wrong side of
    the midpoint of the two target values (``sign(f)`` vs the label for ``+-1`` targets).
    Otherwise the mean squared error per test point, summed over outputs.
    """
    f = np.asarray(f, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if is_binary(Y):
        lo, hi = np.unique(Y)
        mid = (lo + hi) / 2
        return np.mean((f[..., 0] > mid) != (Y[:, 0] > mid), axis=-1)
    return np.mean(np.sum((f - Y) ** 2, axis=-1), axis=-1)


def overlaps_from(X, ref: int) -> np.ndarray:
    """``|x(t).x(ref)|`` of unit vectors for ``t = ref, ref + 1, ...``.

    ``X (..., T, k, d)`` -> ``(..., T - ref, k)``.
    """
    X = np.asarray(X, dtype=np.float64)
    X = X / np.linalg.norm(X, axis=-1, keepdims=True)
    return np.abs(np.sum(X[..., ref:, :, :] * X[..., ref : ref + 1, :, :], axis=-1))


def drift_from(phi_L, Y, ref: int, center: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chain-averaged ``rho_u``, ``rho_v`` against draw ``ref`` and ``rho_{u,Y}`` from ``ref`` on.

    Parameters
    ----------
    phi_L : array_like, shape (chain, draw, N, P)
        Feature-layer activations on the training inputs (raw, uncentred).
    Y : array_like, shape (P,) or (P, m)
    ref : int
        Draw index of the reference time ``t0``.
    center : bool
        Remove each neuron's mean over the inputs first (the "DC" mode of ReLU-type units).

    Returns
    -------
    rho_u, rho_v, rho_uY : ndarray, each shape (draw - ref,)
    """
    sv = drift.singular_series(phi_L, k=1, center=center)  # u (chain, draw, 1, P), v (chain, draw, 1, N)
    rho_u = overlaps_from(sv.u, ref)[..., 0].mean(axis=0)
    rho_v = overlaps_from(sv.v, ref)[..., 0].mean(axis=0)
    align = np.stack([drift.label_alignment(u[ref:], Y, average=False)[:, 0] for u in sv.u])
    return rho_u, rho_v, align.mean(axis=0)


# --------------------------------------------------------------------------- experiment


def analyse(full, d_frozen: dict, freeze_draw: int, center: bool = False) -> FrozenReadout:
    """Compare a plain run with a frozen-readout run of the same experiment and seed.

    Parameters
    ----------
    full : SampleOutput
        The plain run (:func:`widebayes.sampling.sample_experiment`).
    d_frozen : dict
        Draws (chain, draw, ...) of the frozen run: at least ``a``, ``f_test``, ``phi_L``.
    freeze_draw : int
        Index of the stored draw at the freezing time ``t0``.
    center : bool
        Centre the activations before the SVD (:func:`drift_from`).
    """
    exp, data = full.experiment, full.experiment.data
    d_full = full.result.draws
    err_all = prediction_error(d_full["f_test"], data.Y_test)
    err_frz = prediction_error(d_frozen["f_test"], data.Y_test)
    shared = slice(0, freeze_draw + 1)
    equal = all(np.array_equal(np.asarray(d_full[k])[:, shared], np.asarray(d_frozen[k])[:, shared])
                for k in ("a", "f_test", "phi_L"))
    lags = np.arange(err_all.shape[1] - freeze_draw)
    tau = lags * exp.thin * exp.paper_time_per_step("W1")
    tau_p = exp.tau_prior("W1")
    P, N = data.X_train.shape[0], exp.spec.width
    full_rho = drift_from(d_full["phi_L"], data.Y_train, freeze_draw, center)
    frozen_rho = drift_from(d_frozen["phi_L"], data.Y_train, freeze_draw, center)
    return FrozenReadout(tau, tau / tau_p, tau_p, err_all[:, :freeze_draw + 1],
                         err_all[:, freeze_draw:], err_frz[:, freeze_draw:], *full_rho, *frozen_rho,
                         float(drift.random_baseline(P)), float(drift.random_baseline(N)), equal,
                         np.asarray(d_full["a"], dtype=np.float64)[:, freeze_draw])


def run_frozen_readout(resolved: dict, freeze_draw: int, mode: str = "langevin",
                       center: bool = False, progress: bool = False, out_dir=None) -> FrozenReadout:
    """Sample ``resolved`` plainly and with the readout frozen after draw ``freeze_draw``; compare.

    ``mode = "langevin"``: the frozen run is the sampler's ``freeze_readout_at`` (the hidden
    weights keep their full Langevin dynamics, likelihood included).  ``mode = "prior"``: from
    ``t0`` on the hidden weights follow the prior-only Ornstein-Uhlenbeck process, sampled
    exactly (THEORY 6.3, "Frozen readout"; any depth, tied weights too), see :func:`prior_only_draws`.
    ``resolved`` needs a test set (``[task] num_test > 0``) and ``kind = "langevin"``.  With
    ``out_dir`` the plain run is written there as ``posterior.nc`` (``widebayes compare`` reads it).
    """
    from widebayes.sampling import sample_experiment
    from widebayes.tasks import task_sizes

    if not task_sizes(resolved["task"]).num_test:
        raise InputError("the frozen-readout experiment needs a test set (num_test > 0)", key="task.num_test")
    if mode not in MODES:
        raise InputError(f"must be one of {list(MODES)}, not {mode!r}", key="mode")
    freeze_step(resolved["sampler"], freeze_draw)  # every input checked before any sampling
    if mode == "prior":
        check_prior_only(resolved)
    frozen_cfg = frozen_config(resolved, freeze_draw) if mode == "langevin" else None
    plain = copy.deepcopy(resolved)
    plain["sampler"]["freeze_readout_at"] = -1
    full = sample_experiment(plain, progress=progress, out_dir=out_dir)
    if mode == "langevin":
        frozen = sample_experiment(frozen_cfg, progress=progress)
        return analyse(full, frozen.result.draws, freeze_draw, center)
    return analyse(full, prior_only_draws(plain, freeze_draw, full.result.draws["a"].shape[1]),
                   freeze_draw, center)


# --------------------------------------------------------------------------- prior-only variant


def state_at_draw(resolved: dict, freeze_draw: int):
    """Parameters (chain, ...) of the run of ``resolved`` at stored draw ``freeze_draw``.

    The driver runs exactly the same steps, with the same keys, as :func:`sample_experiment`,
    stopped right after that draw; returns ``(experiment, params, draws)``.
    """
    import jax

    from widebayes.experiment import prepare_run
    from widebayes.inference import plan_chunks, run_chains, unwhiten

    run = prepare_run(resolved)
    cfg = resolved["sampler"]
    burn, thin = burn_in_steps(cfg), cfg["thin"]
    chunks = plan_chunks(burn + (freeze_draw + 1) * thin, burn, thin, freeze_draw + 1)
    final = {}
    result = run_chains(run.setup, run.carry, run.chain_keys, run.data, run.hyper, run.schedule, chunks,
                        on_chunk=lambda i, c, h, d: final.update(carry=c))
    theta = unwhiten(jax.device_get(final["carry"].state.position), jax.device_get(run.hyper["roots"]))
    return run.experiment, {k: np.asarray(v, dtype=np.float64) for k, v in theta.items()}, result.draws


def check_prior_only(resolved: dict) -> None:
    """The prior-only variant moves every hidden weight matrix itself: refuse reduced inputs (whose
    runs keep only W1's in-span part)."""
    if resolved["sampler"]["reduce_inputs"]:
        raise InputError("the prior-only frozen readout moves W1 itself, which a reduced run does not keep; "
                         "set it to false", key="sampler.reduce_inputs")


def prior_only_draws(resolved: dict, freeze_draw: int, num_draws: int, seed: int = 0) -> dict:
    """Draws of the frozen run in which the hidden weights follow the prior alone after ``t0`` (THEORY 6.3).

    From the state at draw ``freeze_draw`` (identical to the plain run's), the readout is held at
    ``a(t0)`` and every hidden weight matrix (``W1 .. WL``, or ``W1`` and the shared ``W`` of tied
    weights) follows its prior's ``dW = -(T/sigma_l^2) W dt + sqrt(2T) dB`` in paper time, sampled
    exactly at the stored-draw times (:func:`widebayes.diagnostics.drift.simulate_ou`; the paper
    time of a draw per block, :meth:`Experiment.paper_time_per_step`).  Returns ``f_test``,
    ``phi_L``, ``a`` as (chain, draw, ...) arrays over ``num_draws`` draws; draws up to
    ``freeze_draw`` are those of the driver.
    """
    import jax.numpy as jnp

    from widebayes.networks import param_prior_variances, weight_names
    from widebayes.observables import draw_observables, network_forward

    check_prior_only(resolved)
    exp, theta, before = state_at_draw(resolved, freeze_draw)
    variances = param_prior_variances(exp.spec)
    gen = np.random.default_rng([seed, freeze_draw])
    steps = np.arange(num_draws - freeze_draw)
    paths = {name: np.stack([drift.simulate_ou(gen, w, exp.T_eff, variances[name],
                                                exp.thin * exp.paper_time_per_step(name) * steps)
                             for w in theta[name]])
             for name in weight_names(exp.spec)}
    data = {"X_train": jnp.asarray(exp.data.X_train), "X_test": jnp.asarray(exp.data.X_test),
            "Y_train": jnp.asarray(exp.data.Y_train)}
    forward = network_forward(exp.spec)
    after = {k: [] for k in ("f_test", "phi_L", "a")}
    num_chains, num_after = theta["a"].shape[0], len(steps) - 1
    for c in range(num_chains):
        for d in range(1, num_after + 1):
            params = {name: jnp.asarray(W[c, d]) for name, W in paths.items()}
            draw, _ = draw_observables(forward, {**params, "a": jnp.asarray(theta["a"][c])}, data)
            for k in after:
                after[k].append(np.asarray(draw[k]))
    shape = (num_chains, num_after)
    return {k: np.concatenate([np.asarray(before[k], dtype=np.float64),
                               np.stack(after[k]).reshape(*shape, *after[k][0].shape)], axis=1)
            for k in after}


def summary(res: FrozenReadout, at=(0.0, 0.5, 1.0, 2.0)) -> list[dict]:
    """Chain-mean errors and overlaps at the draws nearest the given times (units of tau_prior)."""
    rows = []
    for t in at:
        i = int(np.argmin(np.abs(res.tau_over_prior - t)))
        rows.append({"tau_over_prior": float(res.tau_over_prior[i]),
                     "err_full": float(res.err_full[:, i].mean()),
                     "err_frozen": float(res.err_frozen[:, i].mean()),
                     "rho_u_full": float(res.rho_u_full[i]), "rho_v_full": float(res.rho_v_full[i]),
                     "rho_uY_full": float(res.rho_uY_full[i]),
                     "rho_u_frozen": float(res.rho_u_frozen[i]),
                     "rho_v_frozen": float(res.rho_v_frozen[i]),
                     "rho_uY_frozen": float(res.rho_uY_frozen[i])})
    return rows


# --------------------------------------------------------------------------- report


def report_data(res: FrozenReadout, mode: str, freeze_draw: int) -> dict:
    """Every number of the experiment for ``frozen_readout.json`` and the figure: chain means and
    the full run's stationary band (mean and standard deviation of its error over the draws up to
    ``t0``), the overlaps of both runs, and :func:`summary` at 0, 0.5, 1, 2 tau_prior."""
    band = res.err_pre.mean(axis=0)
    return {"mode": mode, "freeze_draw": freeze_draw, "tau_prior": res.tau_prior,
            "tau_over_prior": res.tau_over_prior, "err_full": res.err_full.mean(axis=0),
            "err_frozen": res.err_frozen.mean(axis=0), "err_band_mean": float(band.mean()),
            "err_band_sd": float(band.std()),
            **{k: getattr(res, k) for k in ("rho_u_full", "rho_v_full", "rho_uY_full", "rho_u_frozen",
                                            "rho_v_frozen", "rho_uY_frozen", "baseline_u", "baseline_v",
                                            "shared_draws_equal")},
            "summary": summary(res)}


def markdown(data: dict, figure: bool = True) -> str:
    """frozen_readout.md: what was run, and the table of :func:`summary` (and the figure's link)."""
    what = ("the hidden weights keep their full Langevin dynamics (likelihood included)" if data["mode"] ==
            "langevin" else "the hidden weights follow the prior-only Ornstein-Uhlenbeck process "
                            "(THEORY.md 6.3)")
    lines = ["# Frozen-readout experiment", "",
             f"The readout is held at its value at draw {data['freeze_draw']} (t0); after t0 {what}. "
             f"Time in units of the prior relaxation time tau_prior = sigma^2/T_eff = "
             f"{data['tau_prior']:.4g} "
             f"(paper units). Runs identical up to t0: {data['shared_draws_equal']}. Full run's error before "
             f"t0: {data['err_band_mean']:.4g} ± {data['err_band_sd']:.2g} (stationary band).", "",
             "| tau / tau_prior | error, full | error, frozen | rho_u full | rho_u frozen | rho_v full | "
             "rho_v frozen |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['tau_over_prior']:.3g} | {r['err_full']:.4g} | {r['err_frozen']:.4g} | "
              f"{r['rho_u_full']:.3f} | {r['rho_u_frozen']:.3f} | {r['rho_v_full']:.3f} | "
              f"{r['rho_v_frozen']:.3f} |" for r in data["summary"]]
    lines += ["", f"Random-vector baselines: rho_u {data['baseline_u']:.3f}, "
                  f"rho_v {data['baseline_v']:.3f}.", ""]
    lines += ["![frozen readout](frozen_readout.png)", ""] if figure else []
    return "\n".join(lines)


def write_frozen_report(res: FrozenReadout, folder, mode: str, freeze_draw: int):
    """Write ``folder/frozen_readout.{json,md,png}`` atomically; returns the markdown's path."""
    import json
    from pathlib import Path

    from widebayes import plots
    from widebayes.report import jsonable, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = report_data(res, mode, freeze_draw)
    plots.save_figure(plots.frozen_readout(data), folder / "frozen_readout.png")
    write_text(folder / "frozen_readout.json", json.dumps(jsonable(data), indent=1, allow_nan=False))
    write_text(folder / "frozen_readout.md", markdown(data))
    return folder / "frozen_readout.md"
