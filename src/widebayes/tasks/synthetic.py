"""Synthetic tasks, drawn from the seed: ``orthogonal`` (the papers' toy task) and ``xor``."""

from __future__ import annotations

import numpy as np

from widebayes.errors import InputError
from widebayes.tasks.common import block_labels, check_real, class_counts, input_dim, num_classes, rng

EXTRAS = {
    "orthogonal": {"input_dim": 120, "num_classes": 2},
    "xor": {"input_dim": 10, "num_classes": 2, "separation": 0.9, "noise": 0.45,
            "normalize": False, "targets": "binary", "y_minus": -1.0},
}


# ----------------------------------------------------------------------------- orthogonal


def orthogonal(cfg: dict):
    """Orthonormal rows scaled to ``x_mu . x_nu / N0 = delta_mu_nu``, train and test together.

    QR of an ``(N0, P + P_test)`` Gaussian matrix; classes in blocks (``class_ratios``, the
    papers' toy task) or drawn uniformly at random (coding-schemes paper, toy task).
    """
    k, N0 = num_classes(cfg), input_dim(cfg)
    P, P_test = cfg["num_train"], cfg["num_test"]
    check_orthogonal_sizes(P, P_test, N0)
    Q, _ = np.linalg.qr(rng(cfg, "inputs").standard_normal((N0, P + P_test)))
    X = np.sqrt(N0) * Q.T
    return X[:P], _labels(cfg, k, P, "labels"), X[P:], _labels(cfg, k, P_test, "test_labels"), k


def check_orthogonal_sizes(P: int, P_test: int, N0: int) -> None:
    """P + P_test orthogonal inputs need ``P + P_test <= N0``."""
    if P + P_test > N0:
        raise InputError(f"the orthogonal task needs num_train + num_test <= input_dim, got "
                         f"{P} + {P_test} > {N0}", key="task.input_dim")


def _labels(cfg: dict, k: int, total: int, role: str) -> np.ndarray:
    """Block labels from ``class_ratios``, else uniform random labels from the role's stream."""
    if cfg["class_ratios"] is not None:
        return block_labels(cfg["class_ratios"], total)
    return rng(cfg, role).integers(k, size=total).astype(np.int64)


# ----------------------------------------------------------------------------- xor


def xor(cfg: dict):
    """Four Gaussian clusters: ``+-mu1`` (class 0), ``+-mu2`` (class 1), ``N(0, noise^2)`` noise.

    ``mu1 = separation sqrt(N0) e1``, ``mu2 = separation sqrt(N0) e2`` (Refinetti et al. 2021),
    so ``|x|^2 / N0 ~ separation^2 + noise^2``. Counts are equal per cluster where possible.
    """
    k, N0 = num_classes(cfg), input_dim(cfg)
    if N0 < 2:
        raise InputError(f"xor needs input_dim >= 2, got {N0}", key="task.input_dim")
    sep, noise = check_real(cfg, "separation", 0.0), check_real(cfg, "noise", 0.0)
    mu = sep * np.sqrt(N0)
    means = np.zeros((4, N0))
    means[0, 0], means[1, 0], means[2, 1], means[3, 1] = mu, -mu, mu, -mu
    train = _xor_clusters(cfg, cfg["num_train"], means, noise, "inputs")
    test = _xor_clusters(cfg, cfg["num_test"], means, noise, "test_inputs")
    return (*train, *test, k)


def _xor_clusters(cfg: dict, total: int, means: np.ndarray, noise: float, role: str):
    """``total`` points: class blocks, each split in its ``+mu`` and ``-mu`` clusters."""
    ratios = cfg["class_ratios"] if cfg["class_ratios"] is not None else np.array([0.5, 0.5])
    per_class = class_counts(ratios, total)
    per_cluster = np.stack([(per_class + 1) // 2, per_class // 2], axis=1).ravel()
    cluster = np.repeat(np.arange(4), per_cluster)
    X = means[cluster] + noise * rng(cfg, role).standard_normal((total, means.shape[1]))
    return X, (cluster // 2).astype(np.int64)
