"""Few-shot learning of held-out classes (issue 17, item 1) and npz target matrices (item 3).

Held-out classes out of training and test and in the pool; the prototype error from kernel
entries against explicit features; the few-shot SNR against a Monte Carlo of Gaussian manifolds;
the npz ``Y``/``Y_test`` path and its refusals; one end-to-end run through the command with the
report's ``fewshot_heldout`` keys.  The slow agreement test (samples against the lazy theory's
mean kernels on the held-out classes) is marked ``slow``.
"""

import json

import numpy as np
import pytest

from widebayes.cli import main
from widebayes.diagnostics import fewshot as dfew
from widebayes.diagnostics import geometry as dgeo
from widebayes.errors import InputError
from widebayes.tasks import make_task, task_sizes

MNIST = {"kind": "mnist", "num_classes": 3, "num_train": 30, "num_test": 12, "input_dim": 40}


def _raises(cfg, key):
    with pytest.raises(InputError) as err:
        make_task(cfg)
    assert err.value.key == key, str(err.value)
    return err.value


# ----------------------------------------------------------------------------- held-out pool


def test_heldout_classes_are_out_of_training_and_test_and_in_the_pool():
    cfg = {**MNIST, "heldout_classes": [7, 4], "heldout_per_class": 9}
    d = make_task(cfg)
    assert set(d.labels_train) == {0, 1, 2} and set(d.labels_test) <= {0, 1, 2}
    np.testing.assert_array_equal(d.labels_heldout, [4] * 9 + [7] * 9)
    assert d.X_heldout.shape == (18, 40)
    np.testing.assert_allclose(np.linalg.norm(d.X_heldout, axis=1), np.sqrt(40))  # normalised like X
    plain = make_task(MNIST)  # the trained classes' data is unchanged by holding others out
    np.testing.assert_array_equal(plain.X_train, d.X_train)
    np.testing.assert_array_equal(plain.X_test, d.X_test)
    assert plain.X_heldout is None
    # the pool is not any training or test input
    both = np.concatenate([d.X_train, d.X_test])
    assert np.min(np.linalg.norm(d.X_heldout[:, None] - both[None], axis=2)) > 1e-6
    assert task_sizes(cfg).num_heldout == 18


def test_heldout_pool_of_an_npz(tmp_path):
    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((40, 6)), np.arange(40) % 4
    np.savez(tmp_path / "d.npz", X=X, labels=labels)
    d = make_task({"kind": "npz", "path": str(tmp_path / "d.npz"), "heldout_classes": [3],
                   "heldout_per_class": 6, "normalize": False})
    assert set(d.labels_train) == {0, 1, 2} and len(d.labels_train) == 30  # every row of a trained class
    assert d.Y_train.shape == (30, 3)
    np.testing.assert_array_equal(d.labels_heldout, [3] * 6)
    assert all(any(np.array_equal(x, y) for y in X[labels == 3]) for x in d.X_heldout)


@pytest.mark.parametrize("extra, key, words", [
    ({"heldout_classes": [10]}, "task.heldout_classes", "unknown class 10"),
    ({"heldout_classes": [-1]}, "task.heldout_classes", "unknown class -1"),
    ({"heldout_classes": [0, 1, 2]}, "task.heldout_classes", "every trained class"),
    ({"heldout_classes": [2, 5]}, "task.heldout_classes", "class 2 is trained"),
    ({"heldout_classes": [5, 5]}, "task.heldout_classes", "twice"),
    ({"heldout_classes": 5}, "task.heldout_classes", "list"),
    ({"heldout_classes": [5.0]}, "task.heldout_classes", "list"),
    ({"heldout_classes": [5], "heldout_per_class": 1}, "task.heldout_per_class", ">= 2"),
    ({"heldout_classes": [5], "heldout_per_class": 10**6}, "task.heldout_per_class", "available"),
])
def test_heldout_refusals_name_the_key(extra, key, words):
    assert words in str(_raises({**MNIST, **extra}, key))


def test_heldout_refusals_of_an_npz(tmp_path):
    X, labels = np.ones((8, 3)), np.array([0, 1, 2, 3] * 2)
    np.savez(tmp_path / "d.npz", X=X, labels=labels)
    cfg = {"kind": "npz", "path": str(tmp_path / "d.npz")}
    assert "every class" in str(_raises({**cfg, "heldout_classes": [0, 1, 2, 3]}, "task.heldout_classes"))
    assert "unknown class 4" in str(_raises({**cfg, "heldout_classes": [4]}, "task.heldout_classes"))
    assert "class 1 is trained" in str(_raises({**cfg, "heldout_classes": [1]}, "task.heldout_classes"))
    with pytest.raises(InputError) as err:
        task_sizes({**cfg, "heldout_classes": [1]})
    assert err.value.key == "task.heldout_classes"
    _raises({"kind": "orthogonal", "num_train": 4, "heldout_classes": [1]}, "task.heldout_classes")


# ----------------------------------------------------------------------------- npz targets


def test_npz_target_matrices_beside_and_instead_of_labels(tmp_path):
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((12, 5)), rng.standard_normal((12, 3))
    labels = np.arange(12) % 2
    np.savez(tmp_path / "both.npz", X=X, labels=labels, Y=Y, X_test=X[:4], labels_test=labels[:4],
             Y_test=Y[:4])
    d = make_task({"kind": "npz", "path": str(tmp_path / "both.npz"), "num_train": 6,
                   "class_ratios": [0.5, 0.5]})
    np.testing.assert_array_equal(d.labels_train, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(d.Y_train, Y[[0, 2, 4, 1, 3, 5]])  # Y follows the selected rows
    np.testing.assert_array_equal(d.Y_test, Y[:4][[0, 2, 1, 3]])
    digits = np.arange(12) % 4  # four one-hot digits plus an even/odd output (perspective Fig. 6D)
    Y6 = np.column_stack([np.eye(4)[digits], digits % 2])
    np.savez(tmp_path / "only.npz", X=rng.standard_normal((12, 20)), Y=Y6)
    only = {"kind": "npz", "path": str(tmp_path / "only.npz")}
    d = make_task(only)
    np.testing.assert_array_equal(d.Y_train, Y6)
    assert set(d.labels_train) == {0} and d.X_test.shape == (0, 20) and d.Y_test.shape == (0, 5)
    assert task_sizes(only).num_outputs == 5
    # the theory uses Y as given
    from widebayes.config import resolve
    from widebayes.experiment import build_experiment
    from widebayes.theory.predict import predictions

    cfg = resolve({"task": only, "network": {"width": 50, "activation": "linear", "readout": "lazy",
                                             "temperature": 0.01}, "sampler": {}})
    exp = build_experiment(cfg)
    np.testing.assert_array_equal(exp.data.Y_train, Y6)
    out = predictions(exp)
    assert np.shape(out["readout_second_moment"]) == (5, 5)


@pytest.mark.parametrize("arrays, extra, key, words", [
    ({"X": np.ones((4, 3)), "Y": np.ones((3, 2))}, {}, "task.path", "row per row"),
    ({"X": np.ones((4, 3)), "Y": np.ones(4)}, {}, "task.path", "(4, m)"),
    ({"X": np.ones((4, 3)), "Y": np.ones((4, 2)), "X_test": np.ones((2, 3)),
      "Y_test": np.ones((2, 3))}, {}, "task.path", "as in Y"),
    ({"X": np.ones((4, 3)), "Y": np.ones((4, 2)), "X_test": np.ones((2, 3))}, {}, "task.path",
     "both X_test and Y_test"),
    ({"X": np.ones((4, 3)), "labels": np.zeros(4, int), "Y_test": np.ones((2, 2))}, {}, "task.path",
     "not Y"),
    ({"X": np.ones((4, 3))}, {}, "task.path", "neither"),
    ({"X": np.ones((4, 3)), "Y": np.full((4, 2), np.nan)}, {}, "task.path", "NaN"),
    ({"X": np.ones((4, 3)), "Y": np.ones((4, 2))}, {"y_plus": 2.0}, "task.y_plus", "holds the targets Y"),
    ({"X": np.ones((4, 3)), "Y": np.ones((4, 2))}, {"class_ratios": [1.0]}, "task.class_ratios",
     "needs class labels"),
    ({"X": np.ones((4, 3)), "Y": np.ones((4, 2))}, {"heldout_classes": [1]}, "task.heldout_classes",
     "needs class labels"),
])
def test_npz_target_refusals(tmp_path, arrays, extra, key, words):
    np.savez(tmp_path / "d.npz", **arrays)
    assert words in str(_raises({"kind": "npz", "path": str(tmp_path / "d.npz"), **extra}, key))


def test_a_bad_npz_target_is_one_line_and_exit_2(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", X=np.ones((4, 3)), Y=np.ones((3, 2)))
    (tmp_path / "e.toml").write_text(f'[task]\nkind = "npz"\npath = "{tmp_path / "d.npz"}"\n')
    assert main(["sample", str(tmp_path / "e.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("widebayes: error: task.path")


# ----------------------------------------------------------------------------- the classifier


def _clouds(rng, n_a, n_b, N, shift):
    radii = 1.0 / np.sqrt(1.0 + np.arange(N))
    Xa = rng.standard_normal((n_a, N)) * radii + shift
    Xb = rng.standard_normal((n_b, N)) * radii[::-1]
    return Xa, Xb


def test_prototype_error_from_kernel_entries_equals_explicit_features():
    Xa, Xb = _clouds(np.random.default_rng(2), 40, 30, 25, 0.25)
    X = np.concatenate([Xa, Xb])
    for m in (1, 3, 10):
        feats = dgeo.fewshot_error(Xa, Xb, m, 11, n_episodes=600)
        kern = dfew.kernel_fewshot_error(X @ X.T, np.arange(40), np.arange(40, 70), m, 11, n_episodes=600)
        assert 0.02 < feats.err < 0.5  # a case with errors to count
        assert kern.err == pytest.approx(feats.err, abs=1e-12)
        assert kern.snr == pytest.approx(feats.snr, rel=1e-9)
        # any representation with that kernel: rotated features, and points_from_kernel
        Q, _ = np.linalg.qr(np.random.default_rng(m).standard_normal((25, 25)))
        pts = dgeo.points_from_kernel(X @ X.T)
        for Z in (X @ Q, pts):
            assert dgeo.fewshot_error(Z[:40], Z[40:], m, 11, n_episodes=600).err == pytest.approx(feats.err)
    with pytest.raises(ValueError):
        dfew.kernel_fewshot_error(X @ X.T, np.arange(40), np.arange(40, 70), 40, 0)


def test_snr_prediction_against_a_monte_carlo_of_gaussian_manifolds():
    """Two Gaussian manifolds of dimension ~ 40: H(SNR) of their geometry against the simulated
    m-shot error (the exact Gaussian form; the authors' form is further off at m = 1)."""
    rng = np.random.default_rng(4)
    N, P = 80, 800
    radii = 1.0 / np.sqrt(1.0 + 0.05 * np.arange(N))
    Xa = rng.standard_normal((P, N)) * radii
    Xb = rng.standard_normal((P, N)) * radii[rng.permutation(N)] + 0.25
    X = np.concatenate([Xa, Xb])
    labels = np.repeat([0, 1], P)
    curve = dfew.fewshot_curve(X @ X.T, labels, [1, 5], seed=0, n_episodes=300)
    assert np.all(curve.simulated > 0.1) and np.all(curve.simulated < 0.45)
    gap = np.abs(curve.predicted - curve.simulated)
    assert np.all(gap < 0.03 * curve.simulated + 3 * curve.simulated_se), (curve.predicted, curve.simulated)
    assert curve.dimension > 30
    geo, _ = dgeo.geometry_from_kernels(X @ X.T, labels)
    authors = np.nanmean(dgeo.gaussian_tail(dgeo.snr_from_geometry(geo, 1, include_m2_term=False)))
    assert abs(authors - curve.simulated[0]) > abs(curve.predicted[0] - curve.simulated[0])


def test_fewshot_curve_averages_over_a_stack_and_checks_shots():
    Xa, Xb = _clouds(np.random.default_rng(5), 20, 20, 10, 0.3)
    X = np.concatenate([Xa, Xb])
    labels = np.repeat([3, 8], 20)
    one = dfew.fewshot_curve(X @ X.T, labels, [1, 5], seed=1, n_episodes=50)
    two = dfew.fewshot_curve(np.stack([X @ X.T, 2 * X @ X.T]), labels, [1, 5], seed=1, n_episodes=50)
    np.testing.assert_allclose(two.predicted, one.predicted)  # scale free
    np.testing.assert_allclose(two.signal, one.signal)
    assert dfew.usable_shots([1, 5, 20], labels) == [1, 5]
    assert dfew.usable_shots([1, 5, 20], labels, 0.2) == [1]
    with pytest.raises(ValueError):
        dfew.fewshot_curve(X @ X.T, labels, [20])
    np.testing.assert_allclose(dfew.draw_kernels(X.T[None])[0], X @ X.T / 10)


# ----------------------------------------------------------------------------- end to end

E2E = """
[task]
kind = "mnist"
num_classes = 2
num_train = 16
num_test = 6
input_dim = 20
heldout_classes = [6, 8, 9]
heldout_per_class = 25

[network]
width = 12
depth = 2
activation = "linear"
readout = "lazy"
temperature = 0.01

[sampler]
step_size = 0.0005
num_steps = 120
burn_in = 0
thin = 20
num_chains = 2
store_all_layers = true
progress = false
"""


def test_end_to_end_sample_and_compare_with_heldout_classes(tmp_path):
    (tmp_path / "e.toml").write_text(E2E)
    out = tmp_path / "run"
    assert main(["sample", str(tmp_path / "e.toml"), "--out", str(out)]) == 0
    from widebayes import posterior

    view = posterior.PosteriorView(posterior.load(out))
    assert sorted(view.phi_heldout) == [1, 2] and view.phi_heldout[2].shape[2:] == (12, 75)
    assert view.kernel_heldout.shape == (3, 75, 75)
    np.testing.assert_array_equal(np.unique(view.labels_heldout), [6, 8, 9])
    assert set(view.labels_train) == {0, 1} and view.num_classes == 2
    # the stored mean kernel is the draws' kernels averaged (layer 2; all draws of chain 0)
    per_draw = dfew.draw_kernels(view.phi_heldout[2][0]).mean(axis=0)
    import arviz as az

    stored = az.from_netcdf(out / "posterior.nc").representations["kernel_heldout"].values[0, 2]
    np.testing.assert_allclose(stored, per_draw, rtol=1e-4, atol=1e-6)
    assert main(["compare", str(out)]) == 0
    rep = json.loads((out / "report" / "report.json").read_text())
    few = rep["fewshot_heldout"]
    assert few["heldout_classes"] == [6, 8, 9] and few["trained_classes"] == [0, 1]
    assert few["layers"] == [0, 1, 2] and few["shots"] == [1, 5] and few["heldout_per_class"] == [25] * 3
    theory = [name for name in few["sources"] if name.startswith("theory")]
    assert set(few["sources"]) == {"samples (per draw)", "samples (posterior-mean kernel)", "NNGP (prior)",
                                   *theory} and len(theory) == 1 and "BPKR" in theory[0]
    for src in few["sources"].values():
        assert set(src) == {"simulated", "simulated_se", "predicted", "signal", "dimension", "kernel_sources"}
        assert np.shape(src["simulated"]) == (2, 3) and np.shape(src["signal"]) == (3,)
        assert all(0.0 <= v <= 1.0 for row in src["simulated"] + src["predicted"] for v in row)
        assert src["kernel_sources"][0] == "input kernel"
    # layer 0 is the inputs, the same in every source
    assert len({json.dumps(src["simulated"][0][0]) for src in few["sources"].values()}) == 1
    assert (out / "report" / "fewshot_heldout.png").exists()
    assert "Few-shot learning of held-out classes" in (out / "report" / "report.md").read_text()


# ----------------------------------------------------------------------------- agreement (slow)

AGREEMENT = {
    "task": {"kind": "mnist", "num_classes": 5, "num_train": 50, "num_test": 0,
             "heldout_classes": [5, 6, 7, 8, 9], "heldout_per_class": 50, "seed": 1},
    "network": {"depth": 2, "width": 100, "activation": "linear", "readout": "lazy", "temperature": 0.01,
                "sigma_w2": 0.5, "sigma_a2": 0.5},
    "sampler": {"step_size": 5e-4, "num_steps": 12000, "burn_in": 2000, "thin": 100, "num_chains": 2,
                "progress": False},
}


@pytest.mark.slow
def test_heldout_fewshot_of_samples_agrees_with_the_exact_linear_theory(tmp_path):
    """Deep linear lazy network (BPKR exact) sampled on digits 0-4: on the held-out digits 5-9 the
    posterior-mean kernel of every layer is the theory's within the sampling error, and so are the
    few-shot errors it predicts; the SNR prediction matches the simulated error of the samples."""
    from widebayes import posterior
    from widebayes.config import resolve
    from widebayes.report.fewshot import SAMPLES_MEAN, fewshot_heldout_section, theory_heldout_kernels
    from widebayes.sampling import sample_experiment

    sample_experiment(resolve(AGREEMENT), out_dir=tmp_path)
    view = posterior.PosteriorView(posterior.load(tmp_path))
    K_theory, _, name = theory_heldout_kernels(view)
    for layer in (1, 2):
        S, K = view.kernel_heldout[layer], K_theory[layer]
        assert np.linalg.norm(S - K) / np.linalg.norm(K) < 0.12, layer
    section, _ = fewshot_heldout_section(view)
    assert section.shots == [1, 5]
    samples, theory = section.sources[SAMPLES_MEAN], section.sources[name]
    np.testing.assert_allclose(samples.predicted, theory.predicted, atol=0.02)
    np.testing.assert_allclose(samples.simulated, samples.predicted, rtol=0.12)


def test_reduced_inputs_carry_the_heldout_pool_exactly():
    """With ``reduce_inputs`` the held-out pool is reduced like the test inputs,
    ``[X_h Q, X_h R]``, so the first layer sees it whole: ``[X_h Q, X_h R] [Q, R]^T = X_h``."""
    from widebayes.config import resolve
    from widebayes.experiment import build_experiment, device_data

    cfg = resolve({"task": {**MNIST, "heldout_classes": [4, 5], "heldout_per_class": 6},
                   "network": {"width": 8}, "sampler": {"reduce_inputs": True}})
    exp = build_experiment(cfg)
    data = device_data(exp.data, np.float32, exp.reduction)
    basis = np.concatenate([exp.reduction.Q, exp.reduction.R], axis=1)
    for name in ("X_test", "X_heldout"):
        np.testing.assert_allclose(np.asarray(data[name]) @ basis.T, getattr(exp.data, name), atol=1e-4)
    assert "X_heldout" not in device_data(build_experiment(resolve({"task": MNIST})).data, np.float32)


def test_fewshot_section_without_a_usable_pool_is_a_note():
    from types import SimpleNamespace

    from widebayes.report.fewshot import draw_indices, fewshot_heldout_section

    none, fig = fewshot_heldout_section(SimpleNamespace(X_heldout=None))
    assert fig is None and "heldout_classes" in none.to_json()["note"]
    small = SimpleNamespace(X_heldout=np.ones((8, 3)), labels_heldout=np.repeat([5, 6], 4))
    assert "two or more held-out classes" in fewshot_heldout_section(small)[0].note  # 4 < 5 per class
    assert draw_indices(2, 10, 4) == [(0, 0), (0, 6), (1, 3), (1, 9)]
    assert draw_indices(1, 3) == [(0, 0), (0, 1), (0, 2)]
