"""The sweep driver: which points to run, running them, the table and the figures.

``run_sweep(spec, out)`` lays out ``out/``::

    sweep.toml            the sweep file as given
    points/<slug>/        one experiment each (see widebayes.sweep.run), with status.json
    results.csv           the tidy table (widebayes.sweep.table)
    results.nc
    figures/<quantity>.png

A point whose status is "done" with the fingerprint of its current config is skipped (its rows
are read back from its status); one that was killed (status "running") or failed is run again
and resumes from its checkpoint; one whose config changed is started afresh in an emptied
folder.  The driver writes each point's final status atomically as its task returns.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from widebayes.checkpoint import atomic_write
from widebayes.sweep.run import PointJob, config_fingerprint, read_status, write_status
from widebayes.sweep.spec import describe


class SweepResult(NamedTuple):
    """What a sweep did: slugs done (run now or before), skipped, failed (slug -> error), the files."""

    done: list
    skipped: list
    failed: dict
    table: Path | None
    figures: list


def point_folder(out, point) -> Path:
    return Path(out) / "points" / point.slug


def point_state(out, point) -> str:
    """``done`` (skip), ``resume`` (a killed or failed run with its checkpoint), ``changed`` or ``new``."""
    status = read_status(point_folder(out, point))
    if status is None:
        return "new"
    if status.get("config") != config_fingerprint(point.resolved):
        return "changed"
    return "done" if status["state"] == "done" else "resume"


def dry_run_lines(spec, out) -> list[str]:
    """One line per point: its number, its swept values, what a run would do with it."""
    what = {"done": "done, skipped", "resume": "to resume", "changed": "config changed, to rerun",
            "new": "to run"}
    n = len(spec.points)
    return [f"{p.index + 1:>{len(str(n))}}/{n}  {describe(p.values)}  [{what[point_state(out, p)]}]"
            for p in spec.points]


def run_sweep(spec, out, executor, progress: bool = True) -> SweepResult:
    """Run every point of ``spec`` not yet done under ``out`` with ``executor``; write the table."""
    from widebayes.sweep.figures import write_figures
    from widebayes.sweep.table import results_dataset, table_rows, write_csv, write_netcdf

    out = Path(out)
    (out / "points").mkdir(parents=True, exist_ok=True)
    atomic_write(out / "sweep.toml", lambda tmp: Path(tmp).write_text(spec.text))
    finished, jobs, skipped = {}, [], []
    run_id = uuid.uuid4().hex
    for point in spec.points:
        state, folder = point_state(out, point), point_folder(out, point)
        if state == "done":
            finished[point.slug] = read_status(folder)["rows"]
            skipped.append(point.slug)
            continue
        if state == "changed":
            shutil.rmtree(folder)
        jobs.append(PointJob(point.slug, str(folder), point.resolved, run_id))
    failed = execute(jobs, executor, finished, progress, len(skipped), len(spec.points))
    rows = table_rows(spec, finished)
    table = write_csv(rows, spec.keys, out / "results.csv")
    write_netcdf(results_dataset(spec, finished), out / "results.nc")
    figures = write_figures(spec, rows, out / "figures")
    done = [p.slug for p in spec.points if p.slug in finished]
    return SweepResult(done, skipped, failed, table, figures)


def execute(jobs: list, executor, finished: dict, progress: bool, already: int, total: int) -> dict:
    """Run ``jobs``; fill ``finished`` (slug -> rows) and return the failures (slug -> error)."""
    failed = {}
    bar = progress_bar(total, already) if progress else None
    pending = {job.slug: job for job in jobs}
    for outcome in executor.run(jobs):
        if outcome is not None:
            job = pending.pop(outcome.job.slug)
            if outcome.error is None:
                finished[job.slug] = outcome.result["rows"]
            else:
                failed[job.slug] = outcome.error
            record(job, outcome)
        if bar is not None:
            bar.set_postfix_str(f"done {len(finished)}, running {executor.running(pending.values())}, "
                                f"failed {len(failed)}", refresh=False)
            bar.update(outcome is not None)
    if bar is not None:
        bar.close()
    return failed


def summary_lines(spec, result: SweepResult) -> list[str]:
    """What the command prints at the end: one line per failed point, then the totals."""
    lines = [f"failed: {slug}: {error}" for slug, error in result.failed.items()]
    return lines + [f"wrote {result.table} ({len(result.done)} of {len(spec.points)} points done, "
                    f"{len(result.skipped)} skipped, {len(result.failed)} failed)"]


def record(job: PointJob, outcome) -> None:
    """Write the point's final status: done with its rows, or failed with the error line."""
    old = read_status(job.folder) or {}
    status = {"state": "done" if outcome.error is None else "failed",
              "config": config_fingerprint(job.resolved), "attempt": old.get("attempt", 1),
              "run_id": job.run_id, "finished": time.time()}
    if outcome.error is None:
        status.update(outcome.result)
    else:
        status["error"] = outcome.error
    write_status(job.folder, status)


def progress_bar(total: int, already: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=already, unit="point", desc="sweep", dynamic_ncols=True)
