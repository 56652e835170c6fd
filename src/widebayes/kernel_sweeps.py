"""Moved to :mod:`widebayes.studies.kernel_sweeps`; this name stays for one release (same module)."""

import sys

from widebayes.studies import kernel_sweeps as _moved

sys.modules[__name__] = _moved
