"""Where the points run: in this process one after another, or as Ray tasks.

Both executors take a list of :class:`~widebayes.sweep.run.PointJob` and yield an
:class:`Outcome` per job as it finishes (and ``None`` now and then, so that the caller can
refresh its progress bar).  A failed point is retried once and never stops the others.

- :class:`SerialExecutor`: :func:`~widebayes.sweep.run.run_point` in this process (no Ray needed;
  for debugging, or a machine without Ray).
- :class:`RayExecutor`: one Ray task per point (``ray.remote(run_point)`` with a CPU and GPU
  request, so concurrency follows the cluster's resources), ``max_retries=1`` and
  ``retry_exceptions=True`` (Ray re-runs a task whose worker died, or that raised, once), results
  collected with ``ray.wait`` as they come.  By default a new local Ray instance on this machine
  (``ray.init(address="local")``); with an address (``--address`` or ``RAY_ADDRESS``) the same
  tasks go to that cluster.  The sweep folder must be on a filesystem every node sees.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

from widebayes.errors import InputError
from widebayes.sweep.run import PointJob, read_status, run_point

WAIT_S = 1.0  # how often the Ray executor hands control back for progress
LOCAL_OBJECT_STORE = 256 * 2**20  # the results are a few kB; keep Ray's shared memory small


class Outcome(NamedTuple):
    """A finished job: ``result`` (run_point's dict) or ``error`` (one line)."""

    job: PointJob
    result: dict | None
    error: str | None


def error_line(err: BaseException) -> str:
    """``Type: first line of the message``; a Ray task error is replaced by its cause."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")


class SerialExecutor:
    """Run the points in this process, one at a time, each retried ``retries`` times on an error."""

    def __init__(self, retries: int = 1):
        self.retries = retries

    def run(self, jobs):
        for job in jobs:
            yield None  # the point starts: let the caller show it as running
            error = None
            for _ in range(self.retries + 1):
                try:
                    yield Outcome(job, run_point(job), None)
                    break
                except Exception as err:  # noqa: BLE001 - a failed point must not cost the others
                    error = error_line(err)
            else:
                yield Outcome(job, None, error)

    @staticmethod
    def running(pending) -> int:
        """The point in hand, if any are left."""
        return min(1, len(list(pending)))


class RayExecutor:
    """One Ray task per point.

    Parameters
    ----------
    address : str, optional
        A Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``); default ``RAY_ADDRESS``,
        else a new local instance.  An already initialised Ray (e.g. a test's) is used as it is.
    cpus, gpus : float
        The resources each point asks for (``num_cpus``, ``num_gpus`` of the task).
    retries : int
        Ray's ``max_retries`` (worker crashes and, with ``retry_exceptions``, errors).
    """

    def __init__(self, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0, retries: int = 1):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus, self.gpus, self.retries = cpus, gpus, retries

    def run(self, jobs):
        if not jobs:
            return
        ray = import_ray()
        started = self.connect(ray)
        try:
            task = ray.remote(run_point).options(**self.task_options())
            pending = {task.remote(job): job for job in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                if not ready:
                    yield None
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        yield Outcome(job, ray.get(ref), None)
                    except ray.exceptions.RayError as err:
                        yield Outcome(job, None, error_line(err))
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def running(pending) -> int:
        """Pending points whose worker has written "running" for this sweep run (queued ones have not)."""
        count = 0
        for job in pending:
            status = read_status(job.folder)
            count += bool(status and status.get("state") == "running" and status.get("run_id") == job.run_id)
        return count

    def task_options(self) -> dict:
        """``num_cpus``, ``num_gpus``, one retry; a fraction of a GPU turns off JAX's preallocation."""
        options = {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": self.retries,
                   "retry_exceptions": True}
        if 0 < self.gpus < 1:
            options["runtime_env"] = {"env_vars": {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}}
        return options

    def connect(self, ray) -> bool:
        """Join the cluster at ``address``, or start a local instance; True when this call started Ray."""
        if ray.is_initialized():
            return False
        init_ray(ray, self.address)
        return True


def init_ray(ray, address: str | None = None, num_cpus: int | None = None) -> None:
    """``ray.init``: a new local instance (``num_cpus``, default all cores) or the cluster at ``address``.

    Ray starts its processes by fork and exec, which JAX (imported already) warns about as if it
    were a bare fork; that warning is silenced here.  Worker logs stay on the workers (a point's
    error comes back in its status).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        try:
            if address is None:
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         logging_level="warning", object_store_memory=LOCAL_OBJECT_STORE)
            else:
                ray.init(address=address, log_to_driver=False, logging_level="warning")
        except (ConnectionError, ValueError) as err:
            raise InputError(f"cannot join the Ray cluster at {address!r}: {error_line(err)}",
                             key="--address") from None


def import_ray():
    """``import ray``; its absence is an InputError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError('Ray is not installed: pip install -e ".[sweep]", or use --executor serial',
                         key="--executor") from None
    return ray


def make_executor(kind: str, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
                  retries: int = 1):
    """``"serial"`` or ``"ray"`` (with its address and per-point resources)."""
    if not cpus > 0:
        raise InputError(f"must be positive, got {cpus}", key="--cpus-per-point")
    if not gpus >= 0:
        raise InputError(f"must be zero or positive, got {gpus}", key="--gpus-per-point")
    if kind == "serial":
        return SerialExecutor(retries)
    if kind == "ray":
        return RayExecutor(address, cpus, gpus, retries)
    raise InputError(f'must be "ray" or "serial", got {kind!r}', key="--executor")
