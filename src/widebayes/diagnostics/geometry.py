"""Representational geometry of class manifolds: few-shot prototype SNR and manifold capacity.

Inputs are point clouds, one array ``X_a`` of shape ``(P_a, N)`` per class (rows are examples,
columns features), or a kernel ``K (P, P)`` with class labels.  Everything here is a pure
function of NumPy arrays.

Two theories (THEORY.md section 6):

* Few-shot prototype learning (Sorscher, Ganguli & Sompolinsky, PNAS 119, e2200800119 (2022);
  perspective paper Eq. 3; THEORY 6.1).  A test point ``xi`` of class ``a`` is assigned to the
  nearer of the two m-shot prototypes ``abar``, ``bbar``; with
  ``h = ||xi - bbar||^2 - ||xi - abar||^2`` the error is ``P(h < 0) ~ H(SNR_a)``,
  ``SNR_a = E h / sqrt(Var h)``.  The default is the exact Gaussian second-moment form
  (THEORY 6.1b); ``include_m2_term=False`` gives the authors' form (THEORY 6.1a).
* Manifold capacity (Chung, Lee & Sompolinsky, PRX 8, 031003 (2018); perspective Eqs. 1-2;
  THEORY 6.2): the mean-field anchor-point algorithm, with the anchor QP solved through its
  non-negative-least-squares dual, and a direct LP check of linear separability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np
from scipy import sparse
from scipy.optimize import brentq, linprog, nnls
from scipy.special import erfc
from scipy.stats import norm

# ------------------------------------------------------------------------ single manifold


class ClassStats(NamedTuple):
    """Centre and principal ellipsoid of one class (covariance normalised by ``1/P``)."""

    center: np.ndarray  # (N,)
    radii: np.ndarray  # (r,) sqrt of the covariance eigenvalues, descending
    axes: np.ndarray  # (r, N) orthonormal principal axes (rows)
    R2: float  # tr C = sum radii^2, the total variance
    D_pr: float  # participation ratio of the eigenvalues radii^2


def participation_ratio(eigs):
    """Participation-ratio dimension ``(sum lambda)^2 / sum lambda^2`` (THEORY 6.1a, ``D_a``).

    Parameters
    ----------
    eigs : array_like
        Non-negative eigenvalues (variances ``R_i^2``), summed over the last axis.
    """
    eigs = np.asarray(eigs, dtype=np.float64)
    return np.sum(eigs, axis=-1) ** 2 / np.sum(eigs**2, axis=-1)


def class_stats(X_a) -> ClassStats:
    """Centre, radii and axes of a point cloud ``X_a (P, N)``: SVD of ``(X_a - c_a)/sqrt(P)``.

    ``radii**2`` are the eigenvalues of ``C_a = (X_a - c_a)^T (X_a - c_a) / P`` (THEORY 6.1a; the
    authors' singular values divided by ``sqrt(P)``), so ``R2 = tr C_a`` and ``D_pr`` is ``D_a``.
    """
    X = np.asarray(X_a, dtype=np.float64)
    c = X.mean(axis=0)
    _, s, vh = np.linalg.svd((X - c) / np.sqrt(X.shape[0]), full_matrices=False)
    lam = s**2
    return ClassStats(c, s, vh, float(lam.sum()), float(participation_ratio(lam)))


# ------------------------------------------------------------------------ few-shot geometry


class PairGeometry(NamedTuple):
    """Geometry of manifold ``a`` against ``b``, in units of ``R_a^2`` (asymmetric in a, b).

    Fields (THEORY 6.1a/b; fields broadcast, so matrices over class pairs work too):
    ``dist2 = ||dx0||^2 / R_a^2`` (the signal), ``Da``, ``Db`` (participation ratios),
    ``csa = dx0hat' C_a dx0hat / R_a^2`` and ``csb = dx0hat' C_b dx0hat / R_a^2`` (signal-noise
    overlaps, both over ``R_a^2``), ``ss = tr(C_a C_b) / R_a^4`` (noise-noise overlap),
    ``bias = R_b^2 / R_a^2 - 1`` and ``trCb2 = tr(C_b^2) / R_a^4``.
    """

    dist2: np.ndarray
    Da: np.ndarray
    Db: np.ndarray
    csa: np.ndarray
    csb: np.ndarray
    ss: np.ndarray
    bias: np.ndarray
    trCb2: np.ndarray


def _pair_from_moments(d2, R2a, R2b, trCa2, trCb2, trCaCb, dCad, dCbd) -> PairGeometry:
    """PairGeometry from raw second moments (``d2 = ||dx0||^2``, ``dCad = dx0' C_a dx0``, ...)."""
    d2, R2a, R2b = (np.asarray(v, dtype=np.float64) for v in (d2, R2a, R2b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return PairGeometry(
            dist2=d2 / R2a,
            Da=R2a**2 / trCa2,
            Db=R2b**2 / trCb2,
            csa=dCad / (d2 * R2a),
            csb=dCbd / (d2 * R2a),
            ss=trCaCb / R2a**2,
            bias=R2b / R2a - 1.0,
            trCb2=trCb2 / R2a**2,
        )


def _moments_from_stats(sa: ClassStats, sb: ClassStats) -> tuple:
    """Raw moments of a pair from their principal ellipsoids (the authors' construction)."""
    dx0 = sa.center - sb.center
    Aa, Ab = sa.radii[:, None] * sa.axes, sb.radii[:, None] * sb.axes
    return (
        dx0 @ dx0, sa.R2, sb.R2, np.sum(sa.radii**4), np.sum(sb.radii**4),
        np.sum((Aa @ Ab.T) ** 2), np.sum((Aa @ dx0) ** 2), np.sum((Ab @ dx0) ** 2),
    )  # fmt: skip


def pair_geometry(X_a, X_b) -> PairGeometry:
    """Few-shot geometry of class ``a`` (points ``X_a (P_a, N)``) against class ``b``.

    See :class:`PairGeometry` for the fields; source THEORY 6.1a (``geometry()`` of Sorscher et
    al.) and 6.1b (``trCb2``, needed by the exact SNR).
    """
    return _pair_from_moments(*_moments_from_stats(class_stats(X_a), class_stats(X_b)))


def snr_from_geometry(geom: PairGeometry, m, include_m2_term=True, include_noise_overlap=True):
    """Few-shot SNR of manifold ``a`` from its geometry (THEORY 6.1a, 6.1b; PNAS 2022 Eq. 3).

    ``SNR_a = 1/2 (dist2 + bias/m) / sqrt(1/(Da m) + (csa + csb/m) dist2 + ss/m
    + (1/Da + trCb2) / (2 m^2))``.  The last term (the fluctuation of the prototype norms) is
    exact for Gaussian manifolds and dropped by the authors' code (``include_m2_term=False``);
    ``include_noise_overlap=False`` drops ``ss/m`` as in the printed Eq. 3.
    """
    g = geom
    noise = 1.0 / (g.Da * m) + (g.csa + g.csb / m) * g.dist2
    noise = noise + (g.ss / m if include_noise_overlap else 0.0)
    noise = noise + ((1.0 / g.Da + g.trCb2) / (2.0 * m**2) if include_m2_term else 0.0)
    return 0.5 * (g.dist2 + g.bias / m) / np.sqrt(noise)


def gaussian_tail(x):
    """``H(x) = int_x^inf Dt = erfc(x / sqrt 2) / 2``, the Gaussian tail function."""
    return 0.5 * erfc(np.asarray(x, dtype=np.float64) / np.sqrt(2.0))


def fewshot_snr(X_a, X_b, m, include_m2_term=True, include_noise_overlap=True):
    """SNR of m-shot prototype learning for test points of ``a`` against ``b`` (THEORY 6.1).

    ``SNR_a = E h / sqrt(Var h)`` with ``h = ||xi - bbar||^2 - ||xi - abar||^2``.  Exact for
    Gaussian manifolds by default (THEORY 6.1b); ``include_m2_term=False`` is the authors' form
    (THEORY 6.1a), which overestimates the SNR of Gaussian clouds by ~35% at ``m = 1``.

    Notes
    -----
    The geometry is the plug-in one of the given points.  Episodes that test on held-out points
    see the population behind them, and the plug-in ``tr C_a^2`` of ``P`` points is biased up by
    about ``(tr C_a)^2 / P`` (relative ``D_a / P``), so use ``P >> D_a`` points for the geometry.
    """
    return snr_from_geometry(pair_geometry(X_a, X_b), m, include_m2_term, include_noise_overlap)


def fewshot_error_theory(X_a, X_b, m, include_m2_term=True, include_noise_overlap=True):
    """Predicted m-shot error ``eps_a = H(SNR_a)`` (PNAS 2022 / perspective Eq. 3; THEORY 6.1).

    Accurate when ``h`` is near Gaussian (``D_a`` of order 30 or more) and away from the tails.
    """
    return gaussian_tail(fewshot_snr(X_a, X_b, m, include_m2_term, include_noise_overlap))


class FewShotMatrix(NamedTuple):
    """SNR and predicted error of every ordered class pair (row a = test class; diagonal NaN)."""

    snr: np.ndarray  # (K, K)
    error: np.ndarray  # (K, K)
    geometry: PairGeometry  # fields (K, K)


def _stack_pairs(rows) -> PairGeometry:
    """A (K, K) PairGeometry from a nested list of pair geometries (None on the diagonal)."""
    nan = PairGeometry(*([np.nan] * len(PairGeometry._fields)))
    rows = [[nan if g is None else g for g in row] for row in rows]
    return PairGeometry(*(np.array([[g[i] for g in row] for row in rows], float) for i in range(8)))


def fewshot_matrix(manifolds: Sequence, m, include_m2_term=True, include_noise_overlap=True):
    """SNR and ``H(SNR)`` for all ordered pairs of ``K`` manifolds (THEORY 6.1; diagonal NaN)."""
    stats = [class_stats(X) for X in manifolds]
    rows = [
        [None if a == b else _pair_from_moments(*_moments_from_stats(sa, sb)) for b, sb in enumerate(stats)]
        for a, sa in enumerate(stats)
    ]
    geom = _stack_pairs(rows)
    snr = snr_from_geometry(geom, m, include_m2_term, include_noise_overlap)
    return FewShotMatrix(snr, gaussian_tail(snr), geom)


# ------------------------------------------------------------------------ kernel route


def _kernel_moments(K, ia, ib) -> tuple:
    """Raw pair moments from a kernel ``K (..., P, P)`` of inner products and index sets."""
    Kaa, Kbb, Kab = K[..., ia[:, None], ia], K[..., ib[:, None], ib], K[..., ia[:, None], ib]
    na, nb = len(ia), len(ib)
    Ha, Hb = np.eye(na) - 1.0 / na, np.eye(nb) - 1.0 / nb
    Ga, Gb, Gab = Ha @ Kaa @ Ha, Hb @ Kbb @ Hb, Ha @ Kab @ Hb
    xa = Ha @ (Kaa.mean(-1) - Kab.mean(-1))[..., None]  # (X_a - c_a) dx0
    xb = Hb @ (np.swapaxes(Kab, -1, -2).mean(-1) - Kbb.mean(-1))[..., None]  # (X_b - c_b) dx0
    fro = lambda A: np.sum(A**2, axis=(-2, -1))  # noqa: E731
    return (
        Kaa.mean((-2, -1)) + Kbb.mean((-2, -1)) - 2 * Kab.mean((-2, -1)),
        np.trace(Ga, axis1=-2, axis2=-1) / na, np.trace(Gb, axis1=-2, axis2=-1) / nb,
        fro(Ga) / na**2, fro(Gb) / nb**2, fro(Gab) / (na * nb), fro(xa) / na, fro(xb) / nb,
    )  # fmt: skip


def geometry_from_kernels(K, labels) -> tuple[PairGeometry, np.ndarray]:
    """Few-shot geometry of all class pairs from a kernel alone (THEORY 6.1c, layer-wise form).

    ``||c_a - c_b||^2 = Kbar_aa + Kbar_bb - 2 Kbar_ab``, ``R_a^2 = mean_i K_ii(a) - Kbar_aa``;
    ``tr C_a^2``, ``tr C_a C_b`` and ``dx0' C_a dx0`` follow from the doubly centred blocks
    ``H_a K_aa H_a``, ``H_a K_ab H_b`` (perspective paper, "From Mean Kernels to Representational
    Geometry", Fig. 7).  Every field is a ratio, so ``K = Phi^T Phi / N`` and ``Phi^T Phi`` agree.

    Parameters
    ----------
    K : array_like, shape (..., P, P)
        Kernel of inner products (e.g. a posterior-mean layer kernel; leading axes such as layer
        broadcast).
    labels : array_like, shape (P,)
        Class of each input.

    Returns
    -------
    geometry : PairGeometry
        Fields of shape (..., C, C) for classes in ``np.unique(labels)`` order; diagonal NaN.
    classes : ndarray
    """
    K, labels = np.asarray(K, dtype=np.float64), np.asarray(labels)
    classes = np.unique(labels)
    idx = [np.flatnonzero(labels == c) for c in classes]
    C = len(classes)
    out = np.full((8, *K.shape[:-2], C, C), np.nan)
    for a in range(C):
        for b in range(C):
            if a != b:
                g = _pair_from_moments(*_kernel_moments(K, idx[a], idx[b]))
                out[..., a, b] = np.stack(np.broadcast_arrays(*g))
    return PairGeometry(*out), classes


# ------------------------------------------------------------------------ simulated few-shot


class FewShotError(NamedTuple):
    """Simulated m-shot prototype error of class ``a`` against ``b``."""

    err: float  # mean fraction of test points of a assigned to b
    se: float  # its standard error over episodes
    snr: float  # empirical SNR mean(h) / std(h), pooled over episodes and test points


def draw_shots(gen: np.random.Generator, E: int, P: int, m: int) -> np.ndarray:
    """``(E, m)`` indices: m of ``P`` items without replacement per episode."""
    return np.argpartition(gen.random((E, P)), m - 1, axis=1)[:, :m]


def episode_stats(h, ia):
    """Per episode, over the points of a that are not its shots ``ia (E, m)``: the error fraction
    (``h < 0``), the mean and the variance of ``h (E, P_a)``."""
    keep = np.ones(h.shape, dtype=bool)
    np.put_along_axis(keep, ia, False, axis=1)
    n = h.shape[1] - ia.shape[1]
    mean = np.sum(np.where(keep, h, 0.0), axis=1) / n
    var = np.sum(np.where(keep, (h - mean[:, None]) ** 2, 0.0), axis=1) / n
    return np.sum(keep & (h < 0), axis=1) / n, mean, var


def _episode_batch(gen, Xa, Xb, m, E):
    """``E`` episodes at once: m shots of each class (without replacement), prototypes, and
    ``h = ||xi - bbar||^2 - ||xi - abar||^2`` for every point ``xi`` of a; shots masked out."""
    ia, ib = draw_shots(gen, E, Xa.shape[0], m), draw_shots(gen, E, Xb.shape[0], m)
    abar, bbar = Xa[ia].mean(axis=1), Xb[ib].mean(axis=1)  # (E, N)
    h = 2.0 * (abar - bbar) @ Xa.T + (np.sum(bbar**2, axis=1) - np.sum(abar**2, axis=1))[:, None]
    return episode_stats(h, ia)


def _numpy_rng(rng_key) -> np.random.Generator:
    """A NumPy generator from a seed, a Generator, or a JAX PRNG key (its key data as seed)."""
    if isinstance(rng_key, (int, np.integer, np.random.Generator)):
        return _as_rng(rng_key)
    if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        rng_key = jax.random.key_data(rng_key)
    return np.random.default_rng(np.asarray(rng_key, dtype=np.uint32).ravel())


def fewshot_error(X_a, X_b, m, rng_key, n_episodes=2000, batch_size=256) -> FewShotError:
    """Simulated m-shot prototype error of ``a`` against ``b`` (THEORY 6.1a, authors' protocol).

    Each episode draws m shots of each class without replacement, forms the prototypes
    ``abar``, ``bbar``, and classifies every other point ``xi`` of ``a`` by the sign of
    ``h = ||xi - bbar||^2 - ||xi - abar||^2``.  Episodes run in batches as one matrix product
    each (NumPy: an earlier ``jax.jit`` version spent 2-3 s compiling for every new shape, longer
    than the simulations the report runs).

    Parameters
    ----------
    X_a, X_b : array_like, shapes (P_a, N), (P_b, N)
    m : int
        Shots per class, ``1 <= m < P_a``, ``m <= P_b``.
    rng_key : int, numpy Generator or JAX PRNG key
    n_episodes, batch_size : int

    Returns
    -------
    FewShotError
        Error rate, its standard error over episodes, and the empirical SNR.
    """
    Xa, Xb = np.asarray(X_a, dtype=np.float64), np.asarray(X_b, dtype=np.float64)
    if not 1 <= m < Xa.shape[0] or m > Xb.shape[0]:
        raise ValueError(f"need 1 <= m < P_a and m <= P_b; got m={m}, P_a={len(Xa)}, P_b={len(Xb)}")
    mid = 0.5 * (Xa.mean(0) + Xb.mean(0))  # h is translation invariant; centring keeps it accurate
    Xa, Xb, gen = Xa - mid, Xb - mid, _numpy_rng(rng_key)
    batches = [_episode_batch(gen, Xa, Xb, int(m), min(batch_size, n_episodes - start))
               for start in range(0, int(n_episodes), int(batch_size))]
    err, mean, var = (np.concatenate(v) for v in zip(*batches))
    snr = mean.mean() / np.sqrt(var.mean() + mean.var())
    return FewShotError(float(err.mean()), float(err.std(ddof=1) / np.sqrt(len(err))), float(snr))


fewshot_error_empirical = fewshot_error  # the name used in THEORY 6.4's spec


# ------------------------------------------------------------------------ manifold capacity


def gardner_capacity(kappa):
    """Capacity of points at margin kappa, ``alpha_0(k) = 1 / int_{-k}^inf Dt (t + k)^2``.

    Closed form ``1 / ((1 + k^2) Phi(k) + k phi(k))``; ``alpha_0(0) = 2`` (Cover, Gardner).
    """
    k = np.asarray(kappa, dtype=np.float64)
    return 1.0 / ((1.0 + k**2) * norm.cdf(k) + k * norm.pdf(k))


def _as_rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def embed_manifold(X, origin) -> np.ndarray:
    """The ``(D+1, M)`` anchor coordinates ``sD1`` of a manifold ``X (M, N)`` (THEORY 6.2a step 1).

    Points relative to ``origin`` are split into the centre ``c`` and ``S = (X - c)/||c||``;
    ``S`` is written in its own principal axes (rank ``D <= M - 1``, each axis signed so that its
    largest coordinate is positive, which makes the result rotation invariant), and a row of
    ones (the centre direction) is appended.
    """
    X = np.asarray(X, dtype=np.float64) - origin
    c = X.mean(axis=0)
    cn = np.linalg.norm(c)
    if not cn > 0:
        raise ValueError("a manifold centre coincides with the origin; choose another origin")
    u, s, _ = np.linalg.svd((X - c) / cn, full_matrices=False)
    D = int(np.sum(s > (s.max(initial=0.0) * max(X.shape) * np.finfo(float).eps)))
    coords = u[:, :D] * s[:D]
    coords *= np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(D)])
    return np.vstack([coords.T, np.ones((1, X.shape[0]))])


def anchor_points(sD1, T, kappa=0.0) -> np.ndarray:
    """Anchor points ``S_tilde (D+1, n_t)`` of a manifold for Gaussian vectors ``T (D+1, n_t)``.

    Mean-field anchor points (PRX 2018 Sec. III A; mftma conventions, THEORY 6.2a step 2): if
    ``max_s t.s + kappa < 0`` then ``V = t`` and the anchor is the max-projection point ``s*``;
    otherwise ``min_V ||V - t||^2`` s.t. ``V.s <= -kappa`` for every column ``s``.  That QP is
    solved through its dual, ``alpha = NNLS(sD1, t + kappa e_{D+1})``, ``V = t - sD1 alpha``,
    ``S_tilde = sD1 alpha / sum(alpha)`` (exact because every column has centre coordinate 1).
    """
    sD1, T = np.asarray(sD1, dtype=np.float64), np.asarray(T, dtype=np.float64)
    S = sD1[:, np.argmax(T[:-1].T @ sD1[:-1], axis=1)]  # max-projection points
    gap = np.sum(T * S, axis=0) + kappa
    e = np.zeros(sD1.shape[0])
    e[-1] = kappa
    for i in np.flatnonzero(gap >= 0):
        alpha, _ = nnls(sD1, T[:, i] + e, maxiter=50 * sD1.shape[1])
        if alpha.sum() > 1e-12:
            S[:, i] = sD1 @ alpha / alpha.sum()
    return S


class AnchorGeometry(NamedTuple):
    alpha: float  # capacity alpha_M (PRX Eqs. 16-17)
    radius: float  # R_M (PRX Eq. 28)
    dimension: float  # D_M = D <t_hat . s_hat>^2 as in mftma (PRX Eq. 29)
    dimension_prx: float  # <(t_perp . s_hat_perp)^2>


def anchor_geometry(S, T, kappa=0.0) -> AnchorGeometry:
    """Capacity, radius and dimension from anchors ``S`` and Gaussian vectors ``T`` (THEORY 6.2a).

    ``alpha_M^{-1} = <max(t.s + kappa, 0)^2 / ||s||^2>_t``,
    ``R_M = sqrt<||s_perp - <s_perp>||^2>`` (centre coordinate 1), ``D_M = D <t_hat.s_hat>^2``.
    """
    D = S.shape[0] - 1
    inv_alpha = np.mean(np.maximum(np.sum(T * S, axis=0) + kappa, 0.0) ** 2 / np.sum(S**2, axis=0))
    ds = (S - S.mean(axis=1, keepdims=True))[:D] / S[D]
    radius = np.sqrt(np.mean(np.sum(ds**2, axis=0)))
    if D == 0:
        return AnchorGeometry(1.0 / inv_alpha, float(radius), 0.0, 0.0)
    t_hat = T[:D] / np.linalg.norm(T[:D], axis=0)
    s_hat = S[:D] / np.sqrt(np.sum(S[:D] ** 2, axis=0) + 1e-24)
    dims = (D * np.mean(np.sum(t_hat * s_hat, axis=0)) ** 2, np.mean(np.sum(T[:D] * s_hat, axis=0) ** 2))
    return AnchorGeometry(1.0 / inv_alpha, float(radius), float(dims[0]), float(dims[1]))


class ManifoldCapacity(NamedTuple):
    """Mean-field capacity and anchor geometry per manifold, and the capacity of the set."""

    alpha: np.ndarray  # (P,) alpha_M
    radius: np.ndarray  # (P,) R_M
    dimension: np.ndarray  # (P,) D_M (mftma form)
    dimension_prx: np.ndarray  # (P,) <(t_perp . s_hat_perp)^2>
    alpha_total: float  # 1 / mean(1 / alpha_M)


FEW_MANIFOLDS = 10  # up to this many manifolds alpha_M, R_M, D_M are descriptors (THEORY 6.2b)
ORIGINS = {"global_mean": "the mean of all points of all manifolds (each centre shrinks by about "
                          "sqrt(1 - 1/P) for P manifolds)",
           "zero": "the origin of feature space"}


def capacity_kind(num_manifolds: int) -> str:
    """What ``manifold_capacity`` of ``num_manifolds`` manifolds is (THEORY 6.2b): for up to
    :data:`FEW_MANIFOLDS` a "per-manifold descriptor" of their geometry (the mean-field theory
    assumes many random, uncorrelated manifolds; its alpha_M of a few classes is not a prediction
    of their capacity), beyond that the "mean-field capacity"."""
    return "per-manifold descriptor" if num_manifolds <= FEW_MANIFOLDS else "mean-field capacity"


def _origin(manifolds, origin) -> np.ndarray:
    if isinstance(origin, str):
        if origin == "zero":
            return np.zeros(np.shape(manifolds[0])[1])
        if origin == "global_mean":
            if len(manifolds) < 2:
                raise ValueError("origin='global_mean' needs two or more manifolds; use 'zero' or an array")
            return np.concatenate([np.asarray(X, np.float64) for X in manifolds]).mean(axis=0)
        raise ValueError(f"origin must be 'global_mean', 'zero' or an array, not {origin!r}")
    return np.asarray(origin, dtype=np.float64)


def manifold_capacity(manifolds: Sequence, kappa=0.0, n_t=200, origin="global_mean", rng=0):
    """Mean-field manifold capacity ``alpha_M``, radius ``R_M`` and dimension ``D_M`` (THEORY 6.2a).

    PRX 2018 Eqs. 16-17, 28, 29 with the uncorrelated-centres algorithm (no centre-correlation
    removal, so any number of manifolds works: THEORY 6.2b).  With few manifolds these are
    per-manifold geometric descriptors, not a prediction of the capacity of those few classes;
    subtracting the global mean of P classes shrinks the centres by about ``sqrt(1 - 1/P)``.

    Parameters
    ----------
    manifolds : sequence of array_like, each (M_i, N)
    kappa : float
        Margin.
    n_t : int
        Gaussian vectors per manifold.
    origin : {'global_mean', 'zero'} or array_like (N,)
        Point subtracted from all data first.
    rng : int or numpy.random.Generator
        Seed or generator for the Gaussian vectors (drawn in turn for each manifold).

    Returns
    -------
    ManifoldCapacity
    """
    o, gen = _origin(manifolds, origin), _as_rng(rng)
    res = []
    for X in manifolds:
        sD1 = embed_manifold(X, o)
        T = gen.standard_normal((sD1.shape[0], n_t))
        res.append(anchor_geometry(anchor_points(sD1, T, kappa), T, kappa))
    a, r, d, dp = (np.array(v) for v in zip(*res))
    return ManifoldCapacity(a, r, d, dp, float(1.0 / np.mean(1.0 / a)))


def points_from_kernel(K) -> np.ndarray:
    """Points ``X (P, r)`` with ``X X^T = K``: the kernel's eigenvectors scaled by the square
    roots of its positive eigenvalues (``r`` of them).  Every quantity in this module is
    invariant under rotations of feature space, so these points stand for any representation
    with kernel ``K`` (a posterior-mean layer kernel, an NNGP kernel)."""
    lam, V = np.linalg.eigh(0.5 * (np.asarray(K, np.float64) + np.asarray(K, np.float64).T))
    keep = lam > lam.max(initial=0.0) * len(lam) * np.finfo(float).eps
    return V[:, keep] * np.sqrt(lam[keep])


def class_manifolds(X, labels) -> list[np.ndarray]:
    """Rows of ``X (P, N)`` grouped by class, classes in ``np.unique(labels)`` order."""
    X, labels = np.asarray(X), np.asarray(labels)
    return [X[labels == c] for c in np.unique(labels)]


def kernel_capacity(K, labels, kappa=0.0, n_t=200, rng=0) -> ManifoldCapacity:
    """Mean-field capacity of the class manifolds of a kernel (:func:`manifold_capacity` on
    :func:`points_from_kernel`, origin at the global mean)."""
    return manifold_capacity(class_manifolds(points_from_kernel(K), labels), kappa=kappa,
                             n_t=n_t, rng=rng)


class LargeDCapacity(NamedTuple):
    alpha: np.ndarray  # alpha_0((kappa + R sqrt D) / sqrt(1 + R^2))  (THEORY 6.4 spec)
    alpha_ball: np.ndarray  # (1 + R^2) alpha_0(kappa + R sqrt D)  (large-D L2 ball)
    alpha_limit: np.ndarray  # (1 + R^2) / (kappa + R sqrt D)^2; (1 + R^-2)/D at kappa = 0


def capacity_large_D(R_M, D_M, kappa=0.0) -> LargeDCapacity:
    """Large-``D_M`` approximations of the manifold capacity (PRX 2018; perspective Eq. 1).

    ``alpha`` is THEORY 6.4's form ``alpha_0((kappa + R sqrt D)/sqrt(1 + R^2))``; ``alpha_ball``
    is the L2 ball at large D, ``(1 + R^2) alpha_0(kappa + R sqrt D)`` (derived here: project
    ``(sqrt D, t_0)`` on the half-plane ``V_0 - R a >= kappa``); both tend to ``alpha_limit``
    ``= (1 + R^2)/(kappa + R sqrt D)^2``, which is perspective Eq. 1 at ``kappa = 0``.
    """
    R, D = np.asarray(R_M, dtype=np.float64), np.asarray(D_M, dtype=np.float64)
    x = kappa + R * np.sqrt(D)
    return LargeDCapacity(
        gardner_capacity(x / np.sqrt(1 + R**2)), (1 + R**2) * gardner_capacity(x), (1 + R**2) / x**2
    )


def gardner_margin(alpha):
    """Inverse of :func:`gardner_capacity`: the margin ``kappa`` with ``alpha_0(kappa) = alpha``.

    Solved by bracketing on ``kappa in [-5, 1e6]``, i.e. for ``1e-12 < alpha < 3e7``.
    """
    f = lambda k, a: np.log((1 + k**2) * norm.cdf(k) + k * norm.pdf(k)) + np.log(a)  # noqa: E731
    solve = np.vectorize(lambda a: brentq(f, -5.0, 1e6, args=(a,), xtol=1e-12))
    return solve(np.asarray(alpha, dtype=np.float64))


def max_margin_large_D(alpha, R_M, D_M, exact=True):
    """Largest margin at load ``alpha`` for manifolds of anchor radius ``R_M``, dimension ``D_M``.

    Inverts the large-D capacity (THEORY 6.2d, corrected).  ``exact=True`` solves
    ``alpha = (1 + R^2) alpha_0(kappa + R sqrt D)`` (the ``alpha_ball`` of
    :func:`capacity_large_D`): ``kappa = alpha_0^{-1}(alpha / (1 + R^2)) - R sqrt D``.
    ``exact=False`` is its large-argument form ``kappa = sqrt((1 + R^2)/alpha) - R sqrt D``
    (THEORY 6.2d), which ignores the ``+1`` in ``alpha_0(x)^{-1} ~ x^2 + 1`` and overestimates
    kappa by about ``1/(2 (kappa + R sqrt D))``.  The printed perspective Eq. 2,
    ``sqrt(alpha^-1 (1 + R_M)^2 - R_M sqrt(D_M))``, is inconsistent with the mean-field theory
    and is not used.
    """
    R, D = np.asarray(R_M, dtype=np.float64), np.asarray(D_M, dtype=np.float64)
    a = np.asarray(alpha, dtype=np.float64)
    x = gardner_margin(a / (1 + R**2)) if exact else np.sqrt((1 + R**2) / a)
    return x - R * np.sqrt(D)


# ------------------------------------------------------------------------ direct simulation


def separable(points, labels, tol=1e-7) -> bool:
    """Whether some ``w`` (no bias) gives ``y w.x >= 1`` for every point (LP, scipy HiGHS).

    Solved as ``min sum xi`` s.t. ``y_mu w.x_mu >= 1 - xi_mu``, ``xi >= 0``, which is always
    feasible and bounded (a plain feasibility LP sometimes ends in HiGHS status "unknown");
    separable iff the optimum is 0.
    """
    A = -np.asarray(labels, dtype=np.float64)[:, None] * np.asarray(points, dtype=np.float64)
    n, N = A.shape
    A_ub = sparse.hstack([sparse.csr_matrix(A), -sparse.identity(n, format="csr")], format="csr")
    c = np.r_[np.zeros(N), np.ones(n)]
    bounds = [(None, None)] * N + [(0, None)] * n
    res = linprog(c, A_ub=A_ub, b_ub=-np.ones(n), bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    return bool(res.fun <= tol * n)


class SimulatedCapacity(NamedTuple):
    alpha: np.ndarray  # (n_grid,) loads P / N
    frac_separable: np.ndarray  # (n_grid,)
    alpha_50: float  # load at which half the dichotomies are separable (linear interpolation)


def _crossing(x, y, level=0.5) -> float:
    """First ``x`` where the decreasing sequence ``y`` crosses ``level`` (linear interpolation)."""
    below = np.flatnonzero(y < level)
    if len(below) == 0:
        return np.nan
    i = below[0]
    if i == 0:
        return float(x[0])
    return float(x[i - 1] + (y[i - 1] - level) * (x[i] - x[i - 1]) / (y[i - 1] - y[i]))


def simulated_capacity(make_manifold: Callable, N: int, P_grid, n_rep=10, rng=0) -> SimulatedCapacity:
    """Fraction of random dichotomies of ``P`` manifolds that are linearly separable (THEORY 6.2c).

    An independent check of :func:`manifold_capacity`: for each ``P`` in ``P_grid`` and each of
    ``n_rep`` repetitions, draw ``P`` manifolds ``make_manifold(rng, N) -> (M, N)`` and random
    labels ``+-1`` (one per manifold), and test separability through the origin by LP.

    Returns
    -------
    SimulatedCapacity
        ``alpha = P / N``, the separable fraction, and ``alpha_50``.
    """
    gen = _as_rng(rng)
    frac = []
    for P in P_grid:
        hits = 0
        for _ in range(n_rep):
            mans = [np.asarray(make_manifold(gen, N)) for _ in range(P)]
            y = np.concatenate([np.full(len(X), s) for X, s in zip(mans, gen.choice([-1.0, 1.0], P))])
            hits += separable(np.concatenate(mans), y)
        frac.append(hits / n_rep)
    alpha, frac = np.asarray(P_grid, float) / N, np.asarray(frac)
    return SimulatedCapacity(alpha, frac, _crossing(alpha, frac))


simulate_capacity = simulated_capacity  # the name used in THEORY 6.4's spec
