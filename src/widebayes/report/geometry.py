"""Representational geometry across layers (perspective Fig. 7) and representational drift
(perspective Fig. 8; THEORY.md 6.1-6.3).

Geometry comes from kernels (sampled posterior-mean kernels, NNGP, the theory's labelled layer
kernels) and from the sampled representations themselves.  With few classes the mean-field
"capacity" alpha_M is a per-manifold descriptor of the class manifolds about a stated origin, not
a capacity prediction (THEORY.md 6.2b; ``diagnostics.geometry.capacity_kind``).

Drift lags use one rule (:func:`lag_times`): paper time ``lag_steps * paper_time_per_step`` (the
attribute stored in posterior.nc), prior relaxation times ``lag_paper_time * T_eff / sigma^2``
(``tau_prior = sigma^2 / T_eff``, THEORY.md 6.3).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import drift as ddrift
from widebayes.diagnostics import geometry as dgeo
from widebayes.posterior import PosteriorView
from widebayes.report.kernels import TheoryKernels

FEWSHOT_M = 5
FEWSHOT_EPISODES = 500
CAPACITY_SAMPLES = 1000  # Gaussian vectors per manifold: Monte Carlo spread about 1%
CAPACITY_ORIGIN = "global_mean"  # the origin of kernel_capacity and manifold_capacity below


def fewshot_shots(labels) -> int:
    """Shots per class for the few-shot numbers: 5, or fewer when a class is too small to hold
    out a test point (0: no few-shot numbers)."""
    return int(min(FEWSHOT_M, np.bincount(np.asarray(labels))[np.unique(labels)].min() - 1))


def _pair_mean(x):
    return np.nanmean(x, axis=(-2, -1))


class CapacityMeaning(NamedTuple):
    """What the reported alpha_M is: ``kind`` (``dgeo.capacity_kind``), for how many class
    manifolds, about which origin, and where that is argued."""

    kind: str
    num_manifolds: int
    origin: str
    note: str


def capacity_meaning(num_manifolds: int) -> CapacityMeaning:
    kind = dgeo.capacity_kind(num_manifolds)
    note = ("mean-field anchor-point alpha_M (Chung, Lee & Sompolinsky 2018), harmonic mean over the class "
            "manifolds; the theory assumes many random, uncorrelated manifolds, so for this few it describes "
            "their geometry and is not a prediction of their capacity (THEORY.md 6.2b)"
            if kind == "per-manifold descriptor" else "mean-field anchor-point capacity (THEORY.md 6.2)")
    return CapacityMeaning(kind, int(num_manifolds), dgeo.ORIGINS[CAPACITY_ORIGIN], note)


class KernelGeometry(NamedTuple):
    """Per layer (means over ordered class pairs): signal ``||dx0||^2/R_a^2``, dimension ``D_a``
    (and per pair, ``(layer, a, b)`` with a NaN diagonal), the predicted m-shot error (None
    without shots), alpha_M with the mean anchor radius and dimension; for the theory's kernels
    the label of each layer's kernel (``kernel_sources``)."""

    signal: np.ndarray
    dimension: np.ndarray
    signal_pairs: np.ndarray
    dimension_pairs: np.ndarray
    fewshot_error: np.ndarray | None
    capacity: np.ndarray
    radius: np.ndarray
    capacity_dimension: np.ndarray
    kernel_sources: list | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self._asdict().items()
                if v is not None or k not in ("fewshot_error", "kernel_sources")}


def kernel_geometry(K, labels, m: int, kernel_sources=None) -> KernelGeometry:
    """Geometry of every layer of ``K (layer, P, P)``: signal, dimension and the predicted m-shot
    error from ``diagnostics.geometry.geometry_from_kernels``, and alpha_M with its mean anchor
    radius and dimension (``kernel_capacity``, origin :data:`CAPACITY_ORIGIN`)."""
    geo, _ = dgeo.geometry_from_kernels(K, labels)
    err = _pair_mean(dgeo.gaussian_tail(dgeo.snr_from_geometry(geo, m))) if m >= 1 else None
    caps = [dgeo.kernel_capacity(K_l, labels, n_t=CAPACITY_SAMPLES) for K_l in np.asarray(K)]
    return KernelGeometry(_pair_mean(geo.dist2), _pair_mean(geo.Da), geo.dist2, geo.Da, err,
                          np.array([c.alpha_total for c in caps]), np.array([c.radius.mean() for c in caps]),
                          np.array([c.dimension.mean() for c in caps]), kernel_sources)


class RepresentationGeometry(NamedTuple):
    """Per stored layer (0 = inputs) of the sampled representations: simulated m-shot error (and
    its standard error) and alpha_M, from the last draw of ``chains`` chains."""

    layers: list
    fewshot_error_simulated: np.ndarray
    fewshot_error_se: np.ndarray
    capacity: np.ndarray
    chains: int


def representation_geometry(run: PosteriorView, m: int, max_chains: int = 2) -> RepresentationGeometry:
    """Geometry of the sampled representations themselves (not their mean kernel): per stored
    layer (0 = the inputs), the simulated m-shot prototype error (mean over ordered class pairs)
    and alpha_M, each from the last draw of the first ``max_chains`` chains and averaged over them."""
    import jax

    layers = [0] + sorted(run.phi)
    chains = range(min(max_chains, run.phi[run.depth].shape[0]))
    points = {0: [run.X_train]}  # the inputs are the same in every chain
    points.update({layer: [run.phi[layer][c, -1].T for c in chains] for layer in run.phi})
    idx = [np.flatnonzero(run.labels_train == c) for c in np.unique(run.labels_train)]
    err, se, cap = [], [], []
    for layer in layers:
        if not all(np.all(np.isfinite(x)) for x in points[layer]):
            err.append(np.nan), se.append(np.nan), cap.append(np.nan)
            continue
        runs = [dgeo.fewshot_error(x[ia], x[ib], m, jax.random.PRNGKey(17 * layer + a * len(idx) + b),
                                   n_episodes=FEWSHOT_EPISODES)
                for x in points[layer] for a, ia in enumerate(idx) for b, ib in enumerate(idx) if a != b]
        err.append(np.mean([r.err for r in runs]))
        se.append(np.sqrt(np.sum([r.se**2 for r in runs])) / len(runs))
        cap.append(np.mean([dgeo.manifold_capacity(dgeo.class_manifolds(x, run.labels_train),
                                                    n_t=CAPACITY_SAMPLES, origin=CAPACITY_ORIGIN).alpha_total
                            for x in points[layer]]))
    return RepresentationGeometry(layers, np.array(err), np.array(se), np.array(cap), len(chains))


class Geometry(NamedTuple):
    """Kernel geometry per source (name -> :class:`KernelGeometry`), the shots ``fewshot_m``, the
    sampled representations' geometry (None without shots), and what alpha_M means here; or only
    a ``note`` when there is no geometry."""

    sources: dict
    fewshot_m: int | None = None
    representations: RepresentationGeometry | None = None
    capacity_meaning: CapacityMeaning | None = None
    note: str | None = None

    def to_json(self) -> dict:
        if self.note is not None:
            return {"note": self.note}
        out = {**self.sources, "fewshot_m": self.fewshot_m}
        if self.representations is not None:
            out["representations"] = self.representations
        return {**out, "capacity_meaning": self.capacity_meaning}


def geometry_section(run: PosteriorView, nngp,
                     theory_kernels: TheoryKernels | None) -> tuple[Geometry, dict | None]:
    """Representational geometry across layers (perspective Fig. 7): from kernels (sampled
    posterior-mean kernels on train and test inputs, NNGP, and the theory's labelled layer kernels
    where it gives them) and from the sampled representations themselves
    (:func:`representation_geometry`)."""
    if run.num_classes < 2 or len(np.unique(run.labels_train)) < 2:
        return Geometry({}, note="one class: no geometry"), None
    sources = {"samples, train inputs": (run.kernel, run.labels_train, None),
               "NNGP, train inputs": (nngp.train, run.labels_train, None)}
    if run.kernel_test is not None and len(np.unique(run.labels_test)) > 1:
        sources["samples, test inputs"] = (run.kernel_test, run.labels_test, None)
    if theory_kernels is not None:
        sources["theory, train inputs"] = (theory_kernels.kernels, run.labels_train, theory_kernels.sources)
    m = fewshot_shots(run.labels_train)
    geo = {name: kernel_geometry(K, labels, fewshot_shots(labels) if "test" in name else m, labelled)
           for name, (K, labels, labelled) in sources.items()}
    meaning = capacity_meaning(len(np.unique(run.labels_train)))
    section = Geometry(geo, m, representation_geometry(run, m) if m >= 1 else None, meaning)
    return section, {"layers": list(range(run.depth + 1)), "m": m, "sources": geo,
                     "representations": section.representations, "capacity_meaning": meaning}


# ---------------------------------------------------------------------------------- drift
class LagTimes(NamedTuple):
    """Lags in stored draws, in the paper's Langevin time and in prior relaxation times."""

    draws: np.ndarray
    paper_time: np.ndarray
    prior_time: np.ndarray


def lag_times(lag_draws, steps_per_draw: int, attrs: dict, sigma2: float) -> LagTimes:
    """The one rule for drift lags: ``lag_paper_time = lag_steps * attrs["paper_time_per_step"]``
    and ``lag_prior_time = lag_paper_time * T_eff / sigma^2``, since the prior alone relaxes a
    weight of variance ``sigma^2`` in ``tau_prior = sigma^2 / T_eff`` paper time units (THEORY.md
    6.3).  ``lag_steps = lag_draws * steps_per_draw`` (the sampler's ``thin``); ``attrs`` are
    posterior.nc's attributes (``paper_time_per_step``, ``T_eff``)."""
    lag_draws = np.asarray(lag_draws)
    paper = lag_draws * steps_per_draw * float(attrs["paper_time_per_step"])
    return LagTimes(lag_draws, paper, paper * float(attrs["T_eff"]) / sigma2)


DRIFT_DEFINITION = ("rho_u, rho_v, rho_uY: top singular vectors of the centred feature-layer activations "
                    "(each neuron's mean over the inputs removed); raw: of the raw activations phi(h(X)), "
                    "the perspective's definition (Fig. 8B, Eq. 16); lags in paper time = lag steps x "
                    "paper_time_per_step, in prior relaxation times sigma_1^2 / T_eff")


class Drift(NamedTuple):
    """Drift overlaps against lag, centred (the top-level ``rho_*`` of report.json) and raw (the
    perspective's), random-vector baselines and any SVD warnings; or only a ``note``."""

    lags: LagTimes | None = None
    centred: ddrift.DriftOverlaps | None = None
    raw: ddrift.DriftOverlaps | None = None
    baseline_u: float | None = None
    baseline_v: float | None = None
    warnings: list | None = None
    note: str | None = None

    def to_json(self) -> dict:
        if self.note is not None:
            return {"note": self.note}
        return {"lag_draws": self.lags.draws, "lag_paper_time": self.lags.paper_time,
                "lag_prior_time": self.lags.prior_time, **self.centred._asdict(),
                "baseline_u": self.baseline_u, "baseline_v": self.baseline_v, "warnings": self.warnings,
                "raw": self.raw, "definition": DRIFT_DEFINITION}


def drift_section(run: PosteriorView) -> Drift:
    """Representational drift over the stored draws (perspective "Representational Drift";
    THEORY.md 6.3): overlaps rho_u(tau), rho_v(tau) of the top singular vectors of the feature-layer
    activations on training inputs, raw (the perspective's definition) and centred, and their
    label alignment rho_{u,Y}, averaged over chains, against the random-vector baselines; lags by
    :func:`lag_times`."""
    phi = run.phi[run.depth]
    num_draws = phi.shape[1]
    if num_draws < 4 or not np.all(np.isfinite(phi)):
        return Drift(note="fewer than 4 finite draws per chain: no drift measures")
    max_lag = num_draws // 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        centred = ddrift.drift_overlaps(phi, run.Y_train, max_lag, center=True)
        raw = ddrift.drift_overlaps(phi, run.Y_train, max_lag, center=False)
    lags = lag_times(np.arange(max_lag + 1), run.config["sampler"]["thin"], run.attrs, run.sigma_w2[0])
    return Drift(lags, centred, raw, float(ddrift.random_baseline(phi.shape[-1])),
                 float(ddrift.random_baseline(phi.shape[-2])), sorted({str(w.message) for w in caught}))
