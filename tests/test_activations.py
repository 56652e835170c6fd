"""Every fact an Activation carries, checked facet by facet against Monte Carlo or an independent
computation (scipy.integrate.quad), and a new activation added in one place end to end."""

import json
import math
import warnings

import numpy as np
import pytest
from scipy.integrate import IntegrationWarning
from scipy.integrate import quad as scipy_quad
from scipy.optimize import minimize_scalar

from widebayes import activations as acts
from widebayes import quadrature
from widebayes.cli import main
from widebayes.codes import THRESHOLD_RULE, default_threshold
from widebayes.config import resolve
from widebayes.diagnostics.preactivations import invert_activation
from widebayes.errors import InputError
from widebayes.experiment import build_experiment
from widebayes.report import write_report
from widebayes.sampling import sample_experiment
from widebayes.theory.nngp import nngp_kernels
from widebayes.theory.predict import predictions

NAMES = sorted(acts.ACTIVATIONS)
COVARIANCES = [  # (c12, c11, c22): small to large variances, both signs, unequal variances
    (0.5, 1.0, 1.0), (-0.3, 0.5, 2.0), (0.99, 1.0, 1.0), (0.0, 0.2, 3.0), (-1.9, 2.0, 2.0),
    (3.0, 4.0, 9.0), (12.0, 16.0, 16.0), (-6.0, 4.0, 16.0),
]
MOMENTS = [(0.0, 1.0), (0.7, 0.3), (-1.2, 2.5), (2.0, 16.0), (-0.4, 0.0)]  # (mean, variance)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def quad(*args, **kwargs):
    """scipy's adaptive quad, quiet about round-off at the tight tolerances asked here (a poor
    reference would fail the comparisons, not pass them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)
        return scipy_quad(*args, **kwargs)


def _pdf(x):
    return math.exp(-0.5 * x * x) / _SQRT_2PI


def quad_moment(f, m, v, power=1):
    """``E[f(m + sqrt(v) x)^power]`` by adaptive quadrature, split at f's kink (z = 0)."""
    s = math.sqrt(v)
    if s == 0.0:
        return float(f(np.float64(m))) ** power
    kink = -m / s
    points = [kink] if abs(kink) < 14 else None
    return quad(lambda x: float(f(np.float64(m + s * x))) ** power * _pdf(x), -14, 14, points=points,
                epsabs=1e-14, epsrel=1e-12, limit=400)[0]


def quad_kernel(f, c12, c11, c22):
    """``E[f(u) f(v)]`` by nested adaptive quadrature after conditioning on u (an implementation
    independent of the package's): ``v | x = sqrt(c22) (rho x + sqrt(1 - rho^2) y)``, the inner
    integral over y split where v = 0, the outer one at x = 0."""
    s1, s2 = math.sqrt(c11), math.sqrt(c22)
    rho = c12 / (s1 * s2)
    r = math.sqrt(max(1.0 - rho * rho, 0.0))

    def inner(x):
        y0 = -rho * x / r
        return quad(lambda y: float(f(np.float64(s2 * (rho * x + r * y)))) * _pdf(y), -12, 12,
                    points=[y0] if abs(y0) < 12 else None, epsabs=1e-14, epsrel=1e-12, limit=400)[0]

    return quad(lambda x: float(f(np.float64(s1 * x))) * _pdf(x) * inner(x), -12, 12, points=[0.0],
                epsabs=1e-14, epsrel=1e-12, limit=400)[0]


def gaussian_pairs(rng, c12, c11, c22, n):
    L = np.linalg.cholesky(np.array([[c11, c12], [c12, c22]]))
    return L @ rng.standard_normal((2, n))


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize("name", NAMES)
def test_facts_are_consistent_and_phi_agrees_between_jax_and_numpy(name):
    act = acts.get_activation(name)
    assert act.name == name and act.growth in acts.GROWTH_CLASSES
    lo, hi = act.value_range
    assert act.bounded == (np.isfinite(lo) and np.isfinite(hi)) == (act.growth == "bounded")
    z = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(np.asarray(act.phi(z.astype(np.float32))), act.phi_np(z), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", NAMES)
def test_value_range_is_the_range(name):
    """inf and sup of phi on a wide grid reach the stated range and never leave it."""
    act = acts.get_activation(name)
    lo, hi = act.value_range
    phi = act.phi_np(np.linspace(-40, 40, 80001))
    assert phi.min() >= lo - 1e-12 and phi.max() <= hi + 1e-12
    assert (phi.min() <= lo + 1e-9) if np.isfinite(lo) else phi.min() < -30
    assert (phi.max() >= hi - 1e-9) if np.isfinite(hi) else phi.max() > 30


@pytest.mark.parametrize("name", NAMES)
def test_growth_class_is_the_growth(name):
    """bounded: |phi| stays bounded; relu-like: phi(t v)/t -> max(v, 0); linear: phi(t v)/t -> c v
    with nonzero slopes on both sides; quadratic: phi(t)/t^2 -> a nonzero constant."""
    act = acts.get_activation(name)
    t = 1e4
    right, left = act.phi_np(np.array([t, -t]))
    if act.growth == "bounded":
        assert max(abs(right), abs(left)) <= max(abs(b) for b in act.value_range)
    elif act.growth == "relu-like":
        assert abs(right / t - 1.0) < 1e-3 and abs(left / t) < 1e-3
    elif act.growth == "linear":
        assert abs(right / t) > 1e-2 and abs(left / t) > 1e-2 and np.isfinite(right / t)
    else:
        assert 1e-2 < right / t**2 < 1e2


@pytest.mark.parametrize("name", NAMES)
def test_homogeneity_and_linearity_are_true(name):
    act = acts.get_activation(name)
    z = np.linspace(-3, 3, 61)
    homogeneous = all(np.allclose(act.phi_np(a * z), a * act.phi_np(z), rtol=1e-12, atol=1e-12)
                      for a in (0.5, 3.0))
    assert act.homogeneous == homogeneous
    assert act.is_linear == bool(np.array_equal(act.phi_np(z), z))
    assert act.is_relu == bool(np.array_equal(act.phi_np(z), np.maximum(z, 0.0)))


def test_contradictory_facts_are_refused():
    with pytest.raises(ValueError, match="growth must be one of"):
        acts.make_activation("x", acts._tanh, growth="saturating", value_range=(-1, 1))
    with pytest.raises(ValueError, match="disagrees with the range"):
        acts.make_activation("x", acts._tanh, growth="bounded", value_range=(-1, np.inf))
    with pytest.raises(ValueError, match="disagrees with the range"):
        acts.make_activation("x", acts._relu, growth="relu-like", value_range=(0, 1))
    with pytest.raises(ValueError, match="homogeneous"):
        acts.make_activation("x", acts._relu2, growth="quadratic", value_range=(0, np.inf), homogeneous=True)


# ----------------------------------------------------------------------------- kernel map


@pytest.mark.parametrize("name", NAMES)
def test_kernel_map_matches_monte_carlo(name):
    """E[phi(u) phi(v)] against 4e5 Gaussian pairs, within 5 Monte Carlo standard errors."""
    act, rng = acts.get_activation(name), np.random.default_rng(7)
    for c12, c11, c22 in COVARIANCES:
        u, v = gaussian_pairs(rng, c12, c11, c22, 400_000)
        prod = act.phi_np(u) * act.phi_np(v)
        se = prod.std(ddof=1) / np.sqrt(prod.size)
        assert abs(act.kernel(c12, c11, c22) - prod.mean()) < 5 * se, (c12, c11, c22)


@pytest.mark.parametrize("c12,c11,c22", [(0.5, 1.0, 1.0), (-0.3, 0.5, 2.0), (1.98, 2.0, 2.0),
                                         (0.0, 0.2, 3.0), (-7.5, 4.0, 16.0), (30.0, 25.0, 49.0)])
def test_relu2_kernel_is_the_degree_two_arc_cosine_closed_form(c12, c11, c22):
    """Cho & Saul's J_2 against nested adaptive quadrature, to 1e-10 relative (the former
    64-node Gauss-Hermite kernel was 2e-5 to 6e-5 off)."""
    relu2 = acts.get_activation("relu2")
    assert relu2.closed_form
    ref = quad_kernel(relu2.phi_np, c12, c11, c22)
    assert relu2.kernel(c12, c11, c22) == pytest.approx(ref, rel=1e-10, abs=1e-14)


def test_relu2_kernel_limits():
    """t = 0 (u = v): E[relu(u)^4] = 3 c^2 / 2; t = pi (v = -u): 0."""
    relu2 = acts.get_activation("relu2")
    assert relu2.kernel(2.0, 2.0, 2.0) == pytest.approx(1.5 * 4.0, rel=1e-14)
    assert relu2.kernel(-2.0, 2.0, 2.0) == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("c,frac", [(0.5, 0.3), (2.0, 0.5), (4.0, 0.5), (8.0, -0.8), (16.0, 0.5),
                                    (16.0, 0.95), (16.0, -0.3)])
def test_tanh_kernel_is_accurate_up_to_large_variance(c, frac):
    """Relative error below 1e-8 up to c = 16 (and beyond) against nested adaptive quadrature; the
    64-node Gauss-Hermite rule used before was 1e-3 off at c = 16."""
    tanh = acts.get_activation("tanh")
    for c11, c22 in ((c, c), (c, c / 4.0)):
        c12 = frac * math.sqrt(c11 * c22)
        ref = quad_kernel(math.tanh, c12, c11, c22)
        assert abs(tanh.kernel(c12, c11, c22) / ref - 1.0) < 1e-8, (c12, c11, c22)


def test_quadrature_kernels_are_symmetric_and_agree_between_blocks():
    """kernel_matrix is exactly symmetric; cross blocks agree with it to rounding."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 5))
    C = 3.0 * X @ X.T / 5
    for name in ("tanh", "softplus"):
        act = acts.get_activation(name)
        K = acts.kernel_matrix(act, C)
        assert np.array_equal(K, K.T)
        d = np.diag(C)
        np.testing.assert_allclose(acts.kernel_cross(act, C[:4, 4:], d[:4], d[4:]), K[:4, 4:], rtol=1e-13)


def test_trapezoid_refines_only_where_needed():
    """The rule reaches its tolerance: level 3 (step 1/16) matches level-2 values at small c and
    improves on them at large c."""
    phi = np.tanh
    small = quadrature.trapezoid_kernel(phi, 0.3, 0.5, 0.5)
    assert small == pytest.approx(quadrature.trapezoid_kernel(phi, 0.3, 0.5, 0.5, max_level=1), rel=1e-13)
    big = quadrature.trapezoid_kernel(phi, 8.0, 16.0, 16.0)
    coarse = quadrature.trapezoid_kernel(phi, 8.0, 16.0, 16.0, max_level=1)
    assert abs(coarse / big - 1.0) > 1e-6


# ----------------------------------------------------------------------------- moments


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_moments_match_monte_carlo(name):
    act, rng = acts.get_activation(name), np.random.default_rng(11)
    for m, v in MOMENTS:
        u = m + math.sqrt(v) * rng.standard_normal(400_000)
        for k, moment in ((1, act.mean), (2, act.second_moment)):
            x = act.phi_np(u) ** k
            se = x.std(ddof=1) / np.sqrt(x.size)
            assert abs(moment(m, v) - x.mean()) <= 5 * se + 1e-12, (m, v, k)


@pytest.mark.parametrize("name", [n for n in NAMES if acts.ACTIVATIONS[n].mean_closed_form is not None])
def test_closed_form_moments_match_quadrature(name):
    act = acts.get_activation(name)
    assert act.second_closed_form is not None
    for m, v in MOMENTS:
        for k, moment in ((1, act.mean), (2, act.second_moment)):
            assert moment(m, v) == pytest.approx(quad_moment(act.phi_np, m, v, k), rel=1e-10, abs=1e-13)


def test_zero_mean_second_moment_is_the_kernel_diagonal():
    for name in NAMES:
        act = acts.get_activation(name)
        for c in (0.3, 1.0, 4.0):
            assert act.second_moment(0.0, c) == pytest.approx(act.kernel(c, c, c), rel=1e-10)


# ----------------------------------------------------------------------------- inverse


@pytest.mark.parametrize("name", NAMES)
def test_inverse_undoes_phi(name):
    act = acts.get_activation(name)
    z = np.linspace(-3, 3, 13)
    if act.inverse is None:
        assert invert_activation(act.phi_np(z), name) is None
        assert not np.all(np.diff(act.phi_np(z)) > 0)  # not strictly monotone: no inverse exists
        return
    np.testing.assert_allclose(act.inverse(act.phi_np(z)), z, rtol=1e-9, atol=1e-9)
    recovered, clipped = invert_activation(act.phi_np(z), act)
    np.testing.assert_allclose(recovered, z, atol=1e-6)
    assert clipped == 0.0


# ----------------------------------------------------------------------------- code threshold


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("q", [1.0, 4.0])
def test_code_threshold_is_the_documented_rule(name, q):
    """Bounded: the midpoint of the range; linear: 0; otherwise the prior mean plus two prior
    standard deviations of phi(z), z ~ N(0, q) (checked by quadrature and by Monte Carlo)."""
    act = acts.get_activation(name)
    theta = default_threshold(name, q)
    assert theta == act.code_threshold(q)
    if act.bounded:
        ends = act.phi_np(np.array([-40.0, 40.0]))
        assert theta == pytest.approx(0.5 * (ends[0] + ends[1]), abs=1e-12)
        assert default_threshold(name, 9.0 * q) == theta  # independent of q
    elif act.is_linear:
        assert theta == 0.0
    else:
        mean = quad_moment(act.phi_np, 0.0, q, 1)
        sd = math.sqrt(quad_moment(act.phi_np, 0.0, q, 2) - mean**2)
        assert theta == pytest.approx(mean + acts.PRIOR_SD_ABOVE * sd, rel=1e-7)
        phi = act.phi_np(math.sqrt(q) * np.random.default_rng(5).standard_normal(400_000))
        assert theta == pytest.approx(phi.mean() + 2.0 * phi.std(), rel=0.01)
    assert "midpoint" in THRESHOLD_RULE and "2 sd" in THRESHOLD_RULE


# ----------------------------------------------------------------------------- a new activation


def _swish(z, xp):
    """swish / SiLU, ``z sigmoid(z)``, written without overflow: ``z (1 + tanh(z/2)) / 2``."""
    return 0.5 * z * (1.0 + xp.tanh(0.5 * z))


SWISH_MIN = float(minimize_scalar(lambda z: _swish(z, np), bounds=(-3, 0), method="bounded",
                                  options={"xatol": 1e-12}).fun)


@pytest.fixture
def swish(monkeypatch):
    """A new activation, added in one place: an entry of the ACTIVATIONS table with its facts
    (nothing but phi, its growth class and its range: the kernel and moments come by quadrature)."""
    act = acts.make_activation("swish", _swish, growth="relu-like", value_range=(SWISH_MIN, np.inf))
    monkeypatch.setitem(acts.ACTIVATIONS, "swish", act)
    return act


def toy(readout: str, **network) -> dict:
    return resolve({
        "task": {"kind": "orthogonal", "num_train": 12, "input_dim": 24, "num_test": 6,
                 "class_ratios": [0.5, 0.25, 0.25], "y_minus": 0.5},
        "network": {"depth": 1, "width": 8, "activation": "swish", "readout": readout,
                    "temperature": 0.05, **network},
        "sampler": {"step_size": 0.005, "num_steps": 200, "burn_in": 0, "thin": 20,
                    "num_chains": 2, "seed": 3, "progress": False},
    })


def test_a_new_activation_has_every_fact(swish):
    assert not swish.closed_form and swish.inverse is None and not swish.bounded
    rng = np.random.default_rng(3)
    u, v = gaussian_pairs(rng, 1.5, 2.0, 3.0, 400_000)
    prod = swish.phi_np(u) * swish.phi_np(v)
    assert abs(swish.kernel(1.5, 2.0, 3.0) - prod.mean()) < 5 * prod.std() / np.sqrt(prod.size)
    assert swish.kernel(1.5, 2.0, 3.0) == pytest.approx(quad_kernel(swish.phi_np, 1.5, 2.0, 3.0), rel=1e-9)
    mean = quad_moment(swish.phi_np, 0.0, 1.0)
    sd = math.sqrt(quad_moment(swish.phi_np, 0.0, 1.0, 2) - mean**2)
    assert swish.code_threshold(1.0) == pytest.approx(mean + 2 * sd, rel=1e-9)


def test_a_new_activation_runs_the_nngp_theory_sampling_and_the_report(swish, tmp_path):
    exp = toy("lazy")
    X = build_experiment(exp).data.X_train
    K = nngp_kernels(X, "swish", exp["network"]["sigma_w2"])
    np.testing.assert_allclose(K.train[1], acts.kernel_matrix(swish, K.preact_train[0]))
    theory = predictions(build_experiment(exp))
    assert theory["method"] == "bpkr-heuristic" and np.all(np.isfinite(theory["kernel_train_nngp"]))
    sample_experiment(exp, out_dir=tmp_path)
    write_report(tmp_path)
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["experiment"]["activation"] == "swish"
    assert data["theory"]["available"] is True and data["theory"]["method"] == "bpkr-heuristic"
    assert data["figures"]["preactivations"]["data"].get("skipped")  # no inverse: said, not failed


def test_a_new_activation_outside_a_theory_is_refused_in_one_line(swish, tmp_path, capsys):
    """Non-lazy swish on a task without class structure: not covered, exit 2 and one line."""
    exp = toy("nonlazy")
    with pytest.raises(InputError, match="too large for the general"):
        predictions(build_experiment(exp))
    toml = tmp_path / "swish.toml"
    toml.write_text('[task]\nkind = "xor"\nnum_train = 12\n[network]\nactivation = "swish"\n'
                    'readout = "nonlazy"\nwidth = 8\n')
    assert main(["theory", str(toml), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "swish" in err


def test_an_unknown_activation_is_one_line_and_exit_2(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text('[network]\nactivation = "swish"\n')
    assert main(["theory", str(toml), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "network.activation" in err and "swish" in err
