"""Bracketing an equilibrium: two chains started on either side of it.

Near a transition the codes relax slowly, and one chain's code fractions say where that chain is,
not where it is going (README "Open disagreements": the excess of code 111 at y- = 0.45).  Here
two chains are first equilibrated at neighbouring values of one config entry, one on each side of
the experiment's own value (``below``: fewer neurons in the code that grows, ``above``: more), and
then both run at the experiment's value with its own sampler, recording from the first step.  An
observable that relaxes monotonically is bracketed by the two chains: where they meet, that is the
equilibrium at this size; until they do, it lies between them.

``python -m widebayes.studies.bracketing EXPERIMENT.toml --key task.y_minus --below 0.40
--above 0.50 --equilibrate 20000 [--json FILE]`` prints each chain's code fractions over the four
quarters of the run (chain 0 started below, chain 1 above).  The experiment's ``[sampler]`` table is
the sampler of both stages; ``num_steps`` and ``thin`` set the run at the experiment's value.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import tomllib
from typing import NamedTuple

import numpy as np

from widebayes.bench_mixing import chunk_series, equilibrated_start, sampler_config, timed_run
from widebayes.config import apply_overrides
from widebayes.sweep.spec import set_dotted

RUN_LENGTH = ("num_steps", "burn_in", "thin", "num_chains", "seed", "progress", "chunk_draws")
SHOWN = 0.002  # codes printed: those above this fraction in some draw


class Bracket(NamedTuple):
    codes: dict  # code string -> (2, draw) fractions; chain 0 started below, chain 1 above
    steps: int  # steps per chain at the experiment's value
    seconds: float  # wall time of that run (after compilation)


def with_value(cfg: dict, key: str, value) -> dict:
    """A copy of ``cfg`` with the dotted entry ``key`` (e.g. ``task.y_minus``) set to ``value``."""
    out = copy.deepcopy(cfg)
    set_dotted(out, key, value)
    return out


def sampler_entries(table: dict) -> dict:
    """A ``[sampler]`` table without its run length and seed (which each stage sets itself)."""
    return {k: v for k, v in table.items() if k not in RUN_LENGTH}


def bracket(experiment: dict, key: str, below, above, equilibrate: int,
            run_sampler: dict | None = None) -> Bracket:
    """Equilibrate one chain at ``key = below`` and one at ``key = above`` for ``equilibrate`` steps,
    then run both at the experiment's own value for its ``num_steps``, a draw every ``thin``.

    ``experiment``: the TOML's table (not resolved), with a ``[sampler]`` table.  ``run_sampler``:
    entries of that table changed for the run at the experiment's value only (e.g. more moves).
    Bounded non-lazy networks (the codes are the feature layer's, ``widebayes.codes``).
    """
    from widebayes.activations import get_activation
    from widebayes.codes import code_string
    from widebayes.experiment import build_experiment

    net = experiment["network"]
    if not (get_activation(net["activation"]).bounded and net.get("readout") == "nonlazy"):
        raise ValueError("bracketing follows the feature layer's codes: a bounded activation and the "
                         "non-lazy readout")
    table = experiment["sampler"]
    run_table = {**table, **(run_sampler or {})}
    base = {k: v for k, v in experiment.items() if k != "sampler"}
    seed = int(table.get("seed", 0))
    starts = [equilibrated_start(with_value(base, key, v), sampler_entries(table), equilibrate, 1,
                                 seed=seed + 10 + i) for i, v in enumerate((below, above))]
    start = {b: np.concatenate([s[b] for s in starts]) for b in starts[0]}
    cfg = sampler_config(base, sampler_entries(run_table), int(run_table["num_steps"]), 0,
                         int(run_table["thin"]), 2, seed)
    data = build_experiment(cfg).data
    run = timed_run(cfg, start=start, keep=lambda out: chunk_series(
        out, data.Y_train, data.labels_train, net["activation"], True))
    ids, k = run.draws["code_ids"], int(np.max(data.labels_train)) + 1
    codes = {code_string(int(c), k): np.mean(ids == c, axis=-1) for c in np.unique(ids)}
    return Bracket(codes, run.steps, run.seconds)


def quarters(result: Bracket) -> list[dict]:
    """Each quarter of the draws: code -> (chain 0 mean, chain 1 mean), codes above ``SHOWN``."""
    draws = next(iter(result.codes.values())).shape[1]
    out = []
    for q in range(4):
        sl = slice(q * draws // 4, (q + 1) * draws // 4)
        out.append({c: (float(f[0, sl].mean()), float(f[1, sl].mean()))
                    for c, f in result.codes.items() if f.max() > SHOWN})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m widebayes.studies.bracketing",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("experiment")
    parser.add_argument("--key", required=True, help="the config entry varied, e.g. task.y_minus")
    parser.add_argument("--below", type=float, required=True)
    parser.add_argument("--above", type=float, required=True)
    parser.add_argument("--equilibrate", type=int, required=True, metavar="STEPS")
    parser.add_argument("--run-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a [sampler] entry for the run at the experiment's value only, e.g. "
                             "neuron_moves=1 or num_steps=20000")
    parser.add_argument("--json", default=None, metavar="FILE", help="write each draw's fractions here")
    args = parser.parse_args(argv)
    with open(args.experiment, "rb") as f:
        experiment = tomllib.load(f)
    t0 = time.perf_counter()
    run_sampler = apply_overrides({}, [f"sampler.{item}" for item in args.run_set]).get("sampler", {})
    result = bracket(experiment, args.key, args.below, args.above, args.equilibrate, run_sampler)
    print(f"{args.key}: chain 0 from {args.below}, chain 1 from {args.above}; {result.steps} steps at "
          f"the experiment's value in {result.seconds:.0f} s ({time.perf_counter() - t0:.0f} s in all)")
    for q, row in enumerate(quarters(result)):
        print(f"quarter {q + 1}: " + "  ".join(f"{c} {a:.4f} / {b:.4f}" for c, (a, b) in sorted(row.items())))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"key": args.key, "below": args.below, "above": args.above, "steps": result.steps,
                       "codes": {c: f.tolist() for c, f in result.codes.items()}}, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
