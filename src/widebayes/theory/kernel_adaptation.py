"""Kernel adaptation of lazy finite-width networks: forward/backward kernel equations.

Large-deviation theory of the layer kernels (Fischer, Lindner, Dahmen, Ringel, Kraemer & Helias,
"Critical feature learning in deep neural networks", ICML 2024; physics-of-AI talk) in the
corrected form of THEORY.md 3.5.1 (lazy scaling gamma = 1/2, ``T = kappa``, m outputs).

Notation.  ``g = [g_1, ..., g_{L+1}] = [sigma_1^2, ..., sigma_L^2, sigma_a^2]``.  The chain of
conditional preactivation covariances is ``C^(1) = g_1 K0`` and, for ``l = 1..L``,

    C^(l+1) = (g_{l+1} / N) sum_i phi(h_i) phi(h_i)^T,    h_i iid N(0, C^(l)),

with output ``Y | C^(L+1) ~ prod_k N(y_k; 0, C^(L+1) + T I)``.  The observable layer kernel is
``K_l = C^(l+1) / g_{l+1}`` (``l = 0..L``; ``K_0 = K0``), the definition of widebayes'
``representations/kernel``: ``E[phi(z_l) phi(z_l)^T]`` (layer 0: the input kernel).

Per-neuron cumulant generating function ``W_l(Ct; C) = ln E_{h ~ N(0, C)} exp(g_{l+1} phi^T Ct phi)``
(the conjugate kernel ``Ct`` carries the 1/N).  The saddle of the action
``S = sum_l N [W_l(Ct^(l+1); C^(l)) - tr Ct^(l+1) C^(l+1)] + sum_k ln N(y_k | 0, C^(L+1) + T)``:

    forward : C^(l+1) = g_{l+1} E_{q_l}[phi phi^T],  q_l ∝ N(h; 0, C^(l)) exp(g_{l+1} phi^T Ct^(l+1) phi)
    backward: Ct^(l)  = dW_l(Ct^(l+1); C^(l)) / dC^(l) = 1/2 C^-1 (E_{q_l}[h h^T] - C) C^-1,  l = 2..L
    boundary: Ct^(L+1) = (1/2N) [K^-1 Y Y^T K^-1 - m K^-1],   K = C^(L+1) + T I.

The backward form is the score-function identity ``d_C E_{N(0,C)} f = 1/2 C^-1 Cov(h h^T, f) C^-1``
applied to ``f = exp(F)``; it needs no derivative of phi (ReLU included).  For linear phi
(THEORY.md 3.5.1): ``C^(l+1) = g C (I - 2 g Ct C)^-1``, ``Ct^(l) = g Ct (I - 2 g C Ct)^-1``.

Nonlinear expectations use Monte Carlo with common random numbers: ``h = C^{1/2} z`` with the
standard normal ``z`` fixed by ``seed`` (per layer and chunk), and a control variate: the tilt
enters only through ``sum_s (w_s - 1/S) phi_s phi_s^T`` added to the exact NNGP kernel map, so
``Ct = 0`` gives the NNGP exactly.  The default ``num_samples = 2**16`` gives a relative Monte
Carlo error of the adaptation ``K - K_NNGP`` of a few percent for P ~ 30; THEORY.md 3.5.3 used
``10**6``.

Test points.  ``K0`` may be the joint kernel of ``P`` training inputs (first, the rows of ``Y``)
and ``P'`` test inputs.  The test outputs enter no likelihood: the action is that of the joint
network with the boundary ``Ct^(L+1)`` zero outside the training block, which is exact in the field
theory (integrating out unobserved outputs leaves the training marginal unchanged: for linear phi
the training blocks of every ``C``, ``Ct`` equal the training-only solution exactly, for nonlinear
phi up to Monte Carlo error), and the kernels' test and cross blocks are the adapted kernels on the
test inputs, the analogue of BPKR's cross kernels (:func:`bpkr.mean_layer_kernels`).

The saddle is the MODE of the rate function, not the posterior mean: in the proportional limit
it misses the learned spike by O(alpha) (THEORY.md 3.5.2); ``method = 'linear_mean'`` gives the
exact posterior-mean kernels of deep linear networks (BPKR, :func:`bpkr.mean_layer_kernels`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq, root
from scipy.special import softmax

from widebayes.activations import Activation, as_activation, kernel_matrix
from widebayes.quadrature import gauss_hermite_1d, psd_sqrt, symmetric_part
from widebayes.theory.bpkr import mean_layer_kernels, solve_U
from widebayes.theory.gp import as_2d

METHODS = ("nngp", "saddle", "perturbative", "linear_mean")
NUM_SAMPLES = 2**16
_CHUNK = 2**15
_GH_NODES = 96


class AdaptedKernels(NamedTuple):
    """Solution of :func:`solve_kernels`.

    Attributes
    ----------
    C : ndarray (L+1, P, P)
        Preactivation covariances ``C^(1) .. C^(L+1)`` (``C^(L+1)`` is the output GP kernel).
    Ct : ndarray (L, P, P) or None
        Conjugate kernels ``Ct^(2) .. Ct^(L+1)`` (None for 'linear_mean').
    layer_kernels : ndarray (L+1, P, P)
        ``K_l = C^(l+1) / g_{l+1}``, ``l = 0..L`` (``K_0 = K0``).
    preact_kernels : ndarray (L, P, P)
        ``E_{q_l}[h h^T]``, the mean of ``z_l z_l^T / N``, ``l = 1..L``.
    residual : float
        Max abs of (fixed-point map - Ct) for 'saddle'; BPKR's residual for 'linear_mean'; 0 else.
    method : str
    tilt_khat : ndarray (L,) or None
        'saddle' with a nonlinear phi: the Pareto k-hat (ArviZ ``psislw``) of each layer's Monte
        Carlo importance weights ``exp(g phi^T Ct phi)`` at the solution.  Above 0.5 the weights'
        variance is infinite and the kernels converge slowly in ``num_samples``; above 0.7 they
        are not to be trusted (measured on perspective Fig. 7's sampled setting: 0.48-0.67, and
        the top layer's learned signal tripled from 2^14 to 2^16 samples).  None otherwise.
    """

    C: np.ndarray
    Ct: np.ndarray | None
    layer_kernels: np.ndarray
    preact_kernels: np.ndarray
    residual: float
    method: str
    tilt_khat: np.ndarray | None = None


class _Setup(NamedTuple):
    act: Activation
    K0: np.ndarray
    Y: np.ndarray
    g: np.ndarray
    N: float
    T: float
    analytic: bool
    num_samples: int
    seed: int


# ----------------------------------------------------------------------------- building blocks


def kernel_map(act: Activation, C) -> np.ndarray:
    """``E_{h ~ N(0, C)}[phi(h) phi(h)^T]`` (symmetric; THEORY.md 1.6)."""
    return kernel_matrix(act, C)


def kernel_map_derivative(act: Activation, C, dC) -> np.ndarray:
    """Directional derivative ``dE[phi phi^T]/dC . dC`` by a central difference of the kernel map."""
    scale = np.abs(dC).max()
    if scale == 0.0:
        return np.zeros_like(dC)
    eps = 1e-5 * max(np.abs(C).max(), 1e-12) / scale
    return (kernel_map(act, C + eps * dC) - kernel_map(act, C - eps * dC)) / (2.0 * eps)


def output_conjugate(C_out, Y, N, T) -> np.ndarray:
    """Boundary ``Ct^(L+1) = (1/2N)[K^-1 Y Y^T K^-1 - m K^-1]``, ``K = C^(L+1) + T I`` (THEORY 3.5.1).

    ``Y`` has a row for each of the first ``P`` inputs of ``C_out``; further inputs (test points)
    carry no likelihood, so their rows and columns of ``Ct^(L+1)`` are zero and ``K`` is the
    ``P x P`` training block (module docstring, "Test points").
    """
    P = Y.shape[0]
    Kinv = np.linalg.inv(C_out[:P, :P] + T * np.eye(P))
    a = Kinv @ Y
    out = np.zeros_like(C_out, dtype=np.float64)
    out[:P, :P] = symmetric_part(a @ a.T - Y.shape[1] * Kinv) / (2.0 * N)
    return out


def _chunks(S: int, P: int, seed: int, layer: int):
    """Standard normal samples (S, P) in chunks, reproducible per (seed, layer, chunk)."""
    for k, start in enumerate(range(0, S, _CHUNK)):
        yield _chunk(min(_CHUNK, S - start), P, seed, layer, k)


@lru_cache(maxsize=8)
def _chunk(n: int, P: int, seed: int, layer: int, k: int) -> np.ndarray:
    """One chunk of common random numbers (cached: the saddle iteration reuses them)."""
    z = np.random.default_rng([seed, layer, k]).standard_normal((n, P))
    z.setflags(write=False)
    return z


def _tilt_moments(s: _Setup, C, Ct, layer: int, mode: str):
    """``sum_s c_s phi_s phi_s^T`` and ``sum_s c_s h_s h_s^T`` over ``h = C^{1/2} z`` (CRN).

    ``F_s = g phi_s^T Ct phi_s``; ``c_s = softmax(F)_s - 1/S`` (mode 'tilt': the exact tilted
    expectation minus the untilted sample mean) or ``c_s = (F_s - mean F) / S`` (mode 'cov': the
    first-order tilt, the sample covariance with F).
    """
    g, R, P = s.g[layer], psd_sqrt(C, symmetric=True), C.shape[0]
    F = np.concatenate([_energy(s.act, z @ R, g, Ct) for z in _chunks(s.num_samples, P, s.seed, layer)])
    c = softmax(F) - 1.0 / F.size if mode == "tilt" else (F - F.mean()) / F.size
    A_phi, A_h, start = np.zeros((P, P)), np.zeros((P, P)), 0
    for z in _chunks(s.num_samples, P, s.seed, layer):
        h = z @ R
        cs = c[start:start + len(z), None]
        f = s.act.phi_np(h)
        A_phi += f.T @ (cs * f)
        A_h += h.T @ (cs * h)
        start += len(z)
    return symmetric_part(A_phi), symmetric_part(A_h)


def _energy(act, h, g, Ct):
    f = act.phi_np(h)
    return g * np.sum((f @ Ct) * f, axis=1)


def _score_gradient(C, A_h):
    """``1/2 C^-1 A_h C^-1``: dE[f]/dC from ``A_h = Cov(h h^T, f)`` (score-function identity)."""
    X = np.linalg.solve(C, A_h)
    return symmetric_part(0.5 * np.linalg.solve(C, X.T))


# ----------------------------------------------------------------------------- one layer


def _forward_layer(s: _Setup, C, Ct, layer: int):
    """``(C^(l+1), E_q[h h^T], Ct^(l) candidate)`` of layer ``l = layer`` given ``C^(l)``, ``Ct^(l+1)``."""
    g = s.g[layer]
    if s.analytic:
        M = np.eye(C.shape[0]) - 2.0 * g * Ct @ C
        C_next = symmetric_part(g * np.linalg.solve(M.T, C.T).T)       # g C (I - 2 g Ct C)^-1
        Ct_prev = symmetric_part(g * np.linalg.solve(M, Ct))           # g (I - 2 g Ct C)^-1 Ct
        return C_next, C_next / g, Ct_prev
    A_phi, A_h = _tilt_moments(s, C, Ct, layer, "tilt")
    Ct_prev = _score_gradient(C, A_h) if layer > 1 else np.zeros_like(C)
    return g * (kernel_map(s.act, C) + A_phi), C + A_h, Ct_prev


def _forward(s: _Setup, Cts):
    """Forward pass given the conjugate kernels ``Cts[l] = Ct^(l+2)``; also the backward candidates."""
    C, Cs, pre, back = s.g[0] * s.K0, [s.g[0] * s.K0], [], []
    for layer, Ct in enumerate(Cts):
        C, E_hh, Ct_prev = _forward_layer(s, C, Ct, layer + 1)
        Cs.append(C), pre.append(E_hh), back.append(Ct_prev)
    return np.stack(Cs), np.stack(pre), back


def _result(s: _Setup, Cs, Cts, pre, residual, method):
    K = Cs / s.g[:, None, None]
    return AdaptedKernels(Cs, None if Cts is None else np.stack(Cts), K, pre, float(residual), method)


# ----------------------------------------------------------------------------- methods


def _nngp(s: _Setup):
    zero = [np.zeros_like(s.K0) for _ in s.g[1:]]
    Cs = [s.g[0] * s.K0]
    for layer in range(1, s.g.size):
        Cs.append(s.g[layer] * kernel_map(s.act, Cs[-1]))
    return _result(s, np.stack(Cs), zero, np.stack(Cs[:-1]), 0.0, "nngp")


def _saddle(s: _Setup, tol: float, max_iter: int):
    """Forward + backward + boundary solved by Newton-Krylov, continued in the boundary's scale.

    The unknowns are the conjugate kernels; the residual is ``Phi(Ct) - Ct`` with the boundary
    ``lam Ct^(L+1)`` (``lam = 1``: the network; ``lam < 1``: a network ``1/lam`` times wider).
    The continuation tries ``lam = 1`` at once and shortens the step where Newton fails.
    (Following the path on a quarter of the Monte Carlo samples first did not help: the last
    solve with all of them failed from that start and fell back to the whole path.)

    The damped fixed point ``Ct <- (1 - eta) Ct + eta Phi(Ct)`` that this replaces diverged (NaN,
    then 5000 idle iterations) wherever learning is strong: lazy ReLU and linear, L = 3, N = 100,
    four MNIST digits, P = 40, sigma^2 = 0.5, T = 0.01, at every eta tried (0.5, 0.3, 0.05).  This
    solver reaches it in about 45 s at 2^14 samples and 4 minutes at 2^16 (README,
    "Layer-resolved kernels").
    """
    L, P = s.g.size - 1, s.K0.shape[0]
    iu = np.triu_indices(P)

    def unpack(x):
        out = []
        for v in x.reshape(L, -1):
            M = np.zeros((P, P))
            M[iu] = v
            out.append(M + M.T - np.diag(np.diag(M)))
        return out

    def fixed_point_map(Cts, lam):
        """``(C's, E_q[h h^T]'s, Phi(Ct) - Ct packed)`` at the boundary scale ``lam``."""
        Cs, pre, back = _forward(s, Cts)
        new = back[1:] + [lam * output_conjugate(Cs[-1], s.Y, s.N, s.T)]
        return Cs, pre, np.concatenate([(a - b)[iu] for a, b in zip(new, Cts)])

    def solve(x, lam):
        with np.errstate(all="ignore"):
            sol = root(lambda y: fixed_point_map(unpack(y), lam)[2], x, method="krylov",
                       options={"fatol": tol, "maxiter": max_iter})
        return sol.x if sol.success and np.all(np.isfinite(sol.x)) else None

    x, lam, step = np.zeros(L * iu[0].size), 0.0, 1.0
    while lam < 1.0:
        target = min(1.0, lam + step)
        found = solve(x, target)
        if found is not None:
            x, lam, step = found, target, 2.0 * step
            continue
        step /= 4.0
        if step < 1e-4:
            raise RuntimeError(f"saddle not found: Newton-Krylov failed past {lam:.4g} of the "
                               "boundary's scale")
    Cts = unpack(x)
    Cs, pre, residual = fixed_point_map(Cts, 1.0)        # one forward pass gives both
    return _result(s, Cs, Cts, pre, np.abs(residual).max(), "saddle")


def _saddle_with_test_points(s: _Setup, tol: float, max_iter: int):
    """The saddle on the training inputs, then one forward pass over all inputs.

    Test outputs carry no likelihood, so the tilt of every layer depends on the training
    coordinates only and every exact ``Ct`` vanishes outside the training block (module
    docstring, "Test points"); solving the joint system instead makes Newton chase the score
    estimator's Monte Carlo noise in those blocks (measured: the joint P = 40 + 40 Fig. 7 case
    did not finish in 15 minutes; the training block alone takes about a minute).
    """
    P = s.Y.shape[0]
    training = s._replace(K0=s.K0[:P, :P])
    train = _saddle(training, tol, max_iter)
    khat = None if s.analytic else _tilt_khat(training, train.C, train.Ct)
    if s.K0.shape[0] == P:
        return train._replace(tilt_khat=khat)
    Cts = [np.zeros_like(s.K0) for _ in train.Ct]
    for full, block in zip(Cts, train.Ct):
        full[:P, :P] = block
    Cs, pre, _ = _forward(s, Cts)
    return _result(s, Cs, Cts, pre, train.residual, "saddle")._replace(tilt_khat=khat)


def _tilt_khat(s: _Setup, Cs, Cts) -> np.ndarray:
    """Pareto k-hat of each layer's tilt weights ``exp(g phi^T Ct phi)`` (:class:`AdaptedKernels`)."""
    import arviz as az

    out = []
    for layer, (C, Ct) in enumerate(zip(Cs[:-1], Cts), start=1):
        R = psd_sqrt(C, symmetric=True)
        F = np.concatenate([_energy(s.act, z @ R, s.g[layer], Ct)
                            for z in _chunks(s.num_samples, C.shape[0], s.seed, layer)])
        out.append(float(az.psislw(F - F.max())[1]))
    return np.asarray(out)


def _perturbative(s: _Setup):
    """O(1/N) at fixed P: boundary at the NNGP kernel, linear backward, first-order forward tilt."""
    base = _nngp(s)
    C0, L = base.C, s.g.size - 1
    Cts = [None] * L
    Cts[-1] = output_conjugate(C0[-1], s.Y, s.N, s.T)
    firsts = [None] * L
    for layer in range(L, 0, -1):                          # backward: Ct^(l) = g dE[phi^T Ct phi]/dC
        firsts[layer - 1] = _first_order(s, C0[layer - 1], Cts[layer - 1], layer)
        if layer > 1:
            Cts[layer - 2] = (s.g[layer] * Cts[layer - 1] if s.analytic
                              else _score_gradient(C0[layer - 1], firsts[layer - 1][1]))
    dC, Cs, pre = np.zeros_like(s.K0), [C0[0]], []
    for layer in range(1, L + 1):                          # forward: dC^(l+1)
        A_phi, A_h = firsts[layer - 1]
        pre.append(C0[layer - 1] + dC + A_h)
        dC = s.g[layer] * (A_phi + _dkernel(s, C0[layer - 1], dC))
        Cs.append(C0[layer] + dC)
    return _result(s, np.stack(Cs), Cts, np.stack(pre), 0.0, "perturbative")


def _first_order(s: _Setup, C, Ct, layer: int):
    """``(Cov(phi phi^T, F), Cov(h h^T, F))``, ``F = g phi^T Ct phi`` under ``N(0, C)``."""
    if s.analytic:
        A = 2.0 * s.g[layer] * C @ Ct @ C                  # Gaussian: Cov(h h^T, h^T B h) = 2 C B C
        return symmetric_part(A), symmetric_part(A)
    return _tilt_moments(s, C, Ct, layer, "cov")


def _dkernel(s: _Setup, C, dC):
    return dC if s.analytic else kernel_map_derivative(s.act, C, dC)


def _linear_mean(s: _Setup):
    if not s.act.is_linear:
        raise ValueError(f"method 'linear_mean' needs a linear network, got activation {s.act.name!r}")
    L, N = s.g.size - 1, int(round(s.N))
    P = s.Y.shape[0]
    K0, Kc, Kt = s.K0[:P, :P], s.K0[:P, P:], s.K0[P:, P:]
    sol = solve_U(K0, s.Y, L, N, s.T, sigma_w2=s.g[:L], sigma_a2=s.g[L])
    mk = mean_layer_kernels(K0, s.Y, sol.U, N, s.T, s.g[:L], sigma_a2=s.g[L],
                            K0_cross=Kc if Kc.size else None, K0_test=Kt if Kc.size else None)
    K = mk.train if mk.cross is None else np.block([[mk.train, mk.cross],
                                                    [np.swapaxes(mk.cross, 1, 2), mk.test]])
    return AdaptedKernels(K * s.g[:, None, None], None, K, K[1:].copy(), float(sol.residual), "linear_mean")


# ----------------------------------------------------------------------------- public


def solve_kernels(K0, Y, activation, g, N, T, method="saddle", *, num_samples=NUM_SAMPLES, seed=0,
                  closed_form=True, tol=1e-12, max_iter=30) -> AdaptedKernels:
    """Layer kernels of a lazy finite-width network adapted to the data (THEORY.md 3.5.1, 3.5.4).

    Parameters
    ----------
    K0 : array (n, n), n >= P
        Input kernel ``X X^T / N0`` of the training inputs, optionally followed by test inputs
        (``n - P`` of them, no likelihood: module docstring, "Test points").
    Y : array (P,) or (P, m)
        Targets of the first P inputs.
    activation : str or Activation
    g : sequence of float, length L+1
        ``[sigma_1^2, ..., sigma_L^2, sigma_a^2]``.
    N : float
        Hidden width (equal widths).
    T : float
        Temperature = GP noise ``kappa`` (adds to ``C^(L+1)`` only).
    method : {'nngp', 'saddle', 'perturbative', 'linear_mean'}
        'nngp': ``Ct = 0``.  'saddle': self-consistent forward/backward (the rate-function mode;
        Newton-Krylov continued from the NNGP, RuntimeError where no saddle is found).
        'perturbative': O(1/N) at fixed P, ``dC^(l+1) = g^2 Cov(phi phi^T, phi^T Ct^(l+1) phi)
        + g dE[phi phi^T]/dC . dC^(l)`` with ``Ct`` from the NNGP boundary.  'linear_mean': the
        exact posterior-mean kernels of deep linear networks (BPKR; ValueError otherwise).
    num_samples, seed : int
        Monte Carlo samples per layer and their seed (nonlinear phi; common random numbers).
    closed_form : bool
        Use the Gaussian closed forms for linear phi (False: the generic Monte Carlo path).
    tol, max_iter
        Saddle: tolerance on max |Phi(Ct) - Ct| and Newton iterations per continuation step.

    Returns
    -------
    AdaptedKernels
    """
    act = as_activation(activation)
    g = np.atleast_1d(np.asarray(g, dtype=np.float64))
    if g.ndim != 1 or g.size < 2:
        raise ValueError("g must list [g_1, ..., g_L, g_{L+1}] (at least one hidden layer)")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    K0, Y = np.asarray(K0, dtype=np.float64), as_2d(np.asarray(Y, dtype=np.float64))
    if K0.ndim != 2 or K0.shape[0] != K0.shape[1] or Y.shape[0] > K0.shape[0]:
        raise ValueError(f"K0 must be square with at least a row per row of Y, got {K0.shape} and {Y.shape}")
    s = _Setup(act, K0, Y, g, float(N), float(T), closed_form and act.is_linear, int(num_samples),
               int(seed))
    if method == "nngp":
        return _nngp(s)
    if method == "perturbative":
        return _perturbative(s)
    if method == "linear_mean":
        return _linear_mean(s)
    return _saddle_with_test_points(s, tol, max_iter)


def _dphi_sq(act: Activation, h):
    """``phi'(h)^2`` by a central difference."""
    eps = 1e-6 * np.maximum(np.abs(h), 1.0)
    return ((act.phi_np(h + eps) - act.phi_np(h - eps)) / (2.0 * eps)) ** 2


def response_chi(activation, g, q) -> float:
    """``chi = g <phi'(h)^2>``, ``h ~ N(0, q)``: linear response of the NNGP map at variance q.

    The slope of ``c12 -> g E[phi(u) phi(v)]`` at ``c12 = q`` (Price's theorem); chi = 1 at the
    edge of chaos (Poole et al. 2016; THEORY.md 3.3).  Gauss-Hermite quadrature, phi' by a
    central difference (even node count: no node on the ReLU kink).
    """
    act = as_activation(activation)
    return float(g) * float(gauss_hermite_1d(lambda h: _dphi_sq(act, h), 0.0, float(q), _GH_NODES))


def nngp_fixed_point(activation, g, q0=1.0, tol=1e-13, max_iter=1000) -> float:
    """Fixed point ``q* = g E[phi(h)^2]``, ``h ~ N(0, q*)``, of the NNGP variance map.

    Iterates the map from ``q0``; where the iteration has not settled after ``max_iter`` steps
    (at the edge of chaos of an odd phi, e.g. tanh at g = 1, it reaches q* = 0 only algebraically,
    q_n ~ 1/n), the fixed point it approaches is found as a root of ``g E[phi^2](q) - q`` on the
    side the iterate moves to (0 when the map stays below the diagonal down to ``tol``).
    ``E[phi^2]`` is the activation's closed form, else 1-d Gauss-Hermite quadrature (``_GH_NODES``).
    """
    act, q = as_activation(activation), float(q0)
    for _ in range(max_iter):
        q_new = _variance_map(act, g, q)
        if not q_new <= 1.0 / tol:
            raise RuntimeError(f"no NNGP fixed point reached for g = {g} (the variance grows past {q:.3g})")
        if abs(q_new - q) < tol * max(1.0, q):
            return q_new
        q = q_new
    return _fixed_point_root(act, float(g), q, tol)


def _variance_map(act: Activation, g, q) -> float:
    """``g E[phi(h)^2]``, ``h ~ N(0, q)`` (``Activation.second_moment``)."""
    return float(g) * float(act.second_moment(0.0, q, _GH_NODES))


def _fixed_point_root(act: Activation, g, q, tol) -> float:
    """Root of ``h(x) = g E[phi^2](x) - x`` next to ``q`` in the direction the iteration moves."""
    def h(x):
        return _variance_map(act, g, x) - x

    step = 0.5 if h(q) < 0 else 2.0
    x = q
    while tol <= x <= 1.0 / tol and np.sign(h(x * step)) == np.sign(h(q)):
        x *= step
    if x < tol:
        return 0.0
    if x > 1.0 / tol:
        raise RuntimeError(f"no NNGP fixed point reached for g = {g} (the variance grows past {x:.3g})")
    lo, hi = sorted((x, x * step))
    return float(brentq(h, lo, hi, xtol=tol * max(1.0, q)))


class GradientSignal(NamedTuple):
    """Per hidden layer l = 1..L: ``chi_l`` and the product ``prod_{k >= l} chi_k`` to the top."""

    chi: np.ndarray
    cumulative: np.ndarray


def gradient_signal(activation, g_list, K0) -> GradientSignal:
    """How strongly the output's conjugate kernel reaches each hidden layer (linear response).

    Along the NNGP recursion ``C^(1) = g_1 K0``, ``C^(l+1) = g_{l+1} E[phi phi^T]``, layer l has
    ``chi_l = g_{l+1} <phi'(h)^2>`` averaged over the inputs' variances ``C^(l)_aa``.  The linear
    backward pass ``Ct^(l)_ab ~ g_{l+1} <phi'_a phi'_b> Ct^(l+1)_ab`` (THEORY.md 3.5.1) scales
    the diagonal part of Ct by ``chi_l`` per layer, so ``cumulative[l-1] = prod_{k=l}^{L} chi_k``
    is the gain of the target's signal from the output down to layer l (1 at criticality).
    """
    act = as_activation(activation)
    g = np.asarray(g_list, dtype=np.float64)
    C, chi = g[0] * np.asarray(K0, dtype=np.float64), []
    for layer in range(1, g.size):
        chi.append(np.mean([response_chi(act, g[layer], q) for q in np.diag(C)]))
        C = g[layer] * kernel_map(act, C)
    chi = np.asarray(chi)
    return GradientSignal(chi, np.cumprod(chi[::-1])[::-1])
