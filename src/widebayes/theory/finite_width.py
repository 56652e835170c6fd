"""Deep linear lazy networks at finite width, exactly: the posterior as a mixture of Gaussian processes.

A deep linear network with the lazy readout, in this project's parametrisation
(``z_1 = X W_1^T / sqrt(N0)``, ``z_l = z_{l-1} W_l^T / sqrt(N)``, ``f = z_L A / sqrt(N)``, every
entry of ``W_l`` ~ N(0, sigma_l^2), of ``A (N, m)`` ~ N(0, sigma_a^2)), has at any width N [DER]

    f(x) = x^T W_eff / sqrt(N0),   W_eff = W_1^T V_1 / sqrt(N)  (N0, m),
    V_L = A,   V_{l-1} = W_l^T V_l / sqrt(N)  (N, m).

Given ``V_1`` the rows of ``W_1`` are independent, so ``W_eff``'s rows are i.i.d. N(0, sigma_1^2 S)
with ``S = V_1^T V_1 / N`` (m x m): **given S the network is a Gaussian process with the output
kernel ``sigma_1^2 S (x) K0``**, ``K0 = X X^T / N0``.  The same argument one layer up gives the
prior of S exactly: ``S_L = A^T A / N ~ Wishart_m(N, sigma_a^2 I) / N`` and, given ``S_l``,
``S_{l-1} = V_{l-1}^T V_{l-1} / N ~ Wishart_m(N, sigma_l^2 S_l) / N``; ``S = S_1``, a product of
L Wishart matrices (for one output a product of L chi-squares: the setting of Hanin and Zlokapa's
exact results).  The posterior of the weights therefore induces

    p(S | Y) ~ p_prior(S) N(vec Y; 0, sigma_1^2 S (x) K0 + T I),

and every statistic of the predictor is a p(S | Y)-average of Gaussian-process posteriors
(:func:`deep_linear_finite_width`).  Nothing here is expanded in 1/N: the large-N saddle point of
this m x m integral is BPKR's renormalisation (``sigma_1^2 S -> U``-scaled kernel), and the gap
between the two at N = 100 is the finite-width effect the README records.

The m x m integral is done by self-normalised importance sampling from the prior of S (the
Bartlett construction of each Wishart factor), in the eigenbasis of K0 so that the likelihood of a
draw costs P small m x m solves.  Its Monte Carlo error is returned (the effective sample size of
the weights and a delta-method standard error of each average).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FiniteWidthPrediction(NamedTuple):
    """Exact finite-N predictor of a deep linear lazy network on test inputs (per test point and output)."""

    mean: np.ndarray  # (P_test, m) posterior mean of f
    var: np.ndarray  # (P_test, m) posterior variance of f
    var_se: np.ndarray  # (P_test, m) importance-sampling standard error of var
    S_mean: np.ndarray  # (m, m) posterior mean of S
    ess: float  # effective sample size of the importance weights
    num_samples: int


def wishart_product_prior(rng, num_samples: int, width: int, depth: int, num_outputs: int,
                          sigma_w2, sigma_a2: float) -> np.ndarray:
    """Draws of ``S`` (num_samples, m, m) from the prior: ``S_L = W(N, sigma_a^2 I)/N``,
    ``S_{l-1} = sigma_l^2 C_l B B^T C_l^T / N`` with ``C_l C_l^T = S_l`` and ``B`` Bartlett's
    factor of a standard Wishart_m(N) (``B_ii^2 ~ chi^2_{N-i}``, ``B_ij ~ N(0, 1)`` below the diagonal)."""
    m = num_outputs
    s2 = np.broadcast_to(np.asarray(sigma_w2, dtype=np.float64), (depth,))

    def standard():
        B = np.zeros((num_samples, m, m))
        for i in range(m):
            B[:, i, i] = np.sqrt(rng.chisquare(width - i, size=num_samples))
            B[:, i, :i] = rng.standard_normal((num_samples, i))
        return B

    B = standard()
    S = sigma_a2 * B @ np.swapaxes(B, 1, 2) / width
    for layer in range(depth, 1, -1):
        C = np.linalg.cholesky(S)
        CB = C @ standard()
        S = s2[layer - 1] * CB @ np.swapaxes(CB, 1, 2) / width
    return S


def _weighted(values, w):
    """Self-normalised average of ``values (n, ...)`` with weights ``w (n,)`` and its delta-method SE."""
    mean = np.tensordot(w, values, axes=1)
    dev = values - mean
    se = np.sqrt(np.tensordot(w**2, dev**2, axes=1))
    return mean, se


def deep_linear_finite_width(K0, Y, K0_cross, K0_test_diag, depth: int, width: int, T: float,
                             sigma_w2, sigma_a2: float = 1.0, num_samples: int = 200_000,
                             seed: int = 0) -> FiniteWidthPrediction:
    """The exact predictor of a deep linear lazy network of width ``width`` on test inputs.

    Parameters
    ----------
    K0 : (P, P) input kernel of the training inputs, ``X X^T / N0``
    Y : (P, m) targets
    K0_cross : (P, P_test) input kernel between training and test inputs
    K0_test_diag : (P_test,) input kernel of each test input with itself
    depth, width : L and N
    T : the temperature T_eff (likelihood ``exp(-|Y - f|^2 / (2T))``)
    sigma_w2 : float or sequence of L floats; sigma_a2 : float
    num_samples : importance samples of S
    """
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    m = Y.shape[1]
    s2 = np.broadcast_to(np.asarray(sigma_w2, dtype=np.float64), (depth,))
    lam, Q = np.linalg.eigh(np.asarray(K0, dtype=np.float64))
    lam = np.clip(lam, 0.0, None)
    y = Q.T @ Y  # (P, m): the targets in K0's eigenbasis
    kq = Q.T @ np.asarray(K0_cross, dtype=np.float64)  # (P, P_test)
    S = wishart_product_prior(np.random.default_rng(seed), num_samples, width, depth, m, s2, sigma_a2)
    G = s2[0] * S  # the output kernel factor: f ~ GP(0, G (x) K0) given S
    eye = np.eye(m)
    # per eigencomponent p: y_p ~ N(0, lam_p G + T I_m)
    M = lam[None, :, None, None] * G[:, None] + T * eye  # (n, P, m, m)
    c = np.linalg.solve(M, np.broadcast_to(y, (num_samples, *y.shape))[..., None])[..., 0]  # (n, P, m)
    logdet = np.linalg.slogdet(M)[1].sum(axis=1)
    loglik = -0.5 * (logdet + np.einsum("pm,npm->n", y, c))
    w = np.exp(loglik - loglik.max())
    w /= w.sum()
    # given S: mean f*(x) = G sum_p kq_p(x) c_p;
    # var f*_r(x) = G_rr k**(x) - sum_p kq_p(x)^2 [G M_p^{-1} G]_rr
    mean_given = np.einsum("nrs,px,nps->nxr", G, kq, c)
    GMG = G[:, None] @ np.linalg.solve(M, np.broadcast_to(G[:, None], M.shape))  # (n, P, m, m)
    diag = np.einsum("nprr->npr", GMG)
    var_given = (np.einsum("nrr->nr", G)[:, None, :] * np.asarray(K0_test_diag)[None, :, None]
                 - np.einsum("px,npr->nxr", kq**2, diag))
    mean, _ = _weighted(mean_given, w)
    second, _ = _weighted(var_given + mean_given**2, w)
    var = second - mean**2
    # the SE of var: delta method on the weighted average of var_given + (mean_given - mean)^2
    _, var_se = _weighted(var_given + (mean_given - mean) ** 2, w)
    S_mean, _ = _weighted(S, w)
    return FiniteWidthPrediction(mean, var, var_se, S_mean, float(1.0 / np.sum(w**2)), num_samples)
