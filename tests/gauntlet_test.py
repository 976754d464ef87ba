"""The optax contrib gauntlet (optax/contrib/_common_test.py), ported to optax_l1.

Every entry of `CASES` is a complete optimizer built from numeric hyperparameters, so that
`optax.inject_hyperparams(case.factory)(**case.hparams)` works. To add an optimizer, append a
`Case` (e.g. ``Case("proximal_adagrad", optax_l1.proximal_adagrad, dict(learning_rate=0.5,
strength=0.1), minimizer=..., steps=...)``); every test below then runs on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import np_group_cols, np_soft

import optax_l1

# ----------------------------------------------------------------------------- the problem
# minimize 0.5 * ||w - c||^2 + regularizer(w), whose minimizer is prox_regularizer(c).

TARGET = {
    "kernel": np.array([[3.0, -0.05, 0.3], [-2.0, 0.1, -0.25]], np.float32),
    "bias": np.array([0.05, -1.5, 0.7], np.float32),
}
INIT = {
    "kernel": np.array([[1.0, 1.0, -1.0], [0.5, -0.5, 2.0]], np.float32),
    "bias": np.array([1.0, 1.0, -1.0], np.float32),
}


def init_params(dtype=jnp.float32):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), INIT)


def loss_fn(params):
    return sum(
        0.5 * jnp.sum((p.astype(jnp.float32) - c) ** 2)
        for p, c in zip(jax.tree.leaves(params), jax.tree.leaves(TARGET), strict=True)
    )


grad_fn = jax.grad(loss_fn)


# ----------------------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    factory: Callable[..., optax.GradientTransformation]  # numeric hyperparameters only
    hparams: dict[str, Any]
    schedulable: tuple[str, ...] = ("learning_rate",)  # may be given as a schedule
    minimizer: Callable[[dict], dict] | None = None  # argmin over the problem above
    atol: float = 1e-5  # distance to the minimizer allowed after `steps`
    steps: int = 300
    exact_zeros: bool = True  # the minimizer's zeros are reached exactly
    static_args: tuple[str, ...] = ()  # for optax.inject_hyperparams

    def make(self, **overrides):
        return self.factory(**{**self.hparams, **overrides})

    def __str__(self):
        return self.name


def sgd_l1_prox(learning_rate, strength):
    return optax.chain(
        optax.sgd(learning_rate), optax_l1.l1_prox(strength, learning_rate=learning_rate)
    )


def sgd_l1_prox_l2_nonnegative(learning_rate, strength, l2):
    return optax.chain(
        optax.sgd(learning_rate),
        optax_l1.l1_prox(strength, learning_rate=learning_rate, l2=l2, nonnegative=True),
    )


def sgd_group_l1_prox(learning_rate, strength):
    return optax.chain(
        optax.sgd(learning_rate),
        optax_l1.group_l1_prox(
            strength, learning_rate=learning_rate, axis=0, mask=optax_l1.kernel_mask
        ),
    )


def sgd_proximal_soft_threshold(learning_rate, strength):
    def prox(z, step):
        return optax_l1.soft_threshold(z, step * strength)

    return optax.chain(
        optax.sgd(learning_rate), optax_l1.proximal(prox, learning_rate=learning_rate)
    )


def l1_subgradient_sgd(learning_rate, strength):
    return optax.chain(optax_l1.add_l1_subgradient(strength), optax.sgd(learning_rate))


def wrapped_adagrad_l1(learning_rate, strength):
    return optax_l1.with_preconditioned_l1(
        optax.adagrad(learning_rate, eps=0.0),
        strength=strength,
        learning_rate=learning_rate,
        accumulator="sum_of_squares",
        eps=0.0,
        eps_root=0.0,
        bias_correction_decay=None,
        unseen="keep",
    )


def adam_sparsity_target(learning_rate):
    return optax.chain(
        optax.adam(learning_rate),
        optax_l1.sparsity_target(0.5, ramp_steps=20),
    )


# Callables (not pytrees): they also fit the tree optax.masked hands the transform.
UNITS = optax_l1.path_structure(
    {"kernel$": optax_l1.Groups(0, couple="u"), "bias$": optax_l1.Elements(couple="u")}
)


def sgd_coupled_units(learning_rate, strength):
    prox = optax_l1.group_l1_prox(strength, learning_rate=learning_rate, structure=UNITS)
    return optax.chain(optax.sgd(learning_rate), prox)


def np_coupled_units(c, t):
    """Unit j = kernel column j and bias j, shrunk by their joint norm."""
    k, b = np.asarray(c["kernel"], np.float64), np.asarray(c["bias"], np.float64)
    norm = np.sqrt((k**2).sum(0) + b**2)
    scale = np.maximum(0.0, 1.0 - t / np.where(norm > 0, norm, 1.0))
    return {"kernel": k * scale[None], "bias": b * scale}


def adam_target_n_of_m(learning_rate):
    target = optax_l1.sparsity_target(
        0.5,
        ramp_steps=20,
        allocation=optax_l1.Blocks(2, axis=0),
        mask=lambda p: optax_l1.path_mask(p, include="kernel$"),
    )
    return optax.chain(optax.adam(learning_rate), target)


CASES = [
    Case(
        "l1_prox",
        sgd_l1_prox,
        dict(learning_rate=0.1, strength=0.2),
        schedulable=("learning_rate", "strength"),
        minimizer=lambda c: jax.tree.map(lambda x: np_soft(x, 0.2), c),
    ),
    Case(
        "l1_prox_l2_nonnegative",
        sgd_l1_prox_l2_nonnegative,
        dict(learning_rate=0.1, strength=0.2, l2=0.5),
        schedulable=("learning_rate", "strength", "l2"),
        minimizer=lambda c: jax.tree.map(lambda x: np.maximum(x - 0.2, 0.0) / 1.5, c),
    ),
    Case(
        "group_l1_prox",
        sgd_group_l1_prox,
        dict(learning_rate=0.1, strength=0.5),
        schedulable=("learning_rate", "strength"),
        minimizer=lambda c: {"kernel": np_group_cols(c["kernel"], 0.5), "bias": c["bias"]},
    ),
    Case(
        "proximal_soft_threshold",
        sgd_proximal_soft_threshold,
        dict(learning_rate=0.1, strength=0.2),
        minimizer=lambda c: jax.tree.map(lambda x: np_soft(x, 0.2), c),
    ),
    Case(
        "add_l1_subgradient_sgd",
        l1_subgradient_sgd,
        dict(learning_rate=0.01, strength=0.2),
        schedulable=("learning_rate", "strength"),
        minimizer=lambda c: jax.tree.map(lambda x: np_soft(x, 0.2), c),
        atol=0.01 * (0.2 + 0.2) + 1e-4,  # oscillates within lr * (strength + |grad|) of 0
        steps=2000,
        exact_zeros=False,
    ),
    Case(
        "proximal_adagrad",
        optax_l1.proximal_adagrad,
        dict(learning_rate=0.5, strength=0.2),
        schedulable=("learning_rate", "strength"),
        minimizer=lambda c: jax.tree.map(lambda x: np_soft(x, 0.2), c),
        steps=600,
    ),
    Case(
        "proximal_adam",
        optax_l1.proximal_adam,
        dict(learning_rate=0.02, strength=0.2),
        schedulable=("learning_rate", "strength"),
        minimizer=lambda c: jax.tree.map(lambda x: np_soft(x, 0.2), c),
        atol=2e-3,
        steps=1500,
    ),
    Case(
        "with_preconditioned_l1_adagrad",
        wrapped_adagrad_l1,
        dict(learning_rate=0.5, strength=0.2),
        schedulable=("learning_rate", "strength"),
        minimizer=lambda c: jax.tree.map(lambda x: np_soft(x, 0.2), c),
        steps=600,
    ),
    # FTRL's l1 is not scaled by t: it converges to the unregularized minimizer, so no
    # closed-form minimizer is checked here (tests/adaptive_test.py checks TF's kernel).
    Case("ftrl", optax_l1.ftrl, dict(learning_rate=0.5, strength=0.2), schedulable=("strength",)),
    # The target-sparsity controller has no fixed minimizer either (tests/target_test.py).
    Case("sparsity_target", adam_sparsity_target, dict(learning_rate=0.05)),
    Case(
        "group_l1_prox_coupled_units",
        sgd_coupled_units,
        dict(learning_rate=0.1, strength=0.5),
        schedulable=("learning_rate", "strength"),
        minimizer=lambda c: np_coupled_units(c, 0.5),
    ),
    Case("sparsity_target_n_of_m", adam_target_n_of_m, dict(learning_rate=0.05)),
]

cases = pytest.mark.parametrize("case", CASES, ids=str)


def make_step(opt, **update_kwargs):
    def step(params, state):
        grads = grad_fn(params)
        updates, state = opt.update(grads, state, params, **update_kwargs)
        return optax.apply_updates(params, updates), state

    return step


def run(opt, params, n, step=None):
    step = jax.jit(make_step(opt)) if step is None else step
    state = opt.init(params)
    for _ in range(n):
        params, state = step(params, state)
    return params, state


# ----------------------------------------------------------------------------- the tests


@cases
def test_converges_to_the_regularized_minimizer(case):
    if case.minimizer is None:
        pytest.skip("no closed-form minimizer")
    opt = case.make()
    params = init_params()
    state = opt.init(params)
    state = optax.tree.map_params(opt, lambda v: v, state)  # a no-op that must work
    step = make_step(opt)
    (params, state), _ = jax.lax.scan(
        lambda c, _: (step(*c), None), (params, state), length=case.steps
    )
    want = case.minimizer(TARGET)
    chex.assert_trees_all_close(params, want, atol=case.atol, rtol=0)
    if case.exact_zeros:
        for got, w in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(got) == 0, np.asarray(w) == 0)


@cases
def test_accepts_extra_args(case):
    opt = case.make()
    step = jax.jit(make_step(opt, unexpected_extra_arg=1, value=jnp.float32(0.0)))
    params, _ = run(opt, init_params(), 2, step)
    chex.assert_tree_all_finite(params)
    plain, _ = run(opt, init_params(), 2)
    chex.assert_trees_all_close(params, plain)


@cases
def test_no_recompilation_on_later_calls(case):
    opt = case.make()
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(make_step(opt), n=1))
    params, state = run(opt, init_params(), 4, step)
    assert step._cache_size() == 1
    assert int(jax.tree.leaves(state)[0]) >= 0  # state is concrete and usable


@cases
def test_same_result_under_inject_hyperparams(case):
    opt = case.make()
    injected = optax.inject_hyperparams(case.factory, static_args=case.static_args)(**case.hparams)
    params = init_params()
    state, state_inj = jax.jit(opt.init)(params), jax.jit(injected.init)(params)
    p, p_inj = params, params
    update, update_inj = jax.jit(opt.update), jax.jit(injected.update)
    for _ in range(3):
        g = grad_fn(p)
        u, state = update(g, state, p)
        u_inj, state_inj = update_inj(g, state_inj, p_inj)
        chex.assert_trees_all_close(u_inj, u, rtol=1e-5, atol=1e-7)
        p, p_inj = optax.apply_updates(p, u), optax.apply_updates(p_inj, u_inj)
    chex.assert_trees_all_close(state_inj.inner_state, state, rtol=1e-5, atol=1e-7)


@cases
def test_injected_hyperparameters_take_effect_without_retracing(case):
    injected = optax.inject_hyperparams(case.factory, static_args=case.static_args)(**case.hparams)
    params = init_params()
    state = injected.init(params)
    step = jax.jit(make_step(injected))
    moved, _ = step(params, state)
    half = 0.5 * case.hparams["learning_rate"]
    hyperparams = {**state.hyperparams, "learning_rate": jnp.asarray(half, jnp.float32)}
    moved_half, _ = step(params, state._replace(hyperparams=hyperparams))
    assert step._cache_size() == 1
    want, _ = run(case.make(learning_rate=half), params, 1)
    chex.assert_trees_all_close(moved_half, want, rtol=1e-6, atol=1e-7)
    assert any(
        np.any(np.asarray(a) != np.asarray(b))
        for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(moved_half), strict=True)
    )


@cases
def test_constant_schedule_equals_constant(case):
    as_schedules = {k: optax.constant_schedule(case.hparams[k]) for k in case.schedulable}
    p_const, _ = run(case.make(), init_params(), 5)
    p_sched, _ = run(case.make(**as_schedules), init_params(), 5)
    chex.assert_trees_all_close(p_sched, p_const, rtol=1e-6, atol=1e-7)


@cases
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_preserves_dtype(case, dtype):
    opt = case.make()
    params = init_params(dtype)
    state = jax.jit(opt.init)(params)
    grads = jax.tree.map(lambda g: g.astype(dtype), grad_fn(params))
    updates, new_state = jax.jit(opt.update)(grads, state, params)
    for u in jax.tree.leaves(updates):
        assert u.dtype == dtype
    for p in jax.tree.leaves(optax.apply_updates(params, updates)):
        assert p.dtype == dtype
    chex.assert_trees_all_equal_dtypes(new_state, state)
    chex.assert_trees_all_equal_shapes(new_state, state)


@cases
@pytest.mark.parametrize("dtype", [jnp.float8_e4m3fn, jnp.float8_e5m2])
def test_float8_weights_are_refused_naming_the_transform(case, dtype):
    # A TypePromotionError naming nothing (float8 promotes with no other float), or NaN.
    opt = case.make()
    params = init_params(dtype)
    grads = jax.tree.map(lambda g: g.astype(dtype), grad_fn(init_params()))
    with pytest.raises(TypeError, match="float8/float4 params and updates are not supported"):
        opt.update(grads, opt.init(params), params)


def test_a_float8_leaf_left_out_with_the_mask_passes_through_every_transform():
    # The float8 refusal first also fired on masked-out leaves of the optimizer-wrapping
    # transforms (the optimizer's own pass selects every float leaf) and of freeze_support.
    params = {"w": jnp.array([1.0, -0.05, 0.3]), "f8": jnp.ones(3, jnp.float8_e4m3fn)}
    grads = {"w": jnp.array([0.1, 0.2, -0.3]), "f8": jnp.full(3, 0.5, jnp.float8_e4m3fn)}
    mask = {"w": True, "f8": False}
    for tx in (
        optax_l1.proximal_adagrad(0.1, strength=0.1, mask=mask),
        optax_l1.sparsity_target(0.5, ramp_steps=1, optimizer=optax.rmsprop(0.1), mask=mask),
        optax.chain(
            optax.sgd(0.1),
            optax_l1.freeze_support(
                optax_l1.l1_prox(0.1, learning_rate=0.1, mask=mask), begin_step=0
            ),
        ),
    ):
        u, _ = tx.update(grads, tx.init(params), params)
        assert u["f8"].dtype == jnp.float8_e4m3fn
        assert np.all(np.isfinite(np.asarray(u["f8"].astype(jnp.float32))))


@cases
def test_works_inside_multisteps(case):
    opt = case.make()
    ms = optax.MultiSteps(opt, every_k_schedule=3)
    params = init_params()
    grads = grad_fn(params)
    state = ms.init(params)
    update = jax.jit(ms.update)
    for _ in range(2):
        u, state = update(grads, state, params)
        chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, params))
    u, state = update(grads, state, params)
    want, _ = opt.update(grads, opt.init(params), params)
    chex.assert_trees_all_close(u, want, rtol=1e-6, atol=1e-7)


@cases
def test_works_inside_masked(case):
    opt = case.make()
    params = {"inner": init_params(), "frozen": jnp.array([0.01, -3.0])}
    grads = {"inner": grad_fn(params["inner"]), "frozen": jnp.array([1.0, 2.0])}
    masked = optax.masked(opt, {"inner": True, "frozen": False})
    u, _ = jax.jit(masked.update)(grads, masked.init(params), params)
    want, _ = opt.update(grads["inner"], opt.init(params["inner"]), params["inner"])
    chex.assert_trees_all_close(u["inner"], want, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(u["frozen"], grads["frozen"])  # passed through unchanged


@cases
def test_works_inside_apply_if_finite(case):
    opt = case.make()
    guarded = optax.apply_if_finite(opt, max_consecutive_errors=3)
    params = init_params()
    state = guarded.init(params)
    update = jax.jit(guarded.update)
    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grad_fn(params))
    u, state_bad = update(bad, state, params)
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, params))
    assert int(state_bad.notfinite_count) == 1 and not bool(state_bad.last_finite)
    chex.assert_trees_all_equal(state_bad.inner_state, state.inner_state)
    g = grad_fn(params)
    u, state_ok = update(g, state_bad, params)
    want, want_state = opt.update(g, opt.init(params), params)
    chex.assert_trees_all_close(u, want, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(state_ok.inner_state, want_state)
    assert int(state_ok.notfinite_count) == 0


@cases
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_state_dtypes_stable_under_lax_cond(case, dtype):
    opt = case.make()
    params = init_params(dtype)

    @jax.jit
    def step(params, state, key):
        grads = jax.tree.map(lambda g: g.astype(dtype), grad_fn(params))
        pick = jax.random.randint(key, (), 0, 2) == 0  # defeats constant folding
        updates, state = jax.lax.cond(
            pick, lambda: opt.update(grads, state, params), lambda: (params, state)
        )
        return optax.apply_updates(params, updates), state

    # The cond inside the step already requires both branches' states to have one type; the
    # state fed back must also be taken by the compiled step as it is (no retrace).
    state = opt.init(params)
    for i in range(3):
        params, new_state = step(params, state, jax.random.key(i))
        assert all(p.dtype == dtype for p in jax.tree.leaves(params))
        chex.assert_trees_all_equal_dtypes(new_state, state)
        state = new_state
    assert step._cache_size() == 1


@cases
def test_state_round_trips_through_flax_serialization(case):
    opt = case.make()
    step = jax.jit(make_step(opt))
    params, state = run(opt, init_params(), 3, step)
    blob = flax.serialization.to_bytes(state)
    restored = flax.serialization.from_bytes(opt.init(init_params()), blob)
    chex.assert_trees_all_equal(restored, state)
    chex.assert_trees_all_equal_structs(restored, state)
    a, sa = params, state
    b, sb = params, restored
    for _ in range(3):
        a, sa = step(a, sa)
        b, sb = step(b, sb)
    chex.assert_trees_all_equal(b, a)  # bit-identical resume
    chex.assert_trees_all_equal(sb, sa)


@cases
def test_lax_scan_matches_python_loop(case):
    opt = case.make()
    step = make_step(opt)
    params = init_params()
    (p_scan, s_scan), _ = jax.lax.scan(
        lambda c, _: (step(*c), None), (params, opt.init(params)), length=6
    )
    p_loop, s_loop = run(opt, params, 6)
    chex.assert_trees_all_close(p_scan, p_loop, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(jax.tree.leaves(s_scan)[0], jax.tree.leaves(s_loop)[0])


@cases
def test_jit_matches_eager(case):
    opt = case.make()
    params = init_params()
    p_eager, _ = run(opt, params, 2, make_step(opt))
    p_jit, _ = run(opt, params, 2)
    chex.assert_trees_all_close(p_jit, p_eager, rtol=1e-6, atol=1e-7)
