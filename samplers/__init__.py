"""Every path from a log density to draws: Langevin, MALA, HMC/NUTS, annealing, tempered SMC.

``build_sampler(sampler_cfg)`` turns the ``[sampler]`` table into a :class:`Sampler`.
"""

from __future__ import annotations

from widebayes.samplers.base import Sampler, StepInfo
from widebayes.samplers.langevin import langevin


def build_sampler(cfg: dict) -> Sampler:
    """The sampler of a resolved ``[sampler]`` table."""
    kind = cfg["kind"]
    if kind == "langevin":
        return langevin(cfg.get("freeze_readout_at", -1))
    from widebayes.errors import InputError

    raise InputError(f"sampler {kind!r} is not available yet", key="sampler.kind")


__all__ = ["Sampler", "StepInfo", "build_sampler"]
