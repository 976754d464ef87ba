"""Tests for `optax_l1.freeze_support`: a fixed set of zeros and unshrunk survivors after
the freeze, the wrapped step before it, for any proximal step placed last."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1


def _problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 20)), jnp.float32)
    w_true = jnp.asarray(rng.standard_normal((20, 3)) * (rng.random((20, 3)) < 0.3), jnp.float32)
    y = x @ w_true
    params = {"w": jnp.asarray(rng.standard_normal((20, 3)), jnp.float32), "b": jnp.zeros(3)}

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"][None, :] - y) ** 2)

    return params, loss


MASK = {"w": True, "b": False}
PROX = {
    "l1_prox": lambda lr: optax_l1.l1_prox(0.3, learning_rate=lr, mask=MASK),
    "group_l1_prox": lambda lr: optax_l1.group_l1_prox(1.0, learning_rate=lr, axis=1, mask=MASK),
    "proximal": lambda lr: optax_l1.proximal(
        lambda z, step: optax_l1.soft_threshold(z, 0.3 * step), learning_rate=lr, mask=MASK
    ),
}


@pytest.mark.parametrize("name", sorted(PROX))
def test_after_the_freeze_zeros_stay_and_survivors_take_the_optimizer_step(name):
    # A warmup-cosine schedule: without the freeze the threshold decays and zeros come back.
    lr = optax.warmup_cosine_decay_schedule(0.0, 0.05, 10, 200)
    params, loss = _problem()
    begin = 120
    tx = optax.chain(optax.adam(lr), optax_l1.freeze_support(PROX[name](lr), begin_step=begin))
    adam = optax.adam(lr)
    state, adam_state = tx.init(params), adam.init(params)
    zeros_at_begin = None
    for t in range(200):
        grads = jax.grad(loss)(params)
        adam_u, adam_state = adam.update(grads, adam_state, params)
        u, state = tx.update(grads, state, params)
        if t >= begin:
            w = np.asarray(params["w"])
            if zeros_at_begin is None:
                zeros_at_begin = w == 0
                assert zeros_at_begin.mean() > 0.1  # the run made zeros to freeze
            np.testing.assert_array_equal(w == 0, zeros_at_begin)  # the set is fixed
            uw = np.asarray(u["w"])
            np.testing.assert_array_equal(uw[w == 0], 0.0)
            np.testing.assert_array_equal(uw[w != 0], np.asarray(adam_u["w"])[w != 0])
        params = optax.apply_updates(params, u)
    np.testing.assert_array_equal(np.asarray(params["w"]) == 0, zeros_at_begin)


def test_before_the_freeze_it_is_the_wrapped_step_bit_for_bit():
    params, loss = _problem()
    lr = 0.05
    plain = optax.chain(optax.adam(lr), PROX["l1_prox"](lr))
    frozen = optax.chain(
        optax.adam(lr), optax_l1.freeze_support(PROX["l1_prox"](lr), begin_step=50)
    )
    sp, sf, pp, pf = plain.init(params), frozen.init(params), params, params
    for _ in range(50):
        up, sp = plain.update(jax.grad(loss)(pp), sp, pp)
        uf, sf = frozen.update(jax.grad(loss)(pf), sf, pf)
        pp, pf = optax.apply_updates(pp, up), optax.apply_updates(pf, uf)
    for k in pp:
        np.testing.assert_array_equal(pp[k], pf[k])
    assert int(sf[1].count) == 50 and int(sf[1].inner_state.count) == 50


def test_freeze_support_refuses_transforms_that_contain_their_optimizer():
    params = {"w": jnp.ones(3)}
    for tx in (
        optax_l1.proximal_adam(0.1, strength=0.1),
        optax_l1.ftrl(0.1, strength=0.1),
        optax_l1.sparsity_target(0.5, ramp_steps=3, optimizer=optax.adam(0.1)),
        # The optimizer inside a chain or a wrapper: after the freeze the gradient itself
        # was applied (gradient ascent, found by a probe: [0.05, 1, -2] went to [0, 2.8, 0]).
        optax_l1.chain_l1_prox(optax.sgd, learning_rate=0.1, strength=1.0),
        optax.chain(optax.sgd(0.1), optax_l1.l1_prox(1.0, learning_rate=0.1)),
        optax.inject_hyperparams(optax_l1.proximal_adam)(learning_rate=0.1, strength=1.0),
        optax.identity(),  # not a proximal step
        optax_l1.add_l1_subgradient(0.1),  # placed before the optimizer: its input is a gradient
    ):
        with pytest.raises(TypeError, match="`freeze_support` wraps the proximal step"):
            optax_l1.freeze_support(tx, begin_step=3).init(params)
    with pytest.raises(ValueError, match="`begin_step` must be"):
        optax_l1.freeze_support(optax_l1.l1_prox(0.1, learning_rate=0.1), begin_step=-1)
    with pytest.raises(TypeError, match="`transform` must be an optax GradientTransformation"):
        optax_l1.freeze_support(lambda u: u, begin_step=3)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda: optax.inject_hyperparams(optax_l1.l1_prox)(strength=1.0, learning_rate=0.1),
        lambda: optax.masked(optax_l1.l1_prox(1.0, learning_rate=0.1), True),
        lambda: optax.chain(optax_l1.l1_prox(1.0, learning_rate=0.1)),
    ],
    ids=["inject_hyperparams", "masked", "chain of the step alone"],
)
def test_the_step_under_a_wrapper_is_frozen_like_the_step(wrap):
    # sgd then the wrapped step: l1 zeroes w[0] at step 0; from step 1 the support is frozen
    # and the survivors take sgd's step unshrunk, as with the step alone (the docstring's).
    def run(step):
        tx = optax.chain(optax.sgd(0.1), optax_l1.freeze_support(step, begin_step=1))
        params = jnp.array([0.05, 1.0, -2.0])
        state = tx.init(params)
        for g in (jnp.zeros(3), jnp.array([-5.0, 1.0, 1.0]), jnp.array([-5.0, 1.0, 1.0])):
            u, state = tx.update(g, state, params)
            params = optax.apply_updates(params, u)
        return params

    expected = run(optax_l1.l1_prox(1.0, learning_rate=0.1))
    np.testing.assert_allclose(expected, [0.0, 0.7, -2.1], rtol=1e-6)
    np.testing.assert_array_equal(run(wrap()), expected)


def test_a_bad_run_time_begin_step_makes_the_update_nan():
    tx = optax.inject_hyperparams(
        lambda begin_step: optax_l1.freeze_support(
            optax_l1.l1_prox(0.1, learning_rate=0.1), begin_step=begin_step
        )
    )(begin_step=2)
    params = jnp.ones(3)
    state = tx.init(params)
    state.hyperparams["begin_step"] = jnp.asarray(-1, jnp.int32)
    u, _ = jax.jit(tx.update)(jnp.ones(3), state, params)
    assert np.all(np.isnan(u))
    # A fractional count (refused at construction) read as the next whole step before.
    for bad in (1.5, np.nan, np.inf, -1.0):
        state.hyperparams["begin_step"] = jnp.asarray(bad, jnp.float32)
        u, _ = jax.jit(tx.update)(jnp.ones(3), state, params)
        assert np.all(np.isnan(u)), bad
    state.hyperparams["begin_step"] = jnp.asarray(2.0, jnp.float32)
    u, _ = jax.jit(tx.update)(jnp.ones(3), state, params)
    assert np.all(np.isfinite(u))


def test_a_begin_step_past_the_int32_count_is_refused():
    prox = optax_l1.l1_prox(0.1, learning_rate=0.1)
    for big in (2**31, 1e10):  # crashed at the first update (an OverflowError naming `y`)
        with pytest.raises(ValueError, match="`begin_step` must be < 2\\*\\*31"):
            optax_l1.freeze_support(prox, begin_step=big)
    tx = optax_l1.freeze_support(prox, begin_step=2**31 - 1)
    u, _ = tx.update(jnp.ones(3), tx.init(jnp.ones(3)), jnp.ones(3))
    assert np.all(np.isfinite(u))


def test_leaves_outside_the_mask_take_the_wrapped_step():
    tx = optax_l1.freeze_support(
        optax_l1.l1_prox(1.0, learning_rate=0.1), begin_step=0, mask={"w": True, "b": False}
    )
    params = {"w": jnp.array([1.0, 0.05]), "b": jnp.array([1.0, 0.05])}
    grads = jax.tree.map(jnp.zeros_like, params)
    u, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, u)
    np.testing.assert_array_equal(new["w"], params["w"])  # frozen from step 0: unshrunk
    np.testing.assert_allclose(new["b"], [0.9, 0.0])  # not frozen: the l1_prox step


def test_begin_step_is_compared_in_integers():
    tx = optax_l1.freeze_support(optax_l1.l1_prox(1.0, learning_rate=0.1), begin_step=2**24 + 1)
    params = jnp.array([1.0])
    state = optax_l1.FreezeSupportState(jnp.asarray(2**24, jnp.int32), tx.init(params).inner_state)
    u, _ = tx.update(jnp.zeros(1), state, params)
    np.testing.assert_allclose(u, [-0.1], rtol=1e-6)  # count 2**24 < 2**24 + 1: not frozen


def _two_frozen_steps(tx, params):
    p, state = params, tx.init(params)
    for g in (jnp.zeros(2), jnp.array([-5.0, 1.0])):
        u, state = jax.jit(tx.update)({k: g for k in params}, state, p)
        p = optax.apply_updates(p, u)
    return p


def test_freeze_support_in_and_around_multi_transform():
    params = {"a": jnp.array([0.05, 1.0]), "b": jnp.array([0.05, 1.0])}
    prox = optax_l1.l1_prox(1.0, learning_rate=0.1)
    both = optax.multi_transform({"x": prox, "y": optax.masked(prox, True)}, {"a": "x", "b": "y"})
    p = _two_frozen_steps(
        optax.chain(optax.sgd(0.1), optax_l1.freeze_support(both, begin_step=1)), params
    )
    for k in p:
        np.testing.assert_allclose(p[k], [0.0, 0.8], rtol=1e-6)  # zeroed, then frozen
    # A part that is not a proximal step: set_to_zero (frozen weights, optax's way) was
    # bypassed after the freeze, and they trained ([1, 2] -> [0.8, 1.8], a probe). The
    # freeze cannot tell identity, set_to_zero or scale apart by their state: all refused;
    # the freeze goes inside the proximal part.
    for other in (optax.identity(), optax.set_to_zero(), optax.scale(2.0), optax.sgd(0.1)):
        mixed = optax.multi_transform({"x": prox, "y": other}, {"a": "x", "b": "y"})
        with pytest.raises(TypeError, match="every part must be a proximal step"):
            optax_l1.freeze_support(mixed, begin_step=1).init(params)
    inside = optax.multi_transform(
        {"x": optax_l1.freeze_support(prox, begin_step=1), "y": optax.set_to_zero()},
        {"a": "x", "b": "y"},
    )
    p = _two_frozen_steps(optax.chain(optax.sgd(0.1), inside), params)
    np.testing.assert_allclose(p["a"], [0.0, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(p["b"], params["b"])  # held by set_to_zero


def test_freeze_support_refuses_apply_if_finite_inside_and_works_inside_it():
    """Inside, a step apply_if_finite rejected was applied after the freeze, and the NaN at
    a zero was dropped ([0, 1] -> [0, 0.9] on a NaN gradient, a probe)."""
    params = {"w": jnp.array([0.0, 1.0])}
    prox = optax_l1.l1_prox(0.5, learning_rate=0.1)
    with pytest.raises(TypeError, match="apply_if_finite goes around the whole chain"):
        optax_l1.freeze_support(optax.apply_if_finite(prox, 5), begin_step=0).init(params)
    tx = optax.apply_if_finite(
        optax.chain(optax.sgd(1.0), optax_l1.freeze_support(prox, begin_step=0)), 5
    )
    u, _ = tx.update({"w": jnp.array([jnp.nan, 0.1])}, tx.init(params), params)
    np.testing.assert_array_equal(optax.apply_updates(params, u)["w"], [0.0, 1.0])  # skipped


def test_a_nan_update_at_a_frozen_or_held_zero_stays_nan():
    """The frozen and held supports wrote 0 where the weight is 0, NaN update or not."""
    g = jnp.array([jnp.nan, 0.1])
    tx = optax.chain(
        optax.sgd(1.0),
        optax_l1.freeze_support(optax_l1.l1_prox(0.5, learning_rate=0.1), begin_step=0),
    )
    p = jnp.array([0.0, 1.0])
    u, _ = tx.update(g, tx.init(p), p)
    assert np.isnan(u[0]) and np.isclose(u[1], -0.1)
    for latent in (True, False):
        tx = optax.chain(
            optax.sgd(1.0), optax_l1.sparsity_target(0.34, ramp_steps=1, latent=latent)
        )
        p = jnp.array([0.1, 1.0, 2.0])
        state = tx.init(p)
        for g in (jnp.zeros(3), jnp.zeros(3), jnp.array([jnp.nan, 0.0, 0.0])):
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        assert np.isnan(p[0]) and np.all(p[1:] == jnp.array([1.0, 2.0])), latent
    # The step that zeroes it: latent=False scores the params before the update, so the
    # weight it prunes was written as 0 even when its update was NaN (a review).
    blocks = optax_l1.Blocks(4, axis=0)
    for kw in (dict(), dict(allocation=blocks)):
        tx = optax.chain(
            optax.sgd(1.0), optax_l1.sparsity_target(0.25, ramp_steps=1, latent=False, **kw)
        )
        p = jnp.array([0.1, 1.0, 2.0, 3.0])
        state = tx.init(p)
        for g in (jnp.zeros(4), jnp.array([jnp.nan, 0.0, 0.0, 0.0])):  # the search: count 1
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        assert np.isnan(p[0]) and np.all(p[1:] == jnp.array([1.0, 2.0, 3.0])), kw
