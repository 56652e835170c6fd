"""Kernels, readout moments and test predictions of a code mixture (THEORY.md 1.4b, 1.5b; paper,
"Generalization").

A one-hidden-layer network on a class-structured task is described by codes gamma with weights
``w_gamma`` (fractions of neurons), readouts ``a_gamma`` with covariance ``Cov_gamma``, and class
fields ``theta_gamma``: within a code the preactivations of class-c inputs are iid from the tilted
law ``N(z; 0, c) exp(theta phi(z) - kappa)``.  ReLU adds outliers (``relu``).  Then

    K_phi(mu, nu) = sum_gamma w_gamma [s_gamma,c(mu) s_gamma,c(nu) + delta_mu,nu kappa''_gamma,c(mu)]

and on a test input, ``z(x) | z ~ N(h^T z, sigma_1^2 Delta0(x))`` with ``h = K0^+ k0(x)``; within a
code ``h^T z`` is a sum of independent class-wise terms, taken Gaussian (CLT) with mean
``M_gamma = sum_c H_c E_gamma,c[z]`` and variance ``sum_c H2_c Var_gamma,c[z]``
(``H_c = sum_{mu in c} h_mu``, ``H2_c = sum_{mu in c} h_mu^2``).  This is exact for test inputs
orthogonal to the training set (h = 0) and the paper's "neglect the fluctuations" simplification
otherwise.  Mean predictor (paper):

    f(x) = sum_gamma w_gamma a_gamma E_gamma[phi(z(x))].

Its O(1/N) variance uses the Gaussian-fluctuation formula of ``meanfield`` on the code mixture:
independent within-code noise ``E[a_r^2] Var_gamma(phi(z(x)))`` plus the collective part of
``g_r = a_r E_gamma[phi(z(x))]`` not pinned by the class-mean training outputs ``t_c = s_c a``
(observed with noise ``T0 / n_c``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.activations import get_activation
from widebayes.theory.nonlazy.classes import ClassTask
from widebayes.theory.nonlazy.cramer import tilted_preactivation
from widebayes.theory.nonlazy.gaussian import gaussian_mean, gaussian_pair_moment, gaussian_second_moment


class CodeMixture(NamedTuple):
    """Codes as seen by the predictions.

    Attributes
    ----------
    weights : ndarray (n,)
    readouts : ndarray (n, m)
    readout_cov : ndarray (n, m, m)
    theta : ndarray (n, k)
        Class fields of each code.
    s : ndarray (n, k)
        Class means ``E[phi]``.
    s_var : ndarray (n, k)
        Within-class variance of phi.
    """

    weights: np.ndarray
    readouts: np.ndarray
    readout_cov: np.ndarray
    theta: np.ndarray
    s: np.ndarray
    s_var: np.ndarray


class Outliers(NamedTuple):
    """ReLU outliers per class: mass ``M_c = sum |a_i|^2 / N``, unit direction, ``K_c = sum s_i^2 / N``."""

    mass: np.ndarray
    direction: np.ndarray
    kernel_mass: np.ndarray


class ClassTest(NamedTuple):
    """Predictions on test inputs: mean, O(1/N) variance (P_test, m), train-test kernel (P, P_test),
    test kernel diagonal (P_test,)."""

    mean: np.ndarray
    var: np.ndarray
    cross: np.ndarray
    diag: np.ndarray


def mixture_second_moment(mix: CodeMixture, outliers: Outliers | None = None) -> np.ndarray:
    """``<a a^T>`` per neuron: ``sum w (a a^T + Cov)`` plus the outliers' ``sum_c M_c u_c u_c^T``."""
    out = np.einsum("g,gr,gs->rs", mix.weights, mix.readouts, mix.readouts)
    out = out + np.einsum("g,grs->rs", mix.weights, mix.readout_cov)
    if outliers is not None:
        out = out + np.einsum("c,cr,cs->rs", outliers.mass, outliers.direction, outliers.direction)
    return out


def train_kernel(mix: CodeMixture, labels, outliers: Outliers | None = None) -> np.ndarray:
    """Posterior-averaged feature kernel on training inputs (module docstring; outliers add
    ``K_c`` on the class-c block, THEORY.md 1.5b)."""
    labels = np.asarray(labels)
    S = mix.s[:, labels]                                       # (n, P)
    K = np.einsum("g,gm,gn->mn", mix.weights, S, S)
    K = K + np.diag(mix.weights @ mix.s_var[:, labels])
    if outliers is not None:
        same = labels[:, None] == labels[None, :]
        K = K + np.where(same, outliers.kernel_mass[labels][:, None], 0.0)
    return 0.5 * (K + K.T)


def _regression(K0, k0, K0_test_diag, labels, k):
    h = np.linalg.lstsq(np.asarray(K0, dtype=np.float64), np.asarray(k0, dtype=np.float64),
                        rcond=1e-12)[0]
    onehot = (np.asarray(labels)[:, None] == np.arange(k)[None, :]).astype(np.float64)
    delta = np.maximum(np.asarray(K0_test_diag) - np.sum(np.asarray(k0) * h, axis=0), 0.0)
    return h, onehot.T @ h, onehot.T @ h**2, delta            # h, H (k, T), H2 (k, T), Delta0


def code_test_moments(mix: CodeMixture, task: ClassTask, H, H2, delta, sigma_w2: float):
    """Gaussian law of ``z(x)`` within each code: means and variances (n, P_test)."""
    zm, zv = tilted_preactivation(task.activation, mix.theta, task.variance)
    return zm @ H, zv @ H2 + sigma_w2 * delta[None, :]


def class_test(mix: CodeMixture, task: ClassTask, labels, K0, k0, K0_test_diag, sigma_w2: float,
               width: int, outliers: Outliers | None = None, L=None) -> ClassTest:
    """Mean predictor, O(1/N) variance, train-test kernel and test-kernel diagonal (module docstring).

    Outliers (ReLU): ``f_out(x) = sum_c M_c lambda_c relu(H_c(x))`` (paper: ``abar_i phi(zbar_i(x))``,
    ``zbar_i(x) = zbar_i^T K0^+ k0(x)``) with variance ``(1/N) sum_c M_c u_cr^2 Var relu(...)``.
    ``L`` (the fields) is needed with outliers.
    """
    act = get_activation(task.activation)
    labels = np.asarray(labels)
    h, H, H2, delta = _regression(K0, k0, K0_test_diag, labels, len(task.rho))
    M, V = code_test_moments(mix, task, H, H2, delta, sigma_w2)
    g = gaussian_mean(act, M, V)                                # (n, T)
    gvar = np.maximum(gaussian_second_moment(act, M, V) - g**2, 0.0)
    mean = np.einsum("g,gt,gr->tr", mix.weights, g, mix.readouts)
    a2 = mix.readouts**2 + np.einsum("grr->gr", mix.readout_cov)
    var = np.einsum("g,gt,gr->tr", mix.weights, gvar, a2) + _collective(mix, task, g)
    cross = np.einsum("g,gm,gt->mt", mix.weights, mix.s[:, labels], g)
    diag = mix.weights @ (g**2 + gvar)
    if outliers is not None:
        mean, var, cross, diag = _add_outliers(mean, var, cross, diag, outliers, L, H, delta,
                                               sigma_w2, labels)
    return ClassTest(mean, var / width, cross, diag)


def _collective(mix: CodeMixture, task: ClassTask, g) -> np.ndarray:
    """``S_gg - S_gt (S_tt + T0 / n_c)^{-1} S_tg`` for ``g_r = a_r g_gamma(x)``, ``t_c = s_c a``."""
    w, A, C = mix.weights, mix.readouts, mix.readout_cov
    k, m = mix.s.shape[1], A.shape[1]
    n_c = task.rho * task.num_train
    aa = A[:, :, None] * A[:, None, :] + C                      # E[a a^T | gamma]
    ss = mix.s[:, :, None] * mix.s[:, None, :] + np.einsum("gc,cd->gcd", mix.s_var / n_c, np.eye(k))
    t_mean = np.einsum("g,gc,gr->cr", w, mix.s, A).ravel()
    S_tt = np.einsum("g,gcd,grs->crds", w, ss, aa).reshape(k * m, k * m) - np.outer(t_mean, t_mean)
    noise = np.kron(np.diag(task.T0 / n_c), np.eye(m))
    inv = np.linalg.pinv(S_tt + noise, rcond=1e-12)
    g_mean = np.einsum("g,gt,gr->tr", w, g, A)
    S_gg = np.einsum("g,gt,grr->tr", w, g**2, aa) - g_mean**2
    S_gt = np.einsum("g,gt,gc,grs->trcs", w, g, mix.s, aa).reshape(g.shape[1], m, k * m)
    S_gt = S_gt - g_mean[:, :, None] * t_mean[None, None, :]
    return np.maximum(S_gg - np.einsum("trk,kl,trl->tr", S_gt, inv, S_gt), 0.0)


def _add_outliers(mean, var, cross, diag, out: Outliers, L, H, delta, sigma_w2, labels):
    """Outlier contributions: ``zbar_i(x) = s_i H_c(x)`` (off-class preactivations vanish)."""
    pos = np.maximum(H, 0.0)                                    # relu(H_c(x)) (k, T)
    mean = mean + np.einsum("c,cr,ct->tr", out.mass, L, pos)
    d = sigma_w2 * delta
    v = np.where(H > 1e-12, d, np.where(H < -1e-12, 0.0, d * (0.5 - 0.5 / np.pi)))
    var = var + np.einsum("c,cr,ct->tr", out.mass, out.direction**2, v)
    cross = cross + out.kernel_mass[labels][:, None] * pos[labels]
    diag = diag + np.einsum("c,ct->t", out.kernel_mass, pos**2)
    return mean, var, cross, diag


def class_test_kernel(mix: CodeMixture, task: ClassTask, labels, K0, k0, K0_test, sigma_w2: float,
                      outliers: Outliers | None = None) -> np.ndarray:
    """Posterior-averaged test kernel ``sum_gamma w E_gamma[phi(z(x)) phi(z(x'))]`` (paper; P_test^2
    two-dimensional Gauss-Hermite integrals per code, so meant for a few hundred test inputs)."""
    act = get_activation(task.activation)
    K0_test = np.asarray(K0_test, dtype=np.float64)
    h, H, H2, delta = _regression(K0, k0, np.diag(K0_test), labels, len(task.rho))
    M, V = code_test_moments(mix, task, H, H2, delta, sigma_w2)
    D = sigma_w2 * (K0_test - np.asarray(k0).T @ h)
    _, zv = tilted_preactivation(task.activation, mix.theta, task.variance)
    onehot = (np.asarray(labels)[:, None] == np.arange(len(task.rho))[None, :]).astype(np.float64)
    K = np.zeros_like(K0_test)
    for wg, Mg, Vg, zvg in zip(mix.weights, M, V, zv):
        C12 = (h * (onehot @ zvg)[:, None]).T @ h + D
        K += wg * gaussian_pair_moment(act, Mg[:, None], Mg[None, :], Vg[:, None], C12, Vg[None, :])
    if outliers is not None:
        pos = np.maximum(H, 0.0)
        K += pos.T @ (outliers.kernel_mass[:, None] * pos)
    return 0.5 * (K + K.T)
