"""The kernel sections: posterior-averaged layer kernels against the NNGP and the theory's
kernels, their alignment with the targets, and kernel adaptation (lazy networks).

Every theory kernel carries a label saying what produced it, layer by layer
(:func:`theory_layer_kernels`): the lazy theory of a nonlinear network (BPKR heuristic, THEORY.md
2.6) puts its learned correction on the feature layer only, so its lower layers are the NNGP; the
report calls them "NNGP", or, where the theory also gives the per-layer O(1/N) kernel-adaptation
kernels (``kernel_train_perturbative``, ``theory/kernel_adaptation.py``, THEORY.md 3.3/3.5), uses
those there under the label "kernel adaptation O(1/N)".  Theory files that list
``kernel_train_methods`` (theory/predict.py) name each layer's source themselves.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import kernels as dkern
from widebayes.posterior import PosteriorView
from widebayes.report.common import MAX_SHOWN_INPUTS, class_bounds, rel_diff, theory_kernels

INPUT_KERNEL = "input kernel"
NNGP = "NNGP"
KERNEL_ADAPTATION = "kernel adaptation O(1/N)"
# what each theory method is, as the report names it (theory/predict.py and theory/nonlazy)
THEORY_SOURCES = {
    "bpkr": "BPKR, exact for linear networks (THEORY.md 2.5)",
    "bpkr-heuristic": "BPKR heuristic feature kernel (THEORY.md 2.6)",
    "nngp": NNGP,
    "linear-analog": "non-lazy mean field, linear (THEORY.md 1.3)",
    "single-neuron-quadrature": "non-lazy mean field, single-neuron quadrature (THEORY.md 1.2)",
    "redundant-codes": "non-lazy mean field, redundant codes (THEORY.md 1.4b)",
    "sparse-codes": "non-lazy mean field, sparse codes (THEORY.md 1.5b)",
    "conditional-mode": "non-lazy conditional mode (THEORY.md 1.4, the paper's MNIST theory)",
    "deep-codes": "non-lazy mean field, one rate per hidden layer (THEORY.md 1.2, deep nets)",
}
# what made one layer's theory kernel (``kernel_train_methods``, theory/predict.py ``kernel_methods``)
LAYER_METHODS = {"input": INPUT_KERNEL, "nngp": NNGP, "perturbative": KERNEL_ADAPTATION,
                 "saddle": "kernel adaptation saddle (rate-function mode)",
                 "bpkr": THEORY_SOURCES["bpkr"], "bpkr-heuristic": THEORY_SOURCES["bpkr-heuristic"]}
ADAPTATION_KEYS = {"kernel_train_saddle": "saddle", "kernel_train_perturbative": "O(1/N)"}
KERNEL_DEFINITION = ("K_l = phi_l . phi_l / N averaged over draws and chains; learned part K_l - K_l^NNGP; "
                     "alignment CKA(K_l, Y Y^T) (Kornblith et al. 2019)")


def theory_source(theory) -> str | None:
    """What made the theory's predictions, in words (its ``method``; None without a theory)."""
    if theory is None:
        return None
    method = theory.get("method", "?")
    return THEORY_SOURCES.get(method, f"{theory.get('regime', '?')} theory, method {method}")


class TheoryKernels(NamedTuple):
    """The theory's layer kernels ``(layer, P, P)`` on the training inputs, and per layer a label
    saying what produced it."""

    kernels: np.ndarray
    sources: list


def theory_layer_kernels(theory, like) -> TheoryKernels | None:
    """The theory's kernel of every layer, each labelled by what it is.

    Where the theory lists ``kernel_train_methods`` (one per layer, theory/predict.py) each layer
    is labelled by :data:`LAYER_METHODS`.  Otherwise (older theory files): layer 0 is the input
    kernel.  A layer where ``kernel_train`` is the theory's own NNGP kernel
    (``kernel_train_nngp``, equal to the last bit) is the NNGP: labelled :data:`NNGP`, or replaced by
    the O(1/N) kernel-adaptation kernel ``kernel_train_perturbative`` where the theory gives it
    (:data:`KERNEL_ADAPTATION`).  Every other layer is the theory's own (:func:`theory_source`).
    None when the theory has no ``kernel_train`` of the sampled kernels' shape ``like``.
    """
    K = theory_kernels(theory, "kernel_train", like)
    if K is None:
        return None
    methods = theory.get("kernel_train_methods")
    if methods is not None and len(methods) == len(K):
        return TheoryKernels(np.asarray(K), [LAYER_METHODS.get(m, f"theory method {m}") for m in methods])
    nngp = theory_kernels(theory, "kernel_train_nngp", like)
    adapted = theory_kernels(theory, "kernel_train_perturbative", like)
    K, sources = K.copy(), [INPUT_KERNEL]
    for layer in range(1, len(K)):
        if nngp is not None and np.array_equal(K[layer], nngp[layer]):
            if adapted is not None:
                K[layer] = adapted[layer]
            sources.append(NNGP if adapted is None else KERNEL_ADAPTATION)
        else:
            sources.append(theory_source(theory))
    return TheoryKernels(K, sources)


class Alignment(NamedTuple):
    """CKA of each layer kernel with the targets: samples, NNGP and (None without) theory."""

    samples: np.ndarray
    nngp: np.ndarray
    theory: np.ndarray | None


class TestAlignment(NamedTuple):
    samples: np.ndarray
    nngp: np.ndarray


class KernelAdaptation(NamedTuple):
    """Kernel adaptation against samples, NNGP and the theory's kernels (per layer)."""

    method: str
    alignment_with_targets: dict
    learned_part_relative_norm: dict
    samples_vs_kernel_adaptation_relative_difference: list
    theory_sources: list | None


class Kernels(NamedTuple):
    """The kernel section; ``theory_sources`` labels the theory's kernel of each layer."""

    alignment_with_targets: Alignment
    learned_part_relative_norm: list
    samples_vs_theory_relative_difference: list | None
    theory_sources: list | None
    test_alignment_with_targets: TestAlignment | None
    kernel_adaptation: KernelAdaptation | None
    definition: str = KERNEL_DEFINITION

    def to_json(self) -> dict:
        out = {"alignment_with_targets": self.alignment_with_targets,
               "learned_part_relative_norm": self.learned_part_relative_norm,
               "samples_vs_theory_relative_difference": self.samples_vs_theory_relative_difference,
               "theory_sources": self.theory_sources, "definition": self.definition}
        if self.test_alignment_with_targets is not None:
            out["test_alignment_with_targets"] = self.test_alignment_with_targets
        if self.kernel_adaptation is not None:
            out["kernel_adaptation"] = self.kernel_adaptation
        return out


class KernelFigures(NamedTuple):
    train: dict
    test: dict | None
    alignment: dict
    adaptation: dict | None


def _heatmaps(title, inputs, K, K0, labels, theory: TheoryKernels | None) -> dict:
    """Samples, NNGP, learned part (and theory) of layers 1..L on inputs ordered by class."""
    L = len(K) - 1
    order = dkern.class_order(labels, MAX_SHOWN_INPUTS)
    ix = np.ix_(range(1, L + 1), order, order)
    columns = {"samples": K[ix], "NNGP": K0[ix], "learned (samples - NNGP)": (K - K0)[ix]}
    out = {"title": title, "inputs": inputs, "layers": list(range(1, L + 1)), "columns": columns,
           "inputs_shown": order, "class_bounds": class_bounds(labels[order])[0]}
    if inputs == "training":  # the theory's kernels are on training inputs only
        columns["theory"] = None if theory is None else theory.kernels[ix]
        out["theory_sources"] = None if theory is None else theory.sources[1:]
    return out


def kernel_section(run: PosteriorView, nngp, theory,
                   th: TheoryKernels | None) -> tuple[Kernels, KernelFigures]:
    """Layer kernels against the NNGP and the theory's labelled kernels ``th``
    (:func:`theory_layer_kernels`), and their figures (train, test, alignment, kernel adaptation)."""
    K, K0 = run.kernel, nngp.train
    align = Alignment(dkern.target_alignment(K, run.Y_train), dkern.target_alignment(K0, run.Y_train),
                      None if th is None else dkern.target_alignment(th.kernels, run.Y_train))
    layers = list(range(run.depth + 1))
    train_fig = _heatmaps("Posterior-averaged layer kernels on training inputs", "training", K, K0,
                          run.labels_train, th)
    test_fig = test_align = None
    if run.kernel_test is not None and nngp.test is not None:
        test_fig = _heatmaps("Posterior-averaged layer kernels on test inputs", "test", run.kernel_test,
                             nngp.test, run.labels_test, None)
        test_align = TestAlignment(dkern.target_alignment(run.kernel_test, run.Y_test),
                                   dkern.target_alignment(nngp.test, run.Y_test))
    adaptation, adaptation_fig = kernel_adaptation_section(run, nngp, theory, th, align)
    section = Kernels(align, [rel_diff(K[layer], K0[layer]) for layer in layers],
                      None if th is None else [rel_diff(K[layer], th.kernels[layer]) for layer in layers],
                      None if th is None else th.sources, test_align, adaptation)
    align_fig = {"layers": layers, **align._asdict(), "theory_sources": None if th is None else th.sources}
    return section, KernelFigures(train_fig, test_fig, align_fig, adaptation_fig)


def kernel_adaptation_section(run: PosteriorView, nngp, theory, th: TheoryKernels | None,
                              alignment: Alignment) -> tuple[KernelAdaptation | None, dict | None]:
    """Kernel adaptation (lazy experiments; ``theory/kernel_adaptation.py``): per layer the
    alignment of the kernels with the targets (NNGP, theory, kernel adaptation, samples) and the
    learned correction ``K_l - K_l^NNGP`` of each, on one colour scale per layer.  The theory's
    kernels are :func:`theory_layer_kernels` (labelled per layer)."""
    K, K0 = run.kernel, nngp.train
    found = ((k, theory_kernels(theory, k, K)) for k in ADAPTATION_KEYS)
    key, K_ad = next(((k, v) for k, v in found if v is not None), (None, None))
    if key is None:
        return None, None
    kernels = {"samples": K, "kernel adaptation": K_ad, "theory": None if th is None else th.kernels}
    layers = list(range(run.depth + 1))
    align = {"nngp": alignment.nngp, "samples": alignment.samples,
             "kernel adaptation": dkern.target_alignment(K_ad, run.Y_train)}
    if alignment.theory is not None:
        align["theory"] = alignment.theory
    sources = None if th is None else th.sources
    section = KernelAdaptation(ADAPTATION_KEYS[key], align,
                               {name: [rel_diff(v[layer], K0[layer]) for layer in layers]
                                for name, v in kernels.items() if v is not None},
                               [rel_diff(K[layer], K_ad[layer]) for layer in layers], sources)
    order = dkern.class_order(run.labels_train, MAX_SHOWN_INPUTS)
    ix = np.ix_(range(1, run.depth + 1), order, order)
    figure = {"layers": layers, "method": ADAPTATION_KEYS[key], "alignment": align,
              "learned": {name: (v - K0)[ix] for name, v in kernels.items() if v is not None},
              "hidden_layers": list(range(1, run.depth + 1)), "theory_sources": sources,
              "class_bounds": class_bounds(run.labels_train[order])[0]}
    return section, figure
