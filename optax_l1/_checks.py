"""Argument checks shared by every public function: fail before tracing, name the argument."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

NO_PARAMS_MSG = (
    "`{name}` needs the current params: call `tx.update(updates, state, params)`; "
    "`params` was None."
)


def _python_scalar(value: Any) -> float | None:
    """Returns `value` as a float when it is a concrete Python/NumPy number, else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf":
        return float(value)
    return None


def check_nonnegative(name: str, value: Any) -> None:
    """Raises ValueError when a concrete number is negative, NaN or infinite.

    Schedules (callables), jax arrays and tracers (as `optax.inject_hyperparams` passes
    them) are not inspected: their values are only known inside the compiled step.
    """
    if callable(value):
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, np.ndarray, np.number, jax.Array)
    ):
        raise TypeError(f"`{name}` must be a real number, an array or a schedule, got {value!r}")
    dtype = value.dtype if hasattr(value, "dtype") else np.result_type(value)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a real number, got {value!r}")
    x = _python_scalar(value)
    if x is None:  # a jax array or tracer: only known inside the compiled step
        return
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"`{name}` must be finite and >= 0, got {value!r}")


def is_literal_zero(value: Any) -> bool:
    """True for a concrete Python/NumPy number equal to 0 (a default worth specializing on)."""
    return _python_scalar(value) == 0.0


def check_tree_nonnegative(name: str, tree: Any) -> None:
    """`check_nonnegative` on every leaf of a (prefix) tree of numbers."""
    if tree is None:
        raise TypeError(f"`{name}` must be a number, an array or a pytree of them, got None")
    for leaf in jax.tree.leaves(tree):
        check_nonnegative(name, leaf)


def check_flag(name: str, value: Any) -> bool:
    """A keyword flag must be a real bool (``"no"`` is truthy: refuse it rather than guess)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}")
    return bool(value)


def as_schedule(value: optax.ScalarOrSchedule):
    """A callable `count -> value` for a number or a schedule."""
    if callable(value):
        return value
    return lambda count: value


def check_params(name: str, params: Any) -> None:
    if params is None:
        raise ValueError(NO_PARAMS_MSG.format(name=name))
