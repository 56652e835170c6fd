"""Samplers against exact answers (statistical tier: fixed seeds, several chains, MCSE bounds).

- every sampler on a correlated Gaussian recovers its mean and covariance;
- a linear network with fixed hidden weights has an exactly Gaussian readout posterior (Bayesian
  linear regression); MALA, HMC and NUTS match it, unadjusted Langevin matches it up to its known
  discretisation bias, which shrinks with the step;
- annealing during burn-in leaves the stationary loss unchanged;
- tempered SMC on a conjugate Gaussian recovers the posterior moments and the evidence.

Means and second moments are checked to ``K`` Monte Carlo standard errors, MCSE = sd / sqrt(ESS)
with ArviZ's ESS over (chain, draw).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.stats import multivariate_normal
from widebayes.samplers.smc import prior_particles, run_smc, split_gaussian_prior

from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.experiment import build_sampler
from widebayes.inference import whiten
from widebayes.networks import NetworkSpec, apply
from widebayes.sampling import sample_experiment

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

K = 5.0  # tolerance in Monte Carlo standard errors


# ----------------------------------------------------------------------------- helpers
def run(sampler, logdensity, x0: dict, params: dict, num_steps: int, seed: int, warmup_steps: int = 0):
    """Chains of ``sampler`` (vmap over the leading axis of ``x0``), scan over steps.

    Returns the flattened positions (chain, draw, d), the acceptance (chain, draw), and the
    parameters after the warmup.
    """
    num_chains = jax.tree.leaves(x0)[0].shape[0]
    keys = jax.random.split(jax.random.PRNGKey(seed), num_chains)
    if warmup_steps:
        warm = jax.vmap(lambda k, x, p: sampler.warmup(k, sampler.init(x, logdensity), logdensity, p,
                                                       warmup_steps))
        state, params = jax.jit(warm)(jax.random.split(jax.random.PRNGKey(seed + 1), num_chains), x0, params)
    else:
        state = jax.vmap(lambda x: sampler.init(x, logdensity))(x0)

    def one_chain(key, state, p):
        def body(s, i):
            s, info = sampler.step(jax.random.fold_in(key, i), s, logdensity, p)
            return s, (ravel_pytree(s.position)[0], info.accept_prob)

        return jax.lax.scan(body, state, jnp.arange(num_steps))[1]

    xs, accept = jax.jit(jax.vmap(one_chain))(keys, state, params)
    return np.asarray(xs, np.float64), np.asarray(accept), params


def mean_and_mcse(x):
    """Mean of a (chain, draw) array and its Monte Carlo standard error."""
    return x.mean(), x.std() / np.sqrt(az.ess(x, method="mean"))


def assert_within_mcse(x, target, what: str):
    est, se = mean_and_mcse(x)
    assert abs(est - target) < K * se, f"{what}: {est:.5g} vs {target:.5g} (MCSE {se:.2g})"


def assert_moments(xs, mean, cov, label: str):
    """Every mean and every (co)variance E[(x_i - mu_i)(x_j - mu_j)] within K MCSE."""
    d = xs.shape[-1]
    for i in range(d):
        assert_within_mcse(xs[..., i], mean[i], f"{label} mean[{i}]")
    centred = xs - mean
    for i in range(d):
        for j in range(i, d):
            assert_within_mcse(centred[..., i] * centred[..., j], cov[i, j], f"{label} cov[{i},{j}]")


def chain_params(num_chains: int, step_size: float) -> dict:
    return {"step_size": jnp.full(num_chains, step_size, jnp.float32)}


# ------------------------------------------------------------------- correlated Gaussian
MU = np.array([1.0, -0.5, 2.0])
SIGMA = np.array([[1.0, 0.6, -0.3], [0.6, 0.8, 0.1], [-0.3, 0.1, 0.5]])


def gaussian_logdensity(mean, cov):
    precision = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    mean = jnp.asarray(mean, jnp.float32)

    def logdensity(theta):
        x = theta["x"] - mean
        return -0.5 * x @ precision @ x

    return logdensity


GAUSSIAN_RUNS = {  # kind: (config, step size, steps, warmup steps)
    "mala": ({}, 0.1, 4000, 0),
    "hmc": ({"num_integration_steps": 5, "adapt_mass_matrix": True}, 0.3, 1000, 300),
    "nuts": ({"max_num_doublings": 5}, 0.3, 1000, 300),
}


@pytest.mark.parametrize("kind", sorted(GAUSSIAN_RUNS))
def test_sampler_recovers_a_correlated_gaussian(kind):
    extra, step_size, num_steps, warmup = GAUSSIAN_RUNS[kind]
    sampler = build_sampler({"kind": kind, **extra})
    x0 = {"x": jax.random.normal(jax.random.PRNGKey(0), (8, 3)) * 2.0}
    xs, accept, params = run(sampler, gaussian_logdensity(MU, SIGMA), x0, chain_params(8, step_size),
                             num_steps, seed=11, warmup_steps=warmup)
    burn = num_steps // 5
    assert_moments(xs[:, burn:], MU, SIGMA, kind)
    assert 0.5 < accept.mean() <= 1.0
    if warmup:  # dual averaging towards target_accept = 0.8 (Stan's short final window overshoots)
        assert 0.7 < accept[:, burn:].mean() < 0.98
        assert params["inverse_mass_matrix"].shape == (8, 3)
        assert not np.allclose(params["step_size"], step_size)


# ------------------------------------------------ linear network, fixed hidden weights
class Readout:
    """A linear network z = W1 x / sqrt(N0), f = z a / N (gamma = 1) with W1 held fixed.

    The readout posterior is Bayesian linear regression on the features Phi = z:
        Lambda = I / sigma_a2 + Phi^T Phi / (N^2 T_eff),  mean = Lambda^-1 Phi^T Y / (N T_eff),
    for each output column (one here).
    """

    P, N0, N, sigma_a2, T = 6, 5, 4, 0.5, 0.1

    def __init__(self, seed=7):
        rng = np.random.default_rng(seed)
        self.X = rng.normal(size=(self.P, self.N0))
        self.W1 = rng.normal(size=(self.N, self.N0))
        self.Y = rng.normal(size=(self.P, 1))
        self.T_eff = self.T / self.N
        self.spec = NetworkSpec(input_dim=self.N0, width=self.N, depth=1, num_outputs=1,
                                activation="linear", gamma=1.0, sigma_a2=self.sigma_a2)
        Phi = self.X @ self.W1.T / np.sqrt(self.N0)
        self.precision = np.eye(self.N) / self.sigma_a2 + Phi.T @ Phi / (self.N**2 * self.T_eff)
        self.cov = np.linalg.inv(self.precision)
        self.mean = self.cov @ Phi.T @ self.Y[:, 0] / (self.N * self.T_eff)

    def logdensity(self):
        """log p(a | X, Y) + const on the whitened readout a' = a / sqrt(sigma_a2)."""
        X, W1, Y = (jnp.asarray(v, jnp.float32) for v in (self.X, self.W1, self.Y))

        def logdensity(theta, T_eff):
            _, f = apply({"W1": W1, "a": theta["a"]}, X, self.spec)
            prior = -0.5 * jnp.sum(theta["a"] ** 2) / self.sigma_a2
            return prior - 0.5 * jnp.sum((Y - f) ** 2) / T_eff

        white = whiten(logdensity, {"a": self.sigma_a2})
        return lambda theta: white(theta, self.T_eff)

    def ula_cov(self, eps):
        """Stationary covariance of unadjusted Langevin at step eps on the whitened coordinates.

        For a Gaussian target of precision L' (whitened), x <- (I - eps L') x + ... + sqrt(2 eps) xi
        has C' = L'^-1 (I - eps L' / 2)^-1: exact mean, variance inflated by O(eps).
        """
        Lw = self.precision * self.sigma_a2
        Cw = np.linalg.inv(Lw) @ np.linalg.inv(np.eye(self.N) - eps * Lw / 2)
        return Cw * self.sigma_a2

    def sample(self, kind, step_size, num_steps, seed, warmup=0, **extra):
        x0 = {"a": jax.random.normal(jax.random.PRNGKey(seed), (16, self.N, 1))}
        xs, accept, _ = run(build_sampler({"kind": kind, **extra}), self.logdensity(), x0,
                            chain_params(16, step_size), num_steps, seed, warmup)
        return xs[:, num_steps // 5:] * np.sqrt(self.sigma_a2), accept


READOUT_RUNS = {  # kind: (config, step size, steps, warmup steps)
    "mala": ({}, 0.05, 3000, 0),
    "hmc": ({"num_integration_steps": 8}, 0.1, 600, 200),
    "nuts": ({"max_num_doublings": 5}, 0.1, 600, 200),
}


@pytest.mark.parametrize("kind", sorted(READOUT_RUNS))
def test_exact_samplers_match_the_gaussian_readout_posterior(kind):
    model = Readout()
    extra, step_size, num_steps, warmup = READOUT_RUNS[kind]
    xs, _ = model.sample(kind, step_size, num_steps, seed=5, warmup=warmup, **extra)
    assert_moments(xs, model.mean, model.cov, kind)


def test_langevin_bias_matches_theory_and_shrinks_with_the_step():
    model = Readout()
    stiff = np.linalg.eigh(model.precision * model.sigma_a2)
    lam, u = stiff.eigenvalues[-1], stiff.eigenvectors[:, -1]  # stiffest whitened direction
    errors = {}
    for eps in (0.08, 0.02):
        xs, _ = model.sample("langevin", eps, 4000, seed=21)
        assert_moments(xs, model.mean, model.ula_cov(eps), f"ULA eps={eps}")
        proj = ((xs - model.mean) @ u) ** 2 / model.sigma_a2  # whitened variance along u
        errors[eps] = abs(proj.mean() * lam - 1.0)
        predicted = 1.0 / (1.0 - eps * lam / 2) - 1.0
        assert_within_mcse(proj * lam - 1.0, predicted, f"ULA relative bias at eps={eps}")
    assert errors[0.02] < errors[0.08] / 2, errors


# ------------------------------------------------------------------------------ annealing
def anneal_config(**sampler):
    return resolve({
        "task": {"kind": "orthogonal", "num_train": 6, "input_dim": 8, "num_test": 0,
                 "class_ratios": [0.5, 0.5], "seed": 2},
        "network": {"depth": 1, "width": 8, "activation": "sigmoid", "temperature": 0.05},
        "sampler": {"kind": "langevin", "step_size": 0.002, "thin": 10, "num_chains": 4, "seed": 4,
                    "progress": False, **sampler},
    })


def test_annealing_leaves_the_stationary_loss_unchanged():
    # this run (seed 4) once met the all-ones bits that an earlier hash32 turned into +inf noise
    annealed = anneal_config(num_steps=4000, burn_in=1500, chunk_draws=250,
                             anneal={"T_start": 5.0, "schedule": "geometric", "num_steps": 1200})
    plain = anneal_config(num_steps=8000, burn_in=1500, chunk_draws=650, seed=5)
    loss_a = sample_experiment(annealed).result.draws["loss"]
    loss_p = sample_experiment(plain).result.draws["loss"]
    (ma, sa), (mp, sp) = mean_and_mcse(loss_a), mean_and_mcse(loss_p)
    assert np.all(np.isfinite(loss_a)) and np.all(np.isfinite(loss_p))
    assert abs(ma - mp) < K * np.hypot(sa, sp), (ma, sa, mp, sp)


# -------------------------------------------------------- HMC/NUTS/MALA through the driver
@pytest.mark.parametrize("kind", ["mala", "hmc", "nuts"])
def test_adjusted_samplers_run_through_sample_experiment(kind):
    cfg = anneal_config(kind=kind, step_size=0.01, num_steps=300, burn_in=150, thin=15, num_chains=2,
                        num_integration_steps=4, max_num_doublings=4, adapt_mass_matrix=kind == "nuts")
    out = sample_experiment(cfg)
    stats = out.idata.sample_stats
    assert "accept_prob" in stats and "diverging" in stats
    assert np.all(np.isfinite(out.result.draws["loss"])) and not out.divergences
    assert 0.5 < float(stats["accept_prob"].mean()) <= 1.0


def test_build_sampler_reads_the_config():
    assert build_sampler({"kind": "nuts"}).warmup is not None
    assert build_sampler({"kind": "mala"}).warmup is None
    with pytest.raises(InputError, match="freeze"):
        build_sampler({"kind": "hmc", "freeze_readout_at": 10})


# ------------------------------------------------------------------------------------ SMC
def conjugate_gaussian(seed=0, d=3, n=5, v=2.0, s2=0.3):
    """x ~ N(0, v I), y | x ~ N(A x, s2 I): posterior moments and evidence in closed form."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d))
    y = A @ rng.normal(size=d) * np.sqrt(v) + rng.normal(size=n) * np.sqrt(s2)
    cov = np.linalg.inv(np.eye(d) / v + A.T @ A / s2)
    log_z = multivariate_normal(np.zeros(n), v * A @ A.T + s2 * np.eye(n)).logpdf(y)
    Aj, yj = jnp.asarray(A, jnp.float32), jnp.asarray(y, jnp.float32)

    def logdensity(theta):  # log p(x, y): prior and likelihood, normalised
        x = theta["x"]
        return (jnp.sum(jax.scipy.stats.norm.logpdf(x, 0.0, np.sqrt(v)))
                + jnp.sum(jax.scipy.stats.norm.logpdf(yj, Aj @ x, np.sqrt(s2))))

    return logdensity, cov @ A.T @ y / s2, cov, log_z, v


@pytest.mark.parametrize("kernel", ["hmc", "mala"])
def test_smc_recovers_a_conjugate_gaussian_and_its_evidence(kernel):
    logdensity, mean, cov, log_z, v = conjugate_gaussian()
    M = 0.5  # a preconditioner other than the prior variance: checks the Jacobian constant
    white = whiten(logdensity, {"x": M})
    logprior, loglik = split_gaussian_prior(white, {"x": v}, {"x": M})

    def one_run(key):
        k_init, k_run = jax.random.split(key)
        particles = prior_particles(k_init, {"x": (3,)}, {"x": v}, {"x": M}, 500)
        return run_smc(k_run, logprior, loglik, particles, num_mcmc_steps=10, kernel=kernel,
                       step_size=0.5 if kernel == "hmc" else 0.3)

    runs = 6
    particles, info = jax.jit(jax.vmap(one_run))(jax.random.split(jax.random.PRNGKey(3), runs))
    x = np.asarray(particles["x"], np.float64) * np.sqrt(M)  # (run, particle, d)
    lambdas = np.asarray(info.tempering_params)
    assert np.all(lambdas[np.arange(runs), np.asarray(info.num_steps) - 1] == 1.0)
    assert np.all(np.diff(lambdas[0, : int(info.num_steps[0])]) > 0)

    def check(per_run, target, what):  # MCSE from the spread of independent runs
        se = per_run.std(axis=0, ddof=1) / np.sqrt(runs)
        assert np.all(np.abs(per_run.mean(axis=0) - target) < K * se + 1e-3), (what, per_run.mean(0), target)

    check(x.mean(axis=1), mean, "mean")
    check(np.stack([np.cov(r.T) for r in x]), cov, "cov")
    check(np.asarray(info.log_evidence, np.float64), log_z, "log evidence")
