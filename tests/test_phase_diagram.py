"""The toy task's phase diagram with neuron moves (issue 14 item 5; README "open disagreements").

Two sweep files ship the scans: ``sweeps/phase_yminus.toml`` (sigmoid, the off-class target y-)
and ``sweeps/phase_relu_temperature.toml`` (ReLU, the temperature). The fast tests check that both
parse and resolve; the slow ones run single points of the shipped files through the sweep's own
point runner (``run_point``: sample, theory, report, table rows), so they assert the numbers the
sweep tabulates.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from widebayes.cli import main
from widebayes.sweep import load_sweep
from widebayes.sweep.run import PointJob, run_point

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
YMINUS = SWEEPS / "phase_yminus.toml"
RELU = SWEEPS / "phase_relu_temperature.toml"
RELU_OUTLIERS = SWEEPS / "phase_relu_outliers.toml"
RELU_OUTLIERS_200 = SWEEPS / "phase_relu_outliers_200.toml"


def test_both_sweep_files_parse_and_resolve_with_neuron_moves(tmp_path, capsys):
    ym, relu = load_sweep(YMINUS), load_sweep(RELU)
    assert ym.keys == ["task.y_minus"] and [v for _, v in ym.points[0].values] == [0.1]
    assert [p.resolved["task"]["y_minus"] for p in ym.points] == [0.1, 0.2, 0.3, 0.4, 0.45, 0.47, 0.5]
    assert relu.keys == ["network.temperature"]
    assert [p.resolved["network"]["temperature"] for p in relu.points] == [0.4, 0.5, 0.6, 0.65, 0.7, 0.75,
                                                                          0.8, 0.9]
    for spec, activation in ((ym, "sigmoid"), (relu, "relu")):
        for p in spec.points:
            net, task, sampler = p.resolved["network"], p.resolved["task"], p.resolved["sampler"]
            assert (net["activation"], net["readout"], net["width"]) == (activation, "nonlazy", 100)
            assert (task["kind"], task["num_train"], task["input_dim"]) == ("orthogonal", 100, 120)
            assert task["class_ratios"] == [0.5, 0.25, 0.25]
            assert sampler["neuron_moves"] == 10 and sampler["num_chains"] == 2
    assert main(["sweep", str(RELU), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "8/8  network.temperature=0.9  [to run]" in capsys.readouterr().out


def test_outlier_sweeps_are_the_relu_scan_with_outlier_moves():
    """phase_relu_outliers(_200).toml differ from the ReLU scan only in the outlier components, the
    temperatures and (the second) the size."""
    base = load_sweep(RELU).points[0].resolved
    for path, size, temperatures in ((RELU_OUTLIERS, 100, [0.6, 0.65, 0.7, 0.75, 0.8]),
                                     (RELU_OUTLIERS_200, 200, [0.6, 0.7, 0.75])):
        spec = load_sweep(path)
        assert [p.resolved["network"]["temperature"] for p in spec.points] == temperatures
        for p in spec.points:
            r = p.resolved
            assert r["sampler"]["outlier_moves"] and r["sampler"]["neuron_moves"] == 10
            sizes = (r["network"]["width"], r["task"]["num_train"], r["task"]["input_dim"])
            assert sizes == (size, size, size + 20)
            for section in ("task", "network"):
                same = {k: v for k, v in r[section].items()
                        if k not in ("temperature", "width", "num_train", "input_dim", "sigma_a2")}
                assert same == {k: v for k, v in base[section].items() if k in same}


def point_rows(spec_path: Path, key: str, value: float, folder: Path) -> dict:
    """The table rows (quantity -> row) of one point of a shipped sweep file, run in ``folder``."""
    point = next(p for p in load_sweep(spec_path).points if dict(p.values)[key] == value)
    out = run_point(PointJob(point.slug, str(folder), point.resolved, "test"))
    return {row["quantity"]: row for row in out["rows"]}


def codes(rows: dict) -> dict:
    """code -> (sampled, theory) over the codes the samples or the theory have."""
    return {q[len("code_fraction["):-1]: (r["sampled"], r["theory"])
            for q, r in rows.items() if q.startswith("code_fraction[")}


# ------------------------------------------------------------------------------------- y- scan
# Fractions are counts of N = 100 neurons (steps of 0.01). With the moves the codes equilibrate
# during burn-in and few neurons change code while recording (none at y- <= 0.3, 4-7% near the
# 111 onset), so ArviZ's MCSE (0-0.007) understates the error; the two chains, started from
# independent prior draws, differ by up to 0.02 on code 111 near its onset. The tolerances are
# two neurons per code for the redundant codes and three for code 111.
@pytest.mark.slow
def test_y_minus_0_3_holds_the_three_two_class_codes_and_no_111(tmp_path):
    """y- = 0.3, where the theory has codes 110 / 101 / 011 only (0.335 / 0.335 / 0.330); measured
    0.335 / 0.335 / 0.330, nothing else, in about 45 s."""
    found = codes(point_rows(YMINUS, "task.y_minus", 0.3, tmp_path))
    for code in ("110", "101", "011"):
        sampled, theory = found[code]
        assert abs(sampled - theory) <= 0.02, (code, sampled, theory)
    others = {code: s for code, (s, _) in found.items() if code not in ("110", "101", "011")}
    assert sum(others.values()) <= 0.01, others
    assert all(not t for code, (_, t) in found.items() if code in others)  # the theory has none


@pytest.mark.slow
def test_y_minus_0_5_code_111_enters_as_the_theory_says(tmp_path):
    """y- = 0.5, above the 111 onset (about 0.453 at P = inf; the P = 100 theory rounds it): theory
    110 / 101 / 011 / 111 = 0.297 / 0.297 / 0.298 / 0.107, measured 0.290 / 0.295 / 0.303 / 0.112
    (chains 0.102 and 0.121 on 111), about 45 s."""
    found = codes(point_rows(YMINUS, "task.y_minus", 0.5, tmp_path))
    for code in ("110", "101", "011"):
        sampled, theory = found[code]
        assert abs(sampled - theory) <= 0.02, (code, sampled, theory)
    sampled, theory = found["111"]
    assert theory > 0.05 and sampled > 0.05
    assert abs(sampled - theory) <= 0.03, (sampled, theory)


# ------------------------------------------------------------------------- ReLU transition in T
def masses(rows: dict) -> list[tuple]:
    """(sampled, theory) of outlier_mass[c] per class."""
    return [(rows[f"outlier_mass[{c}]"]["sampled"], rows[f"outlier_mass[{c}]"]["theory"]) for c in range(3)]


@pytest.mark.slow
def test_relu_below_both_critical_temperatures_masses_sit_just_below_the_theory(tmp_path):
    """T = 0.5, below T_c = 0.784 (class 0) and 0.627 (classes 1, 2): every class has its outlier,
    with mass 0.297 / 0.117 / 0.117 against the theory's 0.312 / 0.126 / 0.126 (MCSE 0.001; both
    chains and both halves of each agree to 0.005). The deficit of 0.009-0.015 is the finite-N
    offset seen at every condensed point of the scan (README), so it is asserted as a deficit of
    at most 0.03, about 80 s."""
    for sampled, theory in masses(point_rows(RELU, "network.temperature", 0.5, tmp_path)):
        assert sampled > 0.1
        assert 0.0 < theory - sampled <= 0.03, (sampled, theory)


@pytest.mark.slow
def test_relu_above_the_class_0_critical_temperature_has_no_outliers(tmp_path):
    """T = 0.8, above T_c = 0.784 of class 0 (and of classes 1, 2): the theory has no outliers and
    neither do the samples (the largest neuron carries |a|^2 / N = 0.004), about 80 s."""
    for sampled, theory in masses(point_rows(RELU, "network.temperature", 0.8, tmp_path)):
        assert theory == 0.0 and sampled == 0.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="open (README, 'The ReLU sparse-code transition'): at N = P = 100 "
                   "the transitions sit below the theory's T_c: no class-1/2 outlier at T = 0.6 from "
                   "either side nor with outlier seeds (theory 0.026), and at T = 0.7 the class-0 "
                   "mass, 0.064-0.071 from both sides, lies 0.03 below the theory's 0.098 (finite N: "
                   "0.016 at N = 200)")
@pytest.mark.parametrize("temperature, cls", [(0.6, 1), (0.7, 0)])
def test_relu_masses_near_the_critical_temperatures_reach_the_theory(tmp_path, temperature, cls):
    sampled, theory = masses(point_rows(RELU, "network.temperature", temperature, tmp_path))[cls]
    assert abs(sampled - theory) <= 0.02, (sampled, theory)


@pytest.mark.slow
def test_relu_outlier_seeds_condense_class_0_at_N_200_and_T_0_7(tmp_path):
    """N = P = 200, T = 0.7 (phase_relu_outliers_200.toml): from prior draws without the outlier seeds
    neither chain grows the class-0 outlier in 80k steps (measured 0 and 0, same seed); with them
    both do, and the mass meets the chains started condensed (0.082): measured 0.084 and 0.087, the
    theory 0.098, 10 min on two cores shared with another job.  One chain without the outlier would
    give at most 0.05."""
    sampled, theory = masses(point_rows(RELU_OUTLIERS_200, "network.temperature", 0.7, tmp_path))[0]
    assert 0.06 < sampled < theory, (sampled, theory)
