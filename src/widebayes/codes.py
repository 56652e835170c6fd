"""What a code is: class means, code ids and their labels, and the threshold rule.

Definitions (van Meegen & Sompolinsky, "Coding schemes in neural networks learning classification
tasks", section "Kernel and coding schemes", Table 1; THEORY.md 1.4b, 1.5b), shared by the theory
(``widebayes.theory.nonlazy``) and the diagnostics of samples (``widebayes.diagnostics.codes``):

- The *class mean* of neuron i for class c is ``s_ic = mean_{mu in c} phi_i(x_mu)``.
- The *code* of neuron i is the set of classes that activate it, ``{c : s_ic > theta}``, written
  as a string of 0/1 with one character per class, class 0 first: ``"110"`` is a neuron active
  on classes 0 and 1.  As an integer (*code id*), bit c is set when class c is active.
- The threshold ``theta`` is the activation's code threshold (``Activation.code_threshold``,
  :data:`THRESHOLD_RULE`) unless given.

All functions are NumPy functions of arrays; leading axes (chain, draw) broadcast.
"""

from __future__ import annotations

import numpy as np

from widebayes.activations import PRIOR_SD_ABOVE, Activation, as_activation

THRESHOLD_RULE = (
    "class c activates neuron i when its class mean s_ic = mean over class-c inputs of phi_i "
    "exceeds theta; theta = midpoint of the range for bounded activations (sigmoid 0.5, tanh 0), "
    f"0 for linear (the sign of the response), and E[phi(z)] + {PRIOR_SD_ABOVE:g} sd[phi(z)], "
    "z ~ N(0, q) with q the prior (NNGP) preactivation variance, for the other activations (relu, "
    "softplus, relu2): activity well above what the prior gives"
)


def default_threshold(activation: str | Activation, prior_var: float = 1.0) -> float:
    """The activation threshold ``theta`` of :data:`THRESHOLD_RULE` (``Activation.code_threshold``).

    Parameters
    ----------
    activation : str or Activation
        A name of ``widebayes.activations.ACTIVATIONS``, or the activation.
    prior_var : float
        Prior variance ``q`` of the preactivations (used for unbounded nonlinear activations only).
    """
    return as_activation(activation).code_threshold(prior_var)


def class_means(phi, labels, num_classes: int | None = None) -> np.ndarray:
    """``s_ic``: mean activation of every neuron over the inputs of every class.

    Parameters
    ----------
    phi : array (..., neuron, input)
    labels : int array (input,)
    num_classes : int, optional
        Default ``max(labels) + 1``; a class without inputs gets NaN.

    Returns
    -------
    ndarray (..., neuron, class)
    """
    phi = np.asarray(phi, dtype=np.float64)
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    onehot = (labels[:, None] == np.arange(k)[None, :]).astype(np.float64)
    counts = onehot.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (phi @ onehot) / counts


def code_ids(s, threshold: float) -> np.ndarray:
    """Code of every neuron as an integer: bit c is set when class c activates it.

    Parameters
    ----------
    s : array (..., neuron, class)
        Class means (:func:`class_means`).
    threshold : float

    Returns
    -------
    int64 array (..., neuron); -1 where every class mean is NaN (a draw of a stopped chain).  A
    class without inputs (NaN class mean, e.g. absent from a small test set) counts as inactive.
    """
    s = np.asarray(s)
    with np.errstate(invalid="ignore"):
        bits = (s > threshold).astype(np.int64) << np.arange(s.shape[-1])
    ids = bits.sum(axis=-1)
    return np.where(np.isnan(s).all(axis=-1), -1, ids)


def code_string(code_id: int, num_classes: int) -> str:
    """The label of a code id: ``"110"`` for classes 0 and 1 active (class 0 first)."""
    return "".join("1" if (int(code_id) >> c) & 1 else "0" for c in range(num_classes))


def code_of_means(s, threshold: float) -> str:
    """The label of one neuron's code from its class means ``s`` (class, ): class c is active when
    ``s_c > threshold`` (class 0 first)."""
    return "".join("1" if v > threshold else "0" for v in np.asarray(s))


def code_id_of(code, num_classes: int) -> int:
    """Inverse of :func:`code_string`; also accepts a sequence of 0/1 or booleans, or an int."""
    if isinstance(code, (int, np.integer)):
        return int(code)
    if isinstance(code, str):
        code = [ch for ch in code if ch in "01"]
    bits = [int(bool(int(b))) for b in code]
    if len(bits) != num_classes:
        raise ValueError(f"code {code!r} does not have one entry per class ({num_classes})")
    return sum(b << c for c, b in enumerate(bits))
