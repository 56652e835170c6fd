"""Preactivations recovered from stored activations, where ``phi`` can be inverted.

posterior.nc stores ``phi(z_L)``, not ``z_L`` nor the weights.  For strictly monotone activations
``z = phi^{-1}(phi)`` (``Activation.inverse``):

- sigmoid ``phi(z) = (1 + erf(sqrt(pi) z / 2)) / 2``:  ``z = (2 / sqrt(pi)) erfinv(2 phi - 1)``;
- tanh: ``z = artanh(phi)``;  softplus: ``z = log(expm1(phi))``;  linear: ``z = phi``.

ReLU and relu2 are not invertible (every negative preactivation maps to 0): None.  Stored
activations are float32, so values within ``EPS`` of a finite bound of the activation's range
(``Activation.value_range``) are clipped (``|z|`` is then at most about 3.8 for the sigmoid) and
counted.
"""

from __future__ import annotations

import numpy as np

from widebayes.activations import Activation, as_activation

EPS = 1e-6


def invert_activation(phi, activation: str | Activation):
    """Preactivations ``z`` from activations ``phi``, or None when ``phi`` is not invertible.

    Returns
    -------
    (ndarray, float) or None
        ``z`` and the fraction of values that were clipped at a bound.
    """
    act = as_activation(activation)
    if act.inverse is None:
        return None
    phi = np.asarray(phi, dtype=np.float64)
    lo, hi = act.value_range
    clipped = np.clip(phi, lo + EPS, hi - EPS)
    return act.inverse(clipped), float(np.mean(clipped != phi))
