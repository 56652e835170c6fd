"""Few-shot prototype learning of classes, simulated and predicted, from kernels alone.

The m-shot prototype classifier (Sorscher, Ganguli & Sompolinsky, PNAS 119, e2200800119 (2022);
perspective paper Eq. 3 and Figs. 2C-D, 3A-B; THEORY.md 6.1) assigns a test point ``xi`` of
class ``a`` to ``a`` when ``h = ||xi - bbar||^2 - ||xi - abar||^2 > 0``, with ``abar``, ``bbar``
the means of m shots of each class.  Expanding the squares,

    h = 2 (mean_{j in A} K_ij - mean_{j in B} K_ij) + mean_{j,k in B} K_jk - mean_{j,k in A} K_jk,

with ``K_ij = x_i . x_j`` and ``A``, ``B`` the shots: the classifier, and so its error, is a
function of the kernel entries alone, exactly.  Any representation with kernel ``K`` (a sampled
draw's ``phi phi^T / N``, a posterior-mean kernel, the NNGP kernel, the theory's mean kernel; the
points of ``geometry.points_from_kernel``) has the same few-shot error, and a kernel's few-shot
error is that of the representations whose Gram matrix it is (for a mean kernel: of the infinitely
wide network whose representation kernel is that mean).  The predicted error ``H(SNR)`` uses the
geometry of the same kernel (``geometry.geometry_from_kernels``: centres, radii, participation
ratios and overlaps, all from kernel blocks), so simulation and prediction see the same points.

Used for the held-out classes of a task (``[task] heldout_classes``): the network is sampled on the
other classes, and the few-shot learning of the new classes from its representations is measured
(report section ``fewshot_heldout``).  Everything here is NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from widebayes.diagnostics.geometry import (
    FewShotError,
    _numpy_rng,
    draw_shots,
    episode_stats,
    gaussian_tail,
    geometry_from_kernels,
    snr_from_geometry,
)


def _kernel_episode_batch(gen, Kaa, Kab, Kbb, m: int, E: int):
    """``E`` episodes: m shots of each class, and ``h`` of every non-shot point of ``a`` from
    kernel entries (module docstring); per episode the error fraction, mean and variance of h."""
    ia, ib = draw_shots(gen, E, Kaa.shape[0], m), draw_shots(gen, E, Kbb.shape[0], m)
    to_a = Kaa[:, ia].mean(axis=2)  # (P_a, E): xi . abar
    to_b = Kab[:, ib].mean(axis=2)  # (P_a, E): xi . bbar
    norm_a = Kaa[ia[:, :, None], ia[:, None, :]].mean(axis=(1, 2))  # |abar|^2
    norm_b = Kbb[ib[:, :, None], ib[:, None, :]].mean(axis=(1, 2))  # |bbar|^2
    h = (2.0 * (to_a - to_b) + (norm_b - norm_a)[None, :]).T  # (E, P_a)
    return episode_stats(h, ia)


def kernel_fewshot_error(K, ia, ib, m: int, rng_key, n_episodes: int = 2000,
                         batch_size: int = 256) -> FewShotError:
    """Simulated m-shot prototype error of class ``a`` against ``b`` from a kernel ``K (P, P)``.

    The protocol of ``geometry.fewshot_error`` (m shots of each class without replacement, every
    other point of ``a`` tested), with ``h`` written in kernel entries (module docstring): for
    ``K = X X^T`` it is the error of the points ``X``, episode for episode (the same generator
    draws the same shots).

    Parameters
    ----------
    K : array_like, shape (P, P)
        Kernel of inner products (any positive scale).
    ia, ib : array_like of int
        Indices of the points of classes ``a`` and ``b`` in ``K``.
    m : int
        Shots per class, ``1 <= m < len(ia)``, ``m <= len(ib)``.
    rng_key : int, numpy Generator or JAX PRNG key
    n_episodes, batch_size : int

    Returns
    -------
    FewShotError
        Error rate, its standard error over episodes, and the empirical SNR ``mean h / std h``.
    """
    K = np.asarray(K, dtype=np.float64)
    ia, ib = np.asarray(ia), np.asarray(ib)
    if not 1 <= m < len(ia) or m > len(ib):
        raise ValueError(f"need 1 <= m < P_a and m <= P_b; got m={m}, P_a={len(ia)}, P_b={len(ib)}")
    Kaa, Kab, Kbb = K[np.ix_(ia, ia)], K[np.ix_(ia, ib)], K[np.ix_(ib, ib)]
    gen = _numpy_rng(rng_key)
    batches = [_kernel_episode_batch(gen, Kaa, Kab, Kbb, int(m), min(batch_size, n_episodes - start))
               for start in range(0, int(n_episodes), int(batch_size))]
    err, mean, var = (np.concatenate(v) for v in zip(*batches))
    snr = mean.mean() / np.sqrt(var.mean() + mean.var())
    return FewShotError(float(err.mean()), float(err.std(ddof=1) / np.sqrt(len(err))), float(snr))


class FewShotCurve(NamedTuple):
    """m-shot prototype learning of a set of classes from one kernel (or a stack of kernels):
    per m in ``shots``, the simulated error (mean over ordered class pairs, kernels and episodes)
    with its standard error, and the predicted ``H(SNR)`` (mean over the same pairs and kernels);
    the signal ``||dx0||^2 / R_a^2`` and dimension ``D_a`` (means over pairs and kernels)."""

    shots: np.ndarray
    simulated: np.ndarray
    simulated_se: np.ndarray
    predicted: np.ndarray
    signal: float
    dimension: float


MAX_SHOT_FRACTION = 0.2  # the report's shots use at most this part of the smallest class


def usable_shots(shots: Sequence[int], labels, max_fraction: float = 1.0) -> list[int]:
    """The ``shots`` that leave a test point in every class (``m < smallest class size``) and
    take at most ``max_fraction`` of the smallest class.

    The prediction treats shots and test point as independent draws from the class; an episode
    draws them without replacement from a finite pool, which departs from that as ``m`` becomes
    a sizeable part of it (on MNIST with 50 inputs per class, m = 20: simulated 0.064, predicted
    0.047 at the inputs; m = 1, 5 within 6%).  The report uses :data:`MAX_SHOT_FRACTION`.
    """
    smallest = int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())
    return [int(m) for m in shots if 1 <= int(m) < smallest and int(m) <= max_fraction * smallest]


def fewshot_curve(K, labels, shots: Sequence[int], seed: int = 0,
                  n_episodes: int = 200) -> FewShotCurve:
    """Few-shot learning of the classes of ``labels`` from ``K (..., P, P)``: simulated
    (:func:`kernel_fewshot_error`, ``n_episodes`` per ordered pair and kernel) and predicted
    (``H(SNR)`` of the exact Gaussian form, THEORY 6.1b, from ``geometry_from_kernels``).

    Parameters
    ----------
    K : array_like, shape (..., P, P)
        One kernel, or a stack (e.g. one per sampled draw: averages run over it too).
    labels : array_like, shape (P,)
        Class of each input; two or more classes.
    shots : sequence of int
        The m to measure; each needs ``m < smallest class size`` (:func:`usable_shots`).
    seed : int
        Seeds the episodes (pair ``(a, b)`` of kernel ``k`` at m gets its own stream).
    n_episodes : int

    Returns
    -------
    FewShotCurve
    """
    K = np.asarray(K, dtype=np.float64)
    stack = K.reshape(-1, *K.shape[-2:])
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("few-shot learning needs two or more classes")
    bad = [m for m in shots if m not in usable_shots(shots, labels)]
    if bad:
        raise ValueError(f"m = {bad[0]} leaves no test point in the smallest class")
    idx = [np.flatnonzero(labels == c) for c in classes]
    geo, _ = geometry_from_kernels(stack, labels)
    sim, se, pred = [], [], []
    for m in shots:
        runs = [kernel_fewshot_error(Kk, ia, ib, int(m), np.random.default_rng([seed, int(m), k, a, b]),
                                     n_episodes)
                for k, Kk in enumerate(stack) for a, ia in enumerate(idx) for b, ib in enumerate(idx)
                if a != b]
        sim.append(np.mean([r.err for r in runs]))
        se.append(np.sqrt(np.sum([r.se**2 for r in runs])) / len(runs))
        pred.append(np.nanmean(gaussian_tail(snr_from_geometry(geo, m))))
    return FewShotCurve(np.asarray(shots, dtype=int), np.array(sim), np.array(se), np.array(pred),
                        float(np.nanmean(geo.dist2)), float(np.nanmean(geo.Da)))


def draw_kernels(phi) -> np.ndarray:
    """Per-draw kernels ``phi^T phi / N`` of activations ``phi (..., N, P)`` (neurons, inputs)."""
    phi = np.asarray(phi, dtype=np.float64)
    return np.einsum("...ni,...nj->...ij", phi, phi) / phi.shape[-2]
