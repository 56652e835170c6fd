"""The quantities a sweep tabulates for one finished point, sampled beside theory.

The sampled values and the theory values are the point's ``report/report.json`` (and
``theory.json``); the Monte Carlo standard error of each sampled value comes from
``posterior.nc``: a per-draw series whose mean over chains and draws is the sampled value,
through ArviZ's ``mcse(method="mean")`` (batch means over chains and draws, Vehtari et al. 2021).

Quantities (``r`` an output, ``l`` a hidden layer, ``c`` a code such as ``110``):

- ``gen_error[r]``: ``eps_r = mean_x <(y_r(x) - f_r(x))^2>`` on the test inputs (perspective
  paper Eq. 7; THEORY.md 2.3); the per-draw series is ``mean_x (y_r(x) - f_r(x; draw))^2``, whose
  mean over draws is exactly ``bias_r + variance_r``. Sources ``theory`` and ``gp``.
- ``train_loss``: ``L = 1/2 sum_{mu,r} (y - f)^2`` (``sample_stats/loss``).
- ``readout_second_moment[r]``: ``<a_r^2>`` per neuron (THEORY.md 1.2); series
  ``mean_i a_ir^2``. Source ``theory``.
- ``kernel_alignment[l]``: ``CKA(K_l, Y Y^T)`` of the posterior-mean kernel (Kornblith et al.
  2019). Its standard error is the delta method's: with ``g = dCKA/dK`` at the mean kernel, the
  series ``<g, K_l(draw)>_F`` (``K_l(draw) = phi_l^T phi_l / N`` from the stored activations) has
  the MCSE of ``CKA`` to first order; NaN for layers whose activations are not stored. Sources
  ``theory``, ``nngp``, ``kernel_adaptation``.
- ``code_fraction[c]``: fraction of feature-layer neurons with code ``c`` on the training inputs
  (the report's threshold rule); series: the fraction per draw. Source ``theory``.
- ``outlier_mass[c]``: the sparse scheme's outlier mass of class ``c``,
  ``sum_{i outlier coding c} |a_i|^2 / N`` (THEORY.md 1.5b: ``rho_c K_c``; outliers are the neurons
  with ``|a_i| > threshold(N) x median_j |a_j|`` in their draw, an outlier codes the classes of its
  feature-layer code); series: the mass per draw
  (:func:`widebayes.diagnostics.readout.outlier_mass_per_draw`). Source ``theory`` (theory.json's
  ``outlier_mass``: ``sqrt(beta_a rho_c) |y_c - B_c| - T0``, ``beta_a = sigma_a^2 P``, below the
  class's critical temperature, 0 above; :mod:`widebayes.theory.nonlazy.relu`). Rows only where
  the theory predicts outlier masses (ReLU, non-lazy) or the report finds a sparse scheme.
- ``kernel_correction[l]``: the learned part of the posterior-mean kernel of hidden layer ``l``,
  ``||<K_l> - K_l^NNGP||_F / ||K_l^NNGP||_F``, with the chains' Monte Carlo noise removed
  (:func:`widebayes.studies.kernel_sweeps.debiased_correction`: cross-chain products, unbiased for
  ``||E K - K^NNGP||^2``; needs two chains).  Its standard error is the delta method's: with
  ``D = <K_l> - K^NNGP`` and ``g = D / (||D|| ||K^NNGP||)``, the series ``<g, K_l(draw)>_F``
  (NaN for layers whose activations are not stored).  Sources ``theory`` (the theory's mean kernel,
  BPKR for lazy networks) and ``kernel_adaptation`` (its perturbative or saddle kernel).

Points whose hidden layers are frozen (``[network] trainable = ["a"]``, the random-feature model)
have their own theory: ``gen_error[r]`` gets ``rf_theory`` (the ``T -> 0`` error averaged over
Gaussian-equivalent feature draws, :func:`widebayes.theory.random_features.rf_theory`; one hidden
layer, ``N > P + 1``) and ``rf_exact`` (exact given the drawn features at ``T_eff``,
:func:`~widebayes.theory.random_features.exact_given_features`, from the stored frozen features);
the trained network's theories (``theory``, ``kernel_adaptation``) do not apply there and are left
empty; ``gp`` (the N -> inf limit of both) stays.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

THEORY_COLUMNS = ("theory", "gp", "nngp", "kernel_adaptation", "rf_theory", "rf_exact")
TRAINED_NETWORK_ONLY = ("theory", "kernel_adaptation")  # not the random-feature model's theory


class Quantity(NamedTuple):
    """A sampled number, the per-draw (chain, draw) series behind its MCSE (or None), its theories."""

    name: str
    sampled: float
    series: np.ndarray | None
    sources: dict


def point_rows(folder) -> list[dict]:
    """The table rows of a finished point: ``quantity``, ``sampled``, ``mcse`` and THEORY_COLUMNS.

    Missing numbers are None (strict JSON; NaN in the table).
    """
    folder = Path(folder)
    report = json.loads((folder / "report" / "report.json").read_text())
    theory_path = folder / "theory.json"
    theory = json.loads(theory_path.read_text()) if theory_path.exists() else None
    idata = load_idata(folder / "posterior.nc")
    quantities = (gen_error(report, idata) + [train_loss(idata)] + readout_moment(report, theory, idata)
                  + kernel_alignment(report, idata) + kernel_correction(theory, idata)
                  + code_fractions(report, idata) + outlier_masses(report, theory, idata))
    if random_features(idata):
        quantities = [q._replace(sources={k: v for k, v in q.sources.items()
                                          if k not in TRAINED_NETWORK_ONLY}) for q in quantities]
    errors = mcse([q.series for q in quantities])
    return [{"quantity": q.name, "sampled": _num(q.sampled), "mcse": _num(err),
             **{col: _num(q.sources.get(col)) for col in THEORY_COLUMNS}}
            for q, err in zip(quantities, errors)]


def load_idata(path):
    """``arviz.from_netcdf`` without ArviZ's refactoring notice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

        return az.from_netcdf(path)


def mcse(series: list) -> list[float]:
    """ArviZ's MCSE of the mean of each (chain, draw) series (NaN for None or too few draws)."""
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    present = {f"q{i}": (("chain", "draw"), np.asarray(s, dtype=np.float64))
               for i, s in enumerate(series) if s is not None}
    if not present:
        return [math.nan] * len(series)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        out = az.mcse(xr.Dataset(present), method="mean")
    return [math.nan if s is None else float(out[f"q{i}"]) for i, s in enumerate(series)]


def gen_error(report: dict, idata) -> list[Quantity]:
    """``gen_error[r]`` per output (none without a test set)."""
    test = report["predictor"].get("test")
    if not test or "f_test" not in idata.posterior:
        return []
    f = idata.posterior["f_test"].values.astype(np.float64)  # chain, draw, test, output
    y = idata.observed_data["y_test"].values.astype(np.float64)
    per_draw = np.mean((f - y) ** 2, axis=2)  # chain, draw, output
    th, gp = test.get("gen_error_theory"), test.get("gen_error_gp")
    rf = rf_errors(idata) if random_features(idata) else {}
    return [Quantity(f"gen_error[{r}]", total, per_draw[..., r],
                     {"theory": _at(th, r), "gp": _at(gp, r), **{k: _at(v, r) for k, v in rf.items()}})
            for r, total in enumerate(test["gen_error"]["total"])]


def random_features(idata) -> bool:
    """Whether a run is the random-feature model: every hidden weight frozen, the readout sampled."""
    frozen = list(idata.posterior.attrs.get("frozen_blocks", []))
    return bool(frozen) and "a" not in frozen and "a" in idata.posterior


def rf_errors(idata) -> dict:
    """``rf_theory`` and ``rf_exact`` of a random-feature run (GenError ``_asdict()``; None where undefined).

    ``rf_exact`` from the stored features of the first draw (the same in every draw: the hidden
    layers are frozen), ``rf_theory`` from the NNGP kernel of the stored inputs (depth 1, lazy).
    """
    import tomllib

    from widebayes.config import layer_variances
    from widebayes.theory.random_features import exact_given_features, rf_theory

    net = tomllib.loads(idata.posterior.attrs["config"])["network"]
    obs = idata.observed_data
    gamma = {"lazy": 0.5, "nonlazy": 1.0}.get(net["readout"], net["readout"])
    reps = idata.representations
    X, Y, Xt, Yt = (obs[k].values.astype(np.float64) for k in ("X_train", "y_train", "X_test", "y_test"))
    exact = exact_given_features(reps["phi_L"].values[0, 0].T, reps["phi_L_test"].values[0, 0].T, Y, Yt,
                                 float(net["sigma_a2"]), float(idata.posterior.attrs["T_eff"]), float(gamma))
    theory = None
    if net["depth"] == 1 and float(gamma) == 0.5:
        theory = rf_theory(X, Y, Xt, Yt, net["activation"], layer_variances(net), float(net["sigma_a2"]),
                           int(net["width"]))._asdict()
    return {"rf_exact": exact._asdict(), "rf_theory": theory}


def _at(err, r):
    return None if err is None else err["total"][r]


def train_loss(idata) -> Quantity:
    """Mean training loss over chains and draws."""
    loss = idata.sample_stats["loss"].values.astype(np.float64)
    return Quantity("train_loss", float(loss.mean()), loss, {})


def readout_moment(report: dict, theory, idata) -> list[Quantity]:
    """``readout_second_moment[r]``: diagonal of ``<a a^T>`` per neuron."""
    second = np.atleast_2d(report["readout"]["second_moment"])
    a = idata.posterior["a"].values.astype(np.float64)  # chain, draw, neuron, output
    per_draw = np.mean(a**2, axis=2)
    th = theory.get("readout_second_moment") if theory else None
    th = None if th is None else np.atleast_2d(np.asarray(th, dtype=np.float64))
    return [Quantity(f"readout_second_moment[{r}]", second[r, r], per_draw[..., r],
                     {"theory": None if th is None else th[r, r]}) for r in range(second.shape[0])]


def kernel_alignment(report: dict, idata) -> list[Quantity]:
    """``kernel_alignment[l]`` for the hidden layers l = 1..L."""
    kernels = report["kernels"]
    align = kernels["alignment_with_targets"]
    adaptation = kernels.get("kernel_adaptation") or {}
    adapted = adaptation.get("alignment_with_targets", {}).get("kernel adaptation")
    reps = idata.representations
    depth = int(report["experiment"]["depth"])
    K_mean = reps["kernel"].values.astype(np.float64).mean(axis=0)  # layer, train, train
    Y = idata.observed_data["y_train"].values.astype(np.float64)
    out = []
    for layer in range(1, depth + 1):
        name = "phi_L" if layer == depth else f"phi_{layer}"
        series = alignment_series(reps[name].values, K_mean[layer], Y) if name in reps else None
        sources = {"theory": _layer(align.get("theory"), layer), "nngp": _layer(align.get("nngp"), layer),
                   "kernel_adaptation": _layer(adapted, layer)}
        out.append(Quantity(f"kernel_alignment[{layer}]", align["samples"][layer], series, sources))
    return out


def kernel_correction(theory, idata) -> list[Quantity]:
    """``kernel_correction[l]`` for the hidden layers l = 1..L (module docstring)."""
    import tomllib

    from widebayes.config import layer_variances
    from widebayes.studies.kernel_sweeps import debiased_correction, relative_correction
    from widebayes.theory.nngp import nngp_kernels

    net = tomllib.loads(idata.posterior.attrs["config"])["network"]
    reps = idata.representations
    K_chains = reps["kernel"].values.astype(np.float64)  # chain, layer, P, P
    X = idata.observed_data["X_train"].values.astype(np.float64)
    nngp = nngp_kernels(X, net["activation"], layer_variances(net)).train
    if K_chains.shape[0] < 2:
        return []
    sampled = debiased_correction(K_chains, nngp)
    theories = {"theory": (theory or {}).get("kernel_train"),
                "kernel_adaptation": next((theory[k] for k in ("kernel_train_perturbative",
                                                               "kernel_train_saddle")
                                           if theory and k in theory), None)}
    theories = {k: None if v is None else relative_correction(np.asarray(v, np.float64), nngp)
                for k, v in theories.items()}
    depth = int(net["depth"])
    K_mean = K_chains.mean(axis=0)
    out = []
    for layer in range(1, depth + 1):
        name = "phi_L" if layer == depth else f"phi_{layer}"
        series = correction_series(reps[name].values, K_mean[layer], nngp[layer]) if name in reps else None
        out.append(Quantity(f"kernel_correction[{layer}]", sampled[layer], series,
                            {k: _layer(v, layer) for k, v in theories.items()}))
    return out


def correction_series(phi, K_mean, K_ref) -> np.ndarray | None:
    """Per-draw series ``<g, K(draw)>_F``, ``g = D / (||D|| ||K_ref||)``, ``D = K_mean - K_ref``.

    ``g`` is the gradient of ``||K - K_ref|| / ||K_ref||`` at ``K_mean``, so the MCSE of the series is
    the MCSE of the relative correction to first order (delta method).

    Parameters
    ----------
    phi : array (chain, draw, neuron, input)
    K_mean, K_ref : arrays (input, input)
    """
    D = np.asarray(K_mean, np.float64) - np.asarray(K_ref, np.float64)
    nD, nR = np.linalg.norm(D), np.linalg.norm(K_ref)
    if nD == 0 or nR == 0:
        return None
    phi = np.asarray(phi, dtype=np.float64)
    return np.einsum("cdnp,pq,cdnq->cd", phi, D / (nD * nR), phi, optimize=True) / phi.shape[2]


def _layer(values, layer: int):
    return None if values is None else values[layer]


def alignment_series(phi, K_mean, Y) -> np.ndarray:
    """Per-draw series ``<g, K(draw)>_F`` with ``g`` the gradient of ``CKA(K, Y Y^T)`` at ``K_mean``.

    With ``A = H K H``, ``B = H Y Y^T H`` and ``c = CKA = <A, B> / (|A| |B|)``,
    ``g = B / (|A| |B|) - c A / |A|^2`` (already centred, so ``<g, H dK H> = <g, dK>``).  To
    first order ``CKA(K_mean + dK) - CKA(K_mean) = <g, dK>``, so the MCSE of the series is the
    MCSE of the alignment (delta method).

    Parameters
    ----------
    phi : array (chain, draw, neuron, input)
    K_mean : array (input, input)
    Y : array (input, output)
    """
    from widebayes.diagnostics.kernels import center, cka, target_kernel

    A, B = center(K_mean), center(target_kernel(Y))
    nA, nB = np.linalg.norm(A), np.linalg.norm(B)
    if nA == 0 or nB == 0:
        return None
    g = B / (nA * nB) - float(cka(K_mean, target_kernel(Y))) * A / nA**2
    phi = np.asarray(phi, dtype=np.float64)
    return np.einsum("cdnp,pq,cdnq->cd", phi, g, phi, optimize=True) / phi.shape[2]


def feature_code_ids(report: dict, idata) -> np.ndarray:
    """Code ids ``(chain, draw, neuron)`` of the feature layer on the training inputs, at the
    report's threshold."""
    from widebayes.diagnostics.codes import class_means, code_ids

    L = int(report["experiment"]["depth"])
    m = int(report["experiment"]["num_classes"])
    threshold = report["coding"]["layers"][f"layer_{L}"]["threshold"]
    phi = idata.representations["phi_L"].values
    labels = idata.observed_data["labels_train"].values
    return code_ids(class_means(phi, labels, m), threshold)


def code_fractions(report: dict, idata) -> list[Quantity]:
    """``code_fraction[c]`` for every code the report finds in the feature layer."""
    from widebayes.diagnostics.codes import code_id_of

    L = int(report["experiment"]["depth"])
    m = int(report["experiment"]["num_classes"])
    summary = report["coding"]["layers"][f"layer_{L}"]["train"]
    ids = feature_code_ids(report, idata)
    theory = {}
    for c in report["coding"].get("theory_codes") or []:
        theory[c["code"]] = theory.get(c["code"], 0.0) + c["fraction"]
    return [Quantity(f"code_fraction[{code}]", frac, np.mean(ids == code_id_of(code, m), axis=-1),
                     {"theory": theory.get(code, 0.0) if theory else None})
            for code, frac in zip(summary["codes"], summary["fraction"])]


def outlier_masses(report: dict, theory, idata) -> list[Quantity]:
    """``outlier_mass[c]`` per class (module docstring); none unless the theory predicts outlier
    masses or the report's scheme is sparse."""
    from widebayes.diagnostics.codes import readout_outliers
    from widebayes.diagnostics.readout import outlier_mass_per_draw

    predicted = (theory or {}).get("outlier_mass")
    sparse = report["coding"].get("scheme", {}).get("scheme") == "sparse"
    if predicted is None and not sparse:
        return []
    m = int(report["experiment"]["num_classes"])
    a = idata.posterior["a"].values.astype(np.float64)  # chain, draw, neuron, output
    outliers = readout_outliers(a, int(report["experiment"]["width"]))
    series = outlier_mass_per_draw(a, outliers, feature_code_ids(report, idata), m)  # chain, draw, class
    sampled = report["readout"]["outliers"]["outlier_mass"]
    predicted = None if predicted is None else np.atleast_1d(np.asarray(predicted, dtype=np.float64))
    return [Quantity(f"outlier_mass[{c}]", sampled[c], series[..., c],
                     {"theory": None if predicted is None else predicted[c]}) for c in range(m)]


def _num(value) -> float | None:
    """A finite float, or None (strict JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
