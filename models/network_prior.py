"""The network prior with its tempered Gaussian likelihood, as a NumPyro model.

    W_l[i, j] ~ N(0, sigma_l^2),  a[i, r] ~ N(0, sigma_a^2),
    Y | Theta ~ N(f(X; Theta), T_eff)  elementwise, i.e.  p(Theta | D) ∝ P0(Theta) exp(-L / T_eff),

with L = 1/2 sum (y - f)^2 and T_eff = T (lazy) or T/N (non-lazy), DESIGN.md.  The model is
declarative: what is random, with which prior, what is observed.  ``T_eff`` is an argument so
that a temperature sweep or an annealing schedule reuses one compiled log density; ``spec`` is a
pytree whose numbers (prior variances, readout exponent) are traced too.

The layer activations are ``numpyro.deterministic`` sites ``phi_1 ... phi_L`` (P x N) and the
output is ``f`` (P x m): the observables (kernels, codes, predictor) read them
(``widebayes.models.model_forward``).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from widebayes.activations import get_activation
from widebayes.networks import NetworkSpec, hidden_layers, param_prior_variances, param_shapes, readout


def network_prior(X, Y=None, *, spec: NetworkSpec, T_eff=1.0):
    """NumPyro model of a wide network: Gaussian weight priors and the tempered MSE likelihood."""
    variances = param_prior_variances(spec)
    # W1 has one column per input coordinate the data carry: N0, or r for the reduced inputs X Q
    # of widebayes.input_reduction (the scaling z1 = X W1^T / sqrt(N0) keeps spec.input_dim)
    shapes = {**param_shapes(spec), "W1": (spec.width, X.shape[1])}
    params = {
        name: numpyro.sample(name, dist.Normal(0.0, jnp.sqrt(variances[name])).expand(shape).to_event(2))
        for name, shape in shapes.items()
    }
    phi = get_activation(spec.activation).phi
    features = [numpyro.deterministic(f"phi_{layer}", phi(z))
                for layer, z in enumerate(hidden_layers(params, X, spec), start=1)]
    f = numpyro.deterministic("f", readout(params, features[-1], spec))
    numpyro.sample("Y", dist.Normal(f, jnp.sqrt(T_eff)).to_event(2), obs=Y)
    return f
