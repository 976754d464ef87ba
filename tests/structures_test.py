"""Structures (groups, blocks, heads, coupled units) against NumPy transcriptions.

- Layouts: the groups each structure forms, listed by explicit index loops.
- The group prox on every structure: a NumPy loop over the groups (coupled groups gathered
  across leaves), optimality per group and non-expansiveness (hypothesis).
- The group penalty with coupling; ``group_l1_prox(structure=...)`` under jit.
- ``sparsity_target`` with group structures (whole columns, heads and coupled units zeroed,
  their count on target) and with ``allocation="uniform"`` / ``"erk"`` (each leaf's zeros
  against a NumPy transcription of the allocation).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import optax_l1


def _groups_of(structure, shape):
    """Each group as a list of flat indices, by explicit loops (the reference)."""
    idx = np.arange(math.prod(shape)).reshape(shape)
    if isinstance(structure, optax_l1.Groups):
        axes = (structure.axis,) if isinstance(structure.axis, int) else structure.axis
        axes = tuple(a % len(shape) for a in axes)
        kept = [d for d in range(len(shape)) if d not in axes]
        out = []
        for k in np.ndindex(*[shape[d] for d in kept]):
            sl = [slice(None)] * len(shape)
            for d, i in zip(kept, k, strict=True):
                sl[d] = i
            out.append(sorted(idx[tuple(sl)].ravel().tolist()))
        return out
    if isinstance(structure, optax_l1.Blocks):
        ax, k = structure.axis % len(shape), structure.size
        moved = np.moveaxis(idx, ax, -1)
        return [
            sorted(moved[rest][b * k : (b + 1) * k].tolist())
            for rest in np.ndindex(*moved.shape[:-1])
            for b in range(shape[ax] // k)
        ]
    if isinstance(structure, optax_l1.Heads):
        ax = structure.axis % len(shape)
        per = shape[ax] // (structure.parts * structure.num_heads)
        out = []
        for h in range(structure.num_heads):
            cols = [
                part * structure.num_heads * per + h * per + j
                for part in range(structure.parts)
                for j in range(per)
            ]
            out.append(sorted(np.take(idx, cols, axis=ax).ravel().tolist()))
        return out
    return [[i] for i in range(math.prod(shape))]


def _sorted_groups(structure, shape):
    lay = structure.layout(shape)
    ids = np.arange(math.prod(shape)).reshape(lay.split)
    moved = np.moveaxis(
        ids, lay.reduce, list(range(len(lay.split) - len(lay.reduce), len(lay.split)))
    )
    flat = moved.reshape(math.prod(lay.groups), -1)
    return sorted(sorted(g.tolist()) for g in flat)


STRUCTURES = [
    (optax_l1.Elements(), (3, 4)),
    (optax_l1.Groups(0), (3, 4)),
    (optax_l1.Groups((0, 1, 2)), (2, 2, 3, 4)),
    (optax_l1.Blocks(4, axis=0), (8, 3)),
    (optax_l1.Blocks(2, axis=1), (3, 6)),
    (optax_l1.Heads(4, axis=1), (5, 8)),
    (optax_l1.Heads(2, axis=1, parts=3), (4, 12)),
    (optax_l1.Heads(2, axis=0), (6, 3)),
    (optax_l1.Heads(2, axis=1), (4, 2, 3)),  # DenseGeneral (d_model, heads, head_dim)
]


@pytest.mark.parametrize("structure, shape", STRUCTURES)
def test_layout_forms_the_groups_the_loops_list(structure, shape):
    assert _sorted_groups(structure, shape) == sorted(_groups_of(structure, shape))


@pytest.mark.parametrize(
    "structure, shape, match",
    [
        (optax_l1.Blocks(4, axis=0), (6, 3), "not a multiple of"),
        (optax_l1.Heads(4, axis=1), (5, 6), "not a multiple of"),
        (optax_l1.Heads(2, axis=1, parts=3), (5, 8), "not a multiple of"),
        (optax_l1.Groups(2), (3, 4), "does not exist"),
    ],
)
def test_layout_rejects_a_leaf_it_does_not_fit(structure, shape, match):
    with pytest.raises(ValueError, match=match):
        structure.layout(shape)


def test_structure_arguments_are_checked():
    with pytest.raises(ValueError, match="`size` must be >= 1"):
        optax_l1.Blocks(0, axis=0)
    with pytest.raises(TypeError, match="`num_heads` must be a Python int"):
        optax_l1.Heads(2.0, axis=0)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="`couple` must be a str"):
        optax_l1.Groups(0, couple=1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="exactly one of `axis`"):
        optax_l1.group_soft_threshold(jnp.ones((2, 2)), 1.0)
    with pytest.raises(ValueError, match="exactly one of `axis`"):
        optax_l1.group_l1_prox(1.0, learning_rate=1.0, axis=0, structure=optax_l1.Groups(0))
    with pytest.raises(TypeError, match="`structure` must be a Structure"):
        optax_l1.group_soft_threshold({"a": jnp.ones(2)}, 1.0, structure={"a": 0})


def _np_group_prox(leaves, structures, t):
    """Group soft-thresholding by loops: groups gathered across coupled leaves."""
    flat = [np.asarray(x, np.float64).ravel() for x in leaves]
    groups = {}  # key -> list of (leaf, flat index)
    for i, (x, s) in enumerate(zip(leaves, structures, strict=True)):
        for g, members in enumerate(_groups_of(s, x.shape)):
            key = (s.couple, g) if s.couple is not None else (i, g)
            groups.setdefault(key, []).extend((i, m) for m in members)
    out = [np.zeros_like(f) for f in flat]
    for members in groups.values():
        norm = math.sqrt(sum(flat[i][m] ** 2 for i, m in members))
        scale = max(0.0, 1.0 - t / norm) if norm > 0 else 0.0
        for i, m in members:
            out[i][m] = flat[i][m] * scale
    return [o.reshape(x.shape) for o, x in zip(out, leaves, strict=True)]


@pytest.mark.parametrize("structure, shape", STRUCTURES)
@pytest.mark.parametrize("t", [0.3, 1.5])
def test_group_prox_matches_the_numpy_loop(structure, shape, t):
    z = jax.random.normal(jax.random.PRNGKey(hash(shape) % 1000), shape)
    got = jax.jit(lambda z: optax_l1.group_soft_threshold(z, t, structure=structure))(z)
    want = _np_group_prox([np.asarray(z)], [structure], t)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.asarray(got) == 0, want == 0)


def _mlp_units(couple="h"):
    return {
        "k1": optax_l1.Groups(0, couple=couple),
        "b1": optax_l1.Elements(couple=couple),
        "k2": optax_l1.Groups(1, couple=couple),
    }


def _mlp(seed=0, hidden=6):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {
        "k1": jax.random.normal(k[0], (4, hidden)),
        "b1": 0.3 * jax.random.normal(k[1], (hidden,)),
        "k2": jax.random.normal(k[2], (hidden, 3)),
    }


def test_coupled_units_are_one_group_across_leaves():
    p = _mlp()
    sts = _mlp_units()
    got = optax_l1.group_soft_threshold(p, 2.2, structure=sts)
    names = ["k1", "b1", "k2"]
    want = _np_group_prox([np.asarray(p[n]) for n in names], [sts[n] for n in names], 2.2)
    for n, w in zip(names, want, strict=True):
        np.testing.assert_allclose(got[n], w, rtol=1e-5, atol=1e-6)
    dead = np.asarray(got["b1"]) == 0
    assert 0 < dead.sum() < dead.size  # some units off, some on: the test can tell
    assert np.all((np.asarray(got["k1"]) == 0).all(0) == dead)
    assert np.all((np.asarray(got["k2"]) == 0).all(1) == dead)
    with pytest.raises(ValueError, match="same number of groups"):
        optax_l1.group_soft_threshold(
            p, 1.0, structure={**sts, "k2": optax_l1.Groups(0, couple="h")}
        )


def test_group_penalty_counts_a_coupled_group_once():
    p = _mlp()
    norms = np.sqrt(
        (np.asarray(p["k1"]) ** 2).sum(0)
        + np.asarray(p["b1"]) ** 2
        + (np.asarray(p["k2"]) ** 2).sum(1)
    )
    got = optax_l1.group_l1_penalty(p, 0.7, structure=_mlp_units())
    np.testing.assert_allclose(got, 0.7 * norms.sum(), rtol=1e-5)
    blocks = optax_l1.group_l1_penalty(p["k1"], 1.0, structure=optax_l1.Blocks(2, axis=0))
    want = np.sqrt((np.asarray(p["k1"]).reshape(2, 2, -1) ** 2).sum(1)).sum()
    np.testing.assert_allclose(blocks, want, rtol=1e-5)


def test_group_l1_prox_takes_a_structure():
    p = _mlp()
    tx = optax_l1.group_l1_prox(4.0, learning_rate=0.5, structure=_mlp_units())
    g = jax.tree.map(lambda x: 0.1 * jnp.ones_like(x), p)
    u, _ = jax.jit(tx.update)(g, tx.init(p), p)
    z = jax.tree.map(lambda a, b: a + b, p, g)
    want = optax_l1.group_soft_threshold(z, 2.0, structure=_mlp_units())
    got = optax.apply_updates(p, u)
    for n in p:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-5, atol=1e-6)


block_arrays = hnp.arrays(
    np.float32, (4, 6), elements=st.floats(-3, 3, width=32, allow_subnormal=False)
)


@given(block_arrays, st.floats(0.01, 3.0))
def test_block_prox_is_optimal_per_group(z, tau):
    """0 in w - z + tau * subgrad(||w_g||): the prox's optimality condition, per block."""
    s = optax_l1.Blocks(2, axis=1)
    w = np.asarray(optax_l1.group_soft_threshold(jnp.asarray(z), tau, structure=s), np.float64)
    zz = np.asarray(z, np.float64)
    for g in _groups_of(s, z.shape):
        wg, zg = w.ravel()[g], zz.ravel()[g]
        n = np.linalg.norm(wg)
        if n > 0:
            np.testing.assert_allclose(zg - wg, tau * wg / n, atol=1e-4)
        else:
            assert np.linalg.norm(zg) <= tau * (1 + 1e-5) + 1e-6


@given(block_arrays, block_arrays, st.floats(0.0, 3.0))
def test_head_prox_is_non_expansive(a, b, tau):
    s = optax_l1.Heads(3, axis=1)
    pa = optax_l1.group_soft_threshold(jnp.asarray(a), tau, structure=s)
    pb = optax_l1.group_soft_threshold(jnp.asarray(b), tau, structure=s)
    gap = np.linalg.norm(np.asarray(pa, np.float64) - np.asarray(pb, np.float64))
    assert gap <= np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)) * (1 + 1e-5) + 1e-5


# ----------------------------------------------------------------------------- target


def _target_run(params, steps=3, **kw):
    tx = optax.chain(optax.sgd(0.1), optax_l1.sparsity_target(0.5, ramp_steps=1, **kw))
    state = tx.init(params)
    step = jax.jit(tx.update)
    for t in range(steps):
        g = jax.tree.map(lambda x, t=t: 0.01 * (t + 1) * jnp.ones_like(x), params)
        u, state = step(g, state, params)
        params = optax.apply_updates(params, u)
    return params, state[1]


def test_target_zeroes_whole_coupled_units_on_target():
    p, state = _target_run(_mlp(hidden=8), structure=_mlp_units())
    dead = np.asarray(p["b1"]) == 0
    assert dead.sum() == 4 and float(state.sparsity) == 0.5
    assert np.all((np.asarray(p["k1"]) == 0).all(0) == dead)
    assert np.all((np.asarray(p["k2"]) == 0).all(1) == dead)
    assert not np.any(np.asarray(p["k1"])[:, ~dead] == 0)


def test_target_zeroes_the_smallest_heads_by_norm():
    params = {
        "q": jax.random.normal(jax.random.PRNGKey(3), (8, 12))
        * jnp.repeat(jnp.array([1.0, 0.2, 3.0, 0.5]), 3)[None, :]
    }
    structure = optax_l1.Heads(4, axis=1)
    tx = optax_l1.sparsity_target(0.5, ramp_steps=1, structure=structure, latent=False)
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    for _ in range(2):
        u, state = tx.update(zero, state, params)
        params = optax.apply_updates(params, u)
    norms = np.linalg.norm(np.asarray(params["q"]).reshape(8, 4, 3), axis=(0, 2))
    assert list(np.flatnonzero(norms == 0)) == [1, 3]


def _np_erk(shapes, target):
    """ERK densities by the published procedure (Evci et al. 2020, RigL's code)."""
    n = np.array([math.prod(s) for s in shapes], np.float64)
    raw = np.array([sum(s) / math.prod(s) for s in shapes])
    dense = np.zeros(len(shapes), bool)
    while True:
        eps = ((1 - target) * n.sum() - n[dense].sum()) / (raw[~dense] * n[~dense]).sum()
        new = ~dense & (eps * raw > 1)
        if not new.any():
            return np.where(dense, 1.0, eps * raw)
        dense |= new


@pytest.mark.parametrize("allocation", ["uniform", "erk"])
def test_allocation_gives_each_leaf_its_share(allocation):
    key = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "a": jax.random.normal(key[0], (40, 30)),
        "b": 5 * jax.random.normal(key[1], (30, 20)),
        "c": 0.1 * jax.random.normal(key[2], (3, 4)),
    }
    p, state = _target_run(params, allocation=allocation, latent=False)
    shapes = [params[k].shape for k in "abc"]
    density = np.ones(3) * 0.5 if allocation == "uniform" else _np_erk(shapes, 0.5)
    for k, dens in zip("abc", density, strict=True):
        size = params[k].size
        want = math.floor((1 - dens) / 0.5 * 0.5 * size + 1e-9) if dens < 1 else 0
        assert int((np.asarray(p[k]) == 0).sum()) == min(want, size - 1), k
    assert state.threshold.shape == (3,)
    # The global default zeroes the small leaf entirely and spares the large one.
    g, _ = _target_run(params, latent=False)
    assert float((g["c"] == 0).mean()) == 1.0 and float((g["b"] == 0).mean()) < 0.3


def test_target_with_a_group_structure_refuses_soft_shrink():
    with pytest.raises(ValueError, match="`shrink='soft'` is for entries only"):
        _target_run({"w": jnp.ones((4, 4))}, structure=optax_l1.Groups(0), shrink="soft")
    with pytest.raises(ValueError, match="`allocation` must be one of"):
        optax_l1.sparsity_target(0.5, ramp_steps=1, allocation="layer")  # pyright: ignore[reportArgumentType]


# ----------------------------------------------------------------------------- reports


def test_report_counts_zero_groups_and_n_of_m_compliance():
    p = _mlp(hidden=8)
    p["k1"] = p["k1"].at[:, [1, 4]].set(0.0)
    p["b1"] = p["b1"].at[jnp.array([1, 4, 6])].set(0.0)
    p["k2"] = p["k2"].at[jnp.array([1, 6])].set(0.0)
    report = jax.jit(lambda p: optax_l1.sparsity_report(p, structure=_mlp_units()))(p)
    assert float(report["k1:groups"]) == 2 / 8 and float(report["k2:groups"]) == 2 / 8
    assert float(report["b1:groups"]) == 3 / 8
    assert float(report["couple:h"]) == 1 / 8  # only unit 1 is zero on all three leaves
    w = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    nm = optax_l1.n_of_m_projection(w, 2, 4, axis=0)
    half = nm.at[0:4, 0].set(w[0:4, 0])  # one block of 4 back to dense
    got = optax_l1.sparsity_report({"nm": nm, "half": half}, n_of_m=(2, 4, 0))
    counts = (np.asarray(half).reshape(2, 4, 3) != 0).sum(1)
    assert float(got["nm:n_of_m"]) == 1.0
    assert (counts <= 2).sum() == 5
    np.testing.assert_allclose(float(got["half:n_of_m"]), 5 / 6, rtol=1e-6)


# ----------------------------------------------------------------------------- N:M ramp


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("latent", [True, False])
def test_n_of_m_allocation_ends_n_of_m_compliant(n, m, latent):
    params = {"w": jax.random.normal(jax.random.PRNGKey(n * m), (16, 6)), "b": jnp.ones(6)}
    mask = {"w": True, "b": False}
    target = optax_l1.sparsity_target(
        1 - n / m, ramp_steps=12, allocation=optax_l1.Blocks(m, axis=0), mask=mask, latent=latent
    )
    tx = optax.chain(optax.adam(3e-2), target)
    state = tx.init(params)

    @jax.jit
    def step(p, s, t):
        g = jax.tree.map(lambda x: jnp.cos(x + t), p)  # a gradient that changes each step
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    nonzeros = []
    for t in range(20):
        params, state = step(params, state, jnp.float32(t))
        nonzeros.append((np.asarray(params["w"]).reshape(16 // m, m, 6) != 0).sum(1).max())
    assert nonzeros[-1] <= n and max(nonzeros[13:]) <= n  # held after the ramp
    assert nonzeros[0] == m  # dense before the ramp moves
    report = optax_l1.sparsity_report(params, mask=mask, n_of_m=(n, m, 0))
    assert float(report["w:n_of_m"]) == 1.0
    assert float(state[1].sparsity) == pytest.approx(1 - n / m)
    assert np.all(np.asarray(params["b"]) != 0)


def test_n_of_m_allocation_keeps_the_largest_of_each_block():
    """With no latent copy and no movement, the ramp's end is the N:M projection."""
    w = jax.random.normal(jax.random.PRNGKey(9), (8, 5))
    tx = optax_l1.sparsity_target(
        0.5, ramp_steps=3, allocation=optax_l1.Blocks(4, axis=0), latent=False
    )
    state, p = tx.init(w), w
    for _ in range(5):
        u, state = tx.update(jnp.zeros_like(p), state, p)
        p = optax.apply_updates(p, u)
    np.testing.assert_array_equal(p, optax_l1.n_of_m_projection(w, 2, 4, axis=0))
    with pytest.raises(ValueError, match="give no group `structure`"):
        bad = optax_l1.sparsity_target(
            0.5, ramp_steps=1, allocation=optax_l1.Blocks(4, axis=0), structure=optax_l1.Groups(0)
        )
        bad.update(jnp.zeros_like(w), bad.init(w), w)


def test_n_of_m_allocation_counts_the_zeros_a_nan_spares():
    """A NaN score is kept (it shows) and takes no quota: a block of 4 with one NaN at 3
    zeros per block (k = 3) zeroes 2, the others 3; the count is exact, not k per block."""
    w = jnp.asarray(np.random.default_rng(0).standard_normal((8, 3)), jnp.float32)
    w = w.at[1, 2].set(jnp.nan)
    tx = optax_l1.sparsity_target(
        0.75, ramp_steps=1, allocation=optax_l1.Blocks(4, axis=0), latent=False
    )
    state, p = tx.init(w), w
    for _ in range(3):  # past the ramp
        u, state = tx.update(jnp.zeros_like(p), state, p)
        p = optax.apply_updates(p, u)
    p = np.asarray(p)
    assert np.isnan(p[1, 2])
    assert int(np.sum(p == 0)) == 3 * 5 + 2 == round(float(state.sparsity) * 24)


def test_n_of_m_allocation_step_writes_no_full_size_temporary():
    """The keep pattern is one byte per block of 4: the compiled 2:4 step's temporaries are
    a small fraction of the kernel (no copy of the params, no full-size count)."""
    w = jnp.ones((512, 256), jnp.float32)
    tx = optax.chain(
        optax.adam(1e-3),
        optax_l1.sparsity_target(
            0.5, ramp_steps=10**6, hold="track", allocation=optax_l1.Blocks(4, axis=0), latent=False
        ),
    )

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(w, tx.init(w), w).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < w.nbytes / 4, temp


def _primitives(jaxpr, in_cond=False):
    """(name, whether inside a ``cond`` branch) of every equation, nested ones included."""
    for eqn in jaxpr.eqns:
        inside = in_cond or eqn.primitive.name == "cond"
        yield eqn.primitive.name, in_cond
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from _primitives(sub, inside)


def _sqrt_outside_cond(tx, w) -> int:
    jaxpr = jax.make_jaxpr(tx.update)(w, tx.init(w), w).jaxpr
    return sum(name == "sqrt" and not inside for name, inside in _primitives(jaxpr))


@pytest.mark.parametrize("optimizer", [False, True])
def test_n_of_m_allocation_ranks_only_on_a_search_step(optimizer):
    """The block codes (a population count over each block's keep bits) are computed in
    the search branch of a ``cond``, not on every step: a held step between searches does
    not rank the blocks; with ``optimizer=`` the metric is computed there too (outside the
    cond, only the optimizer's own square roots)."""
    w = jax.random.normal(jax.random.PRNGKey(3), (16, 8))
    extra = {"optimizer": optax.adam(1e-2)} if optimizer else {"latent": False}
    tx = optax_l1.sparsity_target(
        0.5, ramp_steps=10, allocation=optax_l1.Blocks(4, axis=0), update_every=5, **extra
    )
    jaxpr = jax.make_jaxpr(tx.update)(w, tx.init(w), w).jaxpr
    where = {inside for name, inside in _primitives(jaxpr) if name == "population_count"}
    assert where == {True}, where
    own = _sqrt_outside_cond(optax.adam(1e-2), w) if optimizer else 0
    assert _sqrt_outside_cond(tx, w) == own


@pytest.mark.parametrize("optimizer", [False, True])
@pytest.mark.parametrize("structure", [optax_l1.Groups(0), optax_l1.Blocks(4, axis=0)])
def test_group_target_scores_groups_only_on_a_search_step(structure, optimizer):
    """The group norms (a square root per group) and, with ``optimizer=``, the metric they
    are taken in are computed in the search branch of a ``cond``: a held step between
    searches reads one mark per group, not the norms."""
    w = jax.random.normal(jax.random.PRNGKey(4), (16, 8))
    extra = {"optimizer": optax.adam(1e-2)} if optimizer else {}
    tx = optax_l1.sparsity_target(
        0.5, ramp_steps=10, structure=structure, update_every=5, latent=False, **extra
    )
    jaxpr = jax.make_jaxpr(tx.update)(w, tx.init(w), w).jaxpr
    assert True in {inside for name, inside in _primitives(jaxpr) if name == "sqrt"}
    own = _sqrt_outside_cond(optax.adam(1e-2), w) if optimizer else 0
    assert _sqrt_outside_cond(tx, w) == own


@pytest.mark.parametrize("m", [4, 40])  # a code per block; the full keep mask (m > 32)
def test_n_of_m_allocation_holds_the_blocks_between_searches(m):
    """With ``update_every=3`` the blocks are cut at the searches only, a zero stays zero
    in between, and from the ramp's end every block is m/2:m on every step."""
    p = jax.random.normal(jax.random.PRNGKey(5), (4 * m, 6))
    tx = optax.chain(
        optax.adam(3e-2),
        optax_l1.sparsity_target(
            0.5, ramp_steps=9, allocation=optax_l1.Blocks(m, axis=0), update_every=3
        ),
    )
    step = jax.jit(lambda p, s, t: tx.update(jnp.cos(p + t), s, p))
    s, held = tx.init(p), []
    for t in range(15):
        u, s = step(p, s, jnp.float32(t))
        p = optax.apply_updates(p, u)
        held.append(np.asarray(p).reshape(4, m, 6) != 0)
    for kept in held[9:]:  # at and after the ramp's end: m/2 of m on every step
        assert kept.sum(1).max() <= m // 2
    for t in range(1, 15):  # a zero stays zero between searches
        if t % 3:
            assert not np.any(held[t] & ~held[t - 1])
    assert held[2].sum(1).max() == m  # dense before the first cut


@pytest.mark.parametrize("latent", [True, False])
def test_a_leaf_without_a_structure_is_not_touched(latent):
    """None in the structure tree: not regularized, whatever the mask says."""
    p = {**_mlp(hidden=8), "b2": jnp.full((3,), 1e-3), "k3": jnp.full((3, 3), 1e-3)}
    sts = {**_mlp_units(), "b2": None, "k3": None}
    out, state = _target_run(p, structure=sts, latent=latent)
    for k in ("b2", "k3"):
        np.testing.assert_allclose(out[k], p[k] - 0.01 * (1 + 2 + 3) * 0.1, rtol=1e-5)
    assert float(state.sparsity) == 0.5


# ----------------------------------------------------------------------------- edge cases


def test_edge_cases_found_in_review():
    # A zero-size leaf next to per-leaf thresholds.
    p = {"a": _mlp()["k1"], "z": jnp.ones((0, 8)), "c": jnp.arange(1.0, 4.0)}
    out, state = _target_run(p, allocation="uniform", latent=False)
    assert out["z"].shape == (0, 8) and state.threshold.shape == (2,)
    # Complex groups are scored by their modulus, as the group prox does.
    w = {"w": jnp.array([[10j, 1], [10j, 1]], jnp.complex64)}
    out, _ = _target_run(w, structure=optax_l1.Groups(0), latent=False)
    assert np.all(np.asarray(out["w"])[:, 1] == 0) and np.all(np.asarray(out["w"])[:, 0] != 0)
    # ERK with a group structure shares the groups (the target counts groups).
    key_a, key_b = jax.random.split(jax.random.PRNGKey(4))
    p = {"a": jax.random.normal(key_a, (8, 64)), "b": jax.random.normal(key_b, (256, 16))}
    _, state = _target_run(p, structure=optax_l1.Groups(0), allocation="erk", latent=False)
    assert abs(float(state.sparsity) - 0.5) < 0.05
    _target_run({"a": jnp.ones((1, 1)), "s": jnp.ones(())}, allocation="erk")  # no 1/0
    # N:M has no threshold: soft shrink and smoothing are refused, not ignored.
    blocks = optax_l1.Blocks(4, axis=0)
    for kw in (dict(shrink="soft"), dict(smoothing=0.5)):
        with pytest.raises(ValueError, match="N:M"):
            optax_l1.sparsity_target(0.5, ramp_steps=1, allocation=blocks, **kw)
    with pytest.raises(TypeError, match="`axis` must be one int"):
        optax_l1.Blocks(4, axis=(1, 0))  # pyright: ignore[reportArgumentType]
    # The group prox lands on +0.0, as the elementwise one does.
    out = optax_l1.group_soft_threshold(jnp.array([[-0.1, 3.0], [0.1, 4.0]]), 1.0, axis=0)
    assert not np.any(np.signbit(np.asarray(out)[:, 0]))
    # A coupled label on a masked-out leaf would leave the group incomplete: refused.
    with pytest.raises(ValueError, match="not regularized"):
        optax_l1.group_l1_penalty(
            _mlp(), 1.0, structure=_mlp_units(), mask={"k1": True, "b1": False, "k2": True}
        )


def test_compact_edge_cases_and_ranks_of_low_precision_leaves():
    p = {"k1": jnp.zeros((3, 1)), "b1": jnp.zeros(1), "k2": jnp.zeros((1, 2))}
    small, kept = optax_l1.compact(p, _mlp_units())  # a width-1 layer, all dead
    assert kept["h"].size == 0 and small["k1"].shape == (3, 0) and small["k2"].shape == (0, 2)
    fold = optax_l1.Fold("h", bias="b1", weights="k2", next_bias="b2", activation=jax.nn.relu)
    only = {"b1": optax_l1.Elements(couple="h"), "k2": optax_l1.Groups(1, couple="h"), "b2": None}
    p = {"b1": jnp.ones(3), "k2": jnp.ones((3, 2)), "b2": jnp.zeros(2)}
    small, kept = optax_l1.compact(p, only, fold=[fold])  # no incoming leaf: all constant
    np.testing.assert_allclose(small["b2"], [3.0, 3.0])
    assert kept["h"].size == 0
    w = optax_l1.rank_projection(jax.random.normal(jax.random.PRNGKey(0), (50, 50)), 1)
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        assert float(optax_l1.sparsity_report({"w": w.astype(dtype)}, rank=True)["w:rank"]) == 1.0


# ----------------------------------------------------------------------------- feasibility

kernels = hnp.arrays(
    np.float32, (8, 6), elements=st.floats(-4, 4, width=32, allow_subnormal=False), unique=True
)  # XLA on CPU flushes subnormals to zero


@settings(max_examples=20)  # eager transform calls: each example runs two updates
@given(kernels, st.sampled_from([(1, 4), (2, 4), (3, 4), (1, 2), (4, 8)]))
def test_n_of_m_constraint_is_feasible_and_keeps_the_largest(w, nm):
    """After the ramp every block has at most n non-zeros, and the kept entries are the
    block's n largest magnitudes (latent=False, no update: the N:M projection)."""
    n, m = nm
    tx = optax_l1.sparsity_target(
        1 - n / m, ramp_steps=1, allocation=optax_l1.Blocks(m, axis=0), latent=False
    )
    p, state = jnp.asarray(w), tx.init(jnp.asarray(w))
    for _ in range(2):
        u, state = tx.update(jnp.zeros_like(p), state, p)
        p = optax.apply_updates(p, u)
    blocks = np.asarray(p).reshape(8 // m, m, 6)
    assert ((blocks != 0).sum(1) <= n).all()
    np.testing.assert_array_equal(p, optax_l1.n_of_m_projection(jnp.asarray(w), n, m, axis=0))


@jax.jit
def _two_group_steps(w, s):
    """Two updates of a group target whose fraction ``s`` is traced: compiled once."""
    tx = optax_l1.sparsity_target(s, ramp_steps=1, structure=optax_l1.Groups(0), latent=False)
    p, state = w, tx.init(w)
    for _ in range(2):
        u, state = tx.update(jnp.zeros_like(p), state, p)
        p = optax.apply_updates(p, u)
    return p


@settings(max_examples=20)
@given(kernels, st.floats(0.05, 0.95))
def test_group_constraint_zeroes_exactly_the_smallest_groups(w, s):
    p = _two_group_steps(jnp.asarray(w), jnp.float32(s))
    norms = np.linalg.norm(w.astype(np.float64), axis=0)
    k = min(int(np.floor(np.float32(s) * 6)), 5)
    dead = np.all(np.asarray(p) == 0, axis=0)
    assert dead.sum() == k
    assert set(np.flatnonzero(dead)) == set(np.argsort(norms)[:k])
    np.testing.assert_array_equal(np.asarray(p)[:, ~dead], w[:, ~dead])  # survivors untouched


def _mlp_params():
    r = np.random.default_rng(0)
    return {
        "fc1": {"kernel": jnp.asarray(r.standard_normal((8, 16)), jnp.float32),
                "bias": jnp.asarray(r.standard_normal(16), jnp.float32)},
        "fc2": {"kernel": jnp.asarray(r.standard_normal((16, 4)), jnp.float32),
                "bias": jnp.asarray(r.standard_normal(4), jnp.float32)},
    }  # fmt: skip


def _at_zero_gradient(tx, params, steps=2):
    """``params`` after ``steps`` updates of ``tx`` with zero gradients."""
    state = tx.init(params)
    for _ in range(steps):
        u, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
        params = optax.apply_updates(params, u)
    return params


UNITS = optax_l1.path_structure(
    {
        r"^fc1/kernel$": optax_l1.Groups(0, couple="h"),
        r"^fc1/bias$": optax_l1.Elements(couple="h"),
        r"^fc2/kernel$": optax_l1.Groups(1, couple="h"),
    }
)


def test_a_structure_callable_under_inject_hyperparams_says_static_args():
    # optax called it with the step count and the run went on entry by entry, logging the
    # target as met (a probe); mask had this check already.
    tx = optax.inject_hyperparams(optax_l1.sparsity_target)(0.5, ramp_steps=1, structure=UNITS)
    with pytest.raises(TypeError, match=r"static_args=\('structure',\)"):
        tx.init(_mlp_params())
    fixed = optax.inject_hyperparams(optax_l1.sparsity_target, static_args=("structure",))
    params = _at_zero_gradient(fixed(0.5, ramp_steps=1, structure=UNITS), _mlp_params())
    dead = np.all(np.asarray(params["fc1"]["kernel"]) == 0, axis=0)
    assert dead.sum() == 8
    np.testing.assert_array_equal(np.asarray(params["fc1"]["bias"])[dead], 0.0)
    np.testing.assert_array_equal(np.asarray(params["fc2"]["kernel"])[dead], 0.0)
    assert np.all(np.asarray(params["fc2"]["bias"]) != 0)


def test_a_structure_callable_that_returns_none_is_refused():
    # A function missing its `return` turned the transforms into no-ops (a probe); a mask
    # callable returning None already raised.
    params = _mlp_params()
    makers = (
        lambda f: optax_l1.group_l1_prox(100.0, learning_rate=1.0, structure=f),
        lambda f: optax_l1.sparsity_target(0.5, ramp_steps=1, structure=f),
    )
    for make in makers:
        tx = make(lambda tree: None)
        with pytest.raises(TypeError, match="`structure` callable returned None"):
            tx.update(params, tx.init(params), params)
    with pytest.raises(TypeError, match="`structure` callable returned None"):
        optax_l1.group_soft_threshold(params, 1.0, structure=lambda tree: None)


@pytest.mark.parametrize("cls", [optax_l1.Elements, optax_l1.Blocks, optax_l1.Groups])
def test_a_structure_class_for_an_instance_is_named(cls):
    # The class is callable, so it was called with params: "Elements.__init__() takes 1
    # positional argument", or a message printing the whole params tree (Groups).
    params = _mlp_params()
    with pytest.raises(TypeError, match="`structure` must be a Structure instance"):
        optax_l1.group_soft_threshold(params, 1.0, structure=cls)
    with pytest.raises(TypeError, match="`structure` must be a Structure instance"):
        optax_l1.group_l1_penalty(params, 1.0, structure=cls)


def _masked_out_fc2(make):
    only_fc1 = {"fc1": {"kernel": True, "bias": True}, "fc2": {"kernel": False, "bias": False}}
    return optax.masked(make(), only_fc1)


@pytest.mark.parametrize(
    "build",
    [
        lambda: optax_l1.group_l1_prox(
            4.0, learning_rate=1.0, structure=UNITS, mask=optax_l1.kernel_mask
        ),
        lambda: _masked_out_fc2(
            lambda: optax_l1.sparsity_target(0.5, ramp_steps=1, structure=UNITS)
        ),
        lambda: _masked_out_fc2(
            lambda: optax_l1.group_l1_prox(4.0, learning_rate=1.0, structure=UNITS)
        ),
    ],
    ids=["group_l1_prox mask=", "masked sparsity_target", "masked group_l1_prox"],
)
def test_a_coupled_group_split_by_a_mask_is_refused(build):
    # The unit's bias (masked by kernel_mask) or its fc2 rows (outside optax.masked) were
    # left out and the rest of the unit zeroed: "dead" units with live leaves (a probe).
    params = _mlp_params()
    tx = build()
    with pytest.raises(ValueError, match="a coupled group must see all its leaves"):
        tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)


def test_an_n_of_m_target_that_is_no_whole_count_per_block_is_refused():
    # floor(0.2 * 4) = 0: a 0.2 target with 2:4-style blocks gave no zero and logged the
    # target (a probe). A traced target of that kind makes the updates NaN.
    w = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    blocks = optax_l1.Blocks(4, axis=0)
    with pytest.raises(ValueError, match=r"a multiple of 1/4, got 0\.2 \(target=0\.0 or 0\.25"):
        optax_l1.sparsity_target(0.2, ramp_steps=1, allocation=blocks)

    @jax.jit
    def step(target):
        tx = optax_l1.sparsity_target(target, ramp_steps=1, allocation=blocks)
        u, _ = tx.update(w, tx.init(w), w)
        return u

    assert np.all(np.isnan(step(jnp.float32(0.3))))
    assert np.isfinite(step(jnp.float32(0.5))).all()


def test_path_structure_refuses_rules_that_are_not_pairs():
    # A string was iterated character by character ("not enough values to unpack"), None
    # crashed naming nothing.
    for bad in ("abc", None, ["^a$"], [("^a$", optax_l1.Groups(0), 3)]):
        with pytest.raises(TypeError, match="`rules` must"):
            optax_l1.path_structure(bad)  # pyright: ignore[reportArgumentType]
    pairs = optax_l1.path_structure([("^k$", optax_l1.Groups(0))])
    assert pairs({"k": jnp.ones((2, 2))})["k"] == optax_l1.Groups(0)


def test_coupled_groups_wholly_in_one_part_or_absent_leaves_are_fine():
    # A label wholly inside one multi_transform partition (another label in the other), and
    # a coupled rule that matches a leaf that is None in the params (a layer without bias):
    # neither is a split group.
    rules = optax_l1.path_structure(
        {
            r"^a/k1$": optax_l1.Groups(0, couple="h"),
            r"^a/k2$": optax_l1.Groups(1, couple="h"),
            r"^b/k1$": optax_l1.Groups(0, couple="g"),
            r"^b/k2$": optax_l1.Groups(1, couple="g"),
            r"bias$": optax_l1.Elements(couple="h"),
        }
    )
    r = np.random.default_rng(0)
    params = {
        "a": {"k1": jnp.asarray(r.standard_normal((4, 8)), jnp.float32), "bias": None,
              "k2": jnp.asarray(r.standard_normal((8, 3)), jnp.float32)},
        "b": {"k1": jnp.asarray(r.standard_normal((3, 6)), jnp.float32),
              "k2": jnp.asarray(r.standard_normal((6, 2)), jnp.float32)},
    }  # fmt: skip
    labels = {"a": "x", "b": "y"}
    whole = optax.multi_transform(
        {
            "x": optax_l1.sparsity_target(0.5, ramp_steps=1, structure=rules),
            "y": optax_l1.group_l1_prox(0.1, learning_rate=1.0, structure=rules),
        },
        labels,
    )
    params = _at_zero_gradient(whole, params)
    dead = np.all(np.asarray(params["a"]["k1"]) == 0, axis=0)
    assert dead.sum() == 4
    np.testing.assert_array_equal(np.asarray(params["a"]["k2"])[dead], 0.0)


def test_a_reduced_axis_of_length_zero_gives_empty_groups_not_a_crash():
    """An empty static sum of slices crashed with "reduce() of empty iterable"."""
    for shape in ((0, 4), (0,)):
        z = jnp.zeros(shape)
        assert optax_l1.group_soft_threshold(z, 0.1, axis=0).shape == shape
        assert float(optax_l1.group_l1_penalty({"w": z}, 0.1, axis=0)) == 0.0
        tx = optax_l1.group_l1_prox(0.1, learning_rate=0.1, axis=0)
        p = {"w": z, "v": jnp.ones((2, 3))}
        u, _ = jax.jit(tx.update)(p, tx.init(p), p)
        assert u["w"].shape == shape
        ref = optax_l1.group_soft_threshold(p["v"] + p["v"], 0.01, axis=0) - p["v"]
        np.testing.assert_allclose(u["v"], ref, rtol=1e-6)


def test_an_attribute_named_value_is_dropped_only_as_an_nnx_variables_last_key():
    """Every attribute named `value` was dropped: an Equinox attention's `value` projection
    read as 'weight' and path_mask(include='^value/') selected nothing (a probe)."""
    from optax_l1._masks import path_name

    attr, key = jax.tree_util.GetAttrKey, jax.tree_util.DictKey
    assert path_name((key("kernel"), attr("value"))) == "kernel"  # an NNX Variable
    assert path_name((attr("value"), attr("weight"))) == "value/weight"  # Equinox
    assert path_name((attr("query"), attr("value"), attr("weight"))) == "query/value/weight"
    assert path_name((attr("value"),)) == "value"


def test_a_structure_or_n_of_m_allocation_that_does_not_fit_raises_at_init():
    # It raised at the first update (a new user's Flax MLP with a bias of 10), and the
    # message now says how to leave the leaf out.
    params = {"k": jnp.ones((8, 10)), "b": jnp.ones(10)}
    blocks = optax_l1.Blocks(4, axis=0)
    tx = optax_l1.sparsity_target(0.5, ramp_steps=10, allocation=blocks)
    with pytest.raises(ValueError, match="`allocation` at leaf 'b'.*`mask=`"):
        tx.init(params)
    tx = optax_l1.sparsity_target(0.5, ramp_steps=10, structure=optax_l1.Blocks(3, axis=0))
    with pytest.raises(ValueError, match="`structure` at leaf 'b'.*`mask=`"):
        tx.init(params)
    masked = optax_l1.sparsity_target(
        0.5, ramp_steps=10, allocation=blocks, mask=optax_l1.kernel_mask
    )
    state = masked.init(params)
    u, _ = masked.update(params, state, params)
    assert u["k"].shape == (8, 10)
