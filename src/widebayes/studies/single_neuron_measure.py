"""The single-neuron measure on a task without class structure, with the preactivations' fluctuations.

The conditional-mode theory (``theory/nonlazy/conditional_mode.py``, the paper's MNIST theory)
replaces the integral over a neuron's preactivations ``z`` on the P training inputs by their mode
given the readout ``a``.  This study evaluates, at a given conjugate field ``Lambda`` (P x m), the
measure that the approximation stands for,

    q(a) ∝ N(a; 0, sigma_a^2 I) Z(Lambda a),   Z(b) = E_{z ~ N(0, C0)}[exp(b^T phi(z))],

without that approximation, and puts its code masses beside the approximation's:

* ``log Z(b)`` by thermodynamic integration, ``log Z(b) = int_0^1 E_{tb}[b^T phi(z)] dt`` (Gauss-
  Legendre in t), the expectations by BlackJAX HMC on ``z | b`` in whitened coordinates
  ``z = L u`` (``C0 = L L^T``), with a dense inverse mass from the curvature at the mode ``z*(b)``
  (its concave part: ``(I - L^T min(E, 0) L)^{-1}``, ``E = diag(b phi''(z*))``).  ``z | b`` has
  one mode for monotone activations, so the chains need no tempering.
* a code's mass: ``log q`` at its readout (the approximation's mode; there the exact gradient of
  ``log q`` is O(1) against a curvature of about ``1 / sigma_a^2``, which moves the mode by about
  0.01 and ``log q`` by about 0.01 nats) plus the Laplace volume in ``a`` (m dimensions), with the
  Hessian ``-I / sigma_a^2 + Lambda^T Cov_{z|b}[phi] Lambda`` (exact for the measure: the
  derivative of ``E_{z|b}[phi]`` in ``b`` is that covariance).
* a cross-check that shares no code with the above: adaptive tempered SMC (``samplers.smc``) on
  ``q(z) ∝ N(z; 0, C0) exp(sigma_a^2 |Lambda^T phi(z)|^2 / 2)`` (the readout integrated out), whose
  particles' codes estimate the same masses.

What it found (README "Mixing", the MNIST paragraph): at the conditional-mode theory's own field
the fluctuations move the codes' log masses by up to 11 nats (code 110 from 0.32 to 1e-5), so the
approximation's code fractions are not those of the measure it approximates there.

``python -m widebayes.studies.single_neuron_measure [--smc PARTICLES]`` prints the table
(first three MNIST digits, sigmoid, N = P = 100, T = 0.01, y- = 0; about 2 minutes on two cores).

Our own code: the field has no implementation of this measure.
"""

from __future__ import annotations

import argparse
import functools
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy.optimize import minimize
from scipy.special import logsumexp

from widebayes.activations import get_activation
from widebayes.codes import class_means, code_ids, code_of_means, code_string, default_threshold
from widebayes.theory.nonlazy.conditional_mode import conditional_modes, derivatives, sign_directions


class ChainSettings(NamedTuple):
    """HMC on ``z | b``: chains per field, warm-up and kept transitions, step size, leapfrog steps."""

    num_chains: int = 16
    num_warm: int = 300
    num_keep: int = 800
    step_size: float = 0.4
    num_integration_steps: int = 8


class FieldMoments(NamedTuple):
    """Moments of ``phi(z)`` under ``z | b``, one row per field ``b`` (chain averages)."""

    mean_phi: np.ndarray  # (n, P)
    second_phi: np.ndarray  # (n, P, P)
    mean_tilt: np.ndarray  # (n,) E[b^T phi(z)]
    tilt_error: np.ndarray  # (n,) its standard error over the chains
    acceptance: np.ndarray  # (n,)


def normalised(log_mass) -> np.ndarray:
    """Fractions from log masses (``-inf`` for a mode left out)."""
    return np.exp(log_mass - logsumexp(log_mass))


class CodeMasses(NamedTuple):
    """Per readout mode: its code, log q, the log of its mass, and ``E[phi | b]``'s class means."""

    codes: list
    log_q: np.ndarray
    log_mass: np.ndarray
    class_means: np.ndarray  # (k, classes)
    log_z_error: np.ndarray  # standard error of log Z from the chains (t-quadrature excluded)

    @property
    def fractions(self) -> np.ndarray:
        return normalised(self.log_mass)


def whitened_start(C0, B, phi_np):
    """The mode ``z*(b)`` of every field (rows of ``B``) in whitened coordinates, and the inverse mass
    ``(I - L^T min(E, 0) L)^{-1}`` there (``E = diag(b phi''(z*))``)."""
    L = np.linalg.cholesky(C0)
    z, _, _ = conditional_modes(C0, np.linalg.inv(C0), B, phi_np)
    _, d2 = derivatives(phi_np, z)
    E = np.minimum(d2 * B, 0.0)
    curvature = np.eye(len(C0))[None] - np.einsum("pi,np,pj->nij", L, E, L)
    return np.linalg.solve(L, z.T).T, np.linalg.inv(curvature)


@functools.cache
def _field_moments_fn(phi, chains: ChainSettings):
    """The jitted moments of every field (one compilation per activation, settings and shape: the
    solver calls it dozens of times with new fields and the same shapes)."""
    kernel = blackjax.hmc.build_kernel()
    c = chains

    def one_chain(k, L, b, start, inv_mass):
        def logdensity(u):
            return -0.5 * u @ u + b @ phi(L @ u)

        def transition(state, kk):
            state, info = kernel(kk, state, logdensity, c.step_size, inv_mass, c.num_integration_steps)
            ph = phi(L @ state.position)
            return state, (ph, b @ ph, info.acceptance_rate)

        keys = jax.random.split(k, c.num_warm + c.num_keep)
        state, _ = jax.lax.scan(transition, blackjax.hmc.init(start, logdensity), keys[:c.num_warm])
        _, (ph, tilt, acc) = jax.lax.scan(transition, state, keys[c.num_warm:])
        return ph.mean(0), ph.T @ ph / c.num_keep, tilt.mean(), acc.mean()

    def one_field(k, L, b, start, inv_mass):
        m, s, t, a = jax.vmap(one_chain, (0, None, None, None, None))(
            jax.random.split(k, c.num_chains), L, b, start, inv_mass)
        return m.mean(0), s.mean(0), t.mean(), t.std() / np.sqrt(c.num_chains), a.mean()

    return jax.jit(jax.vmap(one_field, (0, None, 0, 0, 0)))


def field_moments(key, C0, B, phi, phi_np, chains: ChainSettings = ChainSettings()) -> FieldMoments:
    """Moments of ``phi(z)`` under ``z | b ∝ N(z; 0, C0) exp(b^T phi(z))`` for every row of ``B``, by
    ``chains.num_chains`` BlackJAX HMC chains per field (all fields and chains in one vmap)."""
    L = jnp.asarray(np.linalg.cholesky(C0))
    u0, inverse_mass = whitened_start(C0, np.asarray(B), phi_np)
    out = _field_moments_fn(phi, chains)(jax.random.split(key, len(B)), L, jnp.asarray(B), jnp.asarray(u0),
                                         jnp.asarray(inverse_mass))
    return FieldMoments(*(np.asarray(x, dtype=np.float64) for x in out))


def log_partition(key, C0, B, phi, phi_np, num_t: int = 12, chains: ChainSettings = ChainSettings()):
    """``log Z(b)`` for every row of ``B`` by thermodynamic integration over ``t b``, t in (0, 1) at
    ``num_t`` Gauss-Legendre nodes; returns ``(log Z, its standard error from the chains)``."""
    x, w = leggauss(num_t)
    t, w = 0.5 * (x + 1.0), 0.5 * w
    B = np.asarray(B, dtype=np.float64)
    tb = (t[:, None, None] * B[None]).reshape(-1, B.shape[1])
    mom = field_moments(key, C0, tb, phi, phi_np, chains)
    integrand = mom.mean_tilt.reshape(num_t, -1) / t[:, None]  # E_{tb}[b^T phi]
    error = mom.tilt_error.reshape(num_t, -1) / t[:, None]
    return w @ integrand, np.sqrt((w**2) @ error**2)


def readout_hessian(Lam, sigma_a2: float, mean_phi, second_phi) -> np.ndarray:
    """``d^2 log q / da^2 = -I / sigma_a^2 + Lambda^T Cov_{z|a}[phi] Lambda`` (exact for the full measure)."""
    cov = second_phi - np.outer(mean_phi, mean_phi)
    return -np.eye(Lam.shape[1]) / sigma_a2 + Lam.T @ cov @ Lam


def code_masses(key, C0, Lam, sigma_a2: float, phi, phi_np, readouts, labels, threshold: float,
                num_t: int = 12, chains: ChainSettings = ChainSettings()) -> CodeMasses:
    """The masses of the modes of q(a) at ``readouts`` (k, m): ``log q(a) = -|a|^2 / (2 sigma_a^2) +
    log Z(Lambda a)`` plus the Laplace volume ``-1/2 log det(-H)`` with the exact Hessian
    ``H = -I / sigma_a^2 + Lambda^T Cov_{z|b}[phi] Lambda``; each mode's code from the class means of
    ``E[phi | b]`` at ``threshold``."""
    readouts = np.asarray(readouts, dtype=np.float64)
    B = readouts @ np.asarray(Lam).T
    k1, k2 = jax.random.split(key)
    log_z, log_z_error = log_partition(k1, C0, B, phi, phi_np, num_t, chains)
    mom = field_moments(k2, C0, B, phi, phi_np, chains)
    log_q, log_mass = np.empty(len(B)), np.empty(len(B))
    for k in range(len(B)):
        H = readout_hessian(Lam, sigma_a2, mom.mean_phi[k], mom.second_phi[k])
        log_q[k] = -0.5 * readouts[k] @ readouts[k] / sigma_a2 + log_z[k]
        sign, log_det = np.linalg.slogdet(-H) if np.all(np.isfinite(H)) else (0.0, np.nan)
        # not a maximum (or q not normalisable along some direction): no Laplace mass
        log_mass[k] = log_q[k] - 0.5 * log_det if sign > 0 and np.linalg.eigvalsh(H).max() < 0 else np.nan
    means = np.stack([class_means(p, labels) for p in mom.mean_phi])
    codes = [code_of_means(row, threshold) for row in means]
    return CodeMasses(codes, log_q, log_mass, means, log_z_error)


def smc_code_fractions(key, C0, Lam, sigma_a2: float, phi, labels, threshold: float,
                       num_particles: int = 4000, num_mcmc_steps: int = 10, target_ess: float = 0.95) -> dict:
    """Code fractions of adaptive tempered SMC particles drawn from
    ``q(z) ∝ N(z; 0, C0) exp(sigma_a^2 |Lambda^T phi(z)|^2 / 2)`` (``samplers.smc.run_smc``)."""
    from widebayes.samplers.smc import run_smc

    L, Lj = jnp.asarray(np.linalg.cholesky(C0)), jnp.asarray(Lam)

    def loglik(p):
        f = Lj.T @ phi(L @ p["u"])
        return 0.5 * sigma_a2 * jnp.sum(f**2)

    def logprior(p):
        return -0.5 * jnp.sum(p["u"] ** 2)

    k1, k2 = jax.random.split(key)
    start = {"u": jax.random.normal(k1, (num_particles, len(C0)))}
    run = jax.jit(lambda k, p: run_smc(k, logprior, loglik, p, num_mcmc_steps, target_ess, kernel="hmc",
                                       step_size=0.3, num_integration_steps=10))
    particles, info = run(k2, start)
    ph = np.asarray(phi(particles["u"] @ L.T), dtype=np.float64)
    ids = code_ids(np.stack([class_means(p, labels) for p in ph]), threshold)
    num_classes = int(np.max(labels)) + 1
    values, counts = np.unique(ids, return_counts=True)
    fractions = {code_string(v, num_classes): float(c / num_particles) for v, c in zip(values, counts)}
    return {"fractions": fractions, "tempering_steps": int(info.num_steps)}


# ----------------------------------------------------------------------------- the self-consistent field


class ModeMoments(NamedTuple):
    """Per readout mode, from Gibbs chains (``a | z`` exact, ``z | a`` HMC) that stay in its basin."""

    readout: np.ndarray  # (k, m) mean readout
    mean_phi: np.ndarray  # (k, P)
    second_phi: np.ndarray  # (k, P, P)
    mean_t: np.ndarray  # (k, P m) E[vec(phi a^T)]
    cov_t: np.ndarray  # (k, P m, P m) Cov[vec(phi a^T)]


@functools.cache
def _gibbs_fn(phi, chains: ChainSettings, m: int, samples: bool):
    """The jitted Gibbs chains of every mode (one compilation per activation, settings, shape and output):
    their moments, or (``samples``) the kept draws of ``z`` and ``a`` themselves."""
    kernel = blackjax.hmc.build_kernel()
    c = chains

    def one_chain(k, L, Lam, sigma_a2, a0, start, inv_mass):
        def logdensity_given(a):
            b = Lam @ a
            return lambda u: -0.5 * u @ u + b @ phi(L @ u)

        def sweep(carry, kk):
            u, a = carry
            k1, k2 = jax.random.split(kk)
            logdensity = logdensity_given(a)
            state, _ = kernel(k1, blackjax.hmc.init(u, logdensity), logdensity, c.step_size, inv_mass,
                              c.num_integration_steps)
            z = L @ state.position
            ph = phi(z)
            a = sigma_a2 * Lam.T @ ph + jnp.sqrt(sigma_a2) * jax.random.normal(k2, (m,), ph.dtype)
            return (state.position, a), (z, ph, a)

        keys = jax.random.split(k, c.num_warm + c.num_keep)
        carry, _ = jax.lax.scan(sweep, (start, a0), keys[:c.num_warm])
        _, (z, ph, a) = jax.lax.scan(sweep, carry, keys[c.num_warm:])
        if samples:
            return z, a
        t = (ph[:, :, None] * a[:, None, :]).reshape(c.num_keep, -1)
        return a.mean(0), ph.mean(0), ph.T @ ph / c.num_keep, t.mean(0), t.T @ t / c.num_keep

    def one_mode(k, L, Lam, sigma_a2, a0, start, inv_mass):
        keys = jax.random.split(k, c.num_chains)
        chains_out = jax.vmap(one_chain, (0, None, None, None, None, None, None))(
            keys, L, Lam, sigma_a2, a0, start, inv_mass)
        if samples:
            return [o.reshape(-1, o.shape[-1]) for o in chains_out]
        return [o.mean(0) for o in chains_out]

    return jax.jit(jax.vmap(one_mode, (0, None, None, None, 0, 0, 0)))


def _run_gibbs(key, C0, Lam, sigma_a2: float, phi, phi_np, readouts, chains: ChainSettings, samples: bool):
    L = jnp.asarray(np.linalg.cholesky(C0))
    u0, inverse_mass = whitened_start(C0, np.asarray(readouts) @ np.asarray(Lam).T, phi_np)
    run = _gibbs_fn(phi, chains, readouts.shape[1], samples)
    keys = jax.random.split(key, len(readouts))
    return [np.asarray(x, dtype=np.float64) for x in run(
        keys, L, jnp.asarray(Lam), jnp.asarray(sigma_a2, L.dtype), jnp.asarray(readouts), jnp.asarray(u0),
        jnp.asarray(inverse_mass))]


def mode_moments(key, C0, Lam, sigma_a2: float, phi, phi_np, readouts,
                 chains: ChainSettings = ChainSettings(8, 200, 600)) -> ModeMoments:
    """Moments of the full measure ``q(a, z)`` within the basin of each row of ``readouts``: Gibbs chains
    alternate an exact draw ``a | z ~ N(sigma_a^2 Lambda^T phi(z), sigma_a^2 I)`` with one HMC
    transition of ``z | a`` (whitened, the mass of :func:`whitened_start` at the start readout)."""
    a, mphi, sphi, mt, st = _run_gibbs(key, C0, Lam, sigma_a2, phi, phi_np, readouts, chains, samples=False)
    with np.errstate(invalid="ignore", over="ignore"):  # a diverged chain: NaN moments, the step is rejected
        return ModeMoments(a, mphi, sphi, mt, st - np.einsum("ki,kj->kij", mt, mt))


class MeasureDraws(NamedTuple):
    """Weighted draws ``(a, z)`` of the full measure (the fields that ``conditional_mode_test`` reads:
    readouts ``a``, preactivations ``z`` on the training inputs, ``phi(z)`` and weights ``w``)."""

    a: np.ndarray  # (n, m)
    z: np.ndarray  # (n, P)
    phi: np.ndarray  # (n, P)
    w: np.ndarray  # (n,) summing to one


def measure_draws(key, C0, state: FieldState, sigma_a2: float, phi, phi_np,
                  chains: ChainSettings = ChainSettings(8, 200, 600)) -> MeasureDraws:
    """Draws of the full measure at a solved field: the Gibbs chains of every mode with mass, each draw
    weighted by its mode's fraction over the mode's number of draws."""
    keep = np.isfinite(state.log_mass)
    readouts = state.modes.readout[keep]
    z, a = _run_gibbs(key, C0, state.Lambda, sigma_a2, phi, phi_np, readouts, chains, samples=True)
    per_mode = z.shape[1]
    w = np.repeat(state.fractions[keep] / per_mode, per_mode)
    z, a = z.reshape(-1, z.shape[-1]), a.reshape(-1, a.shape[-1])
    return MeasureDraws(a, z, np.asarray(phi(jnp.asarray(z)), dtype=np.float64), w)


def readout_modes(key, C0, Lam, sigma_a2: float, phi, phi_np, starts, iterations: int = 8,
                  chains: ChainSettings = ChainSettings(8, 200, 400)) -> np.ndarray:
    """Local maxima of the full ``q(a)`` from every row of ``starts``: Newton ascent with the exact
    gradient ``-a / sigma_a^2 + Lambda^T E[phi | a]`` and Hessian (moments by :func:`field_moments`),
    steps capped at 0.5; starts that end within 0.1 of an earlier one are dropped."""
    a = np.array(starts, dtype=np.float64)
    m = a.shape[1]
    for i in range(iterations):
        mom = field_moments(jax.random.fold_in(key, i), C0, a @ Lam.T, phi, phi_np, chains)
        grad = -a / sigma_a2 + mom.mean_phi @ Lam
        step = np.empty_like(a)
        for k in range(len(a)):
            H = readout_hessian(Lam, sigma_a2, mom.mean_phi[k], mom.second_phi[k])
            top = np.linalg.eigvalsh(H).max()
            H = H - (top + 1.0 / sigma_a2) * np.eye(m) if top >= 0 else H
            step[k] = -np.linalg.solve(H, grad[k])
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        a = a + step * np.minimum(1.0, 0.5 / np.maximum(norm, 1e-300))
        if norm.max() < 1e-3:
            break
    keep: list[int] = []
    for k in range(len(a)):
        if all(np.linalg.norm(a[k] - a[j]) > 0.1 for j in keep):
            keep.append(k)
    return a[keep]


class FieldState(NamedTuple):
    """The full measure at one field: its modes, their masses and moments, the residual and potential."""

    Lambda: np.ndarray  # (P, m)
    modes: ModeMoments
    codes: list
    log_mass: np.ndarray  # (k,)
    residual: np.ndarray  # (P, m) E_q[phi a^T] + T0 Lambda - Y
    potential: float  # T0 |Lambda|^2 / 2 - <Lambda, Y> + log Z(Lambda): convex, stationary at the solution
    kernel: np.ndarray  # (P, P) E_q[phi phi^T]

    @property
    def fractions(self) -> np.ndarray:
        return normalised(self.log_mass)


def field_state(key, C0, Lam, Y, sigma_a2: float, T0: float, phi, phi_np, starts, labels, threshold: float,
                num_t: int = 8) -> FieldState:
    """Modes (:func:`readout_modes`), their within-basin moments (:func:`mode_moments`) and masses
    (:func:`code_masses` at the mean readout of each basin), and what the field equation needs."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # a field where q diverges: rejected
        return _field_state(key, C0, Lam, Y, sigma_a2, T0, phi, phi_np, starts, labels, threshold, num_t)


def _field_state(key, C0, Lam, Y, sigma_a2, T0, phi, phi_np, starts, labels, threshold, num_t):
    k_modes, k_gibbs, k_mass = jax.random.split(key, 3)
    readouts = readout_modes(k_modes, C0, Lam, sigma_a2, phi, phi_np, starts)
    mom = mode_moments(k_gibbs, C0, Lam, sigma_a2, phi, phi_np, readouts)
    masses = code_masses(k_mass, C0, Lam, sigma_a2, phi, phi_np, mom.readout, labels, threshold, num_t,
                         ChainSettings(8, 200, 400))
    # a start that ended on a saddle has no Laplace mass (NaN): left out; none left = not normalisable
    log_mass = np.where(np.isfinite(masses.log_mass), masses.log_mass, -np.inf)
    if not np.isfinite(log_mass).any():
        log_mass = np.full_like(log_mass, np.nan)
    pi = normalised(log_mass)
    residual = (pi @ np.nan_to_num(mom.mean_t)).reshape(Lam.shape) + T0 * Lam - Y
    potential = 0.5 * T0 * np.sum(Lam**2) - np.sum(Lam * Y) + logsumexp(log_mass)
    return FieldState(Lam, mom, masses.codes, log_mass, residual, float(potential),
                      np.einsum("k,kpq->pq", pi, np.nan_to_num(mom.second_phi)))


def model_step(state: FieldState, Y, T0: float, proximal: float):
    """The step that minimises the potential's local model: every mode's log mass to second order
    (gradient ``E_gamma[phi a^T]``, Hessian ``Cov_gamma``), summed exactly (log-sum-exp), plus
    ``proximal |step|^2 / 2``.  Newton on the potential itself fails here: a mode without mass
    contributes nothing to its Hessian, and a step of 1% of the field moves masses by e-folds."""
    lam, Yf = state.Lambda.ravel(), np.asarray(Y).ravel()
    keep = np.isfinite(state.log_mass)
    g, C, ell = state.modes.mean_t[keep], state.modes.cov_t[keep], state.log_mass[keep]

    def model(step):
        log_mass = ell + g @ step + 0.5 * np.einsum("i,kij,j->k", step, C, step)
        w = normalised(log_mass)
        value = (0.5 * T0 * np.sum((lam + step) ** 2) - (lam + step) @ Yf + logsumexp(log_mass)
                 + 0.5 * proximal * step @ step)
        grad = T0 * (lam + step) - Yf + w @ (g + np.einsum("kij,j->ki", C, step)) + proximal * step
        return value, grad

    result = minimize(model, np.zeros_like(lam), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return result.x.reshape(state.Lambda.shape)


def solve_full_measure(key, C0, Y, sigma_a2: float, T0: float, phi, phi_np, Lambda0, starts, labels,
                       threshold: float, tol: float = 5e-3, max_iter: int = 20, proximal: float = 0.1,
                       log=None) -> FieldState:
    """The self-consistent field of the full measure: minimise the convex potential by model steps
    (:func:`model_step`), accepted where the potential falls, the proximal weight divided by 3 after
    an accepted step and multiplied by 4 after a rejected one; one key for every evaluation (common
    random numbers, so that the potentials compared differ by the field, not by the noise).  Every
    5th step searches the modes again from ``starts``; otherwise from the last modes.  Returns the
    state with the smallest residual seen (near the solution the potential's Monte Carlo noise,
    about 0.01, decides acceptances)."""
    state = field_state(key, C0, Lambda0, Y, sigma_a2, T0, phi, phi_np, starts, labels, threshold)
    if not np.isfinite(state.potential):
        raise ValueError("the full measure is not normalisable at the starting field (q(a) has no maximum)")
    best = state
    for it in range(1, max_iter + 1):
        if np.max(np.abs(best.residual)) < tol:
            break
        step = model_step(state, Y, T0, proximal)
        again = state.modes.readout if it % 5 else np.concatenate([state.modes.readout, starts])
        trial = field_state(key, C0, state.Lambda + step, Y, sigma_a2, T0, phi, phi_np, again, labels,
                            threshold)
        accepted = bool(np.isfinite(trial.potential) and np.all(np.isfinite(trial.residual))
                        and trial.potential < state.potential)
        if log is not None:
            log(f"step {it}: potential {trial.potential:.4f} ({'accepted' if accepted else 'rejected'}), "
                f"|R| {np.max(np.abs(trial.residual)):.4f}, proximal {proximal:.2e}")
        state, proximal = (trial, proximal / 3) if accepted else (state, proximal * 4)
        if accepted and np.max(np.abs(trial.residual)) < np.max(np.abs(best.residual)):
            best = trial
    return best


def _mnist_case():
    from widebayes.config import resolve
    from widebayes.experiment import build_experiment
    from widebayes.theory.nngp import input_kernel

    cfg = {"task": {"kind": "mnist", "num_classes": 3, "num_train": 100, "num_test": 0, "seed": 0,
                    "y_minus": 0.0},
           "network": {"depth": 1, "width": 100, "activation": "sigmoid", "readout": "nonlazy",
                       "temperature": 0.01},
           "sampler": {"kind": "langevin"}}
    exp = build_experiment(resolve(cfg))
    return exp, exp.spec.layer_variances[0] * input_kernel(exp.data.X_train)


def main(argv=None):
    from widebayes.theory.nonlazy.conditional_mode import solve_conditional_mode

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smc", type=int, default=0, help="also run SMC with this many particles")
    parser.add_argument("--self-consistent", action="store_true",
                        help="also solve the field equation of the full measure (about 15 minutes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    exp, C0 = _mnist_case()
    act = get_activation(exp.spec.activation)
    labels = np.asarray(exp.data.labels_train)
    threshold = default_threshold(act)
    sol = solve_conditional_mode(C0, exp.data.Y_train, act.phi_np, exp.spec.sigma_a2, exp.T)
    print(f"conditional-mode theory: residual {sol.residual:.1e}, {len(sol.modes)} codes")
    exact = code_masses(jax.random.key(args.seed), C0, sol.Lambda, exp.spec.sigma_a2, act.phi, act.phi_np,
                        sol.modes, labels, threshold)
    print("| code | readout | mass, conditional mode | mass with the fluctuations | log q | error of log Z |")
    print("|---|---|---|---|---|---|")
    for k, code in enumerate(exact.codes):
        print(f"| {code} | {np.round(sol.modes[k], 3).tolist()} | {sol.mode_weights[k]:.3g} | "
              f"{exact.fractions[k]:.3g} | {exact.log_q[k]:.2f} | {exact.log_z_error[k]:.2f} |")
    if args.smc:
        smc = smc_code_fractions(jax.random.key(args.seed + 1), C0, sol.Lambda, exp.spec.sigma_a2, act.phi,
                                 labels, threshold, args.smc)
        print("SMC code fractions:", {k: round(v, 3) for k, v in sorted(smc["fractions"].items())},
              f"({smc['tempering_steps']} tempering steps)")
    if args.self_consistent:
        starts = np.concatenate([sol.modes, sign_directions(sol.modes.shape[1], 2.0)])
        full = solve_full_measure(jax.random.key(args.seed + 2), C0, exp.data.Y_train, exp.spec.sigma_a2,
                                  exp.T, act.phi, act.phi_np, sol.Lambda, starts, labels, threshold,
                                  log=print)
        field = np.linalg.norm(full.Lambda - sol.Lambda) / np.linalg.norm(sol.Lambda)
        kernel = np.linalg.norm(full.kernel - sol.K_phi) / np.linalg.norm(sol.K_phi)
        print(f"self-consistent full measure: |R| {np.max(np.abs(full.residual)):.1e}, "
              f"field moved {field:.1%} from the conditional-mode field, kernel {kernel:.2%} from its kernel "
              f"(Frobenius {np.linalg.norm(full.kernel):.2f} against {np.linalg.norm(sol.K_phi):.2f})")
        print("| code | readout | fraction, conditional mode | fraction, full measure |")
        print("|---|---|---|---|")
        cm = {code_of_means(class_means(p, labels), threshold): w
              for p, w in zip(sol.mode_phi, sol.mode_weights)}
        for k in np.argsort(-full.log_mass):
            code = full.codes[k]
            print(f"| {code} | {np.round(full.modes.readout[k], 3).tolist()} | {cm.get(code, 0.0):.3g} | "
                  f"{full.fractions[k]:.3g} |")


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
