r"""FTRL-Proximal, as TensorFlow's ``FtrlOptimizer``: its own accumulators and a closed form."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_l1 import _checks, _in_place, _transforms, _tree


class FtrlState(NamedTuple):
    """State of :func:`ftrl`: TensorFlow's ``accum`` (:math:`n`) and ``linear`` (:math:`z`).

    Both are kept in at least float32 whatever the params' dtype; ``None`` for leaves that
    are not floating point.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    accumulator: Any
    linear: Any


def _ftrl_leaf(g, w, n, z, *, lr, l1, l2, shrinkage, power, beta):
    """One TensorFlow ``ApplyFtrlV2`` step on arrays in the compute dtype.

    ``power`` is :math:`-` ``learning_rate_power``: a Python float picks sqrt or power here,
    an array (``optax.inject_hyperparams``) picks inside the compiled step.
    """

    def pow_(x):  # TensorFlow's kernel takes sqrt for learning_rate_power == -0.5
        if isinstance(power, float):
            return jnp.sqrt(x) if power == 0.5 else jnp.power(x, power)
        return jnp.where(power == 0.5, jnp.sqrt(x), jnp.power(x, power))

    # Saturate rather than overflow: a finite gradient whose square exceeds the dtype (1e20 in
    # float32) would make n' inf and w NaN; optax.adagrad stays finite there. NaN stays NaN.
    def accumulate(n, g):
        return jnp.minimum(n + g * g, jnp.finfo(n.dtype).max)

    def accumulators(g, w, z, n):  # z first: its update reads the old n
        n_new = accumulate(n, g)
        return z + (g + 2 * shrinkage * w) - (pow_(n_new) - pow_(n)) / lr * w, n_new

    if _in_place.applies(n):  # z', n' written in place; w' reads them (no copy of n)
        z_new, n_new = _in_place.updated(accumulators, (g, w), (z, n))
    else:
        z_new, _ = accumulators(g, w, z, n)
        # XLA keeps an expensive op with two consumers (pow(n')) as a full-size buffer; the
        # barrier stops CSE merging the two pow(n') so each fusion recomputes it from n (one
        # temporary, the copy of n, instead of two).
        z_new, n, g = jax.lax.optimization_barrier((z_new, n, g))
        n_new = accumulate(n, g)
    quadratic = (pow_(n_new) + beta) / lr + 2 * l2
    clipped = jnp.clip(z_new, -l1, l1)
    pre_shrink = (clipped - z_new) / jnp.where(clipped == z_new, 1.0, quadratic)
    # 0 * (l2 + beta): a NaN l2 or beta (a bad value set at run time) shows at the weights
    # that land on zero too, which never read the quadratic term.
    zero = jnp.zeros_like(w) + jnp.asarray(0.0 * (l2 + beta), w.dtype)
    w_new = jnp.where(clipped == z_new, zero, pre_shrink)
    return w_new, n_new, z_new


def _check_ftrl_args(lr, strength, l2, shrinkage, power, initial_accumulator_value, beta) -> None:
    for arg, value in (("strength", strength), ("l2", l2), ("l2_shrinkage", shrinkage)):
        _checks.check_number(arg, value, schedule=True)
    _checks.check_number("learning_rate", lr, _checks.POSITIVE, schedule=True)
    _checks.check_number("learning_rate_power", power, _checks.NONPOSITIVE)
    _checks.check_number("initial_accumulator_value", initial_accumulator_value)
    _checks.check_number("beta", beta)
    _checks.check_ftrl_denominator(initial_accumulator_value, beta, l2, shrinkage, power)


def _slot(p: Any, value: float) -> jax.Array | None:
    """An FTRL accumulator for leaf ``p``, in at least float32 (None for non-float leaves)."""
    if p is None or not _tree.is_inexact(p):
        return None
    p = jnp.asarray(p)  # Python float leaves too
    if jnp.iscomplexobj(p):
        raise TypeError("`ftrl` is defined for real params only, got complex")
    return jnp.full_like(p, value, _tree.compute_dtype(p.dtype))  # keeps sharding


def _in_dtype(hyper: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """Hyperparameters in the slots' dtype (Python numbers stay exact): a strict float64
    (np.float64 under x64) made the slots float64 (a state dtype that changed) or broke the
    in-place loop."""
    return {k: v if type(v) in (int, float) else jnp.asarray(v, dtype) for k, v in hyper.items()}


def _cast_once(on: dict[str, Any], off: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """``hyper_at(dtype, regularized)``: the hyperparameters of regularized leaves (``on``)
    or the others (``off``) in ``dtype``, cast once per pair (not once per leaf)."""
    cast: dict[Any, dict[str, Any]] = {}

    def hyper_at(dtype: Any, regularized: bool) -> dict[str, Any]:
        if (dtype, regularized) not in cast:
            cast[dtype, regularized] = _in_dtype(on if regularized else off, dtype)
        return cast[dtype, regularized]

    return hyper_at


def _leaf_step(u, p, n, z, hyper):
    """One leaf's FTRL step: ``(update, n, z)``; a leaf with no slot passes through.
    ``hyper(dtype)``: the hyperparameters in the slots' dtype."""
    if n is None or u is None:
        return u, n, z
    w = jnp.asarray(p, n.dtype)  # Python float leaves too
    w_new, n, z = _ftrl_leaf(jnp.asarray(u, n.dtype), w, n, z, **hyper(n.dtype))
    # Never narrower than the params: a bf16 update of f32 params would miss -w (no exact 0).
    out = jnp.promote_types(jnp.result_type(u), jnp.result_type(p))
    return (w_new - w).astype(out), n, z


def ftrl(
    learning_rate: optax.ScalarOrSchedule,
    *,
    strength: optax.ScalarOrSchedule,
    l2: optax.ScalarOrSchedule = 0.0,
    l2_shrinkage: optax.ScalarOrSchedule = 0.0,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    beta: float = 0.0,
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
    is :math:`w_{new} - w`, so zeroed weights are exactly ``0.0``. :math:`n'` saturates at
    the largest finite value of its dtype: a finite gradient whose square overflows (above
    about 1.8e19 in float32) gives a finite step (not the exact one) instead of NaN.

    Memory: on one CPU device a jitted step that donates the state writes :math:`n` and
    :math:`z` in place, chunk by chunk, with no temporary of a leaf's size (1.3-1.7x an
    ``optax.adagrad`` step on the project's 2-core CPU, ``benchmarks/RESULTS.md``); on
    several devices (or another backend) each leaf is updated whole, which keeps its
    sharding, and XLA:CPU keeps one copy of the old :math:`n`.

    Args:
      learning_rate: :math:`\eta_t > 0`, number or schedule.
      strength: :math:`\ell_1 \ge 0` (TensorFlow's ``l1_regularization_strength``), number or
        schedule.
      l2: :math:`\ell_2 \ge 0` (``l2_regularization_strength``).
      l2_shrinkage: :math:`\ell_{2,s} \ge 0` (``l2_shrinkage_regularization_strength``).
      learning_rate_power: :math:`\le 0`; ``-0.5`` is Adagrad-like, ``0`` a constant rate.
      initial_accumulator_value: :math:`n_0 \ge 0`; 0 needs ``beta > 0`` or ``l2 > 0``
        when ``l2_shrinkage`` is used (a coordinate with no gradient yet would divide by
        :math:`(n^p + \beta)/\eta + 2\ell_2 = 0`).
      beta: :math:`\beta \ge 0`, the paper's per-coordinate rate offset.
      mask: a pytree of bools (prefix of params) or a callable ``params -> mask``: leaves
        where ``strength``, ``l2`` and ``l2_shrinkage`` apply; the others follow FTRL without
        regularization.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state :class:`FtrlState`
      (accumulators in at least float32).

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> tx = optax_l1.ftrl(1.0, strength=0.5, initial_accumulator_value=0.0)
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
    _check_ftrl_args(
        learning_rate,
        strength,
        l2,
        l2_shrinkage,
        learning_rate_power,
        initial_accumulator_value,
        beta,
    )
    _checks.check_mask(mask)
    power_value = _checks.scalar_value(learning_rate_power)
    # A Python float keeps float64 exact and lets `_ftrl_leaf` branch in Python; a value known
    # only at run time (inject_hyperparams) keeps its dtype and is NaN unless <= 0.
    power: Any = (
        -power_value
        if power_value is not None
        else -_checks.runtime_checked(learning_rate_power, _checks.NONPOSITIVE)
    )
    beta_value: Any = _checks.usable(beta, _checks.NONNEGATIVE)
    lr_at = _checks.as_schedule("learning_rate", learning_rate, _checks.POSITIVE)
    l1_at = _checks.as_schedule("strength", strength)
    l2_at = _checks.as_schedule("l2", l2)
    shrinkage_at = _checks.as_schedule("l2_shrinkage", l2_shrinkage)

    def init_fn(params):
        return FtrlState(
            count=_transforms.zero_count(),
            accumulator=jax.tree.map(lambda p: _slot(p, initial_accumulator_value), params),
            linear=jax.tree.map(lambda p: _slot(p, 0.0), params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        _checks.check_params("ftrl", params)
        aligned = _tree.align("ftrl", updates, params, mask)
        treedef = aligned.treedef
        n_leaves, z_leaves = (treedef.flatten_up_to(t) for t in (state.accumulator, state.linear))
        hyper = dict(lr=jnp.asarray(lr_at(state.count)), power=power, beta=beta_value)
        on = dict(l1=l1_at(state.count), l2=l2_at(state.count), shrinkage=shrinkage_at(state.count))
        off = dict.fromkeys(on, 0.0)  # masked-out leaves: FTRL without regularization
        leaves = zip(
            aligned.updates, aligned.params, n_leaves, z_leaves, aligned.selected, strict=True
        )
        hyper_at = _cast_once(hyper | on, hyper | off)
        steps = [
            _leaf_step(u, p, n, z, functools.partial(hyper_at, regularized=bool(m)))
            for u, p, n, z, m in leaves
        ]
        out, new_n, new_z = (treedef.unflatten([s[i] for s in steps]) for i in range(3))
        count = _transforms.next_count(state.count)
        return out, FtrlState(count=count, accumulator=new_n, linear=new_z)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
