"""Selection: the k-th smallest entry of several non-negative float arrays, and how many
entries are at most it (the zeros a threshold there gives, ties included), found in the same
passes: exactly (radix, bisection, sort), or from a systematic sample of large arrays.

The arrays may be given as :class:`Scored`, scores computed where they are read: the loops of
the radix select and of the bisection then read the score's arguments (buffers that exist,
such as the params or the optimizer's moments) chunk by chunk, instead of a full-size array
of scores that XLA would write out before the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Method = Literal["radix", "bisect", "sort", "sample"]
METHODS: tuple[str, ...] = ("radix", "bisect", "sort", "sample")
_DIGIT_BITS = 16  # 2 passes of a 65,536-bin count for float32: half the passes of 8 bits
_CHUNK = 2**16  # entries counted per scatter: bounds the select's temporaries
_FLOAT = {jnp.dtype(jnp.uint32): jnp.float32, jnp.dtype(jnp.uint64): jnp.float64}
SAMPLE = 2**16  # entries in a sample: one sd of the zero fraction is at most 0.2 points
MARGIN = 3.0  # a sampled search aims this many sds of its count under k (0.6 points at s=0.5)


class Scored(NamedTuple):
    """The scores ``fn(*args)``, computed where they are read: ``fn`` is elementwise and
    ``args`` are arrays of one shape. ``packed``: the shapes of the arrays concatenated into
    ``args`` (:func:`pack_small`), which a sample's stride must not follow; empty when the
    args are one leaf each."""

    fn: Callable[..., jax.Array]
    args: tuple[jax.Array, ...]
    packed: tuple[tuple[int, ...], ...] = ()

    @property
    def size(self) -> int:
        return int(jnp.size(self.args[0]))

    @property
    def dtype(self) -> jnp.dtype:
        one = [jax.ShapeDtypeStruct((1,), jnp.result_type(a)) for a in self.args]
        return jax.eval_shape(self.fn, *one).dtype

    def whole(self) -> jax.Array:
        """All the scores, in the args' shape (a sharded leaf stays where it lies)."""
        return self.fn(*self.args)

    def chunk(self, start: jax.Array, width: int, zero: jax.Array) -> jax.Array:
        """The flat scores ``[start, start + width)``; ``zero`` (a computed 0) is added to
        every argument's slice, so that reading it waits on what ``zero`` was computed from."""

        def part(a: jax.Array) -> jax.Array:
            x = lax.dynamic_slice(a.reshape(-1), (start,), (width,))
            return x + zero.astype(x.dtype)

        return self.fn(*(part(a) for a in self.args))


Source = jax.Array | Scored


def _scored(x: Source) -> Scored:
    return x if isinstance(x, Scored) else Scored(lambda a: a, (jnp.asarray(x),))


def values(x: Source) -> jax.Array:
    """The scores of ``x``, computed (in their shape)."""
    return _scored(x).whole()


def kth_smallest_bisect(scores: list[Source], k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The k-th smallest (k >= 1) entry of non-negative float arrays, exactly, and the number
    of entries at most it.

    Bisection on bit patterns: for floats >= 0 the integer view is monotone, so 31 (63 for
    float64) fixed halvings of ``[-1, bits(max)]`` land on the exact value. Each halving
    is one global count ``sum(bits <= mid)``: O(31 n) work made of reductions only, so
    sharded leaves need one scalar all-reduce per halving and nothing is gathered.
    """
    items = [_scored(s) for s in scores]
    dtype = items[0].dtype
    itype, halvings = (jnp.int64, 63) if dtype == jnp.float64 else (jnp.int32, 31)

    def bits(item: Scored) -> jax.Array:  # read in each count: no full-size copy
        return lax.bitcast_convert_type(item.whole(), itype)

    hi = jnp.max(jnp.stack([jnp.max(bits(x)) for x in items]))
    total = jnp.asarray(sum(x.size for x in items), jnp.int32)

    def halve(_, state):
        lo, hi, at_hi = state
        mid = lo + (hi - lo) // 2
        at_mid = sum(jnp.sum(bits(x) <= mid, dtype=jnp.int32) for x in items)
        enough = at_mid >= k
        return (
            jnp.where(enough, lo, mid),
            jnp.where(enough, mid, hi),
            jnp.where(enough, at_mid, at_hi),
        )

    init = (jnp.asarray(-1, itype), hi, total)
    _, hi, at_most = lax.fori_loop(0, halvings, halve, init)
    return lax.bitcast_convert_type(hi, dtype), at_most


def kth_smallest_sort(scores: list[Source], k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The k-th smallest (k >= 1) entry by one sort of all entries (O(n log n), gathers), and
    the number of entries at most it."""
    flat = jnp.sort(jnp.concatenate([values(s).ravel() for s in scores]))
    kth = flat[jnp.clip(k - 1, 0, flat.size - 1)]
    return kth, jnp.searchsorted(flat, kth, side="right").astype(jnp.int32)


def _chunk_counts(counts: jax.Array, b: jax.Array, prefix: jax.Array, shift: int) -> jax.Array:
    """``counts`` plus the digit counts of the flat array ``b`` (see :func:`_digit_counts`)."""
    bins = 2**_DIGIT_BITS
    width = 8 * jnp.dtype(b.dtype).itemsize
    digit = ((b >> shift) & (bins - 1)).astype(jnp.int32)
    if shift + _DIGIT_BITS < width:
        digit = jnp.where((b >> (shift + _DIGIT_BITS)) == prefix, digit, bins)
    return counts.at[digit].add(1, mode="promise_in_bounds")


def _aligned_bits(bits: jax.Array) -> jax.Array:
    """Bit patterns ``bits`` (flat) with NaN's appended up to a multiple of
    ``lcm(1024, device count)`` entries, the arrays the radix count scatters.

    A flat array whose length its shards do not divide is padded by XLA's SPMD partitioner,
    and the count's scatter then took the padding for zero scores (every k-th smallest off,
    measured on 8 CPU devices with jax 0.10). A mesh over all the devices divides this
    length, so nothing is padded. NaN's bits are above every other score's (+inf
    included): they are never the k-th smallest of the real entries nor counted at or
    below it. A mesh over some of the devices may still shard unevenly: the count checks
    its total (:func:`kth_smallest_radix`).
    """
    pad = _aligned_size(bits.size) - bits.size
    if not pad:
        return bits
    nan = lax.bitcast_convert_type(jnp.asarray(jnp.nan, _FLOAT[bits.dtype]), bits.dtype)
    return jnp.concatenate([bits, jnp.full((pad,), nan, bits.dtype)])


def _aligned_size(size: int) -> int:
    """``size`` rounded up to a multiple of ``lcm(1024, device count)`` (see
    :func:`_aligned_bits`)."""
    step = math.lcm(1024, jax.device_count())
    return size + -size % step


def _packing(arrays: list[jax.Array]) -> list[list[jax.Array]]:
    """The groups :func:`pack_small` makes of ``arrays``: each one of a chunk or more alone,
    in order, then those under one chunk (several: concatenated; one: alone)."""
    small = [b for b in arrays if jnp.size(b) < _CHUNK]
    large = [[b] for b in arrays if jnp.size(b) >= _CHUNK]
    return large + ([small] if len(small) > 1 else [[b] for b in small])


def pack_small(arrays: list[jax.Array]) -> list[jax.Array]:
    """The arrays under one chunk concatenated into one flat array, after the larger ones
    as they are (never concatenated, so a sharded leaf is not gathered): one scatter for
    all the small ones, so the compiled step stays small for a tree of thousands of small
    leaves. Lists of equal shapes are packed in the same order."""
    return [  # a large array stays as it is; jnp.concatenate of one small one is a reshape
        g[0] if jnp.size(g[0]) >= _CHUNK else jnp.concatenate([b.reshape(-1) for b in g])
        for g in _packing(arrays)
    ]


def packed_shapes(arrays: list[jax.Array]) -> list[tuple[tuple[int, ...], ...]]:
    """For each array :func:`pack_small` returns, the shapes it concatenated (empty: none)."""
    return [
        tuple(tuple(jnp.shape(b)) for b in group) if len(group) > 1 else ()
        for group in _packing(arrays)
    ]


def _pack_scored(items: list[Scored]) -> list[Scored]:
    """:func:`pack_small` for scores: the small ones computed and concatenated (one count
    for all of them), the large ones left to be computed chunk by chunk."""
    small = [x.whole() for x in items if x.size < _CHUNK]
    large = [x for x in items if x.size >= _CHUNK]
    return large + [_scored(b) for b in pack_small(small)]


def _after(counts: jax.Array) -> jax.Array:
    """0, computed from ``counts``: added to a chunk's arguments, it orders their reading
    (and the scoring of them) after the counts so far."""
    return jnp.minimum(counts[-1], 0)


def _digit_counts(items: list[Scored], itype: type, prefix: jax.Array, shift: int) -> jax.Array:
    """How many entries have the bits above ``shift + 16`` equal to ``prefix``, per value of
    the 16-bit digit at ``shift``: one pass of a 65,536-bin count (a scatter-add of 1s).

    A leaf is scored and counted ``_CHUNK`` entries at a time, so the scores, the digits and
    the 1s the scatter adds are chunk-sized: no temporary of the leaf's size. Each chunk's
    arguments are read after the counts so far (:func:`_after`), so XLA cannot compute the
    digits, or a part of the scores such as the metric of a second moment, of every leaf up
    front and hold them all (it did, for leaves of one chunk, whose loop of one trip it
    unrolls: a temporary of the leaves' size).
    """
    counts = jnp.zeros(2**_DIGIT_BITS + 1, jnp.int32)  # the last bin: entries off the prefix

    def count(c: jax.Array, item: Scored, start: jax.Array, width: int) -> jax.Array:
        bits = lax.bitcast_convert_type(item.chunk(start, width, _after(c)), itype)
        return _chunk_counts(c, _aligned_bits(bits.reshape(-1)), prefix, shift)

    for item in items:
        whole = item.size // _CHUNK
        if whole:

            def body(i: jax.Array, c: jax.Array, item: Scored = item) -> jax.Array:
                return count(c, item, i * _CHUNK, _CHUNK)

            counts = lax.fori_loop(0, whole, body, counts)
        if item.size > whole * _CHUNK:
            counts = count(counts, item, jnp.asarray(whole * _CHUNK), item.size - whole * _CHUNK)
    return counts[: 2**_DIGIT_BITS]


def kth_smallest_radix(scores: Sequence[Source], k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The k-th smallest (k >= 1) entry of non-negative float arrays, exactly, by radix select,
    and the number of entries at most it (the entries below the last digit's bin plus those
    in it and the bins under it).

    The integer view of a float >= 0 is monotone, so the answer is found digit by digit from
    the top, 16 bits at a time: 2 passes of a 65,536-bin count for 32-bit floats (4 for
    float64), against the 31 (63) counts of :func:`kth_smallest_bisect`. (8-bit digits, 4
    passes of 256 bins, measured 1.75x slower on this CPU: a pass costs its scatter-add.)
    When the first pass's total is not the number of entries it was given (an uneven
    sharding XLA padded, see :func:`_aligned_bits`) the result is a NaN k-th and a count
    of -1, never a wrong threshold.
    """
    items = [_scored(s) for s in scores]
    dtype = items[0].dtype
    itype = jnp.uint64 if dtype == jnp.float64 else jnp.uint32
    width = 8 * jnp.dtype(itype).itemsize
    items = _pack_scored(items)
    prefix, rank = jnp.zeros([], itype), jnp.asarray(k, jnp.int32)
    at_most, counted = rank, None
    for shift in range(width - _DIGIT_BITS, -1, -_DIGIT_BITS):
        cum = jnp.cumsum(_digit_counts(items, itype, prefix, shift))
        counted = cum[-1] if counted is None else counted  # the first pass counts all
        digit = jnp.sum(cum < rank).astype(jnp.int32)  # the digit whose bin holds rank
        below = jnp.where(digit > 0, cum[jnp.maximum(digit - 1, 0)], 0)
        at_most = k - rank + cum[digit]  # below the prefix, plus its bins up to the digit
        prefix, rank = (prefix << _DIGIT_BITS) | digit.astype(itype), rank - below
    # The first pass counts every entry it is given (the NaN alignment included); another
    # total means the devices counted entries that do not exist (an uneven sharding, see
    # _aligned_bits): a NaN k-th and a count of -1 say so instead of a wrong threshold.
    fed = sum(_fed(x.size) for x in items)
    kth = lax.bitcast_convert_type(prefix, dtype)
    ok = counted == fed
    return jnp.where(ok, kth, jnp.nan).astype(dtype), jnp.where(ok, at_most, -1)


def _fed(size: int) -> int:
    """The entries the count of an array of ``size`` scatters: its chunks, each aligned."""
    whole, rest = divmod(size, _CHUNK)
    return whole * _aligned_size(_CHUNK) + _aligned_size(rest)


def _is_prime(p: int) -> bool:
    return p > 1 and all(p % q for q in range(2, int(p**0.5) + 1))


def sample_stride(shapes: list[tuple[int, ...]], total: int) -> int:
    """The stride ``p`` of a systematic sample of about :data:`SAMPLE` of ``total`` entries:
    1 (no sample: the exact search) under ``16 * SAMPLE`` entries; else the smallest prime
    at least ``total / SAMPLE`` that divides no dimension of ``shapes``, so that every
    ``p``-th entry of a flattened leaf runs through all its columns (and rows) instead of
    down a few of them."""
    if total < 16 * SAMPLE:
        return 1
    p = -(-total // SAMPLE)
    while not _is_prime(p) or any(d % p == 0 for shape in shapes for d in shape if d > 1):
        p += 1
    return p


def _stride(items: list[Scored]) -> int:
    """The sample's stride for ``items``: it divides no dimension of their leaves, those
    packed into one array included (their columns would be sampled as the packed array's)."""
    shapes = [shape for x in items for shape in x.packed or [jnp.shape(a) for a in x.args]]
    return sample_stride(shapes, sum(x.size for x in items))


def samples(scores: list[Source]) -> bool:
    """Whether :func:`kth_smallest_sampled` samples ``scores`` (False: it is exact)."""
    return _stride([_scored(s) for s in scores]) > 1


def kth_smallest_sampled(scores: list[Source], k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """An estimate of the k-th smallest (k >= 1) entry and of the number of entries at most
    it: the exact ones of a systematic sample, every ``p``-th entry of each flattened array
    (:func:`sample_stride`; ``k`` and the count scaled by the sampled fraction), found by
    :func:`kth_smallest_radix` on the sample. Only the sampled entries are scored (a
    :class:`Scored` array's arguments are read at the sample's positions), so on one device
    a search reads about ``SAMPLE`` scattered entries of each argument, not all of them
    (XLA may gather a leaf sharded along a minor axis to flatten it, as for the radix
    select). Under ``16 * SAMPLE`` entries in all: the exact radix select.

    For ``s = k / n`` the sample's quantile is taken :data:`MARGIN` sds of its count under
    ``s`` (:func:`_cautious_rank`: ``3 sqrt(s (1 - s) / m) n`` for a sample of ``m``
    entries, about 0.6% of ``n`` at ``s = 0.5`` for ``m`` near ``SAMPLE``), so the entries at
    most it are ``k`` or fewer but for about one search in 700, and within about
    ``4 sqrt(s (1 - s) / m) n`` of ``k`` (the count's sd is ``sqrt(s (1 - s) / m) n``),
    when the entries' order has no period that the stride follows (a prime that divides no
    dimension). When the margin is more than the expected rank (``k`` under about
    ``11 / ratio``, ``ratio = m / n``), nothing: a k-th of ``-inf`` and a count of 0.
    """
    items = [_scored(s) for s in scores]
    total = sum(x.size for x in items)
    p = _stride(items)
    if p == 1:
        return kth_smallest_radix(items, k)
    start = p // 2
    parts = [
        Scored(x.fn, tuple(jnp.reshape(a, -1)[start::p] for a in x.args))
        for x in items
        if x.size > start
    ]
    sampled = sum(x.size for x in parts)
    ratio = sampled / total
    rank = _cautious_rank(jnp.asarray(k, jnp.float32), sampled, total)
    sample = jnp.concatenate([x.whole().reshape(-1) for x in parts])
    kth, at_most = kth_smallest_radix([sample], jnp.clip(rank, 1, sampled))
    estimate = jnp.round(at_most.astype(jnp.float32) / ratio)
    none = rank < 1  # the margin exceeds the expected rank: zero nothing
    kth = jnp.where(none, jnp.asarray(-jnp.inf, kth.dtype), kth)
    return kth, jnp.where(none, 0, jnp.clip(estimate, 0, total)).astype(jnp.int32)


def _cautious_rank(k: jax.Array, sampled: int, total: int) -> jax.Array:
    """The sample's rank for the ``k``-th smallest of ``total`` entries, :data:`MARGIN` sds of
    the sampled count under its expected value ``k * sampled / total``: the entries at most
    that sample quantile are over ``k`` with a probability of about 0.1%. A zero that
    cannot come back (``latent=False`` scores a zeroed weight 0) would otherwise stay past
    the ramp's end, over the exact last search's target (ties at 0)."""
    expected = k * (sampled / total)
    spread = MARGIN * jnp.sqrt(expected * jnp.maximum(1 - k / total, 0))
    return jnp.floor(expected - spread).astype(jnp.int32)


def kth_smallest(scores: list[Source], k: jax.Array, method: Method) -> tuple[jax.Array, jax.Array]:
    """The k-th smallest (k >= 1) entry of ``scores`` by ``method`` (see the functions above)
    and the number of entries at most it (int32)."""
    find = {
        "radix": kth_smallest_radix,
        "bisect": kth_smallest_bisect,
        "sort": kth_smallest_sort,
        "sample": kth_smallest_sampled,
    }[method]
    return find(scores, k)
