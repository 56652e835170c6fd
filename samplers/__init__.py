"""Every path from a log density to draws: pure kernels in BlackJAX's shape (``widebayes.base``).

Langevin (unadjusted, preconditioned, frozen blocks), MALA, HMC/NUTS (BlackJAX kernels with their
window adaptation), replica exchange around any of them, and tempered SMC
(:func:`widebayes.samplers.smc.run_smc`, not an (init, step) pair).  No config keys live here:
``widebayes.experiment.build_sampler`` turns the ``[sampler]`` table into one of these.
"""

from __future__ import annotations

from widebayes.samplers.hmc import hmc, nuts
from widebayes.samplers.langevin import langevin
from widebayes.samplers.mala import mala
from widebayes.samplers.replica_exchange import replica_exchange

from widebayes.base import Sampler, StepInfo

__all__ = ["Sampler", "StepInfo", "langevin", "mala", "hmc", "nuts", "replica_exchange"]
