"""Chains spread over devices: the same draws as on one device, and the devices recorded.

JAX fixes its device count when it starts, so each check runs in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU devices).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {tests!r})
    import numpy as np, jax
    from test_sampling import small
    from widebayes.inference import ChainBlocks, chain_layout
    from widebayes.sampling import sample_experiment

    report = {{"devices": [str(d) for d in jax.devices()], "runs": {{}}}}
    for name, num_chains, extra, counts in {cases!r}:
        draws = {{}}
        for d in (1,) + counts:
            out = sample_experiment(small(num_chains=num_chains, devices=d, **extra), out_dir=None)
            draws[d] = {{k: np.asarray(v, dtype=float) for k, v in out.result.draws.items()}}
            report["runs"][f"{{name}}-{{d}}"] = out.idata.posterior.attrs["devices"]
        report[name] = {{d: max(float(np.nanmax(np.abs(draws[1][k] - draws[d][k]))) for k in draws[1])
                         for d in counts}}
    layout = chain_layout(8)
    blocks = ChainBlocks.split(np.arange(8), np.arange(8), layout)
    report["layout8"] = [layout.block, [str(d) for d in blocks.devices],
                         [str(list(b.devices())[0]) for b in blocks.carries]]
    print(json.dumps(report))
''')

#: (name, chains, sampler, device counts compared with one device): Langevin in the default tier;
#: the warmed-up HMC and the collapsed readout (each run compiles afresh, about 25 s together) slow
CASES = [("langevin", 4, {"kind": "langevin"}, (2, 4))]
SLOW_CASES = [("hmc-warmup", 4, {"kind": "hmc", "num_steps": 240, "burn_in": 80, "thin": 20}, (4,)),
              ("collapsed", 4, {"kind": "langevin", "readout": "collapsed"}, (4,))]


def run_on_four_devices(cases) -> dict:
    tests = os.path.dirname(__file__)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests, cases=cases)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def four_devices():
    return run_on_four_devices(CASES)


def test_four_forced_devices_exist(four_devices):
    assert len(four_devices["devices"]) == 4


def test_langevin_draws_identical_on_one_two_and_four_devices(four_devices):
    assert four_devices["langevin"] == {"2": 0.0, "4": 0.0}


@pytest.mark.slow
def test_hmc_and_collapsed_draws_identical_on_one_and_four_devices():
    report = run_on_four_devices(SLOW_CASES)
    for name, _, _, counts in SLOW_CASES:
        assert report[name] == {str(d): 0.0 for d in counts}, name


def test_devices_used_are_recorded_in_the_posterior(four_devices):
    runs = four_devices["runs"]
    assert len(runs["langevin-1"]) == 1
    assert len(runs["langevin-2"]) == 2
    assert runs["langevin-4"] == four_devices["devices"]


def test_blocks_are_placed_on_their_devices(four_devices):
    block, devices, placed = four_devices["layout8"]
    assert block == 2  # eight chains over four devices: two per device
    assert devices == placed
    assert sorted(set(placed)) == sorted(four_devices["devices"])
