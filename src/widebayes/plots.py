"""Figures of the report, drawn from the numbers that the ``report`` package computes (and stores in JSON).

Every function takes one figure's data dict (plain lists and numbers, as in ``report.json`` under
``figures.<name>.data``) and returns a :class:`matplotlib.figure.Figure`.  Figures are built
without pyplot (no global state, no backend switch; PNGs are rendered by the Agg canvas), so the
library never changes the backend of a notebook that imports it.

Conventions, as in the papers: samples in gray or in colour, theory as dashed black lines, the GP
(lazy, infinite-width) prediction as black triangles or dotted black lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

THEORY_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.5}
GP_STYLE = {"color": "black", "linestyle": ":", "linewidth": 1.5}
SAMPLE_COLOR = "0.55"
DPI = 110


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path) -> Path:
    """Write a PNG atomically (``io.atomic_write``: a uniquely named temporary file, then rename)."""
    from widebayes.io import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI), durable=False)
    return path


def class_colors(m: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(r % 10) for r in range(m)]


def _class_lines(ax, bounds, axis="x"):
    for b in bounds[1:-1]:
        (ax.axvline if axis == "x" else ax.axhline)(b - 0.5, color="white", linewidth=1.0)


def _code_ticks(ax, code_bounds, max_labels: int = 16):
    """Code blocks along the neuron axis of a heatmap: separators, and the codes as tick labels."""
    ticks, labels = [], []
    total = code_bounds[-1][2] if code_bounds else 1
    for code, start, stop in code_bounds:
        if start > 0:
            ax.axhline(start - 0.5, color="white", linewidth=1.2)
        center = (start + stop - 1) / 2
        if len(ticks) < max_labels and (not ticks or center - ticks[-1] >= total / 28):
            ticks.append(center)
            labels.append(f"{code} ({stop - start})")
    ax.set_yticks(ticks, labels, fontsize=7, family="monospace")


def _time_axis(t):
    """Times rescaled by a power of ten, and the axis label naming it."""
    top = float(np.max(np.abs(t))) if len(t) else 1.0
    exp = int(np.floor(np.log10(top))) if top > 0 else 0
    if abs(exp) < 3:
        return np.asarray(t), "Langevin time $t$ (DESIGN.md units)"
    return np.asarray(t) / 10.0**exp, rf"Langevin time $t$ / $10^{{{exp}}}$ (DESIGN.md units)"


def _no_data(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


# ---------------------------------------------------------------------------------- coding
def readout_samples(data: dict) -> Figure:
    """One draw's readout vectors, neurons ordered by code then strength (paper Fig. 2a)."""
    a = np.asarray(data["a"], dtype=float)
    fig = new_figure(7.5, 3.0)
    ax = fig.add_subplot()
    x = np.arange(a.shape[0])
    for r, color in enumerate(class_colors(a.shape[1])):
        ax.plot(x, a[:, r], "o-", ms=2.5, lw=0.8, color=color, label=f"class {r}")
    for i, (code, start, stop) in enumerate(data["code_bounds"]):
        if i % 2:
            ax.axvspan(start - 0.5, stop - 0.5, color="0.93", zorder=0)
        if stop - start >= max(1, a.shape[0] // 40):
            ax.text((start + stop - 1) / 2, 1.01, code, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, family="monospace")
    ax.axhline(0, color="0.3", linewidth=0.5)
    ax.set_xlabel("neuron (ordered by code, then mean squared activity)")
    ax.set_ylabel(r"readout weight $a_{ir}$")
    ax.set_title(f"Readout weights of one sample (chain {data['chain']}, draw {data['draw']})",
                 fontsize=10, pad=14)
    ax.legend(fontsize=7, ncol=min(a.shape[1], 5), loc="best")
    ax.set_xlim(-0.5, a.shape[0] - 0.5)
    return fig


def activations(data: dict) -> Figure:
    """Feature-layer activations of one draw, neurons by code, inputs by class (paper Fig. 2b/6a)."""
    panels = [(k, data[k]) for k in ("train", "test") if data.get(k)]
    fig = new_figure(4.2 * len(panels) + 0.8, 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    vmin, vmax = data["vmin"], data["vmax"]
    for ax, (name, panel) in zip(axes, panels):
        phi = np.asarray(panel["phi"], dtype=float)
        im = ax.imshow(phi, aspect="auto", interpolation="nearest", cmap="viridis", vmin=vmin, vmax=vmax)
        _class_lines(ax, panel["class_bounds"])
        _code_ticks(ax, panel["code_bounds"])
        ticks = [(a + b - 1) / 2 for a, b in zip(panel["class_bounds"][:-1], panel["class_bounds"][1:])]
        ax.set_xticks(ticks, [f"class {c}" for c in panel["classes"]], fontsize=7)
        ax.set_xlabel(f"{name} inputs (ordered by class)")
        ax.set_ylabel("neurons by code (count), then strength")
        ax.set_title(f"{data['layer']} on {name} inputs", fontsize=10)
    fig.colorbar(im, ax=axes.tolist(), label=r"activation $\phi(z)$", shrink=0.9)
    fig.suptitle(f"Activations of one sample (chain {data['chain']}, draw {data['draw']}); "
                 f"code threshold {data['threshold']:.3g}", fontsize=10)
    return fig


def layer_activations(data: dict) -> Figure:
    """Activations of every stored layer, each ordered by its own codes (paper Fig. 3a-c)."""
    panels = data["panels"]
    fig = new_figure(3.6 * len(panels) + 0.8, 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        im = ax.imshow(np.asarray(panel["phi"], dtype=float), aspect="auto", interpolation="nearest",
                       cmap="viridis")
        _class_lines(ax, data["class_bounds"])
        _code_ticks(ax, panel["code_bounds"])
        ticks = [(a + b - 1) / 2 for a, b in zip(data["class_bounds"][:-1], data["class_bounds"][1:])]
        ax.set_xticks(ticks, [f"class {c}" for c in data["classes"]], fontsize=7)
        ax.set_xlabel("training inputs (by class)")
        ax.set_title(f"layer {panel['layer']}", fontsize=10)
        fig.colorbar(im, ax=ax, label=r"$\phi(z)$", shrink=0.85)
    axes[0].set_ylabel("neurons by code (count), then strength")
    fig.suptitle(f"Layer-wise codes of one sample (chain {data['chain']}, draw {data['draw']})", fontsize=10)
    return fig


def code_reordering(data: dict) -> Figure:
    """The last draw's activations per stored layer, neurons in the first draw's code order (left)
    and reordered by their codes in the last draw (right) (coding-schemes Fig. 5c-d)."""
    rows = data["rows"]
    fig = new_figure(8.4, 3.4 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    ticks = [(a + b - 1) / 2 for a, b in zip(data["class_bounds"][:-1], data["class_bounds"][1:])]
    for row, pair in zip(rows, axes):
        for ax, panel in zip(pair, row["panels"]):
            ax.imshow(np.asarray(panel["phi"], dtype=float), aspect="auto", interpolation="nearest",
                      cmap="viridis")
            _class_lines(ax, data["class_bounds"])
            _code_ticks(ax, panel["code_bounds"])
            ax.set_xticks(ticks, [f"class {c}" for c in data["classes"]], fontsize=7)
            ax.set_title(f"layer {row['layer']}: {panel['title']}", fontsize=9)
        pair[0].set_ylabel(f"neurons ({100 * row['agreement']:.0f}% kept their code)", fontsize=8)
    fig.suptitle(f"Draw {data['last']} of chain {data['chain']}: are the codes those of draw "
                 f"{data['first']}?", fontsize=10)
    return fig


def output_vs_targets(data: dict) -> Figure:
    """Network output on the training inputs against the targets (paper Fig. 2c)."""
    f, mean, y = (np.asarray(data[k], dtype=float) for k in ("f", "f_mean", "y"))
    fig = new_figure(7.5, 3.0)
    ax = fig.add_subplot()
    x = np.arange(f.shape[0])
    for r, color in enumerate(class_colors(f.shape[1])):
        ax.plot(x, f[:, r], "o", ms=3, color=color, label=f"output {r}, one sample")
        ax.plot(x, mean[:, r], "-", lw=1, color=color, alpha=0.6)
        ax.plot(x, y[:, r], drawstyle="steps-mid", **{**THEORY_STYLE, "linewidth": 0.9})
    ax.plot([], [], "-", color="0.4", label="posterior mean")
    ax.plot([], [], label="target", **THEORY_STYLE)
    _class_lines(ax, data["class_bounds"])
    for b in data["class_bounds"][1:-1]:
        ax.axvline(b - 0.5, color="0.7", linewidth=0.6)
    ax.set_xlabel("training input (ordered by class)")
    ax.set_ylabel(r"output $f_r(x_\mu)$")
    ax.set_title("Output on training inputs", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return fig


def readout_posterior(data: dict) -> Figure:
    """Per-class readout histograms pooled over neurons and draws, theory dashed (paper Fig. 4a)."""
    classes = data["classes"]
    fig = new_figure(3.0 * len(classes) + 0.4, 3.0)
    axes = fig.subplots(1, len(classes), squeeze=False)[0]
    for r, (ax, panel) in enumerate(zip(axes, classes)):
        edges = np.asarray(panel["edges"], dtype=float)
        ax.stairs(panel["density"], edges, fill=True, color=SAMPLE_COLOR, alpha=0.8, label="samples")
        if panel.get("theory_density") is not None:
            label = "theory" + (f"\n({panel['theory_label']})" if panel.get("theory_label") else "")
            ax.plot(panel["theory_grid"], panel["theory_density"], label=label, **THEORY_STYLE)
        ax.set_xlabel(rf"readout weight $a_{{i{r}}}$")
        ax.set_ylabel("probability density")
        ax.set_title(f"class {r}" + (" (bulk; outliers left out)" if data.get("bulk_only") else ""),
                     fontsize=9)
        ax.legend(fontsize=7)
    if data.get("note"):
        fig.suptitle(data["note"], fontsize=8)
    return fig


def outliers(data: dict) -> Figure:
    """Outlier mass per class of a sparse scheme: samples (bars), theory (circles)."""
    fig = new_figure(4.8, 3.2)
    ax = fig.add_subplot()
    x = np.arange(len(data["classes"]))
    ax.bar(x, data["samples"], color=SAMPLE_COLOR,
           label=f"samples ({data['num_outliers']:.1f} outliers/draw)")
    if data.get("theory") is not None:
        ax.plot(x, data["theory"], "o", color="black", mfc="none", ms=8, label="theory")
    ax.set_xticks(x, [f"class {c}" for c in data["classes"]])
    ax.set_ylabel(r"outlier mass $\sum_i |a_i|^2 / N$ (outliers coding the class)")
    ax.set_title("Outlier neurons of the sparse code", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def readout_traces(data: dict) -> Figure:
    """Readout weights of selected neurons along the chain (paper Fig. 4b)."""
    a = np.asarray(data["a"], dtype=float)  # neuron, draw, output
    t, t_label = _time_axis(np.asarray(data["time"], dtype=float))
    m = a.shape[2]
    fig = new_figure(3.0 * m + 0.4, 3.0)
    axes = fig.subplots(1, m, squeeze=False, sharey=True)[0]
    colors = class_colors(max(len(data["neurons"]), 1))
    for r, ax in enumerate(axes):
        for k, (neuron, code) in enumerate(zip(data["neurons"], data["codes"])):
            ax.plot(t, a[k, :, r], lw=0.9, color=colors[k % len(colors)],
                    label=f"neuron {neuron} (code {code})" if r == 0 else None)
        ax.set_xlabel(t_label)
        ax.set_title(f"class {r}", fontsize=9)
    axes[0].set_ylabel(r"readout weight $a_{ir}$")
    fig.legend(fontsize=7, loc="outside lower center", ncol=min(len(data["neurons"]), 3))
    fig.suptitle(f"Readout traces, chain {data['chain']}", fontsize=10)
    return fig


def preactivations(data: dict) -> Figure:
    """Feature-layer preactivation posterior on inputs of one class, per code (paper Fig. 4c)."""
    fig = new_figure(5.0, 3.2)
    ax = fig.add_subplot()
    if data.get("skipped"):
        _no_data(ax, data["skipped"])
        return fig
    colors = class_colors(max(len(data["codes"]), 1))
    for k, panel in enumerate(data["codes"]):
        ax.stairs(panel["density"], panel["edges"], color=colors[k], linewidth=1.3,
                  label=f"code {panel['code']} ({100 * panel['fraction']:.0f}% of neurons)")
    if data.get("theory_density") is not None:
        ax.plot(data["theory_grid"], data["theory_density"], label="theory", **THEORY_STYLE)
    ax.set_xlabel(rf"preactivation $z_i(x_\mu)$, $x_\mu$ in class {data['class']} "
                  r"(from $\phi^{-1}$ of stored $\phi_L$)")
    ax.set_ylabel("probability density")
    ax.set_title("Preactivation posterior conditioned on the code", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def code_fractions(data: dict) -> Figure:
    """Fraction of neurons per code, per layer and input set; theory as black circles."""
    panels = data["panels"]
    fig = new_figure(max(3.2 * len(panels), 4.5), 3.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        codes = panel["codes"]
        x = np.arange(len(codes))
        ax.bar(x, panel["fraction"], yerr=panel["fraction_sd"], color=SAMPLE_COLOR,
               capsize=2, label="samples (sd over draws)")
        theory = panel.get("theory")
        if theory:
            ax.plot(x, theory, "o", color="black", mfc="none", label="theory")
        ax.set_xticks(x, codes, rotation=90 if len(codes) > 6 else 0, fontsize=7, family="monospace")
        ax.set_xlabel("code (class 0 first)")
        ax.set_ylabel("fraction of neurons")
        ax.set_title(panel["title"], fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
    return fig


def code_stability(data: dict) -> Figure:
    """How often each neuron's code changes between consecutive draws, per layer (paper Fig. 5)."""
    layers = data["layers"]
    fig = new_figure(max(3.0 * len(layers), 4.0), 3.0)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, panel in zip(axes, layers):
        ax.stairs(panel["counts"], panel["edges"], fill=True, color=SAMPLE_COLOR)
        ax.set_xlabel("fraction of draw intervals with a code change")
        ax.set_ylabel("number of neurons (all chains)")
        ax.set_title(f"{panel['layer']}: {100 * panel['kept_fraction']:.0f}% keep their code",
                     fontsize=9)
    return fig


# ---------------------------------------------------------------------------------- kernels
def _sources_label(sources, layers) -> str:
    """'theory: l=1 NNGP; l=2 ...': what produced the theory's kernel of each layer shown."""
    if not sources:
        return "theory"
    return "theory:\n" + "\n".join(_wrap(f"l={layer} {sources[layer]}") for layer in layers if layer > 0)


def _wrap(text: str, width: int = 36) -> str:
    import textwrap

    return textwrap.fill(text, width)


def kernels(data: dict) -> Figure:
    """Posterior-averaged layer kernels, NNGP, learned part and theory (perspective Fig. 6)."""
    columns = [(name, np.asarray(v, dtype=float)) for name, v in data["columns"].items() if v is not None]
    layers = data["layers"]
    shared = [stack for name, stack in columns if name in ("samples", "theory")]  # one colour scale
    lo, hi = (np.min([s.min(axis=(1, 2)) for s in shared], axis=0),
              np.max([s.max(axis=(1, 2)) for s in shared], axis=0))
    fig = new_figure(2.6 * len(columns) + 0.6, 2.4 * len(layers) + 0.5)
    axes = fig.subplots(len(layers), len(columns), squeeze=False)
    for j, (name, stack) in enumerate(columns):
        learned = name.startswith("learned")
        for i, layer in enumerate(layers):
            K = stack[i]
            ax = axes[i, j]
            if learned:
                lim = float(np.percentile(np.abs(K), 99)) or 1.0
                im = ax.imshow(K, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            elif name in ("samples", "theory"):
                im = ax.imshow(K, cmap="viridis", interpolation="nearest", vmin=lo[i], vmax=hi[i])
            else:
                im = ax.imshow(K, cmap="viridis", interpolation="nearest")
            _class_lines(ax, data["class_bounds"])
            _class_lines(ax, data["class_bounds"], axis="y")
            ax.set_xticks([]), ax.set_yticks([])
            source = data.get("theory_sources") if name == "theory" else None
            title = f"{name}, layer {layer}" if not source else _wrap(f"theory ({source[i]}), layer {layer}")
            ax.set_title(title, fontsize=8 if not source else 7)
            if j == 0:
                ax.set_ylabel(f"{data['inputs']} input (by class)", fontsize=8)
            if i == len(layers) - 1:
                ax.set_xlabel(f"{data['inputs']} input (by class)", fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(data["title"], fontsize=10)
    return fig


def kernel_alignment(data: dict) -> Figure:
    """Centred kernel alignment with the targets per layer: samples, NNGP, theory."""
    fig = new_figure(4.5, 3.0)
    ax = fig.add_subplot()
    layers = data["layers"]
    ax.plot(layers, data["samples"], "o-", color=SAMPLE_COLOR, label="samples")
    if data.get("nngp") is not None:
        ax.plot(layers, data["nngp"], "^", color="black", label="NNGP (prior)", linestyle=":")
    if data.get("theory") is not None:
        ax.plot(layers, data["theory"], label=_sources_label(data.get("theory_sources"), layers), marker="o",
                mfc="none", **THEORY_STYLE)
    ax.set_xlabel("layer $l$ (0 = input kernel)")
    ax.set_ylabel(r"CKA$(K_l, YY^\top)$")
    ax.set_xticks(layers)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Alignment of the layer kernels with the task", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def kernel_adaptation(data: dict) -> Figure:
    """Alignment per layer (NNGP, theory, kernel adaptation, samples) and the learned corrections
    K_l - K_l^NNGP side by side, one symmetric colour scale per layer."""
    learned = {name: np.asarray(v, dtype=float) for name, v in data["learned"].items()}
    hidden = data["hidden_layers"]
    fig = new_figure(3.6 + 2.5 * len(learned), 2.3 * len(hidden) + 0.6)
    grid = fig.add_gridspec(len(hidden), 1 + len(learned))
    ax = fig.add_subplot(grid[:, 0])
    styles = {"nngp": dict(marker="^", color="black", linestyle=":", label="NNGP (prior)"),
              "theory": dict(marker="o", mfc="none", **THEORY_STYLE,
                             label=_sources_label(data.get("theory_sources"), data["layers"])),
              "kernel adaptation": dict(marker="s", color="C2", linestyle="-.",
                                        label=f"kernel adaptation ({data['method']})"),
              "samples": dict(marker="o", color=SAMPLE_COLOR, label="samples")}
    for name, values in data["alignment"].items():
        ax.plot(data["layers"], values, **styles[name])
    ax.set_xlabel("layer $l$ (0 = input kernel)")
    ax.set_ylabel(r"CKA$(K_l, YY^\top)$")
    ax.set_xticks(data["layers"])
    ax.legend(fontsize=7)
    for i, layer in enumerate(hidden):
        lim = max(float(np.percentile(np.abs(v[i]), 99)) for v in learned.values()) or 1.0
        for j, (name, stack) in enumerate(learned.items()):
            axk = fig.add_subplot(grid[i, 1 + j])
            im = axk.imshow(stack[i], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            _class_lines(axk, data["class_bounds"])
            _class_lines(axk, data["class_bounds"], axis="y")
            axk.set_xticks([]), axk.set_yticks([])
            source = data.get("theory_sources") if name == "theory" else None
            axk.set_title(f"learned, {name}, layer {layer}" if not source else
                          _wrap(f"learned, theory ({source[layer]}), layer {layer}", 32), fontsize=7)
        fig.colorbar(im, ax=axk, shrink=0.8)
    fig.suptitle("Kernel adaptation: alignment and learned correction", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------- predictor
def predictor_test(data: dict) -> Figure:
    """Mean predictor on test inputs: samples (gray), theory (dashed), GP (dotted) (paper Fig. 6c)."""
    outputs = data["outputs"]
    fig = new_figure(3.4 * len(outputs) + 0.4, 3.0)
    axes = fig.subplots(1, len(outputs), squeeze=False)[0]
    for ax, r in zip(axes, outputs):
        mean = np.asarray(data["mean"], dtype=float)[:, r]
        sd = np.asarray(data["sd"], dtype=float)[:, r]
        x = np.arange(len(mean))
        ax.fill_between(x, mean - sd, mean + sd, color=SAMPLE_COLOR, alpha=0.35, linewidth=0,
                        label="samples, ±1 sd")
        ax.plot(x, mean, color=SAMPLE_COLOR, lw=1.2, label="samples, mean")
        if data.get("theory") is not None:
            ax.plot(x, np.asarray(data["theory"], dtype=float)[:, r], label="theory", **THEORY_STYLE)
        if data.get("gp") is not None:
            ax.plot(x, np.asarray(data["gp"], dtype=float)[:, r], label="GP", **GP_STYLE)
        ax.plot(x, np.asarray(data["y"], dtype=float)[:, r], drawstyle="steps-mid", color="tab:red",
                lw=0.8, label="target")
        for b in data["class_bounds"][1:-1]:
            ax.axvline(b - 0.5, color="0.8", linewidth=0.6)
        ax.set_xlabel("test input (ordered by class)")
        ax.set_ylabel(rf"mean predictor $\langle f_{r}(x)\rangle$")
        ax.set_title(f"output {r}", fontsize=9)
        ax.legend(fontsize=6)
    return fig


def gen_error(data: dict) -> Figure:
    """Generalization error per output: sampling (bars), theory (circles), GP (triangles) (Fig. 6d)."""
    outputs = data["outputs"]
    x = np.arange(len(outputs))
    fig = new_figure(max(1.0 * len(outputs) + 2.5, 4.0), 3.2)
    ax = fig.add_subplot()
    s = data["sampling"]
    ax.bar(x, s["bias"], color=SAMPLE_COLOR, label="sampling: bias")
    ax.bar(x, s["variance"], bottom=s["bias"], color="0.85", edgecolor=SAMPLE_COLOR, hatch="//",
           label="sampling: variance")
    if data.get("theory") is not None:
        ax.plot(x, data["theory"], "o", color="black", ms=7, label="theory")
    if data.get("gp") is not None:
        ax.plot(x, data["gp"], "^", color="black", ms=7, label="GP theory")
    if data.get("gp_lazy") is not None:  # non-lazy runs: the GP also at the lazy normalisation
        ax.plot(x, data["gp_lazy"], "v", color="0.45", ms=7, label="GP theory, lazy (sigma_a2 = 1, noise T)")
    ax.set_xticks(x, [f"class {r}" for r in outputs])
    ax.set_ylabel(r"generalization error $\varepsilon_r$")
    ax.set_title("Generalization error on the test inputs", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def to_png(fig: Figure) -> bytes:
    """The PNG bytes of a figure (for ``IPython.display.Image``)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def show(report: dict, *names: str) -> None:
    """Display figures of a report (``report.build_report``) in a notebook, by name."""
    from IPython.display import Image, display

    for name in names:
        entry = report["figures"].get(name)
        if entry is None:
            print(f"{name}: not available for this run ({'; '.join(report['notes']) or 'no data'})")
            continue
        display(Image(to_png(draw(name, entry["data"]))))


def geometry(data: dict) -> Figure:
    """Signal, dimension, few-shot error and capacity per layer: sampled kernels solid, NNGP dotted,
    theory dashed; the sampled representations' simulated error and capacity as squares."""
    fig = new_figure(13.5, 3.2)
    axes = fig.subplots(1, 4)
    meaning = data.get("capacity_meaning") or {"kind": "capacity"}
    labels = {"signal": r"signal $\|\Delta x_0\|^2 / R_a^2$", "dimension": r"dimension $D_a$",
              "fewshot_error": f"{data['m']}-shot prototype error",
              "capacity": rf"$\alpha_M$ ({meaning['kind']})"}
    rep = data.get("representations")
    for ax, (key, ylabel) in zip(axes, labels.items()):
        for name, values in data["sources"].items():
            if key not in values:
                continue
            style = THEORY_STYLE if name.startswith("theory") else (
                {"color": "gray", "linestyle": ":"} if name.startswith("NNGP") else {"marker": "o"})
            ax.plot(data["layers"], values[key], label=name, **style)
        rep_key = {"fewshot_error": "fewshot_error_simulated", "capacity": "capacity"}.get(key)
        if rep and rep_key:
            ax.plot(rep["layers"], rep[rep_key], "s", color="black", ms=6, fillstyle="none",
                    label="sampled representations" + (" (simulated)" if key == "fewshot_error" else ""))
        ax.set_xlabel("layer l (0 = input)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(data["layers"])
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.suptitle("Representational geometry across layers (means over class pairs)", fontsize=10)
    return fig


def drift(data: dict) -> Figure:
    """rho_u and rho_v vs lag (prior relaxation times), centred (filled) and raw (open, the
    perspective's definition), random baselines dashed."""
    fig = new_figure(5.5, 3.4)
    ax = fig.subplots()
    x = data["lag_prior_time"]
    ax.plot(x, data["rho_u"], "o-", ms=3, color="C0", label=r"$\rho_u$ (inputs), centred")
    ax.plot(x, data["rho_v"], "s-", ms=3, color="C1", label=r"$\rho_v$ (neurons), centred")
    raw = data.get("raw")
    if raw is not None:
        ax.plot(x, raw["rho_u"], "o--", ms=4, color="C0", mfc="none", label=r"$\rho_u$, raw")
        ax.plot(x, raw["rho_v"], "s--", ms=4, color="C1", mfc="none", label=r"$\rho_v$, raw")
    ax.axhline(data["baseline_u"], color="C0", linestyle="--", linewidth=1, label="random baseline, u")
    ax.axhline(data["baseline_v"], color="C1", linestyle="--", linewidth=1, label="random baseline, v")
    ax.set_xlabel(r"lag $\tau$ / $\tau_{prior}$ ($\tau_{prior} = \sigma^2 / T_{eff}$)")
    ax.set_ylabel("overlap of top singular vectors")
    ax.set_ylim(0, 1.05)
    title = rf"Drift of the feature layer; $\rho_{{u,Y}}$ = {data['rho_uY']:.2f} centred"
    ax.set_title(title + (f", {raw['rho_uY']:.2f} raw" if raw is not None else ""), fontsize=10)
    ax.legend(fontsize=7)
    return fig


def frozen_readout(data: dict) -> Figure:
    """Test error and overlaps after freezing the readout, full run vs frozen run, against time
    in prior relaxation times; the full run's stationary error band shaded."""
    fig = new_figure(10.5, 3.4)
    ax_err, ax_rho = fig.subplots(1, 2)
    x = data["tau_over_prior"]
    lo = max(data["err_band_mean"] - 2 * data["err_band_sd"], 0.0)
    hi = data["err_band_mean"] + 2 * data["err_band_sd"]
    ax_err.axhspan(lo, hi, color="gray", alpha=0.2, label="full run before t0 (±2 sd)")
    ax_err.plot(x, data["err_full"], "o-", ms=3, label="full Langevin")
    ax_err.plot(x, data["err_frozen"], "s-", ms=3, label=f"readout frozen ({data['mode']})")
    ax_err.set_ylabel("test error")
    for key, marker in (("rho_u", "o"), ("rho_v", "s")):
        ax_rho.plot(x, data[f"{key}_full"], marker + "-", ms=3, color="C0" if key == "rho_u" else "C1",
                    label=rf"$\{key}$ full")
        ax_rho.plot(x, data[f"{key}_frozen"], marker + "--", ms=3, color="C0" if key == "rho_u" else "C1",
                    fillstyle="none", label=rf"$\{key}$ frozen")
    ax_rho.axhline(data["baseline_u"], color="C0", linestyle=":", linewidth=1)
    ax_rho.axhline(data["baseline_v"], color="C1", linestyle=":", linewidth=1)
    ax_rho.set_ylabel("overlap with t0 (dotted: random)")
    ax_rho.set_ylim(0, 1.05)
    for ax in (ax_err, ax_rho):
        ax.set_xlabel(r"time after freezing $\tau / \tau_{prior}$")
        ax.legend(fontsize=7)
    fig.suptitle("Frozen-readout experiment", fontsize=10)
    return fig


def fewshot_heldout(data: dict) -> Figure:
    """m-shot prototype error of the held-out classes per layer, one panel per kernel source:
    simulated (markers, standard errors) and predicted by the few-shot SNR (lines)."""
    sources = data["sources"]
    fig = new_figure(3.4 * len(sources), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(sources), sharey=True))
    colors = class_colors(len(data["shots"]))
    for ax, (name, src) in zip(axes, sources.items()):
        f = lambda key: np.asarray(src[key], dtype=np.float64)  # noqa: E731 - report.json None -> NaN
        for i, m in enumerate(data["shots"]):
            ax.plot(data["layers"], f("predicted")[i], "-", color=colors[i], label=f"m = {m} predicted")
            ax.errorbar(data["layers"], f("simulated")[i], yerr=f("simulated_se")[i], fmt="o", ms=4,
                        color=colors[i], label=f"m = {m} simulated")
        ax.set_title(_wrap(name), fontsize=8)
        ax.set_xlabel("layer l (0 = input)")
        ax.set_xticks(data["layers"])
    axes[0].set_ylabel("few-shot error, held-out classes")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"Trained on classes {data['trained_classes']}, few-shot on held-out "
                 f"{data['heldout_classes']}", fontsize=10)
    return fig


FIGURES = {
    "fewshot_heldout": fewshot_heldout,
    "drift": drift,
    "frozen_readout": frozen_readout,
    "geometry": geometry,
    "readout_samples": readout_samples,
    "activations": activations,
    "layer_activations": layer_activations,
    "code_reordering": code_reordering,
    "output": output_vs_targets,
    "readout_posterior": readout_posterior,
    "outliers": outliers,
    "readout_traces": readout_traces,
    "preactivations": preactivations,
    "code_fractions": code_fractions,
    "code_stability": code_stability,
    "kernels": kernels,
    "kernels_test": kernels,
    "kernel_alignment": kernel_alignment,
    "kernel_adaptation": kernel_adaptation,
    "predictor_test": predictor_test,
    "gen_error": gen_error,
}


def draw(name: str, data: dict) -> Figure:
    """The figure ``name`` of :data:`FIGURES` from its data dict."""
    return FIGURES[name](data)
