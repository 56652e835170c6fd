"""From a resolved config to what the samplers need: data, network spec, temperature, scales."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.config import layer_variances, readout_gamma
from widebayes.errors import InputError
from widebayes.networks import (NetworkSpec, auto_readout_variance, effective_temperature,
                                param_prior_variances)
from widebayes.tasks import Dataset, make_task


class Experiment(NamedTuple):
    config: dict  # resolved, with sigma_a2 as a number
    data: Dataset
    spec: NetworkSpec
    T_eff: float
    preconditioner: dict  # per parameter block M (the step scale)


def build_experiment(resolved: dict) -> Experiment:
    """Make the data and the network of a resolved experiment."""
    data = make_task(resolved["task"])
    net = dict(resolved["network"])
    gamma = readout_gamma(net["readout"])
    if net["sigma_a2"] == "auto":
        net["sigma_a2"] = auto_readout_variance(net["activation"], net["depth"], len(data.X_train), gamma)
    spec = NetworkSpec(input_dim=data.X_train.shape[1], width=net["width"], depth=net["depth"],
                       num_outputs=data.Y_train.shape[1], activation=net["activation"], gamma=gamma,
                       tied_weights=net["tied_weights"], sigma_w2=layer_variances(net),
                       sigma_a2=float(net["sigma_a2"]))
    config = {**resolved, "network": net}
    T_eff = effective_temperature(net["temperature"], spec.width, gamma)
    return Experiment(config, data, spec, T_eff, preconditioner_of(spec, resolved["sampler"]))


def preconditioner_of(spec: NetworkSpec, sampler_cfg: dict) -> dict:
    """Per-block step scales M: the prior variances, overridden by ``[sampler.preconditioner]``."""
    scales = param_prior_variances(spec)
    for name, value in sampler_cfg.get("preconditioner", {}).items():
        if name not in scales:
            raise InputError(f"no parameter block {name!r}; blocks are {sorted(scales)}",
                             key=f"sampler.preconditioner.{name}")
        scales[name] = float(value)
    return scales


def device_data(data: Dataset, dtype) -> dict:
    """The arrays the log density and the observables read, as JAX arrays of one dtype."""
    import jax.numpy as jnp

    out = {"X_train": jnp.asarray(data.X_train, dtype), "Y_train": jnp.asarray(data.Y_train, dtype)}
    if len(data.X_test):
        out["X_test"] = jnp.asarray(data.X_test, dtype)
    return out


def check_finite(data: Dataset):
    for name in ("X_train", "Y_train", "X_test", "Y_test"):
        if not np.all(np.isfinite(getattr(data, name))):
            raise InputError(f"{name} contains NaN or inf", key="task")
