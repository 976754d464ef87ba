"""Running a wrapped optimizer inside a transform, and reading its diagonal second moment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_l1 import _tree

# (state of the wrapped optimizer) -> pytree like params: the diagonal accumulator.
AccumulatorGetter = Callable[[Any], Any]
Accumulator = str | tuple[str, ...] | AccumulatorGetter


def update_inexact(
    optimizer: optax.GradientTransformation,
    updates: Any,
    inner_state: Any,
    params: Any,
    name: str,
    **extra_args: Any,
) -> tuple[Any, Any]:
    """``optimizer.update`` on the floating-point leaves only; the others pass through.

    Pair with ``optimizer.init(inexact_only(params))``.
    """
    # selected: the inexact leaves, for the optimizer (the prox after it checks its own)
    aligned = _tree.align(name, updates, params, None, regularizes=False)
    inner_updates, inner_state = optimizer.update(
        aligned.treedef.unflatten(
            [u if k else None for u, k in zip(aligned.updates, aligned.selected, strict=True)]
        ),
        inner_state,
        inexact_only(params),
        **extra_args,
    )
    return aligned.merge(aligned.treedef.flatten_up_to(inner_updates)), inner_state


def inexact_only(tree: Any) -> Any:
    """`tree` with its leaves that are not floating point replaced by ``None``.

    The wrapped optimizer sees only these: optax's optimizers keep ``None`` leaves as they are,
    so an integer leaf gets no slot (no dtype change under ``lax.cond``, no float update).
    """
    return jax.tree.map(lambda x: x if _tree.is_inexact(x) else None, tree)


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


class _Clash:
    """A leaf held by two partitions: the trees are not one multi_transform's partitions."""


def _merge_partitions(trees: list[Any]) -> Any:
    """One tree from the accumulators of the partitions of an ``optax.multi_transform`` (each
    a tree like params with ``optax.MaskedNode`` outside its partition, at a leaf or a whole
    subtree for prefix labels, and None where params are not floats); a :class:`_Clash`
    unless every array leaf is held by exactly one of them."""
    live = [t for t in trees if not _is_masked(t) and t is not None]
    if len(live) <= 1:
        return live[0] if live else trees[0]
    one_level = [jax.tree.flatten(t, is_leaf=lambda x, t=t: x is not t) for t in live]
    treedef = one_level[0][1]
    if jax.tree_util.treedef_is_leaf(treedef) or any(d != treedef for _, d in one_level):
        return _Clash()  # one leaf held twice, or containers that differ
    if treedef.num_leaves == 0:
        return live[0]  # the same empty container everywhere
    kids = [_merge_partitions(list(c)) for c in zip(*(k for k, _ in one_level), strict=True)]
    return _Clash() if any(isinstance(k, _Clash) for k in kids) else treedef.unflatten(kids)


def find_accumulator(accumulator: Accumulator, inner_state: Any, name: str) -> Any:
    """The diagonal accumulator in a wrapped optimizer's state: by name (the first of several
    names found) or through a callable ``state -> tree``."""
    if callable(accumulator):
        return accumulator(inner_state)
    for key in (accumulator,) if isinstance(accumulator, str) else accumulator:
        found = [v for _, v in optax.tree_utils.tree_get_all_with_path(inner_state, key)]
        acc = found[0] if len(found) == 1 else _merge_partitions(found) if found else None
        if isinstance(acc, _Clash):
            raise ValueError(
                f"`{name}`: the state of `optimizer` holds several fields named "
                f"{key!r} that are not the partitions of one optax.multi_transform (each "
                "leaf in exactly one); wrap a single diagonal optimizer or pass "
                "`accumulator` as a callable `state -> tree`"
            )
        if acc is not None:
            return acc
    fields = repr(accumulator) if isinstance(accumulator, str) else f"among {accumulator!r}"
    raise ValueError(
        f"`{name}`: the state of `optimizer` has no field {fields} "
        f"({jax.tree.structure(inner_state)}); it needs a diagonal accumulator "
        "(e.g. 'nu' for adam/adamw/rmsprop, 'sum_of_squares' for adagrad)"
    )


def per_leaf(acc: Any, z: Any, accumulator: Any, name: str) -> list[Any]:
    """The accumulator ``acc`` (a scalar or a prefix of ``z``) as one array per leaf of ``z``;
    a ValueError naming ``name`` where a leaf of ``z`` (not None) has none: a
    multi_transform partition whose optimizer keeps no such field holds MaskedNode there."""
    acc = jax.tree.map(lambda a: None if _is_masked(a) else a, acc, is_leaf=_is_masked)
    leaves = _tree.broadcast_prefix("accumulator", acc, z)
    z_leaves = jax.tree.leaves(z, is_leaf=_tree.is_none)
    if any(zi is not None and a is None for zi, a in zip(z_leaves, leaves, strict=True)):
        raise ValueError(
            f"`{name}`: the optimizer keeps no {accumulator!r} for some regularized leaves (a "
            "multi_transform partition whose optimizer has none?): give every partition "
            "one, or leave those leaves out with `mask=`"
        )
    for zi, a in zip(z_leaves, leaves, strict=True):
        if zi is not None and jnp.ndim(a) and jnp.shape(a) != jnp.shape(zi):
            raise ValueError(
                f"`{name}`: the accumulator {accumulator!r} must be one number or have its "
                f"leaf's shape; got shape {jnp.shape(a)} for a leaf of shape {jnp.shape(zi)}"
            )
    return leaves


def second_moments(name: str, inner_state: Any, params: Any) -> list[Any]:
    """The optimizer's diagonal second moment per leaf of ``params`` (a list of leaves or a
    pytree), as it is in its state: the first of ``nu`` (Adam, AdamW, RMSProp...) and
    ``sum_of_squares`` (Adagrad) present; None where the optimizer keeps none for a leaf (an
    int leaf, or masked out of a multi_transform). A ValueError naming ``name`` where it is
    not diagonal (novograd keeps one number per leaf: it crashed unnamed, or was read as a
    metric for a one-leaf tree)."""
    acc = find_accumulator(("nu", "sum_of_squares"), inner_state, name)
    treedef = jax.tree.structure(params, is_leaf=_tree.is_none)
    leaves = _tree.flatten_like(
        treedef, acc, f"`{name}`: the optimizer's second moment must have the structure of params"
    )
    out = [None if a is None or isinstance(a, optax.MaskedNode) else a for a in leaves]
    for a, p in zip(out, jax.tree.leaves(params, is_leaf=_tree.is_none), strict=True):
        if a is not None and p is not None and jnp.shape(a) != jnp.shape(p):
            raise ValueError(
                f"`{name}`: the optimizer's second moment must be diagonal (one entry per "
                f"weight, as Adam's `nu`); got shape {jnp.shape(a)} for a leaf of shape "
                f"{jnp.shape(p)} (novograd keeps one number per leaf)"
            )
    return out


def moment_scale(a: jax.Array, eps: float) -> jax.Array:
    """``sqrt(|a|) + eps`` in float32: the metric of a second moment ``a``."""
    return jnp.sqrt(jnp.abs(a)).astype(jnp.float32) + eps
