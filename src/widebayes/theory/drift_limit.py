"""The frozen readout after the prior's drift has run its course: what performance survives.

Perspective paper, "Representational Drift" (and its ref. 39: "architectural constraints such as
the type of nonlinearity and weight sharing may result in significant performance in the presence
of weight drift even in the absence of gradient error signal").  The prior-only frozen-readout
experiment (:mod:`widebayes.studies.frozen_readout`, ``mode = "prior"``) holds the readout ``a`` at
its value at ``t0`` while every hidden weight follows its prior's Ornstein-Uhlenbeck process.  Long
after ``t0`` (``t - t0 >> sigma^2 / T``) the hidden weights are a fresh prior draw, independent of
``a`` [DER]; at large N every top-layer preactivation ``h_i(x)`` is then N(0, q_L(x)) with the
NNGP diagonal ``q_1 = sigma_1^2 |x|^2 / N0``, ``q_{l+1} = sigma_{l+1}^2 E[phi(h_l)^2]`` (tied or
untied weights alike: tying does not change the NNGP at large width), independently across
neurons, and the frozen network's output ``f(x) = sum_i a_i phi(h_i(x)) / N^gamma`` is Gaussian
(CLT over neurons) with

    E f_r(x) = mu_L(x) sum_i a_ir / N^gamma,      mu_L(x) = E[phi(h)],  h ~ N(0, q_L(x)),
    Var f_r(x) = (E[phi(h)^2] - mu_L(x)^2) sum_i a_ir^2 / N^(2 gamma).

So the only representation the drift leaves in place is the input norm, through ``mu_L(x)``: an odd
phi (tanh, linear) has ``mu = 0`` and the erf sigmoid ``mu = 1/2`` for every input, and their
frozen networks fall to chance; phi with a norm-dependent mean (ReLU: ``mu = sqrt(q / 2 pi)``,
ReLU^2: ``mu = q / 2``) keep whatever part of the task the input norm carries, with the readout's sum
``sum_i a_i`` as the weight.  For binary targets the predicted test error is the mean over test
inputs of ``Phi(-|E f - mid| / sd)`` on the correct side, ``mid`` the midpoint of the two targets.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import ndtr

from widebayes.activations import as_activation


class DriftLimit(NamedTuple):
    """The frozen network's output once the hidden weights are a fresh prior draw (per chain)."""

    mean: np.ndarray  # (chain, P_test, m)
    sd: np.ndarray  # (chain, P_test, m)
    feature_mean: np.ndarray  # (P_test,) mu_L(x)
    error: np.ndarray  # (chain,) predicted test error for binary targets, NaN otherwise


def top_layer_moments(X, activation, sigma_w2) -> tuple[np.ndarray, np.ndarray]:
    """``(E[phi(h_L(x))], E[phi(h_L(x))^2])`` per input under the prior (NNGP diagonal recursion)."""
    act = as_activation(activation)
    K = np.sum(np.asarray(X, dtype=np.float64) ** 2, axis=1) / np.shape(X)[1]
    mean = None
    for s2 in np.atleast_1d(np.asarray(sigma_w2, dtype=np.float64)):
        q = s2 * K
        mean, K = act.mean(np.zeros_like(q), q), act.second_moment(np.zeros_like(q), q)
    return np.asarray(mean), np.asarray(K)


def frozen_readout_limit(a, X_test, activation, sigma_w2, gamma: float, Y_test=None) -> DriftLimit:
    """The limit above for frozen readouts ``a (chain, N, m)`` on ``X_test (P_test, N0)``.

    ``Y_test (P_test, m)``: with binary targets (one output, two values) the predicted error per
    chain; otherwise ``error`` is NaN."""
    a = np.asarray(a, dtype=np.float64)
    N = a.shape[1]
    mu, second = top_layer_moments(X_test, activation, sigma_w2)
    total = a.sum(axis=1) / N**gamma  # (chain, m)
    norm2 = np.sum(a**2, axis=1) / N ** (2 * gamma)  # (chain, m)
    mean = mu[None, :, None] * total[:, None, :]
    sd = np.sqrt(np.maximum(second - mu**2, 0.0))[None, :, None] * np.sqrt(norm2)[:, None, :]
    error = np.full(a.shape[0], np.nan)
    if Y_test is not None:
        Y = np.asarray(Y_test, dtype=np.float64)
        values = np.unique(Y)
        if Y.shape[1] == 1 and values.size == 2:
            mid = values.mean()
            side = np.where(Y[:, 0] > mid, 1.0, -1.0)  # +1: f should be above mid
            z = side[None] * (mean[..., 0] - mid) / np.maximum(sd[..., 0], 1e-300)
            error = np.mean(ndtr(-z), axis=1)
    return DriftLimit(mean, sd, mu, error)
