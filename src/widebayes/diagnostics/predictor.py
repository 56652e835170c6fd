"""The predictor: posterior mean and variance of the output, and the generalization error.

Bias-variance split per output r (perspective paper Eq. 7; coding-schemes paper, section
"Generalization"; THEORY.md 2.3):

    eps_r = mean_x <(y_r(x) - f_r(x; Theta))^2>_Theta = bias_r + variance_r,
    bias_r = mean_x (y_r(x) - <f_r(x)>)^2,   variance_r = mean_x <delta f_r(x)^2>.

The same function, ``widebayes.theory.gp.generalization_error``, splits the theory's and the GP's
predictions, so the three sit on one definition.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.theory.gp import GenError, as_2d, generalization_error


class PredictorStats(NamedTuple):
    """Posterior mean and variance of f over all draws of all chains, each (input, output)."""

    mean: np.ndarray
    var: np.ndarray


def predictor_stats(f) -> PredictorStats:
    """Mean and variance of ``f (chain, draw, input, output)`` pooled over chains and draws.

    The variance is the population variance over draws (``ddof = 0``), matching ``<delta f^2>``.
    """
    f = np.asarray(f, dtype=np.float64)
    flat = f.reshape(-1, *f.shape[-2:])
    return PredictorStats(flat.mean(axis=0), flat.var(axis=0))


def gen_error_of(f, Y) -> GenError:
    """Bias/variance split of the sampled predictor against targets ``Y`` (input, output)."""
    stats = predictor_stats(f)
    return generalization_error(stats.mean, stats.var, Y)


def gen_error_dict(err: GenError) -> dict:
    """A GenError as plain numbers (per output arrays, totals as floats)."""
    return {"bias": np.asarray(err.bias), "variance": np.asarray(err.variance),
            "total": np.asarray(err.total), "bias_total": err.bias_total,
            "variance_total": err.variance_total, "total_sum": err.total_sum}


def accuracy(mean, Y) -> float:
    """Fraction of inputs whose largest output is the target's largest (one-hot targets).

    With one output (binary targets ``y_plus``/``y_minus``) the output is compared to the midpoint.
    """
    mean, Y = as_2d(mean), as_2d(Y)
    if Y.shape[1] == 1:
        mid = 0.5 * (Y.max() + Y.min())
        return float(np.mean((mean[:, 0] > mid) == (Y[:, 0] > mid)))
    return float(np.mean(np.argmax(mean, axis=1) == np.argmax(Y, axis=1)))


def training_fit(f_mean, Y) -> float:
    """Root mean squared deviation of the posterior-mean training output from the targets."""
    return float(np.sqrt(np.mean((as_2d(f_mean) - as_2d(Y)) ** 2)))
