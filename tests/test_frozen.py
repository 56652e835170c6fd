"""Frozen-readout experiment (diagnostics/frozen.py): THEORY.md 6.3 assertions, 6.4 item 13.

Toy size: lazy one-hidden-layer ReLU network (N0 = 10, N = 200), xor task (P = 40, 200 test
points, +-1 targets), T = 0.005, sigma^2 = 1, four chains, fixed seeds.  ReLU, not tanh: with no
biases a tanh (or erf-sigmoid) network is odd up to a constant, ``f(-x) = c - f(x)``, and cannot
fit xor (its clusters come in +-mu pairs of one class).  ``step_size = 5e-4`` makes
``tau_prior = sigma^2/T = 200`` paper time units 2000 steps (one step is ``eps / T``); draws every
100 steps, 0.05 tau_prior.  Burn-in 1 tau_prior, 1 tau_prior of draws before t0, 2.5 after.
"""

import numpy as np
import pytest

from widebayes.config import resolve
from widebayes.diagnostics import frozen

STEPS_PER_TAU = 2000
THIN = 100


def _config(width=200, post_taus=2.5, chains=4):
    steps = int((2.0 + post_taus) * STEPS_PER_TAU)
    return resolve({
        "task": {"kind": "xor", "num_train": 40, "num_test": 200, "seed": 0},
        "network": {"depth": 1, "width": width, "activation": "relu", "readout": "lazy",
                    "sigma_w2": 1.0, "sigma_a2": 1.0, "temperature": 0.005},
        "sampler": {"kind": "langevin", "step_size": 1.0 / STEPS_PER_TAU, "num_steps": steps,
                    "burn_in": STEPS_PER_TAU, "thin": THIN, "num_chains": chains, "seed": 3,
                    "progress": False}})


FREEZE_DRAW = STEPS_PER_TAU // THIN - 1  # t0 = one tau_prior after the burn-in


@pytest.fixture(scope="module")
def prior_run():
    return frozen.run_frozen_readout(_config(), FREEZE_DRAW, mode="prior", center=True)


def test_time_units_and_freeze_step():
    cfg = _config()
    assert frozen.burn_in_steps(cfg["sampler"]) == STEPS_PER_TAU
    assert frozen.freeze_step(cfg["sampler"], FREEZE_DRAW) == 2 * STEPS_PER_TAU
    assert frozen.frozen_config(cfg, FREEZE_DRAW)["sampler"]["freeze_readout_at"] == 2 * STEPS_PER_TAU
    assert cfg["sampler"]["freeze_readout_at"] == -1  # the input is not modified
    with pytest.raises(ValueError):
        frozen.freeze_step(cfg["sampler"], 10_000)


def test_prediction_error():
    Y = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    f = np.array([[[0.3], [-2.0], [-0.1], [0.5]]])
    np.testing.assert_allclose(frozen.prediction_error(f, Y), [0.5])
    Y2 = np.eye(2)
    np.testing.assert_allclose(frozen.prediction_error(np.zeros((1, 2, 2)), Y2), [1.0])


def test_prior_only_frozen_readout(prior_run):
    res = prior_run
    assert res.tau_prior == pytest.approx(200.0)
    np.testing.assert_allclose(res.tau_over_prior[:3], [0.0, 0.05, 0.1])
    # (1) both runs share every step up to t0: identical draws, equal errors at tau = 0
    assert res.shared_draws_equal
    np.testing.assert_array_equal(res.err_full[:, 0], res.err_frozen[:, 0])
    late = res.tau_over_prior >= 2.0
    err_full_late = res.err_full[:, late].mean()
    err_frozen_late = res.err_frozen[:, late].mean()
    # (2) after >= 2 tau_prior the frozen readout is near chance, far above the full run
    assert err_frozen_late >= err_full_late + 0.15
    assert abs(err_frozen_late - 0.5) <= 0.1
    # (3) the full run stays within its stationary band
    pre = res.err_pre.mean(axis=0)
    assert res.err_full.mean() <= res.err_full[:, 0].mean() + 2 * pre.std() + 1e-12
    # (5) rho_v decays towards the random baseline, on a time scale of order tau_prior
    rel = (res.rho_v_frozen - res.baseline_v) / (1 - res.baseline_v)
    t_e = res.tau_over_prior[np.argmax(rel < np.exp(-1))]
    assert 0.1 <= t_e <= 2.0
    assert rel[late].mean() < 0.25
    assert res.rho_v_frozen[res.tau_over_prior <= 0.25].mean() > res.rho_v_frozen[late].mean() + 0.3


def test_langevin_frozen_readout_shares_draws_and_holds_a():
    """The sampler's ``freeze_readout_at`` run: same draws up to t0, then ``a`` held fixed."""
    from widebayes.sampling import sample_experiment

    cfg = _config(width=100, post_taus=0.5, chains=2)
    full = sample_experiment(cfg, progress=False)
    frz = sample_experiment(frozen.frozen_config(cfg, FREEZE_DRAW), progress=False)
    a = frz.result.draws["a"]
    np.testing.assert_array_equal(a[:, FREEZE_DRAW:], np.broadcast_to(a[:, FREEZE_DRAW:FREEZE_DRAW + 1],
                                                                      a[:, FREEZE_DRAW:].shape))
    assert not np.array_equal(full.result.draws["a"][:, -1], a[:, -1])
    res = frozen.analyse(full, frz.result.draws, FREEZE_DRAW)
    assert res.shared_draws_equal
    np.testing.assert_array_equal(res.err_full[:, 0], res.err_frozen[:, 0])
    assert res.rho_v_frozen[0] == pytest.approx(1.0) and res.rho_u_frozen[0] == pytest.approx(1.0)
    rows = frozen.summary(res, at=(0.0, 0.5))
    assert rows[0]["tau_over_prior"] == 0.0 and rows[1]["tau_over_prior"] == pytest.approx(0.5)


def test_drift_command_writes_the_experiment_and_refuses_bad_input(tmp_path, capsys):
    """`widebayes drift`: the plain run's posterior.nc plus drift/frozen_readout.{json,md,png};
    a freeze draw outside the run, or a run without a test set, is one line and exit code 2."""
    import json

    from widebayes.cli import main
    from widebayes.config import to_toml

    cfg = _config(width=60, post_taus=0.5, chains=2)
    path = tmp_path / "drift.toml"
    path.write_text(to_toml(cfg))
    out = tmp_path / "run"
    assert main(["drift", str(path), "--out", str(out), "--freeze-draw", str(FREEZE_DRAW),
                 "--no-progress"]) == 0
    assert (out / "posterior.nc").exists()
    data = json.loads((out / "drift" / "frozen_readout.json").read_text())
    assert data["mode"] == "langevin" and data["shared_draws_equal"] is True
    assert data["err_full"][0] == data["err_frozen"][0]  # same state at t0
    assert data["tau_over_prior"][-1] == pytest.approx(0.5)
    assert (out / "drift" / "frozen_readout.png").stat().st_size > 10_000
    assert "| tau / tau_prior |" in (out / "drift" / "frozen_readout.md").read_text()
    capsys.readouterr()
    bad = str(tmp_path / "bad")
    assert main(["drift", str(path), "--out", bad, "--freeze-draw", "500"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("widebayes: error: freeze_draw:") and "\n" not in err
    assert main(["drift", str(path), "--out", bad, "--set", "task.num_test=0"]) == 2
    assert "task.num_test" in capsys.readouterr().err
