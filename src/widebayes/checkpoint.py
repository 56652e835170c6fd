"""Resumable checkpoints, as plain arrays plus JSON (never pickles), and the output-folder guard.

A checkpoint is ``checkpoint.npz`` (the chains' carry and the draws so far, as arrays named by
their place in the pytree, and the metadata as a JSON byte array) and ``checkpoint.json`` (the
same metadata, readable: the next chunk, a fingerprint of the config). Each is written to a
temporary file in the same folder and renamed (:func:`widebayes.io.atomic_write`), the archive
first, so a run killed at any moment leaves the previous checkpoint or the new one, never half
of one; the archive carries its own metadata, so a kill between the two renames still resumes
from a consistent state. A damaged checkpoint is reported (one line naming the file) and left
in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from numbers import Integral
from pathlib import Path

import jax
import numpy as np

from widebayes import io
from widebayes.errors import InputError
from widebayes.io import atomic_write  # noqa: F401 - re-exported: its old home

NPZ, META = "checkpoint.npz", "checkpoint.json"
POSTERIOR, CONFIG = "posterior.nc", "config.toml"
_META_ARRAY = "meta"
_META_KEYS = {"next_chunk", "num_draw_chunks", "draw_names", "config"}


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
    arrays[_META_ARRAY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(Path(folder) / NPZ, lambda tmp: _savez(tmp, arrays))
    io.write_json(Path(folder) / META, meta, nonfinite="refuse", indent=None)


def _savez(tmp, arrays):
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def exists(folder) -> bool:
    """Whether ``folder`` holds a checkpoint (either of its two files)."""
    return folder is not None and any((Path(folder) / n).exists() for n in (NPZ, META))


def load(folder, carry_like, config_text: str):
    """Read a checkpoint into the structure of ``carry_like``: (next_chunk, carry, host_draws).

    Raises
    ------
    InputError
        Naming the file: missing, damaged or foreign, made with another config, or not matching
        this run's chains. The files are left in place.
    """
    folder = Path(folder)
    npz, meta_path = folder / NPZ, folder / META
    if not exists(folder):
        raise InputError(f"no checkpoint in {folder} to resume from")
    if not npz.exists():
        raise InputError(f"{npz} is missing (only {META} is there): {_KEEP}")
    if meta_path.exists() and not _is_json(meta_path):
        _damaged(meta_path, "not JSON")
    leaves, treedef = jax.tree.flatten(carry_like)
    try:
        with io.open_npz(npz) as z:
            meta = _meta(z, meta_path)
            if meta["config"] != fingerprint(config_text):
                raise InputError(f"the checkpoint in {folder} was made with a different config; "
                                 f"resume with the same config, or pass --overwrite to start "
                                 f"again")
            arrays = [z[f"carry/{i}"] for i in range(len(leaves))]
            host_draws = [{name: z[f"draws/{c}/{name}"] for name in meta["draw_names"]}
                          for c in range(meta["num_draw_chunks"])]
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged or foreign archive is bad input
        _damaged(npz, io.describe_error(err))
    for i, (array, leaf) in enumerate(zip(arrays, leaves)):
        if array.shape != tuple(leaf.shape):
            _damaged(npz, f"carry/{i} has shape {array.shape}, this run's has {tuple(leaf.shape)}")
    carry = jax.tree.unflatten(treedef, [jax.numpy.asarray(a, dtype=leaf.dtype)
                                         for a, leaf in zip(arrays, leaves)])
    return meta["next_chunk"], carry, host_draws


_KEEP = ("it is left in place; delete checkpoint.npz and checkpoint.json, or pass --overwrite, "
         "to start again")


def _damaged(path: Path, what: str):
    raise InputError(f"{path} is damaged or not a widebayes checkpoint ({what}); {_KEEP}")


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def _meta(z, meta_path: Path) -> dict:
    """The metadata stored in the archive (checkpoints before it was: checkpoint.json)."""
    if _META_ARRAY in z.files:
        meta = json.loads(z[_META_ARRAY].tobytes().decode())
    else:
        meta = io.read_json(meta_path)
    ok = (isinstance(meta, dict) and _META_KEYS <= set(meta)
          and all(isinstance(meta[k], Integral) and not isinstance(meta[k], bool) and meta[k] >= 0
                  for k in ("next_chunk", "num_draw_chunks"))
          and isinstance(meta["draw_names"], list) and isinstance(meta["config"], str))
    if not ok:
        raise ValueError("its metadata is not a checkpoint's")
    return meta


def remove(folder) -> None:
    """Remove the checkpoint files and any temporary files killed writes left."""
    for name in (NPZ, META):
        path = Path(folder) / name
        path.unlink(missing_ok=True)
        io.remove_temporaries(path)


# ----------------------------------------------------------------------------- output folder
def guard_out_dir(out_dir, resume: bool, overwrite: bool, resumable: bool = True) -> str:
    """Check an output folder before a run, so that no run is overwritten unasked.

    A folder that holds a finished run (``posterior.nc``) or an unfinished one (a checkpoint) is
    refused unless ``resume`` (continue the checkpoint) or ``overwrite`` (start again). Nothing
    is deleted here: with ``overwrite`` the new run replaces the old checkpoint at its first
    checkpoint and the old posterior.nc and config.toml when it finishes (atomic renames), so a
    new run that fails or is stopped leaves the finished old one readable. With ``resume`` or
    ``overwrite``, removes the temporary files that killed writes left. Call it on a folder made
    by :func:`make_out_dir`, inside :func:`locked`.

    Parameters
    ----------
    out_dir : str or Path
    resume, overwrite : bool
        The ``--resume`` and ``--overwrite`` flags (not both).
    resumable : bool
        Whether the command can resume (``drift`` cannot: it offers only ``--overwrite``).

    Returns
    -------
    str
        ``"new"`` (nothing there), ``"resume"`` (a checkpoint to continue), ``"fresh"`` (resume
        asked, nothing to resume: starts from step 0) or ``"overwrite"`` (a run there will be
        replaced).

    Raises
    ------
    InputError
        One line saying what is there and what to pass.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise InputError("--resume continues a run and --overwrite starts it again: pass one")
    finished, partial = (out / POSTERIOR).exists(), exists(out)
    again = "--overwrite to start again" if resumable else "--overwrite to run it again"
    if overwrite:
        _remove_temporaries(out)
        return "overwrite" if finished or partial else "new"
    if resume:
        if partial:
            _remove_temporaries(out)
            return "resume"
        if finished:
            raise InputError(f"{out} holds a finished run ({POSTERIOR}) and no checkpoint: "
                             f"nothing to resume; pass {again}, or choose another --out")
        return "fresh"
    if partial:
        cont = "--resume to continue it or " if resumable else ""
        raise InputError(f"{out} holds the checkpoint of an unfinished run; pass {cont}"
                         f"{again}, or choose another --out")
    if finished:
        raise InputError(f"{out} already holds a finished run ({POSTERIOR}); pass --overwrite "
                         f"to replace it, or choose another --out")
    return "new"


def make_out_dir(out_dir) -> Path:
    """``out_dir`` as a folder, made if missing.

    Raises
    ------
    InputError
        If it names an existing file, or cannot be made (permissions, a file on its path).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file, not a folder; choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot make the output folder {out}: {err.strerror or err}") from None
    return out


def _remove_temporaries(out: Path) -> None:
    for name in (NPZ, META, POSTERIOR, CONFIG):
        io.remove_temporaries(out / name)


LOCK = ".widebayes.lock"


@contextlib.contextmanager
def locked(out_dir):
    """Hold an exclusive lock on ``out_dir`` (``flock`` on ``out_dir/.widebayes.lock``) while a
    run writes there: a second run on the same folder is refused instead of mixing two runs'
    checkpoints. The kernel releases the lock when the process ends, even by SIGKILL.

    Raises
    ------
    InputError
        If another process holds the lock.
    """
    import fcntl

    with open(Path(out_dir) / LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another widebayes run is writing to {out_dir}; wait for it to "
                             f"finish, or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
