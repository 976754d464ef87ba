"""Sparse export: BCOO and the packed N:M format give the dense leaf and product back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_l1


def test_bcoo_round_trip_and_product():
    w = jax.random.normal(jax.random.PRNGKey(0), (12, 7))
    w = jnp.where(jnp.abs(w) < 1.0, 0.0, w)
    tree = optax_l1.to_bcoo({"w": w, "b": jnp.ones(7)}, mask={"w": True, "b": False})
    sp = tree["w"]
    assert sp.nse == int(np.count_nonzero(np.asarray(w)))
    np.testing.assert_array_equal(sp.todense(), w)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
    np.testing.assert_allclose(sp @ x, w @ x, rtol=1e-5, atol=1e-5)
    assert isinstance(tree["b"], jax.Array)


@pytest.mark.parametrize(
    "n, m, shape, axis", [(2, 4, (16, 5), 0), (1, 4, (3, 8, 2), 1), (4, 8, (6, 16), 1)]
)
def test_pack_n_of_m_round_trips(n, m, shape, axis):
    w = jax.random.normal(jax.random.PRNGKey(n + m), shape)
    w = optax_l1.n_of_m_projection(w, n, m, axis=axis)
    packed = optax_l1.pack_n_of_m(w, n, m, axis=axis)
    assert packed.values.shape[axis + 1] == n and packed.positions.dtype == jnp.uint8
    np.testing.assert_array_equal(packed.todense(), w)
    # A block with fewer non-zeros than n pads with zeros and still round-trips.
    sparser = optax_l1.n_of_m_projection(w, max(n - 1, 0), m, axis=axis)
    np.testing.assert_array_equal(optax_l1.pack_n_of_m(sparser, n, m, axis=axis).todense(), sparser)


def test_n_of_m_matmul_equals_the_dense_product():
    w = optax_l1.n_of_m_projection(jax.random.normal(jax.random.PRNGKey(2), (32, 9)), 2, 4, axis=0)
    packed = optax_l1.pack_n_of_m(w, 2, 4)
    x = jax.random.normal(jax.random.PRNGKey(3), (5, 4, 32))
    got = jax.jit(optax_l1.n_of_m_matmul)(x, packed)
    np.testing.assert_allclose(got, x @ w, rtol=1e-5, atol=1e-5)
    # Stored: half the values and a byte per value, 62.5% of the dense float32 kernel.
    assert optax_l1.nbytes(packed) == 32 * 9 * 4 // 2 + 32 * 9 // 2
    assert optax_l1.nbytes(w) == 32 * 9 * 4


@pytest.mark.parametrize(
    "call",
    [
        ("to_bcoo", lambda w: optax_l1.to_bcoo({"w": w})),
        ("pack_n_of_m", lambda w: optax_l1.pack_n_of_m(w, 2, 4)),
        ("compact", lambda w: optax_l1.compact({"w": w}, {"w": optax_l1.Groups(0, couple="h")})),
    ],
    ids=lambda c: c[0],
)
def test_the_eager_conversions_say_so_under_jit(call):
    name, fn = call
    with pytest.raises(TypeError, match=f"`{name}` runs eagerly"):
        jax.jit(fn)(jnp.ones((4, 2)))


def test_n_of_m_round_trip_keeps_inf_and_nan_in_their_place():
    # todense multiplied by a one-hot: an inf made its whole block NaN (a probe).
    w = jnp.array([[jnp.inf], [1.0], [0.0], [0.0], [0.0], [jnp.nan], [-2.0], [0.0]])
    np.testing.assert_array_equal(optax_l1.pack_n_of_m(w, 2, 4).todense(), w)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bfloat16])
def test_n_of_m_matmul_keeps_the_dtype_of_the_dense_product(dtype):
    # The packed float32 values were cast to the input's dtype: int32 [1, 2, 3, 4] gave
    # [[0]] for the weights [0, 0.7, 0, 0.4] instead of [[3.]] (a probe).
    w = jnp.array([[0.0], [0.7], [0.0], [0.4]])
    x = jnp.array([[1, 2, 3, 4]], dtype)
    got = optax_l1.n_of_m_matmul(x, optax_l1.pack_n_of_m(w, 2, 4))
    assert got.dtype == (x @ w).dtype == jnp.float32
    np.testing.assert_allclose(got, x @ w, rtol=1e-6)
    with pytest.raises(ValueError, match=r"`x` must be \(\.\.\., 4\)"):
        optax_l1.n_of_m_matmul(jnp.ones((1, 5)), optax_l1.pack_n_of_m(w, 2, 4))


def test_pack_refuses_a_kernel_that_is_not_n_of_m():
    w = jnp.ones((8, 2))
    with pytest.raises(ValueError, match="with 4 non-zeros, more than `n`=2"):
        optax_l1.pack_n_of_m(w, 2, 4)
    with pytest.raises(ValueError, match="not a multiple|does not split"):
        optax_l1.pack_n_of_m(jnp.ones((6, 2)), 2, 4)
    with pytest.raises(ValueError, match="packed along axis 0"):
        optax_l1.n_of_m_matmul(
            jnp.ones((1, 2)), optax_l1.pack_n_of_m(jnp.zeros((2, 8)), 2, 4, axis=1)
        )


# XLA:CPU compares a subnormal as 0 (a probe): the exports and the zero counts go by the bits.
SUBNORMAL = float(np.float32(1e-42))  # as stored in float32


def test_exports_keep_a_subnormal_non_zero():
    w = np.zeros((4, 3), np.float32)
    w[1, 1], w[2, 0] = SUBNORMAL, 3.0
    sp = optax_l1.to_bcoo(w)  # fromdense dropped it and padded the slot NumPy counted
    assert sp.nse == 2
    np.testing.assert_array_equal(np.asarray(sp.data), [SUBNORMAL, 3.0])
    np.testing.assert_array_equal(np.asarray(sp.indices), [[1, 1], [2, 0]])
    assert sp.indices_sorted and sp.unique_indices  # as fromdense had them (cuSPARSE needs it)
    for leaf in (jnp.float32(2.0), jnp.float32(0.0)):  # 0-d leaves
        np.testing.assert_array_equal(optax_l1.to_bcoo(leaf).todense(), leaf)
    # A third non-zero in a block of 2:4 passed the check and was dropped.
    with pytest.raises(ValueError, match="3 non-zeros, more than `n`=2"):
        optax_l1.pack_n_of_m(np.array([[0.0], [3.0], [SUBNORMAL], [-1.0]], np.float32), 2, 4)
    packed = optax_l1.pack_n_of_m(np.array([[0.0], [SUBNORMAL], [0.0], [-1.0]], np.float32), 2, 4)
    np.testing.assert_array_equal(np.asarray(packed.positions)[:, :, 0], [[1, 3]])
    np.testing.assert_array_equal(np.asarray(packed.values)[:, :, 0], [[SUBNORMAL, -1.0]])


def test_zero_counts_go_by_the_bits():
    x = jnp.array([0.0, -0.0, SUBNORMAL, np.nan, 1.0, 0.0], jnp.float32)
    assert float(optax_l1.sparsity({"w": x})) == 0.5  # 4/6 counted the subnormal
    assert float(jax.jit(optax_l1.sparsity)({"w": x})) == 0.5
    bf16 = jnp.array([0.0, -0.0, 1e-40, 2.0], jnp.bfloat16)
    assert float(optax_l1.sparsity({"w": bf16})) == 0.5
    assert float(optax_l1.sparsity({"w": jnp.array([0, 1e-45j, 1.0])})) == pytest.approx(1 / 3)
    # Narrow floats are compared as before: a NaN of float8 "fnuz" is the bit pattern of -0.
    fnuz = jnp.array([np.nan, 1.0, 0.0, 2.0], jnp.float8_e4m3fnuz)
    assert float(optax_l1.sparsity({"w": fnuz})) == 0.25
    assert float(optax_l1.sparsity({"w": jnp.array([0, 1, 0, 2], jnp.float4_e2m1fn)})) == 0.5
    report = optax_l1.sparsity_report(
        {"w": jnp.array([[SUBNORMAL, 0.0], [0.0, 0.0]])},
        structure={"w": optax_l1.Groups(0)},
        n_of_m=(1, 2, 0),
    )
    assert float(report["w"]) == 0.75
    assert float(report["w:groups"]) == 0.5  # the first column is not a zero group
    assert float(report["w:n_of_m"]) == 1.0  # 1 non-zero per block of 2


def test_nbytes_reads_shapes_so_it_runs_traced():
    # np.asarray of each leaf copied it to the host, and failed under jit / eval_shape.
    tree = {"a": jnp.zeros((10, 10)), "b": jnp.zeros(3, jnp.bfloat16), "n": np.zeros(2, np.int8)}
    assert optax_l1.nbytes(tree) == 400 + 6 + 2
    assert jax.jit(lambda t: jnp.asarray(optax_l1.nbytes(t)))(tree) == 408
    assert jax.eval_shape(lambda t: jnp.asarray(optax_l1.nbytes(t)), tree).shape == ()


def test_nbytes_of_an_abstract_tree():
    shapes = jax.eval_shape(lambda: {"a": jnp.zeros((1000, 1000)), "b": jnp.zeros(3, jnp.bfloat16)})
    assert optax_l1.nbytes(shapes) == 4_000_000 + 6  # it was 16 (an 8-byte pointer each)
    assert optax_l1.nbytes(shapes) == optax_l1.nbytes(
        {"a": jnp.zeros((1000, 1000)), "b": jnp.zeros(3, jnp.bfloat16)}
    )
