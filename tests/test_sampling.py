"""The driver end to end: posterior.nc contents, chunking, resume, divergence, the command."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from widebayes.samplers.langevin import langevin

from widebayes import checkpoint
from widebayes.cli import main
from widebayes.config import resolve, to_toml
from widebayes.experiment import prepare_run
from widebayes.inference import init_carry, plan_chunks, run_chains
from widebayes.sampling import sample_experiment

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def small(**sampler):
    cfg = {
        "task": {"kind": "orthogonal", "num_train": 8, "input_dim": 12, "num_test": 3,
                 "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5},
        "network": {"depth": 2, "width": 16, "activation": "sigmoid", "temperature": 0.05},
        "sampler": {"step_size": 0.005, "num_steps": 600, "burn_in": 200, "thin": 40,
                    "num_chains": 2, "seed": 3, "progress": False, **sampler},
    }
    return resolve(cfg)


def test_posterior_file_has_the_design_variables(tmp_path):
    sample_experiment(small(store_all_layers=True), out_dir=tmp_path)
    idata = az.from_netcdf(tmp_path / "posterior.nc")
    post, reps = idata.posterior, idata.representations
    assert post["a"].dims == ("chain", "draw", "neuron", "output")
    assert post["a"].shape == (2, 10, 16, 3)
    assert post["f_train"].dims == ("chain", "draw", "train", "output")
    assert post["f_test"].dims == ("chain", "draw", "test", "output")
    assert idata.sample_stats["loss"].dims == ("chain", "draw")
    assert "diverging" in idata.sample_stats and "accept_prob" not in idata.sample_stats
    assert reps["phi_L"].dims == ("chain", "draw", "neuron", "train")
    assert reps["phi_L_test"].dims == ("chain", "draw", "neuron", "test")
    assert reps["phi_1"].dims == ("chain", "draw", "neuron", "train")
    assert reps["kernel"].dims == ("chain", "layer", "train_row", "train_col")
    assert reps["kernel"].shape == (2, 3, 8, 8)
    assert reps["kernel_test"].dims == ("chain", "layer", "test_row", "test_col")
    assert set(idata.observed_data) >= {"X_train", "y_train", "X_test", "y_test"}
    assert "[network]" in idata.attrs["config"] and idata.attrs["seed"] == 3
    assert (tmp_path / "config.toml").exists()


def test_kernel_is_the_mean_of_the_draws_gram(tmp_path):
    out = sample_experiment(small(), out_dir=None)
    phi = out.result.draws["phi_L"]  # chain, draw, neuron, train
    gram = np.einsum("cdnp,cdnq->cpq", phi, phi) / phi.shape[2] / phi.shape[1]
    np.testing.assert_allclose(out.result.kernels["train"][:, -1], gram, rtol=1e-4, atol=1e-6)
    X = out.experiment.data.X_train
    np.testing.assert_allclose(out.result.kernels["train"][0, 0], X @ X.T / X.shape[1], atol=1e-5)


def test_same_seed_same_draws_whatever_the_chunking():
    a = sample_experiment(small(chunk_draws=1)).result.draws
    b = sample_experiment(small(chunk_draws=4)).result.draws
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_plan_puts_leftover_steps_into_burn_in():
    chunks = plan_chunks(num_steps=1030, burn_in=100, thin=100, draws_per_chunk=4)
    assert sum(c.num_steps for c in chunks) == 1030
    assert sum(c.num_draws for c in chunks) == 9
    assert chunks[-1].start + chunks[-1].num_steps == 1030


def test_killed_run_resumes_bit_for_bit(tmp_path, killed_after_saves):
    cfg = small(chunk_draws=2, checkpoint_every=1)
    reference = sample_experiment(cfg).result.draws
    killed_after_saves(lambda: sample_experiment(cfg, out_dir=tmp_path), saves=3)
    assert not (tmp_path / "posterior.nc").exists()
    resumed = sample_experiment(cfg, out_dir=tmp_path, resume=True).result.draws
    for name in reference:
        np.testing.assert_array_equal(reference[name], resumed[name])
    assert not (tmp_path / checkpoint.META).exists()


def test_resume_refuses_a_different_config(tmp_path):
    cfg = small()
    carry_like = {"x": jnp.zeros(2)}
    checkpoint.save(tmp_path, 1, carry_like, [], to_toml(cfg))
    other = small(step_size=0.001)
    with pytest.raises(ValueError, match="different config"):
        checkpoint.load(tmp_path, carry_like, to_toml(other))


def blowup_after(step):
    """Langevin whose chain 1 takes a huge step from ``step`` on (it must diverge there)."""
    base = langevin()

    def params_at(params, step_index):
        boom = (step_index >= step) & params["boom"]
        return {**params, "step_size": jnp.where(boom, 1e8, params["step_size"])}

    return base._replace(params_at=params_at)


def test_diverged_chain_is_stopped_and_its_earlier_draws_kept():
    run = prepare_run(small())
    setup = run.setup._replace(sampler=blowup_after(350), key=("blowup", 350))
    params = {"step_size": jnp.full(2, 0.005, jnp.float32), "boom": jnp.array([False, True])}
    positions = jax.tree.map(lambda x: x, run.carry.state.position)
    carry = init_carry(setup, positions, params, run.data, run.hyper, 2, run.schedule.T_eff)
    result = run_chains(setup, carry, run.chain_keys, run.data, run.hyper, run.schedule,
                        plan_chunks(600, 200, 40, 3))
    assert result.dead_at[0] == -1 and 350 <= result.dead_at[1] <= 360
    loss = result.draws["loss"]
    assert np.all(np.isfinite(loss[0]))
    draw_steps = 200 + 40 * np.arange(1, 11) - 1
    np.testing.assert_array_equal(np.isfinite(loss[1]), draw_steps < result.dead_at[1])
    np.testing.assert_array_equal(result.draws["diverging"][1], draw_steps >= result.dead_at[1])


def write_toml(path, text):
    path.write_text(text)
    return str(path)


EXP = """
[task]
kind = "orthogonal"
num_train = 8
input_dim = 10
class_ratios = [0.5, 0.5]
[network]
width = 8
activation = "{activation}"
[sampler]
num_steps = 200
burn_in = 100
thin = 50
step_size = {step}
progress = false
"""


def test_command_samples_and_reports_bad_input_with_exit_2(tmp_path, capsys):
    good = write_toml(tmp_path / "a.toml", EXP.format(activation="tanh", step=0.01))
    assert main(["sample", good, "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "posterior.nc").exists()
    bad = write_toml(tmp_path / "b.toml", EXP.format(activation="swish", step=0.01))
    assert main(["sample", bad, "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "network.activation" in err
    for bad_value in ("network.width=-3", "network.sigma_w2=abc", "network.sigma_w2=[1, 2]",
                      "network.depth=1.5", "sampler.noise=foo", "sampler.preconditioner.W9=1"):
        assert main(["sample", good, "--out", str(tmp_path / "o3"), "--set", bad_value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and bad_value.split("=")[0] in err


def test_command_reports_a_diverged_chain_with_exit_2(tmp_path, capsys):
    exp = write_toml(tmp_path / "a.toml", EXP.format(activation="relu", step=50.0))
    assert main(["sample", exp, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "chain 0 diverged at step" in err and "step_size" in err
    assert (tmp_path / "o" / "posterior.nc").exists()


def test_smc_through_the_command_path_stores_particles_and_evidence(tmp_path):
    cfg = small(kind="smc", smc_particles=16, num_chains=2)
    out = sample_experiment(cfg, out_dir=tmp_path)
    idata = az.from_netcdf(tmp_path / "posterior.nc")
    assert idata.posterior["a"].shape[:2] == (2, 16)
    assert len(idata.attrs["log_evidence"]) == 2 and np.all(np.isfinite(idata.attrs["log_evidence"]))
    assert np.all(np.isfinite(out.result.draws["loss"]))


def test_annealing_is_refused_where_burn_in_is_adaptation():
    with pytest.raises(ValueError, match="sampler.anneal"):
        small(kind="nuts", anneal={"T_start": 1.0, "num_steps": 100})


def test_runs_that_differ_in_numbers_only_compile_once():
    """Temperature, step size, prior variances and the readout exponent are traced: a second run
    of the same shapes compiles nothing (ARCHITECTURE.md, "Sweeps compile once")."""
    from jax import monitoring

    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: (compiles.append(event)
                                       if event == "/jax/core/compile/backend_compile_duration" else None))
    base = {"task": {"kind": "orthogonal", "num_train": 8, "input_dim": 12, "num_test": 3,
                     "class_ratios": [0.5, 0.5]},
            "network": {"depth": 2, "width": 16, "activation": "relu", "readout": 0.75, "temperature": 0.05,
                        "sigma_w2": 1.0, "sigma_a2": 1.0},
            "sampler": {"step_size": 0.002, "num_steps": 400, "burn_in": 200, "thin": 50, "num_chains": 2,
                        "seed": 4, "progress": False}}
    sample_experiment(resolve(base))
    first = len(compiles)
    other = {**base, "network": {**base["network"], "temperature": 0.02, "sigma_w2": [0.5, 1.5],
                                 "sigma_a2": 0.7, "readout": 0.9},
             "sampler": {**base["sampler"], "step_size": 0.001, "seed": 5}}
    out = sample_experiment(resolve(other))
    assert first > 0 and len(compiles) == first, compiles[first:]
    assert np.all(np.isfinite(out.result.draws["loss"]))
