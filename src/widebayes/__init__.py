"""widebayes: Bayesian posterior sampling of wide neural networks, held against theory."""

__version__ = "0.1.0"
