"""NumPyro models of wide-network priors, one per file, and the bridge from a model to the driver.

A model is a function ``NAME(X, Y=None, *, spec, T_eff, **extra)`` in ``models/NAME.py``:
NumPyro sample sites for the parameters (their names are the parameter blocks), the observed site
``Y`` holding the targets, and ``numpyro.deterministic`` sites ``phi_1 ... phi_L`` (the hidden
layers' activations, P x N) and ``f`` (the output, P x m), which the observables read.  A module
may declare the extra ``[network]`` keys it reads in ``NETWORK_KEYS = {key: default}``; they
reach the model as keyword arguments (traced: a sweep over them compiles once).

The bridge (:func:`model_logdensity`, :func:`model_forward`, :func:`model_blocks`) is exact: the
log density is NumPyro's ``log_density`` of the model with the targets observed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from widebayes.models.network_prior import network_prior
from widebayes.models.presets import PRESETS, preset

from widebayes.errors import InputError

DEFAULT_MODEL = "network_prior"
_NOT_MODELS = {"presets"}


class ModelDef(NamedTuple):
    name: str
    fn: Callable
    network_keys: dict  # the extra [network] keys the model reads, with their defaults


class Block(NamedTuple):
    """A parameter block (a latent sample site): its shape and its prior variance (mean over entries)."""

    shape: tuple
    prior_variance: float


def available_models() -> list[str]:
    """The model files in this package (``models/NAME.py`` defining ``NAME``)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_MODELS)


def load_model(name: str) -> ModelDef:
    """The model ``name``: the function of that name in ``models/name.py``."""
    if name not in available_models():
        raise InputError(f"no model {name!r}; models are {available_models()}", key="network.model")
    module = importlib.import_module(f"widebayes.models.{name}")
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InputError(f"models/{name}.py defines no function {name}", key="network.model")
    return ModelDef(name, fn, dict(getattr(module, "NETWORK_KEYS", {})))


def model_logdensity(model: Callable) -> Callable:
    """log p(Theta, Y | X) of a NumPyro model as ``f(params, data, kwargs, T_eff)`` (exact).

    ``kwargs`` holds the model's keyword arguments other than ``T_eff`` (``spec`` and the extras).
    """
    from numpyro.infer.util import log_density

    def logdensity(params, data, kwargs, T_eff):
        value, _ = log_density(model, (data["X_train"], data["Y_train"]), {**kwargs, "T_eff": T_eff}, params)
        return value

    return logdensity


def model_forward(model: Callable) -> Callable:
    """``f(params, X, kwargs) -> (features, f)``: the ``phi_l`` sites (bottom to top) and ``f``."""
    from numpyro import handlers

    def forward(params, X, kwargs):
        seeded = handlers.seed(handlers.substitute(model, data=params), rng_seed=0)
        Y = jnp.zeros((X.shape[0], kwargs["spec"].num_outputs), X.dtype)  # observed: nothing is drawn
        sites = handlers.trace(seeded).get_trace(X, Y, **kwargs)
        features, layer = [], 1
        while f"phi_{layer}" in sites:
            features.append(sites[f"phi_{layer}"]["value"])
            layer += 1
        if not features or "f" not in sites:
            raise InputError("the model must record deterministic sites phi_1 ... phi_L and f",
                             key="network.model")
        return features, sites["f"]["value"]

    return forward


def model_blocks(model: Callable, X, Y, kwargs) -> dict[str, Block]:
    """Every latent sample site of the model: shape and prior variance (one prior draw, traced once)."""
    from numpyro import handlers

    sites = handlers.trace(handlers.seed(model, rng_seed=0)).get_trace(X, Y, **kwargs, T_eff=1.0)
    blocks = {}
    for name, site in sites.items():
        if site["type"] == "sample" and not site["is_observed"]:
            var = np.asarray(site["fn"].variance, dtype=np.float64)
            var = float(np.mean(var)) if np.all(np.isfinite(var)) else 1.0
            blocks[name] = Block(tuple(site["value"].shape), var)
    return dict(sorted(blocks.items()))


def block_names(net: dict) -> list[str]:
    """The parameter blocks of a resolved ``[network]`` table's model, traced on a one-input stand-in.

    The names depend on the structure (depth, tied weights, the model's own sites), not on the
    sizes, so one input of one coordinate and one neuron per layer give them.
    """
    from widebayes.config import layer_variances
    from widebayes.networks import NetworkSpec

    model = load_model(net["model"])
    sigma_a2 = 1.0 if net["sigma_a2"] == "auto" else float(net["sigma_a2"])
    spec = NetworkSpec(1, 1, net["depth"], 1, net["activation"], 0.5, net["tied_weights"],
                       layer_variances(net), sigma_a2)
    kwargs = {"spec": spec, **{k: float(net[k]) for k in model.network_keys}}
    return list(model_blocks(model.fn, np.zeros((1, 1)), np.zeros((1, 1)), kwargs))


__all__ = ["block_names", "network_prior", "PRESETS", "preset", "DEFAULT_MODEL", "ModelDef", "Block",
           "available_models",
           "load_model", "model_logdensity", "model_forward", "model_blocks"]
