r"""Low rank as L1 on the spectrum: maps on the singular values of each matrix leaf.

A leaf of two or more dimensions is a stack of matrices over its last two axes. Its SVD
``Z = U diag(s) V^T`` is computed in at least float32; the maps change ``s`` only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optax_l1 import _checks, _operators, _tree


def _matrix(z: jax.Array, name: str) -> None:
    if z.ndim < 2:
        raise ValueError(
            f"`{name}` acts on matrices (the last two axes of a leaf); got a leaf of shape "
            f"{z.shape}: exclude it with `mask` or a sub-tree"
        )


def _spectral_map(z: jax.Array, shrink, name: str) -> jax.Array:
    _matrix(z, name)
    u, s, vt = jnp.linalg.svd(z, full_matrices=False)
    return jnp.einsum("...ik,...k,...kj->...ij", u, shrink(s).astype(u.dtype), vt)


def nuclear_threshold(tree: Any, threshold: Any) -> Any:
    r"""The proximal operator of the nuclear norm: soft-thresholds each matrix's singular
    values.

    .. math::

      \operatorname{prox}(Z) = U \operatorname{diag}(\max(s - \tau, 0)) V^\top
      = \operatorname*{argmin}_W \tfrac12 \|W - Z\|_F^2 + \tau \|W\|_*

    the singular value thresholding of Cai, Candès & Shen: the rank drops by the number
    of singular values at most :math:`\tau`. Leaves of 3+ dimensions are stacks of
    matrices over their last two axes; a leaf of fewer than two raises (exclude it). With
    :func:`proximal`, the low-rank training step for :math:`\lambda\|W\|_*`.

    Args:
      tree: a pytree of matrices.
      threshold: :math:`\tau \ge 0`, a scalar or a pytree prefix.

    Returns:
      A pytree like ``tree``.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> optax_l1.nuclear_threshold(jnp.diag(jnp.array([3.0, 1.0, 0.5])), 1.0)
      Array([[2., 0., 0.],
             [0., 0., 0.],
             [0., 0., 0.]], dtype=float32)

    References:
      Cai, Candès & Shen, `A singular value thresholding algorithm for matrix completion
      <https://arxiv.org/abs/0810.3286>`_, 2010.
    """
    threshold = _checks.checked_tree("threshold", threshold)
    t = _tree.broadcast_prefix("threshold", threshold, tree)

    def leaf(z, ti):
        if jnp.ndim(ti) != 0:
            raise ValueError(
                f"`threshold` must be one number per leaf (a scalar or a pytree prefix of "
                f"scalars), got an array of shape {jnp.shape(ti)}"
            )
        return _spectral_map(z, lambda s: jnp.maximum(s - ti, 0.0), "nuclear_threshold")

    return _operators.map_inexact(leaf, tree, t)


def rank_projection(tree: Any, rank: int) -> Any:
    r"""The nearest matrix of rank at most ``rank`` (Eckart–Young): keeps the ``rank``
    largest singular values of each matrix and zeroes the rest.

    With :func:`proximal` it holds a rank constraint on every step (projected gradient).
    Leaves of 3+ dimensions are stacks of matrices over their last two axes.

    Args:
      tree: a pytree of matrices.
      rank: the rank kept, ``>= 0``.

    Returns:
      A pytree like ``tree``.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> optax_l1.rank_projection(jnp.diag(jnp.array([3.0, 1.0, 0.5])), 1)
      Array([[3., 0., 0.],
             [0., 0., 0.],
             [0., 0., 0.]], dtype=float32)
    """
    r = _checks.static_int("rank", rank, _checks.at_least(0))

    def keep(s):  # s is sorted in decreasing order
        return jnp.where(jnp.arange(s.shape[-1]) < r, s, 0.0)

    return _operators.map_inexact(lambda z: _spectral_map(z, keep, "rank_projection"), tree)


def matrix_rank(x: jax.Array) -> jax.Array:
    """The numerical rank of each matrix: singular values above ``max(m, n) * eps * s_max``
    (NumPy's default tolerance, with the ``eps`` of the leaf's own dtype)."""
    z = jnp.asarray(x)
    _matrix(z, "rank")
    if z.size == 0:
        return jnp.zeros(z.shape[:-2], jnp.int32)
    eps = jnp.finfo(z.dtype).eps  # the leaf's own precision: bf16 values are bf16-rounded
    z = _tree.widened(z)
    s = jnp.linalg.svd(z, compute_uv=False)
    tol = max(z.shape[-2:]) * eps * jnp.max(s, axis=-1, keepdims=True)
    return jnp.sum(s > tol, axis=-1)
