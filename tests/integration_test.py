"""Flax linen / NNX integration, mask helpers on Flax trees, sparsity metrics."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state
from references import np_soft

import optax_l1

LR, STRENGTH = 0.05, 2.0  # threshold 0.1 per step


def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype(np.float32)
    y = (x[:, :1] * 2.0 - x[:, 1:2]).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def make_tx(mask=optax_l1.kernel_mask):
    return optax.chain(
        optax.adamw(LR, weight_decay=1e-4), optax_l1.l1_prox(STRENGTH, learning_rate=LR, mask=mask)
    )


# ----------------------------------------------------------------------------- linen


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8)(x)
        x = nn.LayerNorm()(x)
        x = nn.relu(x)
        return nn.Dense(1)(x)


def linen_state(tx, freeze=False):
    model = MLP()
    x, _ = batch()
    params = model.init(jax.random.key(0), x)["params"]
    if freeze:
        params = flax.core.freeze(params)
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def linen_grads(state):
    x, y = batch()

    def loss(p):
        return jnp.mean((state.apply_fn({"params": p}, x) - y) ** 2)

    return jax.grad(loss)(state.params)


@pytest.mark.parametrize("freeze", [False, True])
def test_linen_one_step_is_adamw_then_soft_threshold_on_kernels(freeze):
    state = linen_state(make_tx(), freeze)
    ref = linen_state(optax.adamw(LR, weight_decay=1e-4), freeze)
    grads = linen_grads(state)
    apply = jax.jit(lambda s, g: s.apply_gradients(grads=g))
    new = apply(state, grads)
    after_adamw = apply(ref, grads).params
    flat_new = flax.traverse_util.flatten_dict(flax.core.unfreeze(new.params))
    flat_ref = flax.traverse_util.flatten_dict(flax.core.unfreeze(after_adamw))
    for path, got in flat_new.items():
        if path[-1] == "kernel":
            want = np_soft(flat_ref[path], LR * STRENGTH)
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(np.asarray(got) == 0, want == 0)
        else:  # biases and the LayerNorm scale: exactly what adamw alone gives
            np.testing.assert_array_equal(np.asarray(got), np.asarray(flat_ref[path]))
    assert isinstance(new.params, flax.core.FrozenDict) == freeze


def test_linen_training_makes_kernels_sparse_and_leaves_biases_dense():
    state = linen_state(make_tx())

    @jax.jit
    def train(state):
        def body(s, _):
            return s.apply_gradients(grads=linen_grads(s)), None

        return jax.lax.scan(body, state, length=30)[0]

    state = train(state)
    report = optax_l1.sparsity_report(state.params)
    assert float(report["Dense_0/kernel"]) > 0.3
    for name in ("Dense_0/bias", "Dense_1/bias", "LayerNorm_0/scale", "LayerNorm_0/bias"):
        assert float(report[name]) < 0.5, name
    kernels = [state.params["Dense_0"]["kernel"], state.params["Dense_1"]["kernel"]]
    n_zero = sum(int(np.sum(np.asarray(k) == 0)) for k in kernels)
    assert n_zero == round(float(optax_l1.sparsity(state.params, mask=optax_l1.kernel_mask)) * 56)


def test_linen_l1_penalty_and_kernel_mask_on_params():
    state = linen_state(make_tx(), freeze=True)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state.params))
    kernels = [v for k, v in flat.items() if k[-1] == "kernel"]
    want = 0.3 * sum(float(np.sum(np.abs(np.asarray(k, np.float64)))) for k in kernels)
    got = optax_l1.l1_penalty(state.params, 0.3, mask=optax_l1.kernel_mask)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    mask = optax_l1.kernel_mask(state.params)
    assert isinstance(mask, flax.core.FrozenDict)
    assert mask["Dense_0"]["kernel"] is True and mask["Dense_0"]["bias"] is False
    assert mask["LayerNorm_0"]["scale"] is False


def test_linen_optax_masked_with_kernel_mask():
    state = linen_state(
        optax.masked(optax_l1.l1_prox(1e3, learning_rate=1.0), optax_l1.kernel_mask)
    )
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    new = state.apply_gradients(grads=zeros)
    assert float(optax_l1.sparsity(new.params, mask=optax_l1.kernel_mask)) == 1.0
    bias = np.asarray(new.params["LayerNorm_0"]["scale"])
    np.testing.assert_array_equal(bias, np.asarray(state.params["LayerNorm_0"]["scale"]))


# ----------------------------------------------------------------------------- NNX


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.dense0 = nnx.Linear(6, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)
        self.dense1 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.dense1(nnx.relu(self.norm(self.dense0(x))))


def nnx_loss(model):
    x, y = batch()
    return jnp.mean((model(x) - y) ** 2)


def test_nnx_optimizer_one_step_is_adamw_then_soft_threshold_on_kernels():
    model = NnxMLP(nnx.Rngs(0))
    ref_model = NnxMLP(nnx.Rngs(0))
    opt = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)
    ref_opt = nnx.Optimizer(ref_model, optax.adamw(LR, weight_decay=1e-4), wrt=nnx.Param)
    grads = nnx.grad(nnx_loss)(model)
    opt.update(model, grads)
    ref_opt.update(ref_model, grads)
    got = nnx.state(model, nnx.Param)
    want = nnx.state(ref_model, nnx.Param)
    g_flat = dict(jax.tree_util.tree_flatten_with_path(got)[0])
    w_flat = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    assert g_flat.keys() == w_flat.keys() and len(g_flat) == 6
    for path, value in g_flat.items():
        names = [getattr(k, "key", None) for k in path]
        if "kernel" in names:
            ref = np_soft(w_flat[path], LR * STRENGTH)
            np.testing.assert_allclose(np.asarray(value), ref, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(np.asarray(value) == 0, ref == 0)
        else:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(w_flat[path]))


def test_nnx_jitted_training_gives_exact_zero_kernels():
    model = NnxMLP(nnx.Rngs(1))
    opt = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, opt):
        grads = nnx.grad(nnx_loss)(model)
        opt.update(model, grads)

    for _ in range(15):
        train_step(model, opt)
    params = nnx.state(model, nnx.Param)
    report = optax_l1.sparsity_report(params)
    assert set(report) == {
        "dense0/kernel", "dense0/bias", "norm/scale", "norm/bias",
        "dense1/kernel", "dense1/bias", "total",
    }  # fmt: skip
    assert float(report["dense0/kernel"]) > 0.3
    assert float(report["norm/scale"]) == 0.0
    kernel = np.asarray(model.dense0.kernel[...])
    np.testing.assert_allclose(float(report["dense0/kernel"]), np.mean(kernel == 0), rtol=1e-6)


def test_nnx_state_mask_helpers_and_penalty():
    model = NnxMLP(nnx.Rngs(2))
    state = nnx.state(model, nnx.Param)
    mask = optax_l1.kernel_mask(state)
    flat = {
        "/".join(str(getattr(k, "key", "")) for k in p if hasattr(k, "key")): v
        for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]
    }
    assert flat == {
        "dense0/kernel": True, "dense0/bias": False, "norm/scale": False, "norm/bias": False,
        "dense1/kernel": True, "dense1/bias": False,
    }  # fmt: skip
    pm = optax_l1.path_mask(state, include="^dense", exclude="bias$")
    pm_true = sorted(
        "/".join(str(getattr(k, "key", "")) for k in p if hasattr(k, "key"))
        for p, v in jax.tree_util.tree_flatten_with_path(pm)[0]
        if v
    )
    assert pm_true == ["dense0/kernel", "dense1/kernel"]
    k0 = np.asarray(model.dense0.kernel[...], np.float64)
    k1 = np.asarray(model.dense1.kernel[...], np.float64)
    want = 0.5 * (np.abs(k0).sum() + np.abs(k1).sum())
    np.testing.assert_allclose(float(optax_l1.l1_penalty(state, 0.5, mask=mask)), want, rtol=1e-5)
    got = optax_l1.l1_penalty(state, 0.5, mask=optax_l1.kernel_mask)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


# ----------------------------------------------------------------------------- masks & metrics


def test_kernel_mask_options_on_plain_dicts():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
        "embedding": {"table": jnp.ones((10, 4))},
        "vector": jnp.ones(4),
        "count": jnp.ones((2, 2), jnp.int32),
        "none": None,
    }
    m = optax_l1.kernel_mask(params)
    assert m["conv"] == {"kernel": True, "bias": False}
    assert m["embedding"]["table"] is False and m["vector"] is False  # embeddings: out
    assert m["count"] is False and m["none"] is None
    m = optax_l1.kernel_mask(params, exclude=r"(^|/)(bias|scale)(/|$)")  # the way back in
    assert m["embedding"]["table"] is True and m["conv"]["kernel"] is True
    assert optax_l1.kernel_mask(params, min_ndim=1, exclude=None)["conv"]["bias"] is True
    # A component match, not a substring: a leaf named "bias_scale_table" stays regularized.
    assert optax_l1.kernel_mask({"bias_scale_table": jnp.ones((2, 2))})["bias_scale_table"]
    m = optax_l1.kernel_mask(params, min_ndim=1)
    assert m["vector"] is True and m["conv"]["bias"] is False
    m = optax_l1.kernel_mask(params, min_ndim=3, exclude=None)
    assert m["embedding"]["table"] is False and m["conv"]["kernel"] is True
    with pytest.raises(ValueError, match="`min_ndim`"):
        optax_l1.kernel_mask(params, min_ndim=-1)
    with pytest.raises(TypeError, match="`exclude` must be a regular expression"):
        optax_l1.kernel_mask(params, exclude=("embedding", "bias"))  # the 0.1 form: refused
    with pytest.raises(ValueError, match="`exclude` must be a valid regular expression"):
        optax_l1.path_mask(params, exclude="(")


@pytest.mark.parametrize(
    "path",
    [
        "Embed_0/embedding",
        "embedding",
        "tok_embeddings/weight",
        "model/embed_tokens",
        "wte",
        "transformer/wpe",
        "bert/word_embeddings",
        "PosEmbed/table",
    ],
)
def test_kernel_mask_leaves_embedding_tables_out(path):
    *outer, last = path.split("/")
    table = {last: jnp.ones((4, 3))}
    for key in reversed(outer):
        table = {key: table}
    params = {**table, "Dense_0": {"kernel": jnp.ones((3, 3))}}
    m = optax_l1.kernel_mask(params)
    leaf = m
    for key in path.split("/"):
        leaf = leaf[key]
    assert leaf is False
    assert jax.tree.leaves(m).count(True) == 1  # the Dense kernel beside it is still in


def test_kernel_mask_keeps_kernels_whose_names_only_resemble_embeddings():
    params = {"mlp_wte_proj": {"kernel": jnp.ones((2, 2))}, "Scale": {"kernel": jnp.ones((2, 2))}}
    m = optax_l1.kernel_mask(params)
    assert m["mlp_wte_proj"]["kernel"] is True  # "wte" only as a whole component
    assert m["Scale"]["kernel"] is False  # case-insensitive component "scale"


def test_path_mask_on_plain_and_frozen_dicts():
    params = {
        "encoder": {"layer_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
        "head": {"kernel": jnp.ones((2, 1))},
        "layers": [jnp.ones(2), jnp.ones(3)],
    }
    m = optax_l1.path_mask(params, include="^encoder/")
    assert (
        m["encoder"]["layer_0"] == {"kernel": True, "bias": True} and m["head"]["kernel"] is False
    )
    m = optax_l1.path_mask(flax.core.freeze(params), include="kernel", exclude="^head")
    assert isinstance(m, flax.core.FrozenDict)
    assert m["encoder"]["layer_0"]["kernel"] is True and m["head"]["kernel"] is False
    assert optax_l1.path_mask(params, include=r"^layers/1$")["layers"] == [False, True]


def test_sparsity_counts_exact_zeros_of_inexact_leaves():
    params = {
        "a": jnp.array([[0.0, 1.0], [0.0, -0.0]]),
        "b": jnp.array([1e-30, 0.0, 2.0], jnp.bfloat16),
        "steps": jnp.array([0, 0, 0, 0]),  # integers are not counted
        "none": None,
    }
    np.testing.assert_allclose(float(optax_l1.sparsity(params)), 4 / 7, rtol=1e-6)
    got = jax.jit(
        lambda p: optax_l1.sparsity(p, mask={"a": False, "b": True, "steps": True, "none": None})
    )(params)
    np.testing.assert_allclose(float(got), 1 / 3, rtol=1e-6)
    assert float(optax_l1.sparsity({"i": jnp.zeros(3, jnp.int32)})) == 0.0
    assert optax_l1.sparsity(params).dtype == jnp.float32


def test_sparsity_report_values_and_jit():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(4, 5)).astype(np.float32)
    k[k < 0.3] = 0.0
    params = {"dense": {"kernel": jnp.asarray(k), "bias": jnp.array([0.0, 1.0, 2.0, 0.0, 0.0])}}
    report = jax.jit(optax_l1.sparsity_report)(params)
    assert set(report) == {"dense/kernel", "dense/bias", "total"}
    np.testing.assert_allclose(float(report["dense/kernel"]), np.mean(k == 0), rtol=1e-6)
    np.testing.assert_allclose(float(report["dense/bias"]), 0.6, rtol=1e-6)
    np.testing.assert_allclose(float(report["total"]), (np.sum(k == 0) + 3) / 25, rtol=1e-6)
    masked = optax_l1.sparsity_report(params, mask=optax_l1.kernel_mask)
    assert set(masked) == {"dense/kernel", "total"}
    np.testing.assert_allclose(float(masked["total"]), np.mean(k == 0), rtol=1e-6)
