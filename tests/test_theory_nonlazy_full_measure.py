"""The single-neuron measure with fluctuating preactivations (theory/nonlazy/full_measure.py).

For a linear activation every quantity is Gaussian and closed-form: ``log Z(b) = b^T C0 b / 2``,
``E[phi | b] = C0 b``, ``Cov[phi | b] = C0``, so ``log q(a)`` and the mode's Laplace volume are
exact; the HMC chains and the thermodynamic integration must reproduce them within their errors.
"""

import jax
import numpy as np
import pytest

from widebayes.activations import get_activation
from widebayes.theory.nonlazy.full_measure import ChainSettings, code_masses, field_moments, log_partition

CHAINS = ChainSettings(num_chains=32, num_warm=100, num_keep=1000, step_size=0.5, num_integration_steps=5)


def _case(P=6, m=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, 3 * P)) / np.sqrt(3 * P)
    C0 = X @ X.T + 0.1 * np.eye(P)
    return C0, rng.normal(size=(P, m)) * 0.7, rng.normal(size=(3, m))


def test_linear_field_moments_and_log_partition_are_exact():
    act = get_activation("linear")
    C0, Lam, readouts = _case()
    B = readouts @ Lam.T
    mom = field_moments(jax.random.key(0), C0, B, act.phi, act.phi_np, CHAINS)
    np.testing.assert_allclose(mom.mean_phi, B @ C0, atol=0.05)
    for k in range(len(B)):
        cov = mom.second_phi[k] - np.outer(mom.mean_phi[k], mom.mean_phi[k])
        np.testing.assert_allclose(cov, C0, atol=0.08)
    log_z, error = log_partition(jax.random.key(1), C0, B, act.phi, act.phi_np, 4, CHAINS)
    exact = 0.5 * np.einsum("np,pq,nq->n", B, C0, B)
    assert np.all(np.abs(log_z - exact) < 5 * error + 1e-3), (log_z, exact, error)
    assert np.all(error < 0.05)


def test_linear_code_masses_are_the_gaussian_ones():
    act = get_activation("linear")
    C0, Lam, readouts = _case(seed=1)
    sigma_a2 = 0.2
    masses = code_masses(jax.random.key(2), C0, Lam, sigma_a2, act.phi, act.phi_np, readouts,
                         np.array([0, 0, 0, 1, 1, 1]), 0.0, num_t=4, chains=CHAINS)
    G = Lam.T @ C0 @ Lam
    log_q = (-0.5 * np.sum(readouts**2, axis=1) / sigma_a2
             + 0.5 * np.einsum("kr,rs,ks->k", readouts, G, readouts))
    log_volume = -0.5 * np.linalg.slogdet(np.eye(2) / sigma_a2 - G)[1]
    assert np.all(np.abs(masses.log_q - log_q) < 5 * masses.log_z_error + 1e-3)
    np.testing.assert_allclose(masses.log_mass - masses.log_q, log_volume, atol=0.02)
    np.testing.assert_allclose(masses.fractions.sum(), 1.0)



def test_linear_mode_moments_are_the_gaussian_ones_and_compile_once():
    """Linear phi: q(a, z) is Gaussian, ``Sigma_a = (I / sigma_a^2 - Lambda^T C0 Lambda)^-1``,
    ``E[a] = 0``, ``E[z a^T] = C0 Lambda Sigma_a``, ``E[z z^T] = C0 + C0 Lambda Sigma_a Lambda^T C0``.
    A second field of the same shapes reuses the first call's compilation."""
    from widebayes.theory.nonlazy.full_measure import _gibbs_fn, mode_moments

    act = get_activation("linear")
    C0, Lam, _ = _case(seed=1)
    sigma_a2 = 0.2
    chains = ChainSettings(num_chains=16, num_warm=100, num_keep=1500, step_size=0.5, num_integration_steps=5)
    for k, lam in enumerate([Lam, 0.9 * Lam]):
        mom = mode_moments(jax.random.key(3 + k), C0, lam, sigma_a2, act.phi, act.phi_np, np.zeros((1, 2)),
                           chains)
        Sigma_a = np.linalg.inv(np.eye(2) / sigma_a2 - lam.T @ C0 @ lam)
        cross = C0 @ lam @ Sigma_a
        np.testing.assert_allclose(mom.readout[0], 0.0, atol=0.05)
        np.testing.assert_allclose(mom.mean_t[0].reshape(cross.shape), cross, atol=0.02)
        np.testing.assert_allclose(mom.second_phi[0], C0 + cross @ lam.T @ C0, atol=0.08)
    assert _gibbs_fn(act.phi, chains, 2, False)._cache_size() == 1


def test_linear_measure_draws_carry_the_gaussian_moments():
    """The weighted draws of the full measure (what the test-input predictions read) have the Gaussian
    moments of the linear case: ``E[z a^T] = C0 Lambda Sigma_a`` and ``E[a a^T] = Sigma_a``; the
    weights sum to one over the modes with mass."""
    from widebayes.theory.nonlazy.full_measure import FieldState, ModeMoments, measure_draws

    act = get_activation("linear")
    C0, Lam, _ = _case(seed=1)
    sigma_a2 = 0.2
    readout = np.zeros((2, 2))
    modes = ModeMoments(readout, *(np.zeros((2, 1)),) * 4)
    state = FieldState(Lam, modes, ["x", "y"], np.array([0.0, -np.inf]), np.zeros_like(Lam), 0.0, C0)
    chains = ChainSettings(num_chains=16, num_warm=100, num_keep=1500, step_size=0.5, num_integration_steps=5)
    draws = measure_draws(jax.random.key(5), C0, state, sigma_a2, act.phi, act.phi_np, chains)
    assert draws.z.shape == (16 * 1500, len(C0)) and draws.a.shape == (16 * 1500, 2)
    np.testing.assert_allclose(draws.w.sum(), 1.0)
    Sigma_a = np.linalg.inv(np.eye(2) / sigma_a2 - Lam.T @ C0 @ Lam)
    np.testing.assert_allclose(draws.z.T @ (draws.w[:, None] * draws.a), C0 @ Lam @ Sigma_a, atol=0.02)
    np.testing.assert_allclose(draws.a.T @ (draws.w[:, None] * draws.a), Sigma_a, atol=0.03)
    np.testing.assert_allclose(draws.phi, draws.z)


def test_one_mode_per_code_keeps_the_heaviest_and_drops_massless_ones():
    from widebayes.theory.nonlazy.full_measure import one_per_code

    codes = ["110", "110", "001", "011"]
    assert one_per_code(codes, np.array([-1.0, 0.5, -np.inf, 0.0])) == [1, 3]


def test_mirror_pairs_average_each_pair_and_add_a_missing_mirror():
    """Odd phi: the mode at -a carries the mirrored code, the same mass and the same phi a^T moments;
    a pair's estimates are averaged, and a code found without its mirror gets it."""
    from widebayes.theory.nonlazy.full_measure import ModeMoments, mirror_code, mirror_pairs

    P, m = 4, 3
    rng = np.random.default_rng(0)
    a, s = rng.normal(size=m), rng.normal(size=P)
    t = rng.normal(size=(3, P * m))
    mom = ModeMoments(np.stack([a, -1.1 * a, 0.5 * a]), np.stack([s, -s, s]), rng.normal(size=(3, P, P)),
                      t, rng.normal(size=(3, P * m, P * m)))
    out, codes, log_mass = mirror_pairs(mom, ["100", "011", "110"], np.array([0.0, -0.4, -1.0]))
    assert sorted(codes) == ["001", "011", "100", "110"] and mirror_code("0110") == "1001"
    pair = [codes.index("100"), codes.index("011")]
    np.testing.assert_allclose(log_mass[pair], np.log((1 + np.exp(-0.4)) / 2))
    np.testing.assert_allclose(out.readout[pair[0]], 1.05 * a)
    np.testing.assert_allclose(out.readout[pair[1]], -1.05 * a)
    np.testing.assert_allclose(out.mean_t[pair[0]], 0.5 * (t[0] + t[1]))
    np.testing.assert_allclose(out.mean_t[pair[1]], out.mean_t[pair[0]])
    added = [codes.index("110"), codes.index("001")]
    np.testing.assert_allclose(log_mass[added], -1.0)
    np.testing.assert_allclose(out.readout[added[1]], -0.5 * a)
    np.testing.assert_allclose(out.mean_phi[added[1]], -s)


@pytest.mark.slow
def test_tanh_full_measure_matches_the_class_structured_theory():
    """tanh on the toy task (P = 40, y- = 1/2): the full measure, which reads no class structure,
    against the redundant-code theory, which integrates the class means (two independent methods;
    2 min).  Measured: codes within 0.002 (000 / 111 0.32 against 0.318; the six others 0.059-0.061),
    ``<a a^T>`` within 1%, the kernel within 0.6%, residual 4e-3."""
    from test_theory_nonlazy_predictions import _experiment

    from widebayes.theory.nonlazy import nonlazy_predictions
    from widebayes.theory.nonlazy.predictions import full_measure_predictions

    exp = _experiment("tanh", num_train=40, num_test=6, y_minus=0.5)
    reference, full = nonlazy_predictions(exp), full_measure_predictions(exp)
    assert reference["method"] == "redundant-codes" and full["method"] == "full-measure"
    assert full["residual"] < 0.02
    expected = {c["code"]: c["fraction"] for c in reference["codes"]}
    got = {c["code"]: c["fraction"] for c in full["codes"]}
    assert set(got) == set(expected)
    for code, fraction in expected.items():
        assert abs(got[code] - fraction) < 0.01, (code, got[code], fraction)
    np.testing.assert_allclose(full["readout_second_moment"], reference["readout_second_moment"], rtol=0.03)
    K, K_ref = np.asarray(full["kernel_train"][1]), np.asarray(reference["kernel_train"][1])
    assert np.linalg.norm(K - K_ref) / np.linalg.norm(K_ref) < 0.02


def test_a_measure_without_sharp_modes_is_refused_with_one_line():
    """tanh at P = 4 with a broad readout prior: q(a) has no mode with a Laplace mass (the method is
    for sharp codes), which ``full_measure_predictions`` says as an InputError, not a traceback."""
    from test_theory_nonlazy_predictions import _experiment, _scrambled

    from widebayes.errors import InputError
    from widebayes.theory.nonlazy.predictions import full_measure_predictions

    with pytest.raises(InputError, match="full single-neuron measure"):
        full_measure_predictions(_scrambled(_experiment("tanh", num_train=4, num_test=3, sigma_a2=0.3)))
