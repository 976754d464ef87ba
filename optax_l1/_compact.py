r"""Compaction: exact zeros turned into smaller dense params.

A coupled structure (structures sharing a ``couple`` label, see :mod:`optax_l1._structures`)
names the slices that belong to one unit: hidden unit ``j`` is column ``j`` of one kernel,
bias entry ``j`` and row ``j`` of the next kernel; head ``i`` is its columns of q, k and v
and its rows of the output projection. A unit that is zero on every one of its leaves
contributes nothing (for an activation with ``act(0) = 0``) and is sliced away on all of
them at once. A unit whose incoming weights are zero but whose bias is not outputs the
constant ``act(b_j)``: :class:`Fold` moves ``act(b_j) * W_next[j]`` into the next layer's
bias first, so that the unit is zero everywhere and goes too.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_l1 import _checks, _masks, _structures, _tree


@dataclasses.dataclass(frozen=True)
class Fold:
    r"""Fold constant units of one coupled label into the next layer's bias.

    A unit ``j`` of ``couple`` whose entries are all zero except its bias entry outputs
    ``activation(bias[j])`` for every input. :func:`compact` adds
    ``activation(bias[j])`` times unit ``j``'s slice of ``weights`` (row ``j`` of a
    ``(units, out)`` kernel, column ``j`` of Equinox's ``(out, units)``: the axis its
    structure indexes) to ``next_bias`` and zeroes the bias entry and the slice, so the
    unit is removed. A unit whose slice of ``weights`` is zero is removed too (nothing
    reads it) when it is also zero on every other leaf of the label that holds its units
    on the same axis as ``weights`` (another kernel that may read it: a unit a second head
    still reads stays). A unit with a NaN or infinite entry on any leaf of the label stays
    (the fault shows in the compacted model). The bias must have one entry per unit (an MLP unit's,
    not a head's on a fused q/k/v bias: a ValueError).

    Attributes:
      couple: the label of the coupled structures.
      bias: the '/'-joined path of the unit's bias (as in :func:`sparsity_report`).
      weights: the path of the next kernel (its structure says which axis is the units).
      next_bias: the path of the next layer's bias ``(out,)``.
      activation: the activation between them (``jax.nn.relu``, ``jax.nn.gelu``...).
    """

    couple: str
    bias: str
    weights: str
    next_bias: str
    activation: Callable[[jax.Array], jax.Array]

    def __post_init__(self) -> None:
        for name in ("couple", "bias", "weights", "next_bias"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"`{name}` of Fold must be a str, got {getattr(self, name)!r}")
        if not callable(self.activation):
            raise TypeError(
                f"`activation` of Fold must be a function (jax.nn.relu, ...), "
                f"got {self.activation!r}"
            )
        if self.next_bias in (self.bias, self.weights):
            raise ValueError(
                f"`next_bias` of Fold must be another leaf than `bias` and `weights`, got "
                f"{self.next_bias!r}"
            )


class Compacted(NamedTuple):
    """What :func:`compact` returns.

    Attributes:
      params: the smaller params (same tree, leaves sliced).
      kept: for each coupled label, the indices of the units kept (a NumPy int array): the
        new width is ``len(kept[label])`` (the new head count for heads).
    """

    params: Any
    kept: dict[str, np.ndarray]

    def into(self, module: Any) -> Any:
        r"""``module``, built at the new widths, holding these params.

        For models whose widths are static configuration (Flax NNX, Equinox): build the
        module at ``len(kept[label])`` (cheaply, with ``nnx.eval_shape`` or
        ``equinox.filter_eval_shape``; its values are replaced), then ``into`` moves the
        compacted arrays in. A Flax NNX module is updated in place (``nnx.update``) with
        ``params`` (the compacted ``nnx.state(model, nnx.Param)``, or its pure dict) and
        returned; any other pytree (an Equinox module, a dict) is returned as a copy whose
        array leaves are those of ``params``, in order.

        Raises:
          ValueError: naming the first leaf whose shape or dtype differs from the
            module's, or when the numbers of arrays differ.
        """
        nnx = sys.modules.get("flax.nnx")
        if nnx is not None and isinstance(module, nnx.Module):
            _check_same_arrays(nnx.split(module, nnx.Param)[1], self.params)
            nnx.update(module, self.params)
            return module
        _check_same_arrays(module, self.params)
        leaves, treedef = jax.tree.flatten(module)
        arrays = iter(x for x in jax.tree.leaves(self.params) if _is_array(x))
        return treedef.unflatten([next(arrays) if _is_array(x) else x for x in leaves])


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _check_same_arrays(template: Any, params: Any) -> None:
    """Raises unless ``params`` has ``template``'s arrays, shape for shape, dtype for dtype."""
    want = [
        (n, x)
        for n, x in zip(
            _structures.leaf_names(template),
            jax.tree.leaves(template, is_leaf=_tree.is_none),
            strict=True,
        )
        if _is_array(x)
    ]
    have = [x for x in jax.tree.leaves(params) if _is_array(x)]
    if len(want) != len(have):
        raise ValueError(
            f"`module` has {len(want)} arrays and the compacted params {len(have)}: build "
            "the module that the params came from, at the new widths"
        )
    for (name, w), h in zip(want, have, strict=True):
        if tuple(w.shape) != tuple(h.shape) or w.dtype != h.dtype:
            raise ValueError(
                f"`module` leaf {name!r} is {w.dtype}{list(w.shape)} but the compacted params "
                f"give {h.dtype}{list(h.shape)}: build the module at the widths in `kept`"
            )


def _unit_positions(
    lay: _structures.Layout, shape: tuple[int, ...], what: str
) -> tuple[int, np.ndarray]:
    """The leaf axis that indexes the groups, and each position's group along it."""
    kept = {lay.origins[i] for i in range(len(lay.split)) if i not in lay.reduce}
    if len(kept) != 1:
        raise ValueError(
            f"`compact`: {what} does not index its groups along one axis of its leaf "
            f"(shape {shape}); only units, heads and channels can be sliced away"
        )
    ax = kept.pop()
    along = [d if o == ax else 1 for d, o in zip(lay.split, lay.origins, strict=True)]
    gid = np.broadcast_to(np.arange(int(np.prod(lay.groups))).reshape(lay.grid), along)
    return ax, gid.reshape(-1)


def _by_path(params: Any) -> dict[str, int]:
    """'/'-joined path -> leaf index."""
    paths = jax.tree_util.tree_flatten_with_path(params, is_leaf=_tree.is_none)[0]
    return {_masks.path_name(p): i for i, (p, _) in enumerate(paths)}


def _fold(leaves: list[Any], sts: list[Any], names: dict[str, int], fold: Fold, units) -> None:
    """Folds the units in ``units`` (constant ``act(bias)``) into ``next_bias``: the next
    kernel, contracted over its unit axis (rows for ``(units, out)``, columns for
    Equinox's ``(out, units)``), times the constants."""
    b, w, nb = (names[p] for p in (fold.bias, fold.weights, fold.next_bias))
    _, bias_group = _unit_positions(sts[b].layout(leaves[b].shape), leaves[b].shape, fold.bias)
    if len(np.unique(bias_group)) != len(bias_group):
        raise ValueError(
            f"`fold`: {fold.bias!r} has {len(bias_group) // len(units)} entries per unit of "
            f"{fold.couple!r}; a unit folds one bias entry (an MLP unit's), not a head's"
        )
    ax, w_group = _unit_positions(sts[w].layout(leaves[w].shape), leaves[w].shape, fold.weights)
    const = jnp.where(jnp.asarray(units[bias_group]), fold.activation(leaves[b]), 0.0)
    per_position = jnp.zeros(len(units), const.dtype).at[bias_group].set(const)[w_group]
    added = jnp.tensordot(per_position, leaves[w], axes=([0], [ax]))
    if added.shape != leaves[nb].shape:
        raise ValueError(
            f"`fold`: {fold.weights!r} contracted over its units gives shape {added.shape}, "
            f"not the shape {leaves[nb].shape} of {fold.next_bias!r}"
        )
    leaves[nb] = leaves[nb] + added.astype(leaves[nb].dtype)
    leaves[b] = jnp.where(jnp.asarray(units[bias_group]), 0.0, leaves[b]).astype(leaves[b].dtype)


def compact(params: Any, structure: Any, *, fold: Sequence[Fold] = ()) -> Compacted:
    r"""Smaller dense params: every coupled unit that is zero on all its leaves sliced away.

    Only coupled structures are compacted (a group on one leaf alone cannot be removed
    without changing the shapes its neighbours expect); a label's structures must index
    their groups along one axis of each leaf (:class:`Groups` leaving one axis,
    :class:`Elements` on a vector, :class:`Heads`). Removing a unit that is zero everywhere
    leaves the outputs unchanged when the activation maps 0 to 0 (relu, gelu, tanh, silu);
    with ``fold``, units whose only non-zero entry is their bias are folded into the next
    bias first (see :class:`Fold`). Runs eagerly (the new shapes depend on the values).

    The tree keeps its structure; only leaf shapes change. Flax linen: apply the module
    built at the new width (``len(kept[label])``) to the small params. Flax NNX: compact
    the state of ``nnx.split(model, nnx.Param)``, build the module at the new width
    (``nnx.eval_shape`` builds it without initializing) and :meth:`Compacted.into` it.
    Equinox (widths are static fields): compact the arrays of
    ``equinox.partition(model, equinox.is_array)``, build the module at the new width
    (``equinox.filter_eval_shape``) and :meth:`Compacted.into` it;
    ``tests/compact_test.py`` does all three.

    Args:
      params: a pytree of arrays (plain dicts, Flax linen params, NNX ``State``...).
      structure: the coupled structures, as for :func:`sparsity_target` (a pytree prefix of
        :class:`Structure` or None, or a callable ``params -> that``).
      fold: :class:`Fold` entries: for a label whose units may have zero incoming weights
        and a non-zero bias (the bias and the next kernel carry the label too).

    Returns:
      A :class:`Compacted`: ``params`` sliced and ``kept`` (the units kept, per label).

    Examples:
      >>> import jax, jax.numpy as jnp, optax_l1
      >>> unit = {"k1": optax_l1.Groups(0, couple="h"), "b1": optax_l1.Elements(couple="h"),
      ...         "k2": optax_l1.Groups(1, couple="h"), "b2": None}
      >>> p = {"k1": jnp.array([[1.0, 0.0, 2.0]]), "b1": jnp.array([0.5, 0.0, 0.0]),
      ...      "k2": jnp.array([[1.0], [0.0], [3.0]]), "b2": jnp.zeros(1)}
      >>> small, kept = optax_l1.compact(p, unit)
      >>> kept["h"], small["k1"].shape, small["k2"].shape
      (array([0, 2]), (1, 2), (2, 1))
    """
    _checks.check_eager("compact", params)
    leaves, treedef = jax.tree.flatten(params, is_leaf=_tree.is_none)
    live = [x is not None and _tree.is_inexact(x) for x in leaves]
    sts = _structures.resolve("structure", structure, params, live)
    leaves = [jnp.asarray(x) if ok else x for x, ok in zip(leaves, live, strict=True)]
    _structures.check_coupled(sts, _structures.layouts(sts, leaves, _structures.leaf_names(params)))
    names = _by_path(params)
    folds = _folds_by_label(fold)
    kept: dict[str, np.ndarray] = {}
    for label in dict.fromkeys(s.couple for s in sts if s is not None and s.couple):
        members = [i for i, s in enumerate(sts) if s is not None and s.couple == label]
        if label in folds:
            _fold_constant_units(leaves, sts, names, folds[label], members)
        count = int(np.prod(sts[members[0]].layout(tuple(leaves[members[0]].shape)).groups))
        dead = _zero_groups(leaves, sts, members, count)
        kept[label] = np.flatnonzero(~dead)
        for i in members:
            leaves[i] = _slice_units(leaves[i], sts[i], kept[label])
    unknown = set(folds) - set(kept)
    if unknown:
        raise ValueError(f"`fold` names labels no structure carries: {sorted(unknown)}")
    return Compacted(treedef.unflatten(leaves), kept)


def _folds_by_label(fold: Any) -> dict[str, Fold]:
    """``fold`` as label -> Fold: a sequence of Folds, one per label (a second Fold of a
    label replaced the first silently)."""
    if isinstance(fold, Fold) or not isinstance(fold, (list, tuple)):
        raise TypeError(f"`fold` must be a list or tuple of Fold, got {fold!r}")
    folds: dict[str, Fold] = {}
    for f in fold:
        if not isinstance(f, Fold):
            raise TypeError(f"`fold` must be a list or tuple of Fold, got an entry {f!r}")
        if f.couple in folds:
            raise ValueError(f"`fold` has two Folds for the label {f.couple!r}")
        folds[f.couple] = f
    return folds


def _fold_constant_units(leaves, sts, names, fold: Fold, members: list[int]) -> None:
    """Units with zero incoming weights output ``act(bias)``: folded into the next bias.
    Units nothing reads (zero on the next kernel and on every member that holds its units
    on the same axis, which may read them too) contribute nothing: zeroed on every member.
    A unit with a NaN or inf entry is neither (it stays, so the fault shows)."""
    for path in (fold.bias, fold.weights, fold.next_bias):
        if path not in names:
            raise ValueError(f"`fold`: no leaf at path {path!r}; paths are {sorted(names)}")
    b, w, nb = names[fold.bias], names[fold.weights], names[fold.next_bias]
    if b not in members or w not in members:
        raise ValueError(
            f"`fold`: {fold.bias!r} and {fold.weights!r} must carry the label {fold.couple!r}"
        )
    if nb in members:  # the folded constants would be sliced away with the units
        raise ValueError(
            f"`fold`: `next_bias` {fold.next_bias!r} must not carry the label {fold.couple!r}"
        )
    if leaves[nb] is None or not _tree.is_inexact(leaves[nb]):  # int: truncated, None: crash
        raise ValueError(
            f"`fold`: `next_bias` {fold.next_bias!r} must be a float array, got {leaves[nb]!r}"
        )
    incoming = [i for i in members if i not in (b, w)]  # none: bias-only units, constant
    count = int(np.prod(sts[b].layout(tuple(leaves[b].shape)).groups))
    axis = _unit_axis(leaves, sts, w)
    readers = [w] + [i for i in incoming if _unit_axis(leaves, sts, i) == axis]
    faulty = _faulty_groups(leaves, sts, members, count)
    silent = _zero_groups(leaves, sts, readers, count) & ~faulty
    constant = _zero_groups(leaves, sts, incoming, count) & ~silent & ~faulty
    _fold(leaves, sts, names, fold, constant)
    for i in members:  # a unit nothing reads, or folded: zero on every member, removed
        lay = sts[i].layout(tuple(leaves[i].shape))
        gone = silent | (constant if i == w else np.zeros_like(silent))
        off = _structures.expand(lay, jnp.asarray(gone).reshape(lay.grid), leaves[i].shape)
        leaves[i] = jnp.where(off, jnp.zeros_like(leaves[i]), leaves[i])


def _unit_axis(leaves: list[Any], sts: list[Any], i: int) -> int:
    """The axis that indexes the units of leaf ``i``."""
    shape = tuple(leaves[i].shape)
    return _unit_positions(sts[i].layout(shape), shape, repr(sts[i]))[0]


def _groups_with(leaves, sts, members: list[int], count: int, hit) -> np.ndarray:
    """True for the ``count`` groups with an entry where ``hit`` is True on a leaf in
    ``members`` (False for every group with no member)."""
    found = np.zeros(count, bool)
    for i in members:
        lay = sts[i].layout(tuple(leaves[i].shape))
        h = hit(leaves[i]).reshape(lay.split)
        found |= np.asarray(jnp.any(h, axis=lay.reduce) if lay.reduce else h).reshape(-1)
    return found


def _faulty_groups(leaves: list[Any], sts: list[Any], members: list[int], count: int) -> np.ndarray:
    """True for the ``count`` groups with a NaN or infinite entry on a leaf in ``members``
    (inf times a zero row is NaN: such a unit is not silent)."""
    return _groups_with(leaves, sts, members, count, lambda x: ~jnp.isfinite(x))


def _zero_groups(leaves: list[Any], sts: list[Any], members: list[int], count: int) -> np.ndarray:
    """True for the ``count`` groups that are exactly zero on every leaf in ``members``
    (a NaN entry is not zero; with no member, every group is)."""
    return ~_groups_with(leaves, sts, members, count, lambda x: ~_tree.is_zero(x))


def _slice_units(x: jax.Array, st: Any, kept: np.ndarray) -> jax.Array:
    lay = st.layout(tuple(x.shape))
    ax, group_of = _unit_positions(lay, tuple(x.shape), repr(st))
    return jnp.take(x, np.flatnonzero(np.isin(group_of, kept)), axis=ax)
