"""The drift mechanism of the perspective paper's Eq. 16, tested on stored feature-layer activations.

The perspective paper ("Representational Drift", Eq. 16) hypothesises that along Langevin learning
the activations of layer l on the training inputs are

    phi(h_t(X)) = phi(h(W_t^0, X)) + N^{-1/2} z(t) Y^T,                          (16)

``Phi_t (N, P)`` split into a prior part, the activations of a weight sample ``W_t^0`` from the
prior, and a part along the targets ``Y (P, m)`` with ``z(t) (N, m)`` of mean 0 and
``<z^T z / N> = G(U)``, the matrix of the mean-kernel correction ``<K> = K^GP + Y G Y^T / N``
(Eq. 15).  Three consequences can be measured on the draws ``Phi_t`` a run stores (``phi_L``):

1. **The prior part is the prior's** [DER from Eq. 16].  With ``Pi = Y (Y^T Y)^{-1} Y^T`` the
   projector on the targets' span, ``Phi_t (1 - Pi) = phi(h(W_t^0, X)) (1 - Pi)``: its mean Gram
   ``(1 - Pi) <K> (1 - Pi)`` equals ``(1 - Pi) K^GP (1 - Pi)`` (:func:`residual_kernel`).
2. **The learned part has second moment G** [DER].  With ``B = Y (Y^T Y)^{-1}``,
   ``N B^T <K> B = N B^T K^GP B + G``, so ``G_hat = N B^T (<K> - K^GP) B`` (:func:`learned_G`)
   is the sampled G; a theory's G is the same projection of its mean kernel.
3. **The prior part drifts as the prior does** [DER, lazy regime].  When learning tilts the
   hidden weights' posterior only at O(1/N) (the lazy regime), their Langevin dynamics is the
   prior's Ornstein-Uhlenbeck process to leading order: ``W_{t+tau} = c W_t + ...`` with
   ``c = exp(-tau T / sigma^2)`` in paper time.  The preactivations at the two times are then
   jointly Gaussian with covariance ``c sigma^2 K0``, so the overlap of the prior parts is the
   kernel map at the reduced covariance:
   ``<tr[(1-Pi) Phi_t^T Phi_{t+tau} (1-Pi)]> / N = tr[(1-Pi) k(c sigma^2 K0; sigma^2 K0) (1-Pi)]``
   (:func:`residual_overlap` against :func:`prior_residual_overlap`), one hidden layer.

The perspective's reading of Fig. 8 (``rho_u`` and ``rho_{u,Y}`` near 1 while ``rho_v`` decays)
follows when the top eigenvector of ``<K>`` is a fixed direction close to ``Y``: its
:func:`predicted_alignment` is ``|u_top(K) . Y| / |Y|`` for a kernel ``K`` (the theory's mean
kernel, raw or centred over the inputs).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.activations import as_activation, kernel_cross


def _as_2d(Y) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    return Y[:, None] if Y.ndim == 1 else Y


def target_projector(Y) -> np.ndarray:
    """``Pi = Y (Y^T Y)^{-1} Y^T`` (P, P): the orthogonal projector on the span of the targets."""
    Q, _ = np.linalg.qr(_as_2d(Y))
    return Q @ Q.T


def readout_basis(Y) -> np.ndarray:
    """``B = Y (Y^T Y)^{-1}`` (P, m): ``Phi B`` is the coefficient of ``Phi`` along ``Y^T``."""
    Y = _as_2d(Y)
    return Y @ np.linalg.inv(Y.T @ Y)


def mean_gram(Phis) -> np.ndarray:
    """``<Phi^T Phi / N>`` (P, P) over every leading axis of ``Phis (..., N, P)``."""
    Phis = np.asarray(Phis, dtype=np.float64)
    N = Phis.shape[-2]
    flat = Phis.reshape(-1, N, Phis.shape[-1])
    return np.einsum("dnp,dnq->pq", flat, flat) / (N * flat.shape[0])


def residual_kernel(K, Y) -> np.ndarray:
    """``(1 - Pi) K (1 - Pi)``: the kernel of the part of the activations orthogonal to the targets."""
    Q = np.eye(np.shape(K)[0]) - target_projector(Y)
    return Q @ np.asarray(K) @ Q


def learned_G(K, K_prior, Y, width: int) -> np.ndarray:
    """``G = N B^T (K - K_prior) B`` (m, m): the second moment of Eq. 16's ``z`` implied by a mean kernel."""
    B = readout_basis(Y)
    return width * B.T @ (np.asarray(K) - np.asarray(K_prior)) @ B


def residual_overlap(Phis, Y, max_lag: int) -> np.ndarray:
    """``<tr[(1-Pi) Phi_t^T Phi_{t+tau} (1-Pi)]> / N`` for lags ``0..max_lag`` (stored draws).

    Phis : (chain, draw, N, P).  Averaged over chains and over every start ``t``.
    """
    Phis = np.asarray(Phis, dtype=np.float64)
    Q = np.eye(Phis.shape[-1]) - target_projector(Y)
    R = Phis @ Q  # (chain, draw, N, P)
    N, T = Phis.shape[-2], Phis.shape[1]
    return np.array([np.mean(np.einsum("ctnp,ctnp->ct", R[:, : T - lag], R[:, lag:])) / N
                     for lag in range(max_lag + 1)])


def prior_residual_overlap(activation, K0, Y, sigma2: float, correlation) -> np.ndarray:
    """Eq. 16's prior part at two times with weight correlation ``c``, one hidden layer:
    ``tr[(1 - Pi) k(c sigma^2 K0; sigma^2 K0) (1 - Pi)]`` for each ``c`` in ``correlation``.

    ``k(C12; C)`` is the activation's kernel map with cross-covariance ``C12`` between the two
    times and variances ``sigma^2 diag K0`` at each (:func:`widebayes.activations.kernel_cross`).
    For the OU prior ``c = exp(-tau T / sigma^2)``.
    """
    act = as_activation(activation)
    C = sigma2 * np.asarray(K0, dtype=np.float64)
    d = np.diag(C)
    Q = np.eye(C.shape[0]) - target_projector(Y)
    return np.array([np.trace(Q @ kernel_cross(act, c * C, d, d) @ Q) for c in np.atleast_1d(correlation)])


def predicted_alignment(K, Y, center: bool = False) -> float:
    """``|u . Y| / |Y|`` (norm of the projection on span Y for several outputs) for ``u`` the top
    eigenvector of ``K``; ``center=True`` first removes each neuron's mean over the inputs, which
    for a kernel is ``H K H`` with ``H = 1 - 1 1^T / P``."""
    K = np.asarray(K, dtype=np.float64)
    if center:
        H = np.eye(K.shape[0]) - 1.0 / K.shape[0]
        K = H @ K @ H
    u = np.linalg.eigh(K)[1][:, -1]
    Q, _ = np.linalg.qr(_as_2d(Y))
    return float(np.linalg.norm(Q.T @ u))


class Eq16Check(NamedTuple):
    """Eq. 16 against the draws of one run (feature layer, training inputs).

    Standard errors are over chains (the spread of the per-chain values over sqrt(chains)), so
    they include the draws' autocorrelation within a chain.
    """

    G_sampled: np.ndarray  # (m, m) N B^T (<K> - K^GP) B from the draws
    G_sampled_se: np.ndarray  # (m, m) its standard error over chains
    G_theory: np.ndarray | None  # (m, m) the same projection of a theory's mean kernel
    residual_rel_error: float  # ||(1-Pi)(<K> - K^GP)(1-Pi)||_F / ||(1-Pi) K^GP (1-Pi)||_F
    residual_rel_se: float  # the standard error of (1-Pi)<K>(1-Pi), same norm and units
    overlap_sampled: np.ndarray  # (lag,) residual_overlap, normalised by its lag-0 value
    overlap_prior: np.ndarray | None  # (lag,) prior_residual_overlap at c = exp(-tau T/sigma^2), normalised
    rho_uY_predicted: float | None  # predicted_alignment of the theory's kernel (raw)
    rho_uY_predicted_centred: float | None
    rho_uY_prior: float  # predicted_alignment of the NNGP kernel: the alignment without learning (raw)
    rho_uY_prior_centred: float


def eq16_check(Phis, Y, K_prior, width: int, max_lag: int, K_theory=None, prior_overlap=None) -> Eq16Check:
    """Measure Eq. 16 on ``Phis (chain, draw, N, P)``; ``K_prior`` the NNGP kernel of the layer,
    ``K_theory`` a theory's mean kernel (optional), ``prior_overlap`` the normalised prediction of
    :func:`prior_residual_overlap` at the lags' weight correlations (optional)."""
    Phis = np.asarray(Phis, dtype=np.float64)
    per_chain = np.stack([mean_gram(chain) for chain in Phis])
    K, chains = per_chain.mean(axis=0), per_chain.shape[0]
    G_chains = np.stack([learned_G(k, K_prior, Y, width) for k in per_chain])
    res_prior = residual_kernel(K_prior, Y)
    norm = np.linalg.norm(res_prior)
    rel = float(np.linalg.norm(residual_kernel(K, Y) - res_prior) / norm)
    res_chains = np.stack([residual_kernel(k, Y) for k in per_chain])
    rel_se = float(np.sqrt(np.sum(res_chains.var(axis=0, ddof=1)) / chains) / norm)
    overlap = residual_overlap(Phis, Y, max_lag)
    theory = K_theory is not None
    return Eq16Check(learned_G(K, K_prior, Y, width), G_chains.std(axis=0, ddof=1) / np.sqrt(chains),
                     learned_G(K_theory, K_prior, Y, width) if theory else None,
                     rel, rel_se, overlap / overlap[0], prior_overlap,
                     predicted_alignment(K_theory, Y) if theory else None,
                     predicted_alignment(K_theory, Y, center=True) if theory else None,
                     predicted_alignment(K_prior, Y), predicted_alignment(K_prior, Y, center=True))
