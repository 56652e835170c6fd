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
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss

from widebayes.activations import get_activation
from widebayes.codes import class_means, code_ids, code_of_means, code_string, default_threshold
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


class CodeMasses(NamedTuple):
    """Per readout mode: its code, log q, the log of its mass, and ``E[phi | b]``'s class means."""

    codes: list
    log_q: np.ndarray
    log_mass: np.ndarray
    class_means: np.ndarray  # (k, classes)
    log_z_error: np.ndarray  # standard error of log Z from the chains (t-quadrature excluded)

    @property
    def fractions(self) -> np.ndarray:
        w = np.exp(self.log_mass - self.log_mass.max())
        return w / w.sum()


def whitened_start(C0, B, phi_np):
    """The mode ``z*(b)`` of every field (rows of ``B``) in whitened coordinates, and the inverse mass
    ``(I - L^T min(E, 0) L)^{-1}`` there (``E = diag(b phi''(z*))``)."""
    L = np.linalg.cholesky(C0)
    z, _, _ = conditional_modes(C0, np.linalg.inv(C0), B, phi_np)
    _, d2 = derivatives(phi_np, z)
    E = np.minimum(d2 * B, 0.0)
    curvature = np.eye(len(C0))[None] - np.einsum("pi,np,pj->nij", L, E, L)
    return np.linalg.solve(L, z.T).T, np.linalg.inv(curvature)


def field_moments(key, C0, B, phi, phi_np, chains: ChainSettings = ChainSettings()) -> FieldMoments:
    """Moments of ``phi(z)`` under ``z | b ∝ N(z; 0, C0) exp(b^T phi(z))`` for every row of ``B``, by
    ``chains.num_chains`` BlackJAX HMC chains per field (all fields and chains in one vmap)."""
    L = jnp.asarray(np.linalg.cholesky(C0))
    u0, inverse_mass = whitened_start(C0, np.asarray(B), phi_np)
    kernel = blackjax.hmc.build_kernel()
    c = chains

    def one_chain(k, b, start, inv_mass):
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

    def one_field(k, b, start, inv_mass):
        m, s, t, a = jax.vmap(one_chain, (0, None, None, None))(jax.random.split(k, c.num_chains), b, start,
                                                                 inv_mass)
        return m.mean(0), s.mean(0), t.mean(), t.std() / np.sqrt(c.num_chains), a.mean()

    out = jax.jit(jax.vmap(one_field))(jax.random.split(key, len(B)), jnp.asarray(B), jnp.asarray(u0),
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
    m = readouts.shape[1]
    log_q, log_mass = np.empty(len(B)), np.empty(len(B))
    for k in range(len(B)):
        cov = mom.second_phi[k] - np.outer(mom.mean_phi[k], mom.mean_phi[k])
        H = -np.eye(m) / sigma_a2 + Lam.T @ cov @ Lam
        log_q[k] = -0.5 * readouts[k] @ readouts[k] / sigma_a2 + log_z[k]
        log_mass[k] = log_q[k] - 0.5 * np.linalg.slogdet(-H)[1]
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


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
