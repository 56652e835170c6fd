"""The collapsed readout: the readout weights integrated out exactly, and drawn back exactly.

Given the hidden weights W, the network is linear in its readout ``a`` (N x m):
with the last hidden layer's features ``Phi = phi(z_L)`` (P x N) on the training inputs,

    f = Phi a / N**gamma,   a[i, r] ~ N(0, sigma_a2),   Y = f + noise,  noise[mu, r] ~ N(0, T_eff),

(DESIGN.md conventions; ``gamma = 1/2`` lazy, ``1`` non-lazy, any number in between).  Write
``s = sigma_a2 / N**(2 gamma)`` and the two Gram systems, of which only the smaller is ever formed:

    C = s Phi Phi^T + T_eff I_P      (P x P, the "samples" form),
    A = s Phi^T Phi + T_eff I_N      (N x N, the "features" form).

Marginal likelihood (Bayesian linear regression as a Gaussian process with the finite-width
feature kernel ``s Phi Phi^T``; Rasmussen & Williams 2006, eq. 2.30), each output column
``y_r ~ N(0, C)`` independently:

    log p(Y | W) = -1/2 sum_r y_r^T C^-1 y_r - m/2 log det C - P m/2 log(2 pi).

Its gradient (R&W eq. 5.9, ``d log p = 1/2 tr((alpha alpha^T - m C^-1) dC)`` with
``alpha = C^-1 Y`` (P x m) and ``dC = s (dPhi Phi^T + Phi dPhi^T)``):

    d log p / d Phi   = s (alpha (Phi^T alpha)^T - m C^-1 Phi),
    d log p / d Y     = -alpha,
    d log p / d s     = 1/2 (|Phi^T alpha|^2 - m tr(Phi^T C^-1 Phi)),
    d log p / d T_eff = 1/2 (|alpha|^2 - m tr C^-1),   tr C^-1 = (P - s tr(Phi^T C^-1 Phi)) / T_eff,

the last from taking the trace of ``C C^-1 = I``.  Every term needs only ``alpha`` and
``Q = C^-1 Phi`` (P x N), and those come from either Gram system:

- push-through identity: ``C Phi = Phi A``, hence ``Q = C^-1 Phi = Phi A^-1``;
- Woodbury (R&W eq. A.9): ``C^-1 = (I_P - s Phi A^-1 Phi^T) / T_eff``, hence
  ``alpha = (Y - s Phi A^-1 Phi^T Y) / T_eff``;
- determinant lemma (R&W eq. A.10): ``det C = T_eff**(P - N) det A``.

So the features form costs O(P N^2 + N^3) and the samples form O(N P^2 + P^3); the form is chosen
by the static shape (``N <= P``: features).

Readout conditional (R&W eq. 2.8, the weight-space view): given W and Y the readout columns are
independent, ``a_r | W, Y ~ N(mu_r, Sigma)`` with

    Sigma = (I_N / sigma_a2 + Phi^T Phi / (T_eff N**(2 gamma)))^-1 = sigma_a2 T_eff A^-1
          = sigma_a2 (I_N - s Phi^T C^-1 Phi),
    mu    = Sigma Phi^T Y / (T_eff N**gamma) = sigma_a2 Phi^T C^-1 Y / N**gamma
          = sigma_a2 A^-1 Phi^T Y / N**gamma.

An exact draw in either form by Matheron's rule (Hoffman & Ribak 1991; Wilson et al. 2020,
"Efficiently sampling functions from Gaussian process posteriors", ICML, sec. 3): with
``a0 ~ N(0, sigma_a2)`` (N x m) and ``eps ~ N(0, T_eff)`` (P x m),

    a = a0 + sigma_a2 Phi^T C^-1 (Y - Phi a0 / N**gamma - eps) / N**gamma  ~  N(mu, Sigma) per column,

because (a, y) are jointly Gaussian with ``Cov(a, y) = sigma_a2 Phi^T / N**gamma`` and ``Cov(y) = C``.

Rao-Blackwellised predictor on test features ``Phi_*`` (Q x N) (R&W eqs. 2.25-2.26 with kernel
``s Phi Phi^T``): mean ``Phi_* mu / N**gamma`` (Q x m) and variance, the same for every output,

    diag(Phi_* Sigma Phi_*^T) / N**(2 gamma) = s T_eff diag(Phi_* A^-1 Phi_*^T)
                                             = s |phi_*|^2 - s^2 diag(Phi_* Phi^T C^-1 Phi Phi_*^T).

The choice of linear algebra (``method``), measured by ``python -m widebayes.collapsed_bench``:
one log density and its gradient wrt the hidden weights through a depth-1 sigmoid network
(non-lazy, N0 = N + 20, m = 3, T = 0.01), float32, XLA:CPU on 2 cores shared with other engineers'
jobs (load average 3-11), medians of 15 interleaved repeats, as a ratio to the joint
model's log density and gradient (``models.model_logdensity``, today's step), 2026-12-05,
three runs at different moments (ranges over the runs):

===========================================  ==========  ==========  ==========  ==========
N, P                                         100, 100    500, 500    500, 100    100, 500
joint (ms)                                   0.12-0.24   6.6-15      1.4-2.5     0.36-1.4
custom VJP, Cholesky + triangular solves     2.0-3.3x    2.1-3.5x    1.5x        2.5-2.7x
custom VJP, Cholesky + inverse + products    2.8-4.7x    3.0-4.0x    1.2-1.25x   1.9x
custom VJP, LU inverse (``jnp.linalg.inv``)  2.5-4.0x    2.4-2.9x    1.1-1.3x    2.0x
custom VJP, ``eigh``                         5.3-8.7x    4.0-6.2x    1.4-1.7x    3.1-3.3x
autodiff through Cholesky (the prototype)    2.9-4.9x    3.4-4.7x    1.2-1.4x    2.4x
Cholesky of the larger system                                        2.8-2.9x    6.2-7.2x
Newton-Schulz x2, warm-started (no value)    1.9-3.0x    3.2-3.6x    1.0-1.2x    1.8x
===========================================  ==========  ==========  ==========  ==========

all with JAX's LAPACK kernels on one thread.  Those kernels (potrf, trsm, syevd, getrf) run on the
OpenBLAS that jaxlib shares with SciPy, which starts one thread per core; on the shared machine
its threads fight XLA's and each other for the two cores, and the same table with the default
thread count reads 6.6-47x, 5.8-17x, 2.0-13x and 2.9-41x for the Cholesky VJP (autodiff:
39-88x at N = P = 100); XLA's Cholesky of a 500 x 500 matrix alone took 45-69 ms against 2.0-4.7
ms on one thread (SciPy's ``cho_factor``: 8-29 ms against 1.0-1.8 ms).  So the driver should run
JAX on the CPU with the BLAS pool limited to one thread (``threadpoolctl.threadpool_limits(1,
user_api="blas")``, as ``collapsed_bench.blas_threads`` does); the joint step does not use that pool.

The choice: the hand-written VJP on a Cholesky factorisation of the smaller Gram system (``"auto"``):
triangular solves when N and P are within a factor 2 (cheapest at N = P), the explicit inverse
from the Cholesky factor and matrix products otherwise (17-22% cheaper at N/P = 5 or 1/5, and
8-43% dearer at N = P).  Factoring the larger system costs 1.8-2.7x as much.  Autodiff through
the factorisation costs 1.4-1.7x the hand-written gradient at N = P.  ``eigh`` is the slowest.
The iterative inverse (Newton-Schulz ``X <- X (2 I - M X)`` from the previous step's inverse,
matrix products only) saves 4-13% against ``"auto"`` at N = P = 100 and at N/P = 5 or 1/5 and
costs 5-55% more at N = P = 500, once LAPACK runs on one thread; it gives no log density (MALA,
HMC and the divergence check need one), needs state carried between steps, and is inexact: along
whitened-prior moves of step 0.01-0.1 its W1 gradient is off by 1e-4-1e-2 (x2) and 1e-5-5e-4
(x3) against float64, while the float32 Cholesky gradient is off by 1e-6-3e-6 (the four direct
methods 3e-7-3e-5, on this network, a lazy deep linear one at T = 0.001 and a non-lazy ReLU one
at N = P = 200, at prior draws).

Everything here is pure JAX, float32 or float64, jit- and vmap-friendly; shapes decide the form.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, lu_factor, lu_solve, solve_triangular
from jax.scipy.stats import norm

from widebayes.networks import param_prior_variances
from widebayes.observables import layer_features

FORMS = ("features", "samples")
METHODS = ("cholesky", "cholinv", "eigh", "inv")
DEFAULT_METHOD = "auto"  # choose_method: Cholesky; its explicit inverse when N and P differ by 2x


# ----------------------------------------------------------------------------------- linear algebra
def choose_form(num_samples: int, width: int, form: str | None = None) -> str:
    """The Gram system to factor: ``"features"`` (N x N) when ``N <= P``, else ``"samples"`` (P x P)."""
    if form is None:
        return "features" if width <= num_samples else "samples"
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return form


def gram(Phi, s, T_eff, form: str):
    """``A = s Phi^T Phi + T_eff I_N`` (features form) or ``C = s Phi Phi^T + T_eff I_P`` (samples form)."""
    K = Phi.T @ Phi if form == "features" else Phi @ Phi.T
    return s * K + T_eff * jnp.eye(K.shape[0], dtype=K.dtype)


def choose_method(num_samples: int, width: int, method: str = DEFAULT_METHOD) -> str:
    """``"auto"``: ``"cholinv"`` when the larger of N and P is twice the smaller or more, else ``"cholesky"``.

    With n the smaller and k the larger dimension, Q = C^-1 Phi costs 2 n^2 k in triangular solves
    (``"cholesky"``) or 2 n^3 (the inverse) plus 2 n^2 k in matrix products (``"cholinv"``); with
    triangular solves about half as fast per flop as products on the CPU the inverse pays when
    k >= 2 n.  Measured (module docstring): 17-22% less at N/P = 5 or 1/5, 8-43% more at N = P.
    """
    if method != "auto":
        if method not in METHODS:
            raise ValueError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
        return method
    return "cholinv" if max(num_samples, width) >= 2 * min(num_samples, width) else "cholesky"


class Factor(NamedTuple):
    """A factorised symmetric positive-definite matrix M: ``solve(B) = M^-1 B`` and ``log det M``."""

    solve: Callable
    logdet: jnp.ndarray


def factorize(M, method: str = "cholesky") -> Factor:
    """Factor an SPD matrix: Cholesky ``M = L L^T`` and triangular solves (``"cholesky"``), or
    the explicit inverse from it and matrix products (``"cholinv"``); eigendecomposition
    ``M = V diag(w) V^T`` (``"eigh"``); the explicit inverse through LU (``"inv"``).

    ``log det M = 2 sum log L_ii`` (Cholesky), ``sum log w_i`` (eigenvalues), ``sum log |U_ii|``
    (LU; M is positive definite, so the sign is +).
    """
    if method == "cholesky":
        return cholesky_factor(jnp.linalg.cholesky(M))
    if method == "cholinv":
        L = jnp.linalg.cholesky(M)
        inverse = cho_solve((L, True), jnp.eye(M.shape[0], dtype=M.dtype))
        return Factor(lambda B: inverse @ B, 2.0 * jnp.sum(jnp.log(jnp.diagonal(L))))
    if method == "eigh":
        w, V = jnp.linalg.eigh(M)
        return Factor(lambda B: V @ ((V.T @ B) / w[:, None]), jnp.sum(jnp.log(w)))
    if method == "inv":
        lu_piv = lu_factor(M)
        inverse = lu_solve(lu_piv, jnp.eye(M.shape[0], dtype=M.dtype))
        return Factor(lambda B: inverse @ B, jnp.sum(jnp.log(jnp.abs(jnp.diagonal(lu_piv[0])))))
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def cholesky_factor(L) -> Factor:
    """The :class:`Factor` of ``M = L L^T`` from its lower Cholesky factor ``L``."""
    return Factor(lambda B: cho_solve((L, True), B), 2.0 * jnp.sum(jnp.log(jnp.diagonal(L))))


# ----------------------------------------------------------------------------------- marginal likelihood
class Solved(NamedTuple):
    """What the value and every derivative of log p(Y | W) need: alpha = C^-1 Y, log det C, Q = C^-1 Phi."""

    alpha: jnp.ndarray  # (P, m)
    logdet: jnp.ndarray  # log det C
    Q: jnp.ndarray | None  # (P, N), only when asked for


def solve_gram(Phi, Y, s, T_eff, form: str, method: str = "cholesky", with_Q: bool = True) -> Solved:
    """``alpha = C^-1 Y``, ``log det C`` and (``with_Q``) ``Q = C^-1 Phi`` from the ``form`` Gram system."""
    return solve_with(factorize(gram(Phi, s, T_eff, form), method), Phi, Y, s, T_eff, form, with_Q)


def solve_with(fac: Factor, Phi, Y, s, T_eff, form: str, with_Q: bool = True) -> Solved:
    """``Solved`` from a factor ``fac`` of the ``form`` Gram system (A or C).

    Features form: ``alpha = (Y - s Phi A^-1 Phi^T Y) / T_eff`` (Woodbury),
    ``log det C = (P - N) log T_eff + log det A`` (determinant lemma), ``Q = Phi A^-1`` (push-through).
    Samples form: the same quantities from C directly.
    """
    P, N = Phi.shape
    m = Y.shape[1]
    if form == "samples":
        if not with_Q:
            return Solved(fac.solve(Y), fac.logdet, None)
        both = fac.solve(jnp.concatenate([Y, Phi], axis=1))  # one call: [C^-1 Y, C^-1 Phi]
        return Solved(both[:, :m], fac.logdet, both[:, m:])
    logdet = (P - N) * jnp.log(T_eff) + fac.logdet
    if not with_Q:
        return Solved((Y - s * (Phi @ fac.solve(Phi.T @ Y))) / T_eff, logdet, None)
    Qt = fac.solve(Phi.T)  # A^-1 Phi^T = Q^T, so A^-1 Phi^T Y = Q^T Y without a second solve
    return Solved((Y - s * (Phi @ (Qt @ Y))) / T_eff, logdet, Qt.T)


def loglik_value(Y, solved: Solved):
    """``-1/2 sum(Y * alpha) - m/2 log det C - P m/2 log(2 pi)`` (R&W eq. 2.30, per output column)."""
    P, m = Y.shape
    return -0.5 * jnp.sum(Y * solved.alpha) - 0.5 * m * solved.logdet - 0.5 * P * m * jnp.log(2 * jnp.pi)


def loglik_gradients(Phi, Y, s, T_eff, alpha, Q):
    """Gradients of log p(Y | W) wrt (Phi, Y, s, T_eff) from ``alpha = C^-1 Y`` and ``Q = C^-1 Phi``.

    R&W eq. 5.9 with ``dC = s (dPhi Phi^T + Phi dPhi^T)``, ``dC/ds = Phi Phi^T``, ``dC/dT_eff = I``;
    see the module docstring for the four formulas.
    """
    P, m = Y.shape
    u = Phi.T @ alpha  # (N, m) = A^-1 Phi^T Y
    t = jnp.sum(Phi * Q)  # tr(Phi^T C^-1 Phi)
    d_Phi = s * (alpha @ u.T - m * Q)
    d_s = 0.5 * (jnp.sum(u * u) - m * t)
    d_T = 0.5 * (jnp.sum(alpha * alpha) - m * (P - s * t) / T_eff)
    return d_Phi, -alpha, d_s, d_T


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _marginal_loglik(Phi, Y, s, T_eff, form, method):
    return loglik_value(Y, solve_gram(Phi, Y, s, T_eff, form, method, with_Q=False))


def _marginal_loglik_fwd(Phi, Y, s, T_eff, form, method):
    solved = solve_gram(Phi, Y, s, T_eff, form, method, with_Q=True)
    return loglik_value(Y, solved), (Phi, Y, s, T_eff, solved.alpha, solved.Q)


def _marginal_loglik_bwd(form, method, residuals, g):
    return tuple(g * d for d in loglik_gradients(*residuals))


_marginal_loglik.defvjp(_marginal_loglik_fwd, _marginal_loglik_bwd)


def marginal_loglik(Phi, Y, s, T_eff, *, form: str | None = None, method: str = DEFAULT_METHOD):
    """log p(Y | W) with the readout integrated out, and a hand-written gradient (``jax.custom_vjp``).

    Parameters
    ----------
    Phi : (P, N) array
        Last-layer features on the training inputs.
    Y : (P, m) array
        Targets.
    s : scalar
        ``sigma_a2 / N**(2 gamma)``, the prior variance of one feature's contribution to the output.
    T_eff : scalar
        Effective temperature (the Gaussian noise variance).
    form : {None, "features", "samples"}
        Which Gram system to factor; ``None`` (default): the smaller, ``choose_form``.
    method : {"auto", "cholesky", "cholinv", "eigh", "inv"}
        The factorisation (``factorize``); ``"auto"`` (default): ``choose_method``, from the
        measurements in the module docstring.

    Returns
    -------
    scalar
        ``-1/2 sum_r y_r^T C^-1 y_r - m/2 log det C - P m/2 log(2 pi)`` (R&W 2006, eq. 2.30), with
        derivatives wrt ``Phi``, ``Y``, ``s`` and ``T_eff`` from R&W eq. 5.9 (module docstring).
    """
    dtype = Phi.dtype
    form = choose_form(Phi.shape[0], Phi.shape[1], form)
    method = choose_method(Phi.shape[0], Phi.shape[1], method)
    return _marginal_loglik(Phi, jnp.asarray(Y, dtype), jnp.asarray(s, dtype), jnp.asarray(T_eff, dtype),
                            form, method)


# ----------------------------------------------------------------------------------- readout given W
class ReadoutConditional(NamedTuple):
    """``a_r | W, Y ~ N(mean_r, Sigma)`` per output column, held as the Cholesky factor of the smaller
    Gram system (``chol``: of A when ``N <= P``, else of C) and the numbers that define Sigma."""

    mean: jnp.ndarray  # mu (N, m)
    chol: jnp.ndarray  # lower Cholesky factor of A (N x N) or C (P x P)
    Phi: jnp.ndarray  # (P, N) training features
    sigma_a2: jnp.ndarray
    T_eff: jnp.ndarray
    scale: jnp.ndarray  # N**gamma

    @property
    def s(self):
        return self.sigma_a2 / self.scale**2

    @property
    def form(self) -> str:
        return choose_form(*self.Phi.shape)


def _phit_cinv(cond: ReadoutConditional, V):
    """``Phi^T C^-1 V`` = ``A^-1 Phi^T V`` (push-through), from whichever factor ``cond`` holds."""
    if cond.form == "features":
        return cho_solve((cond.chol, True), cond.Phi.T @ V)
    return cond.Phi.T @ cho_solve((cond.chol, True), V)


def readout_conditional(Phi, Y, sigma_a2, T_eff, gamma) -> ReadoutConditional:
    """The Gaussian conditional of the readout given the hidden weights (R&W 2006, eq. 2.8).

    ``mu = sigma_a2 Phi^T C^-1 Y / N**gamma = Sigma Phi^T Y / (T_eff N**gamma)`` with
    ``Sigma = (I_N / sigma_a2 + Phi^T Phi / (T_eff N**(2 gamma)))^-1``; one Cholesky factorisation
    of the smaller Gram system (``N = Phi.shape[1]``; module docstring for the identities).
    """
    dtype = Phi.dtype
    P, N = Phi.shape
    sigma_a2, T_eff = jnp.asarray(sigma_a2, dtype), jnp.asarray(T_eff, dtype)
    scale = jnp.asarray(N, dtype) ** jnp.asarray(gamma, dtype)
    s = sigma_a2 / scale**2
    form = choose_form(P, N)
    chol = jnp.linalg.cholesky(gram(Phi, s, T_eff, form))
    cond = ReadoutConditional(jnp.zeros((N, Y.shape[1]), dtype), chol, Phi, sigma_a2, T_eff, scale)
    return cond._replace(mean=sigma_a2 * _phit_cinv(cond, jnp.asarray(Y, dtype)) / scale)


def readout_covariance(cond: ReadoutConditional):
    """Sigma (N x N): ``sigma_a2 T_eff A^-1`` (features form) or ``sigma_a2 (I - s Phi^T C^-1 Phi)``."""
    N = cond.Phi.shape[1]
    eye = jnp.eye(N, dtype=cond.Phi.dtype)
    if cond.form == "features":
        return cond.sigma_a2 * cond.T_eff * cho_solve((cond.chol, True), eye)
    return cond.sigma_a2 * (eye - cond.s * _phit_cinv(cond, cond.Phi))


def draw_readout(rng_key, cond: ReadoutConditional):
    """An exact draw of the readout a (N x m) from its conditional, by Matheron's rule.

    ``a = mu + a0 - sigma_a2 Phi^T C^-1 (Phi a0 / N**gamma + eps) / N**gamma`` with
    ``a0 ~ N(0, sigma_a2)``, ``eps ~ N(0, T_eff)`` (Wilson et al. 2020, sec. 3): exact in
    distribution, and it needs only the factor of the smaller Gram system.
    """
    P, N = cond.Phi.shape
    k_prior, k_noise = jax.random.split(rng_key)
    shape = cond.mean.shape
    a0 = jnp.sqrt(cond.sigma_a2) * jax.random.normal(k_prior, shape, cond.mean.dtype)
    eps = jnp.sqrt(cond.T_eff) * jax.random.normal(k_noise, (P, shape[1]), cond.mean.dtype)
    return cond.mean + a0 - cond.sigma_a2 * _phit_cinv(cond, cond.Phi @ a0 / cond.scale + eps) / cond.scale


class Predictor(NamedTuple):
    """Rao-Blackwellised predictor given W: mean (Q, m) and variance (Q,), the same for every output."""

    mean: jnp.ndarray
    var: jnp.ndarray


def rao_blackwell_predictor(Phi_test, cond: ReadoutConditional) -> Predictor:
    """Mean and variance of ``f_* = Phi_* a / N**gamma`` under the readout conditional (R&W eqs. 2.25-2.26).

    ``mean = Phi_* mu / N**gamma``; ``var = s T_eff |L_A^-1 Phi_*^T|^2`` (features form) or
    ``s |phi_*|^2 - s^2 |L_C^-1 Phi Phi_*^T|^2`` (samples form), column sums of squares.
    """
    mean = Phi_test @ cond.mean / cond.scale
    if cond.form == "features":
        V = solve_triangular(cond.chol, Phi_test.T, lower=True)
        return Predictor(mean, cond.s * cond.T_eff * jnp.sum(V * V, axis=0))
    V = solve_triangular(cond.chol, cond.Phi @ Phi_test.T, lower=True)
    return Predictor(mean, cond.s * jnp.sum(Phi_test * Phi_test, axis=1) - cond.s**2 * jnp.sum(V * V, axis=0))


# ----------------------------------------------------------------------------------- the network
def readout_prior_scale(spec) -> float:
    """``s = sigma_a2 / N**(2 gamma)``."""
    return spec.sigma_a2 / spec.width ** (2.0 * spec.gamma)


def hidden_prior_logpdf(params: dict, spec) -> jnp.ndarray:
    """log P0(W): the Gaussian prior of the hidden weights (NumPyro's Normal log prob, summed)."""
    variances = param_prior_variances(spec)
    return sum(jnp.sum(norm.logpdf(params[name], 0.0, jnp.sqrt(var)))
               for name, var in variances.items() if name != "a")


def collapsed_logdensity(spec, *, method: str = DEFAULT_METHOD) -> Callable:
    """``f(params_without_a, data, T_eff) -> log P0(W) + log p(Y | W)``: the joint model's marginal in W.

    Equals ``log integral p(W, a, Y) da`` of ``widebayes.models.model_logdensity(network_prior)`` (same
    normalisation); ``params`` may hold an ``a``, which is ignored.  Any depth, tied weights or not.
    """
    s = readout_prior_scale(spec)

    def logdensity(params, data, T_eff):
        Phi = layer_features(params, data["X_train"], spec)[-1]
        return hidden_prior_logpdf(params, spec) + marginal_loglik(Phi, data["Y_train"], s, T_eff,
                                                                   method=method)

    return logdensity


class CompletedDraw(NamedTuple):
    """One recorded draw of the collapsed sampler: the parameters with ``a`` drawn, and the
    Rao-Blackwellised predictor on the training inputs and (``None`` without them) the test inputs."""

    params: dict
    train: Predictor
    test: Predictor | None


def complete_readout(rng_key, params: dict, data: dict, spec, T_eff) -> CompletedDraw:
    """Draw ``a | W, Y`` exactly and compute the Rao-Blackwellised predictor, one factorisation for all.

    ``params`` holds the hidden weights (an ``a`` in it is replaced); ``data`` has ``X_train``,
    ``Y_train`` and optionally ``X_test``.
    """
    Phi = layer_features(params, data["X_train"], spec)[-1]
    cond = readout_conditional(Phi, data["Y_train"], spec.sigma_a2, T_eff, spec.gamma)
    test = None
    if "X_test" in data:
        test = rao_blackwell_predictor(layer_features(params, data["X_test"], spec)[-1], cond)
    a = draw_readout(rng_key, cond)
    return CompletedDraw({**params, "a": a}, rao_blackwell_predictor(Phi, cond), test)
