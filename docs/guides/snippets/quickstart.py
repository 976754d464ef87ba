"""Quick start: sparse linear regression with an L1 proximal step after SGD."""

# [start quickstart]
import jax
import jax.numpy as jnp
import optax

import optax_l1

key_x, key_noise = jax.random.split(jax.random.key(0))
X = jax.random.normal(key_x, (200, 50))
w_true = jnp.zeros(50).at[:5].set(jnp.array([3.0, -2.0, 1.5, 1.0, -1.0]))
y = X @ w_true + 0.1 * jax.random.normal(key_noise, (200,))

params = {"w": jnp.zeros(50), "b": jnp.zeros(())}
learning_rate = 0.1
tx = optax.chain(
    optax.sgd(learning_rate),
    # Last in the chain; the threshold is learning_rate * strength. No bias penalty.
    optax_l1.l1_prox(
        strength=0.05, learning_rate=learning_rate, mask={"w": True, "b": False}
    ),
)


def loss_fn(params):
    return 0.5 * jnp.mean((X @ params["w"] + params["b"] - y) ** 2)


@jax.jit
def train_step(params, opt_state):
    grads = jax.grad(loss_fn)(params)
    # The prox step needs the params: pass them to tx.update.
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


opt_state = tx.init(params)
for _ in range(300):
    params, opt_state = train_step(params, opt_state)

print(optax_l1.sparsity(params))  # 0.88: 45 of the 51 entries are exactly 0.0
print(optax_l1.sparsity_report(params))  # per leaf, ready to log
# [end quickstart]

assert jnp.all(params["w"][5:] == 0.0)
assert jnp.all(params["w"][:5] != 0.0)
assert jnp.allclose(params["w"][:5], w_true[:5], atol=0.1)
