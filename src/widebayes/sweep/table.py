"""The sweep's tidy table: ``results.csv`` and ``results.nc``, written atomically.

One row per point and quantity; columns: one per swept key (named as the key, e.g.
``network.width``), ``quantity``, ``sampled``, ``mcse`` and one per theory source
(:data:`~widebayes.sweep.quantities.THEORY_COLUMNS`), NaN where a number is absent.  The netCDF
file holds the same numbers as arrays over ``(point, quantity)``, with the point's folder name
and its swept values as coordinates along ``point``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from widebayes.checkpoint import atomic_write
from widebayes.sweep.quantities import THEORY_COLUMNS

NUMBERS = ("sampled", "mcse", *THEORY_COLUMNS)


def table_rows(spec, finished: dict) -> list[dict]:
    """The table's rows, points in sweep order: ``finished`` maps a point's slug to its rows."""
    rows = []
    for point in spec.points:
        for row in finished.get(point.slug, []):
            rows.append({**{k: cell_value(v) for k, v in point.values}, "quantity": row["quantity"],
                         **{col: _float(row.get(col)) for col in NUMBERS}})
    return rows


def cell_value(value):
    """A swept value as a table cell: numbers and strings as they are, lists and tables as JSON."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _float(value) -> float:
    return math.nan if value is None else float(value)


def write_csv(rows: list[dict], keys: list[str], path) -> Path:
    """``results.csv``: floats written with ``repr`` (round-trip exact), NaN as ``nan``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*keys, "quantity", *NUMBERS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(buf.getvalue()))
    return Path(path)


def results_dataset(spec, finished: dict):
    """The table as an ``xarray.Dataset`` over (point, quantity) (points that finished only)."""
    import xarray as xr

    points = [p for p in spec.points if p.slug in finished]
    quantities = list(dict.fromkeys(r["quantity"] for p in points for r in finished[p.slug]))
    data = {col: np.full((len(points), len(quantities)), np.nan) for col in NUMBERS}
    where = {q: j for j, q in enumerate(quantities)}
    for i, point in enumerate(points):
        for row in finished[point.slug]:
            for col in NUMBERS:
                data[col][i, where[row["quantity"]]] = _float(row.get(col))
    coords = {"point": [p.slug for p in points], "quantity": quantities}
    for j, key in enumerate(spec.keys):
        coords[key] = ("point", [cell_value(p.values[j][1]) for p in points])
    attrs = {"mode": spec.mode, "axes": json.dumps(spec.keys), "sweep_file": spec.text}
    variables = {col: (("point", "quantity"), v) for col, v in data.items()}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def write_netcdf(ds, path) -> Path:
    """``results.nc`` (h5netcdf), written to a temporary file beside it and renamed."""
    atomic_write(Path(path), lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
    return Path(path)
