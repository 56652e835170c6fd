"""Forward maps of wide fully-connected networks in the DESIGN.md parametrisation.

    z_1 = W_1 x / sqrt(N0),   z_l = W_l phi(z_{l-1}) / sqrt(N),   f(x) = a^T phi(z_L) / N**gamma.

Inputs are rows: ``X`` has shape (P, N0), a layer's preactivations (P, N), the output (P, m).
Parameters are a dict: ``W1`` (N, N0), ``W2`` ... ``WL`` (N, N) (or one shared ``W`` when the
hidden weights are tied), and ``a`` (N, m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import jax

from widebayes.activations import get_activation


@partial(jax.tree_util.register_dataclass,
         data_fields=["gamma", "sigma_w2", "sigma_a2"],
         meta_fields=["input_dim", "width", "depth", "num_outputs", "activation", "tied_weights"])
@dataclass(frozen=True)
class NetworkSpec:
    """A network: its structure (fixed at build time) and its numbers (traced).

    As a JAX pytree the structure (sizes, activation, tied weights) is static, part of a compiled
    function's cache key, and the numbers (readout exponent ``gamma``, prior variances) are leaves,
    so a sweep over them reuses one compiled chunk (ARCHITECTURE.md, "Sweeps compile once").
    """

    input_dim: int
    width: int
    depth: int
    num_outputs: int
    activation: str = "sigmoid"
    gamma: float = 1.0
    tied_weights: bool = False
    sigma_w2: tuple = ()  # per hidden layer; empty -> all 1
    sigma_a2: float = 1.0

    def __post_init__(self):
        if not self.sigma_w2:
            object.__setattr__(self, "sigma_w2", (1.0,) * self.depth)
        object.__setattr__(self, "sigma_w2", tuple(self.sigma_w2))

    @property
    def layer_variances(self) -> tuple:
        return self.sigma_w2

    @property
    def lazy(self) -> bool:
        return self.gamma == 0.5

    def _replace(self, **changes) -> NetworkSpec:
        return replace(self, **changes)


def weight_names(spec: NetworkSpec) -> list[str]:
    """Names of the hidden weight matrices, bottom to top (shared ``W`` when tied)."""
    if spec.tied_weights and spec.depth > 1:
        return ["W1", "W"]
    return [f"W{layer}" for layer in range(1, spec.depth + 1)]


def layer_weight_name(spec: NetworkSpec, layer: int) -> str:
    """Parameter name of layer ``layer`` (1-based)."""
    if spec.tied_weights and layer > 1:
        return "W"
    return f"W{layer}"


def param_shapes(spec: NetworkSpec) -> dict[str, tuple[int, int]]:
    shapes = {"W1": (spec.width, spec.input_dim)}
    for name in weight_names(spec)[1:]:
        shapes[name] = (spec.width, spec.width)
    shapes["a"] = (spec.width, spec.num_outputs)
    return shapes


def param_prior_variances(spec: NetworkSpec) -> dict[str, float]:
    """Prior variance of each parameter block (a tied ``W`` takes the hidden layers' variance)."""
    var = {layer_weight_name(spec, layer): spec.layer_variances[layer - 1]
           for layer in range(1, spec.depth + 1)}
    var["a"] = spec.sigma_a2
    return var


def hidden_layers(params: dict, X, spec: NetworkSpec) -> list:
    """Preactivations ``[z_1, ..., z_L]`` of every hidden layer, each (P, N)."""
    phi = get_activation(spec.activation).phi
    z = X @ params["W1"].T / math.sqrt(spec.input_dim)
    zs = [z]
    for layer in range(2, spec.depth + 1):
        z = phi(z) @ params[layer_weight_name(spec, layer)].T / math.sqrt(spec.width)
        zs.append(z)
    return zs


def readout(params: dict, features, spec: NetworkSpec):
    """f = phi(z_L) a / N**gamma for features phi(z_L) of shape (P, N)."""
    return features @ params["a"] / spec.width**spec.gamma


def apply(params: dict, X, spec: NetworkSpec):
    """Forward pass: returns (list of preactivations per hidden layer, output (P, m))."""
    zs = hidden_layers(params, X, spec)
    phi = get_activation(spec.activation).phi
    return zs, readout(params, phi(zs[-1]), spec)


def effective_temperature(temperature: float, width: int, gamma: float) -> float:
    """T_eff = T N^(1 - 2 gamma): T for lazy (gamma = 1/2), T/N for non-lazy (gamma = 1).

    For gamma between the two the output scale N^(1/2 - gamma) of a prior network is compensated
    in the same way, so that T stays the O(1) rescaled temperature throughout the crossover.
    """
    return temperature * width ** (1.0 - 2.0 * gamma)


def auto_readout_variance(activation: str, depth: int, num_train: int, gamma: float) -> float:
    """The papers' sigma_a^2 rule: 1 for lazy; otherwise 1/P for bounded phi (growth class
    ``"bounded"``, ``Activation.bounded``) and 1/P^(1/L) for phi that grow."""
    if gamma == 0.5:
        return 1.0
    if get_activation(activation).bounded:
        return 1.0 / num_train
    return 1.0 / num_train ** (1.0 / depth)
