"""One point of a sweep, in its own folder, and the point's status file.

``DIR/points/<slug>/`` holds what ``widebayes sample``, ``theory`` and ``compare`` write for one
experiment (config.toml, posterior.nc, theory.json, report/report.json; checkpoints while it runs)
and ``status.json``, written atomically: ``state`` ("running", "done" or "failed"), ``config``
(a fingerprint of the resolved config), ``attempt``, and ``rows`` (the point's quantities) when
done or ``error`` (one line) when failed.  The worker writes "running" when it starts; the driver
writes "done" or "failed" when the task returns.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import NamedTuple

from widebayes.checkpoint import atomic_write, fingerprint
from widebayes.config import to_toml
from widebayes.errors import InputError

STATUS = "status.json"


class PointJob(NamedTuple):
    """What a worker needs to run one point (plain data: it travels to Ray workers)."""

    slug: str
    folder: str
    resolved: dict
    run_id: str


class PointError(RuntimeError):
    """A point that ran but cannot be used (a diverged chain): reported, retried once."""


def config_fingerprint(resolved: dict) -> str:
    """The fingerprint that decides whether a finished point still matches its sweep file."""
    return fingerprint(to_toml(resolved))


def read_status(folder) -> dict | None:
    """The point's status, or None when it has none (never run, or unreadable)."""
    try:
        return json.loads((Path(folder) / STATUS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_status(folder, status: dict) -> None:
    """Write ``status.json`` atomically (strict JSON: NaN as null)."""
    text = json.dumps(status, indent=1, allow_nan=False)
    atomic_write(Path(folder) / STATUS, lambda tmp: Path(tmp).write_text(text))


def run_point(job: PointJob) -> dict:
    """Sample one point, write its theory and report, and return its table rows.

    Resumes from the folder's checkpoint when there is one (a killed earlier attempt).  A theory
    that does not cover the experiment (InputError) leaves the theory columns empty; a diverged
    chain raises :class:`PointError`.

    Returns
    -------
    dict with ``rows`` (see :func:`widebayes.sweep.quantities.point_rows`), ``resumed``,
    ``seconds``, ``host``.
    """
    from widebayes import checkpoint
    from widebayes.cli import write_theory
    from widebayes.report import write_report
    from widebayes.sampling import sample_experiment
    from widebayes.sweep.quantities import point_rows

    start = time.time()
    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    mark_running(job)
    resumed = checkpoint.exists(folder)
    out = sample_experiment(job.resolved, out_dir=folder, resume=resumed, progress=False)
    if out.divergences:
        raise PointError("; ".join(out.divergences))
    try:
        write_theory(job.resolved, folder / "theory.json")
    except InputError:
        (folder / "theory.json").unlink(missing_ok=True)
    write_report(folder)
    return {"rows": point_rows(folder), "resumed": resumed, "seconds": time.time() - start,
            "host": socket.gethostname()}


def mark_running(job: PointJob) -> int:
    """Write the "running" status (with this process's id and host); returns the attempt number.

    Attempts count within one sweep run (``run_id``): a retry after a crash or an error is 2.
    """
    old = read_status(job.folder) or {}
    attempt = old.get("attempt", 0) + 1 if old.get("run_id") == job.run_id else 1
    write_status(job.folder, {"state": "running", "config": config_fingerprint(job.resolved),
                              "attempt": attempt, "run_id": job.run_id, "pid": os.getpid(),
                              "host": socket.gethostname(), "started": time.time()})
    return attempt
