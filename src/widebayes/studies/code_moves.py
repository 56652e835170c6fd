"""Why the codes freeze: what single-neuron code moves cost, given the rest of the network.

The mixing issue's slow mode is the code of a neuron (which classes activate it).  This study
takes a state of the real sampler (the driver's chain after its run) of a one-hidden-layer network
on the orthogonal toy task and measures, with the readout integrated out exactly
(:func:`widebayes.collapsed.marginal_loglik`), the Metropolis log ratio of moves that change codes.
On the toy task the first layer's preactivations on the training inputs, ``h_i = W1_i x / sqrt(N0)``,
are i.i.d. ``N(0, sigma_w^2)`` under the prior (``x_mu . x_nu = N0 delta``), and the likelihood sees
``W1`` only through them, so the moves act on ``H`` (P x N) and are exact MCMC moves on the
collapsed posterior of the hidden weights:

* ``swap``: exchange the class-``c`` blocks of two neurons (an involution with unit Jacobian that
  leaves the prior invariant; log ratio = change of the marginal likelihood).  It changes codes in
  pairs (101 + 110 <-> 111 + 100) but conserves how many neurons each class activates.
* ``negate``: ``h_i[c] -> -h_i[c]`` (an involution; the prior is symmetric).  For the sigmoid it
  turns class ``c`` of neuron ``i`` on or off.
* ``refresh``: draw neuron ``i``'s class-``c`` block i.i.d. from a Gaussian fitted to the entries of
  the other neurons whose class ``c`` is in the opposite state (a proposal built from the rest of
  the network only, so the reverse density is available); full Metropolis-Hastings log ratio.

And one diagnostic that is not a move: ``copy``, the change of the log posterior density when
neuron ``i``'s preactivations are replaced by those of another neuron, grouped by whether that
neuron has the same code.

``python -m widebayes.studies.code_moves [PRESET] [--steps S] [--moves M]`` prints the table that
README "Mixing" quotes.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from widebayes.activations import get_activation
from widebayes.codes import class_means, code_ids, default_threshold
from widebayes.errors import InputError

MOVES = ("swap", "negate", "refresh")


def collapsed_logpost(H, Y, *, phi, sigma_w2, s, T_eff):
    """log p(H | D) up to a constant: the marginal likelihood (readout integrated out) plus the
    i.i.d. Gaussian prior of the preactivations."""
    from widebayes.collapsed import marginal_loglik

    return marginal_loglik(phi(H), Y, s, T_eff) - 0.5 * jnp.sum(H**2) / sigma_w2


def _normal_logpdf(x, mean, sd):
    return float(np.sum(-0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)))


def block_states(H, labels, phi, threshold):
    """(N, k) bool: class ``c`` activates neuron ``i`` (its class-mean activation above threshold)."""
    return class_means(np.asarray(phi(jnp.asarray(H))).T, labels) > threshold


def propose(move: str, H, labels, states, rng, phi, threshold):
    """One proposal ``(H_new, log q(H | H_new) - log q(H_new | H))``, or ``None`` when it cannot apply."""
    N = H.shape[1]
    i, c = int(rng.integers(N)), int(rng.integers(labels.max() + 1))
    block = labels == c
    H_new = H.copy()
    if move == "swap":
        j = int(rng.integers(N - 1))
        j += j >= i
        H_new[block, i], H_new[block, j] = H[block, j], H[block, i]
        return H_new, 0.0
    if move == "negate":
        H_new[block, i] = -H[block, i]
        return H_new, 0.0
    others = np.arange(N) != i
    fits = {}
    for state in (True, False):
        entries = H[np.ix_(block, others & (states[:, c] == state))].ravel()
        if entries.size < 2:
            return None
        fits[state] = (entries.mean(), entries.std())
    now = bool(states[i, c])
    mean, sd = fits[not now]
    H_new[block, i] = mean + sd * rng.standard_normal(int(block.sum()))
    if (float(np.mean(phi(jnp.asarray(H_new[block, i])))) > threshold) == now:
        return H_new, -np.inf  # landed in the same state: the reverse proposal cannot reach H
    return H_new, _normal_logpdf(H[block, i], *fits[now]) - _normal_logpdf(H_new[block, i], mean, sd)


def move_log_ratios(H, Y, labels, *, activation: str, sigma_w2: float, s: float, T_eff: float,
                    num_moves: int, seed: int = 0) -> dict:
    """Metropolis log ratios of ``num_moves`` proposals of every move in :data:`MOVES` from state ``H``.

    Returns a dict move -> float array (``-inf`` where the proposal cannot be accepted), and
    ``MOVE + " (changes a code)"`` -> the ratios of the proposals that change some neuron's code.
    """
    phi = get_activation(activation).phi
    threshold = default_threshold(activation, sigma_w2)
    logpost = jax.jit(lambda h: collapsed_logpost(h, jnp.asarray(Y), phi=phi, sigma_w2=sigma_w2,
                                                  s=s, T_eff=T_eff))
    H = np.asarray(H, dtype=np.float64)
    base = float(logpost(jnp.asarray(H)))
    states = block_states(H, labels, phi, threshold)
    rng = np.random.default_rng(seed)
    out = {}
    for move in MOVES:
        ratios, changed = [], []
        for _ in range(num_moves):
            proposal = propose(move, H, labels, states, rng, phi, threshold)
            if proposal is None:
                continue
            H_new, log_q = proposal
            accepted = np.isfinite(log_q)
            ratios.append(float(logpost(jnp.asarray(H_new))) - base + log_q if accepted else -np.inf)
            changed.append(bool(np.any(block_states(H_new, labels, phi, threshold) != states)))
        out[move] = np.asarray(ratios)
        out[move + " (changes a code)"] = np.asarray(ratios)[np.asarray(changed, bool)]
    return out


def copy_differences(H, Y, labels, *, activation: str, sigma_w2: float, s: float, T_eff: float,
                     neurons: int = 4) -> dict:
    """Log density change when neuron ``i``'s preactivations become neuron ``j``'s: ``"same"`` /
    ``"other"`` code of ``j`` -> array over ``(i, j)``."""
    phi = get_activation(activation).phi
    threshold = default_threshold(activation, sigma_w2)
    logpost = jax.jit(lambda h: collapsed_logpost(h, jnp.asarray(Y), phi=phi, sigma_w2=sigma_w2,
                                                  s=s, T_eff=T_eff))
    H = np.asarray(H, dtype=np.float64)
    ids = code_ids(class_means(np.asarray(phi(jnp.asarray(H))).T, labels), threshold)
    base = float(logpost(jnp.asarray(H)))
    out = {"same": [], "other": []}
    for i in range(neurons):
        for j in range(H.shape[1]):
            if j != i:
                H_new = H.copy()
                H_new[:, i] = H[:, j]
                out["same" if ids[j] == ids[i] else "other"].append(float(logpost(jnp.asarray(H_new))) - base)
    return {k: np.asarray(v) for k, v in out.items()}


def sampled_state(resolved: dict):
    """Run the experiment's sampler (the real driver, one chain) and return ``(H, experiment)``:
    the final first-layer preactivations on the training inputs."""
    from widebayes.experiment import prepare_run
    from widebayes.inference import chain_layout, roots_of, run_chains, unwhiten

    run = prepare_run(resolved)
    exp = run.experiment
    if exp.spec.depth != 1 or exp.config["task"]["kind"] != "orthogonal" or exp.reduction is not None:
        raise InputError("the code-move study needs a one-hidden-layer network on the orthogonal "
                         "task without input reduction")
    last = {}
    run_chains(run.setup, run.carry, run.chain_keys, run.data, run.hyper, run.schedule, run.chunks,
               on_chunk=lambda index, carry, *rest: last.update(carry=carry),
               layout=chain_layout(len(run.chain_keys), 1))
    W1 = unwhiten(last["carry"].state.position, roots_of(exp.preconditioner))["W1"][0]
    X = exp.data.X_train
    return np.asarray(X @ np.asarray(W1, np.float64).T / np.sqrt(X.shape[1])), exp


def summary(ratios) -> dict:
    """Mean acceptance ``E min(1, e^r)`` and the quartiles of the log ratio."""
    r = np.asarray(ratios)
    q = np.quantile(r, [0.25, 0.5, 0.75]) if r.size else [np.nan] * 3
    return {"n": int(r.size), "acceptance": float(np.mean(np.minimum(1.0, np.exp(r)))) if r.size else np.nan,
            "quartiles": [float(x) for x in q]}


def main(argv=None):
    from widebayes.config import resolve
    from widebayes.models.presets import preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", nargs="?", default="demo")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the preset's)")
    parser.add_argument("--moves", type=int, default=300)
    args = parser.parse_args(argv)
    cfg = preset(args.preset)
    cfg["sampler"]["num_chains"] = 1
    if args.steps:
        cfg["sampler"].update(num_steps=args.steps, burn_in=args.steps // 2,
                              thin=max(1, min(cfg["sampler"]["thin"], args.steps // 4)))
    H, exp = sampled_state(resolve(cfg))
    kwargs = {"activation": exp.spec.activation, "sigma_w2": exp.spec.sigma_w2[0],
              "s": exp.spec.sigma_a2 / exp.spec.width ** (2 * exp.gamma), "T_eff": exp.T_eff}
    labels = exp.data.labels_train
    phi = get_activation(exp.spec.activation).phi
    ids = code_ids(class_means(np.asarray(phi(jnp.asarray(H))).T, labels),
                   default_threshold(exp.spec.activation, kwargs["sigma_w2"]))
    k = int(labels.max()) + 1
    counts = np.bincount(ids, minlength=2**k)
    print(f"{args.preset}: codes of the sampled state (id: count) {dict(enumerate(counts.tolist()))}")
    for move, r in move_log_ratios(H, exp.data.Y_train, labels, num_moves=args.moves, **kwargs).items():
        print(move, summary(r))
    for group, d in copy_differences(H, exp.data.Y_train, labels, **kwargs).items():
        print("copy", group, summary(d))


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main()
