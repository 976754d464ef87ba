"""ISTA built from optax pieces converges to scikit-learn's coordinate-descent solutions.

`optax.chain(optax.sgd(1/L), optax_l1.l1_prox(alpha, 1/L))` on the bundled diabetes data
(standardized X, centered y, loss 0.5 * mean((Xw - y)^2)) must reach `Lasso(alpha).coef_`,
including which coefficients are exactly zero.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet, Lasso, MultiTaskLasso

import optax_l1

STEPS = 20_000


@functools.lru_cache(maxsize=1)
def data():
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = y - y.mean()
    n = x.shape[0]
    lipschitz = float(np.linalg.eigvalsh(x.T @ x / n).max())
    alpha_max = float(np.max(np.abs(x.T @ y)) / n)
    return x, y, lipschitz, alpha_max


def sk_fit(model_cls, **kwargs):
    x, y, _, _ = data()
    model = model_cls(fit_intercept=False, tol=1e-12, max_iter=200_000, **kwargs)
    return model.fit(x, y).coef_


def make_fit(tx_factory, y_extra=None, steps=STEPS):
    """A jitted ISTA-style run; `tx_factory(alpha, lr)` builds the optimizer (alpha traced)."""
    x, y, lipschitz, _ = data()
    xj = jnp.asarray(x, jnp.float32)
    yj = jnp.asarray(y if y_extra is None else y_extra, jnp.float32)
    lr = 1.0 / lipschitz

    def loss(w):
        return 0.5 * jnp.mean(jnp.sum(((xj @ w) - yj).reshape(yj.shape[0], -1) ** 2, axis=1))

    @jax.jit
    def fit(alpha):
        tx = tx_factory(alpha, lr)
        w = jnp.zeros((x.shape[1],) + yj.shape[1:], jnp.float32)

        def body(carry, _):
            w, state = carry
            updates, state = tx.update(jax.grad(loss)(w), state, w)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(body, (w, tx.init(w)), length=steps)
        return w

    return fit


@functools.lru_cache(maxsize=1)
def lasso_fit():
    return make_fit(lambda a, lr: optax.chain(optax.sgd(lr), optax_l1.l1_prox(a, learning_rate=lr)))


def scale():
    return float(np.max(np.abs(sk_fit(Lasso, alpha=0.01 * data()[3]))))


@pytest.mark.parametrize("frac", [0.9, 0.5, 0.2, 0.05, 0.01])
def test_ista_matches_sklearn_lasso_including_zero_pattern(frac):
    alpha = frac * data()[3]
    want = sk_fit(Lasso, alpha=alpha)
    got = np.asarray(lasso_fit()(jnp.float32(alpha)))
    np.testing.assert_allclose(got, want, atol=1e-4 * scale(), rtol=1e-4)
    np.testing.assert_array_equal(got == 0.0, want == 0.0)
    assert np.any(want == 0.0) and np.any(want != 0.0)


@pytest.mark.parametrize("frac", [1.0, 1.5, 10.0])
def test_alpha_at_or_above_alpha_max_gives_all_zeros(frac):
    alpha = frac * data()[3]
    got = np.asarray(lasso_fit()(jnp.float32(alpha * (1 + 1e-6))))
    np.testing.assert_array_equal(got, 0.0)
    np.testing.assert_array_equal(sk_fit(Lasso, alpha=alpha), 0.0)


def test_alpha_just_below_alpha_max_selects_one_feature():
    x, y, _, alpha_max = data()
    got = np.asarray(lasso_fit()(jnp.float32(0.97 * alpha_max)))
    want_feature = int(np.argmax(np.abs(x.T @ y)))  # the first to enter the lasso path
    assert np.flatnonzero(got).tolist() == [want_feature]
    np.testing.assert_array_equal(got != 0, sk_fit(Lasso, alpha=0.97 * alpha_max) != 0)


def test_solution_satisfies_lasso_kkt_conditions():
    """Independent of sklearn: |x_j^T r| / n <= alpha where w_j = 0, = alpha sign(w_j) elsewhere."""
    x, y, _, alpha_max = data()
    alpha = 0.1 * alpha_max
    w = np.asarray(lasso_fit()(jnp.float32(alpha)), np.float64)
    corr = x.T @ (y - x @ w) / x.shape[0]
    nz = w != 0
    np.testing.assert_allclose(corr[nz], alpha * np.sign(w[nz]), rtol=1e-3)
    assert np.all(np.abs(corr[~nz]) <= alpha * (1 + 1e-4))
    assert np.any(~nz)


def test_elastic_net_matches_sklearn():
    alpha, l1_ratio = 0.1 * data()[3], 0.6
    fit = make_fit(
        lambda a, lr: optax.chain(
            optax.sgd(lr), optax_l1.l1_prox(a * l1_ratio, learning_rate=lr, l2=a * (1 - l1_ratio))
        )
    )
    got = np.asarray(fit(jnp.float32(alpha)))
    want = sk_fit(ElasticNet, alpha=alpha, l1_ratio=l1_ratio)
    np.testing.assert_allclose(got, want, atol=1e-4 * scale(), rtol=1e-4)
    np.testing.assert_array_equal(got == 0.0, want == 0.0)
    assert np.any(want == 0.0)


def test_nonnegative_lasso_matches_sklearn_positive():
    alpha = 0.05 * data()[3]
    fit = make_fit(
        lambda a, lr: optax.chain(
            optax.sgd(lr), optax_l1.l1_prox(a, learning_rate=lr, nonnegative=True)
        )
    )
    got = np.asarray(fit(jnp.float32(alpha)))
    want = sk_fit(Lasso, alpha=alpha, positive=True)
    np.testing.assert_allclose(got, want, atol=1e-4 * scale(), rtol=1e-4)
    np.testing.assert_array_equal(got == 0.0, want == 0.0)
    assert np.all(got >= 0) and np.any(got > 0)


def test_group_lasso_matches_sklearn_multitask_lasso():
    """group_l1_prox(axis=1) on W (features, tasks) is MultiTaskLasso's L21 penalty."""
    x, y, _, _ = data()
    rng = np.random.default_rng(0)
    y2 = x @ rng.normal(size=x.shape[1]) * 10 + rng.normal(size=x.shape[0]) * 20
    yy = np.stack([y, y2 - y2.mean()], axis=1)
    alpha = 0.25 * float(np.max(np.linalg.norm(x.T @ yy, axis=1)) / x.shape[0])
    fit = make_fit(
        lambda a, lr: optax.chain(
            optax.sgd(lr), optax_l1.group_l1_prox(a, learning_rate=lr, axis=1)
        ),
        y_extra=yy,
    )
    got = np.asarray(fit(jnp.float32(alpha)))  # (features, tasks)
    want = MultiTaskLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200_000)
    want = want.fit(x, yy).coef_.T
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)
    zero_rows = np.all(want == 0, axis=1)
    np.testing.assert_array_equal(np.all(got == 0, axis=1), zero_rows)
    assert np.any(zero_rows) and not np.all(zero_rows)


def test_loss_penalty_approach_never_reaches_the_zeros():
    """The subgradient (Keras/PyTorch-style) method on the same problem: no exact zeros."""
    alpha = 0.2 * data()[3]
    fit = make_fit(
        lambda a, lr: optax.chain(optax_l1.add_l1_subgradient(a), optax.sgd(lr)), steps=2000
    )
    got = np.asarray(fit(jnp.float32(alpha)))
    want = sk_fit(Lasso, alpha=alpha)
    assert np.sum(want == 0) >= 3
    assert np.all(got != 0.0)
    prox = np.asarray(lasso_fit()(jnp.float32(alpha)))
    assert np.sum(prox == 0) == np.sum(want == 0)
