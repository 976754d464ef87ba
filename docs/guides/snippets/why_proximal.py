"""Why proximal: one objective, trained with a loss penalty and with a prox step."""

# [start compare]
import jax
import jax.numpy as jnp
import optax

import optax_l1

key_x, key_noise = jax.random.split(jax.random.key(0))
X = jax.random.normal(key_x, (200, 50))
w_true = jnp.zeros(50).at[:5].set(jnp.array([3.0, -2.0, 1.5, 1.0, -1.0]))
y = X @ w_true + 0.1 * jax.random.normal(key_noise, (200,))


def data_loss(w):
    return 0.5 * jnp.mean((X @ w - y) ** 2)


strength, learning_rate, steps = 0.05, 0.1, 300

# (a) The loss penalty, as Keras regularizers.l1 or a PyTorch loop: gradient of
#     data_loss(w) + strength * sum|w|. add_l1_subgradient(strength) is that gradient.
penalty_tx = optax.chain(
    optax_l1.add_l1_subgradient(strength), optax.sgd(learning_rate)
)

# (b) The proximal step of the same penalty, placed after the optimizer.
prox_tx = optax.chain(
    optax.sgd(learning_rate), optax_l1.l1_prox(strength, learning_rate=learning_rate)
)


def train(tx):
    @jax.jit
    def run(w):
        def step(carry, _):
            w, state = carry
            updates, state = tx.update(jax.grad(data_loss)(w), state, w)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(step, (w, tx.init(w)), length=steps)
        return w

    return run(jnp.zeros(50))


def objective(w):
    return data_loss(w) + optax_l1.l1_penalty(w, strength)


w_penalty, w_prox = train(penalty_tx), train(prox_tx)
print("exact zeros, penalty:", int(jnp.sum(w_penalty == 0)))  # 0
print("exact zeros, prox:   ", int(jnp.sum(w_prox == 0)))  # 45
print("objective, penalty:", objective(w_penalty))
print("objective, prox:   ", objective(w_prox))  # lower
# About learning_rate * strength: the size of the oscillation around zero.
print("largest |w| off the support, penalty:", jnp.max(jnp.abs(w_penalty[5:])))
# [end compare]

assert int(jnp.sum(w_penalty == 0)) == 0
assert int(jnp.sum(w_prox == 0)) == 45
assert objective(w_prox) < objective(w_penalty)
assert 0 < jnp.max(jnp.abs(w_penalty[5:])) <= 2 * learning_rate * strength
