"""Compaction: parameters, bytes and CPU latency of the compacted models, and the accuracy kept.

Two models, each trained twice per seed at equal steps, schedule and data: dense, and with
whole structures switched off by ``optax_l1.sparsity_target(s, structure=...,
allocation="uniform")``; the structured run is then compacted with ``optax_l1.compact``.

- ``mlp``: the digits MLP of ``examples/compact_mlp.py`` (64 -> 512 -> 512 -> 10, relu),
  ``--mlp-target`` of each hidden layer's units off (default 0.75). Test accuracy.
- ``transformer``: the byte-level LM of ``transformer_lm.py`` (2 layers, d_model 128, 4
  heads, MLP 512), method ``structured``: ``--lm-target`` of each layer's heads (coupled
  across the fused q/k/v kernel, its bias and the output kernel) and of its MLP units off
  (default 0.5: 2 of 4 heads, 256 of 512 units). Validation bits per byte.

Latency: the jitted forward of the dense-shaped params and of the compacted ones, called
alternately (``--reps`` each, the median), on the MLP's test set and on a batch of
``--lm-batch`` windows. Bytes: ``np.savez`` files of all params.

Run::

    python benchmarks/compaction.py --seeds 3        # ~40 min on a 2-core CPU
    python benchmarks/compaction.py --quick          # smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import _common  # noqa: E402
import compact_mlp  # noqa: E402
import transformer_lm  # noqa: E402
from _common import header, write_json  # noqa: E402

import optax_l1  # noqa: E402


def timed(fa, pa, fb, pb, x, reps: int) -> tuple[float, float]:
    """Median seconds per call of ``fa(pa, x)`` and ``fb(pb, x)``, interleaved."""
    return compact_mlp.timed(fa, pa, fb, pb, x, reps)


def npz_bytes(params: Any) -> int:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "p.npz")
        np.savez(path, **arrays)
        return os.path.getsize(path)


def mlp_seed(seed: int, cfg: argparse.Namespace) -> dict[str, Any]:
    data = compact_mlp.load_data(seed)
    out = {}
    for name, target in (("dense", 0.0), ("structured", cfg.mlp_target)):
        args = argparse.Namespace(
            target=target,
            hidden=cfg.mlp_hidden,
            steps=cfg.mlp_steps,
            lr=3e-3,
            batch_size=128,
            reps=cfg.reps,
            seed=seed,
        )
        params = compact_mlp.init_mlp(
            jax.random.PRNGKey(seed), (64, cfg.mlp_hidden, cfg.mlp_hidden, 10)
        )
        out[name] = compact_mlp.run(params, data, args)
    return out


def lm_seed(seed: int, cfg: argparse.Namespace, train, evals) -> dict[str, Any]:
    lm = transformer_lm.parse_args(["--quick"] * cfg.quick + ["--steps", str(cfg.lm_steps)])
    out: dict[str, Any] = {}
    trained = {}
    for method in ("structured",) if cfg.quick else ("dense", "structured"):
        runner = transformer_lm.Runner(method, lm, train, evals)
        params, _, _ = runner.train_steps(cfg.lm_target, seed, lm.steps)
        trained[method] = params
        out[method] = {"bits_per_byte": float(runner.evaluate(params, evals)) / math.log(2)}
    sparse = trained["structured"]
    structure = transformer_lm.head_and_unit_structure(lm.heads, lm.layers)
    small, kept = optax_l1.compact(sparse, structure)
    heads = {len(v) for k, v in kept.items() if k.startswith("heads")}
    if len(heads) != 1:
        raise RuntimeError(f"layers kept different head counts: {kept}")
    new_heads = heads.pop()

    def evaluate(p, n_heads):
        losses = [transformer_lm.loss_fn(p, w, n_heads) for w in evals]
        return float(jnp.mean(jnp.stack(losses))) / math.log(2)

    out["compacted"] = {
        "bits_per_byte": evaluate(small, new_heads),
        "heads": new_heads,
        "units": sorted({len(v) for k, v in kept.items() if k.startswith("units")}),
    }
    tokens = jnp.asarray(evals[0][: cfg.lm_batch, :-1])
    dense_fn = jax.jit(lambda p, x: transformer_lm.forward(p, x, lm.heads))
    small_fn = jax.jit(lambda p, x: transformer_lm.forward(p, x, new_heads))
    logits, small_logits = dense_fn(sparse, tokens), small_fn(small, tokens)
    out["max_diff"] = float(jnp.max(jnp.abs(logits - small_logits)))
    out["scale"] = float(jnp.max(jnp.abs(logits)))
    out["params"] = [sum(int(x.size) for x in jax.tree.leaves(t)) for t in (sparse, small)]
    out["bytes"] = [npz_bytes(sparse), npz_bytes(small)]
    out["seconds"] = list(timed(dense_fn, sparse, small_fn, small, tokens, cfg.reps))
    return out


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return "not run"
    a = np.asarray(xs, np.float64)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.4f}"


def tables(mlp: list[dict[str, Any]], lm: list[dict[str, Any]]) -> str:
    lines = ["| model | dense | structured, compacted | params | bytes on disk | latency |"]
    lines.append("|---|---|---|---|---|---|")
    if mlp:
        s = [r["structured"] for r in mlp]
        lines.append(
            "| digits MLP (test accuracy) | "
            f"{mean_sd([r['dense']['accuracy'][1] for r in mlp])} | "
            f"{mean_sd([x['accuracy'][1] for x in s])} (kept {s[0]['kept']}) | "
            f"{s[0]['params'][0] / s[0]['params'][1]:.2f}x fewer | "
            f"{s[0]['bytes'][0] / s[0]['bytes'][1]:.2f}x smaller | "
            f"{mean_sd([x['seconds'][0] / x['seconds'][1] for x in s])}x faster |"
        )
    if lm:
        lines.append(
            "| transformer LM (val bits/byte) | "
            f"{mean_sd([r['dense']['bits_per_byte'] for r in lm if 'dense' in r])} | "
            f"{mean_sd([r['compacted']['bits_per_byte'] for r in lm])} "
            f"(heads {lm[0]['compacted']['heads']}, units {lm[0]['compacted']['units']}) | "
            f"{lm[0]['params'][0] / lm[0]['params'][1]:.2f}x fewer | "
            f"{lm[0]['bytes'][0] / lm[0]['bytes'][1]:.2f}x smaller | "
            f"{mean_sd([r['seconds'][0] / r['seconds'][1] for r in lm])}x faster |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _common.Parser(__doc__.split("\n")[0], quick="tiny runs, no dense LM: smoke test")
    p.add_scaled("--seeds", 3, 1, type=_common.positive_int, help="seeds 0..N-1")
    p.add_argument(
        "--models",
        nargs="+",
        default=["mlp", "transformer"],
        choices=["mlp", "transformer"],
        help="models to compact",
    )
    p.add_argument(
        "--mlp-target", type=_common.fraction, default=0.75, help="MLP units off per layer"
    )
    p.add_scaled("--mlp-hidden", 512, 64, type=_common.positive_int, help="MLP hidden width")
    p.add_scaled("--mlp-steps", 1500, 100, type=_common.positive_int, help="MLP training steps")
    p.add_argument(
        "--lm-target", type=_common.fraction, default=0.5, help="heads and units off per layer"
    )
    p.add_scaled(
        "--lm-steps", 600, 30, type=_common.positive_int, help="transformer training steps"
    )
    p.add_argument(
        "--lm-batch", type=_common.positive_int, default=8, help="windows per timed forward"
    )
    p.add_scaled("--reps", 100, 5, type=_common.positive_int, help="timed calls per model")
    p.add_json(help="raw results")
    return p.parse(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_args(argv)
    info = header("compaction", seeds=cfg.seeds, models=" ".join(cfg.models))
    mlp, lm = [], []
    t0 = time.perf_counter()
    if "transformer" in cfg.models:
        train, val, _ = transformer_lm.load_corpus()
        lm_cfg = transformer_lm.parse_args(["--quick"] if cfg.quick else [])
        evals = jnp.asarray(
            transformer_lm.eval_windows(
                val, lm_cfg.eval_batches, lm_cfg.eval_batch, lm_cfg.context + 1
            )
        )
    for seed in range(cfg.seeds):
        if "mlp" in cfg.models:
            mlp.append(mlp_seed(seed, cfg))
            print(f"mlp seed {seed}: {mlp[-1]['structured']}", flush=True)
        if "transformer" in cfg.models:
            lm.append(lm_seed(seed, cfg, train, evals))  # pyright: ignore[reportPossiblyUnboundVariable]
            print(f"transformer seed {seed}: {lm[-1]}", flush=True)
        write_json(cfg.json, {"info": info, "mlp": mlp, "transformer": lm})
    print()
    print(tables(mlp, lm))
    print(f"total wall time {time.perf_counter() - t0:.1f}s")
    return {"info": info, "mlp": mlp, "transformer": lm}


if __name__ == "__main__":
    main()
