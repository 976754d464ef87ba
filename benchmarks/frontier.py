r"""Sparsity-accuracy frontier on scikit-learn's digits: L1 in the loss vs proximal L1 vs pruning.

An MLP (64-256-10 by default, ReLU) is trained with minibatch Adam on a held-out split of
``sklearn.datasets.load_digits`` (standardized with the training split's statistics), for
3 seeds (each seed draws its own split, initialization and batches), sweeping lambda for

  (a) ``loss``:  adam on ``CE + lambda * l1_penalty(params, mask=kernel_mask)``
                 (the Keras ``regularizers.l1`` / PyTorch-loop way);
  (b) ``prox``:  ``optax.chain(optax.adam(lr),
                 optax_l1.l1_prox(lambda, learning_rate=lr, mask=kernel_mask))``;
  (c) ``proximal_adam``: ``optax_l1.proximal_adam(lr, strength=lambda, mask=kernel_mask)``
                 (when this optax_l1 has it; its per-coordinate threshold
                 ``lr*lambda/(sqrt(v_hat)+eps)``
                 is far larger than (b)'s, so it gets its own, lower, lambda grid);
  (d) ``prune``: the lambda = 0 model of the same seed, magnitude pruning of each kernel to
                 exactly the sparsity (b) reached in that kernel at each lambda
                 (``--prune-scope global``: one threshold for (b)'s overall sparsity),
                 evaluated as is,
                 and ``prune+ft``: then fine-tuned with Adam for ``--finetune-steps`` with the
                 mask held fixed (pruned weights stay exactly 0).

Sparsity is the fraction of exact zeros over the kernels only (``optax_l1.kernel_mask``);
biases are neither penalized nor counted. All runs of one method (lambdas x seeds) are
vmapped into one jitted ``lax.scan``.

    python benchmarks/frontier.py            # 3 seeds, 8 lambdas, 3000 steps (about 1-2 min)
    python benchmarks/frontier.py --quick    # 1 seed, 2 lambdas, 60 steps, 64-32-10 (seconds)
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_l1

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

LOSS_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
PADAM_GRID = (3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)


def load_splits(seeds: list[int], test_size: float) -> dict[str, np.ndarray]:
    """One stratified split per seed, standardized with its training statistics."""
    splits = [_common.digits_split(s, test_size) for s in seeds]
    columns = zip(*splits, strict=True)
    return {k: np.stack(v) for k, v in zip(("xtr", "xte", "ytr", "yte"), columns, strict=True)}


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> dict[str, Any]:
    return _common.init_mlp(jax.random.split(key, len(sizes) - 1), sizes)


forward, data_loss, accuracy = _common.forward, _common.cross_entropy, _common.accuracy


def make_tx(method: str, lam: jax.Array, lr: float) -> optax.GradientTransformation:
    if method in ("loss", "dense"):
        return optax.adam(lr)
    if method == "prox":
        return optax.chain(
            optax.adam(lr), optax_l1.l1_prox(lam, learning_rate=lr, mask=optax_l1.kernel_mask)
        )
    if method == "proximal_adam":
        return optax_l1.proximal_adam(lr, strength=lam, mask=optax_l1.kernel_mask)
    raise ValueError(method)


def train_one(method, sizes, lr, steps, batch, key, xtr, ytr, lam, init=None, fixed=None):
    """Trains one model; ``fixed`` (a pytree of 0/1 masks) keeps pruned weights at 0."""
    k_init, k_data = jax.random.split(key)
    params = init_mlp(k_init, sizes) if init is None else init
    tx = make_tx(method, lam, lr)
    state = tx.init(params)

    def loss_fn(p, xb, yb):
        loss = data_loss(p, xb, yb)
        if method == "loss":
            loss = loss + optax_l1.l1_penalty(p, lam, mask=optax_l1.kernel_mask)
        return loss

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (batch,), 0, xtr.shape[0])
        g = jax.grad(loss_fn)(p, xtr[idx], ytr[idx])
        if fixed is not None:
            g = jax.tree.map(jnp.multiply, g, fixed)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        if fixed is not None:
            p = jax.tree.map(jnp.multiply, p, fixed)
        return (p, s), None

    (params, _), _ = jax.lax.scan(step, (params, state), jax.random.split(k_data, steps))
    return params


def kernel_sparsity(params):
    return optax_l1.sparsity(params, mask=optax_l1.kernel_mask)


def kernels(params) -> list[jax.Array]:
    mask = optax_l1.kernel_mask(params)
    leaves = zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True)
    return [x for x, m in leaves if m]


def per_kernel_sparsity(params) -> jax.Array:
    return jnp.stack([jnp.mean(k == 0) for k in kernels(params)])


def prune_to(params, targets: jax.Array, scope: str):
    """Magnitude pruning of the kernels to exactly the ``targets`` fractions of zeros.

    ``scope="layer"``: kernel ``i`` loses its ``targets[i]`` smallest |w| (matching another
    model's per-layer sparsity); ``"global"``: one threshold over all kernels for the
    overall fraction ``targets`` (a scalar). Returns the pruned params and the 0/1 mask.
    """
    mask = optax_l1.kernel_mask(params)

    def threshold(mags, target):
        mags = jnp.sort(mags)
        n_zero = jnp.round(target * mags.size).astype(jnp.int32)
        return jnp.where(n_zero > 0, mags[jnp.maximum(n_zero - 1, 0)], -1.0)

    ks = kernels(params)
    if scope == "global":
        t = threshold(jnp.concatenate([jnp.abs(k).ravel() for k in ks]), targets)
        thresholds = [t] * len(ks)
    else:
        thresholds = [threshold(jnp.abs(k).ravel(), targets[i]) for i, k in enumerate(ks)]
    leaves, treedef = jax.tree.flatten(params)
    it = iter(thresholds)
    keep = [
        (jnp.abs(x) > next(it)).astype(x.dtype) if m else jnp.ones_like(x)
        for x, m in zip(leaves, jax.tree.leaves(mask), strict=True)
    ]
    keep = treedef.unflatten(keep)
    return jax.tree.map(jnp.multiply, params, keep), keep


def evaluate(params, xte, yte):
    return accuracy(params, xte, yte), kernel_sparsity(params), per_kernel_sparsity(params)


def run_method(method, lams, data, seeds, args, sizes):
    """Test accuracy, kernel sparsity (shape (len(lams), len(seeds))) and per-kernel sparsity."""
    keys = jnp.stack([jax.random.key(1000 + s) for s in seeds])

    def one(lam, key, xtr, ytr, xte, yte):
        p = train_one(method, sizes, args.lr, args.steps, args.batch, key, xtr, ytr, lam)
        return evaluate(p, xte, yte)

    per_seed = jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0))
    f = jax.jit(jax.vmap(per_seed, in_axes=(0, None, None, None, None, None)))
    acc, sp, per = f(
        jnp.asarray(lams, jnp.float32), keys, data["xtr"], data["ytr"], data["xte"], data["yte"]
    )
    return np.asarray(acc), np.asarray(sp), np.asarray(per)


def run_pruning(targets, data, seeds, args, sizes):
    """(d): the dense model of each seed pruned to ``targets[i, s]``, then fine-tuned."""
    keys = jnp.stack([jax.random.key(1000 + s) for s in seeds])

    def one(target, key, xtr, ytr, xte, yte):
        dense = train_one("dense", sizes, args.lr, args.steps, args.batch, key, xtr, ytr, 0.0)
        pruned, keep = prune_to(dense, target, args.prune_scope)
        acc0, sp0, _ = evaluate(pruned, xte, yte)
        ft = train_one(
            "dense",
            sizes,
            args.lr,
            args.finetune_steps,
            args.batch,
            jax.random.fold_in(key, 7),
            xtr,
            ytr,
            0.0,
            init=pruned,
            fixed=keep,
        )
        acc1, sp1, _ = evaluate(ft, xte, yte)
        return acc0, sp0, acc1, sp1, evaluate(dense, xte, yte)[0]

    per_seed = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0))
    f = jax.jit(jax.vmap(per_seed, in_axes=(0, None, None, None, None, None)))
    out = f(
        jnp.asarray(targets, jnp.float32),
        keys,
        data["xtr"],
        data["ytr"],
        data["xte"],
        data["yte"],
    )
    return [np.asarray(o) for o in out]


def best_at(sp: np.ndarray, acc: np.ndarray, level: float) -> float:
    """Best mean test accuracy among a method's points with mean sparsity >= level."""
    ok = sp >= level
    return float(acc[ok].max()) if ok.any() else float("nan")


LAMBDAS = _common.comma_list(_common.positive_float)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _common.Parser(__doc__, quick="1 seed, 2 lambdas, 60 steps, hidden 32")
    p.add_scaled("--seeds", 3, 1, type=_common.positive_int, help="seeds 0..N-1")
    p.add_scaled("--steps", 3000, 60, type=_common.positive_int, help="training steps")
    p.add_scaled(
        "--finetune-steps", 500, 10, type=_common.positive_int, help="(d') fine-tuning steps"
    )
    p.add_argument("--batch", type=_common.positive_int, default=128, help="minibatch size")
    p.add_argument("--lr", type=_common.positive_float, default=3e-3, help="Adam learning rate")
    p.add_scaled(
        "--hidden",
        [256],
        [32],
        type=_common.comma_list(_common.positive_int),
        help="comma list of hidden widths",
    )
    p.add_argument(
        "--test-size", type=_common.fraction, default=0.3, help="held-out fraction of the data"
    )
    p.add_argument(
        "--prune-scope",
        choices=("layer", "global"),
        default="layer",
        help="(d): match (b)'s sparsity per kernel or overall with one threshold",
    )
    p.add_scaled(
        "--lambdas", list(LOSS_GRID), [1e-3, 0.1], type=LAMBDAS, help="grid of (a) and (b)"
    )
    p.add_scaled(
        "--lambdas-proximal-adam", list(PADAM_GRID), [1e-6, 1e-4], type=LAMBDAS, help="grid of (c)"
    )
    p.add_argument("--out", default="out", help="output folder of frontier.png")
    p.add_json()
    args = p.parse(argv)
    lams, padam_lams = args.lambdas, args.lambdas_proximal_adam
    seeds = list(range(args.seeds))
    sizes = (64, *args.hidden, 10)
    info = _common.header(
        "frontier",
        data="sklearn digits 1797x64, 10 classes",
        test_size=args.test_size,
        mlp="-".join(map(str, sizes)),
        seeds=args.seeds,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        finetune_steps=args.finetune_steps,
        prune_scope=args.prune_scope,
    )
    data = load_splits(seeds, args.test_size)
    has_padam = _common.optional("proximal_adam") is not None
    print("proximal_adam: " + ("included" if has_padam else "skipped (not in this optax_l1)"))

    results: dict[str, dict[str, Any]] = {}
    for method, grid in (("loss", lams), ("prox", lams), ("proximal_adam", padam_lams)):
        if method == "proximal_adam" and not has_padam:
            continue
        acc, sp, per = run_method(method, grid, data, seeds, args, sizes)
        results[method] = {"lambda": grid, "acc": acc, "sparsity": sp, "per_kernel": per}
        print(f"{method}: done", flush=True)
    prox = results["prox"]
    targets = prox["per_kernel"] if args.prune_scope == "layer" else prox["sparsity"]
    acc0, sp0, acc1, sp1, dense_acc = run_pruning(targets, data, seeds, args, sizes)
    results["prune"] = {"lambda": lams, "acc": acc0, "sparsity": sp0}
    results["prune+ft"] = {"lambda": lams, "acc": acc1, "sparsity": sp1}
    dense_mean = float(dense_acc.mean())
    print(f"dense (lambda=0) test accuracy: {dense_mean:.4f} ± {float(dense_acc.std()):.4f}")

    labels = {
        "loss": "(a) adam, L1 in loss",
        "prox": "(b) adam + l1_prox",
        "proximal_adam": "(c) proximal_adam",
        "prune": f"(d) prune dense to (b)'s sparsity ({args.prune_scope})",
        "prune+ft": f"(d') prune + {args.finetune_steps}-step fine-tune, fixed mask",
    }
    rows = []
    for method, r in results.items():
        for i, lam in enumerate(r["lambda"]):
            a, s = r["acc"][i], r["sparsity"][i]
            rows.append(
                [
                    labels[method],
                    f"{lam:g}",
                    f"{100 * s.mean():.1f} ± {100 * s.std():.1f}",
                    f"{100 * a.mean():.2f} ± {100 * a.std():.2f}",
                ]
            )
    print()
    print(
        _common.markdown_table(
            ["method", "lambda", "kernel zeros %", "test accuracy % (mean ± sd)"], rows
        )
    )

    levels = (0.5, 0.8, 0.9, 0.95, 0.98)
    summary = []
    for method, r in results.items():
        sp_m, acc_m = r["sparsity"].mean(1), r["acc"].mean(1)
        summary.append(
            [labels[method]]
            + [
                "—" if np.isnan(v := best_at(sp_m, acc_m, lv)) else f"{100 * v:.2f}"
                for lv in levels
            ]
        )
    print()
    print("Best mean test accuracy (%) among points with mean kernel sparsity >= level:")
    print(
        _common.markdown_table(
            ["method"] + [f">= {int(100 * lv)}% zeros" for lv in levels], summary
        )
    )
    print()
    verdict = dominance(results, levels)
    print(verdict)

    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "frontier.png")
    plot(results, labels, dense_mean, png, info)
    print(f"wrote {png}")
    payload = {
        "info": info,
        "dense_acc": dense_acc,
        "results": {
            m: {k: np.asarray(v).tolist() for k, v in r.items()} for m, r in results.items()
        },
        "verdict": verdict,
    }
    _common.write_json(args.json, payload)
    return payload


def dominance(results: dict[str, dict[str, Any]], levels) -> str:
    """Plain sentences: which method is most accurate at each sparsity level, and overall."""
    wins: dict[str, int] = {}
    per_level = []
    for lv in levels:
        scores = {
            m: best_at(r["sparsity"].mean(1), r["acc"].mean(1), lv) for m, r in results.items()
        }
        scores = {m: v for m, v in scores.items() if not np.isnan(v)}
        if not scores:
            per_level.append(f">= {int(100 * lv)}%: none")
            continue
        who = max(scores, key=scores.get)
        wins[who] = wins.get(who, 0) + 1
        per_level.append(f">= {int(100 * lv)}%: {who} {100 * scores[who]:.2f}%")
    loss_sp = float(results["loss"]["sparsity"].max())
    tail = f"L1-in-loss reaches at most {100 * loss_sp:.1f}% exact zeros."
    if not wins:
        return f"verdict: no method reached {int(100 * levels[0])}% kernel zeros; {tail}"
    order = sorted(wins.items(), key=lambda kv: -kv[1])
    return (
        "verdict: most accurate at "
        + ", ".join(f"{m} ({n}/{len(levels)} levels)" for m, n in order)
        + "; per level: "
        + "; ".join(per_level)
        + f". {tail}"
    )


def plot(results, labels, dense_acc: float, path: str, info) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"loss": "s", "prox": "o", "proximal_adam": "^", "prune": "x", "prune+ft": "+"}
    for method, r in results.items():
        sp, acc = r["sparsity"], r["acc"]
        ax.errorbar(
            100 * sp.mean(1),
            100 * acc.mean(1),
            xerr=100 * sp.std(1),
            yerr=100 * acc.std(1),
            marker=markers[method],
            linestyle="-" if method in ("prox", "proximal_adam") else ":",
            label=labels[method],
            capsize=2,
        )
    ax.axhline(100 * dense_acc, color="gray", linestyle="--", linewidth=1, label="dense")
    ax.set_xlabel("exact zeros in kernels (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"digits, MLP {info['sizes']['mlp']}, {info['sizes']['seeds']} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
