r"""Sparse export: the zeros that cannot be sliced away, stored without them.

Unstructured zeros go to :class:`jax.experimental.sparse.BCOO` (values plus coordinates);
N:M sparsity goes to :class:`NofM`, a packed format (the ``n`` values kept of every block
of ``m`` and their positions in the block, one byte each) with a matmul that consumes it
without rebuilding the dense kernel.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from optax_l1 import _checks, _structures, _tree


def to_bcoo(params: Any, *, mask: Any = None) -> Any:
    r"""Each selected leaf as a :class:`jax.experimental.sparse.BCOO` of its non-zeros.

    Runs eagerly (the number of stored entries is the leaf's non-zero count, subnormals
    included, each stored exactly). ``x.todense()`` gives the leaf back exactly, the sign
    of a zero aside (and a subnormal, which XLA:CPU's scatter flushes to 0);
    ``bcoo @ y`` is a sparse matmul.

    Args:
      params: a pytree of arrays.
      mask: a pytree of bools or a callable selecting the leaves converted (others are
        returned as they are).

    Returns:
      The tree with BCOO leaves where selected.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> w = jnp.array([[0.0, 2.0], [0.0, 0.0]])
      >>> sp = optax_l1.to_bcoo({"w": w})["w"]
      >>> sp.nse, sp.todense().tolist()
      (1, [[0.0, 2.0], [0.0, 0.0]])
    """
    _checks.check_eager("to_bcoo", params)
    leaves, treedef = jax.tree.flatten(params, is_leaf=_tree.is_none)
    keep = _tree.resolve_mask(mask, params)
    out = [
        _bcoo(x) if m and x is not None and _tree.is_inexact(x) else x
        for x, m in zip(leaves, keep, strict=True)
    ]
    return treedef.unflatten(out)


def _bcoo(x: Any) -> sparse.BCOO:
    """The non-zeros found on the host: XLA:CPU compares a subnormal as 0, so
    ``BCOO.fromdense`` dropped one (and padded the slot NumPy had counted for it)."""
    a = np.asarray(x)
    nonzero = a != 0
    data = jnp.asarray(a[nonzero], dtype=a.dtype)  # row-major, the order of argwhere
    at = jnp.asarray(np.argwhere(nonzero), jnp.int32)  # row-major: sorted, unique
    return sparse.BCOO((data, at), shape=a.shape, indices_sorted=True, unique_indices=True)


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["values", "positions"], meta_fields=["m", "axis"]
)
@dataclasses.dataclass(frozen=True)
class NofM:
    """An N:M sparse kernel, packed: the ``n`` entries kept of every block of ``m``.

    A pytree (``values`` and ``positions`` are its leaves; ``m`` and ``axis`` static), so it
    passes through :func:`jax.jit` and checkpointing.

    Attributes:
      values: the kept values, the leaf with ``axis`` of length ``L`` replaced by two axes
        ``(L // m, n)`` (entries of a block in position order; zeros pad a block with fewer
        non-zeros).
      positions: uint8, the position in its block (``0 .. m - 1``) of each value.
      m: the block length.
      axis: the axis the blocks run along.
    """

    values: jax.Array
    positions: jax.Array
    m: int
    axis: int

    def todense(self) -> jax.Array:
        """The dense kernel back (exactly, inf and NaN included; the sign of a zero aside):
        each value written at its position, no arithmetic."""
        v = jnp.moveaxis(self.values, (self.axis, self.axis + 1), (-2, -1))
        pos = jnp.moveaxis(self.positions, (self.axis, self.axis + 1), (-2, -1)).astype(jnp.int32)
        dense = jnp.zeros((*v.shape[:-1], self.m), v.dtype)  # (..., B, m)
        dense = jnp.put_along_axis(dense, pos, v, axis=-1, inplace=False)
        dense = dense.reshape(*dense.shape[:-2], -1)
        return jnp.moveaxis(dense, -1, self.axis)


def pack_n_of_m(x: jax.Array, n: int, m: int, *, axis: int = 0) -> NofM:
    r"""Packs a kernel with at most ``n`` non-zeros in every block of ``m`` along ``axis``.

    Runs eagerly; a block with more than ``n`` non-zeros raises (project first with
    :func:`n_of_m_projection`, or train with ``sparsity_target(allocation=Blocks(m, axis))``).
    Stores ``n / m`` of the values and one byte per value for its position.

    Args:
      x: the kernel (float).
      n: values kept per block.
      m: the block length (at most 256).
      axis: the axis the blocks run along (0 for a Dense kernel ``(in, out)``: the
        matmul's reduction axis, as :func:`n_of_m_matmul` expects;
        :func:`n_of_m_projection` has no default, so pass it ``axis=0`` too).

    Returns:
      An :class:`NofM`.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> w = jnp.array([[0.0], [3.0], [0.0], [-1.0]])
      >>> packed = optax_l1.pack_n_of_m(w, 2, 4)
      >>> packed.values[:, :, 0].tolist(), packed.positions[:, :, 0].tolist()
      ([[3.0, -1.0]], [[1, 3]])
    """
    _checks.check_number("n", n, _checks.at_least(1), integer=True)
    _checks.check_number("m", m, _checks.at_least(1), integer=True)
    n, m = int(n), int(m)
    _checks.check_eager("pack_n_of_m", x)
    if n > m or m > 256:
        raise ValueError(f"`n` must be at most `m` and `m` at most 256, got n={n}, m={m}")
    x = jnp.asarray(x)
    ax = _structures.normalize_axis(axis, x.ndim)[0]
    lay = _structures.Blocks(m, axis=ax).layout(tuple(x.shape))
    blocks = jnp.moveaxis(x.reshape(lay.split), ax + 1, -1)  # (..., B, ..., m)
    # Found on the host: XLA:CPU compares a subnormal as 0 (a third non-zero of 2:4 passed
    # the check and was dropped).
    nonzero = np.asarray(blocks) != 0
    count = nonzero.sum(axis=-1)
    if count.max(initial=0) > n:
        raise ValueError(
            f"`x` has a block of {m} along axis {ax} with {int(count.max())} non-zeros, "
            f"more than `n`={n}: not {n}:{m} sparse"
        )
    # Non-zeros first, in position order: a stable sort on "is zero".
    order = jnp.asarray(np.argsort(~nonzero, axis=-1, kind="stable")[..., :n])
    values = jnp.take_along_axis(blocks, order, axis=-1)
    values, order = (jnp.moveaxis(a, -1, ax + 1) for a in (values, order))
    return NofM(values, order.astype(jnp.uint8), m, ax)


def n_of_m_matmul(x: jax.Array, w: NofM) -> jax.Array:
    r"""``x @ W`` for an N:M kernel ``W`` ``(in, out)`` packed along ``axis=0``.

    Gathers, for each output column, the ``n`` inputs of every block its kept weights
    read, and contracts them with the packed values: ``n / m`` of the dense
    multiply-adds, the dense kernel never formed.

    Args:
      x: the input, ``(..., in)``.
      w: an :class:`NofM` of a 2-D kernel packed along axis 0.

    Returns:
      ``(..., out)``, equal to ``x @ w.todense()`` up to float rounding (a NaN or inf of
      ``x`` at a pruned weight's input does not show: as in any sparse kernel, that product
      is never formed), in its dtype
      (an integer or bfloat16 ``x`` with float32 values gives float32).

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> w = jnp.array([[0.0], [3.0], [0.0], [-1.0]])
      >>> optax_l1.n_of_m_matmul(jnp.ones((1, 4)), optax_l1.pack_n_of_m(w, 2, 4))
      Array([[2.]], dtype=float32)
    """
    if w.axis != 0 or w.values.ndim != 3:
        raise ValueError("`n_of_m_matmul` takes a 2-D kernel (in, out) packed along axis 0")
    blocks, n, out = w.values.shape
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != blocks * w.m:
        raise ValueError(
            f"`x` must be (..., {blocks * w.m}) for this kernel of {blocks * w.m} inputs, "
            f"got shape {jnp.shape(x)}"
        )
    dtype = jnp.result_type(x, w.values)  # as x @ w.todense(): never narrower than either
    x = jnp.asarray(x, dtype)
    xb = x.reshape(*x.shape[:-1], blocks, w.m)  # (..., B, m)
    pos = w.positions.astype(jnp.int32)  # (B, n, out)
    picked = jnp.take_along_axis(
        xb[..., :, :, None], pos.reshape((1,) * (x.ndim - 1) + pos.shape), axis=-2
    )  # (..., B, n, out)
    return jnp.einsum("...bno,bno->...o", picked, w.values.astype(dtype))


def nbytes(tree: Any) -> int:
    """The bytes of every array in ``tree`` (BCOO and :class:`NofM` count what they store).

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> optax_l1.nbytes({"w": jnp.zeros((4, 4)), "b": jnp.zeros(4)})
      80

      Abstract trees (``jax.eval_shape``) count as the arrays they describe; leaves without a
      dtype (Python numbers) are not counted.
    """
    return sum(_leaf_bytes(x) for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def _leaf_bytes(x: Any) -> int:
    """An array's bytes from its shape and dtype: no copy to the host, and the same for a
    ``jax.ShapeDtypeStruct`` (``jax.eval_shape``'s output) or a traced array."""
    return math.prod(x.shape) * np.dtype(x.dtype).itemsize
