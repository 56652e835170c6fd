"""``widebayes bench --mixing``: effective samples per second of what the theory predicts.

For a sampler, speed is not steps per second but effective samples (ESS) per second of the
permutation-invariant observables the theory makes predictions for:

- ``train_loss``: ``L = 1/2 sum (y - f)^2`` on the training inputs;
- ``kernel_trace``: ``tr K_L / P`` of the feature-layer kernel ``K_L = phi phi^T / N``;
- ``task_projection``: ``tr(Y^T K_L Y) / P^2``, the kernel's learned, task-aligned part;
- ``test_mean``: the predictor on the test inputs (median ESS over test inputs and outputs; with
  the collapsed readout, its Rao-Blackwellised mean E[f | W]);
- ``code_fraction[c]``: the fraction of feature-layer neurons with code ``c`` (bounded non-lazy
  networks; the codes holding at least 5 % of the neurons).

Each sampler runs the real driver chunk (``make_chunk_fn``), compiled ahead of the timing
(``jit(...).lower(...).compile()``: the same executable the driver runs), after its burn-in or
warmup; the clock covers the recorded chunks only.  Samplers are interleaved (repeat r runs every
sampler with seed r before repeat r + 1) and the figures are medians over repeats.  ESS is ArviZ's
bulk ESS over chains and draws; ESS per gradient evaluation counts the sampler's gradient
evaluations per step (Langevin, MALA: 1; HMC: its leapfrog steps; replica exchange: K times the
base sampler's, plus K re-initialisations per swap attempt).  The bias of each sampler is its
mean minus that of a long reference run (an exact sampler, run ``reference_factor`` times longer),
in units of the combined Monte Carlo standard error.

Runs start at prior draws, so at N = P = 500 a short run measures the codes' relaxation from where
they nucleated; with ``equilibrate`` (``--equilibrate STEPS``) every run, the reference included,
starts where STEPS steps of the reference sampler took the chains, and the ESS is the stationary one.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from typing import NamedTuple

import jax
import numpy as np

CODE_FRACTION_MIN = 0.05  # code fractions tracked: codes of at least this share of the neurons
OBSERVABLES = ("train_loss", "kernel_trace", "task_projection", "test_mean")


def _toy(N: int, P: int, N0: int, y_minus: float = 0.5, num_test: int = 20) -> dict:
    return {"kind": "orthogonal", "num_train": P, "input_dim": N0 + num_test, "num_test": num_test,
            "class_ratios": [0.5, 0.25, 0.25], "y_plus": 1.0, "y_minus": y_minus, "seed": 0}


def reference_configs() -> dict:
    """The issue's reference configs: name -> (experiment without [sampler], {sampler name: overrides})."""
    sigmoid = {"depth": 1, "activation": "sigmoid", "readout": "nonlazy", "temperature": 0.01}
    deep_linear = {"depth": 2, "width": 100, "activation": "linear", "readout": "lazy", "temperature": 0.001}
    return {
        "demo, sigmoid N = P = 100": (
            {"task": _toy(100, 100, 120), "network": {**sigmoid, "width": 100}},
            {"langevin": {"step_size": 0.01},
             "collapsed langevin": {"readout": "collapsed", "step_size": 0.03},
             "collapsed mala": {"kind": "mala", "readout": "collapsed", "step_size": 0.05},
             "collapsed hmc": {"kind": "hmc", "readout": "collapsed", "step_size": 0.05,
                               "num_integration_steps": 5},
             "replica exchange": {"step_size": 0.01, "replica_exchange": {"num_replicas": 4, "T_max": 0.08,
                                                                          "swap_every": 10}},
             "langevin + neuron moves": {"step_size": 0.01, "neuron_moves": 10},
             "langevin + neuron sweeps": {"step_size": 0.01, "neuron_moves": 10, "neuron_sweep": 32}}),
        "sigmoid toy, N = P = 500": (
            {"task": _toy(500, 500, 520), "network": {**sigmoid, "width": 500}},
            {"langevin": {"step_size": 0.005},
             "collapsed langevin": {"readout": "collapsed", "step_size": 0.02},
             "collapsed mala": {"kind": "mala", "readout": "collapsed", "step_size": 0.03},
             "collapsed hmc": {"kind": "hmc", "readout": "collapsed", "step_size": 0.03,
                               "num_integration_steps": 5},
             "replica exchange": {"step_size": 0.005, "replica_exchange": {"num_replicas": 4, "T_max": 0.08,
                                                                           "swap_every": 10}},
             "langevin + neuron moves": {"step_size": 0.005, "neuron_moves": 10},
             "langevin + neuron sweeps": {"step_size": 0.005, "neuron_moves": 10, "neuron_sweep": 32}}),
        "sigmoid toy, y- = 0.1, N = P = 100": (
            {"task": _toy(100, 100, 120, y_minus=0.1), "network": {**sigmoid, "width": 100}},
            {"langevin": {"step_size": 0.01},
             "langevin + neuron moves": {"step_size": 0.01, "neuron_moves": 10}}),
        "deep linear lazy, L = 2, N = 100, P = 50": (
            {"task": {"kind": "orthogonal", "num_train": 50, "input_dim": 60, "num_test": 10,
                      "class_ratios": [0.5, 0.5], "y_plus": 1.0, "y_minus": 0.0, "seed": 0},
             "network": deep_linear},
            {"langevin": {"step_size": 5e-5},
             "collapsed langevin": {"readout": "collapsed", "step_size": 2e-4},
             "collapsed mala": {"kind": "mala", "readout": "collapsed", "step_size": 2e-4},
             "collapsed hmc": {"kind": "hmc", "readout": "collapsed", "step_size": 2e-4,
                               "num_integration_steps": 10}}),
    }


def sampler_config(base: dict, overrides: dict, num_steps: int, burn_in: int, thin: int, chains: int,
                   seed: int) -> dict:
    """A resolved experiment: ``base`` with the sampler ``overrides`` and the run's length."""
    from widebayes.config import resolve

    cfg = copy.deepcopy(base)
    cfg["sampler"] = {"num_steps": num_steps, "burn_in": burn_in, "thin": thin, "num_chains": chains,
                      "seed": seed, "progress": False, "chunk_draws": 0, **copy.deepcopy(overrides)}
    return resolve(cfg)


def gradients_per_step(cfg: dict) -> float:
    """Gradient evaluations of one step of the sampler of a resolved ``[sampler]`` table."""
    base = float(cfg["num_integration_steps"]) if cfg["kind"] == "hmc" else 1.0
    for key in ("neuron_moves", "sign_flips"):  # the sampler's state is rebuilt (one gradient) after each
        if cfg.get(key):
            base += 1.0 / cfg[key]
    replica = cfg["replica_exchange"]
    if not replica:
        return base
    from widebayes.config import replica_ratios

    K = len(replica_ratios(replica, 1.0)) if replica["temperatures"] else replica["num_replicas"]
    return K * base + K / replica["swap_every"]


# ---------------------------------------------------------------------------- the timed run
class TimedRun(NamedTuple):
    draws: dict  # (chain, draw, ...) of the recorded chunks, as ``keep`` left them
    seconds: float  # wall time of the recorded chunks, compiled beforehand
    steps: int  # steps per chain in the recorded chunks
    carry: object  # the chains' carry after the last step (ChainCarry)


def timed_run(resolved: dict, keep=None, start: dict | None = None) -> TimedRun:
    """Run an experiment through the driver's chunk, timing only the recorded chunks (BLAS on one
    thread, as ``sample_experiment`` runs it).  ``keep(out) -> dict`` reduces each chunk's draws
    as they arrive (outside the clock): the raw draws of a 4-chain N = P = 500 reference run
    (activations and kernels, 2 MB a draw) filled 24 GB and the run was killed.  ``start``: the
    chains' starting positions (whitened, (chain, ...) per block, as ``equilibrated_start`` returns
    them) in place of prior draws."""
    from widebayes.inference import blas_threads

    with blas_threads(1):
        return _timed_run(resolved, keep or (lambda out: out), start)


def _timed_run(resolved: dict, keep, start: dict | None) -> TimedRun:
    from widebayes.experiment import prepare_run, restart_at
    from widebayes.inference import make_chunk_fn, warmup

    run = prepare_run(resolved)
    carry, chunks = (run.carry if start is None else restart_at(run, start)), run.chunks
    if run.setup.sampler.warmup is not None:
        burn = sum(ch.num_steps for ch in chunks if ch.num_draws == 0)
        chunks = [ch for ch in chunks if ch.num_draws]
        carry = warmup(run.setup, carry, run.key_init, run.data, run.hyper, run.schedule.T_eff, burn)
    chunk_fn = make_chunk_fn(run.setup)
    compiled = {}
    for ch in chunks:
        shape = (ch.num_draws, ch.num_steps)
        if shape not in compiled:
            compiled[shape] = chunk_fn.lower(carry, run.chain_keys, run.data, run.hyper, run.schedule,
                                             ch.start, num_draws=ch.num_draws,
                                             num_steps=ch.num_steps).compile()
    draws, seconds, steps = [], 0.0, 0
    for ch in chunks:
        t0 = time.perf_counter()
        carry, out = compiled[(ch.num_draws, ch.num_steps)](carry, run.chain_keys, run.data, run.hyper,
                                                             run.schedule, ch.start)
        out = jax.device_get(out)
        if ch.num_draws:
            seconds += time.perf_counter() - t0
            steps += ch.num_steps
            draws.append(keep(out))
    series = {k: np.concatenate([d[k] for d in draws], axis=1) for k in draws[0]}
    return TimedRun(series, seconds, steps, carry)


# ---------------------------------------------------------------------------- a stationary start
def equilibrated_start(base: dict, overrides: dict, num_steps: int, chains: int, seed: int = 1000) -> dict:
    """Every chain's position after ``num_steps`` steps of the sampler ``overrides`` (the reference,
    neuron moves where the config has them) from prior draws: whitened, (chain, ...) per block.

    ESS measures mixing at stationarity.  From prior draws, a short run at N = P = 500 measures the
    relaxation of the codes from where they nucleated (README "Mixing"); started here, every sampler
    is timed on the posterior it is meant to sample.
    """
    from widebayes.experiment import chain_positions

    thin = 100  # the run ends on one recorded draw, which is dropped
    cfg = sampler_config(base, overrides, num_steps + thin, num_steps, thin, chains, seed)
    carry = timed_run(cfg, keep=lambda out: {}).carry
    if bool(np.any(np.asarray(carry.dead))):
        raise RuntimeError(f"a chain diverged while equilibrating (steps {np.asarray(carry.dead_at)})")
    return {b: np.asarray(x) for b, x in chain_positions(carry).items()}


# ---------------------------------------------------------------------------- observables
def chunk_series(draws: dict, Y, labels, activation: str, nonlazy: bool) -> dict:
    """One chunk's per-draw permutation-invariant observables, each (chain, draw), ``test_mean``
    (chain, draw, k), and the feature codes as ``code_ids`` (chain, draw, neuron), which
    :func:`with_code_fractions` turns into fractions over the whole run (which codes reach 5 % is
    decided on the run, not per chunk)."""
    from widebayes.codes import class_means, code_ids, default_threshold

    phi = draws["phi_L"]  # chain, draw, neuron, train (float32 as recorded: 1 MB a draw at N = P = 500)
    out = {"train_loss": np.asarray(draws["loss"], np.float64), **_kernel_series(phi, Y)}
    f_test = draws.get("f_test_rb_mean", draws.get("f_test"))
    if f_test is not None:
        out["test_mean"] = np.asarray(f_test, np.float64).reshape(*f_test.shape[:2], -1)
    from widebayes.activations import get_activation

    if nonlazy and get_activation(activation).bounded:
        num_classes = int(np.max(labels)) + 1
        means = np.stack([class_means(phi[c], labels, num_classes) for c in range(len(phi))])  # chainwise
        out["code_ids"] = code_ids(means, default_threshold(activation)).astype(np.int16)
    return out


def with_code_fractions(series: dict, labels) -> dict:
    """``series`` with its ``code_ids`` replaced by ``code_fraction[c]`` (chain, draw) for every code
    holding at least ``CODE_FRACTION_MIN`` of the neurons on average."""
    from widebayes.codes import code_string

    out = {k: v for k, v in series.items() if k != "code_ids"}
    if "code_ids" in series:
        ids, num_classes = series["code_ids"], int(np.max(labels)) + 1
        for c in np.unique(ids):
            frac = np.mean(ids == c, axis=-1)
            if frac.mean() >= CODE_FRACTION_MIN:
                out[f"code_fraction[{code_string(int(c), num_classes)}]"] = frac
    return out


def _kernel_series(phi, Y, block: int = 64) -> dict:
    """``kernel_trace`` and ``task_projection`` per (chain, draw), in float64 over blocks of draws
    (the whole float64 array of a 4-chain N = P = 500 run would need 6 GB and its square as much)."""
    C, D, N, P = phi.shape
    Y = np.asarray(Y, np.float64)
    trace, task = np.empty((C, D)), np.empty((C, D))
    for c in range(C):
        for d in range(0, D, block):
            x = np.asarray(phi[c, d:d + block], np.float64)
            trace[c, d:d + block] = np.einsum("dnp,dnp->d", x, x) / (N * P)
            proj = x @ Y
            task[c, d:d + block] = np.einsum("dnr,dnr->d", proj, proj) / (N * P**2)
    return {"kernel_trace": trace, "task_projection": task}


def ess_and_mean(series) -> tuple[float, float, float]:
    """(ESS, mean, MCSE) of a (chain, draw) series, or of (chain, draw, k) (median ESS over k)."""
    from widebayes.diagnostics.convergence import rhat_ess

    x = np.asarray(series, np.float64)
    if x.ndim == 3:
        rows = [ess_and_mean(x[..., k]) for k in range(x.shape[-1])]
        return (float(np.nanmedian([r[0] for r in rows])), float(np.mean([r[1] for r in rows])),
                float(np.nanmedian([r[2] for r in rows])))
    ess = rhat_ess(x)["ess_bulk"]
    mcse = float(np.std(x) / np.sqrt(ess)) if np.isfinite(ess) and ess > 0 else float("nan")
    return float(ess), float(np.mean(x)), mcse


def between_chain_share(series) -> float:
    """The share of a (chain, draw) series' variance that lies between the chains' means (median over
    k for (chain, draw, k)).  Near 0 the chains agree; near 1 each chain sits at its own value, and
    the bulk ESS counts little more than the chains: on the demo at stationarity the kernel trace's
    ESS was 13 of 80,000 chain-steps for Langevin and for HMC alike, set by the chains' different
    code fractions (README "Mixing")."""
    x = np.asarray(series, np.float64)
    if x.ndim == 3:
        return float(np.nanmedian([between_chain_share(x[..., k]) for k in range(x.shape[-1])]))
    total = float(np.var(x))
    return float(np.var(np.mean(x, axis=1)) / total) if total > 0 else float("nan")


class SamplerFigures(NamedTuple):
    name: str
    ess_per_s: dict  # observable -> median over repeats
    ess_per_grad: dict
    mean: dict
    mcse: dict
    seconds: float
    steps_per_s: float
    between_share: dict = {}  # observable -> median over repeats of between_chain_share


def measure(base: dict, samplers: dict, *, num_steps: int, burn_in: int, thin: int, chains: int,
            repeats: int, activation: str, nonlazy: bool, start: dict | None = None) -> list[SamplerFigures]:
    """Every sampler of ``samplers`` on ``base``, interleaved over ``repeats`` seeds; medians.
    ``start``: every run's chains start there (``equilibrated_start``), else at prior draws."""
    rows = {name: [] for name in samplers}
    for rep in range(repeats):
        for name, over in samplers.items():
            cfg = sampler_config(base, over, num_steps, burn_in, thin, chains, seed=rep + 1)
            from widebayes.experiment import build_experiment

            data = build_experiment(cfg).data
            run = timed_run(cfg, keep=lambda out: chunk_series(out, data.Y_train, data.labels_train,
                                                                 activation, nonlazy), start=start)
            series = with_code_fractions(run.draws, data.labels_train)
            grads = gradients_per_step(cfg["sampler"]) * run.steps * chains
            stats = {k: (*ess_and_mean(v), between_chain_share(v)) for k, v in series.items()}
            rows[name].append((stats, run.seconds, grads, run.steps))
    return [_summarise(name, reps) for name, reps in rows.items()]


def _summarise(name: str, reps: list) -> SamplerFigures:
    keys = set.intersection(*(set(r[0]) for r in reps))
    med = statistics.median
    per_s = {k: med(r[0][k][0] / r[1] for r in reps) for k in keys}
    per_grad = {k: med(r[0][k][0] / r[2] for r in reps) for k in keys}
    mean = {k: float(np.mean([r[0][k][1] for r in reps])) for k in keys}
    mcse = {k: _pooled_mcse([r[0][k][2] for r in reps]) for k in keys}
    seconds = med(r[1] for r in reps)
    between = {k: float(np.nanmedian([r[0][k][3] for r in reps])) for k in keys}
    return SamplerFigures(name, per_s, per_grad, mean, mcse, seconds, med(r[3] / r[1] for r in reps), between)


def _pooled_mcse(per_repeat: list) -> float:
    """MCSE of the mean over repeats; NaN where no repeat has one (a series constant in every chain)."""
    known = np.asarray([x for x in per_repeat if np.isfinite(x)], np.float64)
    return float(np.sqrt(np.mean(known**2) / len(per_repeat))) if known.size else float("nan")


def bias(figures: SamplerFigures, reference: SamplerFigures) -> dict:
    """(mean - reference mean) / combined MCSE, per observable both measured."""
    out = {}
    for k in set(figures.mean) & set(reference.mean):
        se = np.hypot(figures.mcse[k], reference.mcse[k])
        out[k] = float((figures.mean[k] - reference.mean[k]) / se) if se > 0 else float("nan")
    return out


def run_mixing_bench(configs: list[str] | None = None, *, repeats: int = 3, scale: float = 1.0,
                     out: str | None = None, sampler_names: list[str] | None = None,
                     equilibrate: int = 0) -> dict:
    """Measure every reference config (or those named), print a table, return (and write) the figures.

    ``scale`` multiplies every run's length (0.1 for a quick look); ``sampler_names``: only the
    samplers whose name contains one of these (plain Langevin, the baseline, always runs);
    ``equilibrate``: steps of the reference sampler from prior draws, whose end is every run's start
    (the timed runs and the reference alike; 0: every run starts at prior draws).
    """
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}); medians of {repeats} interleaved repeats")
    results = {}
    for cname, (base, samplers) in reference_configs().items():
        if configs and not any(c in cname for c in configs):
            continue
        if sampler_names:
            samplers = {k: v for k, v in samplers.items()
                        if k == "langevin" or any(n in k for n in sampler_names)}
        nonlazy = base["network"]["readout"] == "nonlazy"
        lengths = _lengths(base, scale)
        ref_name = reference_sampler(samplers)
        start = None
        if equilibrate:
            t0 = time.perf_counter()
            start = equilibrated_start(base, samplers[ref_name], equilibrate, lengths["chains"])
            print(f"{cname}: {equilibrate} steps of {ref_name} to equilibrate, "
                  f"{time.perf_counter() - t0:.0f} s")
        figs = measure(base, samplers, repeats=repeats, activation=base["network"]["activation"],
                       nonlazy=nonlazy, start=start, **lengths)
        long = {**lengths, "num_steps": lengths["burn_in"] + 4 * (lengths["num_steps"] - lengths["burn_in"])}
        reference = measure(base, {ref_name: samplers[ref_name]}, repeats=1,
                            activation=base["network"]["activation"], nonlazy=nonlazy, start=start, **long)[0]
        results[cname] = {"lengths": lengths, "equilibrated_steps": equilibrate,
                          "reference": ref_name + " (4x longer)",
                          "samplers": {f.name: {**f._asdict(), "bias_z": bias(f, reference)} for f in figs}}
        _print(cname, figs, reference)
    if out:
        with open(out, "w") as fh:
            json.dump(results, fh, indent=1, default=float)
    return results


REFERENCE_PREFERENCE = ("langevin + neuron moves", "collapsed mala")


def reference_sampler(samplers: dict) -> str:
    """The sampler whose long run is the reference: the neuron moves where the config has them (the
    only sampler here whose code fractions reach equilibrium at T = 0.01; Langevin, collapsed or
    not, keeps the codes where they nucleated, README "Mixing"), else collapsed MALA (exact, and
    mixing the readout), else the first sampler."""
    return next((n for n in REFERENCE_PREFERENCE if n in samplers), next(iter(samplers)))


def _lengths(base: dict, scale: float) -> dict:
    P = base["task"]["num_train"]
    steps = int(40000 * scale) if P <= 100 else int(20000 * scale)
    return {"num_steps": steps, "burn_in": steps // 4, "thin": max(10, steps // 1000), "chains": 4}


def _print(cname: str, figs: list[SamplerFigures], reference: SamplerFigures) -> None:
    plain = figs[0]
    print(f"\n{cname}")
    for f in figs:
        b = bias(f, reference)
        parts = [f"{k} {f.ess_per_s[k]:.3g}/s ({f.ess_per_s[k] / plain.ess_per_s[k]:.2g}x, "
                 f"bias {b.get(k, np.nan):+.1f}se, between chains {f.between_share.get(k, np.nan):.2f})"
                 for k in sorted(f.ess_per_s) if k in plain.ess_per_s and plain.ess_per_s[k] > 0]
        print(f"  {f.name:20s} {f.steps_per_s:7.1f} steps/s  " + "; ".join(parts))
