"""Few-shot learning of held-out classes (report.json ``fewshot_heldout``; perspective Figs. 2C-D,
3A-B; THEORY.md 6.1).

The network is sampled on the trained classes; the classes of ``[task] heldout_classes`` never
enter training.  For every layer (0 = the inputs) the m-shot prototype error of the held-out
classes (2-way, averaged over ordered class pairs) is simulated and predicted by the few-shot SNR
of the layer's manifold geometry, for several kernels of the held-out inputs
(``diagnostics.fewshot``, which writes the prototype classifier in kernel entries, exactly):

* ``samples (per draw)``: each of up to :data:`FEWSHOT_DRAWS` sampled draws' own kernel
  ``phi^T phi / N`` on the held-out pool, averaged over draws (the stored layers: the feature layer,
  every layer with ``store_all_layers``);
* ``samples (posterior-mean kernel)``: ``kernel_heldout``, the draws' kernels averaged;
* ``NNGP (prior)``: the NNGP kernel of the held-out inputs, the infinitely wide network before any
  training: a baseline, not a theory of the trained network;
* ``theory (...)``: the theory's posterior-mean kernels on the held-out inputs, for lazy networks
  (``theory.bpkr.bpkr_prediction`` with the held-out pool as test inputs: exact for linear networks;
  for nonlinear ones NNGP below the feature layer and the BPKR heuristic on it, each layer labelled).
  Non-lazy networks have no theory of kernels on new inputs here.

The error of a kernel is that of any representation whose Gram matrix it is; for a mean kernel,
of an infinitely wide network whose representations have that kernel.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import fewshot as dfew
from widebayes.posterior import PosteriorView
from widebayes.report.kernels import INPUT_KERNEL, NNGP, THEORY_SOURCES

FEWSHOT_SHOTS = (1, 5, 20)  # those with m <= MAX_SHOT_FRACTION x the smallest held-out class
FEWSHOT_EPISODES = 200  # per ordered class pair, kernel and m
FEWSHOT_DRAWS = 8  # sampled draws (spread over chains and the chain) for "samples (per draw)"
SAMPLES_PER_DRAW = "samples (per draw)"
SAMPLES_MEAN = "samples (posterior-mean kernel)"
NNGP_PRIOR = "NNGP (prior)"
DEFINITION = ("2-way m-shot prototype learning of the held-out classes (never trained on), averaged over "
              "ordered class pairs: simulated = error of classifying every non-shot point by its nearer "
              "prototype (mean of m shots), averaged over episodes (and draws); predicted = H(SNR) of the "
              "layer's manifold geometry (Sorscher et al. 2022, exact Gaussian form, THEORY.md 6.1b). Both "
              "from the kernel of the held-out inputs alone (the prototype classifier is a function of "
              "kernel entries, exactly); layer 0 is the input kernel.")


class FewShotSource(NamedTuple):
    """One kernel source, per layer (0 = inputs): ``simulated``, ``simulated_se`` and
    ``predicted`` (shots, layer); ``signal`` and ``dimension`` (layer); NaN where the layer is not
    available; the label of each layer's kernel (``kernel_sources``)."""

    simulated: np.ndarray
    simulated_se: np.ndarray
    predicted: np.ndarray
    signal: np.ndarray
    dimension: np.ndarray
    kernel_sources: list


class FewShotHeldout(NamedTuple):
    """report.json ``fewshot_heldout``: the classes, the held-out pool, the shots, the layers and
    one :class:`FewShotSource` per kernel source; or only a ``note``."""

    trained_classes: list | None = None
    heldout_classes: list | None = None
    heldout_per_class: list | None = None
    shots: list | None = None
    layers: list | None = None
    sources: dict | None = None
    draws_used: int | None = None
    definition: str = DEFINITION
    notes: list | None = None
    note: str | None = None

    def to_json(self) -> dict:
        if self.note is not None:
            return {"note": self.note}
        return {k: v for k, v in self._asdict().items() if k != "note"}


def _curves(kernels_by_layer: dict, labels, shots, depth: int, seed: int) -> tuple:
    """Per layer ``0 .. depth`` the :class:`~widebayes.diagnostics.fewshot.FewShotCurve` of its
    kernel (a stack: averaged over it), NaN for layers absent from ``kernels_by_layer``."""
    M, n = len(shots), depth + 1
    out = {k: np.full((M, n), np.nan) for k in ("simulated", "simulated_se", "predicted")}
    out.update(signal=np.full(n, np.nan), dimension=np.full(n, np.nan))
    for layer, K in kernels_by_layer.items():
        c = K if isinstance(K, dfew.FewShotCurve) else dfew.fewshot_curve(
            K, labels, shots, seed=seed + layer, n_episodes=FEWSHOT_EPISODES)
        out["simulated"][:, layer], out["simulated_se"][:, layer] = c.simulated, c.simulated_se
        out["predicted"][:, layer] = c.predicted
        out["signal"][layer], out["dimension"][layer] = c.signal, c.dimension
    return out


def draw_indices(num_chains: int, num_draws: int, limit: int = FEWSHOT_DRAWS) -> list[tuple[int, int]]:
    """Up to ``limit`` (chain, draw) pairs evenly spread over the chains' draws, the last included."""
    flat = np.unique(np.linspace(num_chains * num_draws - 1, 0, min(limit, num_chains * num_draws)).round())
    return [divmod(int(i), num_draws) for i in flat]


def theory_heldout_kernels(run: PosteriorView) -> tuple[np.ndarray | None, list | None, str]:
    """The lazy theory's posterior-mean kernels ``(layer, P_h, P_h)`` on the held-out pool, the
    label of each layer, and the source's name (or None and a note saying why there are none).

    ``theory.bpkr.bpkr_prediction`` with the training data of the run and the held-out pool as
    test inputs (``full_test``): BPKR, exact for deep linear networks (THEORY.md 2.5); for
    nonlinear ones the NNGP below the feature layer and the BPKR heuristic on it (THEORY.md 2.6).
    Computed here rather than taken from the experiment's theory JSON, so that it does not depend
    on the other predictions (e.g. a kernel-adaptation saddle that fails to converge).  Lazy
    readout (gamma = 1/2) of ``network_prior`` only.
    """
    from widebayes.activations import get_activation
    from widebayes.config import readout_gamma
    from widebayes.theory.bpkr import bpkr_prediction
    from widebayes.theory.predict import COVERED_MODELS

    net = run.config["network"]
    if net.get("model", "network_prior") not in COVERED_MODELS or readout_gamma(net["readout"]) != 0.5:
        return None, None, (f"no theory of the kernels on new inputs for readout = {net['readout']!r}, "
                            f"model {net.get('model', 'network_prior')!r} (lazy network_prior only)")
    linear = get_activation(run.activation).is_linear
    res = bpkr_prediction(run.X_train, run.Y_train, run.X_heldout, None, run.activation, run.sigma_w2,
                          run.sigma_a2, run.width, run.T_eff, full_test=True)
    label = THEORY_SOURCES["bpkr" if linear else "bpkr-heuristic"]
    sources = [INPUT_KERNEL] + [label if linear or layer == run.depth else NNGP
                                for layer in range(1, run.depth + 1)]
    return res.mean_kernels.test, sources, f"theory ({label})"


def fewshot_heldout_section(run: PosteriorView, seed: int = 0) -> tuple[FewShotHeldout, dict | None]:
    """The report's few-shot section on the held-out classes and its figure data (None without a
    held-out pool)."""
    from widebayes.theory.nngp import input_kernel, nngp_kernels

    if run.X_heldout is None:
        return FewShotHeldout(note="no held-out classes ([task] heldout_classes)"), None
    labels = run.labels_heldout
    classes, counts = np.unique(labels, return_counts=True)
    shots = dfew.usable_shots(FEWSHOT_SHOTS, labels, dfew.MAX_SHOT_FRACTION)
    if len(classes) < 2 or not shots:
        return FewShotHeldout(note=f"few-shot learning needs two or more held-out classes of "
                                   f"{int(np.ceil(1 / dfew.MAX_SHOT_FRACTION))} or more inputs each "
                                   "(shots take at most a fifth of a class)"), None
    L, notes = run.depth, []
    inputs = dfew.fewshot_curve(input_kernel(run.X_heldout), labels, shots, seed, FEWSHOT_EPISODES)
    picks = draw_indices(*run.phi[L].shape[:2]) if run.phi_heldout else []
    per_draw = {0: inputs, **{layer: dfew.draw_kernels(np.stack([phi[c, d] for c, d in picks]))
                              for layer, phi in run.phi_heldout.items()}}
    if any(not np.all(np.isfinite(K)) for K in per_draw.values() if isinstance(K, np.ndarray)):
        per_draw = {0: inputs}
        notes.append(f"{SAMPLES_PER_DRAW}: a draw is not finite; left out")
    if len(run.phi_heldout) < L:
        notes.append(f"{SAMPLES_PER_DRAW}: lower layers not stored (set [sampler] store_all_layers = true)")
    kernels = {SAMPLES_PER_DRAW: (per_draw, [INPUT_KERNEL] + ["samples"] * L)}
    if run.kernel_heldout is not None:
        kernels[SAMPLES_MEAN] = ({**dict(enumerate(run.kernel_heldout)), 0: inputs},
                                 [INPUT_KERNEL] + ["samples"] * L)
    nngp = nngp_kernels(run.X_heldout, run.activation, run.sigma_w2).train
    kernels[NNGP_PRIOR] = ({0: inputs, **{layer: nngp[layer] for layer in range(1, L + 1)}},
                           [INPUT_KERNEL] + [NNGP] * L)
    try:
        K_th, th_sources, th_name = theory_heldout_kernels(run)
    except Exception as err:  # noqa: BLE001 - a failing solver must not cost the samples' section
        K_th, th_sources, th_name = None, None, f"failed ({type(err).__name__}: {err}); samples only"
    if K_th is not None:
        kernels[th_name] = ({0: inputs, **{layer: K_th[layer] for layer in range(1, L + 1)}}, th_sources)
    else:
        notes.append(f"theory: {th_name}")
    sources = {}
    for i, (name, (by_layer, labelled)) in enumerate(kernels.items()):
        curves = _curves(by_layer, labels, shots, L, seed + 100 * (i + 1))
        sources[name] = FewShotSource(**curves, kernel_sources=labelled)
    section = FewShotHeldout(sorted(np.unique(run.labels_train).tolist()), classes.tolist(), counts.tolist(),
                             shots, list(range(L + 1)), sources, len(picks), notes=notes)
    return section, {"layers": section.layers, "shots": shots, "sources": sources,
                     "heldout_classes": section.heldout_classes, "trained_classes": section.trained_classes}
