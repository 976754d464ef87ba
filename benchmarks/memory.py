r"""Peak memory of a training step with and without each optax_l1 transform (compile only).

Every step is the one ``step_overhead.py`` times (``tx.update`` + ``optax.apply_updates``,
jitted with params and optimizer state donated, gradients as an input), lowered with
``jax.ShapeDtypeStruct`` arguments so nothing large is ever allocated, and compiled. XLA's
``memory_analysis()`` gives the argument, output, alias (outputs written in place of donated
inputs) and temporary sizes; the peak of one call is ``argument + output - alias + temp``.

    python benchmarks/memory.py           # 100M parameters, float32 and bfloat16 (about 1 min)
    python benchmarks/memory.py --quick   # 1M parameters in 4 leaves, float32 only (smoke run)
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import step_overhead  # noqa: E402


def shapes_for(layout: str, n: int, leaves: int, dtype) -> dict[str, jax.ShapeDtypeStruct]:
    """``n`` parameters as one square-ish leaf, or spread over ``leaves`` square leaves."""
    if layout == "single":
        rows = int(round(n**0.5))
        return {"w": jax.ShapeDtypeStruct((rows, n // rows), dtype)}
    d = int(round((n / leaves) ** 0.5))
    return {f"layer_{i:03d}": jax.ShapeDtypeStruct((d, d), dtype) for i in range(leaves)}


def analyze(make_tx, shapes) -> dict[str, int]:
    tx = make_tx()
    state = jax.eval_shape(tx.init, shapes)
    compiled = step_overhead.make_step(tx).lower(shapes, state, shapes).compile()
    return _common.memory_stats(compiled)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = _common.Parser(__doc__, quick="1M parameters in 4 leaves, float32, multi layout only")
    p.add_scaled(
        "--params", 100_000_000, 4 * 512 * 512, type=_common.positive_int, help="total parameters"
    )
    p.add_scaled("--leaves", 100, 4, type=_common.positive_int, help="leaves in the multi layout")
    p.add_scaled(
        "--layouts",
        ["single", "multi"],
        ["multi"],
        type=_common.comma_list(_common.choice(step_overhead.LAYOUTS)),
        help="comma list of single (one leaf), multi (--leaves leaves)",
    )
    p.add_scaled(
        "--dtypes",
        ["float32", "bfloat16"],
        ["float32"],
        type=_common.comma_list(_common.float_dtype),
        help="comma list of parameter dtypes",
    )
    p.add_argument("--lr", type=_common.positive_float, default=1e-3, help="learning rate")
    p.add_argument("--strength", type=_common.nonnegative_float, default=1e-4, help="L1 strength")
    p.add_json()
    args = p.parse(argv)
    layouts, dtypes = args.layouts, args.dtypes
    if "multi" in layouts and args.params < args.leaves:
        p.error(f"--params ({args.params}) must be >= --leaves ({args.leaves})")
    info = _common.header(
        "memory",
        params=f"{args.params:,}",
        layouts=f"single leaf, or {args.leaves} leaves",
        dtypes=",".join(dtypes),
        compile_only=True,
    )
    rows, skipped = step_overhead.make_rows(args.lr, args.strength)
    print("skipped (not in this optax_l1): " + (", ".join(skipped) if skipped else "none"))

    results = []
    for dtype_name in dtypes:
        dtype = jnp.dtype(dtype_name)
        for layout in layouts:
            shapes = shapes_for(layout, args.params, args.leaves, dtype)
            n = sum(x.size for x in jax.tree.leaves(shapes))
            leaf_bytes = max(x.size for x in jax.tree.leaves(shapes)) * dtype.itemsize
            base_cache: dict[str, dict[str, int]] = {}
            for row in rows:
                if row.a_label not in base_cache:
                    base_cache[row.a_label] = analyze(row.make_a, shapes)
                a = base_cache[row.a_label]
                b = analyze(row.make_b, shapes)
                r = {
                    "dtype": dtype_name,
                    "layout": layout,
                    "params": n,
                    "A": row.a_label,
                    "B": row.b_label,
                    "memory_A": a,
                    "memory_B": b,
                    "extra_temp": b["temp"] - a["temp"],
                    "extra_peak": b["peak"] - a["peak"],
                    "extra_full_size_temp": b["temp"] - a["temp"] >= leaf_bytes,
                }
                results.append(r)
                print(
                    f"{dtype_name:8s} {layout:6s} {row.b_label:32s} "
                    f"temp {_common.mib(a['temp'])} -> {_common.mib(b['temp'])} MiB, "
                    f"peak {_common.mib(a['peak'])} -> {_common.mib(b['peak'])} MiB",
                    flush=True,
                )

    headers = [
        "dtype",
        "layout",
        "step",
        "argument MiB",
        "output MiB",
        "alias MiB",
        "temp MiB",
        "peak MiB",
        "extra temp vs base MiB",
        "extra peak MiB",
    ]
    table = []
    seen = set()
    for r in results:
        key = (r["dtype"], r["layout"], r["A"])
        for tag, label in (("A", r["A"]), ("B", r["B"])):
            if tag == "A" and key in seen:
                continue
            seen.add(key)
            m = r[f"memory_{tag}"]
            table.append(
                [
                    r["dtype"],
                    r["layout"],
                    label,
                    _common.mib(m["argument"]),
                    _common.mib(m["output"]),
                    _common.mib(m["alias"]),
                    _common.mib(m["temp"]),
                    _common.mib(m["peak"]),
                    "—" if tag == "A" else _common.mib(r["extra_temp"]),
                    "—" if tag == "A" else _common.mib(r["extra_peak"]),
                ]
            )
    print()
    print(_common.markdown_table(headers, table))
    print()
    full = [f"{r['dtype']}/{r['layout']}/{r['B']}" for r in results if r["extra_full_size_temp"]]
    print("extra full-size temporary (>= one leaf): " + (", ".join(full) if full else "none"))
    _common.write_json(args.json, {"info": info, "skipped": skipped, "results": results})
    return results


if __name__ == "__main__":
    main()
