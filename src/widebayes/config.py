"""Experiment configuration: the TOML contract of DESIGN.md, its defaults and its validation.

An experiment has three tables, ``[task]``, ``[network]`` and ``[sampler]``.  ``resolve`` fills in
defaults, checks every key and value, and returns the resolved config (a plain dict that
``to_toml`` writes back).  Every problem raises :class:`~widebayes.errors.InputError` naming the
key, which the command turns into one line and exit code 2.
"""

from __future__ import annotations

import copy
import math
import tomllib

import tomli_w

from widebayes.activations import ACTIVATIONS
from widebayes.errors import InputError

NETWORK_DEFAULTS = {
    "depth": 1,
    "width": 100,
    "activation": "sigmoid",
    "readout": "nonlazy",
    "sigma_w2": 1.0,
    "sigma_a2": "auto",
    "temperature": 0.01,
    "tied_weights": False,
    "model": "network_prior",
    "trainable": "all",
}

# keys added after runs were stored: a stored config without one means its default
LATER_NETWORK_KEYS = {"trainable"}

SAMPLER_KINDS = ("langevin", "mala", "hmc", "nuts", "smc")

SAMPLER_DEFAULTS = {
    "kind": "langevin",
    "step_size": 0.01,
    "num_steps": 20000,
    "burn_in": 10000,
    "thin": 100,
    "num_chains": 2,
    "seed": 1,
    "preconditioner": {},
    "freeze_readout_at": -1,
    "store_all_layers": False,
    "precision": "float32",
    "noise": "hash32",
    "chunk_draws": 0,
    "checkpoint_every": 1,
    "progress": True,
    "num_integration_steps": 10,
    "target_accept": 0.8,
    "adapt_mass_matrix": False,
    "max_num_doublings": 6,
    "anneal": {},
    "smc_particles": 0,
    "smc_mcmc_steps": 10,
    "smc_target_ess": 0.5,
    "readout": "joint",
    "replica_exchange": {},
    "devices": 0,
    "reduce_inputs": False,
    "neuron_moves": 0,
    "neuron_sweep": 1,
    "outlier_moves": False,
    "sign_flips": 0,
}

ANNEAL_DEFAULTS = {"schedule": "geometric", "T_start": 1.0, "num_steps": 1000}
REPLICA_DEFAULTS = {"num_replicas": 4, "T_max": 0.0, "swap_every": 10, "temperatures": []}
READOUT_MODES = ("joint", "collapsed")

MAX_DEPTH = 1000
MAX_NEURON_SWEEP = 32  # the sweep's moves are unrolled in the compiled chunk (neuron_moves.sweep says why)
MAX_STEP_INDEX = 2**31 - 1  # step indices, leapfrog and particle counts are int32 on the device
MAX_SEED = 2**32 - 1  # jax.random.PRNGKey keeps the low 32 bits: larger seeds would repeat others
MAX_DOUBLINGS = 30  # NUTS trajectories of at most 2**30 leapfrog steps (an int32 count)


def num_draws(sampler_cfg: dict) -> int:
    """Draws stored per chain: ``(num_steps - burn_in) // thin`` (leftover steps join the burn-in)."""
    return (sampler_cfg["num_steps"] - sampler_cfg["burn_in"]) // sampler_cfg["thin"]


def load_toml(path) -> dict:
    """Read an experiment file; unreadable or malformed TOML is an InputError."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"no such experiment file: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid TOML: {err}") from None
    except OSError as err:
        raise InputError(f"cannot read the experiment file {path}: {err.strerror or err}") from None


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` overrides; values are parsed as TOML (bare words as strings)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2:
            raise InputError(f"--set expects section.key=value, got {item!r}")
        table = cfg
        for depth, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise InputError(f"--set {item!r}: {'.'.join(parts[:depth + 1])} is not a table")
        table[parts[-1]] = _parse_value(raw.strip())
    return cfg


def _parse_value(raw: str):
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def resolve(cfg: dict) -> dict:
    """Validate an experiment and fill in every default (pure; returns a new dict)."""
    _check_known(cfg, {"task", "network", "sampler"}, "")
    resolved = {
        "task": _resolve_task(cfg.get("task", {})),
        "network": _resolve_table(cfg.get("network", {}), network_defaults(cfg.get("network", {})),
                                  "network"),
        "sampler": _resolve_table(cfg.get("sampler", {}), SAMPLER_DEFAULTS, "sampler"),
    }
    _check_network(resolved["network"])
    _check_sampler(resolved["sampler"])
    _check_reduce_inputs(resolved)
    _check_trainable(resolved)
    if resolved["sampler"]["replica_exchange"]:
        replica = resolved["sampler"]["replica_exchange"]
        replica_ratios(replica, resolved["network"]["temperature"])
        if replica["swap_every"] <= 0:
            raise InputError("must be positive", key="sampler.replica_exchange.swap_every")
    return resolved


def network_defaults(table) -> dict:
    """``[network]`` defaults: the common keys and the extra keys of the chosen model."""
    from widebayes.models import load_model

    name = (table.get("model", NETWORK_DEFAULTS["model"]) if isinstance(table, dict)
            else NETWORK_DEFAULTS["model"])
    if not isinstance(name, str):
        raise InputError(f"must be a model name, got {name!r}", key="network.model")
    return {**NETWORK_DEFAULTS, **load_model(name).network_keys}


def _check_known(table: dict, allowed, section: str):
    for key in table:
        if key not in allowed:
            where = f"{section}.{key}" if section else key
            raise InputError(f"unknown key; allowed: {sorted(allowed)}", key=where)


def _resolve_table(table: dict, defaults: dict, section: str) -> dict:
    if not isinstance(table, dict):
        raise InputError("must be a table", key=section)
    _check_known(table, defaults, section)
    out = copy.deepcopy(defaults)
    out.update(copy.deepcopy(table))
    for key, value in out.items():
        _check_type(value, defaults[key], f"{section}.{key}")
    return out


def _check_type(value, default, key):
    if isinstance(default, bool) and not isinstance(value, bool):
        raise InputError(f"must be true or false, got {value!r}", key=key)
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InputError(f"must be an integer, got {value!r}", key=key)
    if isinstance(default, float) and not _is_number(value) and not isinstance(value, (str, list)):
        raise InputError(f"must be a number, got {value!r}", key=key)
    if isinstance(default, dict) and not isinstance(value, dict) and key != "sampler.preconditioner":
        raise InputError("must be a table", key=key)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _resolve_task(table: dict) -> dict:
    """Check the ``[task]`` keys; the values are checked, and defaulted, by ``tasks.make_task``.

    The task table is kept as the user wrote it (its defaults depend on the kind and some are
    "all of the file"), so the stored config reproduces the same data.
    """
    from widebayes.tasks import task_keys

    if not isinstance(table, dict):
        raise InputError("must be a table", key="task")
    table = {"kind": "orthogonal", **copy.deepcopy(table)}
    _check_known(table, task_keys(table["kind"]), "task")
    return table


def readout_gamma(readout) -> float:
    """``readout`` as the exponent gamma: "lazy" -> 1/2, "nonlazy" -> 1, or a number in [1/2, 1]."""
    if readout == "lazy":
        return 0.5
    if readout == "nonlazy":
        return 1.0
    if _is_number(readout) and 0.5 <= readout <= 1.0:
        return float(readout)
    raise InputError(f'must be "lazy", "nonlazy" or a number in [0.5, 1], got {readout!r}',
                     key="network.readout")


def _check_network(net: dict):
    if not isinstance(net["activation"], str) or net["activation"] not in ACTIVATIONS:
        raise InputError(f"unknown activation {net['activation']!r}; choose one of "
                         f"{sorted(ACTIVATIONS)}", key="network.activation")
    for key in ("depth", "width"):
        if net[key] <= 0:
            raise InputError(f"must be positive, got {net[key]}", key=f"network.{key}")
    if net["depth"] > MAX_DEPTH:
        raise InputError(f"must be at most {MAX_DEPTH} (layers are unrolled in the compiled step), "
                         f"got {net['depth']}", key="network.depth")
    _check_positive(net["temperature"], "network.temperature")
    readout_gamma(net["readout"])
    variances = layer_variances(net)
    if net["tied_weights"] and len(set(variances[1:])) > 1:
        raise InputError("tied hidden weights need one variance for layers 2..L", key="network.sigma_w2")
    if net["sigma_a2"] != "auto":
        _check_positive(net["sigma_a2"], "network.sigma_a2")


def _check_positive(value, key):
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise InputError(f"must be a positive number, got {value!r}", key=key)


def layer_variances(net: dict) -> tuple:
    """sigma_l^2 for l = 1..L: one number for all layers, or a list of length depth."""
    s2 = net["sigma_w2"]
    values = s2 if isinstance(s2, list) else [s2] * net["depth"]
    if len(values) != net["depth"]:
        raise InputError(f"needs {net['depth']} values (one per hidden layer), got {len(values)}",
                         key="network.sigma_w2")
    for value in values:
        _check_positive(value, "network.sigma_w2")
    return tuple(float(v) for v in values)


_SAMPLER_INT_RANGES = {  # key: (smallest, largest) allowed
    "num_steps": (1, MAX_STEP_INDEX),
    "thin": (1, MAX_STEP_INDEX),
    "num_chains": (1, MAX_STEP_INDEX),
    "seed": (0, MAX_SEED),
    "chunk_draws": (0, MAX_STEP_INDEX),
    "checkpoint_every": (1, MAX_STEP_INDEX),
    "num_integration_steps": (1, MAX_STEP_INDEX),
    "max_num_doublings": (1, MAX_DOUBLINGS),
    "smc_particles": (0, MAX_STEP_INDEX),
    "smc_mcmc_steps": (1, MAX_STEP_INDEX),
    "freeze_readout_at": (-1, MAX_STEP_INDEX),
    "devices": (0, 1 << 16),  # 0: every device of the machine
    "neuron_moves": (0, MAX_STEP_INDEX),  # a sweep of neuron moves after every k-th step; 0: none
    "neuron_sweep": (1, MAX_NEURON_SWEEP),  # moves per sweep (one factorisation shared among them)
    "sign_flips": (0, MAX_STEP_INDEX),  # every hidden neuron flipped w.p. 1/2 after every k-th step; 0: none
}


def _check_int_range(value, low: int, high: int, key: str):
    """An integer (type checked by the defaults) in ``[low, high]``."""
    if value < low and low == 1:
        raise InputError(f"must be positive, got {value}", key=key)
    if not low <= value <= high:
        raise InputError(f"must be in [{low}, {high}], got {value}", key=key)


def _check_fraction(value, key: str, closed_right: bool = False):
    """A number in (0, 1), or (0, 1] with ``closed_right``."""
    inside = _is_number(value) and 0 < value and (value < 1 or (closed_right and value == 1))
    if not inside:
        raise InputError(f"must be a number in (0, 1{']' if closed_right else ')'}, got {value!r}",
                         key=key)


def _check_sampler(smp: dict):
    if not isinstance(smp["kind"], str) or smp["kind"] not in SAMPLER_KINDS:
        raise InputError(f"unknown sampler {smp['kind']!r}; choose one of {list(SAMPLER_KINDS)}",
                         key="sampler.kind")
    _check_positive(smp["step_size"], "sampler.step_size")
    for key, (low, high) in _SAMPLER_INT_RANGES.items():
        _check_int_range(smp[key], low, high, f"sampler.{key}")
    _check_fraction(smp["target_accept"], "sampler.target_accept")
    _check_fraction(smp["smc_target_ess"], "sampler.smc_target_ess", closed_right=True)
    if smp["freeze_readout_at"] >= smp["num_steps"]:
        raise InputError(f"must be -1 (never) or a step below num_steps = {smp['num_steps']}, "
                         f"got {smp['freeze_readout_at']}", key="sampler.freeze_readout_at")
    if smp["neuron_sweep"] > 1 and not smp["neuron_moves"]:
        raise InputError("a sweep of neuron moves needs sampler.neuron_moves too", key="sampler.neuron_sweep")
    if smp["outlier_moves"] and not smp["neuron_moves"]:
        raise InputError("outlier components join the neuron moves: set sampler.neuron_moves too",
                         key="sampler.outlier_moves")
    if not 0 <= smp["burn_in"] < smp["num_steps"]:
        raise InputError("must be in [0, num_steps)", key="sampler.burn_in")
    if (smp["num_steps"] - smp["burn_in"]) < smp["thin"]:
        raise InputError("num_steps - burn_in must be at least thin (no draw would be stored)",
                         key="sampler.thin")
    if not isinstance(smp["noise"], str) or smp["noise"] not in ("hash32", "threefry"):
        raise InputError('must be "hash32" or "threefry"', key="sampler.noise")
    if not isinstance(smp["precision"], str) or smp["precision"] not in ("float32", "float64"):
        raise InputError('must be "float32" or "float64"', key="sampler.precision")
    _check_preconditioner(smp["preconditioner"])
    if smp["readout"] not in READOUT_MODES:
        raise InputError(f"must be one of {list(READOUT_MODES)}, got {smp['readout']!r}",
                         key="sampler.readout")
    if smp["readout"] == "collapsed" and smp["kind"] not in ("langevin", "mala", "hmc", "nuts"):
        raise InputError(f"the collapsed readout is for langevin, mala, hmc and nuts, not {smp['kind']!r}",
                         key="sampler.readout")
    if smp["replica_exchange"]:
        if smp["kind"] == "smc":
            raise InputError("replica exchange runs (init, step) samplers, not smc",
                             key="sampler.replica_exchange")
        smp["replica_exchange"] = _resolve_table(smp["replica_exchange"], REPLICA_DEFAULTS,
                                                 "sampler.replica_exchange")
    if smp["anneal"] and smp["kind"] in ("hmc", "nuts", "smc"):
        raise InputError(f"{smp['kind']} uses the burn-in for its own adaptation or tempering; "
                         "annealing is for langevin and mala", key="sampler.anneal")
    if smp["anneal"]:
        smp["anneal"] = _resolve_table(smp["anneal"], ANNEAL_DEFAULTS, "sampler.anneal")
        _check_anneal(smp["anneal"], smp)


def _check_reduce_inputs(resolved: dict):
    """``reduce_inputs`` only where the reduction is exact (:mod:`widebayes.input_reduction`)."""
    smp = resolved["sampler"]
    if not smp["reduce_inputs"]:
        return
    why = None
    if resolved["network"]["model"] != "network_prior":
        why = f"it reduces the first layer of model network_prior, not {resolved['network']['model']!r}"
    elif smp["kind"] != "langevin":
        why = (f"it reproduces the unadjusted Langevin dynamics; kind = {smp['kind']!r} accepts or rejects "
               "the whole position, the first layer's orthogonal part included")
    elif smp["replica_exchange"]:
        why = "replica exchange swaps whole positions, the first layer's orthogonal part included"
    if why:
        raise InputError(f"cannot reduce the inputs: {why}", key="sampler.reduce_inputs")


def _check_trainable(resolved: dict):
    """``[network] trainable``: "all" (the default), or a non-empty list of the model's parameter blocks.

    The blocks not listed are frozen at one prior draw (:func:`widebayes.experiment.frozen_draw`)
    and only the listed ones are sampled: ``trainable = ["a"]`` is the random-feature model.
    """
    net, smp = resolved["network"], resolved["sampler"]
    listed = net["trainable"]
    if listed == "all":
        return
    key = "network.trainable"
    if not isinstance(listed, list) or not listed or not all(isinstance(b, str) for b in listed):
        raise InputError(f'must be "all" or a non-empty list of parameter blocks, e.g. ["a"], got {listed!r}',
                         key=key)
    if len(set(listed)) != len(listed):
        raise InputError(f"lists a block twice: {listed}", key=key)
    from widebayes.models import block_names

    blocks = block_names(net)
    unknown = [b for b in listed if b not in blocks]
    if unknown:
        raise InputError(f"no parameter block {unknown[0]!r}; the blocks of model {net['model']!r} are "
                         f"{blocks}", key=key)
    frozen = [b for b in blocks if b not in listed]
    why = None
    if not frozen:
        return
    if smp["kind"] == "smc":
        why = "tempered SMC moves every block; frozen blocks are for the (init, step) samplers"
    elif smp["reduce_inputs"]:
        why = "the input reduction samples the first layer; it does not combine with frozen blocks"
    elif smp["readout"] == "collapsed" and ("a" in frozen or listed == ["a"]):
        why = ("the collapsed readout integrates out a and samples the rest: it needs a trainable and at "
               "least one other trainable block")
    elif smp["freeze_readout_at"] >= 0 and "a" in frozen:
        why = "sampler.freeze_readout_at freezes a readout that is already frozen"
    if why:
        raise InputError(f"cannot freeze {frozen}: {why}", key=key)


def _check_preconditioner(value):
    """A table of per-block scales, or ``"isotropic"`` (M = 1 for every block: the papers' dynamics)."""
    if isinstance(value, str):
        if value != "isotropic":
            raise InputError(f'must be "isotropic" or a table of per-block scales, got {value!r}',
                             key="sampler.preconditioner")
        return
    if not isinstance(value, dict):
        raise InputError('must be "isotropic" or a table of per-block scales', key="sampler.preconditioner")
    for name, scale in value.items():
        _check_positive(scale, f"sampler.preconditioner.{name}")


def replica_ratios(replica: dict, temperature: float) -> tuple:
    """Temperature ladder of ``[sampler.replica_exchange]`` as ratios T_k / T (the first is 1).

    ``temperatures`` (same units as ``network.temperature``, starting at it) if given, else
    ``num_replicas`` temperatures geometric between ``network.temperature`` and ``T_max``.
    """
    temps = replica["temperatures"]
    if temps:
        if not all(_is_number(t) and t > 0 for t in temps) or len(temps) < 2:
            raise InputError("needs at least two positive numbers",
                             key="sampler.replica_exchange.temperatures")
        if not math.isclose(temps[0], temperature, rel_tol=1e-9):
            raise InputError(f"must start at network.temperature = {temperature}",
                             key="sampler.replica_exchange.temperatures")
        if any(b <= a for a, b in zip(temps, temps[1:])):
            raise InputError("must increase", key="sampler.replica_exchange.temperatures")
        return tuple(float(t) / temperature for t in temps)
    K, T_max = replica["num_replicas"], replica["T_max"]
    if K < 2:
        raise InputError("must be at least 2", key="sampler.replica_exchange.num_replicas")
    if not _is_number(T_max) or T_max <= temperature:
        raise InputError(f"must exceed network.temperature = {temperature} (or give temperatures)",
                         key="sampler.replica_exchange.T_max")
    return tuple(float((T_max / temperature) ** (k / (K - 1))) for k in range(K))


def _check_anneal(anneal: dict, smp: dict):
    if not isinstance(anneal["schedule"], str) or anneal["schedule"] not in ("geometric", "linear"):
        raise InputError('must be "geometric" or "linear"', key="sampler.anneal.schedule")
    _check_positive(anneal["T_start"], "sampler.anneal.T_start")
    if not 0 < anneal["num_steps"] <= smp["burn_in"]:
        raise InputError("must be positive and at most sampler.burn_in (anneal during burn-in)",
                         key="sampler.anneal.num_steps")


def parse_stored(text, source) -> dict:
    """The resolved config that ``to_toml`` stored (in a posterior.nc), checked: valid TOML, the
    three tables, every network and sampler key, and values that :func:`resolve` accepts.

    Raises
    ------
    InputError
        Naming ``source``: damaged, foreign, or not a complete resolved experiment.
    """
    try:
        cfg = tomllib.loads(text) if isinstance(text, str) else None
        complete = (isinstance(cfg, dict) and set(cfg) == {"task", "network", "sampler"}
                    and all(isinstance(cfg[t], dict) for t in cfg)
                    and set(NETWORK_DEFAULTS) - LATER_NETWORK_KEYS <= set(cfg["network"])
                    and set(SAMPLER_DEFAULTS) <= set(cfg["sampler"]))
        if not complete:
            raise InputError("not a complete resolved experiment")
        resolve(cfg)
    except (tomllib.TOMLDecodeError, InputError) as err:
        raise InputError(f"{source}: its stored config is damaged or not widebayes' ({err})") from None
    return cfg


def to_toml(cfg: dict) -> str:
    """The resolved config as TOML text (stored in posterior.nc and beside it)."""
    return tomli_w.dumps(cfg)
