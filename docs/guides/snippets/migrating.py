"""Migrating: Keras, PyTorch, jaxopt and TensorFlow L1 code, mapped onto optax_l1."""

# [start setup]
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_l1

rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
Y = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
params = {
    "dense": {
        "kernel": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=4), jnp.float32),
    }
}


def data_loss(params):
    # The per-sample mean, as Keras losses and PyTorch's default reduction.
    prediction = X @ params["dense"]["kernel"] + params["dense"]["bias"]
    return jnp.mean((prediction - Y) ** 2)


# [end setup]

# [start keras]
lam, learning_rate = 0.01, 0.1


# Keras: Dense(4, kernel_regularizer=regularizers.l1(l1=lam)) adds lam * sum|kernel|
# to the batch-mean loss. The same objective, with the same lam:
def keras_objective(params):
    return data_loss(params) + optax_l1.l1_penalty(
        params, lam, mask=optax_l1.kernel_mask
    )


# Porting as is (same gradients, same dynamics, no exact zeros):
as_is = optax.chain(
    optax_l1.add_l1_subgradient(lam, mask=optax_l1.kernel_mask),
    optax.sgd(learning_rate),
)
# Switching to the proximal step (same objective, exact zeros):
proximal = optax.chain(
    optax.sgd(learning_rate),
    optax_l1.l1_prox(lam, learning_rate=learning_rate, mask=optax_l1.kernel_mask),
)
# [end keras]


def close(actual, desired):
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6)


g = jax.grad(data_loss)(params)
u_as_is, _ = as_is.update(g, as_is.init(params), params)  # exactly Keras' SGD step
expected = jax.tree.map(lambda x: -learning_rate * x, jax.grad(keras_objective)(params))
jax.tree.map(close, u_as_is, expected)
u_prox, _ = proximal.update(g, proximal.init(params), params)
new = optax.apply_updates(params, u_prox)
z = jax.tree.map(lambda w, gi: w - learning_rate * gi, params, g)
close(
    new["dense"]["kernel"],
    optax_l1.soft_threshold(z["dense"]["kernel"], learning_rate * lam),
)
close(new["dense"]["bias"], z["dense"]["bias"])


# [start pytorch]
# PyTorch: criterion(out, y) + lam * sum(p.abs().sum() for p in model.parameters())
# penalizes every parameter, biases included: mask=None is the literal port.
def torch_objective(params):
    return data_loss(params) + optax_l1.l1_penalty(params, lam)


literal = optax.chain(
    optax.sgd(learning_rate), optax_l1.l1_prox(lam, learning_rate=learning_rate)
)
# [end pytorch]

subgradient = optax.chain(optax_l1.add_l1_subgradient(lam), optax.sgd(learning_rate))
u_torch, _ = subgradient.update(g, subgradient.init(params), params)
expected = jax.tree.map(lambda x: -learning_rate * x, jax.grad(torch_objective)(params))
jax.tree.map(close, u_torch, expected)
u_literal, _ = literal.update(g, literal.init(params), params)
jax.tree.map(
    close,
    optax.apply_updates(params, u_literal),
    optax_l1.soft_threshold(z, learning_rate * lam),  # biases shrink too
)


def jaxopt_prox_lasso(x, l1reg, scaling=1.0):  # jaxopt.prox.prox_lasso, transcribed
    return jax.tree.map(
        lambda v: jnp.sign(v) * jnp.maximum(jnp.abs(v) - l1reg * scaling, 0), x
    )


def jaxopt_prox_elastic_net(
    x, hyperparams, scaling=1.0
):  # jaxopt.prox.prox_elastic_net
    l1reg, l2reg = hyperparams  # penalty l1reg * (|y|_1 + l2reg / 2 * |y|^2)

    def shrink(v):
        return jnp.sign(v) * jnp.maximum(jnp.abs(v) - scaling * l1reg, 0)

    return jax.tree.map(lambda v: shrink(v) / (1 + scaling * l1reg * l2reg), x)


# [start jaxopt]
l1reg, l2reg, scaling, eta = 0.3, 0.5, 0.1, 0.1
# prox_lasso(params, l1reg, scaling)
lasso = optax_l1.soft_threshold(params, l1reg * scaling)
# prox_elastic_net(params, (l1reg, l2reg), scaling): jaxopt's L2 term is times l1reg
enet = optax_l1.elastic_net_threshold(params, scaling * l1reg, scaling * l1reg * l2reg)
# ProximalGradient(fun, prox=prox_lasso, stepsize=eta, acceleration=False) with
# hyperparams_prox=l1reg, one step per tx.update:
ista = optax.chain(optax.sgd(eta), optax_l1.l1_prox(l1reg, learning_rate=eta))
# ... and with prox=prox_elastic_net, hyperparams_prox=(l1reg, l2reg):
ista_enet = optax.chain(
    optax.sgd(eta), optax_l1.l1_prox(l1reg, learning_rate=eta, l2=l1reg * l2reg)
)
# [end jaxopt]

jax.tree.map(close, lasso, jaxopt_prox_lasso(params, l1reg, scaling))
jax.tree.map(close, enet, jaxopt_prox_elastic_net(params, (l1reg, l2reg), scaling))


def run(tx, steps=5):
    p, state = params, tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(jax.grad(data_loss)(p), state, p)
        p = optax.apply_updates(p, updates)
    return p


def run_reference(step_fn, steps=5):
    p = params
    for _ in range(steps):
        p = step_fn(p, jax.grad(data_loss)(p))
    return p


ref = run_reference(
    lambda p, g: jaxopt_prox_lasso(
        jax.tree.map(lambda w, gi: w - eta * gi, p, g), l1reg, eta
    )
)
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), run(ista), ref)
ref = run_reference(
    lambda p, g: jaxopt_prox_elastic_net(
        jax.tree.map(lambda w, gi: w - eta * gi, p, g), (l1reg, l2reg), eta
    )
)
jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), run(ista_enet), ref
)

# [start tf]
a, l1, l2 = 0.1, 0.5, 0.01
# tf.compat.v1.train.ProximalGradientDescentOptimizer(
#     a, l1_regularization_strength=l1, l2_regularization_strength=l2)
pgd = optax.chain(optax.sgd(a), optax_l1.l1_prox(l1, learning_rate=a, l2=l2))
# tf.compat.v1.train.ProximalAdagradOptimizer(
#     a, initial_accumulator_value=0.1, l1_regularization_strength=l1,
#     l2_regularization_strength=l2)
adagrad = optax_l1.proximal_adagrad(
    a, strength=l1, l2=l2, initial_accumulator_value=0.1
)
# tf.compat.v1.train.FtrlOptimizer(  (tf.keras.optimizers.Ftrl takes the same)
#     a, learning_rate_power=-0.5, initial_accumulator_value=0.1,
#     l1_regularization_strength=l1, l2_regularization_strength=l2,
#     l2_shrinkage_regularization_strength=0.02, beta=0.5)
ftrl = optax_l1.ftrl(
    a,
    strength=l1,
    l2=l2,
    l2_shrinkage=0.02,
    learning_rate_power=-0.5,
    initial_accumulator_value=0.1,
    beta=0.5,
)
# [end tf]


def tf_shrink(v, eta):  # the TF kernels' proximal step, elementwise, in float64
    return np.sign(v) * np.maximum(np.abs(v) - eta * l1, 0) / (1 + eta * l2)


def tf_pgd():
    return lambda w, g: tf_shrink(w - a * g, a)


def tf_adagrad(acc0=0.1):
    acc = {}

    def step(w, g):
        acc[w.shape] = acc.get(w.shape, acc0) + g**2
        eta = a / np.sqrt(acc[w.shape])
        return tf_shrink(w - eta * g, eta)

    return step


def tf_ftrl(n0=0.1, shrinkage=0.02, beta=0.5, power=0.5):
    n, z = {}, {}

    def step(w, g):
        n_old, z_old = n.get(w.shape, n0), z.get(w.shape, 0.0)
        n[w.shape] = n_old + g**2
        sigma = (n[w.shape] ** power - n_old**power) / a
        z[w.shape] = z_old + g + 2 * shrinkage * w - sigma * w
        quadratic = (n[w.shape] ** power + beta) / a + 2 * l2
        zi = z[w.shape]
        return np.where(np.abs(zi) <= l1, 0.0, (np.sign(zi) * l1 - zi) / quadratic)

    return step


def run_leafwise(
    make_step, steps=5
):  # leaves have distinct shapes: state keyed by shape
    step, p = make_step(), jax.tree.map(lambda w: np.asarray(w, np.float64), params)
    for _ in range(steps):
        g = jax.tree.map(lambda w: np.asarray(w, np.float64), jax.grad(data_loss)(p))
        p = jax.tree.map(step, p, g)
    return p


for tx, make_step in ((pgd, tf_pgd), (adagrad, tf_adagrad), (ftrl, tf_ftrl)):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
        run(tx),
        run_leafwise(make_step),
    )
print("all mappings agree")
for tx in (pgd, adagrad, ftrl):  # the comparisons above include exact zeros
    assert float(optax_l1.sparsity(run(tx))) > 0.1
