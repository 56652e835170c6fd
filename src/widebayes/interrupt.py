"""SIGINT and SIGTERM as a request to stop a run cleanly at the end of the chunk in flight.

Inside :func:`stop_requests` the first SIGINT (Ctrl-C) or SIGTERM is only recorded (and said on
stderr); the sampling loop asks :func:`requested` between chunks, writes a last checkpoint and
raises :class:`Interrupted`, which the command turns into one line and exit code ``128 +
signal`` (130 for SIGINT, 143 for SIGTERM, the shell's convention). A second signal stops at
once (raising :class:`Interrupted` from wherever the program is); the last checkpoint written
before it is intact (atomic writes). SIGKILL cannot be caught: the last checkpoint is what is
left. Outside the context nothing is changed: library code keeps Python's own Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []


class Interrupted(BaseException):
    """A run stopped by a signal (a BaseException, like KeyboardInterrupt: no ``except
    Exception`` turns it into something else).

    Attributes
    ----------
    signum : int
        The signal.
    step : int or None
        Steps done when it stopped (None: stopped at once, between two chunk ends).
    checkpoint : bool
        Whether a checkpoint of that step was written.
    """

    def __init__(self, signum: int, step: int | None = None, checkpoint: bool = False):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _record(signum, frame):
    if _pending:
        raise Interrupted(signum)
    _pending.append(signum)
    name = signal.Signals(signum).name
    os.write(2, f"\nwidebayes: {name} received: stopping at the end of the chunk in flight and "
                f"writing a checkpoint (send it again to stop at once)\n".encode())


@contextlib.contextmanager
def stop_requests():
    """Record SIGINT and SIGTERM instead of acting on them (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _record) for s in SIGNALS}
    _pending.clear()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending.clear()


def requested() -> int | None:
    """The signal received inside :func:`stop_requests` and not yet acted on, if any."""
    return _pending[0] if _pending else None
