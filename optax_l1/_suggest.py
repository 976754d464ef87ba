r"""A first L1 strength for a wanted fraction of zeros, read off a short dense Adam run."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import special

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
    noise_floor: bool = False,
    mask: Any = None,
) -> float:
    r"""A first strength for about ``sparsity`` zeros, read off a short dense Adam run.

    Train the dense model for a short while (about 10% of the planned steps) with
    ``optax.adam`` or ``optax.adamw``, then call this with its params and optimizer state.
    It reads Adam's bias-corrected moments :math:`\hat m, \hat v` (``mu``, ``nu``,
    ``count``) and returns the ``sparsity`` quantile, over the regularized entries, of a
    per-weight score whose units are those of the strength (for the chain at a noise
    floor, of the score plus Adam's gradient noise):

    - ``for_transform="l1_prox"``, the strength of
      ``optax.chain(optax.adam(lr), optax_l1.l1_prox(strength, learning_rate=lr))``
      (dimensionless: a zero stays zero while Adam's normalized step
      :math:`|\hat m| / D`, :math:`D = \sqrt{\hat v} + \epsilon`, is at most :math:`\lambda`).
      The drift of that step at zero is estimated two ways: early in training by the
      gradient itself, :math:`|\hat m|`; near the dense optimum (where
      :math:`\hat m \approx 0`) by a quadratic model, curvature times distance,
      :math:`|w|\, h` with the empirical Fisher :math:`h \approx B \hat v`
      (``batch_size`` :math:`B`: minibatch gradients average :math:`B` terms, so their
      second moment is the per-term one over :math:`B`): the drift is
      :math:`d = \max(|\hat m|, |w| B \hat v) / D`, and the strength is the ``sparsity``
      quantile of :math:`d`. That fits a model that fits its training set over many
      passes (the digits MLP): its gradients collapse, :math:`\hat v` remembers larger
      ones, and a zero's normalized step is its drift. A model trained at a noise floor
      (about one pass over a large corpus, as a language model; ``noise_floor=True``)
      keeps its gradient noise, and :math:`\hat v` follows it: there a weight held at zero
      sees :math:`\hat m \approx` its drift plus noise of sd :math:`c D`,
      :math:`c^2 = (1 - b_1) / (1 + b_1)` (the share of a stationary noise's variance that
      Adam's :math:`\hat m` keeps), and the strength solves
      :math:`\frac1n \sum_i P(|d_i + c Z| \le \lambda) = s`, :math:`Z \sim N(0, 1)`,
      where the drift's :math:`|\hat m|` is replaced by its mean's estimate
      :math:`\sqrt{\max(0, (\hat m^2 - c^2 \hat v) / (1 - c^2))}` (the dense run's
      :math:`\hat m` holds noise too, which would be counted twice).
      Which regime a run is in was not found in the dense run's state: a small digits
      MLP whose :math:`\overline{\hat m^2} / \overline{\hat v}` after 150 dense steps
      was the transformer's after 60 (0.0095) still fit the drift alone.
    - ``for_transform="proximal_adam"`` (or ``"proximal_adamw"``, the same), the strength
      of :func:`proximal_adam` and :func:`proximal_adamw` (in the units of the gradient: a
      zero stays zero while :math:`|g| \le \lambda`). The quadratic model alone overshoots
      there (it ignores that the other weights compensate for a removed one), so its
      estimate is the geometric mean with :math:`|\hat m|`: the score is
      :math:`\max(|\hat m|, \sqrt{|\hat m|\, |w| B \hat v})`.

    A first guess, not a guarantee: both scores are measured at the dense weights, and
    sparsity changes the gradients. Measured with ``benchmarks/suggest_strength.py``
    (RESULTS.md), full runs at the suggested strength ended 0-9 points from the wanted
    fraction for the chain on a digits MLP (3 seeds, 50-90%) and, with
    ``noise_floor=True``, -3.5 to +4.4 points on a small transformer (3 seeds, 50 and
    90%; 20-26 points under without it); for ``proximal_adam`` 0-4 points off at 80-90% (but
    for one digits run of six that collapsed to 42 points under late in training: the
    L1-under-Adam dynamics at a constant learning rate, not the suggestion) and 9-13 points
    over at 50% on both. On the digits MLP with Adam's ``b2 = 0.99`` it missed by 47-78
    points (the chain; its zeros jump from 3-10% at strengths 0.01-0.02 to 76-86% at
    0.04 there) and 4-31 (``proximal_adam``). When the fraction of zeros must be exact, use
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
      noise_floor: for ``"l1_prox"`` only: True when the training's gradients stay at a
        noise floor (about one pass over the data or less, a language model), False (the
        default) when the model fits its training set over many passes (see above).
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
    if not isinstance(noise_floor, bool):
        raise TypeError(f"`noise_floor` must be a bool, got {noise_floor!r}")
    if noise_floor and for_transform != "l1_prox":
        raise ValueError(
            f"`noise_floor=True` is for for_transform='l1_prox' (Adam's normalized step); "
            f"for {for_transform!r} the strength is in gradient units and has no noise model"
        )
    _checks.check_mask(mask)
    mo = _moments(params, _adam_state(opt_state), b1, b2, mask)
    noise = (1 - b1) / (1 + b1) if noise_floor else None  # c^2
    scores = _scores(mo, for_transform, batch_size, eps, noise)
    if scores.size == 0:
        raise ValueError("`mask` selects no floating-point entry of `params`")
    if not np.all(np.isfinite(scores)):  # a NaN/inf weight or moment: no plausible value
        return float("nan")
    if noise is not None:
        return _noisy_quantile(scores, float(np.sqrt(noise)), float(sparsity))
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


class _Moments(NamedTuple):
    """The regularized entries of a dense run, concatenated (float64, on the host)."""

    w: np.ndarray  # |w|
    m_hat: np.ndarray  # |m_hat|
    v_hat: np.ndarray


def _moments(params, adam, b1, b2, mask) -> _Moments:
    """|w| and Adam's bias-corrected moments over the regularized entries."""
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
        w = np.asarray(jnp.abs(p), np.float64).ravel()
        m_hat = np.asarray(jnp.abs(m), np.float64).ravel() / (1 - b1**count)
        v_hat = np.asarray(jnp.real(v), np.float64).ravel() / (1 - b2**count)
        parts.append((w, m_hat, v_hat))
    if not parts:
        return _Moments(*(np.zeros(0) for _ in range(3)))
    return _Moments(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _scores(mo: _Moments, kind: str, batch_size, eps, noise: float | None = None) -> np.ndarray:
    """The per-entry drift scores, in the strength's units. ``noise``: c^2, the share of a
    stationary noise's variance in m_hat, taken out of m_hat^2 (the noise is counted apart)."""
    curvature_step = mo.w * batch_size * mo.v_hat  # |w| h
    m = mo.m_hat
    with np.errstate(invalid="ignore"):  # a negative second moment: NaN, the signal
        if noise is not None and noise < 1:  # m_hat^2 = mu^2 + c^2 (v_hat - mu^2): mu
            m = np.sqrt(np.maximum(0.0, (m**2 - noise * mo.v_hat) / (1 - noise)))
        elif noise is not None:  # b1 = 0: m_hat is the last gradient, no mean to read off
            m = np.zeros_like(m)
        if kind == "l1_prox":
            d = np.sqrt(mo.v_hat) + eps  # 0 only where no gradient was ever seen (eps = 0)
            # d == 0, not d <= 0: a NaN divisor (a negative second moment) stays NaN
            return np.maximum(m, curvature_step) / np.where(d == 0, 1.0, d)
        return np.maximum(m, np.sqrt(m * curvature_step))


def _noisy_quantile(d: np.ndarray, c: float, sparsity: float) -> float:
    """The lambda with mean_i P(|d_i + c Z| <= lambda) = sparsity, Z ~ N(0, 1), by bisection
    (the mean grows with lambda, from 0 at 0 to about 1 at max(d) + 10 c)."""
    lo, hi = 0.0, float(np.max(d)) + 10.0 * c
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        share = np.mean(special.ndtr((mid - d) / c) - special.ndtr((-mid - d) / c))
        lo, hi = (mid, hi) if share < sparsity else (lo, mid)
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)
