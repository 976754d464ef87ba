"""Sparsity metrics: the fraction of exact zeros, in total and per leaf."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_l1 import _checks, _masks, _spectral, _structures, _tree


def _selected(params: Any, mask: Any) -> list[tuple[str, jax.Array]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_tree.is_none)
    keep = _tree.resolve_mask(mask, params)
    return [
        (_masks.path_name(path), x)
        for (path, x), m in zip(flat, keep, strict=True)
        if m and x is not None and _tree.is_inexact(x)
    ]


def _zeros(x: jax.Array) -> jax.Array:
    return jnp.sum(_tree.is_zero(x), dtype=jnp.int32)


def sparsity(params: Any, *, mask: Any = None) -> jax.Array:
    r"""The fraction of entries that are exactly zero, over the inexact leaves of ``params``.

    .. math::

      \text{sparsity}(w) = \frac{\#\{i : w_i = 0\}}{\#\{i\}}

    Jittable; counts are global, so for sharded params the result covers all devices.

    Args:
      params: any pytree of arrays.
      mask: a pytree of bools or a callable selecting the leaves counted.

    Returns:
      A float32 scalar in ``[0, 1]`` (0 when no leaf is selected).

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> optax_l1.sparsity({"w": jnp.array([0.0, 1.0, 0.0, 2.0]), "step": jnp.array(0)})
      Array(0.5, dtype=float32)
    """
    leaves = _selected(params, mask)
    size = sum(int(np.size(x)) for _, x in leaves)
    if size == 0:
        return jnp.zeros((), jnp.float32)
    # int32 per leaf, summed in float32: no overflow past 2**31 zeros in a large model.
    zeros = sum((_zeros(x).astype(jnp.float32) for _, x in leaves), jnp.zeros((), jnp.float32))
    return zeros / jnp.float32(size)


def sparsity_report(
    params: Any,
    *,
    mask: Any = None,
    structure: Any = None,
    n_of_m: tuple[int, int, int] | None = None,
    rank: bool = False,
) -> dict[str, jax.Array]:
    """Per-leaf fraction of exact zeros, keyed by path, plus ``"total"``; ready to log.

    Jittable (the keys are static), so a training step can return it. With ``structure``,
    also the fraction of groups that are entirely zero: ``"<path>:groups"`` for each leaf
    with a structure and ``"couple:<label>"`` for each coupled label (a group zero on all
    its leaves). With ``n_of_m=(n, m, axis)``, ``"<path>:n_of_m"`` is the fraction of the
    blocks of ``m`` along ``axis`` with at most ``n`` non-zeros (1.0: N:M compliant).
    With ``rank=True``, ``"<path>:rank"`` is the numerical rank of each matrix leaf (two or
    more dimensions; the mean over a stack of matrices), as :func:`numpy.linalg.matrix_rank`.

    Args:
      params: any pytree of arrays.
      mask: a pytree of bools or a callable selecting the leaves reported.
      structure: optional; a :class:`Structure`, a pytree prefix of them (None: no group
        count for that leaf) or a callable ``params -> that``.
      n_of_m: optional ``(n, m, axis)``: report N:M compliance.
      rank: report the rank of the matrix leaves (one SVD each).

    Returns:
      A dict ``{"Dense_0/kernel": 0.93, ..., "total": 0.9}`` of float32 scalars.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> params = {"dense": {"kernel": jnp.array([[0.0, 1.0], [0.0, 0.0]]),
      ...                     "bias": jnp.array([1.0, 2.0])}}
      >>> {k: float(v) for k, v in optax_l1.sparsity_report(params).items()}
      {'dense/bias': 0.0, 'dense/kernel': 0.75, 'total': 0.5}
      >>> report = optax_l1.sparsity_report(
      ...     params, structure={"dense": {"kernel": optax_l1.Groups(0), "bias": None}}
      ... )
      >>> float(report["dense/kernel:groups"])  # column 0 is all zero
      0.5
    """
    report = {}
    for name, x in _selected(params, mask):
        if name in report or name == "total":
            raise ValueError(
                f"`params` has two leaves named {name!r} (or a leaf named 'total') in the "
                "report; rename one of them"
            )
        report[name] = _zeros(x).astype(jnp.float32) / jnp.float32(max(int(np.size(x)), 1))
    if structure is not None:
        report.update(_group_report(params, mask, structure))
    if n_of_m is not None:
        report.update(_n_of_m_report(params, mask, n_of_m))
    if _checks.check_flag("rank", rank):
        for name, x in _selected(params, mask):
            if jnp.ndim(x) >= 2:
                report[name + ":rank"] = _mean_rank(x)
    report["total"] = sparsity(params, mask=mask)
    return report


def _mean_rank(x: jax.Array) -> jax.Array:
    """The mean numerical rank of the matrices of ``x`` (0 for none); NaN where a matrix
    holds a NaN or an inf (its SVD has no meaning: a diverged layer must not read as low
    rank)."""
    ranks = _spectral.matrix_rank(x).astype(jnp.float32)
    if ranks.size == 0:
        return jnp.float32(0.0)
    ranks = jnp.where(jnp.all(jnp.isfinite(x), axis=(-2, -1)), ranks, jnp.nan)
    return jnp.mean(ranks)


def _zero_groups(lay: _structures.Layout, x: jax.Array) -> jax.Array:
    """True per group (``lay.groups`` shape) where every entry is exactly zero."""
    nonzero = (~_tree.is_zero(x)).reshape(lay.split)
    return ~jnp.any(nonzero, axis=lay.reduce).reshape(lay.groups)


def _group_report(params: Any, mask: Any, structure: Any) -> dict[str, jax.Array]:
    flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_tree.is_none)
    keep = _tree.resolve_mask(mask, params)
    live = [
        m and x is not None and _tree.is_inexact(x) for (_, x), m in zip(flat, keep, strict=True)
    ]
    sts = _structures.resolve("structure", structure, params, live)
    leaves = [x for _, x in flat]
    lays = _structures.layouts(sts, leaves, _structures.leaf_names(params))
    _structures.check_coupled(sts, lays)
    out, coupled = {}, {}
    for (path, x), st, lay in zip(flat, sts, lays, strict=True):
        if lay is None:
            continue
        zero = _zero_groups(lay, x)
        out[_masks.path_name(path) + ":groups"] = _fraction(zero)
        if st.couple is not None:
            coupled[st.couple] = zero if st.couple not in coupled else coupled[st.couple] & zero
    for label, zero in coupled.items():
        out["couple:" + label] = _fraction(zero)
    return out


def _fraction(flags: jax.Array) -> jax.Array:
    """The fraction of True (0 for no entry, as the per-leaf zero fraction)."""
    if flags.size == 0:
        return jnp.zeros((), jnp.float32)
    return jnp.mean(flags, dtype=jnp.float32)


def _n_of_m_report(params: Any, mask: Any, n_of_m: Any) -> dict[str, jax.Array]:
    if not (isinstance(n_of_m, tuple) and len(n_of_m) == 3):
        raise TypeError(f"`n_of_m` must be a tuple (n, m, axis), got {n_of_m!r}")
    n, m, axis = n_of_m
    _checks.check_number("n_of_m[0] (n)", n, _checks.at_least(0), integer=True)
    _checks.check_number("n_of_m[1] (m)", m, _checks.at_least(1), integer=True)
    if n > m:
        raise ValueError(f"`n_of_m`: n must be at most m, got {n_of_m!r}")
    blocks = _structures.Blocks(int(m), axis=axis)
    out = {}
    for name, x in _selected(params, mask):
        lay = _structures.layouts([blocks], [x], [name], "n_of_m")[0]
        assert lay is not None
        count = jnp.sum((~_tree.is_zero(x)).reshape(lay.split), axis=lay.reduce)
        out[name + ":n_of_m"] = _fraction(count <= n)
    return out
