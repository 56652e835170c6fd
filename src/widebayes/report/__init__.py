"""``widebayes compare DIR``: samples against theory, as PNG figures, report.json and report.md.

The facade of the report package; every name imported from ``widebayes.report`` before the
package split still works here.  Modules:

- ``build``: the pipeline (:func:`write_report`, :func:`build_report`, :func:`theory_for`);
- ``common``: display limits, relative differences, typed results -> report.json;
- ``coding``: codes per layer, scheme, readout clusters and outliers, code stability;
- ``samples``: figures of single samples (readout, activations, output, traces, preactivations);
- ``kernels``: layer kernels against NNGP and the theory's labelled kernels, kernel adaptation;
- ``predictor``: the predictor on training and test inputs, GP and theory errors;
- ``geometry``: geometry across layers and representational drift;
- ``agreement``: theory against samples, one row per quantity, each naming its theory;
- ``markdown``: report.md and the figure captions;
- the notebook helpers (``cached_posterior``, ``toy_size``) live in :mod:`widebayes.studies.notebook`;
  this facade hands them out for one release.

The posterior.nc schema (reading, writing, the view of a run) is ``widebayes.posterior``;
``Run`` is its ``PosteriorView``.
"""

from widebayes.posterior import PosteriorView, usable_draws, valid_prefix
from widebayes.posterior import load as load_posterior
from widebayes.report.agreement import agreements
from widebayes.report.build import (
    build_report,
    build_sections,
    rebuild_experiment,
    stored_config,
    theory_for,
    write_figures,
    write_report,
)
from widebayes.report.common import (
    AGREE_WITHIN,
    MAX_PREDICTOR_PANELS,
    MAX_SHOWN_INPUTS,
    MAX_SHOWN_NEURONS,
    SPARSE_SHOWN,
    class_bounds,
    jsonable,
    rel_diff,
    write_text,
)
from widebayes.report.markdown import CAPTIONS, markdown

Run = PosteriorView  # the name the report used for a view of a posterior

__all__ = ["AGREE_WITHIN", "CAPTIONS", "MAX_PREDICTOR_PANELS", "MAX_SHOWN_INPUTS", "MAX_SHOWN_NEURONS",
           "SPARSE_SHOWN", "PosteriorView", "Run", "agreements", "build_report", "build_sections",
           "cached_posterior", "class_bounds", "jsonable", "load_posterior", "markdown", "rebuild_experiment",
           "rel_diff", "stored_config", "theory_for", "toy_size", "usable_draws", "valid_prefix",
           "write_figures", "write_report", "write_text"]


def __getattr__(name):  # the notebook helpers moved up to studies/: handed out lazily, for one release
    if name in ("cached_posterior", "toy_size"):
        from widebayes.studies import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
