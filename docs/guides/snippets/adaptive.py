"""Adaptive optimizers with L1: proximal Adam, proximal Adagrad, FTRL."""

# [start compare]
import jax
import jax.numpy as jnp
import optax

import optax_l1

key_x, key_noise = jax.random.split(jax.random.key(0))
X = jax.random.normal(key_x, (200, 50))
w_true = jnp.zeros(50).at[:5].set(jnp.array([3.0, -2.0, 1.5, 1.0, -1.0]))
y = X @ w_true + 0.1 * jax.random.normal(key_noise, (200,))


def loss_fn(w):
    return 0.5 * jnp.mean((X @ w - y) ** 2)


def train(tx, steps=3000):
    @jax.jit
    def run(w):
        def step(carry, _):
            w, state = carry
            updates, state = tx.update(jax.grad(loss_fn)(w), state, w)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(step, (w, tx.init(w)), length=steps)
        return w

    return run(jnp.zeros(50))


strength = 0.05  # the same objective for all: loss_fn(w) + strength * ||w||_1
# ISTA, the reference: plain SGD with the prox step.
reference = train(
    optax.chain(optax.sgd(0.1), optax_l1.l1_prox(strength, learning_rate=0.1))
)

runs = {
    # Adam's step, then a shrink by lr * strength that ignores Adam's scaling.
    "adam + l1_prox": optax.chain(
        optax.adam(1e-2), optax_l1.l1_prox(strength, learning_rate=1e-2)
    ),
    # The shrink at Adam's own per-coordinate step: lr * strength / (sqrt(v_hat) + eps).
    "proximal_adam": optax_l1.proximal_adam(1e-2, strength=strength),
    # TensorFlow's ProximalAdagrad: the shrink at Adagrad's step lr / sqrt(accumulator).
    "proximal_adagrad": optax_l1.proximal_adagrad(0.5, strength=strength),
}
results = {name: train(tx) for name, tx in runs.items()}
for name, w in results.items():
    print(
        f"{name:17s} exact zeros={int(jnp.sum(w == 0)):2d}  "
        f"max |w - lasso solution|={float(jnp.max(jnp.abs(w - reference))):.1e}"
    )
# adam + l1_prox     exact zeros= 2  max |w - lasso solution|=5.6e-02
# proximal_adam      exact zeros=45  max |w - lasso solution|=2.6e-06
# proximal_adagrad   exact zeros=45  max |w - lasso solution|=2.6e-06
# [end compare]

assert int(jnp.sum(reference == 0)) == 45
for name in ("proximal_adam", "proximal_adagrad"):
    assert jnp.max(jnp.abs(results[name] - reference)) < 1e-4, name
assert int(jnp.sum(results["adam + l1_prox"] == 0)) < 45

# [start wrap]
# Any diagonal optimizer: say where its accumulator is and how it divides by it.
# RMSProp (for Adam and AdamW use proximal_adam / proximal_adamw instead).
learning_rate, rms_eps = 1e-2, 1e-8
tx = optax_l1.with_preconditioned_l1(
    optax.rmsprop(learning_rate, decay=0.9, eps=rms_eps),
    strength=strength,
    learning_rate=learning_rate,
    accumulator="nu",  # rmsprop and adam keep it in `nu`; adagrad in `sum_of_squares`
    eps=0.0,  # rmsprop adds its eps inside the root: D = sqrt(nu + eps)
    eps_root=rms_eps,
    bias_correction_decay=None,  # rmsprop does not bias-correct (adam: its b2)
    unseen="shrink",  # rmsprop steps where nu = 0; "keep" for adagrad, which does not
    mask=optax_l1.kernel_mask,  # as for every transform here
)
# [end wrap]

params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
grads = jax.tree.map(jnp.ones_like, params)
updates, _ = tx.update(grads, tx.init(params), params)
assert jax.tree.structure(updates) == jax.tree.structure(params)

# [start ftrl]
# FTRL-Proximal for a stream of examples, each seen once (click-through prediction).
n_features, batch = 100, 32
w_star = jnp.zeros(n_features).at[:10].set(2.0)


def logistic_loss(w, xb, yb):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(xb @ w, yb))


tx = optax_l1.ftrl(learning_rate=0.5, strength=5.0, l2=0.01)


@jax.jit
def stream(w, key):
    def step(carry, key):
        w, state = carry
        xb = jax.random.normal(key, (batch, n_features))
        yb = (xb @ w_star > 0).astype(jnp.float32)
        updates, state = tx.update(jax.grad(logistic_loss)(w, xb, yb), state, w)
        return (optax.apply_updates(w, updates), state), None

    (w, _), _ = jax.lax.scan(step, (w, tx.init(w)), jax.random.split(key, 2000))
    return w


w = stream(jnp.zeros(n_features), jax.random.key(1))
print("exact zeros:", int(jnp.sum(w == 0)), "support:", jnp.flatnonzero(w))
# exact zeros: 90 support: [0 1 2 3 4 5 6 7 8 9]
# [end ftrl]

assert jnp.array_equal(jnp.flatnonzero(w), jnp.arange(10))
