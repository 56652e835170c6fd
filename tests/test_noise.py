"""The hash32 noise generator: N(0, 1) moments, independence, uniform bits (statistical tier)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from widebayes.samplers.noise import bits_to_normal, gaussian_like, hash_bits, hash_normal

N = 1_000_000


@pytest.fixture(scope="module")
def z():
    return np.asarray(hash_normal(jax.random.PRNGKey(7), (N,), 0), np.float64)


def test_moments_are_those_of_a_standard_normal(z):
    se = 1 / np.sqrt(N)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * np.sqrt(2) * se
    assert abs(stats.skew(z)) < 5 * np.sqrt(6) * se
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24) * se


def test_distribution_passes_kolmogorov_smirnov(z):
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_neighbouring_elements_are_uncorrelated(z):
    se = 1 / np.sqrt(N)
    for lag in (1, 2, 7, 32, 520):
        assert abs(np.mean(z[:-lag] * z[lag:])) < 5 * se


def test_steps_and_blocks_are_independent():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a = np.asarray(hash_normal(keys[0], (N,), 0), np.float64)
    b = np.asarray(hash_normal(keys[1], (N,), 0), np.float64)
    assert abs(np.mean(a * b)) < 5 / np.sqrt(N)
    tree = gaussian_like(jax.random.PRNGKey(1), {"a": jnp.zeros(1000), "b": jnp.zeros(1000)})
    assert not np.allclose(tree["a"], tree["b"])


def test_every_bit_is_fair():
    bits = np.asarray(hash_bits(jnp.array([3, 5], jnp.uint32), jax.lax.iota(jnp.uint32, N)))
    ones = np.array([(bits >> k & 1).mean() for k in range(32)])
    assert np.all(np.abs(ones - 0.5) < 5 * 0.5 / np.sqrt(N))


def test_pairs_fill_the_unit_square_uniformly():
    bits = np.asarray(hash_bits(jnp.array([11, 13], jnp.uint32), jax.lax.iota(jnp.uint32, N)))
    u = (bits >> 8) / 2**24
    counts, _, _ = np.histogram2d(u[:-1], u[1:], bins=16)
    assert stats.chisquare(counts.ravel()).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_extreme_bits_give_finite_symmetric_normals(dtype):
    with jax.enable_x64(dtype == jnp.float64):
        extremes = jnp.array([0, 0xFF, 0xFFFFFFFF, 0xFFFFFF00, 0x80000000, 0x7FFFFFFF], jnp.uint32)
        z = np.asarray(bits_to_normal(extremes, dtype))
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < 5.6
    assert z[0] == -z[2] and z[4] == -z[5]
