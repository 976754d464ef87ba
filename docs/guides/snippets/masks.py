"""Masks: regularize kernels, not biases or norm scales, in Flax linen, NNX, Equinox."""

# Each framework is imported in the section of the guide that shows it:
# ruff: noqa: E402

# [start plain]
import jax
import jax.numpy as jnp
import optax

import optax_l1

params = {
    "Dense_0": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)},
    "LayerNorm_0": {"scale": jnp.ones(8), "bias": jnp.zeros(8)},
    "head": {"kernel": jnp.ones((8, 1)), "bias": jnp.zeros(1)},
}
print(optax_l1.kernel_mask(params))
# {'Dense_0': {'bias': False, 'kernel': True},
#  'LayerNorm_0': {'bias': False, 'scale': False},
#  'head': {'bias': False, 'kernel': True}}
print(optax_l1.path_mask(params, include=r"kernel$", exclude=r"^head/"))
# only Dense_0/kernel: keep the output layer dense
# [end plain]

assert optax_l1.kernel_mask(params) == {
    "Dense_0": {"bias": False, "kernel": True},
    "LayerNorm_0": {"bias": False, "scale": False},
    "head": {"bias": False, "kernel": True},
}
assert optax_l1.path_mask(params, include=r"kernel$", exclude=r"^head/") == {
    "Dense_0": {"bias": False, "kernel": True},
    "LayerNorm_0": {"bias": False, "scale": False},
    "head": {"bias": False, "kernel": False},
}

# [start linen]
import flax.linen as nn
from flax.training import train_state

x = jax.random.normal(jax.random.key(0), (32, 4))  # toy data for the three frameworks
y = x[:, :1]


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm()(nn.Dense(16)(x)))
        return nn.Dense(1)(x)


model = MLP()
variables = model.init(jax.random.key(0), x)
tx = optax.chain(
    optax.adam(1e-2),
    # A callable mask is applied to the params at each update: nothing to keep in sync.
    optax_l1.l1_prox(0.3, learning_rate=1e-2, mask=optax_l1.kernel_mask),
)
state = train_state.TrainState.create(
    apply_fn=model.apply, params=variables["params"], tx=tx
)


@jax.jit
def linen_step(state):
    def loss_fn(params):
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    # apply_gradients passes the params to tx.update, as the prox step needs.
    return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))


for _ in range(200):
    state = linen_step(state)
print(optax_l1.sparsity_report(state.params, mask=optax_l1.kernel_mask))
# [end linen]

linen_mask = optax_l1.kernel_mask(state.params)
assert linen_mask["Dense_0"]["kernel"] and not linen_mask["Dense_0"]["bias"]
assert not linen_mask["LayerNorm_0"]["scale"]
assert float(optax_l1.sparsity(state.params["Dense_0"]["kernel"])) > 0.0
assert float(optax_l1.sparsity(state.params["Dense_0"]["bias"])) == 0.0

# [start nnx]
from flax import nnx


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(4, 16, rngs=rngs)
        self.norm = nnx.LayerNorm(16, rngs=rngs)
        self.out = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.norm(self.hidden(x))))


model = NnxMLP(nnx.Rngs(0))
tx = optax.chain(
    optax.adam(1e-2),
    optax_l1.l1_prox(0.3, learning_rate=1e-2, mask=optax_l1.kernel_mask),
)
# nnx.Optimizer hands tx the nnx.State of the parameters.
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def nnx_step(model, optimizer):
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)


for _ in range(200):
    nnx_step(model, optimizer)
params = nnx.state(model, nnx.Param)
# kernel_mask(params) is an nnx.State of bools: True for hidden/kernel, out/kernel.
print(optax_l1.sparsity_report(params, mask=optax_l1.kernel_mask))
# [end nnx]

assert float(optax_l1.sparsity(model.hidden.kernel[...])) > 0.0
assert float(optax_l1.sparsity(model.hidden.bias[...])) == 0.0
assert float(optax_l1.sparsity(model.norm.scale[...])) == 0.0
assert set(optax_l1.sparsity_report(params, mask=optax_l1.kernel_mask)) == {
    "hidden/kernel",
    "out/kernel",
    "total",
}

# [start equinox]
import equinox as eqx

model = eqx.nn.MLP(4, 1, width_size=16, depth=2, key=jax.random.key(0))


def first_layer(params):
    # Only the first layer's weight matrix (input feature selection), by its path.
    return optax_l1.path_mask(params, include=r"^layers/0/weight$")


tx = optax.chain(
    optax.adam(1e-2), optax_l1.l1_prox(0.3, learning_rate=1e-2, mask=first_layer)
)
opt_state = tx.init(eqx.filter(model, eqx.is_array))


@eqx.filter_jit
def eqx_step(model, opt_state):
    grads = eqx.filter_grad(lambda m: jnp.mean((jax.vmap(m)(x) - y) ** 2))(model)
    params = eqx.filter(model, eqx.is_array)  # the prox needs the current params
    updates, opt_state = tx.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state


for _ in range(200):
    model, opt_state = eqx_step(model, opt_state)
print(optax_l1.sparsity_report(eqx.filter(model, eqx.is_array)))
# layers/0/weight has exact zeros; other weights and biases do not.
# [end equinox]

report = optax_l1.sparsity_report(eqx.filter(model, eqx.is_array))
assert float(report["layers/0/weight"]) > 0.0
assert float(report["layers/1/weight"]) == 0.0
assert float(report["layers/0/bias"]) == 0.0
assert optax_l1.kernel_mask(eqx.filter(model, eqx.is_array)).layers[0].weight is True
