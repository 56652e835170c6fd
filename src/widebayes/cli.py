"""The ``widebayes`` command: sample, compare, theory, demo, bench, drift.

Bad input (config, data, a damaged file, an output folder that holds a run, a chain that
diverged, a run too large for the memory) prints one line to stderr and exits with code 2.
SIGINT or SIGTERM during a run writes a checkpoint at the end of the chunk in flight and exits
with ``128 + signal`` (130, 143) and a line saying how to resume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from widebayes.errors import InputError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (exit 2, like every other bad input)."""

    def error(self, message):
        _say(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(EXIT_BAD_INPUT)


def _say(message, label: str = "error") -> None:
    """One line on stderr: ``widebayes: error: ...`` (any newline in ``message`` folded)."""
    print(f"widebayes: {label}: " + " ".join(str(message).split()), file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="widebayes", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="sample an experiment's posterior into DIR/posterior.nc")
    s.add_argument("experiment", help="experiment TOML file")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (repeatable)")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    s.add_argument("--overwrite", action="store_true",
                   help="start again in a folder that holds a run (replaced when the new one is written)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    c = sub.add_parser("compare", help="theory against samples: DIR/report/")
    c.add_argument("dir", help="a folder written by `widebayes sample`")
    t = sub.add_parser("theory", help="closed-form predictions of an experiment as JSON")
    t.add_argument("experiment")
    t.add_argument("--out", required=True, help="output JSON file")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    d = sub.add_parser("demo", help="a small built-in experiment, sampled and compared")
    d.add_argument("--out", default="widebayes-demo", help="output folder (default widebayes-demo)")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--overwrite", action="store_true", help="replace a run in the output folder")
    f = sub.add_parser("drift", help="the frozen-readout drift experiment: DIR/posterior.nc and DIR/drift/")
    f.add_argument("experiment", help="experiment TOML file (kind = langevin, a test set)")
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--freeze-draw", type=int, default=None,
                   help="stored draw at which the readout is frozen (default: a third of the draws)")
    f.add_argument("--mode", choices=["langevin", "prior"], default="langevin",
                   help="after freezing, hidden weights follow full Langevin (default) or the prior alone")
    f.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    f.add_argument("--no-progress", action="store_true")
    f.add_argument("--overwrite", action="store_true", help="replace a run in the output folder")
    b = sub.add_parser("bench", help="sampler throughput against this machine's matmul rate")
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--noise", choices=["hash32", "threefry"], default="hash32",
                   help="Langevin noise generator to time (default: the shipped default)")
    b.add_argument("--mixing", action="store_true",
                   help="effective samples per second of the theory's observables, plain Langevin "
                        "against the collapsed readout, MALA/HMC and replica exchange")
    b.add_argument("--configs", nargs="*", default=None, metavar="NAME",
                   help="with --mixing: reference configs whose name contains NAME (default all)")
    b.add_argument("--scale", type=float, default=1.0, help="with --mixing: run lengths times this")
    b.add_argument("--json", default=None, metavar="FILE", help="with --mixing: write the figures here")
    b.add_argument("--samplers", nargs="+", default=None, metavar="NAME",
                   help="with --mixing: only the samplers whose name contains NAME (plain Langevin "
                        "always runs)")
    b.add_argument("--equilibrate", type=int, default=0, metavar="STEPS",
                   help="with --mixing: start every run where STEPS steps of the reference sampler "
                        "(neuron moves where the config has them) took prior draws (default 0: prior draws)")
    b.add_argument("--reduce-inputs", action="store_true",
                   help="time the input-subspace reduction against the full first layer (MNIST, N0 = 784)")
    w = sub.add_parser("sweep", help="an experiment over a grid of config values: DIR/results.csv, figures")
    w.add_argument("sweep", help="sweep TOML file: a base experiment and [sweep] axes")
    w.add_argument("--out", required=True, help="output folder (re-running skips finished points)")
    w.add_argument("--executor", choices=["ray", "serial"], default="ray",
                   help="Ray tasks (default) or this process")
    w.add_argument("--address", default=None, help="Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    w.add_argument("--cpus-per-point", type=float, default=1.0, help="CPUs a point asks Ray for (default 1)")
    w.add_argument("--gpus-per-point", type=float, default=0.0, help="GPUs a point asks Ray for (default 0)")
    w.add_argument("--dry-run", action="store_true", help="list the points and exit")
    w.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from widebayes.interrupt import Interrupted

    try:
        return _COMMANDS[args.command](args)
    except InputError as err:
        _say(err)
    except Interrupted as stop:
        _say(_interrupted_line(args, stop), label="interrupted")
        return stop.exit_code
    except KeyboardInterrupt:
        _say("stopped by SIGINT", label="interrupted")
        return EXIT_INTERRUPTED
    except MemoryError:
        _say("out of memory; make the run smaller (network.width, task.num_train, fewer stored "
             "draws)")
    except OSError as err:  # the file system: permissions, a full disk, a vanished folder
        where = f"{err.filename}: " if err.filename else ""
        _say(f"{where}{err.strerror or err}")
    return EXIT_BAD_INPUT


def _resolved(path, overrides):
    from widebayes.config import apply_overrides, load_toml, resolve

    resolved = resolve(apply_overrides(load_toml(path), overrides))
    set_precision(resolved)
    return resolved


def set_precision(resolved: dict) -> None:
    """JAX's 64-bit mode, set once per process from the experiment, before any JAX array is made.

    Only ``precision = "float64"`` runs need it; float32 runs keep it off (BlackJAX's kernels mix
    their own float64 constants into float32 chains when it is on).
    """
    import jax

    jax.config.update("jax_enable_x64", resolved["sampler"]["precision"] == "float64")


def _guarded(out_dir, resume: bool, overwrite: bool, resumable: bool, run) -> int:
    """``run(state)`` in a checked, locked output folder, with SIGINT/SIGTERM deferred to the end
    of the chunk in flight (``widebayes.interrupt``)."""
    from widebayes import checkpoint, interrupt

    out = checkpoint.make_out_dir(out_dir)
    with checkpoint.locked(out):
        state = checkpoint.guard_out_dir(out, resume, overwrite, resumable)
        if state == "fresh":
            print(f"no checkpoint in {out}: starting from step 0")
        with interrupt.stop_requests():
            return run(state)


def _interrupted_line(args, stop) -> str:
    """What stopped, where, and the command that continues (``sample``) or reruns (others)."""
    import shlex
    import signal

    name = signal.Signals(stop.signum).name
    where = "" if stop.step is None else f" after step {stop.step}"
    if args.command == "sample" and (stop.checkpoint or stop.step is None):
        saved = ("a checkpoint of that step is" if stop.checkpoint
                 else "the last checkpoint written (if any) is")
        sets = [word for item in args.set for word in ("--set", item)]
        argv = shlex.join(["widebayes", "sample", args.experiment, "--out", args.out, *sets,
                           "--resume"])
        return f"stopped by {name}{where}; {saved} in {args.out}; continue with: {argv}"
    return (f"stopped by {name}{where}; `widebayes {args.command}` does not resume: run it "
            f"again with --overwrite")


def _sample(args) -> int:
    from widebayes.sampling import sample_experiment

    resolved = _resolved(args.experiment, args.set)

    def run(state):
        out = sample_experiment(resolved, out_dir=args.out, resume=state == "resume",
                                progress=False if args.no_progress else None)
        print(f"wrote {Path(args.out) / 'posterior.nc'}")
        return _report_divergences(out.divergences)

    return _guarded(args.out, args.resume, args.overwrite, True, run)


def _report_divergences(lines) -> int:
    if lines:
        _say("; ".join(lines))
        return EXIT_BAD_INPUT
    return 0


def _demo(args) -> int:
    from widebayes.config import resolve
    from widebayes.models.presets import preset
    from widebayes.sampling import sample_experiment

    def run(state):
        out = sample_experiment(resolve(preset("demo")), out_dir=args.out,
                                progress=False if args.no_progress else None)
        print(f"wrote {Path(args.out) / 'posterior.nc'}")
        _try_compare(args.out)
        return _report_divergences(out.divergences)

    return _guarded(args.out, False, args.overwrite, False, run)


def _try_compare(folder) -> None:
    from widebayes.report import write_report

    print(f"wrote {write_report(folder)}")


def _compare(args) -> int:
    from widebayes.report import write_report

    folder = Path(args.dir)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder (give the --out folder of `widebayes sample`)")
    if not (folder / "posterior.nc").exists():
        raise InputError(f"{args.dir} has no posterior.nc (write one with `widebayes sample`)")
    print(f"wrote {write_report(args.dir)}")
    return 0


def write_theory(resolved: dict, path) -> dict:
    """Compute the predictions of a resolved experiment and write them as strict JSON, atomically."""
    from widebayes.experiment import build_experiment
    from widebayes.io import json_value, write_json
    from widebayes.theory.predict import predictions

    out = json_value(predictions(build_experiment(resolved)))
    write_json(path, out)
    return out


def _theory(args) -> int:
    from widebayes.footprint import check_theory

    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the JSON file to write")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist")
    resolved = _resolved(args.experiment, args.set)
    check_theory(resolved)
    write_theory(resolved, out)
    print(f"wrote {out}")
    return 0


def _drift(args) -> int:
    from widebayes.config import num_draws
    from widebayes.studies import frozen_readout as frozen

    resolved = _resolved(args.experiment, args.set)
    smp = resolved["sampler"]
    freeze_draw = num_draws(smp) // 3 if args.freeze_draw is None else args.freeze_draw

    def run(state):
        res = frozen.run_frozen_readout(resolved, freeze_draw, mode=args.mode, center=True,
                                        progress=not args.no_progress and smp["progress"],
                                        out_dir=args.out)
        print(f"wrote {Path(args.out) / 'posterior.nc'} (the full run; `widebayes compare` "
              f"reports its drift)")
        print(f"wrote {frozen.write_frozen_report(res, Path(args.out) / 'drift', args.mode, freeze_draw)}")
        return 0

    return _guarded(args.out, False, args.overwrite, False, run)


def _bench(args) -> int:
    if args.mixing:
        from widebayes.bench_mixing import run_mixing_bench

        run_mixing_bench(args.configs, repeats=args.repeats, scale=args.scale, out=args.json,
                         sampler_names=args.samplers, equilibrate=args.equilibrate)
        return 0
    from widebayes.bench import bench_reduce_inputs, run_bench

    if args.reduce_inputs:
        bench_reduce_inputs(repeats=args.repeats)
        return 0
    run_bench(repeats=args.repeats, noise=args.noise)
    return 0


def _sweep(args) -> int:
    from widebayes.sweep import dry_run_lines, load_sweep, make_executor, run_sweep, summary_lines

    spec = load_sweep(args.sweep)
    if args.dry_run:
        print("\n".join(dry_run_lines(spec, args.out)))
        return 0
    executor = make_executor(args.executor, args.address, args.cpus_per_point, args.gpus_per_point)
    result = run_sweep(spec, args.out, executor, progress=not args.no_progress)
    print("\n".join(summary_lines(spec, result)))
    return 1 if result.failed else 0


_COMMANDS = {"sample": _sample, "compare": _compare, "theory": _theory, "demo": _demo, "bench": _bench,
             "drift": _drift}

_COMMANDS["sweep"] = _sweep

if __name__ == "__main__":
    sys.exit(main())
