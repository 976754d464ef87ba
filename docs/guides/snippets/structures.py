"""Structures: what is zeroed together; compaction: zeros made into a smaller model."""

# Flax is imported in the section of the guide that shows it:
# ruff: noqa: E402

# [start kinds]
import jax
import jax.numpy as jnp
import optax

import optax_l1

kernel = jax.random.normal(jax.random.key(0), (16, 12))  # a Dense kernel (in, out)

units = optax_l1.Groups(0)  # one group per output unit (column)
blocks = optax_l1.Blocks(4, axis=0)  # blocks of 4 consecutive inputs
heads = optax_l1.Heads(3, axis=1)  # 3 heads of 4 columns: a query projection

for structure in (units, blocks, heads):
    out = optax_l1.group_soft_threshold(kernel, 3.0, structure=structure)
    print(structure, structure.layout(kernel.shape).groups, float(jnp.mean(out == 0)))
# [end kinds]

assert units.layout(kernel.shape).groups == (12,)
assert blocks.layout(kernel.shape).groups == (4, 12)
assert heads.layout(kernel.shape).groups == (3,)

# [start coupled]
# Hidden unit j of an MLP: column j of kernel 1, bias j, row j of kernel 2. One label
# couples them; the prox, the penalty and sparsity_target treat each unit as one group.
unit = {
    "dense1": {
        "kernel": optax_l1.Groups(0, couple="h"),
        "bias": optax_l1.Elements(couple="h"),
    },
    "dense2": {"kernel": optax_l1.Groups(1, couple="h"), "bias": None},  # None: alone
}
key1, key2 = jax.random.split(jax.random.key(1))
params = {
    "dense1": {"kernel": jax.random.normal(key1, (8, 32)), "bias": jnp.zeros(32)},
    "dense2": {"kernel": jax.random.normal(key2, (32, 4)), "bias": jnp.zeros(4)},
}
tx = optax.chain(
    optax.adamw(1e-3),
    optax_l1.sparsity_target(0.75, ramp_steps=10, structure=unit),  # 3/4 units off
)


@jax.jit
def step(params, state):
    grads = jax.tree.map(jnp.zeros_like, params)  # your loss's gradient here
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state


state = tx.init(params)
for _ in range(11):
    params, state = step(params, state)
print(optax_l1.sparsity_report(params, structure=unit)["couple:h"])  # 0.75
# [end coupled]

assert float(optax_l1.sparsity_report(params, structure=unit)["couple:h"]) == 0.75

# [start compact]
small, kept = optax_l1.compact(params, unit)
print(kept["h"].size, small["dense1"]["kernel"].shape, small["dense2"]["kernel"].shape)
# 8 (8, 8) (8, 4)


def mlp(p, x):
    h = jax.nn.relu(x @ p["dense1"]["kernel"] + p["dense1"]["bias"])
    return h @ p["dense2"]["kernel"] + p["dense2"]["bias"]


x = jax.random.normal(jax.random.key(2), (5, 8))
print(jnp.max(jnp.abs(mlp(params, x) - mlp(small, x))))  # ~2e-6: float rounding only
# [end compact]

assert small["dense1"]["kernel"].shape == (8, 8)
assert jnp.allclose(mlp(params, x), mlp(small, x), atol=1e-5)

# [start fold]
# A unit whose incoming weights are zero but whose bias is not (trained without the bias
# in the group, say) still outputs relu(bias_j): it is not zero, so compact keeps it.
# Fold moves relu(bias_j) * kernel2[j] into the next bias first, and then it goes.
params["dense1"]["bias"] = params["dense1"]["bias"] + 0.5  # every unit now has a bias
fold = optax_l1.Fold(
    "h",
    bias="dense1/bias",
    weights="dense2/kernel",
    next_bias="dense2/bias",
    activation=jax.nn.relu,
)
print(optax_l1.compact(params, unit).kept["h"].size)  # 32: nothing is zero everywhere
small, kept = optax_l1.compact(params, unit, fold=[fold])
print(kept["h"].size, jnp.max(jnp.abs(mlp(params, x) - mlp(small, x))))  # 8, ~1e-6
# [end fold]

assert kept["h"].size == 8 and optax_l1.compact(params, unit).kept["h"].size == 32
assert jnp.allclose(mlp(params, x), mlp(small, x), atol=1e-5)

# [start nnx]
# Flax NNX keeps widths in the module: compact its params, build the module at the
# new width (abstractly: nothing is initialized) and move the small arrays into it.
from flax import nnx


class MLP(nnx.Module):
    def __init__(self, width, *, rngs):
        self.dense1 = nnx.Linear(8, width, rngs=rngs)
        self.dense2 = nnx.Linear(width, 4, rngs=rngs)

    def __call__(self, x):
        return self.dense2(jax.nn.relu(self.dense1(x)))


model = MLP(32, rngs=nnx.Rngs(0))
nnx.update(model, params)  # the trained params from above
state = nnx.to_pure_dict(nnx.state(model, nnx.Param))  # {"dense1": {"kernel": ...
compacted = optax_l1.compact(state, unit, fold=[fold])
width = compacted.kept["h"].size
small_model = compacted.into(nnx.eval_shape(lambda: MLP(width, rngs=nnx.Rngs(0))))
print(width, jnp.max(jnp.abs(model(x) - small_model(x))))  # 8, ~1e-6
# [end nnx]

assert small_model.dense1.kernel[...].shape == (8, 8)
assert jnp.allclose(model(x), small_model(x), atol=1e-5)

# [start n_of_m]
# N:M from dense training: every block of 4 along the reduction axis ends with 2
# non-zeros (dense, then 3:4, then 2:4 along the ramp).
w = {"kernel": jax.random.normal(jax.random.key(3), (16, 8))}
tx = optax.chain(
    optax.adam(1e-3),
    optax_l1.sparsity_target(0.5, ramp_steps=10, allocation=optax_l1.Blocks(4, axis=0)),
)
state = tx.init(w)
step = jax.jit(lambda w, state: tx.update(jax.tree.map(jnp.zeros_like, w), state, w))
for _ in range(11):
    updates, state = step(w, state)
    w = optax.apply_updates(w, updates)
print(optax_l1.sparsity_report(w, n_of_m=(2, 4, 0))["kernel:n_of_m"])  # 1.0: all 2:4

packed = optax_l1.pack_n_of_m(w["kernel"], 2, 4)  # values + 1-byte positions
y = optax_l1.n_of_m_matmul(jnp.ones((3, 16)), packed)  # never forms the dense kernel
print(optax_l1.nbytes(packed), "bytes, not", optax_l1.nbytes(w["kernel"]))  # 320, 512
# [end n_of_m]

assert float(optax_l1.sparsity_report(w, n_of_m=(2, 4, 0))["kernel:n_of_m"]) == 1.0
assert jnp.allclose(y, jnp.ones((3, 16)) @ w["kernel"], atol=1e-5)
assert optax_l1.nbytes(packed) == 320
