"""One figure per quantity against the first swept key: samples with error bars, theory as curves.

Sampled values are markers with ``±2 MCSE`` error bars; every theory source with numbers
(``theory``, ``gp``, ``nngp``, ``kernel_adaptation``) is a curve through the same x values, in
the colour of its line.  In a grid sweep every combination of the other axes is its own line; in
a zip sweep the axes move together, so there is one line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from widebayes.checkpoint import atomic_write
from widebayes.sweep.quantities import THEORY_COLUMNS

STYLES = {"theory": "--", "gp": ":", "nngp": "-.", "kernel_adaptation": (0, (5, 1, 1, 1)),
          "rf_theory": (0, (1, 1)), "rf_exact": "-"}
LABELS = {"rf_theory": "RF theory (T->0, mean over features)", "rf_exact": "exact given the drawn features"}
ERRORBAR_SIGMAS = 2.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def write_figures(spec, rows: list[dict], folder) -> list[Path]:
    """``folder/<quantity>.png`` for every quantity in ``rows`` (the table's rows)."""
    import matplotlib

    matplotlib.use("Agg")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quantities = list(dict.fromkeys(r["quantity"] for r in rows))
    return [figure_of(spec, [r for r in rows if r["quantity"] == q], q, folder) for q in quantities]


def figure_of(spec, rows: list[dict], quantity: str, folder: Path) -> Path:
    import matplotlib.pyplot as plt

    x_key, others = spec.keys[0], spec.keys[1:] if spec.mode == "grid" else []
    positions = x_positions([r[x_key] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (label, group) in enumerate(lines(rows, others).items()):
        color = f"C{i % 10}"
        xs = [positions[r[x_key]] for r in group]
        err = [ERRORBAR_SIGMAS * r["mcse"] if math.isfinite(r["mcse"]) else 0.0 for r in group]
        ax.errorbar(xs, [r["sampled"] for r in group], yerr=err, fmt="o", color=color, capsize=3,
                    label=f"samples{label}")
        for col in THEORY_COLUMNS:
            ys = [r[col] for r in group]
            if any(math.isfinite(y) for y in ys):
                ax.plot(xs, ys, linestyle=STYLES[col], color=color, label=f"{LABELS.get(col, col)}{label}")
    label_axis(ax, positions, x_key)
    ax.set_ylabel(quantity)
    ax.set_title(f"{quantity} (error bars: {ERRORBAR_SIGMAS:g} MCSE)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / f"{figure_name(quantity)}.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def figure_name(quantity: str) -> str:
    """``gen_error[0]`` -> ``gen_error_0`` (a safe file name)."""
    return _UNSAFE.sub("_", quantity.replace("[", "_").replace("]", ""))


def lines(rows: list[dict], others: list[str]) -> dict:
    """Rows grouped by the values of the other axes (a legend suffix per group)."""
    groups = {}
    for r in rows:
        label = "".join(f", {k}={r[k]}" for k in others)
        groups.setdefault(label, []).append(r)
    return groups


def x_positions(values: list) -> dict:
    """Numbers stand for themselves; other values (strings, lists) are evenly spaced categories."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {v: v for v in values}
    return {v: i for i, v in enumerate(dict.fromkeys(values))}


def label_axis(ax, positions: dict, key: str) -> None:
    """Categorical ticks for categories; a log scale for positive numbers spanning a decade or more."""
    ax.set_xlabel(key)
    if any(k != v for k, v in positions.items()):
        ax.set_xticks(list(positions.values()), [str(k) for k in positions], fontsize=7)
        return
    xs = [v for v in positions.values()]
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
        ax.minorticks_off()  # the swept values as the ticks: minor log labels overlap them
        ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))], fontsize=7)
