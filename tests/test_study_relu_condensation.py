"""The ReLU condensation study (``widebayes.studies.relu_condensation``) on planted outliers."""

import arviz as az
import numpy as np
import pytest

from widebayes.studies.relu_condensation import analyse, ratio_given_active


def test_ratio_given_active_is_the_best_negative_part():
    """phi = (1, 0) with anticorrelated inputs: the best v is (1, -0.8) (grid over v_2 <= 0)."""
    C0 = np.array([[1.0, -0.8], [-0.8, 1.0]])
    Ci = np.linalg.inv(C0)
    Lam = np.array([[2.0], [1.0]])
    ratio, v = ratio_given_active([1.0, 0.0], Lam, np.linalg.cholesky(Ci).T, 0.5)
    w = np.linspace(-3.0, 0.0, 30_001)
    grid = 0.5 * 4.0 / (Ci[0, 0] + 2 * Ci[0, 1] * w + Ci[1, 1] * w**2)
    assert ratio == pytest.approx(grid.max(), rel=1e-6)
    np.testing.assert_allclose(v, [1.0, -0.8], atol=1e-6)


def _planted(seed=0):
    """Two chains, three equal draws each: N = 20 bulk neurons and one outlier per chain coding class 0
    (chain 0) or class 1 (chain 1), its readout sigma_a^2 Lambda^T phi."""
    rng = np.random.default_rng(seed)
    P, N, m, T, sigma_a2 = 6, 20, 2, 0.1, 1.0 / 6
    labels = np.array([0, 0, 0, 1, 1, 1])
    X = np.eye(P) + 0.1 * rng.standard_normal((P, P))
    Y = np.where(labels[:, None] == np.arange(m), 1.0, -0.5)
    f = Y - T * rng.standard_normal((P, m))
    Lam = (Y - f) / T
    a = 0.05 * rng.standard_normal((2, 1, N, m))
    phi = np.abs(0.3 * rng.standard_normal((2, 1, N, P)))
    for c, cls in ((0, 0), (1, 1)):
        phi[c, 0, 0] = np.where(labels == cls, 5.0, 0.0)
        a[c, 0, 0] = sigma_a2 * Lam.T @ phi[c, 0, 0]
    a, phi = np.repeat(a, 3, axis=1), np.repeat(phi, 3, axis=1)
    config = f'[network]\nactivation = "relu"\ntemperature = {T}\nsigma_a2 = {sigma_a2}\nsigma_w2 = 1.0\n'
    return az.InferenceData(
        posterior=az.dict_to_dataset({"a": a, "f_train": np.broadcast_to(f, (2, 3, P, m))},
                                     attrs={"config": config}),
        representations=az.dict_to_dataset({"phi_L": phi}),
        observed_data=az.dict_to_dataset({"X_train": X * np.sqrt(P), "y_train": Y, "labels_train": labels},
                                         default_dims=[]),
    ), N


def test_analyse_finds_the_planted_outliers():
    idata, N = _planted()
    result = analyse(idata, threshold=30.0)
    assert [(o.chain, o.neuron) for o in result.outliers] == [(0, 0), (1, 0)]
    assert all(o.stationarity < 1e-6 for o in result.outliers)
    a = idata.posterior.a.values
    np.testing.assert_allclose(result.mass_per_class[0], [np.sum(a[0, 0, 0] ** 2) / N, 0.0])
    np.testing.assert_allclose(result.mass_per_class[1], [0.0, np.sum(a[1, 0, 0] ** 2) / N])
    np.testing.assert_allclose(result.count, [1.0, 1.0])
    np.testing.assert_allclose(result.outlier_square[:, 1], [np.sum(a[c, 0, 0] ** 2) for c in range(2)])
    assert np.argmax(result.outliers[0].class_means) == 0 and np.argmax(result.outliers[1].class_means) == 1
    assert all(lam >= max(o.ratio for o in result.outliers if o.chain == c) - 1e-9
               for c, lam in enumerate(result.margin))
