r"""Target sparsity: an L1 proximal step whose strength is set online to follow a sparsity ramp.

The transform is a composition of small pure pieces: :func:`_phase` (where the ramp is),
:func:`_threshold` (the search for the threshold that gives the ramp's zeros),
:func:`_shrink` (the thresholding), :func:`_hold_support` (the frozen support after the
ramp) and :func:`_next_state` (the bookkeeping), applied through the one proximal step
:func:`optax_l1._step.prox_update`.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from optax_l1 import _checks, _inner, _operators, _select, _step, _transforms, _tree

Ramp = Literal["cubic", "linear"]
Hold = Literal["support", "track"]
_RAMPS: tuple[str, ...] = ("cubic", "linear")
_HOLDS: tuple[str, ...] = ("support", "track")
_PRECONDITIONER_EPS = 1e-8


class SparsityTargetState(NamedTuple):
    r"""State of :func:`sparsity_target`, ready to log.

    Attributes:
      count: the number of updates applied so far.
      strength: the L1 strength :math:`\lambda` of the last update (the threshold was
        ``learning_rate * strength``, divided per coordinate by the preconditioner when
        ``optimizer`` is given); 0 before the ramp starts and once the support is frozen.
      sparsity: the fraction of exact zeros in the regularized leaves after the last update.
      scheduled: the ramp's sparsity :math:`s_t` at the last update (what ``sparsity`` was
        steered to; ``target`` once the ramp is over).
      inner_state: the state of ``optimizer``, or :class:`optax.EmptyState` without one.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    strength: jax.Array
    sparsity: jax.Array
    scheduled: jax.Array
    inner_state: Any


class _Config(NamedTuple):
    """The static settings of one :func:`sparsity_target` (validated)."""

    target: Any
    ramp_steps: Any
    begin_step: Any
    ramp: str
    hold: str
    update_every: Any
    smoothing: Any
    quantile: _select.Method


class _Phase(NamedTuple):
    """Where the ramp is at one count."""

    scheduled: jax.Array  # the ramp's sparsity s_t
    due: jax.Array  # a threshold search runs at this step
    frozen: jax.Array  # the support is frozen (after the ramp, hold="support")
    last: jax.Array  # the last search before the support is frozen


# ----------------------------------------------------------------------------- pieces


def _ramp(count: jax.Array, target: Any, ramp_steps: Any, begin_step: Any, shape: str):
    """The scheduled sparsity at ``count``: 0 up to ``begin_step``, ``target`` from the end."""
    t = count.astype(jnp.float32) - jnp.asarray(begin_step, jnp.float32)
    frac = jnp.clip(t / jnp.asarray(ramp_steps, jnp.float32), 0.0, 1.0)
    if shape == "cubic":  # Zhu & Gupta (2017), eq. (1), from an initial sparsity of 0
        frac = 1.0 - (1.0 - frac) ** 3
    return jnp.asarray(target, jnp.float32) * frac


def _phase(count: jax.Array, cfg: _Config) -> _Phase:
    """The ramp's value and whether this step searches, freezes, or ends the ramp."""
    begin = jnp.asarray(cfg.begin_step)
    end = begin + jnp.asarray(cfg.ramp_steps)
    scheduled = _ramp(count, cfg.target, cfg.ramp_steps, cfg.begin_step, cfg.ramp)
    support = cfg.hold == "support"
    frozen = count > end if support else jnp.asarray(False)
    last = (count == end) if support else jnp.asarray(False)
    on_grid = ((count - begin) % jnp.asarray(cfg.update_every) == 0) | (count == end)
    due = on_grid & (count >= begin) & ~frozen & (scheduled > 0)
    return _Phase(scheduled, due, frozen, last)


def _score(x: jax.Array, d: jax.Array | None, dtype: Any) -> jax.Array:
    """A weight's score: ``|z|``, times the preconditioner ``d`` when there is one."""
    a = jnp.abs(x).astype(dtype)
    return a if d is None else a * d


def _threshold(scores: list[jax.Array], phase: _Phase, held: jax.Array, cfg: _Config) -> jax.Array:
    """The threshold of this step: the k-th smallest score when a search is due (moving
    average ``smoothing`` with the held one, except on the last search), else the held one;
    0 once frozen or when the search gives no finite, non-negative value."""
    n = sum(int(s.size) for s in scores)
    if n >= 2**31:
        raise ValueError(f"`sparsity_target` counts in int32: {n} regularized entries is too many")
    dtype = scores[0].dtype
    # At most n - 1 zeros: a target just under 1 may round up to 1 in float32.
    k = jnp.minimum(jnp.floor(phase.scheduled * n).astype(jnp.int32), n - 1)
    held = held.astype(dtype)

    def search():
        kth = _select.kth_smallest(scores, k, cfg.quantile)
        beta = jnp.where(phase.last, 0.0, jnp.asarray(cfg.smoothing, dtype)).astype(dtype)
        return beta * held + (1 - beta) * jnp.where(k > 0, kth, 0)

    tau = lax.cond(phase.due, search, lambda: held).astype(dtype)
    return jnp.where(phase.frozen | ~jnp.isfinite(tau) | (tau < 0), 0, tau)


def _shrink(x: jax.Array, d: jax.Array | None, tau: jax.Array) -> jax.Array:
    """Soft-thresholds ``x`` at ``tau / d``; zero exactly where the score is at most ``tau``
    (as the search counted)."""
    if d is None:
        return _operators.soft_threshold_tree(x, tau)
    y = _operators.soft_threshold_tree(x, (tau / d).astype(jnp.real(x).dtype))
    return jnp.where(_score(x, d, tau.dtype) <= tau, jnp.zeros_like(y), y)


def _target_prox(
    scale: list[Any] | None, phase: _Phase, held: jax.Array, cfg: _Config
) -> _step.ProxMap:
    """The map of one step: ``z -> (thresholded z, tau)``."""

    def prox(z, step, count):
        del step, count
        z_leaves, z_def = jax.tree.flatten(z, is_leaf=_tree.is_none)
        d_leaves = [None] * len(z_leaves) if scale is None else scale
        live = [(x, d) for x, d in zip(z_leaves, d_leaves, strict=True) if x is not None]
        if scale is not None and any(d is None for _, d in live):
            raise ValueError(
                "`sparsity_target`: `optimizer` keeps no second moment for some regularized "
                "leaves (e.g. they are masked out of an optax.multi_transform); exclude them "
                "with `mask`"
            )
        if sum(int(x.size) for x, _ in live) == 0:
            return z, jnp.zeros([], jnp.float32)
        wide = any(x.dtype in (jnp.float64, jnp.complex128) for x, _ in live)
        sdt = jnp.float64 if wide else jnp.float32
        tau = _threshold([_score(x, d, sdt) for x, d in live], phase, held, cfg)
        pairs = zip(z_leaves, d_leaves, strict=True)
        return z_def.unflatten([None if x is None else _shrink(x, d, tau) for x, d in pairs]), tau

    return prox


def _hold_support(aligned: _tree.Aligned, shrunk: Any, tau: jax.Array, frozen: jax.Array) -> Any:
    """Threshold 0 gives the optimizer's update bit for bit; a frozen support keeps zero
    weights at zero and gives the others the update unshrunk."""
    s_leaves = aligned.treedef.flatten_up_to(shrunk)
    leaves = zip(aligned.updates, s_leaves, aligned.params, aligned.selected, strict=True)
    new = [
        jnp.where(frozen & (p == 0), jnp.zeros_like(s), jnp.where(tau > 0, s, u)) if sel else None
        for u, s, p, sel in leaves
    ]
    return aligned.merge(new)


def _next_state(state, phase: _Phase, tau, lr, zeros, size, inner_state) -> SparsityTargetState:
    """A search sets lambda = tau / lr (kept when lr = 0); between searches it is kept."""
    searched = jnp.where(lr > 0, tau / jnp.where(lr > 0, lr, 1.0), state.strength)
    strength = jnp.where(phase.frozen, 0.0, jnp.where(phase.due, searched, state.strength))
    return SparsityTargetState(
        count=_transforms.next_count(state.count),
        strength=strength.astype(jnp.float32),
        sparsity=zeros.astype(jnp.float32) / jnp.float32(max(size, 1)),
        scheduled=phase.scheduled,
        inner_state=inner_state,
    )


def _check_config(cfg: _Config, learning_rate: Any, optimizer: Any, mask: Any) -> None:
    _checks.check_number("target", cfg.target, _checks.FRACTION, scalar=True)
    _checks.check_number(
        "ramp_steps", cfg.ramp_steps, _checks.at_least(1), integer=True, scalar=True
    )
    _checks.check_number(
        "begin_step", cfg.begin_step, _checks.at_least(0), integer=True, scalar=True
    )
    _checks.check_number(
        "update_every", cfg.update_every, _checks.at_least(1), integer=True, scalar=True
    )
    _checks.check_number("smoothing", cfg.smoothing, _checks.DECAY, scalar=True)
    _checks.check_number("learning_rate", learning_rate, schedule=True)
    _checks.check_choice("ramp", cfg.ramp, _RAMPS)
    _checks.check_choice("hold", cfg.hold, _HOLDS)
    _checks.check_choice("quantile", cfg.quantile, _select.METHODS)
    if optimizer is not None:
        _checks.check_optimizer("optimizer", optimizer)
    _checks.check_mask(mask)


# ----------------------------------------------------------------------------- transform


def sparsity_target(
    target: jax.typing.ArrayLike,
    *,
    learning_rate: optax.ScalarOrSchedule,
    ramp_steps: jax.typing.ArrayLike,
    begin_step: jax.typing.ArrayLike = 0,
    ramp: Ramp = "cubic",
    hold: Hold = "support",
    update_every: jax.typing.ArrayLike = 1,
    smoothing: jax.typing.ArrayLike = 0.0,
    quantile: _select.Method = "bisect",
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
      :class:`SparsityTargetState` (``strength``, ``sparsity`` and ``scheduled`` to log).

    Examples:
      >>> import jax, jax.numpy as jnp, optax, optax_l1
      >>> params = {"w": jnp.array([0.3, -2.0, 0.1, 1.0, -0.5]), "b": jnp.ones(2)}
      >>> tx = optax.chain(
      ...     optax.sgd(0.1),
      ...     optax_l1.sparsity_target(
      ...         0.6, learning_rate=0.1, ramp_steps=1, mask={"w": True, "b": False}
      ...     ),
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
      ...     0.9,
      ...     learning_rate=1e-3,
      ...     ramp_steps=100,
      ...     optimizer=optax.adam(1e-3),
      ...     mask=optax_l1.kernel_mask,
      ... )

    References:
      Zhu & Gupta, `To prune, or not to prune: exploring the efficacy of pruning for model
      compression <https://arxiv.org/abs/1710.01878>`_, 2017;
      Yun, Lozano & Yang, `Adaptive Proximal Gradient Methods for Structured Neural
      Networks <https://openreview.net/forum?id=Ai3IHxaxSO5>`_, NeurIPS 2021.
    """
    cfg = _Config(target, ramp_steps, begin_step, ramp, hold, update_every, smoothing, quantile)
    _check_config(cfg, learning_rate, optimizer, mask)
    inner = None if optimizer is None else optax.with_extra_args_support(optimizer)
    lr_at = _checks.as_schedule(learning_rate)
    name = "sparsity_target"

    def preconditioner(inner_state, treedef):
        if inner is None:
            return None
        return _inner.second_moment_scale(name, inner_state, treedef, _PRECONDITIONER_EPS)

    def init_fn(params):
        zero = jnp.zeros([], jnp.float32)
        inner_state = optax.EmptyState()
        if inner is not None:
            inner_state = inner.init(_inner.inexact_only(params))
            preconditioner(inner_state, jax.tree.structure(params, is_leaf=_tree.is_none))
        return SparsityTargetState(_transforms.zero_count(), zero, zero, zero, inner_state)

    def update_fn(updates, state, params=None, **extra_args):
        _checks.check_params(name, params)
        inner_state = state.inner_state
        if inner is not None:
            updates, inner_state = _inner.update_inexact(
                inner, updates, inner_state, params, name, **extra_args
            )
        aligned = _tree.align(name, updates, params, mask)
        phase = _phase(state.count, cfg)
        lr = jnp.asarray(lr_at(state.count), jnp.float32)
        scale = preconditioner(inner_state, aligned.treedef)
        prox = _target_prox(scale, phase, lr * state.strength, cfg)
        shrunk, tau = _step.prox_update(prox, aligned, lr, state.count, name=name)
        out = _hold_support(aligned, shrunk, tau, phase.frozen)
        zeros, size = _step.landed_zeros(aligned, out)
        return out, _next_state(state, phase, tau, lr, zeros, size, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
