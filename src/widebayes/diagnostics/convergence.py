"""Convergence of the chains: R-hat and effective sample size of permutation-invariant observables.

Individual weights are not identifiable (hidden neurons can be permuted), so convergence is judged
on observables that do not change under a permutation of the neurons: the loss, the readout norm
per class ``sum_i a_ir^2 / N``, the alignment of the feature kernel with the targets, and the
fraction of neurons per code.  R-hat is ArviZ's rank-normalised split R-hat and ESS its bulk and
tail ESS (Vehtari et al. 2021); the usual thresholds flag R-hat > 1.01 and ESS < 100.
"""

from __future__ import annotations

import warnings

import numpy as np

RHAT_MAX = 1.01
ESS_MIN = 100.0
MIN_DRAWS = 4


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def rhat_ess(series) -> dict:
    """R-hat, bulk ESS and tail ESS of one scalar observable.

    Parameters
    ----------
    series : array (chain, draw)

    Returns
    -------
    dict with ``rhat``, ``ess_bulk``, ``ess_tail``, ``note``.  A series constant within every
    chain gets ``rhat = inf`` when the chains disagree (frozen: no chain moves) and NaN when they
    agree; fewer than 2 chains or 4 draws give NaN R-hat.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)) or x.shape[1] < MIN_DRAWS:
        return {"rhat": float("nan"), "ess_bulk": float("nan"), "ess_tail": float("nan"),
                "note": "too few finite draws"}
    if np.all(np.ptp(x, axis=1) == 0):
        frozen = np.ptp(x[:, 0]) > 0
        return {"rhat": float("inf") if frozen else float("nan"), "ess_bulk": float("nan"),
                "ess_tail": float("nan"),
                "note": "constant within every chain" + (", chains disagree" if frozen else "")}
    az = _arviz()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        rhat = float(az.rhat(x)) if x.shape[0] >= 2 else float("nan")
        bulk, tail = float(az.ess(x, method="bulk")), float(az.ess(x, method="tail"))
    return {"rhat": rhat, "ess_bulk": bulk, "ess_tail": tail,
            "note": "" if x.shape[0] >= 2 else "one chain: no R-hat"}


def mcse_of_mean(series) -> float:
    """Monte Carlo standard error of the mean of a (chain, draw) series: ArviZ's
    ``mcse(method="mean")`` (``sd / sqrt(ESS_mean)``, Vehtari et al. 2021).  0 for a constant
    series, NaN with fewer than ``MIN_DRAWS`` draws or non-finite values."""
    x = np.asarray(series, dtype=np.float64)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] < MIN_DRAWS or not np.all(np.isfinite(x)):
        return float("nan")
    if np.ptp(x) == 0:
        return 0.0
    az = _arviz()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(az.mcse(x, method="mean"))


def convergence_table(observables: dict) -> dict:
    """:func:`rhat_ess` of every observable ``name -> (chain, draw)``."""
    return {name: rhat_ess(x) for name, x in observables.items()}


def convergence_warnings(table: dict, rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN) -> list[str]:
    """One line per observable with ``R-hat > rhat_max`` or ``ESS < ess_min`` (bulk or tail)."""
    lines = []
    for name, row in table.items():
        problems = []
        if np.isfinite(row["rhat"]) and row["rhat"] > rhat_max:
            problems.append(f"R-hat {row['rhat']:.4f} > {rhat_max}")
        elif row["rhat"] == np.inf:
            problems.append("R-hat infinite (constant within chains that disagree: frozen)")
        ess = min(row["ess_bulk"], row["ess_tail"])
        if np.isfinite(ess) and ess < ess_min:
            problems.append(f"ESS {ess:.0f} < {ess_min:.0f}")
        if problems:
            lines.append(f"{name}: " + "; ".join(problems))
    return lines


def invariant_observables(loss, a, phi, Y, code_ids=None, codes=None, code_names=None) -> dict:
    """Permutation-invariant observables per draw, each (chain, draw).

    Parameters
    ----------
    loss : array (chain, draw)
    a : array (chain, draw, neuron, output)
    phi : array (chain, draw, neuron, train)
        Feature-layer activations; its Gram matrix ``phi^T phi / N`` is aligned with ``Y Y^T``.
    Y : array (train, output)
    code_ids : int array (chain, draw, neuron), optional
    codes, code_names : list of int, list of str, optional
        Codes whose fraction of neurons is tracked.
    """
    from widebayes.diagnostics.kernels import gram, target_alignment
    from widebayes.diagnostics.readout import readout_norm_per_class

    out = {"loss": np.asarray(loss, dtype=np.float64)}
    norms = readout_norm_per_class(a)
    for r in range(norms.shape[-1]):
        out[f"readout_norm[{r}]"] = norms[..., r]
    out["kernel_alignment"] = target_alignment(gram(phi), Y)
    if code_ids is not None and codes:
        ids = np.asarray(code_ids)
        for c, name in zip(codes, code_names):
            out[f"code_fraction[{name}]"] = np.mean(ids == c, axis=-1)
    return out
