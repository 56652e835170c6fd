"""Class-structured P x P matrices: ``diag(a_c(mu)) + U A U^T`` (a closed algebra) [DER].

On a class-structured task (inputs of equal norm, orthogonal, one target per class) every kernel of
the class-symmetric mean-field solution is invariant under permutations of the inputs within a
class, so it has the form

    M = diag(a_{c(mu)}) + U A U^T,      U_{mu c} = 1[c(mu) = c]   (P x k class indicator),

with a in R^k (the within-class, input-diagonal part) and A in R^{k x k} (the class-block part).
With ``n = U^T U = diag(n_c)`` these matrices form an algebra:

    (diag(a) + U A U^T)(diag(b) + U B U^T) = diag(ab) + U [diag(a) B + A diag(b) + A n B] U^T,
    (diag(a) + U A U^T)^{-1} = diag(1/a) + U X U^T,  X = -(diag(a) + A n)^{-1} A diag(1/a),

(the inverse follows from the product with ``a b = 1``; it needs a > 0, not an invertible A).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ClassMatrix(NamedTuple):
    """``diag(diag[c(mu)]) + U block U^T`` for class counts ``counts`` (module docstring).

    Attributes
    ----------
    diag : ndarray (k,)
    block : ndarray (k, k)
    counts : ndarray (k,)
        ``n_c``, the number of inputs of each class.
    """

    diag: np.ndarray
    block: np.ndarray
    counts: np.ndarray


def class_matrix(diag, block, counts) -> ClassMatrix:
    """A ClassMatrix with float64 arrays and a symmetrised block."""
    block = np.asarray(block, dtype=np.float64)
    return ClassMatrix(np.asarray(diag, dtype=np.float64), 0.5 * (block + block.T),
                       np.asarray(counts, dtype=np.float64))


def multiply(M: ClassMatrix, Q: ClassMatrix) -> ClassMatrix:
    """``M Q`` (module docstring); the block is not symmetrised (products of symmetric class
    matrices need not be symmetric)."""
    block = M.diag[:, None] * Q.block + M.block * Q.diag[None, :] + M.block @ (M.counts[:, None] * Q.block)
    return ClassMatrix(M.diag * Q.diag, block, M.counts)


def inverse(M: ClassMatrix) -> ClassMatrix:
    """``M^{-1}`` (module docstring); requires every ``diag > 0``."""
    X = -np.linalg.solve(np.diag(M.diag) + M.block * M.counts[None, :], M.block / M.diag[None, :])
    return ClassMatrix(1.0 / M.diag, X, M.counts)


def subtract(M: ClassMatrix, Q: ClassMatrix) -> ClassMatrix:
    """``M - Q``."""
    return ClassMatrix(M.diag - Q.diag, M.block - Q.block, M.counts)


def scale(M: ClassMatrix, c: float) -> ClassMatrix:
    """``c M``."""
    return ClassMatrix(c * M.diag, c * M.block, M.counts)


def symmetrised(M: ClassMatrix) -> ClassMatrix:
    """``(M + M^T) / 2``."""
    return ClassMatrix(M.diag, 0.5 * (M.block + M.block.T), M.counts)


def dense(M: ClassMatrix, labels) -> np.ndarray:
    """The P x P matrix for training labels ``labels`` (class of each input)."""
    labels = np.asarray(labels)
    return np.diag(M.diag[labels]) + M.block[np.ix_(labels, labels)]


def from_dense(K, labels) -> ClassMatrix:
    """Project a P x P matrix on the class-structured ones: class-block means of the off-diagonal
    entries for the block, the mean diagonal excess for the diagonal (exact for a class matrix)."""
    K = np.asarray(K, dtype=np.float64)
    labels = np.asarray(labels)
    k = int(labels.max()) + 1
    onehot = (labels[:, None] == np.arange(k)[None, :]).astype(np.float64)
    n = onehot.sum(axis=0)
    off = K - np.diag(np.diag(K))
    pairs = np.outer(n, n) - np.diag(n)
    block = (onehot.T @ off @ onehot) / np.maximum(pairs, 1.0)
    diag = (onehot.T @ np.diag(K)) / n - np.diag(block)
    return class_matrix(diag, block, n)
