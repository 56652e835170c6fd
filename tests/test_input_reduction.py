"""Exact input-subspace reduction of the first layer (widebayes.input_reduction, issue 13 item 7).

The reduced log density is the full one less the orthogonal part's prior, for any orthogonal
part; the AR(1) transition is k Euler steps of the prior-only recursion (algebra and Monte Carlo);
a reduced run agrees with the full run within Monte Carlo standard errors and resumes bit for bit.
"""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from widebayes.samplers.langevin import langevin

from widebayes.cli import main
from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.experiment import build_experiment, build_sampler, device_data, prepare_run, run_setup_of
from widebayes.input_reduction import (
    advance,
    decay_per_step,
    input_basis,
    reduced_inputs,
    split_first_layer,
    stationary_variance,
    transition_moments,
)
from widebayes.sampling import sample_experiment

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az


def small(reduce_inputs=True, depth=1, task=None, network=None, **sampler):
    """The brief's case: binary MNIST projected to N0 = 60, P = 10 (+ 5 test), lazy sigmoid, N = 32."""
    return resolve({
        "task": {"kind": "mnist", "num_train": 10, "num_test": 5, "num_classes": 2, "input_dim": 60,
                 "targets": "binary", "center": True, **(task or {})},
        "network": {"depth": depth, "width": 32, "activation": "sigmoid", "readout": "lazy",
                    "temperature": 0.1, **(network or {})},
        "sampler": {"step_size": 0.03, "num_steps": 400, "burn_in": 200, "thin": 20, "num_chains": 2,
                    "seed": 5, "progress": False, "reduce_inputs": reduce_inputs, **sampler},
    })


# ----------------------------------------------------------------------------------- bases
def test_bases_span_the_training_rows_and_the_rest_of_the_test_inputs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4)) @ rng.normal(size=(4, 30))  # rank 4 < P = 6 < N0 = 30
    Xt = np.vstack([rng.normal(size=(2, 6)) @ X, rng.normal(size=(3, 30))])  # 2 in the span, 3 not
    b = input_basis(X, Xt)
    assert (b.rank, b.test_rank, b.input_dim) == (4, 3, 30)
    np.testing.assert_allclose(b.Q.T @ b.Q, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(b.R.T @ b.R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(b.Q.T @ b.R, 0.0, atol=1e-12)
    train, test = reduced_inputs(b, X, Xt)
    np.testing.assert_allclose(train @ b.Q.T, X, atol=1e-10)  # X = (X Q) Q^T
    np.testing.assert_allclose(test @ np.hstack([b.Q, b.R]).T, Xt, atol=1e-10)  # Eq. (1)
    np.testing.assert_allclose(train @ train.T, X @ X.T, rtol=1e-12)  # the input kernel's Gram
    assert input_basis(X).test_rank == 0 and reduced_inputs(b, X)[1] is None


# ----------------------------------------------------------------------------------- log density
class DriverView(NamedTuple):
    experiment: object
    setup: object
    data: dict


def driver_view(resolved) -> DriverView:
    """What the driver sees of an experiment, in the current precision, without compiling a run."""
    exp = build_experiment(resolved)
    setup = run_setup_of(exp, resolved["sampler"], build_sampler(resolved["sampler"]))
    return DriverView(exp, setup, device_data(exp.data, jnp.zeros(()).dtype, exp.reduction))


@pytest.mark.parametrize("depth, tied", [(1, False), (2, True)])
def test_reduced_log_density_is_the_full_one_less_the_orthogonal_prior(depth, tied):
    """log p(U Q^T + W_perp, rest) = log p_r(U, rest) + log N(W_perp Q_perp; 0, sigma^2), any W_perp;
    the gradient in U is the full gradient times Q, and in W_perp the prior's alone."""
    with jax.enable_x64(True):
        net = {"sigma_w2": [1.7] + [0.8] * (depth - 1), "tied_weights": tied}
        full, red = (driver_view(small(flag, depth, network=net)) for flag in (False, True))
        Q = red.experiment.reduction.Q
        N, N0, r = 32, 60, Q.shape[1]
        assert r == 9 and red.experiment.blocks["W1"].shape == (N, r)  # centred: rank P - 1
        assert red.data["X_train"].shape == (10, r) and red.experiment.spec.input_dim == N0
        rng = np.random.default_rng(1)
        params = {b: jnp.asarray(rng.normal(size=blk.shape)) for b, blk in full.experiment.blocks.items()}
        W_perp = rng.normal(size=(N, N0)) @ (np.eye(N0) - Q @ Q.T)
        U = np.asarray(params["W1"]) @ Q
        T = 0.1

        def logp(run, p):
            return run.setup.logdensity(p, run.data, {"spec": run.experiment.spec}, T)

        def value_and_grad(run, p):
            return jax.jit(jax.value_and_grad(lambda q: logp(run, q)))(p)

        full_params = {**params, "W1": jnp.asarray(U @ Q.T + W_perp)}
        red_params = {**params, "W1": jnp.asarray(U)}
        s2 = 1.7
        prior_perp = -0.5 * np.sum(W_perp**2) / s2 - 0.5 * N * (N0 - r) * np.log(2 * np.pi * s2)
        v_full, g_full = value_and_grad(full, full_params)
        v_red, g_red = value_and_grad(red, red_params)
        np.testing.assert_allclose(v_full, v_red + prior_perp, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(g_full["W1"]) @ Q, g_red["W1"], rtol=1e-10, atol=1e-10)
        outside = np.eye(N0) - Q @ Q.T
        np.testing.assert_allclose(np.asarray(g_full["W1"]) @ outside, -W_perp / s2, atol=1e-10)
        for name in params:
            if name != "W1":
                np.testing.assert_allclose(g_full[name], g_red[name], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------- AR(1)
def euler_moments(k, a, eps, M):
    """Mean factor and variance after k steps of x <- (1 - a) x + sqrt(2 eps M) xi, by recursion."""
    m, v = 1.0, 0.0
    for _ in range(k):
        m, v = (1 - a) * m, (1 - a) ** 2 * v + 2 * eps * M
    return m, v


@pytest.mark.parametrize("eps, M, s2", [(0.01, 1.0, 1.0), (0.3, 2.0, 1.5), (0.9, 2.0, 1.2), (1e-4, 0.5, 2.0)])
def test_transition_is_k_euler_steps_exactly(eps, M, s2):
    a = decay_per_step(eps, M, s2)  # 0.01, 0.4, 1.5 (rho < 0), 2.5e-5
    with jax.enable_x64(True):
        for k in (0, 1, 2, 7, 100, 3001):
            m, v = transition_moments(k, jnp.float64(a), jnp.float64(s2))
            m_ref, v_ref = euler_moments(k, a, eps, M)
            np.testing.assert_allclose([m, v], [m_ref, v_ref], rtol=1e-11, atol=1e-300)
        m, v = transition_moments(10**7, jnp.float64(a), jnp.float64(s2))
        assert abs(m) < 1e-8 and v == pytest.approx(2 * eps * M / (1 - (1 - a) ** 2), rel=1e-9)
    assert stationary_variance(a, s2) == pytest.approx(s2 / (1 - a / 2), rel=1e-14)


def test_transition_matches_the_langevin_sampler_in_law():
    """k steps of the real Langevin kernel on the whitened prior-only block against one exact draw."""
    eps, M, s2, k, n = 0.3, 2.0, 1.5, 5, 200_000
    x0 = jnp.full((n,), 0.8, jnp.float32)

    def logdensity(theta):  # whitened: theta = x / sqrt(M)
        return -jnp.sum((theta["x"] * np.sqrt(M)) ** 2) / (2 * s2)

    sampler = langevin(noise="threefry")

    def run(key):
        state = sampler.init({"x": x0 / np.sqrt(M)}, logdensity)

        def body(st, i):
            return sampler.step(jax.random.fold_in(key, i), st, logdensity, {"step_size": eps})[0], None

        return jax.lax.scan(body, state, jnp.arange(k))[0].position["x"] * np.sqrt(M)

    euler = np.asarray(jax.jit(run)(jax.random.PRNGKey(0)), np.float64)
    exact = np.asarray(advance(jax.random.PRNGKey(1), x0, k, decay_per_step(eps, M, s2), s2), np.float64)
    m, v = euler_moments(k, decay_per_step(eps, M, s2), eps, M)
    for draws in (euler, exact):
        assert abs(draws.mean() - 0.8 * m) < 4 * np.sqrt(v / n)
        assert abs(draws.var() - v) < 4 * v * np.sqrt(2 / n)


# ----------------------------------------------------------------------------------- agreement
def mean_and_mcse(x):
    """Mean over (chain, draw) and its Monte Carlo standard error (ArviZ), per trailing entry."""
    flat = np.asarray(x, np.float64).reshape(x.shape[0], x.shape[1], -1)
    se = az.mcse(az.convert_to_dataset({"x": flat}), method="mean")["x"].values
    return flat.mean(axis=(0, 1)), np.asarray(se)


def per_draw_observables(out) -> dict:
    d = out.result.draws
    N = d["phi_L"].shape[2]
    iu = np.triu_indices(d["phi_L"].shape[3])
    it = np.triu_indices(d["phi_L_test"].shape[3])
    K_train = np.einsum("cdnp,cdnq->cdpq", d["phi_L"], d["phi_L"]) / N
    K_test = np.einsum("cdnp,cdnq->cdpq", d["phi_L_test"], d["phi_L_test"]) / N
    return {"loss": d["loss"], "f_test": d["f_test"], "f_test^2": d["f_test"] ** 2,
            "K_train": K_train[..., iu[0], iu[1]], "K_test": K_test[..., it[0], it[1]]}


def z_scores(a, b) -> dict:
    """|mean_a - mean_b| / sqrt(mcse_a^2 + mcse_b^2) per observable entry."""
    out = {}
    for name in a:
        (ma, sa), (mb, sb) = mean_and_mcse(a[name]), mean_and_mcse(b[name])
        out[name] = np.abs(ma - mb) / np.sqrt(sa**2 + sb**2)
    return out


def agreement(num_steps, burn_in, thin, chains, **sampler):
    """Full and reduced runs of :func:`small`; one chunk of draws (compilation dominates the time)."""
    kw = {"num_steps": num_steps, "burn_in": burn_in, "thin": thin, "num_chains": chains,
          "chunk_draws": (num_steps - burn_in) // thin, **sampler}
    full, red = sample_experiment(small(False, **kw)), sample_experiment(small(True, **kw))
    for part in ("train", "test"):  # input kernels: the same X X^T / N0, exactly
        np.testing.assert_allclose(red.result.kernels[part][:, 0], full.result.kernels[part][:, 0], atol=2e-6)
    return z_scores(per_draw_observables(full), per_draw_observables(red))


def test_reduced_and_full_runs_agree_within_monte_carlo_error():
    """f_test mean and second moment, K_1 on train and test inputs, the train loss: 4 chains each.

    ``M_W1 = 20`` makes ``a = eps M / sigma^2 = 0.6``, where the Euler recursion's stationary
    variance of the orthogonal part is ``sigma^2 / (1 - a/2) = 1.43 sigma^2``: the reduced run must
    carry the full run's step bias.  Measured at this size, the comparison fails a reduction that
    draws V from the exact OU law (stationary ``sigma^2``: max z 10.5), drops V (59) or holds it
    at its first draw (4.9); the correct one stays below 3.
    """
    z = agreement(num_steps=20000, burn_in=1000, thin=10, chains=4, preconditioner={"W1": 20.0})
    worst = {name: float(v.max()) for name, v in z.items()}
    assert max(worst.values()) < 4.5, worst


@pytest.mark.slow
def test_reduced_and_full_runs_agree_long():
    z = agreement(num_steps=200000, burn_in=10000, thin=50, chains=8)
    worst = {name: float(v.max()) for name, v in z.items()}
    assert max(worst.values()) < 4.5, worst


# ----------------------------------------------------------------------------------- resume, refusals
CHUNKED = {"num_steps": 240, "burn_in": 40, "thin": 20, "chunk_draws": 2}  # chunks of 40 steps: one compile


def test_killed_reduced_run_resumes_bit_for_bit(tmp_path, killed_after_saves):
    cfg = small(**CHUNKED, checkpoint_every=1)
    reference = sample_experiment(cfg).result
    killed_after_saves(lambda: sample_experiment(cfg, out_dir=tmp_path), saves=3)
    resumed = sample_experiment(cfg, out_dir=tmp_path, resume=True).result
    for name in reference.draws:
        np.testing.assert_array_equal(reference.draws[name], resumed.draws[name])
    np.testing.assert_array_equal(reference.kernels["test"], resumed.kernels["test"])
    assert (tmp_path / "posterior.nc").exists()


def test_side_state_is_advanced_lazily_to_each_recorded_draw():
    run = prepare_run(small(**CHUNKED))
    V0 = np.asarray(run.carry.side["V"])
    assert V0.shape == (2, 32, run.experiment.reduction.test_rank) and np.all(run.carry.side["at"] == 0)
    assert abs(V0.std() - 1.0) < 0.1  # a prior draw, sigma_1^2 = 1
    from widebayes.inference import make_chunk_fn

    chunk = make_chunk_fn(run.setup)
    burn, draws = run.chunks[0], run.chunks[1]
    carry, _ = chunk(run.carry, run.chain_keys, run.data, run.hyper, run.schedule, burn.start, 0,
                     burn.num_steps)
    np.testing.assert_array_equal(carry.side["V"], V0)  # burn-in alone does not touch V
    carry, _ = chunk(carry, run.chain_keys, run.data, run.hyper, run.schedule, draws.start, draws.num_draws,
                     draws.num_steps)
    assert np.all(carry.side["at"] == draws.start + draws.num_steps) and not np.allclose(carry.side["V"], V0)


@pytest.mark.parametrize("override, match", [
    ({"network": {"model": "network_with_biases"}}, "network_with_biases"),
    ({"sampler": {"kind": "mala"}}, "accepts or rejects"),
    ({"sampler": {"replica_exchange": {"num_replicas": 2, "T_max": 0.2}}}, "replica exchange"),
])
def test_reduction_is_refused_where_it_is_not_exact(override, match):
    cfg = {"task": {"kind": "orthogonal", "num_train": 8, "input_dim": 12},
           "network": {"width": 8, **override.get("network", {})},
           "sampler": {"reduce_inputs": True, **override.get("sampler", {})}}
    with pytest.raises(InputError, match=match) as err:
        resolve(cfg)
    assert err.value.key == "sampler.reduce_inputs"


def test_unstable_step_and_prior_only_frozen_readout_are_refused(tmp_path, capsys):
    with pytest.raises(InputError, match="diverges"):
        prepare_run(small(step_size=2.5))
    from widebayes.studies.frozen_readout import check_prior_only

    with pytest.raises(InputError, match="W1 itself"):
        check_prior_only(small())
    exp = tmp_path / "bad.toml"
    exp.write_text('[task]\nkind = "orthogonal"\nnum_train = 8\ninput_dim = 12\n'
                   '[sampler]\nkind = "hmc"\nreduce_inputs = true\n')
    assert main(["sample", str(exp), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sampler.reduce_inputs" in err[0]


def test_basis_of_the_experiment_is_float64_and_exact_on_the_run_inputs():
    run = prepare_run(small())
    b, data = run.experiment.reduction, run.experiment.data
    U_full = np.random.default_rng(3).normal(size=(32, 60))
    U, V = split_first_layer(U_full, b)
    z_test = data.X_test @ U_full.T / np.sqrt(60)
    np.testing.assert_allclose(np.asarray(run.data["X_test"], np.float64) @ np.hstack([U, V]).T / np.sqrt(60),
                               z_test, rtol=1e-5, atol=1e-5)


def test_bench_times_full_and_reduced_through_the_driver(capsys):
    from widebayes.bench import bench_reduce_inputs

    res = bench_reduce_inputs(repeats=1, num_draws=1, thin=2, width=8, num_chains=1)
    assert res.full_ms_per_step > 0 and res.reduced_ms_per_step > 0 and (res.rank, res.test_rank) == (20, 40)
    out = capsys.readouterr().out
    assert "N0 = 784" in out and "faster" in out


def test_a_completion_sees_the_whole_first_layer_on_train_and_test_inputs():
    """How the reduction composes with a completion (the collapsed readout draws ``a`` at recorded
    draws from features it computes itself): the side state runs first and hands it ``W1 = [U, V]``
    and inputs of one width, so ``z1 = X W1^T / sqrt(N0)`` with the network's own code is exact."""
    from widebayes.inference import run_chains
    from widebayes.observables import layer_features

    def features(key, params, data, kwargs, T):
        spec = kwargs["spec"]
        return params, {"h_train": layer_features(params, data["X_train"], spec)[-1].T,
                        "h_test": layer_features(params, data["X_test"], spec)[-1].T}

    run = prepare_run(small(**CHUNKED))
    setup = run.setup._replace(complete=features, key=run.setup.key + ("features",))
    draws = run_chains(setup, run.carry, run.chain_keys, run.data, run.hyper, run.schedule, run.chunks).draws
    np.testing.assert_allclose(draws["h_train"], draws["phi_L"], rtol=1e-6)
    np.testing.assert_allclose(draws["h_test"], draws["phi_L_test"], rtol=1e-6)
