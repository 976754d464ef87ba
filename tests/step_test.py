"""The one pure proximal step (`_step.prox_update`) and the pure pieces of `sparsity_target`,
each tested alone against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import np_soft

from optax_l1 import _operators, _step, _target, _tree


def _aligned(mask=None):
    params = {"w": jnp.array([1.0, -0.3, 0.05]), "b": jnp.array([0.2]), "i": jnp.array([3])}
    updates = {"w": jnp.array([0.1, 0.1, -0.1]), "b": jnp.array([0.5]), "i": jnp.array([1])}
    return params, updates, _tree.align("test", updates, params, mask)


def _soft_map(z, step, count):
    del count
    return _operators.soft_threshold_tree(z, 0.25 * step), {"aux": step}


def test_prox_update_lands_on_the_map_and_returns_aux():
    params, updates, aligned = _aligned({"w": True, "b": False, "i": True})
    assert aligned.selected == [False, False, True]  # leaves sorted: b, i, w; int never
    new, aux = _step.prox_update(_soft_map, aligned, jnp.float32(2.0), jnp.int32(0), name="t")
    assert float(aux["aux"]) == 2.0
    landed = optax.apply_updates(params, new)
    want = np_soft(np.asarray(params["w"]) + np.asarray(updates["w"]), 0.5)
    np.testing.assert_allclose(landed["w"], want, rtol=1e-6)
    assert (np.asarray(landed["w"]) == 0).sum() == 2  # exact zeros, not tiny numbers
    assert new["b"] is updates["b"] and new["i"] is updates["i"]  # untouched, not copied


def test_prox_update_refuses_a_map_that_changes_structure_or_shape():
    _, _, aligned = _aligned()

    def bad_shape(z, step, count):
        return jax.tree.map(lambda x: None if x is None else x[:1], z), None

    with pytest.raises(ValueError, match="`t`: the proximal operator must return"):
        _step.prox_update(bad_shape, aligned, jnp.float32(1.0), jnp.int32(0), name="t")
    with pytest.raises(ValueError, match="`t`: the proximal operator must return"):
        _step.prox_update(lambda z, s, c: ({"w": 1}, None), aligned, 1.0, 0, name="t")


def test_points_are_in_float32_for_bf16_params_and_the_update_keeps_zeros():
    params = {"w": jnp.array([1.0, 1e-3], jnp.bfloat16)}
    updates = {"w": jnp.array([0.0, 0.0], jnp.bfloat16)}
    aligned = _tree.align("t", updates, params, None)
    z = _step.points(aligned)
    assert z["w"].dtype == jnp.float32
    new, _ = _step.prox_update(_soft_map, aligned, jnp.float32(0.01), jnp.int32(0), name="t")
    assert new["w"].dtype == jnp.bfloat16
    assert float(optax.apply_updates(params, new)["w"][1]) == 0.0


def test_landed_zeros_counts_what_apply_updates_gives():
    params, updates, aligned = _aligned()
    new, _ = _step.prox_update(_soft_map, aligned, jnp.float32(2.0), jnp.int32(0), name="t")
    zeros, size = _step.landed_zeros(aligned, new)
    landed = optax.apply_updates(params, new)
    assert size == 4  # w and b (float); the int leaf is never selected
    assert int(zeros) == int((np.asarray(landed["w"]) == 0).sum() + (landed["b"] == 0).sum())


def test_aligned_merge_keeps_unselected_updates():
    _, updates, aligned = _aligned({"w": True, "b": False, "i": False})
    merged = aligned.merge([None, None, jnp.zeros(3)])
    assert merged["b"] is updates["b"] and merged["i"] is updates["i"]
    np.testing.assert_array_equal(merged["w"], 0.0)


# ----------------------------------------------------------------------------- target pieces

CFG = _target._Config(
    target=0.8,
    ramp_steps=10,
    begin_step=5,
    ramp="cubic",
    hold="support",
    update_every=3,
    smoothing=0.0,
    shrink="hard",
    quantile="radix",
    latent=True,
    structure=None,
    allocation="global",
    latent_until=0.5,
)


def np_ramp(t, s=0.8, t0=5, n=10):
    frac = min(max((t - t0) / n, 0.0), 1.0)
    return s * (1 - (1 - frac) ** 3)


def _phase_at(t, cfg=CFG, previous=None):
    """The phase at count ``t``, the last step's ramp value logged as the ramp gives it."""
    prev = _target._ramp(jnp.int32(t - 1), cfg.target, cfg.ramp_steps, cfg.begin_step, cfg.ramp)
    return _target._phase(jnp.int32(t), cfg, prev if previous is None else jnp.float32(previous))


def test_phase_follows_the_ramp_grid_and_holds_between_searches():
    for t in range(0, 20):
        ph = _phase_at(t)
        np.testing.assert_allclose(float(ph.scheduled), np_ramp(t), rtol=1e-6)
        on_grid = (t - 5) % 3 == 0 or t == 15
        due = on_grid and 5 < t <= 15  # s_t = 0 at t = 5: no search; frozen after 15
        assert bool(ph.due) == due, t
        assert bool(ph.keep) == (not due and t > 8), t  # 8: the first search
        assert bool(ph.last) == (t == 15)
    track = _phase_at(32, CFG._replace(hold="track"))
    assert bool(track.due) and not bool(track.last)  # on the grid after the ramp: searches
    short = _phase_at(7, CFG._replace(update_every=100))
    assert not bool(short.keep)  # no search yet (the first is the ramp's end, 15): dense


def test_phase_when_run_time_values_move_the_ramp():
    # A ramp shortened at run time to end behind the count: the step where the ramp's
    # value jumps is its last search (it was skipped: the support froze mid-ramp).
    moved = _phase_at(20, previous=0.3)
    assert bool(moved.due) and bool(moved.last) and not bool(moved.frozen)
    assert bool(_phase_at(21).frozen)  # then frozen again
    # A target set to 0 at run time holds nothing (it held the old zeros).
    zero = _phase_at(12, CFG._replace(target=jnp.float32(0.0)), previous=0.5)
    assert not bool(zero.keep) and not bool(zero.due)
    # begin_step + update_every past int32 wrapped `first` negative: zeros held from count 0.
    big = CFG._replace(begin_step=5, update_every=2**31 - 1)
    assert not bool(_phase_at(2, big).keep) and not bool(_phase_at(7, big).keep)
    assert bool(_phase_at(15, big).due)  # the ramp's end is the first search


def _phase(due=True, keep=False, last=False, scheduled=0.5):
    return _target._Phase(
        jnp.float32(scheduled), jnp.bool_(due), jnp.bool_(keep), jnp.bool_(last), jnp.bool_(False)
    )


def test_threshold_is_the_kth_score_and_counts_its_zeros_on_a_search_else_held():
    values = [jnp.array([0.5, 0.1, 0.9, 0.3]), jnp.array([0.7, 0.3])]

    def scores(unit, grids):
        assert unit == 0 and grids is None  # one global unit, no group leaf
        return values

    zero = jnp.zeros([], jnp.float32)
    state = _target.SparsityTargetState(zero, jnp.float32(0.05), jnp.float32(0.25), zero, None, ())

    def run(phase, cfg=CFG):
        units = _target._Units([0, 0], [True, True], [6], [1.0])
        tau, zeroed, _ = _target._threshold(scores, units, jnp.float32, phase, state, cfg)
        return float(tau), float(zeroed)

    assert run(_phase()) == (pytest.approx(0.3), pytest.approx(3 / 6))  # k = 3, and 0.3 twice
    assert run(_phase(due=False)) == (-np.inf, 0.25)  # no search: the last search's zeros
    assert run(_phase(scheduled=0.1)) == (-np.inf, 0.0)  # k = 0: nothing zeroed
    smooth = CFG._replace(smoothing=0.5)
    want = 0.5 * 0.05 + 0.5 * 0.3
    assert run(_phase(), smooth) == (pytest.approx(want), pytest.approx(1 / 6))  # 0.1 only
    last = _phase(last=True)  # the search before freezing is unsmoothed
    assert run(last, smooth) == (pytest.approx(0.3), pytest.approx(3 / 6))


def test_threshold_per_unit_is_each_units_kth_score():
    """allocation="uniform": one k-th score per unit, k from the unit's own size."""
    values = [jnp.array([0.5, 0.1, 0.9, 0.3]), jnp.array([0.7, 0.3])]
    zero = jnp.zeros([], jnp.float32)
    state = _target.SparsityTargetState(zero, jnp.zeros(2), zero, zero, None, ())
    units = _target._Units([0, 1], [True, True], [4, 2], [1.0, 1.0])
    cfg = CFG._replace(allocation="uniform")

    def scores(unit, grids):
        return [values[unit]]  # one leaf per unit

    tau, zeroed, _ = _target._threshold(scores, units, jnp.float32, _phase(), state, cfg)
    # k = floor(0.5 * 4) = 2 -> 0.3; k = floor(0.5 * 2) = 1 -> 0.3
    np.testing.assert_allclose(tau, [0.3, 0.3])
    assert float(zeroed) == pytest.approx(3 / 6)
    erk = _target._Units([0, 1], [True, True], [4, 2], [1.5, 0.0])  # shares of s
    tau, zeroed, _ = _target._threshold(scores, erk, jnp.float32, _phase(), state, cfg)
    assert float(tau[0]) == pytest.approx(0.5) and float(tau[1]) == -np.inf  # k = 3, 0
    assert float(zeroed) == pytest.approx(3 / 6)


def test_shrink_zeroes_exactly_the_scores_at_most_tau():
    x = jnp.array([0.5, -0.2, 0.05, -1.0])
    d = jnp.array([1.0, 2.0, 10.0, 0.1])  # scores |x| d = 0.5, 0.4, 0.5, 0.1
    tau = jnp.float32(0.45)
    hard = _target._shrink(x, x, d, tau, "hard")
    np.testing.assert_array_equal(hard, np.float32([0.5, 0.0, 0.05, 0.0]))
    soft = _target._shrink(x, x, d, tau, "soft")
    np.testing.assert_allclose(soft, [0.5 - 0.45, 0.0, 0.05 - 0.045, 0.0], rtol=1e-6)
    soft_t = _target._shrink(x, x, None, jnp.float32(0.3), "soft")
    np.testing.assert_allclose(soft_t, np_soft(x, 0.3))
    np.testing.assert_array_equal(
        _target._shrink(x, x, None, jnp.float32(0.3), "hard"), np.float32([0.5, 0, 0, -1.0])
    )
    w = jnp.array([0.1, 1.0, 1.0, 0.2])  # scores taken from w (the weights before a step)
    np.testing.assert_array_equal(
        _target._shrink(x, w, None, jnp.float32(0.3), "hard"), np.float32([0, -0.2, 0.05, 0])
    )
    assert not np.any(np.isnan(_target._shrink(x, x, None, -jnp.float32(np.inf), "soft")))


def test_hold_support_passes_the_update_before_a_search_and_holds_zeros_after():
    params = {"w": jnp.array([0.0, 1.0, -2.0])}
    updates = {"w": jnp.array([0.3, 0.1, 0.2])}
    aligned = _tree.align("t", updates, params, None)
    shrunk = {"w": jnp.array([0.25, 0.05, 0.15])}  # the map's landing (on z)
    for exact, unshrunk in ((True, updates["w"]), (False, shrunk["w"])):
        out = _target._hold_support(aligned, shrunk, _phase(due=False), exact)
        np.testing.assert_array_equal(out["w"], unshrunk)  # no search yet
        out = _target._hold_support(aligned, shrunk, _phase(due=False, keep=True), exact)
        np.testing.assert_array_equal(out["w"], np.where([True, False, False], 0.0, unshrunk))
        out = _target._hold_support(aligned, shrunk, _phase(), exact)
        np.testing.assert_array_equal(out["w"], shrunk["w"])  # a search: its result
