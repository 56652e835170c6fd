"""The ``posterior.nc`` schema, both ways: written by :func:`to_inferencedata`, read by :func:`load`
and viewed once as a :class:`PosteriorView`.

Groups and dimension names (DESIGN.md, README "posterior.nc"):

* ``posterior``: ``a (chain, draw, neuron, output)``, ``f_train (chain, draw, train, output)``,
  ``f_test (chain, draw, test, output)``;
* ``sample_stats``: ``loss``, ``diverging`` and, for Metropolis-adjusted samplers, ``accept_prob``
  (each ``(chain, draw)``);
* ``representations``: ``phi_L (chain, draw, neuron, train)``, ``phi_L_test``, ``phi_1 ...``
  (and their ``_test``) with ``store_all_layers = true``, ``kernel (chain, layer, train_row,
  train_col)`` with layer 0 the input kernel, ``kernel_test``; with held-out classes
  (``[task] heldout_classes``) ``phi_L_heldout (chain, draw, neuron, heldout)`` (and
  ``phi_1_heldout ...`` with ``store_all_layers``) and ``kernel_heldout (chain, layer,
  heldout_row, heldout_col)``;
* ``observed_data``: ``X_train``, ``y_train``, ``labels_train`` and, with a test set, the same
  for test; with held-out classes ``X_heldout (heldout, input)`` and ``labels_heldout`` (the
  original class numbers);
* attributes: the resolved config as TOML (``config``), ``widebayes_version``, ``seed``,
  ``T_eff``, ``paper_time_per_step``, ``sampler``.

Every read of a ``posterior.nc`` goes through :func:`load`, which calls :func:`read_netcdf`: the
one place that opens the file.
"""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np

from widebayes.errors import InputError

FILE_NAME = "posterior.nc"


def _arviz():
    """ArviZ, imported without its FutureWarning about the coming refactor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


# ----------------------------------------------------------------------------------- writing
_DRAW_DIMS = {
    "a": ("neuron", "output"),
    "f_train": ("train", "output"),
    "f_test": ("test", "output"),
    "loss": (),
    "accept_prob": (),
    "diverging": (),
    "phi_L": ("neuron", "train"),
    "phi_L_test": ("neuron", "test"),
    "phi_L_heldout": ("neuron", "heldout"),
}
_DRAW_DIMS.update({"swap_accept": ("pair",),  # replica exchange: acceptance per neighbour pair
                   "move_accept": (),  # neuron moves: the fraction accepted between two draws
                   # the collapsed readout's Rao-Blackwellised predictor: E and Var of f given W
                   "f_train_rb_mean": ("train", "output"), "f_train_rb_var": ("train",),
                   "f_test_rb_mean": ("test", "output"), "f_test_rb_var": ("test",)})
_GROUP_OF = {"a": "posterior", "f_train": "posterior", "f_test": "posterior", "loss": "sample_stats",
             "accept_prob": "sample_stats", "diverging": "sample_stats", "swap_accept": "sample_stats",
             "move_accept": "sample_stats",
             "f_train_rb_mean": "posterior", "f_train_rb_var": "posterior", "f_test_rb_mean": "posterior",
             "f_test_rb_var": "posterior"}


def _dims_and_group(name: str, ndim: int) -> tuple[tuple, str]:
    """Dimension names and group of a per-draw array: the schema's, ``phi_*`` representations, and
    any other parameter block of a model (posterior, dimensions ``NAME_dim_i``)."""
    if name in _DRAW_DIMS:
        return _DRAW_DIMS[name], _GROUP_OF.get(name, "representations")
    if name.startswith("phi_"):
        inputs = next((s for s in ("test", "heldout") if name.endswith(f"_{s}")), "train")
        return ("neuron", inputs), "representations"
    return tuple(f"{name}_dim_{i}" for i in range(ndim)), "posterior"


def to_inferencedata(result, data, attrs: dict, has_accept: bool = True, constant: dict | None = None):
    """The one conversion to ArviZ: groups and dimension names exactly as DESIGN.md lists them.

    ``result`` is an ``inference.RunResult`` (``draws``: name -> (chain, draw, ...) arrays,
    ``kernels``: ``train`` and optionally ``test`` (chain, layer, P, P)); ``data`` the task's
    Dataset (``X_train``, ``Y_train``, ``labels_train`` and test).  ``constant``: the blocks frozen at
    one prior draw (``[network] trainable``), stored in the ``constant_data`` group (dimensions
    ``NAME_dim_i``).
    """
    import xarray as xr

    az = _arviz()
    groups = {"posterior": {}, "sample_stats": {}, "representations": {}}
    for name, value in result.draws.items():
        if name == "accept_prob" and not has_accept:
            continue
        dims, group = _dims_and_group(name, np.ndim(value) - 2)
        groups[group][name] = (("chain", "draw", *dims), value)
    groups["representations"]["kernel"] = (("chain", "layer", "train_row", "train_col"),
                                           result.kernels["train"])
    for inputs in ("test", "heldout"):
        if inputs in result.kernels:
            groups["representations"][f"kernel_{inputs}"] = (
                ("chain", "layer", f"{inputs}_row", f"{inputs}_col"), result.kernels[inputs])
    groups["observed_data"] = _observed(data)
    if constant:
        groups["constant_data"] = {name: (tuple(f"{name}_dim_{i}" for i in range(np.ndim(x))), x)
                                   for name, x in constant.items()}
    datasets = {g: xr.Dataset(v, attrs=attrs) for g, v in groups.items()}
    return az.InferenceData(attrs=attrs, **datasets)


def _observed(data) -> dict:
    out = {"X_train": (("train", "input"), data.X_train), "y_train": (("train", "output"), data.Y_train),
           "labels_train": (("train",), data.labels_train)}
    if len(data.X_test):
        out.update({"X_test": (("test", "input"), data.X_test), "y_test": (("test", "output"), data.Y_test),
                    "labels_test": (("test",), data.labels_test)})
    if data.X_heldout is not None and len(data.X_heldout):
        out.update({"X_heldout": (("heldout", "input"), data.X_heldout),
                    "labels_heldout": (("heldout",), data.labels_heldout)})
    return out


# ----------------------------------------------------------------------------------- reading
def read_netcdf(path):
    """Open one ``posterior.nc`` as an ``arviz.InferenceData`` (the single place that reads it).

    A damaged or foreign file (not netCDF, truncated, without the posterior and observed data, or
    whose stored config does not parse) is one InputError naming the file (``io.read_netcdf``).
    """
    from widebayes.config import parse_stored
    from widebayes.io import read_netcdf as read

    idata = read(path, groups=("posterior", "observed_data"), attrs=("config",))
    parse_stored(idata.attrs["config"], path)
    return idata


def load(folder):
    """``folder/posterior.nc`` as an InferenceData; a missing file is an InputError."""
    path = Path(folder) / FILE_NAME
    if not path.exists():
        raise InputError(f"no posterior.nc in {folder} (run `widebayes sample ... --out {folder}`)")
    return read_netcdf(path)


def valid_prefix(a) -> np.ndarray:
    """Per chain, the number of leading draws whose readout is finite (a stopped chain is NaN)."""
    ok = np.all(np.isfinite(a), axis=(2, 3))
    return np.where(ok.all(axis=1), ok.shape[1], np.argmin(ok, axis=1))


def usable_draws(a) -> tuple[list[int], int, list[str]]:
    """Chains and number of draws used: chains with at least half the longest valid run, truncated
    to the shortest of those (R-hat needs equal lengths).

    Raises
    ------
    InputError
        When no chain has a finite draw.
    """
    prefix = valid_prefix(np.asarray(a))
    longest = int(prefix.max())
    if longest == 0:
        raise InputError("posterior.nc has no finite draw: every chain stopped before its first "
                         "stored draw (a smaller sampler.step_size may help)")
    chains = [c for c, n in enumerate(prefix) if n >= max(1, longest / 2)]
    num = int(min(prefix[c] for c in chains))
    notes = []
    if len(chains) < len(prefix):
        notes.append(f"chains {sorted(set(range(len(prefix))) - set(chains))} left out (they stopped early)")
    if num < a.shape[1]:
        notes.append(f"only the first {num} of {a.shape[1]} draws used (a chain stopped)")
    return chains, num, notes


class PosteriorView:
    """One posterior.nc read once, restricted to the usable chains and draws (float64 NumPy).

    Attributes
    ----------
    config, attrs : dict
        The stored config (TOML parsed, not resolved again) and the file's attributes.
    chains, num_draws, total_draws, notes
        Chains and draws used (:func:`usable_draws`) and why some were left out.
    activation, width, depth, sigma_w2, sigma_a2, T_eff
        The network's settings; ``sigma_w2`` per hidden layer.
    a, f_train, f_test, loss : ndarray (chain, draw, ...)
        ``f_test`` None without a test set.
    phi : dict layer -> ndarray (chain, draw, neuron, train)
        The stored layers' activations on the training inputs (layer ``depth`` always).
    phi_test, phi_test_lower
        Feature-layer activations on the test inputs (or None) and the lower layers' (dict).
    kernel, kernel_test : ndarray (layer, P, P)
        Layer kernels averaged over the chains used (``kernel_test`` None without a test set).
    phi_heldout : dict layer -> ndarray (chain, draw, neuron, heldout)
        The stored layers' activations on the held-out classes' pool (empty without one).
    kernel_heldout : ndarray (layer, P_heldout, P_heldout) or None
        Layer kernels on the held-out pool averaged over draws and the chains used.
    X_train, Y_train, labels_train, X_test, Y_test, labels_test, num_classes
        The data of ``observed_data`` (test arrays None without a test set).
    X_heldout, labels_heldout
        The held-out pool and its original class numbers (None without held-out classes).
    """

    def __init__(self, idata):
        from widebayes.config import layer_variances

        self.config = tomllib.loads(idata.attrs["config"])
        self.attrs = dict(idata.attrs)
        a = idata.posterior["a"].values
        self.chains, self.num_draws, self.notes = usable_draws(a)
        self.total_draws = a.shape[1]
        net = self.config["network"]
        self.activation, self.width, self.depth = net["activation"], int(net["width"]), int(net["depth"])
        self.sigma_w2, self.sigma_a2 = layer_variances(net), float(net["sigma_a2"])
        self.T_eff = float(self.attrs["T_eff"])
        self._draws(idata)
        self._data(idata.observed_data)

    def take(self, var) -> np.ndarray:
        """A (chain, draw, ...) variable on the chains and draws used."""
        return np.asarray(var.values[self.chains][:, : self.num_draws], dtype=np.float64)

    def _draws(self, idata):
        post, reps = idata.posterior, idata.representations
        self.a, self.f_train = self.take(post["a"]), self.take(post["f_train"])
        self.f_test = self.take(post["f_test"]) if "f_test" in post else None
        self.loss = self.take(idata.sample_stats["loss"])
        self.phi = {layer: self.take(reps[f"phi_{layer}"])
                    for layer in range(1, self.depth) if f"phi_{layer}" in reps}
        self.phi[self.depth] = self.take(reps["phi_L"])
        self.phi_test = self.take(reps["phi_L_test"]) if "phi_L_test" in reps else None
        self.phi_test_lower = {layer: self.take(reps[f"phi_{layer}_test"]) for layer in range(1, self.depth)
                               if f"phi_{layer}_test" in reps}
        mean = lambda name: np.asarray(reps[name].values[self.chains], dtype=np.float64).mean(axis=0)  # noqa: E731
        self.kernel = mean("kernel")
        self.kernel_test = mean("kernel_test") if "kernel_test" in reps else None
        self.phi_heldout = {layer: self.take(reps[name]) for layer in range(1, self.depth + 1)
                            if (name := f"phi_{'L' if layer == self.depth else layer}_heldout") in reps}
        self.kernel_heldout = mean("kernel_heldout") if "kernel_heldout" in reps else None

    def _data(self, obs):
        self.X_train, self.Y_train = obs["X_train"].values, obs["y_train"].values.astype(np.float64)
        self.labels_train = obs["labels_train"].values.astype(int)
        has_test = "X_test" in obs and obs["X_test"].shape[0] > 0
        self.X_test = obs["X_test"].values if has_test else None
        self.Y_test = obs["y_test"].values.astype(np.float64) if has_test else None
        self.labels_test = obs["labels_test"].values.astype(int) if has_test else None
        has_held = "X_heldout" in obs and obs["X_heldout"].shape[0] > 0
        self.X_heldout = obs["X_heldout"].values if has_held else None
        self.labels_heldout = obs["labels_heldout"].values.astype(int) if has_held else None
        labels = [self.labels_train] + ([self.labels_test] if has_test else [])
        self.num_classes = int(max(int(lab.max()) for lab in labels if lab.size)) + 1
