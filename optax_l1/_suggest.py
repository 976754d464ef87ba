r"""A first L1 strength for a wanted fraction of zeros, read off a short dense Adam run."""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_l1 import _checks, _structures, _tree

For = Literal["l1_prox", "proximal_adam", "proximal_adamw"]
FOR = ("l1_prox", "proximal_adam", "proximal_adamw")  # adamw: proximal_adam's units


def suggest_strength(
    params: Any,
    opt_state: Any,
    sparsity: float,
    *,
    for_transform: For,
    batch_size: int,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    mask: Any = None,
) -> float:
    r"""A first strength for about ``sparsity`` zeros, read off a short dense Adam run.

    Train the dense model for a short while (about 10% of the planned steps) with
    ``optax.adam`` or ``optax.adamw``, then call this with its params and optimizer state.
    It reads Adam's bias-corrected moments :math:`\hat m, \hat v` (``mu``, ``nu``,
    ``count``) and returns the ``sparsity`` quantile, over the regularized entries, of a
    per-weight score whose units are those of the strength:

    - ``for_transform="l1_prox"``, the strength of
      ``optax.chain(optax.adam(lr), optax_l1.l1_prox(strength, learning_rate=lr))``
      (dimensionless: a zero stays zero while Adam's normalized step
      :math:`|g| / D`, :math:`D = \sqrt{\hat v} + \epsilon`, is at most :math:`\lambda`).
      The gradient a weight would see at zero is estimated two ways: early in training by
      the gradient itself, :math:`|\hat m|`; near the dense optimum (where
      :math:`\hat m \approx 0`) by a quadratic model, curvature times distance,
      :math:`|w|\, h` with the empirical Fisher :math:`h \approx B \hat v`
      (``batch_size`` :math:`B`: minibatch gradients average :math:`B` terms, so their
      second moment is the per-term one over :math:`B`). The score is
      :math:`\max(|\hat m|, |w| B \hat v) / D`.
    - ``for_transform="proximal_adam"`` (or ``"proximal_adamw"``, the same), the strength
      of :func:`proximal_adam` and :func:`proximal_adamw` (in the units of the gradient: a
      zero stays zero while :math:`|g| \le \lambda`). The quadratic model alone overshoots
      there (it ignores that the other weights compensate for a removed one), so its
      estimate is the geometric mean with :math:`|\hat m|`: the score is
      :math:`\max(|\hat m|, \sqrt{|\hat m|\, |w| B \hat v})`.

    A first guess, not a guarantee: both scores are measured at the dense weights, and
    sparsity changes the gradients. Measured with ``benchmarks/suggest_strength.py``
    (RESULTS.md), full runs at the suggested strength ended 0-9 points from the wanted
    fraction for the chain on a digits MLP (3 seeds, 50-90%) but 20-26 points under on a
    small transformer, and for ``proximal_adam`` 0-4 points off at 80-90% (but for one
    digits run of six that collapsed to 42 points under late in training: the L1-under-Adam
    dynamics at a constant learning rate, not the suggestion) and 9-13 points over at 50%
    on both. When the fraction of zeros must be exact, use
    :func:`sparsity_target`, which needs no strength.

    Args:
      params: the dense run's params (the same structure as Adam's moments).
      opt_state: the dense run's optimizer state: anything holding exactly one
        ``optax.ScaleByAdamState`` (``optax.adam``'s, ``optax.adamw``'s,
        :func:`proximal_adam`'s, inside chains or ``optax.inject_hyperparams``;
        ``optax.adamax`` keeps the same state with :math:`\max|g|` as ``nu``, which would
        be read as a second moment: not supported).
      sparsity: the wanted fraction of zeros among the regularized entries, in (0, 1).
      for_transform: ``"l1_prox"`` (after Adam), ``"proximal_adam"`` or
        ``"proximal_adamw"`` (the same strength's units).
      batch_size: :math:`B`, the number of terms the training loss averages per step (the
        examples of a minibatch; for a language model, its tokens).
      b1: the run's first-moment decay (Adam's ``b1``), for the bias correction.
      b2: the run's second-moment decay (Adam's ``b2``), for the bias correction.
      eps: Adam's :math:`\epsilon`.
      mask: which leaves are regularized: a pytree of bools (a prefix of params) or a
        callable ``params -> mask``, as for the transforms.

    Returns:
      The suggested strength, a Python float.

    Examples:
      >>> import jax.numpy as jnp, optax, optax_l1
      >>> opt = optax.adam(0.1)
      >>> params = {"w": jnp.array([1.0, 0.5, 0.5, 2.0])}
      >>> state = opt.init(params)
      >>> _, state = opt.update({"w": jnp.array([0.5, 0.1, -0.1, 0.5])}, state, params)
      >>> # one step: m_hat = |g|, v_hat = g^2; max(|g|, B |w| g^2) / |g| = [2, 1, 1, 4]
      >>> s = optax_l1.suggest_strength(params, state, 0.5, for_transform="l1_prox", batch_size=4)
      >>> round(s, 4)  # their median
      1.5
    """
    _checks.check_number("sparsity", sparsity)
    if not 0 < float(sparsity) < 1:
        raise ValueError(f"`sparsity` must be in (0, 1), got {sparsity!r}")
    _checks.check_choice("for_transform", for_transform, FOR)
    _checks.check_number("batch_size", batch_size, _checks.at_least(1), integer=True)
    _checks.check_number("b1", b1, _checks.DECAY)
    _checks.check_number("b2", b2, _checks.DECAY)
    _checks.check_number("eps", eps)
    _checks.check_mask(mask)
    adam = _adam_state(opt_state)
    scores = _scores(params, adam, for_transform, batch_size, b1, b2, eps, mask)
    if scores.size == 0:
        raise ValueError("`mask` selects no floating-point entry of `params`")
    if not np.all(np.isfinite(scores)):  # a NaN/inf weight or moment: no plausible value
        return float("nan")
    return float(np.quantile(scores, float(sparsity)))


def _adam_state(opt_state: Any) -> optax.ScaleByAdamState:
    """The one ``ScaleByAdamState`` in ``opt_state``."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"`opt_state` must hold exactly one Adam state (optax.ScaleByAdamState: the "
            f"state of optax.adam, optax.adamw or optax_l1.proximal_adam), found {len(found)}"
        )
    return found[0]


def _scores(params, adam, kind: str, batch_size, b1, b2, eps, mask) -> np.ndarray:
    """The per-entry scores of the regularized leaves, concatenated (float64, on the host)."""
    count = int(adam.count)
    if count < 1:
        raise ValueError("`opt_state` has taken no step yet (count 0): run the dense model first")
    p_leaves, treedef = jax.tree.flatten(params, is_leaf=_tree.is_none)
    message = "`opt_state`: Adam's moments must have the structure of `params`"
    mu_leaves = _tree.flatten_like(treedef, adam.mu, message)
    nu_leaves = _tree.flatten_like(treedef, adam.nu, message)
    chosen = _tree.resolve_mask(mask, params)
    parts = []
    names = _structures.leaf_names(params)
    for p, m, v, keep, name in zip(p_leaves, mu_leaves, nu_leaves, chosen, names, strict=True):
        if not keep or p is None or not _tree.is_inexact(p):
            continue
        if isinstance(m, optax.MaskedNode) or isinstance(v, optax.MaskedNode):
            raise ValueError(
                f"`opt_state` keeps no Adam moments for leaf {name!r} (outside an "
                "optax.masked or multi_transform partition): leave it out with `mask=`"
            )
        m_hat = np.asarray(jnp.abs(m), np.float64) / (1 - b1**count)
        v_hat = np.asarray(jnp.real(v), np.float64) / (1 - b2**count)
        curvature_step = np.asarray(jnp.abs(p), np.float64) * batch_size * v_hat  # |w| h
        with np.errstate(invalid="ignore"):  # a negative second moment: NaN, the signal
            if kind == "l1_prox":
                d = np.sqrt(v_hat) + eps  # 0 only where no gradient was ever seen (eps = 0)
                # d == 0, not d <= 0: a NaN divisor (a negative second moment) stays NaN
                score = np.maximum(m_hat, curvature_step) / np.where(d == 0, 1.0, d)
            else:
                score = np.maximum(m_hat, np.sqrt(m_hat * curvature_step))
        parts.append(score.ravel())
    return np.concatenate(parts) if parts else np.zeros(0)
