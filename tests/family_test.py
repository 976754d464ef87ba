"""The proximal family against external references: scikit-learn, scipy, and pruning.

- Elastic net (``l1_prox(l2=...)``) with ISTA reproduces ``sklearn.linear_model.ElasticNet``.
- Non-negative lasso (``nonnegative=True``) reproduces ``Lasso(positive=True)``.
- Group lasso (``group_l1_prox``): optimality per group and non-expansiveness (hypothesis),
  agreement with a direct numerical minimization of the prox objective (scipy), and whole
  hidden units switched off in a small MLP.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet, Lasso

import optax_l1

ISTA_STEPS = 4000


@functools.cache
def _diabetes():
    """Standardized diabetes features, centered target, and the ISTA step 1 / L."""
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    y = y - y.mean()
    lipschitz = np.linalg.eigvalsh(X.T @ X / X.shape[0]).max()
    return X, y, 1.0 / lipschitz


def _ista(tx_for_step):
    """Minimizes 0.5 * mean((Xw - y)^2) with ``optax.sgd(1/L)`` and the given prox last."""
    X, y, step = _diabetes()
    Xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)
    tx = optax.chain(optax.sgd(step), tx_for_step(step))

    def loss(w):
        return 0.5 * jnp.mean((Xj @ w - yj) ** 2)

    @jax.jit
    def solve(w):
        def body(_, carry):
            w, state = carry
            updates, state = tx.update(jax.grad(loss)(w), state, w)
            return optax.apply_updates(w, updates), state

        return jax.lax.fori_loop(0, ISTA_STEPS, body, (w, tx.init(w)))[0]

    return np.asarray(solve(jnp.zeros(X.shape[1])))


def _assert_same_solution(ours, coef):
    np.testing.assert_allclose(ours, coef, atol=1e-4 * np.abs(coef).max())
    np.testing.assert_array_equal(ours == 0, coef == 0)


@pytest.mark.parametrize(
    "alpha, l1_ratio", [(0.5, 0.5), (2.0, 0.2), (1.0, 0.9), (5.0, 0.7), (10.0, 0.95)]
)
def test_elastic_net_matches_sklearn(alpha, l1_ratio):
    X, y, _ = _diabetes()
    sk = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, fit_intercept=False, tol=1e-12, max_iter=10**5)
    coef = sk.fit(X, y).coef_
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    ours = _ista(lambda step: optax_l1.l1_prox(l1, learning_rate=step, l2=l2))
    _assert_same_solution(ours, coef)
    if alpha >= 5.0:
        assert (coef == 0).sum() >= 2


@pytest.mark.parametrize("alpha", [0.5, 2.0, 8.0])
def test_nonnegative_lasso_matches_sklearn_positive(alpha):
    X, y, _ = _diabetes()
    sk = Lasso(alpha=alpha, positive=True, fit_intercept=False, tol=1e-12, max_iter=10**5)
    coef = sk.fit(X, y).coef_
    ours = _ista(lambda step: optax_l1.l1_prox(alpha, learning_rate=step, nonnegative=True))
    _assert_same_solution(ours, coef)
    assert (ours >= 0).all() and (ours == 0).sum() >= 5
    # Without the sign constraint some of these coefficients are negative.
    unconstrained = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=10**5)
    assert (unconstrained.fit(X, y).coef_ < 0).any()


# ----------------------------------------------------------------------------- group lasso


def _group_prox(z, tau, axis):
    """``group_l1_prox`` as an operator: a zero update, learning rate 1, strength tau."""
    tx = optax_l1.group_l1_prox(tau, learning_rate=1.0, axis=axis)
    params = {"w": jnp.asarray(z)}
    updates, _ = tx.update({"w": jnp.zeros_like(params["w"])}, tx.init(params), params)
    return np.asarray(optax.apply_updates(params, updates)["w"], np.float64)


_MATRICES = hnp.arrays(
    np.float32, (4, 3), elements=st.floats(-4, 4, width=32, allow_subnormal=False)
)
_TAUS = st.floats(0.0, 5.0, allow_subnormal=False)


@given(z=_MATRICES, tau=_TAUS, axis=st.sampled_from([0, 1]))
def test_group_prox_optimality_per_group(z, tau, axis):
    """0 in w_g - z_g + tau * d||w_g||: zero groups have ||z_g|| <= tau, others move radially."""
    w = _group_prox(z, tau, axis)
    zg = np.moveaxis(z.astype(np.float64), axis, -1)
    wg = np.moveaxis(w, axis, -1)
    for z_g, w_g in zip(zg.reshape(-1, zg.shape[-1]), wg.reshape(-1, wg.shape[-1]), strict=True):
        norm = np.linalg.norm(w_g)
        if norm == 0:
            assert np.linalg.norm(z_g) <= tau * (1 + 1e-5) + 1e-5
        else:
            np.testing.assert_allclose(z_g - w_g, tau * w_g / norm, atol=1e-5 * (1 + tau))


@given(a=_MATRICES, b=_MATRICES, tau=_TAUS, axis=st.sampled_from([0, 1]))
def test_group_prox_is_non_expansive(a, b, tau, axis):
    gap = np.linalg.norm(_group_prox(a, tau, axis) - _group_prox(b, tau, axis))
    assert gap <= np.linalg.norm(a.astype(np.float64) - b) * (1 + 1e-5) + 1e-5


def _group_objective(w, z, tau, axis):
    return 0.5 * np.sum((w - z) ** 2) + tau * np.linalg.norm(w, axis=axis).sum()


@pytest.mark.parametrize("seed, tau, axis", [(0, 0.5, 0), (1, 0.6, 0), (2, 1.5, 1), (3, 2.5, 1)])
def test_group_prox_matches_numerical_minimization(seed, tau, axis):
    """Against scipy's derivative-free minimization of the (nonsmooth) prox objective."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, 5)) * rng.uniform(0.2, 1.5, size=(1, 5))
    z = z.astype(np.float32).astype(np.float64)  # what the float32 prox sees
    result = scipy.optimize.minimize(
        lambda w: _group_objective(w.reshape(z.shape), z, tau, axis),
        z.ravel(),
        method="Powell",
        options={"xtol": 1e-12, "ftol": 1e-15, "maxiter": 10**5, "maxfev": 10**6},
    )
    assert result.success, result.message
    ours = _group_prox(z.astype(np.float32), tau, axis)
    # Scored with the public penalty, ours is at least as good as the solver's point ...
    penalty = optax_l1.group_l1_penalty(jnp.asarray(ours, jnp.float32), tau, axis=axis)
    ours_value = 0.5 * np.sum((ours - z) ** 2) + float(penalty)
    assert ours_value <= result.fun + 1e-6
    # ... and, the objective being 1-strongly convex, F(x) - F(w*) >= ||x - w*||^2 / 2 holds
    # for the solver's point x if ours is the minimizer w* (up to float32 rounding).
    solver = result.x.reshape(z.shape)
    assert np.sum((solver - ours) ** 2) <= 2 * (result.fun - ours_value) + 1e-6
    np.testing.assert_allclose(ours, solver, atol=1e-3)
    norms = np.linalg.norm(ours, axis=axis)
    assert 0 < (norms == 0).sum() < norms.size  # some groups off, some on


# ----------------------------------------------------------------------------- pruning


def _mlp_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 6)).astype(np.float32)
    A = rng.normal(size=(6, 2)).astype(np.float32)  # the teacher has 2 hidden units
    y = (np.tanh(X @ A) @ np.array([1.5, -1.0], np.float32))[:, None]
    return X, y


def _predict(params, X):
    hidden = jnp.tanh(X @ params["hidden"]["kernel"] + params["hidden"]["bias"][None, :])
    return hidden @ params["out"]["kernel"] + params["out"]["bias"][None, :]


def _train_mlp(strength, hidden=16, steps=1500, lr=1e-2):
    X, y = _mlp_data()
    k1, k2 = jax.random.split(jax.random.key(1))
    params = {
        "hidden": {
            "kernel": jax.random.normal(k1, (6, hidden)) / np.sqrt(6),
            "bias": jnp.zeros(hidden),
        },
        "out": {
            "kernel": jax.random.normal(k2, (hidden, 1)) / np.sqrt(hidden),
            "bias": jnp.zeros(1),
        },
    }
    # Each hidden unit's incoming weights (a column of the (in, out) kernel) form one group.
    mask = {"hidden": {"kernel": True, "bias": False}, "out": {"kernel": False, "bias": False}}
    tx = optax.chain(
        optax.adam(lr), optax_l1.group_l1_prox(strength, learning_rate=lr, axis=0, mask=mask)
    )

    def loss(p):
        return jnp.mean((_predict(p, X) - y) ** 2)

    @jax.jit
    def train(params):
        def body(carry, _):
            p, state = carry
            updates, state = tx.update(jax.grad(loss)(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        return jax.lax.scan(body, (params, tx.init(params)), None, length=steps)[0][0]

    params = train(params)
    return params, float(loss(params)), float(np.var(y))


def test_group_lasso_prunes_whole_hidden_units():
    dense, dense_loss, var = _train_mlp(0.0)
    assert (np.asarray(dense["hidden"]["kernel"]) != 0).any(axis=0).all()
    params, loss, _ = _train_mlp(0.3)
    kernel = np.asarray(params["hidden"]["kernel"])
    alive = (kernel != 0).any(axis=0)
    assert 2 <= alive.sum() <= 6, alive
    assert (kernel == 0).sum() == (~alive).sum() * kernel.shape[0]  # all or nothing per unit
    assert loss < 0.01 * var and dense_loss < 0.01 * var
    # Remove the dead units: each only adds the constant tanh(bias) * w_out to the output.
    bias, w_out = np.asarray(params["hidden"]["bias"]), np.asarray(params["out"]["kernel"])
    pruned = {
        "hidden": {"kernel": kernel[:, alive], "bias": bias[alive]},
        "out": {
            "kernel": w_out[alive],
            "bias": np.asarray(params["out"]["bias"]) + np.tanh(bias[~alive]) @ w_out[~alive],
        },
    }
    X, _ = _mlp_data()
    np.testing.assert_allclose(_predict(pruned, X), _predict(params, X), rtol=1e-5, atol=1e-5)
