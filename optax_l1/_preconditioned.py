r"""The L1 prox in a diagonal optimizer's own metric: proximal Adam, proximal Adagrad.

Proximal Adagrad and proximal Adam (ProxGen) are one mechanism,
:func:`with_preconditioned_l1`: run a diagonal-preconditioned optimizer, read its
accumulator from its state, and apply the proximal step with the per-coordinate step size
:math:`\eta / D_i`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_l1 import _checks, _inner, _operators, _step, _transforms, _tree


class PreconditionedL1State(NamedTuple):
    """State of :func:`with_preconditioned_l1`: the update count and the wrapped state."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    inner_state: optax.OptState


class ProximalAdagradState(NamedTuple):
    """State of :func:`proximal_adagrad`: the update count and the Adagrad state.

    The accumulator is ``optax.tree_utils.tree_get(state, "sum_of_squares")``.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    inner_state: optax.OptState


class ProximalAdamState(NamedTuple):
    """State of :func:`proximal_adam`: the update count and the Adam state (``mu``, ``nu``)."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    inner_state: optax.OptState


Unseen = Literal["shrink", "keep"]
UNSEEN = ("shrink", "keep")


def _step_scale(acc: jax.Array, count: jax.Array, eps, eps_root, decay, unseen) -> jax.Array:
    r"""``1 / D`` with :math:`D = \sqrt{\hat a + \epsilon_{root}} + \epsilon` (0 where D = 0).

    :math:`\hat a = a / (1 - \beta^t)` when a bias-correction decay is given. With
    ``unseen="keep"`` the scale is 0 where :math:`a = 0`, as ``optax.scale_by_rss``
    (Adagrad) leaves such a coordinate (no gradient yet) where it is. Computed in at least
    float32.
    """
    a = _tree.widened(jnp.real(acc))
    if decay is not None:
        a = a / (1 - decay**count)
    d = jnp.sqrt(a + eps_root) + eps
    # A NaN D (a NaN eps, eps_root or decay set at run time) stays NaN: never a 0 threshold.
    keep = ((a > 0) if unseen == "keep" else (d > 0)) | jnp.isnan(d)
    eps_value = _checks.scalar_value(eps)
    if unseen == "shrink" and eps_value is not None and eps_value > 0:
        return 1.0 / d  # D > 0 everywhere: no guard needed
    return jnp.where(keep, 1.0 / jnp.where(keep, d, 1.0), 0.0)


def _preconditioned_prox(leaf_acc, count, strength_at, l2_at, no_l2, step_scale) -> _step.ProxMap:
    """The elastic-net map with per-coordinate thresholds ``step * strength / D``
    (``leaf_acc(z)``: the accumulator per leaf of ``z``)."""

    def prox(z, step, prox_count):
        z_leaves, treedef = jax.tree.flatten(z, is_leaf=_tree.is_none)
        a_leaves = leaf_acc(z)
        scale = [
            None if zi is None else step_scale(ai, count)
            for zi, ai in zip(z_leaves, a_leaves, strict=True)
        ]
        threshold = [None if s is None else step * strength_at(prox_count) * s for s in scale]
        l2_scale = 0.0  # a literal 0: the prox skips the divide
        if not no_l2:
            l2_scale = treedef.unflatten(
                [None if s is None else step * l2_at(prox_count) * s for s in scale]
            )
        return (
            _operators.elastic_net_tree(
                z, treedef.unflatten(threshold), l2_scale, nonnegative=False
            ),
            None,
        )

    return prox


def _preconditioned_l1(
    optimizer: optax.GradientTransformation,
    strength: optax.ScalarOrSchedule,
    learning_rate: optax.ScalarOrSchedule,
    *,
    accumulator: _inner.Accumulator,
    eps: Any,
    eps_root: Any,
    bias_correction_decay: Any,
    unseen: Unseen,
    l2: optax.ScalarOrSchedule,
    mask: Any,
    state_cls: Callable[..., Any],
    name: str,
    bias_count: Callable[[Any], jax.Array] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The one mechanism behind the preconditioned optimizers of this module.

    Runs ``optimizer``, then :func:`optax_l1._step.prox_update` with the elastic-net map
    whose threshold is ``step * strength / D`` per coordinate. ``bias_count`` reads the count
    the wrapped optimizer bias-corrected with from its new state (the presets know where it
    is): :math:`D` is then the very expression the optimizer divided by, and XLA computes it
    once for both.
    """
    _checks.check_optimizer("optimizer", optimizer)
    _checks.check_accumulator(accumulator)
    for arg, value in {"strength": strength, "learning_rate": learning_rate, "l2": l2}.items():
        _checks.check_number(arg, value, schedule=True)
    eps, eps_root = _checks.checked("eps", eps), _checks.checked("eps_root", eps_root)
    if bias_correction_decay is not None:
        bias_correction_decay = _checks.checked(
            "bias_correction_decay", bias_correction_decay, _checks.DECAY
        )
    _checks.check_choice("unseen", unseen, UNSEEN)
    _checks.check_mask(mask)
    optimizer = optax.with_extra_args_support(optimizer)
    strength_at, l2_at = _checks.as_schedule("strength", strength), _checks.as_schedule("l2", l2)
    lr_at = _checks.as_schedule("learning_rate", learning_rate)
    no_l2 = _checks.is_literal_zero(l2)

    def step_scale(acc, count):
        return _step_scale(acc, count, eps, eps_root, bias_correction_decay, unseen)

    def init_fn(params):
        inner_state = optimizer.init(_inner.inexact_only(params))
        _inner.find_accumulator(accumulator, inner_state, name)  # fail early, before tracing
        return state_cls(count=_transforms.zero_count(), inner_state=inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        _checks.check_params(name, params)
        updates, inner_state = _inner.update_inexact(
            optimizer, updates, state.inner_state, params, name, **extra_args
        )
        count_inc = _transforms.next_count(state.count)
        acc = _inner.find_accumulator(accumulator, inner_state, name)
        corrected = count_inc if bias_count is None else bias_count(inner_state)
        leaf_acc = functools.partial(_inner.per_leaf, acc, accumulator=accumulator, name=name)
        prox = _preconditioned_prox(leaf_acc, corrected, strength_at, l2_at, no_l2, step_scale)
        aligned = _tree.align(name, updates, params, mask)
        step = _step.step_size(lr_at(state.count))
        updates, _ = _step.prox_update(prox, aligned, step, state.count, name=name)
        return updates, state_cls(count=count_inc, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def with_preconditioned_l1(
    optimizer: optax.GradientTransformation,
    *,
    strength: optax.ScalarOrSchedule,
    learning_rate: optax.ScalarOrSchedule,
    eps: float,
    eps_root: float,
    bias_correction_decay: float | None,
    unseen: Unseen,
    accumulator: _inner.Accumulator = "nu",
    l2: optax.ScalarOrSchedule = 0.0,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Wraps a diagonal-preconditioned optimizer with an L1 prox at its own step sizes.

    A diagonal optimizer (Adam, RMSProp, Adagrad, ...) moves coordinate :math:`i` with
    step :math:`\eta_t / D_i`. Its proximal step for :math:`\lambda\|w\|_1 +
    \tfrac{\ell_2}{2}\|w\|_2^2` in the metric :math:`\operatorname{diag}(D)` (ProxGen)
    shrinks each coordinate by its own threshold:

    .. math::

      z = p_t + u_t, \qquad
      p_{t+1,i} = \frac{S_{\eta_t \lambda / D_i}(z_i)}{1 + \eta_t \ell_2 / D_i}, \qquad
      D_i = \sqrt{\frac{a_i}{1 - \beta^t} + \epsilon_{root}} + \epsilon,

    where :math:`u_t` is the wrapped optimizer's update and :math:`a` its accumulator,
    read from its state by name with ``optax.tree_utils.tree_get``. The wrapper cannot
    read the wrapped optimizer's ``eps`` or bias correction, so they are required
    arguments (no default can match every optimizer; a mismatch changes every threshold,
    for example 31.6x at Adam's first step with ``b2=0.999`` and no bias correction).
    For optax's optimizers:

    - ``optax.adam(lr, b1, b2, eps)`` and ``optax.adamw``: ``eps=eps, eps_root=0.0,
      bias_correction_decay=b2, unseen="shrink"`` (``accumulator="nu"``);
    - ``optax.rmsprop(lr, decay, eps)``: ``eps=0.0, eps_root=eps,
      bias_correction_decay=None, unseen="shrink"`` (``accumulator="nu"``);
    - ``optax.adagrad(lr, eps=eps)``: ``eps=0.0, eps_root=eps, bias_correction_decay=None,
      unseen="keep"``, ``accumulator="sum_of_squares"``;

    or use the presets that build both from one set of arguments: :func:`proximal_adam`,
    :func:`proximal_adamw`, :func:`proximal_adagrad`.

    ``unseen`` is what happens to a coordinate whose accumulator is still 0 (no gradient
    yet). ``"shrink"``: it gets the threshold :math:`\eta_t \lambda /
    (\sqrt{\epsilon_{root}} + \epsilon)` (Adam and RMSProp step there with that scale)
    and is usually zeroed at once; ``"keep"``: threshold 0, as ``optax.adagrad`` leaves
    such a coordinate where it is. Where :math:`D = 0` the threshold is 0.

    A plain ``optax.chain(optax.adam(lr), optax_l1.l1_prox(...))`` cannot do this: a
    transform in a chain does not see its siblings' states, so the wrapper runs the
    optimizer itself. The returned update is :math:`p_{t+1} - p_t`, so shrunk weights are
    exactly ``0.0``; masked-out leaves follow the wrapped optimizer alone. Only the
    floating-point leaves go through ``optimizer`` (the others are ``None`` for it, as
    optax's optimizers allow); updates of integer leaves pass through unchanged.

    Args:
      optimizer: the optimizer to wrap; its update must already include the learning rate.
      strength: :math:`\lambda \ge 0`, number or schedule, in the units of the gradient
        (a zero stays zero while the optimizer's averaged gradient is at most
        :math:`\lambda`).
      learning_rate: the wrapped optimizer's learning rate :math:`\eta_t` (same number or
        schedule).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      bias_correction_decay: :math:`\beta` (Adam's ``b2``) to bias-correct the accumulator
        with at count :math:`t` (this wrapper's count, incremented), or ``None`` (no
        bias correction).
      unseen: ``"shrink"`` or ``"keep"``: the threshold where the accumulator is 0 (above).
      accumulator: the name of the diagonal accumulator in the wrapped state, a tuple of
        names (the first one present is used), or a callable
        ``inner_state -> tree like params``.
      l2: ridge strength :math:`\ell_2 \ge 0`, number or schedule.
      mask: a pytree of bools (prefix of params; True = regularized) or a callable
        ``params -> mask``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`PreconditionedL1State`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.with_preconditioned_l1(
      ...     optax.adam(0.1), strength=1.0, learning_rate=0.1,
      ...     eps=1e-8, eps_root=0.0, bias_correction_decay=0.999, unseen="shrink")
      >>> params = {"w": jnp.array([1.0, 0.05, 0.5])}
      >>> grads = {"w": jnp.array([1.0, 1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> # z = p - 0.1 sign(g), thresholds 0.1 / |g|
      >>> optax.apply_updates(params, updates)["w"].round(3)
      Array([0.8 , 0.  , 0.55], dtype=float32)

    References:
      Yun, Lozano & Yang, `Adaptive Proximal Gradient Methods for Structured Neural
      Networks <https://proceedings.neurips.cc/paper/2021>`_,
      NeurIPS 2021.
    """
    return _preconditioned_l1(
        optimizer,
        strength,
        learning_rate,
        accumulator=accumulator,
        eps=eps,
        eps_root=eps_root,
        bias_correction_decay=bias_correction_decay,
        unseen=unseen,
        l2=l2,
        mask=mask,
        state_cls=PreconditionedL1State,
        name="with_preconditioned_l1",
    )


def proximal_adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    strength: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with an L1 proximal step at Adam's per-coordinate step sizes (ProxGen).

    .. math::

      z = p_t - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
      p_{t+1} = S_{\tau_t}(z), \qquad
      \tau_t = \frac{\eta_t \lambda_t}{\sqrt{\hat v_t} + \epsilon},

    with Adam's bias-corrected moments :math:`\hat m_t, \hat v_t`. Compared with
    ``optax.chain(optax.adam(lr), optax_l1.l1_prox(strength, learning_rate=lr))``, a coordinate with
    large gradients (a small step size :math:`\eta_t / D_i`) is also shrunk less. This is
    :func:`with_preconditioned_l1` around ``optax.adam``.

    A coordinate whose gradient has been exactly 0 so far (:math:`\hat v_t = 0`) gets the
    threshold :math:`\eta_t \lambda_t / \epsilon` (ProxGen's formula) and is zeroed at
    once: unseen embedding rows and dead units are pruned at the first step. Exclude them
    with ``mask=`` or raise ``eps`` if that is not wanted.

    Args:
      learning_rate: :math:`\eta_t`, number or schedule.
      strength: :math:`\lambda \ge 0`, number or schedule, in the units of the gradient:
        a zero stays zero while :math:`|\hat m| \le \lambda` (3e-5 / 1e-4 / 1e-3 gave
        74 / 92 / 97% kernel zeros on the digits MLP, 2.3e-5 / 3e-5 / 1e-4 about
        63 / 71 / 92% on the benchmarks' transformer; :func:`suggest_strength` gives a
        first value).
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{\hat v_t}`.
      mask: a pytree of bools (prefix of params; True = regularized) or a callable
        ``params -> mask``; masked-out leaves follow plain Adam.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ProximalAdamState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.proximal_adam(0.1, strength=1.0)
      >>> params = {"w": jnp.array([1.0, 0.05, 0.5])}
      >>> grads = {"w": jnp.array([1.0, 1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> optax.apply_updates(params, updates)["w"].round(3)
      Array([0.8 , 0.  , 0.55], dtype=float32)

    References:
      Yun, Lozano & Yang, `Adaptive Proximal Gradient Methods for Structured Neural
      Networks <https://proceedings.neurips.cc/paper/2021>`_,
      NeurIPS 2021;
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, 2014.
    """
    return _adam_preset(
        optax.adam, learning_rate, strength, b1, b2, eps, mask, {}, name="proximal_adam"
    )


def proximal_adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    strength: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    weight_decay_mask: Any = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW (decoupled weight decay) with an L1 proximal step at Adam's step sizes.

    .. math::

      z = p_t - \eta_t \left(\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}
        + \omega p_t\right), \qquad
      p_{t+1} = S_{\tau_t}(z), \qquad
      \tau_t = \frac{\eta_t \lambda_t}{\sqrt{\hat v_t} + \epsilon},

    that is ``optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay,
    mask=weight_decay_mask)``'s step (weight decay :math:`\omega` scaled by the learning
    rate, as optax does) followed by the prox of :func:`proximal_adam`. The defaults are
    ``optax.adamw``'s, so replacing ``optax.adamw(lr)`` by ``optax_l1.proximal_adamw(lr,
    strength=...)`` changes nothing but the L1 step. The weight decay and the L1 step have
    separate masks: ``weight_decay_mask`` is ``optax.adamw``'s ``mask``, ``mask`` chooses
    the leaves the prox shrinks.

    Args:
      learning_rate: :math:`\eta_t`, number or schedule.
      strength: :math:`\lambda \ge 0`, number or schedule, in the units of the gradient:
        a zero stays zero while :math:`|\hat m| \le \lambda` (3e-5 / 1e-4 / 1e-3 gave
        74 / 92 / 97% kernel zeros on the digits MLP, 2.3e-5 / 3e-5 / 1e-4 about
        63 / 71 / 92% on the benchmarks' transformer; :func:`suggest_strength` gives a
        first value).
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{\hat v_t}`.
      weight_decay: :math:`\omega \ge 0` (``optax.adamw``'s), a number: optax releases
        before 0.2.6 take no schedule here.
      weight_decay_mask: ``optax.adamw``'s ``mask`` (which leaves decay), or ``None``. A
        callable is given the params as AdamW sees them: ``None`` in place of each
        non-float leaf (an int step counter, say).
      mask: a pytree of bools (prefix of params; True = regularized) or a callable
        ``params -> mask``; masked-out leaves follow plain AdamW.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ProximalAdamState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.proximal_adamw(0.1, strength=1.0, weight_decay=0.5)
      >>> params = {"w": jnp.array([1.0, 0.05, 0.5])}
      >>> grads = {"w": jnp.array([1.0, 1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> # z = p - 0.1 (sign(g) + 0.5 p), thresholds 0.1 / |g|
      >>> [round(float(w), 4) for w in optax.apply_updates(params, updates)["w"]]
      [0.75, 0.0, 0.525]

    References:
      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, ICLR 2019; and those of :func:`proximal_adam`.
    """
    weight_decay = _checks.checked("weight_decay", weight_decay)
    _checks.check_mask(weight_decay_mask, "weight_decay_mask")
    decay = {"weight_decay": weight_decay, "mask": weight_decay_mask}
    return _adam_preset(
        optax.adamw, learning_rate, strength, b1, b2, eps, mask, decay, name="proximal_adamw"
    )


def _adam_preset(adam, learning_rate, strength, b1, b2, eps, mask, extra, *, name: str):
    """``optax.adam`` or ``optax.adamw`` wrapped with the prox in its own metric."""
    b1, b2 = _checks.checked("b1", b1, _checks.DECAY), _checks.checked("b2", b2, _checks.DECAY)
    eps = _checks.checked("eps", eps)  # also what adam divides by
    return _preconditioned_l1(
        adam(learning_rate, b1=b1, b2=b2, eps=eps, **extra),
        strength,
        learning_rate,
        accumulator="nu",
        eps=eps,
        eps_root=0.0,
        bias_correction_decay=b2,
        unseen="shrink",
        l2=0.0,
        mask=mask,
        state_cls=ProximalAdamState,
        name=name,
        bias_count=_adam_count,
    )


def _adam_count(inner_state: Any) -> jax.Array:
    """The count ``optax.adam``/``optax.adamw`` (a chain led by ``scale_by_adam``) used."""
    return inner_state[0].count


def proximal_adagrad(
    learning_rate: optax.ScalarOrSchedule,
    *,
    strength: optax.ScalarOrSchedule,
    l2: optax.ScalarOrSchedule = 0.0,
    initial_accumulator_value: float = 0.1,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal Adagrad, as TensorFlow's ``ProximalAdagradOptimizer``.

    .. math::

      a_t = a_{t-1} + g_t^2, \qquad \eta = \frac{\eta_t}{\sqrt{a_t}}, \qquad
      v = p_t - \eta\, g_t, \qquad
      p_{t+1} = \frac{S_{\eta \lambda}(v)}{1 + \eta\, \ell_2},

    with :math:`a_0` = ``initial_accumulator_value``. This is :func:`with_preconditioned_l1`
    around Adagrad with no epsilon. The accumulator follows optax's dtype policy (the
    params' dtype); the proximal step runs in at least float32.

    Args:
      learning_rate: :math:`\eta_t`, number or schedule.
      strength: :math:`\lambda \ge 0` (TensorFlow's ``l1_regularization_strength``), number or
        schedule.
      l2: :math:`\ell_2 \ge 0` (TensorFlow's ``l2_regularization_strength``); the penalty
        is :math:`\lambda \|w\|_1 + \tfrac{\ell_2}{2} \|w\|_2^2`.
      initial_accumulator_value: :math:`a_0 \ge 0` (TensorFlow requires > 0; with 0 a
        coordinate that has seen no gradient does not move).
      mask: a pytree of bools (prefix of params; True = regularized) or a callable
        ``params -> mask``; masked-out leaves follow plain Adagrad.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ProximalAdagradState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.proximal_adagrad(1.0, strength=0.5, initial_accumulator_value=0.0)
      >>> params = {"w": jnp.array([2.0, 0.25, -1.0])}
      >>> grads = {"w": jnp.array([0.5, -0.5, 2.0])}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # v = [1, 1.25, -2], thresholds 1, 1, 0.25
      {'w': Array([ 0.  ,  0.25, -1.75], dtype=float32)}

    References:
      Duchi & Singer, `Efficient Online and Batch Learning Using Forward Backward
      Splitting <https://jmlr.org/papers/v10/duchi09a.html>`_, JMLR 2009;
      Duchi, Hazan & Singer, `Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization <https://jmlr.org/papers/v12/duchi11a.html>`_, JMLR 2011;
      TensorFlow ``tf.compat.v1.train.ProximalAdagradOptimizer``.
    """
    _checks.check_number("strength", strength, schedule=True)
    initial_accumulator_value = _checks.checked(
        "initial_accumulator_value", initial_accumulator_value
    )
    inner = optax.chain(
        optax.scale_by_rss(initial_accumulator_value, eps=0.0),
        optax.scale_by_learning_rate(learning_rate),
    )
    return _preconditioned_l1(
        inner,
        strength,
        learning_rate,
        accumulator="sum_of_squares",
        eps=0.0,
        eps_root=0.0,
        bias_correction_decay=None,
        unseen="keep",
        l2=l2,
        mask=mask,
        state_cls=ProximalAdagradState,
        name="proximal_adagrad",
    )
