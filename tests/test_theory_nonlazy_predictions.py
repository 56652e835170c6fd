"""``nonlazy_predictions`` on built experiments: keys, shapes, consistency, coverage errors."""

import json

import numpy as np
import pytest

from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.experiment import build_experiment
from widebayes.io import json_value as to_jsonable
from widebayes.theory.nngp import input_kernel
from widebayes.theory.nonlazy import nonlazy_predictions
from widebayes.theory.nonlazy.predictions import class_task
from widebayes.theory.predict import predictions

P, P_TEST, WIDTH = 40, 6, 100
CONTRACT = ("regime", "method", "readout_second_moment", "kernel_train", "f_test_mean", "f_test_var",
            "gen_error", "gen_error_gp", "codes", "num_outliers", "outlier_mass", "residual")


def _experiment(activation, depth=1, y_minus=0.5, num_train=P, num_test=P_TEST, **network):
    cfg = {"task": {"kind": "orthogonal", "num_train": num_train, "num_test": num_test,
                    "input_dim": 60, "class_ratios": [0.5, 0.25, 0.25], "y_plus": 1.0,
                    "y_minus": y_minus},
           "network": {"activation": activation, "width": WIDTH, "depth": depth,
                       "temperature": 0.01, **network}}
    return build_experiment(resolve(cfg))


def _scrambled(exp, seed=0):
    """The same experiment with non-orthogonal training inputs (not class-structured)."""
    rng = np.random.default_rng(seed)
    d = exp.data
    return exp._replace(data=d._replace(X_train=d.X_train + 0.5 * rng.standard_normal(d.X_train.shape)))


def _check_contract(out, exp, depth):
    m, k = exp.data.Y_train.shape[1], 3
    for key in CONTRACT:
        assert key in out, key
    assert out["regime"] == "nonlazy"
    A = np.asarray(out["readout_second_moment"])
    assert A.shape == (m, m) and np.allclose(A, A.T) and np.linalg.eigvalsh(A).min() > 0
    K = np.asarray(out["kernel_train"])
    assert K.shape == (depth + 1, P, P)
    np.testing.assert_allclose(K[0], input_kernel(exp.data.X_train), atol=1e-12)
    for layer in K:
        np.testing.assert_allclose(layer, layer.T, atol=1e-10)
        assert np.linalg.eigvalsh(layer).min() > -1e-9
    assert np.shape(out["f_test_mean"]) == (P_TEST, m) == np.shape(out["f_test_var"])
    assert np.all(np.asarray(out["f_test_var"]) >= 0)
    for key in ("gen_error", "gen_error_gp"):
        err = out[key]
        np.testing.assert_allclose(err["total"], np.asarray(err["bias"]) + np.asarray(err["variance"]))
        assert np.shape(err["total"]) == (m,)
    assert np.shape(out["outlier_mass"]) == (k,)
    assert out["residual"] < 1e-8
    for code in out["codes"]:
        assert {"code", "fraction", "readout"} <= set(code) and len(code["code"]) == k
        assert np.shape(code["readout"]) == (m,)
    json.dumps(to_jsonable(out))


@pytest.mark.parametrize("depth", [1, 2])
def test_linear_predictions(depth):
    exp = _experiment("linear", depth=depth)
    out = predictions(exp)
    _check_contract(out, exp, depth)
    assert out["method"] == "linear-analog" and out["codes"] == [] and out["num_outliers"] == 0
    # non-lazy linear: the mean predictor is the GP's (T0 -> 0) and the variance is O(1/N)
    gp = np.asarray(out["gen_error_gp"]["variance"])
    assert np.all(np.asarray(out["gen_error"]["variance"]) < gp)
    assert np.asarray(out["kernel_test"]).shape == (depth + 1, P_TEST, P_TEST)


def test_sigmoid_predictions_are_redundant_codes():
    exp = _experiment("sigmoid")
    out = nonlazy_predictions(exp)
    _check_contract(out, exp, 1)
    assert out["method"] == "redundant-codes" and out["num_outliers"] == 0
    codes = {c["code"]: c for c in out["codes"]}
    assert {"110", "101", "011", "111"} <= set(codes)
    assert sum(c["fraction"] for c in out["codes"]) == pytest.approx(1.0, abs=1e-3)
    assert codes["111"]["fraction_large_P"] == pytest.approx(0.089, abs=2e-3)
    assert out["schemes"][0]["preferred"] and len(out["schemes"][0]["codes"]) == 4
    # output on training inputs reproduces the targets up to T0 Lambda
    K1 = np.asarray(out["kernel_train"][1])
    labels = exp.data.labels_train
    assert K1[labels == 0][:, labels == 1].std() < 1e-12  # class-structured kernel
    # orthogonal test inputs: z(x) is independent of the training set, so f = E[a] / 2
    a_mean = sum(c["fraction"] * np.asarray(c["readout"]) for c in out["codes"])
    np.testing.assert_allclose(out["f_test_mean"][0], 0.5 * a_mean, atol=1e-3)


def test_relu_predictions_are_sparse_codes():
    exp = _experiment("relu", y_minus=-0.5)
    out = nonlazy_predictions(exp)
    _check_contract(out, exp, 1)
    assert out["method"] == "sparse-codes" and out["num_outliers"] == 3
    assert "zero mode" in out["note"]
    np.testing.assert_allclose(out["outlier_mass"], [0.802, 0.6165, 0.6165], atol=1e-3)
    np.testing.assert_allclose(out["critical_temperature"], [0.784, 0.6265, 0.6265], atol=1e-3)
    kinds = [c["kind"] for c in out["codes"]]
    assert kinds.count("bulk") == 1 and kinds.count("outlier") == 3
    # the outliers add K_c on the class blocks of the kernel
    K1, labels = np.asarray(out["kernel_train"][1]), exp.data.labels_train
    assert K1[labels == 0][:, labels == 0].mean() > 1.0 > K1[labels == 0][:, labels == 1].mean()


def test_class_task_detection():
    exp = _experiment("sigmoid")
    task = class_task(exp)
    np.testing.assert_allclose(task.rho, [0.5, 0.25, 0.25])
    assert task.beta_a == pytest.approx(1.0) and task.T0 == 0.01
    assert class_task(_scrambled(exp)) is None


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_general_path_for_small_unstructured_tasks(activation):
    """P <= 5, non-orthogonal inputs: the single-neuron quadrature (THEORY.md 1.2)."""
    exp = _scrambled(_experiment(activation, num_train=4, num_test=3, sigma_a2=0.3))
    out = nonlazy_predictions(exp)
    assert out["method"] == "single-neuron-quadrature" and out["residual"] < 1e-8
    assert np.shape(out["kernel_train"]) == (2, 4, 4)
    assert np.shape(out["f_test_var"]) == (3, 3) and np.all(np.asarray(out["f_test_var"]) >= 0)
    json.dumps(to_jsonable(out))


@pytest.mark.parametrize("exp_args,key", [
    (dict(activation="sigmoid", depth=4), "network.depth"),
    (dict(activation="relu", depth=2), "network.depth"),
    (dict(activation="relu2"), "network.activation"),
    (dict(activation="linear", depth=2, tied_weights=True), "network.tied_weights"),
])
def test_not_covered_raises_input_error(exp_args, key):
    with pytest.raises(InputError) as info:
        nonlazy_predictions(_experiment(**exp_args))
    assert info.value.key == key


def test_large_unstructured_task_with_unbounded_activation_raises_input_error():
    """Bounded activations go to the conditional-mode theory; ReLU on such a task is not covered."""
    with pytest.raises(InputError, match="not class-structured"):
        nonlazy_predictions(_scrambled(_experiment("relu")))


def test_large_unstructured_task_with_sigmoid_uses_the_conditional_mode_theory():
    exp = _scrambled(_experiment("sigmoid"))
    out = nonlazy_predictions(exp)
    assert out["method"] == "conditional-mode" and out["residual"] < 1e-8
    assert out["codes"] and abs(sum(c["fraction"] for c in out["codes"]) - 1.0) < 1e-9
    assert np.asarray(out["f_test_mean"]).shape == exp.data.Y_test.shape
    assert np.all(np.asarray(out["f_test_var"]) >= 0)
    K = np.asarray(out["kernel_train"])
    assert K.shape == (2, len(exp.data.X_train), len(exp.data.X_train))
    np.testing.assert_allclose(K[1], K[1].T)


def test_sigmoid_codes_at_a_tiny_training_set(tmp_path):
    """P = 12 (N0 = 24): a Newton trial point with no single-neuron maximum used to raise a bare
    ValueError from softmax; the trial is now halved back and the solve closes."""
    from widebayes.models.presets import preset

    from widebayes.config import resolve
    from widebayes.experiment import build_experiment
    from widebayes.theory.nonlazy.predictions import nonlazy_predictions

    cfg = preset("demo")
    cfg["task"].update(num_train=12, input_dim=24, num_test=4)
    cfg["network"]["width"] = 12
    out = nonlazy_predictions(build_experiment(resolve(cfg)))
    fractions = [c["fraction"] for c in out["codes"]]
    assert abs(sum(fractions) - 1) < 1e-6 and len(fractions) >= 3
