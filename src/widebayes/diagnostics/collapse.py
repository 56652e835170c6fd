"""Neural collapse of a layer's representation: within-class variability (NC1) and the distance of
the centred class means from a simplex equiangular tight frame (NC2).

Papyan, Han & Donoho, "Prevalence of neural collapse during the terminal phase of deep learning
training", PNAS 117, 24652 (2020), define collapse on the training inputs; the coding-schemes paper
(section "Neural collapse") relates it to the redundant (sigmoid) and sparse (ReLU) codes.

Definitions (one draw; ``phi`` stored as (neuron, input), ``h_mu = phi[:, mu] / sqrt(N)`` so that
``h_mu . h_nu = K_{mu nu}`` with ``K = phi^T phi / N``; ``C`` classes of ``n_c`` inputs, ``P``
inputs in all):

* class means ``mu_c = (1/n_c) sum_{mu in c} h_mu`` and their centre
  ``mubar = (1/C) sum_c mu_c`` (the mean of the class means: it is Papyan's global mean for
  balanced classes, and the centre an ETF needs when the classes are not balanced);
* within-class covariance ``Sigma_W = (1/P) sum_mu (h_mu - mu_{c(mu)}) (h_mu - mu_{c(mu)})^T``;
* between-class covariance ``Sigma_B = (1/C) sum_c (mu_c - mubar) (mu_c - mubar)^T``;
* **NC1** ``= tr(Sigma_W Sigma_B^+) / C`` (Papyan et al. Eq. 6): the within-class variability in
  the directions of the class means, relative to their spread;
* **variance ratio** ``= tr Sigma_W / tr Sigma_B``: the within-class variability in all
  directions, relative to the between-class one;
* the centred class-mean Gram matrix ``G_{cc'} = (mu_c - mubar) . (mu_{c'} - mubar)`` (C x C;
  ``tr G = C tr Sigma_B``) gives NC2: **ETF distance**
  ``|| G / ||G||_F - (I - 11^T/C) / sqrt(C - 1) ||_F`` (the simplex ETF's Gram matrix
  ``(I - 11^T/C) C/(C-1)`` normalised; Zhu et al., NeurIPS 2021, NC2), **equinorm**
  ``std_c ||mu_c - mubar|| / mean_c ||mu_c - mubar||``, **equiangularity**
  ``std_{c<c'} cos_{cc'}`` and **max angle** ``mean_{c<c'} |cos_{cc'} + 1/(C-1)|`` with
  ``cos_{cc'} = G_{cc'} / sqrt(G_cc G_c'c')`` (Papyan et al. Fig. 2-4).  All four vanish for an
  ETF; stds are population stds (``ddof = 0``).

Every quantity is a function of the kernel alone: with the class-averaging matrix
``E_{mu c} = 1[c(mu) = c] / n_c``, ``B = E (I - 11^T/C)`` and the within-class projector
``D = I - E 1_c^T`` (``(D x)_mu = x_mu - mean_{nu in c(mu)} x_nu``; symmetric, ``D^2 = D``),

    G = B^T K B,   tr Sigma_W = tr(K D) / P,   S = M^T Sigma_W M = B^T K D K B / P,

and, since ``Sigma_B^+ = C M (M^T M)^{+2} M^T`` for ``M = [mu_c - mubar]`` (N x C),
``NC1 = tr(G^{+2} S)``.  :func:`collapse_from_kernel` uses these (so a theory's mean kernel gets
the same numbers), :func:`collapse_from_activations` the activations; they agree to round-off.
A kernel averaged over draws gives the collapse of the mean kernel, which is not the mean of the
per-draw collapse: NC1 is quadratic in ``K``, and its finite-width part vanishes in the mean kernel
(see :func:`collapse_from_codes`).  In particular NC1 is 0 for every class-structured kernel
(class blocks plus a diagonal constant within classes), such as the NNGP of the orthogonal toy
task and the non-lazy theory's mean kernel: NC1 measures the within-class variability along the
class means only; the variance ratio measures all of it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PINV_RTOL = 1e-10  # eigenvalues of G below this fraction of the largest count as zero (G^+)


class Collapse(NamedTuple):
    """Neural-collapse measures (module docstring); every field has the leading (draw) axes of the
    input.  ``within = tr Sigma_W`` and ``between = tr Sigma_B`` are per neuron (kernel units)."""

    nc1: np.ndarray
    variance_ratio: np.ndarray
    within: np.ndarray
    between: np.ndarray
    etf_distance: np.ndarray
    equinorm: np.ndarray
    equiangularity: np.ndarray
    max_angle: np.ndarray


def class_matrices(labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, E, B)`` of the labels (module docstring): the classes present (sorted), the
    class-averaging matrix ``E`` (P x C) and ``B = E (I - 11^T/C)`` (P x C)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    ind = (labels[:, None] == classes[None, :]).astype(np.float64)
    E = ind / ind.sum(axis=0)
    C = len(classes)
    return classes, E, E @ (np.eye(C) - 1.0 / C)


def _class_index(labels) -> np.ndarray:
    """Column of each input's class in :func:`class_matrices` (classes sorted)."""
    labels = np.asarray(labels)
    return np.searchsorted(np.unique(labels), labels)


def _within(x, E, idx) -> np.ndarray:
    """``D x`` for ``x (..., P, k)``: each row minus the mean of its class's rows (``D`` never formed)."""
    return x - (np.swapaxes(E, -1, -2) @ x)[..., idx, :]


def etf_measures(G) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """NC2 of a centred class-mean Gram matrix ``G (..., C, C)``: ``(etf_distance, equinorm,
    equiangularity, max_angle)`` as defined in the module docstring (NaN where ``G`` vanishes)."""
    G = np.asarray(G, dtype=np.float64)
    C = G.shape[-1]
    if C < 2:
        nan = np.full(G.shape[:-2], np.nan)
        return nan, nan, nan, nan
    etf = (np.eye(C) - 1.0 / C) / np.sqrt(C - 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.linalg.norm(G / np.linalg.norm(G, axis=(-2, -1))[..., None, None] - etf, axis=(-2, -1))
        norms = np.sqrt(np.clip(np.diagonal(G, axis1=-2, axis2=-1), 0.0, None))
        equinorm = norms.std(axis=-1) / norms.mean(axis=-1)
        iu = np.triu_indices(C, 1)
        cos = (G / (norms[..., :, None] * norms[..., None, :]))[..., iu[0], iu[1]]
        return dist, equinorm, cos.std(axis=-1), np.abs(cos + 1.0 / (C - 1.0)).mean(axis=-1)


def nc1_from_moments(G, S) -> np.ndarray:
    """``tr(G^{+2} S)`` (= ``tr(Sigma_W Sigma_B^+) / C``, module docstring) for ``G``, ``S``
    (..., C, C); ``G^+`` drops eigenvalues below ``PINV_RTOL`` times the largest (the class-mean
    centring leaves ``G`` of rank ``C - 1``); NaN where ``G`` is not finite (a stopped chain's draws,
    a theory code without class means)."""
    G = np.asarray(G, dtype=np.float64)
    finite = np.all(np.isfinite(G), axis=(-2, -1))
    w, V = np.linalg.eigh(np.where(finite[..., None, None], G, 0.0))
    keep = w > PINV_RTOL * np.max(w, axis=-1, keepdims=True)
    inv2 = np.where(keep, 1.0 / np.where(keep, w, 1.0) ** 2, 0.0)
    SV = np.einsum("...ji,...jk,...ki->...i", V, np.asarray(S, dtype=np.float64), V)  # diag(V^T S V)
    out = np.sum(inv2 * SV, axis=-1)
    return np.where(np.any(keep, axis=-1) & finite, out, np.nan)


def _assemble(G, S, within) -> Collapse:
    C = G.shape[-1]
    between = np.trace(G, axis1=-2, axis2=-1) / C
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(between > 0, within / np.where(between > 0, between, 1.0), np.nan)
    return Collapse(nc1_from_moments(G, S), ratio, within, between, *etf_measures(G))


def collapse_from_activations(phi, labels) -> Collapse:
    """Neural collapse of activations ``phi (..., N, P)`` (the posterior's (neuron, input) layout;
    leading axes such as chain and draw broadcast) with class labels ``(P,)``.

    In neuron space (module docstring, ``h = phi / sqrt(N)``), without copying ``phi``: class means
    ``A = phi E`` and ``M = phi B / sqrt(N)`` (N x C), ``G = M^T M``, ``M^T R`` with the residuals
    ``R = (phi - A_{c(.)}) / sqrt(N)`` (C x P), ``S = (M^T R)(M^T R)^T / P`` and
    ``tr Sigma_W = ||R||_F^2 / P = (sum_mu ||phi_mu||^2 - sum_c n_c ||A_c||^2) / (N P)``.
    """
    phi = np.asarray(phi, dtype=np.float64)
    _, E, B = class_matrices(labels)
    idx = _class_index(labels)
    N, P = phi.shape[-2], len(idx)
    A = phi @ E
    M = phi @ B / np.sqrt(N)
    MtR = _within(np.swapaxes(np.swapaxes(M, -1, -2) @ phi, -1, -2), E, idx) / np.sqrt(N)  # (..., P, C)
    sq = np.einsum("...ij,...ij->...", phi, phi) - np.einsum("...ic,...ic,c->...", A, A, np.bincount(idx))
    return _assemble(np.swapaxes(M, -1, -2) @ M, np.swapaxes(MtR, -1, -2) @ MtR / P, sq / (N * P))


def collapse_from_kernel(K, labels) -> Collapse:
    """Neural collapse of a kernel ``K (..., P, P)`` (``phi^T phi / N``, or a posterior-mean or
    theory kernel) with class labels ``(P,)``: ``G = B^T K B``, ``S = B^T K D K B / P``,
    ``tr Sigma_W = tr(K D) / P`` (module docstring; ``D`` applied, not formed)."""
    K = np.asarray(K, dtype=np.float64)
    _, E, B = class_matrices(labels)
    idx = _class_index(labels)
    P = len(idx)
    KB = K @ B
    trKD = np.trace(K, axis1=-2, axis2=-1) - np.einsum("...pq,pc,qc->...", K, E, E * np.bincount(idx))
    return _assemble(B.T @ KB, np.swapaxes(KB, -1, -2) @ _within(KB, E, idx) / P, trKD / P)


def collapse_from_codes(fractions, class_means, labels, class_var=None, outlier_kernel_mass=None,
                        width=None) -> Collapse:
    """Neural collapse of a mean-field code mixture (non-lazy theory, THEORY.md 1.4-1.5).

    A fraction ``w_g`` of the neurons carries code ``g``, whose mean activation on class ``c`` is
    ``s_gc`` and (optionally) whose activation varies across the inputs of class ``c`` with
    variance ``v_gc``.  With ``d_g = s_g - mean_c s_gc`` (centred over classes, as ``mubar``) and
    the class weights ``p_c = n_c / P`` of ``labels``:

        G = sum_g w_g d_g d_g^T  (+ (I - 11^T/C) diag(K_out) (I - 11^T/C) for ReLU outliers),
        tr Sigma_W = sum_g w_g vbar_g,   vbar_g = sum_c p_c v_gc.

    NC1 is 0 at infinite width (the default): the within-class fluctuations, independent across
    neurons given their codes, have a projection on the ``C - 1`` class-mean directions of order
    ``1/sqrt(N)``, so ``S = M^T Sigma_W M = 0`` while ``tr Sigma_W / tr Sigma_B`` stays finite.
    With ``width = N`` NC1 is the independent-neuron value
    ``tr(G^{+2} S)``, ``S = (1/N) sum_g w_g vbar_g d_g d_g^T``: exact for neurons drawn
    independently from the mixture, but an upper bound for a trained network, whose readout pins
    the outputs ``a . phi / N`` on every training input and with them the within-class
    fluctuations along the readouts (README "Neural collapse").  The class means are the
    population ones (empirical class means also carry ``O(1/n_c)`` of the within-class noise).

    Parameters
    ----------
    fractions : array (codes,)
    class_means : array (codes, C)
    labels : array (P,)
        Training labels (class weights ``p_c``); classes ``0..C-1``.
    class_var : array (codes, C), optional
        ``v_gc``; without it the within-class fields, NC1 and the variance ratio are NaN.
    outlier_kernel_mass : array (C,), optional
        ReLU outliers' kernel mass per class ``K_c`` (active on their class only, no within-class
        variance; ``theory/nonlazy/classpredict.Outliers``).
    width : int, optional
        ``N`` for the independent-neuron NC1; None: ``N -> inf``.
    """
    w = np.asarray(fractions, dtype=np.float64)
    s = np.asarray(class_means, dtype=np.float64).reshape(len(w), -1)
    C = s.shape[1]
    d = s - s.mean(axis=1, keepdims=True)
    G = np.einsum("g,gc,gk->ck", w, d, d)
    if outlier_kernel_mass is not None:
        H = np.eye(C) - 1.0 / C
        G = G + H @ np.diag(np.asarray(outlier_kernel_mass, dtype=np.float64)) @ H
    p = np.bincount(np.asarray(labels), minlength=C)[:C] / len(labels)
    if class_var is None:
        within, S = np.nan, np.full((C, C), np.nan)
    else:
        vbar = np.asarray(class_var, dtype=np.float64).reshape(len(w), C) @ p
        within = float(w @ vbar)
        S = np.zeros((C, C)) if width is None else np.einsum("g,gc,gk->ck", w * vbar, d, d) / float(width)
    return _assemble(G, S, np.asarray(within))


def summarize(values: Collapse) -> dict:
    """Mean over chains and draws and its Monte Carlo standard error per field of a per-draw
    :class:`Collapse` with fields (chain, draw): ``{field: {"mean", "mcse"}}``
    (``convergence.mcse_of_mean``)."""
    from widebayes.diagnostics.convergence import mcse_of_mean

    return {name: {"mean": float(np.mean(x)), "mcse": mcse_of_mean(x)}
            for name, x in values._asdict().items()}
