"""Kernel-adaptation sweeps: theory and sampled posterior-mean layer kernels side by side.

The learned part of a layer kernel is its distance from the NNGP kernel (the N -> inf prior
kernel, :func:`widebayes.theory.nngp.nngp_kernels`).  Kernel-adaptation theory
(:mod:`widebayes.theory.kernel_adaptation`; Fischer et al. 2024, THEORY.md 3.5) predicts it for
lazy networks; the samplers measure it from the posterior-mean kernels
``out.result.kernels["train"]`` (chain, layer, P, P), layer 0 the input kernel.  This module
runs the sweeps that hold the two together:

- :func:`criticality_theory` / :func:`criticality_samples`: the correction against the weight
  variance g of tanh/erf networks, through the order-to-chaos transition (``chi = 1``);
- :func:`readout_sweep`: the lazy-to-rich crossover in the readout exponent gamma;
- :func:`prior_tied_vs_untied` / :func:`tied_vs_untied`: networks with tied hidden weights.

Measures (per layer, over the last two axes): the relative correction
``||K - K_NNGP||_F / ||K_NNGP||_F``; from several chains its noise-debiased version
(:func:`debiased_correction`), the fraction of the theory's correction the samples carry
(:func:`captured_fraction`) and the centred alignment with the targets (CKA,
:func:`centred_kernel_alignment`, which is :func:`widebayes.diagnostics.kernels.target_alignment`).

Every sweep takes ``sample``, a function from a resolved config to :class:`SampledKernels`:
:func:`sample_kernels` samples afresh, :func:`cached_sampler` reuses ``posterior.nc`` files.

The same sweeps run as sweep files through ``widebayes sweep`` (one mechanism, on Ray or serially),
whose table carries ``kernel_alignment[l]`` (CKA) and ``kernel_correction[l]`` (the debiased
relative correction below) with their theories: ``sweeps/kernel_criticality.toml``
(:func:`criticality_samples` with ``sigma_a2 = g``), ``sweeps/criticality_fixed_output.toml`` (the
readout variance held fixed), ``sweeps/output_scale.toml`` (the readout variance swept),
``sweeps/kernel_readout_exponent.toml`` (:func:`readout_sweep`) and
``sweeps/kernel_tied_weights.toml`` (:func:`tied_vs_untied`).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from widebayes.config import resolve, to_toml
from widebayes.diagnostics.kernels import target_alignment as centred_kernel_alignment
from widebayes.experiment import Experiment, build_experiment
from widebayes.theory.kernel_adaptation import gradient_signal, nngp_fixed_point, response_chi, solve_kernels
from widebayes.theory.nngp import nngp_kernels
from widebayes.theory.predict import adapted_kernels

XOR_TOY = {
    "task": {"kind": "xor", "num_train": 16, "seed": 0},
    "network": {"depth": 2, "width": 50, "activation": "tanh", "readout": "lazy",
                "temperature": 0.1, "sigma_w2": 1.0, "sigma_a2": 1.0},
    "sampler": {"step_size": 2e-3, "num_steps": 40000, "burn_in": 8000, "thin": 40,
                "num_chains": 4, "seed": 1, "progress": False},
}
"""A small lazy experiment (XOR, P = 16, N = 50, T = 0.1, two tanh layers) that samples in
seconds (4 chains; the compilation is most of it)."""


def with_network(cfg: dict, **network) -> dict:
    """A deep copy of an experiment (before ``resolve``) with ``[network]`` keys replaced."""
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("network", {}).update(network)
    return cfg


# ----------------------------------------------------------------------------- sampling


class SampledKernels(NamedTuple):
    """A sampled experiment and its posterior-mean layer kernels ``(chain, layer, P, P)``."""

    experiment: Experiment
    kernels: np.ndarray


def sample_kernels(resolved: dict) -> SampledKernels:
    """Sample a resolved experiment (:func:`widebayes.sampling.sample_experiment`).

    A chain that diverged (the log density stopped being finite) is a RuntimeError: its kernel
    sums would cover fewer draws than the others'.
    """
    from widebayes.sampling import sample_experiment

    out = sample_experiment(resolved)
    if out.divergences:
        raise RuntimeError("; ".join(out.divergences))
    return SampledKernels(out.experiment, np.asarray(out.result.kernels["train"], np.float64))


def cached_sampler(folder, prefix: str = "") -> Callable[[dict], SampledKernels]:
    """A ``sample`` function that keeps each run's ``posterior.nc`` under ``folder``.

    Each run goes to ``folder/<prefix><hash>``, the hash of the resolved config, so a changed
    config samples anew (:func:`widebayes.report.cached_posterior` checks the stored config too).
    """
    from widebayes.studies.notebook import cached_posterior

    def sample(resolved: dict) -> SampledKernels:
        name = prefix + hashlib.sha1(to_toml(resolved).encode()).hexdigest()[:12]
        idata = cached_posterior(resolved, Path(folder) / name)
        kernels = np.asarray(idata.representations["kernel"].values, np.float64)
        return SampledKernels(build_experiment(resolved), kernels)

    return sample


# ----------------------------------------------------------------------------- measures


def relative_correction(K, K_ref) -> np.ndarray:
    """``||K - K_ref||_F / ||K_ref||_F`` over the last two axes (per layer, per chain, ...)."""
    K, K_ref = np.asarray(K), np.asarray(K_ref)
    return np.linalg.norm(K - K_ref, axis=(-2, -1)) / np.linalg.norm(K_ref, axis=(-2, -1))


def debiased_correction(K_chains, K_ref) -> np.ndarray:
    """Relative correction of the mean kernel with the chains' Monte Carlo noise removed.

    With ``D_c = K_c - K_ref`` from independent chains, ``<D_c, D_c'>`` (c != c') is an unbiased
    estimate of ``||E D||_F^2``, whereas ``||mean_c D_c||^2`` is biased up by the noise.  Returns
    ``sign * sqrt(|mean_{c != c'} <D_c, D_c'>|) / ||K_ref||_F``, per layer (``K_chains``:
    (chain, layer, P, P)).
    """
    D = np.asarray(K_chains) - np.asarray(K_ref)[None]
    C = D.shape[0]
    gram = np.einsum("clij,dlij->lcd", D, D)
    cross = (gram.sum(axis=(1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (C * (C - 1))
    return np.sign(cross) * np.sqrt(np.abs(cross)) / np.linalg.norm(K_ref, axis=(-2, -1))


def captured_fraction(K_chains, K_ref, K_theory) -> np.ndarray:
    """Per chain and layer, ``<K_c - K_ref, D> / ||D||^2`` with ``D = K_theory - K_ref``.

    1 when the samples carry the theory's correction, 0 when they sit at ``K_ref``; a linear
    statistic, so its chain mean is unbiased and its chain spread is the Monte Carlo error.
    Layers where the theory's correction vanishes (layer 0) give NaN.
    """
    D = np.asarray(K_theory) - np.asarray(K_ref)
    num = np.einsum("clij,lij->cl", np.asarray(K_chains) - np.asarray(K_ref)[None], D)
    den = np.einsum("lij,lij->l", D, D)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def spike_bulk(K, Y) -> np.ndarray:
    """Mean eigenvalue of ``K`` in span(Y) (spike) and orthogonal to it (bulk), last axis (2,)."""
    Q, _ = np.linalg.qr(np.asarray(Y, dtype=np.float64))
    K = np.asarray(K)
    inside = np.einsum("pi,...pq,qi->...", Q, K, Q)
    total = np.trace(K, axis1=-2, axis2=-1)
    m, P = Q.shape[1], K.shape[-1]
    return np.stack([inside / m, (total - inside) / (P - m)], axis=-1)


def chain_mcse(per_chain) -> np.ndarray:
    """Standard error of the mean over independent chains (axis 0)."""
    per_chain = np.asarray(per_chain)
    return per_chain.std(axis=0, ddof=1) / np.sqrt(per_chain.shape[0])


# ----------------------------------------------------------------------------- one experiment


def nngp_layer_kernels(exp: Experiment) -> np.ndarray:
    """NNGP kernels ``K_0 .. K_L`` of an experiment's training inputs (tying plays no part)."""
    s = exp.spec
    return nngp_kernels(exp.data.X_train, s.activation, s.layer_variances).train


class LayerComparison(NamedTuple):
    """Sampled, NNGP and theory layer kernels of one experiment, and their summaries.

    Arrays over layers run ``l = 0..L`` (layer 0, the input kernel, has no correction).

    Attributes
    ----------
    samples : (chain, L+1, P, P)   posterior-mean kernels per chain
    nngp, theory : (L+1, P, P)     theory None when ``method`` is None
    correction_samples : (L+1,)    :func:`debiased_correction` of the samples vs NNGP
    correction_theory : (L+1,)     relative correction of the theory vs NNGP (NaN without theory)
    captured : (chain, L+1)        :func:`captured_fraction` (NaN without theory)
    cka_samples : (chain, L+1)     CKA of each chain's kernels with Y
    cka_nngp, cka_theory : (L+1,)
    """

    samples: np.ndarray
    nngp: np.ndarray
    theory: np.ndarray | None
    correction_samples: np.ndarray
    correction_theory: np.ndarray
    captured: np.ndarray
    cka_samples: np.ndarray
    cka_nngp: np.ndarray
    cka_theory: np.ndarray


def compare_layers(run: SampledKernels, method: str | None = "perturbative", **solver) -> LayerComparison:
    """Hold a sampled run's layer kernels against the NNGP and kernel-adaptation theory."""
    exp, K = run.experiment, run.kernels
    Y = exp.data.Y_train
    nngp = nngp_layer_kernels(exp)
    theory = None if method is None else adapted_kernels(exp, method, **solver)
    nan = np.full(nngp.shape[0], np.nan)
    return LayerComparison(
        K, nngp, theory, debiased_correction(K, nngp),
        nan if theory is None else relative_correction(theory, nngp),
        np.full(K.shape[:2], np.nan) if theory is None else captured_fraction(K, nngp, theory),
        centred_kernel_alignment(K, Y), centred_kernel_alignment(nngp, Y),
        nan if theory is None else centred_kernel_alignment(theory, Y))


# ----------------------------------------------------------------------------- criticality


def fixed_point_chi(activation, g) -> float:
    """``chi = g <phi'(h)^2>`` at the NNGP variance fixed point ``q*`` (1 at the edge of chaos)."""
    return response_chi(activation, g, nngp_fixed_point(activation, g))


class CriticalityTheory(NamedTuple):
    """Theory of the learned kernel correction against the weight variance g, per depth.

    Arrays ``(depth, g, layer)`` run over ``depths``, ``g`` and hidden layers ``l = 1..max(depths)``
    (NaN beyond a network's depth).

    Attributes
    ----------
    g, chi : (G,)            weight variance and ``chi`` at the NNGP fixed point
    depths : (D,)
    correction : (D, G, Lmax)  ``||K_theory - K_NNGP||_F / ||K_NNGP||_F`` of each hidden layer
    cka_nngp, cka_theory : (D, G, Lmax)
    gradient_signal : (D, G, Lmax)  ``prod_{k >= l} chi_k`` along the network (gradient_signal)
    """

    g: np.ndarray
    chi: np.ndarray
    depths: np.ndarray
    correction: np.ndarray
    cka_nngp: np.ndarray
    cka_theory: np.ndarray
    gradient_signal: np.ndarray


def criticality_theory(activation, g_values, depths, K0, Y, N, T, method="perturbative", sigma_a2=None,
                       **solver) -> CriticalityTheory:
    """Kernel-adaptation theory through the order-to-chaos transition (lazy networks).

    Every layer has weight variance g (``g_l = g``, readout ``sigma_a2``, default g as well);
    for each depth L and g, :func:`~widebayes.theory.kernel_adaptation.solve_kernels` by
    ``method`` gives the adapted kernels.  For odd phi without bias (tanh) the transition is at
    g = 1, where ``chi = g <phi'^2>`` at the NNGP fixed point reaches 1.

    ``method = 'perturbative'`` (default) is the O(1/N) correction, one pass, always defined.
    ``'saddle'`` solves the forward/backward equations with Monte Carlo tilts (Newton-Krylov,
    continued from the NNGP); entries where it finds no saddle are NaN.  Measured on XOR
    (P = 16, T = 0.1, L = 3, tanh): at N = 200 it agrees with 'perturbative' within 4%; at N = 50
    (where the damped iteration it replaced failed for g >= 1) its top-layer correction is
    0.060 / 0.116 / 0.117 at g = 0.5 / 1 / 2 against the samples' 0.058 / 0.120 / 0.116 and the
    O(1/N) theory's 0.051 / 0.125 / 0.136.
    """
    g_values, depths = np.asarray(g_values, float), np.asarray(depths, int)
    shape = (depths.size, g_values.size, depths.max())
    corr, cka_n, cka_t, signal = (np.full(shape, np.nan) for _ in range(4))
    for i, L in enumerate(depths):
        for j, g in enumerate(g_values):
            gl = [g] * L + [g if sigma_a2 is None else sigma_a2]
            nngp = solve_kernels(K0, Y, activation, gl, N, T, "nngp").layer_kernels[1:]
            signal[i, j, :L] = gradient_signal(activation, gl, K0).cumulative
            cka_n[i, j, :L] = centred_kernel_alignment(nngp, Y)
            theory = _solve_or_none(K0, Y, activation, gl, N, T, method, solver)
            if theory is not None:
                corr[i, j, :L] = relative_correction(theory, nngp)
                cka_t[i, j, :L] = centred_kernel_alignment(theory, Y)
    chi = np.array([fixed_point_chi(activation, g) for g in g_values])
    return CriticalityTheory(g_values, chi, depths, corr, cka_n, cka_t, signal)


def _solve_or_none(K0, Y, activation, g, N, T, method, solver):
    """Hidden-layer kernels ``K_1 .. K_L`` by ``method``; None where the saddle iteration fails."""
    try:
        with np.errstate(invalid="raise", over="raise", divide="raise"):
            return solve_kernels(K0, Y, activation, g, N, T, method, **solver).layer_kernels[1:]
    except (RuntimeError, FloatingPointError, np.linalg.LinAlgError):
        if method != "saddle":
            raise
        return None


class CriticalitySamples(NamedTuple):
    """Sampled learned correction against g, beside the theory (arrays (G, ...), layers 0..L).

    Attributes
    ----------
    g, chi : (G,)
    comparisons : list of LayerComparison, one per g
    correction_samples, correction_theory : (G, L+1)
    captured : (G, chain, L+1)
    """

    g: np.ndarray
    chi: np.ndarray
    comparisons: list
    correction_samples: np.ndarray
    correction_theory: np.ndarray
    captured: np.ndarray


def criticality_samples(base_cfg: dict, g_values, method="perturbative",
                        sample: Callable[[dict], SampledKernels] = sample_kernels,
                        sigma_a2: float | None = None,
                        **solver) -> CriticalitySamples:
    """Sample ``base_cfg`` (a lazy experiment) with the hidden weight variance set to g, per g.

    ``network.sigma_w2 = g`` and ``network.sigma_a2 = sigma_a2``, or ``= g`` too when ``sigma_a2``
    is None (the readout's variance moving with g mixes criticality with the output scale: pass a
    number to hold the output scale fixed, as :func:`criticality_theory` does); each run is compared
    with the NNGP and the theory by ``method`` (:func:`compare_layers`).
    """
    def readout(g):
        return float(g) if sigma_a2 is None else float(sigma_a2)

    comps = [compare_layers(sample(resolve(with_network(base_cfg, sigma_w2=float(g), sigma_a2=readout(g)))),
                            method, **solver) for g in g_values]
    activation = resolve(base_cfg)["network"]["activation"]
    chi = np.array([fixed_point_chi(activation, g) for g in g_values])
    return CriticalitySamples(np.asarray(g_values, float), chi, comps,
                              np.stack([c.correction_samples for c in comps]),
                              np.stack([c.correction_theory for c in comps]),
                              np.stack([c.captured for c in comps]))


# ----------------------------------------------------------------------------- readout exponent


class ReadoutSweep(NamedTuple):
    """Learned kernel correction against the readout exponent gamma (arrays (G, ...), layers 0..L).

    Attributes
    ----------
    gamma : (G,)
    correction : (G, L+1)          :func:`debiased_correction` vs NNGP
    correction_chains : (G, chain, L+1)  each chain's relative correction (noise included)
    cka : (G, chain, L+1)          CKA with Y per chain
    cka_nngp : (L+1,)
    """

    gamma: np.ndarray
    correction: np.ndarray
    correction_chains: np.ndarray
    cka: np.ndarray
    cka_nngp: np.ndarray


def readout_sweep(base_cfg: dict, gammas, sample: Callable[[dict], SampledKernels] = sample_kernels
                  ) -> ReadoutSweep:
    """Sample ``base_cfg`` at readout exponents ``gamma`` in [1/2, 1]: the lazy-to-rich crossover.

    ``network.readout = gamma`` (output ``a^T phi / N^gamma``, ``T_eff = T N^(1 - 2 gamma)``,
    :func:`widebayes.networks.effective_temperature`); fix ``sigma_a2`` in ``base_cfg`` so that
    only gamma moves.  The learned correction is O(1/N) at gamma = 1/2 and O(1) at gamma = 1.

    Theory covers the two ends only: kernel adaptation (:mod:`widebayes.theory.kernel_adaptation`)
    is the lazy theory, gamma = 1/2; :mod:`widebayes.theory.nonlazy` is the non-lazy theory,
    gamma = 1 (coding schemes, van Meegen & Sompolinsky); nothing here covers 1/2 < gamma < 1.
    """
    runs = [sample(resolve(with_network(base_cfg, readout=_readout(gm)))) for gm in gammas]
    exp = runs[0].experiment
    nngp, Y = nngp_layer_kernels(exp), exp.data.Y_train
    return ReadoutSweep(np.asarray(gammas, float),
                        np.stack([debiased_correction(r.kernels, nngp) for r in runs]),
                        np.stack([relative_correction(r.kernels, nngp[None]) for r in runs]),
                        np.stack([centred_kernel_alignment(r.kernels, Y) for r in runs]),
                        centred_kernel_alignment(nngp, Y))


def _readout(gamma) -> str | float:
    """The ``network.readout`` value of gamma: the names at the two ends, else the number."""
    return {0.5: "lazy", 1.0: "nonlazy"}.get(float(gamma), float(gamma))


# ----------------------------------------------------------------------------- tied weights


def prior_kernels(rng_key, X, spec, num_draws: int, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Prior mean of the layer kernels ``K_0 .. K_L`` of a finite network and its standard error.

    Weights drawn from the prior (``networks.param_prior_variances``; a tied ``W`` is one draw
    shared by layers 2..L), kernels by ``observables.gram_stack``.  Returns ``(mean, sem)``,
    each (L+1, P, P).
    """
    import jax
    import jax.numpy as jnp

    from widebayes.networks import param_prior_variances, param_shapes
    from widebayes.observables import gram_stack, layer_features

    shapes, var = param_shapes(spec), param_prior_variances(spec)
    Xj = jnp.asarray(X, jnp.float32)

    def one(key):
        keys = dict(zip(shapes, jax.random.split(key, len(shapes))))
        params = {n: jnp.sqrt(var[n]) * jax.random.normal(keys[n], shapes[n]) for n in shapes}
        return gram_stack(Xj, layer_features(params, Xj, spec))

    many = jax.jit(jax.vmap(one))
    keys = jax.random.split(rng_key, -(-num_draws // batch) * batch).reshape(-1, batch, 2)
    grams = np.concatenate([np.asarray(many(k), np.float64) for k in keys])[:num_draws]
    return grams.mean(axis=0), grams.std(axis=0, ddof=1) / np.sqrt(num_draws)


class PriorTying(NamedTuple):
    """Prior layer kernels of untied and tied networks against the NNGP, each (L+1, P, P)."""

    nngp: np.ndarray
    untied: np.ndarray
    tied: np.ndarray
    untied_sem: np.ndarray
    tied_sem: np.ndarray


def prior_tied_vs_untied(X, activation, depth: int, width: int, sigma_w2=1.0, num_draws=2000,
                         seed=0) -> PriorTying:
    """Prior-mean kernels of wide tied and untied networks and the NNGP recursion.

    The NNGP recursion (:func:`widebayes.theory.nngp.nngp_kernels`) has no notion of tying:
    at infinite width a tied network (the recurrent net unrolled) has the same layer kernels.
    Sampling the prior of both at a finite width checks it within Monte Carlo error.
    """
    import jax

    from widebayes.networks import NetworkSpec

    X = np.asarray(X, np.float64)
    spec = NetworkSpec(X.shape[1], width, depth, 1, activation, 0.5, False, (float(sigma_w2),) * depth, 1.0)
    k_u, k_t = jax.random.split(jax.random.PRNGKey(seed))
    untied = prior_kernels(k_u, X, spec, num_draws)
    tied = prior_kernels(k_t, X, spec._replace(tied_weights=True), num_draws)
    nngp = nngp_kernels(X, activation, spec.layer_variances).train
    return PriorTying(nngp, untied[0], tied[0], untied[1], tied[1])


class TiedVsUntied(NamedTuple):
    """Sampled posterior-mean kernels of tied and untied networks (layers 0..L).

    Attributes
    ----------
    untied, tied : LayerComparison
    difference : (L+1,)   ``||mean K_tied - mean K_untied||_F / ||mean K_untied||_F``
    noise : (L+1,)        the value ``difference`` takes from chain noise alone,
                          ``sqrt((s_t^2 + s_u^2) / C) / ||mean K_untied||_F`` with ``s^2`` the
                          chains' Frobenius variance about their mean
    excess : (L+1,)       ``sign * sqrt(|difference^2 - noise^2|)``: the noise-debiased difference
    """

    untied: LayerComparison
    tied: LayerComparison
    difference: np.ndarray
    noise: np.ndarray
    excess: np.ndarray


def _chain_variance(K):
    """Frobenius variance of one chain's kernels about the chain mean, per layer (unbiased)."""
    return np.sum((K - K.mean(axis=0)) ** 2, axis=(-2, -1)).sum(axis=0) / (K.shape[0] - 1)


def tied_vs_untied(base_cfg: dict, method: str | None = "perturbative",
                   sample: Callable[[dict], SampledKernels] = sample_kernels, **solver) -> TiedVsUntied:
    """Sample ``base_cfg`` with untied and tied hidden weights (same data, same seed) and compare.

    Needs depth >= 2 (with one hidden layer there is nothing to tie).  The theory (``method``)
    knows nothing of tying, so both comparisons share the same NNGP and theory kernels.
    """
    if resolve(base_cfg)["network"]["depth"] < 2:
        raise ValueError("tied weights need depth >= 2")
    untied = compare_layers(sample(resolve(with_network(base_cfg, tied_weights=False))), method, **solver)
    tied = compare_layers(sample(resolve(with_network(base_cfg, tied_weights=True))), method, **solver)
    mu, mt = untied.samples.mean(axis=0), tied.samples.mean(axis=0)
    scale = np.linalg.norm(mu, axis=(-2, -1))
    C = untied.samples.shape[0]
    noise2 = (_chain_variance(untied.samples) + _chain_variance(tied.samples)) / C
    diff2 = np.sum((mt - mu) ** 2, axis=(-2, -1))
    excess = np.sign(diff2 - noise2) * np.sqrt(np.abs(diff2 - noise2))
    return TiedVsUntied(untied, tied, np.sqrt(diff2) / scale, np.sqrt(noise2) / scale, excess / scale)
