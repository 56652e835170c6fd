"""Studies: experiments built from the floors below (sampling, theory, diagnostics, report).

``kernel_sweeps`` (criticality, readout-exponent and tied-vs-untied sweeps, theory beside
samples) and ``frozen_readout`` (the frozen-readout drift experiment).
"""
