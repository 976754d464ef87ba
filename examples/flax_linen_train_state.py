r"""Flax linen: ``TrainState`` with ``optax.chain(optax.adamw(...), optax_l1.l1_prox(...))``.

The optimizer a Flax user already has (AdamW here) stays as it is; ``l1_prox`` goes last in
the chain and ``TrainState.apply_gradients`` needs no change, because it already passes
``params`` to ``tx.update``. ``mask=optax_l1.kernel_mask`` regularizes the ``kernel`` leaves
of every ``nn.Dense`` and leaves the biases alone (the same mask is given to AdamW's weight
decay). The script trains an MLP on scikit-learn's digits and prints test accuracy and the
fraction of exact zeros per parameter, biases included, for a dense and an L1 run.

Run::

    python examples/flax_linen_train_state.py
    python examples/flax_linen_train_state.py --strength 0.3 --steps 4000
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from _cli import positive_int
from flax.training import train_state
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import optax_l1


class MLP(nn.Module):
    features: Sequence[int]

    @nn.compact
    def __call__(self, x):
        for f in self.features[:-1]:
            x = nn.relu(nn.Dense(f)(x))
        return nn.Dense(self.features[-1])(x)


def load_data(seed: int):
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return f32(scaler.transform(x_tr)), jnp.asarray(y_tr), f32(scaler.transform(x_te)), y_te


def make_tx(lr: float, strength: float, weight_decay: float) -> optax.GradientTransformation:
    return optax.chain(
        optax.adamw(lr, weight_decay=weight_decay, mask=optax_l1.kernel_mask),
        optax_l1.l1_prox(
            strength, learning_rate=lr, mask=optax_l1.kernel_mask
        ),  # last in the chain
    )


@functools.partial(jax.jit, static_argnames="batch_size")
def train_step(state: train_state.TrainState, x_train, y_train, key, batch_size: int):
    idx = jax.random.randint(key, (batch_size,), 0, x_train.shape[0])
    x, y = x_train[idx], y_train[idx]

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads)


def train(args, data, strength: float) -> train_state.TrainState:
    x_tr, y_tr, _, _ = data
    model = MLP(features=(*args.hidden, 10))
    params = model.init(jax.random.key(args.seed), x_tr[:1])["params"]
    state = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=make_tx(args.lr, strength, args.weight_decay)
    )
    key = jax.random.key(args.seed + 1)
    for i in range(args.steps):
        state = train_step(state, x_tr, y_tr, jax.random.fold_in(key, i), args.batch_size)
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--strength", type=float, default=0.1, help="L1 strength lambda")
    parser.add_argument("--steps", type=positive_int, default=1500, help="training steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="minibatch size")
    parser.add_argument(
        "--hidden", type=positive_int, nargs="+", default=[128, 64], help="hidden width(s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="init, split and batches")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.hidden = min(args.steps, 300), [32]

    data = load_data(args.seed)
    _, _, x_te, y_te = data
    print(f"flax.linen TrainState, adamw + l1_prox (strength={args.strength:g}), digits")
    for label, strength in (("dense (strength=0)", 0.0), ("l1_prox", args.strength)):
        state = train(args, data, strength)
        logits = state.apply_fn({"params": state.params}, x_te)
        acc = float(jnp.mean(jnp.argmax(logits, -1) == y_te))
        print(f"\n{label}: test accuracy {acc:.1%}")
        print("  exact-zero fraction per parameter (kernels masked in, biases out):")
        report = optax_l1.sparsity_report(state.params)  # every leaf, biases included
        for name, value in report.items():
            print(f"    {name:<16} {float(value):6.1%}")
        kernels = optax_l1.sparsity(state.params, mask=optax_l1.kernel_mask)
        print(f"  kernels: {float(kernels):.1%} zeros")


if __name__ == "__main__":
    main()
