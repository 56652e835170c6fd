"""Preactivations recovered from stored activations, where ``phi`` can be inverted.

posterior.nc stores ``phi(z_L)``, not ``z_L`` nor the weights.  For strictly monotone activations
``z = phi^{-1}(phi)``:

- sigmoid ``phi(z) = (1 + erf(sqrt(pi) z / 2)) / 2``:  ``z = (2 / sqrt(pi)) erfinv(2 phi - 1)``;
- tanh: ``z = artanh(phi)``;  softplus: ``z = log(expm1(phi))``;  linear: ``z = phi``.

ReLU and relu2 are not invertible (every negative preactivation maps to 0): None.  Stored
activations are float32, so values within ``EPS`` of a bound of a bounded activation are clipped
(``|z|`` is then at most about 3.8 for the sigmoid) and counted.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfinv

EPS = 1e-6
INVERTIBLE = ("linear", "sigmoid", "tanh", "softplus")


def invert_activation(phi, activation: str):
    """Preactivations ``z`` from activations ``phi``, or None when ``phi`` is not invertible.

    Returns
    -------
    (ndarray, float) or None
        ``z`` and the fraction of values that were clipped at a bound.
    """
    phi = np.asarray(phi, dtype=np.float64)
    if activation == "linear":
        return phi, 0.0
    if activation == "sigmoid":
        clipped = np.clip(phi, EPS, 1 - EPS)
        return 2.0 / np.sqrt(np.pi) * erfinv(2 * clipped - 1), float(np.mean(clipped != phi))
    if activation == "tanh":
        clipped = np.clip(phi, -1 + EPS, 1 - EPS)
        return np.arctanh(clipped), float(np.mean(clipped != phi))
    if activation == "softplus":
        clipped = np.maximum(phi, EPS)
        return np.log(np.expm1(clipped)), float(np.mean(clipped != phi))
    return None
