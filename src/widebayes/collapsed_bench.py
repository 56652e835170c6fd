"""Cost of the collapsed log density and its gradient, for each choice of linear algebra.

``run_collapsed_bench()`` times, after compilation, float32 on this machine's default JAX device,
one evaluation of a log density and its gradient wrt the network's weights through a real forward
pass (non-lazy sigmoid, depth 1, N0 = N + 20, m = 3, the toy task of ``widebayes.bench``):

- ``joint``: the joint model's log density, gradient wrt (W1, a) (``models.model_logdensity``,
  what every step of today's sampler costs);
- ``collapsed autodiff``: log P0(W) + log p(Y | W) with JAX's autodiff through one Cholesky and
  ``cho_solve`` of the smaller Gram system (the prototype's route);
- ``collapsed cholesky`` / ``eigh`` / ``inv``: ``collapsed.marginal_loglik`` with its hand-written
  gradient (``jax.custom_vjp``) and that factorisation, in the smaller form; ``cholesky (larger
  form)`` factors the larger system instead, when N != P;
- ``newton-schulz k``: gradient only (no log det), the inverse of the smaller Gram matrix refined by
  ``k`` Newton-Schulz iterations ``X <- X (2 I - M X)`` from the previous step's inverse (the
  matrix products only); ``newton_schulz_error`` measures how exact that is along a trajectory;
- references at n = min(N, P): SciPy's LAPACK ``cho_factor``, XLA's ``cholesky`` alone and an
  n x n x n matrix product, to see how loaded the machine is.

Each evaluation runs inside a jitted ``lax.scan`` (as in the driver) of ``inner`` evaluations whose
carry moves the weights by a negligible step along the gradient, so nothing is hoisted or cached;
the candidates are interleaved in every repeat (rotating order) and the figures are medians over
repeats, ratios are medians of the per-repeat ratios to ``joint``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from widebayes.collapsed import (
    METHODS,
    Factor,
    choose_form,
    gram,
    hidden_prior_logpdf,
    loglik_gradients,
    loglik_value,
    marginal_loglik,
    readout_prior_scale,
    solve_gram,
    solve_with,
)
from widebayes.inference import blas_threads
from widebayes.observables import layer_features

SIZES = ((100, 100), (500, 500), (500, 100), (100, 500))  # (N, P)


class Problem(NamedTuple):
    spec: object  # NetworkSpec
    data: dict  # float32 device arrays
    params: dict  # a prior draw of every block, float32
    T_eff: float
    s: float


def bench_problem(width: int, num_train: int, seed: int = 0, dtype=jnp.float32) -> Problem:
    """Non-lazy sigmoid, depth 1, N0 = N + 20, m = 3, T = 0.01 (T_eff = T / N), sigma_a2 = 1/P (the
    papers' rule), Gaussian inputs and the toy task's targets (classes 1/2, 1/4, 1/4; y+ = 1, y- = 1/2);
    the weights a prior draw.  (The orthogonal task itself needs N0 >= P.)"""
    from widebayes.networks import NetworkSpec, effective_temperature, param_prior_variances, param_shapes

    N, P, m = width, num_train, 3
    spec = NetworkSpec(input_dim=N + 20, width=N, depth=1, num_outputs=m, activation="sigmoid", gamma=1.0,
                       sigma_a2=1.0 / P)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(m), [P - 2 * (P // 4), P // 4, P // 4])
    data = {"X_train": jnp.asarray(rng.normal(size=(P, spec.input_dim)), dtype),
            "Y_train": jnp.asarray(np.where(np.eye(m)[labels] > 0, 1.0, 0.5), dtype)}
    variances = param_prior_variances(spec)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(variances))
    params = {name: float(np.sqrt(variances[name])) * jax.random.normal(k, shape, dtype)
              for (name, shape), k in zip(sorted(param_shapes(spec).items()), keys)}
    return Problem(spec, data, params, effective_temperature(0.01, N, spec.gamma), readout_prior_scale(spec))


def hidden(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "a"}


# ----------------------------------------------------------------------------------- candidates
def collapsed_density(pb: Problem, form: str | None = None, method: str = "cholesky",
                      custom: bool = True) -> Callable:
    """log P0(W) + log p(Y | W): the hand-written VJP (``custom``) or JAX autodiff through the forward."""
    X, Y = pb.data["X_train"], pb.data["Y_train"]

    def f(p):
        Phi = layer_features(p, X, pb.spec)[-1]
        if custom:
            loglik = marginal_loglik(Phi, Y, pb.s, pb.T_eff, form=form, method=method)
        else:
            chosen = choose_form(*Phi.shape, form)
            loglik = loglik_value(Y, solve_gram(Phi, Y, pb.s, pb.T_eff, chosen, method, with_Q=False))
        return hidden_prior_logpdf(p, pb.spec) + loglik

    return f


def newton_schulz(M, X, iterations: int):
    """``iterations`` steps of ``X <- X (2 I - M X)``: the residual ``I - M X`` squares at each step."""
    eye = jnp.eye(M.shape[0], dtype=M.dtype)
    for _ in range(iterations):
        X = X @ (2.0 * eye - M @ X)
    return X


def newton_schulz_gradient(pb: Problem, iterations: int) -> Callable:
    """``(p, X_prev) -> (grad of log P0(W) + log p(Y | W) wrt p, X)`` with X a Newton-Schulz inverse."""
    Xtr, Y = pb.data["X_train"], pb.data["Y_train"]
    form = choose_form(*Y.shape[:1], pb.spec.width)

    def grad(p, X_prev):
        Phi, pullback = jax.vjp(lambda q: layer_features(q, Xtr, pb.spec)[-1], p)
        X = newton_schulz(gram(Phi, pb.s, pb.T_eff, form), X_prev, iterations)
        solved = solve_with(Factor(lambda B: X @ B, jnp.nan), Phi, Y, pb.s, pb.T_eff, form)
        d_Phi = loglik_gradients(Phi, Y, pb.s, pb.T_eff, solved.alpha, solved.Q)[0]
        g_prior = jax.grad(hidden_prior_logpdf)(p, pb.spec)
        return jax.tree.map(jnp.add, pullback(d_Phi)[0], g_prior), X

    return grad


def exact_inverse(pb: Problem, p):
    Phi = layer_features(p, pb.data["X_train"], pb.spec)[-1]
    return jnp.linalg.inv(gram(Phi, pb.s, pb.T_eff, choose_form(*Phi.shape)))


def scanned(step: Callable, inner: int) -> Callable:
    """A jitted ``lax.scan`` of ``inner`` steps ``carry -> carry``; returns a zero-argument timer target."""
    run = jax.jit(lambda c: jax.lax.scan(lambda c, _: (step(c), None), c, None, length=inner)[0])
    return run


def gradient_step(density: Callable) -> Callable:
    """One value-and-gradient evaluation; the carry moves by 1e-30 x gradient so nothing is hoisted."""

    def step(carry):
        p, acc = carry
        v, g = jax.value_and_grad(density)(p)
        return jax.tree.map(lambda x, d: x + 1e-30 * d, p, g), acc + v

    return step


def candidates(pb: Problem, inner: int) -> dict:
    """name -> zero-argument function running ``inner`` evaluations (compiled on first call)."""
    N, P = pb.spec.width, len(pb.data["X_train"])
    zero = jnp.zeros((), jnp.float32)
    joint = _bind(scanned(gradient_step(lambda p: _joint(pb)(p)), inner), (pb.params, zero))
    out = {"joint": joint,
           "collapsed autodiff": _bind(scanned(gradient_step(collapsed_density(pb, custom=False)), inner),
                                       (hidden(pb.params), zero))}
    for method in METHODS:
        step = gradient_step(collapsed_density(pb, method=method))
        out[f"collapsed {method}"] = _bind(scanned(step, inner),
                                           (hidden(pb.params), zero))
    if N != P:
        larger = "samples" if choose_form(P, N) == "features" else "features"
        out["collapsed cholesky (larger form)"] = _bind(
            scanned(gradient_step(collapsed_density(pb, form=larger)), inner), (hidden(pb.params), zero))
    for k in (2, 3):
        grad = newton_schulz_gradient(pb, k)

        def ns_step(carry, grad=grad):
            p, X = carry
            g, X = grad(p, X)
            return jax.tree.map(lambda x, d: x + 1e-30 * d, p, g), X

        start = (hidden(pb.params), exact_inverse(pb, hidden(pb.params)))
        out[f"newton-schulz {k}"] = _bind(scanned(ns_step, inner), start)
    out.update(references(min(N, P), inner))
    return out


def _joint(pb: Problem) -> Callable:
    from widebayes.models import model_logdensity, network_prior

    bridge = model_logdensity(network_prior)

    def density(params, data, T_eff):
        return bridge(params, data, {"spec": pb.spec}, T_eff)
    return lambda p: density(p, pb.data, pb.T_eff)


def _bind(run: Callable, carry) -> Callable:
    return lambda: jax.block_until_ready(run(carry))


def references(n: int, inner: int) -> dict:
    """SciPy's LAPACK Cholesky, XLA's Cholesky and an XLA n^3 product, at the same size."""
    from scipy.linalg import cho_factor

    B = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    M = B @ B.T / n + np.eye(n, dtype=np.float32)

    def scipy_cholesky():
        for _ in range(inner):
            cho_factor(M, lower=True)

    Mj = jnp.asarray(M)
    xla_cholesky = scanned(lambda A: A + 1e-30 * jnp.linalg.cholesky(A)[0, 0], inner)
    xla_matmul = scanned(lambda A: A @ Mj, inner)
    return {"scipy cho_factor": scipy_cholesky, "xla cholesky": _bind(xla_cholesky, Mj),
            "xla matmul": _bind(xla_matmul, Mj / np.float32(np.linalg.norm(M, 2)))}


# ----------------------------------------------------------------------------------- timing
class Timing(NamedTuple):
    N: int
    P: int
    name: str  # candidate, with the BLAS thread setting it ran under
    ms: float  # median time of one evaluation
    ratio: float  # median over repeats of (this / joint under the same BLAS setting)


def _seconds(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def inner_for(pb: Problem, target_s: float = 0.03) -> int:
    """Evaluations per timing sample, so that the joint candidate takes about ``target_s`` seconds."""
    one = scanned(gradient_step(_joint(pb)), 1)
    carry = (pb.params, jnp.zeros((), jnp.float32))
    jax.block_until_ready(one(carry))
    t = min(_seconds(lambda: jax.block_until_ready(one(carry))) for _ in range(5))
    return int(max(1, min(200, round(target_s / t))))


def _label(name: str, limit: int | None) -> str:
    return name if limit is None else f"{name} [BLAS {limit} thread]"


def time_size(N: int, P: int, repeats: int = 15, blas_limits=(None, 1)) -> list[Timing]:
    """Interleaved medians at one size (module docstring), under each BLAS thread limit in turn
    within every repeat (``None``: the library's default thread count)."""
    pb = bench_problem(N, P)
    inner = inner_for(pb)
    runs = candidates(pb, inner)
    for fn in runs.values():  # compile
        fn()
    names = list(runs)
    samples = {(name, limit): [] for limit in blas_limits for name in names}
    for r in range(repeats):
        for limit in blas_limits:
            with blas_threads(limit):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    samples[(name, limit)].append(_seconds(runs[name]) / inner)
    rows = []
    for (name, limit), t in samples.items():
        joint = samples[("joint", limit)]
        rows.append(Timing(N, P, _label(name, limit), 1e3 * statistics.median(t),
                           statistics.median(a / b for a, b in zip(t, joint))))
    return rows


def run_collapsed_bench(sizes=SIZES, repeats: int = 15, blas_limits=(None, 1),
                        verbose: bool = True) -> list[Timing]:
    """Time every candidate at every size; print a table (one row per candidate) when ``verbose``."""
    device = jax.devices()[0]
    rows = []
    for N, P in sizes:
        rows += time_size(N, P, repeats, blas_limits)
        if verbose:
            print(format_table([r for r in rows if (r.N, r.P) == (N, P)]), flush=True)
    if verbose:
        print(f"device: {device.platform} ({device.device_kind}); float32; medians of {repeats} "
              "interleaved repeats; ratio = median of per-repeat (candidate / joint under the same BLAS "
              "setting)")
        print(format_table(rows), flush=True)
    return rows


def format_table(rows: list[Timing]) -> str:
    """Markdown: one row per candidate, one column pair (ms, x joint) per size."""
    sizes = list(dict.fromkeys((r.N, r.P) for r in rows))
    names = list(dict.fromkeys(r.name for r in rows))
    cell = {(r.N, r.P, r.name): r for r in rows}
    head = "| candidate | " + " | ".join(f"N={N} P={P}" for N, P in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for name in names:
        vals = [cell.get((N, P, name)) for N, P in sizes]
        cells = [f"{v.ms:.3g} ms ({v.ratio:.2f}x)" if v else "" for v in vals]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- Newton-Schulz error
class IterativeError(NamedTuple):
    N: int
    P: int
    step_size: float
    iterations: int
    median_error: float  # median over steps of |g_NS - g| / |g| (W1 block), g exact in float64
    max_error: float
    cholesky_error: float  # the same for the float32 Cholesky VJP (the floor of float32)


def prior_trajectory(key, p: dict, step_size: float, num_steps: int) -> list[dict]:
    """Whitened-prior Langevin steps ``W <- W - eps W + sqrt(2 eps) xi`` (sigma_w2 = 1): the size of a
    sampler's move, without the data term."""
    out = [p]
    for k in jax.random.split(key, num_steps):
        q = out[-1]
        noise = {n: jax.random.normal(jax.random.fold_in(k, i), v.shape, v.dtype)
                 for i, (n, v) in enumerate(q.items())}
        out.append({n: v - step_size * v + np.sqrt(2 * step_size) * noise[n] for n, v in q.items()})
    return out


def newton_schulz_error(N: int, P: int, step_sizes=(0.01, 0.03, 0.1), iterations=(1, 2, 3),
                        num_steps: int = 20) -> list[IterativeError]:
    """Relative error of the warm-started Newton-Schulz gradient along a trajectory, against float64."""
    pb = bench_problem(N, P)
    exact32 = jax.jit(jax.grad(collapsed_density(pb)))
    rows = []
    for eps in step_sizes:
        path = prior_trajectory(jax.random.PRNGKey(3), hidden(pb.params), eps, num_steps)
        truth = _float64_gradients(N, P, path[1:])
        chol = [_rel(exact32(q)["W1"], t) for q, t in zip(path[1:], truth)]
        for k in iterations:
            grad = jax.jit(newton_schulz_gradient(pb, k))
            X, errs = exact_inverse(pb, path[0]), []
            for q, t in zip(path[1:], truth):
                g, X = grad(q, X)
                errs.append(_rel(g["W1"], t))
            rows.append(IterativeError(N, P, eps, k, float(np.median(errs)), float(np.max(errs)),
                                       float(np.median(chol))))
    return rows


def _float64_gradients(N: int, P: int, path: list) -> list:
    """The W1 gradient at each point of ``path`` in float64 (Cholesky VJP)."""
    with jax.enable_x64(True):
        pb = bench_problem(N, P, dtype=jnp.float64)
        grad = jax.jit(jax.grad(collapsed_density(pb)))
        return [np.asarray(grad({n: jnp.asarray(np.asarray(v), jnp.float64) for n, v in p.items()})["W1"])
                for p in path]


def method_errors(N: int, P: int, num_points: int = 3) -> dict:
    """Median relative error of each method's float32 W1 gradient against float64, at prior draws."""
    pb = bench_problem(N, P)
    points = [hidden(bench_problem(N, P, seed=k).params) for k in range(num_points)]
    truth = _float64_gradients(N, P, points)
    out = {}
    for method in METHODS:
        grad = jax.jit(jax.grad(collapsed_density(pb, method=method)))
        out[method] = float(np.median([_rel(grad(q)["W1"], t) for q, t in zip(points, truth)]))
    return out


def _rel(g, truth) -> float:
    g, truth = np.asarray(g, np.float64), np.asarray(truth, np.float64)
    return float(np.linalg.norm(g - truth) / np.linalg.norm(truth))


def run_accuracy(sizes=((100, 100, 20), (500, 500, 5)), verbose: bool = True) -> tuple[list, dict]:
    """The warm-started Newton-Schulz error along a trajectory and each method's float32 error,
    at each ``(N, P, num_steps)``; printed when ``verbose``."""
    iterative, methods = [], {}
    for N, P, steps in sizes:
        iterative += newton_schulz_error(N, P, num_steps=steps)
        methods[(N, P)] = method_errors(N, P)
    if verbose:
        print("relative error of the W1 gradient against float64 (median over steps; max):")
        for r in iterative:
            print(f"  N={r.N} P={r.P} step {r.step_size:g}: Newton-Schulz x{r.iterations} "
                  f"{r.median_error:.1e} ({r.max_error:.1e}); float32 Cholesky {r.cholesky_error:.1e}")
        for (N, P), errs in methods.items():
            listed = ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
            print(f"  N={N} P={P} float32, each method: {listed}")
    return iterative, methods


if __name__ == "__main__":  # python -m widebayes.collapsed_bench
    run_collapsed_bench()
    run_accuracy()
