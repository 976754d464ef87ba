"""Python-side scale: trace + compile time of one training step on a tree of many leaves.

The step is ``params, state = step(params, state, grads)`` (jit, donated), for adamw alone and
for adamw followed by optax_l1 transforms, on ``--leaves`` small kernels and biases (a
Flax-like tree: ``layer_i/kernel`` of ``--dim x --dim`` and ``layer_i/bias``). Each
transform is timed ``--reps`` times (fresh tracing each time), interleaved with adamw, and
the ratio to adamw's time is reported (median of the per-repetition ratios).

``--references`` adds two steps that bound what ``sparsity_target`` can reach: adamw with
``sparsity_target(latent=False)``, and adamw with :func:`latent_copy`, the least a
transform that keeps a dense copy of each kernel does (the copy takes the update, the
output is the copy thresholded, as an update).

    python benchmarks/compile_scale.py --quick                     # smoke run, seconds
    python benchmarks/compile_scale.py --leaves 5000 --reps 1      # the issue's setting
    python benchmarks/compile_scale.py --leaves 5000 --reps 3 --references
"""

from __future__ import annotations

import time
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import header, markdown_table, write_json

import optax_l1


def make_params(leaves: int, dim: int) -> dict[str, Any]:
    n = max(leaves // 2, 1)
    return {
        f"layer_{i:05d}": {
            "kernel": jax.ShapeDtypeStruct((dim, dim), jnp.float32),
            "bias": jax.ShapeDtypeStruct((dim,), jnp.float32),
        }
        for i in range(n)
    }


def latent_copy(threshold: float = 1e-2) -> optax.GradientTransformation:
    """The reference for a latent copy: a float32 copy ``z`` of each kernel (2-D leaf),
    ``z <- z + u``, and the update that lands the params on ``z`` thresholded,
    ``where(|z| > threshold, z, 0) - p``; other leaves pass through. No search, no held
    support, no checks: not a method, only the copy's cost to the compiler."""

    def kernels(tree: Any) -> list[Any]:
        return [x for x in jax.tree.leaves(tree) if jnp.ndim(x) == 2]

    def init(params: Any) -> list[jax.Array]:
        return [jnp.array(p, jnp.float32, copy=True) for p in kernels(params)]

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        u_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = jax.tree.leaves(params)
        out, new, copies = [], [], iter(state)
        for u, p in zip(u_leaves, p_leaves, strict=True):
            if jnp.ndim(p) != 2:
                out.append(u)
                continue
            z = next(copies) + u
            new.append(z)
            out.append(jnp.where(jnp.abs(z) > threshold, z, 0.0) - p)
        return treedef.unflatten(out), new

    return optax.GradientTransformation(init, update)


def transforms(references: bool = False) -> dict[str, Any]:
    mask = optax_l1.kernel_mask

    def after_adamw(make_tx) -> Any:
        return lambda: optax.chain(optax.adamw(1e-3), make_tx())

    def target(**options) -> Any:
        return after_adamw(
            lambda: optax_l1.sparsity_target(0.9, ramp_steps=100, mask=mask, **options)
        )

    steps = {
        "adamw": lambda: optax.adamw(1e-3),
        "adamw + l1_prox": after_adamw(
            lambda: optax_l1.l1_prox(1e-4, learning_rate=1e-3, mask=mask)
        ),
        "adamw + sparsity_target": target(),
    }
    if references:
        steps["adamw + sparsity_target(latent=False)"] = target(latent=False)
        steps["adamw + latent_copy (reference)"] = after_adamw(latent_copy)
    return steps


def compile_seconds(make, shapes) -> float:
    tx = make()
    t0 = time.perf_counter()
    state_shapes = jax.eval_shape(tx.init, shapes)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    jax.jit(step, donate_argnums=(0, 1)).lower(shapes, state_shapes, shapes).compile()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _common.Parser(__doc__, quick="60 leaves, 1 rep (CI smoke run)")
    p.add_scaled(
        "--leaves",
        5000,
        60,
        type=_common.int_at_least(2),
        help="number of leaves (kernels + biases; an odd count runs one fewer)",
    )
    p.add_argument("--dim", type=_common.positive_int, default=8, help="kernels are dim x dim")
    p.add_scaled("--reps", 1, 1, type=_common.positive_int, help="timed compilations per transform")
    p.add_argument(
        "--references",
        action="store_true",
        help="also time sparsity_target(latent=False) and a bare latent copy (latent_copy)",
    )
    p.add_json()
    args = p.parse(argv)
    # Compile time is the measurement: no persistent cache (the test suite sets one) may
    # answer a repetition from disk.
    jax.config.update("jax_enable_compilation_cache", False)
    shapes = make_params(args.leaves, args.dim)
    info = header("compile_scale", leaves=2 * len(shapes), dim=args.dim, reps=args.reps)
    rows = transforms(args.references)
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.reps):
        for name, make in rows.items():  # interleaved: adamw, then each transform
            times[name].append(compile_seconds(make, shapes))
            print(f"{name:>38}: {times[name][-1]:.1f} s", flush=True)
    base = np.array(times["adamw"])
    table = [
        [name, f"{np.median(t):.1f}", f"{np.median(np.array(t) / base):.2f}"]
        for name, t in times.items()
    ]
    print(markdown_table(["step", "trace + compile (s)", "ratio to adamw"], table))
    out = {"info": info, "seconds": times}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
