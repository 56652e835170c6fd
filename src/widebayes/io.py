"""Files in and out: atomic writes, strict JSON, and reading a ``posterior.nc``.

- :func:`atomic_write` writes through a temporary file with a unique name in the target's folder
  and renames it over the target (``os.replace``, atomic on POSIX), so a reader, or a run killed
  at any moment (SIGKILL included), sees either the old file or the new one, never half of one.
- :func:`write_json` is the one strict-JSON writer: arrays and NumPy scalars become lists and
  numbers; NaN and infinities become ``null`` or are refused (RFC 8259 has no NaN).
- :func:`read_netcdf` opens a ``posterior.nc`` with ArviZ, loads it whole, and turns any failure of
  the HDF5/netCDF layer (a truncated, damaged or foreign file) into one
  :class:`~widebayes.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from widebayes.errors import InputError

TEMPORARY_SUFFIX = ".tmp"


def temporary_prefix(path) -> str:
    """Name prefix of the temporary files :func:`atomic_write` makes for ``path``."""
    return f".{Path(path).name}."


def atomic_write(path, write, durable: bool = True) -> None:
    """Call ``write(tmp_path)`` for a new temporary file beside ``path``, then rename it to ``path``.

    The temporary name is unique (``tempfile.mkstemp``), so two writers never share one. The file
    gets the permissions of any new file (``0o666`` less the umask), not mkstemp's ``0o600``.
    With ``durable`` the data (and then the rename, through the folder) are flushed to disk with
    ``fsync``, so that a power loss too leaves the old or the new file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path),
                               suffix=TEMPORARY_SUFFIX)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_temporaries(path) -> list[Path]:
    """Remove the temporary files that killed :func:`atomic_write` calls left for ``path``."""
    path = Path(path)
    stale = sorted(path.parent.glob(f"{temporary_prefix(path)}*{TEMPORARY_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path) -> None:
    """Flush a file or a folder to disk (folders: where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - folders cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- strict JSON
def json_value(value, nonfinite: str = "null", where: str = "$"):
    """``value`` as plain JSON types: arrays, tuples -> lists, NumPy scalars -> numbers.

    Parameters
    ----------
    value : object
        Nested dicts (keys become strings), lists, tuples, arrays, numbers, strings, None.
    nonfinite : {"null", "refuse"}
        What NaN and infinities become: ``None`` (JSON ``null``) or a ``ValueError`` naming
        where in ``value`` the number sits (``$.key[3]``).
    """
    if nonfinite not in ("null", "refuse"):
        raise ValueError(f"nonfinite must be 'null' or 'refuse', got {nonfinite!r}")
    if isinstance(value, dict):
        return {str(k): json_value(v, nonfinite, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_value(v, nonfinite, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if nonfinite == "refuse":
            raise ValueError(f"{value} at {where} has no strict-JSON form")
        return None
    return value


def write_json(path, value, nonfinite: str = "null", indent: int | None = 1) -> None:
    """Write ``value`` as strict JSON (:func:`json_value`), atomically."""
    text = json.dumps(json_value(value, nonfinite), indent=indent, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path) -> object:
    """Parse a JSON file; a missing, unreadable or damaged file is an InputError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not readable JSON ({describe_error(err)})") from None


# ----------------------------------------------------------------------------- npz archives
@contextlib.contextmanager
def open_npz(path):
    """``np.load(path, allow_pickle=False)`` of an ``.npz`` archive (no object arrays, so no
    pickle is ever run), closed on leaving, also when the archive turns out to be damaged
    (``np.load`` leaks its handle when the zip directory cannot be read).

    Raises
    ------
    ValueError
        If the file is a single ``.npy`` array or not an archive (what to do is the caller's).
    """
    with open(path, "rb") as fh:
        archive = np.load(fh, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            yield archive


# ----------------------------------------------------------------------------- posterior.nc
def quiet_arviz():
    """``import arviz`` without its refactoring FutureWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def read_netcdf(path, groups=("posterior",), attrs=()):
    """Open a posterior.nc with ArviZ, loaded into memory (no file handle stays open).

    Parameters
    ----------
    path : str or Path
    groups : sequence of str
        Groups the file must hold (e.g. ``posterior``).
    attrs : sequence of str
        Attributes the file must hold (e.g. ``config``).

    Raises
    ------
    InputError
        Naming the file: missing, not HDF5/netCDF, truncated or damaged (any error of the
        HDF5/netCDF layer), or without the required groups and attributes.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file")
    az = quiet_arviz()
    failure = None
    with _quiet_half_open_files():
        try:
            with warnings.catch_warnings(), az.rc_context(rc={"data.load": "eager"}):
                warnings.simplefilter("ignore", FutureWarning)
                idata = az.from_netcdf(path, engine="h5netcdf")
        except Exception as err:  # noqa: BLE001 - any failure of an untrusted file is bad input
            failure = describe_error(err)  # raised below, once the half-open file is gone
    if failure is not None:
        raise InputError(f"{path} is damaged or not a posterior.nc written by widebayes "
                         f"({failure})")
    missing = [g for g in groups if g not in idata.groups()]
    missing += [f"attribute {a!r}" for a in attrs if a not in idata.attrs]
    if missing:
        raise InputError(f"{path} is not a posterior.nc written by widebayes (no "
                         f"{', '.join(missing)})")
    return idata


@contextlib.contextmanager
def _quiet_half_open_files():
    """Silence the error that an ``h5netcdf.File`` whose opening failed raises when it is
    collected (its ``close`` reads attributes the failed constructor never set; Python would
    print that as a traceback after the command's one line). The opening's own error is what is
    reported. Collects such objects before leaving."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not getattr(unraisable.object, "__module__", "").startswith("h5netcdf"):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = previous


def describe_error(err: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
