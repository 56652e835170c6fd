"""Diagnostics on synthetic arrays with known answers (exact tier; no sampling)."""

import numpy as np
import pytest

from widebayes.diagnostics import codes, convergence, kernels, predictor, readout, symmetry
from widebayes.diagnostics.preactivations import invert_activation

LABELS = np.array([0, 0, 0, 0, 1, 1, 2, 2])  # class sizes 1/2, 1/4, 1/4 as in the toy task


def planted_activations(patterns, labels=LABELS, high=0.9, low=0.1, noise=0.02, seed=0):
    """phi (neuron, input): neuron i is high on the classes of patterns[i], low elsewhere."""
    rng = np.random.default_rng(seed)
    active = np.array([[int(ch) for ch in p] for p in patterns], bool)  # neuron, class
    phi = np.where(active[:, labels], high, low)
    return phi + noise * rng.standard_normal(phi.shape)


# ------------------------------------------------------------------------------------ codes
def test_codes_of_planted_activations():
    patterns = ["110", "110", "101", "011", "111", "000"]
    phi = planted_activations(patterns)
    s = codes.class_means(phi, LABELS)
    ids = codes.code_ids(s, 0.5)
    assert [codes.code_string(i, 3) for i in ids] == patterns
    assert codes.code_id_of("110", 3) == ids[0]
    assert codes.code_id_of([1, 1, 0], 3) == ids[0]
    summary = codes.summarize_codes(ids[None], s[None], 0.5)
    assert summary.codes[0] == "110"
    np.testing.assert_allclose(summary.fraction[0], 2 / 6)
    np.testing.assert_allclose(summary.fraction.sum(), 1.0)
    np.testing.assert_allclose(summary.class_means[0], [0.9, 0.9, 0.1], atol=0.05)


def test_class_means_broadcast_over_chain_and_draw():
    phi = np.stack([planted_activations(["100", "011"], seed=k) for k in range(6)]).reshape(2, 3, 2, 8)
    s = codes.class_means(phi, LABELS)
    assert s.shape == (2, 3, 2, 3)
    ids = codes.code_ids(s, 0.5)
    assert np.all(ids[..., 0] == codes.code_id_of("100", 3))
    assert np.all(ids[..., 1] == codes.code_id_of("011", 3))


def test_nan_draw_has_no_code_and_a_missing_class_is_inactive():
    s = np.array([[np.nan, np.nan, np.nan], [0.9, np.nan, 0.1]])
    assert codes.code_ids(s, 0.5).tolist() == [-1, codes.code_id_of("100", 3)]
    assert codes.code_fractions(np.array([[-1, -1]]), []).shape == (1, 0)


def test_default_thresholds():
    assert codes.default_threshold("sigmoid") == 0.5
    assert codes.default_threshold("tanh") == 0.0
    assert codes.default_threshold("linear") == 0.0
    # relu, z ~ N(0, 1): mean 1/sqrt(2 pi), variance 1/2 - 1/(2 pi)
    mean, sd = 1 / np.sqrt(2 * np.pi), np.sqrt(0.5 - 1 / (2 * np.pi))
    assert codes.default_threshold("relu") == pytest.approx(mean + 2 * sd, rel=1e-6)
    assert codes.default_threshold("relu", prior_var=4.0) == pytest.approx(2 * (mean + 2 * sd), rel=1e-6)


def test_neurons_ordered_by_code_then_strength():
    ids = np.array([3, 5, 3, 6, 5])
    strength = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    order = codes.order_neurons(ids, strength, codes=[5, 3, 6])
    assert order.tolist() == [4, 1, 2, 0, 3]
    assert codes.code_boundaries(ids[order]) == [(5, 0, 2), (3, 2, 4), (6, 4, 5)]
    assert codes.codes_by_use(ids) == [3, 5, 6]


def test_code_agreement_train_test():
    assert codes.code_agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75


# ------------------------------------------------------------------------------------ schemes
def redundant_readouts(rng, draws=5, N=100):
    centers = {codes.code_id_of(c, 3): v for c, v in
               {"110": (1.66, 1.45, -0.27), "101": (1.66, -0.27, 1.45), "011": (-0.3, 1.5, 1.5),
                "111": (1.1, 1.25, 1.25)}.items()}
    keys = list(centers)
    ids = rng.choice(keys, size=(draws, N), p=[0.3, 0.3, 0.3, 0.1])
    a = np.array([[centers[k] for k in row] for row in ids]) + 0.1 * rng.standard_normal((draws, N, 3))
    return a, ids


def analog_readouts(rng, draws=5, N=100):
    a = rng.standard_normal((draws, N, 3)) * np.array([1.0, 0.7, 0.5])
    response = a + 0.3 * rng.standard_normal(a.shape)  # class means follow the readout
    return a, codes.code_ids(response, 0.0)


def sparse_readouts(rng, draws=5, N=100):
    a = 0.1 * rng.standard_normal((draws, N, 3)) + np.array([0.12, -0.06, -0.06])
    ids = np.zeros((draws, N), int)
    for c in range(3):
        direction = -0.5 * np.ones(3)
        direction[c] = 1.0
        a[:, c] = np.sqrt(N) * 0.8 * direction
        ids[:, c] = 1 << c
    return a, ids


@pytest.mark.parametrize("make, scheme", [(redundant_readouts, "redundant"), (analog_readouts, "analog"),
                                          (sparse_readouts, "sparse")])
def test_planted_schemes_are_classified(make, scheme):
    a, ids = make(np.random.default_rng(1))
    result = codes.classify_scheme(a, ids)
    assert result.scheme == scheme
    assert result.agreement == 1.0
    if scheme == "sparse":
        assert result.num_outliers == 3
        assert result.outlier_ratio > result.ratio_threshold
    else:
        assert result.num_outliers == 0
    if scheme == "redundant":
        assert result.within_code_variance < 0.05
        assert result.num_shared_codes == 4
    if scheme == "analog":
        assert result.within_code_variance > codes.REDUNDANT_MAX_WITHIN


def test_outliers_need_a_sqrt_n_gap():
    norms = np.ones((1, 64, 1))
    norms[0, 0, 0] = 3.0  # three times the bulk: not an outlier
    norms[0, 1, 0] = 30.0  # ~ sqrt(N) x 4: an outlier
    out = codes.readout_outliers(norms)
    assert out[0].tolist() == [False, True] + [False] * 62
    assert codes.outlier_ratio_threshold(64) == 4.0
    assert codes.outlier_ratio_threshold(400) == 10.0


# ------------------------------------------------------------------------------------ readout
def test_outlier_mass_and_bulk():
    rng = np.random.default_rng(2)
    a, ids = sparse_readouts(rng, draws=2, N=100)
    out = codes.readout_outliers(a)
    ob = readout.outlier_bulk(a, out, ids, 3)
    expected = 100 * 0.64 * 1.5 / 100  # |a|^2 / N with |direction|^2 = 1.5
    np.testing.assert_allclose(ob.outlier_mass, expected, rtol=1e-12)
    assert ob.num_outliers == 3
    np.testing.assert_allclose(ob.bulk_mean, [0.12, -0.06, -0.06], atol=0.02)
    assert ob.outlier_codes == {"100": 1.0, "010": 1.0, "001": 1.0}


def test_histograms_are_densities_and_theory_integrates_to_one():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 10, 50, 2))
    for h in readout.readout_histograms(a, bins=30):
        assert np.sum(h.density * np.diff(h.edges)) == pytest.approx(1.0)
    grid = np.linspace(-10, 10, 4001)
    theory = {"codes": [{"code": "10", "fraction": 0.7, "readout": [1.0, -1.0]},
                        {"code": "01", "fraction": 0.3, "readout": [-1.0, 1.0]}]}
    dens, label = readout.theory_readout_density(grid, theory, 0.04, output=0)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, rel=1e-6)
    assert label.startswith("codes")
    dens, _ = readout.theory_readout_density(grid, {"readout_second_moment": [[2.0, 0], [0, 1.0]]}, 1.0, 0)
    assert np.trapezoid(dens * grid**2, grid) == pytest.approx(2.0, rel=1e-4)
    assert readout.theory_readout_density(grid, {}, 1.0, 0) is None


def test_readout_second_moment_and_norms():
    a = np.ones((2, 3, 4, 2)) * np.array([1.0, 2.0])
    np.testing.assert_allclose(readout.readout_second_moment(a), [[1, 2], [2, 4]])
    np.testing.assert_allclose(readout.readout_norm_per_class(a), np.broadcast_to([1.0, 4.0], (2, 3, 2)))


# ------------------------------------------------------------------------------------ symmetry
def test_code_change_rate_and_kept_fraction():
    ids = np.zeros((2, 5, 4), int)
    ids[0, 2:, 1] = 1  # neuron 1 of chain 0 changes once in four pairs
    ids[1, ::2, 2] = 3  # neuron 2 of chain 1 changes every pair
    rate = symmetry.code_change_rate(ids)
    assert rate[0].tolist() == [0, 0.25, 0, 0]
    assert rate[1].tolist() == [0, 0, 1.0, 0]
    assert symmetry.code_kept_fraction(ids) == 6 / 8
    assert symmetry.mean_change_rate(ids) == pytest.approx(1.25 / 8)


def test_trace_neurons_cover_codes_and_draw_times():
    ids = np.array([0, 0, 0, 1, 1, 2])
    strength = np.array([1.0, 3.0, 2.0, 1.0, 5.0, 1.0])
    assert symmetry.trace_neurons(ids, strength, max_neurons=4) == [1, 4, 5, 2]
    t = symmetry.draw_times(num_draws=3, num_steps=1030, thin=100, paper_time_per_step=2.0)
    np.testing.assert_allclose(t, [2 * 830, 2 * 930, 2 * 1030])


# ------------------------------------------------------------------------------------ kernels
def test_cka_properties():
    rng = np.random.default_rng(4)
    X, Z = rng.standard_normal((20, 5)), rng.standard_normal((20, 7))
    K, L = X @ X.T, Z @ Z.T
    assert kernels.cka(K, K) == pytest.approx(1.0)
    assert kernels.cka(K, 3.5 * K) == pytest.approx(1.0)
    assert kernels.cka(K, L) == pytest.approx(kernels.cka(2.0 * K + 7.0, 0.1 * L))  # scale, constant
    assert kernels.cka(K, L) == pytest.approx(kernels.cka(L, K))
    assert 0.0 <= kernels.cka(K, L) < 1.0
    assert np.isnan(kernels.cka(np.ones((4, 4)), K[:4, :4]))  # a constant kernel centres to zero
    stack = np.stack([K, L])
    np.testing.assert_allclose(kernels.cka(stack, K), [1.0, kernels.cka(L, K)])


def test_target_alignment_and_learned_part():
    labels = np.repeat([0, 1, 2], 4)
    Y = np.eye(3)[labels]
    assert kernels.target_alignment(Y @ Y.T + 0.0, Y) == pytest.approx(1.0)
    assert kernels.target_alignment(np.eye(12), Y) < 0.6
    np.testing.assert_allclose(kernels.learned_part(np.eye(3) * 2, np.eye(3)), np.eye(3))
    assert kernels.relative_difference(np.eye(3) * 1.1, np.eye(3)) == pytest.approx(0.1)


def test_gram_and_class_order():
    phi = np.arange(6.0).reshape(1, 2, 3)  # draw, neuron, input
    np.testing.assert_allclose(kernels.gram(phi)[0], phi[0].T @ phi[0] / 2)
    labels = np.array([2, 0, 1, 0, 2, 1])
    assert kernels.class_order(labels).tolist() == [1, 3, 2, 5, 0, 4]
    assert len(kernels.class_order(np.repeat([0, 1], 500), max_inputs=100)) == 100


# ------------------------------------------------------------------------------------ predictor
def test_bias_variance_split():
    f = np.zeros((2, 2, 3, 1))
    f[:, 0] = 1.0  # half the draws 1, half 0: mean 0.5, variance 0.25
    Y = np.array([[1.0], [0.0], [0.5]])
    err = predictor.gen_error_of(f, Y)
    np.testing.assert_allclose(err.bias, [(0.25 + 0.25 + 0.0) / 3])
    np.testing.assert_allclose(err.variance, [0.25])
    np.testing.assert_allclose(err.total, err.bias + err.variance)
    assert predictor.accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), np.eye(2)) == 1.0
    assert predictor.accuracy(np.array([[0.9], [-0.3]]), np.array([[1.0], [-1.0]])) == 1.0


# ------------------------------------------------------------------------------------ convergence
def ar1(rng, rho, shape):
    x = np.zeros(shape)
    x[:, 0] = rng.standard_normal(shape[0])
    for t in range(1, shape[1]):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(shape[0])
    return x


def test_well_mixed_chains_give_no_warning():
    rng = np.random.default_rng(5)
    table = convergence.convergence_table({"x": rng.standard_normal((4, 500))})
    assert table["x"]["rhat"] < 1.01 and table["x"]["ess_bulk"] > 1000
    assert convergence.convergence_warnings(table) == []


def test_non_mixing_chains_trigger_rhat_and_ess_warnings():
    rng = np.random.default_rng(6)
    stuck = rng.standard_normal((2, 400)) + np.array([[0.0], [3.0]])
    slow = ar1(rng, 0.99, (2, 400))
    frozen = np.array([[0.3] * 50, [0.5] * 50])
    table = convergence.convergence_table({"stuck": stuck, "slow": slow, "frozen": frozen})
    lines = convergence.convergence_warnings(table)
    assert any(line.startswith("stuck: R-hat") for line in lines)
    assert any(line.startswith("slow:") and "ESS" in line for line in lines)
    assert table["frozen"]["rhat"] == np.inf and any(line.startswith("frozen:") for line in lines)


def test_invariant_observables_ignore_neuron_permutations():
    rng = np.random.default_rng(7)
    a, phi = rng.standard_normal((2, 6, 10, 3)), rng.random((2, 6, 10, 8))
    Y, ids = np.eye(3)[LABELS], rng.integers(0, 8, (2, 6, 10))
    perm = rng.permutation(10)
    one = convergence.invariant_observables(np.zeros((2, 6)), a, phi, Y, ids, [1, 2], ["100", "010"])
    two = convergence.invariant_observables(np.zeros((2, 6)), a[:, :, perm], phi[:, :, perm], Y,
                                            ids[:, :, perm], [1, 2], ["100", "010"])
    assert set(one) == {"loss", "readout_norm[0]", "readout_norm[1]", "readout_norm[2]", "kernel_alignment",
                        "code_fraction[100]", "code_fraction[010]"}
    for name in one:
        np.testing.assert_allclose(one[name], two[name])


# ------------------------------------------------------------------------------------ preactivations
def test_sigmoid_inversion_round_trip():
    from widebayes.activations import get_activation

    z = np.linspace(-3, 3, 13)
    for name in ("sigmoid", "tanh", "softplus", "linear"):
        recovered, clipped = invert_activation(get_activation(name).phi_np(z), name)
        np.testing.assert_allclose(recovered, z, atol=1e-6)
        assert clipped == 0.0
    assert invert_activation(np.ones(3), "relu") is None
    z_sat, clipped = invert_activation(np.array([1.0, 0.0, 0.5]), "sigmoid")
    assert np.all(np.isfinite(z_sat)) and clipped == pytest.approx(2 / 3)
