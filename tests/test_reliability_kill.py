"""SIGKILL at random moments (issue 18): `widebayes sample` killed while it samples and writes
its checkpoints, resumed with --resume until it finishes, gives the draws of an uninterrupted run
bit for bit, and never leaves a checkpoint it cannot read.

Each kill lands at a random time after the run has started writing checkpoints (one every chunk
of one draw, so most of the run is spent around a checkpoint write). The default tier kills one
run twice; the slow tier four runs three times each.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from widebayes import checkpoint
from widebayes import io as wio
from widebayes.config import load_toml, resolve
from widebayes.sampling import sample_experiment

EXP = """
[task]
kind = "orthogonal"
num_train = 12
input_dim = 16
num_test = 4
class_ratios = [0.5, 0.25, 0.25]

[network]
depth = 1
width = 24
activation = "sigmoid"
temperature = 0.05

[sampler]
step_size = 0.005
num_steps = 2420
burn_in = 20
thin = 40
num_chains = 2
seed = {seed}
chunk_draws = 1
checkpoint_every = 1
progress = false
"""
COMMAND = [sys.executable, "-c", "import sys; from widebayes.cli import main; sys.exit(main())"]


def _checkpoint_stamp(out: Path):
    try:
        return (out / checkpoint.NPZ).stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _run_killed(exp: str, out: Path, rng: random.Random, timeout: float = 120.0) -> str:
    """Start `widebayes sample --resume`; once it writes a new checkpoint, SIGKILL it after a
    random delay. Returns "finished" (before the kill), "killed", or "killed mid-write" (a
    temporary file of an unfinished write is left)."""
    before = _checkpoint_stamp(out)
    proc = subprocess.Popen([*COMMAND, "sample", exp, "--out", str(out), "--resume"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    while _checkpoint_stamp(out) == before and proc.poll() is None:
        assert time.monotonic() - start < timeout, "no checkpoint written"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 1.0))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    err = proc.communicate(timeout=timeout)[1].decode()
    if proc.returncode == -signal.SIGKILL:
        return "killed mid-write" if list(out.glob(".*.tmp")) else "killed"
    assert proc.returncode == 0 and "Traceback" not in err, err
    return "finished"


def kill_and_resume(tmp_path: Path, seed: int, kills: int) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(EXP.format(seed=seed))
    out = tmp_path / "run"
    rng = random.Random(seed)
    outcomes = []
    for _ in range(kills):
        outcomes.append(_run_killed(str(exp), out, rng))
        if outcomes[-1] == "finished":
            break
    print(f"seed {seed}: {', '.join(outcomes)}")  # shown with -s
    if outcomes[-1] != "finished":  # the last run goes to the end
        done = subprocess.run([*COMMAND, "sample", str(exp), "--out", str(out), "--resume"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    reference = sample_experiment(resolve(load_toml(exp))).result.draws
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        idata = wio.read_netcdf(out / "posterior.nc")
    for name in ("a", "f_train", "f_test"):
        np.testing.assert_array_equal(idata.posterior[name].values, reference[name])
    np.testing.assert_array_equal(idata.representations["phi_L"].values, reference["phi_L"])
    left = sorted(p.name for p in out.iterdir())
    assert left == [".widebayes.lock", "config.toml", "posterior.nc"], left


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    kill_and_resume(tmp_path, seed=0, kills=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_at_random_moments_then_resume_is_bit_identical_long(tmp_path, seed):
    kill_and_resume(tmp_path, seed=seed, kills=3)
