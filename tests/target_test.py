"""Tests for `optax_l1.sparsity_target`: ramp tracking, bit-exactness at target 0, the
quantile search, masks, schedules, inject_hyperparams, the Adam preconditioner, errors,
sharding on 8 host devices and the benchmark's quick mode."""

import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1
from optax_l1 import _select

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPES = {"w": (24, 20), "v": (30,), "b": (20,)}
MASK = {"w": True, "v": True, "b": False}
N_MASKED = 24 * 20 + 30


def _problem(seed=0):
    """An elementwise quadratic: grads are exact per coordinate (no reduction order)."""
    keys = jax.random.split(jax.random.key(seed), 2 * len(SHAPES))
    params = {k: jax.random.normal(keys[i], s) for i, (k, s) in enumerate(SHAPES.items())}
    goal = {k: jax.random.normal(keys[i + 3], s) for i, (k, s) in enumerate(SHAPES.items())}
    return params, goal


def _loss(params, goal):
    return sum(0.5 * jnp.sum((params[k] - goal[k]) ** 2) for k in params)


def _target_state(state):
    if isinstance(state, optax_l1.SparsityTargetState):
        return state
    found = [s for s in state if isinstance(s, optax_l1.SparsityTargetState)]
    zero = jnp.zeros([], jnp.float32)
    return found[0] if found else optax_l1.SparsityTargetState(0, zero, zero, zero, None, None)


def _k(target, n=N_MASKED):
    """The number of zeros the transform aims at: floor(target * n), in float32."""
    return np.floor(np.float32(target) * np.float32(n)).astype(np.int64)


def _count(fraction, n=N_MASKED):
    """The number of zeros behind a measured fraction."""
    return np.rint(np.asarray(fraction, np.float64) * n).astype(np.int64)


def _run(tx, steps, seed=0, params=None):
    """lax.scan training; returns final params and per-step (sparsity, threshold, target)."""
    p0, goal = _problem(seed)
    params = p0 if params is None else params

    def step(carry, _):
        p, s = carry
        u, s = tx.update(jax.grad(_loss)(p, goal), s, p)
        p = optax.apply_updates(p, u)
        ts = _target_state(s)
        return (p, s), (ts.sparsity, ts.threshold, ts.scheduled, optax_l1.sparsity(p, mask=MASK))

    (p, s), logs = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=steps))(params)
    return p, s, [np.asarray(x) for x in logs]


def _ramp(t, target, ramp_steps, begin=0, power=2.0):
    """The ramp's value at step ``t`` (the library's default exponent, 2, unless given)."""
    frac = np.clip((t - begin) / ramp_steps, 0.0, 1.0)
    return target * (1.0 - (1.0 - frac) ** power)


# ----------------------------------------------------------------------------- tracking


@pytest.mark.parametrize("power", [0.5, 1.0, 2.5, 3.0])
def test_a_numeric_ramp_is_its_exponent_and_names_the_shapes(power):
    target, begin, ramp = 0.8, 5, 40
    opts = dict(ramp_steps=ramp, begin_step=begin, mask=MASK)
    tx = optax.chain(optax.adam(0.05), optax_l1.sparsity_target(target, ramp=power, **opts))
    _, _, (measured, _, scheduled, _) = _run(tx, 60)
    t = np.arange(60)
    np.testing.assert_allclose(scheduled, _ramp(t, target, ramp, begin, power), atol=1e-6)
    np.testing.assert_array_equal(_count(measured), _k(scheduled))  # the ramp is followed
    named = {1.0: "linear", 3.0: "cubic"}.get(power)
    if named is not None:  # the named shapes are these exponents
        tx = optax.chain(optax.adam(0.05), optax_l1.sparsity_target(target, ramp=named, **opts))
        np.testing.assert_allclose(_run(tx, 60)[2][2], scheduled, atol=1e-6)


def test_a_ramp_exponent_set_at_run_time_is_the_same_ramp():
    # optax.inject_hyperparams makes the exponent a traced value: the same schedule and
    # params as the exponent known at construction, over a whole ramp.
    opts = dict(ramp_steps=10, begin_step=1, mask=MASK)
    static = optax.chain(optax.sgd(0.05), optax_l1.sparsity_target(0.8, ramp=2.5, **opts))
    injected = optax.inject_hyperparams(optax_l1.sparsity_target, static_args=("mask",))
    traced = optax.chain(optax.sgd(0.05), injected(0.8, ramp=2.5, **opts))
    p_static, _, (_, _, scheduled, zeros_static) = _run(static, 14)
    p_traced, _, (_, _, _, zeros_traced) = _run(traced, 14)  # counted in the params
    np.testing.assert_allclose(scheduled, _ramp(np.arange(14), 0.8, 10, 1, 2.5), atol=1e-6)
    np.testing.assert_array_equal(_count(zeros_traced), _k(scheduled))
    np.testing.assert_array_equal(zeros_traced, zeros_static)
    for a, b in zip(jax.tree.leaves(p_traced), jax.tree.leaves(p_static), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    ("ramp", "error", "message"),
    [
        (0.0, ValueError, "`ramp` must be finite and > 0"),
        (-2.0, ValueError, "`ramp` must be finite and > 0"),
        (np.inf, ValueError, "`ramp` must be finite and > 0"),
        (np.nan, ValueError, "`ramp` must be finite and > 0"),
        (1e-50, ValueError, "`ramp` must be finite and > 0 in float32"),  # 0 in float32
        (1e300, ValueError, "`ramp` must be finite and > 0 in float32"),  # inf in float32
        (True, TypeError, "`ramp` must be a real number"),
        ("quadratic", ValueError, "`ramp` must be one of"),
        (np.ones(2), TypeError, "`ramp` must be a scalar"),
        (lambda count: 3.0, TypeError, "`ramp` must be a number, not a callable"),
    ],
)
def test_a_bad_ramp_is_refused_by_name(ramp, error, message):
    with pytest.raises(error, match=message):
        optax_l1.sparsity_target(0.5, ramp_steps=10, ramp=ramp)


@pytest.mark.parametrize("hold", ["support", "track"])
@pytest.mark.parametrize("precondition", [False, True])
def test_sparsity_follows_the_ramp_and_ends_on_target(hold, precondition):
    lr, target, begin, ramp = 0.05, 0.8, 5, 40
    opts = dict(ramp_steps=ramp, begin_step=begin, hold=hold, mask=MASK)
    if precondition:
        tx = optax_l1.sparsity_target(target, optimizer=optax.adam(lr), **opts)
    else:
        tx = optax.chain(optax.adam(lr), optax_l1.sparsity_target(target, **opts))
    p, _, (measured, threshold, scheduled, recount) = _run(tx, 80)
    t = np.arange(80)
    np.testing.assert_allclose(scheduled, _ramp(t, target, ramp, begin), atol=1e-6)
    # Exactly floor(s_t n) zeros after every update of the ramp (no ties in this problem).
    np.testing.assert_array_equal(_count(measured), _k(scheduled))
    np.testing.assert_array_equal(measured, recount)  # the state agrees with sparsity()
    assert abs(float(optax_l1.sparsity(p, mask=MASK)) - target) < 0.005
    assert np.all(np.isfinite(threshold)) and np.all(threshold >= 0)
    assert np.all(threshold[: begin + 1] == 0) and np.all(threshold[begin + 1 : begin + ramp] > 0)
    if hold == "support":  # no search once frozen: the last threshold is kept
        assert np.all(threshold[begin + ramp + 1 :] == threshold[begin + ramp])


@pytest.mark.parametrize("shrink", ["hard", "soft"])
def test_zeros_are_the_smallest_and_survivors_kept_or_shrunk(shrink):
    lr = 0.1
    params, _ = _problem(1)
    grads = jax.tree.map(lambda x: 0.3 * jnp.sign(x), params)
    tx = optax.chain(
        optax.sgd(lr),
        optax_l1.sparsity_target(
            0.5, ramp_steps=1, begin_step=0, shrink=shrink, latent=False, mask=MASK
        ),
    )
    state = tx.init(params)
    _, state = tx.update(grads, state, params)  # count 0: ramp at 0, identity
    u, state = tx.update(grads, state, params)  # count 1: the full target
    new = optax.apply_updates(params, u)
    z = np.concatenate([np.ravel(params[k] - lr * grads[k]) for k in ("w", "v")])
    w = np.concatenate([np.ravel(params[k]) for k in ("w", "v")])
    k = int(np.floor(0.5 * z.size))
    if shrink == "soft":  # scores z = p + u and shrinks the survivors
        tau = np.sort(np.abs(z))[k - 1]
        expected = np.sign(z) * np.maximum(np.abs(z) - tau, 0)
    else:  # hard without a latent copy: scores the params before the update (GMP's
        # order); the survivors are exactly where the optimizer put them
        tau = np.sort(np.abs(w))[k - 1]
        expected = np.where(np.abs(w) > tau, z, 0.0)
    got = np.concatenate([np.ravel(new[k]) for k in ("w", "v")])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert int(np.sum(got == 0)) == k
    np.testing.assert_allclose(float(_target_state(state).threshold), tau, rtol=1e-6)
    np.testing.assert_array_equal(new["b"], params["b"] - lr * grads["b"])  # masked out


@pytest.mark.parametrize("shrink", ["hard", "soft"])
def test_preconditioned_threshold_matches_numpy(shrink):
    lr = 0.1
    params, goal = _problem(2)
    tx = optax_l1.sparsity_target(
        0.6, ramp_steps=1, optimizer=optax.adam(lr), shrink=shrink, latent=False, mask=MASK
    )
    state = tx.init(params)
    grads = jax.grad(_loss)(params, goal)
    _, state = tx.update(grads, state, params)
    grads = jax.tree.map(lambda g: 1.5 * g, grads)
    adam_u, adam_s = optax.adam(lr).update(grads, state.inner_state, params)
    u, state = tx.update(grads, state, params)
    # both score in the metric after the update (this step's second moment); soft scores
    # z, hard (no latent copy) the params before the update
    nu = adam_s[0].nu
    z = {k: np.asarray(params[k] + adam_u[k], np.float64) for k in ("w", "v")}
    w = z if shrink == "soft" else {k: np.asarray(params[k], np.float64) for k in ("w", "v")}
    d = {k: np.sqrt(np.asarray(nu[k], np.float64)) + 1e-8 for k in ("w", "v")}
    score = np.concatenate([np.ravel(np.abs(w[k]) * d[k]) for k in ("w", "v")])
    kth = int(np.floor(0.6 * score.size))
    tau = np.sort(score)[kth - 1]
    new = optax.apply_updates(params, u)
    for k in ("w", "v"):
        kept = z[k] if shrink == "hard" else z[k] - np.clip(z[k], -tau / d[k], tau / d[k])
        ref = np.where(np.abs(w[k]) * d[k] <= tau, 0.0, kept)
        np.testing.assert_allclose(new[k], ref, rtol=2e-5, atol=1e-6)
    assert _count(state.sparsity) == kth
    np.testing.assert_allclose(float(state.threshold), tau, rtol=1e-5)


def _count_primitive(jaxpr, name: str) -> int:
    """Equations named ``name`` in ``jaxpr`` and every jaxpr nested in it (cond branches)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == name
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's jaxpr
                if hasattr(sub, "eqns"):
                    n += _count_primitive(sub, name)
    return n


def test_small_leaves_are_packed_raw_before_they_are_scored():
    # 30 small kernels (float32 and bfloat16) and one over a count chunk, in Adam's metric:
    # the search scores one concatenation of the small ones (one |.|, not one per leaf,
    # which is what made thousands of small kernels slow to compile), and still zeroes
    # exactly the smallest scores.
    rng = np.random.default_rng(3)
    params = {f"k{i:02d}": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32) for i in range(30)}
    for i in range(0, 30, 3):
        params[f"k{i:02d}"] = params[f"k{i:02d}"].astype(jnp.bfloat16)
    params["big"] = jnp.asarray(rng.standard_normal(2**16 + 5), jnp.float32)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
    tx = optax_l1.sparsity_target(0.7, ramp_steps=3, optimizer=optax.adam(0.1), latent=False)
    state = tx.init(params)
    _, state = tx.update(grads, state, params)  # a step in the ramp: nu is not zero after it
    nu = state.inner_state[0].nu  # hard, no latent copy: the metric before the update
    adam_u, _ = optax.adam(0.1).update(grads, state.inner_state, params)
    u, state = tx.update(grads, state, params)
    names = sorted(params)
    w = [np.abs(np.asarray(params[k], np.float32)).ravel() for k in names]
    d = [(np.sqrt(np.asarray(nu[k], np.float32)) + np.float32(1e-8)).ravel() for k in names]
    score = np.concatenate([x * y for x, y in zip(w, d, strict=True)])
    kth = int(np.floor(float(state.scheduled) * score.size))
    tau = np.sort(score)[kth - 1]
    new = optax.apply_updates(params, u)
    for k, x, y in zip(names, w, d, strict=True):
        z = np.asarray(params[k].astype(jnp.float32) + adam_u[k], np.float64).ravel()
        ref = np.where(x * y <= tau, 0.0, z)
        np.testing.assert_allclose(np.asarray(new[k], np.float64).ravel(), ref, rtol=1e-2)
    assert 0 < kth < score.size
    assert _count(state.sparsity, score.size) == kth

    def abs_in_search(tree):
        g = jax.tree.map(jnp.zeros_like, tree)
        jaxpr = jax.make_jaxpr(tx.update)(g, tx.init(tree), tree).jaxpr
        searches = [e for e in jaxpr.eqns if e.primitive.name == "cond"]
        assert len(searches) == 1
        return max(_count_primitive(b.jaxpr, "abs") for b in searches[0].params["branches"])

    # As many |.| with 30 small kernels as with 3: one scoring of their concatenation.
    few = {k: v for k, v in params.items() if k == "big" or k < "k03"}
    assert abs_in_search(params) == abs_in_search(few) > 0


def _eager(tx, steps, seed=0):
    """Op-by-op training (no jit): XLA's fusion of a whole jitted step may contract
    ``p + lr * x`` into an FMA in one program and not in another, which moves the last
    bit; op by op, the arithmetic of two programs can be compared exactly."""
    params, goal = _problem(seed)
    state = tx.init(params)
    for _ in range(steps):
        u, state = tx.update(jax.grad(_loss)(params, goal), state, params)
        params = optax.apply_updates(params, u)
    return params, state


@pytest.mark.parametrize("precondition", [False, True])
def test_target_zero_is_the_optimizer_bit_for_bit(precondition):
    lr = 0.05
    if precondition:
        tx = optax_l1.sparsity_target(0.0, ramp_steps=2, optimizer=optax.adam(lr))
    else:
        tx = optax.chain(optax.adam(lr), optax_l1.sparsity_target(0.0, ramp_steps=2))
    p_tx, state = _eager(tx, 4)
    p_ref, _ = _eager(optax.adam(lr), 4)
    for k in p_ref:
        np.testing.assert_array_equal(np.asarray(p_tx[k]), np.asarray(p_ref[k]))
    assert float(_target_state(state).threshold) == 0 == float(_target_state(state).sparsity)
    # Under jit the two programs agree to the last bit or two (see _eager).
    p_jit, _, (measured, threshold, _, _) = _run(tx, 4)
    for k in p_ref:
        np.testing.assert_allclose(np.asarray(p_jit[k]), np.asarray(p_ref[k]), rtol=1e-6, atol=1e-6)
    assert np.all(threshold == 0) and np.all(measured == 0)


def test_hold_support_freezes_zeros_and_passes_the_update_unshrunk():
    lr = 0.05
    tx = optax.chain(optax.adam(lr), optax_l1.sparsity_target(0.7, ramp_steps=3, mask=MASK))
    params, state = _eager(tx, 5, seed=3)  # past count 3, the end of the ramp
    grads = jax.grad(_loss)(params, _problem(3)[1])
    adam_u, _ = optax.adam(lr).update(grads, state[0], params)
    u, state = tx.update(grads, state, params)
    for k in ("w", "v"):
        p = np.asarray(params[k])
        np.testing.assert_array_equal(np.asarray(u[k])[p == 0], 0.0)
        # the step lands on z = latent + u, where the latent equals p: u to within rounding
        kept, want = np.asarray(u[k])[p != 0], np.asarray(adam_u[k])[p != 0]
        np.testing.assert_allclose(kept, want, rtol=1e-5, atol=1e-7)
        assert np.all(kept != 0)
    np.testing.assert_array_equal(u["b"], adam_u["b"])
    assert _count(state[1].sparsity) == _k(0.7)
    assert float(state[1].threshold) > 0.0  # the last search's, kept


# ----------------------------------------------------------------------------- the search


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_every_selection_finds_the_exact_kth_smallest_and_counts_up_to_it(dtype):
    rng = np.random.default_rng(0)
    a = np.abs(rng.standard_cauchy(300)).astype(np.float32)
    a[:40] = 0.0  # ties at zero
    a[40:60] = a[60]  # ties elsewhere
    a[70] = np.inf
    leaves = [jnp.asarray(a[:100], dtype).astype(jnp.float32), jnp.asarray(a[100:], dtype)]
    leaves = [x.astype(jnp.float32).reshape(-1) for x in leaves]
    ref = np.sort(np.concatenate([np.asarray(x) for x in leaves]))
    bisect = jax.jit(_select.kth_smallest_bisect)
    finders = (bisect, _select.kth_smallest_sort, _select.kth_smallest_radix)
    for k in [1, 2, 40, 41, 55, 150, 299, 300]:
        kk = jnp.asarray(k, jnp.int32)
        for find in finders:
            kth, at_most = find(leaves, kk)
            assert float(kth) == ref[k - 1]
            assert int(at_most) == int(np.sum(ref <= ref[k - 1]))  # ties included


def test_radix_select_counts_large_leaves_chunk_by_chunk():
    # Leaves larger than one chunk of the count (2**16 entries), with a partial last chunk.
    rng = np.random.default_rng(1)
    sizes = (3 * 2**16 + 123, 2**16, 77)
    leaves = [jnp.asarray(np.abs(rng.standard_normal(n)).astype(np.float32)) for n in sizes]
    leaves[0] = leaves[0].at[:5000].set(0.25)  # ties
    ref = np.sort(np.concatenate([np.asarray(x) for x in leaves]))
    radix = jax.jit(_select.kth_smallest_radix)
    for k in [1, 4000, 70_000, ref.size // 2, ref.size]:
        kth, at_most = radix(leaves, jnp.asarray(k, jnp.int32))
        assert float(kth) == ref[k - 1]
        assert int(at_most) == int(np.sum(ref <= ref[k - 1]))


@pytest.mark.parametrize("shrink", ["hard", "soft"])
def test_update_every_holds_the_support_between_searches_and_quantiles_agree(shrink):
    lr = 0.05
    opts = dict(ramp_steps=30, begin_step=2, shrink=shrink, mask=MASK)
    tx = optax.chain(optax.adam(lr), optax_l1.sparsity_target(0.7, update_every=7, **opts))
    p, _, (measured, threshold, scheduled, _) = _run(tx, 40)
    searches = [t for t in range(3, 41) if (t - 2) % 7 == 0 or t == 32]
    for t in range(3, 40):
        if t not in searches:  # the support is held: the zero count does not move
            assert threshold[t] == threshold[t - 1] and measured[t] == measured[t - 1], t
    assert _count(measured[32]) == _k(0.7)  # a search is forced at the end of the ramp
    logs = {}
    for quantile in ("radix", "bisect", "sort", "sample"):  # "sample": exact on small trees
        txq = optax.chain(optax.adam(lr), optax_l1.sparsity_target(0.7, quantile=quantile, **opts))
        logs[quantile] = _run(txq, 40)
    for quantile in ("bisect", "sort", "sample"):
        for k in p:
            np.testing.assert_array_equal(logs[quantile][0][k], logs["radix"][0][k])
        np.testing.assert_array_equal(logs[quantile][2][1], logs["radix"][2][1])


@pytest.mark.parametrize("every", [1, 2, 5, 10, 25, 100])
@pytest.mark.parametrize("shrink", ["hard", "soft"])
def test_zeros_never_exceed_the_ramp_by_more_than_a_point(every, shrink):
    """0.1 re-applied the last strength between searches and the zeros ran away (to 100%)."""
    lr = 0.05
    tx = optax.chain(
        optax.adam(lr),
        optax_l1.sparsity_target(
            0.5, ramp_steps=60, begin_step=5, update_every=every, shrink=shrink, hold="track"
        ),
    )
    _, _, (measured, _, scheduled, _) = _run(tx, 120)
    assert np.max(measured - scheduled) <= 0.01, np.max(measured - scheduled)
    assert abs(measured[-1] - 0.5) <= 0.01 or every > 50


def test_the_issue_10_runaway_example():
    params = {"w": jax.random.normal(jax.random.key(0), (1000,))}
    tx = optax_l1.sparsity_target(0.5, ramp_steps=20, update_every=10, shrink="soft")
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        u, state = tx.update({"w": 0.01 * jnp.sin(params["w"])}, state, params)
        return optax.apply_updates(params, u), state

    for _ in range(60):
        params, state = step(params, state)
        assert float(state.sparsity) <= float(state.scheduled) + 0.01


def test_smoothing_lags_but_stays_close():
    lr = 0.05
    tx = optax.chain(
        optax.adam(lr),
        optax_l1.sparsity_target(0.7, ramp_steps=40, smoothing=0.5, hold="track", latent=False),
    )
    _, _, (measured, threshold, scheduled, _) = _run(tx, 60)
    assert np.all(np.isfinite(threshold)) and np.all(threshold >= 0)
    assert np.max(np.abs(measured - scheduled)[5:]) < 0.05
    assert abs(measured[-1] - 0.7) < 0.005
    # With a frozen support the last search of the ramp is exact.
    tx = optax.chain(
        optax.adam(lr),
        optax_l1.sparsity_target(0.7, ramp_steps=40, smoothing=0.9, mask=MASK),
    )
    _, _, (measured, _, _, _) = _run(tx, 50)
    assert _count(measured[40]) == _count(measured[-1]) == _k(0.7)


def test_smoothing_never_zeroes_past_the_ramp():
    # Groups whose weights decay (gradient 0.8 w, sgd 0.1) and no latent copy: a smoothed
    # threshold above the search's own k-th score zeroed groups past the ramp, which could
    # not come back (27 of 40 columns frozen for a 0.5 target, found by a probe). Now the
    # zeros stay under the ramp's value at every step and the support ends on target.
    w = jnp.asarray(np.random.default_rng(1).standard_normal((16, 40)), jnp.float32)
    for smoothing in (0.0, 0.9):
        st = optax_l1.sparsity_target(
            0.5, ramp_steps=20, smoothing=smoothing, structure=optax_l1.Groups(0), latent=False
        )
        tx = optax.chain(optax.sgd(0.1), st)
        params, state = {"w": w}, tx.init({"w": w})
        for _ in range(26):
            u, state = tx.update({"w": 0.8 * params["w"]}, state, params)
            params = optax.apply_updates(params, u)
            dead = float(np.mean(np.all(np.asarray(params["w"]) == 0, axis=0)))
            assert dead <= float(state[1].scheduled) + 1e-6
        assert int(np.sum(np.all(np.asarray(params["w"]) == 0, axis=0))) == 20


def test_float16_group_scores_do_not_underflow():
    # Columns of ~1e-4 weights: squared in float16 they underflowed to 0 and tied, so
    # latent=False zeroed 21 of 32 columns for a 0.5 target (a probe); the norms are now
    # taken in float32, as with the latent copy.
    w = jnp.asarray(np.random.default_rng(0).standard_normal((64, 32)) * 1e-4, jnp.float16)
    for latent in (False, True):
        tx = optax_l1.sparsity_target(
            0.5, ramp_steps=1, structure=optax_l1.Groups(0), latent=latent
        )
        params, state = {"w": w}, tx.init({"w": w})
        for _ in range(2):
            u, state = tx.update({"w": jnp.zeros_like(w)}, state, params)
            params = optax.apply_updates(params, u)
        dead = np.all(np.asarray(params["w"]) == 0, axis=0)
        norms = np.linalg.norm(np.asarray(w, np.float64), axis=0)
        assert dead.sum() == 16
        np.testing.assert_array_equal(np.flatnonzero(dead), np.sort(np.argsort(norms)[:16]))


# ----------------------------------------------------------------------------- integration


def test_one_compilation_schedule_and_robust_threshold():
    traces = []
    sched = optax.cosine_decay_schedule(0.1, 30, alpha=0.0)  # reaches lr = 0 at the end
    tx = optax.chain(
        optax.sgd(sched),
        optax_l1.sparsity_target(0.6, ramp_steps=10, hold="track", mask=MASK),
    )
    params, goal = _problem(4)

    @jax.jit
    def step(p, s):
        traces.append(1)
        u, s = tx.update(jax.grad(_loss)(p, goal), s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    thresholds = []
    for t in range(34):
        params, state = step(params, state)
        thresholds.append(float(state[1].threshold))
        if t >= 10:  # lr reaches 0 at the end: the zeros stay on target
            assert _count(state[1].sparsity) == _k(0.6)
    assert len(traces) == 1
    assert all(np.isfinite(s) and s >= 0 for s in thresholds)
    assert jax.tree.map(lambda x: x.dtype, state) == jax.tree.map(
        lambda x: x.dtype, tx.init(params)
    )


def test_nan_gradient_entries_do_not_make_the_threshold_nan():
    lr = 0.1
    tx = optax.chain(optax.sgd(lr), optax_l1.sparsity_target(0.5, ramp_steps=4, mask=MASK))
    params, goal = _problem(5)
    state = tx.init(params)
    for _ in range(3):
        u, state = tx.update(jax.grad(_loss)(params, goal), state, params)
        params = optax.apply_updates(params, u)
    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), jax.grad(_loss)(params, goal))
    _, state = tx.update(bad, state, params)
    assert np.isfinite(float(state[1].threshold)) and float(state[1].threshold) > 0


def test_inject_hyperparams_matches_direct():
    lr = 0.05
    direct = optax.chain(optax.adam(lr), optax_l1.sparsity_target(0.7, ramp_steps=10, mask=MASK))
    injected = optax.chain(
        optax.adam(lr),
        optax.inject_hyperparams(optax_l1.sparsity_target, static_args=("mask",))(
            target=0.7, ramp_steps=10, mask=MASK
        ),
    )
    p_d, _, logs_d = _run(direct, 20)
    p_i, s_i, logs_i = _run(injected, 20)
    for k in p_d:
        np.testing.assert_array_equal(np.asarray(p_d[k]), np.asarray(p_i[k]))
    assert float(s_i[1].hyperparams["target"]) == pytest.approx(0.7)


def test_masks_callable_bf16_extra_args_and_masked_wrapper():
    params = {
        "dense": {"kernel": jnp.linspace(-1, 1, 12).reshape(3, 4), "bias": jnp.ones(4)},
        "step": jnp.array(3),
    }
    grads = jax.tree.map(jnp.zeros_like, params)
    tx = optax_l1.sparsity_target(0.5, ramp_steps=1, mask=optax_l1.kernel_mask)
    state = tx.init(params)
    _, state = tx.update(grads, state, params, loss=1.0)  # extra args accepted
    u, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, u)
    assert int(jnp.sum(new["dense"]["kernel"] == 0)) == 6
    np.testing.assert_array_equal(new["dense"]["bias"], params["dense"]["bias"])
    assert float(state.sparsity) == 0.5
    # bf16 params: exact zeros in bf16, update dtype kept.
    p16 = {"dense": jax.tree.map(lambda x: x.astype(jnp.bfloat16), params["dense"])}
    g16 = jax.tree.map(jnp.zeros_like, p16)
    s16 = tx.init(p16)
    _, s16 = tx.update(g16, s16, p16)
    u16, s16 = tx.update(g16, s16, p16)
    assert u16["dense"]["kernel"].dtype == jnp.bfloat16
    assert int(jnp.sum(optax.apply_updates(p16, u16)["dense"]["kernel"] == 0)) == 6
    # Inside optax.masked: only the selected leaves are seen and counted.
    mtx = optax.masked(optax_l1.sparsity_target(0.5, ramp_steps=1), optax_l1.kernel_mask)
    ms = mtx.init(params)
    _, ms = mtx.update(grads, ms, params)
    mu, ms = mtx.update(grads, ms, params)
    assert int(jnp.sum(optax.apply_updates(params, mu)["dense"]["kernel"] == 0)) == 6
    assert float(ms.inner_state.sparsity) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(target=1.0), ValueError, "`target`"),
        (dict(target=-0.1), ValueError, "`target`"),
        (dict(target=float("nan")), ValueError, "`target`"),
        (dict(target="0.9"), TypeError, "`target`"),
        (dict(ramp_steps=0), ValueError, "`ramp_steps`"),
        (dict(ramp_steps=-5), ValueError, "`ramp_steps`"),
        (dict(ramp_steps=2.5), ValueError, "`ramp_steps`"),
        (dict(begin_step=-1), ValueError, "`begin_step`"),
        (dict(update_every=0), ValueError, "`update_every`"),
        (dict(smoothing=1.0), ValueError, "`smoothing`"),
        (dict(learning_rate=0.1), TypeError, "learning_rate"),  # 0.1's argument: gone
        (dict(shrink="firm"), ValueError, "`shrink`"),
        (dict(ramp="quadratic"), ValueError, "`ramp`"),
        (dict(hold="forever"), ValueError, "`hold`"),
        (dict(quantile="median"), ValueError, "`quantile`"),
        (dict(optimizer="adam"), TypeError, "`optimizer`"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    args = dict(target=0.9, ramp_steps=10) | kwargs
    with pytest.raises(exc, match=match):
        optax_l1.sparsity_target(**args)


def test_missing_params_and_optimizer_without_second_moment():
    params = {"w": jnp.ones(3)}
    tx = optax_l1.sparsity_target(0.5, ramp_steps=2)
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(params, tx.init(params))
    sgd_tx = optax_l1.sparsity_target(0.5, ramp_steps=2, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="`optimizer`"):
        sgd_tx.init(params)


@pytest.mark.parametrize("params", [{"k": jnp.ones((2, 3)), "b": jnp.ones(3)}, jnp.ones((2, 3))])
def test_an_optimizer_whose_second_moment_is_not_diagonal_is_refused(params):
    # novograd keeps one `nu` per leaf: two leaves crashed unnamed (a broadcasting error),
    # one leaf had its per-layer number read as every weight's metric.
    tx = optax_l1.sparsity_target(0.5, ramp_steps=1, optimizer=optax.novograd(0.1))
    with pytest.raises(ValueError, match="second moment must be diagonal"):
        tx.init(params)


# ----------------------------------------------------------------------------- sharding

SHARDED_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np, optax, optax_l1
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    # "sample": a leaf large enough to be sampled, the sampled search only, the support held
    # after the ramp (its last search is exact); else small leaves and the exact searches.
    sampled = sys.argv[1:] == ["sample"]
    devices = jax.devices()
    mesh = Mesh(np.array(devices).reshape(4, 2), ("a", "b"))
    specs = {"w": P("a", "b"), "v": P("a"), "b": P()}
    rng = np.random.default_rng(0)
    shapes = {"w": (1024, 1024) if sampled else (32, 16), "v": (40,), "b": (16,)}
    host = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    goal = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in host.items()}
    mask = {"w": True, "v": True, "b": False}

    def run(tx, sharded, steps=25):
        def put(tree):
            where = {k: NamedSharding(mesh, specs[k]) if sharded else devices[0] for k in tree}
            return {k: jax.device_put(v, where[k]) for k, v in tree.items()}

        p, g = put(host), put(goal)

        @jax.jit
        def step(p, s):
            grads = jax.tree.map(lambda x, y: x - y, p, g)
            u, s = tx.update(grads, s, p)
            return optax.apply_updates(p, u), s

        s = tx.init(p)
        hlo = step.lower(p, s).compile().as_text()
        for _ in range(steps):
            # Wait for each step: collectives on 8 simulated devices can stall otherwise.
            p, s = jax.block_until_ready(step(p, s))
        return p, s, hlo.count("all-gather")

    out = {"n_devices": len(devices)}
    for quantile in ("sample",) if sampled else ("radix", "bisect", "sort"):
        lr = 0.05
        tx = optax.chain(optax.adam(lr), optax_l1.sparsity_target(
            0.85, ramp_steps=15, hold="support" if sampled else "track", quantile=quantile,
            mask=mask))
        p_sh, s_sh, gathers = run(tx, True)
        p_one, s_one, _ = run(tx, False)
        n = int(np.prod(shapes["w"])) + 40
        out[quantile] = {
            "state_sparsity_sharded": float(s_sh[1].sparsity),
            "state_sparsity_single": float(s_one[1].sparsity),
            "numpy_sparsity": sum(int(np.sum(np.asarray(p_sh[k]) == 0)) for k in ("w", "v")) / n,
            "expected": int(np.floor(np.float32(0.85) * np.float32(n))),
            "n": n,
            "params_equal": all(
                np.array_equal(np.asarray(p_sh[k]), np.asarray(p_one[k])) for k in host
            ),
            "threshold_equal": float(s_sh[1].threshold) == float(s_one[1].threshold),
            "w_devices": len(p_sh["w"].sharding.device_set),
            "all_gathers": gathers,
        }
    print("RESULT " + json.dumps(out))
    """
)


def _on_8_devices(script: str, *args: str) -> Any:
    """The RESULT json a child Python prints, run with 8 simulated CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_sharded_params_on_8_host_devices_match_one_device():
    out = _on_8_devices(SHARDED_CHILD)
    assert out["n_devices"] == 8
    for quantile in ("radix", "bisect", "sort"):
        r = out[quantile]
        assert r["w_devices"] == 8
        assert r["params_equal"] and r["threshold_equal"]
        assert r["state_sparsity_sharded"] == r["state_sparsity_single"]
        assert _count(r["state_sparsity_sharded"], r["n"]) == r["expected"]
        assert _count(r["numpy_sparsity"], r["n"]) == r["expected"]
    assert out["bisect"]["all_gathers"] == 0  # the counts are all-reduces: nothing gathered


KTH_CHILD = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from optax_l1 import _select

    rng = np.random.default_rng(0)
    devices = jax.devices()
    cases = {  # the kernel and the mesh: all 8 devices, or 6 of them (a sub-mesh)
        "all": ((32, 16), Mesh(np.array(devices).reshape(4, 2), ("a", "b"))),
        "sub": ((30, 16), Mesh(np.array(devices[:6]).reshape(3, 2), ("a", "b"))),
        "sub-large": ((999, 96), Mesh(np.array(devices[:6]).reshape(3, 2), ("a", "b"))),
    }
    out = {}
    for case, (shape, mesh) in cases.items():
        host = [np.abs(rng.normal(size=s)).astype(np.float32) for s in (shape, (41,), (13,))]
        specs = [P("a", "b"), P(), P()]
        leaves = [jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(host, specs)]
        ref = np.sort(np.concatenate([x.ravel() for x in host]))
        for name in ("radix", "sort", "sample"):
            find = jax.jit(lambda xs, k, name=name: _select.kth_smallest(xs, k, name))
            right = wrong = flagged = 0
            for k in range(1, ref.size + 1, max(1, ref.size // 40)):
                kth, at_most = find(leaves, jnp.int32(k))
                if int(at_most) < 0 and np.isnan(float(kth)):
                    flagged += 1
                elif float(kth) == ref[k - 1] and int(at_most) == int(np.sum(ref <= ref[k - 1])):
                    right += 1
                else:
                    wrong += 1
            out[f"{case}/{name}"] = {"right": right, "wrong": wrong, "flagged": flagged}
    print("RESULT " + json.dumps(out))
    """
)


def test_kth_smallest_of_sharded_leaves_is_right_or_flagged_never_wrong():
    # The small leaves are packed into one flat array (553 entries here), which 8 devices
    # do not divide: XLA's partitioner padded it and the radix count took the padding for
    # zeros (every k-th smallest wrong). The counted arrays are now aligned to the device
    # count with NaN (never counted), so a mesh over every device is right; a sub-mesh
    # (6 of 8 devices) may still shard unevenly, and the count's total then flags it (a
    # NaN k-th and a count of -1) instead of answering wrong.
    out = _on_8_devices(KTH_CHILD)
    for key, r in out.items():
        assert r["wrong"] == 0, (key, r)
    for name in ("radix", "sort", "sample"):
        assert out[f"all/{name}"]["flagged"] == 0, out[f"all/{name}"]
    assert all(out[f"{c}/sort"]["flagged"] == 0 for c in ("sub", "sub-large"))


def test_a_miscounted_search_makes_the_update_nan():
    # A count that fails its total (the case the test above flags) is a run-time fault:
    # the step's regularized updates and the threshold are NaN, never a wrong support.
    # Without the check the step zeroed nothing and trained on (tau = -inf).
    params = {"w": jnp.linspace(-1.0, 1.0, 64).reshape(8, 8), "b": jnp.ones(3)}
    tx = optax_l1.sparsity_target(0.5, ramp_steps=1, mask={"w": True, "b": False})
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    u, state = tx.update(grads, state, params)  # count 0: the ramp is at 0, no search
    u, _ = tx.update(grads, state, params)  # count 1: the search, its count right
    assert np.all(np.isfinite(np.asarray(u["w"]))) and int(jnp.sum(params["w"] + u["w"] == 0))
    original = _select.kth_smallest_radix

    def miscounted(scores, k):
        kth, _ = original(scores, k)
        return jnp.full_like(kth, jnp.nan), jnp.int32(-1)

    # (The check runs only with several devices: on one, XLA shards nothing.)
    with (
        mock.patch.object(_select, "kth_smallest_radix", miscounted),
        mock.patch.object(jax, "device_count", lambda: 8),
    ):
        u, s = jax.jit(tx.update)(grads, state, params)
    assert np.all(np.isnan(np.asarray(u["w"]))) and np.isnan(float(s.threshold))
    np.testing.assert_array_equal(u["b"], grads["b"])


def test_sampled_search_on_8_host_devices_matches_one_device():
    # A 1024 x 1024 leaf sharded 4 x 2 is sampled (every 17th entry of the flattened leaf):
    # the sharded run picks the sample and the thresholds of one device, and the ramp's
    # last, exact search leaves exactly the target's zeros.
    r = _on_8_devices(SHARDED_CHILD, "sample")["sample"]
    assert r["w_devices"] == 8
    assert r["params_equal"] and r["threshold_equal"]
    assert r["state_sparsity_sharded"] == r["state_sparsity_single"]
    assert _count(r["numpy_sparsity"], r["n"]) == r["expected"]


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_quick_mode_runs(tmp_path):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    out = tmp_path / "target_sparsity.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "target_sparsity.py"), "--quick"]
        # Two of the five methods (each compiles a training loop): the library's and the
        # baseline the table pairs against; the variants are unit-tested above.
        + ["--methods", "sparsity_target", "gmp-global", "--json", str(out)]
        + ["--ramp", "2.5"],  # the library's ramp exponent (still on target at the end)
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("# target_sparsity\n")
    assert "| 0.90 | sparsity_target |" in proc.stdout
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"sparsity_target", "gmp-global"}
    for runs in results.values():
        (zeros, test_acc, train_acc, *_), *_ = runs["0.9"]
        assert abs(zeros - 0.9) < 0.005 and 0.5 < test_acc <= 1 and 0.5 < train_acc <= 1


# ----------------------------------------------------------------------------- review fixes


def test_concrete_array_hyperparameters_are_checked():
    with pytest.raises(ValueError, match="`target`"):
        optax_l1.sparsity_target(jnp.array(1.5), ramp_steps=5)
    with pytest.raises(ValueError, match="`target`"):
        optax_l1.sparsity_target(np.float64(1 - 1e-9), ramp_steps=5)  # 1.0 in float32
    with pytest.raises(ValueError, match="`ramp_steps`"):
        optax_l1.sparsity_target(0.5, ramp_steps=jnp.array(0))
    with pytest.raises(TypeError, match="`mask`"):
        optax_l1.sparsity_target(0.5, ramp_steps=5, mask=True)  # at construction


def test_int_and_python_float_leaves_with_a_wrapped_optimizer():
    params = {"w": jnp.linspace(-1.0, 1.0, 10), "step": jnp.array(3, jnp.int32)}
    grads = {"w": jnp.ones(10), "step": jnp.array(0, jnp.int32)}
    tx = optax_l1.sparsity_target(0.5, ramp_steps=1, optimizer=optax.adam(0.1))
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(p, s):
        traces.append(None)
        return tx.update(grads, s, p)

    for _ in range(3):
        u, state = step(params, state)
        params = optax.apply_updates(params, u)
    assert len(traces) == 1  # int leaves get no optimizer slot: state dtypes stay put
    assert u["step"].dtype == jnp.int32 and int(u["step"]) == 0
    # A Python float leaf is a weight too (as for l1_prox): counted, not a crash.
    floats = {"w": jnp.linspace(-1.0, 1.0, 10), "s": 2.0}
    tx = optax_l1.sparsity_target(0.5, ramp_steps=1)
    state = tx.init(floats)
    for _ in range(3):
        u, state = tx.update({"w": jnp.ones(10), "s": 0.5}, state, floats)
        floats = optax.apply_updates(floats, u)
    zeros = int(jnp.sum(floats["w"] == 0)) + int(floats["s"] == 0)
    assert zeros == 5  # floor(0.5 * 11) once the ramp is done
    assert float(state.sparsity) == pytest.approx(zeros / 11)


# ----------------------------------------------------------------------------- latent copy


def _come_back_run(steps: int, **kwargs):
    """sgd(1) on w = [1, 0.5, -2, 0.05] where only w[3] moves (+0.2 a step), at 25% zeros
    from count 1 on: the params and the latent copy (None without one) after each step."""
    params = {"w": jnp.array([1.0, 0.5, -2.0, 0.05])}
    grads = {"w": jnp.array([0.0, 0.0, 0.0, -0.2])}
    target = optax_l1.sparsity_target(0.25, ramp_steps=1, hold="track", **kwargs)
    tx = optax.chain(optax.sgd(1.0), target)
    state = tx.init(params)
    seen, latents = [], []
    for _ in range(steps):
        u, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, u)
        seen.append(np.asarray(params["w"]).copy())
        latent = state[1].latent
        latents.append(None if latent is None else np.asarray(latent["w"]).copy())
    return seen, latents


@pytest.mark.parametrize("latent", [True, False])
def test_latent_copy_lets_a_zeroed_weight_come_back(latent):
    """A zeroed weight keeps its updates in the latent copy and returns when it outgrows the
    threshold; with latent=False it restarts from 0 each step and stays pruned."""
    until = dict(latent_until=1.0) if latent else {}  # the copy for the whole ramp
    seen, latents = _come_back_run(6, latent=latent, **until)
    if latent:  # the latent copy is the params where they are not zero
        for w, x in zip(seen, latents, strict=True):
            np.testing.assert_array_equal(x[w != 0], w[w != 0])
    # Count 1: one zero among 4, the smallest |z|: w[3] = 0.45.
    np.testing.assert_allclose(seen[1], [1.0, 0.5, -2.0, 0.0])
    if latent:  # its latent reached 0.65 > 0.5 at count 2: it is back and w[1] goes
        np.testing.assert_allclose(seen[2], [1.0, 0.0, -2.0, 0.65], rtol=1e-6)
        np.testing.assert_allclose(seen[-1], [1.0, 0.0, -2.0, 1.25], rtol=1e-6)
    else:  # from 0 it gets 0.2 < 0.5 each step: pruned for good
        np.testing.assert_allclose(seen[-1], [1.0, 0.5, -2.0, 0.0])
    assert all(int(np.sum(w == 0)) == 1 for w in seen[1:])


def test_latent_until_resets_zeroed_latents_from_that_point_of_the_ramp():
    """latent_until=0.5 of a 1-step ramp: a weight zeroed at count 1 or later restarts from
    0 on the next step, so the weight that comes back with the full latent copy stays pruned."""
    seen, latents = _come_back_run(4, latent_until=0.5)
    np.testing.assert_allclose(seen[-1], [1.0, 0.5, -2.0, 0.0])
    # Zeroed at count 1 with z = 0.25 + 0.2 (the copy keeps it); from count 2 on each step
    # starts it from 0, so the copy holds one update (0.2), never an accumulation of them.
    np.testing.assert_allclose([float(x[3]) for x in latents[1:]], [0.45, 0.2, 0.2], rtol=1e-6)


def test_latent_until_matches_resetting_the_state_by_hand():
    """The option is the full latent copy with, after the stop, zeroed weights' latents set to
    0 in the state after each step (written here on the outside of the transform)."""
    p0, goal = _problem(0)
    begin, ramp, until = 3, 10, 0.3
    stop = begin + until * ramp

    def make(**kw):
        st = optax_l1.sparsity_target(0.7, ramp_steps=ramp, begin_step=begin, **kw)
        return optax.chain(optax.adam(0.05), st)

    lib, ref = make(latent_until=until), make(latent_until=1.0)
    p_lib, s_lib, p_ref, s_ref = p0, lib.init(p0), p0, ref.init(p0)
    for t in range(20):
        u, s_lib = lib.update(jax.grad(_loss)(p_lib, goal), s_lib, p_lib)
        p_lib = optax.apply_updates(p_lib, u)
        u, s_ref = ref.update(jax.grad(_loss)(p_ref, goal), s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        if t >= stop:
            latent = jax.tree.map(
                lambda x, p: None if x is None else jnp.where(p == 0, 0.0, x),
                s_ref[1].latent,
                p_ref,
                is_leaf=lambda x: x is None,
            )
            s_ref = (s_ref[0], s_ref[1]._replace(latent=latent))
        for a, b in zip(jax.tree.leaves(p_lib), jax.tree.leaves(p_ref), strict=True):
            np.testing.assert_array_equal(a, b)
    assert optax_l1.sparsity(p_lib, mask=MASK) > 0.6


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(latent_until=0.0),
        dict(latent_until=1.5),
        dict(latent_until=0.5, latent=False),
        dict(latent_until=1.0, latent=False),
    ],
)
def test_latent_until_bad_values_name_the_argument(kwargs):
    with pytest.raises(ValueError, match="`latent_until`"):
        optax_l1.sparsity_target(0.5, ramp_steps=3, **kwargs)


def test_latent_until_of_a_wrong_kind_is_a_type_error_with_the_static_args_hint():
    for bad in (True, jnp.float32(0.5)):
        with pytest.raises(TypeError, match="`latent_until` must be a Python number"):
            optax_l1.sparsity_target(0.5, ramp_steps=3, latent_until=bad)
    tx = optax.inject_hyperparams(optax_l1.sparsity_target)(0.5, ramp_steps=3, latent_until=0.5)
    with pytest.raises(TypeError, match="static_args=\\('latent_until',\\)"):
        tx.init({"w": jnp.ones(4)})
    tx = optax.inject_hyperparams(optax_l1.sparsity_target, static_args=("latent_until",))(
        0.5, ramp_steps=3, latent_until=0.5
    )
    tx.init({"w": jnp.ones(4)})


def test_latent_until_1_with_hold_track_keeps_the_copy_after_the_ramp():
    """latent_until=1 (the N:M default) never restarts the copy: with hold="track" a zeroed
    weight can still come back after the ramp, which any value below 1 stops (the doc said
    it restarted from t0 + latent_until T, a probe found; the doc now says this)."""

    def run(until):
        tx = optax.chain(
            optax.adam(0.05),
            optax_l1.sparsity_target(0.5, ramp_steps=8, hold="track", latent_until=until),
        )
        p = {"w": 0.3 * jax.random.normal(jax.random.PRNGKey(0), (16, 8))}
        s = tx.init(p)
        drift = jax.random.normal(jax.random.PRNGKey(99), (16, 8))
        for i in range(20):
            noise = jax.random.normal(jax.random.PRNGKey(i + 1), (16, 8))
            u, s = tx.update({"w": drift * jnp.cos(i / 3.0) + 0.5 * noise}, s, p)
            p = optax.apply_updates(p, u)
        return np.asarray(p["w"])

    assert not np.array_equal(run(1.0), run(0.9999))  # the same stop, ceil(.9999 * 8): 8


def test_the_default_latent_copy_lasts_half_the_ramp():
    def final(**kw):
        tx = optax.chain(optax.adam(0.05), optax_l1.sparsity_target(0.7, ramp_steps=10, **kw))
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(_run(tx, 15)[0])])

    default = final()
    np.testing.assert_array_equal(default, final(latent_until=0.5))
    assert not np.array_equal(default, final(latent_until=1.0))


def test_latent_false_keeps_no_copy_and_matches_iterative_hard_thresholding():
    tx = optax.chain(optax.adam(0.05), optax_l1.sparsity_target(0.6, ramp_steps=10, latent=False))
    p, s, _ = _run(tx, 20)
    assert s[1].latent is None
    tx_latent = optax.chain(optax.adam(0.05), optax_l1.sparsity_target(0.6, ramp_steps=10))
    _, s_latent, _ = _run(tx_latent, 20)
    assert jax.tree.structure(s_latent[1].latent) == jax.tree.structure(p)
    with pytest.raises(TypeError, match="`latent` must be True or False"):
        optax_l1.sparsity_target(0.5, ramp_steps=3, latent="yes")


def test_latent_copy_is_its_own_buffer_so_params_and_state_can_both_be_donated():
    params = {"w": jnp.linspace(-1.0, 1.0, 8)}
    tx = optax.chain(optax.adam(0.1), optax_l1.sparsity_target(0.5, ramp_steps=2))
    state = tx.init(params)
    assert state[1].latent["w"] is not params["w"]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s):
        u, s = tx.update(jax.tree.map(jnp.ones_like, p), s, p)
        return optax.apply_updates(p, u), s

    for _ in range(3):
        params, state = step(params, state)
    assert int(jnp.sum(params["w"] == 0)) == 4


@pytest.mark.parametrize(
    "latent, fisher, leaves, quantile",
    [
        (True, False, 1, "radix"),
        (False, False, 1, "radix"),
        (True, True, 1, "radix"),
        (True, False, 16, "radix"),
        (False, True, 1, "radix"),
        (False, True, 16, "radix"),
        (True, False, 1, "sample"),
        (False, True, 1, "sample"),
    ],
    ids=[
        "latent",
        "plain",
        "fisher",
        "one-chunk-leaves",
        "fisher-plain",
        "fisher-plain-one-chunk-leaves",
        "sample",
        "fisher-plain-sample",
    ],
)
def test_a_search_step_writes_no_full_size_temporary(latent, fisher, leaves, quantile):
    # Compile-time memory of one donated adam + sparsity_target step (search included): the
    # scores are computed chunk by chunk where the count reads them (from z or the params,
    # and adam's nu for the Fisher score), so nothing of the params' size is written but
    # the state; before, the scores were one full-size temporary (three with `optimizer`).
    # Leaves of exactly one chunk (unrolled loops) once had all their digits held at once,
    # and the metric sqrt(nu) of all of them. Without the latent copy the Fisher step once
    # read the old nu after the new one was written (a copy of nu on every step).
    side = 1024 if leaves == 1 else int(np.sqrt(_select._CHUNK))
    params = {f"w{i}": jnp.zeros((side, side), jnp.float32) for i in range(leaves)}
    leaf_bytes = side * side * 4 * leaves
    for every in (1, 10):
        opts = dict(ramp_steps=100, update_every=every, latent=latent, quantile=quantile)
        if fisher:
            tx = optax_l1.sparsity_target(0.9, optimizer=optax.adam(1e-3), **opts)
        else:
            tx = optax.chain(optax.adam(1e-3), optax_l1.sparsity_target(0.9, **opts))

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        compiled = step.lower(params, tx.init(params), params).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        assert temp <= 8 * _select._CHUNK * 4 <= leaf_bytes // 2, temp


def test_a_zero_size_regularized_leaf_is_counted_as_nothing():
    params = {"w": jnp.arange(1.0, 13.0).reshape(3, 4), "e": jnp.ones((0, 4))}
    grads = jax.tree.map(jnp.zeros_like, params)
    for quantile in ("radix", "bisect", "sort"):
        tx = optax_l1.sparsity_target(0.5, ramp_steps=1, quantile=quantile)
        state = tx.init(params)
        for _ in range(2):
            u, state = tx.update(grads, state, params)
        new = optax.apply_updates(params, u)
        np.testing.assert_array_equal(new["w"].ravel()[:6], 0.0)  # the 6 smallest of 12
        assert new["e"].shape == (0, 4)
        assert float(state.sparsity) == 0.5


def test_optimizer_may_be_a_multi_transform_of_diagonal_optimizers():
    # Two adam partitions with the same settings are adam: the same scores, the same step.
    params = {"enc": {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)}, "dec": jnp.ones(5)}
    grads = jax.tree.map(lambda p: jnp.cos(3.0 * p), params)
    split = optax.multi_transform(
        {"a": optax.adam(0.1), "b": optax.adam(0.1)},
        {"enc": "a", "dec": "b"},  # prefix labels
    )
    outs = []
    for opt in (split, optax.adam(0.1)):
        tx = optax_l1.sparsity_target(0.5, ramp_steps=2, optimizer=opt)
        state, p = tx.init(params), params
        for _ in range(3):
            u, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, u)
        outs.append(p)
    for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
        np.testing.assert_array_equal(a == 0, b == 0)
        np.testing.assert_allclose(a, b, rtol=1e-6)  # fused differently: an ulp apart
    both = optax.multi_transform(
        {"a": optax.adam(0.1), "b": optax.chain(optax.adam(0.1), optax.adam(0.1))},
        {"enc": "a", "dec": "b"},
    )
    tx = optax_l1.sparsity_target(0.5, ramp_steps=2, optimizer=both)
    with pytest.raises(ValueError, match="several fields named 'nu' that are not the partitions"):
        tx.init(params)


def test_python_scalar_params_with_latent_false():
    params = {"a": jnp.arange(1.0, 5.0), "s": 1.5}
    tx = optax_l1.sparsity_target(0.5, ramp_steps=1, latent=False)
    state = tx.init(params)
    grads = {"a": jnp.zeros(4), "s": 0.0}
    for _ in range(2):
        u, state = tx.update(grads, state, params)
    new = optax.apply_updates(params, u)
    # 2 of the 5 entries: the smallest are a[0] = 1.0 and s = 1.5
    np.testing.assert_array_equal(new["a"], [0.0, 2.0, 3.0, 4.0])
    assert float(new["s"]) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_kth_score_zeroes_nothing_and_says_so(bad):
    # More non-finite scores than the survivors: no threshold exists; nothing is zeroed, the
    # faulty entries stay visible, and the state reports 0 zeros and threshold 0.
    w = jnp.array([bad] * 5 + [1.0, 2.0, 3.0])
    for smoothing in (0.0, 0.5):
        tx = optax_l1.sparsity_target(0.5, ramp_steps=1, latent=False, smoothing=smoothing)
        state = tx.init(w)
        for _ in range(2):
            u, state = tx.update(jnp.zeros(8), state, w)
        new = np.asarray(optax.apply_updates(w, u))
        np.testing.assert_array_equal(new[5:], [1.0, 2.0, 3.0])
        assert not np.any(np.isfinite(new[:5]))
        assert float(state.sparsity) == 0.0 and float(state.threshold) == 0.0


def test_multi_transform_partitions_with_an_integer_leaf():
    params = {
        "a": jnp.array([0.1, -0.3, 0.5, -0.7, 0.9, 1.1]),
        "b": jnp.arange(2.0, 6.0),
        "i": jnp.arange(2),
    }
    split = optax.multi_transform(
        {"x": optax.adam(0.1), "y": optax.adam(0.1)}, {"a": "x", "b": "y", "i": "x"}
    )
    tx = optax_l1.sparsity_target(
        0.5, ramp_steps=1, optimizer=split, mask={"a": True, "b": True, "i": False}
    )
    state = tx.init(params)
    grads = {"a": jnp.zeros(6), "b": jnp.zeros(4), "i": jnp.zeros(2, jnp.int32)}
    for _ in range(2):
        u, state = tx.update(grads, state, params)
    assert float(state.sparsity) == 0.5  # 5 of the 10 float entries (no ties: zero grads)


def test_sample_stride_is_a_prime_past_the_sample_that_divides_no_dimension():
    n = 16 * _select.SAMPLE
    assert _select.sample_stride([(n - 1,)], n - 1) == 1  # small: the exact search
    assert _select.sample_stride([(1024, 1024)], n) == 17  # 16 -> the next prime
    assert _select.sample_stride([(17 * 64, 1024)], 17 * 64 * 1024) == 19  # 17 divides a dim
    assert _select.sample_stride([(1024, 2048)], 2 * n) == 37  # 32 -> 37


def test_the_sample_stride_follows_no_column_of_the_small_leaves_packed_together():
    # 60 small kernels of 19 columns, one of them 100x larger, packed into one flat array
    # for the search: a stride of 19 (the packed array's length has no factor 19) would
    # sample one column of each and zero 96% at a ramp step scheduled at 29% (the stride
    # was chosen from the packed array's shape; now from the leaves', so 23).
    rng = np.random.default_rng(0)
    params = {}
    for i in range(60):
        w = rng.normal(size=(1000, 19)).astype(np.float32) * 0.01
        w[:, 9] *= 100
        params[f"a{i:02d}"] = jnp.asarray(w)
    params["z"] = jnp.ones((1,))
    tx = optax_l1.sparsity_target(0.5, ramp_steps=4, latent=False)
    state = tx.init(params)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    step = jax.jit(tx.update)
    for _ in range(2):
        updates, state = step(zero_grads, state, params)
        params = optax.apply_updates(params, updates)
    zeros = sum(int(jnp.sum(p == 0)) for p in jax.tree.leaves(params)) / 1_140_001
    assert abs(zeros - float(state.scheduled)) <= 0.01, (zeros, float(state.scheduled))
    shapes = [(1000, 19)] * 60 + [(1,)]
    assert _select.sample_stride(shapes, 1_140_001) == 23


@pytest.mark.parametrize("target", [0.9, 1e-6])
def test_sampled_searches_leave_no_extra_zero_past_the_exact_last_search(target):
    # latent=False scores a zeroed weight 0, so it never comes back: a sampled search of the
    # ramp that zeroed more than the final k (its sample's quantile over the population's)
    # left those zeros tied at 0 for the exact last search, which zeroed all of them
    # (+2,288 over k at 90%; 14 zeros for k = 1). The searches now aim 3 sds under k.
    rng = np.random.default_rng(101)
    shape = (1024, 1100)
    params = {"w": jnp.asarray(rng.normal(size=shape).astype(np.float32))}
    grads = jnp.asarray(rng.normal(size=(4, *shape)).astype(np.float32))
    target_tx = optax_l1.sparsity_target(target, ramp_steps=30, latent=False)
    tx = optax.chain(optax.adam(1e-3), target_tx)
    state = tx.init(params)
    step = jax.jit(tx.update)
    k = int(np.floor(np.float32(target) * np.float32(params["w"].size)))
    for t in range(32):
        updates, state = step({"w": grads[t % 4]}, state, params)
        params = optax.apply_updates(params, updates)
        zeros = int(jnp.sum(params["w"] == 0))
        assert zeros <= int(float(state[1].scheduled) * params["w"].size) + 1, t  # never over
    assert zeros == k


def test_sampled_kth_counts_within_a_point_of_k_on_skewed_columns():
    # Columns whose scales differ by orders of magnitude: a stride that followed the row
    # length would sample a few columns only and miss the quantile by tens of points.
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((1024, 2048)) * np.exp(2 * rng.standard_normal((1, 2048))))
    x = x.astype(np.float32)
    assert _select.samples([jnp.asarray(x)])
    for s in (0.1, 0.5, 0.9, 0.99):
        k = int(s * x.size)
        kth, at_most = jax.jit(_select.kth_smallest_sampled)([jnp.asarray(x)], jnp.int32(k))
        realized = int(np.sum(x <= float(kth)))
        assert abs(realized - k) <= 0.01 * x.size, (s, realized, k)
        assert abs(int(at_most) - realized) <= 0.01 * x.size, (s, int(at_most), realized)
    small = jnp.asarray(x[:256])  # under 16 samples' worth: exact, as radix
    k = jnp.int32(1000)
    exact = _select.kth_smallest_radix([small], k)
    np.testing.assert_array_equal(_select.kth_smallest_sampled([small], k), exact)


def test_sampled_search_tracks_the_ramp_within_a_point_and_ends_on_target():
    rng = np.random.default_rng(1)
    scale = np.exp(rng.standard_normal((1, 2048))).astype(np.float32)
    params = {"w": jnp.asarray(rng.standard_normal((1024, 2048)).astype(np.float32) * scale)}
    n = params["w"].size
    target = optax_l1.sparsity_target(0.9, ramp_steps=12, begin_step=1, quantile="sample")
    tx = optax.chain(optax.sgd(1e-2), target)
    state = tx.init(params)

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    off = []
    for t in range(16):
        g = {"w": jnp.asarray(rng.standard_normal((1024, 2048)).astype(np.float32) * scale)}
        params, state = step(params, state, g)
        zeros = float(jnp.mean(params["w"] == 0))
        off.append(abs(zeros - float(state[1].scheduled)))
        assert abs(float(state[1].sparsity) - zeros) <= 0.01, t  # the logged estimate
    assert max(off) <= 0.01, off
    assert max(off) > 0  # the ramp's searches were sampled, not exact
    assert int(jnp.sum(params["w"] == 0)) == int(0.9 * n)  # the last search is exact


def test_an_n_of_m_allocation_keeps_the_latent_copy_for_the_whole_ramp_by_default():
    """Its last pattern (n of m) is set at the ramp's end, after half the ramp's copy."""
    blocks = optax_l1.Blocks(4, axis=0)

    def run(**kw):
        tx = optax.chain(
            optax.adam(0.05),
            optax_l1.sparsity_target(0.5, ramp_steps=20, allocation=blocks, **kw),
        )
        p = {"w": 0.3 * jax.random.normal(jax.random.PRNGKey(0), (16, 8))}
        s = tx.init(p)
        drift = jax.random.normal(jax.random.PRNGKey(99), (16, 8))  # slow: zeros revive
        for i in range(30):
            noise = jax.random.normal(jax.random.PRNGKey(i + 1), (16, 8))
            g = {"w": drift * jnp.cos(i / 3.0) + 0.5 * noise}
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
        return np.asarray(p["w"])

    default = run()
    np.testing.assert_array_equal(default, run(latent_until=1.0))
    assert not np.array_equal(default, run(latent_until=0.5))
    nonzero = (default.reshape(4, 4, 8) != 0).sum(axis=1)
    assert np.all(nonzero <= 2)
