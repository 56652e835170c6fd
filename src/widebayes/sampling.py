"""Sample an experiment end to end: config -> chains -> ``posterior.nc`` (with checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from widebayes import __version__, checkpoint, footprint, interrupt
from widebayes.config import to_toml
from widebayes.experiment import FROZEN, Experiment, PreparedRun, build_experiment, prepare_run
from widebayes.inference import RunResult, blas_threads, chain_layout, roots_of, run_chains, unwhiten, warmup
from widebayes.models import model_logdensity  # noqa: F401  (the bridge, re-exported here)
from widebayes.networks import layer_weight_name
from widebayes.posterior import to_inferencedata


class SampleOutput(NamedTuple):
    idata: object  # arviz.InferenceData
    result: RunResult
    experiment: Experiment
    divergences: list[str]  # one line per stopped chain


def sample_experiment(resolved: dict, out_dir=None, resume: bool = False, progress: bool | None = None):
    """Sample a resolved experiment; with ``out_dir`` write posterior.nc, config.toml, checkpoints.

    The BLAS pool behind JAX's CPU factorisations is held at one thread (``inference.blas_threads``).
    """
    with blas_threads(1):
        return _sample_experiment(resolved, out_dir, resume, progress)


def _sample_experiment(resolved: dict, out_dir, resume: bool, progress):
    cfg = resolved["sampler"]
    footprint.check(resolved)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    if cfg["kind"] == "smc":
        exp = build_experiment(resolved)
        result, extra = sample_smc(exp, resolved)
        has_accept = True
    else:
        run = prepare_run(resolved)
        exp = run.experiment
        result, extra = _run_mcmc(run, cfg, out_dir, resume, progress, to_toml(exp.config))
        has_accept = run.setup.sampler.has_accept
    config_text = to_toml(exp.config)
    attrs = {**run_attrs(exp, config_text, cfg["kind"] != "smc"), **extra}
    frozen = {b: np.asarray(x) for b, x in run.hyper["model"].get(FROZEN, {}).items()} if exp.frozen else None
    idata = to_inferencedata(result, exp.data, attrs, has_accept, constant=frozen)
    if out_dir is not None:
        write_outputs(out_dir, idata, config_text)
        checkpoint.remove(out_dir)
    return SampleOutput(idata, result, exp, divergence_lines(result, cfg))


def _run_mcmc(run: PreparedRun, cfg: dict, out_dir, resume, progress, config_text):
    """The (init, step) samplers through the chunked driver, with checkpoints and resume."""
    carry, chunks = run.carry, run.chunks
    sampler = run.setup.sampler
    if sampler.warmup is not None:  # the adaptation replaces the burn-in chunks
        burn = sum(ch.num_steps for ch in chunks if ch.num_draws == 0)
        chunks = [ch for ch in chunks if ch.num_draws]
    first, host_draws = 0, []
    if resume and checkpoint.exists(out_dir):
        first, carry, host_draws = checkpoint.load(out_dir, carry, config_text)
    elif sampler.warmup is not None:
        carry = warmup(run.setup, carry, run.key_init, run.data, run.hyper, run.schedule.T_eff, burn)
    bar = _progress(cfg, progress, chunks, first)
    on_chunk = _on_chunk(bar, chunks, out_dir, cfg["checkpoint_every"], config_text)
    result = run_chains(run.setup, carry, run.chain_keys, run.data, run.hyper, run.schedule, chunks,
                        first_chunk=first, host_draws=host_draws, on_chunk=on_chunk,
                        layout=chain_layout(cfg["num_chains"], cfg["devices"]))
    if bar is not None:
        bar.close()
    tuned = np.asarray(result.params["step_size"]).tolist()
    return result, ({"tuned_step_size": tuned} if sampler.warmup is not None else {})


def sample_smc(exp: Experiment, resolved: dict):
    """Adaptive tempered SMC (``samplers/smc.py``): each chain an independent particle population.

    Draws are the final, equally weighted particles (``draw`` = particle); the layer kernels are
    their means; the log evidence log p(Y | X) at T_eff of each population goes to the attributes.
    """
    from widebayes.experiment import device_data, run_dtype
    from widebayes.models import load_model, model_forward
    from widebayes.observables import draw_observables
    from widebayes.samplers.smc import prior_particles, run_smc, split_gaussian_prior

    cfg = resolved["sampler"]
    dtype = run_dtype(resolved)
    data = device_data(exp.data, dtype)
    model = load_model(exp.model).fn
    kwargs = {"spec": exp.spec, **exp.model_kwargs}
    roots = roots_of(exp.preconditioner)
    logdensity = model_logdensity(model)
    forward = model_forward(model)
    num = cfg["smc_particles"] or 64
    prior_var = {b: blk.prior_variance for b, blk in exp.blocks.items()}
    logprior, loglik = split_gaussian_prior(
        lambda th: logdensity(unwhiten(th, roots), data, kwargs, exp.T_eff), prior_var, exp.preconditioner)
    keys = jax.random.split(jax.random.split(jax.random.PRNGKey(cfg["seed"]))[1], cfg["num_chains"])

    def observe(theta):
        params = unwhiten(theta, roots)
        return draw_observables(lambda p, X: forward(p, X, kwargs), params, data, cfg["store_all_layers"])

    def one_population(key):
        k_init, k_run = jax.random.split(key)
        shapes = {b: blk.shape for b, blk in exp.blocks.items()}
        particles = prior_particles(k_init, shapes, prior_var, exp.preconditioner, num, dtype)
        particles, info = run_smc(k_run, logprior, loglik, particles, cfg["smc_mcmc_steps"],
                                  cfg["smc_target_ess"])
        draws, kernels = jax.vmap(observe)(particles)
        return draws, jax.tree.map(lambda k: k.mean(0), kernels), info

    draws, kernels, info = jax.device_get(jax.jit(jax.vmap(one_population))(keys))
    draws["accept_prob"] = np.repeat(np.nanmean(info.acceptance_rate, axis=1)[:, None], num, axis=1)
    draws["diverging"] = ~np.isfinite(draws["loss"])
    result = RunResult(draws, kernels, np.full(cfg["num_chains"], -1), 0.0, {})
    extra = {"log_evidence": np.asarray(info.log_evidence).tolist(),
             "tempering_steps": np.asarray(info.num_steps).tolist()}
    return result, extra


def run_attrs(exp: Experiment, config_text: str, dynamics: bool = True) -> dict:
    """Attributes stored in posterior.nc: the resolved config, version, seed, time units.

    ``paper_time_per_step`` is the paper Langevin time of one step of the hidden weights (block
    ``W1``), ``paper_time_per_step_readout`` that of the readout (``a``): ``step_size * M / T_eff``
    with each block's preconditioner M (:meth:`Experiment.paper_time_per_step`).
    """
    cfg = exp.config["sampler"]
    attrs = {"config": config_text, "widebayes_version": __version__, "seed": cfg["seed"],
             "T_eff": exp.T_eff, "sampler": cfg["kind"], "model": exp.model,
             "devices": [str(d) for d in chain_layout(cfg["num_chains"], cfg["devices"]).devices]}
    if exp.frozen:  # [network] trainable: these blocks sit at one prior draw, stored in constant_data
        attrs["frozen_blocks"] = list(exp.frozen)
    if dynamics:
        attrs["paper_time_per_step"] = exp.paper_time_per_step("W1")
        for layer in range(2, exp.spec.depth + 1):  # the deeper hidden layers' blocks (M may differ)
            block = layer_weight_name(exp.spec, layer)  # the shared W when tied
            if block in exp.preconditioner:
                attrs[f"paper_time_per_step_W{layer}"] = exp.paper_time_per_step(block)
        if "a" in exp.preconditioner:
            attrs["paper_time_per_step_readout"] = exp.paper_time_per_step("a")
    return attrs


def write_outputs(out_dir, idata, config_text: str) -> None:
    out = Path(out_dir)
    checkpoint.atomic_write(out / "posterior.nc", lambda tmp: idata.to_netcdf(tmp, engine="h5netcdf"))
    checkpoint.atomic_write(out / "config.toml", lambda tmp: Path(tmp).write_text(config_text))


def divergence_lines(result: RunResult, cfg: dict) -> list[str]:
    """One line per chain that stopped on a NaN/inf: which chain, which step, what to change."""
    return [f"chain {c} diverged at step {int(s)} (log density not finite); its draws before that "
            f"step are kept; try a smaller sampler.step_size (now {cfg['step_size']})"
            for c, s in enumerate(result.dead_at) if s >= 0]


def _progress(cfg, progress, chunks, first):
    if not (cfg["progress"] if progress is None else progress):
        return None
    from tqdm import tqdm

    done = sum(ch.num_steps for ch in chunks[:first])
    return tqdm(total=sum(ch.num_steps for ch in chunks), initial=done, unit="step", dynamic_ncols=True)


def _on_chunk(bar, chunks, out_dir, every, config_text):
    def on_chunk(next_chunk, carry, host_draws, draws):
        if bar is not None:
            bar.update(chunks[next_chunk - 1].num_steps)
            if draws:
                bar.set_postfix(loss=_finite_mean(draws["loss"][:, -1]),
                                accept=_finite_mean(draws["accept_prob"]))
        stop = interrupt.requested() if next_chunk < len(chunks) else None
        if out_dir is not None and next_chunk < len(chunks) and (next_chunk % every == 0 or stop):
            checkpoint.save(out_dir, next_chunk, carry, host_draws, config_text)
        if stop:
            done = chunks[next_chunk - 1].start + chunks[next_chunk - 1].num_steps
            raise interrupt.Interrupted(stop, done, checkpoint=out_dir is not None)

    return on_chunk


def _finite_mean(x) -> str:
    x = np.asarray(x)[np.isfinite(x)]
    return f"{x.mean():.4g}" if x.size else "nan"
