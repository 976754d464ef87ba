"""The tree helpers' selects: ``_tree.select`` is ``jnp.where`` without a call per use."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1
from optax_l1 import _tree

NAN = float("nan")


@pytest.mark.parametrize(
    ("pred", "a", "b"),
    [
        # one shape and dtype: the lax.select path
        (np.array([True, False, True]), np.array([1.0, NAN, 3.0]), np.array([4.0, 5.0, NAN])),
        (np.array(False), np.array([1.0, 2.0]), np.array([NAN, -0.0])),
        (np.array(True), np.array([[1, 2]], np.int32), np.array([[3, 4]], np.int32)),
        # anything else: jnp.where's promotion and broadcasting
        (np.array([True, False]), np.array([1.0, 2.0], np.float32), np.array([3, 4], np.int32)),
        (np.array([[True], [False]]), np.array([1.0, 2.0]), np.array([[3.0, 4.0], [5.0, 6.0]])),
        (np.array([1, 0]), np.array([1.0, 2.0]), np.array([3.0, 4.0])),  # a non-bool pred
        (np.array([True, False]), 7.0, np.array([3.0, 4.0])),  # a Python scalar
    ],
)
def test_select_is_jnp_where(pred, a, b):
    """Values, dtype, weak type and shape as ``jnp.where``'s, eagerly and under jit."""

    def both(p, x, y):
        return _tree.select(p, x, y), jnp.where(p, x, y)

    for fn in (both, jax.jit(both)):
        args = [jnp.asarray(v) if isinstance(v, np.ndarray) else v for v in (pred, a, b)]
        got, want = fn(*args)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.weak_type == want.weak_type
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_zero_where_keeps_a_fault_visible():
    """A zeroed NaN or inf stays NaN (x * 0); a zeroed finite entry is 0."""
    x = jnp.array([1.0, NAN, jnp.inf, -2.0])
    out = _tree.zero_where(jnp.array([True, True, True, False]), x)
    np.testing.assert_array_equal(np.asarray(out), [0.0, NAN, NAN, -2.0])


def _calls(leaves: int) -> int:
    params = {f"l{i}": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)} for i in range(leaves)}
    tx = optax.chain(
        optax.adam(1e-3),
        optax_l1.sparsity_target(0.5, ramp_steps=10, mask=optax_l1.kernel_mask),
    )

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(step).lower(params, tx.init(params), params).as_text().count("call @")


def test_sparsity_target_step_has_no_call_per_leaf():
    """The per-leaf selects of a step are not jnp.where calls: the lowered step has as many
    calls for 10 layers as for 5 (there were 3 more per kernel: 31 against 46)."""
    assert _calls(10) == _calls(5)
