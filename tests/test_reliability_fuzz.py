"""Property test of the command line (issue 18): whatever the config or the files, `widebayes`
ends in exit 0 with a run that is what was asked, or exit 2 with one line; never a traceback.

Generated inputs: a tiny valid experiment with one or more of its values replaced (wrong types,
out of range, NaN and inf, sizes that cannot fit in memory), keys removed or unknown keys and
tables added; `.npz` data with NaN, inf, wrong shapes or dtypes; damaged config, checkpoint and
posterior files. Driven in process through ``widebayes.cli.main``; a few subprocess runs show
that nothing escapes as a traceback from the real command either.

The default tier runs a budgeted number of examples (under a minute on two cores); the slow
tier many more (``-m slow``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import subprocess
import sys
import tempfile
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from widebayes import footprint
from widebayes.cli import main
from widebayes.config import resolve
from widebayes.tasks import task_sizes

BASE = {
    "task": {"kind": "orthogonal", "num_train": 6, "input_dim": 10, "num_test": 2,
             "class_ratios": [0.5, 0.5], "y_minus": 0.0, "seed": 0},
    "network": {"depth": 1, "width": 8, "activation": "tanh", "readout": "nonlazy",
                "temperature": 0.05},
    "sampler": {"kind": "langevin", "step_size": 0.005, "num_steps": 40, "burn_in": 20,
                "thin": 10, "num_chains": 1, "seed": 1, "progress": False},
}
HUGE = [10**9, 2**31, 2**62, 2**63 - 1]  # beyond int32 or beyond FUZZ_MEMORY
FUZZ_MEMORY = 8 * 2**30  # the memory the command sees in this test, the same on every machine
# Valid runs larger than this are left out (assume): they would pass, slowly.
SMALL = {"num_steps": 400, "num_chains": 4, "width": 32, "depth": 4, "inputs": 64, "input_dim": 256,
         "num_integration_steps": 16, "max_num_doublings": 6, "smc_particles": 128,
         "smc_mcmc_steps": 16}
KEYS = {
    "task": ["kind", "num_train", "input_dim", "num_test", "class_ratios", "y_plus", "y_minus",
             "seed", "num_classes", "targets", "normalize", "separation", "noise", "path",
             "data_dir", "center"],
    "network": ["depth", "width", "activation", "readout", "sigma_w2", "sigma_a2", "temperature",
                "tied_weights"],
    "sampler": ["kind", "step_size", "num_steps", "burn_in", "thin", "num_chains", "seed",
                "preconditioner", "freeze_readout_at", "store_all_layers", "precision", "noise",
                "chunk_draws", "checkpoint_every", "num_integration_steps", "target_accept",
                "adapt_mass_matrix", "max_num_doublings", "anneal", "smc_particles",
                "smc_mcmc_steps", "smc_target_ess"],
}

# --------------------------------------------------------------------------- strategies
scalars = st.one_of(
    st.integers(-3, 12), st.sampled_from(HUGE + [-(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, 1e300, 0.5, 1.5]),
    st.booleans(), st.text(max_size=6),
    st.sampled_from(["auto", "lazy", "nonlazy", "relu", "sigmoid", "linear", "xor", "npz",
                     "mnist", "smc", "hmc", "nuts", "mala", "float64", "threefry", "binary",
                     "geometric", "linear"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.sampled_from(["W1", "a", "x", "schedule", "T_start",
                                                    "num_steps"]), scalars, max_size=2))


@st.composite
def edits(draw):
    """One change to the base config: ``(path, value)``; value None removes the key."""
    kind = draw(st.sampled_from(["set", "set", "set", "remove", "unknown", "table"]))
    if kind == "table":
        return (draw(st.sampled_from(["extra", "task", "network", "sampler"])),), \
            draw(st.one_of(scalars, st.just({})))
    section = draw(st.sampled_from(sorted(KEYS)))
    if kind == "unknown":
        return (section, draw(st.sampled_from(["widht", "lr", "Kind", "x y"]))), draw(scalars)
    key = draw(st.sampled_from(KEYS[section]))
    return (section, key), (None if kind == "remove" else draw(values))


def apply(cfg: dict, path: tuple, value) -> dict:
    cfg = copy.deepcopy(cfg)
    if len(path) == 1:
        cfg[path[0]] = value
        return cfg
    table = cfg.setdefault(path[0], {})
    if not isinstance(table, dict):
        return cfg
    if value is None:
        table.pop(path[1], None)
    else:
        table[path[1]] = value
    return cfg


def write_config(folder: Path, cfg: dict) -> Path | None:
    """The config as TOML; None when TOML cannot hold it (NaN keys, None...)."""
    try:
        text = tomli_w.dumps(cfg)
    except (TypeError, ValueError):
        return None
    path = folder / "exp.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the property
def run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in process: (exit code, stdout, stderr). Any exception but SystemExit(2)
    escapes and fails the test. Warnings are printed to the captured stderr, as the command
    would print them (so that a warning before an error line counts as a second line)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*")
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
    shown = "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n"
                    for w in caught)
    return code, out.getvalue(), shown + err.getvalue()


def check_outcome(code: int, err: str, out_dir: Path | None = None, cfg: dict | None = None):
    """Exit 2 with exactly one ``widebayes: error:`` line, or exit 0 with the run asked for."""
    assert code in (0, 2), (code, err)
    lines = err.strip().splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("widebayes: error: "), err
        assert "Traceback" not in err
        return
    assert "Traceback" not in err
    if out_dir is not None and cfg is not None:
        check_run_is_the_config(out_dir, cfg)


def check_run_is_the_config(out_dir: Path, cfg: dict) -> None:
    """No silent wrong run: posterior.nc stores the config as given (nothing coerced) and holds
    the draws it asks for, all finite (a diverged chain exits 2)."""
    from widebayes.config import num_draws
    from widebayes.io import read_netcdf

    idata = read_netcdf(out_dir / "posterior.nc", attrs=("config",))
    stored = tomllib.loads(idata.attrs["config"])
    for section, table in cfg.items():
        for key, value in table.items():
            if not (section == "network" and key == "sigma_a2" and value == "auto"):
                assert stored[section][key] == value, (section, key, stored[section][key], value)
    smp = resolve(cfg)["sampler"]
    draws = (smp["smc_particles"] or 64) if smp["kind"] == "smc" else num_draws(smp)
    a = idata.posterior["a"].values
    assert a.shape[:3] == (smp["num_chains"], draws, cfg["network"].get("width", 100))
    assert np.all(np.isfinite(a))


def long_but_valid(cfg: dict) -> bool:
    """Whether the command would accept ``cfg`` and then sample for long (left out of the fuzz:
    such runs are not what is under test, and pass)."""
    try:
        resolved = resolve(copy.deepcopy(cfg))
        footprint.check(resolved, available=FUZZ_MEMORY)
        sizes = task_sizes(resolved["task"])
    except Exception:  # noqa: BLE001 - refused (or a bug: the command's run will show it)
        return False
    net, smp = resolved["network"], resolved["sampler"]
    return not (smp["num_steps"] <= SMALL["num_steps"] and smp["num_chains"] <= SMALL["num_chains"]
                and net["width"] <= SMALL["width"] and net["depth"] <= SMALL["depth"]
                and sizes.num_train + sizes.num_test <= SMALL["inputs"]
                and sizes.input_dim <= SMALL["input_dim"]
                and all(smp[k] <= SMALL[k] for k in ("num_integration_steps", "max_num_doublings",
                                                      "smc_particles", "smc_mcmc_steps")))


@contextlib.contextmanager
def fuzz_machine():
    """The command sees FUZZ_MEMORY bytes of memory."""
    real = footprint.available_memory
    footprint.available_memory = lambda: FUZZ_MEMORY
    try:
        yield
    finally:
        footprint.available_memory = real


def sample_config(cfg: dict, folder: Path, extra=()) -> None:
    """Write ``cfg``, run ``widebayes sample`` on it, and check the outcome."""
    exp = write_config(folder, cfg)
    assume(exp is not None and not long_but_valid(cfg))
    with fuzz_machine():
        code, _, err = run(["sample", str(exp), "--out", str(folder / "run"), "--no-progress",
                            *extra])
    event(f"exit {code}")
    check_outcome(code, err, folder / "run", cfg)


def fuzz_config(changes) -> None:
    cfg = BASE
    for path, value in changes:
        cfg = apply(cfg, path, value)
    with tempfile.TemporaryDirectory() as tmp:
        sample_config(cfg, Path(tmp))


FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@settings(FAST, max_examples=20)
@given(st.lists(edits(), min_size=1, max_size=3))
def test_generated_configs_exit_0_or_2_with_one_line(changes):
    fuzz_config(changes)


@pytest.mark.slow
@LONG
@given(st.lists(edits(), min_size=1, max_size=4))
def test_generated_configs_exit_0_or_2_with_one_line_long(changes):
    fuzz_config(changes)


# --------------------------------------------------------------------------- data files
def _array(draw, rows, cols):
    dtype = draw(st.sampled_from(["float64"] * 6 + ["float32", "int64", "uint8", "bool",
                                                    "complex", "str", "object"]))
    X = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((rows, cols))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # NaN, inf, beyond float32
        if X.size:
            X.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from(
                [np.nan, np.inf, -np.inf, 1e308, 3e38]))
    if dtype == "object":
        return np.array([{"row": i} for i in range(rows)], dtype=object)
    if dtype == "str":
        return X.astype(str)
    with np.errstate(invalid="ignore", over="ignore"):
        return X.astype(dtype)


@st.composite
def npz_contents(draw):
    rows, cols = draw(st.sampled_from([6, 8, 4, 2, 1, 0])), draw(st.sampled_from([3, 5, 1, 0]))
    arrays = {"X": _array(draw, rows, cols)}
    label_rows = rows + draw(st.sampled_from([0, 0, 0, -1, 1]))
    labels = draw(st.lists(st.sampled_from([0, 1, 2] * 5 + [-1, 7, 2**40]),
                           min_size=max(label_rows, 0), max_size=max(label_rows, 0)))
    arrays["labels"] = np.asarray(labels, dtype=np.int64).astype(
        draw(st.sampled_from(["int64"] * 4 + ["float64", "uint8", "int8"])))  # narrow types wrap
    if draw(st.booleans()):
        test_rows = draw(st.integers(0, 3))
        arrays["X_test"] = _array(draw, test_rows, cols + draw(st.sampled_from([0, 0, 1])))
        arrays["labels_test"] = np.zeros(test_rows, np.int64)
    if draw(st.sampled_from([False] * 4 + [True])):
        del arrays[draw(st.sampled_from(sorted(arrays)))]
    task = {"kind": "npz"}
    for key, value in draw(st.dictionaries(st.sampled_from(["num_train", "num_test",
                                                            "num_classes", "normalize",
                                                            "targets"]),
                                           st.sampled_from([None, 0, 1, 2, 3, 10**12, True,
                                                            "binary"]), max_size=2)).items():
        if value is not None:
            task[key] = value
    return arrays, task


def fuzz_npz(arrays: dict, task: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.savez(folder / "data.npz", **arrays)
        cfg = {**BASE, "task": {**task, "path": str(folder / "data.npz")}}
        sample_config(cfg, folder)


@settings(FAST, max_examples=10)
@given(npz_contents())
def test_generated_data_files_exit_0_or_2_with_one_line(contents):
    fuzz_npz(*contents)


@pytest.mark.slow
@settings(LONG, max_examples=200)
@given(npz_contents())
def test_generated_data_files_exit_0_or_2_with_one_line_long(contents):
    fuzz_npz(*contents)


# --------------------------------------------------------------------------- damaged files
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run of BASE, with its last checkpoint kept (``checkpoint.remove`` held back)."""
    from widebayes import checkpoint

    folder = tmp_path_factory.mktemp("finished")
    cfg = copy.deepcopy(BASE)
    cfg["sampler"].update(chunk_draws=1, checkpoint_every=1)
    exp = write_config(folder, cfg)
    real_remove = checkpoint.remove
    checkpoint.remove = lambda out: None
    try:
        assert run(["sample", str(exp), "--out", str(folder / "run")])[0] == 0
    finally:
        checkpoint.remove = real_remove
    files = {name: (folder / "run" / name).read_bytes()
             for name in ("checkpoint.npz", "checkpoint.json", "posterior.nc")}
    return exp, files, posterior_values(folder / "run")


def posterior_values(out: Path) -> dict:
    from widebayes.io import read_netcdf

    idata = read_netcdf(out / "posterior.nc")
    return {name: idata.posterior[name].values for name in idata.posterior.data_vars}


@st.composite
def damage(draw, raw: bytes):
    """``raw`` truncated, overwritten by noise, or with a few bytes changed."""
    how = draw(st.sampled_from(["truncate", "noise", "flip"]))
    if how == "truncate":
        return raw[:draw(st.integers(0, max(len(raw) - 1, 0)))]
    if how == "noise":
        return draw(st.binary(max_size=512))
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(out) - 1))
        out[i] = (out[i] + draw(st.integers(1, 255))) % 256
    return bytes(out)


def fuzz_damaged(finished, file: str, data) -> None:
    exp, files, reference = finished
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        out.mkdir()
        if file == "config.toml":
            broken = data.draw(damage(Path(exp).read_bytes()))
            path = Path(tmp) / "exp.toml"
            path.write_bytes(broken)
            try:
                cfg = tomllib.loads(broken.decode())
            except (UnicodeDecodeError, tomllib.TOMLDecodeError):
                cfg = None
            assume(cfg is None or not long_but_valid(cfg))
            with fuzz_machine():
                code, _, err = run(["sample", str(path), "--out", str(out)])
            event(f"{file}: exit {code}")
            check_outcome(code, err)
            return
        if file == "posterior.nc":
            (out / file).write_bytes(data.draw(damage(files[file])))
            code, _, err = run(["compare", str(out)])
            event(f"{file}: exit {code}")
            check_outcome(code, err)
            return
        for name in ("checkpoint.npz", "checkpoint.json"):
            (out / name).write_bytes(files[name])
        broken = data.draw(damage(files[file]))
        (out / file).write_bytes(broken)
        code, _, err = run(["sample", str(exp), "--out", str(out), "--resume"])
        event(f"{file}: exit {code}")
        check_outcome(code, err)
        if code == 2:
            assert (out / file).read_bytes() == broken  # a damaged checkpoint is left in place
        else:  # resumed: then exactly the uninterrupted run's draws
            resumed = posterior_values(out)
            for name, values in reference.items():
                np.testing.assert_array_equal(resumed[name], values)


@settings(FAST, max_examples=8)
@given(st.sampled_from(["config.toml", "checkpoint.npz", "checkpoint.json"]), st.data())
def test_damaged_files_exit_0_or_2_with_one_line(finished_run, file, data):
    fuzz_damaged(finished_run, file, data)


@pytest.mark.slow
@settings(LONG, max_examples=150)
@given(st.sampled_from(["config.toml", "checkpoint.npz", "checkpoint.json", "posterior.nc"]),
       st.data())
def test_damaged_files_exit_0_or_2_with_one_line_long(finished_run, file, data):
    fuzz_damaged(finished_run, file, data)


# --------------------------------------------------------------------------- the real command
@pytest.mark.parametrize("case", ["damaged toml", "nan in data", "too large", "bad value"])
def test_no_traceback_escapes_the_installed_command(tmp_path, case):
    """The same as above through a new Python process: stderr is one line, exit code 2."""
    exp = tmp_path / "exp.toml"
    cfg = copy.deepcopy(BASE)
    if case == "damaged toml":
        exp.write_bytes(b"[task]\nkind = \"orth\xff\n")
    else:
        if case == "nan in data":
            np.savez(tmp_path / "d.npz", X=np.array([[1.0, np.nan], [0.0, 1.0]]),
                     labels=np.array([0, 1]))
            cfg["task"] = {"kind": "npz", "path": str(tmp_path / "d.npz")}
        elif case == "too large":
            cfg["network"]["width"] = 10**12
        else:
            cfg["sampler"]["seed"] = 2**32
        write_config(tmp_path, cfg)
    done = subprocess.run([sys.executable, "-c",
                           "import sys; from widebayes.cli import main; sys.exit(main())",
                           "sample", str(exp), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
