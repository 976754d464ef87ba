"""Faults: a bad hyperparameter or a NaN shows (an error, NaN), never a wrong result."""

# [start inject]
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_l1

tx = optax.inject_hyperparams(optax_l1.l1_prox)(0.1, learning_rate=0.1)
params = jnp.array([1.0, -0.5, 0.05])
state = tx.init(params)
state.hyperparams["strength"] = jnp.float32(-0.1)  # changed after construction

try:
    tx.update(jnp.zeros(3), state, params)  # eager: the value is known, so it raises
    raise AssertionError("not reached")
except ValueError as e:
    print(e)  # `strength` must be finite and >= 0, got Array(-0.1, dtype=float32)

updates, _ = jax.jit(tx.update)(jnp.zeros(3), state, params)
print(updates)  # [nan nan nan]: inside jit the update is NaN

# The NaN reaches the params, where a loss or a check shows it; to keep the last good
# params, test the update before applying it (optax.apply_if_finite tests only its
# *input* gradients, so it cannot see a NaN that a transform produces).
finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(updates))
params = optax.apply_updates(params, updates) if finite else params
print(params)  # [ 1.  -0.5   0.05]: the bad step was not applied
# [end inject]
assert not finite and np.array_equal(np.asarray(params), np.float32([1.0, -0.5, 0.05]))

# [start group]
tx = optax.chain(
    optax.adam(0.1), optax_l1.group_l1_prox(0.5, learning_rate=0.1, axis=0)
)
w = jnp.ones((3, 4))
g = jnp.ones((3, 4)).at[1, 2].set(jnp.nan)  # one NaN gradient entry
u, _ = tx.update(g, tx.init(w), w)
# [nan nan nan]: the unit with the NaN is NaN, not silently pruned.
print(optax.apply_updates(w, u)[:, 2])
# [end group]
assert np.all(np.isnan(np.asarray(optax.apply_updates(w, u)[:, 2])))
