"""Structured sparsity: group lasso switches off whole input features, output units."""

# [start axis]
import jax
import jax.numpy as jnp
import optax

import optax_l1

# A Dense kernel, shape (in=2, out=3).
kernel = jnp.array([[3.0, 0.1, 0.0], [4.0, 0.1, 0.0]])

# axis=0 reduces over inputs: one group per output unit (a column).
# Column norms 5, 0.14, 0.
print(optax_l1.group_l1_penalty(kernel, 1.0, axis=0))  # 5.1414
print(optax_l1.group_soft_threshold(kernel, 1.0, axis=0))
# [[2.4 0.  0. ]
#  [3.2 0.  0. ]]    column 0 scaled by 1 - 1/5; the others are switched off

# axis=1 reduces over outputs: one group per input feature (a row).
# Row norms ~3.0, ~4.0.
print(optax_l1.group_soft_threshold(kernel, 3.5, axis=1))
# [[0.     0.     0.    ]
#  [0.501  0.0125 0.    ]]    input 0 is off; input 1 is scaled by 1 - 3.5/4.001
# [end axis]

assert jnp.allclose(optax_l1.group_l1_penalty(kernel, 1.0, axis=0), 5.0 + 0.1 * 2**0.5)
assert jnp.allclose(
    optax_l1.group_soft_threshold(kernel, 1.0, axis=0),
    jnp.array([[2.4, 0.0, 0.0], [3.2, 0.0, 0.0]]),
)
row = optax_l1.group_soft_threshold(kernel, 3.5, axis=1)
assert jnp.all(row[0] == 0.0) and jnp.all(row[1, :2] > 0.0)

# [start conv]
# A conv kernel in Flax's layout (height, width, in, out): axis=(0, 1, 2) groups each
# output channel (filter pruning); axis=(0, 1, 3) groups each input channel.
conv = jax.random.normal(jax.random.key(0), (3, 3, 8, 16))
pruned = optax_l1.group_soft_threshold(conv, 9.0, axis=(0, 1, 2))
print(jnp.all(pruned == 0, axis=(0, 1, 2)))  # True for the filters switched off
# [end conv]

norms = jnp.sqrt(jnp.sum(conv**2, axis=(0, 1, 2)))
assert jnp.array_equal(jnp.all(pruned == 0, axis=(0, 1, 2)), norms <= 9.0)

# [start train]
# Multi-output regression where only 4 of 20 input features matter.
key_x, key_w = jax.random.split(jax.random.key(1))
X = jax.random.normal(key_x, (300, 20))
W_true = jnp.zeros((20, 3)).at[:4].set(jax.random.normal(key_w, (4, 3)))
Y = X @ W_true

params = {"kernel": jnp.zeros((20, 3)), "bias": jnp.zeros(3)}
learning_rate = 0.1
tx = optax.chain(
    optax.sgd(learning_rate),
    # One group per input feature (axis=1 of the (in, out) kernel); biases are skipped.
    optax_l1.group_l1_prox(
        0.05, learning_rate=learning_rate, axis=1, mask={"kernel": True, "bias": False}
    ),
)


def loss_fn(params):
    return 0.5 * jnp.mean(
        jnp.sum((X @ params["kernel"] + params["bias"] - Y) ** 2, axis=1)
    )


@jax.jit
def train_step(params, opt_state):
    updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state


opt_state = tx.init(params)
for _ in range(300):
    params, opt_state = train_step(params, opt_state)
selected = jnp.any(params["kernel"] != 0, axis=1)
print("selected input features:", jnp.flatnonzero(selected))  # [0 1 2 3]
objective = loss_fn(params) + optax_l1.group_l1_penalty(params["kernel"], 0.05, axis=1)
# [end train]

assert jnp.array_equal(jnp.flatnonzero(selected), jnp.arange(4))
assert jnp.isfinite(objective)

# [start sparse group]
lr = 0.1
tx = optax.chain(
    optax.sgd(lr),
    optax_l1.l1_prox(0.5, learning_rate=lr),  # elementwise first ...
    optax_l1.group_l1_prox(2.0, learning_rate=lr, axis=1),  # ... then whole rows
)
w = {"kernel": jax.random.normal(jax.random.key(2), (6, 4))}
grads = {"kernel": jnp.ones((6, 4))}
updates, _ = tx.update(grads, tx.init(w), w)
new_w = optax.apply_updates(w, updates)
# [end sparse group]

z = w["kernel"] - lr * grads["kernel"]
expected = optax_l1.group_soft_threshold(
    optax_l1.soft_threshold(z, lr * 0.5), lr * 2.0, axis=1
)
assert jnp.allclose(new_w["kernel"], expected, atol=1e-6)
