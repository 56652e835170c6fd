"""A second prior: the network of ``network_prior`` with a bias on every hidden unit.

    z_1 = W_1 x / sqrt(N0) + b_1,   z_l = W_l phi(z_{l-1}) / sqrt(N) + b_l,   f = a^T phi(z_L) / N^gamma,
    b_l[i] ~ N(0, sigma_b2),  W_l, a and the tempered Gaussian likelihood as in ``network_prior``.

Its NNGP is ``K_l = sigma_l^2 E[phi phi] + sigma_b2`` (Lee et al. 2018); the theory modules of
widebayes do not cover it yet, so ``widebayes theory`` refuses it and ``widebayes compare`` shows
its samples without theory.  Select it with ``[network] model = "network_with_biases"`` and set
the bias variance with ``[network] sigma_b2 = ...`` (``NETWORK_KEYS`` below: a model declares
the extra ``[network]`` keys it reads, with their defaults; they reach the model as keyword
arguments, traced, so a sweep over them compiles once).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from widebayes.activations import get_activation
from widebayes.networks import NetworkSpec, layer_weight_name, param_prior_variances, param_shapes, readout

NETWORK_KEYS = {"sigma_b2": 0.1}


def network_with_biases(X, Y=None, *, spec: NetworkSpec, T_eff=1.0, sigma_b2=0.1):
    """NumPyro model: Gaussian weights and biases, tempered MSE likelihood at ``T_eff``."""
    variances = param_prior_variances(spec)
    w = {name: numpyro.sample(name, dist.Normal(0.0, jnp.sqrt(variances[name])).expand(shape).to_event(2))
         for name, shape in param_shapes(spec).items()}
    phi = get_activation(spec.activation).phi
    h, fan_in = X, spec.input_dim
    for layer in range(1, spec.depth + 1):
        b = numpyro.sample(f"b{layer}",
                           dist.Normal(0.0, jnp.sqrt(sigma_b2)).expand((spec.width,)).to_event(1))
        z = h @ w[layer_weight_name(spec, layer)].T / math.sqrt(fan_in) + b
        h, fan_in = numpyro.deterministic(f"phi_{layer}", phi(z)), spec.width
    f = numpyro.deterministic("f", readout(w, h, spec))
    numpyro.sample("Y", dist.Normal(f, jnp.sqrt(T_eff)).to_event(2), obs=Y)
    return f
