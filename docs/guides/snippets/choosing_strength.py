"""Choosing the strength: units, a first value, lambda_max, a sweep, schedules."""

# The digits classifier imports its data in its own section of the guide:
# ruff: noqa: E402

# [start lambda_max]
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso

import optax_l1

X_np, y_np = load_diabetes(return_X_y=True)
X_np = (X_np - X_np.mean(0)) / X_np.std(0)  # standardized: one scale for all features
X, y = jnp.asarray(X_np, jnp.float32), jnp.asarray(y_np, jnp.float32)
n = X.shape[0]

# Smallest strength at which every coefficient is zero, for the loss
# 0.5 * mean((X w + b - y)^2) + alpha * ||w||_1 with an unpenalized intercept b.
alpha_max = float(jnp.max(jnp.abs(X.T @ (y - y.mean()))) / n)
# [end lambda_max]

# [start sweep]
# ISTA: a gradient step of size 1/L, then the prox. L bounds the curvature of the loss.
A = jnp.concatenate([X, jnp.ones((n, 1))], axis=1)
step_size = float(1.0 / jnp.linalg.eigvalsh(A.T @ A / n)[-1])
mask = {"w": True, "b": False}  # never penalize the intercept


def loss_fn(params):
    return 0.5 * jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


@jax.jit
def fit(alpha, params):
    # Built inside jit with a traced alpha: one compilation serves the whole sweep.
    tx = optax.chain(
        optax.sgd(step_size),
        optax_l1.l1_prox(alpha, learning_rate=step_size, mask=mask),
    )

    def body(_, carry):
        params, state = carry
        updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
        return optax.apply_updates(params, updates), state

    params, _ = jax.lax.fori_loop(0, 5000, body, (params, tx.init(params)))
    return params


zero = {"w": jnp.zeros(X.shape[1]), "b": jnp.zeros(())}  # the all-zero start
alphas = alpha_max * np.geomspace(1.0, 1e-3, 12)  # from all-zero to nearly unpenalized
params, path = zero, []
for alpha in alphas:
    params = fit(alpha, params)  # warm start from the previous (larger) alpha
    path.append(params["w"])
    print(f"alpha={alpha:8.3f}  nonzeros={int(jnp.sum(params['w'] != 0))}")
# [end sweep]

# At alpha_max the solution is all zero; just below it, one coefficient enters.
assert int(jnp.sum(path[0] != 0)) == 0
assert int(jnp.sum(fit(0.99 * alpha_max, zero)["w"] != 0)) == 1
assert int(jnp.sum(path[-1] != 0)) == X.shape[1]
# The same minimizer as scikit-learn's Lasso (1/(2n)||y - Xw - b||^2 + alpha ||w||_1).
i = 6
ref = Lasso(alpha=alphas[i], tol=1e-10, max_iter=100_000).fit(X_np, y_np)
np.testing.assert_allclose(np.asarray(path[i]), ref.coef_, atol=0.05)

# [start schedule]
total_steps, warmup_steps, strength = 1000, 200, 0.3 * alpha_max
learning_rate = optax.cosine_decay_schedule(step_size, total_steps, alpha=0.1)
# No shrinkage for the first 200 steps, then a linear ramp to full strength: the model
# learns which weights matter before small ones are zeroed.
strength_schedule = optax.linear_schedule(
    0.0, strength, 300, transition_begin=warmup_steps
)
tx = optax.chain(
    optax.sgd(learning_rate),
    # The threshold at step t is learning_rate(t) * strength_schedule(t).
    optax_l1.l1_prox(strength_schedule, learning_rate=learning_rate, mask=mask),
)
# [end schedule]


def schedule_step(carry, _):
    params, state = carry
    updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), jnp.sum(params["w"] == 0)


_, zeros_per_step = jax.lax.scan(
    schedule_step, (zero, tx.init(zero)), length=total_steps
)
assert int(jnp.max(zeros_per_step[1:warmup_steps])) == 0  # no zeros during warm-up
assert int(zeros_per_step[-1]) > 0
print("zeros at the end of the scheduled run:", int(zeros_per_step[-1]))

# [start inject]
# Strength as a hyperparameter in the optimizer state: change it between steps
# (e.g. from a validation metric) without recompiling.
prox = optax.inject_hyperparams(optax_l1.l1_prox)(strength=0.1, learning_rate=0.05)
tx = optax.chain(optax.adam(0.05), prox)


@jax.jit
def train_step(params, opt_state):
    updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state


params, opt_state = zero, tx.init(zero)
params, opt_state = train_step(params, opt_state)
# The same dtype as before: no retrace.
opt_state[1].hyperparams["strength"] = jnp.asarray(0.2, jnp.float32)
params, opt_state = train_step(params, opt_state)
# [end inject]

assert train_step._cache_size() == 1
assert float(opt_state[1].hyperparams["strength"]) == np.float32(0.2)

# [start target]
# Ask for a sparsity instead of a strength: at each step the smallest weights are
# zeroed so that the fraction of exact zeros follows a ramp to the target (the
# threshold is logged).
tx = optax.chain(
    optax.sgd(step_size),
    optax_l1.sparsity_target(0.6, ramp_steps=500, mask=mask),
)


def target_step(carry, _):
    params, state = carry
    updates, state = tx.update(jax.grad(loss_fn)(params), state, params)
    return (optax.apply_updates(params, updates), state), state[1].threshold


(params, opt_state), thresholds = jax.lax.scan(
    target_step, (zero, tx.init(zero)), length=1000
)
print("sparsity:", opt_state[1].sparsity)  # 0.6
print("scheduled:", opt_state[1].scheduled)  # 0.6
print("threshold at the end of the ramp:", thresholds[499])
# [end target]

assert int(jnp.sum(params["w"] == 0)) == 6
assert float(opt_state[1].sparsity) == np.float32(0.6)
assert float(thresholds[499]) > 0.0

# [start suggest]
# A first strength for Adam from a short dense run: train dense for ~10% of the steps,
# then read Adam's moments. Here a small classifier of the digits images.
from sklearn.datasets import load_digits

images, labels = load_digits(return_X_y=True)
images = jnp.asarray((images - images.mean(0)) / (images.std(0) + 1e-8), jnp.float32)
labels = jnp.asarray(labels)
keys = jax.random.split(jax.random.key(0), 2)
net = {
    "hidden": {"kernel": jax.random.normal(keys[0], (64, 64)) * 0.18},
    "out": {"kernel": jax.random.normal(keys[1], (64, 10)) * 0.18},
}


def net_loss(p, xb, yb):
    logits = jax.nn.relu(xb @ p["hidden"]["kernel"]) @ p["out"]["kernel"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()


def train(tx, params, steps, batch=128):
    def one(carry, key):
        p, s = carry
        idx = jax.random.randint(key, (batch,), 0, labels.shape[0])
        g = jax.grad(net_loss)(p, images[idx], labels[idx])
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    keys = jax.random.split(jax.random.key(1), steps)
    return jax.lax.scan(one, (params, tx.init(params)), keys)[0]


dense_params, dense_state = train(optax.adam(3e-3), net, 150)
strength = optax_l1.suggest_strength(
    dense_params,
    dense_state,
    0.8,  # the wanted fraction of zeros
    for_transform="proximal_adam",
    batch_size=128,  # the loss is a mean over 128 examples
)
sparse, _ = train(optax_l1.proximal_adam(3e-3, strength=strength), net, 1500)
print(f"strength {strength:.3g}: {optax_l1.sparsity(sparse):.0%} zeros")
# [end suggest]

assert 0.7 <= float(optax_l1.sparsity(sparse)) <= 0.9
