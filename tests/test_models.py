"""Any NumPyro model through the driver: a second model from TOML, end to end."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from widebayes.models import available_models, load_model, model_blocks, model_forward, model_logdensity

from widebayes.cli import main
from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.experiment import build_experiment
from widebayes.networks import NetworkSpec

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

EXP = """
[task]
kind = "orthogonal"
num_train = 10
input_dim = 16
num_test = 4
class_ratios = [0.5, 0.5]
[network]
model = "network_with_biases"
sigma_b2 = 0.3
depth = 2
width = 8
activation = "tanh"
readout = "lazy"
temperature = 0.05
[sampler]
num_steps = 300
burn_in = 100
thin = 20
step_size = 0.002
progress = false
"""


def test_models_are_the_files_of_the_package():
    assert {"network_prior", "network_with_biases"} <= set(available_models())
    assert load_model("network_with_biases").network_keys == {"sigma_b2": 0.1}
    with pytest.raises(InputError, match="network.model"):
        load_model("no_such_model")


def test_bias_model_density_is_prior_plus_likelihood():
    """log_density of the bias model = the Gaussian priors + the tempered likelihood, written out."""
    with jax.enable_x64(True):
        spec = NetworkSpec(input_dim=3, width=5, depth=2, num_outputs=2, activation="tanh", gamma=0.5,
                           sigma_w2=(1.0, 0.5), sigma_a2=0.7)
        fn = load_model("network_with_biases").fn
        X = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
        Y = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2)))
        blocks = model_blocks(fn, X, Y, {"spec": spec, "sigma_b2": 0.2})
        assert set(blocks) == {"W1", "W2", "a", "b1", "b2"} and blocks["b1"].shape == (5,)
        assert (blocks["b2"].prior_variance == pytest.approx(0.2)
                and blocks["W2"].prior_variance == pytest.approx(0.5))
        rng = np.random.default_rng(2)
        params = {b: jnp.asarray(rng.normal(size=blk.shape)) for b, blk in blocks.items()}
        kw = {"spec": spec, "sigma_b2": 0.2}
        got = model_logdensity(fn)(params, {"X_train": X, "Y_train": Y}, kw, 0.1)
        feats, f = model_forward(fn)(params, X, kw)
        h1 = np.tanh(np.asarray(X) @ np.asarray(params["W1"]).T / np.sqrt(3) + np.asarray(params["b1"]))
        np.testing.assert_allclose(feats[0], h1, rtol=1e-12)
        var = {"W1": 1.0, "W2": 0.5, "a": 0.7, "b1": 0.2, "b2": 0.2}
        logp = sum(-0.5 * np.sum(np.asarray(params[b]) ** 2) / v
                   - 0.5 * params[b].size * np.log(2 * np.pi * v)
                   for b, v in var.items())
        loss = 0.5 * np.sum((np.asarray(Y) - np.asarray(f)) ** 2)
        want = logp - loss / 0.1 - 0.5 * Y.size * np.log(2 * np.pi * 0.1)
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_second_model_runs_end_to_end_from_toml(tmp_path, capsys):
    exp = tmp_path / "bias.toml"
    exp.write_text(EXP)
    out = tmp_path / "run"
    assert main(["sample", str(exp), "--out", str(out)]) == 0
    idata = az.from_netcdf(out / "posterior.nc")
    assert idata.posterior["a"].shape == (2, 10, 8, 2)
    assert "b1" in idata.posterior and "b2" in idata.posterior
    assert idata.attrs["model"] == "network_with_biases"
    assert idata.representations["kernel"].shape == (2, 3, 10, 10)
    capsys.readouterr()
    assert main(["theory", str(exp), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "network.model" in err and "no theory" in err
    assert main(["compare", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "no theory" in report


def test_model_keys_are_checked_against_the_model():
    cfg = {"network": {"model": "network_prior", "sigma_b2": 0.3}}
    with pytest.raises(InputError, match="network.sigma_b2"):
        resolve(cfg)
    assert (build_experiment(resolve({"network": {"model": "network_with_biases"},
                                      "task": {"num_train": 4, "input_dim": 6}})).model_kwargs
            == {"sigma_b2": 0.1})
