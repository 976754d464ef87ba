"""Target sparsity: `sparsity_target` vs gradual magnitude pruning on a digits MLP.

Trains a 64-256-10 ReLU MLP on scikit-learn's digits (standardized, 30% held out) with
Adam for the same number of steps under each method and reports, per target sparsity, the
final fraction of exact zeros over the two kernels (biases are excluded from the count and
from the regularization via ``optax_l1.kernel_mask``) and the held-out accuracy:

- ``sparsity_target``: ``optax.chain(optax.adam(lr), optax_l1.sparsity_target(target,
  ramp_steps=T, begin_step=t0, mask=kernel_mask))`` (its defaults: hard thresholding at one
  global quantile every step, support frozen after the ramp); ``sparsity_target(shrink=soft)``
  the same with the 0.1 default, soft thresholding.
- ``gmp-layer`` (Zhu & Gupta 2017, as in TensorFlow's model_pruning): the cubic ramp (the
  library's default until 0.2.0; ``--ramp cubic`` gives it to ``sparsity_target`` too);
  every ``--prune-every`` steps from ``t0`` to ``t0 + T`` each kernel's smallest-magnitude
  weights are masked to the ramp's sparsity; the masks are fixed in between and applied to
  the weights after every Adam update, so pruned weights stay exactly zero.
- ``gmp-global``: the same with one magnitude threshold across both kernels.

Each (method, seed) pair trains in one ``lax.scan``; the seed sets the split, the
initialization and the minibatch order, and every method sees the same ones.

    python benchmarks/target_sparsity.py            # full: 3 seeds, targets 0.90 0.95 0.98
    python benchmarks/target_sparsity.py --quick    # a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import header, markdown_table, ramp_arg, write_json

import optax_l1

METHODS = (
    "sparsity_target",
    "sparsity_target(optimizer=adam)",
    "sparsity_target(shrink=soft)",
    "gmp-layer",
    "gmp-global",
)


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    return _common.digits_split(seed, 0.3)


def init_mlp(key: jax.Array, sizes: tuple[int, ...] = (64, 256, 10)) -> dict[str, Any]:
    layer_keys = []
    for _ in sizes[1:]:
        key, sub = jax.random.split(key)
        layer_keys.append(sub)
    return _common.init_mlp(layer_keys, sizes)


forward, loss_fn, accuracy = _common.forward, _common.cross_entropy, _common.accuracy


def ramp_at(count: jax.Array, target: jax.Array, ramp_steps: int, begin: int) -> jax.Array:
    """Zhu & Gupta's cubic ramp: s_t = s_f (1 - (1 - (t - t0) / (n dt))^3), clipped."""
    frac = jnp.clip((count - begin) / ramp_steps, 0.0, 1.0)
    return target * (1.0 - (1.0 - frac) ** 3)


def magnitude_masks(params: Any, kmask: Any, sparsity: jax.Array, scope: str) -> Any:
    """Keep-masks (1 = kept) pruning the smallest |w| of each kernel (or of all kernels)."""

    def kth(values: jax.Array) -> jax.Array:
        k = jnp.floor(sparsity * values.size).astype(jnp.int32)
        srt = jnp.sort(values)
        return jnp.where(k > 0, srt[jnp.clip(k - 1, 0, values.size - 1)], -1.0)

    leaves, treedef = jax.tree.flatten(params)
    kept = jax.tree.leaves(kmask)
    if scope == "global":
        chosen = [jnp.abs(w).ravel() for w, m in zip(leaves, kept, strict=True) if m]
        tau = kth(jnp.concatenate(chosen))
        taus = [tau] * len(leaves)
    else:
        taus = [kth(jnp.abs(w).ravel()) for w in leaves]
    masks = [
        (jnp.abs(w) > t).astype(w.dtype) if m else jnp.ones_like(w)
        for w, m, t in zip(leaves, kept, taus, strict=True)
    ]
    return treedef.unflatten(masks)


def make_train(cfg: argparse.Namespace, method: str, n_train: int):
    steps, batch, lr = cfg.steps, cfg.batch, cfg.lr
    begin, ramp_steps = cfg.begin, cfg.ramp_steps

    def train(seed_key, target, xtr, ytr, xte, yte):
        init_key, data_key = jax.random.split(seed_key)
        params = init_mlp(init_key)
        kmask = optax_l1.kernel_mask(params)
        options = dict(
            ramp_steps=ramp_steps,
            begin_step=begin,
            hold=cfg.hold,
            smoothing=cfg.smoothing,
            update_every=cfg.update_every,
            mask=kmask,
        )
        if method == "sparsity_target":
            until = {} if cfg.latent_until is None else dict(latent_until=cfg.latent_until)
            shape = {} if cfg.ramp is None else dict(ramp=cfg.ramp)
            st = optax_l1.sparsity_target(target, **options, **until, **shape)
            tx = optax.chain(optax.adam(lr), st)
        elif method == "sparsity_target(shrink=soft)":  # the 0.1 default
            tx = optax.chain(
                optax.adam(lr), optax_l1.sparsity_target(target, shrink="soft", **options)
            )
        elif method == "sparsity_target(optimizer=adam)":
            tx = optax_l1.sparsity_target(target, optimizer=optax.adam(lr), **options)
        else:
            tx = optax.adam(lr)
        opt_state = tx.init(params)
        keep = jax.tree.map(jnp.ones_like, params)
        epochs = -(-steps * batch // n_train)
        perms = jax.vmap(lambda k: jax.random.permutation(k, n_train))(
            jax.random.split(data_key, epochs)
        )
        idx = perms.reshape(-1)[: steps * batch].reshape(steps, batch)

        def step(carry, inp):
            params, opt_state, keep = carry
            t, bidx = inp
            grads = jax.grad(loss_fn)(params, xtr[bidx], ytr[bidx])
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if method.startswith("gmp"):
                params = jax.tree.map(lambda w, m: w * m, params, keep)  # pruned stay zero
                prune_now = (t >= begin) & (t <= begin + ramp_steps)
                prune_now &= (t - begin) % cfg.prune_every == 0
                scope = method.split("-")[1]
                keep = jax.lax.cond(
                    prune_now,
                    lambda: magnitude_masks(
                        params, kmask, ramp_at(t, target, ramp_steps, begin), scope
                    ),
                    lambda: keep,
                )
                params = jax.tree.map(lambda w, m: w * m, params, keep)
            return (params, opt_state, keep), None

        ts = jnp.arange(steps)
        (params, _, _), _ = jax.lax.scan(step, (params, opt_state, keep), (ts, idx))
        report = optax_l1.sparsity_report(params, mask=kmask)
        return (
            report["total"],
            accuracy(params, xte, yte),
            accuracy(params, xtr, ytr),
            report["dense_0/kernel"],
            report["dense_1/kernel"],
        )

    return jax.jit(train)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _common.Parser(__doc__.split("\n")[0], quick="1 seed, 1 target, 300 steps")
    p.add_scaled(
        "--targets",
        [0.90, 0.95, 0.98],
        [0.9],
        type=_common.fraction,
        nargs="+",
        help="target fractions of kernel zeros",
    )
    p.add_scaled("--seeds", 3, 1, type=_common.positive_int, help="seeds 0..N-1")
    p.add_scaled("--steps", 3000, 300, type=_common.positive_int, help="training steps")
    p.add_scaled("--begin", 300, 30, type=_common.nonnegative_int, help="ramp start t0")
    p.add_scaled("--ramp-steps", 1500, 150, type=_common.positive_int, help="ramp length n*dt")
    p.add_scaled("--prune-every", 50, 10, type=_common.positive_int, help="GMP pruning interval dt")
    p.add_argument("--batch", type=_common.positive_int, default=64, help="minibatch size")
    p.add_argument("--lr", type=_common.positive_float, default=2e-3, help="Adam learning rate")
    p.add_argument(
        "--hold", default="support", choices=("track", "support"), help="sparsity_target's hold"
    )
    p.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to compare"
    )
    p.add_argument("--smoothing", type=float, default=0.0, help="sparsity_target's smoothing")
    p.add_argument(
        "--update-every",
        type=_common.positive_int,
        default=1,
        help="sparsity_target's update_every",
    )
    p.add_argument(
        "--latent-until",
        type=float,
        default=None,
        help="latent_until of the sparsity_target method (default: the library's)",
    )
    p.add_argument(
        "--ramp",
        type=ramp_arg,
        default=None,
        help="ramp of the sparsity_target method: cubic, linear or an exponent (default: "
        "the library's, 2)",
    )
    p.add_json(help="write the raw results here")
    return p.parse(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(argv)
    info = header(
        "target_sparsity",
        steps=cfg.steps,
        batch=cfg.batch,
        lr=cfg.lr,
        begin=cfg.begin,
        ramp_steps=cfg.ramp_steps,
        prune_every=cfg.prune_every,
        hold=cfg.hold,
        seeds=cfg.seeds,
        latent_until=cfg.latent_until,
    )
    print("sparsity_target vs gradual magnitude pruning, digits MLP 64-256-10, Adam")
    data = [tuple(jnp.asarray(a) for a in load_data(s)) for s in range(cfg.seeds)]
    results: dict[str, dict[float, list[tuple[float, ...]]]] = {}
    times: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for method in cfg.methods:
        train = make_train(cfg, method, int(data[0][0].shape[0]))
        results[method], times[method] = {}, []
        for target in cfg.targets:
            runs = []
            for s, (xtr, xte, ytr, yte) in enumerate(data):
                t1 = time.perf_counter()
                out = train(jax.random.key(s), jnp.float32(target), xtr, ytr, xte, yte)
                runs.append(tuple(float(v) for v in out))  # blocks until ready
                times[method].append(time.perf_counter() - t1)
            results[method][target] = runs
    elapsed = time.perf_counter() - t0
    rows = []
    for target in cfg.targets:
        for method in cfg.methods:
            r = np.asarray(results[method][target])
            paired = "-"
            if "gmp-global" in results and method != "gmp-global":
                diff = 100 * (r[:, 1] - np.asarray(results["gmp-global"][target])[:, 1])
                paired = f"{diff.mean():+.2f} ± {diff.std():.2f}"
            rows.append(
                [
                    f"{target:.2f}",
                    method,
                    f"{100 * r[:, 0].mean():.2f} ({100 * r[:, 0].min():.2f}-"
                    f"{100 * r[:, 0].max():.2f})",
                    f"{100 * (r[:, 0].mean() - target):+.2f}",
                    f"{100 * r[:, 1].mean():.2f} ± {100 * r[:, 1].std():.2f}",
                    paired,
                    f"{100 * r[:, 2].mean():.2f}",
                    f"{100 * r[:, 3].mean():.1f} / {100 * r[:, 4].mean():.1f}",
                ]
            )
    headers = [
        "target",
        "method",
        "kernel zeros % (min-max)",
        "miss (pts)",
        "test acc % (mean ± sd)",
        "test acc − gmp-global (paired, pts)",
        "train acc %",
        "zeros % 64x256 / 256x10",
    ]
    print(markdown_table(headers, rows))
    # The first call of each method compiles; the others time the training alone.
    cost = {
        m: 1e3 * float(np.median(t[1:])) / cfg.steps if len(t) > 1 else None
        for m, t in times.items()
    }
    print("ms per training step (median over runs, compile excluded): ", end="")
    print(", ".join(f"{m} {'—' if c is None else f'{c:.3f}'}" for m, c in cost.items()))
    print(f"total {elapsed:.1f} s for {len(cfg.methods)} methods x {len(cfg.targets)} targets")
    payload = {
        "info": info,
        "results": {m: dict(v) for m, v in results.items()},
        "ms_per_step": cost,
    }
    write_json(cfg.json, payload)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
