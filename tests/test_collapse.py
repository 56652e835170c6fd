"""Neural collapse (diagnostics/collapse.py) on hand-built activations, and the report's section."""

import json

import numpy as np
import pytest

from widebayes import report
from widebayes.config import resolve
from widebayes.diagnostics import collapse as dcol
from widebayes.diagnostics.kernels import gram
from widebayes.sampling import sample_experiment


def simplex(C: int) -> np.ndarray:
    """Rows: the C vertices of a centred regular simplex (an ETF), unit norm, in R^C."""
    V = np.eye(C) - 1.0 / C
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def embed(points, N: int, seed: int = 0) -> np.ndarray:
    """Points (P, d) as activations (N, P) through a random orthonormal map R^d -> R^N, shifted."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(N, points.shape[1])))
    return Q @ points.T + 3.0  # a common shift: collapse is measured about the class-mean centre


def direct(h, labels):
    """Papyan's definitions written out in neuron space (the reference): h (P, N)."""
    classes = np.unique(labels)
    mu = np.stack([h[labels == c].mean(axis=0) for c in classes])
    res = h - mu[np.searchsorted(classes, labels)]
    SW = res.T @ res / len(labels)
    Mc = mu - mu.mean(axis=0)
    SB = Mc.T @ Mc / len(classes)
    return np.trace(SW @ np.linalg.pinv(SB, hermitian=True)) / len(classes), np.trace(SW) / np.trace(SB)


def test_exact_etf_collapsed_classes_give_zero():
    C, N = 4, 20
    labels = np.repeat(np.arange(C), [3, 5, 2, 6])  # unbalanced: the centre is the mean of class means
    phi = embed(2.5 * simplex(C)[labels], N)
    c = dcol.collapse_from_activations(phi, labels)
    assert float(c.nc1) == pytest.approx(0.0, abs=1e-20) and float(c.variance_ratio) == pytest.approx(0.0)
    for field in ("etf_distance", "equinorm", "equiangularity", "max_angle"):
        assert float(getattr(c, field)) == pytest.approx(0.0, abs=1e-12), field
    assert float(c.between) == pytest.approx(6.25 / N)  # tr Sigma_B = mean ||mu_c - mubar||^2 / N


def test_known_configuration():
    """Three classes at 0, e1, 2 e2 (not an ETF), within-class spread +-s along e3 (orthogonal to the
    means: NC1 = 0, ratio > 0) or along e1 (in the class-mean plane: NC1 > 0)."""
    N, s = 3, 0.5
    means = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0]], float)
    labels = np.repeat(np.arange(3), 2)
    G_expected = (means - means.mean(0)) @ (means - means.mean(0)).T
    for direction, nc1_zero in ((2, True), (0, False)):
        pts = means[labels].copy()
        pts[:, direction] += s * np.tile([1.0, -1.0], 3)
        c = dcol.collapse_from_activations(pts.T * np.sqrt(N), labels)  # h = phi / sqrt(N) = pts
        assert float(c.within) == pytest.approx(s**2)  # every input is s from its class mean
        assert float(c.between) == pytest.approx(np.trace(G_expected) / 3)
        assert float(c.variance_ratio) == pytest.approx(s**2 / (np.trace(G_expected) / 3))
        nc1, ratio = direct(pts, labels)
        assert float(c.nc1) == pytest.approx(nc1, abs=1e-12)
        assert float(c.variance_ratio) == pytest.approx(ratio)
        assert (float(c.nc1) < 1e-12) == nc1_zero
    # NC2 of G_expected by hand: norms, cosines of the centred means
    norms = np.sqrt(np.diag(G_expected))
    cos = G_expected / np.outer(norms, norms)
    iu = np.triu_indices(3, 1)
    assert float(c.equinorm) == pytest.approx(norms.std() / norms.mean())
    assert float(c.max_angle) == pytest.approx(np.mean(np.abs(cos[iu] + 0.5)))
    etf = (np.eye(3) - 1 / 3) / np.sqrt(2)
    G_unit = G_expected / np.linalg.norm(G_expected)
    assert float(c.etf_distance) == pytest.approx(np.linalg.norm(G_unit - etf))
    assert float(c.etf_distance) > 0.1


def test_kernel_formula_equals_activation_formula_on_random_data():
    rng = np.random.default_rng(1)
    N, P, C = 25, 30, 4
    labels = rng.permutation(np.arange(P) % C)
    phi = rng.normal(size=(2, 3, N, P)) + rng.normal(size=(N, C))[:, labels]
    a, k = dcol.collapse_from_activations(phi, labels), dcol.collapse_from_kernel(gram(phi), labels)
    for field in dcol.Collapse._fields:
        np.testing.assert_allclose(getattr(a, field), getattr(k, field), rtol=1e-9, err_msg=field)
    assert a.nc1.shape == (2, 3)
    nc1, ratio = direct(phi[1, 2].T / np.sqrt(N), labels)
    assert a.nc1[1, 2] == pytest.approx(nc1) and a.variance_ratio[1, 2] == pytest.approx(ratio)


def test_codes_route_matches_sampled_independent_neurons():
    """Neurons drawn from a code mixture: the codes' G and within variance are the population values
    of the activations; their NC1 is O(1/N) and matches the independent-neuron formula."""
    rng = np.random.default_rng(2)
    w = np.array([0.5, 0.3, 0.2])
    s = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.8], [0.7, 0.7, 0.1]])
    v = np.array([[0.01, 0.02, 0.02], [0.03, 0.01, 0.01], [0.02, 0.02, 0.04]])
    labels = np.repeat(np.arange(3), [400, 200, 200])
    N = 4000
    code = rng.choice(3, size=N, p=w)
    phi = s[code][:, labels] + np.sqrt(v[code][:, labels]) * rng.normal(size=(N, len(labels)))
    sampled = dcol.collapse_from_activations(phi, labels)
    theory = dcol.collapse_from_codes(w, s, labels, v, width=N)
    assert float(dcol.collapse_from_codes(w, s, labels, v).nc1) == 0.0  # N -> inf
    assert float(sampled.within) == pytest.approx(float(theory.within), rel=0.02)
    assert float(sampled.between) == pytest.approx(float(theory.between), rel=0.05)
    assert float(sampled.etf_distance) == pytest.approx(float(theory.etf_distance), abs=0.02)
    assert float(sampled.nc1) == pytest.approx(float(theory.nc1), rel=0.2)
    assert float(theory.nc1) < 1e-3 < float(theory.variance_ratio)
    no_var = dcol.collapse_from_codes(w, s, labels)
    assert np.isnan(no_var.nc1) and no_var.etf_distance == pytest.approx(theory.etf_distance)


def test_codes_route_against_the_theorys_own_kernel_with_outliers():
    """The theory's class-structured kernel (classpredict.train_kernel, ReLU outliers included) and
    its codes give the same class-mean Gram matrix up to the empirical class means' O(1/n_c) share
    of the within-class variance, and the same within-class variance up to the factor 1 - 1/n_c."""
    from widebayes.theory.nonlazy.classpredict import CodeMixture, Outliers, train_kernel

    rng = np.random.default_rng(4)
    w, s, v = np.array([0.6, 0.4]), rng.uniform(0, 1, (2, 3)), rng.uniform(0.01, 0.05, (2, 3))
    Kout = np.array([0.3, 0.0, 0.1])
    labels = np.repeat(np.arange(3), [6, 3, 3])
    n = np.bincount(labels)
    mix = CodeMixture(w, np.zeros((2, 1)), np.zeros((2, 1, 1)), np.zeros((2, 3)), s, v)
    K = train_kernel(mix, labels, Outliers(np.zeros(3), np.zeros((3, 1)), Kout))
    kern = dcol.collapse_from_kernel(K, labels)
    codes = dcol.collapse_from_codes(w, s, labels, v, outlier_kernel_mass=Kout)
    vbar = w @ v  # per class
    assert float(kern.within) == pytest.approx(float(np.sum(n / n.sum() * vbar * (1 - 1 / n))))
    assert float(codes.within) == pytest.approx(float(np.sum(n / n.sum() * vbar)))
    assert float(kern.between) == pytest.approx(float(codes.between) + np.sum(vbar / n) * (1 - 1 / 3) / 3)
    assert float(kern.nc1) == pytest.approx(0.0, abs=1e-12)  # a mean kernel has no finite-width NC1


def test_summary_over_draws_has_mean_and_mcse():
    rng = np.random.default_rng(3)
    labels = np.arange(12) % 3
    phi = rng.normal(size=(2, 40, 8, 12))
    out = dcol.summarize(dcol.collapse_from_activations(phi, labels))
    assert set(out) == set(dcol.Collapse._fields)
    per_draw = dcol.collapse_from_activations(phi, labels).nc1
    assert out["nc1"]["mean"] == pytest.approx(per_draw.mean())
    assert 0 < out["nc1"]["mcse"] < 3 * per_draw.std() / np.sqrt(per_draw.size) + 1e-12


@pytest.fixture(scope="module")
def sigmoid_run(tmp_path_factory):
    """A seconds-long non-lazy sigmoid run on the toy task; its theory has redundant codes."""
    folder = tmp_path_factory.mktemp("collapse_sigmoid")
    cfg = resolve({
        "task": {"kind": "orthogonal", "num_train": 24, "input_dim": 32, "num_test": 0,
                 "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5},
        "network": {"depth": 1, "width": 16, "activation": "sigmoid", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"step_size": 0.005, "num_steps": 300, "burn_in": 0, "thin": 20, "num_chains": 2,
                    "seed": 3, "progress": False},
    })
    sample_experiment(cfg, out_dir=folder)
    report.write_report(folder)
    return folder


def test_report_has_neural_collapse_for_samples_and_theory(sigmoid_run):
    data = json.loads((sigmoid_run / "report" / "report.json").read_text())
    nc = data["neural_collapse"]
    assert set(nc["layers"]) == {"layer_1"}
    rows = {row["source"]: row for row in nc["layers"]["layer_1"]}
    assert {"samples", "samples, posterior-mean kernel", "NNGP"} <= set(rows)
    assert set(rows["samples"]["mcse"]) == set(dcol.Collapse._fields)
    assert any(s.startswith("theory mean kernel [") for s in rows)
    codes = [row for s, row in rows.items() if s.startswith("theory codes [")]
    assert len(codes) == 1 and codes[0]["level"] == "codes"
    assert 0 <= codes[0]["values"]["etf_distance"] <= 2
    assert rows["samples"]["values"]["variance_ratio"] > 0
    md = (sigmoid_run / "report" / "report.md").read_text()
    assert "### Neural collapse" in md and "| 1 | samples |" in md


def test_theory_layer_codes_reads_each_layers_records():
    from widebayes.report.coding import theory_layer_codes

    bulk = {"code": "110", "fraction": 1.0, "class_means": [1.0, 1.0, 0.0], "kind": "bulk"}
    outlier = {"code": "100", "fraction": 0.01, "kind": "outlier"}
    lower = {"code": "011", "fraction": 1.0, "class_means": [0.0, 1.0, 1.0]}
    deep = {"codes": [bulk, outlier],
            "layers": [{"layer": 1, "codes": [lower]}, {"layer": 2, "codes": [bulk]}]}
    assert theory_layer_codes(deep, 1, 2) == [lower] and theory_layer_codes(deep, 2, 2) == [bulk]
    flat = {"codes": [bulk, outlier]}  # no per-layer records: the feature layer's codes only
    assert theory_layer_codes(flat, 2, 2) == [bulk] and theory_layer_codes(flat, 1, 2) == []
    assert theory_layer_codes(None, 1, 1) == []


def test_nc1_is_nan_where_the_gram_matrix_is_not_finite():
    """A stopped chain's NaN draws (or a theory code without class means) give NaN, not a LinAlgError."""
    from widebayes.diagnostics.collapse import nc1_from_moments

    G = np.stack([np.eye(3) - 1 / 3, np.full((3, 3), np.nan)])
    out = nc1_from_moments(G, np.stack([np.eye(3), np.eye(3)]))
    assert np.isfinite(out[0]) and np.isnan(out[1])
