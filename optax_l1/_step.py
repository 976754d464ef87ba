r"""The one proximal step every transform of the package applies: a pure function.

Given the final updates :math:`u` and the params :math:`p`, aligned leaf by leaf with the
mask (:class:`optax_l1._tree.Aligned`), it forms :math:`z = p + u` in at least float32 on
the regularized leaves, applies a map ``prox(z, step, count) -> (z', aux)`` to that tree and
returns the update :math:`z' - p` (so ``optax.apply_updates`` lands exactly on :math:`z'`:
``p + (-p) == 0`` in IEEE arithmetic) together with ``aux``, whatever the map reports (a
threshold, a count). No state, no transform: the factories own those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from optax_l1 import _tree

# prox(z, step, count) -> (tree like z, aux). Leaves of z that are not regularized (masked
# out, integer, None) are None and must stay None.
ProxMap = Callable[[Any, jax.Array, jax.Array], tuple[Any, Any]]


def step_size(value: Any) -> jax.Array:
    """A learning rate as an array in at least float32 (also for bf16 hyperparameters)."""
    step = jnp.asarray(value)
    return step.astype(jnp.promote_types(step.dtype, jnp.float32))


def points(
    aligned: _tree.Aligned, base: list[Any] | None = None, into: list[Any] | None = None
) -> Any:
    r"""The tree of :math:`z = p + u` (at least float32) on selected leaves, None elsewhere.

    With ``base`` (one leaf per leaf of the updates, e.g. a dense latent copy of the params
    kept in a state), :math:`z = \text{base} + u` instead. With ``into`` (one buffer or None
    per leaf), each :math:`z` is written into its buffer (see :func:`written_into`).
    """
    bases = aligned.params if base is None else base
    buffers = [None] * len(bases) if into is None else into
    z = [
        written_into(w, _tree.upcast_sum(b, u)) if sel else None
        for u, b, w, sel in zip(aligned.updates, bases, buffers, aligned.selected, strict=True)
    ]
    return aligned.treedef.unflatten(z)


def written_into(buffer: Any, z: jax.Array) -> jax.Array:
    """``z``, computed into ``buffer`` (a state leaf of its shape and dtype) when there is one.

    When the state is donated, the ``dynamic_update_slice`` makes XLA alias the state's
    output with its input buffer and compute ``z`` in place, instead of in a fresh temporary
    of the leaf's size (a ``z`` that a reduction reads is materialized on XLA:CPU; the
    params' buffer cannot hold it, as the update reads the params again). A buffer of
    another dtype (updates wider than the params) is left to hold nothing: ``z`` as it is.
    """
    if buffer is None or jnp.shape(buffer) != z.shape or buffer.dtype != z.dtype:
        return z
    return lax.dynamic_update_slice(buffer, z, (0,) * z.ndim)


def _check_result(name: str, treedef: Any, z: list[Any], result: Any) -> list[Any]:
    new_z, result_def = jax.tree.flatten(result, is_leaf=_tree.is_none)
    if result_def != treedef or any(
        (r is None) != (x is None) or (x is not None and jnp.shape(r) != jnp.shape(x))
        for r, x in zip(new_z, z, strict=True)
    ):
        raise ValueError(
            f"`{name}`: the proximal operator must return a tree with the structure and "
            f"shapes of its input {treedef}, got {jax.tree.map(jnp.shape, result)}"
        )
    return new_z


def _as_input_dtype(name: str, result: Any, z: jax.Array) -> jax.Array:
    """The map's result in the dtype of its input ``z`` (at least float32), so that an integer
    or bfloat16 result lands exactly (its zeros on exact zeros); a complex result for a
    real input raises."""
    result = jnp.asarray(result)
    if jnp.iscomplexobj(result) and not jnp.iscomplexobj(z):
        raise ValueError(
            f"`{name}`: the proximal operator returned {result.dtype} values for real "
            f"{z.dtype} params"
        )
    return _tree.as_dtype(result, z.dtype)


def _landing(new_z: Any, p: Any, u: Any) -> jax.Array:
    """``new_z - p`` in a dtype that keeps ``p + (-p) == 0``: never narrower than params."""
    out_dtype = jnp.promote_types(jnp.result_type(u), jnp.result_type(p))
    new_z = jnp.asarray(new_z)
    p = _tree.as_dtype(p, new_z.dtype)
    if p.shape != new_z.shape:
        return (new_z - p).astype(out_dtype)
    return _tree.as_dtype(lax.sub(new_z, p), out_dtype)


def prox_update(
    prox: ProxMap,
    aligned: _tree.Aligned,
    step: jax.Array,
    count: jax.Array,
    *,
    name: str,
    base: list[Any] | None = None,
    into: list[Any] | None = None,
) -> tuple[Any, Any]:
    """Applies ``prox`` at :math:`z = p + u` (or ``base + u``); returns ``(updates, aux)``.

    The update lands on the map's result from the params, whatever ``base`` is. Unselected
    leaves keep their update exactly. ``into``: buffers :math:`z` is written into (see
    :func:`points`). Raises a ValueError naming ``name`` when ``prox`` returns a tree of
    another structure or shape.
    """
    z = points(aligned, base, into)
    result, aux = prox(z, step, count)
    z_leaves = jax.tree.leaves(z, is_leaf=_tree.is_none)
    new_z = _check_result(name, aligned.treedef, z_leaves, result)
    new_z = [
        None if x is None else _as_input_dtype(name, r, x)
        for r, x in zip(new_z, z_leaves, strict=True)
    ]
    landed = [
        None if nz is None else _landing(nz, p, u)
        for nz, p, u in zip(new_z, aligned.params, aligned.updates, strict=True)
    ]
    return aligned.merge(landed), aux


def landed(aligned: _tree.Aligned, updates: Any) -> list[Any]:
    """``p + updates`` on the selected leaves as ``optax.apply_updates`` gives them (in the
    params' dtype), None elsewhere."""
    new = aligned.treedef.flatten_up_to(updates)
    return [
        jnp.asarray(jnp.asarray(p) + u).astype(jnp.asarray(p).dtype) if sel else None
        for p, u, sel in zip(aligned.params, new, aligned.selected, strict=True)
    ]


def landed_zeros(aligned: _tree.Aligned, updates: Any) -> tuple[jax.Array, int]:
    """Exact zeros of ``p + updates`` over the selected leaves, and their number of entries."""
    zeros, size = jnp.zeros([], jnp.int32), 0
    for x in landed(aligned, updates):
        if x is not None:
            zeros += jnp.sum(x == 0, dtype=jnp.int32)
            size += int(np.size(x))
    return zeros, size
