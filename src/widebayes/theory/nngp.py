"""NNGP layer kernels of infinitely wide networks (the N -> inf limit at fixed P).

In the DESIGN.md parametrisation, ``z_1 = W_1 x / sqrt(N0)``, ``z_l = W_l phi(z_{l-1}) / sqrt(N)``
with ``W_l ~ N(0, sigma_l^2)``, the layer kernels obey the recursion (Neal 1996; Williams 1998;
perspective paper, section "Infinitely Wide DNNs", Eq. 13; THEORY.md 1.6)

    K_0 = X X^T / N0                       (input kernel)
    C_l = sigma_l^2 K_{l-1}                (covariance of the preactivations z_l)
    K_l = E_{z ~ N(0, C_l)}[phi(z) phi(z)^T]   (= lim_N phi(z_l) . phi(z_l) / N)

The lazy output GP kernel is ``sigma_a2 * K_L``.  All arrays are float64 NumPy; rows are inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from widebayes.activations import Activation, as_activation, kernel_cross, kernel_matrix


class NNGPKernels(NamedTuple):
    """Layer kernels of the NNGP recursion.

    Attributes
    ----------
    train : ndarray, shape (L+1, P, P)
        ``K_0 .. K_L`` on the training inputs (layer 0 is the input kernel).
    preact_train : ndarray, shape (L, P, P)
        Preactivation covariances ``C_1 .. C_L`` on the training inputs.
    cross : ndarray, shape (L+1, P, P_test), or None
        ``K_l(x_train, x_test)``; None without a test set.
    test_diag : ndarray, shape (L+1, P_test), or None
        ``K_l(x, x)`` on the test inputs.
    test : ndarray, shape (L+1, P_test, P_test), or None
        Full test kernels, only with ``full_test=True``.
    """

    train: np.ndarray
    preact_train: np.ndarray
    cross: np.ndarray | None = None
    test_diag: np.ndarray | None = None
    test: np.ndarray | None = None


def layer_variances(sigma_w2: float | Sequence[float]) -> np.ndarray:
    """``sigma_l^2`` per hidden layer as a float64 vector; its length is the depth L."""
    s = np.atleast_1d(np.asarray(sigma_w2, dtype=np.float64))
    if s.ndim != 1 or s.size == 0:
        raise ValueError("sigma_w2 must be a non-empty sequence, one variance per hidden layer")
    return s


def input_kernel(X1, X2=None) -> np.ndarray:
    """``K_0 = X1 X2^T / N0`` (THEORY.md 2.1), with ``X2 = X1`` by default."""
    X1 = np.asarray(X1, dtype=np.float64)
    X2 = X1 if X2 is None else np.asarray(X2, dtype=np.float64)
    return X1 @ X2.T / X1.shape[1]


def _diag_kernel(act: Activation, c):
    """``E[phi(z)^2]`` for ``z ~ N(0, c)``, elementwise."""
    return act.kernel(c, c, c)


def nngp_kernels(X_train, activation, sigma_w2, X_test=None, full_test=False) -> NNGPKernels:
    """NNGP layer kernels ``K_0 .. K_L`` on training (and test) inputs.

    Recursion ``C_l = sigma_l^2 K_{l-1}``, ``K_l = E_{N(0, C_l)}[phi phi^T]`` (perspective paper,
    Eq. 13; THEORY.md 1.6), with ``K_0 = X X^T / N0``.

    Parameters
    ----------
    X_train : array (P, N0)
    activation : str or Activation
    sigma_w2 : sequence of float, length L
        Prior variances of the hidden weights; the depth is ``len(sigma_w2)``.
    X_test : array (P_test, N0), optional
    full_test : bool
        Also return the full test kernels (P_test x P_test per layer).

    Returns
    -------
    NNGPKernels
    """
    act = as_activation(activation)
    s2 = layer_variances(sigma_w2)
    K = input_kernel(X_train)
    train, preact = [K], []
    for s in s2:
        C = s * K
        K = kernel_matrix(act, C)
        preact.append(C)
        train.append(K)
    kernels = NNGPKernels(np.stack(train), np.stack(preact))
    if X_test is None:
        return kernels
    return kernels._replace(**_test_kernels(act, s2, kernels.preact_train, X_train, X_test, full_test))


def _test_kernels(act, s2, preact_train, X_train, X_test, full_test) -> dict:
    """Cross, test-diagonal (and optionally full test) kernels through the same recursion."""
    X_test = np.asarray(X_test, dtype=np.float64)
    cross, diag = input_kernel(X_train, X_test), np.sum(X_test**2, axis=1) / X_test.shape[1]
    full = input_kernel(X_test) if full_test else None
    crosses, diags, fulls = [cross], [diag], [full]
    for s, C_train in zip(s2, preact_train):
        cross = kernel_cross(act, s * cross, np.diag(C_train), s * diag)
        full = kernel_matrix(act, s * full) if full_test else None
        diag = _diag_kernel(act, s * diag)
        crosses.append(cross), diags.append(diag), fulls.append(full)
    out = {"cross": np.stack(crosses), "test_diag": np.stack(diags)}
    if full_test:
        out["test"] = np.stack(fulls)
    return out
