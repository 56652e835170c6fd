"""Layer-resolved kernels and representational geometry of lazy networks (perspective Figs. 6-7).

The perspective ("From Mean Kernels to Representational Geometry", Fig. 7) computes the signal
``||dx0||^2`` and the dimension ``D_a`` (its Eq. 3) of the digit manifolds at every hidden layer
from the mean layer kernels (its Eq. 15) and from the NNGP kernels (its Eq. 13), on MNIST test
inputs; Fig. 6 shows the kernels themselves (A-B: eight digits, one hidden ReLU layer, sigma = 0.2;
D: L = 4 ReLU trained on four digits plus an even/odd output, layers 2 and 4).

Here every kernel is a kernel of the joint training + test inputs:

- ``nngp``: the NNGP recursion (``N -> inf``);
- ``perturbative``: kernel adaptation at O(1/N), fixed P (THEORY.md 3.5.4,
  :func:`widebayes.theory.kernel_adaptation.solve_kernels`), test inputs added to the joint kernel
  without a likelihood (exact in the field theory);
- ``saddle``: the rate function's mode (Monte Carlo fixed point; minutes at P ~ 100);
- ``linear_mean``: the exact posterior-mean kernels of deep linear networks (BPKR with cross
  kernels, THEORY.md 2.5);
- ``bpkr_heuristic``: the perspective's Eq. 15 for nonlinear networks, the NNGP bulk plus the
  deep-linear BPKR spikes (:func:`widebayes.theory.bpkr.heuristic_layer_kernels`; identical to
  ``linear_mean`` for linear networks);
- ``samples``: posterior-mean kernels from a sampled run (``[sampler] store_all_layers = true``).

Geometry (THEORY.md 6.1c, :func:`widebayes.diagnostics.geometry.geometry_from_kernels`): per layer
the signal ``||dx0||^2 / R_a^2`` averaged over ordered class pairs ``a != b`` and the
participation ratio ``D_a`` averaged over classes, with their standard deviations over
pairs/classes (the perspective's error bars).  The SI with the paper's sizes is not available: the
parameters here (P per digit, N, T) are our choice, stated where used.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widebayes.diagnostics.geometry import geometry_from_kernels
from widebayes.theory.bpkr import heuristic_layer_kernels, solve_U
from widebayes.theory.gp import as_2d
from widebayes.theory.kernel_adaptation import solve_kernels
from widebayes.theory.nngp import input_kernel

METHODS = ("nngp", "perturbative", "saddle", "linear_mean", "bpkr_heuristic")


class LayerGeometry(NamedTuple):
    """Signal and dimension per layer ``l = 0..L`` (layer 0: the inputs).

    Attributes
    ----------
    signal, signal_sd : ndarray (L+1,)
        Mean and standard deviation over ordered class pairs of ``||dx0||^2 / R_a^2``.
    dimension, dimension_sd : ndarray (L+1,)
        Mean and standard deviation over classes of the participation ratio ``D_a``.
    """

    signal: np.ndarray
    signal_sd: np.ndarray
    dimension: np.ndarray
    dimension_sd: np.ndarray


def layer_geometry(K, labels) -> LayerGeometry:
    """Signal and dimension of every layer from layer kernels ``K (L+1, n, n)`` on inputs ``labels``.

    ``D_a`` of a pair depends on class ``a`` only, so the class mean is the mean over the rows of the
    pair matrix; the signal is averaged over every ordered pair (``||dx0||^2 / R_a^2`` is not
    symmetric in a, b).  Classes with fewer than two inputs (no radius) are left out.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, classes[counts >= 2])
    if np.unique(labels[keep]).size < 2:
        raise ValueError("geometry needs two classes with at least two inputs each")
    geom, _ = geometry_from_kernels(np.asarray(K)[..., keep, :][..., keep], labels[keep])
    C = geom.dist2.shape[-1]
    off = ~np.eye(C, dtype=bool)
    signal = geom.dist2[..., off]
    dim = np.nanmean(geom.Da, axis=-1)   # (L+1, C): one value per class
    return LayerGeometry(signal.mean(-1), signal.std(-1), dim.mean(-1), dim.std(-1))


def joint_layer_kernels(X_train, Y_train, X_test, activation, g, width, T, method, **solver) -> np.ndarray:
    """Layer kernels ``K_0 .. K_L`` on the joint inputs ``[X_train; X_test]``, shape (L+1, n, n).

    ``g = [sigma_1^2, ..., sigma_L^2, sigma_a^2]``; ``method`` one of :data:`METHODS`
    (:func:`widebayes.theory.kernel_adaptation.solve_kernels`, whose test-point extension gives the
    test and cross blocks); ``solver`` goes to it (``num_samples``, ``seed``, ...).
    """
    X = np.concatenate([np.asarray(X_train), np.asarray(X_test)]) if X_test is not None else X_train
    if method == "bpkr_heuristic":
        nngp = solve_kernels(input_kernel(X), Y_train, activation, g, width, T, "nngp").layer_kernels
        P, L = len(Y_train), len(g) - 1
        U = solve_U(nngp[-1][:P, :P], Y_train, L, width, T, 1.0, g[-1]).U
        return heuristic_layer_kernels(nngp, P, as_2d(Y_train), U, width, T, g[:-1], g[-1])
    return np.asarray(solve_kernels(input_kernel(X), Y_train, activation, g, width, T, method,
                                    **solver).layer_kernels)


def even_odd_targets(labels, y_plus=1.0, y_minus=0.0) -> np.ndarray:
    """Perspective Fig. 6D's targets: one-hot of the classes in ``labels`` plus one even/odd output.

    Columns ``0..k-1``: ``y_plus`` at the input's class rank, ``y_minus`` elsewhere; column ``k``:
    ``y_plus`` for an even digit, ``y_minus`` for an odd one.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    onehot = np.where(labels[:, None] == classes[None, :], y_plus, y_minus)
    even = np.where(labels % 2 == 0, y_plus, y_minus)[:, None]
    return np.concatenate([onehot, even], axis=1).astype(np.float64)


def test_block(K, num_train: int) -> np.ndarray:
    """The test x test block of joint kernels ``(..., n, n)`` whose first ``num_train`` are training."""
    return np.asarray(K)[..., num_train:, num_train:]


class GeometryComparison(NamedTuple):
    """Perspective Fig. 7 for one network: :class:`LayerGeometry` per kernel source (dict key)."""

    activation: str
    geometry: dict
    inputs: str


def geometry_comparison(X_train, Y_train, X_test, labels_test, activation, depth, sigma2, width, T,
                        methods=("nngp", "perturbative"), on="test", **solver) -> GeometryComparison:
    """Signal and dimension per layer for each theory kernel in ``methods`` (perspective Fig. 7).

    ``sigma2``: one variance for every weight (hidden and readout; the perspective's single
    sigma^2), or the list ``[sigma_1^2, ..., sigma_L^2, sigma_a^2]``.  ``on = 'test'`` measures
    the test inputs' manifolds (the perspective's choice), ``'train'`` the training inputs' (then
    ``labels_test`` are the training labels).
    """
    g = list(np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (depth + 1,)))
    P = len(X_train)
    out = {}
    for method in methods:
        K = joint_layer_kernels(X_train, Y_train, X_test, activation, g, width, T, method, **solver)
        out[method] = layer_geometry(test_block(K, P) if on == "test" else K[:, :P, :P], labels_test)
    return GeometryComparison(str(activation), out, on)


def monotone(x, increasing=True, rtol=0.0) -> bool:
    """Whether ``x`` rises (falls) at every step by more than ``rtol`` of its value."""
    d = np.diff(np.asarray(x)) * (1 if increasing else -1)
    return bool(np.all(d > rtol * np.abs(np.asarray(x)[:-1])))


def trend(x, rtol=0.01) -> str:
    """'rises', 'falls', 'flat' (every step within ``rtol``) or 'non-monotonic' (up then down, or
    down then up)."""
    x = np.asarray(x, dtype=np.float64)
    d = np.diff(x) / np.abs(x[:-1])
    if np.all(np.abs(d) <= rtol):
        return "flat"
    if np.all(d > -rtol):
        return "rises"
    if np.all(d < rtol):
        return "falls"
    return "non-monotonic"


def run_comparison(view, methods=("nngp", "perturbative"), on="test", **solver) -> GeometryComparison:
    """:func:`geometry_comparison` for a sampled run (a :class:`widebayes.posterior.PosteriorView`)
    at its own data and settings, with the sampled mean kernels' geometry under ``'samples'``
    (``[sampler] store_all_layers = true`` for the hidden layers below the top)."""
    g = [*view.sigma_w2, view.sigma_a2]
    labels = view.labels_test if on == "test" else view.labels_train
    out = geometry_comparison(view.X_train, view.Y_train, view.X_test, labels, view.activation,
                              view.depth, g, view.width, view.T_eff, methods, on, **solver)
    K = view.kernel_test if on == "test" else view.kernel
    return out._replace(geometry={**out.geometry, "samples": layer_geometry(K, labels)})


class LayerKernels(NamedTuple):
    """Kernels of chosen layers on inputs ordered by class (perspective Fig. 6 panels).

    Attributes
    ----------
    layers : list of int
    kernels : dict
        method -> ndarray (len(layers), P, P), rows and columns ordered by ``labels``.
    order : ndarray (P,)
        The input order used.
    labels : ndarray (P,)
        The labels in that order.
    """

    layers: list
    kernels: dict
    order: np.ndarray
    labels: np.ndarray


def layer_kernels(X, Y, labels, activation, depth, sigma2, width, T, layers,
                  methods=("nngp", "bpkr_heuristic"), **solver) -> LayerKernels:
    """Training-input kernels of ``layers`` by each theory in ``methods``, ordered by class.

    Perspective Fig. 6A-B: eight digits, ``depth = 1``, ``sigma2 = 0.04``, layers ``[1]``; Fig. 6D:
    four digits with :func:`even_odd_targets`, ``depth = 4``, layers ``[2, 4]``.
    """
    g = list(np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (depth + 1,)))
    order = np.argsort(np.asarray(labels), kind="stable")
    ix = np.ix_(list(layers), order, order)
    out = {m: joint_layer_kernels(X, Y, None, activation, g, width, T, m, **solver)[ix] for m in methods}
    return LayerKernels(list(layers), out, order, np.asarray(labels)[order])


class BlockContrast(NamedTuple):
    """Block structure of kernels ``(..., P, P)``, relative to the mean self-similarity ``<K_ii>``.

    Attributes
    ----------
    group : ndarray (...)
        ``(mean K over pairs of different classes in the same group - mean K over pairs in
        different groups) / <K_ii>``: the higher-order (e.g. even vs odd) blocks of Fig. 6D.
    cls : ndarray (...)
        ``(mean K over distinct pairs of one class - mean K over pairs of different classes in the
        same group) / <K_ii>``: the class blocks.
    """

    group: np.ndarray
    cls: np.ndarray


def block_contrast(K, labels, groups) -> BlockContrast:
    """:class:`BlockContrast` of kernels ``K`` on inputs of class ``labels`` in group ``groups``
    (perspective Fig. 6D: ``groups = labels % 2``; one group for all: ``cls`` is own class against
    every other class and ``group`` is NaN)."""
    K, labels, groups = np.asarray(K), np.asarray(labels), np.asarray(groups)
    same_cls = (labels[:, None] == labels[None, :]) & ~np.eye(labels.size, dtype=bool)
    same_grp = (groups[:, None] == groups[None, :]) & (labels[:, None] != labels[None, :])
    diff_grp = groups[:, None] != groups[None, :]
    diag = np.diagonal(K, axis1=-2, axis2=-1).mean(-1)
    def mean(mask):  # NaN where no pair qualifies (e.g. one group)
        return K[..., mask].mean(-1) if mask.any() else np.full(K.shape[:-2], np.nan)
    return BlockContrast((mean(same_grp) - mean(diff_grp)) / diag, (mean(same_cls) - mean(same_grp)) / diag)
