r"""From zeros to a smaller, faster model: train with coupled units, compact, save, reload, run.

Trains a digits MLP (64 -> 512 -> 512 -> 10, relu) with AdamW and, for each hidden
layer, ``optax_l1.sparsity_target(target, structure=units)``, where ``units`` couples
column ``j`` of the layer's kernel, bias entry ``j`` and row ``j`` of the next kernel into
one group (``optax_l1.Groups`` / ``optax_l1.Elements`` with a shared ``couple`` label).
The ramp switches off ``target`` of each layer's hidden units, whole.
Then:

1. ``optax_l1.compact`` slices every unit that is zero on all its leaves out of both
   kernels and the bias: a dense MLP with fewer hidden units;
2. the small params are saved with ``np.savez`` and loaded back (bytes on disk printed);
3. the dense and the compacted network are timed side by side on the test set (jitted,
   interleaved, the median of ``--reps`` calls each), and their predictions compared.

Run::

    python examples/compact_mlp.py                 # about 30 s on a 2-core CPU
    python examples/compact_mlp.py --target 0.9
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import fraction, positive_int
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import optax_l1


def load_data(seed: int):
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    return (
        jnp.asarray(scaler.transform(x_tr), jnp.float32),
        jnp.asarray(y_tr, jnp.int32),
        jnp.asarray(scaler.transform(x_te), jnp.float32),
        jnp.asarray(y_te, jnp.int32),
    )


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> dict[str, dict[str, jax.Array]]:
    params = {}
    for i, (k, n_in, n_out) in enumerate(
        zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:], strict=True)
    ):
        params[f"Dense_{i}"] = {
            "kernel": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
            "bias": jnp.zeros((n_out,)),
        }
    return params


def forward(params: dict[str, Any], x: jax.Array) -> jax.Array:
    names = sorted(params, key=lambda n: int(n.split("_")[1]))
    for name in names[:-1]:
        x = jax.nn.relu(x @ params[name]["kernel"] + params[name]["bias"][None])
    last = params[names[-1]]
    return x @ last["kernel"] + last["bias"][None]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--target", type=fraction, default=0.75, help="fraction of hidden units off")
    p.add_argument("--hidden", type=positive_int, default=512, help="units per hidden layer")
    p.add_argument("--steps", type=positive_int, default=1500, help="training steps")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    p.add_argument("--batch-size", type=positive_int, default=128, help="minibatch size")
    p.add_argument("--reps", type=positive_int, default=200, help="timed inference calls per model")
    p.add_argument("--seed", type=int, default=0, help="data split and init seed")
    p.add_argument("--quick", action="store_true", help="a few steps: smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.hidden, args.reps = 150, 64, 20

    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    params = init_mlp(jax.random.PRNGKey(args.seed), (64, args.hidden, args.hidden, 10))
    print(report(run(params, (x_tr, y_tr, x_te, y_te), args), args))


def two_layer_units() -> tuple[dict[str, Any], dict[str, Any]]:
    """The two hidden layers' unit structures, one label each (a kernel between two
    hidden layers has its columns in one and its rows in the other)."""
    first = {
        "Dense_0": {
            "kernel": optax_l1.Groups(0, couple="h0"),
            "bias": optax_l1.Elements(couple="h0"),
        },
        "Dense_1": {"kernel": optax_l1.Groups(1, couple="h0"), "bias": None},
        "Dense_2": {"kernel": None, "bias": None},
    }
    second = {
        "Dense_0": {"kernel": None, "bias": None},
        "Dense_1": {
            "kernel": optax_l1.Groups(0, couple="h1"),
            "bias": optax_l1.Elements(couple="h1"),
        },
        "Dense_2": {"kernel": optax_l1.Groups(1, couple="h1"), "bias": None},
    }
    return first, second


def run(params: dict[str, Any], data, args) -> dict[str, Any]:
    x_tr, y_tr, x_te, y_te = data
    first, second = two_layer_units()
    # One sparsity_target per hidden layer, each on its own coupled units. Dense_1 is in
    # both (its rows are layer 0's units, its columns layer 1's): with latent=False each
    # search scores the params as they are, so the two compose.
    tx = optax.chain(
        optax.adamw(args.lr, weight_decay=1e-4),
        *(
            optax_l1.sparsity_target(
                args.target,
                ramp_steps=args.steps // 2,
                begin_step=args.steps // 10,
                structure=units,
                latent=False,
            )
            for units in (first, second)
        ),
    )

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean()

    @jax.jit
    def step(p, s, key):
        idx = jax.random.choice(key, x_tr.shape[0], (args.batch_size,), replace=False)
        g = jax.grad(loss)(p, x_tr[idx], y_tr[idx])
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    key = jax.random.PRNGKey(args.seed + 1)
    for i in range(args.steps):
        params, state = step(params, state, jax.random.fold_in(key, i))

    small, kept1 = optax_l1.compact(params, first)
    small, kept2 = optax_l1.compact(small, second)
    with tempfile.TemporaryDirectory() as tmp:
        dense_file, small_file = os.path.join(tmp, "dense.npz"), os.path.join(tmp, "small.npz")
        save(dense_file, params)
        save(small_file, small)
        sizes = os.path.getsize(dense_file), os.path.getsize(small_file)
        small = load(small_file)

    dense_fn, small_fn = jax.jit(forward), jax.jit(forward)
    times = timed(dense_fn, params, small_fn, small, x_te, args.reps)
    logits, small_logits = dense_fn(params, x_te), small_fn(small, x_te)
    return {
        "kept": [len(kept1["h0"]), len(kept2["h1"])],
        "params": [sum(int(x.size) for x in jax.tree.leaves(t)) for t in (params, small)],
        "bytes": list(sizes),
        "accuracy": [float(jnp.mean(jnp.argmax(t, -1) == y_te)) for t in (logits, small_logits)],
        "max_diff": float(jnp.max(jnp.abs(logits - small_logits))),
        "scale": float(jnp.max(jnp.abs(logits))),
        "same": float(jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(small_logits, -1))),
        "seconds": list(times),
    }


def report(r: dict[str, Any], args) -> str:
    (n_dense, n_small), (b_dense, b_small), (t_dense, t_small) = (
        r["params"],
        r["bytes"],
        r["seconds"],
    )
    return "\n".join(
        [
            f"hidden units kept: {r['kept'][0]} and {r['kept'][1]} of {args.hidden}",
            f"parameters       : {n_dense} dense -> {n_small} compacted "
            f"({n_dense / n_small:.2f}x fewer)",
            f"bytes on disk    : {b_dense} -> {b_small} ({b_dense / b_small:.2f}x smaller)",
            f"test accuracy    : {r['accuracy'][0]:.2%} sparse dense-shaped, "
            f"{r['accuracy'][1]:.2%} compacted",
            f"max |logits - compacted logits| = {r['max_diff']:.2e}, "
            f"{r['max_diff'] / max(r['scale'], 1e-30):.1e} of the logits' scale",
            f"same predictions : {r['same']:.1%}",
            f"inference (test set, median of {args.reps}): dense {t_dense * 1e6:.0f} us, "
            f"compacted {t_small * 1e6:.0f} us ({t_dense / t_small:.2f}x faster)",
        ]
    )


def save(path: str, params: dict[str, Any]) -> None:
    np.savez(
        path, **{f"{n}/{k}": np.asarray(v) for n, layer in params.items() for k, v in layer.items()}
    )


def load(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with np.load(path) as f:
        for key in f.files:
            layer, name = key.split("/")
            out.setdefault(layer, {})[name] = jnp.asarray(f[key])
    return out


def timed(fa, pa, fb, pb, x, reps: int) -> tuple[float, float]:
    """Median seconds per call of fa(pa, x) and fb(pb, x), interleaved."""
    for f, p in ((fa, pa), (fb, pb)):
        f(p, x).block_until_ready()
    ta, tb = [], []
    for _ in range(reps):
        for f, p, out in ((fa, pa, ta), (fb, pb, tb)):
            t0 = time.perf_counter()
            f(p, x).block_until_ready()
            out.append(time.perf_counter() - t0)
    return float(np.median(ta)), float(np.median(tb))


if __name__ == "__main__":
    main()
