"""Checkpoints: every transform's state survives an orbax round trip (``StandardCheckpointer``
with an ``eval_shape`` target) inside ``optax.chain``, ``optax.inject_hyperparams`` and
``optax.MultiSteps``, and training resumes bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1

ocp = pytest.importorskip("orbax.checkpoint")

PARAMS = {
    "dense": {"kernel": jnp.linspace(-1.0, 1.0, 24).reshape(4, 6), "bias": jnp.zeros(6)},
    "step": jnp.zeros([], jnp.int32),  # an integer leaf rides along untouched
}

TRANSFORMS = {
    "adamw + l1_prox": lambda: optax.chain(
        optax.adamw(0.05), optax_l1.l1_prox(1.0, learning_rate=0.05, mask=optax_l1.kernel_mask)
    ),
    "group_l1_prox": lambda: optax.chain(
        optax.adam(0.05), optax_l1.group_l1_prox(10.0, learning_rate=0.05, axis=0)
    ),
    "proximal_adam": lambda: optax_l1.proximal_adam(0.05, strength=0.5),
    "with_preconditioned_l1": lambda: optax_l1.with_preconditioned_l1(
        optax.adam(0.05),
        strength=0.5,
        learning_rate=0.05,
        eps=1e-8,
        eps_root=0.0,
        bias_correction_decay=0.999,
        unseen="shrink",
    ),
    "proximal_adagrad": lambda: optax_l1.proximal_adagrad(0.05, strength=0.5),
    "ftrl": lambda: optax_l1.ftrl(0.05, strength=5.0),
    "sparsity_target": lambda: optax.chain(
        optax.adam(0.05),
        optax_l1.sparsity_target(0.5, ramp_steps=4, mask=optax_l1.kernel_mask),
    ),
    "sparsity_target(optimizer=adam)": lambda: optax_l1.sparsity_target(
        0.5, ramp_steps=4, optimizer=optax.adam(0.05), mask=optax_l1.kernel_mask
    ),
    "inject_hyperparams(l1_prox)": lambda: optax.chain(
        optax.adam(0.05),
        optax.inject_hyperparams(optax_l1.l1_prox)(1.0, learning_rate=0.05),
    ),
    "MultiSteps(adam + l1_prox)": lambda: optax.MultiSteps(
        optax.chain(optax.adam(0.05), optax_l1.l1_prox(1.0, learning_rate=0.05)), 2
    ),
}


def _grads(params, i):
    return jax.tree.map(
        lambda p: (
            jnp.cos(3.0 * p + i).astype(p.dtype)
            if jnp.issubdtype(p.dtype, jnp.floating)
            else jnp.zeros_like(p)
        ),
        params,
    )


def _train(tx, params, state, steps, first):
    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    for i in range(first, first + steps):
        params, state = step(params, state, _grads(params, i))
    return params, state


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_state_round_trips_through_orbax_and_training_resumes_bit_for_bit(name, tmp_path):
    tx = TRANSFORMS[name]()
    params, state = _train(tx, PARAMS, tx.init(PARAMS), 3, 0)
    path = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, {"params": params, "opt_state": state})
    target = jax.eval_shape(lambda: {"params": params, "opt_state": state})
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(path, target)
    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(state)
    saved = {"params": params, "opt_state": state}
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    want = _train(tx, params, state, 3, 3)
    got = _train(tx, restored["params"], restored["opt_state"], 3, 3)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(optax_l1.sparsity(got[0], mask=optax_l1.kernel_mask)) > 0  # zeros were made
