"""Sharded training: the prox step is elementwise, so it keeps any NamedSharding."""

# JAX is imported after XLA_FLAGS is set:
# ruff: noqa: E402

# [start devices]
import os

# On a CPU-only machine, simulate 8 devices (set before JAX is imported).
# On GPUs/TPUs, drop it.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# [end devices]

# [start shard]
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optax_l1

n_devices = jax.device_count()  # 8 here
devices = np.array(jax.devices()).reshape(2, n_devices // 2)
mesh = Mesh(devices, ("data", "model"))  # automatic sharding propagation inside jit

# Data parallel over "data"; the hidden dimension of the weights split over "model".
key_x, key_1, key_2 = jax.random.split(jax.random.key(0), 3)
x = jax.device_put(
    jax.random.normal(key_x, (64, 32)), NamedSharding(mesh, P("data", None))
)
y = x[:, :2]
params = {
    "hidden": {
        "kernel": 0.1 * jax.random.normal(key_1, (32, 128)),
        "bias": jnp.zeros(128),
    },
    "out": {"kernel": 0.1 * jax.random.normal(key_2, (128, 2)), "bias": jnp.zeros(2)},
}
specs = {
    "hidden": {"kernel": P(None, "model"), "bias": P("model")},
    "out": {"kernel": P("model", None), "bias": P()},
}
shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)
params = jax.device_put(params, shardings)

tx = optax.chain(
    optax.adam(1e-2),
    optax_l1.l1_prox(0.1, learning_rate=1e-2, mask=optax_l1.kernel_mask),
)
opt_state = tx.init(params)  # optimizer state follows the params' sharding


def loss_fn(params, x, y):
    h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return jnp.mean((h @ params["out"]["kernel"] + params["out"]["bias"] - y) ** 2)


@jax.jit
def train_step(params, opt_state, x, y):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    # sparsity() counts zeros over the global arrays: one number for all devices.
    return params, opt_state, optax_l1.sparsity(params, mask=optax_l1.kernel_mask)


for _ in range(50):
    # Wait for each step: with simulated CPU devices on few cores, several steps in
    # flight can stall in their collectives. On GPUs/TPUs keep dispatch asynchronous.
    params, opt_state, frac_zero = jax.block_until_ready(
        train_step(params, opt_state, x, y)
    )
print("devices:", n_devices, "sparsity:", frac_zero)
# Still NamedSharding(..., P(None, 'model')):
print(params["hidden"]["kernel"].sharding)
# [end shard]

assert n_devices == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
leaves = zip(jax.tree.leaves(params), jax.tree.leaves(shardings), strict=True)
for leaf, sharding in leaves:
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (
        leaf.sharding,
        sharding,
    )
assert 0.0 < float(frac_zero) < 1.0
