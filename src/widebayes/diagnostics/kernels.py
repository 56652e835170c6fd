"""Layer kernels: Gram matrices of draws, the learned part, and centred kernel alignment.

Kernels follow DESIGN.md: ``K_l = phi(z_l) . phi(z_l) / N`` (layer 0 the input kernel).  The
*learned part* of a posterior-averaged kernel is ``K_l - K_l^NNGP``, what the data added to the
prior's infinite-width kernel (perspective paper Eq. 15, Fig. 6; coding-schemes paper Fig. 3).
Alignment with the task is the centred kernel alignment (Cortes, Mohri & Rostamizadeh 2012;
Kornblith et al. 2019, "Similarity of neural network representations revisited", Eq. 4 with
linear kernels):

    CKA(K, L) = <H K H, H L H>_F / (||H K H||_F ||H L H||_F),   H = I - 11^T / P,

with the target kernel ``L = Y Y^T``.  CKA is 1 for identical kernels (and for ``K = c L``,
``c > 0``), invariant to scaling either kernel and to adding a constant, and lies in [-1, 1].
"""

from __future__ import annotations

import numpy as np


def gram(phi) -> np.ndarray:
    """``phi^T phi / N`` of activations stored as (..., neuron, input): (..., input, input)."""
    phi = np.asarray(phi, dtype=np.float64)
    return np.swapaxes(phi, -1, -2) @ phi / phi.shape[-2]


def center(K) -> np.ndarray:
    """``H K H`` with ``H = I - 11^T / P`` (double centring over the last two axes)."""
    K = np.asarray(K, dtype=np.float64)
    K = K - K.mean(axis=-1, keepdims=True)
    return K - K.mean(axis=-2, keepdims=True)


def cka(K1, K2) -> np.ndarray:
    """Centred kernel alignment of two kernels (over the last two axes; leading axes broadcast).

    Returns NaN where a centred kernel vanishes.
    """
    A, B = center(K1), center(K2)
    num = np.sum(A * B, axis=(-2, -1))
    den = np.sqrt(np.sum(A * A, axis=(-2, -1)) * np.sum(B * B, axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def target_kernel(Y) -> np.ndarray:
    """``Y Y^T`` (P x P) of the targets (a vector counts as one output)."""
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    return Y @ Y.T


def target_alignment(K, Y) -> np.ndarray:
    """``CKA(K_l, Y Y^T)`` for a stack of kernels (..., P, P)."""
    return cka(K, target_kernel(Y))


def learned_part(K, K_nngp) -> np.ndarray:
    """``K - K^NNGP``: what learning added to the prior's infinite-width kernel."""
    return np.asarray(K, dtype=np.float64) - np.asarray(K_nngp, dtype=np.float64)


def relative_difference(sample, reference) -> float:
    """``||sample - reference||_F / ||reference||_F`` (NaN when the reference is zero)."""
    sample = np.asarray(sample, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    den = np.linalg.norm(reference)
    return float(np.linalg.norm(sample - reference) / den) if den > 0 else float("nan")


def class_order(labels, max_inputs: int | None = None) -> np.ndarray:
    """Input indices sorted by class (stable), thinned evenly within classes to ``max_inputs``.

    Used to display kernels and activations with a block structure.
    """
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    if max_inputs is None or len(order) <= max_inputs:
        return order
    keep = np.unique(np.linspace(0, len(order) - 1, max_inputs).round().astype(int))
    return order[keep]
