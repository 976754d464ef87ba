r"""Flax NNX: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with L1 and group-lasso prox steps.

Part 1 puts ``optax_l1.l1_prox`` last in the chain given to ``nnx.Optimizer``; the optimizer
hands ``tx.update`` the model's ``nnx.Param`` state as ``params``, and
``mask=optax_l1.kernel_mask`` picks the kernels out of that ``nnx.State``. Individual weights
become exactly zero.

Part 2 uses ``optax_l1.group_l1_prox(strength, learning_rate=lr, axis=0, mask=...)`` on the
hidden layer's kernel only. With ``axis=0`` a group is one column of the ``(in, out)``
kernel -- all the weights coming into one hidden unit -- so whole hidden units switch off.
A dead unit outputs the constant ``relu(bias1[j])`` whatever the input, so it can be
removed: drop column ``j`` of ``kernel1`` and ``bias1`` and row ``j`` of ``kernel2``, and fold
``relu(bias1[j]) * kernel2[j]`` into ``bias2``. The script builds that smaller dense network
and checks that it makes the same predictions as the trained one.

Run::

    python examples/flax_nnx.py
    python examples/flax_nnx.py --group-strength 2.0 --hidden 256
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _cli import positive_int
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import optax_l1


class MLP(nnx.Module):
    """One hidden layer: ``linear2(relu(linear1(x)))``."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, *, rngs: nnx.Rngs, **linear_kw):
        self.linear1 = nnx.Linear(n_in, n_hidden, rngs=rngs, **linear_kw)
        self.linear2 = nnx.Linear(n_hidden, n_out, rngs=rngs, **linear_kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear2(jax.nn.relu(self.linear1(x)))


def load_data(seed: int):
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return f32(scaler.transform(x_tr)), jnp.asarray(y_tr), f32(scaler.transform(x_te)), y_te


@functools.partial(nnx.jit, static_argnames="batch_size")
def train_step(model, optimizer, x_train, y_train, key, batch_size: int):
    idx = jax.random.randint(key, (batch_size,), 0, x_train.shape[0])
    x, y = x_train[idx], y_train[idx]

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    grads = nnx.grad(loss_fn)(model)
    optimizer.update(model, grads)  # calls tx.update(grads, opt_state, params)


def train(model, tx, data, args) -> MLP:
    x_tr, y_tr, _, _ = data
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    key = jax.random.key(args.seed + 1)
    for i in range(args.steps):
        train_step(model, optimizer, x_tr, y_tr, jax.random.fold_in(key, i), args.batch_size)
    return model


def accuracy(model, x, y) -> float:
    return float(jnp.mean(jnp.argmax(model(x), axis=-1) == y))


def prune_dead_units(model: MLP, seed: int) -> tuple[MLP, np.ndarray]:
    """The smaller dense MLP without the hidden units whose incoming weights are all zero."""
    k1, b1 = np.asarray(model.linear1.kernel[...]), np.asarray(model.linear1.bias[...])
    k2, b2 = np.asarray(model.linear2.kernel[...]), np.asarray(model.linear2.bias[...])
    alive = np.any(k1 != 0, axis=0)
    # A dead unit j outputs relu(b1[j]) for every input: fold its contribution into b2.
    b2_folded = b2 + np.maximum(b1[~alive], 0.0) @ k2[~alive]
    zeros = nnx.initializers.zeros_init()  # overwritten below (and fine with 0 units)
    small = MLP(k1.shape[0], int(alive.sum()), k2.shape[1], rngs=nnx.Rngs(seed), kernel_init=zeros)
    small.linear1.kernel[...] = jnp.asarray(k1[:, alive])
    small.linear1.bias[...] = jnp.asarray(b1[alive])
    small.linear2.kernel[...] = jnp.asarray(k2[alive])
    small.linear2.bias[...] = jnp.asarray(b2_folded)
    return small, alive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--strength", type=float, default=0.1, help="L1 strength (part 1)")
    parser.add_argument(
        "--group-strength",
        type=float,
        default=None,
        help="group-lasso strength (part 2); default 4, or 8 with --quick",
    )
    parser.add_argument("--steps", type=positive_int, default=1500, help="training steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--hidden", type=positive_int, default=128, help="hidden width")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="minibatch size")
    parser.add_argument("--seed", type=int, default=0, help="init, split and batches")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.hidden = min(args.steps, 500), min(args.hidden, 32)
    if args.group_strength is None:  # fewer steps need a stronger pull to switch units off
        args.group_strength = 8.0 if args.quick else 4.0

    data = load_data(args.seed)
    _, _, x_te, y_te = data
    n_in = data[0].shape[1]

    # Part 1: element-wise L1 on every kernel.
    model = MLP(n_in, args.hidden, 10, rngs=nnx.Rngs(args.seed))
    tx = optax.chain(
        optax.adam(args.lr),
        optax_l1.l1_prox(args.strength, learning_rate=args.lr, mask=optax_l1.kernel_mask),
    )
    model = train(model, tx, data, args)
    print(f"part 1: nnx.Optimizer + l1_prox (strength={args.strength:g})")
    print(f"  test accuracy {accuracy(model, x_te, y_te):.1%}")
    for name, value in optax_l1.sparsity_report(nnx.state(model, nnx.Param)).items():
        print(f"  {name:<16} {float(value):6.1%} exact zeros")

    # Part 2: group lasso on the hidden layer's kernel, one group per hidden unit.
    def hidden_kernel(params):
        return optax_l1.path_mask(params, include=r"^linear1/kernel$")

    model = MLP(n_in, args.hidden, 10, rngs=nnx.Rngs(args.seed))
    tx = optax.chain(
        optax.adam(args.lr),
        optax_l1.group_l1_prox(
            args.group_strength, learning_rate=args.lr, axis=0, mask=hidden_kernel
        ),
    )
    model = train(model, tx, data, args)
    small, alive = prune_dead_units(model, args.seed)
    logits, logits_small = model(x_te), small(x_te)
    max_diff = float(jnp.max(jnp.abs(logits - logits_small)))
    agree = float(jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(logits_small, -1)))
    print(f"\npart 2: nnx.Optimizer + group_l1_prox(axis=0) (strength={args.group_strength:g})")
    print(f"  hidden units: {alive.sum()} of {alive.size} alive")
    for label, net, units in (("trained", model, args.hidden), ("pruned", small, int(alive.sum()))):
        acc = accuracy(net, x_te, y_te)
        print(f"  {label + ' network':<16}: {units} hidden units, test accuracy {acc:.1%}")
    print(f"  max |logits - pruned logits| = {max_diff:.2e}, same predictions: {agree:.1%}")


if __name__ == "__main__":
    main()
