"""Low rank as L1 on the spectrum: against NumPy's SVD, the prox's optimality, a rank
constraint held by ``proximal``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import optax_l1


def np_svt(z, t):
    u, s, vt = np.linalg.svd(np.asarray(z, np.float64), full_matrices=False)
    return u @ np.diag(np.maximum(s - t, 0.0)) @ vt


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
@pytest.mark.parametrize("t", [0.0, 0.7, 2.5])
def test_nuclear_threshold_matches_numpy(shape, t):
    z = jax.random.normal(jax.random.PRNGKey(shape[0] * 10 + shape[1]), shape)
    got = jax.jit(optax_l1.nuclear_threshold)(z, t)
    np.testing.assert_allclose(got, np_svt(z, t), atol=2e-5)
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
    assert int(np.linalg.matrix_rank(np.asarray(got), tol=1e-4)) == int((s > t).sum())


def test_stacks_of_matrices_and_errors():
    z = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 4))
    got = optax_l1.nuclear_threshold(z, 1.0)
    for i in range(3):
        np.testing.assert_allclose(got[i], np_svt(z[i], 1.0), atol=2e-5)
    with pytest.raises(ValueError, match="acts on matrices"):
        optax_l1.nuclear_threshold(jnp.ones(3), 1.0)
    with pytest.raises(ValueError, match="`threshold` must be"):
        optax_l1.nuclear_threshold(z, -1.0)
    with pytest.raises(ValueError, match="`rank` must be"):
        optax_l1.rank_projection(z, -1)
    # One number per leaf: a vector thresholded the k-th singular value by its k-th entry,
    # and a matrix broadcast the result to another shape (a probe).
    for bad in (jnp.array([0.0, 0.0, 5.0]), jnp.ones((4, 4)), jnp.ones((1, 1))):
        with pytest.raises(ValueError, match="`threshold` must be one number per leaf"):
            jax.jit(optax_l1.nuclear_threshold)(z, bad)


def test_the_rank_of_a_matrix_with_a_nan_is_nan_never_low():
    report = optax_l1.sparsity_report(
        {
            "w": jnp.array([[jnp.nan, 0.0], [0.0, 1.0]]),
            "i": jnp.array([[jnp.inf, 0.0], [0.0, 1.0]]),
            "s": jnp.stack([jnp.eye(3)] * 2),
        },
        rank=True,
    )
    assert np.isnan(report["w:rank"]) and np.isnan(report["i:rank"])
    assert float(report["s:rank"]) == 3.0
    empty = optax_l1.sparsity_report({"w": jnp.zeros((0, 3, 3))}, rank=True)
    assert float(empty["w:rank"]) == 0.0


def _objective(w, z, t):
    return 0.5 * np.sum((w - z) ** 2) + t * np.linalg.svd(w, compute_uv=False).sum()


matrices = hnp.arrays(np.float32, (4, 3), elements=st.floats(-3, 3, width=32))


@given(matrices, st.floats(0.0, 3.0), st.integers(0, 2**31 - 1))
def test_nuclear_prox_is_optimal(z, t, seed):
    w = np.asarray(optax_l1.nuclear_threshold(jnp.asarray(z), t), np.float64)
    zz = z.astype(np.float64)
    best = _objective(w, zz, t)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        other = w + 1e-2 * rng.normal(size=w.shape)
        assert best <= _objective(other, zz, t) + 1e-5


@given(matrices, matrices, st.floats(0.0, 3.0))
def test_nuclear_prox_is_non_expansive(a, b, t):
    pa = np.asarray(optax_l1.nuclear_threshold(jnp.asarray(a), t), np.float64)
    pb = np.asarray(optax_l1.nuclear_threshold(jnp.asarray(b), t), np.float64)
    gap = np.linalg.norm(a.astype(np.float64) - b.astype(np.float64))
    assert np.linalg.norm(pa - pb) <= gap * (1 + 1e-4) + 1e-4


def test_rank_projection_is_eckart_young_and_holds_under_proximal():
    z = jax.random.normal(jax.random.PRNGKey(2), (8, 6))
    u, s, vt = np.linalg.svd(np.asarray(z, np.float64), full_matrices=False)
    np.testing.assert_allclose(
        optax_l1.rank_projection(z, 2), u[:, :2] @ np.diag(s[:2]) @ vt[:2], atol=2e-5
    )
    tx = optax.chain(
        optax.adam(1e-2),
        optax_l1.proximal(lambda w, step: optax_l1.rank_projection(w, 2), learning_rate=1e-2),
    )
    p, state = {"w": z}, tx.init({"w": z})
    target = jax.random.normal(jax.random.PRNGKey(3), (8, 6))
    for _ in range(20):
        g = jax.grad(lambda p: jnp.sum((p["w"] - target) ** 2))(p)
        u_, state = tx.update(g, state, p)
        p = optax.apply_updates(p, u_)
        assert float(optax_l1.sparsity_report(p, rank=True)["w:rank"]) == 2.0
