r"""Optax transforms: proximal steps placed last in a chain, and the loss-penalty baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_l1 import _checks, _operators, _step, _structures, _tree


class ProximalState(NamedTuple):
    """State of :func:`proximal`: the number of updates applied so far."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]


class L1ProxState(NamedTuple):
    """State of :func:`l1_prox`: the number of updates applied so far."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]


class GroupL1ProxState(NamedTuple):
    """State of :func:`group_l1_prox`: the number of updates applied so far, and with
    ``workspace=True`` one float32 (at least) buffer per regularized leaf (None elsewhere)
    that each step writes :math:`z = p + u` into."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    workspace: Any = None


class AddL1SubgradientState(NamedTuple):
    """State of :func:`add_l1_subgradient`: the number of updates applied so far."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]


def zero_count() -> jax.Array:
    """The count every state starts from."""
    return jnp.zeros([], jnp.int32)


def next_count(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum (``optax.safe_increment``)."""
    return jnp.asarray(optax.safe_increment(count))


def _counted_prox(
    prox: _step.ProxMap,
    learning_rate: optax.ScalarOrSchedule,
    mask: Any,
    state_cls: Callable[..., Any],
    name: str,
    workspace: bool = False,
    check: Callable[[Any, list[bool]], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """A transform whose state is its count (and with ``workspace``, buffers that hold
    :math:`z`: see :func:`_step.written_into`) and whose update is one :func:`prox_update`.
    ``check(params, selected)`` runs on every update's params and mask (it raises on what
    the prox, which sees only the selected leaves, cannot tell)."""
    _checks.check_number("learning_rate", learning_rate, schedule=True)
    _checks.check_mask(mask)
    workspace = _checks.check_flag("workspace", workspace)
    lr = _checks.as_schedule("learning_rate", learning_rate)

    def init_fn(params):
        if not workspace:
            return state_cls(count=zero_count())
        return state_cls(count=zero_count(), workspace=_workspace_like(params, mask))

    def with_points(z, step, count):
        return prox(z, step, count)[0], z

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_params(name, params)
        aligned = _tree.align(name, updates, params, mask)
        if check is not None:
            check(params, aligned.selected)
        step = _step.step_size(lr(state.count))
        if not workspace:
            updates, _ = _step.prox_update(prox, aligned, step, state.count, name=name)
            return updates, state_cls(count=next_count(state.count))
        into = _tree.flatten_like(
            aligned.treedef, state.workspace, f"`{name}`: the state's workspace must match params"
        )
        updates, z = _step.prox_update(
            with_points, aligned, step, state.count, name=name, into=into
        )
        z = jax.tree.leaves(z, is_leaf=_tree.is_none)
        kept = [
            x if w is not None and x is not None and x.dtype == w.dtype else w
            for w, x in zip(into, z, strict=True)
        ]
        return updates, state_cls(
            count=next_count(state.count), workspace=aligned.treedef.unflatten(kept)
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _workspace_like(params: Any, mask: Any) -> Any:
    """Zeros of each regularized leaf's shape in its compute dtype (None elsewhere)."""
    return _tree.on_regularized(
        params,
        _tree.resolve_mask(mask, params),
        lambda p: jnp.zeros_like(p, dtype=_tree.compute_dtype(jnp.result_type(p))),
    )


def proximal(
    prox: Callable[[Any, jax.Array], Any],
    *,
    learning_rate: optax.ScalarOrSchedule,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Applies any proximal operator after the update: the generic proximal step.

    Placed last in a chain, it turns the final update :math:`u` into

    .. math::

      u' = \operatorname{prox}(p + u, \eta_t) - p,

    so that ``optax.apply_updates(p, u')`` lands on :math:`\operatorname{prox}(p + u, \eta_t)`
    where :math:`\eta_t` is ``learning_rate`` at the current count.

    Args:
      prox: ``prox(tree, step) -> tree``, called on the regularized leaves (masked-out and
        integer leaves are ``None``), computed in at least float32.
      learning_rate: the optimizer's learning rate (number or schedule), passed as ``step``.
      mask: a pytree of bools (prefix of params; True = apply) or a callable
        ``params -> mask``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`ProximalState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> project = lambda z, step: optax.projections.projection_l1_ball(z, 1.0)
      >>> tx = optax.chain(optax.sgd(0.1), optax_l1.proximal(project, learning_rate=0.1))
      >>> params = {"w": jnp.array([2.0, -1.0, 0.5])}
      >>> updates, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      {'w': Array([1., 0., 0.], dtype=float32)}

    References:
      Parikh & Boyd, `Proximal Algorithms <https://web.stanford.edu/~boyd/papers/prox_algs.html>`_,
      2014.
    """
    _checks.check_callable("prox", prox, "prox(tree, step)")
    runtime = callable(learning_rate) or _checks.concrete(learning_rate) is None

    def apply(z, step, count):
        del count
        out = prox(z, step)
        if runtime:  # a bad run-time learning rate (NaN here) makes the update NaN
            out = jax.tree.map(lambda x: jnp.where(jnp.isnan(step), jnp.nan, x), out)
        return out, None

    return _counted_prox(apply, learning_rate, mask, ProximalState, "proximal")


def l1_prox(
    strength: optax.ScalarOrSchedule,
    *,
    learning_rate: optax.ScalarOrSchedule,
    l2: optax.ScalarOrSchedule = 0.0,
    nonnegative: bool = False,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal L1 (and elastic-net) shrinkage after each update: exact zeros.

    Placed last in a chain, after any optimizer with learning rate :math:`\eta_t`:

    .. math::

      p_{t+1} = \frac{S_{\eta_t \lambda_t}(p_t + u_t)}{1 + \eta_t \ell_2},
      \qquad S_\tau(z) = \operatorname{sign}(z)\max(|z| - \tau, 0),

    the proximal step for :math:`\lambda\|w\|_1 + \tfrac{\ell_2}{2}\|w\|_2^2`. With
    ``nonnegative=True`` :math:`S_\tau(z)` is :math:`\max(z - \tau, 0)` (non-negative lasso).
    The update returned is :math:`p_{t+1} - p_t`, so shrunk weights are exactly ``0.0``.
    With bfloat16/float16 params the update is in their dtype, so a survivor smaller than
    the rounding of :math:`p_{t+1} - p_t` can land on 0 too.

    Args:
      strength: :math:`\lambda \ge 0`, number or schedule. A zero stays zero while the
        optimizer's step is at most ``learning_rate * strength``: after SGD that is the
        loss's gradient (the Lasso's :math:`\lambda`, scikit-learn's ``alpha``); after
        Adam, its normalized step :math:`\hat m / (\sqrt{\hat v} + \epsilon)`,
        dimensionless (0.03 / 0.1 / 0.3 gave 55 / 89 / 94% kernel zeros on the digits
        MLP, 0.25 / 0.5 about 68 / 96% on the benchmarks' transformer;
        :func:`suggest_strength` gives a first value).
      learning_rate: the learning rate (or schedule) of the optimizer before it; the
        threshold is ``learning_rate * strength``.
      l2: ridge strength :math:`\ell_2 \ge 0` (TensorFlow's
        ``l2_regularization_strength``), number or schedule.
      nonnegative: keep weights :math:`\ge 0`.
      mask: a pytree of bools (prefix of params; True = regularized) or a callable
        ``params -> mask``, as in :func:`optax.masked`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`L1ProxState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax.chain(optax.sgd(0.5), optax_l1.l1_prox(1.0, learning_rate=0.5))
      >>> params = {"w": jnp.array([1.0, -0.25, 0.75])}
      >>> grads = {"w": jnp.zeros(3)}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      {'w': Array([0.5 , 0.  , 0.25], dtype=float32)}

    References:
      Beck & Teboulle, `A Fast Iterative Shrinkage-Thresholding Algorithm
      <https://doi.org/10.1137/080716542>`_, 2009;
      TensorFlow ``ProximalGradientDescentOptimizer``.
    """
    _checks.check_number("strength", strength, schedule=True)
    _checks.check_number("l2", l2, schedule=True)
    strength_at, l2_at = _checks.as_schedule("strength", strength), _checks.as_schedule("l2", l2)
    nonnegative = _checks.check_flag("nonnegative", nonnegative)
    no_l2 = _checks.is_literal_zero(l2)  # skip the divide statically

    def prox(z, step, count):
        l2_scale = 0.0 if no_l2 else step * l2_at(count)
        threshold = step * strength_at(count)
        return _operators.elastic_net_tree(z, threshold, l2_scale, nonnegative=nonnegative), None

    return _counted_prox(prox, learning_rate, mask, L1ProxState, "l1_prox")


def chain_l1_prox(
    optimizer: Callable[..., optax.GradientTransformation],
    *,
    learning_rate: optax.ScalarOrSchedule,
    strength: optax.ScalarOrSchedule,
    l2: optax.ScalarOrSchedule = 0.0,
    nonnegative: bool = False,
    mask: Any = None,
    **optimizer_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""An optimizer followed by :func:`l1_prox`, with the learning rate given once.

    ``chain_l1_prox(optax.sgd, learning_rate=lr, strength=s, momentum=0.9)`` is
    ``optax.chain(optax.sgd(learning_rate=lr, momentum=0.9), l1_prox(s,
    learning_rate=lr))``: the threshold :math:`\eta_t \lambda` uses the very number or
    schedule the optimizer steps with, so the two cannot drift apart (a chain written by
    hand takes it twice, and nothing can check that the two match: a transform in a chain
    does not see its siblings).

    Args:
      optimizer: an optax optimizer *factory* (``optax.sgd``, ``optax.adamw``, ...) that
        takes ``learning_rate`` as a keyword; not an optimizer already built.
      learning_rate: number or schedule, passed to both.
      strength: :math:`\lambda \ge 0`, number or schedule (:func:`l1_prox`'s, with its
        units).
      l2: :func:`l1_prox`'s ridge strength.
      nonnegative: :func:`l1_prox`'s ``nonnegative``.
      mask: :func:`l1_prox`'s ``mask`` (what is shrunk).
      **optimizer_kwargs: the optimizer's other arguments.

    Returns:
      The ``optax.chain`` of the two, an :class:`optax.GradientTransformationExtraArgs`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.chain_l1_prox(optax.sgd, learning_rate=0.5, strength=1.0)
      >>> params = {"w": jnp.array([1.0, -0.25, 0.75])}
      >>> updates, state = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      {'w': Array([0.5 , 0.  , 0.25], dtype=float32)}
    """
    if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        hint = ""
        if isinstance(optimizer, optax.GradientTransformation):
            # optax.inject_hyperparams calls a callable argument as a schedule.
            hint = " (under `optax.inject_hyperparams`, pass `static_args=('optimizer',)`)"
        raise TypeError(
            "`optimizer` must be an optax optimizer factory such as optax.adam (it is "
            f"called with the learning rate), got {optimizer!r}{hint}"
        )
    if set(optimizer_kwargs) == {"optimizer_kwargs"}:
        # optax.inject_hyperparams binds the signature and passes **optimizer_kwargs back as
        # one keyword of that name.
        optimizer_kwargs = dict(optimizer_kwargs["optimizer_kwargs"])
    prox = l1_prox(strength, learning_rate=learning_rate, l2=l2, nonnegative=nonnegative, mask=mask)
    built = optimizer(learning_rate=learning_rate, **optimizer_kwargs)
    _checks.check_optimizer("optimizer", built)
    return optax.chain(built, prox)


def group_l1_prox(
    strength: optax.ScalarOrSchedule,
    *,
    learning_rate: optax.ScalarOrSchedule,
    axis: _operators.Axis | None = None,
    structure: Any = None,
    mask: Any = None,
    workspace: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Group-lasso proximal step after each update: whole groups become exactly zero.

    .. math::

      (p_{t+1})_g = z_g \max\left(0, 1 - \frac{\eta_t \lambda_t}{\|z_g\|_2}\right),
      \qquad z = p_t + u_t,

    the proximal step for :math:`\lambda \sum_g \|w_g\|_2`, groups formed per leaf by
    reducing over ``axis``, or given by ``structure`` (blocks, heads, and units coupled
    across leaves: see :func:`group_soft_threshold`). For a Dense kernel ``(in, out)``,
    ``axis=0`` switches off whole output units. Use ``mask`` to skip leaves (biases) the
    axis does not fit.

    Args:
      strength: :math:`\lambda \ge 0`, number or schedule: a group stays off while its
        gradient's norm is at most :math:`\lambda` (after SGD, in the loss's units; after
        Adam, dimensionless against its normalized step: ``examples/flax_nnx.py`` uses 4
        on its MLP units after Adam).
      learning_rate: the learning rate (or schedule) of the optimizer before it.
      axis: int or tuple of ints, the axes reduced to form each group.
      structure: instead of ``axis``: a :class:`Structure`, a pytree prefix of them (None:
        not regularized), or a callable ``params -> that``.
      mask: a pytree of bools or a callable, as in :func:`l1_prox`.
      workspace: keep one buffer per regularized leaf (its shape, in at least float32) in
        the state and compute :math:`z = p + u` into it. The group norms read :math:`z`, so
        XLA materializes it; without a workspace each step allocates a fresh temporary of
        the leaf's size, which on CPU costs more than the step's arithmetic
        (``benchmarks/RESULTS.md``: 2.4-2.7x adam without, 1.7-1.75x with, one 16M leaf). The
        buffer is reused only when the step donates the optimizer state
        (``jax.jit(..., donate_argnums=...)``); it adds the params' size (in float32) to the
        state and to its checkpoints. Same results either way.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`GroupL1ProxState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.group_l1_prox(1.0, learning_rate=1.0, axis=0)
      >>> params = {"kernel": jnp.array([[3.0, 0.1], [4.0, 0.1]])}
      >>> updates, _ = tx.update({"kernel": jnp.zeros((2, 2))}, tx.init(params), params)
      >>> optax.apply_updates(params, updates)
      {'kernel': Array([[2.4, 0. ],
             [3.2, 0. ]], dtype=float32)}

    References:
      Yuan & Lin, `Model selection and estimation in regression with grouped variables
      <https://doi.org/10.1111/j.1467-9868.2005.00532.x>`_, 2006.
    """
    _checks.check_number("strength", strength, schedule=True)
    groups = _operators.structure_of(axis, structure)
    strength_at = _checks.as_schedule("strength", strength)

    def prox(z, step, count):
        t = step * strength_at(count)
        return _operators.group_threshold_tree(z, t, structure=groups), None

    def check(params, selected):  # a coupled group the mask splits (prox sees None there)
        _structures.resolve("structure", groups, params, selected)

    return _counted_prox(
        prox,
        learning_rate,
        mask,
        GroupL1ProxState,
        "group_l1_prox",
        workspace=workspace,
        check=check,
    )


def add_l1_subgradient(
    strength: optax.ScalarOrSchedule, *, mask: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Adds the L1 subgradient :math:`\lambda\,\operatorname{sign}(p)` to the gradient.

    .. math::

      g' = g + \lambda_t \operatorname{sign}(p)

    This is the loss-penalty approach (Keras ``regularizers.l1``, the usual PyTorch loop),
    placed *before* the optimizer. It does not produce exact zeros: weights oscillate
    around 0. Kept for comparison and for porting code; prefer :func:`l1_prox`.

    Args:
      strength: :math:`\lambda \ge 0`, number or schedule, in the units of the loss's
        gradient (the loss-penalty subgradient :math:`\lambda\operatorname{sign}(w)`).
      mask: a pytree of bools or a callable, as in :func:`l1_prox`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`AddL1SubgradientState`.

    Examples:
      >>> import jax.numpy as jnp, optax_l1
      >>> tx = optax_l1.add_l1_subgradient(0.1)
      >>> params = {"w": jnp.array([2.0, 0.0, -3.0])}
      >>> g, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
      >>> g
      {'w': Array([1.1, 1. , 0.9], dtype=float32)}
    """
    _checks.check_number("strength", strength, schedule=True)
    _checks.check_mask(mask)
    strength_at = _checks.as_schedule("strength", strength)

    def subgradient_step(u, p, s):
        cdt = _tree.compute_dtype(jnp.result_type(p, u))
        sub = _operators.l1_subgradient(jnp.asarray(p, cdt))
        return (jnp.asarray(u, cdt) + s * sub).astype(jnp.result_type(u))

    def init_fn(params):
        del params
        return AddL1SubgradientState(count=zero_count())

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_params("add_l1_subgradient", params)
        aligned = _tree.align("add_l1_subgradient", updates, params, mask)
        s = jnp.asarray(strength_at(state.count))
        new = [
            subgradient_step(u, p, s) if sel else None
            for u, p, sel in zip(aligned.updates, aligned.params, aligned.selected, strict=True)
        ]
        return aligned.merge(new), AddL1SubgradientState(count=next_count(state.count))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
