"""Memory a run needs, estimated from the resolved config and the task's sizes before anything is
allocated, so that a run that cannot fit is refused with the estimate instead of dying in the
allocator (or being killed by the kernel's out-of-memory killer hours later).

For ``C`` chains, ``D`` stored draws per chain (``smc_particles`` for SMC), width ``N``, depth
``L``, ``P`` training and ``P'`` test inputs of dimension ``N0``, ``m`` outputs and ``b`` bytes
per number (4 for float32, 8 for float64):

- stored draws (host): ``C D ([N m + (P + P') m + 2 + N (P + P') L_s] b + 1)`` with ``L_s = L``
  when every layer is stored, else 1 (``a``, ``f``, loss and acceptance, ``phi``, and the
  one-byte divergence flag); held twice at the end of a run (the chunks and their
  concatenation);
- chain states (device): ``C [4 n_params + 4 L N (P + P')] b`` for the position, gradient, a
  proposal and its gradient, and a step's activations and their gradients (``n_params = N0 N +
  (L - 1) N^2 + N m``; one hidden ``N x N`` block when tied); times ``smc_particles`` for SMC;
- layer kernels: ``3 C (L + 1) (P^2 + P'^2) b`` (running sums, one draw's Gram matrices, the
  means on the host);
- data: the task's arrays while it is made (:func:`widebayes.tasks.task_sizes`) and their copy
  on the device.

These are estimates (a lower bound of the peak, within a small factor): they exist to refuse
what is far out of reach, not to pack a machine to its last byte.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from widebayes.errors import InputError

STATE_COPIES = 4
WORK_COPIES = 4
DRAW_COPIES = 2
KERNEL_COPIES = 3
SMC_DEFAULT_PARTICLES = 64
MEMORY_FRACTION = 0.9  # refuse a run that needs more than this part of the available memory


class Footprint(NamedTuple):
    """Bytes a run needs, by kind (see the module docstring for each formula)."""

    draws: int  # the stored draws, once
    states: int
    kernels: int
    data: int
    draw_shape: tuple  # (chains, draws per chain, numbers per draw, bytes per number)

    @property
    def total(self) -> int:
        return self.data + DRAW_COPIES * self.draws + self.states + self.kernels


def estimate(resolved: dict, sizes) -> Footprint:
    """Memory of a run (pure).

    Parameters
    ----------
    resolved : dict
        A resolved experiment (:func:`widebayes.config.resolve`).
    sizes : widebayes.tasks.TaskSizes
        The task's sizes (:func:`widebayes.tasks.task_sizes`).
    """
    from widebayes.config import num_draws
    from widebayes.networks import NetworkSpec, param_shapes

    net, smp = resolved["network"], resolved["sampler"]
    b = 8 if smp["precision"] == "float64" else 4
    N, L, m = net["width"], net["depth"], sizes.num_outputs
    inputs = sizes.num_train + sizes.num_test
    spec = NetworkSpec(sizes.input_dim, N, L, m, tied_weights=net["tied_weights"])
    n_params = sum(rows * cols for rows, cols in param_shapes(spec).values())
    chains = smp["num_chains"]
    smc = smp["kind"] == "smc"
    particles = (smp["smc_particles"] or SMC_DEFAULT_PARTICLES) if smc else 1
    draws = particles if smc else num_draws(smp)
    per_draw = N * m + inputs * m + 2 + N * inputs * (L if smp["store_all_layers"] else 1)
    per_state = STATE_COPIES * n_params + WORK_COPIES * L * N * inputs
    kernels = KERNEL_COPIES * chains * (L + 1) * (sizes.num_train**2 + sizes.num_test**2) * b
    return Footprint(draws=chains * draws * (per_draw * b + 1),
                     states=chains * particles * per_state * b, kernels=kernels,
                     data=sizes.stored_bytes + inputs * (sizes.input_dim + m) * b,
                     draw_shape=(chains, draws, per_draw, b))


def available_memory() -> int:
    """Bytes of memory this process can still take.

    ``os.sysconf`` (free physical pages), raised to the kernel's ``MemAvailable`` (which counts
    the reclaimable file cache) and lowered to a control group's limit where Linux tells them.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    available = os.sysconf("SC_AVPHYS_PAGES") * page
    meminfo = _read_number("/proc/meminfo", "MemAvailable:")
    if meminfo is not None:
        available = max(available, meminfo * 1024)
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is not None and usage is not None:
            available = min(available, max(limit - usage, 0))
    return available


def _read_number(path: str, label: str | None = None) -> int | None:
    """The integer in a one-number file, or after ``label`` in a ``label value`` file."""
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if label is None or (parts and parts[0] == label):
                    return int(parts[0 if label is None else 1])
    except (OSError, ValueError, IndexError):  # absent, "max", or another layout
        return None
    return None


def check(resolved: dict, available: int | None = None) -> Footprint:
    """Refuse a run whose :func:`estimate` exceeds ``MEMORY_FRACTION`` of the available memory.

    Raises
    ------
    InputError
        With the estimate (stored draws, chain states, kernels, data) and what to reduce.
    """
    from widebayes.tasks import task_sizes

    footprint = estimate(resolved, task_sizes(resolved["task"]))
    chains, draws, per_draw, b = footprint.draw_shape
    _refuse_beyond(footprint.total, available, "this run", (
        f"stored draws {_bytes(footprint.draws)} ({chains} chains x {draws} draws x "
        f"{per_draw:,} numbers x {b} bytes, held {DRAW_COPIES} times), chain states "
        f"{_bytes(footprint.states)}, layer kernels {_bytes(footprint.kernels)}, data "
        f"{_bytes(footprint.data)}; store fewer draws (a larger sampler.thin, fewer num_steps "
        f"or num_chains) or make network.width or the task smaller"))
    return footprint


THEORY_KERNEL_COPIES = 8  # kernels of every layer, their inverses and factorisations


def check_theory(resolved: dict, available: int | None = None) -> int:
    """Refuse closed-form predictions whose kernels cannot fit: the task's data and
    ``8 (L + 1) (P + P')^2`` float64 numbers (layer kernels on train and test inputs, with their
    inverses and factorisations). Returns the estimate in bytes."""
    from widebayes.tasks import task_sizes

    sizes = task_sizes(resolved["task"])
    inputs = sizes.num_train + sizes.num_test
    kernels = THEORY_KERNEL_COPIES * (resolved["network"]["depth"] + 1) * inputs**2 * 8
    _refuse_beyond(sizes.stored_bytes + kernels, available, "the theory", (
        f"layer kernels {_bytes(kernels)} ({inputs:,} inputs), data "
        f"{_bytes(sizes.stored_bytes)}; use fewer inputs (task.num_train, task.num_test)"))
    return sizes.stored_bytes + kernels


def _refuse_beyond(total: int, available: int | None, what: str, parts: str) -> None:
    available = available_memory() if available is None else available
    if total > MEMORY_FRACTION * available:
        raise InputError(f"{what} needs about {_bytes(total)} of memory, more than "
                         f"{MEMORY_FRACTION:.0%} of the {_bytes(available)} available: {parts}")


def _bytes(n: int) -> str:
    """A byte count for people: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover
