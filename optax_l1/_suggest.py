r"""A first L1 strength for a wanted fraction of zeros, read off a short dense Adam run."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, cast

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
      sees :math:`\hat m \approx` its drift plus noise of sd :math:`c \sqrt{\hat v}`
      (a drift small next to the noise), :math:`c^2 = (1 - b_1) / (1 + b_1)` (the share of
      a stationary noise's variance that Adam's :math:`\hat m` keeps), and the strength
      solves :math:`\frac1n \sum_i P(|d_i + c_i Z| \le \lambda) = s`,
      :math:`Z \sim N(0, 1)`, :math:`c_i = c \sqrt{\hat v_i} / D_i` (0 where no gradient
      was seen), where the drift's :math:`|\hat m|` is replaced by its mean's estimate
      :math:`\min(|\hat m|, \sqrt{\max(0, (\hat m^2 - c_t^2 \hat v) / (1 - c_t^2))})`,
      :math:`c_t^2 = c^2 (1 + b_1^t) / (1 - b_1^t)` the noise's share after the dense run's
      :math:`t` steps (the dense run's :math:`\hat m` holds noise too, which would be
      counted twice; after one step, or with :math:`b_1 = 0`, it is all noise and the
      drift is the curvature alone). Which regime a run is in was not found in the dense
      run's state: a small digits MLP whose
      :math:`\overline{\hat m^2} / \overline{\hat v}` after 150 dense steps (0.0095) was
      near the transformer's after 60 (0.010-0.025) still fit the drift alone.
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
    points (the chain; its zeros jump from 3-4% at strength 0.01 to 76-86% at 0.04
    there, 10-50% at 0.02) and 4-31 (``proximal_adam``). When the fraction of zeros must
    be exact, use :func:`sparsity_target`, which needs no strength.

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
    noise_floor = _checks.check_flag("noise_floor", noise_floor)
    if noise_floor and for_transform != "l1_prox":
        raise ValueError(
            f"`noise_floor=True` is for for_transform='l1_prox' (Adam's normalized step); "
            f"for {for_transform!r} the strength is in gradient units and has no noise model"
        )
    _checks.check_mask(mask)
    adam = _adam_state(opt_state)
    count = int(np.asarray(adam.count))
    if count < 1:
        raise ValueError("`opt_state` has taken no step yet (count 0): run the dense model first")
    noise = _noise(count, float(b1)) if noise_floor else None
    parts = [
        _scores(leaf, for_transform, batch_size, eps, noise)
        for leaf in _leaves(params, adam, count, b1, b2, mask)
    ]
    scores = np.concatenate([d for d, _ in parts]) if parts else np.zeros(0)
    if scores.size == 0:
        raise ValueError("`mask` selects no floating-point entry of `params`")
    if not np.all(np.isfinite(scores)):  # a NaN/inf weight or moment: no plausible value
        return float("nan")
    if noise is not None:
        sds = np.concatenate([sd for _, sd in parts if sd is not None])
        return _noisy_quantile(scores, sds, float(sparsity))
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


class _Leaf(NamedTuple):
    """One regularized leaf of a dense run, flattened (float64, on the host)."""

    w: np.ndarray  # |w|
    m_hat: np.ndarray  # |m_hat|
    v_hat: np.ndarray


class _Noise(NamedTuple):
    """Adam's first-moment noise: its share of the dense run's m_hat^2 at the run's count
    (c_t^2 = c^2 (1 + b1^t) / (1 - b1^t), 1 at t = 1) and its sd over D in a long sparse
    run (c, c^2 = (1 - b1) / (1 + b1))."""

    dense_share: float
    sd: float


def _noise(count: int, b1: float) -> _Noise:
    c2, decayed = (1 - b1) / (1 + b1), b1**count
    return _Noise(c2 * (1 + decayed) / (1 - decayed), float(np.sqrt(c2)))


def _leaves(params, adam, count: int, b1, b2, mask) -> list[_Leaf]:
    """|w| and Adam's bias-corrected moments after ``count`` steps, per regularized leaf."""
    p_leaves, treedef = jax.tree.flatten(params, is_leaf=_tree.is_none)
    message = "`opt_state`: Adam's moments must have the structure of `params`"
    mu_leaves = _tree.flatten_like(treedef, adam.mu, message)
    nu_leaves = _tree.flatten_like(treedef, adam.nu, message)
    chosen = _tree.resolve_mask(mask, params)
    out = []
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
        out.append(_Leaf(w, m_hat, v_hat))
    return out


def _drift_mean(leaf: _Leaf, share: float) -> np.ndarray:
    """The mean of m_hat, from m_hat^2 = mu^2 + share (v_hat - mu^2), at most |m_hat|; 0 when
    the noise is all of m_hat (share 1: one step, or b1 = 0)."""
    if share >= 1:
        return np.zeros_like(leaf.m_hat)
    mu = np.sqrt(np.maximum(0.0, (leaf.m_hat**2 - share * leaf.v_hat) / (1 - share)))
    return np.minimum(mu, leaf.m_hat)


def _scores(leaf: _Leaf, kind: str, batch_size, eps, noise: _Noise | None):
    """One leaf's drift scores, in the strength's units, and (with ``noise``) each entry's
    noise sd in the same units (0 where no gradient was ever seen)."""
    with np.errstate(invalid="ignore"):  # a negative second moment or inf * 0: NaN, the signal
        curvature_step = leaf.w * batch_size * leaf.v_hat  # |w| h
        m = leaf.m_hat if noise is None else _drift_mean(leaf, noise.dense_share)
        if kind != "l1_prox":
            return np.maximum(m, np.sqrt(m * curvature_step)), None
        d = np.sqrt(leaf.v_hat) + eps  # 0 only where no gradient was ever seen (eps = 0)
        d = np.where(d == 0, 1.0, d)  # d == 0, not d <= 0: a NaN divisor stays NaN
        sd = None if noise is None else noise.sd * np.sqrt(leaf.v_hat) / d
        return np.maximum(m, curvature_step) / d, sd


def _noisy_quantile(d: np.ndarray, sd: np.ndarray, sparsity: float) -> float:
    """The lambda with mean_i P(|d_i + sd_i Z| <= lambda) = sparsity, Z ~ N(0, 1): a root
    of a function that grows with lambda, bracketed by 0 and the drift's quantile plus 10
    sds (where every entry under that quantile is counted whole)."""
    from scipy import optimize, special  # imported here: jax does not load scipy.special

    noisy = sd > 0
    scale = np.where(noisy, sd, 1.0)

    def excess(lam: float) -> float:
        inside = special.ndtr((lam - d) / scale) - special.ndtr((-lam - d) / scale)
        return float(np.mean(np.where(noisy, inside, d <= lam))) - sparsity

    if excess(0.0) >= 0:  # entries that no gradient reached are zeros at any strength
        return 0.0
    hi = float(np.quantile(d, sparsity, method="higher")) + 10.0 * float(np.max(sd))
    root = optimize.brentq(excess, 0.0, hi, xtol=1e-15)
    return float(cast(float, root))
