"""Mask helpers: choose which leaves are regularized (kernels, not biases or norm scales)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from optax_l1 import _checks, _tree


def path_name(path: Sequence[Any]) -> str:
    """A '/'-joined name for a key path: ``('Dense_0', 'kernel')`` -> ``'Dense_0/kernel'``.

    Works for dict keys, attribute keys, sequence indices. An NNX ``Variable``'s ``.value``
    (an attribute ``value`` that ends a path of more than one key) is dropped; an attribute
    named ``value`` elsewhere (an Equinox ``self.value = eqx.nn.Linear(...)``) is kept.
    """
    parts = []
    for i, k in enumerate(path):
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            if k.name != "value" or i < len(path) - 1 or i == 0:
                parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            parts.append(str(k.key))
        else:
            parts.append(str(k))
    return "/".join(parts)


def kernel_mask(
    params: Any,
    *,
    min_ndim: int = 2,
    exclude: str | None = r"(?i)(^|/)(bias|scale|[^/]*embed[^/]*|wte|wpe)(/|$)",
) -> Any:
    """True for weight matrices and kernels; False for biases, norm scales, embeddings, the rest.

    A leaf is regularized when it is a float/complex array with at least ``min_ndim``
    dimensions and its '/'-joined path (as in :func:`sparsity_report`) does not match the
    regular expression ``exclude`` (:func:`re.search`, as in :func:`path_mask`). The result has the
    structure of ``params`` (dict, Flax ``FrozenDict``, NNX ``State``), so it can be passed
    as ``mask=`` to any transform here or to :func:`optax.masked`; the function itself
    can be passed as the mask callable (``mask=optax_l1.kernel_mask``).

    Args:
      params: any pytree of arrays.
      min_ndim: the fewest dimensions a regularized leaf has (2: matrices and conv kernels).
      exclude: a regular expression; matching leaves are never regularized. The default
        (case-insensitive) excludes any path component named ``bias`` or ``scale`` and
        embedding tables: a component that contains ``embed`` (``Embed_0/embedding``,
        ``embed_tokens``, ``word_embeddings``) or is ``wte``/``wpe``. An embedding row
        that has had no gradient yet is pruned at once by :func:`proximal_adam`, and
        embeddings are rarely what one wants to shrink. To include them,
        ``exclude=r"(?i)(^|/)(bias|scale)(/|$)"``; ``None``: no exclusion.

    Stacked layers (a scan over layers, ``eqx.filter_vmap``-built blocks, ``hk.layer_stack``)
    carry a leading layer axis, so their biases and norm scales have 2 dimensions: those
    named ``bias``/``scale`` (Flax) are still left out by name, but Equinox's LayerNorm
    ``weight`` or Haiku's ``b`` and LayerNorm ``offset`` would be selected. For such trees
    pass ``min_ndim=3`` when every kernel is stacked (an unstacked 2-D kernel, a head, is
    then left out too) or use :func:`path_mask`, and check the result.

    Returns:
      A pytree of Python bools like ``params``.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
      ...           "norm": {"scale": jnp.ones(2)}}
      >>> optax_l1.kernel_mask(params)
      {'dense': {'bias': False, 'kernel': True}, 'norm': {'scale': False}}
      >>> optax_l1.kernel_mask({"Embed_0": {"embedding": jnp.ones((5, 2))}})
      {'Embed_0': {'embedding': False}}
    """
    if not isinstance(min_ndim, int) or isinstance(min_ndim, bool):
        raise TypeError(f"`min_ndim` must be an int, got {min_ndim!r}")
    _checks.check_number("min_ndim", min_ndim, _checks.at_least(0), integer=True)
    exc = _checks.check_regex("exclude", exclude)

    def leaf_mask(path, x):
        if x is None:
            return None
        excluded = exc is not None and exc.search(path_name(path)) is not None
        return bool(_tree.is_inexact(x) and jnp.ndim(x) >= min_ndim and not excluded)

    return jax.tree_util.tree_map_with_path(leaf_mask, params, is_leaf=_tree.is_none)


def path_mask(params: Any, include: str = ".*", exclude: str | None = None) -> Any:
    """True for leaves whose '/'-joined path matches ``include`` and not ``exclude``.

    Paths are written as in :func:`sparsity_report` (``"Dense_0/kernel"``); matching uses
    :func:`re.search`.

    Args:
      params: any pytree of arrays.
      include: a regular expression a regularized leaf's path must match.
      exclude: a regular expression that excludes a leaf even when ``include`` matches.

    Returns:
      A pytree of Python bools like ``params``.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> params = {"encoder": {"kernel": jnp.ones((3, 2))}, "head": {"kernel": jnp.ones(2)}}
      >>> optax_l1.path_mask(params, include="^encoder/")
      {'encoder': {'kernel': True}, 'head': {'kernel': False}}
    """
    inc = _checks.check_regex("include", include)
    exc = _checks.check_regex("exclude", exclude)
    if inc is None:
        raise TypeError("`include` must be a regular expression (str), got None")

    def leaf_mask(path, x):
        if x is None:
            return None
        name = path_name(path)
        return bool(inc.search(name)) and not (exc is not None and exc.search(name))

    return jax.tree_util.tree_map_with_path(leaf_mask, params, is_leaf=_tree.is_none)
