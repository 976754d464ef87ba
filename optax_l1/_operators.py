r"""Proximal operators: pure functions on arrays and pytrees.

Every operator works leaf-wise on the inexact leaves of a pytree, computes in at least
float32 and returns each leaf in its own dtype; integer/bool leaves and `None` leaves pass
through unchanged. A coordinate that is shrunk to zero is exactly ``0`` in every dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from optax_l1 import _checks, _structures, _tree

Axis = int | Sequence[int]


# ----------------------------------------------------------------------------- arrays


def _soft_threshold_array(z: jax.Array, t: Any) -> jax.Array:
    if jnp.iscomplexobj(z):
        a = jnp.abs(z)
        # Written so that a NaN entry or threshold gives NaN (never a silent 0).
        scale = jnp.maximum(1.0 - t / jnp.where(a == 0, 1.0, a), 0.0)
        return jnp.where(a <= t, jnp.zeros_like(z), z * scale)
    # z - clip(z, -t, t): sign(z) * max(|z| - t, 0), +0.0 (not -0.0) inside. The clip is
    # written as selects, which XLA keeps as 2 compares and 2 selects where clip's NaN-safe
    # min/max need 13 instructions per vector for a run-time t; the order of the tests makes
    # a NaN z or a NaN t give NaN (a NaN t fails both tests and selects -t).
    if jnp.ndim(t) != 0 or jnp.result_type(z, t) != z.dtype:
        return z - jnp.where(z > t, t, jnp.where(z >= -t, z, -t))
    # The same in lax primitives for the common scalar threshold: a third of the trace time.
    t = lax.broadcast_in_dim(_tree.as_dtype(t, z.dtype), z.shape, ())
    neg = lax.neg(t)
    return lax.sub(z, lax.select(lax.gt(z, t), t, lax.select(lax.ge(z, neg), z, neg)))


def l1_subgradient(z: jax.Array) -> jax.Array:
    """The minimum-norm subgradient of |z|: sign(z) (z/|z| for complex), 0 at 0."""
    if jnp.iscomplexobj(z):
        a = jnp.abs(z)
        return jnp.where(a > 0, z / jnp.where(a > 0, a, 1.0), jnp.zeros_like(z))
    return jnp.sign(z)


def _nonnegative_threshold_array(z: jax.Array, t: Any) -> jax.Array:
    if jnp.iscomplexobj(z):
        raise TypeError("`nonnegative=True` is defined for real params only, got complex")
    # -inf (an infinite gradient) stays -inf: a fault shows rather than landing on 0.
    return jnp.where(z == -jnp.inf, z, jnp.maximum(z - t, 0.0))


def group_norm(z: jax.Array, axis: tuple[int, ...]) -> jax.Array:
    """||z_g||_2 over `axis` (keepdims), with a gradient that is finite at 0.

    One pass of squares (no nrm2-style rescaling, which doubled the group prox's cost): in
    float32 a group norm below ~1e-19 reads as 0 and one above ~1e19 as inf.
    """
    return _structures.safe_sqrt(_structures.sq_norms(_structures.Layout(z.shape, axis), z))


normalize_axis = _structures.normalize_axis


def _group_shrink(z: jax.Array, t: Any, lay: _structures.Layout, sq: jax.Array) -> jax.Array:
    """Group soft-thresholding of one leaf, given its (coupled) squared group norms."""
    n = _structures.safe_sqrt(sq)
    scale = jnp.maximum(1.0 - t / jnp.where(n == 0, 1.0, n), 0.0)
    # t == 0 is the identity, also for a group whose squared norm underflowed to 0. A NaN
    # entry (NaN norm) or threshold makes the group NaN: never a silently pruned group.
    dead = (n <= t) & (t != 0)
    zs = z.reshape(lay.split)  # in the blocked view: broadcasts, no expanded copy
    out = jnp.where(dead, jnp.zeros_like(zs), zs * scale.astype(z.dtype))  # +0.0 when dead
    return out.reshape(z.shape)


# ----------------------------------------------------------------------------- pytrees


def map_inexact(fn: Callable[..., jax.Array], tree: Any, *per_leaf: list[Any]) -> Any:
    """Applies `fn(leaf_in_compute_dtype, *per_leaf_values)` to each inexact leaf.

    The result is cast back to the leaf's dtype; other leaves are returned as they are.
    """
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_tree.is_none)
    out = []
    for i, z in enumerate(leaves):
        if z is None or not _tree.is_inexact(z):
            out.append(z)
            continue
        z = jnp.asarray(z)
        zc = _tree.as_dtype(z, _tree.compute_dtype(z.dtype))
        out.append(_tree.as_dtype(fn(zc, *(v[i] for v in per_leaf)), z.dtype))
    return treedef.unflatten(out)


def soft_threshold(tree: Any, threshold: Any) -> Any:
    r"""The proximal operator of the L1 norm (soft-thresholding), leaf-wise on a pytree.

    .. math::

      S_\tau(z) = \operatorname{sign}(z) \max(|z| - \tau, 0)
      = \operatorname*{argmin}_w \tfrac12 \|w - z\|_2^2 + \tau \|w\|_1

    Complex leaves shrink the modulus and keep the phase:
    :math:`z \max(1 - \tau / |z|, 0)`.

    Args:
      tree: a pytree of arrays.
      threshold: :math:`\tau \ge 0`, a scalar or a pytree prefix of ``tree`` (one threshold
        per leaf or subtree); a leaf's may also be an array that broadcasts to the leaf's
        shape (one threshold per entry, as jaxopt's ``prox_lasso`` takes).

    Returns:
      A pytree like ``tree``; entries with :math:`|z| \le \tau` are exactly zero.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax_l1
      >>> optax_l1.soft_threshold({"w": jnp.array([-2.0, 0.5, 3.0])}, 1.0)
      {'w': Array([-1.,  0.,  2.], dtype=float32)}

    References:
      Parikh & Boyd, `Proximal Algorithms <https://web.stanford.edu/~boyd/papers/prox_algs.html>`_,
      2014, section 6.5.2.
    """
    threshold = _checks.checked_tree("threshold", threshold)
    _check_fits("threshold", threshold, tree)
    return soft_threshold_tree(tree, threshold)


def _check_fits(name: str, values: Any, tree: Any) -> None:
    """A ValueError naming ``name`` unless each leaf's value is a scalar or an array that
    broadcasts to the leaf's shape without changing it (one value per entry)."""
    leaves = jax.tree.leaves(tree, is_leaf=_tree.is_none)
    for z, v in zip(leaves, _tree.broadcast_prefix(name, values, tree), strict=True):
        if z is None or not jnp.ndim(v):
            continue
        shape = jnp.shape(z)
        try:
            fits = jnp.broadcast_shapes(jnp.shape(v), shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"`{name}` must be a scalar per leaf or broadcast to the leaf's shape "
                f"{shape}, got shape {jnp.shape(v)}"
            )


def soft_threshold_tree(tree: Any, threshold: Any) -> Any:
    """:func:`soft_threshold` without the argument checks (for the package's own maps)."""
    t = _tree.broadcast_prefix("threshold", threshold, tree)
    return map_inexact(_soft_threshold_array, tree, t)


def elastic_net_threshold(
    tree: Any, threshold: Any, l2_scale: Any = 0.0, *, nonnegative: bool = False
) -> Any:
    r"""The proximal operator of :math:`\tau\|w\|_1 + \tfrac{\rho}{2}\|w\|_2^2`, leaf-wise.

    .. math::

      \operatorname{prox}(z) = \frac{S_\tau(z)}{1 + \rho}

    With ``nonnegative=True`` the L1 term is restricted to :math:`w \ge 0` and
    :math:`S_\tau(z)` becomes :math:`\max(z - \tau, 0)` (the non-negative lasso).

    Args:
      tree: a pytree of arrays.
      threshold: :math:`\tau \ge 0` (step size times L1 strength), scalar or pytree prefix
        (per entry: see :func:`soft_threshold`).
      l2_scale: :math:`\rho \ge 0` (step size times L2 strength), scalar or pytree prefix
        (per entry too).
      nonnegative: restrict to non-negative weights.

    Returns:
      A pytree like ``tree``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax_l1
      >>> optax_l1.elastic_net_threshold(jnp.array([-2.0, 0.5, 3.0]), 1.0, 1.0)
      Array([-0.5,  0. ,  1. ], dtype=float32)
      >>> optax_l1.elastic_net_threshold(jnp.array([-2.0, 0.5, 3.0]), 1.0, nonnegative=True)
      Array([0., 0., 2.], dtype=float32)

    References:
      Zou & Hastie, `Regularization and variable selection via the elastic net
      <https://doi.org/10.1111/j.1467-9868.2005.00503.x>`_, 2005.
    """
    threshold = _checks.checked_tree("threshold", threshold)
    l2_scale = _checks.checked_tree("l2_scale", l2_scale)
    nonnegative = _checks.check_flag("nonnegative", nonnegative)
    _check_fits("threshold", threshold, tree)
    _check_fits("l2_scale", l2_scale, tree)
    return elastic_net_tree(tree, threshold, l2_scale, nonnegative=nonnegative)


def elastic_net_tree(tree: Any, threshold: Any, l2_scale: Any, *, nonnegative: bool) -> Any:
    """:func:`elastic_net_threshold` without the argument checks."""
    t = _tree.broadcast_prefix("threshold", threshold, tree)
    r = _tree.broadcast_prefix("l2_scale", l2_scale, tree)
    shrink = _nonnegative_threshold_array if nonnegative else _soft_threshold_array

    def prox_leaf(z, ti, ri):
        if isinstance(ri, (int, float)) and ri == 0:  # a literal 0: skip the divide
            return shrink(z, ti)
        # 1 + rho in the leaf's compute dtype at least: in a bfloat16 rho, 1 + 0.001 is 1.
        wide = jnp.result_type(jnp.finfo(z.dtype).dtype, ri)  # a Python float stays weak
        return shrink(z, ti) / (1.0 + _tree.as_dtype(ri, wide))

    return map_inexact(prox_leaf, tree, t, r)


def group_soft_threshold(
    tree: Any, threshold: Any, *, axis: Axis | None = None, structure: Any = None
) -> Any:
    r"""The proximal operator of the group lasso: each group shrinks by its 2-norm.

    .. math::

      \operatorname{prox}(z)_g = z_g \max\left(0, 1 - \frac{\tau}{\|z_g\|_2}\right)

    Groups are given by ``axis`` (a group is the entries of a leaf that share all indices
    outside ``axis``: for a Dense kernel ``(in, out)``, ``axis=0`` makes each output unit's
    incoming weights one group, so whole units switch off) or by ``structure``
    (:class:`Groups`, :class:`Blocks`, :class:`Heads`, coupled across leaves by a shared
    ``couple`` label: then a group's norm is over its entries on every leaf). Safe at
    :math:`\|z_g\| = 0`. Norms are one pass of squares in at least float32: a group with
    norm below ~1e-19 counts as zero (it is zeroed by any positive threshold, kept by
    threshold 0), and one whose squares overflow (entries above ~1e19 in float32, ~1e154
    in float64) reads as an infinite norm and is kept unshrunk, whatever the threshold.
    Coupled leaves should get the same threshold (each leaf uses its own).

    Args:
      tree: a pytree of arrays.
      threshold: :math:`\tau \ge 0`, scalar or pytree prefix (one number per leaf: a group
        keeps or loses all its entries together).
      axis: an int or tuple of ints, the axes reduced to form each group.
      structure: instead of ``axis``: a :class:`Structure` for every leaf, a pytree prefix
        of structures (None: the leaf is left as it is), or a callable ``tree -> that``.

    Returns:
      A pytree like ``tree``; groups with :math:`\|z_g\| \le \tau` are exactly zero.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax_l1
      >>> w = jnp.array([[3.0, 0.1], [4.0, 0.1]])  # column norms 5 and ~0.14
      >>> optax_l1.group_soft_threshold(w, 1.0, axis=0)
      Array([[2.4, 0. ],
             [3.2, 0. ]], dtype=float32)

      Hidden unit ``j`` of an MLP as one group: column ``j`` of the first kernel, bias
      ``j`` and row ``j`` of the second kernel.

      >>> unit = {
      ...     "k1": optax_l1.Groups(0, couple="h"),
      ...     "b1": optax_l1.Elements(couple="h"),
      ...     "k2": optax_l1.Groups(1, couple="h"),
      ... }
      >>> p = {"k1": jnp.array([[3.0, 0.1]]), "b1": jnp.array([0.0, 0.1]),
      ...      "k2": jnp.array([[4.0], [0.1]])}
      >>> out = optax_l1.group_soft_threshold(p, 1.0, structure=unit)
      >>> out["k1"], out["b1"]
      (Array([[2.4, 0. ]], dtype=float32), Array([0., 0.], dtype=float32))

    References:
      Yuan & Lin, `Model selection and estimation in regression with grouped variables
      <https://doi.org/10.1111/j.1467-9868.2005.00532.x>`_, 2006.
    """
    threshold = _checks.checked_tree("threshold", threshold, scalar=True)
    return group_threshold_tree(tree, threshold, structure=structure_of(axis, structure))


def group_threshold_tree(tree: Any, threshold: Any, *, structure: Any) -> Any:
    """:func:`group_soft_threshold` without the threshold check (``structure`` is checked
    against each leaf): coupled groups are shrunk by their norm over all their leaves."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_tree.is_none)
    t = _tree.broadcast_prefix("threshold", threshold, tree)
    live = [x is not None and _tree.is_inexact(x) for x in leaves]
    _, zs, lays, sqs = _structures.grouped(structure, tree, live)
    out = [
        x
        if lay is None or z is None or sq is None
        else _group_shrink(z, ti, lay, sq).astype(jnp.asarray(x).dtype)
        for x, z, ti, lay, sq in zip(leaves, zs, t, lays, sqs, strict=True)
    ]
    return treedef.unflatten(out)


def structure_of(axis: Any, structure: Any) -> Any:
    """The grouping given as ``axis`` (:class:`Groups`) or as ``structure``: exactly one."""
    if (axis is None) == (structure is None):
        raise ValueError(
            "give exactly one of `axis` (groups reduced over it) and `structure` (a "
            f"Structure, a pytree of them or a callable), got axis={axis!r}, "
            f"structure={structure!r}"
        )
    if structure is not None:
        return structure
    normalize_axis(axis, 10**6)  # type check only; per-leaf check at update
    return _structures.Groups(axis)


def _leaf_axes(tree: Any, axis: Axis) -> list[Any]:
    """``axis`` normalized for each inexact leaf of ``tree`` (None for the other leaves)."""
    return [
        None if (z is None or not _tree.is_inexact(z)) else normalize_axis(axis, jnp.ndim(z))
        for z in jax.tree.leaves(tree, is_leaf=_tree.is_none)
    ]


def n_of_m_keep(scores: jax.Array, n: Any, m: int, axis: int) -> jax.Array:
    """True for the ``n`` highest ``scores`` of every block of ``m`` along ``axis`` (ties:
    the earlier entry). ``n`` may be traced. A NaN score outranks nothing and is outranked
    by nothing, so it is kept (and shows) when ``n >= 1``; at ``n = 0`` nothing is kept
    (:func:`n_of_m_projection` keeps NaN entries itself)."""
    if m > CODE_BITS:
        lay = _structures.Blocks(m, axis=axis).layout(tuple(scores.shape))
        return (_ranks(scores.reshape(lay.split), m, lay.reduce[0]) < n).reshape(scores.shape)
    return n_of_m_unpack(n_of_m_codes(scores, n, m, axis), m, axis, tuple(scores.shape))


CODE_BITS = 32  # the widest block a code holds (uint32)


def code_dtype(m: int) -> Any:
    for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
        if m <= jnp.iinfo(dtype).bits:
            return dtype
    raise ValueError(f"a block code holds at most {CODE_BITS} entries, got `m`={m}")


def _ranks(a: jax.Array, m: int, b: int) -> jax.Array:
    """Each entry's rank in its block of ``m`` along axis ``b`` of the blocked view ``a``:
    ``#{j : a_j > a_i, or equal and j first}``, one block entry at a time (a static loop
    of elementwise compares: no ``m x m`` temporary, no transpose)."""
    shape = [1] * a.ndim
    shape[b] = m
    pos = jnp.arange(m).reshape(shape)
    rank = jnp.zeros(a.shape, jnp.int32)
    for j in range(m):
        aj = lax.slice_in_dim(a, j, j + 1, axis=b)
        rank = rank + ((aj > a) | ((aj == a) & (j < pos))).astype(jnp.int32)
    return rank


def n_of_m_codes(scores: jax.Array, n: Any, m: int, axis: int) -> jax.Array:
    """The keep pattern of every block of ``m`` along ``axis`` as one small integer (bit
    ``i`` set: entry ``i`` of the block is among its ``n`` highest ``scores``), on the
    blocked view with the block axis of length 1: ``1/m`` of the entries in 1-4 bytes.

    The ranks are elementwise compares on the blocked view and the bits are summed over
    the block axis. That sum is a reduction, which XLA does not fuse into its readers: the
    codes are written once (a small buffer), and a step reads one code per block instead
    of recomputing the ranks from the block's neighbours, so its write of the params stays
    in place. ``m`` at most 32.
    """
    lay = _structures.Blocks(m, axis=axis).layout(tuple(scores.shape))
    b = lay.reduce[0]
    dtype = code_dtype(m)
    shape = [1] * len(lay.split)
    shape[b] = m
    pos = jnp.arange(m, dtype=dtype).reshape(shape)
    bits = (_ranks(scores.reshape(lay.split), m, b) < n).astype(dtype) << pos
    return jnp.sum(bits, axis=b, keepdims=True, dtype=dtype)  # distinct bits: sum = or


def n_of_m_unpack(codes: jax.Array, m: int, axis: int, shape: tuple[int, ...]) -> jax.Array:
    """The full-shape keep mask of :func:`n_of_m_codes` (bit ``i`` of its block's code)."""
    lay = _structures.Blocks(m, axis=axis).layout(shape)
    b = lay.reduce[0]
    pos = [1] * len(lay.split)
    pos[b] = m
    bits = jnp.arange(m, dtype=codes.dtype).reshape(pos)
    return ((codes >> bits) & 1).astype(bool).reshape(shape)


def _n_of_m_array(z: jax.Array, n: int, m: int, axis: int) -> jax.Array:
    if z.shape[axis] % m:
        raise ValueError(
            f"`axis`={axis} has length {z.shape[axis]}, not a multiple of `m`={m} (N:M blocks)"
        )
    # n >= 1 keeps a NaN (its rank is 0); at n = 0 it is kept here, so the fault shows
    keep = jnp.isnan(z) if n == 0 else n_of_m_keep(jnp.abs(z), n, m, axis)
    return jnp.where(keep, z, jnp.zeros_like(z))


def n_of_m_projection(tree: Any, n: int, m: int, *, axis: int) -> Any:
    r"""Keeps the ``n`` largest-magnitude entries of every block of ``m`` consecutive entries
    along ``axis`` and zeroes the others: the projection onto N:M sparsity (2:4 for sparse
    tensor cores).

    .. math::

      \operatorname{proj}(z)_i = z_i \,
      \mathbb{1}\left[\operatorname{rank}_{B(i)}(|z_i|) \le n\right]

    where :math:`B(i)` is the block of ``m`` holding entry :math:`i` and ties are broken by
    position (the earlier entry is kept), so every block has exactly ``n`` entries left
    (fewer non-zeros if some were 0). NaN entries are kept (a fault shows). Use ``axis`` =
    the reduction axis of the matmul (0 for a Dense kernel of shape ``(in, out)``). With
    :func:`proximal` it is the N:M constraint on every step (iterative hard thresholding).

    Args:
      tree: a pytree of arrays; every inexact leaf's ``axis`` must have a length that is a
        multiple of ``m``.
      n: entries kept per block, ``0 <= n <= m``.
      m: the block length, ``m >= 1``.
      axis: the axis the blocks run along.

    Returns:
      A pytree like ``tree`` with at most ``n`` non-zeros in every block.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> w = jnp.array([0.1, -3.0, 0.5, 2.0, 1.0, 1.0, -1.0, 0.0])
      >>> optax_l1.n_of_m_projection(w, 2, 4, axis=0)
      Array([ 0., -3.,  0.,  2.,  1.,  1.,  0.,  0.], dtype=float32)
      >>> tx = optax_l1.proximal(
      ...     lambda z, step: optax_l1.n_of_m_projection(z, 2, 4, axis=0), learning_rate=0.1
      ... )
    """
    n = _checks.static_int("n", n, _checks.at_least(0))
    m = _checks.static_int("m", m, _checks.at_least(1))
    _structures.check_one_axis(axis)
    if n > m:
        raise ValueError(f"`n` must be at most `m`, got n={n}, m={m}")
    return map_inexact(lambda z, a: _n_of_m_array(z, n, m, a[0]), tree, _leaf_axes(tree, axis))
