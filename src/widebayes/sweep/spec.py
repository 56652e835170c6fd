"""A sweep file: a base experiment and ``[sweep]`` axes, read into validated points.

The file holds a base experiment, either inline (``[task]``, ``[network]``, ``[sampler]``) or as
``base = "path.toml"`` relative to the sweep file (inline tables then override the base file's,
key by key), and a ``[sweep]`` table::

    base = "experiment.toml"
    [sweep]
    mode = "grid"                     # or "zip"
    "network.width" = [50, 100, 200]  # quoted dotted keys; unquoted dotted keys work too
    "sampler.seed" = [1, 2]

``mode = "grid"`` (the default) runs the Cartesian product of the axes, the first axis outermost;
``"zip"`` runs the i-th values of every axis together (the lists must have one length).  Every
point's config goes through :func:`widebayes.config.resolve` before anything runs; a bad axis
(an unknown key, an empty list, zip lists of different lengths, a value that ``resolve`` refuses)
is an :class:`~widebayes.errors.InputError` that names the axis.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import NamedTuple

from widebayes.config import load_toml, resolve
from widebayes.errors import InputError

SECTIONS = ("task", "network", "sampler")
MODES = ("grid", "zip")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
MAX_SLUG = 120


class Point(NamedTuple):
    """One experiment of a sweep: the swept values, its folder name and its resolved config."""

    index: int
    values: tuple  # ((axis key, value), ...) in axis order
    slug: str
    resolved: dict


class SweepSpec(NamedTuple):
    """A parsed sweep file: its axes (key, values) in file order, the mode and the points."""

    path: Path
    text: str
    mode: str
    axes: tuple
    points: tuple

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.axes]


def load_sweep(path) -> SweepSpec:
    """Read and validate a sweep file (see the module docstring); raises InputError naming the axis."""
    path = Path(path)
    raw = load_toml(path)
    base = base_experiment(raw, path.parent)
    mode, axes = sweep_axes(raw.get("sweep"))
    points = tuple(make_points(base, axes, mode))
    return SweepSpec(path, path.read_text(), mode, axes, points)


def base_experiment(raw: dict, folder: Path) -> dict:
    """The base config: ``base = "file.toml"`` (relative to ``folder``) overridden by inline tables."""
    unknown = set(raw) - {"base", "sweep", *SECTIONS}
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown)} in a sweep file; allowed: base, sweep, "
                         f"{', '.join(SECTIONS)}", key=sorted(unknown)[0])
    base = {}
    if "base" in raw:
        if not isinstance(raw["base"], str):
            raise InputError("must be the path of an experiment TOML file", key="base")
        base = load_toml(folder / raw["base"])
    for section in SECTIONS:
        if section in raw:
            if not isinstance(raw[section], dict):
                raise InputError("must be a table", key=section)
            base[section] = {**base.get(section, {}), **raw[section]}
    return base


def sweep_axes(table) -> tuple[str, tuple]:
    """``(mode, ((key, values), ...))`` from the ``[sweep]`` table, with the structural checks."""
    if not isinstance(table, dict):
        raise InputError("a sweep file needs a [sweep] table of axes, e.g. \"network.width\" = [50, 100]",
                         key="sweep")
    table = dict(table)
    mode = table.pop("mode", "grid")
    if mode not in MODES:
        raise InputError(f'must be "grid" or "zip", got {mode!r}', key="sweep.mode")
    axes = tuple(flatten(table))
    if not axes:
        raise InputError("no axes: add e.g. \"network.width\" = [50, 100]", key="sweep")
    for key, values in axes:
        check_axis(key, values)
    if mode == "zip" and len({len(v) for _, v in axes}) > 1:
        lengths = ", ".join(f"{k} has {len(v)}" for k, v in axes)
        raise InputError(f"zip mode needs lists of one length ({lengths})", key=f"sweep.{axes[0][0]}")
    return mode, axes


def flatten(table: dict, prefix: str = ""):
    """``{"network": {"width": [..]}}`` and ``{"network.width": [..]}`` both give ("network.width", [..])."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def check_axis(key: str, values) -> None:
    """An axis is ``section.key`` (section one of task/network/sampler) with a non-empty list."""
    parts = key.split(".")
    if len(parts) < 2 or parts[0] not in SECTIONS or not all(parts):
        raise InputError(f"an axis is a quoted dotted key section.key with section one of {list(SECTIONS)}",
                         key=f"sweep.{key}")
    if not isinstance(values, list):
        raise InputError(f"must be a list of values, got {values!r}", key=f"sweep.{key}")
    if not values:
        raise InputError("empty list: an axis needs at least one value", key=f"sweep.{key}")


def make_points(base: dict, axes: tuple, mode: str) -> list[Point]:
    """Every point of the sweep, resolved; an InputError names the axis (and value) at fault."""
    keys = [key for key, _ in axes]
    combos = zip(*(v for _, v in axes)) if mode == "zip" else itertools.product(*(v for _, v in axes))
    points, seen = [], {}
    for index, combo in enumerate(combos):
        values = tuple(zip(keys, combo))
        cfg = copy.deepcopy(base)
        for key, value in values:
            set_dotted(cfg, key, value)
        slug = point_slug(values)
        if slug in seen:
            raise InputError(f"point {describe(values)} appears twice (points {seen[slug] + 1} and "
                             f"{index + 1})", key=f"sweep.{keys[0]}")
        seen[slug] = index
        points.append(Point(index, values, slug, resolve_point(cfg, values)))
    return points


def set_dotted(cfg: dict, key: str, value) -> None:
    """``cfg["network"]["width"] = value`` for ``key = "network.width"`` (tables made as needed)."""
    *tables, last = key.split(".")
    for name in tables:
        cfg = cfg.setdefault(name, {})
        if not isinstance(cfg, dict):
            raise InputError(f"{name} is not a table in the base experiment", key=f"sweep.{key}")
    cfg[last] = copy.deepcopy(value)


def resolve_point(cfg: dict, values: tuple) -> dict:
    """``resolve(cfg)``; its InputError is re-raised naming the sweep axis it concerns."""
    try:
        return resolve(cfg)
    except InputError as err:
        axis = next((k for k, _ in values if err.key and (err.key == k or err.key.startswith(k + "."))), None)
        reason = str(err)[len(err.key) + 2:] if err.key else str(err)
        if axis is not None:
            raise InputError(f"{reason} (at {describe(values)})", key=f"sweep.{axis}") from None
        raise InputError(f"at point {describe(values)}: {err}") from None


def describe(values: tuple) -> str:
    """``network.width=50 sampler.seed=1`` (one line, for listings and messages)."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values)


def point_slug(values: tuple) -> str:
    """A folder name for a point, ``network.width=50__sampler.seed=1``, safe on every filesystem.

    Characters outside ``[A-Za-z0-9._+-]`` become ``_``; when that (or truncation) loses
    information, 8 hex digits of a hash of the values are appended, so distinct points never share
    a folder.
    """
    exact = "__".join(f"{k}={_text(v)}" for k, v in values)
    slug = "__".join(f"{k}={_SAFE.sub('_', _text(v))}" for k, v in values)
    if slug != exact or len(slug) > MAX_SLUG:
        digest = hashlib.sha1(json.dumps(values).encode()).hexdigest()[:8]
        slug = f"{slug[:MAX_SLUG]}-{digest}"
    return slug


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)
