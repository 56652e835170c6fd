"""The code-move study: its moves are exact involutions / proposals, and the log ratios are right."""

import jax.numpy as jnp
import numpy as np

from widebayes.activations import get_activation
from widebayes.studies import code_moves


def _state(P=12, N=6, m=2, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), P // 3)
    return rng.normal(size=(P, N)) * 2, rng.normal(size=(P, m)), labels


def test_swap_and_negate_are_involutions_that_keep_the_prior():
    H, _, labels = _state()
    phi = get_activation("sigmoid").phi
    states = code_moves.block_states(H, labels, phi, 0.5)
    for move in ("swap", "negate"):
        rng = np.random.default_rng(3)
        H1, log_q = code_moves.propose(move, H, labels, states, rng, phi, 0.5)
        assert log_q == 0.0 and not np.allclose(H1, H)
        assert np.isclose(np.sum(H1**2), np.sum(H**2))  # i.i.d. Gaussian prior unchanged
        rng = np.random.default_rng(3)  # the same (i, j, c) applied again restores H
        H2, _ = code_moves.propose(move, H1, labels, states, rng, phi, 0.5)
        np.testing.assert_allclose(H2, H)


def test_log_ratio_is_the_change_of_the_collapsed_log_posterior():
    H, Y, labels = _state()
    kwargs = {"activation": "sigmoid", "sigma_w2": 1.0, "s": 0.3, "T_eff": 0.1}
    r = code_moves.move_log_ratios(H, Y, labels, num_moves=5, seed=1, **kwargs)
    rng = np.random.default_rng(1)  # replay the first swap by hand
    phi = get_activation("sigmoid").phi
    theta = code_moves.default_threshold("sigmoid", 1.0)
    states = code_moves.block_states(H, labels, phi, theta)
    H1, _ = code_moves.propose("swap", H, labels, states, rng, phi, theta)

    def lp(h):
        return float(code_moves.collapsed_logpost(jnp.asarray(h, jnp.float32), jnp.asarray(Y, jnp.float32),
                                                  phi=phi, sigma_w2=1.0, s=0.3, T_eff=0.1))

    assert np.isclose(r["swap"][0], lp(H1) - lp(H), atol=1e-3)
    assert set(r) >= {"swap", "negate", "refresh"}
    assert all(np.all(np.isfinite(v) | (v == -np.inf)) for v in r.values())
