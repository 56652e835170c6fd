"""NumPyro models of wide-network priors (one per file) and named presets of the papers' setups."""

from widebayes.models.network_prior import network_prior
from widebayes.models.presets import PRESETS, preset

__all__ = ["network_prior", "PRESETS", "preset"]
