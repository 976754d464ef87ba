r"""Penalty functions: the L1 norm and the group-lasso norm of a pytree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optax_l1 import _checks, _operators, _structures, _tree


@jax.custom_jvp
def abs_min_norm(x: jax.Array) -> jax.Array:
    """|x| whose derivative at 0 is 0 (the minimum-norm subgradient), not JAX's 1."""
    return jnp.abs(x)


@abs_min_norm.defjvp
def _abs_min_norm_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    unit = _operators.l1_subgradient(x)
    return jnp.abs(x), jnp.real(jnp.conj(unit) * dx)


def l1_penalty(params: Any, strength: Any = 0.01, *, mask: Any = None) -> jax.Array:
    r"""The L1 penalty :math:`\lambda \sum_i |w_i|` over every inexact leaf of a pytree.

    .. math::

      \Omega(w) = \sum_{\text{leaves } \ell} \lambda_\ell \sum_i |w_{\ell,i}|

    Jittable and differentiable; the gradient at exactly ``0`` is ``0`` (the minimum-norm
    subgradient, as ``jnp.sign``), not JAX's default of ``1`` for ``abs``. Accumulates in
    at least float32. Integer leaves, ``None`` leaves and masked-out leaves contribute 0.

    Args:
      params: any pytree (dict, list, Flax ``FrozenDict``, NNX ``State``...).
      strength: :math:`\lambda \ge 0`, a scalar or a pytree prefix of ``params`` (one
        number per leaf or sub-tree; known only at run time, a bad one makes the result NaN).
      mask: a pytree of bools (prefix of ``params``; True = penalized) or a callable
        ``params -> mask``, as in :func:`optax.masked`.

    Returns:
      A scalar array.

    Examples:
      >>> import numpy as np
      >>> import optax_l1
      >>> w = [np.array([[1.0, -2.0], [0.5, 0.0]]), np.array([-1.0, 3.0])]
      >>> print(f"{optax_l1.l1_penalty(w, 0.01):.3f}")
      0.075

    References:
      Tibshirani, `Regression shrinkage and selection via the lasso
      <https://doi.org/10.1111/j.2517-6161.1996.tb02080.x>`_, 1996.
    """
    strength = _checks.checked_tree("strength", strength, scalar=True)
    return _weighted_sum(params, strength, mask, lambda z: jnp.sum(abs_min_norm(z)), "strength")


def group_l1_penalty(
    params: Any,
    strength: Any = 0.01,
    *,
    axis: _operators.Axis | None = None,
    structure: Any = None,
    mask: Any = None,
) -> jax.Array:
    r"""The group-lasso penalty :math:`\lambda \sum_g \|w_g\|_2`.

    Groups are formed per leaf by reducing over ``axis``, or given by ``structure`` (see
    :func:`optax_l1.group_soft_threshold`; a group coupled across leaves counts once, with
    the strength of the first of its leaves). The gradient is finite (zero) for a group
    that is exactly zero.

    Args:
      params: any pytree.
      strength: :math:`\lambda \ge 0`, a scalar or a pytree prefix of ``params`` (one
        number per leaf or sub-tree; known only at run time, a bad one makes the result NaN).
      axis: an int or tuple of ints reduced to form each group.
      structure: instead of ``axis``, a :class:`Structure`, a pytree prefix of them, or a
        callable ``params -> that``.
      mask: a pytree of bools or a callable, as in :func:`l1_penalty`.

    Returns:
      A scalar array.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax_l1
      >>> w = {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]])}  # column norms 5 and 1
      >>> optax_l1.group_l1_penalty(w, 0.5, axis=0)
      Array(3., dtype=float32)

    References:
      Yuan & Lin, `Model selection and estimation in regression with grouped variables
      <https://doi.org/10.1111/j.1467-9868.2005.00532.x>`_, 2006.
    """
    strength = _checks.checked_tree("strength", strength, scalar=True)
    structure = _operators.structure_of(axis, structure)
    leaves = jax.tree.leaves(params, is_leaf=_tree.is_none)
    weights = _tree.broadcast_prefix("strength", strength, params)
    keep = _tree.resolve_mask(mask, params)
    live = [m and z is not None and _tree.is_inexact(z) for z, m in zip(leaves, keep, strict=True)]
    sts, zs, _, sqs = _structures.grouped(structure, params, live)
    total, seen = jnp.zeros((), jnp.float32), set()
    for st, w, sq, z in zip(sts, weights, sqs, zs, strict=True):
        if sq is None or z is None or (st.couple is not None and st.couple in seen):
            continue
        seen.add(st.couple)
        norms = _structures.safe_sqrt(sq)
        total = total + jnp.asarray(w, jnp.real(z).dtype) * jnp.sum(norms)
    return total


def _weighted_sum(params: Any, strength: Any, mask: Any, reduce_leaf, name: str) -> jax.Array:
    leaves = jax.tree.leaves(params, is_leaf=_tree.is_none)
    weights = _tree.broadcast_prefix(name, strength, params)
    keep = _tree.resolve_mask(mask, params)
    total = jnp.zeros((), jnp.float32)
    for z, s, m in zip(leaves, weights, keep, strict=True):
        if z is None or not m or not _tree.is_inexact(z):
            continue
        zc = _tree.widened(z)
        total = total + jnp.asarray(s, jnp.real(zc).dtype) * reduce_leaf(zc)
    return total
