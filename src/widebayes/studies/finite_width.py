"""Deep linear networks at finite width, exactly, against the N -> inf theory (issue 17, item 5).

For a deep linear experiment (any depth, lazy or non-lazy readout) this prints, per width N, how
far the exact finite-N posterior moments (:func:`widebayes.theory.finite_width.
deep_linear_posterior_moments`: the Wishart chain of the overlaps, sampled by NUTS) lie from the
N -> inf theory of ``widebayes theory`` (the analog code for gamma = 1, BPKR's mean kernels for
gamma = 1/2): relative Frobenius offsets of ``<a a^T>``, of every layer's mean kernel and of its
task block ``Q^T K Q`` (Q an orthonormal basis of the targets), and each kernel's bulk (its trace
off the task span).  These are the numbers a sampled run should reproduce at that width::

    python -m widebayes.studies.finite_width coding-linear --set network.depth=3 --widths 50 100 200

The first argument is a preset name or an experiment file; ``--set`` overrides as in
``widebayes sample``.  Bad input (a nonlinear activation, tied weights, another model) is one line
and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from widebayes.activations import get_activation
from widebayes.diagnostics.kernels import relative_difference
from widebayes.errors import InputError


def check_deep_linear(exp):
    """The exact result needs independent Gaussian layers of a linear network_prior."""
    if exp.model != "network_prior":
        raise InputError(f"the exact finite-width result covers network_prior, not {exp.model!r}",
                         key="network.model")
    if not get_activation(exp.spec.activation).is_linear:
        raise InputError(f"the exact finite-width result is for linear networks, not "
                         f"{exp.spec.activation!r}", key="network.activation")
    if exp.spec.tied_weights:
        raise InputError("tied weights break the Wishart chain (layers are not independent)",
                         key="network.tied_weights")
    if exp.frozen:
        raise InputError("frozen blocks are not covered by the exact finite-width result",
                         key="network.trainable")


def moments_of(exp, **kwargs):
    """Exact finite-N moments of a deep linear experiment."""
    from widebayes.theory.finite_width import deep_linear_posterior_moments

    check_deep_linear(exp)
    X = exp.data.X_train
    return deep_linear_posterior_moments(X @ X.T / X.shape[1], exp.data.Y_train, exp.spec.depth,
                                         exp.spec.width, exp.T, exp.spec.layer_variances,
                                         exp.spec.sigma_a2, exp.gamma, **kwargs)


def offsets(exp, moments, theory: dict) -> dict:
    """Relative offsets of the exact finite-N moments from the N -> inf theory, and the bulks."""
    Q = np.linalg.qr(exp.data.Y_train)[0]
    K_th = np.asarray(theory["kernel_train"])
    out = {"width": exp.spec.width, "U": relative_difference(moments.readout_second_moment,
                                                  np.asarray(theory["readout_second_moment"]))}
    for layer in range(1, exp.spec.depth + 1):
        K = moments.kernels[layer]
        out[f"K{layer}"] = relative_difference(K, K_th[layer])
        out[f"task{layer}"] = relative_difference(Q.T @ K @ Q, Q.T @ K_th[layer] @ Q)
        out[f"bulk{layer}"] = float(np.trace(K) - np.trace(Q.T @ K @ Q))
        out[f"bulk{layer}_theory"] = float(np.trace(K_th[layer]) - np.trace(Q.T @ K_th[layer] @ Q))
    out.update(ess=moments.ess, divergences=moments.divergences)
    return out


def main(argv=None) -> int:
    from widebayes.config import apply_overrides, load_toml, resolve
    from widebayes.experiment import build_experiment
    from widebayes.models.presets import PRESETS, preset
    from widebayes.theory.predict import predictions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="a preset name or an experiment file")
    parser.add_argument("--widths", type=int, nargs="+", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--samples", type=int, default=1000, help="NUTS draws per chain of the overlaps")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        cfg = preset(args.experiment) if args.experiment in PRESETS else load_toml(args.experiment)
        cfg = apply_overrides(cfg, args.set)
        rows = []
        for width in args.widths:
            cfg.setdefault("network", {})["width"] = width
            exp = build_experiment(resolve(cfg))
            row = offsets(exp, moments_of(exp, num_samples=args.samples), predictions(exp))
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
