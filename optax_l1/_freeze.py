r"""Freezing the support of any proximal step: from a chosen step, zeros stay zero and the
other weights take the optimizer's update unshrunk (the fine-tuning phase of pruning)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_l1 import _checks, _target, _transforms, _tree

_NAME = "freeze_support"
# States of the proximal steps placed after an optimizer: their input is the optimizer's
# step, which the freeze can apply unshrunk.
_STEPS = (
    _transforms.L1ProxState,
    _transforms.GroupL1ProxState,
    _transforms.ProximalState,
)
# Wrappers that pass their input to the transform they wrap (its state is `inner_state`).
# Not optax.apply_if_finite: the freeze applies the incoming update itself, so a step the
# wrapper rejected would be taken (wrap the whole chain in it instead).
_WRAPPERS = (
    optax.InjectHyperparamsState,
    optax.InjectStatefulHyperparamsState,
    optax.MaskedState,
)


class FreezeSupportState(NamedTuple):
    """State of :func:`freeze_support`: the count and the wrapped transform's state."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    inner_state: Any


def _is_step(state: Any) -> bool:
    """Whether ``state`` is that of proximal steps whose input is an optimizer's step:
    :data:`_STEPS`, ``sparsity_target`` without ``optimizer``, this wrapper, each alone,
    under :data:`_WRAPPERS`, or chained together (a tuple of them)."""
    if isinstance(state, _STEPS):
        return True
    if isinstance(state, _target.SparsityTargetState):
        return isinstance(state.inner_state, optax.EmptyState)
    if isinstance(state, (*_WRAPPERS, FreezeSupportState)):
        return _is_step(state.inner_state)
    if type(state) is tuple:  # optax.chain's state
        return bool(state) and all(_is_step(s) for s in state)
    if isinstance(state, optax.MultiTransformState):  # every part a proximal step
        # (an EmptyState part may be identity, set_to_zero or scale: the freeze cannot tell)
        return all(_is_step(getattr(s, "inner_state", s)) for s in state.inner_states.values())
    return False


def _check_inner(inner_state: Any) -> None:
    if not _is_step(inner_state):
        raise TypeError(
            f"`{_NAME}` wraps the proximal step placed after an optimizer (l1_prox, "
            f"group_l1_prox, proximal, sparsity_target), as "
            f"optax.chain(optimizer, {_NAME}(l1_prox(...), ...)); the state of `transform` "
            f"({type(inner_state).__name__}) is not one: a transform that contains its "
            "optimizer (proximal_adam, ftrl, chain_l1_prox, a chain with the optimizer "
            "in it, ...) gets a gradient, which cannot be applied unshrunk; "
            "optax.apply_if_finite goes around the whole chain; and in an "
            f"optax.multi_transform every part must be a proximal step (put {_NAME} "
            "inside the proximal part instead, or use the step's `mask=`)"
        )


def _frozen_updates(
    aligned: _tree.Aligned, inner: Any, frozen: jax.Array, bad: jax.Array | None
) -> Any:
    """On the frozen leaves: the wrapped step's updates before the freeze, and after it the
    incoming update, zero where the weight is zero (NaN when ``bad``: a bad run-time
    ``begin_step``). Elsewhere the wrapped step's updates as they are."""
    leaves = zip(
        aligned.updates,
        aligned.treedef.flatten_up_to(inner),
        aligned.params,
        aligned.selected,
        strict=True,
    )
    out = []
    for u, s, p, sel in leaves:
        if sel:
            s = _tree.zero_where(frozen & (p == 0), jnp.where(frozen, u, s))
            s = s if bad is None else jnp.where(bad, jnp.nan, s)
        out.append(s)
    return aligned.treedef.unflatten(out)


def _start(begin_step: Any, count: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """Whether ``count`` is at or past ``begin_step``, compared in integers when it is one;
    and, for a value known only at run time, whether it breaks the rule (>= 0, finite)."""
    if _checks.concrete(begin_step) is not None:
        return count >= int(begin_step), None
    raw = jnp.asarray(begin_step)
    if jnp.issubdtype(raw.dtype, jnp.integer):
        return count >= raw, raw < 0
    return count >= raw, jnp.isnan(_checks.runtime_checked(raw, _checks.whole(_checks.NONNEGATIVE)))


def freeze_support(
    transform: optax.GradientTransformation,
    *,
    begin_step: jax.typing.ArrayLike,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""From ``begin_step`` on, zeros stay zero and the others train unshrunk.

    Wraps the proximal step placed last in a chain (:func:`l1_prox`, :func:`group_l1_prox`,
    :func:`proximal`, ...). Before ``begin_step`` the update is the wrapped step's; from
    ``begin_step`` on it is the incoming update (the optimizer's step) where the weight is
    not zero, and 0 where it is:

    .. math::

      u'_t = \begin{cases} \text{transform}(u_t) & t < t_0 \\
        u_t \odot \mathbb{1}[p_t \ne 0] & t \ge t_0 \end{cases}

    so the set of zeros is fixed at step :math:`t_0` and the survivors are no longer shrunk
    (the fine-tuning phase of gradual magnitude pruning). Without it, a decaying learning
    rate schedule shrinks the threshold and zeros come back at the end of training. The
    wrapped state keeps being updated (its count goes on).

    Args:
      transform: the proximal step (:func:`l1_prox`, :func:`group_l1_prox`,
        :func:`proximal` or :func:`sparsity_target`, alone, chained together, under
        ``optax.inject_hyperparams`` or ``optax.masked``, or as every part of an
        ``optax.multi_transform``); anything else is a TypeError at ``init``: a part that
        is not a proximal step (``optax.identity``, ``set_to_zero``: put the freeze inside
        the proximal part instead), ``optax.apply_if_finite`` (wrap the whole chain in it:
        inside, a rejected step would still be applied), and a transform that contains
        its optimizer
        (:func:`proximal_adam`, :func:`with_preconditioned_l1`, :func:`proximal_adagrad`,
        :func:`ftrl`, :func:`chain_l1_prox`, ``sparsity_target(optimizer=...)``, a chain
        with the optimizer in it), whose input is a gradient. :func:`sparsity_target`
        holds its own support (``hold="support"``).
      begin_step: :math:`t_0 \ge 0`, the count from which the support is frozen.
      mask: a pytree of bools (prefix of params; True = frozen) or a callable
        ``params -> mask``; elsewhere the wrapped step's update passes as it is. Give the
        wrapped step's mask: by default every float leaf is frozen, so a leaf it does not
        regularize (a zero-initialized bias) would stay at its zeros.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`FreezeSupportState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax.chain(
      ...     optax.sgd(0.1),
      ...     optax_l1.freeze_support(optax_l1.l1_prox(1.0, learning_rate=0.1), begin_step=1),
      ... )
      >>> params = jnp.array([0.05, 1.0])
      >>> state = tx.init(params)
      >>> grads = jnp.zeros(2)
      >>> for g in (grads, jnp.array([-5.0, 0.0])):  # the second step would revive w[0]
      ...     updates, state = tx.update(g, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params  # zeroed at step 0, frozen from step 1; w[1] shrunk once, then not
      Array([0. , 0.9], dtype=float32)
    """
    _checks.check_step_count("begin_step", begin_step, 0)
    _checks.check_optimizer("transform", transform)
    _checks.check_mask(mask)
    inner = optax.with_extra_args_support(transform)

    def init_fn(params):
        inner_state = inner.init(params)
        _check_inner(inner_state)
        return FreezeSupportState(_transforms.zero_count(), inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        _checks.check_params(_NAME, params)
        shrunk, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        aligned = _tree.align(_NAME, updates, params, mask, regularizes=False)  # inner checks
        frozen, bad = _start(begin_step, state.count)
        out = _frozen_updates(aligned, shrunk, frozen, bad)
        count = _transforms.next_count(state.count)
        return out, FreezeSupportState(count, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
