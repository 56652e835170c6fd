"""`widebayes sweep`: sweep files, points, the table, skip/resume, failures, Ray against serial.

The sampled sweeps use tiny lazy ReLU points (XOR task, P = 16, N = 8 or 16, 2000 steps).
One sweep runs serially through the command (module fixture); the Ray tests share one local
two-CPU Ray session, run the same sweep file and must give the same table byte for byte, and a
worker killed mid-point leaves a checkpoint from which the re-run completes the point with the
same numbers as the uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from widebayes.cli import main
from widebayes.errors import InputError
from widebayes.sweep import RayExecutor, SerialExecutor, load_sweep, run_sweep
from widebayes.sweep.executors import init_ray
from widebayes.sweep.quantities import THEORY_COLUMNS, alignment_series, load_idata
from widebayes.sweep.run import read_status

BASE = """
[task]
kind = "xor"
num_train = 16
num_test = 16
seed = 0

[network]
depth = 1
width = 8
activation = "relu"
readout = "lazy"
sigma_w2 = 0.5
sigma_a2 = 0.5
temperature = 0.01

[sampler]
step_size = 5e-4
num_steps = 2000
burn_in = 500
thin = 50
num_chains = 2
seed = 3
"""

# two good points and one whose task cannot be built (num_test = -1, which resolve leaves to the
# task): it fails when it runs, is retried once, and costs the others nothing
ZIP_AXES = """
[sweep]
mode = "zip"
"network.width" = [8, 16, 8]
"task.num_test" = [16, 16, -1]
"""
GOOD = ["network.width=8__task.num_test=16", "network.width=16__task.num_test=16"]
BAD = "network.width=8__task.num_test=-1"


def write_sweep(folder: Path, axes: str, base: str = BASE, name: str = "sweep.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(base + axes)
    return path


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------- spec
def test_grid_is_the_product_first_axis_outermost(tmp_path):
    axes = '[sweep]\n"network.width" = [8, 16]\n"sampler.seed" = [1, 2, 3]\n'
    spec = load_sweep(write_sweep(tmp_path, axes))
    assert spec.mode == "grid" and spec.keys == ["network.width", "sampler.seed"]
    got = [(p.resolved["network"]["width"], p.resolved["sampler"]["seed"]) for p in spec.points]
    assert got == [(8, 1), (8, 2), (8, 3), (16, 1), (16, 2), (16, 3)]
    assert spec.points[4].slug == "network.width=16__sampler.seed=2"
    assert spec.points[0].resolved["network"]["activation"] == "relu"  # the base is kept


def test_zip_pairs_the_ith_values(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, ZIP_AXES))
    got = [(p.resolved["network"]["width"], p.resolved["task"]["num_test"]) for p in spec.points]
    assert got == [(8, 16), (16, 16), (8, -1)]
    assert [p.slug for p in spec.points] == [*GOOD, BAD]


def test_base_file_relative_to_the_sweep_file_with_inline_overrides(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "base.toml").write_text(BASE)
    sweep = 'base = "exp/base.toml"\n[network]\ntemperature = 0.02\n[sweep]\n"task.num_train" = [16, 32]\n'
    spec = load_sweep(write_sweep(tmp_path, sweep, base=""))
    assert [p.resolved["task"]["num_train"] for p in spec.points] == [16, 32]
    net = spec.points[0].resolved["network"]
    assert net["temperature"] == 0.02 and net["width"] == 8  # inline override, base value


def test_unquoted_dotted_keys_are_the_same_axes(tmp_path):
    quoted = load_sweep(write_sweep(tmp_path / "a", '[sweep]\n"sampler.anneal.T_start" = [1.0, 2.0]\n'
                                    '"sampler.anneal.num_steps" = [100]\n'))
    dotted = load_sweep(write_sweep(tmp_path / "b", "[sweep]\nsampler.anneal.T_start = [1.0, 2.0]\n"
                                    "sampler.anneal.num_steps = [100]\n"))
    assert quoted.keys == dotted.keys == ["sampler.anneal.T_start", "sampler.anneal.num_steps"]
    assert [p.resolved for p in quoted.points] == [p.resolved for p in dotted.points]
    assert quoted.points[1].resolved["sampler"]["anneal"]["T_start"] == 2.0


@pytest.mark.parametrize("axes, named", [
    ('"network.widht" = [8, 16]', "sweep.network.widht"),            # unknown key
    ('"network.width" = []', "sweep.network.width"),                 # empty list
    ('"network.width" = 8', "sweep.network.width"),                  # not a list
    ('"network.width" = [8, -4]', "sweep.network.width"),            # a value resolve refuses
    ('"network.activation" = ["relu", "swish"]', "sweep.network.activation"),
    ('"model.width" = [8]', "sweep.model.width"),                    # not a config section
    ('mode = "zip"\n"network.width" = [8, 16]\n"sampler.seed" = [1]', "sweep.network.width"),
    ('mode = "cartesian"\n"network.width" = [8]', "sweep.mode"),
    ('"network.width" = [8, 8]', "sweep.network.width"),             # the same point twice
])
def test_a_bad_axis_is_refused_with_exit_2_naming_it(tmp_path, capsys, axes, named):
    path = write_sweep(tmp_path, f"[sweep]\n{axes}\n")
    with pytest.raises(InputError, match=named.replace(".", r"\.")):
        load_sweep(path)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_a_point_that_only_fails_in_combination_is_named(tmp_path):
    axes = '[sweep]\n"sampler.num_steps" = [2000, 400]\n"sampler.burn_in" = [500]\n'
    named = r"^sweep\.sampler\.burn_in: .* sampler\.num_steps=400 sampler\.burn_in=500"
    with pytest.raises(InputError, match=named):
        load_sweep(write_sweep(tmp_path, axes))


def test_dry_run_lists_the_points_and_runs_nothing(tmp_path, capsys):
    path = write_sweep(tmp_path, '[sweep]\n"network.width" = [8, 16]\n"sampler.seed" = [1, 2]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["1/4  network.width=8 sampler.seed=1  [to run]",
                     "2/4  network.width=8 sampler.seed=2  [to run]",
                     "3/4  network.width=16 sampler.seed=1  [to run]",
                     "4/4  network.width=16 sampler.seed=2  [to run]"]
    assert not (tmp_path / "out").exists()


def test_dry_run_tells_what_a_run_would_do_with_each_point(tmp_path):
    from widebayes.sweep import dry_run_lines
    from widebayes.sweep.run import config_fingerprint, write_status

    spec = load_sweep(write_sweep(tmp_path, '[sweep]\n"network.width" = [8, 16, 32, 64]\n'))
    states = [("done", config_fingerprint(spec.points[0].resolved)),
              ("running", config_fingerprint(spec.points[1].resolved)),  # killed
              ("done", "another config")]
    for point, (state, config) in zip(spec.points, states):
        (tmp_path / "out" / "points" / point.slug).mkdir(parents=True)
        write_status(tmp_path / "out" / "points" / point.slug, {"state": state, "config": config, "rows": []})
    assert [line.split("  ")[-1] for line in dry_run_lines(spec, tmp_path / "out")] == [
        "[done, skipped]", "[to resume]", "[config changed, to rerun]", "[to run]"]


def test_executor_options_are_checked_before_anything_runs(tmp_path, capsys, monkeypatch):
    path = write_sweep(tmp_path, '[sweep]\n"network.width" = [8]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--cpus-per-point", "0"]) == 2
    assert "--cpus-per-point" in capsys.readouterr().err and not (tmp_path / "out").exists()
    monkeypatch.setenv("RAY_ADDRESS", "head-node:6379")
    assert RayExecutor().address == "head-node:6379" and RayExecutor("auto").address == "auto"
    options = RayExecutor(cpus=2, gpus=0.5).task_options()
    assert options["num_cpus"] == 2 and options["num_gpus"] == 0.5 and options["max_retries"] == 1
    assert options["retry_exceptions"]
    assert options["runtime_env"]["env_vars"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_alignment_series_is_the_first_order_change_of_the_alignment():
    """<g, dK> against the finite difference of CKA: the delta method behind its MCSE."""
    from widebayes.diagnostics.kernels import target_alignment

    rng = np.random.default_rng(0)
    phi = rng.normal(size=(1, 1, 30, 12))
    Y = rng.normal(size=(12, 2))
    K = phi[0, 0].T @ phi[0, 0] / 30
    d_phi = 1e-6 * rng.normal(size=phi.shape)
    K2 = (phi + d_phi)[0, 0].T @ (phi + d_phi)[0, 0] / 30
    series = alignment_series(np.concatenate([phi, phi + d_phi], axis=1), K, Y)
    change = target_alignment(K2, Y) - target_alignment(K, Y)
    assert series[0, 1] - series[0, 0] == pytest.approx(change, rel=1e-4)


def _sparse_toy():
    """Two chains x three draws, N = 40, three classes (two inputs each): a bulk of small readouts,
    neuron 0 an outlier of code 100 in every draw, neuron 1 one of code 011 in chain 1 only."""
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    N, labels = 40, np.array([0, 0, 1, 1, 2, 2])
    a = 0.1 * rng.normal(size=(2, 3, N, 3))
    phi = np.zeros((2, 3, N, 6))
    a[:, :, 0] = (8.0, -4.0, -4.0)
    phi[:, :, 0, :2] = 5.0
    a[1, :, 1] = (-4.0, 6.0, 6.0)
    phi[1, :, 1, 2:] = 5.0
    idata = SimpleNamespace(posterior={"a": SimpleNamespace(values=a)},
                            representations={"phi_L": SimpleNamespace(values=phi)},
                            observed_data={"labels_train": SimpleNamespace(values=labels)})
    report = {"experiment": {"depth": 1, "num_classes": 3, "width": N},
              "coding": {"layers": {"layer_1": {"threshold": 0.5}}, "scheme": {"scheme": "sparse"}},
              "readout": {"outliers": {"outlier_mass": [2.4, 0.72, 0.72]}}}
    return idata, report


def test_outlier_mass_is_the_outliers_readout_norm_per_coded_class():
    """outlier_mass[c] = sum_{outliers coding c} |a_i|^2 / N per draw: 96/40 for class 0 in every
    draw; 88/40 for classes 1 and 2 in chain 1 only (one outlier coding both counts for each)."""
    from widebayes.diagnostics.codes import readout_outliers
    from widebayes.diagnostics.readout import outlier_bulk
    from widebayes.sweep.quantities import feature_code_ids, outlier_masses

    idata, report = _sparse_toy()
    rows = {q.name: q for q in outlier_masses(report, {"outlier_mass": [2.0, 0.5, 0.5]}, idata)}
    assert list(rows) == ["outlier_mass[0]", "outlier_mass[1]", "outlier_mass[2]"]
    np.testing.assert_allclose(rows["outlier_mass[0]"].series, np.full((2, 3), 96 / 40))
    for c in (1, 2):
        np.testing.assert_allclose(rows[f"outlier_mass[{c}]"].series, [[0.0] * 3, [88 / 40] * 3])
    assert rows["outlier_mass[1]"].sources == {"theory": 0.5}
    assert rows["outlier_mass[1]"].sampled == 0.72  # the report's number
    a = idata.posterior["a"].values
    report_mass = outlier_bulk(a, readout_outliers(a, 40), feature_code_ids(report, idata), 3).outlier_mass
    np.testing.assert_allclose(report_mass, [np.mean(rows[f"outlier_mass[{c}]"].series) for c in range(3)])


def test_outlier_mass_rows_only_where_theory_or_report_has_a_sparse_code():
    from widebayes.sweep.quantities import outlier_masses

    idata, report = _sparse_toy()
    report["coding"]["scheme"]["scheme"] = "redundant"
    assert outlier_masses(report, {"codes": []}, idata) == []
    assert len(outlier_masses(report, {"outlier_mass": [0.0, 0.0, 0.0]}, idata)) == 3
    report["coding"]["scheme"]["scheme"] = "sparse"
    assert [q.sources for q in outlier_masses(report, None, idata)] == [{"theory": None}] * 3


# ------------------------------------------------------------------------------- serial run
@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory):
    """The zip sweep through the command, serially: exit 1 (one point failed)."""
    root = tmp_path_factory.mktemp("serial")
    path = write_sweep(root, ZIP_AXES)
    rc = main(["sweep", str(path), "--out", str(root / "out"), "--executor", "serial", "--no-progress"])
    return path, root / "out", rc


def test_serial_sweep_writes_every_point_and_the_table(serial_sweep):
    _, out, rc = serial_sweep
    assert rc == 1
    for slug in GOOD:
        folder = out / "points" / slug
        for name in ("config.toml", "posterior.nc", "theory.json", "report/report.json"):
            assert (folder / name).is_file(), name
        assert read_status(folder)["state"] == "done"
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == ["network.width", "task.num_test", "quantity", "sampled", "mcse", *THEORY_COLUMNS]
    quantities = ["gen_error[0]", "train_loss", "readout_second_moment[0]", "kernel_alignment[1]"]
    for width in ("8", "16"):
        mine = {r["quantity"]: r for r in rows if r["network.width"] == width}
        assert set(quantities) <= set(mine)
        assert all(np.isfinite(float(mine[q]["sampled"])) and float(mine[q]["mcse"]) > 0 for q in quantities)
        assert np.isfinite([float(mine["gen_error[0]"][col]) for col in ("theory", "gp")]).all()
        assert np.isfinite(float(mine["kernel_alignment[1]"]["nngp"]))
        assert np.isnan(float(mine["train_loss"]["theory"]))
    assert {r["network.width"] for r in rows} == {"8", "16"}  # the failed point has no rows


def test_table_numbers_are_the_posteriors(serial_sweep):
    """gen_error is mean_x <(y - f)^2> over every draw; the netCDF holds the CSV's numbers."""
    import xarray as xr

    _, out, _ = serial_sweep
    idata = load_idata(out / "points" / GOOD[0] / "posterior.nc")
    f, y = idata.posterior["f_test"].values, idata.observed_data["y_test"].values
    rows = read_csv(out / "results.csv")
    row = next(r for r in rows if r["network.width"] == "8" and r["quantity"] == "gen_error[0]")
    expected = np.mean((f[..., 0].astype(np.float64) - y[:, 0]) ** 2)
    assert float(row["sampled"]) == pytest.approx(expected, rel=1e-10)
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        assert list(ds["point"].values) == GOOD and list(ds["network.width"].values) == [8, 16]
        for r in rows:
            p = GOOD.index(f"network.width={r['network.width']}__task.num_test=16")
            cell = ds.sel(quantity=r["quantity"]).isel(point=p)
            for col in ("sampled", "mcse", *THEORY_COLUMNS):
                np.testing.assert_equal(float(cell[col]), float(r[col]))


def test_one_figure_per_quantity(serial_sweep):
    _, out, _ = serial_sweep
    quantities = {r["quantity"] for r in read_csv(out / "results.csv")}
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert len(figures) == len(quantities) and "gen_error_0.png" in figures
    assert all((out / "figures" / name).stat().st_size > 5000 for name in figures)


def test_a_failing_point_is_retried_once_and_costs_the_others_nothing(serial_sweep, capsys):
    _, out, _ = serial_sweep
    status = read_status(out / "points" / BAD)
    assert status["state"] == "failed" and status["attempt"] == 2
    assert status["error"] == "InputError: task.num_test: must be >= 0, got -1"
    assert all(read_status(out / "points" / slug)["attempt"] == 1 for slug in GOOD)


def test_a_diverged_point_fails_with_the_divergence_line(tmp_path):
    from widebayes.config import resolve
    from widebayes.sweep.run import PointError, PointJob, run_point

    cfg = tomllib.loads(BASE)
    cfg["sampler"].update(step_size=50.0, num_steps=100, burn_in=50, thin=10)
    with pytest.raises(PointError, match="chain 0 diverged"):
        run_point(PointJob("p", str(tmp_path / "p"), resolve(cfg), "run"))
    assert read_status(tmp_path / "p")["state"] == "running"  # the driver writes "failed"


def test_rerun_skips_finished_points(serial_sweep):
    path, out, _ = serial_sweep
    before = {slug: (out / "points" / slug / "posterior.nc").stat().st_mtime_ns for slug in GOOD}
    table = (out / "results.csv").read_text()
    result = run_sweep(load_sweep(path), out, SerialExecutor(), progress=False)
    assert result.skipped == GOOD and list(result.failed) == [BAD]
    assert {slug: (out / "points" / slug / "posterior.nc").stat().st_mtime_ns for slug in GOOD} == before
    assert (out / "results.csv").read_text() == table


# ---------------------------------------------------------------------------------- on Ray
@pytest.fixture(scope="module")
def ray_local():
    """One local Ray with two CPUs (two workers at one CPU per point) for the module."""
    ray = pytest.importorskip("ray")
    init_ray(ray, num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_gives_the_serial_table(serial_sweep, ray_local, tmp_path):
    path, serial_out, _ = serial_sweep
    result = run_sweep(load_sweep(path), tmp_path / "out", RayExecutor(), progress=False)
    assert result.done == GOOD and list(result.failed) == [BAD]
    assert (tmp_path / "out" / "results.csv").read_text() == (serial_out / "results.csv").read_text()
    status = read_status(tmp_path / "out" / "points" / BAD)
    assert status["attempt"] == 2 and "task.num_test" in status["error"]  # Ray's retry_exceptions


def test_a_killed_worker_point_resumes_on_rerun(serial_sweep, ray_local, tmp_path):
    """SIGKILL the worker of a point once it has checkpointed; without retries the point fails;
    the re-run resumes it from its checkpoint and gives the uninterrupted run's numbers."""
    _, serial_out, _ = serial_sweep
    base = BASE.replace("seed = 3", "seed = 3\nchunk_draws = 1")  # 30 chunks: a checkpoint after each
    spec = load_sweep(write_sweep(tmp_path, '[sweep]\n"network.width" = [8]\n', base=base))
    out, folder = tmp_path / "out", tmp_path / "out" / "points" / "network.width=8"
    results = {}
    runner = threading.Thread(target=lambda: results.update(
        first=run_sweep(spec, out, RayExecutor(retries=0), progress=False)))
    runner.start()
    pid = wait_for_checkpoint(folder, timeout=120)
    os.kill(pid, signal.SIGKILL)
    runner.join(timeout=120)
    assert list(results["first"].failed) == ["network.width=8"]
    assert read_status(folder)["state"] == "failed" and (folder / "checkpoint.json").exists()

    second = run_sweep(spec, out, RayExecutor(), progress=False)
    status = read_status(folder)
    assert second.done == ["network.width=8"] and status["state"] == "done" and status["resumed"]
    assert not (folder / "checkpoint.json").exists()
    serial_rows = read_status(serial_out / "points" / GOOD[0])["rows"]
    assert status["rows"] == serial_rows  # the same draws as the run that was never killed


def wait_for_checkpoint(folder: Path, timeout: float) -> int:
    """The worker's pid once the point is running and its first checkpoint is on disk."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = read_status(folder)
        if status and status["state"] == "running" and (folder / "checkpoint.json").exists():
            return status["pid"]
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint in {folder} after {timeout} s")
