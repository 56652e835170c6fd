"""Theory against samples: one row per quantity that both give, each naming the theory that
produced its theory value (``source``)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import predictor as dpred
from widebayes.posterior import PosteriorView
from widebayes.report.coding import normalise_theory_codes
from widebayes.report.common import rel_diff, theory_array
from widebayes.report.kernels import theory_source

ZERO_MODE = "not a prediction: zero mode, only the outlier mass is (THEORY.md 1.5b)"


class AgreementRow(NamedTuple):
    """One quantity: the theory's value, the samples', ``||samples - theory|| / ||theory||``, a
    note (why it is not a prediction, when it is not) and the theory that gave the value."""

    quantity: str
    theory: object
    samples: object
    relative_difference: float
    note: str = ""
    source: str | None = None


def row(quantity: str, theory_value, sample_value, source: str | None, note: str = "") -> AgreementRow:
    t = np.asarray(theory_value, dtype=np.float64)
    s = np.asarray(sample_value, dtype=np.float64)
    return AgreementRow(quantity, t, s, rel_diff(s, t), note, source)


def agreements(run: PosteriorView, theory, sections: dict) -> list[AgreementRow]:
    """One row per quantity that both the theory and the samples give.

    ``sections`` holds the typed ``readout``, ``kernels``, ``coding`` and ``predictor`` results;
    kernel rows take the theory's labelled layer kernels (``kernels.theory_sources``) and their
    source label, every other row the theory's method (:func:`kernels.theory_source`).
    """
    if theory is None:
        return []
    source = theory_source(theory)
    rows = []
    second = theory_array(theory, "readout_second_moment")
    if second is not None:
        s = sections["readout"].second_moment
        for r in range(s.shape[0]):
            rows.append(row(f"<a_{r}^2> (readout second moment, class {r})", np.atleast_2d(second)[r, r],
                            s[r, r], source))
    kernels = sections["kernels"]
    rows += _kernel_agreements(run, kernels, sections["theory_kernels"])
    summary = sections["coding"].feature_summary()
    means = dict(zip(summary.codes, summary.class_means))
    rows += _code_agreements(sections["coding"].theory_codes, sections["readout"].clusters, means, source)
    rows += _lower_layer_code_agreements(theory, sections["coding"], run.num_classes, source)
    rows += _outlier_agreements(theory, sections["readout"].outliers, source)
    rows += _predictor_agreements(run, theory, sections["predictor"], source)
    return rows


def _kernel_agreements(run: PosteriorView, kernels, theory_kernels) -> list[AgreementRow]:
    """Frobenius norms of the theory's and the samples' layer kernels, layers 1..L."""
    rel = kernels.samples_vs_theory_relative_difference
    if rel is None:
        return []
    return [AgreementRow(f"kernel K_{layer} on training inputs (Frobenius)",
                         float(np.linalg.norm(theory_kernels.kernels[layer])),
                         float(np.linalg.norm(run.kernel[layer])), rel[layer], "",
                         theory_kernels.sources[layer])
            for layer in range(1, run.depth + 1)]


def _code_agreements(theory_codes, clusters, class_means, source) -> list[AgreementRow]:
    """P_gamma, a_gamma and the class means s_gamma of every theory code against the samples'."""
    if not theory_codes:
        return []
    by_code = {c.code: c for c in clusters}
    rows = []
    for t in theory_codes:
        sample = by_code.get(t.code)
        note = ZERO_MODE if t.kind == "outlier" else ""
        rows.append(row(f"P_gamma, code {t.code}", t.fraction, 0.0 if sample is None else sample.fraction,
                        source, note))
        if sample is not None and t.readout.size:
            rows.append(row(f"a_gamma, code {t.code} (vector)", t.readout, sample.readout, source, note))
        if sample is not None and t.class_means is not None and t.code in class_means:
            rows.append(row(f"class means s_gamma, code {t.code} (vector)", t.class_means,
                            class_means[t.code], source, note))
    return rows


def _lower_layer_code_agreements(theory, coding, num_classes: int, source) -> list[AgreementRow]:
    """P_gamma and the class means s_gamma of each code of the hidden layers below the feature
    layer (the deep theory's ``layers`` records) against the samples' codes of that layer."""
    rows = []
    for record in (theory.get("layers") or [])[:-1]:
        layer = int(record["layer"])
        if layer not in coding.layers:
            continue
        summary = coding.layers[layer].train
        fractions = dict(zip(summary.codes, summary.fraction))
        means = dict(zip(summary.codes, summary.class_means))
        for t in normalise_theory_codes(record["codes"], num_classes):
            rows.append(row(f"P_gamma, layer {layer}, code {t.code}", t.fraction, fractions.get(t.code, 0.0),
                            source))
            if t.class_means is not None and t.code in means:
                rows.append(row(f"class means s_gamma, layer {layer}, code {t.code} (vector)", t.class_means,
                                means[t.code], source))
    return rows


def _outlier_agreements(theory, outliers, source) -> list[AgreementRow]:
    rows = []
    if theory.get("num_outliers") is not None:
        note = ZERO_MODE if theory.get("num_outliers") else ""
        rows.append(row("number of outlier neurons", theory["num_outliers"], outliers.num_outliers, source,
                        note))
    mass = theory_array(theory, "outlier_mass")
    if mass is not None:
        for c, value in enumerate(np.atleast_1d(mass)):
            rows.append(row(f"outlier mass sum |a|^2/N, class {c}", value, outliers.outlier_mass[c], source))
    return rows


def _predictor_agreements(run: PosteriorView, theory, predictor, source) -> list[AgreementRow]:
    test = predictor.test
    if test is None:
        return []
    rows = []
    stats = dpred.predictor_stats(run.f_test)
    mean = theory_array(theory, "f_test_mean")
    if mean is not None:
        rows.append(row("mean predictor on test inputs (vector)", mean.reshape(stats.mean.shape), stats.mean,
                        source))
    var = theory_array(theory, "f_test_var")
    if var is not None:
        var = np.broadcast_to(var[:, None] if var.ndim == 1 else var, stats.var.shape)
        rows.append(row("predictor variance on test inputs (vector)", var, stats.var, source))
    th_err = test.gen_error_theory
    for r, s in enumerate(np.atleast_1d(test.gen_error["total"])):
        if th_err is not None:
            rows.append(row(f"generalization error, class {r}", np.atleast_1d(th_err["total"])[r], s, source))
    return rows
