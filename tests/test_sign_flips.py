"""Sign flips (``[sampler] sign_flips``): an exact symmetry of odd activations, applied as a move."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from widebayes.models.presets import preset

from widebayes import sign_flips
from widebayes.codes import class_means, code_ids
from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.networks import NetworkSpec, apply, param_shapes
from widebayes.sampling import sample_experiment


def _params(spec, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 8)
    return {name: jax.random.normal(k, shape) for k, (name, shape) in zip(keys, param_shapes(spec).items())}


@pytest.mark.parametrize("depth", [1, 3])
def test_a_flip_keeps_every_output_and_the_prior_and_mirrors_the_flipped_neurons_codes(depth):
    spec = NetworkSpec(input_dim=12, width=40, depth=depth, num_outputs=3, activation="tanh")
    params = _params(spec)
    X = jax.random.normal(jax.random.PRNGKey(1), (30, 12))
    flipped = sign_flips.flip_signs(jax.random.PRNGKey(2), params, depth)
    (zs, f), (zs_new, f_new) = apply(params, X, spec), apply(flipped, X, spec)
    np.testing.assert_allclose(f_new, f, rtol=1e-5, atol=1e-6)
    for name in params:  # the Gaussian prior sees each block's squares only
        np.testing.assert_array_equal(jnp.abs(flipped[name]), jnp.abs(params[name]))
    labels = np.arange(30) % 3
    for layer in range(depth):
        z, z_new = np.asarray(zs[layer]), np.asarray(zs_new[layer])
        moved = np.all(np.isclose(z_new, -z, rtol=1e-5, atol=1e-5), axis=0)
        assert 8 <= moved.sum() <= 32  # each neuron flipped with probability 1/2 (40 neurons)
        np.testing.assert_allclose(z_new[:, ~moved], z[:, ~moved], rtol=1e-5, atol=1e-5)  # the others kept
        codes = code_ids(class_means(np.tanh(np.asarray(zs[layer])).T, labels, 3), 0.0)
        codes_new = code_ids(class_means(np.tanh(np.asarray(zs_new[layer])).T, labels, 3), 0.0)
        np.testing.assert_array_equal(codes_new[moved], 7 - codes[moved])  # the complement of 3 bits
    again = sign_flips.flip_signs(jax.random.PRNGKey(2), flipped, depth)  # an involution
    for name in params:
        np.testing.assert_array_equal(again[name], params[name])


def test_the_collapsed_position_has_no_readout_to_flip():
    spec = NetworkSpec(input_dim=12, width=20, depth=2, num_outputs=1, activation="tanh")
    params = {k: v for k, v in _params(spec).items() if k != "a"}
    flipped = sign_flips.flip_signs(jax.random.PRNGKey(0), params, 2)
    assert set(flipped) == {"W1", "W2"}


def _tiny(flips=5, steps=400, activation="tanh", **sampler):
    cfg = preset("demo")
    cfg["task"].update(num_train=48, input_dim=56, num_test=0, y_minus=-0.5)
    cfg["network"].update(width=24, temperature=0.05, activation=activation)
    cfg["sampler"].update(kind="langevin", step_size=0.01, num_steps=steps, burn_in=steps // 4, thin=20,
                          num_chains=2, seed=1, sign_flips=flips, progress=False, **sampler)
    return cfg


def test_driver_flips_mirror_pairs_evenly_and_resumes_bit_for_bit():
    cfg = _tiny()
    out = sample_experiment(resolve(cfg))
    chunked = dict(cfg, sampler={**cfg["sampler"], "chunk_draws": 4})
    again = sample_experiment(resolve(chunked))
    np.testing.assert_array_equal(out.result.draws["a"], again.result.draws["a"])
    # every 20 steps between draws hold 4 independent flip patterns: a neuron's sign is a fair coin at
    # every draw, so the share of the lower code of each mirror pair is 1/2 on average (Langevin alone
    # keeps it where the neurons nucleated)
    a = np.asarray(out.result.draws["a"])  # chain, draw, neuron, output
    positive = np.mean(a[..., 0] > 0)
    assert abs(positive - 0.5) < 0.08  # 2 x 15 x 24 signs; 0.5 +- 0.03 at one standard error if independent
    sign_changes = np.mean(np.sign(a[:, 1:, :, 0]) != np.sign(a[:, :-1, :, 0]))
    assert 0.35 < sign_changes < 0.65


@pytest.mark.parametrize("sampler", [{"kind": "hmc", "num_integration_steps": 3}, {"kind": "nuts"},
                                     {"kind": "mala", "readout": "collapsed"}])
def test_flips_join_every_kind_and_the_collapsed_readout(sampler):
    cfg = _tiny(steps=100)
    cfg["sampler"].update(sampler)
    a = np.asarray(sample_experiment(resolve(cfg)).result.draws["a"])
    assert np.all(np.isfinite(a))
    assert 0.3 < np.mean(np.sign(a[:, 1:, :, 0]) != np.sign(a[:, :-1, :, 0])) < 0.7


@pytest.mark.parametrize("change, says", [
    ({"network": {"activation": "sigmoid"}}, "odd"),
    ({"network": {"depth": 2, "tied_weights": True}}, "untied"),
    ({"sampler": {"replica_exchange": {"num_replicas": 2, "T_max": 0.1}}}, "replica exchange"),
    ({"sampler": {"reduce_inputs": True}}, "reduce_inputs"),
])
def test_refusals_name_the_key(change, says):
    cfg = _tiny(steps=200)
    for section, values in change.items():
        cfg[section] = {**cfg[section], **values}
    with pytest.raises(InputError) as err:
        sample_experiment(resolve(cfg))
    assert "sign_flips" in str(err.value) and says in str(err.value)


def test_mixing_bench_counts_the_flips_state_rebuild():
    from widebayes.bench_mixing import gradients_per_step

    cfg = resolve(_tiny(flips=4, steps=200))["sampler"]
    assert gradients_per_step(cfg) == pytest.approx(1.25)
    assert gradients_per_step({**cfg, "neuron_moves": 10}) == pytest.approx(1.35)
