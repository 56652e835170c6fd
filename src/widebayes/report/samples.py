"""Figures of single samples: which draw is shown and in which order, its readout weights and
activations (feature layer and every stored layer), the output against the targets, readout
traces along a chain and the preactivation posterior per code (coding-schemes Figs. 2-5)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.diagnostics import codes as dcodes
from widebayes.diagnostics import kernels as dkern
from widebayes.diagnostics import predictor as dpred
from widebayes.diagnostics import readout as dread
from widebayes.diagnostics import symmetry as dsym
from widebayes.diagnostics.preactivations import invert_activation
from widebayes.posterior import PosteriorView
from widebayes.report.common import MAX_SHOWN_INPUTS, SPARSE_SHOWN, class_bounds, thin_out


class SampleView(NamedTuple):
    """The draw shown (chain index ``c`` among the chains used, stored chain ``chain``, draw
    ``d``), its feature-layer neurons in display order, and the training/test inputs by class."""

    chain: int
    draw: int
    c: int
    d: int
    order: np.ndarray
    input_order: np.ndarray
    test_order: np.ndarray | None


def sample_view(run: PosteriorView, ids, scheme_name: str, outliers) -> SampleView:
    """Neuron order (by code, then strength) and input order (by class) of the draw shown."""
    L = run.depth
    c, d = 0, run.num_draws - 1
    strength = dcodes.neuron_strength(run.phi[L][c, d])
    order = dcodes.order_neurons(ids[L][c, d], strength, dcodes.codes_by_use(ids[L]))
    if scheme_name == "sparse":
        keep = np.argsort(-strength)[: max(SPARSE_SHOWN, int(outliers[c, d].sum()) + 3)]
        order = order[np.isin(order, keep)]
    else:
        order = thin_out(order)
    return SampleView(run.chains[c], d, c, d, order, dkern.class_order(run.labels_train, MAX_SHOWN_INPUTS),
                      (dkern.class_order(run.labels_test, MAX_SHOWN_INPUTS)
                       if run.labels_test is not None else None))


def _code_bounds(ids_sorted, num_classes: int) -> list:
    return [(dcodes.code_string(k, num_classes), a, b) for k, a, b in dcodes.code_boundaries(ids_sorted)]


def readout_samples_data(run: PosteriorView, ids, view: SampleView) -> dict:
    c, d, order = view.c, view.d, view.order
    return {"chain": view.chain, "draw": d, "neurons": order, "a": run.a[c, d][order],
            "code_bounds": _code_bounds(ids[run.depth][c, d][order], run.num_classes)}


def activations_data(run: PosteriorView, ids, view: SampleView, threshold: float) -> dict:
    c, d, order = view.c, view.d, view.order
    code_bounds = _code_bounds(ids[run.depth][c, d][order], run.num_classes)
    panels = {}
    for name, phi, labels, inputs in (("train", run.phi[run.depth], run.labels_train, view.input_order),
                                      ("test", run.phi_test, run.labels_test, view.test_order)):
        if phi is None or inputs is None or len(inputs) == 0:
            panels[name] = None
            continue
        bounds, classes = class_bounds(labels[inputs])
        panels[name] = {"phi": phi[c, d][order][:, inputs], "inputs": inputs, "class_bounds": bounds,
                        "classes": classes, "code_bounds": code_bounds}
    values = np.concatenate([np.ravel(p["phi"]) for p in panels.values() if p is not None])
    return {**panels, "chain": view.chain, "draw": d, "neurons": order,
            "layer": f"layer {run.depth} (feature layer)", "threshold": threshold,
            "vmin": float(values.min()), "vmax": float(values.max())}


def layer_activations_data(run: PosteriorView, ids, view: SampleView) -> dict | None:
    """Activations of every stored layer in the draw shown, each ordered by its own codes."""
    if len(run.phi) < 2:
        return None
    c, d, inputs = view.c, view.d, view.input_order
    bounds, classes = class_bounds(run.labels_train[inputs])
    panels = []
    for layer, phi in sorted(run.phi.items()):
        x = phi[c, d]
        order = thin_out(dcodes.order_neurons(ids[layer][c, d], dcodes.neuron_strength(x),
                                              dcodes.codes_by_use(ids[layer])))
        panels.append({"layer": layer, "phi": x[order][:, inputs], "neurons": order,
                       "code_bounds": _code_bounds(ids[layer][c, d][order], run.num_classes)})
    return {"chain": view.chain, "draw": d, "panels": panels, "inputs": inputs, "class_bounds": bounds,
            "classes": classes}


def code_reordering_data(run: PosteriorView, ids, view: SampleView) -> dict | None:
    """Fig. 5c-d: every stored layer's activations in the last draw, neurons once in the order of
    the first draw's codes and once reordered by their own codes in the last draw.  Where neurons
    trade codes (lower layers) only the reordered panel shows the scheme; where codes are fixed
    (the feature layer) both do."""
    if run.num_draws < 2:
        return None
    c, last, inputs = view.c, run.num_draws - 1, view.input_order
    bounds, classes = class_bounds(run.labels_train[inputs])
    rows = []
    for layer, phi in sorted(run.phi.items()):
        by_use = dcodes.codes_by_use(ids[layer])
        panels = []
        for name, d in (("order of the first draw's codes", 0), ("reordered by this draw's codes", last)):
            strength = dcodes.neuron_strength(phi[c, d])
            order = thin_out(dcodes.order_neurons(ids[layer][c, d], strength, by_use))
            panels.append({"title": name, "phi": phi[c, last][order][:, inputs],
                           "code_bounds": _code_bounds(ids[layer][c, d][order], run.num_classes)})
        rows.append({"layer": layer, "panels": panels,
                     "agreement": dsym.first_last_agreement(ids[layer][c:c + 1, [0, last]])})
    return {"chain": view.chain, "first": 0, "last": last, "rows": rows, "class_bounds": bounds,
            "classes": classes}


def output_data(run: PosteriorView, view: SampleView) -> dict:
    c, d, inputs = view.c, view.d, view.input_order
    mean = dpred.predictor_stats(run.f_train).mean
    return {"f": run.f_train[c, d][inputs], "f_mean": mean[inputs], "y": run.Y_train[inputs],
            "inputs": inputs, "class_bounds": class_bounds(run.labels_train[inputs])[0]}


def traces_data(run: PosteriorView, ids) -> dict:
    neurons = dsym.trace_neurons(ids[run.depth][0, 0], dcodes.readout_norms(run.a[0, 0]))
    smp = run.config["sampler"]
    per_step = run.attrs.get("paper_time_per_step_readout", run.attrs["paper_time_per_step"])  # the readout's
    times = dsym.draw_times(run.total_draws, smp["num_steps"], smp["thin"], float(per_step))[: run.num_draws]
    return {"chain": run.chains[0], "time": times, "neurons": neurons,
            "codes": [dcodes.code_string(ids[run.depth][0, 0, n], run.num_classes) for n in neurons],
            "a": np.transpose(run.a[0][:, neurons], (1, 0, 2))}


def preactivation_data(run: PosteriorView, ids) -> dict:
    """Histograms of z on inputs of class 0 for the most used codes (phi inverted)."""
    inv = invert_activation(run.phi[run.depth], run.activation)
    if inv is None:
        return {"skipped": f"{run.activation} is not invertible: preactivations cannot be recovered "
                           "from the stored phi_L (posterior.nc stores no weights)"}
    z, clipped = inv
    cls = 0
    z = z[..., run.labels_train == cls]  # chain, draw, neuron, inputs of class 0
    idsL = ids[run.depth]
    finite = z[np.isfinite(z)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    panels = []
    for code in dcodes.codes_by_use(idsL)[:4]:
        h = dread.histogram(z[idsL == code], bins=60, value_range=(lo, hi))
        panels.append({"code": dcodes.code_string(code, run.num_classes),
                       "fraction": float(np.mean(idsL == code)),
                       "edges": h.edges, "density": h.density})
    return {"class": cls, "codes": panels, "clipped_fraction": clipped, "theory_grid": None,
            "theory_density": None, "note": "no theory key for the preactivation posterior"}
