"""The neural tangent kernel of infinitely wide lazy networks, and the predictor of Langevin learning.

Parametrisation (DESIGN.md, ``widebayes.networks``): ``z_1 = W_1 x / sqrt(N0)``,
``z_l = W_l phi(z_{l-1}) / sqrt(N)``, ``f(x) = a . phi(z_L) / sqrt(N)`` (the lazy readout,
gamma = 1/2) with ``W_l[i, j] ~ N(0, sigma_l^2)``, ``a[i, r] ~ N(0, sigma_a^2)``: the weights are
O(1) and the fan-in scaling sits in the forward map (the "NTK parametrisation").  Input kernel
``K_0 = x . x' / N0``; NNGP recursion ``C_l = sigma_l^2 K_{l-1}``, ``K_l = E_{N(0, C_l)}[phi phi]``
(:mod:`widebayes.theory.nngp`), and the derivative kernels ``Kd_l = E_{N(0, C_l)}[phi' phi']``.

**The NTK** ``Theta(x, x') = sum_b M_b J_b(x) . J_b(x')`` (``J_b = df/dtheta_b``; ``M_b`` the
sampler's per-block step scale, 1 for ``preconditioner = "isotropic"``) converges as N -> inf to
(Jacot, Gabriel & Hongler 2018; Arora et al. 2019, Eq. 7, in this parametrisation)

    Theta = M_a K_L + sum_{l=1}^{L} M_l  B_l * K_{l-1},
    B_L = sigma_a^2 Kd_L,    B_{l-1} = sigma_{l}^2 Kd_{l-1} * B_l        (* elementwise),

``B_l(x, x') = lim sum_i df/dz_{l,i}(x) df/dz_{l,i}(x')`` the backward kernel.  The readout's
term ``K_L`` carries no ``sigma_a^2`` (df/da does not contain a); the lazy output GP kernel is
``sigma_a^2 K_L``.  Deep linear network: ``Theta = (prod_l sigma_l^2 + sigma_a^2 sum_l
prod_{k != l} sigma_k^2) K_0`` (isotropic).

**The non-lazy readout** ``f = a . phi / N`` (gamma = 1) has the NTK ``Theta_lazy / N``, which
vanishes as N -> inf: in paper time gradient flow takes a time O(N) to fit, while the features
move by O(1) (the mean-field regime): the lazy limit does not hold, and the functions that take
an :class:`~widebayes.experiment.Experiment` refuse gamma != 1/2 (``InputError``).

**The Langevin dynamics** the sampler runs (``kind = "langevin"``, ``widebayes.experiment``): per
block ``theta_b <- theta_b - eps M_b grad U + sqrt(2 eps M_b) xi``, ``U = L / T + |theta|^2 /
(2 sigma_b^2)``, ``L = 1/2 sum (y - f)^2``, ``T = T_eff``.  With the clock ``t = eps / T`` per step
(the paper time of ``Experiment.paper_time_per_step`` when M = 1) it is the Euler step of

    d theta_b = -M_b grad_b L dt - (T M_b / sigma_b^2) theta_b dt + sqrt(2 T M_b) dB_b,        (1)

the perspective's Eq. 14 for M = 1, started at a prior draw.

*First phase (gradient-driven), the linearised SDE* (:func:`linearised_prediction`).  For
``t << sigma^2 / T`` the weight decay is negligible and the kernel stays at its initial value:
the network is its linearisation ``f_t = f_0 + J_0 (theta_t - theta_0)`` under
``d theta = -M J_0^T (f - y) dt + sqrt(2 T M) dB``.  Then (``E_t = exp(-Theta t)``, per output;
``f_0`` the NNGP prior with covariance ``K = sigma_a^2 K_L``)

    train:  mean = (I - E_t) y,   cov = E_t K E_t + T (I - E_t^2),
    test:   mean = Theta_xX Theta^{-1} (I - E_t) y,
            f_t(x) = f_0(x) - Theta_xX Theta^{-1} (I - E_t) f_0(X) + noise,
            var_noise(x) = 2 T [t (Theta_xx - A A^T) + sum_i A_i^2 (1 - exp(-2 lam_i t)) / (2 lam_i)]

with ``Theta = V diag(lam) V^T``, ``A_i = (Theta_xX V)_i / sqrt(lam_i)``: the test predictor
diffuses (variance growing like 2 T t) in the directions the data do not constrain, the start
of the second phase.  T = 0 is gradient flow (Lee et al. 2019, Eqs. 9-10).

*Both phases, the mean predictor* (:func:`langevin_mean`).  As N -> inf each weight moves by
O(N^-1/2): every weight is, to leading order, the prior's Ornstein-Uhlenbeck process of (1),
stationary from a prior draw, with correlation ``rho_b(tau) = exp(-T M_b tau / sigma_b^2)``
across a lag tau, and f responds linearly to the error ``y - f``.  The free predictor's
autocorrelation is the two-time NNGP kernel (:func:`two_time_kernel`)

    C(tau; x, x') = sigma_a^2 rho_a(tau) K_L(tau; x, x'),   the recursion with
    C_l(tau) = sigma_l^2 rho_l(tau) K_{l-1}(tau) across times (equal-time variances unchanged),

and by the fluctuation-dissipation theorem of the reversible dynamics (1) the response kernel
is ``Theta(tau) = -C'(tau) / T`` (``Theta(0)`` is the NTK above: tested), so the mean predictor
``m_t = E[f_t]`` (over initialisations and noise) obeys the Volterra equation

    m_t(x) = int_0^t Theta(t - s; x, X) (y - m_s(X)) ds.                                     (2)

For ``t << sigma^2/T`` the kernel is frozen at the NTK: ``m_t(X) = (I - exp(-Theta t)) y``, the
gradient-driven phase.  On the time scale ``sigma^2/T`` it decays, and (final-value theorem,
``int_0^inf Theta = C(0)/T``) ``m_inf = k(x)^T (K + T I)^{-1} y``, the NNGP posterior mean at
temperature T (:func:`widebayes.theory.gp.gp_posterior`): the diffusive phase relaxes the
predictor from the NTK predictor to the Bayesian one.  This is the picture of Avidan, Li &
Sompolinsky (arXiv 2309.04522; the perspective's ref. 39, Fig. 4) whose time-dependent kernel
they call the neural dynamical kernel; the form (2) with ``Theta(tau) = -C'(tau)/T`` is derived
here (its text is not among the project's sources) and checked: against the NTK at tau = 0, the
exact single-exponential solution of deep linear networks, the GP posterior at t -> inf, and
Langevin samples (``tests/test_two_phases.py``).

Arrays are float64 NumPy; rows are inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from widebayes import quadrature
from widebayes.activations import Activation, as_activation, kernel_cross
from widebayes.errors import InputError
from widebayes.theory.gp import as_2d
from widebayes.theory.nngp import input_kernel, layer_variances

#: central-difference step of phi' for activations without a closed-form derivative kernel
DERIVATIVE_STEP = 1e-5


# ----------------------------------------------------------------------------- derivative kernel


def phi_prime_np(activation: Activation):
    """``phi'(z)`` on NumPy arrays by the central difference ``(phi(z + h) - phi(z - h)) / 2h``,
    ``h = DERIVATIVE_STEP (1 + |z|)`` (error ``h^2 phi''' / 6``, about 1e-10 for smooth phi)."""
    phi = activation.phi_np

    def prime(z):
        h = DERIVATIVE_STEP * (1.0 + np.abs(z))
        return (phi(z + h) - phi(z - h)) / (2.0 * h)

    return prime


def derivative_kernel(activation, c12, c11, c22):
    """``E[phi'(u) phi'(v)]``, ``(u, v) ~ N(0, [[c11, c12], [c12, c22]])``, elementwise.

    The closed form ``Activation.derivative_kernel`` where there is one (linear: 1; erf sigmoid;
    relu: the arc-cosine kernel of degree 0; relu^2); otherwise the adaptive trapezoid rule of
    the NNGP kernel maps (:func:`widebayes.quadrature.trapezoid_kernel`) on :func:`phi_prime_np`.
    By Price's theorem it is ``d E[phi(u) phi(v)] / d c12``.
    """
    act = as_activation(activation)
    if act.derivative_kernel is not None:
        return act.derivative_kernel(c12, c11, c22)
    return quadrature.trapezoid_kernel(phi_prime_np(act), c12, c11, c22)


# ----------------------------------------------------------------------------- the NTK


class NTK(NamedTuple):
    """The infinite-width NTK and the NNGP output kernel beside it.

    Attributes
    ----------
    train : ndarray (P, P)
        ``Theta(X, X)``.
    cross : ndarray (P, P_test) or None
        ``Theta(X, x_test)``.
    test_diag : ndarray (P_test,) or None
        ``Theta(x, x)`` on the test inputs.
    blocks : dict
        Each block's term on the training inputs (``"W1" ... "WL"``, ``"a"``), ``M_b`` included;
        they sum to ``train``.
    gp_train, gp_cross, gp_test_diag : ndarray or None
        The NNGP output kernel ``sigma_a^2 K_L`` (the prior covariance of f_0).
    """

    train: np.ndarray
    cross: np.ndarray | None
    test_diag: np.ndarray | None
    blocks: dict
    gp_train: np.ndarray
    gp_cross: np.ndarray | None
    gp_test_diag: np.ndarray | None


def block_names(depth: int) -> list[str]:
    """Parameter blocks of an untied network, bottom to top: ``W1 .. WL, a``."""
    return [f"W{layer}" for layer in range(1, depth + 1)] + ["a"]


def _scales(block_scales: Mapping | None, depth: int) -> dict:
    names = block_names(depth)
    scales = {name: 1.0 for name in names}
    for name, value in (block_scales or {}).items():
        if name not in scales:
            raise InputError(f"no parameter block {name!r}; blocks are {names}", key="block_scales")
        scales[name] = float(value)
    return scales


def ntk_kernels(X_train, activation, sigma_w2: float | Sequence[float], sigma_a2: float, X_test=None,
                block_scales: Mapping | None = None) -> NTK:
    """The infinite-width NTK of a lazy network on training (and test) inputs.

    ``Theta = M_a K_L + sum_l M_l B_l * K_{l-1}``, ``B_L = sigma_a^2 Kd_L``,
    ``B_{l-1} = sigma_l^2 Kd_{l-1} * B_l`` (module docstring; Arora et al. 2019, Eq. 7).

    Parameters
    ----------
    X_train : array (P, N0)
    activation : str or Activation
    sigma_w2 : sequence of float, length L
    sigma_a2 : float
    X_test : array (P_test, N0), optional
    block_scales : mapping, optional
        Step scale ``M_b`` per block (``"W1" ... "WL"``, ``"a"``); default 1 (isotropic).

    Returns
    -------
    NTK
    """
    act = as_activation(activation)
    s2 = layer_variances(sigma_w2)
    M = _scales(block_scales, s2.size)
    X_train = np.asarray(X_train, dtype=np.float64)
    Z = X_train if X_test is None else np.vstack([X_train, np.asarray(X_test, dtype=np.float64)])
    P = X_train.shape[0]
    # columns: training then test inputs; rows: training inputs; diag: every input's variance
    K, diag = input_kernel(X_train, Z), np.sum(Z**2, axis=1) / Z.shape[1]
    Ks, Kds = [K], []
    for s in s2:
        C, d = s * K, s * diag
        K = kernel_cross(act, C, d[:P], d)
        Kds.append(derivative_kernel(act, C, d[:P, None], d[None, :]))
        diag = act.kernel(d, d, d)
        Ks.append(K)
    test_diags = _test_diagonals(act, s2, Z[P:]) if X_test is not None else None
    terms, B = {"a": M["a"] * Ks[-1]}, sigma_a2 * Kds[-1]
    terms_diag = None if test_diags is None else {"a": M["a"] * test_diags[0][-1]}
    Bd = None if test_diags is None else sigma_a2 * test_diags[1][-1]
    for layer in range(s2.size, 0, -1):
        name = f"W{layer}"
        terms[name] = M[name] * B * Ks[layer - 1]
        if Bd is not None:
            terms_diag[name] = M[name] * Bd * test_diags[0][layer - 1]
        if layer > 1:
            B = s2[layer - 1] * Kds[layer - 2] * B
            Bd = None if Bd is None else s2[layer - 1] * test_diags[1][layer - 2] * Bd
    total = sum(terms.values())
    train = quadrature.symmetric_part(total[:, :P])
    blocks = {name: quadrature.symmetric_part(terms[name][:, :P]) for name in block_names(s2.size)}
    gp = sigma_a2 * Ks[-1]
    if X_test is None:
        return NTK(train, None, None, blocks, quadrature.symmetric_part(gp), None, None)
    return NTK(train, total[:, P:], sum(terms_diag.values()), blocks, quadrature.symmetric_part(gp[:, :P]),
               gp[:, P:], sigma_a2 * test_diags[0][-1])


def _test_diagonals(act: Activation, s2, X_test):
    """``K_l(x, x)`` (l = 0..L) and ``Kd_l(x, x)`` (l = 1..L) on the test inputs."""
    diag = np.sum(X_test**2, axis=1) / X_test.shape[1]
    Ks, Kds = [diag], []
    for s in s2:
        d = s * diag
        Kds.append(derivative_kernel(act, d, d, d))
        diag = act.kernel(d, d, d)
        Ks.append(diag)
    return Ks, Kds


def linear_ntk_factor(sigma_w2: Sequence[float], sigma_a2: float) -> float:
    """Deep linear network, isotropic: ``Theta = c K_0`` with
    ``c = prod_l sigma_l^2 + sigma_a^2 sum_l prod_{k != l} sigma_k^2`` (module docstring)."""
    s2 = layer_variances(sigma_w2)
    return float(np.prod(s2) + sigma_a2 * sum(np.prod(np.delete(s2, i)) for i in range(s2.size)))


# ----------------------------------------------------------------------------- two-time kernel


def decay_rates(sigma_w2, sigma_a2: float, T: float, block_scales: Mapping | None = None) -> dict:
    """Prior relaxation rate of each block under (1): ``T M_b / sigma_b^2`` (inverse time)."""
    s2 = layer_variances(sigma_w2)
    M = _scales(block_scales, s2.size)
    rates = {f"W{layer}": T * M[f"W{layer}"] / s2[layer - 1] for layer in range(1, s2.size + 1)}
    rates["a"] = T * M["a"] / float(sigma_a2)
    return rates


def two_time_kernel(X_train, activation, sigma_w2, sigma_a2: float, rates: Mapping, lags, X_test=None):
    """The free predictor's autocorrelation ``C(tau; x, x') = E[f^0_{t+tau}(x) f^0_t(x')]``.

    Each block is the prior's Ornstein-Uhlenbeck process with correlation
    ``rho_b = exp(-rate_b tau)`` across the lag; the NNGP recursion then runs on the two-time
    covariances ``C_l(tau) = sigma_l^2 rho_l K_{l-1}(tau)`` with the equal-time variances
    ``sigma_l^2 K_{l-1}(x, x)`` on the diagonal blocks, and ``C = sigma_a^2 rho_a K_L(tau)``.
    At tau = 0 it is the NNGP output kernel ``sigma_a^2 K_L``.

    Parameters
    ----------
    X_train : array (P, N0)
    activation : str or Activation
    sigma_w2, sigma_a2 : prior variances
    rates : mapping
        ``rate_b`` per block (:func:`decay_rates`).
    lags : array (n,)
        Lags tau >= 0.
    X_test : array (P_test, N0), optional

    Returns
    -------
    ndarray (n, P, P + P_test)
        Rows: training inputs; columns: training then test inputs.
    """
    act = as_activation(activation)
    s2 = layer_variances(sigma_w2)
    lags = np.asarray(lags, dtype=np.float64)[:, None, None]
    X_train = np.asarray(X_train, dtype=np.float64)
    Z = X_train if X_test is None else np.vstack([X_train, np.asarray(X_test, dtype=np.float64)])
    P = X_train.shape[0]
    K, diag = input_kernel(X_train, Z)[None], np.sum(Z**2, axis=1) / Z.shape[1]
    for layer, s in enumerate(s2, start=1):
        d = s * diag
        K = act.kernel(s * np.exp(-rates[f"W{layer}"] * lags) * K, d[None, :P, None], d[None, None, :])
        diag = act.kernel(d, d, d)
    return sigma_a2 * np.exp(-rates["a"] * lags) * K


# ----------------------------------------------------------------------------- first phase


class LinearisedPrediction(NamedTuple):
    """Mean and variance of f_t under the linearised SDE (first phase), at each time.

    Attributes
    ----------
    times : ndarray (n,)
    train_mean : ndarray (n, P, m)
    train_var : ndarray (n, P)
        The same for every output.
    test_mean : ndarray (n, P_test, m) or None
    test_var : ndarray (n, P_test) or None
    train_loss : ndarray (n,)
        ``E[L_t] = 1/2 sum_{mu, r} E[(f_t - y)^2] = 1/2 (|mean - Y|^2 + m tr cov)``.
    """

    times: np.ndarray
    train_mean: np.ndarray
    train_var: np.ndarray
    test_mean: np.ndarray | None
    test_var: np.ndarray | None
    train_loss: np.ndarray


def linearised_prediction(ntk: NTK, Y, T: float, times) -> LinearisedPrediction:
    """f_t of the linearised network under ``d theta = -M J^T (f - y) dt + sqrt(2 T M) dB``.

    The first phase of (1) (module docstring): kernel frozen at the NTK, weight decay dropped
    (it acts on the time scale sigma^2/T).  Train: mean ``(I - E_t) y``, covariance
    ``E_t K E_t + T (I - E_t^2)``, ``E_t = exp(-Theta t)``, ``K`` the NNGP output kernel; test:
    mean ``Theta_xX Theta^{-1} (I - E_t) y`` and the variance of
    ``f_0(x) - Theta_xX Theta^{-1} (I - E_t) f_0(X)`` plus the noise's
    ``2 T [t (Theta_xx - sum_i A_i^2) + sum_i A_i^2 (1 - e^{-2 lam_i t}) / (2 lam_i)]``,
    ``A = Theta_xX V diag(lam)^{-1/2}``.  T = 0 is gradient flow from the prior (Lee et al.
    2019, Eqs. 9-10).  Theta must be positive definite.

    Parameters
    ----------
    ntk : NTK
    Y : array (P,) or (P, m)
    T : float
        T_eff (0 for gradient flow).
    times : array (n,)
        Times t >= 0 in the clock of (1).
    """
    Y, t = as_2d(Y), np.asarray(times, dtype=np.float64)
    lam, V = np.linalg.eigh(ntk.train)
    if lam[0] <= 0:
        raise ValueError("the NTK on the training inputs is singular: the first phase needs it invertible")
    decay = np.exp(-lam[None, :] * t[:, None])                              # (n, P)
    Yv, Kv = V.T @ Y, V.T @ ntk.gp_train @ V
    train_mean = np.einsum("ij,nj,jr->nir", V, 1.0 - decay, Yv)
    noise_v = T * np.eye(lam.size) * (1.0 - decay**2)[:, :, None]
    cov_v = decay[:, :, None] * Kv[None] * decay[:, None, :] + noise_v
    train_var = np.einsum("ij,njk,ik->ni", V, cov_v, V)
    resid = train_mean - Y[None]
    loss = 0.5 * (np.sum(resid**2, axis=(1, 2)) + Y.shape[1] * np.einsum("njj->n", cov_v))
    if ntk.cross is None:
        return LinearisedPrediction(t, train_mean, train_var, None, None, loss)
    G = ntk.cross.T @ V / lam                                                # Theta_xX Theta^{-1} V
    test_mean = np.einsum("xj,nj,jr->nxr", G, 1.0 - decay, Yv)
    # initial-condition part: f_0(x) - sum_j G_xj (1 - e_j) (V^T f_0(X))_j
    Gt = G[None] * (1.0 - decay)[:, None, :]                                 # (n, P_test, P)
    cross_v = ntk.gp_cross.T @ V                                             # Cov(f_0(x), V^T f_0(X))
    init_var = (ntk.gp_test_diag[None] - 2.0 * np.sum(Gt * cross_v[None], axis=2)
                + np.einsum("nxj,jk,nxk->nx", Gt, Kv, Gt))
    A2 = (ntk.cross.T @ V) ** 2 / lam                                        # A_i^2
    relax = (1.0 - np.exp(-2.0 * lam[None, :] * t[:, None])) / (2.0 * lam[None, :])
    noise_var = 2.0 * T * (t[:, None] * (ntk.test_diag - A2.sum(axis=1))[None] + relax @ A2.T)
    test_var = np.maximum(init_var + noise_var, 0.0)
    return LinearisedPrediction(t, train_mean, train_var, test_mean, test_var, loss)


# ----------------------------------------------------------------------------- both phases


class LangevinMean(NamedTuple):
    """The mean predictor of Eq. (2) on a time grid (``times[0] = 0``).

    Attributes
    ----------
    times : ndarray (n,)
    train : ndarray (n, P, m)
    test : ndarray (n, P_test, m) or None
    """

    times: np.ndarray
    train: np.ndarray
    test: np.ndarray | None

    def at(self, t) -> tuple:
        """``(train, test)`` means at times ``t`` (linear interpolation on the grid)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        idx = np.clip(np.searchsorted(self.times, t) - 1, 0, self.times.size - 2)
        w = ((t - self.times[idx]) / (self.times[idx + 1] - self.times[idx]))[:, None, None]
        train = (1 - w) * self.train[idx] + w * self.train[idx + 1]
        test = None if self.test is None else (1 - w) * self.test[idx] + w * self.test[idx + 1]
        return train, test


def time_grid(t_min: float, t_max: float, points_per_decade: int) -> np.ndarray:
    """``0`` and a geometric grid from ``t_min`` to ``t_max``."""
    if not 0 < t_min < t_max:
        raise ValueError(f"need 0 < t_min < t_max, got {t_min}, {t_max}")
    n = int(np.ceil(points_per_decade * np.log10(t_max / t_min))) + 1
    return np.concatenate([[0.0], np.geomspace(t_min, t_max, n)])


def solve_volterra(lags, C_table, Y, T: float, times, num_train: int) -> LangevinMean:
    """Eq. (2) with ``Theta(tau) = -C'(tau) / T`` on the grid ``times`` (``times[0] = 0``).

    The error ``e_s = y - m_s(X)`` is taken constant on each step ``(t_k, t_{k+1}]`` at its value
    at ``t_{k+1}`` (implicit: the rectangle rule, L-stable, first order in the step), and the
    kernel is integrated exactly over the step: ``int_{t_k}^{t_{k+1}} Theta(t_n - s) ds =
    (C(t_n - t_{k+1}) - C(t_n - t_k)) / T``, C linearly interpolated in the lag from ``C_table``.

    Parameters
    ----------
    lags : array (n_lag,)
        Increasing, ``lags[0] = 0``, ``lags[-1] >= times[-1]``.
    C_table : array (n_lag, P, Q)
        ``C(lag)`` rows: training inputs; columns: training (first P) then test inputs.
    Y : array (P,) or (P, m)
    T : float
    times : array (n,)
    num_train : int
    """
    Y, lags, times = as_2d(Y), np.asarray(lags, dtype=np.float64), np.asarray(times, dtype=np.float64)
    P, Q = num_train, C_table.shape[2]
    out = np.zeros((times.size, Q, Y.shape[1]))
    err = np.zeros((times.size, P, Y.shape[1]))                              # e at each grid time
    err[0] = Y
    eye = np.eye(P)
    for n in range(1, times.size):
        L = times[n] - times[: n + 1]                                        # lags to t_0 .. t_n
        idx = np.clip(np.searchsorted(lags, L, side="right") - 1, 0, lags.size - 2)
        w = ((L - lags[idx]) / (lags[idx + 1] - lags[idx]))[:, None, None]
        C = (1.0 - w) * C_table[idx] + w * C_table[idx + 1]                  # (n + 1, P, Q)
        D = (C[1:] - C[:-1]) / T                                             # (n, P, Q), step k
        rest = np.einsum("kpq,kpr->qr", D[:-1], err[1:n]) if n > 1 else 0.0
        last = D[-1]
        m_train = np.linalg.solve(eye + last[:, :P].T, last[:, :P].T @ Y + (rest[:P] if n > 1 else 0.0))
        err[n] = Y - m_train
        out[n] = last.T @ err[n] + rest
    return LangevinMean(times, out[:, :P], out[:, P:] if Q > P else None)


def langevin_mean(X_train, Y, activation, sigma_w2, sigma_a2: float, T: float, t_max: float, X_test=None,
                  block_scales: Mapping | None = None, t_min: float | None = None,
                  points_per_decade: int = 150, lags_per_point: int = 4) -> LangevinMean:
    """The mean predictor ``m_t = E[f_t]`` of Langevin learning (1) at infinite width, Eq. (2).

    Parameters
    ----------
    X_train, Y : arrays (P, N0), (P,) or (P, m)
    activation : str or Activation
    sigma_w2, sigma_a2 : prior variances
    T : float
        T_eff (> 0).
    t_max : float
        Last time (clock of (1)).
    X_test : array, optional
    block_scales : mapping, optional
        ``M_b`` per block (default 1: isotropic).
    t_min : float, optional
        First nonzero grid time; default ``0.01 / lam_max(Theta)``.
    points_per_decade : int
        Time-grid density (ratio ``10^(1/points_per_decade)`` between grid times).
    lags_per_point : int
        Density of the lag table of C relative to the time grid.

    Returns
    -------
    LangevinMean
    """
    if not T > 0:
        raise ValueError("the Langevin mean needs T > 0 (T = 0 is gradient flow: linearised_prediction)")
    rates = decay_rates(sigma_w2, sigma_a2, T, block_scales)
    if t_min is None:
        ntk = ntk_kernels(X_train, activation, sigma_w2, sigma_a2, block_scales=block_scales)
        t_min = 0.01 / float(np.linalg.eigvalsh(ntk.train)[-1])
    times = time_grid(t_min, t_max, points_per_decade)
    lags = time_grid(t_min / lags_per_point, t_max, points_per_decade * lags_per_point)
    C = two_time_kernel(X_train, activation, sigma_w2, sigma_a2, rates, lags, X_test)
    return solve_volterra(lags, C, Y, T, times, np.asarray(X_train).shape[0])


# ----------------------------------------------------------------------------- experiments


def check_lazy_network(spec) -> None:
    """Refuse networks outside the lazy NTK limit (``InputError``): gamma != 1/2, tied weights."""
    if spec.gamma != 0.5:
        raise InputError(f"the NTK limit needs the lazy readout 1/sqrt(N) (gamma = 1/2), got gamma = "
                         f"{spec.gamma}: with 1/N^gamma the NTK is Theta_lazy / N^(2 gamma - 1), which "
                         "vanishes as N -> inf while the features move by O(1) (mean-field regime)",
                         key="network.readout")
    if spec.tied_weights and spec.depth > 1:
        raise InputError("the NTK here is for independent layers; tied hidden weights are not covered",
                         key="network.tied_weights")


def experiment_arguments(exp) -> dict:
    """The NTK's arguments from an :class:`~widebayes.experiment.Experiment` (lazy
    ``network_prior`` networks; ``InputError`` otherwise): inputs, activation, prior variances,
    ``T = T_eff`` and the block scales M of its preconditioner.  Its clock, ``t = step_size /
    T_eff`` per step, is the paper time for ``preconditioner = "isotropic"``."""
    check_lazy_network(exp.spec)
    if exp.model != "network_prior":
        raise InputError(f"the NTK describes the model network_prior, not {exp.model!r}", key="network.model")
    s = exp.spec
    X_test = exp.data.X_test if len(exp.data.X_test) else None
    return {"X_train": exp.data.X_train, "activation": s.activation, "sigma_w2": list(s.sigma_w2),
            "sigma_a2": float(s.sigma_a2), "X_test": X_test, "block_scales": dict(exp.preconditioner),
            "T": float(exp.T_eff)}


def time_per_step(exp) -> float:
    """The clock of (1) per sampler step: ``step_size / T_eff``."""
    return exp.step_size / exp.T_eff
