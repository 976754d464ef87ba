r"""Step overhead of optax_l1's transforms: a jitted, donated optimizer step with and without.

For every row, arm A is a plain optax optimizer and arm B the same optimizer with an optax_l1
transform (``optax.chain(opt, optax_l1.l1_prox(...))`` and friends). Each step is

    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)

jitted with ``donate_argnums=(0, 1)`` (params and optimizer state), with the gradients passed
in as an input so that only the optimizer's cost is timed. A and B run interleaved in one
process (rotating order), warmed up, each sample ended by ``block_until_ready``; the figure
is the median of the per-pair ratio B/A with a 95% distribution-free interval.

Two layouts: (a) one 16M-parameter leaf (4096 x 4096) and (b) 8M parameters over 128 leaves
(256 x 256 each). For each compiled step XLA's ``memory_analysis()`` is read, to see whether
B needs a temporary buffer that A does not. The sgd row also times a donated, jitted axpy
``y = a * x + y`` over the same leaves: its bytes (read x, y; write y) over its time is the
machine's measured bandwidth, and the sgd + l1_prox step (which moves the same bytes) is
reported against that memory floor, ``(argument bytes + output bytes) / bandwidth``.
``--diagnose`` times the pieces of the fused sgd + l1_prox loop instead.

    python benchmarks/step_overhead.py            # the issue's sizes (about 2-3 min, 2 cores)
    python benchmarks/step_overhead.py --quick    # 3 tiny leaves, a few reps (CI smoke run)
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import optax_l1

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

TARGET = 1.03
LAYOUTS = ("single", "multi")


@dataclass
class Row:
    name: str  # what B adds
    a_label: str
    b_label: str
    make_a: Callable[[], optax.GradientTransformation]
    make_b: Callable[[], optax.GradientTransformation]
    axpy: bool = False  # also time the axpy floor in this row
    cycle: int = 1  # each timed sample runs a multiple of this many steps (amortized cost)
    make_oracle: Callable[[], optax.GradientTransformation] | None = None  # hand-written B


class OracleState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any


def _soft(z, t):
    return z - jnp.where(z > t, t, jnp.where(z >= -t, z, -t))


def oracle(lr, lam, *, adam: bool, wd: float = 0.0, metric: bool = False):
    """The shortest hand-written step B can be under optax's additive updates: the optimizer
    and the soft threshold in one expression per leaf (sgd or adam/adamw, threshold
    ``lr * lam`` or, with ``metric``, ``lr * lam / D`` as proximal_adam), returning
    ``p' - p``. What the library's row is compared against in the "B / oracle" column."""
    lr_at = lr if callable(lr) else (lambda _: lr)
    b1, b2, eps = 0.9, 0.999, 1e-8

    def init(params):
        if not adam:
            return OracleState(jnp.zeros([], jnp.int32), None, None)
        mu = jax.tree.map(jnp.zeros_like, params)
        nu = jax.tree.map(jnp.zeros_like, params)  # its own buffers: the state is donated
        return OracleState(jnp.zeros([], jnp.int32), mu, nu)

    def update(grads, state, params):
        t, eta = state.count + 1, lr_at(state.count)
        if not adam:
            new = jax.tree.map(lambda p, g: _soft(p - eta * g, eta * lam) - p, params, grads)
            return new, OracleState(t, None, None)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)

        def leaf(p, m, v):
            d = jnp.sqrt(v / (1 - b2**t)) + eps
            z = p - eta * (m / (1 - b1**t) / d + wd * p)
            return _soft(z, eta * lam / d if metric else eta * lam) - p

        return jax.tree.map(leaf, params, mu, nu), OracleState(t, mu, nu)

    return optax.GradientTransformation(init, update)


def _column_sq_norms(z_rows: Callable[[jax.Array], jax.Array], n_rows: int, width: int):
    """Sum over rows of ``z_rows(start)**2``, a block of ``GROUP_ROWS`` rows at a time, in a
    loop: XLA:CPU fuses each block's producer into one loop fusion of static row slices,
    where a reduction over the leaf would read a materialized ``z`` (its reductions do not
    fuse their producers)."""

    def body(j, acc):
        zc = z_rows(j * GROUP_ROWS)
        rows = [lax.index_in_dim(zc, i, keepdims=True) for i in range(GROUP_ROWS)]
        return acc + functools.reduce(jnp.add, [r * r for r in rows])

    return lax.fori_loop(0, n_rows // GROUP_ROWS, body, jnp.zeros((1, width), jnp.float32))


GROUP_ROWS = 16


def group_oracle(lr, lam, *, adam: bool):
    """The shortest hand-written ``group_l1_prox(axis=0)`` step found on this CPU, returning
    ``p' - p``. With sgd (2-D leaves whose row count ``GROUP_ROWS`` divides): the column
    norms of ``z = p - lr g`` come from a loop over row blocks that reads the params and
    gradients, so ``z`` is never written, then one fused pass lands on the shrunk ``z``;
    an optax transform chained after the optimizer cannot do this (it receives ``u`` as an
    intermediate, which such a loop would materialize). With adam the same loop, which
    recomputes adam's update per block on one core, was slower than the whole-leaf step, so
    the oracle is the whole-leaf step as a user would write it (``z`` materialized)."""
    base = oracle(lr, 0.0, adam=adam)  # the optimizer's step alone: a threshold of 0
    t = lr * lam

    def shrink(p, z, sq):
        n = jnp.sqrt(sq)
        scale = jnp.maximum(1.0 - t / jnp.where(n == 0, 1.0, n), 0.0)
        return jnp.where(n <= t, 0.0, z * scale) - p

    def sgd_leaf(p, g):
        if p.ndim != 2 or p.shape[0] % GROUP_ROWS:
            raise ValueError(
                f"the group oracle takes 2-D leaves whose rows {GROUP_ROWS} divides, got {p.shape}"
                " (--single-dim / --leaf-dim)"
            )

        def block(start):
            return lax.dynamic_slice_in_dim(p, start, GROUP_ROWS) - lr * lax.dynamic_slice_in_dim(
                g, start, GROUP_ROWS
            )

        return shrink(p, p - lr * g, _column_sq_norms(block, p.shape[0], p.shape[1]))

    def update(grads, state, params):
        if not adam:
            return jax.tree.map(sgd_leaf, params, grads), base.update(grads, state, params)[1]
        moved, new_state = base.update(grads, state, params)
        z = jax.tree.map(jnp.add, params, moved)
        out = jax.tree.map(lambda p, x: shrink(p, x, jnp.sum(x * x, 0, keepdims=True)), params, z)
        return out, new_state

    return optax.GradientTransformation(base.init, update)


class FtrlOracleState(NamedTuple):
    count: jax.Array
    n: Any
    z: Any


def ftrl_oracle(lr, lam, l2):
    """TensorFlow's ``ApplyFtrlV2`` step (power -0.5, n0 = 0.1, no shrinkage) written as a
    user would, one expression per leaf on whole leaves, returning ``w' - w``: what the
    ``ftrl`` row is compared against in the "B / oracle" column."""

    def init(params):
        n = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
        return FtrlOracleState(jnp.zeros([], jnp.int32), n, jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params):
        n_new = jax.tree.map(lambda n, g: n + g * g, state.n, grads)
        z_new = jax.tree.map(
            lambda z, g, w, n, m: z + g - (jnp.sqrt(m) - jnp.sqrt(n)) / lr * w,
            state.z,
            grads,
            params,
            state.n,
            n_new,
        )

        def leaf(w, z, m):
            w_new = (jnp.clip(z, -lam, lam) - z) / (jnp.sqrt(m) / lr + 2 * l2)
            return jnp.where(jnp.abs(z) <= lam, 0.0, w_new) - w

        out = jax.tree.map(leaf, params, z_new, n_new)
        return out, FtrlOracleState(state.count + 1, n_new, z_new)

    return optax.GradientTransformation(init, update)


def make_rows(
    lr: float,
    lam: float,
    every_latent: Sequence[int] = (1, 10, 100),
    every_plain: Sequence[int] = (10, 25),
    every_sample: tuple[Sequence[int], Sequence[int]] = ((1, 10), (1,)),
) -> tuple[list[Row], list[str]]:
    """The rows to time, and the names of optional transforms this optax_l1 lacks."""
    opts = {
        "sgd": lambda: optax.sgd(lr),
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=1e-4),
    }

    def chain(first, second):
        return lambda: optax.chain(first(), second())

    oracles = {
        "sgd": lambda: oracle(lr, lam, adam=False),
        "adam": lambda: oracle(lr, lam, adam=True),
        "adamw": lambda: oracle(lr, lam, adam=True, wd=1e-4),
    }
    rows = []
    for o, make in opts.items():
        rows.append(
            Row(
                "l1_prox",
                o,
                f"{o} + l1_prox",
                make,
                chain(make, lambda: optax_l1.l1_prox(lam, learning_rate=lr)),
                axpy=o == "sgd",
                make_oracle=oracles[o],
            )
        )
    sched = optax.cosine_decay_schedule(lr, 100_000)
    sched_opts = {"sgd": lambda: optax.sgd(sched), "adam": lambda: optax.adam(sched)}
    for o in ("sgd", "adam"):
        make = opts[o]
        rows.append(
            Row(
                "l1_prox(schedule)",
                f"{o}(schedule)",
                f"{o}(schedule) + l1_prox(schedule)",
                sched_opts[o],
                chain(sched_opts[o], lambda: optax_l1.l1_prox(lam, learning_rate=sched)),
                make_oracle=lambda o=o: oracle(sched, lam, adam=o == "adam"),
            )
        )
        rows.append(
            Row(
                "l1_prox(l2)",
                o,
                f"{o} + l1_prox(l2)",
                make,
                chain(make, lambda: optax_l1.l1_prox(lam, learning_rate=lr, l2=1e-3)),
            )
        )
        rows.append(
            Row(
                "group_l1_prox",
                o,
                f"{o} + group_l1_prox(axis=0)",
                make,
                chain(make, lambda: optax_l1.group_l1_prox(lam, learning_rate=lr, axis=0)),
                make_oracle=lambda o=o: group_oracle(lr, lam, adam=o == "adam"),
            )
        )
        rows.append(
            Row(
                "group_l1_prox(workspace)",
                o,
                f"{o} + group_l1_prox(axis=0, workspace)",
                make,
                chain(
                    make,
                    lambda: optax_l1.group_l1_prox(lam, learning_rate=lr, axis=0, workspace=True),
                ),
                make_oracle=lambda o=o: group_oracle(lr, lam, adam=o == "adam"),
            )
        )
        rows.append(
            Row(
                "add_l1_subgradient",
                o,
                f"add_l1_subgradient + {o}",
                make,
                chain(lambda: optax_l1.add_l1_subgradient(lam), make),
            )
        )
    skipped = []
    prox_adam = _common.optional("proximal_adam")
    if prox_adam is not None:
        rows.append(
            Row(
                "proximal_adam",
                "adam",
                "proximal_adam",
                opts["adam"],
                lambda: prox_adam(lr, strength=lam),
                make_oracle=lambda: oracle(lr, lam, adam=True, metric=True),
            )
        )
    else:
        skipped.append("proximal_adam")

    def adagrad():
        return optax.adagrad(lr, initial_accumulator_value=0.1)

    prox_adagrad = _common.optional("proximal_adagrad")
    if prox_adagrad is not None:
        rows.append(
            Row(
                "proximal_adagrad",
                "adagrad",
                "proximal_adagrad",
                adagrad,
                lambda: prox_adagrad(lr, strength=lam, l2=1e-3),
            )
        )
    else:
        skipped.append("proximal_adagrad")
    ftrl = _common.optional("ftrl")
    if ftrl is not None:
        rows.append(
            Row(
                "ftrl",
                "adagrad",
                "ftrl",
                adagrad,
                lambda: ftrl(lr, strength=lam, l2=1e-3),
                make_oracle=lambda: ftrl_oracle(lr, lam, 1e-3),
            )
        )
    else:
        skipped.append("ftrl")
    rows += target_rows(opts["adam"], every_latent, every_plain, every_sample)
    rows += phase_rows(opts["adam"])
    rows += structure_rows(opts["adam"], lr, lam)
    return rows, skipped


# The default sparsity_target at each phase of a run: (label, options, count at init, copy
# dropped). A ramp of 10^6 steps from step 0 keeps the search every step; latent_until=1e-6
# puts count 2 past the copy's window (it ends at count 1); ramp_steps=1 puts count 5 after
# the ramp (the support frozen, where optax_l1.drop_latent may shed the copy); begin_step=10^6
# puts count 0 before the ramp.
PHASES = (
    ("before the ramp", {"ramp_steps": 10**6, "begin_step": 10**6}, 0, False),
    ("ramp, copy read", {"ramp_steps": 10**6}, 0, False),
    ("ramp, past latent_until", {"ramp_steps": 10**6, "latent_until": 1e-6}, 2, False),
    ("after the ramp", {"ramp_steps": 1}, 5, False),
    ("after the ramp, dropped", {"ramp_steps": 1}, 5, True),
)


def phase_rows(adam) -> list[Row]:
    """adam vs adam + the default sparsity_target (a search every step, the latent copy, the
    sampled search) at each phase of a run (``PHASES``), after the ramp with the copy kept or
    dropped (``optax_l1.drop_latent``): what a whole run costs, phase by phase."""
    if _common.optional("drop_latent") is None:
        return []
    rows, target = [], 0.9
    for label, options, count, drop in PHASES:
        make = at_count(
            lambda o=options: optax.chain(adam(), optax_l1.sparsity_target(target, **o)),
            count,
            drop,
            target,
        )
        rows.append(
            Row("sparsity_target(phase)", "adam", f"adam + sparsity_target({label})", adam, make)
        )
    return rows


def at_count(make, count: int, drop: bool, target: float):
    """``make``'s transform, its sparsity_target state's count set to ``count`` at init and
    its logged ramp value to ``target`` (the ramp's past that count; else unread), and its
    latent copy dropped with ``drop``."""

    def is_target(x):
        return isinstance(x, optax_l1.SparsityTargetState)

    def at(x):  # the ramp's value logged as at that count: target past the ramp (else unread)
        if not is_target(x):
            return x
        return x._replace(count=jnp.asarray(count, jnp.int32), scheduled=jnp.float32(target))

    def build():
        tx = make()

        def init(params):
            state = jax.tree.map(at, tx.init(params), is_leaf=is_target)
            return optax_l1.drop_latent(state) if drop else state

        return optax.GradientTransformationExtraArgs(init, tx.update)

    return build


def structure_rows(adam, lr: float, lam: float) -> list[Row]:
    """adam vs adam + a structured step: N:M (2:4 along axis 0) ranked every step, every 50
    and every 100 (amortized), blocks of 4 searched every step, every 10, 50 and 100, and
    the group prox on blocks (with and without its workspace)."""
    blocks = optax_l1.Blocks(4, axis=0)
    rows = []
    for every, latent in ((1, False), (1, True), (50, False), (100, False), (100, True)):
        nm = tracked(adam, 0.5, every, latent, allocation=blocks)
        label = f"adam + sparsity_target(2:4, every={every}{'' if latent else ', no latent'})"
        rows.append(Row("n_of_m_target", "adam", label, adam, nm, cycle=every))
    for every in (1, 10, 50, 100):
        blk = tracked(adam, 0.75, every, False, structure=blocks)
        label = f"adam + sparsity_target(Blocks(4), every={every}, no latent)"
        rows.append(Row("blocks_target", "adam", label, adam, blk, cycle=every))
    for workspace in (False, True):
        name = "group_l1_prox(blocks" + ("/workspace)" if workspace else ")")

        def group(workspace=workspace):
            prox = optax_l1.group_l1_prox(
                lam, learning_rate=lr, structure=blocks, workspace=workspace
            )
            return optax.chain(adam(), prox)

        label = "adam + group_l1_prox(Blocks(4)" + (", workspace)" if workspace else ")")
        rows.append(Row(name, "adam", label, adam, group))
    return rows


def _everies(latent: Sequence[int], plain: Sequence[int]) -> list[tuple[int, bool]]:
    """The (k, latent copy) pairs of two lists of ``update_every`` values."""
    return [(k, True) for k in latent] + [(k, False) for k in plain]


def target_rows(
    adam,
    every_latent: Sequence[int],
    every_plain: Sequence[int],
    sample: tuple[Sequence[int], Sequence[int]] = ((), ()),
) -> list[Row]:
    """adam vs adam + sparsity_target searching every k steps, timed over whole k-step cycles
    (the amortized cost); a ramp of 10^6 steps keeps every search inside the ramp. The
    lists ``every_latent`` / ``every_plain`` give the k of the rows with and without
    the latent copy; ``sample`` (latent, plain) those of ``quantile="sample"`` rows."""
    rows = []
    plain = list(every_plain)
    for every, latent in _everies(every_latent, every_plain):
        make = tracked(adam, 0.9, every, latent)
        label = f"adam + sparsity_target(every={every}{'' if latent else ', no latent'})"
        rows.append(Row("sparsity_target", "adam", label, adam, make, cycle=every))
    for every, latent in _everies(*sample):
        make = tracked(adam, 0.9, every, latent, quantile="sample")
        label = f"adam + sparsity_target(sample, every={every}{'' if latent else ', no latent'})"
        rows.append(Row("sparsity_target(sample)", "adam", label, adam, make, cycle=every))
    for every in plain:  # the Fisher score: sparsity_target(optimizer=adam)
        make = tracked(adam, 0.9, every, False, inside=True)
        label = f"sparsity_target(optimizer=adam, every={every}, no latent)"
        rows.append(Row("sparsity_target(optimizer)", "adam", label, adam, make, cycle=every))
    return rows


def tracked(adam, target: float, every: int, latent: bool, inside: bool = False, **options):
    """The B arm adam + sparsity_target(target, searching every ``every`` steps): a ramp of
    10^6 steps with ``hold="track"`` keeps every search inside the ramp. ``inside``: adam
    passed as ``optimizer=`` (the Fisher score) instead of chained before. The search is
    the exact ``quantile="radix"`` unless ``options`` say otherwise (the library's default,
    ``"sample"``, samples these layouts; the rows named ``(sample)`` time it)."""

    def make():
        extra = {"quantile": "radix"} | options
        extra = dict(extra, optimizer=adam()) if inside else extra
        tx = optax_l1.sparsity_target(
            target,
            ramp_steps=10**6,
            hold="track",
            update_every=every,
            latent=latent,
            **extra,
        )
        return tx if inside else optax.chain(adam(), tx)

    return make


def make_step(tx: optax.GradientTransformation):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


@functools.partial(jax.jit, donate_argnums=(0,))
def axpy(y, x):
    return (jax.tree.map(lambda yi, xi: 0.999 * xi + yi, y, x),)


class Arm:
    """Runs a compiled donated function ``n`` times in a row, threading its outputs."""

    def __init__(self, compiled, carry: tuple, rest: tuple):
        self.compiled, self.carry, self.rest = compiled, carry, rest

    def __call__(self, n: int) -> None:
        carry = self.carry
        for _ in range(n):
            carry = self.compiled(*carry, *self.rest)
        jax.block_until_ready(carry)
        self.carry = carry


def entry_ops(hlo_text: str) -> int:
    """Instructions in the ENTRY computation that do work (fusions, loops, custom calls)."""
    m = re.search(r"^ENTRY .*?^}", hlo_text, flags=re.S | re.M)
    body = m.group(0).splitlines()[1:-1] if m else []
    skip = ("parameter(", "tuple(", "get-tuple-element(", "constant(", "bitcast(")
    return sum(1 for line in body if "=" in line and not any(s in line for s in skip))


def layout_params(layout: str, args) -> dict[str, jax.ShapeDtypeStruct]:
    if layout == "single":
        return {"w": jax.ShapeDtypeStruct((args.single_dim, args.single_dim), jnp.float32)}
    shape = (args.leaf_dim, args.leaf_dim)
    return {f"layer_{i:03d}": jax.ShapeDtypeStruct(shape, jnp.float32) for i in range(args.leaves)}


def randn_like(tree, seed: int, scale: float = 1.0):
    keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(tree)))
    leaves, treedef = jax.tree.flatten(tree)
    return treedef.unflatten(
        [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def check_oracle(row: Row, shapes, grads, steps: int = 3) -> None:
    """The oracle computes what B computes: the same params after a few steps."""
    assert row.make_oracle is not None
    ends = []
    for tx in (row.make_b(), row.make_oracle()):
        params = randn_like(shapes, seed=1)
        state = tx.init(params)
        step = jax.jit(make_step(tx).__wrapped__)  # not donated: params are reused here
        for _ in range(steps):
            params, state = step(params, state, grads)
        ends.append(params)
    for b, o in zip(jax.tree.leaves(ends[0]), jax.tree.leaves(ends[1]), strict=True):
        if not np.allclose(np.asarray(b), np.asarray(o), rtol=1e-5, atol=1e-6):
            raise AssertionError(f"the oracle of {row.b_label!r} does not compute B")


def run_row(row: Row, layout: str, shapes, grads, args, hlo_dir: str | None) -> dict[str, Any]:
    arms, stats, ops = [], {}, {}
    for tag, make in (("A", row.make_a), ("B", row.make_b)):
        tx = make()
        params = randn_like(shapes, seed=1)
        state = tx.init(params)
        compiled = make_step(tx).lower(params, state, grads).compile()
        stats[tag] = _common.memory_stats(compiled)
        text = compiled.as_text()
        ops[tag] = entry_ops(text)
        if hlo_dir:
            label = (row.a_label if tag == "A" else row.b_label).replace(" ", "")
            path = os.path.join(hlo_dir, f"{layout}_{label}.hlo.txt")
            with open(path, "w") as f:
                f.write(text)
        arms.append(Arm(compiled, (params, state), (grads,)))
    if row.make_oracle is not None:
        check_oracle(row, shapes, grads)
        tx = row.make_oracle()
        params = randn_like(shapes, seed=1)
        state = tx.init(params)
        compiled = make_step(tx).lower(params, state, grads).compile()
        arms.append(Arm(compiled, (params, state), (grads,)))
    if row.axpy:
        y = randn_like(shapes, seed=2)
        compiled = axpy.lower(y, grads).compile()
        stats["axpy"] = _common.memory_stats(compiled)
        arms.append(Arm(compiled, (y,), (grads,)))
    for arm in arms:
        arm(args.warmup)
    inner = max(_common.calibrate_inner(arm, args.min_time) for arm in arms)
    inner = -(-inner // row.cycle) * row.cycle  # whole cycles: each sample holds its searches
    times = _common.interleaved_times(arms, args.reps, inner)
    ratio = times[:, 1] / times[:, 0]
    med, lo, hi = _common.median_ci(ratio)
    out = {
        "layout": layout,
        "row": row.name,
        "A": row.a_label,
        "B": row.b_label,
        "ratio_median": med,
        "ratio_ci95": [lo, hi],
        "t_A_ms": 1e3 * float(np.median(times[:, 0])),
        "t_B_ms": 1e3 * float(np.median(times[:, 1])),
        "memory_A": stats["A"],
        "memory_B": stats["B"],
        "entry_ops_A": ops["A"],
        "entry_ops_B": ops["B"],
        "reps": args.reps,
        "inner": inner,
    }
    if row.make_oracle is not None:
        med_o, lo_o, hi_o = _common.median_ci(times[:, 1] / times[:, 2])
        out["oracle_ms"] = 1e3 * float(np.median(times[:, 2]))
        out["B_over_oracle_median"] = med_o
        out["B_over_oracle_ci95"] = [lo_o, hi_o]
    if row.axpy:
        t_axpy = times[:, -1]
        axpy_bytes = stats["axpy"]["argument"] + stats["axpy"]["output"]
        out["axpy_ms"] = 1e3 * float(np.median(t_axpy))
        out["bandwidth_GBps"] = axpy_bytes / float(np.median(t_axpy)) / 1e9
        med_f, lo_f, hi_f = _common.median_ci(times[:, 1] / t_axpy)
        out["B_over_axpy_median"] = med_f
        out["B_over_axpy_ci95"] = [lo_f, hi_f]
    return out


def diagnose(args) -> list[dict[str, Any]]:
    """Times the arithmetic of one fused sgd + prox loop, piece by piece, vs plain sgd.

    Each variant is a jitted, donated ``(p, g) -> p'`` on one leaf, so each compiles to one
    fused elementwise loop that reads ``p`` and ``g`` and writes ``p'`` (the same bytes).
    ``library`` is exactly what ``chain(sgd, l1_prox)`` compiles to (see its HLO); the others
    take pieces away, which shows where the extra time of the library step goes.
    """
    lr, t = args.lr, args.lr * args.strength

    def soft(z):
        return z - jnp.clip(z, -t, t)

    tx = optax.chain(optax.sgd(lr), optax_l1.l1_prox(args.strength, learning_rate=lr))
    variants = {
        "sgd: p - lr*g": lambda p, g: p - lr * g,
        "library: chain(sgd, l1_prox)": None,
        "prox without the round trip: S(z)": lambda p, g: soft(p - lr * g),
        "round trip only: p + ((p - lr*g) - p)": lambda p, g: p + ((p - lr * g) - p),
        "clip only: clip(z, -t, t)": lambda p, g: jnp.clip(p - lr * g, -t, t),
        "where form: where(|z|>t, z - copysign(t,z), 0)": lambda p, g: (
            lambda z: jnp.where(jnp.abs(z) > t, z - jnp.copysign(t, z), 0.0)
        )(p - lr * g),
        "round trip + where form": lambda p, g: (
            p + ((lambda z: jnp.where(jnp.abs(z) > t, z - jnp.copysign(t, z), 0.0))(p - lr * g) - p)
        ),
    }
    sched = optax.cosine_decay_schedule(lr, 100_000)
    txs = {
        "library: chain(sgd, l1_prox)": tx,
        "library, schedule lr: chain(sgd(s), l1_prox(lam, learning_rate=s))": optax.chain(
            optax.sgd(sched), optax_l1.l1_prox(args.strength, learning_rate=sched)
        ),
        "no l2 divide, schedule lr: chain(sgd(s), proximal(soft_threshold, s))": optax.chain(
            optax.sgd(sched),
            optax_l1.proximal(
                lambda z, step: optax_l1.soft_threshold(z, step * args.strength),
                learning_rate=sched,
            ),
        ),
    }
    variants.update(dict.fromkeys(list(txs)[1:]))
    n = args.single_dim**2
    g = jax.random.normal(jax.random.key(0), (n,))
    arms, names = [], list(variants)
    for name in names:
        p0 = jax.random.normal(jax.random.key(1), (n,))
        if variants[name] is None:
            tx = txs[name]
            state = tx.init(p0)
            compiled = make_step(tx).lower(p0, state, g).compile()
            arms.append(Arm(compiled, (p0, state), (g,)))
        else:
            fn = jax.jit(lambda p, g, f=variants[name]: (f(p, g),), donate_argnums=(0,))
            arms.append(Arm(fn.lower(p0, g).compile(), (p0,), (g,)))
    for arm in arms:
        arm(args.warmup)
    inner = max(_common.calibrate_inner(arm, args.min_time) for arm in arms)
    times = _common.interleaved_times(arms, args.reps, inner)
    out = []
    print(
        f"\ndiagnose: one leaf of {n:,} float32, {args.reps} rotations, XLA_FLAGS="
        f"{os.environ.get('XLA_FLAGS', '')!r}"
    )
    rows = []
    for i, name in enumerate(names):
        med, lo, hi = _common.median_ci(times[:, i] / times[:, 0])
        ms = 1e3 * float(np.median(times[:, i]))
        out.append({"variant": name, "ms": ms, "ratio_vs_sgd": med, "ci95": [lo, hi]})
        rows.append([name, f"{ms:.3f}", f"{med:.3f}", f"{lo:.3f}–{hi:.3f}"])
    print(_common.markdown_table(["variant", "ms", "vs sgd (median)", "95% CI"], rows))
    return out


def row_names() -> list[str]:
    """Every row name ``--rows`` accepts (those of transforms this optax_l1 lacks too)."""
    rows, skipped = make_rows(1e-3, 1e-4)
    return list(dict.fromkeys([r.name for r in rows] + skipped))


def sample_everies(text: str) -> tuple[list[int], list[int]]:
    """A ``--target-every-sample`` value: ``"latent;no-latent"`` comma lists."""
    latent, _, plain = text.partition(";")
    return EVERIES(latent), EVERIES(plain)


EVERIES = _common.comma_list(_common.positive_int, empty=True)


def parser() -> _common.Parser:
    names = row_names()
    p = _common.Parser(__doc__, quick="tiny sizes, a few reps (CI smoke run)")
    p.add_scaled(
        "--single-dim", 4096, 128, type=_common.positive_int, help="layout single: one dim x dim"
    )
    p.add_scaled("--leaves", 128, 3, type=_common.positive_int, help="layout multi: leaves")
    p.add_scaled(
        "--leaf-dim", 256, 32, type=_common.positive_int, help="layout multi: each leaf dim x dim"
    )
    p.add_scaled(
        "--layouts",
        list(LAYOUTS),
        ["multi"],
        type=_common.comma_list(_common.choice(LAYOUTS)),
        help="comma list of single, multi",
    )
    p.add_argument(
        "--rows",
        type=_common.comma_list(_common.choice(names), empty=True),
        default=[],
        help="comma list of row names to keep (default: all): " + ", ".join(names),
    )
    p.add_scaled("--reps", 30, 3, type=_common.positive_int, help="interleaved A/B pairs per row")
    p.add_scaled("--warmup", 3, 1, type=_common.nonnegative_int, help="untimed calls per arm")
    p.add_scaled(
        "--min-time", 0.01, 0.001, type=_common.positive_float, help="seconds per timed sample"
    )
    p.add_argument("--lr", type=_common.positive_float, default=1e-3, help="learning rate")
    p.add_argument(
        "--strength", type=_common.nonnegative_float, default=1e-4, help="L1 strength lambda"
    )
    p.add_argument(
        "--target-every",
        type=EVERIES,
        default="1,10,100",
        help="sparsity_target rows: update_every comma list",
    )
    p.add_argument(
        "--target-every-plain",
        type=EVERIES,
        default="10,25",
        help="sparsity_target(latent=False) rows: update_every comma list",
    )
    p.add_argument(
        "--target-every-sample",
        type=sample_everies,
        default="1,10;1",
        help='sparsity_target(quantile="sample") rows: "latent;no-latent" update_every lists',
    )
    p.add_argument("--dump-hlo", default=None, help="folder for the compiled HLO of each step")
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="only time the pieces of the fused sgd + l1_prox loop (one leaf)",
    )
    p.add_json()
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = parser()
    args = p.parse(argv)
    layouts = args.layouts
    info = _common.header(
        "step_overhead",
        single=f"1 leaf {args.single_dim}x{args.single_dim} = {args.single_dim**2:,} params",
        multi=f"{args.leaves} leaves {args.leaf_dim}x{args.leaf_dim} = "
        f"{args.leaves * args.leaf_dim**2:,} params",
        dtype="float32",
        reps=args.reps,
        lr=args.lr,
        strength=args.strength,
    )
    if args.diagnose:
        out = diagnose(args)
        _common.write_json(args.json, {"info": info, "diagnose": out})
        return out
    rows, skipped = make_rows(
        args.lr,
        args.strength,
        args.target_every,
        args.target_every_plain,
        args.target_every_sample,
    )
    if args.rows:
        rows = [r for r in rows if r.name in args.rows]
    print(
        "skipped (not in this optax_l1): " + (", ".join(skipped) if skipped else "none"),
        flush=True,
    )
    if args.dump_hlo:
        os.makedirs(args.dump_hlo, exist_ok=True)

    results = []
    for layout in layouts:
        shapes = layout_params(layout, args)
        grads = randn_like(shapes, seed=0)
        leaf_bytes = max(math.prod(s.shape) * 4 for s in jax.tree.leaves(shapes))
        bandwidth = None
        for row in rows:
            r = run_row(row, layout, shapes, grads, args, args.dump_hlo)
            bandwidth = r.get("bandwidth_GBps", bandwidth)
            extra = r["memory_B"]["temp"] - r["memory_A"]["temp"]
            r["extra_temp_bytes"] = extra
            r["extra_full_size_temp"] = extra >= leaf_bytes
            if "bandwidth_GBps" in r:  # only where the axpy ran in the same interleaving
                for tag in ("A", "B"):
                    m = r[f"memory_{tag}"]
                    floor_s = (m["argument"] + m["output"]) / (bandwidth * 1e9)
                    r[f"{tag}_over_floor"] = r[f"t_{tag}_ms"] / 1e3 / floor_s
            results.append(r)
            print(
                f"{layout:6s} {r['B']:34s} B/A {r['ratio_median']:.3f} "
                f"[{r['ratio_ci95'][0]:.3f}, {r['ratio_ci95'][1]:.3f}]  "
                f"A {r['t_A_ms']:.3f} ms  B {r['t_B_ms']:.3f} ms  "
                f"temp A/B {r['memory_A']['temp']}/{r['memory_B']['temp']} B",
                flush=True,
            )

    headers = [
        "layout",
        "A",
        "B",
        "median B/A",
        "95% CI",
        "B / oracle",
        "A ms",
        "B ms",
        "B / floor",
        "temp A (B)",
        "temp B (B)",
        "extra full-size temp",
        "ops A→B",
    ]
    table = []
    for r in results:
        table.append(
            [
                r["layout"],
                r["A"],
                r["B"],
                f"{r['ratio_median']:.3f}",
                f"{r['ratio_ci95'][0]:.3f}–{r['ratio_ci95'][1]:.3f}",
                f"{r['B_over_oracle_median']:.3f}" if "B_over_oracle_median" in r else "—",
                f"{r['t_A_ms']:.3f}",
                f"{r['t_B_ms']:.3f}",
                f"{r['B_over_floor']:.2f}" if "B_over_floor" in r else "—",
                r["memory_A"]["temp"],
                r["memory_B"]["temp"],
                "yes" if r["extra_full_size_temp"] else "no",
                f"{r['entry_ops_A']}→{r['entry_ops_B']}",
            ]
        )
    print()
    print(_common.markdown_table(headers, table))
    print()
    for r in results:
        if "bandwidth_GBps" in r:
            print(
                f"floor [{r['layout']}]: axpy {r['axpy_ms']:.3f} ms = "
                f"{r['bandwidth_GBps']:.2f} GB/s; {r['B']} step / axpy = "
                f"{r['B_over_axpy_median']:.3f} "
                f"[{r['B_over_axpy_ci95'][0]:.3f}, {r['B_over_axpy_ci95'][1]:.3f}] "
                "(same bytes: read params + grads, write params)"
            )
    core = [r for r in results if r["row"] == "l1_prox"]
    worst = max((r["ratio_median"] for r in core), default=math.nan)
    verdict = "meets" if worst <= TARGET else "misses"
    print(f"l1_prox worst median ratio {worst:.3f}: {verdict} the <= {TARGET} target")
    full = [f"{r['layout']}/{r['B']}" for r in results if r["extra_full_size_temp"]]
    print("extra full-size temporary: " + (", ".join(full) if full else "none"))
    _common.write_json(args.json, {"info": info, "skipped": skipped, "results": results})
    return results


if __name__ == "__main__":
    main()
