"""The (init, step) contract lives one floor down, in :mod:`widebayes.base` (as blackjax/base.py)."""

from widebayes.base import Sampler, StepInfo

__all__ = ["Sampler", "StepInfo"]
