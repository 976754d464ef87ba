"""The one checks policy: concrete values (Python, NumPy, concrete jax arrays) are checked at
construction, TypeError for a wrong kind, ValueError for a bad value, the message names the
argument, the rule and the value; schedules and traced values pass to run time."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1
from optax_l1 import _checks

# Every kind of concrete bad value, for one argument of each transform.
BAD_VALUES = [-1.0, np.float32(-1.0), np.array([0.1, -1.0]), jnp.array(-1.0), float("nan")]

TRANSFORMS = {
    "l1_prox": lambda v: optax_l1.l1_prox(v, learning_rate=0.1),
    "l1_prox(l2)": lambda v: optax_l1.l1_prox(0.1, learning_rate=0.1, l2=v),
    "group_l1_prox": lambda v: optax_l1.group_l1_prox(v, learning_rate=0.1, axis=0),
    "proximal": lambda v: optax_l1.proximal(lambda z, s: z, learning_rate=v),
    "add_l1_subgradient": lambda v: optax_l1.add_l1_subgradient(v),
    "proximal_adam": lambda v: optax_l1.proximal_adam(0.1, strength=v),
    "proximal_adagrad": lambda v: optax_l1.proximal_adagrad(0.1, strength=v),
    "ftrl": lambda v: optax_l1.ftrl(0.1, strength=v),
    "with_preconditioned_l1": lambda v: optax_l1.with_preconditioned_l1(
        optax.adam(0.1),
        strength=0.1,
        learning_rate=0.1,
        eps=v,
        eps_root=0.0,
        bias_correction_decay=0.999,
        unseen="shrink",
    ),
    "sparsity_target": lambda v: optax_l1.sparsity_target(v, ramp_steps=3),
}
ARG = {
    "l1_prox": "strength",
    "l1_prox(l2)": "l2",
    "group_l1_prox": "strength",
    "proximal": "learning_rate",
    "add_l1_subgradient": "strength",
    "proximal_adam": "strength",
    "proximal_adagrad": "strength",
    "ftrl": "strength",
    "with_preconditioned_l1": "eps",
    "sparsity_target": "target",
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__)
def test_every_concrete_bad_value_is_refused_at_construction(name, value):
    if np.ndim(value):  # a hyperparameter is one number, not one per entry
        with pytest.raises(TypeError, match=f"`{ARG[name]}` must be a scalar"):
            TRANSFORMS[name](value)
        return
    rule = r"in \[0, 1\)" if name == "sparsity_target" else ">= 0"
    with pytest.raises(ValueError, match=f"`{ARG[name]}` must be finite and {rule}, got"):
        TRANSFORMS[name](value)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_wrong_kinds_are_type_errors(name):
    for value in ("0.1", None, True, 1j, jnp.array(1.0 + 1j), {"a": 0.1}):
        with pytest.raises(TypeError, match=f"`{ARG[name]}`"):
            TRANSFORMS[name](value)


def test_the_0_1_gap_is_closed():
    """0.1 accepted a concrete negative jax array here (it only read Python numbers)."""
    with pytest.raises(ValueError, match=r"`strength` must be finite and >= 0, got Array\(-1"):
        optax_l1.l1_prox(jnp.array(-1.0), learning_rate=0.1)


def test_callables_only_where_a_schedule_is_meant():
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    optax_l1.l1_prox(schedule, learning_rate=schedule)  # schedules: accepted
    optax_l1.ftrl(schedule, strength=schedule)
    with pytest.raises(TypeError, match="`eps` must be a number, not a callable"):
        optax_l1.proximal_adam(0.1, strength=0.1, eps=schedule)
    with pytest.raises(TypeError, match="`b1` must be a number, not a callable"):
        optax_l1.proximal_adam(0.1, strength=0.1, b1=schedule)
    with pytest.raises(TypeError, match="`beta` must be a number, not a callable"):
        optax_l1.ftrl(0.1, strength=0.1, beta=schedule)
    with pytest.raises(TypeError, match="`ramp_steps` must be a number, not a callable"):
        optax_l1.sparsity_target(0.5, ramp_steps=schedule)


def test_rules_other_than_nonnegative_name_their_rule():
    with pytest.raises(ValueError, match=r"`b2` must be finite and in \[0, 1\), got 1.0"):
        optax_l1.proximal_adam(0.1, strength=0.1, b2=1.0)
    with pytest.raises(ValueError, match="`learning_rate` must be finite and > 0, got 0.0"):
        optax_l1.ftrl(0.0, strength=0.1)
    with pytest.raises(ValueError, match="`learning_rate_power` must be finite and <= 0"):
        optax_l1.ftrl(0.1, strength=0.1, learning_rate_power=jnp.array(0.5))
    with pytest.raises(ValueError, match="`ramp_steps` must be finite, an integer and >= 1"):
        optax_l1.sparsity_target(0.5, ramp_steps=2.5)
    with pytest.raises(ValueError, match="`min_ndim` must be finite, an integer and >= 0"):
        optax_l1.kernel_mask({}, min_ndim=-1)


def test_traced_values_pass_to_run_time():
    @jax.jit
    def build_and_step(strength):
        tx = optax_l1.l1_prox(strength, learning_rate=1.0)  # a tracer: not inspected here
        params = jnp.array([1.0, -0.2])
        updates, _ = tx.update(jnp.zeros(2), tx.init(params), params)
        return params + updates

    np.testing.assert_allclose(build_and_step(0.5), [0.5, 0.0])


def test_concrete_reads_numbers_and_arrays_not_tracers():
    assert float(_checks.concrete(jnp.array(2.0))) == 2.0
    assert _checks.concrete(np.float16(1.5)).dtype == np.float16
    assert jax.jit(lambda x: _checks.concrete(x) is None and x)(1.0)
    assert _checks.scalar_value(jnp.array([1.0, 2.0])) is None  # not a scalar
    assert _checks.scalar_value(jnp.array(3, jnp.int32)) == 3.0
    assert _checks.scalar_value(lambda c: 1.0) is None
    assert _checks.is_literal_zero(0) and _checks.is_literal_zero(jnp.array(0.0))
    assert not _checks.is_literal_zero(lambda c: 0.0)


@pytest.mark.parametrize("big", [np.int64(2**32), 3_000_000_000, np.uint64(2**40), 2**70])
def test_an_integer_past_int32_is_refused_not_wrapped(big):
    # np.int64(2**32) became int32 0 (a threshold of 0: nothing shrunk); a Python int raised
    # an OverflowError naming nothing (past 64 bits, also at the first update).
    with pytest.raises(ValueError, match="`threshold` is an integer past JAX's int32"):
        optax_l1.soft_threshold(jnp.ones(2), big)
    with pytest.raises(ValueError, match="`strength` .* must be passed as a float"):
        optax_l1.l1_prox(big, learning_rate=1.0)
    with pytest.raises(ValueError, match="`ramp_steps` .* must be < 2\\*\\*31"):
        optax_l1.sparsity_target(0.5, ramp_steps=big)
    z = jnp.array([2.0, -3.0])  # integers JAX holds exactly are numbers as before
    np.testing.assert_array_equal(optax_l1.soft_threshold(z, np.int64(2)), [0.0, -1.0])
    np.testing.assert_array_equal(optax_l1.soft_threshold(z, np.uint64(3_000_000_000)), [0, 0])


def test_bfloat16_hyperparameters_are_real_numbers():
    optax_l1.l1_prox(jnp.array(0.1, jnp.bfloat16), learning_rate=jnp.array(1.0, jnp.bfloat16))
    with pytest.raises(ValueError, match="`strength`"):
        optax_l1.l1_prox(jnp.array(-0.1, jnp.bfloat16), learning_rate=0.1)


def test_an_array_hyperparameter_is_refused_not_broadcast_over_each_leaf():
    """An array strength was broadcast over every leaf's last axis (one threshold per
    column), and a leaf of another width crashed naming nothing."""
    for make in (
        lambda v: optax_l1.l1_prox(v, learning_rate=0.1),
        lambda v: optax_l1.l1_prox(0.1, learning_rate=v),
        lambda v: optax_l1.proximal_adam(0.1, strength=v),
        lambda v: optax_l1.ftrl(0.1, strength=v),
        lambda v: optax_l1.proximal_adagrad(v, strength=0.1),
    ):
        with pytest.raises(TypeError, match="must be a scalar, got shape \\(2,\\)"):
            make(jnp.array([0.1, 20.0]))
    # The elementwise operators keep per-entry thresholds.
    out = optax_l1.soft_threshold(jnp.array([1.0, 1.0]), jnp.array([0.5, 2.0]))
    np.testing.assert_array_equal(out, [0.5, 0.0])


def test_a_prox_taken_for_a_schedule_says_how_to_declare_it_static():
    tx = optax.inject_hyperparams(optax_l1.proximal)(lambda z: z, learning_rate=0.1)
    p = {"w": jnp.ones(2)}
    with pytest.raises(TypeError, match="static_args=\\('prox',\\)"):
        tx.update(p, tx.init(p), p)


def test_a_partition_without_the_accumulator_is_named_not_a_prefix_error():
    """with_preconditioned_l1 around adam | adagrad (one partition has no 'nu') failed with
    "`accumulator` must be a scalar or a pytree prefix ... MaskedNode"."""
    p = {"a": jnp.array([1.0, 0.5]), "b": jnp.array([1.0, 0.02])}
    inner = optax.multi_transform(
        {"x": optax.adam(0.1), "y": optax.adagrad(0.1)}, {"a": "x", "b": "y"}
    )

    def make(mask=None):
        return optax_l1.with_preconditioned_l1(
            inner,
            strength=0.1,
            learning_rate=0.1,
            eps=1e-8,
            eps_root=0.0,
            bias_correction_decay=0.999,
            unseen="shrink",
            mask=mask,
        )

    tx = make()
    with pytest.raises(ValueError, match="keeps no 'nu' for some regularized leaves"):
        tx.update(p, tx.init(p), p)
    tx = make({"a": True, "b": False})  # the adam partition alone: proximal_adam's numbers
    u, _ = tx.update(p, tx.init(p), p)
    ref = optax_l1.proximal_adam(0.1, strength=0.1)
    want, _ = ref.update({"a": p["a"]}, ref.init({"a": p["a"]}), {"a": p["a"]})
    np.testing.assert_allclose(u["a"], want["a"], rtol=1e-6)
    plain, _ = optax.adagrad(0.1).update({"b": p["b"]}, optax.adagrad(0.1).init({"b": p["b"]}))
    np.testing.assert_allclose(u["b"], plain["b"], rtol=1e-6)


def test_a_schedule_that_returns_an_array_is_refused_when_traced():
    """It was applied per column: strength 0 on column 0, 10 on column 1 (a probe)."""
    w = jnp.array([[1.0, 1.0], [0.5, 0.5]])
    for tx in (
        optax.chain(
            optax.sgd(0.5),
            optax_l1.l1_prox(lambda c: jnp.array([0.0, 10.0]), learning_rate=0.5),
        ),
        optax_l1.proximal_adam(0.1, strength=lambda c: jnp.array([0.0, 10.0])),
        optax_l1.ftrl(lambda c: jnp.array([0.1, 0.1]), strength=0.1),
    ):
        with pytest.raises(TypeError, match="must be one number per step, got shape \\(2,\\)"):
            jax.jit(tx.update)(jnp.zeros((2, 2)), tx.init(w), w)
