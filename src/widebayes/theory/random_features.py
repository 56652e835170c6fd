"""Bayesian random-feature regression: a lazy network whose hidden weights are frozen at a prior draw.

With ``[network] trainable = ["a"]`` the hidden weights ``W`` stay at one prior draw and only the
readout is sampled (the random-feature model of the perspective paper, Fig. 6C).  Given the
features ``Phi`` (P x N, ``Phi[mu, i] = phi(z_i(x_mu))``) the readout posterior is Gaussian and the
output is exactly a GP with the drawn features' kernel

    K_N(x, x') = sigma_a2 phi(x) . phi(x') / N^(2 gamma)          (lazy: gamma = 1/2, N^1)

observed with noise ``T_eff``: :func:`exact_given_features` (the label "exact given the drawn
features").

Averaged over the feature draws (:func:`rf_gen_error`, the label "RF theory"), at ``T -> 0`` and for
Gaussian-equivalent features (each neuron's column ``(phi_i(x_1), ..., phi_i(x_P), phi_i(x))``
independent ``N(0, C)``, ``C`` the NNGP kernel of the last hidden layer over the training and test
inputs; Hu & Lu 2022, the perspective's ref. 55), the generalization error of output ``r`` is exact
at any finite ``N > P + 1``:

    eps_r = mean_x (y_r(x) - fbar_GP(x))^2 + mean_x Delta(x) [ (N - P) / N + Y_r^T K^{-1} Y_r / (N - P - 1) ],

with ``K = sigma_a2 K_L`` (the GP's training kernel), ``fbar_GP = k^T K^{-1} Y`` and
``Delta(x) = K(x, x) - k(x)^T K^{-1} k(x)`` the GP's mean and variance at ``T = 0``.  Derivation:
write ``phi(x) = Phi^T K^{-1} k + sqrt(Delta) xi`` (``xi ~ N(0, I_N)`` independent of ``Phi``, in the
units where ``sigma_a2`` is absorbed); the ``T -> 0`` posterior mean is ``phi(x)^T Phi^T (Phi
Phi^T)^{-1} Y = fbar_GP + sqrt(Delta) xi^T Phi^T (Phi Phi^T)^{-1} Y``, whose second term has variance
``Delta Y^T (Phi Phi^T)^{-1} Y``, and ``E (Phi Phi^T)^{-1} = K^{-1} / (N - P - 1)`` (the inverse
Wishart mean); the posterior variance is ``sigma_a2 Delta xi^T (I - Pi) xi / N``, ``Pi`` the projection
on the row space of ``Phi`` (rank P), with mean ``Delta (N - P) / N``.  With ``alpha = P/N`` and
``r = Y^T K^{-1} Y / P`` the bracket is ``(1 - alpha) + alpha r / (1 - alpha - 1/N)``: the trained
network's BPKR bracket at ``T = 0`` is ``u = (1 - alpha) + alpha r / u`` (THEORY.md 2.2, L = 1), so
the random-feature model is BPKR with ``u`` replaced by ``1 - alpha``: it diverges as ``alpha -> 1``
("conditioned on any fixed random W, the norm of a diverges at alpha = 1", perspective paper).  The
formula needs ``N > P + 1``; for ``N <= P + 1`` this module returns ``inf`` (the average diverges at
``N = P, P + 1``; for ``N < P`` the ``T -> 0`` posterior is least squares, whose average over
features has no closed form here).  One hidden layer: with deeper frozen networks the last layer's
columns are not independent across neurons.
"""

from __future__ import annotations

import numpy as np

from widebayes.theory.gp import GenError, as_2d, generalization_error, gp_posterior
from widebayes.theory.nngp import nngp_kernels


def feature_kernels(Phi_train, Phi_test, sigma_a2: float, gamma: float = 0.5):
    """The drawn features' output kernels: train (P, P), train x test (P, Q), test diagonal (Q,).

    ``K_N = sigma_a2 Phi Phi^T / N^(2 gamma)`` with ``Phi`` (inputs, N).
    """
    Phi_train, Phi_test = np.asarray(Phi_train, np.float64), np.asarray(Phi_test, np.float64)
    scale = float(sigma_a2) / Phi_train.shape[1] ** (2.0 * gamma)
    return (scale * Phi_train @ Phi_train.T, scale * Phi_train @ Phi_test.T,
            scale * np.sum(Phi_test**2, axis=1))


def exact_given_features(Phi_train, Phi_test, Y_train, Y_test, sigma_a2: float, T: float,
                         gamma: float = 0.5) -> GenError:
    """Generalization error of the readout posterior given the drawn features (exact, any T > 0).

    The readout posterior ``p(a | W, D) ∝ N(a; 0, sigma_a2) exp(-L / T)`` is Gaussian, and the output
    is a GP with kernel :func:`feature_kernels` and noise ``T``: ``gp_posterior`` gives its mean and
    variance on the test inputs, ``generalization_error`` the bias and variance (perspective Eq. 7).

    Parameters
    ----------
    Phi_train, Phi_test : arrays (P, N), (Q, N)
        The last hidden layer's activations of the frozen network.
    Y_train, Y_test : arrays (P, m), (Q, m)
    sigma_a2, T : float
        Readout prior variance and ``T_eff``.
    gamma : float
        Readout exponent (1/2: lazy).
    """
    pred = gp_posterior(*feature_kernels(Phi_train, Phi_test, sigma_a2, gamma), Y_train, T)
    return generalization_error(pred.mean, pred.var, Y_test)


def rf_gen_error(K_train, K_cross, k_test_diag, Y_train, Y_test, width: int) -> GenError:
    """RF theory: the ``T -> 0`` generalization error averaged over Gaussian-equivalent feature draws.

    ``eps_r = bias_r + mean_x Delta(x) [(N - P)/N + Y_r^T K^{-1} Y_r / (N - P - 1)]`` (module
    docstring), split as ``bias`` (the GP's ``T = 0`` bias plus the feature-noise term) and
    ``variance`` (the posterior variance, ``mean_x Delta (N - P)/N``).  ``inf`` where ``N <= P + 1``.

    Parameters
    ----------
    K_train, K_cross, k_test_diag : arrays (P, P), (P, Q), (Q,)
        The GP's output kernel ``sigma_a2 K_L`` (NNGP of the last hidden layer).
    Y_train, Y_test : arrays (P, m), (Q, m)
    width : int
        N, the number of random features.
    """
    Y_train, Y_test = as_2d(Y_train), as_2d(Y_test)
    P, N = Y_train.shape[0], int(width)
    gp = gp_posterior(K_train, K_cross, k_test_diag, Y_train, 0.0)
    bias_gp = np.mean((gp.mean - Y_test) ** 2, axis=0)
    delta = float(np.mean(gp.var))
    if N <= P + 1:
        inf = np.full(Y_train.shape[1], np.inf)
        return GenError(inf, inf, inf, np.inf, np.inf, np.inf)
    r = np.einsum("pr,pr->r", Y_train, np.linalg.solve(np.asarray(K_train, np.float64), Y_train))
    bias = bias_gp + delta * r / (N - P - 1)
    variance = np.full(Y_train.shape[1], delta * (N - P) / N)
    total = bias + variance
    return GenError(bias, variance, total, float(bias.sum()), float(variance.sum()), float(total.sum()))


def rf_theory(X_train, Y_train, X_test, Y_test, activation, sigma_w2, sigma_a2: float,
              width: int) -> GenError:
    """:func:`rf_gen_error` with the NNGP kernel of a one-hidden-layer network (``K = sigma_a2 K_1``)."""
    kernels = nngp_kernels(X_train, activation, sigma_w2, X_test)
    if kernels.train.shape[0] != 2:
        raise ValueError("the RF theory covers one hidden layer (depth 1)")
    s = float(sigma_a2)
    return rf_gen_error(s * kernels.train[-1], s * kernels.cross[-1], s * kernels.test_diag[-1], Y_train,
                        Y_test, width)
