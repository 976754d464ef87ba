"""Exact selection: the k-th smallest entry of several non-negative float arrays."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

Method = Literal["bisect", "sort"]
METHODS: tuple[str, ...] = ("bisect", "sort")


def kth_smallest_bisect(scores: list[jax.Array], k: jax.Array) -> jax.Array:
    """The k-th smallest (k >= 1) entry of non-negative float arrays, exactly.

    Bisection on bit patterns: for floats >= 0 the integer view is monotone, so 31 (63 for
    float64) fixed halvings of ``[-1, bits(max)]`` land on the exact value. Each halving
    is one global count ``sum(bits <= mid)``: O(31 n) work made of reductions only, so
    sharded leaves need one scalar all-reduce per halving and nothing is gathered.
    """
    dtype = scores[0].dtype
    itype, halvings = (jnp.int64, 63) if dtype == jnp.float64 else (jnp.int32, 31)
    bits = [lax.bitcast_convert_type(s, itype) for s in scores]
    hi = jnp.max(jnp.stack([jnp.max(b) for b in bits]))

    def halve(_, lo_hi):
        lo, hi = lo_hi
        mid = lo + (hi - lo) // 2
        enough = sum(jnp.sum(b <= mid, dtype=jnp.int32) for b in bits) >= k
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    _, hi = lax.fori_loop(0, halvings, halve, (jnp.asarray(-1, itype), hi))
    return lax.bitcast_convert_type(hi, dtype)


def kth_smallest_sort(scores: list[jax.Array], k: jax.Array) -> jax.Array:
    """The k-th smallest (k >= 1) entry by one sort of all entries: O(n log n), gathers."""
    flat = jnp.sort(jnp.concatenate([s.ravel() for s in scores]))
    return flat[jnp.clip(k - 1, 0, flat.size - 1)]


def kth_smallest(scores: list[jax.Array], k: jax.Array, method: Method) -> jax.Array:
    """The k-th smallest (k >= 1) entry of ``scores`` by ``method`` (see the functions above)."""
    find = kth_smallest_bisect if method == "bisect" else kth_smallest_sort
    return find(scores, k)
