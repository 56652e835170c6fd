"""Symmetry breaking and ergodicity: do neurons keep their code while the chain runs?

In sigmoidal and ReLU networks the readout posterior splits into disconnected branches; a neuron
stays on its branch, so its feature-layer code is fixed during sampling (broken permutation
symmetry), while lower-layer codes keep changing (paper, section "Dynamics", Figs. 4-5).  In
linear networks every neuron explores the whole Gaussian.  The numbers here measure that from
the codes of consecutive stored draws of each chain.
"""

from __future__ import annotations

import numpy as np


def code_change_rate(ids) -> np.ndarray:
    """Per neuron, the fraction of consecutive draw pairs in which its code changes.

    Parameters
    ----------
    ids : int array (chain, draw, neuron)
        Codes (``codes.code_ids``); pairs with a -1 (no code, NaN draw) are skipped.

    Returns
    -------
    ndarray (chain, neuron); NaN for a chain with fewer than two draws.
    """
    ids = np.asarray(ids)
    before, after = ids[:, :-1], ids[:, 1:]
    valid = (before >= 0) & (after >= 0)
    changes = np.sum((before != after) & valid, axis=1)
    pairs = np.sum(valid, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, changes / np.maximum(pairs, 1), np.nan)


def code_kept_fraction(ids) -> float:
    """Fraction of neurons (over chains) whose code never changes over their chain's draws.

    1 for a fully broken symmetry (frozen codes); small when neurons wander between codes.
    """
    rate = code_change_rate(ids)
    rate = rate[np.isfinite(rate)]
    return float(np.mean(rate == 0)) if rate.size else float("nan")


def mean_change_rate(ids) -> float:
    """Mean over neurons and chains of :func:`code_change_rate`."""
    rate = code_change_rate(ids)
    rate = rate[np.isfinite(rate)]
    return float(rate.mean()) if rate.size else float("nan")


def first_last_agreement(ids) -> float:
    """Fraction of neurons (over chains) whose code in the last draw is the one of the first: the
    neurons' own codes persisting, where the code fractions of each draw (the scheme, seen after
    reordering the neurons draw by draw) may stay fixed while neurons trade codes (paper Fig. 5c-d)."""
    ids = np.asarray(ids)
    first, last = ids[:, 0], ids[:, -1]
    valid = (first >= 0) & (last >= 0)
    return float(np.mean(first[valid] == last[valid])) if valid.any() else float("nan")


def trace_neurons(ids_first, strength, max_neurons: int = 6) -> list[int]:
    """Neurons to show in readout traces: the strongest neuron of each code in turn.

    Parameters
    ----------
    ids_first : int array (neuron,)
        Codes in the first draw of the chain shown.
    strength : array (neuron,)
        E.g. the readout norm; the strongest of each code is taken first.
    """
    ids_first, strength = np.asarray(ids_first), np.asarray(strength)
    codes, counts = np.unique(ids_first, return_counts=True)
    by_code = [list(np.flatnonzero(ids_first == c)[np.argsort(-strength[ids_first == c])])
               for c in codes[np.argsort(-counts)]]
    chosen: list[int] = []
    while len(chosen) < max_neurons and any(by_code):
        for group in by_code:
            if group and len(chosen) < max_neurons:
                chosen.append(int(group.pop(0)))
    return chosen


def draw_times(num_draws: int, num_steps: int, thin: int, paper_time_per_step: float) -> np.ndarray:
    """Langevin time of each stored draw in the paper's units (DESIGN.md).

    Draw d is taken after step ``burn + (d + 1) thin`` with ``burn = num_steps - num_draws thin``
    (``inference.plan_chunks``).
    """
    burn = num_steps - num_draws * thin
    return (burn + thin * (np.arange(num_draws) + 1)) * paper_time_per_step
