"""report.md from the report's numbers (the dict of :func:`widebayes.report.build.build_report`,
or report.json read back): summary, theory agreements (one line each, each naming its theory),
predictor, geometry, drift, convergence, notes and figures; and the figures' captions."""

from __future__ import annotations

import numpy as np

from widebayes.diagnostics import codes as dcodes
from widebayes.diagnostics import convergence as dconv
from widebayes.report.common import AGREE_WITHIN
from widebayes.report.predictor import gp_normalisation_markdown

CAPTIONS = {
    "drift": "Representational drift: overlap of the top singular vectors of the feature-layer "
             "activations across draws, inputs (rho_u) and neurons (rho_v), raw (the perspective's "
             "definition, open markers) and centred (filled), against the random-vector baselines, vs "
             "lag in units of the prior relaxation time sigma^2/T_eff.",
    "geometry": "Representational geometry across layers (perspective Fig. 7): signal ||dx0||^2/R_a^2, "
                "dimension D_a and the predicted m-shot prototype error from the layer kernels (means "
                "over class pairs; samples vs NNGP vs the theory's kernels), the simulated m-shot error "
                "of the sampled representations (squares), and the mean-field alpha_M of the class "
                "manifolds per layer (for a few classes a per-manifold descriptor about the stated origin, "
                "not a capacity prediction; THEORY.md 6.2b).",
    "fewshot_heldout": "Few-shot learning of held-out classes (perspective Figs. 2C-D, 3A-B): 2-way m-shot "
                       "prototype error of classes never trained on, per layer, simulated (markers) and "
                       "predicted from the layer's manifold geometry by the few-shot SNR (lines), for the "
                       "sampled draws' kernels, their mean, the NNGP (prior, a baseline) and the theory's "
                       "mean kernels (lazy networks).",
    "readout_samples": "Readout weights of one sample, neurons ordered by code then strength "
                       "(cf. coding-schemes Fig. 2a).",
    "activations": "Feature-layer activations of the same sample, neurons ordered by code, inputs by class "
                   "(Fig. 2b, 6a).",
    "layer_activations": "Activations of every stored layer in one sample, each layer's neurons ordered by "
                         "its own codes (coding Fig. 3a-c, 5).",
    "code_reordering": "The last draw's activations per stored layer, neurons in the first draw's code order "
                       "and reordered by the last draw's codes: lower-layer neurons trade codes while the "
                       "scheme stays (coding Fig. 5c-d).",
    "output": "Network output on training inputs against the targets (Fig. 2c).",
    "readout_posterior": "Readout posterior per class, pooled over neurons and draws; theory dashed "
                         "(Fig. 4a).",
    "outliers": "Sparse scheme: outlier mass sum |a_i|^2/N per coded class, samples (bars) and theory "
                "(circles).",
    "readout_traces": "Readout weights of selected neurons along the chain (Fig. 4b).",
    "preactivations": "Feature-layer preactivation posterior on class-0 inputs, per code (Fig. 4c).",
    "code_fractions": "Fraction of neurons per code, per layer; theory as open circles.",
    "code_stability": "Code changes between consecutive draws, per layer (symmetry breaking, Fig. 5).",
    "kernels": "Layer kernels on training inputs: samples, NNGP, learned part, and the theory's kernel of "
               "each layer, titled by what produced it (perspective Fig. 6; coding Fig. 3).",
    "kernels_test": "Layer kernels on test inputs: samples, NNGP, learned part (coding Fig. 6b).",
    "kernel_alignment": "Centred kernel alignment of each layer kernel with the targets.",
    "kernel_adaptation": "Kernel adaptation (lazy): alignment with the targets per layer for the NNGP, the "
                         "theory's kernels (labelled per layer), the kernel-adaptation kernel (saddle, or "
                         "O(1/N) for nonlinear networks) and the samples; the learned correction "
                         "K_l - K_l^NNGP of each, one colour scale per layer.",
    "predictor_test": "Mean predictor on test inputs: samples, theory (dashed), GP (dotted) (Fig. 6c).",
    "gen_error": "Generalization error per class: sampling (bars, bias + variance), theory (circles), "
                 "GP (triangles) (Fig. 6d).",
}


def _fmt(x) -> str:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 1:
        return f"{x.item():.4g}"
    if x.size <= 4:
        return "(" + ", ".join(f"{v:.3g}" for v in x.ravel()) + ")"
    return f"|.| = {np.linalg.norm(x):.4g}"


def markdown(report: dict, figures: bool = True) -> str:
    """report.md: summary, theory agreements (one line each), convergence warnings, figures.

    With ``figures=False`` the text alone (for a notebook cell).
    """
    parts = [_md_header, _md_theory, _md_coding, _md_agreements, _md_predictor, _md_geometry, _md_fewshot,
             _md_drift, _md_convergence, _md_notes]
    if figures:
        parts.append(_md_figures)
    return "\n".join(line for part in parts for line in part(report)) + "\n"


def _md_header(report: dict) -> list[str]:
    e, d = report["experiment"], report["draws"]
    return [f"# widebayes report: {e['activation']} network, depth {e['depth']}, width {e['width']}", "",
            f"Task: {e['num_train']} training / {e['num_test']} test inputs, {e['num_classes']} classes; "
            f"sampler {e['sampler']}, chains {d['chains']}, {d['num_draws']} draws each.", ""]


def _md_theory(report: dict) -> list[str]:
    th = report["theory"]
    if th["available"]:
        line = f"Theory: {th['note']}"
        if th.get("source"):
            line += f". Theory values below are from: {th['source']}, unless a row names another source."
    elif th["note"].startswith("theory failed"):
        line = f"**Theory failed**: {th['note']}. **No theory** is shown: the figures show samples only."
    else:
        line = f"**No theory** for this experiment ({th['note']}); the figures show samples only."
    return ["## Theory", "", line, ""]


def _md_coding(report: dict) -> list[str]:
    scheme = report["coding"]["scheme"]
    lines = ["## Coding scheme", "",
             f"Scheme: **{scheme['scheme']}** ({100 * scheme['agreement']:.0f}% of draws); "
             f"outliers per draw {scheme['num_outliers']:.2f} (max/median readout norm "
             f"{scheme['outlier_ratio']:.3g}, outlier threshold {scheme['ratio_threshold']:.3g}); "
             f"within-code readout variance {scheme['within_code_variance']:.3g} "
             f"(redundant below {dcodes.REDUNDANT_MAX_WITHIN}); "
             f"{scheme['num_shared_codes']:.1f} shared codes.", "",
             "| code | fraction of neurons | a_gamma (mean readout) |", "|---|---|---|"]
    summary = report["coding"]["layers"][f"layer_{report['experiment']['depth']}"]["train"]
    rows = list(zip(summary["codes"], summary["fraction"], summary["fraction_sd"], summary["readout"]))
    lines += [f"| {code} | {f:.3f} ± {sd:.3f} | {_fmt(r)} |" for code, f, sd, r in rows[:12]]
    return lines + [""] + _md_stability(report["symmetry"]) + _md_collapse(report)


def _md_stability(sym: dict) -> list[str]:
    """Per layer: neurons keeping their code, change rates per draw pair and per paper time, and the
    first-to-last code agreement (a layer whose neurons trade codes while its fractions stay)."""
    lines = ["| layer | neurons keeping their code | code changes per draw pair | per paper time | "
             "last code = first |", "|---|---|---|---|---|"]
    for key, kept in sym["code_kept_fraction"].items():
        if kept is None or not np.isfinite(kept):
            continue
        per_time = sym["code_change_rate_per_paper_time"][key]
        lines.append(f"| {key.replace('_', ' ')} | {100 * kept:.0f}% | "
                     f"{sym['mean_code_change_rate'][key]:.3g} | "
                     f"{'n/a' if per_time is None else f'{per_time:.3g}'} | "
                     f"{100 * sym['first_last_agreement'][key]:.0f}% |")
    return lines + [""]


ROUND_OFF = 1e-12  # |value| below this is shown as 0 (a class-structured kernel's NC1 is 0 up to round-off)
COLLAPSE_COLUMNS = ("nc1", "variance_ratio", "etf_distance", "equinorm", "max_angle")


def _md_collapse(report: dict) -> list[str]:
    nc = report.get("neural_collapse")
    if not nc:
        return []
    lines = ["### Neural collapse (training inputs)", "",
             "NC1 = tr(Sigma_W Sigma_B^+)/C; ratio = tr Sigma_W / tr Sigma_B; ETF distance of the centred "
             "class-mean Gram matrix from the simplex ETF's (0 = ETF); equinorm = std/mean of the centred "
             "class-mean norms; max angle = mean |cos + 1/(C-1)|. Samples: mean ± MCSE over draws. "
             f"{nc['note']}.",
             "", "| layer | source | NC1 | tr Σ_W / tr Σ_B | ETF distance | equinorm | max angle |",
             "|---|---|---|---|---|---|---|"]

    def cell(row, key):
        v, se = row["values"].get(key), (row.get("mcse") or {}).get(key)
        if v is None or not np.isfinite(v):
            return "–"
        if abs(v) < ROUND_OFF:
            return "0"
        return f"{v:.3g} ± {se:.2g}" if se is not None and np.isfinite(se) else f"{v:.3g}"

    for layer, rows in nc["layers"].items():
        lines += [f"| {layer.split('_')[-1]} | {row['source']} | "
                  + " | ".join(cell(row, key) for key in COLLAPSE_COLUMNS) + " |" for row in rows]
    return lines + [""]


def _md_agreements(report: dict) -> list[str]:
    lines = ["## Theory against samples", ""]
    if not report["agreement"]:
        return lines + ["no theory: nothing to compare." if not report["theory"]["available"] else
                        "The theory gives no quantity that the samples measure.", ""]
    lines += [f"✓: within {100 * AGREE_WITHIN:.0f}%; [brackets]: the theory that gave the row, where it is "
              "not the one named above.", "",
              "| quantity | theory | samples | relative difference |", "|---|---|---|---|"]
    for row in report["agreement"]:
        rd = row["relative_difference"]
        if row.get("note"):
            mark = f" ({row['note']})"
        else:
            mark = "" if not np.isfinite(rd) else (" ✓" if rd <= AGREE_WITHIN else " ✗")
        source = row.get("source")
        other = source and source != report["theory"].get("source")
        quantity = row["quantity"] + (f" [{source}]" if other else "")
        cells = [quantity, _fmt(row["theory"]), _fmt(row["samples"]), f"{rd:.3g}{mark}"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines + [""]


def _md_predictor(report: dict) -> list[str]:
    pred = report["predictor"]
    lines = ["## Predictor", "", f"Training fit: RMSE to targets {pred['train']['rmse_to_targets']:.3g}, "
             f"accuracy {pred['train']['accuracy']:.3f}."]
    t = pred.get("test")
    if t:
        err = t["gen_error"]
        lines.append(f"Test: accuracy {t['accuracy']:.3f} (GP {t['accuracy_gp']:.3f}); generalization error "
                     f"{err['total_sum']:.4g} = bias {err['bias_total']:.4g} + variance "
                     f"{err['variance_total']:.4g}; GP {t['gen_error_gp']['total_sum']:.4g}"
                     + (f"; theory {t['gen_error_theory']['total_sum']:.4g}." if t.get("gen_error_theory")
                        else "."))
        lines += gp_normalisation_markdown(t)
    return lines + [""]


def _md_geometry(report: dict) -> list[str]:
    geo = report["geometry"]
    if "note" in geo:
        return ["## Geometry across layers", "", geo["note"] + ".", ""]
    m, meaning = geo["fewshot_m"], geo["capacity_meaning"]
    alpha = f"alpha_M ({meaning['kind']})"
    lines = ["## Geometry across layers", "",
             f"Means over class pairs; {m}-shot prototype error predicted from the kernel, and simulated "
             f"on the sampled representations (last draw of each chain). {alpha}: {meaning['note']}; "
             f"{meaning['num_manifolds']} class manifolds, origin at {meaning['origin']}. "
             "Theory rows name the kernel of each layer in brackets.", "",
             f"| source | layer | signal | dimension D_a | predicted error | {alpha} |",
             "|---|---|---|---|---|---|"]
    for name, row in geo.items():
        if not isinstance(row, dict) or "signal" not in row:
            continue
        err = row.get("fewshot_error", [np.nan] * len(row["signal"]))
        label = row.get("kernel_sources") or [None] * len(row["signal"])
        lines += [f"| {name}{f' [{label[layer]}]' if label[layer] else ''} | {layer} | "
                  f"{row['signal'][layer]:.4g} | "
                  f"{row['dimension'][layer]:.4g} | {err[layer]:.4g} | {row['capacity'][layer]:.4g} |"
                  for layer in range(len(row["signal"]))]
    rep = geo.get("representations")
    if rep:
        lines += ["", f"| sampled representations | layer | simulated error | {alpha} |", "|---|---|---|---|"]
        lines += [f"| {rep['chains']} chain(s) | {layer} | {e:.4g} ± {se:.2g} | {c:.4g} |"
                  for layer, e, se, c in zip(rep["layers"], rep["fewshot_error_simulated"],
                                             rep["fewshot_error_se"], rep["capacity"])]
    return lines + [""]


def _md_fewshot(report: dict) -> list[str]:
    few = report.get("fewshot_heldout")
    if not few or "note" in few:
        return []
    shots = few["shots"]
    lines = ["## Few-shot learning of held-out classes", "",
             f"Trained on classes {few['trained_classes']}; held out {few['heldout_classes']} "
             f"({few['heldout_per_class']} inputs each). {few['definition']}", "",
             "| source | layer | " + " | ".join(f"{m}-shot simulated / predicted" for m in shots) + " |",
             "|---|---|" + "---|" * len(shots)]
    for name, src in few["sources"].items():
        sim, se, pred = (np.asarray(src[k], dtype=np.float64)
                         for k in ("simulated", "simulated_se", "predicted"))
        for layer in few["layers"]:
            if np.all(np.isnan(sim[:, layer])):
                continue
            cells = " | ".join(f"{sim[i, layer]:.3g} ± {se[i, layer]:.1g} / {pred[i, layer]:.3g}"
                               for i in range(len(shots)))
            lines.append(f"| {name} [{src['kernel_sources'][layer]}] | {layer} | {cells} |")
    return lines + [""] + [f"- {n}" for n in few.get("notes") or []] + [""]


def _md_drift(report: dict) -> list[str]:
    d = report["drift"]
    if "note" in d:
        return ["## Drift", "", d["note"] + ".", ""]
    lags = np.asarray(d["lag_prior_time"])
    first = int(np.argmax(lags >= 1.0)) if lags[-1] >= 1.0 else len(lags) - 1  # first lag >= 1 tau_prior
    raw = d["raw"]
    rows = [f"- lag {lags[i]:.3g} prior relaxation times ({d['lag_paper_time'][i]:.3g} paper time): "
            f"raw rho_u = {raw['rho_u'][i]:.3f}, rho_v = {raw['rho_v'][i]:.3f}; "
            f"centred rho_u = {d['rho_u'][i]:.3f}, rho_v = {d['rho_v'][i]:.3f}"
            for i in sorted({first, len(lags) - 1})]
    return ["## Drift", "",
            "Feature layer, top singular vectors of the raw activations (the perspective's definition, "
            "Fig. 8) and of the centred ones (each neuron's mean over the inputs removed); random-vector "
            f"baselines: rho_u {d['baseline_u']:.3f}, rho_v {d['baseline_v']:.3f}; "
            f"rho_(u,Y) = {raw['rho_uY']:.3f} raw, "
            f"{d['rho_uY']:.3f} centred.", *rows, ""]


def _md_convergence(report: dict) -> list[str]:
    conv = report["convergence"]
    lines = ["## Convergence", ""]
    if conv["warnings"]:
        lines += [f"- **Warning**: {w}" for w in conv["warnings"]]
    else:
        lines.append(f"All tracked observables have R-hat <= {dconv.RHAT_MAX} "
                     f"and ESS >= {dconv.ESS_MIN:.0f}.")
    lines += ["", "| observable | R-hat | ESS bulk | ESS tail | note |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {row['rhat']:.4g} | {row['ess_bulk']:.4g} | {row['ess_tail']:.4g} | "
              f"{row['note']} |"
              for name, row in conv["table"].items()]
    return lines + [""]


def _md_notes(report: dict) -> list[str]:
    return ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""] if report["notes"] else []


def _md_figures(report: dict) -> list[str]:
    lines = ["## Figures", ""]
    for name, fig in report["figures"].items():
        lines += [f"### {name}", "", fig["caption"], "", f"![{name}]({fig['file']})", ""]
    return lines
