r"""Optimizers with their own diagonal preconditioner, and an L1 prox that respects it.

Proximal Adagrad and proximal Adam (ProxGen) are one mechanism,
:func:`with_preconditioned_l1`: run a diagonal-preconditioned optimizer, read its
accumulator from its state, and apply the proximal step with the per-coordinate step size
:math:`\eta / D_i`. FTRL-Proximal keeps its own accumulators and has a closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_l1 import _checks, _operators, _transforms, _tree

# (state of the wrapped optimizer) -> pytree like params: the diagonal accumulator.
AccumulatorGetter = Callable[[Any], Any]


class PreconditionedL1State(NamedTuple):
    """State of :func:`with_preconditioned_l1`: the update count and the wrapped state."""

    count: jax.Array
    inner_state: optax.OptState


class ProximalAdagradState(NamedTuple):
    """State of :func:`proximal_adagrad`: the update count and the Adagrad state.

    The accumulator is ``optax.tree_utils.tree_get(state, "sum_of_squares")``.
    """

    count: jax.Array
    inner_state: optax.OptState


class ProximalAdamState(NamedTuple):
    """State of :func:`proximal_adam`: the update count and the Adam state (``mu``, ``nu``)."""

    count: jax.Array
    inner_state: optax.OptState


class FtrlState(NamedTuple):
    """State of :func:`ftrl`: TensorFlow's ``accum`` (:math:`n`) and ``linear`` (:math:`z`).

    Both are kept in at least float32 whatever the params' dtype; ``None`` for leaves that
    are not floating point.
    """

    count: jax.Array
    accumulator: Any
    linear: Any


# ----------------------------------------------------------------------------- checks


def _check_rule(name: str, value: Any, rule: str, ok: Callable[[float], bool]) -> None:
    """ValueError when a concrete number breaks `rule`; schedules and arrays pass."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be a number, an array or a schedule, got {value!r}")
    x = None if callable(value) else _checks._python_scalar(value)
    if x is not None and not (math.isfinite(x) and ok(x)):
        raise ValueError(f"`{name}` must be finite and {rule}, got {value!r}")


def _check_decay(name: str, value: Any) -> None:
    _check_rule(name, value, "in [0, 1)", lambda x: 0.0 <= x < 1.0)


# ----------------------------------------------------------------------------- mechanism


def update_inexact(
    optimizer: optax.GradientTransformation,
    updates: Any,
    inner_state: Any,
    params: Any,
    name: str,
    **extra_args: Any,
) -> tuple[Any, Any]:
    """``optimizer.update`` on the floating-point leaves only; the others pass through.

    Pair with ``optimizer.init(_inexact_only(params))``.
    """
    treedef, u_leaves, p_leaves, _ = _tree.align(name, updates, params, None)
    inexact = [
        u is not None and _tree.is_inexact(p) for u, p in zip(u_leaves, p_leaves, strict=True)
    ]
    inner_updates, inner_state = optimizer.update(
        treedef.unflatten([u if k else None for u, k in zip(u_leaves, inexact, strict=True)]),
        inner_state,
        _inexact_only(params),
        **extra_args,
    )
    new_leaves = treedef.flatten_up_to(inner_updates)
    updates = treedef.unflatten(
        [v if k else u for u, v, k in zip(u_leaves, new_leaves, inexact, strict=True)]
    )
    return updates, inner_state


def _inexact_only(tree: Any) -> Any:
    """`tree` with its leaves that are not floating point replaced by ``None``.

    The wrapped optimizer sees only these: optax's optimizers keep ``None`` leaves as they are,
    so an integer leaf gets no slot (no dtype change under ``lax.cond``, no float update).
    """
    return jax.tree.map(lambda x: x if _tree.is_inexact(x) else None, tree)


def _step_scale(acc: jax.Array, count: jax.Array, eps, eps_root, decay) -> jax.Array:
    r"""``1 / D`` with :math:`D = \sqrt{\hat a + \epsilon_{root}} + \epsilon` (0 where D = 0).

    :math:`\hat a = a / (1 - \beta^t)` when a bias-correction decay is given. With a literal
    ``eps == 0`` the scale is 0 where :math:`a = 0`, as ``optax.scale_by_rss`` (Adagrad) does
    with its ``eps`` inside the root: a coordinate with no gradient yet is not shrunk.
    Computed in at least float32.
    """
    a = jnp.real(acc)
    a = a.astype(_tree.compute_dtype(a.dtype))
    if decay is not None:
        a = a / (1 - decay**count)
    d = jnp.sqrt(a + eps_root) + eps
    eps_value = _checks._python_scalar(eps)
    if eps_value is not None and eps_value > 0:  # D > 0 everywhere: no guard needed
        return 1.0 / d
    if eps_value == 0:  # optax scale_by_rss: where(a > 0, rsqrt(a + eps_root), 0)
        return jnp.where(a > 0, 1.0 / jnp.where(a > 0, d, 1.0), 0.0)
    positive = d > 0
    return jnp.where(positive, 1.0 / jnp.where(positive, d, 1.0), 0.0)


def _check_accumulator(accumulator: Any) -> None:
    """TypeError unless `accumulator` is a field name, a non-empty tuple of names or a callable."""
    if callable(accumulator) or isinstance(accumulator, str):
        return
    if (
        isinstance(accumulator, tuple)
        and accumulator
        and all(isinstance(key, str) for key in accumulator)
    ):
        return
    raise TypeError(
        "`accumulator` must be a field name, a non-empty tuple of field names or a callable, "
        f"got {accumulator!r}"
    )


def find_accumulator(
    accumulator: str | tuple[str, ...] | AccumulatorGetter, inner_state: Any, name: str
) -> Any:
    """The diagonal accumulator in a wrapped optimizer's state: by name (the first of several
    names found) or through a callable ``state -> tree``."""
    if callable(accumulator):
        return accumulator(inner_state)
    for key in (accumulator,) if isinstance(accumulator, str) else accumulator:
        try:
            acc = optax.tree_utils.tree_get(inner_state, key)
        except KeyError:
            raise ValueError(
                f"`{name}`: the state of `optimizer` holds several fields named "
                f"{key!r}; wrap a single diagonal optimizer or pass `accumulator` as a "
                "callable `state -> tree`"
            ) from None
        if acc is not None:
            return acc
    fields = repr(accumulator) if isinstance(accumulator, str) else f"among {accumulator!r}"
    raise ValueError(
        f"`{name}`: the state of `optimizer` has no field {fields} "
        f"({jax.tree.structure(inner_state)}); it needs a diagonal accumulator "
        "(e.g. 'nu' for adam/adamw/rmsprop, 'sum_of_squares' for adagrad)"
    )


def _preconditioned_l1(
    optimizer: optax.GradientTransformation,
    strength: optax.ScalarOrSchedule,
    learning_rate: optax.ScalarOrSchedule,
    *,
    accumulator: str | tuple[str, ...] | AccumulatorGetter,
    eps: Any,
    eps_root: Any,
    bias_correction_decay: Any,
    l2: optax.ScalarOrSchedule,
    mask: Any,
    state_cls: type,
    name: str,
) -> optax.GradientTransformationExtraArgs:
    """The one mechanism behind the preconditioned optimizers of this module.

    Runs ``optimizer``, then :func:`optax_l1._transforms.prox_after_update` with the
    elastic-net operator whose threshold is ``step * strength / D`` per coordinate.
    """
    _check_accumulator(accumulator)
    numbers = {"strength": strength, "learning_rate": learning_rate, "l2": l2}
    for arg, value in {**numbers, "eps": eps, "eps_root": eps_root}.items():
        _checks.check_nonnegative(arg, value)
    if bias_correction_decay is not None:
        _check_decay("bias_correction_decay", bias_correction_decay)
    optimizer = optax.with_extra_args_support(optimizer)
    strength_at, l2_at = _checks.as_schedule(strength), _checks.as_schedule(l2)
    no_l2 = not callable(l2) and _checks.is_literal_zero(l2)

    def init_fn(params):
        inner_state = optimizer.init(_inexact_only(params))
        find_accumulator(accumulator, inner_state, name)  # fail early, before tracing
        return state_cls(count=jnp.zeros([], jnp.int32), inner_state=inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        _checks.check_params(name, params)
        updates, inner_state = update_inexact(
            optimizer, updates, state.inner_state, params, name, **extra_args
        )
        count_inc = optax.safe_increment(state.count)
        acc = find_accumulator(accumulator, inner_state, name)

        def prox(z, step, count):
            z_leaves, treedef = jax.tree.flatten(z, is_leaf=_tree.is_none)
            a_leaves = _tree.broadcast_prefix("accumulator", acc, z)  # one per leaf of z
            scale = [
                None
                if zi is None
                else _step_scale(ai, count_inc, eps, eps_root, bias_correction_decay)
                for zi, ai in zip(z_leaves, a_leaves, strict=True)
            ]
            threshold = [None if s is None else step * strength_at(count) * s for s in scale]
            if no_l2:  # a literal 0: the prox skips the divide
                l2_scale = 0.0
            else:
                l2_scale = treedef.unflatten(
                    [None if s is None else step * l2_at(count) * s for s in scale]
                )
            return _operators.elastic_net_threshold(z, treedef.unflatten(threshold), l2_scale)

        prox_tx = _transforms.prox_after_update(
            prox, learning_rate, mask=mask, state_cls=_transforms.ProximalState, name=name
        )
        updates, _ = prox_tx.update(updates, _transforms.ProximalState(count=state.count), params)
        return updates, state_cls(count=count_inc, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def with_preconditioned_l1(
    optimizer: optax.GradientTransformation,
    strength: optax.ScalarOrSchedule,
    learning_rate: optax.ScalarOrSchedule,
    *,
    accumulator: str | tuple[str, ...] | AccumulatorGetter = "nu",
    eps: float = 1e-8,
    eps_root: float = 0.0,
    bias_correction_decay: float | None = None,
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
    read from its state by name with ``optax.tree_utils.tree_get``. Set ``eps``,
    ``eps_root`` and ``bias_correction_decay`` as the wrapped optimizer uses them:

    - ``optax.adam(lr, b1, b2, eps)`` and ``optax.adamw``: ``accumulator="nu"``,
      ``eps=eps``, ``eps_root=0``, ``bias_correction_decay=b2``;
    - ``optax.rmsprop(lr, eps=eps)``: ``accumulator="nu"``, ``eps=0``, ``eps_root=eps``;
    - ``optax.adagrad(lr, eps=eps)``: ``accumulator="sum_of_squares"``, ``eps=0``,
      ``eps_root=eps``.

    With ``eps=0`` (a literal number) the threshold is 0 where the accumulator is 0, as
    ``optax.adagrad`` leaves such a coordinate (no gradient yet) where it is. With
    ``eps > 0`` a coordinate whose accumulator is 0 gets the threshold
    :math:`\eta_t \lambda / \epsilon` and is zeroed at once (see :func:`proximal_adam`).

    A plain ``optax.chain(optax.adam(lr), optax_l1.l1_prox(...))`` cannot do this: a
    transform in a chain does not see its siblings' states, so the wrapper runs the
    optimizer itself. The returned update is :math:`p_{t+1} - p_t`, so shrunk weights are
    exactly ``0.0``; masked-out leaves follow the wrapped optimizer alone. Only the
    floating-point leaves go through ``optimizer`` (the others are ``None`` for it, as
    optax's optimizers allow); updates of integer leaves pass through unchanged.

    Args:
      optimizer: the optimizer to wrap; its update must already include the learning rate.
      strength: :math:`\lambda \ge 0`, number or schedule.
      learning_rate: the wrapped optimizer's learning rate :math:`\eta_t` (same number or
        schedule).
      accumulator: the name of the diagonal accumulator in the wrapped state, a tuple of
        names (the first one present is used), or a callable
        ``inner_state -> tree like params``.
      eps: :math:`\epsilon`, added outside the square root.
      eps_root: :math:`\epsilon_{root}`, added inside the square root.
      bias_correction_decay: :math:`\beta` (Adam's ``b2``) to bias-correct the accumulator
        with at count :math:`t` (this wrapper's count, incremented), or ``None``.
      l2: ridge strength :math:`\ell_2 \ge 0`, number or schedule.
      mask: a pytree of bools (prefix of params; True = regularized) or a callable
        ``params -> mask``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`PreconditionedL1State`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.with_preconditioned_l1(
      ...     optax.adam(0.1), 1.0, 0.1, bias_correction_decay=0.999)
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
        l2=l2,
        mask=mask,
        state_cls=PreconditionedL1State,
        name="with_preconditioned_l1",
    )


def proximal_adam(
    learning_rate: optax.ScalarOrSchedule,
    strength: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with an L1 proximal step at Adam's per-coordinate step sizes (ProxGen).

    .. math::

      z = p_t - \eta_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
      p_{t+1} = S_{\tau_t}(z), \qquad
      \tau_t = \frac{\eta_t \lambda_t}{\sqrt{\hat v_t} + \epsilon},

    with Adam's bias-corrected moments :math:`\hat m_t, \hat v_t`. Compared with
    ``optax.chain(optax.adam(lr), optax_l1.l1_prox(strength, lr))``, a coordinate with
    large gradients (a small step size :math:`\eta_t / D_i`) is also shrunk less. This is
    :func:`with_preconditioned_l1` around ``optax.adam``.

    A coordinate whose gradient has been exactly 0 so far (:math:`\hat v_t = 0`) gets the
    threshold :math:`\eta_t \lambda_t / \epsilon` (ProxGen's formula) and is zeroed at
    once: unseen embedding rows and dead units are pruned at the first step. Exclude them
    with ``mask=`` or raise ``eps`` if that is not wanted.

    Args:
      learning_rate: :math:`\eta_t`, number or schedule.
      strength: :math:`\lambda \ge 0`, number or schedule.
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
      >>> tx = optax_l1.proximal_adam(0.1, 1.0)
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
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    return _preconditioned_l1(
        optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
        strength,
        learning_rate,
        accumulator="nu",
        eps=eps,
        eps_root=0.0,
        bias_correction_decay=b2,
        l2=0.0,
        mask=mask,
        state_cls=ProximalAdamState,
        name="proximal_adam",
    )


def proximal_adagrad(
    learning_rate: optax.ScalarOrSchedule,
    l1: optax.ScalarOrSchedule = 0.0,
    l2: optax.ScalarOrSchedule = 0.0,
    initial_accumulator_value: float = 0.1,
    *,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Proximal Adagrad, as TensorFlow's ``ProximalAdagradOptimizer``.

    .. math::

      a_t = a_{t-1} + g_t^2, \qquad \eta = \frac{\eta_t}{\sqrt{a_t}}, \qquad
      v = p_t - \eta\, g_t, \qquad
      p_{t+1} = \frac{S_{\eta \ell_1}(v)}{1 + \eta\, \ell_2},

    with :math:`a_0` = ``initial_accumulator_value``. This is :func:`with_preconditioned_l1`
    around Adagrad with no epsilon. The accumulator follows optax's dtype policy (the
    params' dtype); the proximal step runs in at least float32.

    Args:
      learning_rate: :math:`\eta_t`, number or schedule.
      l1: :math:`\ell_1 \ge 0` (TensorFlow's ``l1_regularization_strength``).
      l2: :math:`\ell_2 \ge 0` (TensorFlow's ``l2_regularization_strength``); the penalty
        is :math:`\ell_1 \|w\|_1 + \tfrac{\ell_2}{2} \|w\|_2^2`.
      initial_accumulator_value: :math:`a_0 \ge 0` (TensorFlow requires > 0; with 0 a
        coordinate that has seen no gradient does not move).
      mask: a pytree of bools (prefix of params; True = regularized) or a callable
        ``params -> mask``; masked-out leaves follow plain Adagrad.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ProximalAdagradState`.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.proximal_adagrad(1.0, l1=0.5, initial_accumulator_value=0.0)
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
    _checks.check_nonnegative("l1", l1)
    _checks.check_nonnegative("initial_accumulator_value", initial_accumulator_value)
    inner = optax.chain(
        optax.scale_by_rss(initial_accumulator_value, eps=0.0),
        optax.scale_by_learning_rate(learning_rate),
    )
    return _preconditioned_l1(
        inner,
        l1,
        learning_rate,
        accumulator="sum_of_squares",
        eps=0.0,
        eps_root=0.0,
        bias_correction_decay=None,
        l2=l2,
        mask=mask,
        state_cls=ProximalAdagradState,
        name="proximal_adagrad",
    )


# ----------------------------------------------------------------------------- FTRL


def _check_ftrl_denominator(initial_accumulator_value, beta, l2, l2_shrinkage, power) -> None:
    r"""ValueError when FTRL's denominator :math:`(n^p + \beta)/\eta + 2\ell_2` can be 0.

    With :math:`n_0 = \beta = \ell_2 = 0` it is 0 for a coordinate with no gradient yet
    (unless :math:`p = 0`: :math:`n^0 = 1`). Its weight is then 0 only while :math:`z = 0`,
    which ``l2_shrinkage`` breaks (:math:`z` grows by :math:`2\ell_{2,s} w`): the weight
    would become infinite. Only concrete numbers are checked.
    """
    values = [_checks._python_scalar(v) for v in (initial_accumulator_value, beta, l2)]
    if any(v is None or v != 0 for v in values):
        return
    if _checks.is_literal_zero(power) or (
        not callable(l2_shrinkage) and _checks.is_literal_zero(l2_shrinkage)
    ):
        return
    raise ValueError(
        "`initial_accumulator_value` must be > 0 unless `beta` > 0 or `l2` > 0 when "
        "`l2_shrinkage` is used: the FTRL step divides by (n^p + beta) / lr + 2 * l2, "
        "which is 0 for a coordinate with no gradient yet"
    )


def _ftrl_leaf(g, w, n, z, *, lr, l1, l2, shrinkage, power, beta):
    """One TensorFlow ``ApplyFtrlV2`` step on arrays in the compute dtype.

    ``power`` is :math:`-` ``learning_rate_power``: a Python float picks sqrt or power here,
    an array (``optax.inject_hyperparams``) picks inside the compiled step.
    """

    def pow_(x):  # TensorFlow's kernel takes sqrt for learning_rate_power == -0.5
        if isinstance(power, float):
            return jnp.sqrt(x) if power == 0.5 else jnp.power(x, power)
        return jnp.where(power == 0.5, jnp.sqrt(x), jnp.power(x, power))

    n_new = n + g * g
    sigma = (pow_(n_new) - pow_(n)) / lr
    z_new = z + (g + 2 * shrinkage * w) - sigma * w
    quadratic = (pow_(n_new) + beta) / lr + 2 * l2
    clipped = jnp.clip(z_new, -l1, l1)
    pre_shrink = (clipped - z_new) / jnp.where(clipped == z_new, 1.0, quadratic)
    w_new = jnp.where(clipped == z_new, jnp.zeros_like(w), pre_shrink)
    return w_new, n_new, z_new


def ftrl(
    learning_rate: optax.ScalarOrSchedule,
    l1: optax.ScalarOrSchedule = 0.0,
    l2: optax.ScalarOrSchedule = 0.0,
    l2_shrinkage: optax.ScalarOrSchedule = 0.0,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    beta: float = 0.0,
    *,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""FTRL-Proximal, as TensorFlow's ``FtrlOptimizer`` (the ``ApplyFtrlV2`` kernel).

    Per coordinate, with :math:`p = -` ``learning_rate_power``, accumulators :math:`n`
    (from ``initial_accumulator_value``) and :math:`z` (from 0):

    .. math::

      g' &= g + 2 \ell_{2,s}\, w, \qquad n' = n + g^2, \qquad
      \sigma = \frac{n'^{\,p} - n^{p}}{\eta}, \qquad z \leftarrow z + g' - \sigma w, \\
      w &\leftarrow \begin{cases} 0 & |z| \le \ell_1 \\
      \dfrac{\operatorname{sign}(z)\,\ell_1 - z}{(n'^{\,p} + \beta)/\eta + 2 \ell_2}
      & \text{otherwise} \end{cases}

    TensorFlow's ``l2`` is half the paper's :math:`\lambda_2`; ``l2_shrinkage`` adds
    :math:`\ell_{2,s}\|w\|_2^2` to the loss (the accumulator :math:`n` still uses the raw
    gradient). The new weights come from :math:`z` and :math:`n` only; the update returned
    is :math:`w_{new} - w`, so zeroed weights are exactly ``0.0``.

    Args:
      learning_rate: :math:`\eta_t > 0`, number or schedule.
      l1: :math:`\ell_1 \ge 0` (``l1_regularization_strength``).
      l2: :math:`\ell_2 \ge 0` (``l2_regularization_strength``).
      l2_shrinkage: :math:`\ell_{2,s} \ge 0` (``l2_shrinkage_regularization_strength``).
      learning_rate_power: :math:`\le 0`; ``-0.5`` is Adagrad-like, ``0`` a constant rate.
      initial_accumulator_value: :math:`n_0 \ge 0`; 0 needs ``beta > 0`` or ``l2 > 0``
        when ``l2_shrinkage`` is used (a coordinate with no gradient yet would divide by
        :math:`(n^p + \beta)/\eta + 2\ell_2 = 0`).
      beta: :math:`\beta \ge 0`, the paper's per-coordinate rate offset.
      mask: a pytree of bools (prefix of params) or a callable ``params -> mask``: leaves
        where ``l1``, ``l2`` and ``l2_shrinkage`` apply; the others follow FTRL without
        regularization.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`FtrlState`
      (accumulators in at least float32).

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.ftrl(1.0, l1=0.5, initial_accumulator_value=0.0)
      >>> params = {"w": jnp.zeros(3)}
      >>> grads = {"w": jnp.array([0.25, -2.0, 4.0])}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> optax.apply_updates(params, updates)  # (sign(z) l1 - z) / sqrt(n)
      {'w': Array([ 0.   ,  0.75 , -0.875], dtype=float32)}

    References:
      McMahan et al., `Ad Click Prediction: a View from the Trenches
      <https://doi.org/10.1145/2487575.2488200>`_, KDD 2013;
      TensorFlow ``tf.compat.v1.train.FtrlOptimizer``.
    """
    for arg, value in (
        ("learning_rate", learning_rate),
        ("l1", l1),
        ("l2", l2),
        ("l2_shrinkage", l2_shrinkage),
        ("initial_accumulator_value", initial_accumulator_value),
        ("beta", beta),
    ):
        _checks.check_nonnegative(arg, value)
    _check_rule("learning_rate", learning_rate, "> 0", lambda x: x > 0)
    _check_rule("learning_rate_power", learning_rate_power, "<= 0", lambda x: x <= 0)
    _check_ftrl_denominator(initial_accumulator_value, beta, l2, l2_shrinkage, learning_rate_power)
    power_value = _checks._python_scalar(learning_rate_power)
    # A Python float keeps float64 exact and lets `_ftrl_leaf` branch in Python; an array
    # (inject_hyperparams) keeps its own dtype (no cast to float32).
    power = -power_value if power_value is not None else -jnp.asarray(learning_rate_power)
    lr_at, l1_at = _checks.as_schedule(learning_rate), _checks.as_schedule(l1)
    l2_at, shrinkage_at = _checks.as_schedule(l2), _checks.as_schedule(l2_shrinkage)

    def init_fn(params):
        def slot(p, value):
            if p is None or not _tree.is_inexact(p):
                return None
            p = jnp.asarray(p)  # Python float leaves too
            if jnp.iscomplexobj(p):
                raise TypeError("`ftrl` is defined for real params only, got complex")
            return jnp.full_like(p, value, _tree.compute_dtype(p.dtype))  # keeps sharding

        return FtrlState(
            count=jnp.zeros([], jnp.int32),
            accumulator=jax.tree.map(lambda p: slot(p, initial_accumulator_value), params),
            linear=jax.tree.map(lambda p: slot(p, 0.0), params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_params("ftrl", params)
        treedef, u_leaves, p_leaves, keep = _tree.align("ftrl", updates, params, mask)
        n_leaves, z_leaves = (treedef.flatten_up_to(t) for t in (state.accumulator, state.linear))
        lr = jnp.asarray(lr_at(state.count))
        hyper = dict(lr=lr, power=power, beta=beta)
        on = dict(l1=l1_at(state.count), l2=l2_at(state.count), shrinkage=shrinkage_at(state.count))
        off = dict.fromkeys(on, 0.0)  # masked-out leaves: FTRL without regularization

        def leaf_step(u, p, n, z, m):
            if n is None or u is None:  # not a float leaf: passes through
                return u, n, z
            w = jnp.asarray(p, n.dtype)  # Python float leaves too
            g = jnp.asarray(u, n.dtype)
            w_new, n, z = _ftrl_leaf(g, w, n, z, **hyper, **(on if m else off))
            return (w_new - w).astype(jnp.result_type(u)), n, z

        leaves = zip(u_leaves, p_leaves, n_leaves, z_leaves, keep, strict=True)
        steps = [leaf_step(*args) for args in leaves]
        out, new_n, new_z = (treedef.unflatten([s[i] for s in steps]) for i in range(3))
        count = optax.safe_increment(state.count)
        return out, FtrlState(count=count, accumulator=new_n, linear=new_z)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
