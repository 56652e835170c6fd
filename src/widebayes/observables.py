"""Observables computed from one parameter draw: predictor, activations, layer kernels, loss.

Layer kernels follow DESIGN.md: ``K_l = phi(z_l) . phi(z_l) / N`` for l = 1..L and
``K_0 = X X^T / N0``; they are stacked as (layer, row, col).
"""

from __future__ import annotations

import jax.numpy as jnp

from widebayes.activations import get_activation
from widebayes.networks import NetworkSpec, hidden_layers, readout


def layer_features(params, X, spec: NetworkSpec) -> list:
    """phi(z_l) on inputs X for every hidden layer, each (P, N)."""
    phi = get_activation(spec.activation).phi
    return [phi(z) for z in hidden_layers(params, X, spec)]


def gram_stack(X, features: list, input_dim: int | None = None):
    """(L+1, P, P): the input kernel X X^T / N0 and phi_l phi_l^T / N for every layer.

    ``N0`` is ``X.shape[1]`` unless ``input_dim`` says otherwise: inputs given in an orthonormal
    basis of their span (``widebayes.input_reduction``) keep ``X X^T`` but not the width ``N0``.
    """
    N0 = X.shape[1] if input_dim is None else input_dim
    grams = [X @ X.T / N0] + [h @ h.T / h.shape[1] for h in features]
    return jnp.stack(grams)


def mse_loss(f, Y):
    """L = 1/2 sum_{mu, r} (y_mu^r - f_r(x_mu))^2."""
    return 0.5 * jnp.sum((Y - f) ** 2)


def network_forward(spec: NetworkSpec):
    """The built-in network as a forward map ``f(params, X) -> (features, f)``."""

    def forward(params, X):
        feats = layer_features(params, X, spec)
        return feats, readout(params, feats[-1], spec)

    return forward


def stored_blocks(params: dict) -> dict:
    """The parameter blocks a draw stores: all but the hidden weight matrices (``W...``)."""
    return {name: x for name, x in params.items() if not name.startswith("W")}


def draw_observables(forward, params, data: dict, store_all_layers: bool = False):
    """Per-draw quantities and this draw's layer kernels.

    ``forward(params, X) -> (features, f)`` is the model's forward map (the ``phi_l`` and ``f``
    sites of a NumPyro model, or :func:`network_forward`).  Returns ``(draw, kernels)``: ``draw``
    holds the stored parameter blocks (``a``, biases...), ``f_train``, ``loss``, ``phi_L``
    (neuron, train) and, with a test set, ``f_test`` and ``phi_L_test``; with
    ``store_all_layers`` also ``phi_1 ... phi_{L-1}`` (and ``phi_1_test ...``).  ``kernels``
    holds ``train`` (and ``test``) Gram stacks; ``data["input_dim"]``, when present, is the ``N0``
    of the input kernel (reduced inputs, :mod:`widebayes.input_reduction`).
    """
    feats, f_train = forward(params, data["X_train"])
    draw = {**stored_blocks(params), "f_train": f_train, "loss": mse_loss(f_train, data["Y_train"]),
            "phi_L": feats[-1].T}
    if store_all_layers:
        draw.update({f"phi_{layer}": h.T for layer, h in enumerate(feats[:-1], start=1)})
    kernels = {"train": gram_stack(data["X_train"], feats, data.get("input_dim"))}
    if "X_test" in data:
        feats_test, draw["f_test"] = forward(params, data["X_test"])
        draw["phi_L_test"] = feats_test[-1].T
        if store_all_layers:
            draw.update({f"phi_{layer}_test": h.T for layer, h in enumerate(feats_test[:-1], start=1)})
        kernels["test"] = gram_stack(data["X_test"], feats_test, data.get("input_dim"))
    return draw, kernels
