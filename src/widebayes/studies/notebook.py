"""Notebook helpers: sample an experiment once and reload it afterwards, and shrink an experiment
to seconds for the notebook tests."""

from __future__ import annotations

import copy
from pathlib import Path

from widebayes import posterior


def cached_posterior(resolved: dict, folder, progress: bool = False):
    """Load ``folder/posterior.nc`` when it was sampled from ``resolved``; else sample it there.

    For notebooks: run once, reload afterwards.  Returns the InferenceData.
    """
    from widebayes.config import to_toml
    from widebayes.experiment import build_experiment

    path = Path(folder) / posterior.FILE_NAME
    if path.exists():
        idata = posterior.load(folder)
        if idata.attrs.get("config") == to_toml(build_experiment(resolved).config):
            return idata
    from widebayes.sampling import sample_experiment

    resolved = {**resolved, "sampler": {**resolved["sampler"], "progress": progress}}
    sample_experiment(resolved, out_dir=folder)
    return posterior.load(folder)


TOY_NETWORK = {"width": 16}
TOY_TASK = {"num_train": 12, "input_dim": 24, "num_test": 6}
TOY_SAMPLER = {"num_steps": 300, "burn_in": 0, "thin": 20, "num_chains": 2, "chunk_draws": 0}


def toy_size(cfg: dict) -> dict:
    """A copy of an experiment (before ``resolve``) shrunk to seconds, for the notebook tests.

    Width 16, 12 training and (when the experiment has a test set) 6 test inputs of dimension
    24, 300 steps stored every 20th in 2 chains, no burn-in (one compiled chunk: the toy runs
    check that the code runs, not the physics); everything else (activation, depth, readout,
    temperature, step size) is kept.  Notebooks apply it when ``WIDEBAYES_TOY=1``.
    """
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("network", {}).update(TOY_NETWORK)
    task = cfg.setdefault("task", {})
    had_test = task.get("num_test", 0) not in (0, None)
    task.update(TOY_TASK)
    if not had_test:
        task["num_test"] = 0
    cfg.setdefault("sampler", {}).update(TOY_SAMPLER)
    cfg["sampler"].pop("anneal", None)  # annealing needs a burn-in
    return cfg
