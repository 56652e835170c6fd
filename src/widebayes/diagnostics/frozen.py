"""Moved to :mod:`widebayes.studies.frozen_readout`; this name stays for one release (same module)."""

import sys

from widebayes.studies import frozen_readout as _moved

sys.modules[__name__] = _moved
