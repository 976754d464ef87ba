"""Tests for `l1_penalty` and `group_l1_penalty` against NumPy transcriptions."""

import math

import flax
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from flax import nnx
from references import np_group_norms, np_l1

import optax_l1

# ----------------------------------------------------------------------------- references


def random_tree(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense": {
            "kernel": rng.normal(size=(3, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32),
        },
        "out": [
            rng.normal(size=(2, 2, 3)).astype(np.float32),
            rng.normal(size=()).astype(np.float32),
        ],
    }


# ----------------------------------------------------------------------------- l1_penalty


def test_seed_example_is_0_075():
    w = [np.array([[1.0, -2.0], [0.5, 0.0]]), np.array([-1.0, 3.0])]
    got = optax_l1.l1_penalty(w, 0.01)
    assert got.shape == ()
    np.testing.assert_allclose(float(got), 0.075, rtol=1e-6)
    np.testing.assert_allclose(float(got), np_l1(w, [0.01, 0.01]), rtol=1e-6)


def test_default_strength_is_0_01():
    w = {"a": np.array([1.0, -3.0], np.float32)}
    np.testing.assert_allclose(float(optax_l1.l1_penalty(w)), 0.04, rtol=1e-6)


@pytest.mark.parametrize("strength", [0.0, 0.3, 2.5])
def test_matches_numpy_on_nested_tree(strength):
    tree = random_tree()
    leaves = jax.tree.leaves(tree)
    want = np_l1(leaves, [strength] * len(leaves))
    got = jax.jit(lambda t: optax_l1.l1_penalty(t, strength))(tree)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    assert got.dtype == jnp.float32


def test_per_leaf_strength_prefix():
    tree = random_tree(1)
    strength = {"dense": {"kernel": 0.5, "bias": 0.0}, "out": 2.0}  # "out" is a subtree prefix
    want = (
        np_l1([tree["dense"]["kernel"]], [0.5])
        + np_l1([tree["dense"]["bias"]], [0.0])
        + np_l1(tree["out"], [2.0, 2.0])
    )
    got = optax_l1.l1_penalty(tree, strength)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_strength_prefix_with_wrong_structure_raises():
    tree = random_tree()
    with pytest.raises(ValueError, match="`strength`"):
        optax_l1.l1_penalty(tree, {"dense": 0.1})
    with pytest.raises(ValueError, match="`strength`"):
        optax_l1.l1_penalty(tree, [0.1, 0.2])


def test_a_prefix_with_none_or_nothing_in_it_is_refused_naming_it():
    # None and empty containers are no leaves to jax.tree.leaves: they went unchecked and
    # crashed naming nothing, and [] gave an empty penalty.
    w = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([3.0])}
    calls = {
        "strength": (
            lambda s: optax_l1.l1_penalty(w, s),
            lambda s: optax_l1.group_l1_penalty(w, s, axis=0),
        ),
        "threshold": (
            lambda s: optax_l1.soft_threshold(w, s),
            lambda s: optax_l1.group_soft_threshold(w, s, axis=0),
        ),
        "l2_scale": (lambda s: optax_l1.elastic_net_threshold(w, 1.0, s),),
    }
    for name, fns in calls.items():
        for fn in fns:
            for bad in ({"a": 1.0, "b": None}, {}, []):
                with pytest.raises(TypeError, match=f"`{name}` must be a number"):
                    fn(bad)
    assert float(optax_l1.l1_penalty(w, {"a": 1.0, "b": 0.0})) == 3.0


@pytest.mark.parametrize(
    "mask_kind", ["bool_tree", "prefix", "callable", "kernel_mask", "numpy_bool"]
)
def test_mask_selects_leaves(mask_kind):
    tree = random_tree(2)
    if mask_kind == "bool_tree":
        mask = {"dense": {"kernel": True, "bias": False}, "out": [True, False]}
        chosen = [tree["dense"]["kernel"], tree["out"][0]]
    elif mask_kind == "prefix":
        mask = {"dense": False, "out": True}
        chosen = tree["out"]
    elif mask_kind == "callable":
        mask = lambda p: jax.tree.map(lambda x: np.ndim(x) == 3, p)  # noqa: E731
        chosen = [tree["out"][0]]
    elif mask_kind == "kernel_mask":
        mask = optax_l1.kernel_mask
        chosen = [tree["dense"]["kernel"], tree["out"][0]]  # ndim >= 2, not a bias
    else:
        mask = {"dense": {"kernel": np.bool_(False), "bias": np.bool_(True)}, "out": False}
        chosen = [tree["dense"]["bias"]]
    got = optax_l1.l1_penalty(tree, 0.7, mask=mask)
    np.testing.assert_allclose(float(got), np_l1(chosen, [0.7] * len(chosen)), rtol=1e-5)


def test_mismatched_mask_raises():
    tree = random_tree()
    with pytest.raises(ValueError, match="`mask`"):
        optax_l1.l1_penalty(tree, 0.1, mask={"dense": True, "other": False})
    with pytest.raises(ValueError, match="`mask`"):
        optax_l1.l1_penalty(tree, 0.1, mask=lambda p: {"dense": True})
    with pytest.raises(TypeError, match="`mask`"):
        optax_l1.l1_penalty(tree, 0.1, mask={"dense": 1, "out": True})


@pytest.mark.parametrize(
    "strength", [-0.1, float("nan"), float("inf"), -math.inf, np.float32("nan"), -1]
)
def test_bad_strength_raises_naming_it(strength):
    with pytest.raises(ValueError, match="`strength`"):
        optax_l1.l1_penalty(random_tree(), strength)
    with pytest.raises(ValueError, match="`strength`"):
        optax_l1.l1_penalty(random_tree(), {"dense": 0.1, "out": strength})
    with pytest.raises(ValueError, match="`strength`"):
        optax_l1.group_l1_penalty({"w": jnp.ones((2, 2))}, strength, axis=0)


def test_frozen_dict_params():
    tree = random_tree(3)
    frozen = flax.core.freeze({"params": tree["dense"]})
    want = np_l1(jax.tree.leaves(tree["dense"]), [0.2, 0.2])
    np.testing.assert_allclose(float(optax_l1.l1_penalty(frozen, 0.2)), want, rtol=1e-5)
    only_kernel = np_l1([tree["dense"]["kernel"]], [0.2])
    got = optax_l1.l1_penalty(frozen, 0.2, mask=optax_l1.kernel_mask)
    np.testing.assert_allclose(float(got), only_kernel, rtol=1e-5)
    got = optax_l1.l1_penalty(
        frozen, 0.2, mask=flax.core.freeze({"params": {"kernel": True, "bias": False}})
    )
    np.testing.assert_allclose(float(got), only_kernel, rtol=1e-5)


def test_nnx_state_params():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    model.bias[...] = jnp.array([1.5, -2.0])
    state = nnx.state(model, nnx.Param)
    kernel, bias = np.asarray(model.kernel[...]), np.asarray(model.bias[...])
    got = jax.jit(lambda s: optax_l1.l1_penalty(s, 0.1))(state)
    np.testing.assert_allclose(float(got), np_l1([kernel, bias], [0.1, 0.1]), rtol=1e-5)
    got = optax_l1.l1_penalty(state, 0.1, mask=optax_l1.kernel_mask)
    np.testing.assert_allclose(float(got), np_l1([kernel], [0.1]), rtol=1e-5)


def test_none_int_and_bool_leaves_contribute_nothing():
    w = np.array([1.0, -2.0], np.float32)
    tree = {"w": w, "none": None, "step": np.array([7, -9]), "flag": np.array([True, False])}
    np.testing.assert_allclose(float(optax_l1.l1_penalty(tree, 1.0)), 3.0, rtol=1e-6)
    g = jax.grad(lambda w: optax_l1.l1_penalty({**tree, "w": w}, 1.0))(jnp.asarray(w))
    np.testing.assert_array_equal(np.asarray(g), np.sign(w))


def test_empty_tree_gives_zero():
    assert float(optax_l1.l1_penalty({}, 1.0)) == 0.0
    assert float(optax_l1.l1_penalty({"a": None, "i": np.arange(3)}, 1.0)) == 0.0


def test_gradient_is_zero_at_zero_and_sign_elsewhere():
    w = jnp.array([0.0, -0.0, 1e-30, -3.0, 2.5, -1e-8], jnp.float32)
    grad = jax.jit(jax.grad(lambda w: optax_l1.l1_penalty({"w": w}, 0.25)))(w)
    want = 0.25 * np.sign(np.asarray(w))
    np.testing.assert_array_equal(np.asarray(grad), want)
    assert np.asarray(grad)[0] == 0.0 and np.asarray(grad)[1] == 0.0
    # JAX's own abs has derivative 1 at 0; ours must not.
    assert float(jax.grad(lambda x: jnp.abs(x))(0.0)) == 1.0


def test_gradient_respects_mask_and_per_leaf_strength():
    tree = {"a": jnp.array([1.0, -1.0, 0.0]), "b": jnp.array([[-2.0, 0.0]]), "c": jnp.ones(2)}
    strength = {"a": 0.5, "b": 2.0, "c": 1.0}
    mask = {"a": True, "b": True, "c": False}
    grads = jax.grad(lambda t: optax_l1.l1_penalty(t, strength, mask=mask))(tree)
    np.testing.assert_array_equal(np.asarray(grads["a"]), 0.5 * np.sign([1.0, -1.0, 0.0]))
    np.testing.assert_array_equal(np.asarray(grads["b"]), 2.0 * np.sign([[-2.0, 0.0]]))
    np.testing.assert_array_equal(np.asarray(grads["c"]), np.zeros(2))


def test_gradient_matches_add_l1_subgradient():
    """d/dw of the penalty is the term `add_l1_subgradient` adds: strength * sign(w)."""
    params = {"w": jnp.array([[0.0, 1.0], [-2.0, 0.0]]), "v": jnp.array([3.0, -0.5])}
    grad = jax.grad(lambda p: optax_l1.l1_penalty(p, 0.3))(params)
    tx = optax_l1.add_l1_subgradient(0.3)
    zeros = jax.tree.map(jnp.zeros_like, params)
    added, _ = tx.update(zeros, tx.init(params), params)
    for k in params:
        np.testing.assert_allclose(np.asarray(grad[k]), 0.3 * np.sign(params[k]), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(added[k]), np.asarray(grad[k]), rtol=1e-6)


def test_gradient_with_respect_to_strength_is_l1_norm():
    tree = random_tree(4)
    leaves = jax.tree.leaves(tree)
    d = jax.jit(jax.grad(lambda s: optax_l1.l1_penalty(tree, s)))(jnp.float32(0.3))
    np.testing.assert_allclose(float(d), np_l1(leaves, [1.0] * len(leaves)), rtol=1e-5)


def test_complex_leaves_use_modulus():
    z = np.array([3 + 4j, 0j, -1j, 1 - 1j], np.complex64)
    got = optax_l1.l1_penalty({"z": z}, 0.5)
    np.testing.assert_allclose(float(got), 0.5 * sum(abs(complex(v)) for v in z), rtol=1e-6)
    assert got.dtype == jnp.float32
    grad = jax.grad(lambda z: optax_l1.l1_penalty({"z": z}, 0.5))(jnp.asarray(z))
    # JAX's convention for real-valued f of complex z: grad = conj(df/dz*) * 2 = conj(z)/|z|.
    ref = jax.grad(lambda z: 0.5 * jnp.sum(jnp.abs(z)))(jnp.asarray(z[[0, 2, 3]]))
    np.testing.assert_allclose(np.asarray(grad)[[0, 2, 3]], np.asarray(ref), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad)[0], 0.5 * np.conj(z[0]) / 5.0, rtol=1e-6)
    assert np.asarray(grad)[1] == 0
    assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_low_precision_leaves_accumulate_in_float32(dtype):
    # 4096 entries of 1.0 + one large value: a bf16/f16 running sum would lose the ones.
    w = np.ones(4097, np.float32)
    w[0] = 300.0
    w = jnp.asarray(w, dtype)
    got = optax_l1.l1_penalty({"w": w}, 1.0)
    assert got.dtype == jnp.float32
    want = float(np.sum(np.abs(np.asarray(w).astype(np.float64))))
    np.testing.assert_allclose(float(got), want, rtol=1e-6)


def test_float64_leaves_under_x64():
    with jax.enable_x64(True):
        w = jnp.array([1e-9, -2.0, 1.0 + 1e-12], jnp.float64)
        got = optax_l1.l1_penalty({"w": w}, 1.0)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), 3.0 + 1e-9 + 1e-12, rtol=1e-15)


def test_traced_strength_under_jit_does_not_retrace():
    traces = []

    @jax.jit
    def f(tree, s):
        traces.append(1)
        return optax_l1.l1_penalty(tree, s)

    tree = random_tree(5)
    leaves = jax.tree.leaves(tree)
    for s in (0.1, 0.2, 0.4):
        np.testing.assert_allclose(
            float(f(tree, jnp.float32(s))), np_l1(leaves, [s] * len(leaves)), rtol=1e-5
        )
    assert len(traces) == 1


def test_penalty_added_to_loss_changes_gradient_like_keras():
    """loss + l1_penalty has gradient grad(loss) + strength * sign(w) (Keras' `regularizers.l1`)."""
    w = jnp.array([0.5, -1.5, 0.0])
    x = jnp.array([1.0, 2.0, 3.0])

    def data_loss(w):
        return 0.5 * jnp.sum((w * x - 1.0) ** 2)

    g = jax.grad(lambda w: data_loss(w) + optax_l1.l1_penalty(w, 0.01))(w)
    want = np.asarray(jax.grad(data_loss)(w)) + 0.01 * np.sign(np.asarray(w))
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-6)


def test_bf16_penalty_inputs_have_bf16_gradients():
    w = jnp.asarray(np.array([0.0, -2.0, 3.0], ml_dtypes.bfloat16))
    g = jax.grad(lambda w: optax_l1.l1_penalty(w, 1.0))(w)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(g, np.float32), [0.0, -1.0, 1.0])


def test_penalty_is_usable_as_optax_loss_term():
    """Plain gradient descent on loss + penalty decreases the penalised objective."""
    w0 = {"w": jnp.array([2.0, -3.0, 0.5])}
    target = jnp.array([1.0, -1.0, 0.0])

    def objective(p):
        return 0.5 * jnp.sum((p["w"] - target) ** 2) + optax_l1.l1_penalty(p, 0.1)

    tx = optax.sgd(0.1)
    state = tx.init(w0)
    p = w0
    for _ in range(5):
        g = jax.grad(objective)(p)
        u, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u)
    assert float(objective(p)) < float(objective(w0))


# ----------------------------------------------------------------------------- group_l1_penalty


@pytest.mark.parametrize("axis", [0, 1, -1, (0, 2), (1, 2), (0, 1, 2)])
def test_group_penalty_matches_numpy(axis):
    rng = np.random.default_rng(7)
    w = rng.normal(size=(3, 4, 2)).astype(np.float32)
    if isinstance(axis, int) and axis == 0:
        w[:, 1, 0] = 0.0  # one all-zero group
    want = 0.3 * np_group_norms(w, axis).sum()
    got = jax.jit(lambda w: optax_l1.group_l1_penalty({"w": w}, 0.3, axis=axis))(w)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_group_penalty_mask_and_strength_prefix():
    rng = np.random.default_rng(8)
    tree = {"k": rng.normal(size=(3, 2)), "b": rng.normal(size=(2,)), "i": np.arange(2)}
    tree = jax.tree.map(lambda x: x.astype(np.float32) if x.dtype.kind == "f" else x, tree)
    got = optax_l1.group_l1_penalty(
        tree, {"k": 2.0, "b": 5.0, "i": 1.0}, axis=0, mask={"k": True, "b": False, "i": True}
    )
    np.testing.assert_allclose(float(got), 2.0 * np_group_norms(tree["k"], 0).sum(), rtol=1e-5)


def test_group_penalty_gradient_finite_at_zero_group():
    w = jnp.array([[0.0, 3.0], [0.0, 4.0]])
    g = jax.grad(lambda w: optax_l1.group_l1_penalty(w, 2.0, axis=0))(w)
    g = np.asarray(g)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[:, 0], [0.0, 0.0])
    np.testing.assert_allclose(g[:, 1], 2.0 * np.array([3.0, 4.0]) / 5.0, rtol=1e-6)


@pytest.mark.parametrize("axis", [2, -3, (0, 0)])
def test_group_penalty_bad_axis_raises(axis):
    with pytest.raises(ValueError, match="`axis`"):
        optax_l1.group_l1_penalty({"w": jnp.ones((2, 2))}, 0.1, axis=axis)


def test_group_l1_penalty_masked_out_leaf_may_lack_the_axis():
    params = {"kernel": jnp.array([[3.0, 4.0], [0.0, 1.0]]), "bias": jnp.array([1.0, 2.0])}
    got = optax_l1.group_l1_penalty(params, 0.5, axis=1, mask={"kernel": True, "bias": False})
    np.testing.assert_allclose(got, 0.5 * (5.0 + 1.0), rtol=1e-6)
    with pytest.raises(ValueError, match="axis"):
        optax_l1.group_l1_penalty(params, 0.5, axis=1)


def test_a_penalty_strength_is_checked_at_run_time_and_is_one_number_per_leaf():
    """A traced negative strength gave a negative penalty (-3.0); an array strength a
    non-scalar "penalty" ([3, 30]); a schedule crashed naming nothing (probes)."""
    w = jnp.array([1.0, -2.0])
    assert np.isnan(jax.jit(optax_l1.l1_penalty)(w, -1.0))
    assert np.isnan(jax.jit(lambda s: optax_l1.group_l1_penalty(jnp.ones((2, 2)), s, axis=0))(-1.0))
    out = jax.vmap(lambda s: optax_l1.l1_penalty(w, s))(jnp.array([1.0, -1.0]))
    assert out[0] == 3.0 and np.isnan(out[1])
    for bad in (jnp.array([1.0, 10.0]), optax.constant_schedule(0.1)):
        with pytest.raises(TypeError, match="`strength` must be"):
            optax_l1.l1_penalty(w, bad)
        with pytest.raises(TypeError, match="`strength` must be"):
            optax_l1.group_l1_penalty(jnp.ones((2, 2)), bad, axis=0)
    assert float(optax_l1.l1_penalty({"a": w, "b": w}, {"a": 1.0, "b": 0.5})) == 4.5
