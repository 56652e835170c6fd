"""Sweeps: one experiment per point of a grid (or zip) of config values, run serially or on Ray.

``widebayes sweep SWEEP.toml --out DIR`` reads the sweep file (:mod:`.spec`), runs every point
not yet done (:mod:`.run`, one folder each) with an executor (:mod:`.executors`: Ray tasks or
this process), and writes the tidy table (:mod:`.table`, quantities from :mod:`.quantities`) and
one figure per quantity (:mod:`.figures`); :mod:`.driver` ties them together.
"""

from widebayes.sweep.driver import SweepResult, dry_run_lines, run_sweep, summary_lines
from widebayes.sweep.executors import RayExecutor, SerialExecutor, make_executor
from widebayes.sweep.spec import Point, SweepSpec, load_sweep

__all__ = ["Point", "RayExecutor", "SerialExecutor", "SweepResult", "SweepSpec", "dry_run_lines",
           "load_sweep", "make_executor", "run_sweep", "summary_lines"]
