"""Every path from a log density to draws: Langevin, MALA, HMC/NUTS, annealing, tempered SMC.

``build_sampler(sampler_cfg)`` turns the ``[sampler]`` table into a :class:`Sampler`.
Tempered SMC is not an (init, step) pair: it is :func:`widebayes.samplers.smc.run_smc`.
"""

from __future__ import annotations

from widebayes.samplers.base import Sampler, StepInfo
from widebayes.samplers.langevin import langevin


def build_sampler(cfg: dict) -> Sampler:
    """The sampler of a resolved ``[sampler]`` table."""
    from widebayes.errors import InputError

    kind = cfg["kind"]
    if kind == "langevin":
        return langevin(cfg.get("freeze_readout_at", -1), cfg.get("noise", "hash32"))
    if cfg.get("freeze_readout_at", -1) >= 0:
        raise InputError(f"only kind = \"langevin\" can freeze the readout, not {kind!r}",
                         key="sampler.freeze_readout_at")
    if kind == "mala":
        from widebayes.samplers.mala import mala

        return mala()
    if kind == "hmc":
        from widebayes.samplers.hmc import hmc

        return hmc(cfg.get("num_integration_steps", 10), cfg.get("target_accept", 0.8),
                   cfg.get("adapt_mass_matrix", False))
    if kind == "nuts":
        from widebayes.samplers.hmc import nuts

        return nuts(cfg.get("max_num_doublings", 6), cfg.get("target_accept", 0.8),
                    cfg.get("adapt_mass_matrix", False))
    if kind == "smc":  # not an (init, step) pair: widebayes.sampling.sample_smc runs run_smc
        return Sampler("smc", init=None, step=None)
    raise InputError(f"unknown sampler {kind!r}", key="sampler.kind")


__all__ = ["Sampler", "StepInfo", "build_sampler"]
