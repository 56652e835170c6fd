"""The coding sections: codes per layer and the scheme, the readout clusters and outliers, code
stability (symmetry breaking), neural collapse, and the figures drawn from them (readout
posterior, outliers, code fractions, code stability)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import codes as dcodes
from widebayes.diagnostics import collapse as dcol
from widebayes.diagnostics import readout as dread
from widebayes.diagnostics import symmetry as dsym
from widebayes.posterior import PosteriorView
from widebayes.report.common import theory_array

SYMMETRY_DEFINITION = ("a neuron keeps its code when its code (train inputs) is the same in every stored "
                       "draw of its chain; the change rate is the fraction of consecutive draw pairs in "
                       "which it changes")


class LayerCodes(NamedTuple):
    """One layer's code threshold and code summaries on training (and test) inputs."""

    threshold: float
    train: dcodes.CodeSummary
    test: dcodes.CodeSummary | None

    def to_json(self) -> dict:
        out = {"threshold": self.threshold, "train": self.train}
        return out if self.test is None else {**out, "test": self.test}


class TheoryCode(NamedTuple):
    """A code of the theory: its string (class 0 first), fraction P_gamma, readout a_gamma, kind
    ("bulk", "outlier" or None) and class means s_gamma (or None)."""

    code: str
    fraction: float
    readout: np.ndarray
    kind: str | None
    class_means: np.ndarray | None


class Coding(NamedTuple):
    """Codes per layer (keyed by layer number), the feature layer's scheme, the train/test code
    agreement (None without a test set) and the theory's codes (None without them)."""

    threshold_rule: str
    layers: dict
    scheme: dcodes.SchemeClassification
    train_test_code_agreement: float | None
    theory_codes: list | None

    def feature_summary(self) -> dcodes.CodeSummary:
        """The feature layer's code summary on training inputs."""
        return self.layers[max(self.layers)].train

    def to_json(self) -> dict:
        out = {"threshold_rule": self.threshold_rule,
               "layers": {f"layer_{layer}": codes for layer, codes in self.layers.items()}}
        if self.train_test_code_agreement is not None:
            out["train_test_code_agreement"] = self.train_test_code_agreement
        out["scheme"] = self.scheme
        return out if self.theory_codes is None else {**out, "theory_codes": self.theory_codes}


def layer_thresholds(run: PosteriorView, nngp) -> dict:
    """Code threshold per layer (codes.default_threshold with the NNGP preactivation variance)."""
    return {layer: dcodes.default_threshold(run.activation,
                                            float(np.mean(np.diag(nngp.preact_train[layer - 1]))))
            for layer in run.phi}


def layer_code_ids(run: PosteriorView, thresholds: dict) -> dict:
    """Code ids ``(chain, draw, neuron)`` per stored layer on training inputs, and the feature
    layer's on test inputs under the key ``"test"``."""
    ids = {layer: dcodes.code_ids(dcodes.class_means(phi, run.labels_train, run.num_classes),
                                  thresholds[layer])
           for layer, phi in sorted(run.phi.items())}
    if run.phi_test is not None:
        s_test = dcodes.class_means(run.phi_test, run.labels_test, run.num_classes)
        ids["test"] = dcodes.code_ids(s_test, thresholds[run.depth])
    return ids


def coding_section(run: PosteriorView, thresholds: dict, ids: dict, theory) -> Coding:
    """Codes per layer on train (and test) inputs, the scheme classification, the theory's codes."""
    L = run.depth
    layers = {}
    for layer, phi in sorted(run.phi.items()):
        s = dcodes.class_means(phi, run.labels_train, run.num_classes)
        train = dcodes.summarize_codes(ids[layer], s, thresholds[layer], run.a if layer == L else None)
        test = None
        if layer in run.phi_test_lower:
            s_test = dcodes.class_means(run.phi_test_lower[layer], run.labels_test, run.num_classes)
            test = dcodes.summarize_codes(dcodes.code_ids(s_test, thresholds[layer]), s_test,
                                          thresholds[layer])
        elif layer == L and run.phi_test is not None:
            s_test = dcodes.class_means(run.phi_test, run.labels_test, run.num_classes)
            test = dcodes.summarize_codes(ids["test"], s_test, thresholds[L], run.a)
        layers[layer] = LayerCodes(thresholds[layer], train, test)
    agreement = dcodes.code_agreement(ids[L], ids["test"]) if "test" in ids else None
    theory_codes = None
    if theory is not None and theory.get("codes"):
        theory_codes = normalise_theory_codes(theory["codes"], run.num_classes)
    return Coding(dcodes.THRESHOLD_RULE, layers, dcodes.classify_scheme(run.a, ids[L], run.width),
                  agreement, theory_codes)


def normalise_theory_codes(codes, num_classes: int) -> list[TheoryCode]:
    """Theory codes as :class:`TheoryCode` whatever the form of the theory's records.

    ``code`` may be a string, a 0/1 sequence or a bit mask; ``kind`` ("bulk", "outlier", or None)
    and ``class_means`` are kept when the theory gives them.
    """
    out = []
    for c in codes:
        cid = dcodes.code_id_of(c["code"], num_classes)
        means = c.get("class_means")
        out.append(TheoryCode(dcodes.code_string(cid, num_classes), float(c["fraction"]),
                              np.asarray(c.get("readout", []), dtype=np.float64), c.get("kind"),
                              None if means is None else np.asarray(means, dtype=np.float64)))
    return out


# ---------------------------------------------------------------------------------- readout
class Cluster(NamedTuple):
    """A readout cluster: the neurons of one code, their fraction and mean (sd) readout."""

    code: str
    fraction: float
    readout: np.ndarray
    readout_sd: np.ndarray


class Readout(NamedTuple):
    """Readout second moment ``<a a^T>`` per neuron, mean norm per class, clusters per code and
    the outlier/bulk split."""

    second_moment: np.ndarray
    norm_per_class: np.ndarray
    clusters: list
    outliers: dread.OutlierBulk


def readout_section(run: PosteriorView, ids, coding: Coding) -> tuple[Readout, np.ndarray]:
    """The readout section and the outlier mask ``(chain, draw, neuron)``."""
    outliers = dcodes.readout_outliers(run.a, run.width)
    ob = dread.outlier_bulk(run.a, outliers, ids[run.depth], run.num_classes)
    summary = coding.feature_summary()
    clusters = [Cluster(*row)
                for row in zip(summary.codes, summary.fraction, summary.readout, summary.readout_sd)]
    return Readout(dread.readout_second_moment(run.a), dread.readout_norm_per_class(run.a).mean(axis=(0, 1)),
                   clusters, ob), outliers


def readout_posterior_data(run: PosteriorView, theory, outliers, sparse: bool) -> dict:
    """Per-class readout histograms (outliers left out for sparse schemes) and theory densities."""
    mask = ~outliers if sparse else None
    hists = dread.readout_histograms(run.a, mask=mask)
    classes = []
    for r, h in enumerate(hists):
        panel = {"edges": h.edges, "density": h.density, "theory_grid": None, "theory_density": None,
                 "theory_label": None}
        grid = np.linspace(h.edges[0], h.edges[-1], 400)
        dens = (dread.theory_readout_density(grid, theory, run.sigma_a2, r, bulk_only=sparse)
                if theory else None)
        if dens is not None:
            panel.update(theory_grid=grid, theory_density=dens[0], theory_label=dens[1])
        classes.append(panel)
    note = ""
    if sparse:
        note = (f"sparse scheme: {outliers.sum(axis=-1).mean():.1f} outlier neurons per draw "
                "(readout norm > threshold x median) left out of the histograms")
    elif theory is None:
        note = "no theory for this experiment: samples only"
    return {"classes": classes, "bulk_only": bool(sparse), "note": note}


def outlier_data(run: PosteriorView, readout: Readout, scheme_name: str, theory) -> dict | None:
    """Sparse schemes: outlier mass per class, samples against theory, and the outliers' readouts."""
    mass = theory_array(theory, "outlier_mass")
    if scheme_name != "sparse" and (mass is None or not np.any(mass)):
        return None
    ob = readout.outliers
    return {"classes": list(range(run.num_classes)), "samples": ob.outlier_mass,
            "theory": None if mass is None else np.atleast_1d(mass), "num_outliers": ob.num_outliers,
            "theory_num_outliers": None if theory is None else theory.get("num_outliers"),
            "outlier_codes": ob.outlier_codes, "bulk_mean": ob.bulk_mean}


def code_fraction_data(coding: Coding) -> dict:
    """Fraction of neurons per code, per layer and input set; the theory's beside the feature
    layer's training codes."""
    panels = []
    feature = max(coding.layers)
    for ell, layer in coding.layers.items():
        for split, summary in (("train", layer.train), ("test", layer.test)):
            if summary is None:
                continue
            panel = {"title": f"layer {ell}, {split} inputs", "codes": summary.codes,
                     "fraction": summary.fraction, "fraction_sd": summary.fraction_sd, "theory": None}
            if coding.theory_codes and ell == feature and split == "train":
                by_code = {t.code: t.fraction for t in coding.theory_codes}
                extra = [t.code for t in coding.theory_codes if t.code not in summary.codes]
                panel["codes"] = list(summary.codes) + extra
                panel["fraction"] = np.concatenate([summary.fraction, np.zeros(len(extra))])
                panel["fraction_sd"] = np.concatenate([summary.fraction_sd, np.zeros(len(extra))])
                panel["theory"] = [by_code.get(c, 0.0) for c in panel["codes"]]
            panels.append(panel)
    return {"panels": panels}


# ---------------------------------------------------------------------------------- symmetry
class Symmetry(NamedTuple):
    """Per layer: the fraction of neurons keeping their code, the mean change rate (per draw pair and
    per unit of paper Langevin time), the fraction whose last code is their first, and the change
    rate of every neuron."""

    code_kept_fraction: dict
    mean_code_change_rate: dict
    change_rate_per_neuron: dict
    change_rate_per_paper_time: dict  # None where the run stores no Langevin time
    first_last_agreement: dict
    definition: str = SYMMETRY_DEFINITION

    def to_json(self) -> dict:
        per_layer = lambda d: {f"layer_{layer}": v for layer, v in d.items()}  # noqa: E731
        return {"code_kept_fraction": per_layer(self.code_kept_fraction),
                "mean_code_change_rate": per_layer(self.mean_code_change_rate),
                "code_change_rate_per_paper_time": per_layer(self.change_rate_per_paper_time),
                "first_last_agreement": per_layer(self.first_last_agreement),
                "change_rate_per_neuron": per_layer(self.change_rate_per_neuron),
                "definition": self.definition + PAPER_TIME_DEFINITION}


PAPER_TIME_DEFINITION = (
    "; per paper time: the change rate divided by the paper Langevin time between stored draws "
    "(thin x paper_time_per_step of the layer's weights; with neuron moves, their changes count too "
    "and the time is the Langevin steps'); first_last_agreement: fraction of neurons whose code in "
    "the last draw is the one of the first")


def draw_interval_paper_time(run: PosteriorView, layer: int) -> float | None:
    """Paper Langevin time between stored draws for the weights into hidden ``layer``, or None
    (no Langevin time stored for that layer's block, e.g. a file written before it was)."""
    key = "paper_time_per_step" if layer == 1 else f"paper_time_per_step_W{layer}"
    per_step = run.attrs.get(key)
    thin = run.config.get("sampler", {}).get("thin")
    return None if per_step is None or thin is None else float(thin) * float(per_step)


def symmetry_section(run: PosteriorView, ids) -> tuple[Symmetry, dict]:
    """Code stability per layer, and the code-stability figure's histograms."""
    kept, rate, per_neuron, layers, per_time, agree = {}, {}, {}, [], {}, {}
    for layer in sorted(run.phi):
        r = per_neuron[layer] = dsym.code_change_rate(ids[layer])
        kept[layer] = dsym.code_kept_fraction(ids[layer])
        rate[layer] = dsym.mean_change_rate(ids[layer])
        dt = draw_interval_paper_time(run, layer)
        per_time[layer] = None if dt is None else rate[layer] / dt
        agree[layer] = dsym.first_last_agreement(ids[layer])
        finite = r[np.isfinite(r)]
        top = max(float(finite.max()) if finite.size else 0.0, 0.05)
        counts, edges = np.histogram(finite, bins=20, range=(0.0, top))
        layers.append({"layer": f"layer {layer}", "edges": edges, "counts": counts,
                       "kept_fraction": kept[layer]})
    return Symmetry(kept, rate, per_neuron, per_time, agree), {"layers": layers}


# ---------------------------------------------------------------------------------- neural collapse
COLLAPSE_DEFINITION = (
    "training inputs; h = phi / sqrt(N); class means mu_c, centre mubar = mean of the class means; "
    "NC1 = tr(Sigma_W Sigma_B^+) / C (Papyan, Han & Donoho 2020); variance_ratio = tr Sigma_W / tr Sigma_B; "
    "within = tr Sigma_W, between = tr Sigma_B (per neuron); G = centred class-mean Gram matrix; "
    "etf_distance = ||G/||G||_F - (I - 11^T/C)/sqrt(C-1)||_F; equinorm = std/mean of ||mu_c - mubar||; "
    "equiangularity = std of the cosines; max_angle = mean |cos + 1/(C-1)| (diagnostics/collapse.py)")
COLLAPSE_LEVELS = {
    "draws": "per draw, then mean and MCSE over chains and draws",
    "kernel": "of a mean kernel (the collapse of the average, not the average collapse: NC1's "
              "finite-width part, O(1/N), is not in a mean kernel)",
    "codes": "of the theory's code mixture (N -> inf): population class means per code, weighted by "
             "the code fractions; within-class variance from the codes' class_var (NaN without it); "
             "NC1 = 0 at N -> inf",
}


class CollapseRow(NamedTuple):
    """Neural collapse of one layer by one source: its label, how it was computed (a key of
    :data:`COLLAPSE_LEVELS`), the values per :class:`diagnostics.collapse.Collapse` field and, for
    per-draw samples, their Monte Carlo standard errors."""

    source: str
    level: str
    values: dict
    mcse: dict | None = None

    def to_json(self) -> dict:
        out = {"source": self.source, "level": self.level, "values": self.values}
        return out if self.mcse is None else {**out, "mcse": self.mcse}


class NeuralCollapse(NamedTuple):
    """Neural collapse per stored layer (rows: samples per draw, samples' mean kernel, NNGP, the
    theory's labelled mean kernel and code mixture where it has them), and a note."""

    layers: dict
    note: str
    definition: str = COLLAPSE_DEFINITION
    levels: dict = COLLAPSE_LEVELS

    def to_json(self) -> dict:
        return {"definition": self.definition, "levels": self.levels, "note": self.note,
                "layers": {f"layer_{layer}": rows for layer, rows in self.layers.items()}}


def _values(c: dcol.Collapse) -> dict:
    return {name: float(v) for name, v in c._asdict().items()}


def theory_layer_codes(theory, layer: int, depth: int) -> list:
    """The theory's code records of one hidden layer that carry class means (its ``layers``
    record, or ``codes`` for the feature layer); ReLU outlier records (no class means) are left
    out (their kernel mass enters :func:`codes_collapse`)."""
    if theory is None:
        return []
    records = next((r.get("codes") or [] for r in theory.get("layers") or [] if r.get("layer") == layer),
                   None)
    if records is None:
        records = (theory.get("codes") or []) if layer == depth else []
    return [c for c in records if c.get("class_means") is not None and c.get("kind") != "outlier"]


def codes_collapse(codes: list, labels, outlier_kernel_mass=None) -> dcol.Collapse:
    """:func:`diagnostics.collapse.collapse_from_codes` (N -> inf) of theory code records."""
    has_var = all(c.get("class_var") is not None for c in codes)
    return dcol.collapse_from_codes([c["fraction"] for c in codes],
                                    np.stack([np.asarray(c["class_means"], dtype=np.float64) for c in codes]),
                                    labels, [c["class_var"] for c in codes] if has_var else None,
                                    outlier_kernel_mass)


def collapse_section(run: PosteriorView, nngp, theory, th_kernels) -> NeuralCollapse:
    """Neural collapse of every stored layer (the feature layer, and the lower ones with
    ``store_all_layers``) on the training inputs, samples against the NNGP and the theory."""
    from widebayes.report.kernels import theory_source

    labels = run.labels_train
    source = theory_source(theory)
    layers, coded = {}, False
    for layer in sorted(run.phi):
        draws = dcol.summarize(dcol.collapse_from_activations(run.phi[layer], labels))
        rows = [CollapseRow("samples", "draws", {k: v["mean"] for k, v in draws.items()},
                            {k: v["mcse"] for k, v in draws.items()}),
                CollapseRow("samples, posterior-mean kernel", "kernel",
                            _values(dcol.collapse_from_kernel(run.kernel[layer], labels))),
                CollapseRow("NNGP", "kernel", _values(dcol.collapse_from_kernel(nngp.train[layer], labels)))]
        if th_kernels is not None:
            rows.append(CollapseRow(f"theory mean kernel [{th_kernels.sources[layer]}]", "kernel",
                                    _values(dcol.collapse_from_kernel(th_kernels.kernels[layer], labels))))
        codes = theory_layer_codes(theory, layer, run.depth)
        if codes:
            coded = True
            outl = theory.get("outlier_kernel_mass") if layer == run.depth else None
            label = f"theory codes [{source}]" + (" + outliers" if outl is not None else "")
            rows.append(CollapseRow(label, "codes", _values(codes_collapse(codes, labels, outl))))
        layers[layer] = rows
    if theory is None:
        note = "no theory for this experiment: samples and NNGP only"
    elif coded:
        note = "theory rows: its mean kernel and its code mixture, each labelled"
    else:
        note = "the theory gives no codes with class means here: its rows are kernel-level (labelled)"
    return NeuralCollapse(layers, note)
