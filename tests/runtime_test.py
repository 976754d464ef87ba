"""The run-time policy: a hyperparameter known only at run time (a schedule's value, one set
through ``optax.inject_hyperparams``) that is negative, NaN or infinite makes the update NaN,
and every proximal map propagates NaN from its input and its threshold; never a
plausible-looking wrong result."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1

PARAMS = {"w": jnp.array([[1.0, -0.5], [0.05, 2.0]]), "b": jnp.array([0.3, -0.2])}
GRADS = {"w": jnp.array([[0.1, -0.2], [0.3, 0.4]]), "b": jnp.array([0.1, 0.1])}
MASK = {"w": True, "b": False}

# name -> (factory, keyword arguments, the argument set at run time, its rule's bad values)
INJECTED = {
    "l1_prox": (optax_l1.l1_prox, dict(strength=0.1, learning_rate=0.1), "strength"),
    "l1_prox lr": (optax_l1.l1_prox, dict(strength=0.1, learning_rate=0.1), "learning_rate"),
    "l1_prox l2": (optax_l1.l1_prox, dict(strength=0.1, learning_rate=0.1, l2=0.1), "l2"),
    "group_l1_prox": (
        lambda strength, learning_rate: optax_l1.group_l1_prox(
            strength, learning_rate=learning_rate, axis=0, mask=MASK
        ),
        dict(strength=0.1, learning_rate=0.1),
        "strength",
    ),
    "proximal_adam": (optax_l1.proximal_adam, dict(learning_rate=0.1, strength=0.1), "strength"),
    "proximal_adagrad": (
        optax_l1.proximal_adagrad,
        dict(learning_rate=0.1, strength=0.1),
        "strength",
    ),
    "ftrl": (optax_l1.ftrl, dict(learning_rate=0.1, strength=0.1), "learning_rate"),
    "ftrl power": (
        optax_l1.ftrl,
        dict(learning_rate=0.1, strength=0.1, learning_rate_power=-0.5),
        "learning_rate_power",
    ),
    # strength 10: every weight lands on zero, which never reads l2 or beta (a probe found
    # a NaN l2 / beta hidden there: finite zeros).
    **{
        f"ftrl {arg}": (optax_l1.ftrl, dict(learning_rate=0.1, strength=10.0, **{arg: 0.1}), arg)
        for arg in ("l2", "beta")
    },
    "add_l1_subgradient": (optax_l1.add_l1_subgradient, dict(strength=0.1), "strength"),
    **{
        f"proximal_adam {arg}": (
            optax_l1.proximal_adam,
            dict(learning_rate=0.1, strength=0.1, b1=0.9, b2=0.999, eps=1e-8),
            arg,
        )
        for arg in ("b1", "b2", "eps")
    },
    "proximal_adamw weight_decay": (
        optax_l1.proximal_adamw,
        dict(learning_rate=0.1, strength=0.1, weight_decay=1e-4),
        "weight_decay",
    ),
    **{
        f"with_preconditioned_l1 {arg}": (
            lambda eps, eps_root, bias_correction_decay: optax_l1.with_preconditioned_l1(
                optax.rmsprop(0.1, eps=1e-6),
                strength=0.1,
                learning_rate=0.1,
                eps=eps,
                eps_root=eps_root,
                bias_correction_decay=bias_correction_decay,
                unseen="shrink",
            ),
            dict(eps=0.0, eps_root=1e-6, bias_correction_decay=0.9),
            arg,
        )
        for arg in ("eps", "eps_root", "bias_correction_decay")
    },
    "sparsity_target": (
        lambda target: optax_l1.sparsity_target(target, ramp_steps=1, mask=MASK),
        dict(target=0.5),
        "target",
    ),
    **{
        f"sparsity_target {arg}": (
            lambda ramp_steps, begin_step, update_every: optax_l1.sparsity_target(
                0.5,
                ramp_steps=ramp_steps,
                begin_step=begin_step,
                update_every=update_every,
                mask=MASK,
            ),
            dict(ramp_steps=2, begin_step=0, update_every=1),
            arg,
        )
        for arg in ("ramp_steps", "begin_step", "update_every")
    },
    "sparsity_target ramp": (
        lambda ramp: optax_l1.sparsity_target(0.5, ramp_steps=1, ramp=ramp, mask=MASK),
        dict(ramp=2.0),
        "ramp",
    ),
}


def _bad_values(arg):
    if arg == "learning_rate_power":
        return [0.5, np.nan, -np.inf]
    if arg == "target":
        return [-0.1, 1.0, np.nan, np.inf]
    if arg in ("b1", "b2", "bias_correction_decay"):  # decays: in [0, 1)
        return [-0.1, 1.0, 1.5, np.nan, np.inf]
    if arg in ("ramp_steps", "begin_step", "update_every"):  # whole step counts
        return [1.5, -1.0, np.nan, np.inf]
    if arg == "ramp":  # an exponent: 0 is refused too
        return [0.0, -1.0, np.nan, np.inf]
    return [-0.1, np.nan, np.inf]


def _two_steps(tx, set_value=None):
    state = tx.init(PARAMS)
    if set_value is not None:
        state.hyperparams.update(set_value)
    params = PARAMS
    for _ in range(2):
        u, state = jax.jit(tx.update)(GRADS, state, params)
        params = optax.apply_updates(params, u)
    return u


@pytest.mark.parametrize("name", sorted(INJECTED))
def test_a_bad_hyperparameter_set_at_run_time_makes_the_update_nan(name):
    factory, kwargs, arg = INJECTED[name]
    tx = optax.inject_hyperparams(factory)(**kwargs)
    good = _two_steps(tx)
    want = _two_steps(factory(**kwargs))  # the same values, known at construction
    for k in good:
        np.testing.assert_allclose(good[k], want[k], rtol=1e-4, atol=1e-6)  # f32 vs Python
    assert all(np.all(np.isfinite(good[k])) for k in good)
    for bad in _bad_values(arg):
        u = _two_steps(tx, {arg: jnp.asarray(bad, jnp.float32)})
        assert np.all(np.isnan(u["w"])), (name, bad, u)


@pytest.mark.parametrize(
    "make",
    [
        lambda s: optax_l1.l1_prox(s, learning_rate=0.1),
        lambda s: optax_l1.group_l1_prox(s, learning_rate=0.1, axis=0),
        lambda s: optax_l1.proximal_adam(0.1, strength=s),
        lambda s: optax_l1.with_preconditioned_l1(
            optax.adam(0.1),
            strength=s,
            learning_rate=0.1,
            eps=1e-8,
            eps_root=0.0,
            bias_correction_decay=0.999,
            unseen="shrink",
        ),
    ],
    ids=["l1_prox", "group_l1_prox", "proximal_adam", "with_preconditioned_l1"],
)
def test_a_schedule_that_turns_negative_makes_the_update_nan(make):
    schedule = optax.linear_schedule(0.1, -0.1, transition_steps=2)  # 0.1, 0.0, -0.1
    tx = make(schedule)
    state, params = tx.init(PARAMS["w"]), PARAMS["w"]
    finite = []
    for _ in range(3):
        u, state = tx.update(GRADS["w"], state, params)
        finite.append(bool(np.all(np.isfinite(u))))
        params = optax.apply_updates(params, u)
    assert finite[:2] == [True, True]
    assert np.all(np.isnan(u))


def test_a_nan_gradient_entry_makes_its_group_nan_never_a_silent_zero():
    tx = optax.chain(optax.adam(0.1), optax_l1.group_l1_prox(0.5, learning_rate=0.1, axis=0))
    params = jnp.ones((3, 4))
    grads = jnp.ones((3, 4)).at[1, 2].set(jnp.nan)
    u, _ = tx.update(grads, tx.init(params), params)
    new = np.asarray(optax.apply_updates(params, u))
    assert np.all(np.isnan(new[:, 2]))  # the column (group) with the NaN
    assert np.all(np.isfinite(np.delete(new, 2, axis=1)))


def test_prox_maps_propagate_nan_from_input_and_threshold():
    x = jnp.ones((2, 2))
    nan = jnp.asarray(jnp.nan)
    with pytest.raises(ValueError, match="`threshold` must be finite"):  # known now: raises
        optax_l1.group_soft_threshold(x, nan, axis=0)
    # Traced (known only inside the step): NaN out.
    assert np.all(np.isnan(jax.jit(lambda t: optax_l1.group_soft_threshold(x, t, axis=0))(nan)))
    assert np.all(np.isnan(jax.jit(optax_l1.soft_threshold)(x, nan)))
    assert np.all(np.isnan(jax.jit(optax_l1.soft_threshold)(x.astype(jnp.complex64), nan)))
    assert np.all(np.isnan(jax.jit(optax_l1.elastic_net_threshold)(x, nan, 0.0)))
    assert np.all(np.isnan(jax.jit(optax_l1.elastic_net_threshold)(x, 0.1, nan)))
    y = x.at[0, 0].set(jnp.nan)
    g = np.asarray(optax_l1.group_soft_threshold(y, 0.1, axis=0))
    assert np.all(np.isnan(g[:, 0])) and np.all(np.isfinite(g[:, 1]))
    c = np.asarray(optax_l1.soft_threshold(y.astype(jnp.complex64), 0.1))
    assert np.isnan(c[0, 0]) and np.all(np.isfinite(c.ravel()[1:]))


def test_proximal_lands_an_integer_or_bf16_result_exactly():
    params = {"w": jnp.array([1.3, -0.2, 2.4])}
    updates = {"w": jnp.array([0.4, 0.1, 0.2])}  # z = [1.7, -0.1, 2.6]
    for prox, want in (
        (lambda z, step: jax.tree.map(lambda x: jnp.round(x).astype(jnp.int32), z), [2, 0, 3]),
        (
            lambda z, step: jax.tree.map(
                lambda x: jnp.where(jnp.abs(x) < 0.5, 0, x).astype(jnp.bfloat16), z
            ),
            np.asarray(jnp.asarray([1.7, 0.0, 2.6], jnp.bfloat16), np.float32),
        ),
    ):
        tx = optax_l1.proximal(prox, learning_rate=0.1)
        u, _ = tx.update(updates, tx.init(params), params)
        new = optax.apply_updates(params, u)["w"]
        assert new.dtype == jnp.float32
        np.testing.assert_array_equal(new, np.float32(want))
    tx = optax_l1.proximal(lambda z, step: jax.tree.map(lambda x: x * 1j, z), learning_rate=0.1)
    with pytest.raises(ValueError, match="`proximal`: .* complex64 values for real float32"):
        tx.update(updates, tx.init(params), params)


def test_proximal_with_a_bad_run_time_learning_rate_is_nan():
    tx = optax_l1.proximal(lambda z, step: z, learning_rate=lambda count: -0.1 * count)
    params = jnp.ones(3)
    u, state = tx.update(jnp.ones(3), tx.init(params), params)  # lr 0 at count 0: fine
    assert np.all(np.isfinite(u))
    u, _ = tx.update(jnp.ones(3), state, params)
    assert np.all(np.isnan(u))


def test_sparsity_target_update_every_past_int32_is_refused():
    # np.int64(2**32 + 1) wrapped to 1 (a search every step), 2**31 crashed at the first
    # update with an OverflowError naming nothing.
    for every in (np.int64(2**32 + 1), 2**31, 1e10):
        with pytest.raises(ValueError, match="`update_every` must be < 2\\*\\*31"):
            optax_l1.sparsity_target(0.5, ramp_steps=40, update_every=every)


def _target_run(change_at, hyperparam, value, steps, **kwargs):
    """sgd + an injected sparsity_target on 100 weights, ``hyperparam`` set to ``value`` at
    step ``change_at``; the final params and the target's state."""

    def make(target, ramp_steps, latent_until=0.5):
        target_tx = optax_l1.sparsity_target(
            target, ramp_steps=ramp_steps, latent_until=latent_until
        )
        return optax.chain(optax.sgd(0.01), target_tx)

    tx = optax.inject_hyperparams(make, static_args=("latent_until",))(**kwargs)
    p = jax.random.normal(jax.random.key(0), (100,))
    state = tx.init(p)
    step = jax.jit(tx.update)
    for t in range(steps):
        if t == change_at:
            state.hyperparams[hyperparam] = jnp.asarray(value, state.hyperparams[hyperparam].dtype)
        u, state = step(p - 0.3, state, p)
        p = optax.apply_updates(p, u)
    return p, state.inner_state[1]


def test_sparsity_target_follows_ramp_changes_made_at_run_time():
    # A target lowered to 0 kept the old zeros (67%) though any positive target released
    # them: 0 now holds nothing, like a search of 0 entries.
    p, st = _target_run(6, "target", 0.0, 20, target=0.9, ramp_steps=10, latent_until=1.0)
    assert float(st.scheduled) == 0 and np.mean(np.asarray(p) == 0) == 0
    # A ramp shortened to end behind the count skipped its last search and froze the
    # support mid-ramp (39% zeros); the step where the ramp's value jumps searches.
    p, st = _target_run(6, "ramp_steps", 5, 30, target=0.9, ramp_steps=20)
    assert np.mean(np.asarray(p) == 0) == pytest.approx(0.9)
    assert float(st.sparsity) == pytest.approx(0.9)
    # A target raised after the freeze is searched once, then frozen again.
    p, st = _target_run(25, "target", 0.95, 30, target=0.9, ramp_steps=10)
    assert np.mean(np.asarray(p) == 0) == pytest.approx(0.95)
    # Unchanged, the frozen support is the ramp's last search's (no extra search: the
    # threshold a search would move stays the ramp's end's).
    p, st = _target_run(-1, "target", 0.9, 30, target=0.9, ramp_steps=10)
    p_end, st_end = _target_run(-1, "target", 0.9, 11, target=0.9, ramp_steps=10)
    assert np.mean(np.asarray(p) == 0) == pytest.approx(0.9)
    assert float(st.threshold) == float(st_end.threshold) > 0
    np.testing.assert_array_equal(np.asarray(p) == 0, np.asarray(p_end) == 0)


def test_sparsity_target_step_count_past_int32_is_refused():
    with pytest.raises(ValueError, match="`begin_step \\+ ramp_steps` must be < 2\\*\\*31"):
        optax_l1.sparsity_target(0.5, ramp_steps=2**30, begin_step=2**30)


def test_public_operators_with_a_traced_negative_threshold_give_nan():
    x = jnp.array([1.0, -0.5, 0.05])
    bad = jnp.float32(-0.1)
    assert np.all(np.isnan(jax.jit(optax_l1.soft_threshold)(x, bad)))
    assert np.all(np.isnan(jax.jit(lambda t: optax_l1.group_soft_threshold(x, t, axis=0))(bad)))
    assert np.all(np.isnan(jax.jit(optax_l1.elastic_net_threshold)(x, 0.1, bad)))
    ok = jax.jit(optax_l1.soft_threshold)(x, jnp.float32(0.1))
    np.testing.assert_allclose(ok, [0.9, -0.4, 0.0], rtol=1e-6)


def test_bf16_params_round_the_shrink_away_and_float32_master_weights_do_not():
    # The documented behaviour (docs/guides/faults.rst): a per-step threshold below half the
    # bf16 spacing of a weight is rounded away when the update is applied in bf16, so w = 1
    # never moves; float32 master weights (cast to bf16 only for the forward pass) shrink it.
    def run(dtype, steps=1100):
        w = jnp.array([1.0, 0.01], dtype)
        tx = optax.chain(optax.sgd(0.1), optax_l1.l1_prox(0.01, learning_rate=0.1))
        state = tx.init(w)

        @jax.jit
        def step(w, state):
            grads = jax.grad(lambda v: jnp.sum(v.astype(jnp.bfloat16) * 0).astype(jnp.float32))(w)
            u, state = tx.update(grads, state, w)
            return optax.apply_updates(w, u), state

        for _ in range(steps):
            w, state = step(w, state)
        return np.asarray(w, np.float32)

    bf16 = run(jnp.bfloat16)
    assert bf16[0] == 1.0  # 1e-3 a step, against a bf16 spacing of 2**-7 at 1.0: never moves
    assert bf16[1] == 0.0  # small weights still reach exact zero
    np.testing.assert_array_equal(run(jnp.float32), [0.0, 0.0])  # 1 - 1100 * 1e-3 < 0


def test_ftrl_stays_finite_on_a_gradient_whose_square_overflows_float32():
    params = jnp.array([1.0, -0.5, 0.0])
    grads = [jnp.array([1e20, 0.1, -0.2]), jnp.array([0.3, -0.1, 0.2])]
    for tx in (optax_l1.ftrl(0.1, strength=0.01), optax.adagrad(0.1)):
        state, p = tx.init(params), params
        for g in grads:
            u, state = tx.update(g, state, p)
            p = optax.apply_updates(p, u)
        assert np.all(np.isfinite(p)), (tx, p)
    # NaN still shows.
    tx = optax_l1.ftrl(0.1, strength=0.01)
    u, _ = tx.update(jnp.array([jnp.nan, 0.1, 0.1]), tx.init(params), params)
    assert np.isnan(u[0]) and np.all(np.isfinite(u[1:]))


def test_ftrl_lands_exact_zeros_when_gradients_are_narrower_than_params():
    """bf16 gradients on float32 params: the update was cast to bf16, so p + u missed 0."""
    tx = optax_l1.ftrl(0.5, strength=0.5)
    p = {"w": jnp.array([0.3, 1.1, -0.7])}
    g = jnp.array([0.1, -3.0, 2.0])
    wide, _ = tx.update({"w": g}, tx.init(p), p)
    narrow, _ = tx.update({"w": g.astype(jnp.bfloat16)}, tx.init(p), p)
    assert narrow["w"].dtype == jnp.float32
    new = optax.apply_updates(p, narrow)["w"]
    assert new[0] == 0.0  # exactly
    want = optax.apply_updates(p, wide)["w"]  # bf16 holds these gradients exactly
    np.testing.assert_array_equal(new, want)


def test_a_nonnegative_prox_keeps_an_infinite_input_visible():
    """max(-inf - t, 0) = 0 landed a weight on an exact zero after an infinite gradient."""
    z = jnp.array([-jnp.inf, jnp.inf, jnp.nan, -1.0, 2.0])
    out = optax_l1.elastic_net_threshold(z, 0.1, nonnegative=True)
    np.testing.assert_allclose(out[3:], [0.0, 1.9], rtol=1e-6)
    assert out[0] == -jnp.inf and out[1] == jnp.inf and jnp.isnan(out[2])
    tx = optax.chain(optax.sgd(1.0), optax_l1.l1_prox(0.1, learning_rate=1.0, nonnegative=True))
    p = {"w": jnp.array([1.0, 1.0])}
    u, _ = tx.update({"w": jnp.array([jnp.inf, 0.0])}, tx.init(p), p)
    assert not np.isfinite(optax.apply_updates(p, u)["w"][0])


def test_a_traced_initial_accumulator_value_that_breaks_its_rule_is_nan_in_the_state():
    """proximal_adagrad reads it in init only: a traced init with a negative value filled
    the accumulator with it (a plausible state); now NaN, so the first update is NaN."""
    p = {"w": jnp.array([1.0, -0.5])}

    def init(v):
        return optax_l1.proximal_adagrad(0.1, strength=0.1, initial_accumulator_value=v).init(p)

    for bad in (-1.0, np.nan, np.inf):
        acc = jax.jit(init)(jnp.float32(bad)).inner_state[0].sum_of_squares["w"]
        assert np.all(np.isnan(acc)), (bad, acc)
    acc = jax.jit(init)(jnp.float32(0.1)).inner_state[0].sum_of_squares["w"]
    np.testing.assert_allclose(acc, [0.1, 0.1])


def test_n_of_m_mid_ramp_zeroes_the_floor_not_one_more():
    # s_t m = 0.99993 zeroed one entry per block (an absolute 1e-4 slack on the floor),
    # above the ramp's fraction; the ramp's end still rounds 2/3 * 3 up to 2.
    p = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((8, 4)), jnp.float32)}
    blocks = optax_l1.Blocks(4, axis=0)
    tx = optax_l1.sparsity_target(
        0.5, ramp_steps=30000, ramp="linear", allocation=blocks, latent=False
    )
    state = tx.init(p)._replace(count=jnp.asarray(14999, jnp.int32))
    u, state = tx.update(jax.tree.map(jnp.zeros_like, p), state, p)
    assert float(state.scheduled) * 4 == pytest.approx(0.99993, abs=1e-5)
    assert float(jnp.mean(optax.apply_updates(p, u)["w"] == 0)) == 0.0
    third = optax_l1.Blocks(3, axis=0)
    q = {"w": jnp.asarray(np.random.default_rng(1).standard_normal((6, 3)), jnp.float32)}
    tx = optax_l1.sparsity_target(2 / 3, ramp_steps=1, allocation=third, latent=False)
    state = tx.init(q)
    for _ in range(3):
        u, state = tx.update(jax.tree.map(jnp.zeros_like, q), state, q)
        q = optax.apply_updates(q, u)
    assert int(jnp.sum(q["w"] == 0)) == 12  # 2 of every 3
