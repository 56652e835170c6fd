"""Gaussian-process regression at noise variance T (= T_eff), and its generalization error.

A lazy network (gamma = 1/2) with likelihood ``exp(-L / T)``, ``L = 1/2 sum (y - f)^2``, is in
the N -> inf limit a GP with kernel ``sigma_a2 * K_L`` (NNGP) observed with Gaussian noise of
variance ``T`` (perspective paper Eqs. 11-12; THEORY.md 1.6):

    mean(x) = k(x)^T (K + T I)^{-1} Y,     var(x) = k(x, x) - k(x)^T (K + T I)^{-1} k(x).

The generalization error per output splits into bias and variance (perspective paper Eq. 7;
THEORY.md 2.3): ``eps_r = E_x[(mean_r(x) - y_r(x))^2] + E_x[var_r(x)]``.

A non-lazy network (gamma = 1) is compared with the GP at two normalisations
(:func:`gp_normalisations`; coding-schemes paper, Fig. 6d and supplement D.3):

- ``"nonlazy"``: kernel ``sigma_a2 K_L`` with the run's own readout prior (``1/P`` by the papers'
  rule) and noise ``T_eff = T/N``, the GP that the non-lazy posterior's prior and likelihood give;
- ``"lazy"``: kernel ``K_L`` (``sigma_a2 = 1``, the lazy prior) and noise ``T``, the lazy network
  at the same rescaled temperature.

Both share the mean predictor when ``sigma_a2 = 1/P`` and ``N = P`` (multiply kernel and noise of
the first by ``P``); the lazy variance is then ``P`` times the non-lazy one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular

from widebayes.theory.nngp import NNGPKernels, nngp_kernels


class GPPrediction(NamedTuple):
    """Posterior predictive of a GP.

    Attributes
    ----------
    mean : ndarray (P_test, m)
    var : ndarray (P_test,)
        Posterior variance of the latent f (without the noise T); the same for every output.
    """

    mean: np.ndarray
    var: np.ndarray


class GenError(NamedTuple):
    """Generalization error split into bias and variance.

    Attributes
    ----------
    bias, variance, total : ndarray (m,)
        Per output, averaged over the test inputs; ``total = bias + variance``.
    bias_total, variance_total, total_sum : float
        Sums over the outputs.
    """

    bias: np.ndarray
    variance: np.ndarray
    total: np.ndarray
    bias_total: float
    variance_total: float
    total_sum: float


class LazyGPResult(NamedTuple):
    """NNGP kernels, the GP prediction with kernel ``sigma_a2 K_L``, and its error (or None)."""

    kernels: NNGPKernels
    prediction: GPPrediction
    gen_error: GenError | None


def as_2d(Y) -> np.ndarray:
    """Targets as a float64 (P, m) array (a vector becomes one column)."""
    Y = np.asarray(Y, dtype=np.float64)
    return Y[:, None] if Y.ndim == 1 else Y


def _cholesky(K_train, T):
    """Lower Cholesky factor of ``K + T I``."""
    K = np.asarray(K_train, dtype=np.float64)
    return cho_factor(K + T * np.eye(K.shape[0]), lower=True)


def gp_posterior(K_train, K_cross, k_test_diag, Y, T) -> GPPrediction:
    """GP posterior mean and variance at noise variance T.

    ``mean = k^T (K + T I)^{-1} Y``, ``var = k(x, x) - k^T (K + T I)^{-1} k``
    (perspective paper Eqs. 11-12 with noise T; THEORY.md 1.6).

    Parameters
    ----------
    K_train : array (P, P)
    K_cross : array (P, P_test)
        Train x test kernel.
    k_test_diag : array (P_test,)
    Y : array (P,) or (P, m)
    T : float
        Noise variance (T_eff); may be 0 when ``K_train`` is positive definite.

    Returns
    -------
    GPPrediction
        ``var`` is clipped at 0 (round-off at interpolated points).
    """
    chol = _cholesky(K_train, T)
    K_cross = np.asarray(K_cross, dtype=np.float64)
    mean = K_cross.T @ cho_solve(chol, as_2d(Y))
    v = solve_triangular(chol[0], K_cross, lower=True)
    var = np.asarray(k_test_diag, dtype=np.float64) - np.sum(v**2, axis=0)
    return GPPrediction(mean, np.maximum(var, 0.0))


def generalization_error(mean, var, Y_test) -> GenError:
    """Bias-variance split of the test error (perspective paper Eq. 7; THEORY.md 2.3).

    ``bias_r = mean_x (mean_r(x) - y_r(x))^2``, ``variance_r = mean_x var_r(x)``.

    Parameters
    ----------
    mean : array (P_test, m)
    var : array (P_test,) (the same for every output) or (P_test, m)
    Y_test : array (P_test,) or (P_test, m)
    """
    mean, Y_test = as_2d(mean), as_2d(Y_test)
    var = np.asarray(var, dtype=np.float64)
    var = np.broadcast_to(var[:, None] if var.ndim == 1 else var, mean.shape)
    bias = np.mean((mean - Y_test) ** 2, axis=0)
    variance = np.mean(var, axis=0)
    total = bias + variance
    return GenError(bias, variance, total, float(bias.sum()), float(variance.sum()), float(total.sum()))


class GPNormalisation(NamedTuple):
    """Readout prior ``sigma_a2`` (the GP kernel is ``sigma_a2 K_L``) and noise variance."""

    sigma_a2: float
    noise: float
    definition: str


def gp_normalisations(sigma_a2: float, T: float, T_eff: float) -> dict[str, GPNormalisation]:
    """The GP at the non-lazy normalisation (``sigma_a2``, noise ``T_eff = T/N``) and at the lazy
    one (``sigma_a2 = 1``, noise ``T``); module docstring.

    Parameters
    ----------
    sigma_a2 : float
        The run's readout prior variance.
    T, T_eff : float
        Rescaled temperature and the likelihood's noise variance ``T N^(1 - 2 gamma)``.
    """
    return {
        "nonlazy": GPNormalisation(sigma_a2, T_eff, "kernel sigma_a2 K_L^NNGP with the run's "
                                   "readout prior, noise variance T_eff = T/N"),
        "lazy": GPNormalisation(1.0, T, "kernel K_L^NNGP (sigma_a2 = 1, the lazy prior), noise "
                                "variance T"),
    }


def gp_from_kernels(kernels: NNGPKernels, Y_train, Y_test, sigma_a2, T) -> LazyGPResult:
    """GP regression with the last layer's NNGP kernel times ``sigma_a2`` at noise variance ``T``
    (:func:`gp_posterior`), and its generalization error (None without ``Y_test``)."""
    pred = gp_posterior(sigma_a2 * kernels.train[-1], sigma_a2 * kernels.cross[-1],
                        sigma_a2 * kernels.test_diag[-1], Y_train, T)
    err = None if Y_test is None else generalization_error(pred.mean, pred.var, Y_test)
    return LazyGPResult(kernels, pred, err)


def lazy_gp_prediction(X_train, Y_train, X_test, Y_test, activation, sigma_w2, sigma_a2, T) -> LazyGPResult:
    """Infinite-width lazy network: GP regression with the NNGP kernel ``sigma_a2 K_L``.

    Parameters
    ----------
    X_train, Y_train : arrays (P, N0), (P,) or (P, m)
    X_test : array (P_test, N0)
    Y_test : array or None
        When None, ``gen_error`` is None.
    activation : str or Activation
    sigma_w2 : sequence of float, length L
    sigma_a2, T : float
        Readout prior variance; noise variance T_eff.
    """
    return gp_from_kernels(nngp_kernels(X_train, activation, sigma_w2, X_test), Y_train, Y_test,
                           sigma_a2, T)
