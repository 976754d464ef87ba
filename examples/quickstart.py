r"""Quickstart: L1 in the loss vs. the recommended recipes for Adam users, on a digits MLP.

Trains the same MLP on scikit-learn's bundled digits data (8x8 images, 10 classes,
standardized, held-out test split) four ways, all with Adam:

1. ``none``            -- no regularization;
2. ``l1 in loss``      -- ``strength * sum(|kernel|)`` added to the loss, as Keras
   ``regularizers.l1`` and the usual PyTorch loop (``loss += lam * sum(p.abs().sum())``) do;
3. ``proximal_adam``   -- ``optax_l1.proximal_adam(lr, strength=...)``: Adam's step, then the
   L1 proximal step in Adam's own metric (each weight shrunk by ``lr * strength / D``, with
   ``D`` Adam's per-coordinate denominator). Its strength is in the units of the gradient
   and, unless ``--strength`` is given, is proposed for ``--target`` zeros by
   ``optax_l1.suggest_strength`` from the ``none`` run's Adam state after 10% of the steps;
4. ``sparsity_target`` -- ``optax.chain(optax.adam(lr), optax_l1.sparsity_target(target,
   ...))``: exactly ``--target`` zeros, the smallest weights, reached on a ramp (no
   strength to choose). This is the recipe for a wanted fraction of zeros.

Only kernels are regularized (``mask=optax_l1.kernel_mask``); biases are left alone. The
penalty in the loss only ever gives a subgradient, so weights oscillate around zero and
none is *exactly* zero (the last column shows how many are merely small); the two
proximal recipes set weights to exactly ``0.0`` -- a sparse network you can store and run
sparse -- at about the accuracy of the dense one. ``--loss-strength 0.01`` is where the
loss run keeps the dense accuracy (at 0.1 its subgradient swamps the data gradient).
``benchmarks/frontier.py`` sweeps these methods and magnitude pruning.

It prints a table of test accuracy and per-layer fraction of exact zeros, and saves a
figure (accuracy and sparsity over training, and the first layer's weight magnitudes).

Run::

    python examples/quickstart.py                    # about 1 min on a 2-core CPU
    python examples/quickstart.py --target 0.95 --out out/q.png
    python examples/quickstart.py --strength 3e-5   # proximal_adam at a strength of yours
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
from _cli import fraction, positive_int
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

import optax_l1

RUNS = ("none", "l1 in loss", "proximal_adam", "sparsity_target")


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


def make_run(name: str, strength: float, lr: float, steps: int, target: float):
    """The loss and the optimizer for one of the four runs."""
    mask = optax_l1.kernel_mask
    if name == "none":
        return data_loss, optax.adam(lr)
    if name == "l1 in loss":

        def penalized_loss(params, x, y):
            return data_loss(params, x, y) + optax_l1.l1_penalty(params, strength, mask=mask)

        return penalized_loss, optax.adam(lr)
    if name == "proximal_adam":
        return data_loss, optax_l1.proximal_adam(lr, strength=strength, mask=mask)
    if name == "sparsity_target":
        ramp = optax_l1.sparsity_target(
            target, ramp_steps=steps // 2, begin_step=steps // 10, mask=mask
        )
        return data_loss, optax.chain(optax.adam(lr), ramp)
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
    target: float,
    snapshot_step: int | None = None,
) -> tuple[Any, dict[str, list[float]], Any]:
    """One run; also returns (params, optimizer state) after ``snapshot_step`` steps."""
    loss_fn, tx = make_run(name, strength, lr, steps, target)
    n_in, n_out = data[0].shape[1], 10
    params = init_mlp(jax.random.key(seed), (n_in, *hidden, n_out))  # same init for all runs
    opt_state = tx.init(params)
    run_chunk = make_chunk(loss_fn, tx, data, batch_size, chunk)
    key = jax.random.key(seed + 1)  # same minibatches for all runs
    history: dict[str, list[float]] = {"step": [], "test_acc": [], "sparsity": []}
    n_chunks = steps // chunk
    snapshot = None
    # disable=None: no bars when the output is not a terminal (a log got 45 KB of them)
    with tqdm(total=steps, desc=f"{name:>15}", unit="step", leave=True, disable=None) as bar:
        for i in range(n_chunks):
            params, opt_state, metrics = run_chunk(params, opt_state, jax.random.fold_in(key, i))
            if snapshot_step is not None and (i + 1) * chunk == snapshot_step:
                snapshot = (params, opt_state)
            acc, sp = float(metrics["test_acc"]), float(metrics["sparsity"])
            history["step"].append((i + 1) * chunk)
            history["test_acc"].append(acc)
            history["sparsity"].append(sp)
            bar.update(chunk)
            bar.set_postfix(test_acc=f"{acc:.3f}", zeros=f"{sp:.1%}")
    return params, history, snapshot


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
    widths = [15, 9, *[max(len(s), 8) for s in layers], 8, 10]
    print(
        "\nexact-zero fraction of each kernel (biases are not regularized); the last column"
        f"\ncounts weights merely small (|w| < {small:g}, zeros included): small is not sparse"
    )
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
    fig = plt.figure(figsize=(14, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 2 * len(results), height_ratios=[1, 1.1])
    half = len(results)
    ax_acc, ax_sp = fig.add_subplot(grid[0, :half]), fig.add_subplot(grid[0, half:])
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
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--target", type=fraction, default=0.9, help="fraction of kernel zeros wanted"
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        help="L1 strength of the proximal_adam run (gradient units); default: "
        "optax_l1.suggest_strength for --target from the 'none' run at 10%% of the steps",
    )
    parser.add_argument(
        "--loss-strength",
        type=float,
        default=0.01,
        help="L1 strength lambda of the 'l1 in loss' run (not comparable to --strength "
        "under Adam: see the module docstring)",
    )
    parser.add_argument("--steps", type=positive_int, default=5000, help="training steps per run")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="init, split and batches")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="minibatch size")
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[128, 64], help="widths")
    parser.add_argument("--out", default="out/quickstart.png", help="where to save the figure")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.hidden = min(args.steps, 300), [32]
    chunk = max(1, min(100, args.steps // 20))  # steps per compiled lax.scan call
    args.steps = -(-args.steps // chunk) * chunk  # a whole number of chunks
    warm = max(chunk, (args.steps // 10) // chunk * chunk)  # the dense run read at this step

    print(
        f"jax {jax.__version__}, optax {optax.__version__}, optax_l1 {optax_l1.__version__}, "
        f"device {jax.devices()[0].device_kind}"
    )
    data = load_data(args.seed)
    print(
        f"digits: {data[0].shape[0]} train / {data[2].shape[0]} test, MLP "
        f"{'-'.join(map(str, [data[0].shape[1], *args.hidden, 10]))}, adam lr={args.lr:g}, "
        f"{args.steps} steps of batch {args.batch_size}, target {args.target:.0%} zeros"
    )
    t0 = time.perf_counter()
    common = dict(
        lr=args.lr,
        steps=args.steps,
        seed=args.seed,
        hidden=tuple(args.hidden),
        batch_size=args.batch_size,
        chunk=chunk,
        target=args.target,
    )
    results: dict[str, Any] = {}
    params, history, (warm_params, warm_state) = train(
        "none", data, strength=0.0, snapshot_step=warm, **common
    )
    results["none"] = (params, history)
    strength = args.strength
    if strength is None:
        strength = optax_l1.suggest_strength(
            warm_params,
            warm_state,
            args.target,
            for_transform="proximal_adam",
            batch_size=args.batch_size,
            mask=optax_l1.kernel_mask,
        )
    print(
        f"strengths: l1 in loss {args.loss_strength:g}, proximal_adam {strength:.3g}"
        + (" (suggest_strength)" if args.strength is None else "")
    )
    for name in RUNS[1:]:
        value = args.loss_strength if name == "l1 in loss" else strength
        params, history, _ = train(name, data, strength=value, **common)
        results[name] = (params, history)
    print_table(results, data, small=1e-3)
    save_figure(results, args.out, f"loss {args.loss_strength:g}, prox {strength:.3g}")
    print(f"\nsaved {args.out} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
