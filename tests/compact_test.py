"""Compaction: the smaller model computes what the sparse one did.

- An MLP whose hidden units are zero in every way a trained one can be (all zero; zero
  incoming weights with a positive or a negative bias; zero outgoing row): the compacted
  network's logits equal the original's within 1e-5 of their scale, and the right units go.
- Attention heads on separate and fused q/k/v projections: the compacted layer with fewer
  heads equals the original.
- Conv channels between two convolutions.
- The path a user takes: train with ``sparsity_target(structure=...)`` on coupled units,
  compact, and get the same predictions; Flax linen params rebuilt at the new width.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1

UNITS = {
    "k1": optax_l1.Groups(0, couple="h"),
    "b1": optax_l1.Elements(couple="h"),
    "k2": optax_l1.Groups(1, couple="h"),
    "b2": None,
}
FOLD = optax_l1.Fold("h", bias="b1", weights="k2", next_bias="b2", activation=jax.nn.relu)


def mlp(p, x):
    return jax.nn.relu(x @ p["k1"] + p["b1"][None]) @ p["k2"] + p["b2"][None]


def _sparse_mlp():
    """12 hidden units: 0-2 all zero, 3-4 zero column + positive bias, 5 zero column +
    negative bias, 6-7 zero outgoing row, 8-11 alive."""
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    p = {
        "k1": jax.random.normal(k[0], (5, 12)),
        "b1": jnp.abs(jax.random.normal(k[1], (12,))) + 0.1,
        "k2": jax.random.normal(k[2], (12, 3)),
        "b2": jax.random.normal(k[3], (3,)),
    }
    p["k1"] = p["k1"].at[:, :6].set(0.0)
    p["b1"] = p["b1"].at[:3].set(0.0).at[5].set(-0.7)
    p["k2"] = p["k2"].at[:3].set(0.0).at[6:8].set(0.0)
    return p


def _assert_same_outputs(a, b):
    scale = float(jnp.max(jnp.abs(a)))
    assert float(jnp.max(jnp.abs(a - b))) <= 1e-5 * scale, (a, b)


def test_mlp_units_go_and_the_logits_stay():
    p = _sparse_mlp()
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 5))
    small, kept = optax_l1.compact(p, UNITS, fold=[FOLD])
    assert list(kept["h"]) == [8, 9, 10, 11]
    assert small["k1"].shape == (5, 4) and small["b1"].shape == (4,)
    assert small["k2"].shape == (4, 3) and small["b2"].shape == (3,)
    _assert_same_outputs(mlp(p, x), mlp(small, x))


def test_without_fold_only_units_zero_everywhere_go():
    p = _sparse_mlp()
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 5))
    small, kept = optax_l1.compact(p, UNITS)
    assert list(kept["h"]) == list(range(3, 12))  # constant and silent units stay
    _assert_same_outputs(mlp(p, x), mlp(small, x))
    # Slicing by the kernel's zero columns alone (what the group-lasso guide once implied)
    # changes the predictions: the constant units matter.
    alive = np.asarray(jnp.any(p["k1"] != 0, axis=0))
    naive = {"k1": p["k1"][:, alive], "b1": p["b1"][alive], "k2": p["k2"][alive], "b2": p["b2"]}
    assert float(jnp.max(jnp.abs(mlp(p, x) - mlp(naive, x)))) > 0.1


def test_compact_rejects_what_it_cannot_slice():
    p = _sparse_mlp()
    with pytest.raises(ValueError, match="same number of groups"):
        optax_l1.compact(p, {**UNITS, "k1": optax_l1.Elements(couple="h")})
    grid = {"a": jnp.ones((2, 3, 4)), "b": jnp.zeros((3, 4))}  # groups on a 3 x 4 grid
    with pytest.raises(ValueError, match="one axis"):
        optax_l1.compact(
            grid, {"a": optax_l1.Groups(0, couple="g"), "b": optax_l1.Elements(couple="g")}
        )
    with pytest.raises(ValueError, match="no leaf at path 'nope'"):
        bad = optax_l1.Fold("h", bias="nope", weights="k2", next_bias="b2", activation=jax.nn.relu)
        optax_l1.compact(p, UNITS, fold=[bad])
    with pytest.raises(TypeError, match="`activation` of Fold must be a function"):
        optax_l1.Fold("h", bias="b1", weights="k2", next_bias="b2", activation="relu")  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="`weights` of Fold must be a str"):
        optax_l1.Fold("h", bias="b1", weights=("k2",), next_bias="b2", activation=jax.nn.relu)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="labels no structure carries"):
        other = optax_l1.Fold("z", bias="b1", weights="k2", next_bias="b2", activation=jax.nn.relu)
        optax_l1.compact(p, UNITS, fold=[FOLD, other])


def test_compact_refuses_folds_it_would_get_wrong():
    """Probes: each of these changed the compacted model's outputs silently (or crashed
    naming nothing)."""
    p = _sparse_mlp()

    def fold(**kw):
        args = dict(couple="h", bias="b1", weights="k2", next_bias="b2", activation=jax.nn.relu)
        return optax_l1.Fold(**(args | kw))  # pyright: ignore[reportArgumentType]

    with pytest.raises(ValueError, match="two Folds for the label 'h'"):  # the first dropped
        optax_l1.compact(p, UNITS, fold=[fold(), fold(activation=jnp.tanh)])
    with pytest.raises(TypeError, match="`fold` must be a list or tuple of Fold"):
        optax_l1.compact(p, UNITS, fold=FOLD)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`next_bias` of Fold must be another leaf"):
        fold(next_bias="b1")  # the folded constants went with the units
    with pytest.raises(ValueError, match="`next_bias` 'k1' must not carry the label"):
        optax_l1.compact(p, UNITS, fold=[fold(next_bias="k1")])
    with pytest.raises(ValueError, match="`next_bias` 'b2' must be a float array"):
        optax_l1.compact({**p, "b2": None}, UNITS, fold=[FOLD])  # use_bias=False: a crash
    with pytest.raises(ValueError, match="`next_bias` 'b2' must be a float array"):
        optax_l1.compact({**p, "b2": jnp.zeros(3, jnp.int32)}, UNITS, fold=[FOLD])  # truncated
    # A unit whose only non-zeros are subnormal is not zero (sparsity_report agrees).
    q = {"k1": jnp.array([[1.0, 1e-42, 2.0]]), "k2": jnp.array([[1.0], [0.0], [3.0]])}
    units = {"k1": optax_l1.Groups(0, couple="h"), "k2": optax_l1.Groups(1, couple="h")}
    np.testing.assert_array_equal(optax_l1.compact(q, units).kept["h"], [0, 1, 2])


def test_fold_keeps_a_unit_another_kernel_still_reads():
    # Unit 1's row of k2 is zero but k3 (a second head on the same hidden layer) reads it:
    # it is not silent (found by a probe: it was removed and head 2 changed by up to 6.9).
    k = jax.random.split(jax.random.PRNGKey(3), 6)
    p = {
        "k1": jax.random.normal(k[0], (3, 4)),
        "b1": jax.random.normal(k[1], (4,)),
        "k2": jax.random.normal(k[2], (4, 2)).at[1].set(0.0),
        "b2": jax.random.normal(k[3], (2,)),
        "k3": jax.random.normal(k[4], (4, 2)),
        "b3": jax.random.normal(k[5], (2,)),
    }
    units = {**UNITS, "k3": optax_l1.Groups(1, couple="h"), "b3": None}

    def net(q, x):
        h = jax.nn.relu(x @ q["k1"] + q["b1"][None])
        return jnp.concatenate([h @ q["k2"] + q["b2"][None], h @ q["k3"] + q["b3"][None]], -1)

    x = jax.random.normal(jax.random.PRNGKey(4), (16, 3))
    small, kept = optax_l1.compact(p, units, fold=[FOLD])
    assert list(kept["h"]) == [0, 1, 2, 3]
    _assert_same_outputs(net(p, x), net(small, x))
    # A reader of another rank (a DenseGeneral kernel (units, 2, 1)) still reads unit 1.
    k3 = p["k3"].reshape(4, 2, 1)
    general = {**units, "k3": optax_l1.Groups((1, 2), couple="h")}
    _, kept = optax_l1.compact({**p, "k3": k3}, general, fold=[FOLD])
    assert list(kept["h"]) == [0, 1, 2, 3]
    p["k3"] = p["k3"].at[1].set(0.0)  # now nothing reads unit 1: it goes
    small, kept = optax_l1.compact(p, units, fold=[FOLD])
    assert list(kept["h"]) == [0, 2, 3]
    _assert_same_outputs(net(p, x), net(small, x))


@pytest.mark.parametrize("fault", [jnp.nan, jnp.inf])
def test_fold_keeps_a_unit_with_a_nan_so_the_fault_shows(fault):
    # Units 6-7 have a zero outgoing row (silent); a NaN (or an inf, times the zero row) in
    # unit 6's incoming column makes the model's output NaN, and the compacted model's too
    # (it was dropped: finite output).
    p = _sparse_mlp()
    p["k1"] = p["k1"].at[0, 6].set(fault)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    small, kept = optax_l1.compact(p, UNITS, fold=[FOLD])
    assert 6 in kept["h"] and 7 not in kept["h"]
    faulty = np.isnan(np.asarray(mlp(p, x)))
    assert faulty.any()
    np.testing.assert_array_equal(np.isnan(np.asarray(mlp(small, x))), faulty)


def test_fold_refuses_a_bias_with_several_entries_per_unit():
    heads = {
        "qkv": optax_l1.Heads(2, axis=1, parts=3, couple="a"),
        "bqkv": optax_l1.Heads(2, axis=0, parts=3, couple="a"),
        "o": optax_l1.Heads(2, axis=0, couple="a"),
        "bo": None,
    }
    p = {"qkv": jnp.ones((4, 12)), "bqkv": jnp.ones(12), "o": jnp.ones((4, 4)), "bo": jnp.ones(4)}
    fold = optax_l1.Fold("a", bias="bqkv", weights="o", next_bias="bo", activation=lambda b: b)
    with pytest.raises(ValueError, match="'bqkv' has 6 entries per unit"):
        optax_l1.compact(p, heads, fold=[fold])


def attention(p, x, heads, fused):
    d = x.shape[-1]
    if fused:
        q, k, v = jnp.split(x @ p["qkv"], 3, axis=-1)
    else:
        q, k, v = x @ p["q"], x @ p["k"], x @ p["v"]
    dh = q.shape[-1] // heads

    def split(t):
        return t.reshape(t.shape[0], heads, dh).transpose(1, 0, 2)

    q, k, v = split(q), split(k), split(v)
    w = jax.nn.softmax(q @ k.transpose(0, 2, 1) / np.sqrt(8.0), axis=-1)
    out = (w @ v).transpose(1, 0, 2).reshape(x.shape[0], heads * dh)
    assert d == p["o"].shape[1]
    return out @ p["o"]


@pytest.mark.parametrize("fused", [False, True])
def test_heads_go_and_the_attention_output_stays(fused):
    heads, dh, d = 4, 8, 16
    key = jax.random.split(jax.random.PRNGKey(2), 4)
    if fused:
        p = {"qkv": jax.random.normal(key[0], (d, 3 * heads * dh)) / 4}
        sts = {"qkv": optax_l1.Heads(heads, axis=1, parts=3, couple="heads")}
    else:
        p = {n: jax.random.normal(k, (d, heads * dh)) / 4 for n, k in zip("qkv", key, strict=False)}
        sts = {n: optax_l1.Heads(heads, axis=1, couple="heads") for n in "qkv"}
    p["o"] = jax.random.normal(key[3], (heads * dh, d)) / 4
    sts["o"] = optax_l1.Heads(heads, axis=0, couple="heads")
    # Heads 1 and 3 zeroed on every projection.
    for n, st in sts.items():
        lay = st.layout(p[n].shape)
        mask = np.ones(lay.split)
        index = [slice(None)] * len(lay.split)
        index[st.axis + 1] = [1, 3]  # pyright: ignore[reportArgumentType, reportCallIssue]
        mask[tuple(index)] = 0.0
        p[n] = p[n] * mask.reshape(p[n].shape)
    x = jax.random.normal(jax.random.PRNGKey(3), (6, d))
    small, kept = optax_l1.compact(p, sts)
    assert list(kept["heads"]) == [0, 2]
    assert small["o"].shape == (2 * dh, d)
    _assert_same_outputs(attention(p, x, heads, fused), attention(small, x, 2, fused))


def test_conv_channels_go_and_the_feature_maps_stay():
    key = jax.random.split(jax.random.PRNGKey(4), 4)
    p = {
        "c1": jax.random.normal(key[0], (3, 3, 2, 6)),
        "b1": jnp.zeros(6),
        "c2": jax.random.normal(key[1], (3, 3, 6, 4)),
    }
    p["c1"] = p["c1"].at[..., [0, 4]].set(0.0)
    sts = {
        "c1": optax_l1.Groups((0, 1, 2), couple="ch"),
        "b1": optax_l1.Elements(couple="ch"),
        "c2": optax_l1.Groups((0, 1, 3), couple="ch"),
    }
    p["c2"] = p["c2"].at[:, :, [0, 4]].set(0.0)

    def net(p, x):
        conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return conv(jax.nn.relu(conv(x, p["c1"]) + p["b1"][None, None, None]), p["c2"])

    x = jax.random.normal(key[2], (2, 8, 8, 2))
    small, kept = optax_l1.compact(p, sts)
    assert list(kept["ch"]) == [1, 2, 3, 5] and small["c2"].shape == (3, 3, 4, 4)
    _assert_same_outputs(net(p, x), net(small, x))


def test_train_with_coupled_units_then_compact():
    """sparsity_target on coupled units, then compact: same predictions, 3/4 units gone."""
    key = jax.random.split(jax.random.PRNGKey(5), 4)
    x = jax.random.normal(key[0], (256, 8))
    y = jnp.sin(x[:, :2].sum(1, keepdims=True))
    p = {
        "k1": jax.random.normal(key[1], (8, 32)) / 3,
        "b1": jnp.zeros(32),
        "k2": jax.random.normal(key[2], (32, 1)) / 6,
        "b2": jnp.zeros(1),
    }
    tx = optax.chain(
        optax.adam(1e-2), optax_l1.sparsity_target(0.75, ramp_steps=100, structure=UNITS)
    )
    loss = lambda p: jnp.mean((mlp(p, x) - y) ** 2)  # noqa: E731

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    s = tx.init(p)
    for _ in range(150):
        p, s = step(p, s)
    small, kept = optax_l1.compact(p, UNITS)
    assert len(kept["h"]) == 8 and small["k1"].shape == (8, 8)
    _assert_same_outputs(mlp(p, x), mlp(small, x))


def test_flax_linen_params_rebuild_at_the_new_width():
    nn = pytest.importorskip("flax.linen")

    class MLP(nn.Module):
        hidden: int

        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Dense(self.hidden)(x))  # Dense_0
            return nn.Dense(3)(h)  # Dense_1

    x = jax.random.normal(jax.random.PRNGKey(6), (16, 5))
    params = MLP(10).init(jax.random.PRNGKey(7), x)["params"]
    params = jax.tree.map(lambda a: a, params)
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[:, :6].set(0.0)
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[:6].set(0.3)
    units = {
        "Dense_0": {
            "kernel": optax_l1.Groups(0, couple="h"),
            "bias": optax_l1.Elements(couple="h"),
        },
        "Dense_1": {"kernel": optax_l1.Groups(1, couple="h"), "bias": None},
    }
    fold = optax_l1.Fold(
        "h",
        bias="Dense_0/bias",
        weights="Dense_1/kernel",
        next_bias="Dense_1/bias",
        activation=jax.nn.relu,
    )
    small, kept = optax_l1.compact(params, units, fold=[fold])
    assert len(kept["h"]) == 4
    before = MLP(10).apply({"params": params}, x)
    after = MLP(len(kept["h"])).apply({"params": small}, x)
    _assert_same_outputs(before, after)


def test_flax_nnx_module_rebuilt_smaller():
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, n_in, n_hidden, n_out, *, rngs):
            self.linear1 = nnx.Linear(n_in, n_hidden, rngs=rngs)
            self.linear2 = nnx.Linear(n_hidden, n_out, rngs=rngs)

        def __call__(self, x):
            return self.linear2(jax.nn.relu(self.linear1(x)))

    model = MLP(5, 10, 3, rngs=nnx.Rngs(0))
    model.linear1.kernel[...] = model.linear1.kernel[...].at[:, 2:8].set(0.0)
    model.linear1.bias[...] = model.linear1.bias[...].at[2:8].set(0.4)
    units = optax_l1.path_structure(
        {
            "^linear1/kernel$": optax_l1.Groups(0, couple="h"),
            "^linear1/bias$": optax_l1.Elements(couple="h"),
            "^linear2/kernel$": optax_l1.Groups(1, couple="h"),
        }
    )
    fold = optax_l1.Fold(
        "h",
        bias="linear1/bias",
        weights="linear2/kernel",
        next_bias="linear2/bias",
        activation=jax.nn.relu,
    )
    _, state = nnx.split(model, nnx.Param)
    compacted = optax_l1.compact(state, units, fold=[fold])
    width = len(compacted.kept["h"])
    # Built abstractly (no initialization): into() replaces every value.
    small = compacted.into(nnx.eval_shape(lambda: MLP(5, width, 3, rngs=nnx.Rngs(1))))
    x = jax.random.normal(jax.random.PRNGKey(8), (7, 5))
    assert width == 4 and small.linear1.kernel[...].shape == (5, 4)
    _assert_same_outputs(model(x), small(x))
    with pytest.raises(
        ValueError, match=r"`module` leaf 'linear1/bias' is float32\[10\].*float32\[4\]"
    ):
        compacted.into(MLP(5, 10, 3, rngs=nnx.Rngs(1)))  # the old width


def test_equinox_mlp_rebuilt_smaller():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(5, 3, 10, depth=1, key=jax.random.PRNGKey(0))
    # Equinox stores Linear weights as (out, in): unit j is row j of the first weight
    # and column j of the second.
    w0 = model.layers[0].weight.at[2:8].set(0.0)
    b0 = model.layers[0].bias.at[2:8].set(-0.2)  # relu(-0.2) = 0: these fold to nothing
    model = eqx.tree_at(lambda m: (m.layers[0].weight, m.layers[0].bias), model, (w0, b0))
    units = optax_l1.path_structure(
        {
            r"^layers/0/weight$": optax_l1.Groups(1, couple="h"),
            r"^layers/0/bias$": optax_l1.Elements(couple="h"),
            r"^layers/1/weight$": optax_l1.Groups(0, couple="h"),
        }
    )
    params, _ = eqx.partition(model, eqx.is_array)
    fold = optax_l1.Fold(
        "h",
        bias="layers/0/bias",
        weights="layers/1/weight",
        next_bias="layers/1/bias",
        activation=jax.nn.relu,
    )
    assert len(optax_l1.compact(params, units).kept["h"]) == 10  # biases are not zero
    small_params, kept = optax_l1.compact(params, units, fold=[fold])
    assert len(kept["h"]) == 4
    # The width is static metadata of eqx.nn.MLP: build it at the new width, move the arrays in.
    template = eqx.filter_eval_shape(eqx.nn.MLP, 5, 3, len(kept["h"]), 1, key=jax.random.key(1))
    small = optax_l1.Compacted(small_params, kept).into(template)
    assert small.width_size == 4 and small.layers[0].weight.shape == (4, 5)
    x = jax.random.normal(jax.random.PRNGKey(9), (7, 5))
    _assert_same_outputs(jax.vmap(model)(x), jax.vmap(small)(x))
    with pytest.raises(ValueError, match="`module` has 4 arrays and the compacted params 2"):
        optax_l1.Compacted(small_params.layers[0], kept).into(template)
