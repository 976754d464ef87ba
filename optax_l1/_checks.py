"""Every argument check of the package, with one policy.

Construction time: Python numbers, NumPy values and concrete jax arrays are checked when a
transform is built (or a function called). A wrong kind raises ``TypeError``; a bad value
raises ``ValueError``; both messages name the argument, the rule and the value received.
Schedules (callables) and traced values (``optax.inject_hyperparams`` hands them to the
factory inside the compiled step) are only known at run time and are not inspected here.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.core import Tracer

NO_PARAMS_MSG = (
    "`{name}` needs the current params: call `tx.update(updates, state, params)`; "
    "`params` was None."
)


class Rule:
    """A rule a concrete number must satisfy: its text for messages and an elementwise test."""

    def __init__(self, text: str, test: Callable[[Any], Any]):
        self.text = text
        self.test = test


NONNEGATIVE = Rule(">= 0", lambda x: x >= 0)
POSITIVE = Rule("> 0", lambda x: x > 0)
NONPOSITIVE = Rule("<= 0", lambda x: x <= 0)
DECAY = Rule("in [0, 1)", lambda x: (x >= 0) & (x < 1))
UNIT_INTERVAL = Rule("in (0, 1]", lambda x: (x > 0) & (x <= 1))
# float32(x) < 1 too: a target sparsity runs in float32, where 1 - 1e-9 is 1.
FRACTION = Rule("in [0, 1)", lambda x: (x >= 0) & (x.astype(np.float32) < 1))
# An exponent applied in float32: 1e-50 would be 0 there, 1e300 inf.
POSITIVE_FLOAT32 = Rule(
    "> 0 in float32",
    lambda x: (x.astype(np.float32) > 0) & (x.astype(np.float32) < np.inf),
)


def at_least(low: int) -> Rule:
    return Rule(f">= {low}", lambda x: x >= low)


def concrete(value: Any) -> np.ndarray | None:
    """``value`` as a NumPy array when it is known now (a number, a NumPy value, a concrete jax
    array); ``None`` for a traced value, whose value is only known inside the compiled step."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    except RuntimeError:  # a global array not fully addressable from this process
        return None


def scalar_value(value: Any) -> float | None:
    """A concrete real scalar as a float (bools included); ``None`` for anything else."""
    if callable(value) or not isinstance(value, (numbers.Real, np.ndarray, np.number, jax.Array)):
        return None
    x = concrete(value)
    if x is None or x.ndim != 0 or not (x.dtype == bool or jnp.issubdtype(x.dtype, jnp.number)):
        return None
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return None
    return float(x)


def is_literal_zero(value: Any) -> bool:
    """True for a concrete number equal to 0 (a default worth specializing on statically)."""
    return not callable(value) and scalar_value(value) == 0.0


def _check_kind(name: str, value: Any, scalar: bool) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, np.ndarray, np.number, jax.Array)
    ):
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    dtype = getattr(value, "dtype", None)
    dtype = np.result_type(float(value)) if dtype is None else dtype  # a Python number
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    if is_narrow_float(dtype):  # a TypePromotionError, unnamed, where it met a float32
        raise TypeError(f"`{name}` must be at least a 16-bit float, got a {dtype} value")
    shape = getattr(value, "shape", ())
    if scalar and shape != ():
        raise TypeError(f"`{name}` must be a scalar, got shape {shape}")


def is_narrow_float(dtype: Any) -> bool:
    """float8/float4: JAX promotes them with no other float."""
    return np.dtype(dtype).itemsize == 1 and jnp.issubdtype(dtype, jnp.floating)


def _check_int32(name: str, value: Any, x: np.ndarray, integer: bool) -> None:
    """An integer JAX would not hold exactly is refused: without ``jax_enable_x64`` a 64-bit
    one past 32 bits (np.int64(2**32) became 0), and a Python int past 64 bits always (an
    OverflowError naming nothing)."""
    if x.dtype.kind == "O" and isinstance(value, int) and not isinstance(value, bool):
        big = True  # a Python int NumPy could not hold in 64 bits
    elif x.dtype.kind not in "iu" or x.dtype.itemsize < 8 or jax.config.read("jax_enable_x64"):
        return
    else:
        info = np.iinfo(np.int32 if x.dtype.kind == "i" else np.uint32)
        big = bool(x.size and (x.max() > info.max or x.min() < info.min))
    if big:
        fix = "must be < 2**31" if integer else "must be passed as a float"
        raise ValueError(
            f"`{name}` is an integer past JAX's int32 (without jax_enable_x64 it would wrap): "
            f"it {fix}, got {value!r}"
        )


def check_number(
    name: str,
    value: Any,
    rule: Rule = NONNEGATIVE,
    *,
    schedule: bool = False,
    integer: bool = False,
    scalar: bool = True,
) -> None:
    """The one number check: kind first (TypeError), then the value when known (ValueError).

    Args:
      name: the argument's name, as the user wrote it.
      value: what was passed.
      rule: what a concrete value must satisfy (every entry, for an array); it must be finite.
      schedule: whether a callable ``count -> value`` is accepted (then not inspected).
      integer: whether a concrete value must be a whole number (``2.0`` is, ``2.5`` is not).
      scalar: whether an array must be 0-dimensional (a hyperparameter is one number;
        ``False`` for the elementwise thresholds and weights of :func:`check_tree`).
    """
    if callable(value):
        if schedule:
            return
        raise TypeError(f"`{name}` must be a number, not a callable (schedule), got {value!r}")
    _check_kind(name, value, scalar)
    x = concrete(value)
    if x is None:
        return
    _check_int32(name, value, x, integer)
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = bool(np.all(np.isfinite(x)) and np.all(rule.test(x)))
        whole = not integer or bool(np.all(x == np.round(x)))
    if not (ok and whole):
        kind = ", an integer" if integer else ""
        raise ValueError(f"`{name}` must be finite{kind} and {rule.text}, got {value!r}")


def whole(rule: Rule) -> Rule:
    """``rule`` and a whole number: a step count set at run time (10.5 would be truncated
    where a count is compared in integers and not where it is computed with)."""
    return Rule(f"{rule.text}, whole", lambda x: rule.test(x) & (x == jnp.round(x)))


def usable(value: Any, rule: Rule) -> Any:
    """The value to use: itself when known now (checked at construction), else
    :func:`runtime_checked` (NaN where it breaks ``rule``)."""
    return value if concrete(value) is not None else runtime_checked(value, rule)


def checked(name: str, value: Any, rule: Rule = NONNEGATIVE) -> Any:
    """:func:`check_number` (no schedule), then :func:`usable`: the value to use."""
    check_number(name, value, rule)
    return usable(value, rule)


def check_step_count(name: str, value: Any, low: int) -> None:
    """:func:`check_number` for a whole number of steps compared with the int32 step count:
    ``>= low`` and, when known now, under 2**31 (past it, it wrapped or crashed unnamed)."""
    known = scalar_value(value)
    if known is not None and math.isfinite(known) and known >= 2**31:
        raise ValueError(f"`{name}` must be < 2**31 (the step count is int32), got {int(known)}")
    check_number(name, value, at_least(low), integer=True)


def static_int(name: str, value: Any, rule: Rule) -> int:
    """:func:`check_number` for a whole number that shapes arrays, so it must be known when
    the function is traced (not a jit argument): the int to use."""
    check_number(name, value, rule, integer=True)
    if concrete(value) is None:
        raise TypeError(
            f"`{name}` shapes the result, so it must be known when the function is traced "
            f"(a Python int, not a jit argument), got {value!r}"
        )
    return int(value)


def check_tree(name: str, tree: Any, rule: Rule = NONNEGATIVE, *, scalar: bool = False) -> None:
    """:func:`check_number` on every leaf of a (prefix) tree of numbers (arrays of them
    unless ``scalar``; no schedules)."""
    # None and empty containers are no leaves to jax.tree.leaves: unchecked, they crashed
    # later naming nothing ({"b": None}) or gave an empty result ([]).
    leaves = jax.tree.leaves(tree, is_leaf=lambda x: x is None)
    if not leaves or any(leaf is None for leaf in leaves):
        raise TypeError(
            f"`{name}` must be a number, an array or a pytree of them (a number for every "
            f"leaf: 0 for none), got {tree!r}"
        )
    for leaf in leaves:
        check_number(name, leaf, rule, scalar=scalar)


def checked_tree(name: str, tree: Any, rule: Rule = NONNEGATIVE, *, scalar: bool = False) -> Any:
    """:func:`check_tree`, then the run-time policy on traced leaves (NaN where they break
    ``rule``): the tree to use."""
    check_tree(name, tree, rule, scalar=scalar)
    return jax.tree.map(lambda x: usable(x, rule), tree)


def check_flag(name: str, value: Any) -> bool:
    """A keyword flag must be a real bool (``"no"`` is truthy: refuse it rather than guess)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


def static_args_hint(name: str, *values: Any) -> str:
    """The end of a TypeError's message when one of ``values`` is a jax array, which is what
    ``optax.inject_hyperparams`` passes for an argument it injected (a number, or a
    callable it took for a schedule); else nothing."""
    if not any(isinstance(v, jax.Array) for v in values):
        return ""
    return f" (under `optax.inject_hyperparams`, pass `static_args=('{name}',)`)"


def check_callable(name: str, value: Any, what: str) -> None:
    if not callable(value):
        hint = static_args_hint(name, value)
        raise TypeError(f"`{name}` must be a callable {what}, got {value!r}{hint}")


def check_optimizer(name: str, value: Any) -> None:
    if not isinstance(value, optax.GradientTransformation):
        raise TypeError(f"`{name}` must be an optax GradientTransformation, got {value!r}")


def check_regex(name: str, value: Any) -> re.Pattern[str] | None:
    """A regular expression (string) or None; a sequence of names is refused with a hint."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a regular expression (str) searched in the '/'-joined path, "
            f"got {value!r}; for several names write 'a|b'"
        )
    try:
        return re.compile(value)
    except re.error as e:
        raise ValueError(
            f"`{name}` must be a valid regular expression, got {value!r} ({e})"
        ) from None


def check_accumulator(accumulator: Any) -> None:
    """A field name, a non-empty tuple of names or a callable ``state -> tree``."""
    if callable(accumulator) or isinstance(accumulator, str):
        return
    if (
        isinstance(accumulator, tuple)
        and accumulator
        and all(isinstance(k, str) for k in accumulator)
    ):
        return
    raise TypeError(
        "`accumulator` must be a field name, a non-empty tuple of field names or a callable, "
        f"got {accumulator!r}"
    )


def check_mask(mask: Any, name: str = "mask") -> None:
    """Refuses a bare bool: it is what a mask callable turns into under
    `optax.inject_hyperparams`, which treats every callable argument as a schedule."""
    if isinstance(mask, (bool, np.bool_)) or (
        isinstance(mask, jax.Array) and concrete(mask) is not None and mask.ndim == 0
    ):
        raise TypeError(
            f"`{name}` must be a pytree of bools like params or a callable params -> such a "
            f"pytree, got {mask!r}. Under `optax.inject_hyperparams`, pass "
            f"`static_args=('{name}',)`: it treats a callable argument as a schedule otherwise."
        )


def check_ftrl_denominator(initial_accumulator_value, beta, l2, l2_shrinkage, power) -> None:
    r"""ValueError when FTRL's denominator :math:`(n^p + \beta)/\eta + 2\ell_2` can be 0.

    With :math:`n_0 = \beta = \ell_2 = 0` it is 0 for a coordinate with no gradient yet
    (unless :math:`p = 0`: :math:`n^0 = 1`). Its weight is then 0 only while :math:`z = 0`,
    which ``l2_shrinkage`` breaks (:math:`z` grows by :math:`2\ell_{2,s} w`): the weight
    would become infinite. Only concrete numbers are checked.
    """
    values = [scalar_value(v) for v in (initial_accumulator_value, beta, l2)]
    if any(v is None or v != 0 for v in values):
        return
    if is_literal_zero(power) or is_literal_zero(l2_shrinkage):
        return
    raise ValueError(
        "`initial_accumulator_value` must be > 0 unless `beta` > 0 or `l2` > 0 when "
        "`l2_shrinkage` is used: the FTRL step divides by (n^p + beta) / lr + 2 * l2, "
        "which is 0 for a coordinate with no gradient yet"
    )


def check_params(name: str, params: Any) -> None:
    if params is None:
        raise ValueError(NO_PARAMS_MSG.format(name=name))


def check_eager(name: str, tree: Any) -> None:
    """Raises a TypeError naming the function ``name`` when ``tree`` holds a traced array:
    it runs eagerly (the shapes it returns depend on the values)."""
    if any(isinstance(x, Tracer) for x in jax.tree.leaves(tree)):
        raise TypeError(
            f"`{name}` runs eagerly (the shapes it returns depend on the values): call it "
            "outside jax.jit / vmap / grad, on concrete arrays"
        )


def runtime_checked(value: Any, rule: Rule) -> jax.Array:
    """A hyperparameter known only at run time, as a float array: itself when it satisfies
    ``rule`` and is finite, else NaN, so that the update it enters is NaN (which
    ``optax.apply_if_finite`` and NaN checks catch) and never a plausible wrong result."""
    x = jnp.asarray(value)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.float32)
    ok = jnp.asarray(rule.test(x)) & jnp.isfinite(x)
    return jnp.where(ok, x, jnp.asarray(jnp.nan, x.dtype))


def as_schedule(name: str, value: Any, rule: Rule | None = NONNEGATIVE) -> Callable[[Any], Any]:
    """A callable ``count -> value`` for a number or a schedule (``name``: the argument's).

    The run-time policy: a value known now was checked at construction and is returned as
    it is; a schedule's value or a traced one (``optax.inject_hyperparams``) is checked
    when it is read, by :func:`runtime_checked` (NaN where it breaks ``rule``), and must be
    one number (a TypeError naming ``name`` at trace time: an array would be broadcast
    over each leaf's last axis).
    """
    if not callable(value) and concrete(value) is not None:
        return lambda count: value
    at = value if callable(value) else (lambda count: value)

    def read(count: Any) -> Any:
        v: Any = at(count)
        if jnp.ndim(v) != 0:
            raise TypeError(f"`{name}` must be one number per step, got shape {jnp.shape(v)}")
        return v if rule is None else runtime_checked(v, rule)

    return read
