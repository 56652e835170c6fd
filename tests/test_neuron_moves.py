"""Neuron moves (widebayes.neuron_moves): the proposal's densities, the Metropolis-Hastings ratio,
the driver's use of them, and the stationary law against MALA alone where MALA mixes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from widebayes.models.presets import preset

from widebayes import neuron_moves as nm
from widebayes.collapsed import marginal_loglik
from widebayes.config import MAX_NEURON_SWEEP, resolve
from widebayes.errors import InputError
from widebayes.sampling import sample_experiment


def _field(H, Y, phi, sigma_a2, T_eff, gamma):
    """The field at ``H`` from a fresh factorisation."""
    scale = H.shape[1] ** gamma
    return nm.field_of(nm.gram_of(H, Y, phi, sigma_a2, T_eff, gamma), sigma_a2, T_eff, scale)


def _loglik(H, Y, phi, sigma_a2, T_eff, gamma):
    """The collapsed log likelihood at ``H`` from a fresh factorisation (widebayes.collapsed)."""
    return marginal_loglik(phi(H), Y, sigma_a2 / H.shape[1] ** (2 * gamma), T_eff)


def _grid(points=256):
    return nm.make_grid(jax.nn.sigmoid, 1.0, jnp.float32, points)


def test_piecewise_draws_follow_their_density():
    """The inverse-CDF draws have the density that piecewise_log_pdf evaluates (KS test per row)."""
    grid = _grid()
    readout, residual, T_eff = jnp.array([1.5, -0.3]), jnp.array([[0.4, 0.1], [-0.5, 0.2]]), 0.05
    ell = nm.tilted_log_values(grid, residual @ readout / T_eff, jnp.sum(readout**2) / (2 * T_eff))
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = jax.vmap(lambda k: nm.piecewise_sample(k, ell, grid))(keys)
    xs = np.linspace(float(grid.h[0]), float(grid.h[-1]), 8001)
    density = jax.jit(jax.vmap(lambda x, e: jnp.exp(nm.piecewise_log_pdf(x[None], e[None], grid)), (0, None)))
    for row in range(2):
        pdf = np.asarray(density(jnp.asarray(xs, jnp.float32), ell[row]), np.float64)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(xs))])
        assert abs(cdf[-1] - 1) < 2e-3  # normalised
        result = stats.kstest(np.asarray(draws[:, row]), lambda x: np.interp(x, xs, cdf / cdf[-1]))
        assert result.pvalue > 1e-3


def test_grid_mixture_in_one_vmap_equals_its_components_one_by_one():
    """The grid proposal evaluates its mixture's components in one vmap (5x faster for one chain at
    N = P = 500); the density is the one the sequential evaluation (the Laplace proposal's path) gives."""
    P, N = 40, 24
    H = jax.random.normal(jax.random.PRNGKey(1), (P, N), jnp.float32)
    Y = jnp.asarray(np.random.default_rng(1).normal(size=(P, 2)), jnp.float32)
    field = _field(H, Y, jax.nn.sigmoid, 0.5, 0.05, 1.0)
    field = nm.without_neuron(field, jax.nn.sigmoid(H[:, 3]), 3, N)
    components = nm.draw_components(jax.random.PRNGKey(2), N, 3, 8, jnp.float32)
    grid = nm.grid_proposal(jax.nn.sigmoid, 1.0, jnp.float32)
    assert grid.vectorised
    x = H[:, 5] + 0.1
    together = nm.mixture_log_pdf(x, H, field, components, grid, N, 0.05)
    one_by_one = nm.mixture_log_pdf(x, H, field, components, grid._replace(vectorised=False), N, 0.05)
    assert np.isfinite(float(together))
    np.testing.assert_allclose(float(together), float(one_by_one), rtol=1e-5)


def _numpy_gram(H, Y, sigma_a2, T_eff, gamma=1.0):
    """C^-1, C^-1 Y and log p(Y | Phi) in float64 numpy (sigmoid features)."""
    Phi = 1.0 / (1.0 + np.exp(-np.asarray(H, np.float64)))
    P, N = Phi.shape
    C = sigma_a2 / N ** (2 * gamma) * Phi @ Phi.T + T_eff * np.eye(P)
    alpha = np.linalg.solve(C, np.asarray(Y, np.float64))
    loglik = -0.5 * np.sum(np.asarray(Y, np.float64) * alpha) - 0.5 * Y.shape[1] * np.linalg.slogdet(C)[1]
    return np.linalg.inv(C), alpha, loglik


def test_rank_two_update_is_the_fresh_factorisation():
    """Replacing one neuron's column by the rank-two update gives the inverse, C^-1 Y and the change
    of the log likelihood that a factorisation of the new Gram system gives (float64 reference)."""
    rng = np.random.default_rng(4)
    P, N, i = 30, 20, 7
    H = jnp.asarray(rng.normal(size=(P, N)) * 1.5, jnp.float32)
    Y = jnp.asarray(rng.normal(size=(P, 3)), jnp.float32)
    h_new = jnp.asarray(rng.normal(size=P) * 2.0, jnp.float32)
    gram = nm.gram_of(H, Y, jax.nn.sigmoid, 0.5, 0.05, 1.0)
    new, change = nm.replace_column(gram, i, jax.nn.sigmoid(h_new))
    inverse0, _, loglik0 = _numpy_gram(H, Y, 0.5, 0.05)
    inverse1, alpha1, loglik1 = _numpy_gram(H.at[:, i].set(h_new), Y, 0.5, 0.05)
    for got, expected in ((gram.inverse, inverse0), (new.inverse, inverse1), (new.alpha, alpha1)):
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    np.testing.assert_allclose(np.asarray(new.Phi), np.asarray(jax.nn.sigmoid(H.at[:, i].set(h_new))))
    assert abs(loglik1 - loglik0) > 1.0  # the replacement matters ...
    np.testing.assert_allclose(float(change), loglik1 - loglik0, rtol=1e-4)  # ... and is measured exactly


def test_sweep_keeps_its_gram_system_that_of_its_state():
    """After a sweep of 32 moves sharing one factorisation (float32, rank-two updates only), the
    Gram system it carries is that of its final state, and the coordinates are its preactivations."""
    rng = np.random.default_rng(5)
    P, N = 60, 40
    H = jnp.asarray(rng.normal(size=(P, N)), jnp.float32)
    Y = jnp.asarray(np.where(rng.random((P, 2)) < 0.5, -0.5, 1.0), jnp.float32)
    kw = dict(phi=jax.nn.sigmoid, proposal=nm.grid_proposal(jax.nn.sigmoid, 1.0, jnp.float32),
              sigma_a2=1.0, T_eff=0.05, gamma=1.0)
    H_end, coordinates, gram, accepted = jax.jit(
        lambda key: nm.sweep(key, H, H.T, Y, MAX_NEURON_SWEEP, **kw))(jax.random.PRNGKey(0))
    assert accepted.shape == (MAX_NEURON_SWEEP,) and 0.05 < float(jnp.mean(accepted)) < 1.0
    np.testing.assert_array_equal(np.asarray(coordinates), np.asarray(H_end).T)
    assert np.mean(np.any(np.asarray(H_end) != np.asarray(H), axis=0)) > 0.1  # neurons moved
    _, alpha, _ = _numpy_gram(H_end, Y, 1.0, 0.05)
    np.testing.assert_allclose(np.asarray(gram.alpha), alpha, rtol=1e-3, atol=1e-3 * np.abs(alpha).max())


def _antisymmetry(proposal, H, coordinates, i=4, mixture_size=8, seed=0, phi=jax.nn.sigmoid, outliers=0,
                  T_eff=0.05):
    """The log ratios of the move H -> H' and of the reverse move H' -> H (same neuron, same
    mixture), computed independently, are opposite: forward and reverse use the densities of the
    same kernel.  ``coordinates[:, i]`` is neuron i's coordinate (preactivations or weights).  With
    ``outliers``, the move tested is one drawn from an outlier component.  Returns the component the
    accepted move was drawn from, and the mixture."""
    (P, N), m = H.shape, 3
    Y = jnp.asarray(np.random.default_rng(seed).normal(size=(P, m)), H.dtype)
    kw = dict(phi=phi, proposal=proposal, sigma_a2=0.5, T_eff=T_eff, gamma=1.0)
    for attempt in range(100):
        key = jax.random.PRNGKey(attempt)
        k_components, k_pick = jax.random.split(key, 4)[:2]
        components = nm.draw_components(k_components, N, i, mixture_size, H.dtype, outliers, P)
        pick = jax.random.categorical(k_pick, components.log_weights)
        if outliers and not float(components.masses[pick]) > 0:
            continue  # with outlier components, test a move drawn from one
        move = nm.propose_and_accept(key, H, coordinates[:, i], i, Y, mixture_size=mixture_size,
                                     outliers=outliers, **kw)
        if bool(move.accepted):
            break
    else:
        pytest.fail("no proposal accepted in 100 tries")
    H_new, x_old, x_new = move.H, coordinates[:, i], move.x
    f_old = nm.without_neuron(_field(H, Y, phi, 0.5, T_eff, 1.0), phi(H[:, i]), i, N**1.0)  # cavity
    f_new = nm.without_neuron(_field(H_new, Y, phi, 0.5, T_eff, 1.0), phi(H_new[:, i]), i, N**1.0)
    q = lambda x, state, f: nm.mixture_log_pdf(x, state, f, components, proposal, N**1.0, T_eff)  # noqa: E731
    loglik_change = _loglik(H, Y, phi, 0.5, T_eff, 1.0) - _loglik(H_new, Y, phi, 0.5, T_eff, 1.0)
    r_rev = (loglik_change + proposal.prior_logpdf(x_old) - proposal.prior_logpdf(x_new)
             + q(x_new, H, f_old) - q(x_old, H_new, f_new))
    np.testing.assert_allclose(np.asarray(proposal.preactivations(x_new)), np.asarray(H_new[:, i]), rtol=1e-5)
    assert np.isclose(float(move.log_ratio), -float(r_rev), atol=2e-3 * max(1.0, abs(float(move.log_ratio))))
    return pick, components


def _dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def test_log_ratio_is_antisymmetric():
    rng = np.random.default_rng(1)
    H = jnp.asarray(rng.normal(size=(12, 20)) * 1.5, _dtype())
    _antisymmetry(nm.grid_proposal(jax.nn.sigmoid, 1.0, _dtype()), H, H)


def test_log_ratio_is_antisymmetric_where_the_cavity_field_matters():
    """At a small T_eff the moved neuron's own share of the residual shifts each input's tilt by
    ``|mu_i|^2 phi / (N^2 T_eff)``: the reverse density must be taken in the new state's cavity
    field (with the full residual in this test's reverse computation it fails)."""
    rng = np.random.default_rng(1)
    H = jnp.asarray(rng.normal(size=(12, 20)) * 1.5, _dtype())
    _antisymmetry(nm.grid_proposal(jax.nn.sigmoid, 1.0, _dtype()), H, H, T_eff=0.002)


def _correlated_inputs(P, n, seed=0):
    """A (P x n) with a shared direction: the preactivations h = A w are correlated across inputs."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(P, n)) + 0.8 * rng.normal(size=(1, n))) / np.sqrt(n)


@pytest.mark.parametrize("P, n", [(12, 20), (12, 8)])  # more inputs than weights: K = A A^T singular
def test_laplace_log_ratio_is_antisymmetric(P, n):
    A = jnp.asarray(_correlated_inputs(P, n, seed=2), _dtype())
    W = jnp.asarray(np.random.default_rng(3).normal(size=(20, n)), _dtype())  # N = 20 neurons' weights
    _antisymmetry(nm.laplace_proposal(jax.nn.sigmoid, A, 1.0), A @ W.T, W.T)


def test_reflected_components_keep_the_ratio_antisymmetric(monkeypatch):
    """Every component reflected (readout ``-mu_j``, Newton from ``-h_j``): forward and reverse still
    use the densities of one kernel, for the Laplace proposal (which reads the start)."""
    monkeypatch.setattr(nm, "REFLECTED_SHARE", 1.0)
    A = jnp.asarray(_correlated_inputs(12, 20, seed=2), _dtype())
    W = jnp.asarray(np.random.default_rng(3).normal(size=(20, 20)), _dtype())
    _antisymmetry(nm.laplace_proposal(jax.nn.sigmoid, A, 1.0), A @ W.T, W.T)


def test_components_are_other_neurons_a_quarter_reflected_at_small_weight():
    keys = [jax.random.PRNGKey(k) for k in range(200)]
    draws = [nm.draw_components(key, 20, 7, nm.MIXTURE_SIZE, jnp.float32) for key in keys]
    neurons = np.stack([np.asarray(d.neurons) for d in draws])
    signs = np.stack([np.asarray(d.signs) for d in draws])
    assert not (neurons == 7).any() and all(len(set(row)) == nm.MIXTURE_SIZE for row in neurons)
    assert set(np.unique(signs)) == {-1.0, 1.0}
    share = (signs < 0).mean()  # 3,200 signs: standard error 0.008
    assert abs(share - nm.REFLECTED_SHARE) < 0.03, share
    weights = np.exp(np.stack([np.asarray(d.log_weights, np.float64) for d in draws]))
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-5)
    mixed = (signs < 0).any(1) & (signs > 0).any(1)
    reflected_weight = np.where(signs < 0, weights, 0.0).sum(1)[mixed]
    np.testing.assert_allclose(reflected_weight, nm.REFLECTED_WEIGHT, rtol=1e-5)


@pytest.mark.parametrize("kind", ["grid", "laplace"])
def test_outlier_components_keep_the_ratio_antisymmetric(monkeypatch, kind):
    """ReLU, the mixture with outlier components at most of its weight: an accepted move drawn from
    an outlier component, and its reverse, use the densities of one kernel."""
    monkeypatch.setattr(nm, "OUTLIER_WEIGHT", 0.9)
    rng = np.random.default_rng(5)
    if kind == "grid":
        H = jnp.asarray(rng.normal(size=(12, 20)), _dtype())
        args = (nm.grid_proposal(jax.nn.relu, 1.0, _dtype()), H, H)
    else:
        A = jnp.asarray(_correlated_inputs(12, 20, seed=2), _dtype())
        W = jnp.asarray(rng.normal(size=(20, 20)), _dtype())
        args = (nm.laplace_proposal(jax.nn.relu, A, 1.0), A @ W.T, W.T)
    pick, components = _antisymmetry(*args, phi=jax.nn.relu, outliers=nm.OUTLIER_COMPONENTS)
    assert float(components.masses[pick]) > 0  # the accepted move came from an outlier component


def test_outlier_components_join_at_their_weight_and_leave_the_others_as_they_were():
    """With ``outliers`` components the first K are drawn exactly as without them (the runs without
    outlier moves keep their draws); the outlier components share OUTLIER_WEIGHT, take a mass from
    the ladder and a training input, and their readout has norm sqrt(N mass) along that input's
    residual."""
    N, P, K, n_out = 20, 12, nm.MIXTURE_SIZE, nm.OUTLIER_COMPONENTS
    for seed in range(20):
        key = jax.random.PRNGKey(seed)
        plain = nm.draw_components(key, N, 7, K, jnp.float32)
        more = nm.draw_components(key, N, 7, K, jnp.float32, n_out, P)
        np.testing.assert_array_equal(np.asarray(more.neurons[:K]), np.asarray(plain.neurons))
        np.testing.assert_array_equal(np.asarray(more.signs[:K]), np.asarray(plain.signs))
        weights = np.exp(np.asarray(more.log_weights, np.float64))
        plain_weights = np.exp(np.asarray(plain.log_weights, np.float64))
        np.testing.assert_allclose(weights[:K], (1 - nm.OUTLIER_WEIGHT) * plain_weights, rtol=1e-5)
        np.testing.assert_allclose(weights[K:].sum(), nm.OUTLIER_WEIGHT, rtol=1e-5)
        assert not np.any(np.asarray(more.masses[:K])) and set(np.asarray(more.masses[K:]).tolist()) <= {
            np.float32(x) for x in nm.OUTLIER_MASSES}
        assert np.all((np.asarray(more.inputs) >= 0) & (np.asarray(more.inputs) < P))
        assert not np.any(np.asarray(more.neurons) == 7)
    rng = np.random.default_rng(0)
    H = jnp.asarray(rng.normal(size=(P, N)), jnp.float32)
    Y = jnp.asarray(rng.normal(size=(P, 3)), jnp.float32)
    field = _field(H, Y, jax.nn.relu, 0.5, 0.05, 1.0)
    k = K  # the first outlier component
    alpha, beta = nm.component_tilt(field, more, k, float(N), 0.05)
    mass, r = float(more.masses[k]), np.asarray(field.residual[int(more.inputs[k])])
    readout = np.sqrt(N * mass) * r / np.linalg.norm(r)
    expected = np.asarray(field.residual) @ readout / (N * 0.05)
    np.testing.assert_allclose(np.asarray(alpha), expected, rtol=1e-4)
    np.testing.assert_allclose(float(beta), N * mass / (2 * N**2 * 0.05), rtol=1e-5)


def test_outlier_moves_need_the_neuron_moves():
    cfg = _tiny(steps=200)
    cfg["sampler"]["outlier_moves"] = True
    with pytest.raises(InputError, match="sampler.outlier_moves"):
        resolve(cfg)


def test_laplace_component_draws_and_density_are_those_of_one_gaussian():
    """A Laplace component's draws (perturb, then solve) have the mean and covariance
    ``(I / sigma^2 + A^T W A)^-1`` of the Gaussian whose log density laplace_log_pdf evaluates (up to
    its stated constant ``-n/2 log(2 pi sigma^2)``), and Newton lands on the tilted density's mode."""
    P, n, sigma2 = 6, 9, 1.5
    A = _correlated_inputs(P, n, seed=3)
    alpha = jnp.asarray(np.linspace(-3.0, 4.0, P))
    beta = 0.7
    fit = nm.laplace_fit(jnp.asarray(A), sigma2, jnp.zeros(P), jax.nn.sigmoid, alpha, beta, 30)
    d1, _ = nm.tilt_derivatives(jnp.asarray(A) @ fit.mean, jax.nn.sigmoid, alpha, beta)
    np.testing.assert_allclose(np.asarray(fit.mean) / sigma2, A.T @ np.asarray(d1), atol=1e-4)  # mode
    W = np.asarray(fit.sqrt_w) ** 2
    Sigma = np.linalg.inv(np.eye(n) / sigma2 + A.T @ np.diag(W) @ A)
    draws = jax.vmap(lambda k: nm.laplace_sample(k, fit, jnp.asarray(A), sigma2))(
        jax.random.split(jax.random.PRNGKey(0), 40000))
    draws = np.asarray(draws, np.float64)
    se = np.sqrt(np.diag(Sigma) / len(draws))
    assert np.all(np.abs(draws.mean(0) - np.asarray(fit.mean)) < 5 * se)
    np.testing.assert_allclose(np.cov(draws.T), Sigma, atol=0.03 * np.abs(Sigma).max())
    w = np.asarray(fit.mean) + np.linalg.cholesky(Sigma) @ np.random.default_rng(4).normal(size=n)
    exact = stats.multivariate_normal(np.asarray(fit.mean), Sigma).logpdf(w)
    stated = float(nm.laplace_log_pdf(jnp.asarray(w), fit, jnp.asarray(A), sigma2)) \
        - 0.5 * n * np.log(2 * np.pi * sigma2)
    assert np.isclose(stated, exact, atol=1e-3)


def _tiny(kind="mala", moves=0, steps=4000, chains=2, seed=1, inputs="orthogonal", depth=1, temperature=0.05,
          activation="sigmoid", outlier_moves=False, y_minus=None):
    cfg = preset("demo")
    if y_minus is not None:
        cfg["task"]["y_minus"] = y_minus
    cfg["task"].update(num_train=48, input_dim=56, num_test=0)
    if inputs == "mnist":
        cfg["task"] = {"kind": "mnist", "num_classes": 3, "num_train": 48, "num_test": 0, "seed": 0,
                       "y_minus": 0.0}
    cfg["network"].update(width=24, temperature=temperature, depth=depth, activation=activation)
    cfg["sampler"].update(kind=kind, step_size=0.01, num_steps=steps, burn_in=steps // 4, thin=20,
                          num_chains=chains, seed=seed, neuron_moves=moves, progress=False,
                          outlier_moves=outlier_moves)
    return cfg


@pytest.mark.parametrize("sweep", [1, 4])
def test_driver_runs_moves_records_acceptance_and_resumes_bit_for_bit(tmp_path, sweep):
    cfg = _tiny(kind="langevin", moves=5, steps=400)
    cfg["sampler"]["neuron_sweep"] = sweep
    out = sample_experiment(resolve(cfg))
    acc = out.result.draws["move_accept"]
    assert acc.shape == (2, 15) and np.all((acc >= 0) & (acc <= 1))
    assert "move_accept" in out.idata.sample_stats
    chunked = dict(cfg, sampler={**cfg["sampler"], "chunk_draws": 4})
    again = sample_experiment(resolve(chunked))
    np.testing.assert_array_equal(out.result.draws["a"], again.result.draws["a"])


@pytest.mark.parametrize("change, says", [
    ({"network": {"depth": 2, "tied_weights": True}}, "untied"),
    ({"sampler": {"kind": "hmc"}}, "langevin"),
    ({"sampler": {"reduce_inputs": True}}, "reduce_inputs"),
])
def test_refusals_name_the_key(change, says):
    cfg = _tiny(moves=5, steps=200)
    for section, values in change.items():
        cfg[section] = {**cfg[section], **values}
    with pytest.raises(InputError) as err:
        sample_experiment(resolve(cfg))
    assert "neuron_moves" in str(err.value) or says in str(err.value)


@pytest.mark.parametrize("sampler, says", [
    ({"neuron_sweep": 4}, "needs sampler.neuron_moves"),
    ({"neuron_moves": 5, "neuron_sweep": MAX_NEURON_SWEEP + 1}, "must be in"),
])
def test_sweep_refusals_name_the_key(sampler, says):
    cfg = _tiny(steps=200)
    cfg["sampler"].update(sampler)
    with pytest.raises(InputError, match="sampler.neuron_sweep") as err:
        resolve(cfg)
    assert says in str(err.value)


def test_mnist_experiment_file_takes_the_laplace_proposal():
    """The README's MNIST run (experiments/mnist_codes_moves.toml) resolves, and its inputs, not
    orthogonal, get the Laplace proposal; the toy task keeps the exact grid."""
    import tomllib
    from pathlib import Path

    from widebayes.experiment import build_experiment

    path = Path(__file__).resolve().parents[1] / "experiments" / "mnist_codes_moves.toml"
    cfg = resolve(tomllib.loads(path.read_text()))
    assert nm.check_applicable(build_experiment(cfg), cfg["sampler"]) == "laplace"
    toy = resolve(_tiny(moves=5))
    assert nm.check_applicable(build_experiment(toy), toy["sampler"]) == "grid"


@pytest.mark.slow
@pytest.mark.parametrize("shape", [dict(inputs="orthogonal", depth=1, temperature=0.05),
                                   dict(inputs="mnist", depth=1, temperature=0.05),
                                   dict(inputs="orthogonal", depth=2, temperature=0.1),
                                   dict(inputs="orthogonal", depth=1, temperature=0.5, activation="relu",
                                        y_minus=-0.5, outlier_moves=True)],
                         ids=["toy", "mnist", "depth2", "relu-outliers"])
def test_stationary_law_matches_mala_alone_where_mala_mixes(shape):
    """P = 48, N = 24 (MALA mixes the codes here): MALA with a neuron move after every 5th step and
    MALA alone, 4 chains each, agree on the mean loss, the kernel trace and the largest readout
    ``max_i |a_i|^2`` within 4 combined Monte Carlo standard errors (ArviZ), with 2% or more of the
    moves accepted.  The toy task's orthogonal inputs at T = 0.05 (grid proposal; measured
    acceptance 4.4%); MNIST digits 0-2 at T = 0.05 (Laplace proposal over the first layer's weights;
    measured: loss 2.456 +- 0.025 against 2.414 +- 0.014, kernel trace 663 +- 10 against 669 +- 8,
    acceptance 2.4%); a two-hidden-layer network on the toy task at T = 0.1 (Laplace proposal over
    the feature layer's weights, the first layer held fixed; measured: loss 4.071 +- 0.001 against
    4.070 +- 0.001, trace 1063.8 +- 0.4 against 1064.0 +- 0.3, acceptance 52%; at T = 0.05 MALA
    alone did not mix there); ReLU at y- = -1/2, T = 0.5 with the outlier components
    (``outlier_moves``; measured: loss 20.10 +- 0.13 against 20.36 +- 0.22, trace 1183 +- 7 against
    1168 +- 13, largest |a|^2 6.87 +- 0.15 against 7.06 +- 0.16, acceptance 58%)."""
    import arviz as az

    def summary(out):
        loss = out.result.draws["loss"]
        trace = np.einsum("cdnp,cdnp->cd", out.result.draws["phi_L"], out.result.draws["phi_L"])
        largest = np.max(np.sum(out.result.draws["a"] ** 2, axis=-1), axis=-1)
        return [(float(x.mean()), float(az.mcse(x, method="mean"))) for x in (loss, trace, largest)]

    plain_shape = {k: v for k, v in shape.items() if k != "outlier_moves"}
    plain = summary(sample_experiment(resolve(_tiny(steps=16000, chains=4, **plain_shape))))
    moved_out = sample_experiment(resolve(_tiny(moves=5, steps=16000, chains=4, seed=2, **shape)))
    assert np.nanmean(moved_out.result.draws["move_accept"]) > 0.02
    for (m0, s0), (m1, s1) in zip(plain, summary(moved_out)):
        assert abs(m0 - m1) < 4 * np.hypot(s0, s1)


@pytest.mark.slow
def test_codes_at_y_minus_0_1_reach_the_theory():
    """The y- scan's open disagreement (README): sigmoid toy task, N = P = 100, T = 0.01, y- = 0.1.
    Plain Langevin (40k steps) keeps about 20% of the neurons in the single-class code 100, the
    theory 0.7%; with a neuron move after every 10th step both chains hold the theory's codes
    (measured 0.33 / 0.33 / 0.32 / 0.02 against 0.333 / 0.333 / 0.326 / 0.007), about 80 s."""
    from widebayes.codes import class_means, code_ids, default_threshold
    from widebayes.theory.predict import predictions

    cfg = preset("demo")
    cfg["task"]["y_minus"] = 0.1
    cfg["sampler"].update(neuron_moves=10, num_steps=40000, burn_in=20000, thin=200, progress=False)
    out = sample_experiment(resolve(cfg))
    labels = out.experiment.data.labels_train
    ids = code_ids(class_means(out.result.draws["phi_L"], labels), default_threshold("sigmoid", 1.0))
    sampled = np.bincount(ids.ravel(), minlength=8) / ids.size
    theory = predictions(out.experiment)
    for code in theory["codes"]:
        cid = sum(1 << c for c, bit in enumerate(code["code"]) if bit == "1")
        assert abs(sampled[cid] - code["fraction"]) < 0.03, (code, sampled[cid])


def test_mixing_bench_lists_the_neuron_moves_and_counts_their_gradient():
    from widebayes.bench_mixing import gradients_per_step, reference_configs, sampler_config

    configs = reference_configs()
    with_moves = [name for name, (_, samplers) in configs.items() if "langevin + neuron moves" in samplers]
    assert len(with_moves) >= 2
    base, samplers = configs[with_moves[0]]
    cfg = sampler_config(base, samplers["langevin + neuron moves"], 200, 100, 10, 2, 0)
    assert gradients_per_step(cfg["sampler"]) == pytest.approx(1.1)
    swept = sampler_config(base, samplers["langevin + neuron sweeps"], 200, 100, 10, 2, 0)
    assert swept["sampler"]["neuron_sweep"] == 32  # one state rebuild per sweep
    assert gradients_per_step(swept["sampler"]) == pytest.approx(1.1)
