"""The full single-neuron measure of a one-hidden-layer non-lazy network on any task, with the
preactivations' fluctuations given the readout (what the conditional-mode theory, ``conditional_mode``,
approximates by their mode).  At a conjugate field ``Lambda`` (P x m) a neuron's readout has

    q(a) ∝ N(a; 0, sigma_a^2 I) Z(Lambda a),   Z(b) = E_{z ~ N(0, C0)}[exp(b^T phi(z))],

and the field solves ``E_q[phi(z) a^T] + T0 Lambda = Y`` (THEORY.md 1.4; the readout equation of
the conditional-mode theory with the measure kept whole).  Every expectation is Monte Carlo:

* ``log Z(b)`` by thermodynamic integration, ``log Z(b) = int_0^1 E_{tb}[b^T phi(z)] dt`` (Gauss-
  Legendre in t), the expectations by BlackJAX HMC on ``z | b`` in whitened coordinates
  ``z = L u`` (``C0 = L L^T``), with a dense inverse mass from the curvature at the mode ``z*(b)``
  (its concave part: ``(I - L^T min(E, 0) L)^{-1}``, ``E = diag(b phi''(z*))``).
* a code's mass: ``log q`` at its readout plus the Laplace volume in ``a`` (m dimensions), with the
  exact Hessian ``-I / sigma_a^2 + Lambda^T Cov_{z|b}[phi] Lambda`` (the derivative of
  ``E_{z|b}[phi]`` in ``b`` is that covariance).
* within a code, Gibbs chains (``a | z`` exact, ``z | a`` HMC) that stay in its basin: the moments
  the field equation needs, and weighted draws (:func:`measure_draws`) for the predictions on test
  inputs (``conditional_mode.conditional_mode_test`` reads them as it reads the quadrature nodes).
* the field: :func:`solve_full_measure`, model steps on the convex potential
  ``T0 |Lambda|^2 / 2 - <Lambda, Y> + log Z(Lambda)``.

Where it is used: ``predictions`` for odd activations (tanh) on tasks without class structure, where
the conditional-mode search stalls on the mirror pairs of modes (README "Theory"); the study
``widebayes.studies.single_neuron_measure`` puts it beside the conditional-mode theory for the
sigmoid on MNIST (the two agree there within 0.003 on every code).

Our own code: the field has no implementation of this measure.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy.optimize import minimize
from scipy.special import logsumexp

from widebayes.codes import class_means, code_of_means
from widebayes.theory.nonlazy.conditional_mode import conditional_modes, derivatives


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
                num_t: int = 8, odd: bool = False) -> FieldState:
    """Modes (:func:`readout_modes`), their within-basin moments (:func:`mode_moments`) and masses
    (:func:`code_masses` at the mean readout of each basin), one mode per code (:func:`one_per_code`),
    for an odd ``phi`` every code with its mirror (:func:`mirror_pairs`), and what the field equation
    needs."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # a field where q diverges: rejected
        return _field_state(key, C0, Lam, Y, sigma_a2, T0, phi, phi_np, starts, labels, threshold, num_t, odd)


def _field_state(key, C0, Lam, Y, sigma_a2, T0, phi, phi_np, starts, labels, threshold, num_t, odd):
    k_modes, k_gibbs, k_mass = jax.random.split(key, 3)
    readouts = readout_modes(k_modes, C0, Lam, sigma_a2, phi, phi_np, np.concatenate([starts, -starts])
                             if odd else starts)
    mom = mode_moments(k_gibbs, C0, Lam, sigma_a2, phi, phi_np, readouts)
    masses = code_masses(k_mass, C0, Lam, sigma_a2, phi, phi_np, mom.readout, labels, threshold, num_t,
                         ChainSettings(8, 200, 400))
    # a start that ended on a saddle has no Laplace mass (NaN): left out; none left = not normalisable
    log_mass = np.where(np.isfinite(masses.log_mass), masses.log_mass, -np.inf)
    if not np.isfinite(log_mass).any():
        return FieldState(Lam, mom, masses.codes, np.full_like(log_mass, np.nan), np.full_like(Lam, np.nan),
                          np.nan, np.full((len(C0),) * 2, np.nan))
    keep = one_per_code(masses.codes, log_mass)
    mom, log_mass = ModeMoments(*(x[keep] for x in mom)), log_mass[keep]
    codes = [masses.codes[k] for k in keep]
    if odd:
        mom, codes, log_mass = mirror_pairs(mom, codes, log_mass)
    pi = normalised(log_mass)
    residual = (pi @ np.nan_to_num(mom.mean_t)).reshape(Lam.shape) + T0 * Lam - Y
    potential = 0.5 * T0 * np.sum(Lam**2) - np.sum(Lam * Y) + logsumexp(log_mass)
    return FieldState(Lam, mom, codes, log_mass, residual, float(potential),
                      np.einsum("k,kpq->pq", pi, np.nan_to_num(mom.second_phi)))


def one_per_code(codes: list, log_mass) -> list[int]:
    """The mode of largest mass of each code, modes without mass left out.  Two starts whose Newton
    ascent stopped apart (more than 0.1, within the basin's width) are one basin: counted twice, their
    mass would be too (on tanh on MNIST the potential rose by 0.2 nats at every fresh search, and the
    residual from 0.02 to 0.21)."""
    best: dict = {}
    for k in np.flatnonzero(np.isfinite(log_mass)):
        if codes[k] not in best or log_mass[k] > log_mass[best[codes[k]]]:
            best[codes[k]] = int(k)
    return sorted(best.values())


def mirror_code(code: str) -> str:
    """The code of ``-a`` for an odd ``phi``: every class mean changes sign."""
    return code.translate(str.maketrans("01", "10"))


def mirror_pairs(mom: ModeMoments, codes: list, log_mass):
    """For an odd ``phi`` q(a) = q(-a), and the mode at ``-a`` has the mirrored code, the same mass and
    the same ``phi a^T`` and ``phi phi^T`` moments.  Each pair's Monte Carlo estimates are averaged
    (their log masses differed by up to 0.4 nats on tanh on MNIST); a code whose mirror the search
    missed gets it."""
    index = {c: k for k, c in enumerate(codes)}
    order = [k for k, c in enumerate(codes) if mirror_code(c) not in index or c < mirror_code(c)]
    rows: dict = {f: [] for f in ModeMoments._fields}
    new_codes, new_mass = [], []
    for k in order:
        j = index.get(mirror_code(codes[k]), k)  # a mode without its mirror is its own estimate
        mass = np.logaddexp(log_mass[k], log_mass[j]) - np.log(2.0)
        readout = 0.5 * (mom.readout[k] - mom.readout[j]) if j != k else mom.readout[k]
        mean_phi = 0.5 * (mom.mean_phi[k] - mom.mean_phi[j]) if j != k else mom.mean_phi[k]
        shared = {f: 0.5 * (getattr(mom, f)[k] + getattr(mom, f)[j])
                  for f in ("second_phi", "mean_t", "cov_t")}
        for mirror, code in ((1.0, codes[k]), (-1.0, mirror_code(codes[k]))):
            rows["readout"].append(mirror * readout)
            rows["mean_phi"].append(mirror * mean_phi)
            for f, v in shared.items():
                rows[f].append(v)
            new_codes.append(code)
            new_mass.append(mass)
    return ModeMoments(*(np.stack(rows[f]) for f in ModeMoments._fields)), new_codes, np.array(new_mass)


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
                       log=None, odd: bool = False) -> FieldState:
    """The self-consistent field of the full measure: minimise the convex potential by model steps
    (:func:`model_step`), accepted where the potential falls, the proximal weight divided by 3 after
    an accepted step and multiplied by 4 after a rejected one; one key for every evaluation (common
    random numbers, so that the potentials compared differ by the field, not by the noise).  Every
    5th step searches the modes again from ``starts``; otherwise from the last modes.  Returns the
    state with the smallest residual seen (near the solution the potential's Monte Carlo noise,
    about 0.01, decides acceptances)."""
    state = field_state(key, C0, Lambda0, Y, sigma_a2, T0, phi, phi_np, starts, labels, threshold, odd=odd)
    if not np.isfinite(state.potential):
        raise ValueError("the full measure is not normalisable at the starting field (q(a) has no maximum)")
    best = state
    for it in range(1, max_iter + 1):
        if np.max(np.abs(best.residual)) < tol:
            break
        step = model_step(state, Y, T0, proximal)
        again = state.modes.readout if it % 5 else np.concatenate([state.modes.readout, starts])
        trial = field_state(key, C0, state.Lambda + step, Y, sigma_a2, T0, phi, phi_np, again, labels,
                            threshold, odd=odd)
        accepted = bool(np.isfinite(trial.potential) and np.all(np.isfinite(trial.residual))
                        and trial.potential < state.potential)
        if log is not None:
            log(f"step {it}: potential {trial.potential:.4f} ({'accepted' if accepted else 'rejected'}), "
                f"|R| {np.max(np.abs(trial.residual)):.4f}, proximal {proximal:.2e}")
        state, proximal = (trial, proximal / 3) if accepted else (state, proximal * 4)
        if accepted and np.max(np.abs(trial.residual)) < np.max(np.abs(best.residual)):
            best = trial
    return best
