r"""Structures: which entries of a leaf form one group. Data, not transforms.

A structure says how a leaf's entries are grouped: single entries (:class:`Elements`),
entries sharing all indices outside some axes (:class:`Groups`: rows, columns, conv
filters), blocks of consecutive entries along an axis (:class:`Blocks`, also the blocks of
N:M sparsity) and attention heads on a (possibly fused) projection axis (:class:`Heads`).
Every grouping is a free *reshape* of the leaf (``layout``: the split shape and the axes
reduced within a group), so scoring a group is one reduction and broadcasting a value per
group back to the entries is a broadcast: no transpose, no gather.

Groups on different leaves are *coupled* by giving their structures the same ``couple``
label: their group grids must have the same shape once the reduced axes are dropped, and a
coupled group's norm is taken over all its entries on all those leaves. Hidden unit ``j`` of
an MLP is column ``j`` of the first kernel (``Groups(0)``), bias entry ``j``
(``Elements()``) and row ``j`` of the next kernel (``Groups(1)``), all labelled alike.

The maps (:mod:`optax_l1._operators`), the penalties, the target search, the metrics and
compaction read structures through the functions here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from optax_l1 import _checks, _masks, _tree

Axis = int | Sequence[int]


def normalize_axis(axis: Any, ndim: int, *, name: str = "axis") -> tuple[int, ...]:
    """Validates `axis` (int or tuple of ints) against an array of `ndim` dimensions."""
    axes = tuple(axis) if isinstance(axis, Sequence) and not isinstance(axis, str) else (axis,)
    try:
        if not axes or any(isinstance(a, (bool, np.bool_)) for a in axes):
            raise TypeError
        axes = tuple(operator.index(a) for a in axes)  # pyright: ignore[reportArgumentType]
    except TypeError:
        hint = _checks.static_args_hint("axis", axis, *axes)
        raise TypeError(
            f"`{name}` must be an int or a non-empty tuple of ints, got {axis!r}{hint}"
        ) from None
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"`{name}`={axis!r} does not exist for a leaf with {ndim} dimension(s)"
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` has repeated axes: {axis!r}")
    return tuple(sorted(out))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a Python int, got {value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value!r}")
    return int(value)


def check_one_axis(axis: Any) -> None:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"`axis` must be one int here, got {axis!r}")


def _check_couple(couple: Any) -> None:
    if couple is not None and not isinstance(couple, str):
        raise TypeError(f"`couple` must be a str label or None, got {couple!r}")


class Layout(NamedTuple):
    """A leaf seen as groups: reshaped to ``split``, a group is a slice over ``reduce``;
    ``origin[i]`` is the leaf axis that split axis ``i`` comes from (None: the same)."""

    split: tuple[int, ...]
    reduce: tuple[int, ...]
    origin: tuple[int, ...] | None = None

    @property
    def origins(self) -> tuple[int, ...]:
        return tuple(range(len(self.split))) if self.origin is None else self.origin

    @property
    def grid(self) -> tuple[int, ...]:
        """The shape of one value per group, broadcastable against ``split``."""
        return tuple(1 if i in self.reduce else n for i, n in enumerate(self.split))

    @property
    def groups(self) -> tuple[int, ...]:
        """The shape of the groups themselves (the reduced axes dropped)."""
        return tuple(n for i, n in enumerate(self.split) if i not in self.reduce)

    @property
    def group_size(self) -> int:
        return math.prod(self.split[i] for i in self.reduce)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Structure:
    """The base of every structure; on its own, a leaf's entries are one group each.

    Attributes:
      couple: a label; groups of leaves whose structures share it are one group each.
    """

    couple: str | None = None

    def __post_init__(self):
        _check_couple(self.couple)

    def layout(self, shape: tuple[int, ...]) -> Layout:
        return Layout(tuple(shape), ())

    def _split(self, shape: tuple[int, ...], axis: int, parts: tuple[int, ...]) -> Layout:
        """``shape`` with ``axis`` split into ``(shape[axis] // prod(parts), *parts)``."""
        ax = normalize_axis(axis, len(shape))[0]
        per = math.prod(parts)
        if shape[ax] % per:
            raise ValueError(
                f"{self!r}: axis {axis} of a leaf of shape {tuple(shape)} has length "
                f"{shape[ax]}, not a multiple of {per}"
            )
        split = (*shape[:ax], shape[ax] // per, *parts, *shape[ax + 1 :])
        origin = (*range(ax), *([ax] * (len(parts) + 1)), *range(ax + 1, len(shape)))
        return Layout(split, (), origin)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Elements(Structure):
    r"""Every entry is its own group (plain L1; the default).

    Examples:
      >>> import optax_l1
      >>> optax_l1.Elements().layout((3, 4))
      Layout(split=(3, 4), reduce=(), origin=None)
    """


@dataclasses.dataclass(frozen=True)
class Groups(Structure):
    r"""A group is the entries sharing every index outside ``axis`` (reduced over ``axis``).

    For a Dense kernel ``(in, out)``: ``Groups(0)`` makes output unit ``j``'s incoming
    weights (column ``j``) one group, ``Groups(1)`` input ``i``'s outgoing weights (row
    ``i``). A conv kernel ``(h, w, in, out)``: ``Groups((0, 1, 2))`` is one group per filter.

    Examples:
      >>> import optax_l1
      >>> optax_l1.Groups(0).layout((3, 4)).groups  # 4 groups (columns) of 3
      (4,)
    """

    axis: Axis

    def layout(self, shape: tuple[int, ...]) -> Layout:
        return Layout(tuple(shape), normalize_axis(self.axis, len(shape)))


@dataclasses.dataclass(frozen=True)
class Blocks(Structure):
    r"""Blocks of ``size`` consecutive entries along ``axis`` (its length a multiple of it).

    Also the blocks of N:M sparsity (:func:`n_of_m_projection`): ``Blocks(4, axis=0)`` on a
    Dense kernel ``(in, out)`` runs along the matmul's reduction axis.

    Examples:
      >>> import optax_l1
      >>> optax_l1.Blocks(4, axis=0).layout((8, 3))
      Layout(split=(2, 4, 3), reduce=(1,), origin=(0, 0, 1))
    """

    size: int
    axis: int

    def __post_init__(self):
        super().__post_init__()
        _positive_int("size", self.size)
        check_one_axis(self.axis)

    def layout(self, shape: tuple[int, ...]) -> Layout:
        ax = normalize_axis(self.axis, len(shape))[0]
        lay = self._split(shape, ax, (self.size,))
        return lay._replace(reduce=(ax + 1,))


@dataclasses.dataclass(frozen=True)
class Heads(Structure):
    r"""One group per attention head: ``axis`` is ``parts x num_heads x head_dim`` long.

    A query, key or value kernel ``(d_model, heads * head_dim)`` is ``Heads(h, axis=1)``;
    the output kernel ``(heads * head_dim, d_model)`` is ``Heads(h, axis=0)``; a fused
    q/k/v kernel ``(d_model, 3 * heads * head_dim)`` laid out as ``(3, heads, head_dim)`` is
    ``Heads(h, axis=1, parts=3)`` (head ``i`` of q, k and v is one group). A kernel already
    shaped ``(d_model, heads, head_dim)`` (Flax's ``DenseGeneral``) is ``Heads(h, axis=1)``
    (``head_dim`` 1 on that axis). Give the four projections one ``couple`` label to make a
    head one group across them.

    Examples:
      >>> import optax_l1
      >>> optax_l1.Heads(4, axis=1, parts=3).layout((16, 48)).groups  # 4 heads
      (4,)
    """

    num_heads: int
    axis: int
    parts: int = 1

    def __post_init__(self):
        super().__post_init__()
        _positive_int("num_heads", self.num_heads)
        _positive_int("parts", self.parts)
        check_one_axis(self.axis)

    def layout(self, shape: tuple[int, ...]) -> Layout:
        ax = normalize_axis(self.axis, len(shape))[0]
        per = self.parts * self.num_heads
        if shape[ax] % per:
            raise ValueError(
                f"{self!r}: axis {self.axis} of a leaf of shape {tuple(shape)} has length "
                f"{shape[ax]}, not a multiple of parts x num_heads = {per}"
            )
        split = (*shape[:ax], self.parts, self.num_heads, shape[ax] // per, *shape[ax + 1 :])
        origin = (*range(ax), ax, ax, ax, *range(ax + 1, len(shape)))
        keep = ax + 1  # the head index
        return Layout(split, tuple(i for i in range(len(split)) if i != keep), origin)


# ----------------------------------------------------------------------------- operations


_UNROLL = 8  # a reduced axis this short is summed slice by slice (fuses on XLA's CPU)


def sq_norms(layout: Layout, x: jax.Array) -> jax.Array:
    """The squared 2-norm of each group of ``x`` (shape ``layout.grid``).

    A single short reduced axis (a block of up to 8) is summed as a static sum of slices,
    which XLA fuses into one pass (a reduction over a short middle axis measured 1.25x
    slower on CPU).
    """
    x = x.reshape(layout.split)
    sq = jnp.real(x * jnp.conj(x))
    if len(layout.reduce) == 1 and 0 < layout.split[layout.reduce[0]] <= _UNROLL:
        ax = layout.reduce[0]
        parts = [lax.slice_in_dim(sq, i, i + 1, axis=ax) for i in range(layout.split[ax])]
        return functools.reduce(jnp.add, parts)
    return jnp.sum(sq, axis=layout.reduce, keepdims=True)


def safe_sqrt(sq: jax.Array) -> jax.Array:
    """``sqrt`` with a finite gradient at 0 (a NaN stays NaN)."""
    zero = sq == 0
    return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, sq)))


def expand(layout: Layout, values: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """One value per group (``layout.grid``) broadcast back to a leaf of ``shape``."""
    return jnp.broadcast_to(values, layout.split).reshape(shape)


def _hidden_or_leaf(x: Any) -> bool:
    """None or an ``optax.MaskedNode`` (the leaves outside an ``optax.masked`` or
    ``multi_transform`` partition): a leaf the transform does not see."""
    return x is None or isinstance(x, optax.MaskedNode)


def _check_coupled_visible(name: str, structure: Any, tree: Any) -> None:
    """Raises when a coupled label has leaves both in ``tree`` and on a part of it with no
    leaf (masked out by ``optax.masked`` / ``multi_transform``): its groups would be split
    silently. A label wholly in the hidden part is another transform's business."""
    is_leaf = lambda s: s is None or isinstance(s, Structure)  # noqa: E731
    seen: dict[bool, set[str]] = {True: set(), False: set()}

    def note(s: Any, sub: Any) -> None:
        if isinstance(s, Structure) and s.couple is not None:
            seen[not jax.tree.leaves(sub, is_leaf=_tree.is_none)].add(s.couple)

    try:
        jax.tree.map(note, structure, tree, is_leaf=is_leaf)
    except (TypeError, ValueError):
        return  # not a prefix of tree: broadcast_prefix says so, naming the argument
    split = seen[True] & seen[False]
    if split:
        raise ValueError(
            f"`{name}`: the leaves labelled `couple`={sorted(split)[0]!r} are split by a mask "
            "(optax.masked / multi_transform): a coupled group must see all its leaves; put "
            "them in the same part or drop the label there"
        )


def resolve(name: str, structure: Any, tree: Any, selected: Sequence[bool]) -> list[Any]:
    """One :class:`Structure` per leaf of ``tree`` (None for unselected leaves).

    ``structure`` is a :class:`Structure` (every selected leaf), a pytree prefix of
    structures (None: the leaf is not regularized), or a callable ``params -> such a tree``.
    """
    if isinstance(structure, type):  # Elements for Elements(): called with params
        raise TypeError(
            f"`{name}` must be a Structure instance (e.g. {structure.__name__}(...)), a "
            f"pytree prefix of them or a callable params -> that, got the class {structure!r}"
        )
    if callable(structure) and not isinstance(structure, Structure):
        structure = structure(tree)
        if structure is None:  # a callable missing its return: nothing would be regularized
            raise TypeError(
                f"`{name}` callable returned None; it must return a Structure or a pytree "
                "prefix of them"
            )
    if not isinstance(structure, Structure):
        _check_coupled_visible(name, structure, tree)
    is_leaf = lambda s: s is None or isinstance(s, Structure)  # noqa: E731
    if isinstance(structure, Structure):
        flat = [structure] * len(selected)
    else:
        flat = _tree.broadcast_prefix(name, structure, tree)
        if not all(is_leaf(s) for s in flat):
            bad = next(s for s in flat if not is_leaf(s))
            raise TypeError(
                f"`{name}` must be a Structure, a pytree prefix of Structures (or None), or "
                f"a callable returning one; got a leaf {bad!r}"
            )
    if not isinstance(structure, Structure):
        # A label with leaves both regularized and not (masked out, None, not a float
        # array) would be split; one wholly outside the selection is simply not regularized.
        labels = [
            (s.couple, sel)
            for s, sel in zip(flat, selected, strict=True)
            if s is not None and s.couple is not None
        ]
        split = {c for c, sel in labels if sel} & {c for c, sel in labels if not sel}
        if split:
            raise ValueError(
                f"`{name}`: a leaf labelled `couple`={sorted(split)[0]!r} is not regularized "
                "(masked out, None or not a float array) while others are: a coupled group "
                "must see all its leaves; drop the label there or include the leaf"
            )
    return [s if sel else None for s, sel in zip(flat, selected, strict=True)]


def layouts(
    structures: Sequence[Any],
    leaves: Sequence[Any],
    names: Sequence[str] | None = None,
    arg: str = "structure",
) -> list[Layout | None]:
    """Each leaf's layout under its structure (None where there is none); a structure that
    does not fit its leaf raises, naming the leaf (``names``: their paths)."""
    out = []
    for i, (s, x) in enumerate(zip(structures, leaves, strict=True)):
        if s is None or x is None:
            out.append(None)
            continue
        try:
            out.append(s.layout(tuple(jnp.shape(x))))
        except ValueError as e:
            where = f"leaf {names[i]!r}" if names is not None else f"leaf {i}"
            raise ValueError(
                f"`{arg}` at {where}: {e} (leave the leaf out with `mask=`, e.g. "
                "`optax_l1.kernel_mask`)"
            ) from None
    return out


def leaf_names(tree: Any) -> list[str]:
    """The '/'-joined path of every leaf of ``tree`` (None leaves included)."""
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_tree.is_none)[0]
    return [_masks.path_name(p) for p, _ in flat]


def check_coupled(structures: Sequence[Any], lays: Sequence[Layout | None]) -> None:
    """Raises unless the leaves of each ``couple`` label have the same groups."""
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
    for s, lay in zip(structures, lays, strict=True):
        if s is None or s.couple is None or lay is None:
            continue
        first = shapes.setdefault(s.couple, (lay.groups, s))
        if first[0] != lay.groups:
            raise ValueError(
                f"coupled structures (`couple`={s.couple!r}) must give the same number of "
                f"groups: {first[1]!r} gives {first[0]}, {s!r} gives {lay.groups}"
            )


def coupled_sq_norms(
    structures: Sequence[Any], lays: Sequence[Layout | None], leaves: Sequence[Any]
) -> list[jax.Array | None]:
    """Each leaf's squared group norms (``grid`` shape), summed over coupled leaves."""
    own = [None if lay is None else sq_norms(lay, x) for lay, x in zip(lays, leaves, strict=True)]
    check_coupled(structures, lays)
    totals: dict[str, jax.Array] = {}
    for s, lay, sq in zip(structures, lays, own, strict=True):
        if s is None or s.couple is None or lay is None or sq is None:
            continue
        flat = sq.reshape(lay.groups)
        totals[s.couple] = totals[s.couple] + flat if s.couple in totals else flat
    return [
        sq if s is None or s.couple is None or lay is None else totals[s.couple].reshape(lay.grid)
        for s, lay, sq in zip(structures, lays, own, strict=True)
    ]


class Grouped(NamedTuple):
    """A tree's leaves seen through their structures (None where a leaf has none)."""

    structures: list[Any]
    leaves: list[Any]  # in their compute dtype (at least float32)
    layouts: list[Layout | None]
    sq_norms: list[jax.Array | None]  # coupled squared group norms, ``layout.grid`` shape


def grouped(structure: Any, tree: Any, selected: Sequence[bool]) -> Grouped:
    """Resolves ``structure`` on the ``selected`` leaves of ``tree`` and computes their
    (coupled) squared group norms in at least float32: what the group prox and penalty
    read."""
    leaves = jax.tree.leaves(tree, is_leaf=_tree.is_none)
    sts = resolve("structure", structure, tree, selected)
    zs = [_tree.widened(x) if ok else None for x, ok in zip(leaves, selected, strict=True)]
    lays = layouts(sts, zs, leaf_names(tree))
    return Grouped(sts, zs, lays, coupled_sq_norms(sts, lays, zs))


def group_counts(structures: Sequence[Any], lays: Sequence[Layout | None]) -> int:
    """The number of distinct groups: coupled groups counted once."""
    seen: set[str] = set()
    total = 0
    for s, lay in zip(structures, lays, strict=True):
        if lay is None or (s.couple is not None and s.couple in seen):
            continue
        if s.couple is not None:
            seen.add(s.couple)
        total += math.prod(lay.groups)
    return total


def path_structure(rules: Any) -> Callable[[Any], Any]:
    r"""A ``structure`` callable that gives each leaf a structure by its path.

    ``rules`` maps regular expressions to structures (a dict, or a sequence of pairs, in
    order); a leaf's '/'-joined path (as in :func:`sparsity_report`) takes the structure
    of the first expression that :func:`re.search` finds in it, and None (not
    regularized) when none does. A callable works inside :func:`optax.masked` and
    :func:`optax.multi_transform`, where a pytree of structures would not match the tree.
    A coupled group must lie in one part: a label with leaves both seen and unseen by the
    transform (masked out by ``mask``, or by :func:`optax.masked` / ``multi_transform``
    with a mask given leaf by leaf) raises a ValueError; a mask or label given to a whole
    sub-tree hides its leaves as one node, whose paths cannot be matched (not detected):
    keep a coupled group's leaves in one part. Under :func:`optax.inject_hyperparams`, pass
    ``static_args=('structure',)`` (a TypeError says so otherwise).

    Args:
      rules: ``{regex: Structure}`` or ``[(regex, Structure), ...]``.

    Returns:
      A function ``params -> pytree of Structure or None``.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> units = optax_l1.path_structure({
      ...     r"^fc1/kernel$": optax_l1.Groups(0, couple="h"),
      ...     r"^fc1/bias$": optax_l1.Elements(couple="h"),
      ...     r"^fc2/kernel$": optax_l1.Groups(1, couple="h"),
      ... })
      >>> params = {"fc1": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
      ...           "fc2": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
      >>> units(params)["fc2"]
      {'bias': None, 'kernel': Groups(couple='h', axis=1)}
    """
    if not isinstance(rules, (dict, list, tuple)):
        raise TypeError(
            f"`rules` must be a dict (or a sequence of pairs) of regular expressions to "
            f"Structures, got {rules!r}"
        )
    pairs = list(rules.items()) if isinstance(rules, dict) else list(rules)
    if not all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in pairs):
        raise TypeError(f"`rules` must hold (regular expression, Structure) pairs, got {rules!r}")
    compiled = []
    for pattern, structure in pairs:
        regex = _checks.check_regex("rules", pattern)
        if regex is None or not isinstance(structure, Structure):
            raise TypeError(
                f"`rules` must map regular expressions to Structures, got {pattern!r}: "
                f"{structure!r}"
            )
        compiled.append((regex, structure))

    def assign(params: Any) -> Any:
        if isinstance(params, jax.Array) and params.ndim == 0 and not _tree.is_inexact(params):
            raise TypeError(
                "a `structure` callable was called with a step count: under "
                "`optax.inject_hyperparams`, pass `static_args=('structure',)` (it treats a "
                "callable argument as a schedule otherwise)"
            )

        def leaf(path, x):  # also where optax.masked hides the leaf: a coupled one raises
            if x is None:
                return None
            name = _masks.path_name(path)
            return next((s for r, s in compiled if r.search(name)), None)

        return jax.tree_util.tree_map_with_path(leaf, params, is_leaf=_hidden_or_leaf)

    return assign
