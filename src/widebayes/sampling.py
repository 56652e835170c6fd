"""Sample an experiment end to end: config -> chains -> ``posterior.nc`` (with checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from widebayes import __version__, checkpoint, footprint, interrupt
from widebayes.config import num_draws, to_toml
from widebayes.experiment import Experiment, build_experiment, check_finite, device_data
from widebayes.inference import (RunResult, RunSetup, Schedule, auto_draws_per_chunk, init_carry,
                                 initial_positions, model_logdensity, plan_chunks, run_chains,
                                 to_inferencedata, whiten)
from widebayes.samplers import build_sampler


class SampleOutput(NamedTuple):
    idata: object  # arviz.InferenceData
    result: RunResult
    experiment: Experiment
    divergences: list[str]  # one line per stopped chain


def schedule_of(exp: Experiment) -> Schedule:
    anneal = exp.config["sampler"]["anneal"]
    if not anneal:
        return Schedule(exp.T_eff, exp.T_eff, 0)
    ratio = exp.T_eff / exp.config["network"]["temperature"]
    return Schedule(exp.T_eff, anneal["T_start"] * ratio, anneal["num_steps"])


def run_setup(exp: Experiment, dtype) -> tuple[RunSetup, dict]:
    """What the driver closes over (sampler, whitened log density, scales) and each chain's params."""
    cfg = exp.config["sampler"]
    roots = {name: float(np.sqrt(m)) for name, m in exp.preconditioner.items()}
    setup = RunSetup(build_sampler(cfg), whiten(model_logdensity(exp.spec), exp.preconditioner), roots,
                     exp.spec, cfg["store_all_layers"],
                     cfg["anneal"].get("schedule", "geometric") == "geometric")
    params = {"step_size": jnp.full(cfg["num_chains"], cfg["step_size"], dtype)}
    return setup, params


def sample_experiment(resolved: dict, out_dir=None, resume: bool = False, progress: bool | None = None):
    """Sample a resolved experiment; with ``out_dir`` write posterior.nc, config.toml, checkpoints."""
    cfg = resolved["sampler"]
    footprint.check(resolved)
    jax.config.update("jax_enable_x64", cfg["precision"] == "float64")
    dtype = jnp.float64 if cfg["precision"] == "float64" else jnp.float32
    exp = build_experiment(resolved)
    check_finite(exp.data)
    config_text = to_toml(exp.config)
    data = device_data(exp.data, dtype)
    setup, params = run_setup(exp, dtype)
    schedule = schedule_of(exp)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)

    key_init, key_chains = jax.random.split(jax.random.PRNGKey(cfg["seed"]))
    if cfg["kind"] == "smc":
        result, extra = sample_smc(exp, setup, data, key_chains, dtype)
    else:
        result, extra = _run_mcmc(exp, setup, params, data, schedule, key_init, key_chains, dtype,
                                  out_dir, resume, progress, config_text)
    attrs = {**run_attrs(exp, config_text), **extra}
    idata = to_inferencedata(result, exp.data, attrs, setup.sampler.has_accept)
    if out_dir is not None:
        write_outputs(out_dir, idata, config_text)
        checkpoint.remove(out_dir)
    return SampleOutput(idata, result, exp, divergence_lines(result, cfg))


def _run_mcmc(exp, setup, params, data, schedule, key_init, key_chains, dtype, out_dir, resume,
              progress, config_text):
    """The (init, step) samplers through the chunked driver, with checkpoints and resume."""
    cfg = exp.config["sampler"]
    chain_keys = jax.random.split(key_chains, cfg["num_chains"])
    positions = initial_positions(key_init, exp.spec, cfg["num_chains"], dtype)
    carry = init_carry(setup, positions, params, data, cfg["num_chains"], schedule.T_start_eff)
    per_chunk = cfg["chunk_draws"] or auto_draws_per_chunk(cfg["thin"], num_draws(cfg))
    chunks = plan_chunks(cfg["num_steps"], cfg["burn_in"], cfg["thin"], per_chunk)
    if setup.sampler.warmup is not None:  # the adaptation replaces the burn-in chunks
        burn = sum(ch.num_steps for ch in chunks if ch.num_draws == 0)
        chunks = [ch for ch in chunks if ch.num_draws]
    first, host_draws = 0, []
    if resume and checkpoint.exists(out_dir):
        first, carry, host_draws = checkpoint.load(out_dir, carry, config_text)
    elif setup.sampler.warmup is not None:
        carry = _warmup(setup, carry, key_init, data, schedule, burn)
    bar = _progress(cfg, progress, chunks, first)
    on_chunk = _on_chunk(bar, chunks, out_dir, cfg["checkpoint_every"], config_text)
    result = run_chains(setup, carry, chain_keys, data, schedule, chunks, first_chunk=first,
                        host_draws=host_draws, on_chunk=on_chunk)
    if bar is not None:
        bar.close()
    tuned = np.asarray(result.params["step_size"]).tolist()
    return result, ({"tuned_step_size": tuned} if setup.sampler.warmup is not None else {})


def _warmup(setup: RunSetup, carry, rng_key, data, schedule, num_steps: int):
    """Tune the sampler (HMC/NUTS adaptation) for ``num_steps`` steps in place of the burn-in."""

    def logdensity(theta):
        return setup.logdensity(theta, data, schedule.T_eff)

    keys = jax.random.split(jax.random.fold_in(rng_key, 1), carry.dead.shape[0])
    warm = jax.jit(jax.vmap(lambda k, st, p: setup.sampler.warmup(k, st.position, logdensity, p, num_steps)))
    state, params = warm(keys, carry.state, carry.params)
    return carry._replace(state=state, params=params)


def sample_smc(exp: Experiment, setup: RunSetup, data, rng_key, dtype):
    """Adaptive tempered SMC (``samplers/smc.py``): each chain an independent particle population.

    Draws are the final, equally weighted particles (``draw`` = particle); the layer kernels are
    their means; the log evidence log p(Y | X) at T_eff of each population goes to the attributes.
    """
    from widebayes.networks import param_prior_variances, param_shapes
    from widebayes.samplers.smc import prior_particles, run_smc, split_gaussian_prior

    cfg = exp.config["sampler"]
    num = cfg["smc_particles"] or 64
    prior_var = param_prior_variances(exp.spec)
    logprior, loglik = split_gaussian_prior(lambda th: setup.logdensity(th, data, exp.T_eff), prior_var,
                                            exp.preconditioner)
    keys = jax.random.split(rng_key, cfg["num_chains"])

    def one_population(key):
        k_init, k_run = jax.random.split(key)
        particles = prior_particles(k_init, param_shapes(exp.spec), prior_var, exp.preconditioner, num, dtype)
        particles, info = run_smc(k_run, logprior, loglik, particles, cfg["smc_mcmc_steps"],
                                  cfg["smc_target_ess"])
        draws, kernels = jax.vmap(lambda th: _particle_observables(setup, th, data))(particles)
        return draws, jax.tree.map(lambda k: k.mean(0), kernels), info

    draws, kernels, info = jax.device_get(jax.jit(jax.vmap(one_population))(keys))
    draws["accept_prob"] = np.repeat(np.nanmean(info.acceptance_rate, axis=1)[:, None], num, axis=1)
    draws["diverging"] = ~np.isfinite(draws["loss"])
    result = RunResult(draws, kernels, np.full(cfg["num_chains"], -1), 0.0, {})
    extra = {"log_evidence": np.asarray(info.log_evidence).tolist(),
             "tempering_steps": np.asarray(info.num_steps).tolist()}
    return result, extra


def _particle_observables(setup: RunSetup, theta_white, data):
    from widebayes.inference import unwhiten
    from widebayes.observables import draw_observables

    return draw_observables(unwhiten(theta_white, setup.roots), data, setup.spec, setup.store_all_layers)


def run_attrs(exp: Experiment, config_text: str) -> dict:
    """Attributes stored in posterior.nc: the resolved config, version, seed, time units."""
    cfg = exp.config["sampler"]
    return {"config": config_text, "widebayes_version": __version__, "seed": cfg["seed"],
            "T_eff": exp.T_eff, "paper_time_per_step": cfg["step_size"] / exp.T_eff,
            "sampler": cfg["kind"]}


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
    return tqdm(total=cfg["num_steps"], initial=done, unit="step", dynamic_ncols=True)


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
