r"""Sharded training: L1 prox on params spread over a device mesh, nothing L1-specific changes.

A 2-D mesh ``("data", "model")`` -- by default 8 host CPU devices as 4 x 2, made with
``--xla_force_host_platform_device_count=8`` unless ``XLA_FLAGS`` is already set -- runs a
data- and model-parallel step of an MLP on the digits data with ``NamedSharding``:

* each minibatch is split along ``"data"`` (``P("data")``);
* the hidden layer is split along ``"model"``: ``Dense_0/kernel`` by columns
  (``P(None, "model")``, with its bias), ``Dense_1/kernel`` by rows (``P("model", None)``).

The optimizer is
``optax.chain(optax.adam(lr), optax_l1.l1_prox(strength, learning_rate=lr, mask=...))``
as on one device: the soft-threshold is element-wise, so XLA runs it on each shard where
the shard lives. The script checks that

1. params (and the Adam moments) keep their sharding after training;
2. ``optax_l1.sparsity`` is a global count: the same as counting zeros in the gathered
   arrays, and the sum of the zeros held by each ``"model"`` shard;
3. the result matches the same run on a single device (same init, same batches).

Run::

    python examples/sharded.py
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/sharded.py --model 2
"""

from __future__ import annotations

import os

if "XLA_FLAGS" not in os.environ:  # must happen before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _cli import positive_int
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import optax_l1  # noqa: E402


def load_data(seed: int):
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return f32(scaler.transform(x_tr)), y_tr, f32(scaler.transform(x_te)), y_te


def init_params(key: jax.Array, n_in: int, hidden: int, n_out: int):
    k0, k1 = jax.random.split(key)
    return {
        "Dense_0": {
            "kernel": jax.random.normal(k0, (n_in, hidden)) * np.sqrt(2.0 / n_in),
            "bias": jnp.zeros((hidden,)),
        },
        "Dense_1": {
            "kernel": jax.random.normal(k1, (hidden, n_out)) * np.sqrt(1.0 / hidden),
            "bias": jnp.zeros((n_out,)),
        },
    }


# Where each leaf lives: hidden units split over "model", everything else replicated.
PARAM_SPECS = {
    "Dense_0": {"kernel": P(None, "model"), "bias": P("model")},
    "Dense_1": {"kernel": P("model", None), "bias": P()},
}


def mlp(params, x):
    h = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


def make_step(tx: optax.GradientTransformation):
    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(params):
            logits = mlp(params, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def train(params, tx, batches, batch_sharding):
    """The same loop for both runs; only where the arrays are placed differs."""
    step = make_step(tx)
    opt_state = jax.jit(tx.init)(params)
    for x, y in batches:
        x, y = jax.device_put((x, y), batch_sharding)
        # Wait for each step: with 8 simulated devices on a 2-core CPU, many all-reduces in
        # flight at once can miss XLA's rendezvous timeout and abort the process.
        params, opt_state, _ = jax.block_until_ready(step(params, opt_state, x, y))
    return params, opt_state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model", type=positive_int, default=2, help="size of the 'model' mesh axis"
    )
    parser.add_argument("--strength", type=float, default=0.1, help="L1 strength lambda")
    parser.add_argument("--steps", type=positive_int, default=500, help="training steps")
    parser.add_argument("--lr", type=float, default=3e-3, help="learning rate")
    parser.add_argument("--hidden", type=positive_int, default=256, help="hidden width")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="minibatch size")
    parser.add_argument("--seed", type=int, default=0, help="init, split and batches")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.hidden = min(args.steps, 100), 64

    devices = jax.devices()
    if len(devices) % args.model:
        raise SystemExit(f"{len(devices)} devices do not split into a 'model' axis of {args.model}")
    mesh = Mesh(np.array(devices).reshape(-1, args.model), ("data", "model"))
    n_data = mesh.shape["data"]
    if args.batch_size % n_data or args.hidden % args.model:
        raise SystemExit("--batch-size must divide by the 'data' axis, --hidden by 'model'")
    print(f"{len(devices)} {devices[0].platform} devices, mesh {dict(mesh.shape)}")

    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    rng = np.random.default_rng(args.seed)
    batches = []
    for _ in range(args.steps):
        idx = rng.integers(0, len(x_tr), args.batch_size)
        batches.append((x_tr[idx], y_tr[idx]))

    tx = optax.chain(
        optax.adam(args.lr),
        optax_l1.l1_prox(args.strength, learning_rate=args.lr, mask=optax_l1.kernel_mask),
    )
    init = init_params(jax.random.key(args.seed), x_tr.shape[1], args.hidden, 10)

    # Sharded run: params placed by PARAM_SPECS, batches split along "data".
    param_shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), PARAM_SPECS)
    t0 = time.perf_counter()
    params, opt_state = train(
        jax.device_put(init, param_shardings), tx, batches, NamedSharding(mesh, P("data"))
    )
    t_sharded = time.perf_counter() - t0

    # Reference run: everything on one device.
    one = jax.sharding.SingleDeviceSharding(devices[0])
    t0 = time.perf_counter()
    ref, _ = train(jax.device_put(init, one), tx, batches, one)
    t_single = time.perf_counter() - t0
    print(f"{args.steps} steps: sharded {t_sharded:.1f} s, single device {t_single:.1f} s")

    # 1. Shardings are kept (params and Adam's moments alike).
    print("\nparam shardings after training:")
    kept = True
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    for (path, leaf), want in zip(flat, treedef.flatten_up_to(PARAM_SPECS), strict=True):
        ok = leaf.sharding.is_equivalent_to(NamedSharding(mesh, want), leaf.ndim)
        kept &= ok
        name = "/".join(k.key for k in path)
        shard = leaf.addressable_shards[0].data.shape
        print(f"  {name:<16} {str(want):<18} shape {leaf.shape}, shard {shard}, kept={ok}")
    adam_mu = optax.tree.get(opt_state, "mu")
    mu_kept = all(
        m.sharding.is_equivalent_to(p.sharding, p.ndim)
        for m, p in zip(jax.tree.leaves(adam_mu), jax.tree.leaves(params), strict=True)
    )
    print(f"shardings kept: params {kept}, adam moments {mu_kept}")

    # 2. Sparsity is a global count.
    global_sparsity = float(
        jax.jit(lambda p: optax_l1.sparsity(p, mask=optax_l1.kernel_mask))(params)
    )
    kernels = [np.asarray(p["kernel"]) for p in params.values()]  # gathered to the host
    host = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    k0 = params["Dense_0"]["kernel"]
    per_shard = {}
    for s in k0.addressable_shards:  # replicated over "data": count each column block once
        per_shard[str(s.index)] = int((np.asarray(s.data) == 0).sum())
    print(
        f"\nkernel sparsity: optax_l1.sparsity (jit, sharded) {global_sparsity:.4%}, "
        f"counted on gathered arrays {host:.4%}"
    )
    print(
        f"Dense_0/kernel zeros per 'model' shard {list(per_shard.values())}, sum "
        f"{sum(per_shard.values())} == global {int((kernels[0] == 0).sum())}"
    )

    # 3. Same result as on one device.
    diff = max(
        float(jnp.max(jnp.abs(a - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(params), strict=True)
    )
    flips = sum(
        int(np.sum((np.asarray(a) == 0) != (np.asarray(b) == 0)))
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(params), strict=True)
    )
    ref_sparsity = float(optax_l1.sparsity(ref, mask=optax_l1.kernel_mask))
    acc = float(np.mean(np.argmax(np.asarray(mlp(params, x_te)), -1) == y_te))
    ref_acc = float(np.mean(np.argmax(np.asarray(mlp(ref, x_te)), -1) == y_te))
    print(
        f"\nsharded vs single device: max |param difference| = {diff:.2e}, "
        f"entries whose zero-ness differs: {flips}"
    )
    print(f"  test accuracy   sharded {acc:.1%}   single device {ref_acc:.1%}")
    print(f"  kernel sparsity sharded {global_sparsity:.1%}   single device {ref_sparsity:.1%}")


if __name__ == "__main__":
    main()
