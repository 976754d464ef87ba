"""Tests for the Optax transforms: l1_prox, proximal, group_l1_prox, add_l1_subgradient."""

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from references import np_group_cols, np_project_l1_ball, np_soft

import optax_l1

# ----------------------------------------------------------------------------- references


def params_and_grads():
    params = {
        "w": jnp.array([[1.0, -0.2], [0.05, -3.0]]),
        "b": jnp.array([0.1, -0.4, 2.0]),
    }
    grads = {"w": jnp.array([[0.5, 0.5], [-1.0, 1.0]]), "b": jnp.array([1.0, -1.0, 0.5])}
    return params, grads


def step(tx, grads, params, state=None):
    state = tx.init(params) if state is None else state
    updates, state = jax.jit(tx.update)(grads, state, params)
    return optax.apply_updates(params, updates), updates, state


# ----------------------------------------------------------------------------- l1_prox


def test_l1_prox_lands_on_soft_threshold_with_exact_zeros():
    lr, strength = 0.1, 2.0
    params, grads = params_and_grads()
    tx = optax.chain(optax.sgd(lr), optax_l1.l1_prox(strength, learning_rate=lr))
    new, _, state = step(tx, grads, params)
    for k in params:
        z = np.asarray(params[k], np.float64) - lr * np.asarray(grads[k])
        want = np_soft(z, lr * strength)
        np.testing.assert_allclose(np.asarray(new[k]), want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(new[k]) == 0, want == 0)
    assert int(np.sum(np.asarray(new["w"]) == 0)) >= 1  # a weight really landed on 0.0
    assert isinstance(state[1], optax_l1.L1ProxState)


def test_exact_zero_is_bitwise_zero_for_awkward_values():
    # p + (-p) == 0 in IEEE: the update returned for a shrunk weight is exactly -p.
    p = jnp.array([0.1, 1e-7, -3.3333333, 123.456, -1e-20], jnp.float32)
    tx = optax_l1.l1_prox(1e30, learning_rate=1.0)  # everything shrinks to 0
    u, _ = tx.update(jnp.zeros_like(p), tx.init(p), p)
    np.testing.assert_array_equal(np.asarray(u), -np.asarray(p))
    new = np.asarray(optax.apply_updates(p, u))
    np.testing.assert_array_equal(new, 0.0)
    assert not np.any(np.signbit(new))


def test_threshold_is_learning_rate_times_strength():
    # With threshold = strength (the pyglmnet#383 bug) every weight below 2.0 would vanish.
    p = jnp.array([0.5, 0.25, 0.15, -0.3, 1.9])
    tx = optax_l1.l1_prox(2.0, learning_rate=0.1)  # threshold 0.2
    new, _, _ = step(tx, jnp.zeros_like(p), p)
    np.testing.assert_allclose(np.asarray(new), np_soft(p, 0.2), rtol=1e-6)
    assert np.count_nonzero(np.asarray(new)) == 4


def test_schedules_are_followed_step_by_step():
    lr_sched = optax.linear_schedule(0.2, 0.05, transition_steps=4)
    s_sched = optax.piecewise_constant_schedule(1.0, {2: 3.0})
    tx = optax_l1.l1_prox(s_sched, learning_rate=lr_sched)
    p = jnp.linspace(-2.0, 2.0, 9)
    state = tx.init(p)
    update = jax.jit(tx.update)
    want = np.asarray(p, np.float64)
    for k in range(5):
        assert int(state.count) == k
        u, state = update(jnp.zeros_like(p), state, p)
        p = optax.apply_updates(p, u)
        t = float(lr_sched(k)) * float(s_sched(k))
        want = np_soft(want, t)
        np.testing.assert_allclose(np.asarray(p), want, rtol=1e-5, atol=1e-6)
    assert update._cache_size() == 1  # no retrace as the count advances
    assert int(state.count) == 5


def test_threshold_changes_with_count():
    tx = optax_l1.l1_prox(lambda c: 0.1 * (c + 1), learning_rate=1.0)
    p = jnp.array([1.0])
    state = tx.init(p)
    moves = []
    for _ in range(3):
        u, state = tx.update(jnp.zeros(1), state, p)
        moves.append(float(u[0]))
    np.testing.assert_allclose(moves, [-0.1, -0.2, -0.3], rtol=1e-6)


def test_array_hyperparameters_are_accepted():
    p = jnp.array([1.0, -0.05])
    tx = optax_l1.l1_prox(jnp.float32(0.5), learning_rate=jnp.asarray(0.2))
    new, _, _ = step(tx, jnp.zeros(2), p)
    np.testing.assert_allclose(np.asarray(new), np_soft(p, 0.1), rtol=1e-6)


@pytest.mark.parametrize("mask_kind", ["bool_tree", "prefix", "callable", "kernel_mask"])
def test_l1_prox_mask(mask_kind):
    params = {
        "dense": {"kernel": jnp.array([[0.5, -0.01], [0.02, 1.0]]), "bias": jnp.array([0.01, 1.0])},
        "norm": {"scale": jnp.array([0.01, 0.02])},
    }
    grads = jax.tree.map(jnp.zeros_like, params)
    if mask_kind == "bool_tree":
        mask = {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False}}
    elif mask_kind == "prefix":
        mask = {"dense": {"kernel": True, "bias": False}, "norm": False}
    elif mask_kind == "callable":
        mask = lambda p: jax.tree.map(lambda x: x.ndim == 2, p)  # noqa: E731
    else:
        mask = optax_l1.kernel_mask
    tx = optax_l1.l1_prox(1.0, learning_rate=0.1, mask=mask)
    new, updates, _ = step(tx, grads, params)
    np.testing.assert_allclose(
        np.asarray(new["dense"]["kernel"]), np_soft(params["dense"]["kernel"], 0.1), atol=1e-7
    )
    # masked-out leaves: the incoming update is returned untouched
    np.testing.assert_array_equal(np.asarray(updates["dense"]["bias"]), 0.0)
    np.testing.assert_array_equal(np.asarray(new["norm"]["scale"]), params["norm"]["scale"])
    np.testing.assert_array_equal(np.asarray(new["dense"]["bias"]), params["dense"]["bias"])


def test_mismatched_mask_raises_naming_mask():
    params, grads = params_and_grads()
    for tx in (
        optax_l1.l1_prox(1.0, learning_rate=0.1, mask={"w": True}),
        optax_l1.group_l1_prox(1.0, learning_rate=0.1, axis=0, mask={"w": True, "c": False}),
        optax_l1.add_l1_subgradient(1.0, mask=lambda p: [True, False]),
        optax_l1.proximal(lambda z, s: z, learning_rate=0.1, mask={"b": True}),
    ):
        with pytest.raises(ValueError, match="`mask`"):
            tx.update(grads, tx.init(params), params)


def test_non_bool_mask_leaf_raises():
    params, grads = params_and_grads()
    tx = optax_l1.l1_prox(1.0, learning_rate=0.1, mask={"w": True, "b": 0.5})
    with pytest.raises(TypeError, match="`mask`"):
        tx.update(grads, tx.init(params), params)


TRANSFORMS = {
    "l1_prox": lambda: optax_l1.l1_prox(0.1, learning_rate=0.1),
    "proximal": lambda: optax_l1.proximal(
        lambda z, s: optax_l1.soft_threshold(z, s), learning_rate=0.1
    ),
    "group_l1_prox": lambda: optax_l1.group_l1_prox(0.1, learning_rate=0.1, axis=0),
    "add_l1_subgradient": lambda: optax_l1.add_l1_subgradient(0.1),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_params_none_raises_naming_the_transform(name):
    tx = TRANSFORMS[name]()
    params = {"w": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match=f"`{name}` needs the current params"):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="params"):
        jax.jit(tx.update)(params, tx.init(params), None)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_params_structure_mismatch_raises(name):
    tx = TRANSFORMS[name]()
    params = {"w": jnp.ones((2, 2)), "v": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="structure"):
        tx.update(params, tx.init(params), {"w": jnp.ones((2, 2))})


BAD_VALUES = [-1.0, -1e-9, float("nan"), float("inf"), -math.inf, np.float32("nan"), -2]


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize(
    "factory,arg",
    [
        (lambda v: optax_l1.l1_prox(v, learning_rate=0.1), "strength"),
        (lambda v: optax_l1.l1_prox(0.1, learning_rate=v), "learning_rate"),
        (lambda v: optax_l1.l1_prox(0.1, learning_rate=0.1, l2=v), "l2"),
        (lambda v: optax_l1.group_l1_prox(v, learning_rate=0.1, axis=0), "strength"),
        (lambda v: optax_l1.group_l1_prox(0.1, learning_rate=v, axis=0), "learning_rate"),
        (lambda v: optax_l1.proximal(lambda z, s: z, learning_rate=v), "learning_rate"),
        (lambda v: optax_l1.add_l1_subgradient(v), "strength"),
    ],
)
def test_bad_hyperparameter_raises_at_construction_naming_it(factory, arg, bad):
    with pytest.raises(ValueError, match=f"`{arg}`") as info:
        factory(bad)
    assert "finite and >= 0" in str(info.value)


@pytest.mark.parametrize("bad", ["0.1", None, b"x"])
def test_non_numeric_hyperparameter_raises_type_error(bad):
    with pytest.raises(TypeError, match="`strength`"):
        optax_l1.l1_prox(bad, learning_rate=0.1)
    with pytest.raises(TypeError, match="`learning_rate`"):
        optax_l1.l1_prox(0.1, learning_rate=bad)


def test_zero_strength_and_zero_learning_rate_are_allowed():
    p = jnp.array([0.5, -0.01])
    for tx in (optax_l1.l1_prox(0.0, learning_rate=0.1), optax_l1.l1_prox(0.1, learning_rate=0.0)):
        new, _, _ = step(tx, jnp.zeros(2), p)
        np.testing.assert_array_equal(np.asarray(new), np.asarray(p))


def test_none_and_masked_node_leaves_preserved():
    params = {"a": jnp.array([1.0, 0.01]), "n": None, "b": jnp.array([0.01, -2.0])}
    updates = {"a": jnp.zeros(2), "n": None, "b": jnp.zeros(2)}
    for tx in TRANSFORMS.values():
        tx = tx()
        u, _ = tx.update(updates, tx.init(params), params)
        assert u["n"] is None
        assert jax.tree.structure(u, is_leaf=lambda x: x is None) == jax.tree.structure(
            updates, is_leaf=lambda x: x is None
        )
    # optax.masked hands the inner transform MaskedNode leaves
    inner_seen = []

    def spy(z, s):
        inner_seen.append(z)
        return optax_l1.soft_threshold(z, s)

    tx = optax.masked(optax_l1.proximal(spy, learning_rate=0.1), {"a": True, "n": None, "b": False})
    u, _ = tx.update(updates, tx.init(params), params)
    assert isinstance(inner_seen[0]["b"], optax.MaskedNode)
    np.testing.assert_allclose(
        np.asarray(u["a"]), np_soft([1.0, 0.01], 0.1) - [1.0, 0.01], rtol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(u["b"]), 0.0)
    assert u["n"] is None


def test_int_and_bool_leaves_untouched():
    params = {
        "w": jnp.array([1.0, -0.01]),
        "step": jnp.array([3, -4], jnp.int32),
        "flag": jnp.array([True, False]),
    }
    updates = {
        "w": jnp.zeros(2),
        "step": jnp.array([1, 1], jnp.int32),
        "flag": jnp.array([False, True]),
    }
    for tx in TRANSFORMS.values():
        tx = tx()
        u, _ = jax.jit(tx.update)(updates, tx.init(params), params)
        for k in ("step", "flag"):
            assert u[k].dtype == updates[k].dtype
            np.testing.assert_array_equal(np.asarray(u[k]), np.asarray(updates[k]))


def test_l2_variant_matches_elastic_net_formula():
    lr, l1, l2 = 0.1, 1.0, 2.0
    params, grads = params_and_grads()
    tx = optax.chain(optax.sgd(lr), optax_l1.l1_prox(l1, learning_rate=lr, l2=l2))
    new, _, _ = step(tx, grads, params)
    for k in params:
        z = np.asarray(params[k], np.float64) - lr * np.asarray(grads[k])
        want = np_soft(z, lr * l1) / (1.0 + lr * l2)
        np.testing.assert_allclose(np.asarray(new[k]), want, rtol=1e-6, atol=1e-7)


def test_l2_schedule_is_followed():
    tx = optax_l1.l1_prox(0.0, learning_rate=0.5, l2=lambda c: 1.0 + c)
    p = jnp.array([4.0])
    state = tx.init(p)
    for k in range(3):
        u, state = tx.update(jnp.zeros(1), state, p)
        new = optax.apply_updates(p, u)
        np.testing.assert_allclose(float(new[0]), float(p[0]) / (1.0 + 0.5 * (1.0 + k)), rtol=1e-6)
        p = new


def test_nonnegative_variant():
    lr, l1, l2 = 0.1, 1.0, 0.5
    params, grads = params_and_grads()
    tx = optax.chain(optax.sgd(lr), optax_l1.l1_prox(l1, learning_rate=lr, l2=l2, nonnegative=True))
    new, _, _ = step(tx, grads, params)
    for k in params:
        z = np.asarray(params[k], np.float64) - lr * np.asarray(grads[k])
        want = np.maximum(z - lr * l1, 0.0) / (1.0 + lr * l2)
        np.testing.assert_allclose(np.asarray(new[k]), want, rtol=1e-6, atol=1e-7)
        assert np.all(np.asarray(new[k]) >= 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "complex64"])
def test_l1_prox_keeps_dtype_and_exact_zeros(dtype):
    vals = np.array([1.0, 0.04, -0.03, -2.0], np.float32)
    p = jnp.asarray(vals, dtype)
    tx = optax_l1.l1_prox(1.0, learning_rate=0.05)
    u, _ = jax.jit(tx.update)(jnp.zeros_like(p), tx.init(p), p)
    new = optax.apply_updates(p, u)
    assert u.dtype == p.dtype and new.dtype == p.dtype
    got = np.asarray(new.astype(jnp.complex64 if dtype == "complex64" else jnp.float32))
    np.testing.assert_array_equal(got == 0, np.abs(vals) <= 0.05)
    tol = {"float16": 1e-3, "bfloat16": 1e-2}.get(dtype, 1e-6)
    np.testing.assert_allclose(np.real(got), np_soft(vals, 0.05), rtol=tol, atol=tol)


def test_bf16_params_are_summed_and_shrunk_in_float32():
    # p + u = 1.00390625 is not a bf16 number (rounds to 1.0); shrinking by 2**-8 in float32
    # gives exactly 1.0, while bf16 arithmetic would give 0.99609375.
    p = jnp.asarray(np.array([1.0], ml_dtypes.bfloat16))
    u = jnp.asarray(np.array([2.0**-8], ml_dtypes.bfloat16))
    tx = optax_l1.l1_prox(1.0, learning_rate=2.0**-8)
    out, _ = tx.update(u, tx.init(p), p)
    new = optax.apply_updates(p, out)
    want = np.float32(np.float32(1.0) + np.float32(2.0**-8) - np.float32(2.0**-8))
    assert new.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(new, np.float32), [want])


def test_float64_params_under_x64():
    with jax.enable_x64(True):
        p = jnp.array([1.0 + 1e-12, 1e-13], jnp.float64)
        tx = optax_l1.l1_prox(1.0, learning_rate=1e-12)
        u, _ = tx.update(jnp.zeros_like(p), tx.init(p), p)
        assert u.dtype == jnp.float64
        new = optax.apply_updates(p, u)
        np.testing.assert_allclose(np.asarray(new), [1.0, 0.0], rtol=1e-15, atol=0)
        assert float(new[1]) == 0.0


def test_mixed_precision_updates_keep_their_dtype():
    p = jnp.asarray(np.array([1.0, 0.001], ml_dtypes.bfloat16))
    g = jnp.array([0.0, 0.0], jnp.float32)
    tx = optax_l1.l1_prox(1.0, learning_rate=0.01)
    u, _ = tx.update(g, tx.init(p), p)
    assert u.dtype == jnp.float32
    new = optax.apply_updates(p, u)
    assert new.dtype == jnp.bfloat16 and float(new[1]) == 0.0


def test_state_count_is_int32_and_increments_for_every_transform():
    p = {"w": jnp.ones((2, 2))}
    for tx in TRANSFORMS.values():
        tx = tx()
        state = tx.init(p)
        assert state.count.dtype == jnp.int32 and int(state.count) == 0
        for _ in range(2):
            _, state = tx.update(p, state, p)
        assert int(state.count) == 2


# ----------------------------------------------------------------------------- proximal


def test_proximal_with_projection_l1_ball():
    radius = 1.5
    params = {"w": jnp.array([2.0, -1.0, 0.5, 0.25]), "b": jnp.array([5.0, -5.0])}
    grads = {"w": jnp.array([0.1, -0.2, 0.0, 0.3]), "b": jnp.array([1.0, 1.0])}

    def project(z, step):
        del step
        return optax.projections.projection_l1_ball(z, radius)

    tx = optax.chain(
        optax.sgd(0.1), optax_l1.proximal(project, learning_rate=0.1, mask={"w": True, "b": False})
    )
    new, _, _ = step(tx, grads, params)
    z = np.asarray(params["w"], np.float64) - 0.1 * np.asarray(grads["w"])
    want = np_project_l1_ball(z, radius)
    np.testing.assert_allclose(np.asarray(new["w"]), want, rtol=1e-5, atol=1e-6)
    assert np.sum(np.abs(np.asarray(new["w"]))) <= radius + 1e-5
    np.testing.assert_allclose(np.asarray(new["b"]), np.asarray(params["b"]) - 0.1, rtol=1e-6)


def test_proximal_receives_step_from_schedule():
    sched = optax.exponential_decay(1.0, transition_steps=1, decay_rate=0.5)
    seen = []

    def prox(z, step):
        seen.append(step)
        return jax.tree.map(lambda x: x * 0.0 + step, z)  # lands on `step`

    tx = optax_l1.proximal(prox, learning_rate=sched)
    p = jnp.zeros(2)
    state = tx.init(p)
    for k in range(3):
        u, state = tx.update(jnp.zeros(2), state, p)
        np.testing.assert_allclose(np.asarray(optax.apply_updates(p, u)), [0.5**k] * 2)
    assert len(seen) == 3


def test_proximal_gets_none_for_unregularized_leaves_and_float32_compute():
    seen = {}

    def prox(z, step):
        seen.update(z)
        return z

    params = {
        "k": jnp.ones((2, 2), jnp.bfloat16),
        "b": jnp.ones(2),
        "i": jnp.arange(2),
    }
    tx = optax_l1.proximal(prox, learning_rate=0.1, mask={"k": True, "b": False, "i": True})
    tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert seen["b"] is None and seen["i"] is None
    assert seen["k"].dtype == jnp.float32


def test_proximal_returning_wrong_structure_raises():
    tx = optax_l1.proximal(lambda z, s: [1.0, 2.0, 3.0], learning_rate=0.1)
    p = {"w": jnp.ones(2)}
    with pytest.raises(ValueError):
        tx.update(p, tx.init(p), p)


def test_proximal_requires_a_callable():
    with pytest.raises(TypeError, match="`prox`"):
        optax_l1.proximal(0.5, learning_rate=0.1)


def test_proximal_with_soft_threshold_equals_l1_prox():
    params, grads = params_and_grads()
    lr, s = 0.3, 0.7
    a = optax.chain(optax.adam(lr), optax_l1.l1_prox(s, learning_rate=lr))
    b = optax.chain(
        optax.adam(lr),
        optax_l1.proximal(lambda z, step: optax_l1.soft_threshold(z, step * s), learning_rate=lr),
    )
    pa, _, _ = step(a, grads, params)
    pb, _, _ = step(b, grads, params)
    jax.tree.map(np.testing.assert_array_equal, pa, pb)


# ----------------------------------------------------------------------------- group_l1_prox


def test_group_l1_prox_zeroes_whole_columns():
    lr, s = 0.5, 1.0
    params = {
        "kernel": jnp.array([[3.0, 0.1, -0.3], [4.0, -0.1, 0.4]]),
        "bias": jnp.array([0.1, 0.2, 0.3]),
    }
    grads = {"kernel": jnp.array([[0.2, 0.0, 0.0], [0.0, 0.1, 0.0]]), "bias": jnp.ones(3)}
    tx = optax.chain(
        optax.sgd(lr),
        optax_l1.group_l1_prox(s, learning_rate=lr, axis=0, mask={"kernel": True, "bias": False}),
    )
    new, _, state = step(tx, grads, params)
    z = np.asarray(params["kernel"], np.float64) - lr * np.asarray(grads["kernel"])
    want = np_group_cols(z, lr * s)
    np.testing.assert_allclose(np.asarray(new["kernel"]), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(new["kernel"])[:, 1:], 0.0)
    np.testing.assert_allclose(np.asarray(new["bias"]), np.asarray(params["bias"]) - lr)
    assert isinstance(state[1], optax_l1.GroupL1ProxState)


def test_group_l1_prox_axis_checked():
    with pytest.raises(TypeError, match="`axis`"):
        optax_l1.group_l1_prox(0.1, learning_rate=0.1, axis="rows")
    tx = optax_l1.group_l1_prox(0.1, learning_rate=0.1, axis=1)
    p = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}  # axis 1 does not exist for the bias
    with pytest.raises(ValueError, match="`axis`"):
        tx.update(p, tx.init(p), p)
    tx = optax_l1.group_l1_prox(0.1, learning_rate=0.1, axis=1, mask=optax_l1.kernel_mask)
    u, _ = tx.update(p, tx.init(p), p)  # masked out: fine
    np.testing.assert_array_equal(np.asarray(u["bias"]), 1.0)


def test_group_l1_prox_strength_schedule():
    tx = optax_l1.group_l1_prox(lambda c: 1.0 + c, learning_rate=1.0, axis=0)
    p = jnp.array([[3.0], [4.0]])  # norm 5
    state = tx.init(p)
    norms = []
    for _ in range(3):
        u, state = tx.update(jnp.zeros_like(p), state, p)
        p = optax.apply_updates(p, u)
        norms.append(float(jnp.linalg.norm(p)))
    np.testing.assert_allclose(norms, [4.0, 2.0, 0.0], atol=1e-6)
    assert float(jnp.abs(p).max()) == 0.0


# ----------------------------------------------------------------------------- add_l1_subgradient


def test_add_l1_subgradient_adds_strength_times_sign():
    params, grads = params_and_grads()
    params["w"] = params["w"].at[0, 0].set(0.0)
    tx = optax_l1.add_l1_subgradient(0.3)
    out, state = jax.jit(tx.update)(grads, tx.init(params), params)
    for k in params:
        want = np.asarray(grads[k], np.float64) + 0.3 * np.sign(np.asarray(params[k]))
        np.testing.assert_allclose(np.asarray(out[k]), want, rtol=1e-6)
    assert float(out["w"][0, 0]) == float(grads["w"][0, 0])  # sign(0) = 0
    assert isinstance(state, optax_l1.AddL1SubgradientState)


def test_add_l1_subgradient_mask_and_schedule():
    params, grads = params_and_grads()
    tx = optax_l1.add_l1_subgradient(lambda c: 0.1 * (c + 1), mask={"w": False, "b": True})
    state = tx.init(params)
    for k in range(3):
        out, state = tx.update(grads, state, params)
        np.testing.assert_array_equal(np.asarray(out["w"]), np.asarray(grads["w"]))
        want = np.asarray(grads["b"]) + 0.1 * (k + 1) * np.sign(np.asarray(params["b"]))
        np.testing.assert_allclose(np.asarray(out["b"]), want, rtol=1e-6)


def test_add_l1_subgradient_complex_uses_unit_phase():
    p = jnp.array([3 + 4j, 0j], jnp.complex64)
    tx = optax_l1.add_l1_subgradient(1.0)
    out, _ = tx.update(jnp.zeros_like(p), tx.init(p), p)
    assert out.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(out), [(3 + 4j) / 5, 0], rtol=1e-6)


def test_subgradient_oscillates_while_prox_reaches_exact_zero():
    """min 0.5 (w - c)^2 + lam |w| with |c| < lam has solution 0: only the prox step hits it."""
    c, lam, lr = 0.3, 1.0, 0.07
    w0 = jnp.array([2.0])

    def run(tx, n=200):
        def body(carry, _):
            w, s = carry
            g = w - c
            u, s = tx.update(g, s, w)
            w = optax.apply_updates(w, u)
            return (w, s), w[0]

        (_, _), ws = jax.lax.scan(body, (w0, tx.init(w0)), length=n)
        return np.asarray(ws)

    prox_path = run(optax.chain(optax.sgd(lr), optax_l1.l1_prox(lam, learning_rate=lr)))
    sub_path = run(optax.chain(optax_l1.add_l1_subgradient(lam), optax.sgd(lr)))
    assert np.all(prox_path[-50:] == 0.0)
    assert np.all(sub_path[-50:] != 0.0)  # never exactly zero ...
    assert np.max(np.abs(sub_path[-50:])) <= lr * (lam + abs(c)) + 1e-6  # ... but near it


def test_l1_prox_with_momentum_optimizer_lands_on_prox_of_its_update():
    params, grads = params_and_grads()
    base = optax.sgd(0.1, momentum=0.9)
    tx = optax.chain(base, optax_l1.l1_prox(0.5, learning_rate=0.1))
    state_b, state = base.init(params), tx.init(params)
    p, pb = params, params
    for _ in range(3):
        ub, state_b = base.update(grads, state_b, pb)
        z = optax.apply_updates(p, ub)
        u, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, u)
        for k in p:
            np.testing.assert_allclose(np.asarray(p[k]), np_soft(z[k], 0.05), rtol=1e-6, atol=1e-7)
        pb = p


# ----------------------------------------------------------------------------- review fixes


def test_callable_mask_under_inject_hyperparams_needs_static_args():
    p = {"dense": {"kernel": jnp.array([[0.5, -2.0]]), "bias": jnp.array([0.5, -2.0])}}
    zeros = jax.tree.map(jnp.zeros_like, p)
    factory = optax.inject_hyperparams(optax_l1.l1_prox)
    with pytest.raises(TypeError, match="static_args"):
        factory(strength=1.0, learning_rate=1.0, mask=optax_l1.kernel_mask).init(p)
    tx = optax.inject_hyperparams(optax_l1.l1_prox, static_args=("mask",))(
        strength=1.0, learning_rate=1.0, mask=optax_l1.kernel_mask
    )
    u, _ = tx.update(zeros, tx.init(p), p)
    new = optax.apply_updates(p, u)
    np.testing.assert_array_equal(new["dense"]["kernel"], [[0.0, -1.0]])
    np.testing.assert_array_equal(new["dense"]["bias"], p["dense"]["bias"])


def test_narrow_updates_still_land_exactly_on_zero():
    p = {"w": jnp.array([1.001, -0.3, 2.0], jnp.float32)}
    u = {"w": jnp.zeros(3, jnp.bfloat16)}  # bf16 updates, f32 master params
    tx = optax_l1.l1_prox(5.0, learning_rate=1.0)
    up, _ = tx.update(u, tx.init(p), p)
    np.testing.assert_array_equal(optax.apply_updates(p, up)["w"], np.zeros(3, np.float32))


def test_bf16_injected_hyperparameters_threshold_in_float32():
    p = {"w": jnp.array([1.0, -0.3], jnp.bfloat16)}
    tx = optax.inject_hyperparams(optax_l1.l1_prox)(strength=1.0, learning_rate=0.5)
    u, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
    np.testing.assert_array_equal(
        np.asarray(optax.apply_updates(p, u)["w"], np.float32), np.array([0.5, 0.0], np.float32)
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(strength={"w": 0.5}), TypeError),
        (dict(strength=1j), TypeError),
        (dict(strength=True), TypeError),
        (dict(strength=None), TypeError),
        (dict(strength=1.0, nonnegative="no"), TypeError),
        (dict(strength=1.0, mask=False), TypeError),
    ],
)
def test_l1_prox_refuses_values_it_would_misread(kwargs, error):
    with pytest.raises(error, match=r"`(strength|nonnegative|mask)`"):
        optax_l1.l1_prox(learning_rate=0.1, **kwargs)


def test_proximal_checks_the_operator_result_structure_and_shapes():
    p = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    swap = optax_l1.proximal(lambda z, s: {"b": z["w"], "w": z["b"]}, learning_rate=0.1)
    with pytest.raises(ValueError, match="structure and shapes"):
        swap.update(p, swap.init(p), p)
    drop = optax_l1.proximal(lambda z, s: {"w": z["w"], "b": None}, learning_rate=0.1)
    with pytest.raises(ValueError, match="structure and shapes"):
        drop.update(p, drop.init(p), p)


def test_operators_refuse_negative_thresholds():
    z = {"w": jnp.array([1.0, -0.3, 2.0])}
    with pytest.raises(ValueError, match="`threshold`"):
        optax_l1.soft_threshold(z, -1.0)
    with pytest.raises(ValueError, match="`l2_scale`"):
        optax_l1.elastic_net_threshold(z, 0.0, -1.0)
    with pytest.raises(ValueError, match="`threshold`"):
        optax_l1.group_soft_threshold(z, float("nan"), axis=0)


def test_sparsity_counts_do_not_overflow_int32():
    # 2.5 * 2**30 zeros over two leaves is past int32; too big to allocate in a test, so
    # check the traced program instead: per-leaf int32 counts must be summed in float32.
    n = 2**30 + 2**28
    leaves = {k: jax.ShapeDtypeStruct((n,), jnp.bfloat16) for k in ("a", "b")}
    jaxpr = jax.make_jaxpr(optax_l1.sparsity)(leaves).jaxpr
    adds = [e for e in jaxpr.eqns if e.primitive.name == "add"]
    assert adds and all(v.aval.dtype == jnp.float32 for e in adds for v in e.outvars)
    assert float(optax_l1.sparsity({"a": jnp.zeros(3), "b": jnp.ones(5)})) == 3 / 8


def test_sparsity_report_refuses_colliding_names():
    with pytest.raises(ValueError, match="two leaves named 'a/b'"):
        optax_l1.sparsity_report({"a/b": jnp.zeros(2), "a": {"b": jnp.ones(2)}})
    with pytest.raises(ValueError, match="total"):
        optax_l1.sparsity_report({"total": jnp.zeros(2)})


def test_axis_accepts_numpy_ints_and_python_float_leaves_work_in_masks():
    w = jnp.array([[3.0, 0.1], [4.0, 0.1]])
    np.testing.assert_array_equal(
        optax_l1.group_soft_threshold(w, 1.0, axis=np.int64(0)),
        optax_l1.group_soft_threshold(w, 1.0, axis=0),
    )
    assert optax_l1.kernel_mask({"w": 1.0, "k": jnp.ones((2, 2))}) == {"w": False, "k": True}
