r"""Target sparsity: an L1 proximal step whose strength is set online to follow a sparsity ramp."""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from optax_l1 import _adaptive, _checks, _operators, _transforms, _tree

_RAMPS = ("cubic", "linear")
_HOLDS = ("support", "track")
_QUANTILES = ("bisect", "sort")
_PRECONDITIONERS = ("nu", "sum_of_squares")  # Adam/AdamW/RMSProp/Yogi..., Adagrad
_PRECONDITIONER_EPS = 1e-8


class SparsityTargetState(NamedTuple):
    r"""State of :func:`sparsity_target`, ready to log.

    Attributes:
      count: the number of updates applied so far.
      strength: the L1 strength :math:`\lambda` of the last update (the threshold was
        ``learning_rate * strength``, divided per coordinate by the preconditioner when
        ``optimizer`` is given); 0 before the ramp starts and once the support is frozen.
      sparsity: the fraction of exact zeros in the regularized leaves after the last update.
      target: the ramp's sparsity at the last update (what ``sparsity`` was steered to).
      inner_state: the state of ``optimizer``, or :class:`optax.EmptyState` without one.
    """

    count: jax.Array
    strength: jax.Array
    sparsity: jax.Array
    target: jax.Array
    inner_state: Any


class _Count(NamedTuple):
    count: jax.Array


# ----------------------------------------------------------------------------- checks


def _check_number(name: str, value: Any, ok: Any, rule: str) -> None:
    """TypeError for non-numbers; ValueError when a concrete number breaks ``rule``.

    Jax arrays and tracers (as :func:`optax.inject_hyperparams` passes them) are not
    inspected: their values are only known inside the compiled step.
    """
    if callable(value) or isinstance(value, (str, bytes, bool)) or value is None:
        raise TypeError(f"`{name}` must be a number, got {value!r}")
    x = None
    if isinstance(value, numbers.Real):
        x = float(value)
    elif isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer):
        if np.ndim(value) != 0:
            raise TypeError(f"`{name}` must be a scalar, got shape {np.shape(value)}")
        x = float(value)  # a concrete array (not traced): its value is known, check it
    if x is not None and not (math.isfinite(x) and ok(x)):
        raise ValueError(f"`{name}` must be {rule}, got {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    _check_number(name, value, lambda x: x >= low and x == int(x), f"an integer >= {low}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


# ----------------------------------------------------------------------------- pieces


def _ramp(count: jax.Array, target: Any, ramp_steps: Any, begin_step: Any, shape: str):
    """The scheduled sparsity at ``count``: 0 up to ``begin_step``, ``target`` from the end."""
    t = count.astype(jnp.float32) - jnp.asarray(begin_step, jnp.float32)
    frac = jnp.clip(t / jnp.asarray(ramp_steps, jnp.float32), 0.0, 1.0)
    if shape == "cubic":  # Zhu & Gupta (2017), eq. (1), from an initial sparsity of 0
        frac = 1.0 - (1.0 - frac) ** 3
    return jnp.asarray(target, jnp.float32) * frac


def _kth_smallest_bisect(scores: list[jax.Array], k: jax.Array) -> jax.Array:
    """The k-th smallest (k >= 1) entry of non-negative float arrays, exactly.

    Bisection on bit patterns: for floats >= 0 the integer view is monotone, so 31 (63 for
    float64) fixed halvings of ``[-1, bits(max)]`` land on the exact value. Each halving
    is one global count ``sum(bits <= mid)``: O(31 n) work made of reductions only, so
    sharded leaves need one scalar all-reduce per halving and nothing is gathered.
    """
    dtype = scores[0].dtype
    itype, halvings = (jnp.int64, 63) if dtype == jnp.float64 else (jnp.int32, 31)
    bits = [lax.bitcast_convert_type(s, itype) for s in scores]
    hi = jnp.max(jnp.stack([jnp.max(b) for b in bits]))

    def halve(_, lo_hi):
        lo, hi = lo_hi
        mid = lo + (hi - lo) // 2
        enough = sum(jnp.sum(b <= mid, dtype=jnp.int32) for b in bits) >= k
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    _, hi = lax.fori_loop(0, halvings, halve, (jnp.asarray(-1, itype), hi))
    return lax.bitcast_convert_type(hi, dtype)


def _kth_smallest_sort(scores: list[jax.Array], k: jax.Array) -> jax.Array:
    """The k-th smallest (k >= 1) entry by one sort of all entries: O(n log n), gathers."""
    flat = jnp.sort(jnp.concatenate([s.ravel() for s in scores]))
    return flat[jnp.clip(k - 1, 0, flat.size - 1)]


def _preconditioner(name: str, inner_state: Any, treedef: Any) -> list[Any]:
    """``sqrt(nu) + eps`` per leaf of ``treedef``, read from the optimizer's state."""
    acc = _adaptive.find_accumulator(_PRECONDITIONERS, inner_state, name)
    leaves = _tree.flatten_like(
        treedef, acc, f"`{name}`: the optimizer's second moment must have the structure of params"
    )
    return [
        None  # no second moment here (an int leaf, or masked out of a multi_transform)
        if a is None or isinstance(a, optax.MaskedNode)
        else jnp.sqrt(jnp.abs(a)).astype(jnp.float32) + _PRECONDITIONER_EPS
        for a in leaves
    ]


# ----------------------------------------------------------------------------- transform


def sparsity_target(
    target: jax.typing.ArrayLike,
    learning_rate: optax.ScalarOrSchedule,
    *,
    ramp_steps: jax.typing.ArrayLike,
    begin_step: jax.typing.ArrayLike = 0,
    ramp: str = "cubic",
    hold: str = "support",
    update_every: jax.typing.ArrayLike = 1,
    smoothing: jax.typing.ArrayLike = 0.0,
    quantile: str = "bisect",
    optimizer: optax.GradientTransformation | None = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""L1 proximal step whose strength is chosen online to reach a target sparsity.

    Placed last in a chain, like :func:`l1_prox`. Each update soft-thresholds
    :math:`z = p_t + u_t` with the smallest threshold that leaves the ramp's fraction
    :math:`s_t` of exact zeros among the :math:`n` regularized entries:

    .. math::

      s_t = s \left(1 - \left(1 - \operatorname{clip}\left(
        \tfrac{t - t_0}{T}, 0, 1\right)\right)^3\right), \qquad
      \tau_t = \left(d \odot |z|\right)_{(\lfloor s_t n \rfloor)},

      \lambda_t = \beta \lambda_{t-1} + (1 - \beta) \frac{\tau_t}{\eta_t}, \qquad
      p_{t+1} = \operatorname{sign}(z) \max\left(|z| - \frac{\eta_t \lambda_t}{d}, 0\right),

    where :math:`x_{(k)}` is the :math:`k`-th smallest entry (:math:`\tau_t = 0` for
    :math:`k = 0`), :math:`s` is ``target``, :math:`T` ``ramp_steps``, :math:`t_0`
    ``begin_step``, :math:`\eta_t` the learning rate, :math:`\beta` ``smoothing`` and
    :math:`d = 1` (or the optimizer's :math:`\sqrt{\nu} + \epsilon`, see ``optimizer``).
    With :math:`\beta = 0` (the default) exactly :math:`\lfloor s_t n \rfloor` entries are
    zero after each update (more if entries tie at the threshold, e.g. weights that get
    no gradient; and, for bfloat16/float16 params, a few more where ``p + u`` rounds a
    small survivor to 0: about 0.1 points in a 20k-weight test), so the sparsity follows
    the ramp with no controller lag, overshoot or oscillation and no initial strength to
    guess: the controller is the quantile itself,
    and :math:`\lambda_t` is the smallest L1 strength that reaches :math:`s_t` this step.
    Zeros revive when their update outgrows the threshold, as on the lasso path.

    After the ramp (:math:`t > t_0 + T`), ``hold="support"`` (the default) freezes the
    set of zeros: zero weights stay zero and the others take the optimizer's update
    unshrunk, a debiasing fine-tuning phase (as in gradual magnitude pruning, and the
    relaxed lasso) that costs nothing per step. ``hold="track"`` keeps the L1 step,
    choosing :math:`\tau_t` each update to hold the target.

    Cost: ``quantile="bisect"`` (default) finds :math:`\tau_t` exactly with 31 global
    counts ``sum(score <= mid)`` (63 for float64): O(31 n) work per search, reductions
    only, so sharded params are never gathered (one scalar all-reduce per count).
    ``quantile="sort"`` sorts all regularized entries once (O(n log n), gathers sharded
    params to one device). For large models use ``update_every=k``: the search runs every
    ``k`` steps (and at :math:`t_0 + T`) and :math:`\lambda` is kept in between, which is
    plain :func:`l1_prox`, so the sparsity drifts between searches.

    Args:
      target: the final fraction of exact zeros :math:`s \in [0, 1)`.
      learning_rate: the learning rate (or schedule) of the optimizer; the threshold is
        ``learning_rate * strength``.
      ramp_steps: :math:`T \ge 1`, the number of steps the ramp takes to reach ``target``.
      begin_step: :math:`t_0 \ge 0`, the step the ramp starts (dense training before).
      ramp: ``"cubic"`` (Zhu & Gupta) or ``"linear"`` (the cube dropped).
      hold: ``"support"`` or ``"track"``, the behaviour after the ramp (see above).
      update_every: search a new threshold every this many steps (>= 1).
      smoothing: :math:`\beta \in [0, 1)`, a moving average on the strength (0: none;
        otherwise the sparsity lags the ramp a little, and with ``hold="support"`` the
        last search of the ramp is unsmoothed so the frozen support is on target).
      quantile: ``"bisect"`` or ``"sort"``, how the threshold is found (see above).
      optimizer: optional; an optax optimizer with a diagonal second moment in its state
        (``nu``: adam, adamw, rmsprop...; ``sum_of_squares``: adagrad). The returned
        transformation then *is* that optimizer followed by the thresholding, and the
        threshold per coordinate is :math:`\eta_t \lambda_t / (\sqrt{\nu} + 10^{-8})`,
        the proximal step in the optimizer's metric (ProxGen). The score
        :math:`|z|\sqrt{\nu}` of a weight is then the square root of its empirical-Fisher
        saliency :math:`w^2\,\mathbb{E}[g^2]` (Optimal Brain Damage with the Fisher
        diagonal), and a zero revives when its momentum :math:`|m|` exceeds
        :math:`\lambda`. ``nu`` is not bias corrected: that rescales every coordinate
        alike and changes no zero, only the units of ``strength``.
      mask: a pytree of bools (prefix of params; True = regularized and counted) or a
        callable ``params -> mask``, as in :func:`l1_prox`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`SparsityTargetState` (``strength``, ``sparsity`` and ``target`` to log).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, optax_l1
      >>> params = {"w": jnp.array([0.3, -2.0, 0.1, 1.0, -0.5]), "b": jnp.ones(2)}
      >>> tx = optax.chain(
      ...     optax.sgd(0.1),
      ...     optax_l1.sparsity_target(0.6, 0.1, ramp_steps=1, mask={"w": True, "b": False}),
      ... )
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.zeros_like, params)
      >>> for _ in range(2):
      ...     updates, state = tx.update(grads, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> params["w"]
      Array([ 0. , -1.5,  0. ,  0.5,  0. ], dtype=float32)
      >>> float(state[1].sparsity), float(state[1].strength)
      (0.6000000238418579, 5.0)

      With Adam's preconditioner, the whole optimizer in one transformation:

      >>> tx = optax_l1.sparsity_target(
      ...     0.9, 1e-3, ramp_steps=100, optimizer=optax.adam(1e-3), mask=optax_l1.kernel_mask
      ... )

    References:
      Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning for model
      compression <https://arxiv.org/abs/1710.01878>`_, 2017;
      Yun, Lozano & Yang, `Adaptive Proximal Gradient Methods for Structured Neural
      Networks <https://openreview.net/forum?id=Ai3IHxaxSO5>`_, NeurIPS 2021.
    """
    # float32(target) < 1 too: the ramp runs in float32, where 1 - 1e-9 is 1.
    _check_number("target", target, lambda x: 0.0 <= x and np.float32(x) < 1.0, "in [0, 1)")
    _check_int("ramp_steps", ramp_steps, 1)
    _check_int("begin_step", begin_step, 0)
    _check_int("update_every", update_every, 1)
    _check_number("smoothing", smoothing, lambda x: 0.0 <= x < 1.0, "in [0, 1)")
    _checks.check_nonnegative("learning_rate", learning_rate)
    _check_choice("ramp", ramp, _RAMPS)
    _check_choice("hold", hold, _HOLDS)
    _check_choice("quantile", quantile, _QUANTILES)
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"`optimizer` must be an optax GradientTransformation, got {optimizer!r}")
    _tree.check_mask(mask)
    inner = None if optimizer is None else optax.with_extra_args_support(optimizer)
    lr_at = _checks.as_schedule(learning_rate)
    name = "sparsity_target"

    def init_fn(params):
        zero = jnp.zeros([], jnp.float32)
        inner_state = (
            optax.EmptyState() if inner is None else inner.init(_adaptive._inexact_only(params))
        )
        if inner is not None:
            _preconditioner(name, inner_state, jax.tree.structure(params, is_leaf=_tree.is_none))
        return SparsityTargetState(jnp.zeros([], jnp.int32), zero, zero, zero, inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        _checks.check_params(name, params)
        inner_state = state.inner_state
        if inner is not None:
            updates, inner_state = _adaptive.update_inexact(
                inner, updates, inner_state, params, name, **extra_args
            )
        u_leaves, treedef = jax.tree.flatten(updates, is_leaf=_tree.is_none)
        scale = None if inner is None else _preconditioner(name, inner_state, treedef)

        count = state.count
        begin, end = jnp.asarray(begin_step), jnp.asarray(begin_step) + jnp.asarray(ramp_steps)
        scheduled = _ramp(count, target, ramp_steps, begin_step, ramp)
        frozen = count > end if hold == "support" else jnp.asarray(False)
        last = (count == end) if hold == "support" else jnp.asarray(False)
        on_grid = ((count - begin) % jnp.asarray(update_every) == 0) | (count == end)
        due = on_grid & (count >= begin) & ~frozen & (scheduled > 0)
        lr = jnp.asarray(lr_at(count), jnp.float32)
        found: dict[str, jax.Array] = {}

        def prox(z, step, count):
            del step, count
            z_leaves, z_def = jax.tree.flatten(z, is_leaf=_tree.is_none)
            d_leaves = [None] * len(z_leaves) if scale is None else scale
            live = [(x, d) for x, d in zip(z_leaves, d_leaves, strict=True) if x is not None]
            if scale is not None and any(d is None for _, d in live):
                raise ValueError(
                    f"`{name}`: `optimizer` keeps no second moment for some regularized leaves "
                    "(e.g. they are masked out of an optax.multi_transform); exclude them "
                    "with `mask`"
                )
            n = sum(int(x.size) for x, _ in live)
            if n == 0:
                found["tau"] = jnp.zeros([], jnp.float32)
                return z
            if n >= 2**31:
                raise ValueError(f"`{name}` counts in int32: {n} regularized entries is too many")
            wide = any(x.dtype in (jnp.float64, jnp.complex128) for x, _ in live)
            sdt = jnp.float64 if wide else jnp.float32

            def score(x, d):
                a = jnp.abs(x).astype(sdt)
                return a if d is None else a * d

            # At most n - 1 zeros: a target just under 1 may round up to 1 in float32.
            k = jnp.minimum(jnp.floor(scheduled * n).astype(jnp.int32), n - 1)
            held = (lr * state.strength).astype(sdt)  # the last strength's threshold

            def search():
                find = _kth_smallest_bisect if quantile == "bisect" else _kth_smallest_sort
                kth = find([score(x, d) for x, d in live], k)
                # The search that precedes a frozen support lands exactly on the target.
                beta = jnp.where(last, 0.0, jnp.asarray(smoothing, sdt)).astype(sdt)
                return beta * held + (1 - beta) * jnp.where(k > 0, kth, 0)

            tau = lax.cond(due, search, lambda: held).astype(sdt)
            tau = jnp.where(frozen | ~jnp.isfinite(tau) | (tau < 0), 0, tau)
            found["tau"] = tau

            def shrink_leaf(x, d):
                if x is None:
                    return None
                if d is None:
                    return _operators.soft_threshold(x, tau)
                # Zero exactly where the score is at most tau (as counted by the search).
                y = _operators.soft_threshold(x, (tau / d).astype(jnp.real(x).dtype))
                return jnp.where(score(x, d) <= tau, jnp.zeros_like(y), y)

            return z_def.unflatten(
                [shrink_leaf(x, d) for x, d in zip(z_leaves, d_leaves, strict=True)]
            )

        shrink = _transforms.prox_after_update(prox, lr_at, mask=mask, state_cls=_Count, name=name)
        shrunk, _ = shrink.update(updates, _Count(count), params)
        tau = found["tau"]

        s_leaves = treedef.flatten_up_to(shrunk)
        p_leaves = treedef.flatten_up_to(params)
        keep = _tree.resolve_mask(mask, params)
        out, zeros, size = [], jnp.zeros([], jnp.int32), 0
        for u, s, p, m in zip(u_leaves, s_leaves, p_leaves, keep, strict=True):
            if u is None or p is None or not m or not _tree.is_inexact(p):
                out.append(u)
                continue
            # Threshold 0: the optimizer's update bit for bit. Frozen support: zero weights
            # stay zero, the others take the update unshrunk.
            s = jnp.where(tau > 0, s, u)
            s = jnp.where(frozen & (p == 0), jnp.zeros_like(s), s)
            out.append(s)
            zeros += jnp.sum(optax.apply_updates(p, s) == 0, dtype=jnp.int32)
            size += int(np.size(p))
        # A search sets lambda = tau / lr (kept when lr = 0); between searches it is kept.
        searched = jnp.where(lr > 0, tau / jnp.where(lr > 0, lr, 1.0), state.strength)
        strength = jnp.where(frozen, 0.0, jnp.where(due, searched, state.strength))
        new_state = SparsityTargetState(
            count=optax.safe_increment(count),
            strength=strength.astype(jnp.float32),
            sparsity=zeros.astype(jnp.float32) / jnp.float32(max(size, 1)),
            target=scheduled,
            inner_state=inner_state,
        )
        return treedef.unflatten(out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
