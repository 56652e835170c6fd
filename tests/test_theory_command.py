"""`widebayes theory`: strict JSON with the contract keys, for lazy and non-lazy experiments."""

import json

import numpy as np

from widebayes.cli import main
from widebayes.io import json_value as to_jsonable

EXP = """
[task]
kind = "orthogonal"
num_train = 12
input_dim = 20
num_test = 4
class_ratios = [0.5, 0.25, 0.25]
y_minus = 0.5
[network]
width = 50
activation = "{activation}"
readout = "{readout}"
temperature = 0.01
"""


def run_theory(tmp_path, activation, readout):
    exp = tmp_path / "e.toml"
    exp.write_text(EXP.format(activation=activation, readout=readout))
    out = tmp_path / "t.json"
    assert main(["theory", str(exp), "--out", str(out)]) == 0
    return json.loads(out.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_lazy_theory_json(tmp_path):
    d = run_theory(tmp_path, "relu", "lazy")
    assert d["regime"] == "lazy"
    assert np.asarray(d["kernel_train"]).shape == (2, 12, 12)
    assert (np.asarray(d["f_test_var"]).shape == (4, 3)
            and np.asarray(d["readout_second_moment"]).shape == (3, 3))
    assert set(d["gen_error"]) >= {"bias", "variance", "total"} and len(d["gen_error_gp"]["total"]) == 3


def test_nonlazy_theory_json(tmp_path):
    d = run_theory(tmp_path, "linear", "nonlazy")
    assert d["regime"] == "nonlazy" and np.asarray(d["kernel_train"]).shape == (2, 12, 12)


def test_nan_becomes_null():
    assert (to_jsonable({"x": np.array([1.0, np.nan]), "y": np.float64(np.inf)})
            == {"x": [1.0, None], "y": None})


def test_lazy_linear_theory_reports_the_saddle_beside_the_mean(tmp_path):
    d = run_theory(tmp_path, "linear", "lazy")
    mean, saddle, nngp = (np.asarray(d[k])
                          for k in ("kernel_train", "kernel_train_saddle", "kernel_train_nngp"))
    assert mean.shape == saddle.shape == nngp.shape == (2, 12, 12)
    np.testing.assert_allclose(saddle[0], nngp[0])  # the input kernel is not adapted
    assert not np.allclose(saddle[1], nngp[1])


def test_lazy_linear_theory_survives_a_saddle_that_does_not_converge(monkeypatch):
    """The kernel-adaptation saddle is an extra: when its iteration fails, BPKR is still reported."""
    from widebayes.config import resolve
    from widebayes.experiment import build_experiment
    from widebayes.theory import kernel_adaptation
    from widebayes.theory.predict import predictions

    def no_saddle(*args, **kwargs):
        raise RuntimeError("saddle did not converge: residual 1e-3 after 5000 steps")

    monkeypatch.setattr(kernel_adaptation, "solve_kernels", no_saddle)
    exp = build_experiment(resolve({
        "task": {"kind": "orthogonal", "num_train": 12, "input_dim": 16, "num_test": 4,
                 "class_ratios": [0.5, 0.5], "y_minus": 0.0},
        "network": {"depth": 2, "width": 30, "activation": "linear", "readout": "lazy",
                    "temperature": 0.01}}))
    out = predictions(exp)
    assert "kernel_train_saddle" not in out
    assert "saddle did not converge" in out["note"]
    assert np.isfinite(out["u"]).all() and out["kernel_train"].shape == (3, 12, 12)


def test_frozen_blocks_get_the_gp_not_the_trained_networks_theory():
    """`[network] trainable = ["a"]` is the random-feature model: BPKR (a trained network's theory)
    must not be reported for it; the NNGP/GP limit is, labelled."""
    from widebayes.config import resolve
    from widebayes.experiment import build_experiment
    from widebayes.theory.predict import predictions

    exp = build_experiment(resolve({
        "task": {"kind": "xor", "num_train": 12, "num_test": 6, "seed": 0},
        "network": {"depth": 1, "width": 20, "activation": "relu", "readout": "lazy",
                    "temperature": 0.01, "trainable": ["a"]}}))
    out = predictions(exp)
    assert out["regime"] == "frozen" and "trained network's theory does not apply" in out["note"]
    assert "gen_error" not in out and "kernel_train" not in out and "readout_second_moment" not in out
    assert np.isfinite(out["gen_error_gp"]["total_sum"])
