"""Sparsity metrics: the fraction of exact zeros, in total and per leaf."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_l1 import _masks, _tree


def _selected(params: Any, mask: Any) -> list[tuple[str, jax.Array]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_tree.is_none)
    keep = _tree.resolve_mask(mask, params)
    return [
        (_masks.path_name(path), x)
        for (path, x), m in zip(flat, keep, strict=True)
        if m and x is not None and _tree.is_inexact(x)
    ]


def _zeros(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.asarray(x) == 0, dtype=jnp.int32)


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


def sparsity_report(params: Any, *, mask: Any = None) -> dict[str, jax.Array]:
    """Per-leaf fraction of exact zeros, keyed by path, plus ``"total"``; ready to log.

    Jittable (the keys are static), so a training step can return it.

    Args:
      params: any pytree of arrays.
      mask: a pytree of bools or a callable selecting the leaves reported.

    Returns:
      A dict ``{"Dense_0/kernel": 0.93, ..., "total": 0.9}`` of float32 scalars.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> params = {"dense": {"kernel": jnp.array([[0.0, 1.0], [0.0, 0.0]]),
      ...                     "bias": jnp.array([1.0, 2.0])}}
      >>> {k: float(v) for k, v in optax_l1.sparsity_report(params).items()}
      {'dense/bias': 0.0, 'dense/kernel': 0.75, 'total': 0.5}
    """
    report = {}
    for name, x in _selected(params, mask):
        if name in report or name == "total":
            raise ValueError(
                f"`params` has two leaves named {name!r} (or a leaf named 'total') in the "
                "report; rename one of them"
            )
        report[name] = _zeros(x).astype(jnp.float32) / jnp.float32(max(int(np.size(x)), 1))
    report["total"] = sparsity(params, mask=mask)
    return report
