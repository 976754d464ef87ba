"""Pytree plumbing: prefix broadcasting, mask resolution, dtype predicates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_l1 import _checks

Mask = Any  # a pytree of bools (prefix of params) or a callable params -> such a pytree


def is_none(x: Any) -> bool:
    return x is None


def is_inexact(x: Any) -> bool:
    """True for float/complex arrays (the leaves L1 acts on)."""
    if isinstance(x, (float, complex)):  # Python scalars are weights too
        return True
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def compute_dtype(dtype: Any) -> Any:
    """The dtype shrink math runs in: at least float32 (complex64 for complex). float8 and
    float4 do not promote with float32 in JAX (a TypePromotionError): they widen to it."""
    if _checks.is_narrow_float(dtype):
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(dtype, jnp.float32)


def widened(x: Any) -> jax.Array:
    """``x`` as an array in its compute dtype (at least float32, complex kept complex)."""
    x = jnp.asarray(x)
    return x.astype(compute_dtype(x.dtype))


def select(pred: Any, on_true: Any, on_false: Any) -> jax.Array:
    """``jnp.where(pred, on_true, on_false)``, traced as one ``lax.select`` when both
    branches are arrays of one shape and dtype (``pred`` a bool of that shape or a scalar).

    ``jnp.where`` is a jitted function: each call is traced, lowered and inlined by XLA as a
    call of its own, and a step over thousands of leaves makes thousands of them
    (``benchmarks/compile_scale.py``). Anything else goes to ``jnp.where``.
    """
    if (
        isinstance(on_true, jax.Array)
        and isinstance(on_false, jax.Array)
        and on_true.shape == on_false.shape
        and on_true.dtype == on_false.dtype
        and on_true.weak_type == on_false.weak_type
    ):
        pred = jnp.asarray(pred)
        if pred.dtype == jnp.bool_ and pred.shape in ((), on_true.shape):
            return lax.select(pred, on_true, on_false)
    return jnp.where(pred, on_true, on_false)


def zero_where(dead: Any, x: jax.Array) -> jax.Array:
    """``x`` with 0 where ``dead``, except that a NaN (or inf) there stays NaN: a fault at a
    zeroed or held weight shows. ``x * 0``, not a fresh zero, and ``x`` read once: a second
    reader of an optimizer's update would make XLA materialize it (a full-size temporary)."""
    x = jnp.asarray(x)
    return select(dead, x * 0, x)


_IEEE_FLOATS = tuple(jnp.dtype(t) for t in ("float16", "bfloat16", "float32", "float64"))


def is_zero(x: Any) -> jax.Array:
    """``x == 0`` by the bits, the sign aside: XLA:CPU compares a subnormal as 0, which a
    count of stored zeros must not (``jnp.array(1e-45) == 0`` is True there)."""
    x = jnp.asarray(x)
    if jnp.iscomplexobj(x):
        return is_zero(x.real) & is_zero(x.imag)
    if x.dtype not in _IEEE_FLOATS:  # ints; float8/4 (other NaN encodings, compared widened)
        return x == 0
    bits = lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    return lax.shift_left(bits, jnp.asarray(1, bits.dtype)) == 0  # the sign bit shifted out


def as_dtype(x: Any, dtype: Any) -> jax.Array:
    """``x`` as a (strongly typed) array of ``dtype``; an array that already is one is
    returned as it is.

    The plumbing runs once per leaf when a step is traced: on a tree of thousands of leaves
    each ``jnp`` call it skips is trace and compile time saved (``benchmarks/compile_scale.py``).
    """
    if isinstance(x, jax.Array) and x.dtype == dtype and not x.weak_type:
        return x
    return jnp.asarray(x).astype(dtype)


def upcast_sum(p: Any, u: Any) -> Any:
    """``p + u`` computed in at least float32 (the point a prox step is applied to)."""
    p, u = jnp.asarray(p), jnp.asarray(u)
    cdt = compute_dtype(jnp.result_type(p, u))
    if p.shape != u.shape:
        return p.astype(cdt) + u.astype(cdt)
    return lax.add(as_dtype(p, cdt), as_dtype(u, cdt))


def on_regularized(params: Any, keep: list[bool], make: Callable[[Any], Any]) -> Any:
    """A tree like ``params`` with ``make(p)`` on the leaves ``keep`` marks that are present
    and inexact (as :func:`align` selects them), None elsewhere: state buffers."""
    leaves, treedef = jax.tree.flatten(params, is_leaf=is_none)
    out = [
        make(p) if k and p is not None and is_inexact(p) else None
        for p, k in zip(leaves, keep, strict=True)
    ]
    return treedef.unflatten(out)


def broadcast_prefix(name: str, prefix: Any, tree: Any) -> list[Any]:
    """Expands `prefix` (a scalar or a pytree prefix of `tree`) to one value per leaf of `tree`.

    `None` leaves of `tree` are leaves here (they receive a value that is never used).
    Raises a ValueError naming `name` when `prefix` is not a prefix of `tree`.
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=is_none)
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(prefix)):
        return [prefix] * len(leaves)  # a scalar (or one array) applies to every leaf
    out: list[Any] = []

    def expand(p: Any, sub: Any) -> None:
        out.extend([p] * len(jax.tree.leaves(sub, is_leaf=is_none)))

    try:
        jax.tree.map(expand, prefix, tree, is_leaf=is_none)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"`{name}` must be a scalar or a pytree prefix of params; its structure "
            f"{jax.tree.structure(prefix)} does not match params {treedef} ({e})"
        ) from None
    return out


def resolve_mask(mask: Mask | Callable[[Any], Mask] | None, params: Any) -> list[bool]:
    """One Python bool per leaf of `params` (None leaves included): True = regularized."""
    n = len(jax.tree.leaves(params, is_leaf=is_none))
    if mask is None:
        return [True] * n
    _checks.check_mask(mask)
    if callable(mask):
        mask = mask(params)
    if mask is None:
        raise ValueError("`mask` callable returned None; it must return a pytree of bools")
    flat = broadcast_prefix("mask", mask, params)
    out = []
    for m, x in zip(flat, jax.tree.leaves(params, is_leaf=is_none), strict=True):
        if x is None:  # nothing to regularize; the mask may hold None (or anything) here
            out.append(False)
            continue
        if isinstance(m, jax.Array) and _checks.concrete(m) is None:
            raise TypeError(
                "`mask` leaves must be concrete Python bools (as in `optax.masked`), got a "
                "traced value; build the mask outside of jit or from params' structure only"
            )
        if isinstance(m, (bool, np.bool_)) or (
            hasattr(m, "dtype") and np.ndim(m) == 0 and np.asarray(m).dtype == bool
        ):
            out.append(bool(m))
        else:
            raise TypeError(f"`mask` leaves must be bools, got {m!r}")
    return out


def flatten_like(treedef: Any, tree: Any, message: str) -> list[Any]:
    """``treedef.flatten_up_to(tree)``, or a ValueError that starts with ``message``."""
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{message} ({e})") from None


class Aligned(NamedTuple):
    """``updates`` and ``params`` flattened side by side, and which leaves are regularized.

    A leaf is selected when the mask says so and both leaves are present (not None) with an
    inexact params dtype. `MaskedNode` subtrees (from `optax.masked`) have no leaves and are
    kept by ``treedef``.
    """

    treedef: Any
    updates: list[Any]
    params: list[Any]
    selected: list[bool]

    def merge(self, new: list[Any]) -> Any:
        """The updates tree with ``new[i]`` on selected leaves and the update elsewhere."""
        out = [n if s else u for u, n, s in zip(self.updates, new, self.selected, strict=True)]
        return self.treedef.unflatten(out)


def align(name: str, updates: Any, params: Any, mask: Any, *, regularizes: bool = True) -> Aligned:
    """Flattens ``updates`` and ``params`` side by side (see :class:`Aligned`).

    Raises a ValueError naming ``name`` when the structures differ, and a TypeError when
    ``regularizes`` (the selected leaves are shrunk here) and one of them is float8/float4.
    """
    u_leaves, treedef = jax.tree.flatten(updates, is_leaf=is_none)
    p_leaves = flatten_like(
        treedef, params, f"`{name}`: `params` must have the structure of `updates` {treedef}"
    )
    keep = resolve_mask(mask, params)
    if len(keep) != len(p_leaves):  # params hold extra leaves under an updates leaf
        raise ValueError(f"`{name}`: `params` must have the structure of `updates` {treedef}")
    selected = [
        bool(m) and u is not None and p is not None and is_inexact(p)
        for u, p, m in zip(u_leaves, p_leaves, keep, strict=True)
    ]
    if regularizes:
        _check_no_float8(name, u_leaves, p_leaves, selected)
    return Aligned(treedef, u_leaves, p_leaves, selected)


def _check_no_float8(name: str, u_leaves: list[Any], p_leaves: list[Any], selected: list[bool]):
    """A TypeError naming ``name`` for a regularized float8/float4 leaf: JAX promotes those
    with no other float, and a transform here mixes them with its float32 state (one
    crashed with a TypePromotionError, another gave NaN)."""
    for u, p, sel in zip(u_leaves, p_leaves, selected, strict=True):
        if not sel:
            continue
        for x in (u, p):
            dtype = getattr(x, "dtype", None)
            if dtype is not None and _checks.is_narrow_float(dtype):
                raise TypeError(
                    f"`{name}`: a regularized leaf is {dtype}; float8/float4 params and "
                    "updates are not supported: train float32 or bfloat16 master weights, "
                    "or leave the leaf out with `mask=`"
                )
