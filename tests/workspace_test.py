"""``group_l1_prox(workspace=True)``: the same numbers as without, and no full-size temporary.

- Bit for bit the params (and zeros) of ``workspace=False`` over several jitted, donated
  steps, on a tree with a masked-out leaf, a None leaf, an integer leaf, a bfloat16 leaf and
  coupled units; also under ``lax.scan`` (the state's dtypes and shapes do not change).
- The state: one buffer per regularized leaf in its compute dtype, None elsewhere.
- XLA's compiled temporary of a donated step: below one leaf's size with the workspace.
- A non-bool ``workspace`` raises a TypeError naming it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1


def _params():
    k = jax.random.split(jax.random.key(0), 4)
    return {
        "kernel": jax.random.normal(k[0], (16, 8)),
        "bias": jax.random.normal(k[1], (8,)),
        "half": jax.random.normal(k[2], (8, 6)).astype(jnp.bfloat16),
        "frozen": jax.random.normal(k[3], (5,)),
        "steps": jnp.arange(3),
        "none": None,
    }


MASK = {
    "kernel": True,
    "bias": True,
    "half": True,
    "frozen": False,
    "steps": True,
    "none": True,
}
UNITS = {
    "kernel": optax_l1.Groups(0, couple="u"),
    "bias": optax_l1.Elements(couple="u"),
    "half": optax_l1.Groups(0),
    "frozen": None,
    "steps": None,
    "none": None,
}


def _grads(p, i):
    def g(x):
        if x is None or not jnp.issubdtype(x.dtype, jnp.inexact):
            return None if x is None else jnp.zeros_like(x)
        wave = jnp.sin(jnp.arange(x.size, dtype=jnp.float32) * (i + 1.3)).reshape(x.shape)
        return (0.4 * wave).astype(x.dtype)

    return jax.tree.map(g, p, is_leaf=lambda x: x is None)


STRENGTH = 9.0


def _tx(workspace, structure, opt=None):
    if structure:
        group = optax_l1.group_l1_prox(
            STRENGTH, learning_rate=0.1, structure=UNITS, workspace=workspace
        )
    else:
        mask = dict(MASK, bias=False)  # the bias has no axis 0 to reduce
        group = optax_l1.group_l1_prox(
            optax.linear_schedule(STRENGTH / 2, STRENGTH, 4),
            learning_rate=0.1,
            axis=0,
            mask=mask,
            workspace=workspace,
        )
    return optax.chain(optax.adam(0.1) if opt is None else opt, group)


def _train(workspace, structure, steps=6):
    tx = _tx(workspace, structure)
    p = _params()
    s = tx.init(p)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1))
    for i in range(steps):
        p, s = step(p, s, _grads(p, i))
    return p, s


@pytest.mark.parametrize("structure", [False, True])
def test_workspace_gives_bit_for_bit_the_params_without_it(structure):
    want, s_plain = _train(False, structure)
    got, s_ws = _train(True, structure)
    for k in ("kernel", "bias", "half", "frozen", "steps"):
        assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
    assert got["none"] is None
    # the group prox did zero whole groups (so equality covers the zeros, not only values)
    zero_cols = np.all(np.asarray(got["kernel"]) == 0, axis=0)
    assert 0 < zero_cols.sum() < 8
    assert int(s_ws[1].count) == int(s_plain[1].count) == 6


def test_workspace_state_holds_a_compute_dtype_buffer_per_regularized_leaf():
    tx = _tx(True, False)
    p = _params()
    ws = tx.init(p)[1].workspace
    assert ws["kernel"].shape == (16, 8) and ws["kernel"].dtype == jnp.float32
    assert ws["half"].shape == (8, 6) and ws["half"].dtype == jnp.float32  # bf16 params
    for k in ("bias", "frozen", "steps", "none"):  # masked out, integer, None
        assert ws[k] is None, k
    _, s = _train(True, False, steps=2)
    new = s[1].workspace
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == jax.tree.map(
        lambda a: (a.shape, a.dtype), ws
    )
    # the buffer holds the last point z = p + u the prox was applied to, not zeros
    assert float(jnp.max(jnp.abs(new["kernel"]))) > 0


def test_workspace_state_is_a_scan_carry():
    # (sgd: adam's moments of an integer leaf change dtype in a step, optax's own matter)
    p = _params()
    grads = [_grads(p, i) for i in range(4)]
    stacked = jax.tree.map(
        lambda *g: None if g[0] is None else jnp.stack(g), *grads, is_leaf=lambda x: x is None
    )

    def scanned(workspace):
        tx = _tx(workspace, True, optax.sgd(0.1))

        def body(carry, g):
            p, s = carry
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        run = jax.jit(lambda p, s, gs: jax.lax.scan(body, (p, s), gs)[0][0])
        return run(p, tx.init(p), stacked)

    got, want = scanned(True), scanned(False)
    for k in ("kernel", "bias", "half"):
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
    assert np.all(np.asarray(got["kernel"]) == 0, axis=0).any()


def test_donated_step_with_workspace_has_no_full_size_temporary():
    n = 512
    leaf_bytes = n * n * 4

    def temp(workspace):
        tx = optax.chain(
            optax.sgd(0.1),
            optax_l1.group_l1_prox(1.0, learning_rate=0.1, axis=0, workspace=workspace),
        )
        p = {"w": jnp.ones((n, n))}

        def step(p, s, g):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        lowered = jax.jit(step, donate_argnums=(0, 1)).lower(p, tx.init(p), p)
        return lowered.compile().memory_analysis().temp_size_in_bytes

    assert temp(True) < leaf_bytes // 8, temp(True)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_workspace_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="`workspace`"):
        optax_l1.group_l1_prox(1.0, learning_rate=0.1, axis=0, workspace=bad)
