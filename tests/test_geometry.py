"""Representational geometry (diagnostics/geometry.py): THEORY.md 6.4, geometry tests 1-9.

Exact tier: participation ratio, planted ellipsoids, sanity values, kernel route, NNLS vs a
generic QP, invariances.  Statistical tier (fixed seeds): few-shot SNR and error against
simulated prototype learning, capacity of point manifolds and of a large-D sphere, the max-margin
relation.  Slow: mean-field capacity against direct LP separability of random dichotomies.
"""

import jax
import numpy as np
import pytest
from scipy.optimize import minimize

from widebayes.diagnostics import geometry as geo

# ------------------------------------------------------------------------ helpers


def _ellipsoid(rng, P, radii, axes, center):
    """P Gaussian points with standard deviation radii[i] along the rows axes[i]."""
    return center + (rng.standard_normal((P, len(radii))) * radii) @ axes


def _cross_polytope(scale, basis):
    """Points +-scale b_i for the D rows b_i of basis; for orthonormal rows: mean 0, isotropic
    covariance scale^2 / D in their span, total variance scale^2."""
    return np.vstack([scale * basis, -scale * basis])


def _sphere_cloud(rng, M, D, R, N):
    """M points on a D-sphere of radius R around the centre e_N (unit norm), in R^N."""
    G = rng.standard_normal((M, D))
    X = np.zeros((M, N))
    X[:, :D] = R * G / np.linalg.norm(G, axis=1, keepdims=True)
    X[:, -1] = 1.0
    return X


# ------------------------------------------------------------------------ 1-2: dimension, class stats


def test_participation_ratio_values():
    assert geo.participation_ratio(np.ones(7)) == pytest.approx(7.0)
    assert geo.participation_ratio([1.0, 0, 0, 0]) == pytest.approx(1.0)
    lam = np.random.default_rng(0).random(12)
    assert geo.participation_ratio(3.7 * lam) == pytest.approx(geo.participation_ratio(lam), rel=1e-13)
    # isotropic D-ball (uniform), sampled: PR of the sample covariance is D up to O(D/P)
    rng, D = np.random.default_rng(1), 6
    G = rng.standard_normal((50_000, D))
    ball = G / np.linalg.norm(G, axis=1, keepdims=True) * rng.random((50_000, 1)) ** (1 / D)
    assert geo.class_stats(ball).D_pr == pytest.approx(D, rel=0.01)


def test_class_stats_recovers_planted_ellipsoid():
    rng, N = np.random.default_rng(2), 10
    axes = np.linalg.qr(rng.standard_normal((N, N)))[0].T[:5]
    radii, center = np.array([3.0, 2.0, 1.5, 1.0, 0.5]), rng.standard_normal(N)
    st = geo.class_stats(_ellipsoid(rng, 200_000, radii, axes, center))
    np.testing.assert_allclose(st.radii[:5], radii, rtol=0.02)
    assert np.all(st.radii[5:] < 1e-10)
    np.testing.assert_allclose(np.abs(np.sum(st.axes[:5] * axes, axis=1)), 1.0, atol=0.02)
    np.testing.assert_allclose(st.center, center, atol=0.02)
    assert st.R2 == pytest.approx(np.sum(radii**2), rel=0.02)
    assert st.D_pr == pytest.approx(geo.participation_ratio(radii**2), rel=0.02)


# ------------------------------------------------------------------------ 3-4: few-shot SNR and error

FEWSHOT_CASES = {  # name: (D, R_b, overlapping axes and signal, ||dx0||^2 / R_a^2)
    "D100": (100, 1.0, False, 0.2),
    "D100_bias": (100, 0.8, False, 0.15),  # R_b < R_a: negative SNR at m = 1
    "D30_overlap": (30, 1.2, True, 0.5),
    "D10": (10, 1.0, False, 0.6),
}
FEWSHOT_RUNS = [("D100", 1), ("D100", 2), ("D100", 5), ("D100", 10), ("D100_bias", 1), ("D100_bias", 5),
                ("D30_overlap", 1), ("D30_overlap", 10), ("D10", 1), ("D10", 10)]  # fmt: skip
N_AMBIENT, P_GEOMETRY, P_EPISODES, N_EPISODES = 200, 20_000, 3000, 10_000


def _fewshot_case(D, Rb, overlap, d2, seed=0):
    """Isotropic Gaussian manifolds a (R_a = 1) and b (R_b) in R^200, centres ||dx0||^2 = d2 apart."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((N_AMBIENT, N_AMBIENT)))[0].T
    if overlap:  # b shares half of a's axes, and dx0 has a component along a's first axis
        Ub, dx = np.vstack([Q[: D // 2], Q[D : 2 * D - D // 2]]), 0.6 * Q[0] + 0.8 * Q[-1]
    else:
        Ub, dx = Q[N_AMBIENT - D - 1 : N_AMBIENT - 1], Q[-1]
    Xa = _ellipsoid(rng, P_GEOMETRY, np.full(D, 1 / np.sqrt(D)), Q[:D], 0.0)
    Xb = _ellipsoid(rng, P_GEOMETRY, np.full(D, Rb / np.sqrt(D)), Ub, np.sqrt(d2) * dx)
    return Xa, Xb


@pytest.fixture(scope="module")
def fewshot_runs():
    """Geometry from 20k points per class; simulated episodes on 3000 of them (THEORY 6.1c).

    Held-out test points make the simulation see the population geometry, so the geometry is
    measured on a large sample (the plug-in tr C^2 of P points is biased up by (tr C)^2 / P).
    """
    out, key = {}, jax.random.key(0)
    for name, spec in FEWSHOT_CASES.items():
        Xa, Xb = _fewshot_case(*spec)
        g = geo.pair_geometry(Xa, Xb)
        for case, m in FEWSHOT_RUNS:
            if case == name:
                k = jax.random.fold_in(key, m)
                out[case, m] = (g, geo.fewshot_error(Xa[:P_EPISODES], Xb[:P_EPISODES], m, k, N_EPISODES))
    return out


@pytest.mark.parametrize("case,m", FEWSHOT_RUNS)
def test_fewshot_snr_exact_form_matches_simulation(fewshot_runs, case, m):
    """mean(h)/std(h) of simulated episodes vs the exact second-moment SNR, within 3%."""
    g, sim = fewshot_runs[case, m]
    exact = geo.snr_from_geometry(g, m)
    assert abs(exact - sim.snr) <= 0.03 * abs(sim.snr) + 0.005, (exact, sim.snr)
    if case == "D100_bias" and m == 1:
        assert sim.snr < -0.5 and exact < -0.5
    if m == 1:  # the authors' form misses the 1/m^2 term: ~35-40% too large for Gaussian clouds
        assert abs(geo.snr_from_geometry(g, m, include_m2_term=False)) > 1.2 * abs(sim.snr)


def test_fewshot_error_theory_for_high_dimensional_manifolds(fewshot_runs):
    """H(SNR) within 0.015 of the simulated error where D = 100 and 0.03 < err < 0.4."""
    checked = 0
    for (case, m), (g, sim) in fewshot_runs.items():
        if case.startswith("D100") and 0.03 < sim.err < 0.4:
            assert abs(geo.gaussian_tail(geo.snr_from_geometry(g, m)) - sim.err) < 0.015, (case, m)
            checked += 1
    assert checked >= 2


def test_fewshot_snr_and_error_theory_on_point_clouds():
    rng = np.random.default_rng(3)
    Xa = rng.standard_normal((60, 30))
    Xb = rng.standard_normal((50, 30)) * 1.3 + 0.5
    snr = geo.fewshot_snr(Xa, Xb, 3)
    assert snr == pytest.approx(geo.snr_from_geometry(geo.pair_geometry(Xa, Xb), 3))
    assert geo.fewshot_error_theory(Xa, Xb, 3) == pytest.approx(geo.gaussian_tail(snr))
    assert geo.gaussian_tail(0.0) == 0.5 and geo.gaussian_tail(1.0) == pytest.approx(0.158655253931457)


def _authors_geometry_snr(manifolds, m):
    """THEORY 6.1a written out independently: raw singular values, loops over pairs."""
    K = len(manifolds)
    svd = [np.linalg.svd(X - X.mean(0), full_matrices=False) for X in manifolds]
    Rs, Us = [s for _, s, _ in svd], [vt for _, _, vt in svd]
    cs = [X.mean(0) for X in manifolds]
    snr = np.full((K, K), np.nan)
    for a in range(K):
        for b in range(K):
            if a == b:
                continue
            P, Ra2, Rb2 = len(Rs[a]), np.sum(Rs[a] ** 2), np.sum(Rs[b] ** 2)
            dx0 = cs[a] - cs[b]
            dn2 = dx0 @ dx0 / (Ra2 / P)
            u = dx0 / np.linalg.norm(dx0)
            csa = np.sum((Us[a] @ u) ** 2 * Rs[a] ** 2) / Ra2
            csb = np.sum((Us[b] @ u) ** 2 * Rs[b] ** 2) / Ra2
            ss = np.sum((Us[a] @ Us[b].T) ** 2 * np.outer(Rs[a] ** 2, Rs[b] ** 2)) / Ra2**2
            D = Ra2**2 / np.sum(Rs[a] ** 4)
            noise = 1 / (D * m) + (csa + csb / m) * dn2 + ss / m
            snr[a, b] = 0.5 * (dn2 + (Rb2 / Ra2 - 1) / m) / np.sqrt(noise)
    return snr


def test_authors_form_reproduces_their_geometry_function():
    """include_m2_term=False is the authors' geometry() SNR (fixed seed, 40 points in R^64)."""
    rng = np.random.default_rng(4)
    scales, centres = rng.random((4, 64)), rng.standard_normal((4, 64))
    mans = np.stack([rng.standard_normal((40, 64)) * s + c for s, c in zip(scales, centres)])
    for m in (1, 5):
        fm = geo.fewshot_matrix(mans, m, include_m2_term=False)
        np.testing.assert_allclose(fm.snr, _authors_geometry_snr(mans, m), rtol=1e-10)
        assert np.all(np.isnan(np.diag(fm.snr))) and np.all(np.isnan(np.diag(fm.error)))
        np.testing.assert_allclose(fm.error, geo.gaussian_tail(fm.snr))
    exact = geo.fewshot_matrix(mans, 1).snr
    off = ~np.eye(4, dtype=bool)
    assert np.all(np.abs(exact[off]) < np.abs(geo.fewshot_matrix(mans, 1, include_m2_term=False).snr[off]))


def test_fewshot_error_simulation_basics():
    """Separated clouds give no error; identical clouds err about half the time (m < P checked)."""
    rng, key = np.random.default_rng(5), jax.random.key(1)
    Xa = rng.standard_normal((80, 5))
    far = geo.fewshot_error(Xa, Xa + 100.0, 2, key, n_episodes=200)
    assert far.err == 0.0 and far.snr > 10
    same = geo.fewshot_error(Xa, Xa, 5, key, n_episodes=2000)
    assert abs(same.err - 0.5) < 4 * same.se + 0.02
    with pytest.raises(ValueError):
        geo.fewshot_error(Xa, Xa, 80, key)


# ------------------------------------------------------------------------ 5: sanity values


def test_signal_noise_overlaps_vanish_for_orthogonal_signal():
    N, D = 12, 4
    E = np.eye(N)
    Xa = _cross_polytope(1.0, E[:D] + 0.3 * E[1 : D + 1])
    Xb = _cross_polytope(0.7, E[:D]) + 2.0 * E[-1]
    g = geo.pair_geometry(Xa, Xb)
    assert abs(g.csa) < 1e-12 and abs(g.csb) < 1e-12


def test_noise_overlap_same_subspace_and_bias_swap():
    N, D, Ra, Rb = 12, 5, 1.3, 0.6
    E = np.eye(N)
    Xa, Xb = _cross_polytope(Ra, E[:D]), _cross_polytope(Rb, E[:D]) + E[-1]
    g = geo.pair_geometry(Xa, Xb)
    assert g.ss == pytest.approx(Rb**2 / (Ra**2 * D), rel=1e-12)
    assert g.Da == pytest.approx(D) and g.Db == pytest.approx(D)
    assert g.dist2 == pytest.approx(1 / Ra**2)
    assert g.trCb2 == pytest.approx(Rb**4 / (D * Ra**4))
    gs = geo.pair_geometry(Xb, Xa)
    assert np.log1p(g.bias) == pytest.approx(2 * np.log(Rb / Ra))
    assert np.log1p(gs.bias) == pytest.approx(-np.log1p(g.bias))


def test_noise_overlap_random_subspaces():
    """Independent random D-dim subspaces of R^N: E ss = R_b^2 / (R_a^2 N)."""
    rng, N, D, Ra, Rb = np.random.default_rng(6), 40, 8, 1.0, 1.5
    ss = []
    for _ in range(60):
        Qa, Qb = (np.linalg.qr(rng.standard_normal((N, D)))[0].T for _ in range(2))
        ss.append(geo.pair_geometry(_cross_polytope(Ra, Qa), _cross_polytope(Rb, Qb) + 1.0).ss)
    ss = np.array(ss)
    assert abs(ss.mean() - Rb**2 / (Ra**2 * N)) < 3 * ss.std(ddof=1) / np.sqrt(len(ss))


def test_kernel_geometry_equals_feature_geometry():
    rng = np.random.default_rng(7)
    sizes, N = [15, 20, 12], 30
    X = np.concatenate([rng.standard_normal((n, N)) * rng.random(N) + rng.standard_normal(N) for n in sizes])
    labels = np.repeat([2, 0, 5], sizes)
    perm = rng.permutation(len(X))  # classes need not be contiguous
    X, labels = X[perm], labels[perm]
    feat = geo.fewshot_matrix([X[labels == c] for c in (0, 2, 5)], 1).geometry
    kern, classes = geo.geometry_from_kernels(X @ X.T / N, labels)
    assert list(classes) == [0, 2, 5]
    for name, f, k in zip(geo.PairGeometry._fields, feat, kern):
        np.testing.assert_allclose(k, f, rtol=1e-10, atol=1e-13, err_msg=name)
    # leading (layer) axes broadcast
    stacked, _ = geo.geometry_from_kernels(np.stack([X @ X.T, 2 * X @ X.T]), labels)
    np.testing.assert_allclose(stacked.dist2[1], kern.dist2, rtol=1e-10)


# ------------------------------------------------------------------------ 6: anchor points, capacity


def _qp_anchor(sD1, t, kappa):
    """min ||V - t||^2 s.t. V.s <= -kappa for every column s, by SLSQP (a generic solver)."""
    cons = {"type": "ineq", "fun": lambda V: -kappa - sD1.T @ V, "jac": lambda V: -sD1.T}
    res = minimize(lambda V: 0.5 * np.sum((V - t) ** 2), t, jac=lambda V: V - t, constraints=[cons],
                   method="SLSQP", options={"ftol": 1e-13, "maxiter": 500})  # fmt: skip
    assert res.success or res.status == 8  # 8: converged to within line-search precision
    assert np.all(sD1.T @ res.x <= -kappa + 1e-9)
    return res.x


def test_anchor_points_nnls_dual_equals_generic_qp():
    rng, checked = np.random.default_rng(8), 0
    for kappa in (0.0, 0.3, 1.0):
        for _ in range(20):
            D, M = rng.integers(2, 5), rng.integers(4, 10)
            sD1 = np.vstack([rng.standard_normal((D, M)), np.ones((1, M))])
            t = rng.standard_normal((D + 1, 1))
            s = geo.anchor_points(sD1, t, kappa)[:, 0]
            if t[:, 0] @ s + kappa < 0:
                continue  # interior: V = t, nothing to solve
            V = _qp_anchor(sD1, t[:, 0], kappa)
            V_nnls = t[:, 0] - (t[:, 0] @ s + kappa) / (s @ s) * s  # t - sum(alpha) s_tilde
            np.testing.assert_allclose(V_nnls, V, atol=1e-6)
            np.testing.assert_allclose(s, (t[:, 0] - V) / (t[-1, 0] - V[-1]), atol=1e-5)
            checked += 1
    assert checked >= 30


def test_capacity_of_point_manifolds_is_two():
    """Cover/Gardner: alpha_0(0) = 2 for points and for tiny spheres (n_t = 4000)."""
    assert geo.gardner_capacity(0.0) == pytest.approx(2.0)
    pts = geo.manifold_capacity([np.ones((3, 8))], n_t=4000, origin="zero", rng=0)
    assert pts.alpha[0] == pytest.approx(2.0, abs=0.1) and pts.radius[0] == 0.0
    sphere = _sphere_cloud(np.random.default_rng(9), 50, 10, 1e-4, 12)
    tiny = geo.manifold_capacity([sphere], n_t=4000, origin="zero", rng=0)
    assert tiny.alpha[0] == pytest.approx(2.0, abs=0.1) and tiny.radius[0] < 1e-3


@pytest.fixture(scope="module")
def sphere50():
    """Mean-field geometry of 400 points on a 50-sphere of radius 1 at kappa = 0, .5, 1, 2.

    n_t = 6000 leaves about 2% Monte Carlo error in alpha_M.
    """
    X = _sphere_cloud(np.random.default_rng(10), 400, 50, 1.0, 52)
    kappas = (0.0, 0.5, 1.0, 2.0)
    return {k: geo.manifold_capacity([X], kappa=k, n_t=6000, origin="zero", rng=11) for k in kappas}


def test_large_D_capacity_of_sphere_cloud(sphere50):
    """alpha_M = 0.169 (R_M = 0.62, D_M = 20.3) against the large-D forms with the same R_M, D_M.

    Measured: (1 + R^2) alpha_0(R sqrt D) is 6% low, alpha_0(R sqrt D / sqrt(1 + R^2)) 10% low
    (4% and 8% over other seeds): the large-D relation is approximate at D_M ~ 20.
    """
    c = sphere50[0.0]
    assert c.dimension[0] > 18 and 0.5 < c.radius[0] < 0.8
    large = geo.capacity_large_D(c.radius[0], c.dimension[0])
    assert large.alpha_ball == pytest.approx(c.alpha[0], rel=0.07)
    assert large.alpha == pytest.approx(c.alpha[0], rel=0.12)
    assert large.alpha_limit == pytest.approx((1 + c.radius[0] ** -2) / c.dimension[0])


@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0])
def test_max_margin_gives_back_kappa(sphere50, kappa):
    """Measured: exact inversion 0.41 / 0.93 / 1.94, closed form 0.57 / 1.06 / 2.05."""
    c = sphere50[kappa]
    assert c.dimension[0] > 20
    assert geo.max_margin_large_D(c.alpha[0], c.radius[0], c.dimension[0]) == pytest.approx(kappa, abs=0.1)
    closed = geo.max_margin_large_D(c.alpha[0], c.radius[0], c.dimension[0], exact=False)
    assert closed == pytest.approx(kappa, abs=0.15)


def test_gardner_margin_inverts_capacity():
    k = np.array([-1.0, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(geo.gardner_margin(geo.gardner_capacity(k)), k, atol=1e-9)


# ------------------------------------------------------------------------ 7: few classes, invariances


def _gauss_manifolds(rng, P, M=15, D=4, R=0.8, N=30):
    """P manifolds in R^N: centre ~ N(0, I), M points on D random axes, rms radius ~ R |centre|."""
    axes = (rng.standard_normal((D, N)) / np.sqrt(D) for _ in range(P))
    return [rng.standard_normal(N) + R * rng.standard_normal((M, D)) @ A for A in axes]


@pytest.mark.parametrize("P", [1, 2, 3])
def test_manifold_capacity_runs_for_few_classes(P):
    mans = _gauss_manifolds(np.random.default_rng(12), P)
    origin = "zero" if P == 1 else "global_mean"
    c = geo.manifold_capacity(mans, n_t=100, origin=origin, rng=0)
    assert c.alpha.shape == (P,) and np.all(np.isfinite(c.alpha)) and np.all(c.alpha > 0)
    assert np.all(c.dimension > 0) and np.all(c.radius > 0)
    assert c.alpha_total == pytest.approx(1 / np.mean(1 / c.alpha))


def test_manifold_capacity_origin_choices():
    mans = _gauss_manifolds(np.random.default_rng(13), 3)
    with pytest.raises(ValueError):
        geo.manifold_capacity(mans[:1], origin="global_mean")
    with pytest.raises(ValueError):
        geo.manifold_capacity(mans, origin="centroid")
    zero = geo.manifold_capacity(mans, n_t=100, origin="zero", rng=0)
    arr = geo.manifold_capacity(mans, n_t=100, origin=np.zeros(30), rng=0)
    np.testing.assert_allclose(arr.alpha, zero.alpha)


def test_manifold_capacity_invariant_to_scale_and_rotation():
    rng = np.random.default_rng(14)
    mans = _gauss_manifolds(rng, 3)
    Q = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    base = geo.manifold_capacity(mans, kappa=0.2, n_t=200, rng=5)
    for f in (lambda X: 3.7 * X, lambda X: X @ Q):
        other = geo.manifold_capacity([f(X) for X in mans], kappa=0.2, n_t=200, rng=5)
        for a, b in zip(base, other):
            np.testing.assert_allclose(a, b, rtol=1e-8)


def test_kernel_capacity_equals_capacity_of_the_features():
    """A kernel stands for its features: points_from_kernel reproduces K, and the capacity of the
    class manifolds from K equals that of the features themselves (rotation invariance)."""
    rng = np.random.default_rng(21)
    mans = _gauss_manifolds(rng, 3)
    X = np.concatenate(mans)
    labels = np.repeat(np.arange(3), [len(M) for M in mans])
    pts = geo.points_from_kernel(X @ X.T)
    np.testing.assert_allclose(pts @ pts.T, X @ X.T, atol=1e-9)
    from_kernel = geo.kernel_capacity(X @ X.T, labels, kappa=0.1, n_t=150, rng=3)
    direct = geo.manifold_capacity(geo.class_manifolds(X, labels), kappa=0.1, n_t=150, rng=3)
    for a, b in zip(from_kernel, direct):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_separable_lp():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])
    assert geo.separable(X, [1, 1, -1])
    assert not geo.separable(np.vstack([X, -X[:1]]), [1, 1, -1, 1])  # x and -x with the same label


# ------------------------------------------------------------------------ 8: mean field vs simulation (slow)


def _make(kind, M, D, R):
    """Manifolds of THEORY 6.2c: centre ~ N(0, I/N), D axes ~ N(0, I/N), rms radius R."""

    def make(rng, N):
        c, A = rng.standard_normal(N) / np.sqrt(N), rng.standard_normal((D, N)) / np.sqrt(N)
        G = rng.standard_normal((M, D))
        G /= np.linalg.norm(G, axis=1, keepdims=True) if kind == "sphere" else np.sqrt(D)
        return c + R * G @ A

    return make


@pytest.mark.slow
@pytest.mark.parametrize("case", [("gauss", 20, 5, 1.0), ("sphere", 20, 10, 0.5), ("gauss", 40, 20, 0.3)])
def test_mean_field_capacity_matches_simulated_separability(case):
    make, N = _make(*case), 80
    rng = np.random.default_rng(15)
    mans = [make(rng, 1000) for _ in range(20)]  # N = 1000 for the mean-field geometry
    mf = geo.manifold_capacity(mans, n_t=300, origin="zero", rng=1).alpha_total
    P_grid = np.unique(np.round(np.linspace(0.6 * mf, 1.4 * mf, 9) * N).astype(int))
    sim = geo.simulated_capacity(make, N, P_grid, n_rep=10, rng=7)
    assert sim.frac_separable[0] == 1.0 and sim.frac_separable[-1] == 0.0
    assert abs(sim.alpha_50 - mf) / mf < 0.15, (mf, sim.alpha_50)
