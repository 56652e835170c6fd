"""Layer-resolved kernels of lazy networks and their geometry (perspective Figs. 6-7, issue 17 item 3).

Default tier: the test-point extension of kernel adaptation, the per-layer labels of the theory's
kernels, the geometry read from kernels, and the NNGP's trends across layers (exact statements).
Slow tier: sampled per-layer kernels (training and test inputs) against the theory.
"""

import numpy as np
import pytest

from widebayes.diagnostics.geometry import pair_geometry
from widebayes.studies import layer_geometry as lg
from widebayes.theory import bpkr
from widebayes.theory.kernel_adaptation import solve_kernels
from widebayes.theory.nngp import input_kernel


def _data(P=12, Pt=6, N0=40, m=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P + Pt, N0))
    Y = np.sign(rng.standard_normal((P, m)))
    return X, Y, input_kernel(X)


@pytest.mark.parametrize("method", ["perturbative", "saddle", "linear_mean"])
def test_test_points_leave_the_training_block_unchanged_linear(method):
    """Linear phi: adding unobserved inputs to the joint kernel changes no training block (exact)."""
    X, Y, K0 = _data()
    P, g = len(Y), [1.0, 0.7, 1.2]
    alone = solve_kernels(K0[:P, :P], Y, "linear", g, 30, 0.1, method).layer_kernels
    joint = solve_kernels(K0, Y, "linear", g, 30, 0.1, method).layer_kernels
    assert joint.shape == (3, len(X), len(X))
    np.testing.assert_allclose(joint[:, :P, :P], alone, rtol=1e-9, atol=1e-12)


def test_linear_mean_test_blocks_are_bpkr_cross_kernels():
    """The joint 'linear_mean' kernels' cross and test blocks are BPKR's (mean_layer_kernels)."""
    X, Y, K0 = _data()
    P, s2, N, T = len(Y), [0.8, 1.1], 30, 0.05
    joint = solve_kernels(K0, Y, "linear", [*s2, 0.9], N, T, "linear_mean").layer_kernels
    U = bpkr.solve_U(K0[:P, :P], Y, 2, N, T, sigma_w2=s2, sigma_a2=0.9).U
    mk = bpkr.mean_layer_kernels(K0[:P, :P], Y, U, N, T, s2, 0.9, K0[:P, P:], K0[P:, P:])
    np.testing.assert_allclose(joint[:, :P, P:], mk.cross, rtol=1e-10)
    np.testing.assert_allclose(joint[:, P:, P:], mk.test, rtol=1e-10)


def test_test_points_relu_training_block_within_monte_carlo():
    """ReLU: the joint training block equals the training-only one up to Monte Carlo error: their
    difference is no larger than two seeds' difference of the training-only solution (x 2), and
    both stay below 25% of the learned part in Frobenius norm (measured at 2^16 samples: joint
    vs alone 13% / 7% in layers 1 / 2, seed 0 vs seed 1 12% / 6%)."""
    X, Y, K0 = _data()
    P, g, N, T = len(Y), [1.0, 1.0, 1.0], 30, 0.1
    nngp = solve_kernels(K0[:P, :P], Y, "relu", g, N, T, "nngp").layer_kernels
    a = solve_kernels(K0[:P, :P], Y, "relu", g, N, T, "perturbative").layer_kernels
    b = solve_kernels(K0[:P, :P], Y, "relu", g, N, T, "perturbative", seed=1).layer_kernels
    j = solve_kernels(K0, Y, "relu", g, N, T, "perturbative").layer_kernels[:, :P, :P]
    for layer in (1, 2):
        learned = np.linalg.norm(a[layer] - nngp[layer])
        assert np.linalg.norm(j[layer] - a[layer]) < 2 * np.linalg.norm(b[layer] - a[layer])
        assert np.linalg.norm(j[layer] - a[layer]) < 0.25 * learned


def test_too_few_kernel_rows_is_an_error():
    _, Y, K0 = _data()
    with pytest.raises(ValueError, match="row per row of Y"):
        solve_kernels(K0[:5, :5], Y, "relu", [1.0, 1.0], 30, 0.1, "nngp")


def test_layer_geometry_matches_point_clouds():
    """Signal and dimension from a kernel equal those of the point clouds it is made of."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 7)
    Phi = rng.standard_normal((21, 15)) + 2.0 * rng.standard_normal((3, 15))[labels]
    Phi2 = np.tanh(Phi) * np.array([1.0, 3.0] * 7 + [1.0])
    geo = lg.layer_geometry(np.stack([Phi @ Phi.T, Phi2 @ Phi2.T]) / 15, labels)
    for layer, F in enumerate([Phi, Phi2]):
        pairs = [pair_geometry(F[labels == a], F[labels == b]) for a in range(3) for b in range(3) if a != b]
        assert geo.signal[layer] == pytest.approx(np.mean([p.dist2 for p in pairs]), rel=1e-10)
        assert geo.signal_sd[layer] == pytest.approx(np.std([p.dist2 for p in pairs]), rel=1e-10)
        assert geo.dimension[layer] == pytest.approx(np.mean([p.Da for p in pairs]), rel=1e-10)


def test_even_odd_targets():
    Y = lg.even_odd_targets(np.array([0, 1, 2, 3, 2]))
    np.testing.assert_array_equal(Y, [[1, 0, 0, 0, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 1],
                                      [0, 0, 0, 1, 0], [0, 0, 1, 0, 1]])


def test_trend_words():
    assert lg.trend([1.0, 1.001, 0.999]) == "flat"
    assert lg.trend([1.0, 1.2, 1.5]) == "rises"
    assert lg.trend([2.0, 1.5, 1.0]) == "falls"
    assert lg.trend([1.0, 1.5, 1.2]) == "non-monotonic"


# ----------------------------------------------------------------------------- the theory output


def _lazy_experiment(activation, depth=3):
    from widebayes.config import resolve
    from widebayes.experiment import build_experiment

    return build_experiment(resolve({
        "task": {"kind": "xor", "num_train": 10, "num_test": 4, "seed": 0},
        "network": {"depth": depth, "width": 20, "activation": activation, "readout": "lazy",
                    "temperature": 0.1},
        "sampler": {"num_steps": 10, "burn_in": 0, "thin": 1, "progress": False},
    }))


def test_lazy_theory_labels_every_layer():
    """ReLU, L = 3: kernel_train's hidden layers 1..L-1 are the O(1/N) kernel adaptation, layer L
    BPKR's heuristic feature kernel; the report names each accordingly (not 'NNGP')."""
    from widebayes.report.kernels import KERNEL_ADAPTATION, NNGP, THEORY_SOURCES, theory_layer_kernels
    from widebayes.theory.predict import predictions

    th = predictions(_lazy_experiment("relu"))
    K, K_ad, K_nngp = (np.asarray(th[k]) for k in ("kernel_train", "kernel_train_perturbative",
                                                    "kernel_train_nngp"))
    assert th["kernel_train_methods"] == ["input", "perturbative", "perturbative", "bpkr-heuristic"]
    np.testing.assert_array_equal(K[1:3], K_ad[1:3])
    assert all(np.abs(K[layer] - K_nngp[layer]).max() > 0 for layer in (1, 2, 3))
    labelled = theory_layer_kernels(th, K)
    assert labelled.sources == ["input kernel", KERNEL_ADAPTATION, KERNEL_ADAPTATION,
                                THEORY_SOURCES["bpkr-heuristic"]]
    assert NNGP not in labelled.sources
    lin = predictions(_lazy_experiment("linear", depth=2))
    assert lin["kernel_train_methods"] == ["input", "bpkr", "bpkr"]


# ----------------------------------------------------------------------------- NNGP trends (Fig. 7)


@pytest.fixture(scope="module")
def digits():
    from widebayes.tasks import make_task

    return make_task({"kind": "mnist", "num_classes": 4, "num_train": 24, "num_test": 40, "seed": 0})


def test_nngp_trends_linear_flat_relu_dimension_rises(digits):
    """Perspective Fig. 7, infinite width: linear networks keep signal and dimension (the NNGP
    kernels are multiples of K0: exact), ReLU's NNGP raises the dimension with depth."""
    d = digits
    lin = lg.geometry_comparison(d.X_train, d.Y_train, d.X_test, d.labels_test, "linear", 4, 0.04,
                                 100, 0.01, methods=("nngp",)).geometry["nngp"]
    np.testing.assert_allclose(lin.signal, lin.signal[0], rtol=1e-9)
    np.testing.assert_allclose(lin.dimension, lin.dimension[0], rtol=1e-9)
    relu = lg.geometry_comparison(d.X_train, d.Y_train, d.X_test, d.labels_test, "relu", 4, 0.04,
                                  100, 0.01, methods=("nngp",)).geometry["nngp"]
    assert lg.trend(relu.dimension, rtol=0.0) == "rises"
