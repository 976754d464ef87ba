"""Does ``optax_l1.suggest_strength`` land near the wanted sparsity? Digits MLP and transformer.

For each seed: a short dense Adam run (``--warm-frac`` of the steps, the same schedule and
batches as the full run), then ``suggest_strength`` for each wanted fraction of kernel zeros,
then full runs from the same init at the suggested strength with
``chain(adam, l1_prox)`` and with ``proximal_adam``. Reported: the fraction of kernel zeros
reached, its distance to the wanted one (the claim: within 10 points), and the accuracy
(digits) or validation bits/byte (transformer).

Run::

    python benchmarks/suggest_strength.py --model digits --seeds 3            # ~2 min
    python benchmarks/suggest_strength.py --model transformer --seeds 1        # ~6 min a run
    python benchmarks/suggest_strength.py --quick                              # smoke, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_l1

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

TRANSFORMS = {"adam + l1_prox": "l1_prox", "proximal_adam": "proximal_adam"}


# ----------------------------------------------------------------------------- digits


def digits_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    sizes = (64, *args.hidden, 10)
    lr, steps, warm = args.lr, args.steps, max(1, int(args.warm_frac * args.steps))
    kmask = optax_l1.kernel_mask

    def make(name: str, strength: float) -> optax.GradientTransformation:
        if name == "dense":
            return optax.adam(lr, b2=args.b2)
        if name == "adam + l1_prox":
            return optax.chain(
                optax.adam(lr, b2=args.b2), optax_l1.l1_prox(strength, learning_rate=lr, mask=kmask)
            )
        return optax_l1.proximal_adam(lr, strength=strength, b2=args.b2, mask=kmask)

    def train(name, strength, params, xtr, ytr, key, n):
        tx = make(name, strength)

        def step(carry, k):
            p, s = carry
            idx = jax.random.randint(k, (args.batch,), 0, xtr.shape[0])
            g = jax.grad(_common.cross_entropy)(p, xtr[idx], ytr[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        keys = jax.random.split(key, steps)[:n]  # the full run's first n batches
        (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params, state

    def dense(seed):
        xtr, xte, ytr, yte = (jnp.asarray(a) for a in _common.digits_split(seed, 0.3))
        k_init, k_data = jax.random.split(jax.random.key(seed))
        init = _common.init_mlp(jax.random.split(k_init, len(sizes) - 1), sizes)
        data = (init, xtr, xte, ytr, yte, k_data)
        return (*train("dense", 0.0, init, xtr, ytr, k_data, warm), data)

    def full(label, lam, seed, data):
        init, xtr, xte, ytr, yte, k_data = data
        params, _ = train(label, lam, init, xtr, ytr, k_data, steps)
        zeros = float(optax_l1.sparsity(params, mask=kmask))
        return zeros, 100 * float(_common.accuracy(params, xte, yte))

    # Many passes over 1,257 training images: the gradients collapse (no noise floor).
    return sweep("digits", args, dense, full, False, batch_size=args.batch, b2=args.b2, mask=kmask)


def sweep(
    model: str, args, dense, full, noise_floor: bool, **suggest_options
) -> list[dict[str, Any]]:
    """Per seed: ``dense(seed)`` (params, state, data), then for each wanted fraction and
    transform the suggestion and ``full(label, strength, seed, data)`` (zeros, quality).
    ``noise_floor``: the chain's regime (a model trained at a noise floor)."""
    runs = []
    for seed in range(args.seeds):
        dense_params, dense_state, data = dense(seed)
        for target in args.targets:
            for label in args.transforms:
                kind = TRANSFORMS[label]
                lam = optax_l1.suggest_strength(
                    dense_params,
                    dense_state,
                    target,
                    for_transform=kind,
                    noise_floor=noise_floor and kind == "l1_prox",
                    **suggest_options,
                )
                zeros, quality = full(label, lam, seed, data)
                runs.append(
                    {
                        "model": model,
                        "transform": label,
                        "seed": seed,
                        "target": target,
                        "strength": lam,
                        "zeros": zeros,
                        "quality": quality,
                    }
                )
                _print(runs[-1])
    return runs


# ----------------------------------------------------------------------------- transformer


def transformer_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    import transformer_lm as lm

    argv = ["--quick"] * args.quick + (["--steps", str(args.steps)] if args.steps else [])
    cfg = lm.parse_args(argv)
    args.steps = cfg.steps  # the steps run, for the JSON
    train, val, _ = lm.load_corpus()
    evals = jnp.asarray(lm.eval_windows(val, cfg.eval_batches, cfg.eval_batch, cfg.context + 1))
    dense = lm.Runner("dense", cfg, train, evals)
    runners = {
        "adam + l1_prox": lm.Runner("adamw_l1_prox", cfg, train, evals),
        "proximal_adam": lm.Runner("proximal_adam", cfg, train, evals),
    }
    warm = max(1, int(args.warm_frac * cfg.steps))

    def dense_run(seed):
        return dense.train_steps(0.0, seed, warm)

    def full(label, lam, seed, _):
        r = runners[label].run(lam, seed)
        return r["zeros"], r["bits_per_byte"]

    tokens = cfg.batch * cfg.context  # the loss averages every token of the batch
    # Less than one pass over the corpus: the gradients stay at a noise floor.
    options = dict(batch_size=tokens, b2=0.99, mask=dense.kmask)
    return sweep("transformer", args, dense_run, full, True, **options)


# ----------------------------------------------------------------------------- report


def _print(r: dict[str, Any]) -> None:
    print(
        f"{r['model']:>11} {r['transform']:>15} seed={r['seed']} target={r['target']:.2f}"
        f" strength={r['strength']:.3g} zeros={100 * r['zeros']:.1f}%"
        f" (off {100 * (r['zeros'] - r['target']):+.1f} pts) quality={r['quality']:.4g}",
        flush=True,
    )


def table(runs: list[dict[str, Any]]) -> str:
    rows = []
    keys = dict.fromkeys((r["model"], r["transform"], r["target"]) for r in runs)
    for model, label, target in keys:
        rs = [
            r for r in runs if (r["model"], r["transform"], r["target"]) == (model, label, target)
        ]
        off = np.array([100 * (r["zeros"] - target) for r in rs])
        q = np.array([r["quality"] for r in rs])
        rows.append(
            [
                model,
                label,
                f"{100 * target:.0f}%",
                f"{np.mean([r['strength'] for r in rs]):.3g}",
                f"{off.mean():+.1f} (worst {off[np.argmax(np.abs(off))]:+.1f})",
                f"{q.mean():.4g} ± {q.std(ddof=1) if len(q) > 1 else 0.0:.2g}",
                str(len(rs)),
            ]
        )
    headers = ["model", "transform", "wanted", "strength", "reached − wanted (pts)", "quality", "n"]
    return _common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = _common.Parser(__doc__.split("\n")[0], quick="1 seed, tiny runs: a smoke test")
    p.add_argument(
        "--model",
        choices=("digits", "transformer", "both"),
        default="digits",
        help="the model(s) to train",
    )
    p.add_scaled("--seeds", 3, 1, type=_common.positive_int, help="seeds 0..N-1")
    p.add_argument(
        "--steps",
        type=_common.positive_int,
        default=None,
        help="training steps (default: digits 3000, transformer 600; --quick: digits 100, "
        "transformer_lm.py --quick's)",
    )
    p.add_argument("--warm-frac", type=_common.fraction, default=0.1, help="dense run / steps")
    p.add_scaled(
        "--targets",
        [0.5, 0.8, 0.9],
        [0.5],
        type=_common.fraction,
        nargs="+",
        help="wanted fractions of kernel zeros",
    )
    p.add_argument(
        "--transforms",
        nargs="+",
        choices=tuple(TRANSFORMS),
        default=list(TRANSFORMS),
        help="the transforms to run at the suggested strength",
    )
    p.add_argument("--lr", type=_common.positive_float, default=3e-3, help="digits learning rate")
    p.add_argument("--b2", type=_common.fraction, default=0.999, help="digits Adam b2")
    p.add_argument("--batch", type=_common.positive_int, default=128, help="digits batch")
    p.add_scaled(
        "--hidden",
        [256, 256],
        [32],
        type=_common.comma_list(_common.positive_int),
        help="digits hidden widths, comma list",
    )
    p.add_json(help="write the runs as JSON here")
    args = p.parse(argv)
    t0 = time.perf_counter()
    info = _common.header("suggest_strength", model=args.model, seeds=args.seeds)
    runs: list[dict[str, Any]] = []
    steps: dict[str, int] = {}
    if args.model in ("digits", "both"):
        digits = argparse.Namespace(**vars(args))
        digits.steps = args.steps or (100 if args.quick else 3000)
        steps["digits"] = digits.steps
        runs += digits_runs(digits)
    if args.model in ("transformer", "both"):
        lm = argparse.Namespace(**vars(args))
        runs += transformer_runs(lm)
        steps["transformer"] = lm.steps
    print()
    print(table(runs))
    print(f"total wall time {time.perf_counter() - t0:.1f}s")
    config = {**vars(args), "steps": steps if len(steps) > 1 else next(iter(steps.values()))}
    _common.write_json(args.json, {"info": info, "config": config, "runs": runs})
    return {"info": info, "runs": runs}


if __name__ == "__main__":
    main()
