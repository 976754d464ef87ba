r"""Quickstart: L1 in the loss vs. a proximal L1 step, on a small MLP for handwritten digits.

Trains the same MLP on scikit-learn's bundled digits data (8x8 images, 10 classes,
standardized, held-out test split) three ways, with the same optimizer (Adam) and the same
penalty term ``strength * sum(|kernel|)`` for the two regularized runs:

1. ``none``        -- no regularization;
2. ``l1 in loss``  -- the penalty added to the loss, as Keras ``regularizers.l1`` and the
   usual PyTorch loop (``loss += lam * sum(p.abs().sum())``) do;
3. ``l1_prox``     -- ``optax.chain(optax.adam(lr),
   optax_l1.l1_prox(strength, learning_rate=lr, mask=...))``:
   Adam's step, then soft-thresholding by ``lr * strength``.

Only kernels are regularized (``mask=optax_l1.kernel_mask``); biases are left alone. The
penalty in the loss only ever gives a subgradient, so weights oscillate around zero and
none is *exactly* zero; the proximal step sets weights to exactly ``0.0`` -- a sparse
network you can store and run sparse -- at about the accuracy of the dense one.

The two regularized runs do not minimize the same objective in practice, and their strengths
are not comparable: Adam rescales the penalty's subgradient to a step of about ``lr``, while
``l1_prox`` shrinks by ``lr * strength``. So each gets its own default strength, chosen where
it keeps the dense model's accuracy: ``--loss-strength 0.01`` (at 0.1 the subgradient swamps
the data gradient and accuracy collapses to chance) and ``--strength 0.1`` for ``l1_prox``.
The loss run then pushes most weights below 1e-3 (the last column) yet none to exactly 0:
zeroing them would need a pruning threshold chosen by hand (that is a fair alternative; see
``benchmarks/frontier.py`` for a sweep of both methods and magnitude pruning).

It prints a table of test accuracy and per-layer fraction of exact zeros, and saves a
figure (accuracy and sparsity over training, and the first layer's weight magnitudes).

Run::

    python examples/quickstart.py                    # 10-30 s on a 2-core CPU
    python examples/quickstart.py --strength 0.03 --loss-strength 0.1 --out out/q.png
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

import optax_l1

RUNS = ("none", "l1 in loss", "l1_prox")


def load_data(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Digits, split 75/25 (stratified), standardized with the training set's statistics."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    return (
        jnp.asarray(x_tr, jnp.float32),
        jnp.asarray(y_tr, jnp.int32),
        jnp.asarray(x_te, jnp.float32),
        jnp.asarray(y_te, jnp.int32),
    )


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> dict[str, dict[str, jax.Array]]:
    """He-normal kernels and zero biases, named like Flax (``Dense_0/kernel``)."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
        params[f"Dense_{i}"] = {
            "kernel": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
            "bias": jnp.zeros((n_out,)),
        }
    return params


def mlp(params: dict[str, dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    n = len(params)
    for i in range(n):
        layer = params[f"Dense_{i}"]
        x = x @ layer["kernel"] + layer["bias"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


def data_loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(mlp(params, x), y).mean()


def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(mlp(params, x), axis=-1) == y)


def make_run(name: str, strength: float, lr: float):
    """The loss and the optimizer for one of the three runs."""
    if name == "none":
        return data_loss, optax.adam(lr)
    if name == "l1 in loss":

        def penalized_loss(params, x, y):
            penalty = optax_l1.l1_penalty(params, strength, mask=optax_l1.kernel_mask)
            return data_loss(params, x, y) + penalty

        return penalized_loss, optax.adam(lr)
    if name == "l1_prox":
        tx = optax.chain(
            optax.adam(lr), optax_l1.l1_prox(strength, learning_rate=lr, mask=optax_l1.kernel_mask)
        )
        return data_loss, tx
    raise ValueError(f"unknown run {name!r}")


def make_chunk(loss_fn, tx, data, batch_size: int, chunk: int):
    """A jitted function running `chunk` minibatch steps (lax.scan), then evaluating."""
    x_tr, y_tr, x_te, y_te = data

    def step(carry, key):
        params, opt_state = carry
        idx = jax.random.randint(key, (batch_size,), 0, x_tr.shape[0])
        grads = jax.grad(loss_fn)(params, x_tr[idx], y_tr[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @jax.jit
    def run_chunk(params, opt_state, key):
        keys = jax.random.split(key, chunk)
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), keys)
        metrics = {
            "test_acc": accuracy(params, x_te, y_te),
            "sparsity": optax_l1.sparsity(params, mask=optax_l1.kernel_mask),
        }
        return params, opt_state, metrics

    return run_chunk


def train(
    name: str,
    data,
    *,
    strength: float,
    lr: float,
    steps: int,
    seed: int,
    hidden: tuple[int, ...],
    batch_size: int,
    chunk: int,
) -> tuple[Any, dict[str, list[float]]]:
    loss_fn, tx = make_run(name, strength, lr)
    n_in, n_out = data[0].shape[1], 10
    params = init_mlp(jax.random.key(seed), (n_in, *hidden, n_out))  # same init for all runs
    opt_state = tx.init(params)
    run_chunk = make_chunk(loss_fn, tx, data, batch_size, chunk)
    key = jax.random.key(seed + 1)  # same minibatches for all runs
    history: dict[str, list[float]] = {"step": [], "test_acc": [], "sparsity": []}
    n_chunks = steps // chunk
    with tqdm(total=steps, desc=f"{name:>10}", unit="step", leave=True) as bar:
        for i in range(n_chunks):
            params, opt_state, metrics = run_chunk(params, opt_state, jax.random.fold_in(key, i))
            acc, sp = float(metrics["test_acc"]), float(metrics["sparsity"])
            history["step"].append((i + 1) * chunk)
            history["test_acc"].append(acc)
            history["sparsity"].append(sp)
            bar.update(chunk)
            bar.set_postfix(test_acc=f"{acc:.3f}", zeros=f"{sp:.1%}")
    return params, history


def format_row(cells: list[str], widths: list[int]) -> str:
    """The first cell left-aligned, the others right-aligned."""
    rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join([cells[0].ljust(widths[0]), *rest])


def print_table(results: dict[str, Any], data, small: float) -> None:
    """Test accuracy and the fraction of exact zeros per kernel (biases are not regularized)."""

    @jax.jit
    def final_metrics(params, x, y):
        kernels = [layer["kernel"] for layer in params.values()]
        near = sum(jnp.sum(jnp.abs(k) < small) for k in kernels) / sum(k.size for k in kernels)
        report = optax_l1.sparsity_report(params, mask=optax_l1.kernel_mask)
        return accuracy(params, x, y), report, near

    rows = {name: final_metrics(params, data[2], data[3]) for name, (params, _) in results.items()}
    layers = [k for k in next(iter(rows.values()))[1] if k != "total"]
    head = ["run", "test acc", *layers, "kernels", f"|w|<{small:g}"]
    widths = [12, 9, *[max(len(s), 8) for s in layers], 8, 10]
    print("\nexact-zero fraction of each kernel (biases are not regularized)")
    print(format_row(head, widths))
    for name, (acc, report, near) in rows.items():
        row = [
            name,
            f"{float(acc):.1%}",
            *[f"{float(report[k]):.1%}" for k in layers],
            f"{float(report['total']):.1%}",
            f"{float(near):.1%}",
        ]
        print(format_row(row, widths))


def save_figure(results: dict[str, Any], path: str, strength: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig = plt.figure(figsize=(12, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 6, height_ratios=[1, 1.1])
    ax_acc, ax_sp = fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:])
    for name, (_, hist) in results.items():
        ax_acc.plot(hist["step"], hist["test_acc"], label=name)
        ax_sp.plot(hist["step"], hist["sparsity"], label=name)
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="test accuracy")
    ax_sp.set(
        xlabel="step",
        ylabel="fraction of kernel entries == 0.0",
        title=f"exact zeros (strength: {strength})",
        ylim=(-0.02, 1.02),
    )
    for ax in (ax_acc, ax_sp):
        ax.grid(alpha=0.3)
        ax.legend()

    mags = {name: np.abs(np.asarray(p["Dense_0"]["kernel"])) for name, (p, _) in results.items()}
    positive = np.concatenate([m[m > 0] for m in mags.values()])
    norm = LogNorm(vmin=max(positive.min(), 1e-6), vmax=positive.max())
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("white")  # exact zeros
    for j, (name, m) in enumerate(mags.items()):
        ax = fig.add_subplot(grid[1, 2 * j : 2 * j + 2])
        im = ax.imshow(np.ma.masked_equal(m.T, 0.0), cmap=cmap, norm=norm, aspect="auto")
        ax.set(
            title=f"{name}: |Dense_0 kernel|, {np.mean(m == 0):.0%} exactly 0 (white)",
            xlabel="input pixel",
            ylabel="hidden unit",
        )
        ax.title.set_fontsize(9)
    fig.colorbar(im, ax=ax, label="|w| (log)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strength", type=float, default=0.1, help="L1 strength lambda of the l1_prox run"
    )
    parser.add_argument(
        "--loss-strength",
        type=float,
        default=0.01,
        help="L1 strength lambda of the 'l1 in loss' run (not comparable to --strength under "
        "Adam: see the module docstring)",
    )
    parser.add_argument("--steps", type=int, default=5000, help="training steps per run")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--out", default="out/quickstart.png", help="where to save the figure")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.hidden = min(args.steps, 300), [32]
    chunk = max(1, min(100, args.steps // 20))  # steps per compiled lax.scan call
    args.steps = -(-args.steps // chunk) * chunk  # a whole number of chunks

    print(
        f"jax {jax.__version__}, optax {optax.__version__}, optax_l1 {optax_l1.__version__}, "
        f"device {jax.devices()[0].device_kind}"
    )
    data = load_data(args.seed)
    print(
        f"digits: {data[0].shape[0]} train / {data[2].shape[0]} test, MLP "
        f"{'-'.join(map(str, [data[0].shape[1], *args.hidden, 10]))}, adam lr={args.lr:g}, "
        f"strength: l1 in loss {args.loss_strength:g}, l1_prox {args.strength:g}; "
        f"{args.steps} steps of batch {args.batch_size}"
    )
    t0 = time.perf_counter()
    results = {
        name: train(
            name,
            data,
            strength=args.loss_strength if name == "l1 in loss" else args.strength,
            lr=args.lr,
            steps=args.steps,
            seed=args.seed,
            hidden=tuple(args.hidden),
            batch_size=args.batch_size,
            chunk=chunk,
        )
        for name in RUNS
    }
    print_table(results, data, small=1e-3)
    save_figure(results, args.out, f"loss {args.loss_strength:g}, prox {args.strength:g}")
    print(f"\nsaved {args.out} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
