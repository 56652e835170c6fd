"""Readers of data files: the security boundary between a user's files and the program.

Nothing here executes code from a file:

- IDX (MNIST) files are parsed byte by byte (:func:`read_idx`);
- CIFAR-10 python batches are pickles, read with :class:`RestrictedUnpickler`, which builds only
  dicts, lists, bytes, strings, numbers and NumPy arrays and refuses every other global (so a
  pickle that would call ``os.system`` is refused, not run);
- ``.npz`` archives are read with ``allow_pickle=False`` (object arrays refused).

Every failure, whatever the file holds (truncated, damaged, foreign, hostile), is one
:class:`~widebayes.errors.InputError` naming the file and the config key that pointed to it.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zipfile
import zlib

import numpy as np

from widebayes.errors import InputError
from widebayes.io import open_npz

try:  # NumPy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError)


def _open(path: str):
    """A binary handle on ``path``, decompressed when the name ends with ``.gz``."""
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


# ----------------------------------------------------------------------------- IDX


def read_idx(path: str, ndim: int, key: str = "task.data_dir") -> np.ndarray:
    """An unsigned-byte IDX array: magic ``00 00 08 ndim``, big-endian int32 sizes, the data.

    (LeCun et al., the MNIST database file format.) The file may be gzip-compressed (``.gz``).
    """
    try:
        with _open(path) as f:
            raw = f.read()
    except _READ_ERRORS as err:
        raise InputError(f"cannot read {path}: {err}", key=key) from None
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes([0, 0, 8, ndim]):
        raise InputError(f"{path} is not an unsigned-byte IDX file with {ndim} dimension(s) "
                         f"(bad magic number)", key=key)
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if min(shape) < 0 or data.size != math.prod(shape):
        raise InputError(f"{path} holds {data.size} bytes of data, its header says {shape}",
                         key=key)
    return data.reshape(shape)


# ----------------------------------------------------------------------------- pickles

SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("_codecs").encode,  # bytes in protocol-2 pickles
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, lists, bytes, str, numbers and numpy arrays."""

    def find_class(self, module: str, name: str):
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_pickle(path: str, key: str = "task.data_dir") -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (never executes its content)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any failure of an untrusted file is bad input
        raise InputError(f"{path} is not a plain CIFAR-10 batch, refused: {err}",
                         key=key) from None


CIFAR_RAW_DIM = 3072
CIFAR_NUM_CLASSES = 10


def read_cifar_batch(path: str, key: str = "task.data_dir") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a dict with ``data`` uint8 ``(n, 3072)`` and ``labels``
    (n integers in ``[0, 10)``), read with :func:`load_pickle`."""
    batch = load_pickle(path, key)
    if not isinstance(batch, dict):
        raise InputError(f"{path} does not hold a dict", key=key)
    data, labels = (batch.get(k.encode(), batch.get(k)) for k in ("data", "labels"))
    try:
        labels = np.asarray(labels if labels is not None else [])
    except (ValueError, TypeError):
        labels = np.zeros((0, 0))
    ok = (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
          and data.shape[1] == CIFAR_RAW_DIM and labels.shape == (len(data),)
          and (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)))
    if not ok:
        raise InputError(f"{path} needs 'data' uint8 (n, 3072) and 'labels' (n integers)",
                         key=key)
    if labels.size and (labels.min() < 0 or labels.max() >= CIFAR_NUM_CLASSES):
        raise InputError(f"{path} has labels outside [0, {CIFAR_NUM_CLASSES})", key=key)
    return data, labels.astype(np.int64)


# ----------------------------------------------------------------------------- npz


def read_npz(path: str, key: str = "task.path", names=None) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive (all, or those in ``names``), ``allow_pickle=False``."""
    try:
        with open_npz(path) as archive:
            return {name: archive[name] for name in archive.files
                    if names is None or name in names}
    except Exception as err:  # noqa: BLE001 - not an npz, object arrays, corrupt file
        raise InputError(f"cannot read {path} as a plain .npz archive: {err}",
                         key=key) from None


def npz_shapes(path: str, key: str = "task.path") -> dict[str, tuple[tuple, int]]:
    """``name -> (shape, itemsize)`` of the arrays of a ``.npz`` archive, from their headers
    (the data is not read, so an archive that would not fit in memory is sized safely)."""
    try:
        shapes = {}
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                shapes[name.removesuffix(".npy")] = (tuple(shape), dtype.itemsize)
        return shapes
    except Exception as err:  # noqa: BLE001 - any failure of an untrusted file is bad input
        raise InputError(f"cannot read {path} as a plain .npz archive: {err}",
                         key=key) from None


# ----------------------------------------------------------------------------- CSV


def read_csv_gz(path: str, key: str) -> np.ndarray:
    """A gzip-compressed CSV table of integers."""
    try:
        with gzip.open(path, "rt") as f:
            return np.loadtxt(f, delimiter=",", dtype=np.int64)
    except _READ_ERRORS as err:
        raise InputError(f"cannot read {path}: {err}", key=key) from None
