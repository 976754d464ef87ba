"""State updated in place chunk by chunk (``_in_place.updated``), and ftrl on it.

- The loop is the elementwise map on whole arrays (to rounding), for sizes that are one chunk,
  a whole number of chunks, a remainder (the last chunk overlaps the one before), two
  elements, and shapes of any rank; NaN stays where it was.
- ftrl with the loop gives the params (to rounding, the same zeros) and state of the
  whole-leaf path over several donated steps (float32, bfloat16 params, a masked-out
  leaf, an int leaf, a scalar leaf), also under ``lax.scan`` and ``jax.vmap``.
- XLA's compiled temporary of a donated ftrl step is a few chunks, not a leaf (before: a
  copy of the old accumulator).
- With several devices the loop is off (it would gather a sharded leaf) and ftrl keeps the
  params' sharding.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1
from optax_l1 import _in_place


def _fn(g, w, z, n):  # z reads the old n (written after it), as in FTRL
    n_new = n + g * g
    return z + g - (jnp.sqrt(n_new) - jnp.sqrt(n)) * w, n_new


def _close(a, b):
    """Equal to rounding: XLA:CPU contracts multiply-adds differently in loops of other
    lengths (vector body against scalar remainder), so the loop is not bit for bit the map."""
    a, b = (np.asarray(x, np.float32) for x in (a, b))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "shape, chunk",
    [((2,), 4), ((7,), 7), ((21,), 7), ((23,), 7), ((3, 5, 2), 4), ((64, 33), 256)],
)
def test_loop_is_the_elementwise_map(shape, chunk):
    k = jax.random.split(jax.random.key(1), 4)
    g, w, z = (jax.random.normal(ki, shape) for ki in k[:3])
    n = jax.random.uniform(k[3], shape) + 0.1
    g = g.at[(0,) * len(shape)].set(jnp.nan)
    want = jax.jit(_fn)(g, w, z, n)
    got = jax.jit(lambda *a: _in_place.updated(_fn, a[:2], a[2:], chunk=chunk))(g, w, z, n)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        _close(a, b)  # NaN where NaN
    for a in got:  # the NaN gradient stays in its coordinate
        assert np.isnan(np.asarray(a).flat[0]) and np.isfinite(np.asarray(a).flat[1:]).all()


def test_loop_does_not_apply_to_one_element():
    assert not _in_place.applies(jnp.zeros(()))
    assert not _in_place.applies(jnp.zeros((1, 1)))
    assert _in_place.applies(jnp.zeros((2,)))


def _params():
    k = jax.random.split(jax.random.key(0), 4)
    return {
        "kernel": jax.random.normal(k[0], (300, 301)),  # 2 chunks of 45,150
        "half": jax.random.normal(k[1], (9, 7)).astype(jnp.bfloat16),
        "frozen": jax.random.normal(k[2], (5,)),
        "scalar": jnp.asarray(0.3),
        "steps": jnp.arange(3),
    }


MASK = {"kernel": True, "half": True, "frozen": False, "scalar": True, "steps": True}


def _grads(p, i):
    def g(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.zeros_like(x)
        wave = jnp.sin(jnp.arange(x.size, dtype=jnp.float32) * (i + 1.3)).reshape(x.shape)
        return (0.4 * wave).astype(x.dtype)

    return jax.tree.map(g, p)


def _tx():
    return optax_l1.ftrl(0.5, strength=0.05, l2=0.01, l2_shrinkage=0.02, mask=MASK)


def _force_loop(monkeypatch, loop):
    """The loop on (on any leaf of 2+ elements, as on one CPU device) or off."""
    monkeypatch.setattr(_in_place, "applies", lambda x: loop and 2 <= jnp.size(x))


def _run(monkeypatch, loop, steps=5):
    _force_loop(monkeypatch, loop)
    tx = _tx()

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1))
    p = _params()
    s = tx.init(p)
    for i in range(steps):
        p, s = step(p, s, _grads(p, i))
    return p, s


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        _close(x, y)
        np.testing.assert_array_equal(np.asarray(x) == 0, np.asarray(y) == 0)  # same zeros


def test_ftrl_loop_matches_whole_leaf_path(monkeypatch):
    p_loop, s_loop = _run(monkeypatch, True)
    p_map, s_map = _run(monkeypatch, False)
    _assert_trees_equal(p_loop, p_map)
    _assert_trees_equal(s_loop, s_map)
    assert 0.05 < float(jnp.mean(p_loop["kernel"] == 0)) < 0.95  # the test sees zeros land


@pytest.mark.parametrize("wrap", ["scan", "vmap"])
def test_ftrl_loop_under_scan_and_vmap(monkeypatch, wrap):
    params = {"w": jax.random.normal(jax.random.key(2), (3, 40))}
    grads = jax.random.normal(jax.random.key(3), (4, 3, 40))

    def run(loop):
        _force_loop(monkeypatch, loop)
        tx = optax_l1.ftrl(0.5, strength=0.3)

        def one(w, gs):  # 4 steps on one (3, 40) leaf
            def body(c, g):
                p, s = c
                u, s = tx.update({"w": g}, s, p)
                return (optax.apply_updates(p, u), s), None

            return jax.lax.scan(body, ({"w": w}, tx.init({"w": w})), gs)[0]

        if wrap == "scan":
            return jax.jit(one)(params["w"], grads)
        # vmap over the leaf's rows: each row its own (40,) problem
        return jax.jit(jax.vmap(one, in_axes=(0, 1)))(params["w"], grads)

    _assert_trees_equal(run(True), run(False))


def test_donated_ftrl_step_has_no_full_size_temporary():
    if not _in_place.applies(jnp.zeros(2)):
        pytest.skip("several devices: the loop is off")
    params = {"w": jnp.zeros((2048, 2048))}  # 16 MiB, 64 chunks
    tx = optax_l1.ftrl(0.1, strength=1e-3, l2=1e-3)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 4096, temp  # a few scalars (before: a 16 MiB copy of the accumulator)


_SHARDED = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np, optax, optax_l1
    from jax.sharding import NamedSharding, PartitionSpec as P
    from optax_l1 import _in_place
    assert not _in_place.applies(jnp.zeros(8))
    mesh = jax.make_mesh((4, 2), ("a", "b"))
    sh = NamedSharding(mesh, P("a", "b"))
    tx = optax_l1.ftrl(0.5, strength=0.05)
    p = {"w": jax.device_put(jnp.linspace(-1, 1, 64 * 32).reshape(64, 32), sh)}
    s = tx.init(p)
    g = {"w": jax.device_put(jnp.cos(jnp.arange(64 * 32.0)).reshape(64, 32), sh)}
    u, s = jax.jit(tx.update)(g, s, p)
    p = optax.apply_updates(p, u)
    assert p["w"].sharding.is_equivalent_to(sh, 2), p["w"].sharding
    assert s.accumulator["w"].sharding.is_equivalent_to(sh, 2)
    print("ok", float(jnp.mean(p["w"] == 0)))
    """
)


def test_ftrl_with_several_devices_keeps_the_sharding():
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")
