"""Tests for `optax_l1.drop_latent`: once the ramp is over (the support frozen), a
sparsity_target without its latent copy takes the same steps (to rounding) as with it and
adds no full-size temporary; dropped earlier (or with hold="track"), its regularized updates
are NaN; nested states; errors; one retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1

RAMP, BEGIN, STEPS = 20, 4, 40
MASK = {"w": True, "v": True, "b": False}


def _params(dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 3)
    shapes = {"w": (24, 16), "v": (40,), "b": (16,)}
    return {
        k: jax.random.normal(key, s).astype(dtype)
        for key, (k, s) in zip(keys, shapes.items(), strict=True)
    }


def _grads(params, t):
    """A gradient that changes every step (a quadratic pull to a moving goal)."""
    key = jax.random.fold_in(jax.random.key(1), t)
    return jax.tree.map(lambda p: p.astype(jnp.float32) - jax.random.normal(key, p.shape), params)


STOP = BEGIN + RAMP + 1  # the first count after the ramp's last search: the support frozen


def _train(tx, drop_at=None, dtype=jnp.float32, steps=STEPS):
    params = _params(dtype)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(steps):
        if t == drop_at:
            state = optax_l1.drop_latent(state)
        updates, state = step(_grads(params, t), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _target(target=0.8, **kw):
    return optax_l1.sparsity_target(target, ramp_steps=RAMP, begin_step=BEGIN, mask=MASK, **kw)


def _adam(**kw):
    return lambda: optax.chain(optax.adam(0.05), _target(**kw))


CASES = {  # name: (transform, params dtype)
    "chain-adamw": (lambda: optax.chain(optax.adamw(0.05), _target()), jnp.float32),
    "soft": (_adam(shrink="soft"), jnp.float32),
    "bf16-params": (_adam(), jnp.bfloat16),
    "optimizer=adam": (lambda: _target(optimizer=optax.adam(0.05)), jnp.float32),
    "until-0.25": (_adam(latent_until=0.25), jnp.float32),
    "whole-ramp": (_adam(latent_until=1.0), jnp.float32),
    "update_every": (_adam(update_every=3), jnp.float32),
    "blocks": (_adam(structure=optax_l1.Blocks(4, axis=0)), jnp.float32),
    "n_of_m": (_adam(target=0.5, allocation=optax_l1.Blocks(4, axis=0)), jnp.float32),
}


@pytest.mark.parametrize("case", CASES)
def test_dropping_the_copy_after_latent_until_takes_the_same_steps(case):
    make, dtype = CASES[case]
    kept, kept_state = _train(make(), dtype=dtype)
    dropped, dropped_state = _train(make(), drop_at=STOP, dtype=dtype)
    for k in kept:
        a, b = np.asarray(kept[k], np.float32), np.asarray(dropped[k], np.float32)
        assert np.all(np.isfinite(b)), k
        np.testing.assert_array_equal(a == 0, b == 0, err_msg=k)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=k)
    target = [s for s in jax.tree.leaves(dropped_state, is_leaf=_is_target) if _is_target(s)]
    assert target[0].latent is None  # stays dropped: the jitted step's tree is stable
    kept_target = [s for s in jax.tree.leaves(kept_state, is_leaf=_is_target) if _is_target(s)]
    assert kept_target[0].latent is not None
    assert float(kept_target[0].sparsity) == pytest.approx(float(target[0].sparsity))


def _is_target(x):
    return isinstance(x, optax_l1.SparsityTargetState)


@pytest.mark.parametrize(
    "hold, drop_at", [("support", STOP - 1), ("support", 0), ("track", STOP + 5)]
)
def test_a_copy_dropped_before_the_support_froze_makes_the_update_nan(hold, drop_at):
    tx = optax.chain(optax.adam(0.05), _target(hold=hold))
    params, _ = _train(tx, drop_at=drop_at, steps=drop_at + 1)
    assert np.all(np.isnan(np.asarray(params["w"]))) and np.all(np.isnan(np.asarray(params["v"])))
    assert np.all(np.isfinite(np.asarray(params["b"])))  # not regularized: untouched


@pytest.mark.parametrize("shrink", ["hard", "soft"])
def test_a_dropped_copy_leaves_no_full_size_temporary(shrink):
    """The frozen step without the copy: no params-sized buffer (the never-run search reads
    the params, not z = p + u), like latent=False's."""
    params = {"w": jnp.ones((2048, 2048)), "v": jnp.ones((40,)), "b": jnp.ones((16,))}
    tx = optax.chain(optax.adam(0.05), _target(shrink=shrink))
    state = optax_l1.drop_latent(tx.init(params))

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 2048 * 2048 * 4 // 4


@pytest.mark.parametrize("mask", [None, lambda p: False])
def test_a_target_regularizing_nothing_logs_no_nan(mask):
    # No regularized leaf: no copy at init, which is not a dropped one.
    params = jnp.arange(4) if mask is None else jnp.ones(4)
    tx = optax_l1.sparsity_target(0.5, ramp_steps=10, mask=mask)
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(jnp.zeros_like(params), state, params)
    assert float(state.threshold) == 0.0


def test_drop_latent_finds_the_states_inside_wrappers():
    inner = optax.inject_hyperparams(optax_l1.sparsity_target)(
        target=0.8, ramp_steps=RAMP, begin_step=BEGIN, mask=MASK
    )
    tx = optax.MultiSteps(optax.chain(optax.adam(0.05), inner), every_k_schedule=1)
    state = optax_l1.drop_latent(tx.init(_params()))
    found = [s for s in jax.tree.leaves(state, is_leaf=_is_target) if _is_target(s)]
    assert len(found) == 1 and found[0].latent is None


def test_drop_latent_without_a_copy_raises():
    tx = optax.chain(optax.adam(0.05), _target(latent=False))
    with pytest.raises(ValueError, match="opt_state.*no sparsity_target state with a latent"):
        optax_l1.drop_latent(tx.init(_params()))
    kept = optax.chain(optax.adam(0.05), _target())
    with pytest.raises(ValueError, match="not dropped already"):  # twice
        optax_l1.drop_latent(optax_l1.drop_latent(kept.init(_params())))
    with pytest.raises(ValueError, match="opt_state"):
        optax_l1.drop_latent(optax.adam(0.1).init(_params()))


def test_a_jitted_step_compiles_once_more_after_the_drop():
    tx = optax.chain(optax.adam(0.05), _target())
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = _params()
    state = tx.init(params)
    for t in range(STEPS):
        if t == STOP:
            state = optax_l1.drop_latent(state)
        params, state = step(params, state, _grads(params, t))
    assert len(traces) == 2
