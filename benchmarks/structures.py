"""Structured sparsity on the digits MLP: gradual (sparsity_target's ramp) vs one-shot
magnitude pruning plus fine-tuning, per structure, at equal steps, schedule and data.

The MLP of ``examples/compact_mlp.py`` (64 -> H -> H -> 10, relu), AdamW, ``--steps``
steps; every kernel regularized (biases only inside coupled units). For each structure:

- ``gradual``: ``sparsity_target`` ramps from ``begin = steps / 10`` over ``steps / 2``
  steps (the library's defaults: the ramp's exponent 2, the cube before ``23b3b8c``), then
  holds the support (fine-tuning);
- ``one-shot``: the baseline, dense training until the ramp's end, one magnitude pruning
  to the target there (``sparsity_target(ramp_steps=1, latent=False)`` at that step: the
  smallest groups by norm, or the N:M projection), then the same fine-tuning.

Structures: ``elements`` (90% of kernel entries), ``2:4`` (N:M along the reduction axis:
``allocation=Blocks(4, axis=0)``), ``blocks`` (75% of the 4x1 blocks along the reduction
axis), ``units`` (75% of each hidden layer's units: column of the kernel, bias, row of
the next kernel; ``latent=False`` in both arms, see the structures guide).

Run::

    python benchmarks/structures.py --seeds 3          # ~5 min on a 2-core CPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import _common  # noqa: E402
import compact_mlp  # noqa: E402
from _common import header, write_json  # noqa: E402

import optax_l1  # noqa: E402

STRUCTURES = ("elements", "2:4", "blocks", "units")


def pruning(structure: str, arm: str, cfg: argparse.Namespace) -> list[Any]:
    """The sparsity_target transforms of one (structure, arm)."""
    begin, ramp = cfg.steps // 10, cfg.steps // 2
    if arm == "one-shot":
        when = dict(begin_step=begin + ramp - 1, ramp_steps=1, latent=False)
    else:
        when = dict(begin_step=begin, ramp_steps=ramp)
    kernels = optax_l1.kernel_mask
    if structure == "elements":
        return [optax_l1.sparsity_target(0.9, mask=kernels, **when)]
    if structure == "2:4":
        blocks = optax_l1.Blocks(4, axis=0)
        return [optax_l1.sparsity_target(0.5, allocation=blocks, mask=kernels, **when)]
    if structure == "blocks":
        st = optax_l1.Blocks(4, axis=0)
        return [optax_l1.sparsity_target(0.75, structure=st, mask=kernels, **when)]
    when["latent"] = False
    return [
        optax_l1.sparsity_target(0.75, structure=units, allocation="uniform", **when)
        for units in compact_mlp.two_layer_units()
    ]


_TRAINED: dict[tuple[str, str, int], Any] = {}  # export reuses the runs of the table


def train(structure: str, arm: str, seed: int, cfg: argparse.Namespace, data) -> Any:
    """The params after ``cfg.steps`` steps of one (structure, arm, seed) (cached)."""
    key = (structure, arm, seed)
    if key not in _TRAINED:
        _TRAINED[key] = _train(structure, arm, seed, cfg, data)
    return _TRAINED[key]


def _train(structure: str, arm: str, seed: int, cfg: argparse.Namespace, data) -> Any:
    x_tr, y_tr, _, _ = data
    params = compact_mlp.init_mlp(jax.random.PRNGKey(seed), (64, cfg.hidden, cfg.hidden, 10))
    extra = [] if structure == "dense" else pruning(structure, arm, cfg)
    tx = optax.chain(optax.adamw(cfg.lr, weight_decay=1e-4), *extra)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(compact_mlp.forward(p, x), y).mean()

    @jax.jit
    def step(p, s, key):
        idx = jax.random.choice(key, x_tr.shape[0], (cfg.batch_size,), replace=False)
        u, s = tx.update(jax.grad(loss)(p, x_tr[idx], y_tr[idx]), s, p)
        return optax.apply_updates(p, u), s

    state, key = tx.init(params), jax.random.PRNGKey(seed + 1)
    for i in range(cfg.steps):
        params, state = step(params, state, jax.random.fold_in(key, i))
    return params


def run(structure: str, arm: str, seed: int, cfg: argparse.Namespace, data) -> dict[str, Any]:
    params, (_, _, x_te, y_te) = train(structure, arm, seed, cfg, data), data
    acc = float(jnp.mean(jnp.argmax(compact_mlp.forward(params, x_te), -1) == y_te))
    report = optax_l1.sparsity_report(
        params, mask=optax_l1.kernel_mask, n_of_m=(2, 4, 0) if structure == "2:4" else None
    )
    return {
        "structure": structure,
        "arm": arm,
        "seed": seed,
        "accuracy": acc,
        "zeros": float(report["total"]),
        "n_of_m": min((float(v) for k, v in report.items() if k.endswith(":n_of_m")), default=None),
    }


def npz_bytes(arrays: dict[str, Any]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "a.npz")
        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
        return os.path.getsize(path)


def export(cfg: argparse.Namespace, data) -> dict[str, Any]:
    """Bytes on disk of the kernels of the 90%-sparse MLP as BCOO and of the 2:4 MLP packed,
    against dense; each format's product checked against the dense one."""
    out: dict[str, Any] = {}
    for structure in ("elements", "2:4"):
        params = train(structure, "gradual", 0, cfg, data)
        kernels = {n: params[n]["kernel"] for n in params}
        stored, err = {}, 0.0
        for name, k in kernels.items():
            h = jax.random.normal(jax.random.PRNGKey(0), (64, k.shape[0]))
            if structure == "elements":
                sp = optax_l1.to_bcoo(k)
                stored[name + ".data"], stored[name + ".indices"] = sp.data, sp.indices
                got = (sp.T @ h.T).T
            else:
                packed = optax_l1.pack_n_of_m(k, 2, 4)
                stored[name + ".values"] = packed.values
                stored[name + ".positions"] = packed.positions
                got = optax_l1.n_of_m_matmul(h, packed)
            want = h @ k
            err = max(err, float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want))))
        out[structure] = {
            "dense_bytes": npz_bytes(kernels),
            "stored_bytes": npz_bytes(stored),
            "max_rel_err": err,
        }
    return out


def table(runs: list[dict[str, Any]]) -> str:
    def stat(rows, key):
        a = np.asarray([r[key] for r in rows], np.float64)
        return a.mean(), (a.std(ddof=1) if a.size > 1 else 0.0)

    lines = ["| structure | kernel zeros | gradual | one-shot + fine-tune | gradual - one-shot |"]
    lines.append("|---|---|---|---|---|")
    dense = [r for r in runs if r["structure"] == "dense"]
    if dense:
        m, s = stat(dense, "accuracy")
        lines.append(f"| dense | 0% | {100 * m:.2f} ± {100 * s:.2f} | | |")
    for structure in STRUCTURES:
        g = sorted(
            (r for r in runs if r["structure"] == structure and r["arm"] == "gradual"),
            key=lambda r: r["seed"],
        )
        o = sorted(
            (r for r in runs if r["structure"] == structure and r["arm"] == "one-shot"),
            key=lambda r: r["seed"],
        )
        if not g or len(g) != len(o):
            continue
        diff = [{"d": a["accuracy"] - b["accuracy"]} for a, b in zip(g, o, strict=True)]
        (gm, gs), (om, os_), (dm, ds) = stat(g, "accuracy"), stat(o, "accuracy"), stat(diff, "d")
        zeros = np.mean([r["zeros"] for r in g])
        lines.append(
            f"| {structure} | {100 * zeros:.1f}% | {100 * gm:.2f} ± {100 * gs:.2f} | "
            f"{100 * om:.2f} ± {100 * os_:.2f} | {100 * dm:+.2f} ± {100 * ds:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _common.Parser(__doc__.split("\n")[0], quick="tiny runs with --export: smoke test")
    p.add_scaled("--seeds", 3, 1, type=_common.positive_int, help="seeds 0..N-1")
    p.add_scaled("--hidden", 256, 32, type=_common.positive_int, help="units per hidden layer")
    p.add_scaled("--steps", 1500, 60, type=_common.int_at_least(2), help="training steps")
    p.add_argument("--lr", type=_common.positive_float, default=3e-3, help="AdamW learning rate")
    p.add_argument("--batch-size", type=_common.positive_int, default=128, help="minibatch size")
    p.add_argument(
        "--structures",
        nargs="+",
        default=list(STRUCTURES),
        choices=STRUCTURES,
        help="structures to compare",
    )
    p.add_argument("--export", action="store_true", help="also bytes of BCOO / packed 2:4")
    p.add_json(help="raw results")
    args = p.parse(argv)
    args.export = args.export or args.quick
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(argv)
    info = header("structures", seeds=cfg.seeds, hidden=cfg.hidden, steps=cfg.steps)
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in range(cfg.seeds):
        data = compact_mlp.load_data(seed)
        if not cfg.quick:
            runs.append(run("dense", "dense", seed, cfg, data))
        for structure in cfg.structures:
            for arm in ("gradual", "one-shot"):
                runs.append(run(structure, arm, seed, cfg, data))
                print(runs[-1], flush=True)
        write_json(cfg.json, {"info": info, "runs": runs})
    result: dict[str, Any] = {"info": info, "runs": runs}
    if cfg.export:
        result["export"] = export(cfg, compact_mlp.load_data(0))
        for k, v in result["export"].items():
            print(
                f"export {k}: kernels {v['dense_bytes']} B dense -> {v['stored_bytes']} B "
                f"({v['dense_bytes'] / v['stored_bytes']:.2f}x), "
                f"product error {v['max_rel_err']:.1e}"
            )
        write_json(cfg.json, result)
    print()
    print(table(runs))
    print(f"total wall time {time.perf_counter() - t0:.1f}s")
    return result


if __name__ == "__main__":
    main()
