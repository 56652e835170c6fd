"""Never lose a run, never print a traceback (issue 18): the output-folder guard, damaged files
named in one line and left in place, SIGINT/SIGTERM ending in a checkpoint that resumes bit for
bit, the memory estimate, strict JSON and atomic writes."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from widebayes import checkpoint, footprint, interrupt
from widebayes import io as wio
from widebayes.cli import main
from widebayes.config import resolve
from widebayes.errors import InputError
from widebayes.tasks import make_task, task_sizes

EXP = """
[task]
kind = "orthogonal"
num_train = 6
input_dim = 10
num_test = 2
class_ratios = [0.5, 0.5]

[network]
depth = 1
width = 8
activation = "tanh"
temperature = 0.05

[sampler]
step_size = 0.005
num_steps = {num_steps}
burn_in = 20
thin = 10
num_chains = 2
chunk_draws = 1
checkpoint_every = {every}
progress = false
"""


def experiment(tmp_path: Path, num_steps: int = 120, every: int = 1) -> str:
    path = tmp_path / "exp.toml"
    path.write_text(EXP.format(num_steps=num_steps, every=every))
    return str(path)


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("widebayes: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def posterior_draws(folder: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        idata = wio.read_netcdf(folder / "posterior.nc")
    return {name: idata.posterior[name].values for name in idata.posterior.data_vars}


# --------------------------------------------------------------------------- atomic files, JSON
def test_atomic_write_unique_temporary_names_mode_and_failure(tmp_path):
    target, seen = tmp_path / "f.txt", []

    def write(tmp):
        seen.append(tmp)
        Path(tmp).write_text("new")

    wio.atomic_write(target, write)
    wio.atomic_write(target, write)
    assert seen[0] != seen[1] and Path(seen[0]).name.startswith(".f.txt.")
    assert target.read_text() == "new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask

    def fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        wio.atomic_write(target, fail)
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
    (tmp_path / ".f.txt.abc123.tmp").write_text("left by a SIGKILL")
    assert [p.name for p in wio.remove_temporaries(target)] == [".f.txt.abc123.tmp"]
    assert checkpoint.atomic_write is wio.atomic_write  # the old import path still works


def test_strict_json_nan_to_null_or_refused(tmp_path):
    value = {"x": np.array([1.0, np.nan]), "y": np.float32(2.5), "z": (np.int64(3), -np.inf)}
    wio.write_json(tmp_path / "a.json", value)
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1.0, None], "y": 2.5,
                                                             "z": [3, None]}
    with pytest.raises(ValueError, match=r"\$\.x\[1\]"):
        wio.write_json(tmp_path / "b.json", value, nonfinite="refuse")
    assert not (tmp_path / "b.json").exists()
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(InputError, match="c.json"):
        wio.read_json(tmp_path / "c.json")


def _tiny_netcdf(path: Path, attrs=None):
    az = wio.quiet_arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        idata = az.from_dict(posterior={"a": np.zeros((1, 4, 3))}, attrs=attrs or {})
        idata.to_netcdf(str(path), engine="h5netcdf")
    return path.read_bytes()


def test_read_netcdf_names_damaged_and_foreign_files(tmp_path):
    path = tmp_path / "posterior.nc"
    raw = _tiny_netcdf(path, attrs={"config": "x = 1"})
    assert wio.read_netcdf(path, attrs=("config",)).posterior["a"].shape == (1, 4, 3)
    for damage in (raw[: len(raw) // 2], raw[:100], b"", os.urandom(4096), b"CDF\x01junk"):
        path.write_bytes(damage)
        with pytest.raises(InputError, match="posterior.nc is damaged") as info:
            wio.read_netcdf(path)
        assert "\n" not in str(info.value)
    _tiny_netcdf(path)
    with pytest.raises(InputError, match="no attribute 'config'"):
        wio.read_netcdf(path, attrs=("config",))
    with pytest.raises(InputError, match="no observed_data"):
        wio.read_netcdf(path, groups=("posterior", "observed_data"))
    with pytest.raises(InputError, match="does not exist"):
        wio.read_netcdf(tmp_path / "missing.nc")


def test_a_half_open_netcdf_file_prints_nothing_after_the_error_line():
    """h5netcdf's File, when its opening fails on a damaged file, raises from ``__del__``; Python
    would print that traceback after the command's one line (found by the slow fuzz)."""

    def close(self):
        raise AttributeError("'File' object has no attribute '_writable'")

    close.__module__ = "h5netcdf.core"
    half_open = type("File", (), {"close": close, "__del__": close})
    seen = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with wio._quiet_half_open_files():
            half_open()
    finally:
        sys.unraisablehook = previous
    assert seen == []


# --------------------------------------------------------------------------- checkpoints
CARRY = {"x": jnp.arange(6.0).reshape(2, 3), "n": jnp.array([1, 2], jnp.int32)}
DRAWS = [{"a": np.ones((2, 1, 4), np.float32)}, {"a": np.zeros((2, 1, 4), np.float32)}]


def test_checkpoint_round_trip_and_a_kill_between_the_two_renames(tmp_path):
    checkpoint.save(tmp_path, 3, CARRY, DRAWS[:1], "cfg")
    old_meta = (tmp_path / checkpoint.META).read_bytes()
    checkpoint.save(tmp_path, 4, CARRY, DRAWS, "cfg")
    nxt, carry, draws = checkpoint.load(tmp_path, CARRY, "cfg")
    assert nxt == 4 and len(draws) == 2 and carry["n"].dtype == jnp.int32
    np.testing.assert_array_equal(carry["x"], CARRY["x"])
    # killed after the archive's rename, before the JSON's: the archive carries its own state
    (tmp_path / checkpoint.META).write_bytes(old_meta)
    nxt, _, draws = checkpoint.load(tmp_path, CARRY, "cfg")
    assert nxt == 4 and len(draws) == 2
    (tmp_path / checkpoint.META).unlink()  # killed before the first JSON was written
    assert checkpoint.exists(tmp_path) and checkpoint.load(tmp_path, CARRY, "cfg")[0] == 4


def test_damaged_or_foreign_checkpoint_is_named_and_left_in_place(tmp_path):
    checkpoint.save(tmp_path, 2, CARRY, DRAWS, "cfg")
    npz, meta = tmp_path / checkpoint.NPZ, tmp_path / checkpoint.META
    raw = npz.read_bytes()
    for damage in (raw[: len(raw) // 2], raw[:-30], b"", b"PK\x03\x04" + os.urandom(500)):
        npz.write_bytes(damage)
        with pytest.raises(InputError, match="checkpoint.npz is damaged") as info:
            checkpoint.load(tmp_path, CARRY, "cfg")
        assert "left in place" in str(info.value) and npz.read_bytes() == damage
    np.savez(npz, other=np.zeros(3))  # a foreign archive
    with pytest.raises(InputError, match="checkpoint.npz is damaged or not a widebayes"):
        checkpoint.load(tmp_path, CARRY, "cfg")
    npz.write_bytes(raw)
    with pytest.raises(InputError, match=r"carry/1 has shape \(2, 3\), this run's has \(3, 3\)"):
        checkpoint.load(tmp_path, {"x": jnp.zeros((3, 3)), "n": CARRY["n"]}, "cfg")
    with pytest.raises(InputError, match="different config"):
        checkpoint.load(tmp_path, CARRY, "other cfg")
    meta.write_text('{"next_chunk": ')
    with pytest.raises(InputError, match="checkpoint.json is damaged"):
        checkpoint.load(tmp_path, CARRY, "cfg")
    assert meta.read_text() == '{"next_chunk": ' and npz.read_bytes() == raw
    npz.unlink()
    with pytest.raises(InputError, match="checkpoint.npz is missing"):
        checkpoint.load(tmp_path, CARRY, "cfg")


@pytest.mark.parametrize("files, resume, overwrite, resumable, expected", [
    ((), False, False, True, "new"),
    ((), True, False, True, "fresh"),
    ((), False, True, True, "new"),
    (("posterior.nc",), False, False, True, "already holds a finished run"),
    (("posterior.nc",), True, False, True, "nothing to resume"),
    (("posterior.nc",), False, True, True, "overwrite"),
    (("checkpoint.npz", "checkpoint.json"), False, False, True, "pass --resume to continue"),
    (("checkpoint.json",), False, False, True, "pass --resume to continue"),
    (("checkpoint.npz",), True, False, True, "resume"),
    (("checkpoint.npz",), False, True, True, "overwrite"),
    (("checkpoint.npz",), False, False, False, "pass --overwrite to run it again"),
    ((), True, True, True, "pass one"),
])
def test_guard_refuses_to_overwrite_unasked(tmp_path, files, resume, overwrite, resumable,
                                            expected):
    for name in files:
        (tmp_path / name).write_bytes(b"old run")
    if " " in expected:
        with pytest.raises(InputError, match=expected) as info:
            checkpoint.guard_out_dir(tmp_path, resume, overwrite, resumable)
        assert "\n" not in str(info.value)
        if not resumable:
            assert "--resume" not in str(info.value)
    else:
        assert checkpoint.guard_out_dir(tmp_path, resume, overwrite, resumable) == expected
    assert all((tmp_path / name).read_bytes() == b"old run" for name in files)  # nothing deleted


def test_out_dir_that_is_a_file_and_a_second_writer_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="existing file, not a folder"):
        checkpoint.make_out_dir(tmp_path / "f")
    with pytest.raises(InputError, match="cannot make the output folder"):
        checkpoint.make_out_dir(tmp_path / "f" / "sub")
    with checkpoint.locked(tmp_path):
        with pytest.raises(InputError, match="another widebayes run is writing"):
            with checkpoint.locked(tmp_path):
                pass
    with checkpoint.locked(tmp_path):  # released
        pass


# --------------------------------------------------------------------------- the command
def test_the_four_cases_of_the_issue_are_refused_in_one_line(tmp_path, capsys):
    exp = experiment(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    checkpoint.save(out, 2, CARRY, DRAWS, "a killed run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["sample", exp, "--out", str(out)]) == 2  # a killed run's checkpoint
    one_line_error(capsys, "checkpoint of an unfinished run", "--resume", "--overwrite")
    assert main(["drift", exp, "--out", str(out)]) == 2
    one_line_error(capsys, "checkpoint of an unfinished run", "--overwrite")
    assert main(["demo", "--out", str(out)]) == 2
    assert "--resume" not in one_line_error(capsys, "unfinished run", "--overwrite")
    (out / "posterior.nc").write_bytes(b"a finished run")
    checkpoint.remove(out)
    assert main(["sample", exp, "--out", str(out)]) == 2  # a finished run
    one_line_error(capsys, "already holds a finished run", "--overwrite")
    assert (out / "posterior.nc").read_bytes() == b"a finished run"
    assert main(["sample", exp, "--out", str(out), "--resume"]) == 2
    one_line_error(capsys, "nothing to resume")
    assert main(["sample", exp, "--out", exp]) == 2  # --out naming a file
    one_line_error(capsys, "existing file, not a folder")
    assert main(["compare", str(out)]) == 2  # damaged posterior.nc
    one_line_error(capsys, "posterior.nc is damaged")
    assert main(["theory", exp, "--out", str(out)]) == 2
    one_line_error(capsys, "is a folder")
    assert before  # the checkpoint files were there, untouched, until removed above


def test_damaged_checkpoint_on_resume_is_one_line_and_kept(tmp_path, capsys):
    exp = experiment(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    checkpoint.save(out, 2, CARRY, DRAWS, "x")
    raw = (out / checkpoint.NPZ).read_bytes()
    (out / checkpoint.NPZ).write_bytes(raw[:200])  # truncated
    assert main(["sample", exp, "--out", str(out), "--resume"]) == 2
    one_line_error(capsys, "checkpoint.npz is damaged", "left in place")
    assert (out / checkpoint.NPZ).read_bytes() == raw[:200]
    (out / checkpoint.NPZ).write_bytes(raw)
    (out / checkpoint.META).write_text("{garbage")
    assert main(["sample", exp, "--out", str(out), "--resume"]) == 2
    one_line_error(capsys, "checkpoint.json is damaged")
    assert (out / checkpoint.META).read_text() == "{garbage"


def test_usage_errors_and_damaged_config_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["sample"])
    assert stop.value.code == 2
    one_line_error(capsys, "required")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[task\x00")
    assert main(["sample", str(bad), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, "bad.toml")
    assert main(["theory", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "t.json")]) == 2
    one_line_error(capsys, "missing.toml")


def _send_when_sampling(signum: int):
    """Send ``signum`` to this process once the run defers it (``interrupt.stop_requests``)."""

    def send():
        while signal.getsignal(signum) is not interrupt._record:
            threading.Event().wait(0.01)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_checkpoint_at_the_chunk_end_and_resume_is_bit_identical(
        tmp_path, capfd, signum):
    exp = experiment(tmp_path, num_steps=400, every=10**6)  # no periodic checkpoint
    out = tmp_path / "run"
    _send_when_sampling(signum)
    assert main(["sample", exp, "--out", str(out)]) == 128 + signum
    err = capfd.readouterr().err.strip().splitlines()
    name = signal.Signals(signum).name
    assert err[0].startswith(f"widebayes: {name} received") and len(err) == 2
    assert err[1].startswith(f"widebayes: interrupted: stopped by {name} after step ")
    assert f"--out {out} --resume" in err[1]
    assert (out / checkpoint.NPZ).exists() and not (out / "posterior.nc").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    if signum == signal.SIGTERM:
        return
    assert main(["sample", exp, "--out", str(out), "--resume"]) == 0
    reference = tmp_path / "reference"
    assert main(["sample", exp, "--out", str(reference)]) == 0
    resumed, uninterrupted = posterior_draws(out), posterior_draws(reference)
    for name in uninterrupted:
        np.testing.assert_array_equal(resumed[name], uninterrupted[name])
    assert not checkpoint.exists(out)


def test_a_second_signal_stops_at_once():
    with interrupt.stop_requests():
        signal.raise_signal(signal.SIGINT)
        assert interrupt.requested() == signal.SIGINT
        with pytest.raises(interrupt.Interrupted) as stop:
            signal.raise_signal(signal.SIGINT)
    assert stop.value.exit_code == 130 and stop.value.step is None
    assert interrupt.requested() is None


# --------------------------------------------------------------------------- memory estimate
def test_footprint_counts_the_stored_draws_exactly_and_refuses_what_cannot_fit(tmp_path):
    from widebayes.sampling import sample_experiment

    resolved = resolve({
        "task": {"kind": "orthogonal", "num_train": 6, "input_dim": 10, "num_test": 2,
                 "class_ratios": [0.5, 0.5]},
        "network": {"depth": 2, "width": 8, "activation": "tanh"},
        "sampler": {"num_steps": 60, "burn_in": 20, "thin": 10, "num_chains": 2,
                    "store_all_layers": True, "progress": False},
    })
    fp = footprint.estimate(resolved, task_sizes(resolved["task"]))
    result = sample_experiment(resolved).result
    assert fp.draws == sum(v.nbytes for v in result.draws.values())
    assert fp.kernels == footprint.KERNEL_COPIES * 2 * 3 * (36 + 4) * 4
    params = 8 * 10 + 8 * 8 + 8 * 2
    assert fp.states == 2 * (4 * params + 4 * 2 * 8 * 8) * 4
    assert footprint.check(resolved).total == fp.total
    with pytest.raises(InputError, match=r"needs about .* stored draws .*\(2 chains x 4 draws"):
        footprint.check(resolved, available=fp.total)
    wide = {**resolved, "network": {**resolved["network"], "width": 10**8}}
    with pytest.raises(InputError, match="TiB|PiB"):
        footprint.check(wide)
    assert footprint.available_memory() > 0


def test_sizes_that_cannot_fit_are_refused_up_front_by_the_command(tmp_path, capsys):
    exp = experiment(tmp_path)
    for overrides in (["network.width=1000000000000"], ["sampler.num_chains=2000000000"],
                      ["task.num_train=2000000000", "task.input_dim=2147483647"],
                      ["task.input_dim=2147483647", "network.width=1000000"],
                      ["sampler.num_steps=2000000000", "network.width=1000000"]):
        sets = [word for item in overrides for word in ("--set", item)]
        assert main(["sample", exp, "--out", str(tmp_path / "o"), *sets]) == 2
        one_line_error(capsys, "needs about", "available")
    assert not (tmp_path / "o" / "posterior.nc").exists()
    assert main(["theory", exp, "--out", str(tmp_path / "t.json"), "--set",
                 "task.num_train=1000000000", "--set", "task.input_dim=2000000000"]) == 2
    one_line_error(capsys, "the theory needs about")


def test_task_sizes_match_the_tasks(tmp_path):
    X, labels = np.ones((7, 3)), np.array([0, 2, 1, 0, 2, 1, 1])
    np.savez(tmp_path / "d.npz", X=X, labels=labels, X_test=np.ones((2, 3)),
             labels_test=np.array([0, 1]))
    for cfg in ({"kind": "orthogonal", "num_train": 5, "num_test": 3, "input_dim": 9},
                {"kind": "xor", "num_train": 8, "num_test": 4},
                {"kind": "npz", "path": str(tmp_path / "d.npz"), "normalize": False},
                {"kind": "npz", "path": str(tmp_path / "d.npz"), "num_train": 3,
                 "num_classes": 4, "normalize": False}):
        data, sizes = make_task(cfg), task_sizes(cfg)
        assert (sizes.num_train, sizes.num_test, sizes.input_dim, sizes.num_outputs) == (
            len(data.X_train), len(data.X_test), data.X_train.shape[1], data.Y_train.shape[1])
        assert sizes.stored_bytes >= data.X_train.nbytes + data.Y_train.nbytes


def test_an_npz_that_would_not_fit_is_sized_from_its_header_and_refused(tmp_path):
    """A few hundred bytes claiming a 10^12-number X: refused before any of it is read."""
    path = tmp_path / "bomb.npz"
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("X.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
        with archive.open("labels.npy", "w") as fh:
            np.lib.format.write_array(fh, np.zeros(10**6, np.int64)[:0])
    cfg = {"kind": "npz", "path": str(path)}
    with pytest.raises(InputError, match="labels in .* has shape"):
        task_sizes(cfg)
    resolved = resolve({"task": cfg, "sampler": {"progress": False}})
    with pytest.raises(InputError, match="labels in .* has shape"):
        footprint.check(resolved)
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("X.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
        with archive.open("labels.npy", "w") as fh:
            np.lib.format.write_array(fh, np.zeros(10**6, np.int64))
    assert task_sizes(cfg).stored_bytes > 8 * 10**12
    with pytest.raises(InputError, match="needs about"):
        footprint.check(resolved)



def test_importing_widebayes_turns_off_the_xla_cpu_scheduler_that_deadlocked_and_keeps_a_users_choice():
    """widebayes/__init__.py sets the XLA:CPU flag under which the neuron moves' vmapped Cholesky
    batch stopped deadlocking; XLA accepts it (an unknown flag aborts), and a user's setting stays."""
    import subprocess

    probe = ("import os, widebayes, jax.numpy as jnp; float(jnp.ones(2).sum()); "
             "print(os.environ['XLA_FLAGS'])")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    env["XLA_FLAGS"] = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
