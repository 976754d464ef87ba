"""Tests for the proximal operators against scalar NumPy transcriptions, plus properties."""

import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from references import np_elastic, np_group, np_soft, np_soft_complex

import optax_l1

# ----------------------------------------------------------------------------- strategies

# XLA on CPU flushes subnormals to zero, so they are left out of the inputs.
FLOATS = st.floats(-8.0, 8.0, allow_nan=False, allow_subnormal=False, width=32)
VEC = hnp.arrays(np.float32, (8,), elements=FLOATS)
MAT = hnp.arrays(np.float32, (4, 3), elements=FLOATS)
THRESH = st.floats(0.0, 4.0, width=32)

# One compilation per operator: the threshold is traced.
soft = jax.jit(optax_l1.soft_threshold)
elastic = jax.jit(optax_l1.elastic_net_threshold, static_argnames="nonnegative")
group0 = jax.jit(lambda z, t: optax_l1.group_soft_threshold(z, t, axis=0))
group1 = jax.jit(lambda z, t: optax_l1.group_soft_threshold(z, t, axis=1))


def tol(*xs):
    return 1e-5 * (1.0 + max(float(np.max(np.abs(x))) for x in xs))


# ----------------------------------------------------------------------------- closed forms


def test_soft_threshold_matches_numpy_transcription():
    z = np.array([-3.0, -1.0, -0.999, -0.5, -0.0, 0.0, 0.25, 1.0, 1.0001, 7.5], np.float32)
    for t in (0.0, 0.5, 1.0, 2.0):
        got = np.asarray(soft(z, t))
        np.testing.assert_allclose(got, np_soft(z, t), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got == 0, np_soft(z, t) == 0)


def test_soft_threshold_eager_equals_jit_on_a_pytree():
    rng = np.random.default_rng(0)
    tree = {"a": rng.normal(size=(3, 2)).astype(np.float32), "b": [rng.normal(size=5)]}
    tree["b"][0] = tree["b"][0].astype(np.float32)
    eager = optax_l1.soft_threshold(tree, 0.4)
    jitted = soft(tree, 0.4)
    jax.tree.map(np.testing.assert_array_equal, eager, jitted)
    jax.tree.map(
        lambda g, z: np.testing.assert_allclose(g, np_soft(z, 0.4), atol=1e-6), eager, tree
    )


def test_zeros_are_positive_zero():
    z = jnp.array([-0.5, -0.0, 0.0, 0.5, -1.0], jnp.float32)
    got = np.asarray(optax_l1.soft_threshold(z, 1.0))
    np.testing.assert_array_equal(got, 0.0)
    assert not np.any(np.signbit(got))


def test_threshold_pytree_prefix_and_passthrough_leaves():
    tree = {
        "a": jnp.array([1.0, -2.0, 3.0]),
        "b": {"x": jnp.array([0.5, -0.5]), "y": jnp.array([[4.0]])},
        "i": jnp.array([5, -6]),
        "flag": jnp.array([True]),
        "none": None,
    }
    t = {"a": 1.5, "b": 0.25, "i": 100.0, "flag": 100.0, "none": 100.0}
    got = optax_l1.soft_threshold(tree, t)
    np.testing.assert_allclose(got["a"], np_soft(tree["a"], 1.5), atol=1e-7)
    np.testing.assert_allclose(got["b"]["x"], np_soft(tree["b"]["x"], 0.25), atol=1e-7)
    np.testing.assert_allclose(got["b"]["y"], np_soft(tree["b"]["y"], 0.25), atol=1e-7)
    np.testing.assert_array_equal(got["i"], tree["i"])
    assert got["i"].dtype == tree["i"].dtype and got["flag"].dtype == jnp.bool_
    assert got["none"] is None


def test_threshold_prefix_mismatch_raises_naming_it():
    with pytest.raises(ValueError, match="`threshold`"):
        optax_l1.soft_threshold({"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": 0.1})
    with pytest.raises(ValueError, match="`l2_scale`"):
        optax_l1.elastic_net_threshold({"a": jnp.ones(2)}, 0.1, {"b": 0.1})


@pytest.mark.parametrize("nonnegative", [False, True])
@pytest.mark.parametrize("t,r", [(0.0, 0.0), (0.5, 0.0), (0.5, 0.25), (2.0, 3.0)])
def test_elastic_net_matches_numpy_transcription(t, r, nonnegative):
    z = np.linspace(-4.0, 4.0, 33).astype(np.float32)
    got = np.asarray(elastic(z, t, r, nonnegative=nonnegative))
    want = np_elastic(z, t, r, nonnegative)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got == 0, want == 0)
    if nonnegative:
        assert np.all(got >= 0)


def test_elastic_net_without_l2_is_soft_threshold():
    z = jnp.linspace(-3.0, 3.0, 25)
    np.testing.assert_array_equal(
        np.asarray(optax_l1.elastic_net_threshold(z, 0.7)),
        np.asarray(optax_l1.soft_threshold(z, 0.7)),
    )


def test_elastic_net_adds_a_narrow_l2_scale_in_the_leafs_precision():
    # 1.0 + rho was added in rho's dtype: a bfloat16 0.001 made 1 + rho == 1 (l2 ignored).
    z = jnp.array([2.0, -3.0, 100.0])
    for rho in (jnp.bfloat16(0.001), jnp.bfloat16(0.01), jnp.float16(0.001)):
        want = np_soft(np.asarray(z, np.float64), 0.5) / (1.0 + float(rho))
        np.testing.assert_allclose(optax_l1.elastic_net_threshold(z, 0.5, rho), want, rtol=1e-6)


def test_elastic_net_keeps_a_float32_leaf_in_float32_under_x64():
    # The widening of 1 + l2_scale first took a Python float as float64 under x64.
    with jax.enable_x64(True):
        text = str(
            jax.make_jaxpr(lambda z: optax_l1.elastic_net_threshold(z, 0.5, 0.1))(
                jnp.ones(3, jnp.float32)
            )
        )
    assert "f64" not in text


def test_a_float8_hyperparameter_is_refused_as_a_kind():
    with pytest.raises(TypeError, match="`threshold` must be at least a 16-bit float"):
        optax_l1.soft_threshold(jnp.ones(2), jnp.asarray(0.5, jnp.float8_e4m3fn))


def test_elastic_net_nonnegative_must_be_a_bool():
    with pytest.raises(TypeError, match="`nonnegative` must be True or False"):
        optax_l1.elastic_net_threshold(jnp.ones(2), 0.5, nonnegative="False")  # was True


def test_nonnegative_rejects_complex():
    with pytest.raises(TypeError, match="nonnegative"):
        optax_l1.elastic_net_threshold(jnp.array([1j]), 0.1, nonnegative=True)


@pytest.mark.parametrize("axis", [0, 1, -1, (0, 1), (1, 2), (0, 2)])
def test_group_soft_threshold_matches_numpy_transcription(axis):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(3, 4, 2)).astype(np.float32)
    z[:, 0, :] *= 0.05  # some groups fall under the threshold
    t = 0.6
    got = np.asarray(optax_l1.group_soft_threshold({"z": z}, t, axis=axis)["z"])
    want = np_group(z, t, axis)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got == 0, want == 0)


def test_complex_soft_threshold_keeps_phase_and_shrinks_modulus():
    rng = np.random.default_rng(4)
    z = (rng.normal(size=16) + 1j * rng.normal(size=16)).astype(np.complex64)
    z[0] = 0
    t = 0.8
    got = np.asarray(optax_l1.soft_threshold(z, t))
    assert got.dtype == np.complex64
    np.testing.assert_allclose(got, np_soft_complex(z, t), rtol=1e-5, atol=1e-6)
    nz = got != 0
    np.testing.assert_allclose(np.angle(got[nz]), np.angle(z[nz]), atol=1e-5)
    np.testing.assert_allclose(np.abs(got), np.maximum(np.abs(z) - t, 0.0), atol=1e-5)
    np.testing.assert_array_equal(got[~nz], 0)
    assert np.all(np.abs(z[~nz]) <= t)


def test_complex_group_and_elastic_net_follow_modulus():
    z = np.array([[3 + 4j, 0.1j], [0j, 0.1 + 0j]], np.complex64)
    g = np.asarray(optax_l1.group_soft_threshold(z, 1.0, axis=0))
    np.testing.assert_allclose(g[:, 0], z[:, 0] * (1.0 - 1.0 / 5.0), rtol=1e-6)
    np.testing.assert_array_equal(g[:, 1], 0)
    e = np.asarray(optax_l1.elastic_net_threshold(z, 1.0, 1.0))
    np.testing.assert_allclose(e, np_soft_complex(z, 1.0) / 2.0, rtol=1e-6, atol=1e-7)


def test_bf16_shrink_is_computed_in_float32():
    # In bf16 the threshold 0.999 rounds to 1.0 and the result would be 0; in f32 it is 0.001.
    z = jnp.asarray(np.array([1.0, -1.0], ml_dtypes.bfloat16))
    got = optax_l1.soft_threshold(z, 0.999)
    assert got.dtype == jnp.bfloat16
    want = (np.array([1.0, -1.0], np.float32) - np.float32([0.999, -0.999])).astype(
        ml_dtypes.bfloat16
    )
    np.testing.assert_array_equal(np.asarray(got), want)
    assert np.all(np.asarray(got, np.float32) != 0)


OPERATORS = {
    "soft": lambda z, t: optax_l1.soft_threshold(z, t),
    "elastic": lambda z, t: optax_l1.elastic_net_threshold(z, t, 0.5),
    "nonneg": lambda z, t: optax_l1.elastic_net_threshold(z, t, 0.5, nonnegative=True),
    "group": lambda z, t: optax_l1.group_soft_threshold(z, t, axis=1),
}


@pytest.mark.parametrize("op", list(OPERATORS))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "complex64"])
def test_dtype_preserved_and_zeros_exact(op, dtype):
    if op == "nonneg" and dtype == "complex64":
        pytest.skip("non-negative lasso is real only")
    vals = np.array([[0.3, -0.2, 2.0], [-3.0, 0.05, 0.0]], np.float32)
    if dtype == "complex64":
        z = jnp.asarray(vals * (1 + 1j) / math.sqrt(2), jnp.complex64)
    else:
        z = jnp.asarray(vals, dtype)
    out = jax.jit(OPERATORS[op])(z, 0.5)
    assert out.dtype == z.dtype
    out = np.asarray(out.astype(jnp.complex64 if dtype == "complex64" else jnp.float32))
    if op == "group":  # row norms: ~2.04 survive, ~3.0 survives; nothing is a 0.5 group here
        want_zero = np_group(np.abs(vals), 0.5, 1) == 0
    elif op == "nonneg":
        want_zero = vals <= 0.5
    else:
        want_zero = np.abs(vals) <= 0.5
    np.testing.assert_array_equal(out == 0, want_zero)
    assert np.all(out[want_zero] == 0)  # exact, not merely tiny


@pytest.mark.parametrize("dtype", [jnp.float8_e4m3fn, jnp.float8_e5m2])
def test_operators_widen_float8_to_float32(dtype):
    # compute_dtype raised a TypePromotionError (float8 promotes with no other float).
    z = jnp.asarray([1.0, -0.25, 0.0, 2.0, -3.0, 0.5], dtype)
    vals = np.asarray(z.astype(jnp.float32), np.float64)
    got = optax_l1.soft_threshold(z, 0.5)
    assert got.dtype == dtype
    want = np.asarray(jnp.asarray(np_soft(vals, 0.5), jnp.float32).astype(dtype), np.float32)
    np.testing.assert_array_equal(np.asarray(got.astype(jnp.float32)), want)
    got = optax_l1.group_soft_threshold(z.reshape(2, 3), 0.5, axis=0)
    want = np_group(vals.reshape(2, 3), 0.5, 0)
    want = np.asarray(jnp.asarray(want, jnp.float32).astype(dtype), np.float32)
    np.testing.assert_array_equal(np.asarray(got.astype(jnp.float32)), want)


def test_float64_preserved_under_x64():
    with jax.enable_x64(True):
        z = jnp.array([1.0 + 1e-12, -0.5, 3.0], jnp.float64)
        got = optax_l1.soft_threshold(z, 1.0)
        assert got.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(got), np_soft(np.asarray(z), 1.0))


def test_soft_threshold_gradient_is_indicator():
    z = jnp.array([-3.0, -0.5, 0.0, 0.2, 1.5])
    g = jax.grad(lambda z: jnp.sum(optax_l1.soft_threshold(z, 1.0)))(z)
    np.testing.assert_array_equal(np.asarray(g), (np.abs(np.asarray(z)) > 1.0).astype(np.float32))


@pytest.mark.parametrize("t", [0.0, 0.5])
def test_group_prox_has_no_nan_at_zero_norm_including_gradients(t):
    z = jnp.zeros((3, 2))
    out = optax_l1.group_soft_threshold(z, t, axis=0)
    np.testing.assert_array_equal(np.asarray(out), 0.0)

    def f(z):
        return jnp.sum(optax_l1.group_soft_threshold(z, t, axis=0) ** 2) + jnp.sum(
            optax_l1.group_soft_threshold(z, t, axis=0)
        )

    g = jax.grad(f)(z)
    assert np.all(np.isfinite(np.asarray(g)))
    z2 = jnp.array([[0.0, 1.0], [0.0, 2.0]])
    g2 = np.asarray(jax.grad(f)(z2))
    assert np.all(np.isfinite(g2))
    gp = np.asarray(jax.grad(lambda z: optax_l1.group_l1_penalty(z, 1.0, axis=0))(z2))
    assert np.all(np.isfinite(gp)) and np.all(gp[:, 0] == 0)


@pytest.mark.parametrize("axis", [2, -3, (0, 0), (0, 5)])
def test_group_bad_axis_raises_value_error(axis):
    with pytest.raises(ValueError, match="`axis`"):
        optax_l1.group_soft_threshold({"w": jnp.ones((2, 2))}, 0.1, axis=axis)


@pytest.mark.parametrize("axis", [1.5, (), "0", (0, 1.0), True])
def test_group_bad_axis_type_raises_type_error(axis):
    with pytest.raises(TypeError, match="`axis`"):
        optax_l1.group_soft_threshold({"w": jnp.ones((2, 2))}, 0.1, axis=axis)


def test_group_axis_ignored_for_passthrough_leaves():
    tree = {"w": jnp.ones((2, 2)), "step": jnp.array(3), "none": None}
    out = optax_l1.group_soft_threshold(tree, 0.1, axis=1)
    assert out["none"] is None and int(out["step"]) == 3


# ----------------------------------------------------------------------------- properties


@given(VEC, THRESH)
def test_prop_soft_threshold_optimality_condition(z, t):
    """0 in (x - z) + t * d|x|: x != 0 => z - x = t sign(x); x == 0 => |z| <= t."""
    x = np.asarray(soft(z, np.float32(t)), np.float64)
    z = z.astype(np.float64)
    eps = tol(z, t)
    nz = x != 0
    np.testing.assert_allclose((z - x)[nz], t * np.sign(x[nz]), atol=eps)
    assert np.all(np.abs(z[~nz]) <= t + eps)


@given(VEC, THRESH, st.floats(0.0, 3.0, width=32))
def test_prop_elastic_net_optimality_condition(z, t, r):
    """0 in (x - z) + t * d|x| + r x."""
    x = np.asarray(elastic(z, np.float32(t), np.float32(r)), np.float64)
    z = z.astype(np.float64)
    eps = tol(z, t, r)
    nz = x != 0
    np.testing.assert_allclose((z - x - r * x)[nz], t * np.sign(x[nz]), atol=eps)
    assert np.all(np.abs(z[~nz]) <= t + eps)


@given(MAT, THRESH)
def test_prop_group_optimality_condition(z, t):
    """Per group g: x_g != 0 => z_g - x_g = t x_g / ||x_g||; x_g == 0 => ||z_g|| <= t."""
    x = np.asarray(group0(z, np.float32(t)), np.float64)
    z = z.astype(np.float64)
    eps = tol(z, t)
    for j in range(z.shape[1]):
        xg, zg = x[:, j], z[:, j]
        n = np.linalg.norm(xg)
        if n > 0:
            np.testing.assert_allclose(zg - xg, t * xg / n, atol=eps)
        else:
            assert np.linalg.norm(zg) <= t + eps


@given(VEC, VEC, THRESH)
def test_prop_soft_threshold_firmly_non_expansive(a, b, t):
    pa = np.asarray(soft(a, np.float32(t)), np.float64)
    pb = np.asarray(soft(b, np.float32(t)), np.float64)
    d, dp = a.astype(np.float64) - b, pa - pb
    eps = tol(a, b, t)
    assert np.all(np.abs(dp) <= np.abs(d) + eps)  # coordinate-wise 1-Lipschitz
    assert np.dot(dp, d) >= np.dot(dp, dp) - eps * len(d) * (1 + np.max(np.abs(d)))


@given(MAT, MAT, THRESH)
def test_prop_group_prox_non_expansive(a, b, t):
    pa = np.asarray(group1(a, np.float32(t)), np.float64)
    pb = np.asarray(group1(b, np.float32(t)), np.float64)
    assert np.linalg.norm(pa - pb) <= np.linalg.norm(a.astype(np.float64) - b) + tol(a, b)


@given(VEC, THRESH, st.floats(0.0, 3.0, width=32))
def test_prop_sign_preserving_and_shrinking(z, t, r):
    for x in (soft(z, np.float32(t)), elastic(z, np.float32(t), np.float32(r))):
        x = np.asarray(x)
        assert np.all(x * z >= 0)  # never flips a sign
        assert np.all((x == 0) | (np.sign(x) == np.sign(z)))
        assert np.all(np.abs(x) <= np.abs(z))
    g = np.asarray(group0(z.reshape(4, 2), np.float32(t)))
    assert np.all(g * z.reshape(4, 2) >= 0)
    assert np.all(np.abs(g) <= np.abs(z.reshape(4, 2)))


@given(VEC)
def test_prop_identity_at_threshold_zero(z):
    np.testing.assert_array_equal(np.asarray(soft(z, np.float32(0.0))), z)
    np.testing.assert_array_equal(np.asarray(elastic(z, np.float32(0.0), np.float32(0.0))), z)
    m = z.reshape(4, 2)
    np.testing.assert_allclose(np.asarray(group0(m, np.float32(0.0))), m, rtol=1e-6, atol=0)


@given(
    hnp.arrays(np.float32, (6,), elements=FLOATS),
    hnp.arrays(np.float32, (6,), elements=FLOATS),
    THRESH,
)
def test_prop_complex_optimality_and_phase(re, im, t):
    z = (re + 1j * im).astype(np.complex64)
    x = np.asarray(soft(z, np.float32(t))).astype(np.complex128)
    z = z.astype(np.complex128)
    eps = tol(np.abs(z), t)
    nz = x != 0
    np.testing.assert_allclose(z[nz] - x[nz], t * x[nz] / np.abs(x[nz]), atol=eps)
    assert np.all(np.abs(z[~nz]) <= t + eps)
    # same phase: x = c * z with real c in [0, 1]
    np.testing.assert_allclose(
        np.imag(x * np.conj(z)), 0.0, atol=eps * (1 + np.max(np.abs(z)) ** 2)
    )
    assert np.all(np.real(x * np.conj(z)) >= -eps)


@pytest.mark.parametrize("magnitude", [4.7e-25, 1e-30])
def test_group_prox_is_the_identity_at_zero_threshold_for_tiny_groups(magnitude):
    # float32 squares of these underflow to 0 (found by hypothesis); threshold 0 must still
    # return the input unchanged.
    z = np.full((4, 2), magnitude, np.float32)
    np.testing.assert_array_equal(np.asarray(optax_l1.group_soft_threshold(z, 0.0, axis=0)), z)
    zeroed = np.asarray(optax_l1.group_soft_threshold(z, 1e-3, axis=0))
    np.testing.assert_array_equal(zeroed, np.zeros_like(z))


def _np_n_of_m(z, n, m, axis):
    """NumPy reference: per block of m along axis, keep the n largest |z| (stable: earlier
    entry first on ties)."""
    x = np.ascontiguousarray(np.moveaxis(np.asarray(z, np.float64), axis, -1))
    flat = x.reshape(-1, m)
    res = np.zeros_like(flat)
    for b in range(flat.shape[0]):
        order = sorted(range(m), key=lambda i: (-abs(flat[b, i]), i))
        for i in order[:n]:
            res[b, i] = flat[b, i]
    return np.moveaxis(res.reshape(x.shape), -1, axis)


@pytest.mark.parametrize("n,m,axis", [(2, 4, 0), (1, 4, 1), (4, 8, 0), (0, 2, 1), (3, 3, 1)])
def test_n_of_m_projection_matches_numpy_and_leaves_n_per_block(n, m, axis):
    rng = np.random.default_rng(n * 10 + m)
    z = rng.standard_normal((24, 24)).astype(np.float32)
    z[0, :6] = 0.5  # ties
    z[1, :4] = 0.0
    got = np.asarray(optax_l1.n_of_m_projection(jnp.asarray(z), n, m, axis=axis))
    np.testing.assert_array_equal(got, _np_n_of_m(z, n, m, axis).astype(np.float32))
    blocks = np.moveaxis(got, axis, -1).reshape(-1, m)
    assert np.all(np.sum(blocks != 0, axis=1) <= n)
    both = optax_l1.n_of_m_projection({"a": jnp.asarray(z), "i": jnp.arange(3)}, n, m, axis=axis)
    np.testing.assert_array_equal(both["i"], np.arange(3))  # integer leaves pass


def test_n_of_m_projection_keeps_nan_and_checks_its_arguments():
    z = jnp.array([0.1, jnp.nan, 0.5, 2.0])
    got = np.asarray(optax_l1.n_of_m_projection(z, 2, 4, axis=0))
    assert np.isnan(got[1]) and got[3] == 2.0
    # n=0 zeroed the NaN too (its rank, 0, was not below 0): the fault vanished
    got = np.asarray(optax_l1.n_of_m_projection(z, 0, 4, axis=0))
    np.testing.assert_array_equal(got, [0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="not a multiple of `m`=4"):
        optax_l1.n_of_m_projection(jnp.ones(6), 2, 4, axis=0)
    with pytest.raises(ValueError, match="`n` must be at most `m`"):
        optax_l1.n_of_m_projection(jnp.ones(8), 5, 4, axis=0)
    with pytest.raises(ValueError, match="`m` must be"):
        optax_l1.n_of_m_projection(jnp.ones(8), 0, 0, axis=0)
    with pytest.raises(ValueError, match="`axis`=2 does not exist"):
        optax_l1.n_of_m_projection(jnp.ones((4, 4)), 2, 4, axis=2)


@pytest.mark.parametrize("n,m,axis", [(2, 4, 0), (3, 8, 1), (5, 16, 0), (20, 32, 1), (30, 40, 0)])
def test_n_of_m_codes_are_the_keep_bits_of_each_block(n, m, axis):
    """Bit i of a block's code is set iff entry i is among the block's n largest (ties:
    the earlier entry); codes fit 1, 2 or 4 bytes, wider blocks use the full mask."""
    from optax_l1 import _operators

    rng = np.random.default_rng(m)
    z = rng.standard_normal((160, 160)).astype(np.float32)
    z[0, :8] = 0.5  # ties
    want = _np_n_of_m(z + (z == 0), n, m, axis) != 0  # the mask of the reference
    keep = np.asarray(_operators.n_of_m_keep(jnp.abs(jnp.asarray(z)), n, m, axis))
    np.testing.assert_array_equal(keep, want)
    got = np.asarray(optax_l1.n_of_m_projection(jnp.asarray(z), n, m, axis=axis))
    np.testing.assert_array_equal(got, np.where(want, z, 0))
    if m > _operators.CODE_BITS:
        with pytest.raises(ValueError, match="at most 32 entries, got `m`=40"):
            _operators.n_of_m_codes(jnp.asarray(z), n, m, axis)
        return
    codes = np.asarray(_operators.n_of_m_codes(jnp.abs(jnp.asarray(z)), n, m, axis))
    assert codes.dtype == {8: np.uint8, 16: np.uint16, 32: np.uint32}[max(8, m)]
    blocks = np.moveaxis(want, axis, -1).reshape(-1, m)
    bits = (blocks * (2 ** np.arange(m, dtype=np.uint64))).sum(1)
    per_block = np.moveaxis(np.squeeze(codes, axis + 1), axis, -1)  # blocks in the same order
    np.testing.assert_array_equal(per_block.ravel(), bits)


def test_n_of_m_through_proximal_keeps_every_block_n_sparse_while_training():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 16)), jnp.float32)
    y = x @ jnp.asarray(rng.standard_normal((16, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((16, 4)), jnp.float32)
    prox = optax_l1.proximal(
        lambda z, step: optax_l1.n_of_m_projection(z, 2, 4, axis=0), learning_rate=0.05
    )
    tx = optax.chain(optax.adam(0.05), prox)
    state = tx.init(w)
    for _ in range(50):
        g = jax.grad(lambda v: jnp.mean((x @ v - y) ** 2))(w)
        u, state = tx.update(g, state, w)
        w = optax.apply_updates(w, u)
        blocks = np.moveaxis(np.asarray(w), 0, -1).reshape(-1, 4)
        assert np.all(np.sum(blocks != 0, axis=1) <= 2)


def test_a_threshold_that_would_change_the_leafs_shape_is_refused():
    """A (3, 1) threshold turned a (3,) leaf into (3, 3); a (2,) one crashed naming nothing;
    a per-entry threshold zeroed half of a group (probes)."""
    z = jnp.ones(3)
    np.testing.assert_array_equal(
        optax_l1.soft_threshold(z, jnp.array([0.5, 2.0, 0.0])), [0.5, 0.0, 1.0]
    )
    for bad in (jnp.full((3, 1), 0.5), jnp.full((2,), 0.5)):
        with pytest.raises(ValueError, match="`threshold` must be a scalar per leaf or broadcast"):
            optax_l1.soft_threshold(z, bad)
        with pytest.raises(ValueError, match="`threshold` must be a scalar per leaf or broadcast"):
            optax_l1.elastic_net_threshold(z, bad)
    with pytest.raises(ValueError, match="`l2_scale` must be a scalar per leaf or broadcast"):
        optax_l1.elastic_net_threshold(z, 0.5, jnp.ones((3, 1)))
    w = jnp.array([[3.0, 0.0], [4.0, 0.0]])
    with pytest.raises(TypeError, match="`threshold` must be a scalar"):
        optax_l1.group_soft_threshold(w, jnp.array([[0.1, 0.1], [9.0, 0.1]]), axis=0)


def test_n_of_m_and_rank_name_what_must_be_static():
    w = jnp.arange(1.0, 17.0).reshape(4, 4)
    with pytest.raises(TypeError, match="`axis` must be one int here"):
        optax_l1.n_of_m_projection(w, 1, 2, axis=(1, 0))  # ran along axis 0 alone
    with pytest.raises(TypeError, match="`n` shapes the result"):
        jax.jit(lambda n: optax_l1.n_of_m_projection(w, n, 4, axis=0))(2)
    with pytest.raises(TypeError, match="`rank` shapes the result"):
        jax.jit(lambda r: optax_l1.rank_projection(w, r))(1)
