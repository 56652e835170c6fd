"""Deep linear networks at finite width, exactly: the posterior as a mixture of Gaussian processes.

Lazy readout below (importance sampling of S from its prior); any readout exponent, the non-lazy
analog code included, and the mean layer kernels further down (the Wishart chain sampled by NUTS,
:func:`deep_linear_posterior_moments`).

A deep linear network with the lazy readout, in this project's parametrisation
(``z_1 = X W_1^T / sqrt(N0)``, ``z_l = z_{l-1} W_l^T / sqrt(N)``, ``f = z_L A / sqrt(N)``, every
entry of ``W_l`` ~ N(0, sigma_l^2), of ``A (N, m)`` ~ N(0, sigma_a^2)), has at any width N [DER]

    f(x) = x^T W_eff / sqrt(N0),   W_eff = W_1^T V_1 / sqrt(N)  (N0, m),
    V_L = A,   V_{l-1} = W_l^T V_l / sqrt(N)  (N, m).

Given ``V_1`` the rows of ``W_1`` are independent, so ``W_eff``'s rows are i.i.d. N(0, sigma_1^2 S)
with ``S = V_1^T V_1 / N`` (m x m): **given S the network is a Gaussian process with the output
kernel ``sigma_1^2 S (x) K0``**, ``K0 = X X^T / N0``.  The same argument one layer up gives the
prior of S exactly: ``S_L = A^T A / N ~ Wishart_m(N, sigma_a^2 I) / N`` and, given ``S_l``,
``S_{l-1} = V_{l-1}^T V_{l-1} / N ~ Wishart_m(N, sigma_l^2 S_l) / N``; ``S = S_1``, a product of
L Wishart matrices (for one output a product of L chi-squares: the setting of Hanin and Zlokapa's
exact results).  The posterior of the weights therefore induces

    p(S | Y) ~ p_prior(S) N(vec Y; 0, sigma_1^2 S (x) K0 + T I),

and every statistic of the predictor is a p(S | Y)-average of Gaussian-process posteriors
(:func:`deep_linear_finite_width`).  Nothing here is expanded in 1/N: the large-N saddle point of
this m x m integral is BPKR's renormalisation (``sigma_1^2 S -> U``-scaled kernel), and the gap
between the two at N = 100 is the finite-width effect the README records.

The m x m integral is done by self-normalised importance sampling from the prior of S (the
Bartlett construction of each Wishart factor), in the eigenbasis of K0 so that the likelihood of a
draw costs P small m x m solves.  Its Monte Carlo error is returned (the effective sample size of
the weights and a delta-method standard error of each average).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FiniteWidthPrediction(NamedTuple):
    """Exact finite-N predictor of a deep linear lazy network on test inputs (per test point and output)."""

    mean: np.ndarray  # (P_test, m) posterior mean of f
    var: np.ndarray  # (P_test, m) posterior variance of f
    var_se: np.ndarray  # (P_test, m) importance-sampling standard error of var
    S_mean: np.ndarray  # (m, m) posterior mean of S
    ess: float  # effective sample size of the importance weights
    num_samples: int


def wishart_product_prior(rng, num_samples: int, width: int, depth: int, num_outputs: int,
                          sigma_w2, sigma_a2: float) -> np.ndarray:
    """Draws of ``S`` (num_samples, m, m) from the prior: ``S_L = W(N, sigma_a^2 I)/N``,
    ``S_{l-1} = sigma_l^2 C_l B B^T C_l^T / N`` with ``C_l C_l^T = S_l`` and ``B`` Bartlett's
    factor of a standard Wishart_m(N) (``B_ii^2 ~ chi^2_{N-i}``, ``B_ij ~ N(0, 1)`` below the diagonal)."""
    m = num_outputs
    s2 = np.broadcast_to(np.asarray(sigma_w2, dtype=np.float64), (depth,))

    def standard():
        B = np.zeros((num_samples, m, m))
        for i in range(m):
            B[:, i, i] = np.sqrt(rng.chisquare(width - i, size=num_samples))
            B[:, i, :i] = rng.standard_normal((num_samples, i))
        return B

    B = standard()
    S = sigma_a2 * B @ np.swapaxes(B, 1, 2) / width
    for layer in range(depth, 1, -1):
        C = np.linalg.cholesky(S)
        CB = C @ standard()
        S = s2[layer - 1] * CB @ np.swapaxes(CB, 1, 2) / width
    return S


def _weighted(values, w):
    """Self-normalised average of ``values (n, ...)`` with weights ``w (n,)`` and its delta-method SE."""
    mean = np.tensordot(w, values, axes=1)
    dev = values - mean
    se = np.sqrt(np.tensordot(w**2, dev**2, axes=1))
    return mean, se


def deep_linear_finite_width(K0, Y, K0_cross, K0_test_diag, depth: int, width: int, T: float,
                             sigma_w2, sigma_a2: float = 1.0, num_samples: int = 200_000,
                             seed: int = 0) -> FiniteWidthPrediction:
    """The exact predictor of a deep linear lazy network of width ``width`` on test inputs.

    Parameters
    ----------
    K0 : (P, P) input kernel of the training inputs, ``X X^T / N0``
    Y : (P, m) targets
    K0_cross : (P, P_test) input kernel between training and test inputs
    K0_test_diag : (P_test,) input kernel of each test input with itself
    depth, width : L and N
    T : the temperature T_eff (likelihood ``exp(-|Y - f|^2 / (2T))``)
    sigma_w2 : float or sequence of L floats; sigma_a2 : float
    num_samples : importance samples of S
    """
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    m = Y.shape[1]
    s2 = np.broadcast_to(np.asarray(sigma_w2, dtype=np.float64), (depth,))
    lam, Q = np.linalg.eigh(np.asarray(K0, dtype=np.float64))
    lam = np.clip(lam, 0.0, None)
    y = Q.T @ Y  # (P, m): the targets in K0's eigenbasis
    kq = Q.T @ np.asarray(K0_cross, dtype=np.float64)  # (P, P_test)
    S = wishart_product_prior(np.random.default_rng(seed), num_samples, width, depth, m, s2, sigma_a2)
    G = s2[0] * S  # the output kernel factor: f ~ GP(0, G (x) K0) given S
    eye = np.eye(m)
    # per eigencomponent p: y_p ~ N(0, lam_p G + T I_m)
    M = lam[None, :, None, None] * G[:, None] + T * eye  # (n, P, m, m)
    c = np.linalg.solve(M, np.broadcast_to(y, (num_samples, *y.shape))[..., None])[..., 0]  # (n, P, m)
    logdet = np.linalg.slogdet(M)[1].sum(axis=1)
    loglik = -0.5 * (logdet + np.einsum("pm,npm->n", y, c))
    w = np.exp(loglik - loglik.max())
    w /= w.sum()
    # given S: mean f*(x) = G sum_p kq_p(x) c_p;
    # var f*_r(x) = G_rr k**(x) - sum_p kq_p(x)^2 [G M_p^{-1} G]_rr
    mean_given = np.einsum("nrs,px,nps->nxr", G, kq, c)
    GMG = G[:, None] @ np.linalg.solve(M, np.broadcast_to(G[:, None], M.shape))  # (n, P, m, m)
    diag = np.einsum("nprr->npr", GMG)
    var_given = (np.einsum("nrr->nr", G)[:, None, :] * np.asarray(K0_test_diag)[None, :, None]
                 - np.einsum("px,npr->nxr", kq**2, diag))
    mean, _ = _weighted(mean_given, w)
    second, _ = _weighted(var_given + mean_given**2, w)
    var = second - mean**2
    # the SE of var: delta method on the weighted average of var_given + (mean_given - mean)^2
    _, var_se = _weighted(var_given + (mean_given - mean) ** 2, w)
    S_mean, _ = _weighted(S, w)
    return FiniteWidthPrediction(mean, var, var_se, S_mean, float(1.0 / np.sum(w**2)), num_samples)


# ---------------------------------------------------------------------------------------------
# Any readout exponent (the non-lazy analog code included): the chain of S's sampled by NUTS.
#
# With the readout ``f = z_L A / N^gamma`` the same argument gives, for every gamma, the chain
# ``S_L = A^T A / N``, ``S_{l-1} | S_l ~ Wishart_m(N, sigma_l^2 S_l) / N`` and, given ``S = S_1``,
# a GP with output kernel ``N^(1 - 2 gamma) sigma_1^2 S (x) K0`` and noise
# ``T_eff = N^(1 - 2 gamma) T`` [DER].  For gamma = 1 the data move S far from its prior (the
# analog code's U is several prior standard deviations away), so importance sampling from the
# prior is useless there; the chain's L m(m+1)/2 Bartlett coordinates are sampled by NumPyro's
# NUTS instead (18 coordinates for L = 3, m = 3).
#
# The layer kernels follow from the chain exactly [DER]: given the layers above, the likelihood
# sees W_l only through V_l^T W_l (f = z_{l-1} W_l^T V_l / (sqrt(N) N^gamma) and
# z_l V_l = N^gamma f at every l), so the part of W_l orthogonal to the span of V_l keeps its
# prior and contributes sigma_l^2 (N - m) / N K^{l-1} to K^l on average; the part in the span
# gives W_l^T P W_l = V_{l-1} S_l^{-1} V_{l-1}^T, i.e. N^(2 gamma - 2) f S_l^{-1} f^T.  Hence
#
#     E[K^l] = N^(2 gamma - 2) E[f S_l^{-1} f^T] + sigma_l^2 (N - m) / N E[K^{l-1}],   K^0 = K0,
#
# and given the chain f is the GP posterior above, so each term is a closed form per draw of the
# chain (its mean and the trace of S_l^{-1} against its covariance, in K0's eigenbasis).
# ---------------------------------------------------------------------------------------------


class FiniteWidthMoments(NamedTuple):
    """Exact finite-N posterior moments of a deep linear network (any readout exponent).

    Attributes
    ----------
    readout_second_moment, readout_second_moment_se : (m, m)
        ``<a a^T>`` per neuron, ``E[A^T A / N] = E[S_L]``, and its Monte Carlo standard error.
    kernels, kernels_se : (L + 1, P, P)
        ``K0`` and the posterior-mean preactivation kernels ``E[z_l z_l^T / N]``, l = 1..L.
    S_mean : (L, m, m)
        ``E[S_1], ..., E[S_L]``.
    ess : float
        The smallest bulk effective sample size over the chain's coordinates (ArviZ).
    num_draws, divergences : int
    """

    readout_second_moment: np.ndarray
    readout_second_moment_se: np.ndarray
    kernels: np.ndarray
    kernels_se: np.ndarray
    S_mean: np.ndarray
    ess: float
    num_draws: int
    divergences: int


def _bartlett(c, z, m):
    """Lower-triangular Bartlett factor from its squared diagonal ``c (m,)`` and strict-lower ``z``."""
    import jax.numpy as jnp

    rows, cols = np.tril_indices(m, -1)
    return jnp.diag(jnp.sqrt(c)).at[rows, cols].set(z)


def wishart_chain_model(lam, y, depth: int, width: int, T: float, sigma_w2, sigma_a2: float,
                        gamma: float):
    """NumPyro model of ``p(S_L, ..., S_1 | Y)``: the Wishart chain's Bartlett factors, and the
    Gaussian likelihood of the targets ``y (P, m)`` in the eigenbasis ``lam (P,)`` of K0.

    Records ``S`` (L, m, m) with ``S[l - 1] = S_l``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    m = y.shape[1]
    s2 = np.broadcast_to(np.asarray(sigma_w2, dtype=np.float64), (depth,))
    scale_chol = jnp.sqrt(sigma_a2) * jnp.eye(m)  # Cholesky factor of the Wishart scale
    S = [None] * depth
    for layer in range(depth, 0, -1):
        c = numpyro.sample(f"c{layer}", dist.Chi2(width - np.arange(m, dtype=np.float64)))
        z = numpyro.sample(f"z{layer}", dist.Normal(0.0, 1.0).expand([m * (m - 1) // 2]).to_event(1))
        CB = scale_chol @ _bartlett(c, z, m)
        S[layer - 1] = CB @ CB.T / width
        if layer > 1:
            scale_chol = jnp.sqrt(s2[layer - 1]) * jnp.linalg.cholesky(S[layer - 1])
    numpyro.deterministic("S", jnp.stack(S))
    scale = width ** (1.0 - 2.0 * gamma)
    M = scale * (lam[:, None, None] * (s2[0] * S[0]) + T * jnp.eye(m))  # (P, m, m)
    L = jnp.linalg.cholesky(M)
    w = jnp.linalg.solve(L, y[..., None])[..., 0]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)))
    numpyro.factor("loglik", -0.5 * (logdet + jnp.sum(w**2)))


def sample_wishart_chain(K0, Y, depth: int, width: int, T: float, sigma_w2, sigma_a2: float = 1.0,
                         gamma: float = 1.0, num_warmup: int = 500, num_samples: int = 1000,
                         num_chains: int = 4, seed: int = 0):
    """Draws of the chain ``S (chains, draws, L, m, m)`` from its posterior (NUTS, float64), with
    the number of divergent transitions."""
    import jax
    from numpyro.infer import MCMC, NUTS, init_to_median

    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if width < Y.shape[1]:
        raise ValueError(f"width {width} below the number of outputs {Y.shape[1]}")
    lam, Q = np.linalg.eigh(np.asarray(K0, dtype=np.float64))
    lam = np.clip(lam, 0.0, None)
    with jax.enable_x64(True):
        # A dense mass matrix halves the leapfrog steps per draw (7.4 against 15 at N = P = 100, L = 3);
        # NumPyro's default start (uniform in (-2, 2) unconstrained) puts chi^2_N draws near 1 and
        # cost 200 s of warm-up trees at N = 100, the prior's median 25 s in all.
        kernel = NUTS(wishart_chain_model, target_accept_prob=0.9, dense_mass=True,
                      init_strategy=init_to_median(num_samples=15))
        mcmc = MCMC(kernel, num_warmup=num_warmup,
                    num_samples=num_samples, num_chains=num_chains, chain_method="vectorized",
                    progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), lam, Q.T @ Y, depth, width, float(T), sigma_w2,
                 float(sigma_a2), float(gamma), extra_fields=("diverging",))
        S = np.asarray(mcmc.get_samples(group_by_chain=True)["S"], dtype=np.float64)
        divergences = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    return S, divergences


def _posterior_given_chain(G, lam, y, T):
    """The GP posterior of ``f~`` (f in K0's eigenbasis) given the chain, per draw: ``f~_p ~
    N(mu_p, C_p)`` with ``mu_p = lam_p G (lam_p G + T)^{-1} y_p`` and ``C_p = T lam_p G
    (lam_p G + T)^{-1}`` without its factor N^(1 - 2 gamma); returns (mu (n, P, m), C (n, P, m, m))."""
    m = y.shape[1]
    lamG = lam[None, :, None, None] * G[:, None]  # (n, P, m, m)
    M = lamG + T * np.eye(m)
    c = np.linalg.solve(M, np.broadcast_to(y, (len(G), *y.shape))[..., None])[..., 0]  # (n, P, m)
    return np.einsum("nprs,nps->npr", lamG, c), T * lamG @ np.linalg.inv(M)


def _spike_given_chain(S_l, mu, C):
    """``E[f~ S_l^{-1} f~^T | chain, Y]`` from the posterior above: (mean term (n, P, P), the
    covariance term's diagonal (n, P), without its factor N^(1 - 2 gamma))."""
    Sinv = np.linalg.inv(S_l)
    return np.einsum("npr,nrs,nqs->npq", mu, Sinv, mu), np.einsum("nrs,npsr->np", Sinv, C)


def deep_linear_posterior_moments(K0, Y, depth: int, width: int, T: float, sigma_w2,
                                  sigma_a2: float = 1.0, gamma: float = 1.0, num_warmup: int = 500,
                                  num_samples: int = 1000, num_chains: int = 4, seed: int = 0,
                                  batches: int = 16) -> FiniteWidthMoments:
    """The exact posterior ``<a a^T>`` and mean layer kernels of a deep linear network of width N.

    Parametrisation as the rest of this module, readout ``f = z_L A / N^gamma`` (``gamma = 1``:
    the non-lazy analog code; 1/2: lazy), likelihood ``exp(-|Y - f|^2 / (2 T_eff))``,
    ``T_eff = T N^(1 - 2 gamma)`` (``T`` the experiment's temperature).  Exact at finite N up to
    the Monte Carlo error of the NUTS draws of the chain, which is returned (standard errors from
    ``batches`` batch means of the draws; the chain's draws are nearly independent).
    """
    import arviz as az

    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    K0 = np.asarray(K0, dtype=np.float64)
    P, m = Y.shape
    s2 = np.broadcast_to(np.asarray(sigma_w2, dtype=np.float64), (depth,))
    S_chains, divergences = sample_wishart_chain(K0, Y, depth, width, T, s2, sigma_a2, gamma,
                                                 num_warmup, num_samples, num_chains, seed)
    ess = float(az.ess(az.convert_to_dataset({"S": S_chains}), method="bulk")["S"].min())
    S = S_chains.reshape(-1, depth, m, m)
    lam, Q = np.linalg.eigh(K0)
    lam = np.clip(lam, 0.0, None)
    y = Q.T @ Y
    bulk = (width - m) / width
    idx = np.arange(P)
    # per batch of draws, the eigenbasis kernels of every layer by the recursion above
    batch_K, batch_U = [], []
    for S_b in np.array_split(S, batches):
        mu, C = _posterior_given_chain(s2[0] * S_b[:, 0], lam, y, T)  # the same for every layer
        K_tilde = np.broadcast_to(np.diag(lam), (len(S_b), P, P))
        layers = []
        for layer in range(1, depth + 1):
            mean_term, cov_diag = _spike_given_chain(S_b[:, layer - 1], mu, C)
            spike = width ** (2 * gamma - 2) * mean_term
            spike[:, idx, idx] += cov_diag / width
            K_tilde = spike + s2[layer - 1] * bulk * K_tilde
            layers.append(Q @ K_tilde.mean(axis=0) @ Q.T)
        batch_K.append(layers)
        batch_U.append(S_b[:, depth - 1].mean(axis=0))
    batch_K, U_batches = np.asarray(batch_K), np.asarray(batch_U)
    kernels = np.concatenate([K0[None], batch_K.mean(axis=0)])
    kernels_se = np.concatenate([np.zeros_like(K0)[None],
                                 batch_K.std(axis=0, ddof=1) / np.sqrt(batches)])
    return FiniteWidthMoments(
        readout_second_moment=U_batches.mean(axis=0),
        readout_second_moment_se=U_batches.std(axis=0, ddof=1) / np.sqrt(batches),
        kernels=kernels, kernels_se=kernels_se,
        S_mean=S.mean(axis=0), ess=ess, num_draws=len(S), divergences=divergences)
