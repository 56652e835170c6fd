"""Atomic files and resumable checkpoints, as plain arrays plus JSON (never pickles).

A checkpoint is ``checkpoint.npz`` (the chains' carry and the draws so far, as arrays named by
their place in the pytree) and ``checkpoint.json`` (the next chunk, a fingerprint of the config).
Both are written to a temporary file in the same folder and renamed, so a killed run leaves either
the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np

from widebayes.errors import InputError

NPZ, META = "checkpoint.npz", "checkpoint.json"


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fingerprint(config_text: str) -> str:
    return hashlib.sha256(config_text.encode()).hexdigest()[:16]


def save(folder, next_chunk: int, carry, host_draws: list, config_text: str) -> None:
    """Write the run's state after ``next_chunk`` chunks."""
    arrays = {f"carry/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(carry))}
    for c, draws in enumerate(host_draws):
        arrays.update({f"draws/{c}/{name}": np.asarray(v) for name, v in draws.items()})
    meta = {"next_chunk": next_chunk, "num_draw_chunks": len(host_draws),
            "draw_names": sorted(host_draws[0]) if host_draws else [],
            "config": fingerprint(config_text)}
    atomic_write(Path(folder) / NPZ, lambda tmp: _savez(tmp, arrays))
    atomic_write(Path(folder) / META, lambda tmp: Path(tmp).write_text(json.dumps(meta)))


def _savez(tmp, arrays):
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def exists(folder) -> bool:
    return folder is not None and (Path(folder) / META).exists()


def load(folder, carry_like, config_text: str):
    """Read a checkpoint into the structure of ``carry_like``: (next_chunk, carry, host_draws)."""
    folder = Path(folder)
    if not (folder / META).exists():
        raise InputError(f"no checkpoint in {folder} to resume from")
    meta = json.loads((folder / META).read_text())
    if meta["config"] != fingerprint(config_text):
        raise InputError(f"the checkpoint in {folder} was made with a different config")
    with np.load(folder / NPZ, allow_pickle=False) as z:
        leaves, treedef = jax.tree.flatten(carry_like)
        carry = jax.tree.unflatten(treedef, [jax.numpy.asarray(z[f"carry/{i}"], dtype=leaf.dtype)
                                             for i, leaf in enumerate(leaves)])
        host_draws = [{name: z[f"draws/{c}/{name}"] for name in meta["draw_names"]}
                      for c in range(meta["num_draw_chunks"])]
    return meta["next_chunk"], carry, host_draws


def remove(folder) -> None:
    for name in (NPZ, META):
        path = Path(folder) / name
        if path.exists():
            path.unlink()
