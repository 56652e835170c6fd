"""Sign flips: the exact symmetry of an odd activation, applied as a move.

Why.  For ``phi(-z) = -phi(z)`` (tanh, linear) the posterior of ``network_prior`` is invariant under
flipping one hidden neuron: negate its incoming weights (row ``i`` of ``W_l``) and its outgoing ones
(column ``i`` of ``W_{l+1}``, or row ``i`` of the readout ``a`` for the feature layer).  Its
preactivations change sign, its activations too, and the layer above sees the same input; the
Gaussian priors are even.  The flip maps a code onto its complement (its mirror: on a class task a
tanh neuron coding ``100`` flipped codes ``011``), so the posterior gives a code and its mirror the
same weight.  Langevin never flips a neuron (the path crosses ``W_i = 0``, where the neuron stops
coding), and the neuron moves, once the codes have formed, are not accepted on tanh (README, Fig. 6,
tanh): the split of each mirror pair stays where the neurons nucleated.

The move.  After every k-th step (``[sampler] sign_flips = k``) every hidden neuron of every layer
is flipped with probability 1/2, independently.  Each flip pattern is an involution that preserves
the posterior density with unit Jacobian, so a random pattern drawn independently of the state
leaves the posterior invariant; it is always accepted.  Observables that are invariant under the
flips (kernels, outputs, the loss, a mirror pair's total) are untouched; what changes is which
member of each pair a neuron sits in, now uniform.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from widebayes.activations import get_activation
from widebayes.errors import InputError

KEY = "sampler.sign_flips"


def check_applicable(exp, cfg: dict) -> None:
    """Refuse, with one line naming ``sampler.sign_flips``, the runs where a flip is not a symmetry or
    where the position does not hold every weight it negates."""
    if exp.model != "network_prior" or exp.spec.tied_weights:
        raise InputError("sign flips act on the hidden neurons of network_prior (untied weights)", key=KEY)
    if not get_activation(exp.spec.activation).odd:
        raise InputError(f"sign flips are a symmetry of odd activations only (phi(-z) = -phi(z)); "
                         f"{exp.spec.activation!r} is not odd", key=KEY)
    if cfg["replica_exchange"] or exp.reduction is not None or exp.frozen:
        raise InputError("sign flips need one replica and the full network (no replica exchange, "
                         "reduce_inputs or frozen blocks)", key=KEY)


def flip_signs(rng_key, position: dict, depth: int):
    """``position`` (whitened or not: the flip is elementwise) with every hidden neuron of layers
    1..``depth`` flipped with probability 1/2.  Blocks: ``W1``..``W{depth}`` (rows are neurons) and
    ``a`` (absent with the collapsed readout, whose marginal is invariant under the flips of ``W``
    alone)."""
    keys = jax.random.split(rng_key, depth)
    out = dict(position)
    for layer in range(1, depth + 1):
        name = f"W{layer}"
        flipped = jax.random.bernoulli(keys[layer - 1], 0.5, (position[name].shape[0],))
        sign = jnp.where(flipped, -1, 1).astype(position[name].dtype)
        out[name] = out[name] * sign[:, None]  # incoming weights of layer `layer`
        above = f"W{layer + 1}" if layer < depth else "a"
        if above in out:
            out[above] = out[above] * (sign[None, :] if layer < depth else sign[:, None])
    return out
