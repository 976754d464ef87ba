r"""Equinox: ``l1_prox`` on an ``eqx.nn.MLP`` through ``eqx.filter(model, eqx.is_array)``.

An Equinox model is itself the pytree of parameters, with non-array leaves (the activation
function) mixed in. The usual Equinox pattern works unchanged: the optimizer state is
built from ``eqx.filter(model, eqx.is_array)`` (non-arrays become ``None``, which optax_l1
passes through), the same filtered tree is given to ``tx.update`` as ``params``, and
``eqx.apply_updates`` writes the result back. ``mask=optax_l1.kernel_mask`` selects the
``weight`` matrices (``layers/0/weight``...) and leaves the ``bias`` vectors alone.

(The file is not called ``equinox.py``: run as a script, that name would shadow the package.)

Run::

    python examples/equinox_example.py
    python examples/equinox_example.py --strength 0.3 --steps 4000
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from _cli import positive_int
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import optax_l1


def load_data(seed: int):
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return f32(scaler.transform(x_tr)), jnp.asarray(y_tr), f32(scaler.transform(x_te)), y_te


def loss_fn(model: eqx.nn.MLP, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy(model: eqx.nn.MLP, x: jax.Array, y) -> float:
    return float(jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=-1) == y))


def make_step(tx: optax.GradientTransformation, batch_size: int):
    @eqx.filter_jit
    def step(model, opt_state, x_train, y_train, key):
        idx = jax.random.randint(key, (batch_size,), 0, x_train.shape[0])
        grads = eqx.filter_grad(loss_fn)(model, x_train[idx], y_train[idx])
        params = eqx.filter(model, eqx.is_array)  # l1_prox needs the current params
        updates, opt_state = tx.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--strength", type=float, default=0.1, help="L1 strength lambda")
    parser.add_argument("--steps", type=positive_int, default=2000, help="training steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--width", type=positive_int, default=128, help="hidden width")
    parser.add_argument("--depth", type=int, default=2, help="hidden layers")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="minibatch size")
    parser.add_argument("--seed", type=int, default=0, help="init, split and batches")
    parser.add_argument("--quick", action="store_true", help="a tiny run for smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.width, args.depth = min(args.steps, 300), 32, 1

    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    print(f"equinox {eqx.__version__}: eqx.nn.MLP + adam + l1_prox (strength={args.strength:g})")
    for label, strength in (("dense (strength=0)", 0.0), ("l1_prox", args.strength)):
        model = eqx.nn.MLP(x_tr.shape[1], 10, args.width, args.depth, key=jax.random.key(args.seed))
        tx = optax.chain(
            optax.adam(args.lr),
            optax_l1.l1_prox(strength, learning_rate=args.lr, mask=optax_l1.kernel_mask),
        )
        opt_state = tx.init(eqx.filter(model, eqx.is_array))
        step = make_step(tx, args.batch_size)
        key = jax.random.key(args.seed + 1)
        for i in range(args.steps):
            model, opt_state = step(model, opt_state, x_tr, y_tr, jax.random.fold_in(key, i))
        print(f"\n{label}: test accuracy {accuracy(model, x_te, y_te):.1%}")
        report = optax_l1.sparsity_report(eqx.filter(model, eqx.is_array))
        for name, value in report.items():
            print(f"  {name:<16} {float(value):6.1%} exact zeros")


if __name__ == "__main__":
    main()
