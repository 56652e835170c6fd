"""From a resolved config to typed fields and to a prepared run: nothing below reads config dicts.

:func:`build_experiment` makes the data, the network and the model's parameter blocks and turns
the ``[network]`` and ``[sampler]`` numbers into typed fields (``T``, ``T_eff``, ``gamma``, the
preconditioner, the annealing schedule in ``T_eff`` units).  :func:`prepare_run` is the one run
preparation (sampling, the frozen-readout study, the benchmark and the tests use it): the sampler,
the compiled-chunk setup, the traced numbers, the keys, the initial states and the chunk plan.

With ``[sampler] reduce_inputs = true`` the first layer is sampled in the span of the training
inputs (:mod:`widebayes.input_reduction`): the block ``W1`` is ``U = W1 Q`` (N x r), the driver's
``X_train`` is ``X_train Q`` and its ``X_test`` is ``[X_test Q, X_test R]``; the part ``V = W1 R``
that the test inputs see outside the span is the driver's side state, a prior draw at the start
advanced by its exact AR(1) transition at every recorded draw (:func:`reduction_side`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from widebayes import input_reduction
from widebayes.config import layer_variances, num_draws, readout_gamma, replica_ratios
from widebayes.errors import InputError
from widebayes.inference import (
    ChainCarry,
    Chunk,
    RunSetup,
    Schedule,
    auto_draws_per_chunk,
    init_carry,
    initial_positions,
    plan_chunks,
    roots_of,
)
from widebayes.models import load_model, model_blocks, model_forward, model_logdensity
from widebayes.networks import NetworkSpec, auto_readout_variance, effective_temperature
from widebayes.tasks import Dataset, make_task


class Anneal(NamedTuple):
    """Annealing during burn-in, in T_eff units: T_start_eff -> T_eff over ``num_steps`` steps."""

    geometric: bool
    T_start_eff: float
    num_steps: int


class Experiment(NamedTuple):
    config: dict  # resolved, with sigma_a2 as a number (written back as config.toml; read by no one below)
    data: Dataset
    spec: NetworkSpec
    model: str  # the NumPyro model's name (models/NAME.py)
    model_kwargs: dict  # the model's extra [network] keys (numbers, traced)
    T: float  # network.temperature, the rescaled O(1) temperature
    T_eff: float  # T N^(1 - 2 gamma)
    gamma: float  # readout exponent
    blocks: dict  # parameter block -> models.Block (shape, prior variance)
    preconditioner: dict  # parameter block -> M (the step scale)
    anneal: Anneal | None  # None: no annealing
    step_size: float
    thin: int
    reduction: input_reduction.InputBasis | None = None  # bases Q, R with reduce_inputs, else None
    frozen: tuple = ()  # blocks held at one prior draw ([network] trainable), () when all are sampled

    def paper_time_per_step(self, block: str = "W1") -> float:
        """Paper Langevin time of one step for ``block``: ``step_size * M_block / T_eff``.

        The step ``Theta <- Theta - eps M grad U + sqrt(2 eps M) xi`` with ``U = L/T_eff - log P0``
        is the Euler step of the paper's ``dTheta = -grad L dt + T_eff grad log P0 dt +
        sqrt(2 T_eff) dB`` with ``dt = eps M / T_eff`` (DESIGN.md).
        """
        return self.step_size * self.preconditioner[block] / self.T_eff

    def tau_prior(self, block: str = "W1") -> float:
        """Prior relaxation time of a block, ``sigma^2 / T_eff`` in paper time (THEORY.md 6.3)."""
        return self.blocks[block].prior_variance / self.T_eff


def build_experiment(resolved: dict) -> Experiment:
    """Make the data, the network and the model's blocks of a resolved experiment."""
    data = make_task(resolved["task"])
    net = dict(resolved["network"])
    gamma = readout_gamma(net["readout"])
    if net["sigma_a2"] == "auto":
        net["sigma_a2"] = auto_readout_variance(net["activation"], net["depth"], len(data.X_train), gamma)
    spec = NetworkSpec(input_dim=data.X_train.shape[1], width=net["width"], depth=net["depth"],
                       num_outputs=data.Y_train.shape[1], activation=net["activation"], gamma=gamma,
                       tied_weights=net["tied_weights"], sigma_w2=layer_variances(net),
                       sigma_a2=float(net["sigma_a2"]))
    model = load_model(net["model"])
    model_kwargs = {key: float(net[key]) for key in model.network_keys}
    smp = resolved["sampler"]
    reduction = (input_reduction.input_basis(data.X_train, _unseen_inputs(data)) if smp["reduce_inputs"]
                 else None)
    X_blocks = data.X_train if reduction is None else data.X_train @ reduction.Q
    blocks = model_blocks(model.fn, X_blocks, data.Y_train, {"spec": spec, **model_kwargs})
    T_eff = effective_temperature(net["temperature"], spec.width, gamma)
    return Experiment({**resolved, "network": net}, data, spec, model.name, model_kwargs,
                      float(net["temperature"]), T_eff, gamma, blocks,
                      preconditioner_of(blocks, smp["preconditioner"]),
                      anneal_of(smp["anneal"], T_eff / net["temperature"]), float(smp["step_size"]),
                      int(smp["thin"]), reduction, frozen_names(blocks, net.get("trainable", "all")))


def frozen_names(blocks: dict, trainable) -> tuple:
    """The blocks that ``[network] trainable`` leaves out (``"all"``: none), in block order."""
    return () if trainable == "all" else tuple(b for b in blocks if b not in trainable)


def preconditioner_of(blocks: dict, table) -> dict:
    """Per-block step scales M: the prior variances, overridden by ``[sampler.preconditioner]``.

    ``"isotropic"`` is M = 1 for every block: the papers' plain Langevin dynamics (perspective
    Eq. 14), in which one step is ``step_size / T_eff`` of paper time for every block.
    """
    if table == "isotropic":
        return {name: 1.0 for name in blocks}
    scales = {name: b.prior_variance for name, b in blocks.items()}
    for name, value in table.items():
        if name not in scales:
            raise InputError(f"no parameter block {name!r}; blocks are {sorted(scales)}",
                             key=f"sampler.preconditioner.{name}")
        scales[name] = float(value)
    return scales


def anneal_of(table: dict, T_eff_per_T: float) -> Anneal | None:
    if not table:
        return None
    return Anneal(table["schedule"] == "geometric", table["T_start"] * T_eff_per_T, int(table["num_steps"]))


def schedule_of(exp: Experiment) -> Schedule:
    if exp.anneal is None:
        return Schedule(exp.T_eff, exp.T_eff, 0)
    return Schedule(exp.T_eff, exp.anneal.T_start_eff, exp.anneal.num_steps)


def device_data(data: Dataset, dtype, reduction: input_reduction.InputBasis | None = None) -> dict:
    """The arrays the log density and the observables read, as JAX arrays of one dtype.

    With a ``reduction`` the inputs are ``X_train Q`` and ``[X_test Q, X_test R]`` (float64 on the
    host, then cast), :func:`widebayes.input_reduction.reduced_inputs`.
    """
    X_train, X_test = data.X_train, data.X_test if len(data.X_test) else None
    num_heldout = 0 if data.X_heldout is None else len(data.X_heldout)
    if reduction is not None:  # the held-out inputs are reduced like test inputs, then split off
        X_train, unseen = input_reduction.reduced_inputs(reduction, X_train, _unseen_inputs(data))
        n_test = len(data.X_test)
        X_test = unseen[:n_test] if n_test else None
        X_heldout = None if unseen is None else unseen[n_test:]
    out = {"X_train": jnp.asarray(X_train, dtype), "Y_train": jnp.asarray(data.Y_train, dtype)}
    if X_test is not None:
        out["X_test"] = jnp.asarray(X_test, dtype)
    if num_heldout:
        out["X_heldout"] = jnp.asarray(data.X_heldout if reduction is None else X_heldout, dtype)
    return out


def _unseen_inputs(data: Dataset) -> np.ndarray:
    """The test inputs followed by the held-out pool (inputs the training never sees)."""
    return data.X_test if data.X_heldout is None else np.concatenate([data.X_test, data.X_heldout])


def check_finite(data: Dataset):
    for name in ("X_train", "Y_train", "X_test", "Y_test", "X_heldout"):
        if getattr(data, name) is not None and not np.all(np.isfinite(getattr(data, name))):
            raise InputError(f"{name} contains NaN or inf", key="task")


# ----------------------------------------------------------------------------------- samplers
def build_sampler(cfg: dict, ladder: tuple = ()):
    """The sampler of a resolved ``[sampler]`` table (BlackJAX-shaped kernels of widebayes.samplers).

    A ``ladder`` of temperature ratios (first 1) wraps it in replica exchange.
    """
    from widebayes import samplers
    from widebayes.config import SAMPLER_DEFAULTS

    cfg = {**SAMPLER_DEFAULTS, **cfg}
    kind = cfg["kind"]
    if cfg["freeze_readout_at"] >= 0 and kind != "langevin":
        raise InputError(f"only kind = \"langevin\" can freeze the readout, not {kind!r}",
                         key="sampler.freeze_readout_at")
    if cfg["freeze_readout_at"] >= 0 and cfg["readout"] == "collapsed":
        raise InputError("a collapsed readout is drawn afresh at every draw; it cannot be frozen",
                         key="sampler.freeze_readout_at")
    if kind == "langevin":
        base = samplers.langevin(cfg["freeze_readout_at"], cfg["noise"])
    elif kind == "mala":
        base = samplers.mala()
    elif kind == "hmc":
        base = samplers.hmc(cfg["num_integration_steps"], cfg["target_accept"], cfg["adapt_mass_matrix"])
    elif kind == "nuts":
        base = samplers.nuts(cfg["max_num_doublings"], cfg["target_accept"], cfg["adapt_mass_matrix"])
    else:
        raise InputError(f"unknown sampler {kind!r}", key="sampler.kind")
    if ladder:
        return samplers.replica_exchange(base, ladder, cfg["replica_exchange"]["swap_every"])
    return base


def sampler_key(cfg: dict, ladder: tuple) -> tuple:
    """What of ``[sampler]`` is fixed at build time (the rest is traced)."""
    static = ("kind", "noise", "num_integration_steps", "target_accept", "adapt_mass_matrix",
              "max_num_doublings", "freeze_readout_at", "readout", "store_all_layers", "reduce_inputs",
              "neuron_moves", "neuron_sweep", "outlier_moves", "sign_flips")
    swap_every = cfg["replica_exchange"]["swap_every"] if ladder else 0
    return tuple(cfg[k] for k in static) + (ladder, swap_every)


def ladder_of(cfg: dict, T: float) -> tuple:
    """Replica temperatures as ratios T_k / T, or () without replica exchange."""
    return replica_ratios(cfg["replica_exchange"], T) if cfg["replica_exchange"] else ()


# ----------------------------------------------------------------------------------- prepare_run
class PreparedRun(NamedTuple):
    """Everything the driver needs for one run, in the order it uses it."""

    experiment: Experiment
    setup: RunSetup
    data: dict  # device arrays
    hyper: dict  # traced numbers: {"model": the model's keyword arguments, "roots": sqrt(M) per block}
    schedule: Schedule
    key_init: jax.Array  # what the warmup (HMC/NUTS) is keyed by
    chain_keys: jax.Array
    carry: ChainCarry  # initial states and empty accumulators
    chunks: list[Chunk]
    dtype: object


def run_dtype(resolved: dict):
    return jnp.float64 if resolved["sampler"]["precision"] == "float64" else jnp.float32


def prepare_run(resolved: dict, exp: Experiment | None = None) -> PreparedRun:
    """The one run preparation: the same keys, starting points and plan for every caller."""
    cfg = resolved["sampler"]
    exp = build_experiment(resolved) if exp is None else exp
    ladder = ladder_of(cfg, exp.T)
    dtype = run_dtype(resolved)
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise InputError('"float64" needs JAX\'s 64-bit mode, which is set once per process: the widebayes '
                         'command sets it from the experiment; from Python call '
                         'jax.config.update("jax_enable_x64", True) before anything else',
                         key="sampler.precision")
    check_finite(exp.data)
    data = device_data(exp.data, dtype, exp.reduction)
    sampler = build_sampler(cfg, ladder)
    setup = run_setup_of(exp, cfg, sampler, ladder)
    moved = moved_blocks(exp, cfg)
    key_init, key_chains = jax.random.split(jax.random.PRNGKey(cfg["seed"]))
    frozen = {FROZEN: frozen_draw(key_init, exp, dtype)} if exp.frozen else {}
    hyper = {"model": {"spec": _cast_spec(exp.spec, dtype), **{k: jnp.asarray(v, dtype) for k, v in
                                                              exp.model_kwargs.items()}, **frozen},
             "roots": {b: jnp.asarray(r, dtype) for b, r in roots_of(exp.preconditioner).items()
                       if b in moved}}
    schedule = Schedule(*(jnp.asarray(x, dtype) for x in schedule_of(exp)[:2]), schedule_of(exp).num_anneal)
    chains = cfg["num_chains"]
    chain_keys = jax.random.split(key_chains, chains)
    params = sampler_params(cfg["step_size"], ladder, chains, dtype)
    positions = starting_points(key_init, exp, moved, chains, sampler.num_replicas, dtype)
    side = reduction_start(key_init, exp, chains, dtype) if exp.reduction is not None else None
    carry = init_carry(setup, positions, params, data, hyper, chains, schedule.T_start_eff, side)
    per_chunk = cfg["chunk_draws"] or auto_draws_per_chunk(cfg["thin"], num_draws(cfg))
    chunks = plan_chunks(cfg["num_steps"], cfg["burn_in"], cfg["thin"], per_chunk)
    return PreparedRun(exp, setup, data, hyper, schedule, key_init, chain_keys, carry, chunks, dtype)


def _cast_spec(spec: NetworkSpec, dtype) -> NetworkSpec:
    return spec._replace(gamma=jnp.asarray(spec.gamma, dtype), sigma_a2=jnp.asarray(spec.sigma_a2, dtype),
                         sigma_w2=tuple(jnp.asarray(v, dtype) for v in spec.sigma_w2))


def moved_blocks(exp: Experiment, cfg: dict) -> list[str]:
    """The blocks the sampler moves: all but the frozen ones, and but the readout when it is collapsed."""
    return [b for b in exp.blocks if not (cfg["readout"] == "collapsed" and b == "a") and b not in exp.frozen]


# ----------------------------------------------------------------------------------- frozen blocks
FROZEN = "frozen"  # the entry of the traced model arguments (hyper["model"]) that holds the frozen blocks
FROZEN_STREAM = 3  # the frozen draw's key is fold_in(key_init, 3), key_init = split(PRNGKey(seed))[0]


def frozen_draw(key_init, exp: Experiment, dtype) -> dict:
    """The frozen blocks (``[network] trainable``): one draw of the model's own prior, for every chain.

    The model is traced once under ``numpyro.handlers.seed`` with the key
    ``fold_in(key_init, FROZEN_STREAM)`` (``key_init`` the first half of ``split(PRNGKey(seed))``), so
    the draw is exactly the prior of each block and is fixed by the run's seed: a resumed run, a rerun
    and every chain see the same values.  Returns ``{block: array}`` for the frozen blocks.
    """
    from numpyro import handlers

    X = exp.data.X_train if exp.reduction is None else exp.data.X_train @ exp.reduction.Q
    model = load_model(exp.model).fn
    seeded = handlers.seed(model, rng_seed=jax.random.fold_in(key_init, FROZEN_STREAM))
    sites = handlers.trace(seeded).get_trace(jnp.asarray(X, dtype), jnp.asarray(exp.data.Y_train, dtype),
                                             spec=exp.spec, **exp.model_kwargs, T_eff=1.0)
    return {b: jnp.asarray(sites[b]["value"], dtype) for b in exp.frozen}


def with_frozen(setup: RunSetup) -> RunSetup:
    """The setup with the frozen blocks (``hyper["model"]["frozen"]``, traced) put back into the parameters.

    The log density and the forward map see the full parameters; the completion at a recorded draw
    adds the frozen blocks (then runs the setup's own completion, e.g. the collapsed readout), so the
    stored draws hold every block, the frozen ones at their fixed values.
    """
    logdensity, forward, complete = setup.logdensity, setup.forward, setup.complete

    def split(kwargs):
        kwargs = dict(kwargs)
        return kwargs.pop(FROZEN), kwargs

    def frozen_logdensity(params, data, kwargs, T_eff):
        frozen, kwargs = split(kwargs)
        return logdensity({**params, **frozen}, data, kwargs, T_eff)

    def frozen_forward(params, X, kwargs):
        frozen, kwargs = split(kwargs)
        return forward({**params, **frozen}, X, kwargs)

    def frozen_complete(rng_key, params, data, kwargs, T_eff):
        frozen, rest = split(kwargs)
        params = {**params, **frozen}
        return (params, {}) if complete is None else complete(rng_key, params, data, rest, T_eff)

    return setup._replace(logdensity=frozen_logdensity, forward=frozen_forward, complete=frozen_complete)


def sampler_params(step_size: float, ladder: tuple, num_chains: int, dtype) -> dict:
    """Each chain's sampler numbers (traced): the step size, one per replica with replica exchange."""
    return {"step_size": jnp.full((num_chains, len(ladder)) if ladder else num_chains, step_size, dtype)}


def starting_points(key, exp: Experiment, moved: list[str], num_chains: int, num_replicas: int,
                    dtype) -> dict:
    """Prior draws of the moved blocks in whitened coordinates, (chain[, replica], ...) per block."""
    shapes = {b: exp.blocks[b].shape for b in moved}
    factors = {b: float(np.sqrt(exp.blocks[b].prior_variance / exp.preconditioner[b])) for b in moved}
    factors = {b: 1.0 if np.isclose(f, 1.0, rtol=1e-12) else f for b, f in factors.items()}
    copies = num_chains * max(num_replicas, 1)
    positions = initial_positions(key, shapes, factors, copies, dtype)
    if num_replicas:
        positions = {b: x.reshape(num_chains, num_replicas, *x.shape[1:]) for b, x in positions.items()}
    return positions


def chain_positions(carry: ChainCarry) -> dict:
    """Every chain's position (whitened, (chain, ...) per block); with replica exchange, the target
    replica's (replica 0)."""
    replicas = getattr(carry.state, "replicas", None)
    if replicas is None:
        return dict(carry.state.position)
    return {b: x[:, 0] for b, x in replicas.position.items()}


def restart_at(run: PreparedRun, positions: dict) -> ChainCarry:
    """``run``'s initial carry with its chains at ``positions`` ((chain, ...) per block, whitened, as
    :func:`chain_positions` gives them) instead of prior draws: the blocks this sampler moves (not the
    readout when it is collapsed), copied to every replica of a ladder."""
    ref = getattr(run.carry.state, "replicas", run.carry.state).position  # (chain[, replica], ...)
    start = {}
    for b, x in ref.items():
        p = jnp.asarray(positions[b], x.dtype)
        start[b] = jnp.broadcast_to(p.reshape(p.shape[:1] + (1,) * (x.ndim - p.ndim) + p.shape[1:]), x.shape)
    return init_carry(run.setup, start, run.carry.params, run.data, run.hyper, run.chain_keys.shape[0],
                      run.schedule.T_start_eff, run.carry.side or None)


def run_setup_of(exp: Experiment, cfg: dict, sampler, ladder: tuple = ()) -> RunSetup:
    """The compiled chunk's closure: the model's log density and forward map, or the collapsed ones."""
    model = load_model(exp.model).fn
    key = (exp.model, exp.spec._replace(gamma=0.0, sigma_w2=(0.0,) * exp.spec.depth, sigma_a2=0.0),
           sampler_key(cfg, ladder), cfg["anneal"].get("schedule", "geometric") if cfg["anneal"] else None)
    logdensity, complete = model_logdensity(model), None
    if cfg["readout"] == "collapsed":
        if exp.model != "network_prior":
            raise InputError("the collapsed readout integrates out the readout of network_prior; "
                             f"model {exp.model!r} is not covered", key="sampler.readout")
        logdensity, complete = collapsed_logdensity, collapsed_completion
    side = reduction_side if exp.reduction is not None else None
    move, proposal = None, None
    if cfg["neuron_moves"]:
        from widebayes import neuron_moves

        proposal = neuron_moves.check_applicable(exp, cfg)
        outliers = neuron_moves.OUTLIER_COMPONENTS if cfg["outlier_moves"] else 0
        move = partial(neuron_moves.network_move, collapsed=cfg["readout"] == "collapsed", proposal=proposal,
                       outliers=outliers, moves=cfg["neuron_sweep"])
    flip = None
    if cfg["sign_flips"]:
        from widebayes import sign_flips

        sign_flips.check_applicable(exp, cfg)
        flip = partial(sign_flips.flip_signs, depth=exp.spec.depth)
    setup = RunSetup((*key, exp.frozen, proposal), sampler, logdensity, model_forward(model),
                     cfg["store_all_layers"], not cfg["anneal"] or cfg["anneal"]["schedule"] == "geometric",
                     complete=complete, side=side, move=move, move_every=cfg["neuron_moves"],
                     flip=flip, flip_every=cfg["sign_flips"])
    return with_frozen(setup) if exp.frozen else setup


def collapsed_logdensity(params, data, kwargs, T_eff):
    """log P0(W) + log p(Y | W): the readout of ``network_prior`` integrated out (widebayes.collapsed)."""
    from widebayes import collapsed

    return collapsed.collapsed_logdensity(kwargs["spec"])(params, data, T_eff)


def collapsed_completion(rng_key, params, data, kwargs, T_eff):
    """At a recorded draw: ``a`` drawn exactly from its conditional, and the Rao-Blackwellised
    predictor (the conditional mean and variance given W) on the training and test inputs."""
    from widebayes import collapsed

    done = collapsed.complete_readout(rng_key, params, data, kwargs["spec"], T_eff)
    extra = {"f_train_rb_mean": done.train.mean, "f_train_rb_var": done.train.var}
    if done.test is not None:
        extra.update({"f_test_rb_mean": done.test.mean, "f_test_rb_var": done.test.var})
    return done.params, extra


# ----------------------------------------------------------------------------------- input reduction
def reduction_start(key_init, exp: Experiment, num_chains: int, dtype) -> dict:
    """The side state of a reduced run at the start: ``V = W1 R``, a prior draw per chain.

    ``V`` (chain, N, q) has iid ``N(0, sigma_1^2)`` entries, as ``W1 R`` of a prior draw of ``W1``;
    ``at`` counts the Euler steps it has been advanced through (0).  Raises InputError where the orthogonal
    part's Euler recursion is unstable (``a = eps M / sigma_1^2 >= 2``: the full run diverges too).
    """
    sigma2 = exp.spec.sigma_w2[0]
    a = input_reduction.decay_per_step(exp.step_size, exp.preconditioner["W1"], sigma2)
    if not a < 2.0:
        raise InputError(f"step_size * M_W1 / sigma_w2 = {a:.4g} >= 2: the Langevin recursion of the first "
                         "layer's prior part diverges (reduced or not); take a smaller step",
                         key="sampler.step_size")
    shape = (num_chains, exp.spec.width, exp.reduction.test_rank)
    V = jax.random.normal(jax.random.fold_in(key_init, 2), shape, dtype) * jnp.asarray(np.sqrt(sigma2), dtype)
    return {"V": V, "at": jnp.zeros(num_chains, jnp.int32)}


def reduction_side(key, side: dict, params: dict, data: dict, hyper: dict, sampler_params: dict, step_index):
    """``RunSetup.side`` of a reduced run: ``V`` advanced to the end of step ``step_index``, and the view
    in which the test inputs see the whole first layer.

    ``V`` takes the exact transition of the ``k = step_index + 1 - at`` Euler steps since it was
    last advanced (Eq. 3 of :mod:`widebayes.input_reduction`; ``a = eps M_W1 / sigma_1^2``).  The
    view has ``W1 = [U, V]``, ``X_train = [X_train Q, 0]`` and ``input_dim = N0`` (the input
    kernel's normalisation), so that the forward map and any completion (the collapsed readout)
    see one first layer for training and test inputs: ``z1 = X W1^T / sqrt(N0)`` exactly.
    """
    spec = hyper["model"]["spec"]
    sigma2 = spec.sigma_w2[0]
    a = input_reduction.decay_per_step(sampler_params["step_size"], hyper["roots"]["W1"] ** 2, sigma2)
    V = input_reduction.advance(key, side["V"], step_index + 1 - side["at"], a, sigma2)
    W1, X_train = input_reduction.observation_view(params["W1"], V, data["X_train"])
    view = {**data, "X_train": X_train, "input_dim": spec.input_dim}
    return ({"V": V, "at": jnp.asarray(step_index + 1, side["at"].dtype)}, {**params, "W1": W1}, view)
