"""Gaussian noise for the Langevin step, one normal draw per parameter."""

from __future__ import annotations

import jax


def gaussian_like(rng_key, tree: dict) -> dict:
    """Independent N(0, 1) arrays shaped like every leaf of ``tree``."""
    names = sorted(tree)
    keys = jax.random.split(rng_key, len(names))
    return {name: jax.random.normal(k, tree[name].shape, tree[name].dtype) for name, k in zip(names, keys)}
