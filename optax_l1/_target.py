r"""Target sparsity: the fraction of zeros a ramp asks for, chosen by magnitude each step.

The transform is a composition of small pure pieces: :func:`_phase` (where the ramp is),
:func:`_threshold` (the search for the threshold that gives the ramp's zeros),
:func:`_shrink` (hard or soft thresholding), :func:`_hold_support` (the support held between
searches and after the ramp) and :func:`_next_state` (the bookkeeping), applied through the
one proximal step :func:`optax_l1._step.prox_update`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from optax_l1 import (
    _checks,
    _inner,
    _operators,
    _select,
    _step,
    _structures,
    _transforms,
    _tree,
)

Ramp = Literal["cubic", "linear"]
Hold = Literal["support", "track"]
_RAMPS: tuple[str, ...] = ("cubic", "linear")
_HOLDS: tuple[str, ...] = ("support", "track")
Shrink = Literal["hard", "soft"]
_SHRINKS: tuple[str, ...] = ("hard", "soft")
Allocation = Literal["global", "uniform", "erk"] | _structures.Blocks
_ALLOCATIONS: tuple[str, ...] = ("global", "uniform", "erk")
_PRECONDITIONER_EPS = 1e-8
_NAME = "sparsity_target"


class SparsityTargetState(NamedTuple):
    r"""State of :func:`sparsity_target`, ready to log.

    Attributes:
      count: the number of updates applied so far.
      threshold: the score threshold :math:`\tau` of the last search (0 before the first);
        weights scoring at most it were zeroed. With ``shrink="soft"``,
        ``threshold / learning_rate`` is the L1 strength that search amounted to.
      sparsity: the fraction of the regularized entries the last search zeroed (ties at the
        threshold included), counted by the search itself; the support is held between
        searches, so this is the fraction of exact zeros, except for a survivor that lands on
        exactly 0 (rare in float32, possible for bfloat16 params); a sampled search
        (``quantile="sample"`` on :math:`2^{20}` or more entries, during the ramp) logs the
        sample's estimate instead. 0 before the first search.
      scheduled: the ramp's sparsity :math:`s_t` at the last update (what ``sparsity`` was
        steered to; ``target`` once the ramp is over). Read by the next update: after the
        ramp, a value that differs from the ramp's now (a ``target`` or ``ramp_steps`` set
        at run time) makes that update search once more; code that sets ``count`` by hand
        sets this to the ramp's value at that count too.
      latent: with ``latent=True``, the dense weights (float32, a tree like params with None
        where nothing is regularized): the params, except that a zeroed weight keeps taking
        the optimizer's updates here (from ``latent_until`` of the ramp on, the next step
        reads a zeroed weight's entry as 0: it holds at most one update); else None (also
        after :func:`drop_latent`).
      inner_state: the state of ``optimizer``, or :class:`optax.EmptyState` without one.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    threshold: jax.Array
    sparsity: jax.Array
    scheduled: jax.Array
    latent: Any
    inner_state: Any


class _Config(NamedTuple):
    """The static settings of one :func:`sparsity_target` (validated)."""

    target: Any
    ramp_steps: Any
    begin_step: Any
    ramp: Any  # "cubic", "linear" or the exponent e
    hold: str
    update_every: Any
    smoothing: Any
    shrink: str
    quantile: _select.Method
    latent: bool
    structure: Any
    allocation: Any  # one of _ALLOCATIONS, or a Blocks (N:M)
    latent_until: float


class _Phase(NamedTuple):
    """Where the ramp is at one count."""

    scheduled: jax.Array  # the ramp's sparsity s_t
    due: jax.Array  # a threshold search runs at this step
    keep: jax.Array  # no search: the support of the last search is held
    last: jax.Array  # the last search before the support is frozen
    frozen: jax.Array  # past that last search: no search runs again (hold="support")


# ----------------------------------------------------------------------------- pieces


def _ramp(count: jax.Array, target: Any, ramp_steps: Any, begin_step: Any, shape: Any):
    """The scheduled sparsity at ``count``: 0 up to ``begin_step``, ``target`` from the end;
    in between ``1 - (1 - frac)^e`` of it, e = 3 for ``"cubic"``, 1 for ``"linear"``, else
    ``shape`` itself."""
    t = count.astype(jnp.float32) - jnp.asarray(begin_step, jnp.float32)
    frac = jnp.clip(t / jnp.asarray(ramp_steps, jnp.float32), 0.0, 1.0)
    if not (isinstance(shape, str) and shape == "linear"):
        e = 3 if isinstance(shape, str) else shape  # "cubic": Zhu & Gupta (2017), eq. (1)
        whole = _checks.scalar_value(e)
        if whole is not None and whole == int(whole) and whole <= 64:  # known now: 3.0 is 3
            frac = 1.0 - lax.integer_pow(1.0 - frac, int(whole))
        else:  # the exponent, known at run time (inject_hyperparams)
            frac = 1.0 - (1.0 - frac) ** jnp.asarray(e, jnp.float32)
    return jnp.asarray(target, jnp.float32) * frac


def _phase(count: jax.Array, cfg: _Config, previous: jax.Array) -> _Phase:
    """The ramp's value; whether this step searches, or holds the last search's support.

    Searches run every ``update_every`` steps from ``begin_step`` and at the ramp's end (and
    on after it with ``hold="track"``); between searches, once a search has run, zero
    weights stay zero and the others take the optimizer's update unshrunk. A ramp at 0 holds
    nothing (a target set to 0 at run time releases the support, as a search of 0 would).
    ``previous`` is the ramp's value at the last step: after the ramp it changes only when a
    hyperparameter set at run time moves it (a shorter ramp that ended behind the count, a
    new target), and then the frozen support is searched once more, so it is never left
    where the old ramp stopped.
    """
    begin = jnp.asarray(cfg.begin_step, jnp.int32)
    every = jnp.asarray(cfg.update_every, jnp.int32)
    ramp = jnp.asarray(cfg.ramp_steps, jnp.int32)
    end = begin + ramp
    scheduled = _ramp(count, cfg.target, cfg.ramp_steps, cfg.begin_step, cfg.ramp)
    if cfg.hold == "support":
        moved = (count > end) & (scheduled != previous)
        frozen, last = (count > end) & ~moved, (count == end) | moved
    else:
        frozen = last = jnp.asarray(False)
    on_grid = ((count - begin) % every == 0) | last
    due = on_grid & (count >= begin) & ~frozen & (scheduled > 0)
    first = begin + jnp.minimum(every, ramp)  # the first count with a search (no overflow)
    return _Phase(scheduled, due, ~due & (count > first) & (scheduled > 0), last, frozen)


def _metric(a: Any) -> Any:
    """The preconditioner of a second moment ``a`` (None: no metric)."""
    return None if a is None else _inner.moment_scale(a, _PRECONDITIONER_EPS)


def _score(x: jax.Array, d: jax.Array | None, dtype: Any) -> jax.Array:
    """A weight's score: ``|z|``, times the preconditioner ``d`` when there is one."""
    a = jnp.abs(x).astype(dtype)
    return a if d is None else a * d


class _Units(NamedTuple):
    """How the search splits the regularized groups: one threshold per unit.

    ``of_leaf[i]`` is the unit whose threshold leaf ``i`` uses (None: not regularized);
    ``counted[i]`` whether its scores enter the search (False for the second and later
    leaves of a coupled group); ``sizes[u]`` the groups of unit ``u``; ``ratios[u]`` its
    share of the ramp's sparsity (1 for ``"global"`` and ``"uniform"``).
    """

    of_leaf: list[int | None]
    counted: list[bool]
    sizes: list[int]
    ratios: list[float]


def _members(leaves: list[Any], units: _Units, u: int) -> list[Any]:
    pairs = zip(leaves, units.of_leaf, units.counted, strict=True)
    return [x for x, v, c in pairs if c and v == u]


def _packed_scores(
    ws: list[jax.Array], moments: list[Any], dtype: Any, method: str
) -> list[_select.Source]:
    """The scores of entries ``ws`` (second moments ``moments``, None each without one), as
    :class:`optax_l1._select.Scored`: computed where the search reads them, chunk by chunk,
    from the params (or z) and the optimizer's moments, so no full-size array of scores is
    written. The small leaves are concatenated *before* they are scored: one concatenation
    of the raw values and one scoring of it, instead of a scoring fusion per leaf feeding
    the concatenation (a tree of thousands of small kernels compiles faster). Large leaves
    are never concatenated (a sharded leaf is not gathered). ``"bisect"`` packs nothing:
    its counts are reductions of each leaf where it lies, so no leaf is ever gathered."""

    def score(w, a=None):
        return _score(w, _metric(a), dtype)

    if not ws:
        return []
    ws = [jnp.asarray(w) for w in ws]
    packed = [()] * len(ws)
    if method != "bisect":
        packed = _select.packed_shapes(ws)
        ws = _select.pack_small(ws)
        moments = [None] * len(ws) if moments[0] is None else _select.pack_small(moments)
    return [
        _select.Scored(score, (w,) if a is None else (w, a), shapes)
        for w, a, shapes in zip(ws, moments, packed, strict=True)
    ]


def _threshold(
    scores: Callable[[int, Any], list[_select.Source]],
    units: _Units,
    dtype: Any,
    phase: _Phase,
    state: SparsityTargetState,
    cfg: _Config,
    groups: _Groups | None = None,
) -> tuple[jax.Array, jax.Array, list[Any] | None]:
    """The threshold of each unit on a due search and the fraction of groups at most it
    (the zeros it gives), else the last search's. A unit's threshold is the k-th smallest of
    its scores, ``k = floor(s_t r n)`` (moving average ``smoothing`` with the previous
    search's, capped at that k-th score, except on the last search); with ``k = 0``
    nothing is zeroed (``-inf``). A NaN score is not zeroed (it stays visible in the
    weights).

    ``scores(u, grids)`` (unit ``u``'s score arrays; ``grids``: the group scores, from
    ``groups.grids()``, or None) is called inside the search's branch, so a step without a
    search computes no score, entry or group. With ``groups``, the search also gives each
    group leaf's marks (``groups.marks(tau, grids)``: a bool per group, True where zeroed);
    a step without a search gives all-False marks (``groups.unmarked()``). The marks are
    None without ``groups``. The zero count comes with the selection (one more pass only
    with ``smoothing``).
    """
    n = sum(units.sizes)
    if n >= 2**31:
        raise ValueError(f"`sparsity_target` counts in int32: {n} regularized groups is too many")
    smoothed = not _checks.is_literal_zero(cfg.smoothing)

    def one(leaves: list[_select.Source], size: int, ratio: float, previous: jax.Array):
        # At most size - 1 zeros: a target just under 1 may round up to 1 in float32.
        k = jnp.minimum(jnp.floor(phase.scheduled * ratio * size).astype(jnp.int32), size - 1)
        kth, at_most = _kth(leaves, jnp.maximum(k, 1), phase, cfg.quantile)
        # A non-finite k-th score (more NaN or inf scores than survivors) zeroes nothing: the
        # faulty entries stay visible, and the count and the threshold say so (0 zeroed).
        # A count of -1 is a fault of the count itself: the threshold is NaN (the update too).
        ok = (k > 0) & jnp.isfinite(kth)
        miscounted = (k > 0) & (at_most < 0)
        if not smoothed:
            tau = jnp.where(miscounted, jnp.nan, jnp.where(ok, kth, -jnp.inf))
            return tau, jnp.where(ok, at_most, 0)
        beta = jnp.where(phase.last, 0.0, jnp.asarray(cfg.smoothing, dtype)).astype(dtype)
        tau = beta * previous.astype(dtype) + (1 - beta) * jnp.where(ok, kth, 0)
        # Never above this search's k-th score: smoothing may lag the ramp, never pass it
        # (a zero it added past k_t could not come back once the copy is gone).
        tau = jnp.minimum(tau, jnp.where(ok, kth, 0)).astype(dtype)
        tau = jnp.where(miscounted, jnp.nan, jnp.where(ok, tau, -jnp.inf))
        counts = (jnp.sum(_select.values(x) <= tau, dtype=jnp.int32) for x in leaves)
        return tau, sum(counts, jnp.int32(0))

    def search():
        grids = None if groups is None else groups.grids()
        previous = jnp.reshape(state.threshold, (-1,))
        found = [
            one(scores(u, grids), size, r, previous[u])
            for u, (size, r) in enumerate(zip(units.sizes, units.ratios, strict=True))
        ]
        tau = jnp.stack([t for t, _ in found]).reshape(jnp.shape(state.threshold))
        zeroed = sum((z for _, z in found), jnp.int32(0))
        marks = None if groups is None else groups.marks(tau, grids)
        return tau, zeroed.astype(jnp.float32) / n, marks

    def held():
        marks = None if groups is None else groups.unmarked()
        return jnp.full(jnp.shape(state.threshold), -jnp.inf, dtype), state.sparsity, marks

    return lax.cond(phase.due, search, held)


def _kth(leaves: list[_select.Source], k: jax.Array, phase: _Phase, method: _select.Method):
    """The k-th smallest score and the count at most it, by ``method``; with ``"sample"``
    the ramp's last search is exact (so the frozen support is on target)."""
    if method != "sample" or not _select.samples(leaves):
        return _select.kth_smallest(leaves, k, method)
    return lax.cond(
        phase.last,
        lambda: _select.kth_smallest(leaves, k, "radix"),
        lambda: _select.kth_smallest(leaves, k, "sample"),
    )


class _Groups(NamedTuple):
    """The group leaves of a search: ``grids()`` their group scores per leaf (None at an
    entry leaf), computed in the search's branch only; ``marks(tau, grids)`` a bool per group
    of each group leaf, True where the search zeroes it; ``unmarked()`` the same shapes,
    all False (a step without a search)."""

    grids: Callable[[], list[Any]]
    marks: Callable[[jax.Array, Any], list[Any]]
    unmarked: Callable[[], list[Any]]


def _shrink(
    x: jax.Array,
    w: jax.Array,
    d: jax.Array | None,
    tau: jax.Array,
    mode: str,
    group: Any = None,
) -> jax.Array:
    """Zero ``x`` where the score of ``w`` is at most ``tau`` (as the search counted); the
    survivors kept as they are (``"hard"``) or soft-thresholded at ``tau / d`` (``"soft"``,
    where ``w`` is ``x``). ``group``: None, or a group structure's (layout, marks): a bool
    per group, True where the search zeroed it (:class:`_Groups`)."""
    if group is None:
        dead = _score(w, d, tau.dtype) <= tau
    else:
        dead = _structures.expand(group[0], group[1], jnp.shape(x))
    if mode == "hard":
        return _tree.zero_where(dead, x)
    tau = jnp.maximum(tau, 0)  # -inf: nothing zeroed, nothing shrunk (NaN stays NaN)
    t = tau if d is None else tau / d
    y = _operators.soft_threshold_tree(x, t.astype(jnp.real(x).dtype))
    return y if d is None else _tree.zero_where(dead, y)


def _erk_ratios(shapes: list[tuple[int, ...]], sizes: list[int], target: float) -> list[float]:
    """Each unit's share of ``target`` under Erdos-Renyi-Kernel allocation (Evci et al.
    2020): density proportional to ``sum(shape) / prod(shape)`` of its leaf (1 for a
    scalar), the densest capped at 1 and the rest rescaled so that the zeros are
    ``target`` of all ``sizes`` (entries, or groups with a group structure)."""
    raw = [sum(sh) / math.prod(sh) if sh else 1.0 for sh in shapes]
    dense: set[int] = set()
    scale = 0.0
    while True:
        free = [i for i in range(len(sizes)) if i not in dense]
        budget = (1 - target) * sum(sizes) - sum(sizes[i] for i in dense)
        weight = sum(raw[i] * sizes[i] for i in free)
        scale = budget / weight if weight > 0 else 0.0
        over = [i for i in free if scale * raw[i] > 1]
        if not over:
            break
        dense.update(over)
    density = [1.0 if i in dense else scale * raw[i] for i in range(len(sizes))]
    return [(1 - dens) / target if target > 0 else 1.0 for dens in density]


def _units(sts: list[Any], lays: list[Any], shapes: list[Any], cfg: _Config) -> _Units:
    """The search's units under ``cfg.allocation`` (static: from shapes and structures)."""
    of_leaf: list[int | None] = []
    sizes: list[int] = []
    label_unit: dict[str, int] = {}
    counted: list[bool] = []
    for st, lay in zip(sts, lays, strict=True):
        if lay is None:
            of_leaf.append(None)
            counted.append(False)
            continue
        if st.couple is not None and st.couple in label_unit:
            of_leaf.append(label_unit[st.couple])
            counted.append(False)
            continue
        u = 0 if cfg.allocation == "global" else len(sizes)
        if st.couple is not None:
            label_unit[st.couple] = u
        if u == len(sizes):
            sizes.append(0)
        sizes[u] += math.prod(lay.groups)
        of_leaf.append(u)
        counted.append(True)
    ratios = [1.0] * len(sizes)
    if cfg.allocation == "erk" and sizes:
        if label_unit:
            raise ValueError("`allocation='erk'` is per leaf: it takes no coupled structures")
        target = _checks.scalar_value(cfg.target)
        if target is None:
            raise ValueError("`allocation='erk'` needs a concrete `target` (it sets the shares)")
        kept = [tuple(sh) for sh, c in zip(shapes, counted, strict=True) if c]
        ratios = _erk_ratios(kept, sizes, target)
    return _Units(of_leaf, counted, sizes, ratios)


def _target_prox(
    sources: list[Any] | None,
    moments: list[Any] | None,
    sts: list[Any],
    phase: _Phase,
    state: SparsityTargetState,
    cfg: _Config,
) -> _step.ProxMap:
    """The map of one step: ``z -> (thresholded z, (tau, zeroed fraction, z))``.

    The search scores ``z``, or ``sources`` (the params before this step's update) when
    given: a buffer that exists already, so that a step without a search writes no
    full-size temporary for the search to read. ``moments``: the optimizer's second moment
    per leaf (the metric), or None. ``sts``: each leaf's structure.
    """

    def prox(z, step, count):
        del step, count
        z_leaves, z_def = jax.tree.flatten(z, is_leaf=_tree.is_none)
        a_leaves = [None] * len(z_leaves) if moments is None else moments
        w_leaves = z_leaves if sources is None else sources
        # A zero-size leaf has nothing to count.
        live = [
            s if x is not None and jnp.size(x) else None for s, x in zip(sts, z_leaves, strict=True)
        ]
        if moments is not None and any(a is None for a, s in zip(a_leaves, live, strict=True) if s):
            raise ValueError(
                "`sparsity_target`: `optimizer` keeps no second moment for some regularized "
                "leaves (e.g. they are masked out of an optax.multi_transform); exclude them "
                "with `mask`"
            )
        if isinstance(cfg.allocation, _structures.Blocks):
            return _n_of_m_prox(z_def, z_leaves, w_leaves, a_leaves, live, phase, state, cfg)
        lays = _structures.layouts(live, w_leaves, _structures.leaf_names(z))
        shapes = [
            None if lay is None else jnp.shape(w) for w, lay in zip(w_leaves, lays, strict=True)
        ]
        units = _units(live, lays, shapes, cfg)
        if not units.sizes:
            return z, (state.threshold, state.sparsity, z)
        _check_shrink(live, cfg)
        sdt = _score_dtype(w_leaves, lays)
        plain = [lay is None or _plain(st) for st, lay in zip(live, lays, strict=True)]
        groups = (
            None
            if all(plain)
            else _groups(live, lays, plain, (w_leaves, a_leaves), sdt, units, cfg)
        )
        scores = _unit_scores(units, plain, (w_leaves, a_leaves), sdt, cfg.quantile)
        tau, zeroed, marks = _threshold(scores, units, sdt, phase, state, cfg, groups)
        leaves = zip(z_leaves, w_leaves, a_leaves, _per_leaf(tau, units, cfg), lays, strict=True)
        marks = marks or [None] * len(z_leaves)
        new = [_leaf_step(*leaf, m, cfg.shrink) for leaf, m in zip(leaves, marks, strict=True)]
        return z_def.unflatten(new), (tau, zeroed, z)

    return prox


def _leaf_step(x, w, a, tau, lay, marks, shrink: str) -> Any:
    """One leaf's thresholded ``x``: entries scored in the metric of ``a``; a group leaf
    reads its marks; not regularized (or zero-size): ``x`` as it is."""
    if x is None or lay is None:
        return x
    if marks is None:
        return _shrink(x, w, _metric(a), tau, shrink)
    return _shrink(x, w, None, tau, shrink, (lay, marks))


def _n_of_m_prox(z_def, z_leaves, w_leaves, a_leaves, live, phase, state, cfg: _Config):
    """Block allocation (N:M): in every block of ``m`` along the axis, the
    ``floor(s_t m)`` lowest-scoring entries are zeroed on a due search (the threshold
    logged is that count); a held step returns ``z`` (the support is held outside). The
    ranks run on a due step only (one ``lax.cond`` over all blocked leaves), so a held
    step between searches (``update_every > 1``) costs what the unstructured one does
    (``a_leaves``: the second moments, the metric computed in the branch too)."""
    blocks = cfg.allocation
    if not all(_plain(s) for s in live):
        raise ValueError("a `Blocks` allocation (N:M) zeroes entries: give no group `structure`")
    _check_blocks_fit(blocks, live, w_leaves, _structures.leaf_names(z_def.unflatten(z_leaves)))
    # A relative slack (16 float32 ulps) for the rounding of target * m: an absolute 1e-4
    # zeroed one more entry per block mid-ramp where s_t m was just under a whole number.
    zeros = phase.scheduled * blocks.size
    k = jnp.floor(zeros * (1 + 2.0**-20)).astype(jnp.int32)
    ranked = [(w, a) for w, a, st in zip(w_leaves, a_leaves, live, strict=True) if st]
    if not ranked:
        return z_def.unflatten(z_leaves), (
            state.threshold,
            state.sparsity,
            z_def.unflatten(z_leaves),
        )

    def rank():
        return [
            _n_of_m_packed(_score(w, _metric(a), _n_of_m_dtype(w)), blocks.size - k, blocks)
            for w, a in ranked
        ]

    held = [jnp.shape(w) for w, _ in ranked]
    packed = lax.cond(phase.due, rank, lambda: _all_kept(held, blocks))
    n, zeros, new, i = 0, jnp.int32(0), [], 0
    for x, st in zip(z_leaves, live, strict=True):
        if st is None:
            new.append(x)
            continue
        (code, kept), i = packed[i], i + 1
        keep = _n_of_m_unpacked(code, blocks, tuple(jnp.shape(x)))
        new.append(_tree.zero_where(phase.due & ~keep, x))
        size = int(jnp.size(x))
        n, zeros = n + size, zeros + jnp.where(phase.due, size - kept, 0)
    zeroed = jnp.where(phase.due, zeros.astype(jnp.float32) / n, state.sparsity)
    tau = jnp.where(phase.due, k.astype(jnp.float32), -jnp.inf)
    return z_def.unflatten(new), (tau, zeroed, z_def.unflatten(z_leaves))


def _n_of_m_dtype(w: Any) -> Any:
    """The real dtype the scores of ``w`` are computed in."""
    return jnp.real(jnp.zeros((), _tree.compute_dtype(jnp.result_type(w)))).dtype


def _n_of_m_packed(score: jax.Array, n: jax.Array, blocks: Any) -> tuple[jax.Array, jax.Array]:
    """The keep pattern of the ``n`` best scores of each block, and the number kept. The
    pattern is one small code per block (blocks up to 32; wider blocks: the full mask):
    the count reads the codes, and the new params read one code per block, not their
    neighbours (in place). The count sums the set bits over the first axis in 16 bits
    where they fit (XLA:CPU writes a reduction's converted input out first: the narrower
    the cheaper), then in int32."""
    m, axis = blocks.size, blocks.axis
    if m > _operators.CODE_BITS:
        keep = _operators.n_of_m_keep(score, n, m, axis)
        return keep, jnp.sum(keep, dtype=jnp.int32)
    codes = _operators.n_of_m_codes(score, n, m, axis)
    narrow = codes.shape[0] * m < 2**16
    per = jnp.sum(lax.population_count(codes), axis=0, dtype=jnp.uint16 if narrow else jnp.int32)
    return codes, jnp.sum(per, dtype=jnp.int32)


def _all_kept(shapes: list[Any], blocks: Any) -> list[tuple[jax.Array, jax.Array]]:
    """What a held step gives in place of :func:`_n_of_m_packed` for leaves of ``shapes``:
    every entry kept (a code with all ``m`` bits set per block, or the full mask)."""
    m = blocks.size
    if m > _operators.CODE_BITS:
        return [(jnp.ones(shape, bool), jnp.int32(0)) for shape in shapes]
    dtype = _operators.code_dtype(m)
    return [
        (
            jnp.full(
                _structures.Blocks(m, axis=blocks.axis).layout(tuple(shape)).grid,
                (1 << m) - 1,
                dtype,
            ),
            jnp.int32(0),
        )
        for shape in shapes
    ]


def _n_of_m_unpacked(code: jax.Array, blocks: Any, shape: tuple[int, ...]) -> jax.Array:
    """The full-shape keep mask of :func:`_n_of_m_packed`'s pattern."""
    if blocks.size > _operators.CODE_BITS:
        return code
    return _operators.n_of_m_unpack(code, blocks.size, blocks.axis, shape)


def _score_dtype(w_leaves: list[Any], lays: list[Any]) -> Any:
    wide = (jnp.float64, jnp.complex128)
    used = [w for w, lay in zip(w_leaves, lays, strict=True) if lay is not None]
    return jnp.float64 if any(jnp.result_type(w) in wide for w in used) else jnp.float32


def _plain(st: Any) -> bool:
    """Entries scored one by one (no group, no coupling)."""
    return st is None or (isinstance(st, _structures.Elements) and st.couple is None)


def _unit_scores(
    units: _Units, plain: list[bool], sources, dtype: Any, method: str
) -> Callable[[int, Any], list[_select.Source]]:
    """``scores(u, grids)`` for :func:`_threshold`: unit ``u``'s group scores (from
    ``grids``) and its entries' scores (``sources``: the scored leaves and each one's second
    moment or None), packed as :func:`_packed_scores` does."""
    w_leaves, a_leaves = sources

    def scores(u: int, grids: list[Any] | None) -> list[_select.Source]:
        def of(leaves):
            return _members(leaves, units, u)

        grids = [None] * len(plain) if grids is None else grids
        gs = [g for g, p in zip(of(grids), of(plain), strict=True) if not p]
        ws = [w for w, p in zip(of(w_leaves), of(plain), strict=True) if p]
        moments = [a for a, p in zip(of(a_leaves), of(plain), strict=True) if p]
        return gs + _packed_scores(ws, moments, dtype, method)

    return scores


def _per_leaf(tau: jax.Array, units: _Units, cfg: _Config) -> list[jax.Array]:
    """Each leaf's threshold: the global one, or its unit's."""
    return [tau if cfg.allocation == "global" or u is None else tau[u] for u in units.of_leaf]


def _groups(sts, lays, plain, sources, dtype, units: _Units, cfg: _Config) -> _Groups:
    """The group leaves' scores and marks for :func:`_threshold` (``sources``: the scored
    leaves and each one's second moment or None, the metric computed in the branch)."""
    w_leaves, a_leaves = sources

    def grids() -> list[Any]:
        d_leaves = [None if p else _metric(a) for a, p in zip(a_leaves, plain, strict=True)]
        return _group_grids(sts, lays, plain, (w_leaves, d_leaves), dtype)

    def marks(tau: jax.Array, grids: list[Any]) -> list[Any]:
        pairs = zip(grids, _per_leaf(tau, units, cfg), strict=True)
        return [None if g is None else g <= t for g, t in pairs]

    def unmarked() -> list[Any]:
        pairs = zip(lays, plain, strict=True)
        return [None if p else jnp.zeros(lay.grid, bool) for lay, p in pairs]

    return _Groups(grids, marks, unmarked)


def _group_grids(sts, lays, plain, sources, dtype) -> list[jax.Array | None]:
    """The group scores of group structures (coupled norms in the metric ``d``); None for
    plain uncoupled entries (scored where they are used, so no temporary is kept).
    ``sources``: the scored leaves and each one's ``d`` or None."""
    w_leaves, d_leaves = sources
    weighted = [  # at least float32 (a float16 square underflows); complex keeps its modulus
        None if p else (_tree.widened(w) if d is None else _tree.widened(w) * d)
        for w, d, p in zip(w_leaves, d_leaves, plain, strict=True)
    ]
    sqs = _structures.coupled_sq_norms(
        sts, [None if p else lay for lay, p in zip(lays, plain, strict=True)], weighted
    )
    return [None if sq is None else _structures.safe_sqrt(sq.astype(dtype)) for sq in sqs]


def _check_shrink(sts: list[Any], cfg: _Config) -> None:
    grouped = [s for s in sts if not _plain(s)]
    if cfg.shrink == "soft" and grouped:
        raise ValueError(
            "`shrink='soft'` is for entries only; with a group structure "
            f"({grouped[0]!r}) use `shrink='hard'`"
        )


def _hold_support(aligned: _tree.Aligned, shrunk: Any, phase: _Phase, exact: bool) -> Any:
    """The search's result on a due step; otherwise the step unshrunk, with zero weights
    kept at zero once a search has run (the held support).

    Unshrunk is the optimizer's update bit for bit when ``exact``; else the map's landing on
    ``z`` (within rounding of it): with a latent copy ``z = latent + u`` is written as the
    new copy anyway, and landing on it lets XLA fuse the optimizer's update into that one
    write instead of keeping it as a full-size temporary.
    """
    s_leaves = aligned.treedef.flatten_up_to(shrunk)
    leaves = zip(aligned.updates, s_leaves, aligned.params, aligned.selected, strict=True)
    held = phase.keep & ~phase.due
    new = [
        _tree.zero_where(held & (p == 0), _tree.select(phase.due, s, u) if exact else s)
        if sel
        else None
        for u, s, p, sel in leaves
    ]
    return aligned.merge(new)


def _next_state(state, phase: _Phase, tau, zeroed, latent, inner_state):
    """The last search's threshold and zero fraction are kept until the next search."""
    tau = jnp.maximum(tau, 0).astype(jnp.float32)  # -inf (nothing zeroed) logs as 0
    return SparsityTargetState(
        count=_transforms.next_count(state.count),
        threshold=jnp.where(phase.due, tau, state.threshold),
        sparsity=zeroed,
        scheduled=phase.scheduled,
        latent=latent,
        inner_state=inner_state,
    )


def _next_latent(aligned: _tree.Aligned, updates: Any, z: Any, shrink: str) -> Any:
    """The new params, except where they are zero: there the latent keeps ``z``, the dense
    weight that goes on taking the optimizer's updates and comes back when it outgrows the
    threshold.

    With hard thresholding and params in the latent's dtype, the survivors land on ``z``
    itself (``z = latent + u`` and the latent equals the params there), so the new latent is
    ``z``: no pass over the landed params.
    """
    z_leaves = aligned.treedef.flatten_up_to(z)
    pairs = zip(z_leaves, aligned.params, strict=True)
    if shrink == "hard" and all(x is None or jnp.result_type(p) == x.dtype for x, p in pairs):
        return z  # the common case: nothing to land, nothing to trace
    out = [
        None if w is None else _tree.select(w == 0, x, w.astype(x.dtype))
        for w, x in zip(_step.landed(aligned, updates), z_leaves, strict=True)
    ]
    return aligned.treedef.unflatten(out)


def _restart_latent(aligned: _tree.Aligned, base: list[Any], count, cfg: _Config) -> list[Any]:
    """From ``latent_until`` of the ramp on, a weight the last step left at zero restarts
    from 0: its latent no longer carries the updates it took while zeroed.

    Applied as the step reads the copy (the params are the last step's landing, so
    ``p == 0`` is "zeroed by the last step"), not when it writes it: the restart fuses into
    the read of the copy, where a reset of the written copy was a pass of its own.
    """
    if cfg.latent_until == 1:  # never a restart (with hold="track", none after the ramp)
        return base
    part = jnp.ceil(cfg.latent_until * jnp.asarray(cfg.ramp_steps, jnp.float32))
    stop = jnp.asarray(cfg.begin_step, jnp.int32) + part.astype(jnp.int32)
    late = count > stop  # the last step, at count - 1, was at or past the stop
    return [
        None if x is None else _tree.select(late & (p == 0), jnp.zeros_like(x), x)
        for x, p in zip(base, aligned.params, strict=True)
    ]


def _init_latent(params: Any, cfg: _Config, mask: Any) -> Any:
    """The latent copy at the start: the regularized params in float32, None elsewhere."""
    keep = _selection(params, cfg, _tree.resolve_mask(mask, params))
    # A copy, never the params' own buffer: params and state are often both donated.
    return _tree.on_regularized(
        params,
        keep,
        lambda p: jnp.array(p, _tree.compute_dtype(jnp.asarray(p).dtype), copy=True),
    )


def _preconditioner(inner_state: Any, params: Any) -> list[Any]:
    """The optimizer's second moment per leaf of ``params`` (the metric is its ``sqrt +
    1e-8``)."""
    return _inner.second_moments(_NAME, inner_state, params)


def _init_state(params: Any, cfg: _Config, inner: Any, mask: Any) -> SparsityTargetState:
    def zero():  # one buffer per field: a state is often donated, and a buffer only once
        return jnp.zeros([], jnp.float32)

    inner_state = optax.EmptyState()
    if inner is not None:
        inner_state = inner.init(_inner.inexact_only(params))
        _preconditioner(inner_state, params)
    copy = _init_latent(params, cfg, mask) if cfg.latent else None
    units = _units_of(params, cfg, mask)  # a structure or N:M misfit raises here, not later
    shape = (len(units.sizes),) if cfg.allocation in ("uniform", "erk") else ()
    tau = jnp.zeros(shape, jnp.float32)
    return SparsityTargetState(_transforms.zero_count(), tau, zero(), zero(), copy, inner_state)


def _structures_of(params: Any, cfg: _Config, selected: list[bool]) -> list[Any]:
    """Each leaf's structure (None where nothing is regularized)."""
    structure = _structures.Elements() if cfg.structure is None else cfg.structure
    return _structures.resolve("structure", structure, params, selected)


def _selection(params: Any, cfg: _Config, selected: list[bool]) -> list[bool]:
    """``selected`` narrowed to the leaves that have a structure (None: not regularized)."""
    if cfg.structure is None:
        return selected
    sts = _structures_of(params, cfg, selected)
    return [bool(sel) and s is not None for sel, s in zip(selected, sts, strict=True)]


def _check_blocks_fit(blocks: Any, sts: list[Any], leaves: list[Any], names: list[str]) -> None:
    """An N:M allocation's blocks fit every leaf with a structure (else a ValueError naming
    the leaf and ``allocation``)."""
    _structures.layouts(
        [blocks if s is not None else None for s in sts], leaves, names, "allocation"
    )


def _units_of(params: Any, cfg: _Config, mask: Any) -> _Units:
    """The search's units for ``params`` (as the update will find them); a structure, or an
    N:M allocation, that does not fit a selected leaf raises naming it."""
    leaves = jax.tree.leaves(params, is_leaf=_tree.is_none)
    keep = _tree.resolve_mask(mask, params)
    selected = [
        m and p is not None and _tree.is_inexact(p) and jnp.size(p) > 0
        for p, m in zip(leaves, keep, strict=True)
    ]
    sts = _structures_of(params, cfg, selected)
    names = _structures.leaf_names(params)
    lays = _structures.layouts(sts, leaves, names)
    if isinstance(cfg.allocation, _structures.Blocks):
        _check_blocks_fit(cfg.allocation, sts, leaves, names)
    return _units(sts, lays, [None if p is None else jnp.shape(p) for p in leaves], cfg)


def _update(updates, state, params, inner_state, cfg: _Config, mask: Any, precondition: bool):
    """One update after the wrapped optimizer's (if any): the pieces above, in order."""
    aligned = _tree.align(_NAME, updates, params, mask)
    phase = _phase(state.count, cfg, state.scheduled)
    base = None if state.latent is None else aligned.treedef.flatten_up_to(state.latent)
    if base is not None:
        base = _restart_latent(aligned, base, state.count, cfg)
    params_tree = aligned.treedef.unflatten(aligned.params)
    moments = None
    if precondition:
        moments = _preconditioner(inner_state, params_tree)
    aligned = aligned._replace(selected=_selection(params_tree, cfg, aligned.selected))
    # drop_latent: the support is frozen, no search (a tree regularizing nothing has no copy)
    dropped = cfg.latent and base is None and any(aligned.selected)
    # Without a latent copy, a hard search scores the params before the update: no
    # temporary. Else it scores z, which is the new latent copy. The metric is always this
    # step's second moment, a buffer the optimizer writes anyway: the old one, read after
    # the new one is written in its place, would be a full-size copy every step. A dropped
    # copy's search never runs: it is given the params, which exist already (z would be a
    # full-size temporary, read by the search's branch).
    before = base is None and (cfg.shrink == "hard" or dropped)
    sts = _structures_of(params_tree, cfg, aligned.selected)
    prox = _target_prox(aligned.params if before else None, moments, sts, phase, state, cfg)
    shrunk, (tau, zeroed, z) = _step.prox_update(
        prox, aligned, jnp.float32(0), state.count, name=_NAME, base=base
    )
    bad = _runtime_bad(cfg)
    if dropped:  # a copy dropped before the support froze (ever, with hold="track"): the
        needed = ~phase.frozen  # run-time fault policy; a step that may search reads the copy
        bad = needed if bad is None else bad | needed
    if jax.device_count() > 1:  # a count's total can be off only when XLA shards it
        miscounted = jnp.any(jnp.isnan(tau))  # a search whose count failed (_threshold)
        bad = miscounted if bad is None else bad | miscounted
    out = _poison(aligned, _hold_support(aligned, shrunk, phase, exact=base is None), bad)
    if bad is not None:
        tau = jnp.where(bad, jnp.nan, tau)
    latent = None
    if base is not None:
        latent = _next_latent(aligned, out, z, cfg.shrink)
    return out, _next_state(state, phase, tau, zeroed, latent, inner_state)


_RUNTIME_RULES = (
    ("target", _checks.FRACTION),
    ("ramp_steps", _checks.whole(_checks.at_least(1))),
    ("begin_step", _checks.whole(_checks.at_least(0))),
    ("update_every", _checks.whole(_checks.at_least(1))),
    ("smoothing", _checks.DECAY),
    ("ramp", _checks.POSITIVE_FLOAT32),  # an exponent's (a string is known at construction)
)


def _runtime_bad(cfg: _Config) -> jax.Array | None:
    """True when a hyperparameter known only at run time (``optax.inject_hyperparams``)
    breaks its rule; None when every one was known, and checked, at construction."""
    late = [(getattr(cfg, f), rule) for f, rule in _RUNTIME_RULES]
    checked = [_checks.runtime_checked(v, rule) for v, rule in late if _checks.concrete(v) is None]
    bad = None if not checked else jnp.isnan(sum(checked, jnp.float32(0)))
    late_nm = [_checks.concrete(v) is None for v in (cfg.target, cfg.smoothing)]
    if isinstance(cfg.allocation, _structures.Blocks) and any(late_nm):  # N:M, at run time
        nm = _n_of_m_misfit(cfg.target, cfg.allocation.size) | (jnp.asarray(cfg.smoothing) != 0)
        bad = nm if bad is None else bad | nm
    return bad


def _n_of_m_misfit(target: Any, m: int, xp: Any = jnp) -> Any:
    """Whether ``target`` zeroes no whole number of entries in a block of ``m`` (``xp``:
    NumPy for a value known at construction, jax.numpy at run time)."""
    zeros = xp.asarray(target, xp.float32) * m
    return xp.abs(zeros - xp.round(zeros)) > _NM_SLACK


_NM_SLACK = 1e-4  # float32 rounding of target * m (2/3 * 3 is 1.9999999)


def _poison(aligned: _tree.Aligned, out: Any, bad: jax.Array | None) -> Any:
    """The run-time policy: NaN updates on the regularized leaves when ``bad``."""
    if bad is None:
        return out
    leaves = zip(aligned.treedef.flatten_up_to(out), aligned.selected, strict=True)
    return aligned.merge([jnp.where(bad, jnp.nan, u) if sel else None for u, sel in leaves])


def _check_n_of_m(cfg: _Config) -> None:
    """What a ``Blocks`` allocation (a rank within each block, no threshold) cannot do."""
    if cfg.shrink != "hard":
        raise ValueError("`allocation=Blocks(...)` (N:M) zeroes entries: use `shrink='hard'`")
    smoothing = _checks.concrete(cfg.smoothing)
    if smoothing is not None and np.any(smoothing != 0):
        raise ValueError("`allocation=Blocks(...)` (N:M) has no threshold to smooth: `smoothing=0`")
    m, target = cfg.allocation.size, _checks.concrete(cfg.target)
    if target is not None and _n_of_m_misfit(np.float32(target), m, np):
        low, high = math.floor(float(target) * m), math.ceil(float(target) * m)
        raise ValueError(
            f"`target` with `allocation=Blocks({m})` (N:M) zeroes a whole number of entries in "
            f"every block of {m}: a multiple of 1/{m}, got {float(target)} (target={low / m} "
            f"or {high / m}: {low} or {high} of every {m})"
        )
    if cfg.allocation.couple is not None:
        raise ValueError("`allocation=Blocks(...)` takes no `couple` label (blocks are per leaf)")


_LATENT_UNTIL = 0.5  # the default: measured on the transformer LM (benchmarks/RESULTS.md)


def _latent_until(latent_until: Any, latent: bool, allocation: Any) -> float:
    """The validated ``latent_until``: the default with a latent copy (the whole ramp for
    N:M, whose last pattern is set at the ramp's end), 1 (unused) without."""
    if latent_until is None:
        n_of_m = isinstance(allocation, _structures.Blocks)
        return 1.0 if n_of_m or not latent else _LATENT_UNTIL
    until = latent_until
    if not isinstance(until, (int, float)) or isinstance(until, bool):
        hint = _checks.static_args_hint("latent_until", until)
        raise TypeError(f"`latent_until` must be a Python number in (0, 1], got {until!r}{hint}")
    _checks.check_number("latent_until", until, _checks.UNIT_INTERVAL)
    if not latent:
        raise ValueError("`latent_until` sets how long the latent copy lasts: needs `latent=True`")
    return float(until)


def _check_config(cfg: _Config, optimizer: Any, mask: Any) -> None:
    _checks.check_number("target", cfg.target, _checks.FRACTION)
    _checks.check_number("ramp_steps", cfg.ramp_steps, _checks.at_least(1), integer=True)
    _checks.check_number("begin_step", cfg.begin_step, _checks.at_least(0), integer=True)
    _checks.check_step_count("update_every", cfg.update_every, 1)
    _checks.check_number("smoothing", cfg.smoothing, _checks.DECAY)
    begin, ramp = _checks.scalar_value(cfg.begin_step), _checks.scalar_value(cfg.ramp_steps)
    if begin is not None and ramp is not None and begin + ramp >= 2**31 - 1:
        raise ValueError(
            f"`begin_step + ramp_steps` must be < 2**31 - 1 (the step count is int32), got "
            f"{int(begin)} + {int(ramp)}"
        )
    if isinstance(cfg.ramp, str):
        _checks.check_choice("ramp", cfg.ramp, _RAMPS)
    else:
        _checks.check_number("ramp", cfg.ramp, _checks.POSITIVE_FLOAT32)
    _checks.check_choice("hold", cfg.hold, _HOLDS)
    _checks.check_choice("quantile", cfg.quantile, _select.METHODS)
    _checks.check_choice("shrink", cfg.shrink, _SHRINKS)
    if not isinstance(cfg.allocation, _structures.Blocks):
        _checks.check_choice("allocation", cfg.allocation, _ALLOCATIONS)
    else:
        _check_n_of_m(cfg)
    if cfg.allocation == "erk" and _checks.scalar_value(cfg.target) is None:
        raise ValueError("`allocation='erk'` needs a concrete `target` (it sets each share)")
    if optimizer is not None:
        _checks.check_optimizer("optimizer", optimizer)
    _checks.check_mask(mask)


# ----------------------------------------------------------------------------- transform


def sparsity_target(
    target: jax.typing.ArrayLike,
    *,
    ramp_steps: jax.typing.ArrayLike,
    begin_step: jax.typing.ArrayLike = 0,
    ramp: Ramp | float = 2.0,
    hold: Hold = "support",
    update_every: jax.typing.ArrayLike = 1,
    shrink: Shrink = "hard",
    smoothing: jax.typing.ArrayLike = 0.0,
    quantile: _select.Method = "sample",
    latent: bool = True,
    latent_until: float | None = None,
    structure: Any = None,
    allocation: Allocation = "global",
    optimizer: optax.GradientTransformation | None = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The ramp's fraction of zeros, the smallest weights, chosen again each step.

    Placed last in a chain, after any optimizer. On a search step it zeroes the
    :math:`k_t = \lfloor s_t n \rfloor` entries of :math:`z = \tilde w_t + u_t` with the
    smallest score among the :math:`n` regularized entries, and leaves the others as the
    optimizer put them (hard thresholding, the proximal step of an :math:`\ell_0`
    constraint):

    .. math::

      s_t = s \left(1 - \left(1 - \operatorname{clip}\left(
        \tfrac{t - t_0}{T}, 0, 1\right)\right)^e\right), \qquad
      \tau_t = \left(d \odot |z|\right)_{(k_t)}, \qquad
      p_{t+1} = z \odot \mathbb{1}\left[d \odot |z| > \tau_t\right], \qquad
      \tilde w_{t+1} = \begin{cases} z & p_{t+1} = 0 \\ p_{t+1} & \text{otherwise}
      \end{cases}

    where :math:`x_{(k)}` is the :math:`k`-th smallest entry, :math:`s` is ``target``,
    :math:`e` the ramp's exponent (2 by default, see ``ramp``),
    :math:`T` ``ramp_steps``, :math:`t_0` ``begin_step`` and :math:`d = 1` (or the
    optimizer's :math:`\sqrt{\nu_{t+1}} + 10^{-8}`, its second moment after this step's
    update, see ``optimizer``). The latent weights
    :math:`\tilde w` are the params, except that a zeroed weight keeps taking the
    optimizer's updates there (the gradient at the sparse point: a straight-through
    estimator), so it comes back when it outgrows the threshold. This is gradual magnitude
    pruning (Zhu & Gupta 2017) with one global threshold found at every step (exactly, or
    from a sample on large params: see Cost) and a
    dense latent copy (as torchao's pruning-aware training keeps by default) for the first
    half of the ramp (``latent_until``); after it a zeroed weight restarts from 0 on every
    step. With ``latent=False`` there is no copy: the search scores the params *before* the
    update, :math:`d \odot |p_t|` (GMP's order: prune, then step the survivors; this reads
    no temporary), and a zeroed weight stays zero. On a small transformer LM (3 seeds,
    ``benchmarks/RESULTS.md``) the default beats GMP (on its cubic ramp) at 80, 90 and 95%
    zeros on every seed: by 0.044 / 0.060 / 0.078 bits/byte in 600-step runs and by 0.019 /
    0.014 / 0.015 in 2,000-step runs; GMP given the same exponent 2 ties it at 80% in
    2,000-step runs (0.006 +- 0.007; with one global threshold 0.002 +- 0.001) and trails
    at 90/95%. With the cube the lead is 0.020 /
    0.036 / 0.062 at 600 steps and -0.001 (a tie) / 0.012 / 0.037 at 2,000: better at 95%
    in long runs, no lead at 80% (see ``ramp``). The copy for the whole ramp
    (``latent_until=1``, cubic ramp) ties GMP at 2,000 steps and beats it by 0.085 at 600.
    On a digits MLP (10 seeds) every setting ties GMP at 90/95% zeros; at 98% the
    whole-ramp copy is 1.2 points ahead of GMP, the default 0.2-0.35.
    After each search exactly :math:`k_t` entries are zero (more only if entries tie at the
    threshold; for bfloat16/float16 params, also where ``p + u`` rounds a small survivor to
    0); on params of :math:`2^{20}` or more regularized entries the default search is
    sampled during the ramp, so there at most :math:`k_t` but for about one search in 700
    (it aims 3 sds of the sample's count under it), and exactly at the ramp's end
    (``quantile``, see Cost). :math:`s_t n` is computed in float32, so mid-ramp
    :math:`k_t` can be one less than the exact floor, and jitted, eager and
    ``inject_hyperparams`` runs (which round differently) can differ by that one entry;
    the ramp's end is exact.

    Between searches (``update_every > 1``) and after the ramp (``hold="support"``, the
    default) the support is held: zero weights stay zero and the others take the
    optimizer's update unshrunk, so the zero fraction never exceeds the ramp's value at the
    last search. Before the first search the params land on :math:`\tilde w + u`, the
    optimizer's step to within rounding (bit for bit with ``latent=False``).

    ``shrink="soft"`` soft-thresholds the survivors by :math:`\tau_t / d` instead (the
    L1 proximal step whose strength is the smallest that reaches :math:`s_t`). It biases
    every survivor toward zero on every search step and is the weaker method at high
    sparsity (digits at 95-98% zeros, ``benchmarks/RESULTS.md``).

    Cost: ``quantile="radix"`` is an exact radix select over the float bits, 2 passes of a
    65,536-bin count for float32 (4 for float64), which also give the zero count; it scores
    the params chunk by chunk where the count reads them, so a search adds no full-size
    temporary (leaves under 65,536 entries are scored into one packed array, the size of
    the small leaves), but each pass reads every score: on this project's 2-core CPU an
    every-step search costs 3.4-4.2x adam's step on 8-16M params. ``"sample"`` (default):
    the same select on a systematic sample of about 65,536 scores (every ``p``-th entry of
    the flattened leaves, ``p`` a prime that divides no dimension), which reads a few MB
    however large the params (an every-step search 1.34-1.42x adam's step there, the latent
    copy's traffic included): each search aims 3 sds of the sample's count under the
    ramp's fraction (:math:`3\sqrt{s_t(1-s_t)/m}`, about 0.6 points at most for a sample of
    :math:`m \approx 65536`; the logged ``sparsity`` is the sample's estimate), so its zeros
    stay at or under the ramp's but for about one search in 700 (a zero that cannot come
    back, as with ``latent=False``, would stay past the ramp's end), and the ramp's last
    search is exact, so the frozen support is on target (with ``hold="track"`` there is no
    last search: every search on such params is sampled, and the support stays about 3
    sds under target); the sample's stride divides no dimension of any leaf; under
    1,048,576 regularized entries it is ``"radix"``. ``"bisect"``: 31
    global counts, reductions only (sharded params are never gathered), two int32 copies of
    the scores held by XLA. ``"sort"``: one sort of all entries (gathers sharded params;
    one sorted copy). A step without a search adds no full-size temporary: with
    ``latent=False`` it fuses into the optimizer's own loop (with ``optimizer=`` too: the
    metric is the second moment the optimizer writes anyway); ``latent=True`` keeps one
    float32 copy of the regularized params in the state and reads and writes it every step
    (1.15-1.6x adam's step before, during and after the ramp on 8-16M params); once the ramp
    is over, :func:`drop_latent` sheds it (1.02-1.04x there).
    Group norms (``structure``) and N:M ranks (``allocation=Blocks``) are computed on a
    search step only; a step without one reads one mark (or one code) per group or block.
    ``update_every=k`` spreads a search's cost over ``k`` steps (measured ratios:
    ``benchmarks/RESULTS.md``). Compile time: on a tree of thousands of small leaves the
    step compiles in 1.8-2.1x adamw's time on XLA:CPU (5,000 leaves; 1.4-1.6x with
    ``latent=False``), where a bare latent copy with no search already takes 1.3-1.4x.

    Args:
      target: the final fraction of exact zeros :math:`s \in [0, 1)`.
      ramp_steps: :math:`T \ge 1`, the number of steps the ramp takes to reach ``target``.
      begin_step: :math:`t_0 \ge 0`, the step the ramp starts (dense training before).
      ramp: the exponent :math:`e > 0` of the ramp: 2 (the default), ``"cubic"`` (3, Zhu
        & Gupta's, the default of 0.1), ``"linear"`` (1) or any number (it may be set at run
        time, e.g. by ``optax.inject_hyperparams``: one that is not positive and finite
        makes the regularized updates NaN). A smaller exponent zeroes fewer weights
        mid-ramp and more near its end (at a quarter of it, 2 asks for 44% of the target
        where the cube asks for 58%). Measured against the cube (``benchmarks/RESULTS.md``,
        transformer LM, 3 seeds): 2 gains 0.025 / 0.024 / 0.015 bits/byte at 80 / 90 / 95%
        zeros in 600-step runs (every seed); in 2,000-step runs it gains 0.020 at 80%
        (every seed), ties at 90% (-0.003 +- 0.006) and loses 0.022 +- 0.013 at 95%; on the
        digits MLP it ties (10 seeds); 1 loses 1.7 points on digits at 98%. For long
        training to 95% zeros or more, ``"cubic"`` was the better choice on that model.
      hold: after the ramp (:math:`t > t_0 + T`), ``"support"`` freezes the set of zeros
        (survivors train unshrunk: the fine-tuning phase of gradual magnitude pruning),
        searched once more if the ramp's value changes (``target`` or ``ramp_steps`` set at
        run time through ``optax.inject_hyperparams``); ``"track"`` keeps searching every
        ``update_every`` steps to hold the target.
      update_every: search every this many steps (>= 1), and at :math:`t_0 + T`.
      shrink: ``"hard"`` (survivors untouched) or ``"soft"`` (survivors shrunk).
      smoothing: :math:`\beta \in [0, 1)`, a moving average of the threshold over searches,
        never above the search's own threshold (so it only delays zeros: the ramp's value
        stays an upper bound), 0: none; the last search of the ramp is unsmoothed so a
        frozen support is on target.
      quantile: ``"sample"`` (default: exact under :math:`2^{20}` regularized entries,
        else from a sample during the ramp and exact at its end), ``"radix"``,
        ``"bisect"`` or ``"sort"`` (exact at every search): how the threshold is found
        (see Cost above).
      latent: keep the dense latent weights :math:`\tilde w` (one float32 copy of the
        regularized params in the state); ``False``: :math:`\tilde w = p`, no copy. The copy
        assumes the params change only through these updates: after replacing the params
        (loading other weights), initialize a new state.
      latent_until: the fraction of the ramp, in (0, 1], over which a zeroed weight keeps
        its latent value (and can come back); from :math:`t_0 +` ``latent_until`` :math:`T`
        on, a zeroed weight's latent restarts from 0 on every step, so it comes back only
        if one update outgrows the threshold (as with ``latent=False``, scored after the
        update). Default (None): 0.5 with ``latent=True``, and 1 (the whole ramp) with an
        N:M ``allocation=Blocks(m)``, whose last pattern, n of m, is set at the ramp's end:
        on the transformer LM 2:4 with the whole-ramp copy ties one-shot 2:4 pruning plus
        fine-tuning, with half of it it is 0.007 behind that (0.008 behind the whole-ramp
        copy; 3 seeds, every seed). 1 keeps the
        copy for the whole ramp (better for short training, see above) and never restarts
        it: with ``hold="track"`` a zeroed weight can still come back after the ramp. Only
        with ``latent=True``.
      structure: what is zeroed together (default: single entries): a :class:`Structure`
        (:class:`Groups` for units or filters, :class:`Blocks`, :class:`Heads`, coupled
        across leaves by a shared ``couple`` label), a pytree prefix of them, or a callable
        ``params -> that``. A group's score is the 2-norm of :math:`d \odot z` over its
        entries; ``target`` is then the fraction of zero *groups* (a coupled group counted
        once), and ``shrink`` must be ``"hard"``.
      allocation: how the zeros are shared among leaves: ``"global"`` (one threshold for
        all, the default), ``"uniform"`` (every leaf, or coupled group of leaves, at the
        ramp's fraction: one threshold each, logged as a vector), or ``"erk"``
        (Erdos-Renyi-Kernel, Evci et al. 2020: a leaf's density proportional to
        ``sum(shape) / prod(shape)``, the total at ``target`` less under one entry per
        leaf, as each leaf's count is floored; per leaf, no coupling); or
        a :class:`Blocks` ``(m, axis)``: N:M sparsity, every block of ``m`` along ``axis``
        loses its ``floor(s_t m)`` lowest-scoring entries (``target=0.5`` with
        ``Blocks(4, axis=0)`` ramps a Dense kernel ``(in, out)`` from dense through 3:4 to
        2:4 along its reduction axis; ``threshold`` logs the entries zeroed per block).
      optimizer: optional; an optax optimizer with a diagonal second moment in its state
        (``nu``: adam, adamw, rmsprop...; ``sum_of_squares``: adagrad; a ``nu`` that is
        not one entry per weight, novograd's, is refused; adamax's ``nu`` is
        :math:`\max|g|`, which has the field name and shape but not the meaning). The returned
        transformation then *is* that optimizer followed by the thresholding, and a weight's
        score is :math:`|z|\sqrt{\nu}`, the square root of its empirical-Fisher saliency
        :math:`w^2\,\mathbb{E}[g^2]` (Optimal Brain Damage with the Fisher diagonal).
        With ``latent=False, update_every=50`` this is a cheap setting (about 1.1x adam's
        step) and ties the default at 90% zeros in 600-step runs on the transformer LM,
        but trails GMP at 2,000 steps (``benchmarks/RESULTS.md``).
      mask: a pytree of bools (prefix of params; True = regularized and counted) or a
        callable ``params -> mask``, as in :func:`l1_prox`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`SparsityTargetState` (``threshold``, ``sparsity`` and ``scheduled`` to log).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, optax_l1
      >>> params = {"w": jnp.array([0.3, -2.0, 0.1, 1.0, -0.5]), "b": jnp.ones(2)}
      >>> tx = optax.chain(
      ...     optax.sgd(0.1),
      ...     optax_l1.sparsity_target(0.6, ramp_steps=1, mask={"w": True, "b": False}),
      ... )
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.zeros_like, params)
      >>> for _ in range(2):
      ...     updates, state = tx.update(grads, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params["w"]
      Array([ 0., -2.,  0.,  1.,  0.], dtype=float32)
      >>> float(state[1].sparsity), float(state[1].threshold)
      (0.6000000238418579, 0.5)

      With Adam's preconditioner, the whole optimizer in one transformation:

      >>> tx = optax_l1.sparsity_target(
      ...     0.9, ramp_steps=100, optimizer=optax.adam(1e-3), mask=optax_l1.kernel_mask
      ... )

    References:
      Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning for model
      compression <https://arxiv.org/abs/1710.01878>`_, 2017;
      Blumensath & Davies, `Iterative hard thresholding for compressed sensing
      <https://doi.org/10.1016/j.acha.2009.04.002>`_, 2009;
      LeCun, Denker & Solla, `Optimal Brain Damage
      <https://papers.nips.cc/paper/250-optimal-brain-damage>`_, NeurIPS 1989.
    """
    latent = _checks.check_flag("latent", latent)
    latent_until = _latent_until(latent_until, latent, allocation)
    cfg = _Config(
        target,
        ramp_steps,
        begin_step,
        ramp,
        hold,
        update_every,
        smoothing,
        shrink,
        quantile,
        latent,
        structure,
        allocation,
        latent_until,
    )
    _check_config(cfg, optimizer, mask)
    inner = None if optimizer is None else optax.with_extra_args_support(optimizer)

    def init_fn(params):
        return _init_state(params, cfg, inner, mask)

    def update_fn(updates, state, params=None, **extra_args):
        _checks.check_params(_NAME, params)
        inner_state = state.inner_state
        if inner is not None:
            updates, inner_state = _inner.update_inexact(
                inner, updates, inner_state, params, _NAME, **extra_args
            )
        return _update(updates, state, params, inner_state, cfg, mask, inner is not None)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def drop_latent(opt_state: Any) -> Any:
    r"""``opt_state`` without the latent copies of its :func:`sparsity_target` states.

    Once the ramp is over (the state's ``count`` past ``begin_step + ramp_steps``, where the
    last search ran), the support is frozen and no search runs again, so the latent copy
    is read only to be written back: a params-sized read and write on every step, about
    0.4-0.55x adam's step on this project's CPU (RESULTS.md). Dropping it then gives the same
    updates (to rounding: the copy-free step returns the optimizer's update where the copy
    lands on it) at the cost of the copy-free step. The state's tree changes (``latent``
    becomes None), so a jitted step compiles once more; a checkpoint taken after it has no
    copy. During the ramp the copy is also the buffer the search's scores are read from,
    so dropping it there would not save its traffic.

    Dropped earlier, or ever with ``hold="track"`` (its searches go on), the regularized
    updates are NaN (the run-time fault policy): the copy cannot be rebuilt; so are they
    when a search runs after the drop because the ramp's value changed (a ``target`` set
    at run time). Every
    ``sparsity_target`` state in ``opt_state`` loses its copy (several of them, e.g. in an
    ``optax.multi_transform``, must all be past their ramps).

    Args:
      opt_state: an optimizer state holding one or more :class:`SparsityTargetState` (inside
        ``optax.chain``, ``optax.inject_hyperparams``, ``optax.MultiSteps``, ...), at least
        one with a latent copy.

    Returns:
      The same state with each ``SparsityTargetState.latent`` set to None.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.sparsity_target(0.5, ramp_steps=2)  # the last search at count 2
      >>> params = {"w": jnp.array([2.0, -0.5, 0.125, 4.0])}
      >>> state = tx.init(params)
      >>> for _ in range(3):
      ...     updates, state = tx.update({"w": jnp.full(4, -0.125)}, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> state = optax_l1.drop_latent(state)  # count 3: the support is frozen
      >>> updates, state = tx.update({"w": jnp.full(4, -0.125)}, state, params)
      >>> optax.apply_updates(params, updates)["w"]
      Array([1.5, 0. , 0. , 3.5], dtype=float32)
    """

    def is_target(x: Any) -> bool:
        return isinstance(x, SparsityTargetState)

    found = [s for s in jax.tree.leaves(opt_state, is_leaf=is_target) if is_target(s)]
    if not any(s.latent is not None for s in found):
        raise ValueError(
            "`opt_state` holds no sparsity_target state with a latent copy (latent=True, "
            f"not dropped already) to drop: found {len(found)} sparsity_target state(s) "
            "without one"
        )

    def drop(x: Any) -> Any:
        return x._replace(latent=None) if is_target(x) else x

    return jax.tree.map(drop, opt_state, is_leaf=is_target)
