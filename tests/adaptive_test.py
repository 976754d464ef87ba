"""Tests for optax_l1._adaptive: proximal Adagrad, FTRL, proximal Adam, the preconditioned wrapper.

References are NumPy transcriptions of TensorFlow's kernels (``ApplyProximalAdagrad``,
``ApplyFtrlV2``), of ProxGen's proximal Adam and of the FTRL-Proximal paper's Algorithm 1.
"""

import functools
import math
import os
import re
import subprocess
import sys
import textwrap

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_l1

SHAPE = (4, 6)
STEPS = 80


# with_preconditioned_l1 around optax.adam / optax.adamw with their defaults.
ADAM = {"eps": 1e-8, "eps_root": 0.0, "bias_correction_decay": 0.999, "unseen": "shrink"}
NO_BIAS_CORRECTION = {**ADAM, "bias_correction_decay": None}


def _problem(seed, steps=STEPS, shape=SHAPE):
    """Initial weights, a sparse target and per-step noise: g_t = (w - target) + noise_t."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=shape).astype(np.float32)
    target = (rng.normal(size=shape) * (rng.random(shape) < 0.4)).astype(np.float32)
    noise = (0.3 * rng.normal(size=(steps, *shape))).astype(np.float32)
    return w0, target, noise


def _grad(w, target, noise_t):
    return (np.asarray(w, np.float32) - target + noise_t).astype(np.float32)


def _run_optax(tx, w0, target, noise):
    params = jnp.asarray(w0)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for noise_t in noise:
        updates, state = update(jnp.asarray(_grad(params, target, noise_t)), state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params)


def _run_reference(step, w0, target, noise, slots):
    w = w0.copy()
    for noise_t in noise:
        w, slots = step(w, _grad(w, target, noise_t), slots)
    return w


def _assert_same(ours, ref):
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(ours == 0, ref == 0)


def _soft(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0)


# ----------------------------------------------------------------------------- TF kernels


def tf_proximal_adagrad(var, grad, accum, *, lr, l1, l2):
    """TensorFlow's ApplyProximalAdagrad kernel, in float32."""
    f = np.float32
    accum = (accum + grad * grad).astype(f)
    learning_rate = (f(lr) / np.sqrt(accum)).astype(f)
    prox_var = (var - grad * learning_rate).astype(f)
    if l1 > 0:
        var = _soft(prox_var, learning_rate * f(l1)) / (f(1) + f(l2) * learning_rate)
    else:
        var = prox_var / (f(1) + f(l2) * learning_rate)
    return var.astype(f), accum


def tf_ftrl(var, grad, slots, *, lr, l1, l2, l2_shrinkage, lr_power, beta):
    """TensorFlow's FtrlOptimizer: ApplyFtrlV2 with l2 adjusted by beta / (2 lr)."""
    f = np.float32
    accum, linear = slots
    lr, l1, lr_power = f(lr), f(l1), f(lr_power)
    l2 = f(l2) + f(beta) / (f(2) * lr)
    grad_shrink = grad + f(2) * f(l2_shrinkage) * var
    new_accum = (accum + grad * grad).astype(f)
    linear = (
        linear + grad_shrink - (new_accum ** (-lr_power) - accum ** (-lr_power)) / lr * var
    ).astype(f)
    quadratic = f(1) / (new_accum**lr_power * lr) + f(2) * l2
    pre_shrink = (np.sign(linear) * l1 - linear) / quadratic
    var = np.where(np.abs(linear) > l1, pre_shrink, f(0)).astype(f)
    return var, (new_accum, linear)


@pytest.mark.parametrize(
    "lr, l1, l2, init",
    [(0.5, 0.0, 0.0, 0.1), (0.5, 0.3, 0.0, 0.1), (0.3, 0.0, 0.2, 0.1), (0.5, 0.5, 0.1, 0.5)],
)
def test_proximal_adagrad_matches_tensorflow_kernel(lr, l1, l2, init):
    w0, target, noise = _problem(1)
    ours = _run_optax(
        optax_l1.proximal_adagrad(lr, strength=l1, l2=l2, initial_accumulator_value=init),
        w0,
        target,
        noise,
    )
    step = functools.partial(tf_proximal_adagrad, lr=lr, l1=l1, l2=l2)
    ref = _run_reference(step, w0, target, noise, np.full(SHAPE, init, np.float32))
    _assert_same(ours, ref)
    if l1 > 0:
        assert (ours == 0).sum() >= 3


FTRL_SETTINGS = [
    # lr, l1, l2, l2_shrinkage, learning_rate_power, initial_accumulator_value, beta
    (0.5, 0.0, 0.0, 0.0, -0.5, 0.1, 0.0),
    (0.5, 2.0, 0.0, 0.0, -0.5, 0.1, 0.0),
    (0.5, 1.0, 0.5, 0.0, -0.5, 0.1, 0.0),
    (0.5, 1.0, 0.1, 0.05, -0.5, 0.1, 0.0),
    (0.2, 1.5, 0.1, 0.0, -0.3, 0.5, 0.0),
    (0.1, 1.0, 0.0, 0.1, 0.0, 0.1, 0.0),
    (0.5, 1.0, 0.2, 0.0, -0.5, 0.1, 1.0),
]


@pytest.mark.parametrize("lr, l1, l2, l2_shrinkage, power, init, beta", FTRL_SETTINGS)
def test_ftrl_matches_tensorflow_kernel(lr, l1, l2, l2_shrinkage, power, init, beta):
    w0, target, noise = _problem(2)
    tx = optax_l1.ftrl(
        lr,
        strength=l1,
        l2=l2,
        l2_shrinkage=l2_shrinkage,
        learning_rate_power=power,
        initial_accumulator_value=init,
        beta=beta,
    )
    ours = _run_optax(tx, w0, target, noise)
    kw = dict(lr=lr, l1=l1, l2=l2, l2_shrinkage=l2_shrinkage, lr_power=power, beta=beta)
    slots = (np.full(SHAPE, init, np.float32), np.zeros(SHAPE, np.float32))
    ref = _run_reference(functools.partial(tf_ftrl, **kw), w0, target, noise, slots)
    _assert_same(ours, ref)
    if l1 > 0:
        assert 0 < (ours == 0).sum() < ours.size


def paper_ftrl(grads_at, steps, d, *, alpha, beta, lambda1, lambda2):
    """Algorithm 1 of McMahan et al. (2013), per coordinate, in float64 Python."""
    z, n = [0.0] * d, [0.0] * d
    w = [0.0] * d
    for t in range(steps):
        for i in range(d):  # the weights of this round, from z and n
            if abs(z[i]) <= lambda1:
                w[i] = 0.0
            else:
                sign = 1.0 if z[i] > 0 else -1.0
                w[i] = -(z[i] - sign * lambda1) / ((beta + math.sqrt(n[i])) / alpha + lambda2)
        g = grads_at(w, t)
        for i in range(d):
            sigma = (math.sqrt(n[i] + g[i] ** 2) - math.sqrt(n[i])) / alpha
            z[i] += g[i] - sigma * w[i]
            n[i] += g[i] ** 2
    for i in range(d):  # the weights the last round's z and n give
        if abs(z[i]) <= lambda1:
            w[i] = 0.0
        else:
            sign = 1.0 if z[i] > 0 else -1.0
            w[i] = -(z[i] - sign * lambda1) / ((beta + math.sqrt(n[i])) / alpha + lambda2)
    return np.array(w)


@pytest.mark.parametrize(
    "alpha, beta, lambda1, lambda2", [(0.5, 1.0, 0.5, 1.0), (0.2, 0.5, 1.0, 0.3)]
)
def test_ftrl_matches_paper_equations(alpha, beta, lambda1, lambda2):
    d, steps = 8, 60
    rng = np.random.default_rng(3)
    target = rng.normal(size=d) * (rng.random(d) < 0.5)
    noise = 0.3 * rng.normal(size=(steps, d))

    def grads_at(w, t):
        return [float(w[i] - target[i] + noise[t, i]) for i in range(d)]

    paper = paper_ftrl(grads_at, steps, d, alpha=alpha, beta=beta, lambda1=lambda1, lambda2=lambda2)
    # TF's l2 is half the paper's lambda2; the paper starts from n = 0, z = 0, w = 0.
    tx = optax_l1.ftrl(
        alpha, strength=lambda1, l2=lambda2 / 2, initial_accumulator_value=0.0, beta=beta
    )
    params = jnp.zeros(d)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for t in range(steps):
        g = jnp.asarray(grads_at(np.asarray(params, np.float64), t), jnp.float32)
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params), paper, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(params) == 0, paper == 0)
    assert 0 < (paper == 0).sum() < d


# ----------------------------------------------------------------------------- ProxGen


def proxgen_adam(w, g, slots, *, lr, strength, b1, b2, eps):
    """Adam step, then soft-thresholding at lr * strength / (sqrt(v_hat) + eps)."""
    m, v, t = slots
    t += 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    denom = np.sqrt(v_hat) + eps
    z = w - lr * m_hat / denom
    return _soft(z, lr * strength / denom).astype(np.float32), (m, v, t)


@pytest.mark.parametrize(
    "lr, strength, b1, b2, eps",
    [(0.05, 0.0, 0.9, 0.999, 1e-8), (0.05, 0.5, 0.9, 0.999, 1e-8), (0.1, 1.0, 0.5, 0.9, 1e-3)],
)
def test_proximal_adam_matches_numpy(lr, strength, b1, b2, eps):
    w0, target, noise = _problem(4)
    ours = _run_optax(
        optax_l1.proximal_adam(lr, strength=strength, b1=b1, b2=b2, eps=eps), w0, target, noise
    )
    step = functools.partial(proxgen_adam, lr=lr, strength=strength, b1=b1, b2=b2, eps=eps)
    zeros = np.zeros(SHAPE, np.float64)
    ref = _run_reference(step, w0.astype(np.float64), target, noise, (zeros, zeros, 0))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours == 0, ref == 0)
    if strength > 0:
        assert (ours == 0).sum() >= 3


def test_proximal_adam_is_the_wrapper_around_adam():
    w0, target, noise = _problem(5, steps=20)
    a = _run_optax(
        optax_l1.proximal_adam(0.05, strength=0.3, b1=0.8, b2=0.99, eps=1e-6), w0, target, noise
    )
    wrapped = optax_l1.with_preconditioned_l1(
        optax.adam(0.05, 0.8, 0.99, 1e-6),
        strength=0.3,
        learning_rate=0.05,
        eps=1e-6,
        eps_root=0.0,
        bias_correction_decay=0.99,
        unseen="shrink",
    )
    b = _run_optax(wrapped, w0, target, noise)
    np.testing.assert_array_equal(a, b)
    # Not the same as a plain prox after Adam: there the threshold ignores Adam's scaling.
    plain = optax.chain(
        optax.adam(0.05, 0.8, 0.99, 1e-6), optax_l1.l1_prox(0.3, learning_rate=0.05)
    )
    assert np.max(np.abs(_run_optax(plain, w0, target, noise) - a)) > 1e-3


def proxgen_adamw(w, g, slots, *, lr, strength, b1, b2, eps, wd):
    """AdamW's step (decay scaled by lr), then soft-thresholding at lr * strength / D."""
    m, v, t = slots
    t += 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v / (1 - b2**t)) + eps
    z = w - lr * (m / (1 - b1**t) / denom + wd * w)
    return _soft(z, lr * strength / denom).astype(np.float32), (m, v, t)


@pytest.mark.parametrize("strength, wd", [(0.5, 0.1), (0.0, 0.3), (1.0, 0.0)])
def test_proximal_adamw_matches_numpy_and_optax_adamw(strength, wd):
    lr, b1, b2, eps = 0.05, 0.9, 0.99, 1e-8
    w0, target, noise = _problem(8)
    tx = optax_l1.proximal_adamw(lr, strength=strength, b1=b1, b2=b2, eps=eps, weight_decay=wd)
    ours = _run_optax(tx, w0, target, noise)
    step = functools.partial(proxgen_adamw, lr=lr, strength=strength, b1=b1, b2=b2, eps=eps, wd=wd)
    zeros = np.zeros(SHAPE, np.float64)
    ref = _run_reference(step, w0.astype(np.float64), target, noise, (zeros, zeros, 0))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours == 0, ref == 0)
    if strength == 0:  # nothing but optax.adamw
        plain = _run_optax(optax.adamw(lr, b1, b2, eps, weight_decay=wd), w0, target, noise)
        np.testing.assert_allclose(ours, plain, rtol=1e-6, atol=1e-7)
    else:
        assert (ours == 0).sum() >= 3
    if wd == 0:  # and nothing but proximal_adam without the decay
        adam = optax_l1.proximal_adam(lr, strength=strength, b1=b1, b2=b2, eps=eps)
        np.testing.assert_array_equal(ours, _run_optax(adam, w0, target, noise))


def test_proximal_adamw_masks_decay_and_prox_separately():
    params = {"w": jnp.full((2, 2), 0.5), "b": jnp.full((2,), 0.5)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1.0), params)
    tx = optax_l1.proximal_adamw(
        0.1,
        strength=0.0,
        weight_decay=1.0,
        weight_decay_mask={"w": False, "b": True},
        mask={"w": True, "b": False},
    )
    new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    np.testing.assert_allclose(new["w"], 0.4, rtol=1e-5)  # adam's sign step, no decay
    np.testing.assert_allclose(new["b"], 0.5 - 0.1 * (1 + 0.5), rtol=1e-5)  # and decay
    strong = optax_l1.proximal_adamw(
        0.1, strength=10.0, weight_decay=0.0, mask={"w": True, "b": False}
    )
    new = optax.apply_updates(params, strong.update(grads, strong.init(params), params)[0])
    assert (np.asarray(new["w"]) == 0).all()
    np.testing.assert_allclose(new["b"], 0.4, rtol=1e-5)  # masked out: plain adamw


@pytest.mark.parametrize("kind", ["adam", "rmsprop", "adagrad"])
def test_each_documented_recipe_shrinks_at_the_optimizers_own_step(kind):
    """The threshold is lr * strength times the optimizer's own scale, seen or not."""
    lr, strength = 0.1, 0.05
    recipes = {  # the with_preconditioned_l1 docstring's table
        "adam": (optax.adam(lr, eps=1e-8), "nu", ADAM),
        "rmsprop": (
            optax.rmsprop(lr, eps=1e-8),
            "nu",
            {**NO_BIAS_CORRECTION, "eps": 0.0, "eps_root": 1e-8},
        ),
        "adagrad": (
            optax.adagrad(lr, initial_accumulator_value=0.0, eps=1e-7),
            "sum_of_squares",
            {**NO_BIAS_CORRECTION, "eps": 0.0, "eps_root": 1e-7, "unseen": "keep"},
        ),
    }
    inner, name, metric = recipes[kind]
    tx = optax_l1.with_preconditioned_l1(
        inner, strength=strength, learning_rate=lr, accumulator=name, **metric
    )
    p = jnp.array([1.0, 1.0, 1.0, 0.02])
    g = jnp.array([0.0, 1e-3, -2.0, 0.5])  # coordinate 0 has had no gradient
    u_plain, _ = inner.update(g, inner.init(p), p)
    z = np.asarray(p + u_plain, np.float64)
    g64 = np.asarray(g, np.float64)
    scale = np.abs(np.asarray(u_plain, np.float64)) / (lr * np.abs(np.where(g64 == 0, 1, g64)))
    scale[0] = {"adam": 1 / 1e-8, "rmsprop": 1 / np.sqrt(1e-8), "adagrad": 0.0}[kind]
    want = _soft(z, lr * strength * scale)
    got = np.asarray(optax.apply_updates(p, tx.update(g, tx.init(p), p)[0]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert (got[0] == 0) == (kind != "adagrad")  # rmsprop steps there; adagrad does not


def test_rmsprop_recipe_zeroes_what_the_formula_zeroes():
    """The issue's case: optax.rmsprop still steps where nu = 0, so the prox shrinks there."""
    tx = optax_l1.with_preconditioned_l1(
        optax.rmsprop(0.1, eps=1e-8),
        strength=1.0,
        learning_rate=0.1,
        eps=0.0,
        eps_root=1e-8,
        bias_correction_decay=None,
        unseen="shrink",
    )
    p = jnp.array([1.0, 1.0])
    u, _ = tx.update(jnp.array([0.0, 1e-3]), tx.init(p), p)
    np.testing.assert_array_equal(optax.apply_updates(p, u), [0.0, 0.0])


def preconditioned_reference(w, g, acc, *, kind, lr, strength, l2):
    """Adagrad (eps 1e-7 inside the sqrt) or RMSProp (decay 0.9, eps 1e-8 inside), then prox."""
    if kind == "adagrad":
        acc = acc + g * g
        denom = np.sqrt(acc + 1e-7)
    else:
        acc = 0.9 * acc + 0.1 * g * g
        denom = np.sqrt(acc + 1e-8)
    step = lr / denom
    z = w - step * g
    return (_soft(z, step * strength) / (1 + step * l2)).astype(np.float32), acc


@pytest.mark.parametrize("kind", ["adagrad", "rmsprop"])
def test_preconditioned_wrapper_matches_numpy(kind):
    lr, strength, l2 = 0.05, 0.5, 0.2
    if kind == "adagrad":
        inner, name, eps_root, acc0 = optax.adagrad(lr), "sum_of_squares", 1e-7, 0.1
        unseen = "keep"
    else:
        inner, name, eps_root, acc0 = optax.rmsprop(lr), "nu", 1e-8, 0.0
        unseen = "shrink"
    tx = optax_l1.with_preconditioned_l1(
        inner,
        strength=strength,
        learning_rate=lr,
        accumulator=name,
        eps=0.0,
        eps_root=eps_root,
        bias_correction_decay=None,
        unseen=unseen,
        l2=l2,
    )
    w0, target, noise = _problem(6)
    ours = _run_optax(tx, w0, target, noise)
    step = functools.partial(preconditioned_reference, kind=kind, lr=lr, strength=strength, l2=l2)
    ref = _run_reference(step, w0.astype(np.float64), target, noise, np.full(SHAPE, acc0))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours == 0, ref == 0)
    assert (ours == 0).sum() >= 3


def test_preconditioned_wrapper_accumulator_errors_and_callable():
    params = {"w": jnp.full(3, 5.0)}
    with pytest.raises(ValueError, match="no field 'nu'"):
        optax_l1.with_preconditioned_l1(
            optax.sgd(0.1), strength=0.1, learning_rate=0.1, **ADAM
        ).init(params)
    two = optax.chain(optax.scale_by_adam(), optax.scale_by_rms(), optax.scale(-0.1))
    with pytest.raises(ValueError, match="several fields named 'nu'"):
        optax_l1.with_preconditioned_l1(two, strength=0.1, learning_rate=0.1, **ADAM).init(params)
    with pytest.raises(TypeError, match="accumulator"):
        optax_l1.with_preconditioned_l1(
            optax.adam(0.1), strength=0.1, learning_rate=0.1, accumulator=3, **ADAM
        )
    with pytest.raises(ValueError, match="bias_correction_decay"):
        optax_l1.with_preconditioned_l1(
            optax.adam(0.1),
            strength=0.1,
            learning_rate=0.1,
            **{**ADAM, "bias_correction_decay": 1.0},
        )
    with pytest.raises(ValueError, match="`unseen`"):
        optax_l1.with_preconditioned_l1(
            optax.adam(0.1), strength=0.1, learning_rate=0.1, **{**ADAM, "unseen": "zero"}
        )
    with pytest.raises(TypeError, match="eps_root"):
        optax_l1.with_preconditioned_l1(  # the metric is required: no default can match
            optax.adam(0.1),
            strength=0.1,
            learning_rate=0.1,
            eps=1e-8,  # pyright: ignore[reportCallIssue]
        )
    # A callable picks Adam's `nu` out of the ambiguous chain (no bias correction here).
    tx = optax_l1.with_preconditioned_l1(
        two, strength=0.5, learning_rate=0.1, accumulator=lambda s: s[0].nu, **NO_BIAS_CORRECTION
    )
    g = np.array([1.0, -0.2, 3.0])
    updates, _ = tx.update({"w": jnp.asarray(g)}, tx.init(params), params)
    # Adam's first step is sign(g); RMS (decay 0.9) scales it by 1/sqrt(0.1).
    z = 5.0 - 0.1 * np.sign(g) / np.sqrt(0.1 + 1e-8)
    expected = _soft(z, 0.1 * 0.5 / (np.sqrt(0.001 * g * g) + 1e-8))
    new = np.asarray(optax.apply_updates(params, updates)["w"])
    np.testing.assert_allclose(new, expected, rtol=1e-4)
    assert new[1] == 0 and new[0] != 0


def test_an_accumulator_of_another_shape_is_named():
    # (5,) for a (3,) leaf raised an unnamed shape error; (3, 1) blamed a proximal operator
    # the user never gave ("must return a tree with ... shapes").
    params = {"w": jnp.full(3, 5.0)}
    for wrong in (jnp.ones(5), jnp.ones((3, 1))):
        tx = optax_l1.with_preconditioned_l1(
            optax.adam(0.1),
            strength=0.1,
            learning_rate=0.1,
            accumulator=lambda s, wrong=wrong: {"w": wrong},
            **ADAM,
        )
        with pytest.raises(ValueError, match=r"accumulator .* got shape \(.*\) for a leaf of sh"):
            tx.update(params, tx.init(params), params)


def test_proximal_adamw_names_weight_decay_mask():
    # A bad weight_decay_mask was reported as `mask`, with a static_args hint that failed.
    with pytest.raises(TypeError, match="`weight_decay_mask` must be .*'weight_decay_mask',"):
        optax_l1.proximal_adamw(0.1, strength=0.1, weight_decay_mask=True)


def test_adamw_with_mask_in_a_chain():
    """The wrapper around a multi-part chain (adamw) with a mask: biases are untouched."""
    params = {"kernel": jnp.full((3, 2), 0.01), "bias": jnp.full((2,), 0.01)}
    tx = optax_l1.with_preconditioned_l1(
        optax.adamw(0.1, weight_decay=1e-4),
        strength=10.0,
        learning_rate=0.1,
        **ADAM,
        mask=optax_l1.kernel_mask,
    )
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    updates, state = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert (np.asarray(new["kernel"]) == 0).all()
    plain = optax.adamw(0.1, weight_decay=1e-4)
    u, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_array_equal(new["bias"], optax.apply_updates(params, u)["bias"])
    assert int(state.count) == 1


# ----------------------------------------------------------------------------- gauntlet


def _wrapped_adagrad(learning_rate, strength, mask=None):
    return optax_l1.with_preconditioned_l1(
        optax.adagrad(learning_rate),
        strength=strength,
        learning_rate=learning_rate,
        accumulator="sum_of_squares",
        eps=0.0,
        eps_root=1e-7,
        bias_correction_decay=None,
        unseen="keep",
        mask=mask,
    )


FACTORIES = {
    "proximal_adagrad": (optax_l1.proximal_adagrad, dict(learning_rate=0.3, strength=0.1, l2=0.05)),
    "ftrl": (optax_l1.ftrl, dict(learning_rate=0.3, strength=0.3, l2=0.05, l2_shrinkage=0.01)),
    "proximal_adam": (optax_l1.proximal_adam, dict(learning_rate=0.1, strength=0.3)),
    "proximal_adamw": (
        optax_l1.proximal_adamw,
        dict(learning_rate=0.1, strength=0.3, weight_decay=0.05),
    ),
    "wrapped_adagrad": (_wrapped_adagrad, dict(learning_rate=0.3, strength=0.1)),
}
NAMES = sorted(FACTORIES)


def _make(name, **overrides):
    factory, kwargs = FACTORIES[name]
    return factory(**{**kwargs, **overrides})


def _params(dtype=jnp.float32):
    rng = np.random.default_rng(7)
    return {
        "w": jnp.asarray(rng.normal(size=(5, 4)), dtype),
        "b": jnp.asarray(0.1 * rng.normal(size=(4,)), dtype),
    }


def _grads(params, t):
    return jax.tree.map(
        lambda p: p - 0.05 * jnp.sin(t + jnp.arange(p.size).reshape(p.shape)), params
    )


def _train(tx, params, steps=6, *, jit=True, **extra):
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for t in range(steps):
        updates, state = update(_grads(params, t), state, params, **extra)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("name", NAMES)
def test_extra_args_and_no_retrace(name):
    tx = _make(name)
    params = _params()
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(params, state, params, loss=jnp.ones([]), key=None)
        return optax.apply_updates(params, updates), state

    for _ in range(3):
        params, state = step(params, state)
    assert len(traces) == 1
    assert int(state.count) == 3


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_matches(name):
    factory, kwargs = FACTORIES[name]
    plain, _ = _train(_make(name), _params())
    injected, state = _train(optax.inject_hyperparams(factory)(**kwargs), _params())
    # Hyperparameters become float32 arrays: Adam's normalized step amplifies rounding.
    chex.assert_trees_all_close(plain, injected, rtol=1e-4, atol=1e-5)
    assert set(kwargs) <= set(state.hyperparams)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_equals_constant(name):
    _, kwargs = FACTORIES[name]
    numbers_only = ("weight_decay",)  # optax.adamw's, a number at the dependency floor
    scheduled = {
        k: v if k in numbers_only else optax.constant_schedule(v) for k, v in kwargs.items()
    }
    a, _ = _train(_make(name), _params())
    b, _ = _train(_make(name, **scheduled), _params())
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)
    # A schedule really is read at each count: a decaying strength differs.
    key = "strength"
    c, _ = _train(_make(name, **{key: optax.linear_schedule(kwargs[key], 0.0, 3)}), _params())
    assert not all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c), strict=True)
    )


@pytest.mark.parametrize("name", NAMES)
def test_bf16_in_bf16_out_with_exact_zeros(name):
    params = _params(jnp.bfloat16)
    new, state = _train(_make(name), params, steps=8)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new))
    assert (np.asarray(new["w"], np.float32) == 0).sum() > 0
    ref, _ = _train(_make(name), _params(), steps=8)
    for x, y in zip(jax.tree.leaves(new), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float32), y, atol=0.05)
    if name == "ftrl":  # FTRL's own accumulators stay in float32
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.linear))


@pytest.mark.parametrize("name", NAMES)
def test_state_dtypes_stable_under_cond(name):
    tx = _make(name)
    params = _params()
    state = tx.init(params)

    @jax.jit
    def maybe_update(pred, state):
        return jax.lax.cond(pred, lambda s: tx.update(params, s, params)[1], lambda s: s, state)

    new = maybe_update(True, state)
    chex.assert_trees_all_equal_dtypes(new, state)
    chex.assert_trees_all_equal_shapes(new, state)
    assert int(maybe_update(False, new).count) == 1


@pytest.mark.parametrize("name", NAMES)
def test_multisteps_equals_one_step_on_mean_gradient(name):
    params = _params()
    g1, g2 = _grads(params, 0), _grads(params, 1)
    multi = optax.MultiSteps(_make(name), every_k_schedule=2)
    state = multi.init(params)
    u1, state = jax.jit(multi.update)(g1, state, params)
    chex.assert_trees_all_equal(u1, jax.tree.map(jnp.zeros_like, params))
    u2, state = jax.jit(multi.update)(g2, state, params)
    tx = _make(name)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    expected, _ = tx.update(mean, tx.init(params), params)
    chex.assert_trees_all_close(u2, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_mask_leaves_follow_the_unregularized_optimizer(name):
    params = _params()
    _, kwargs = FACTORIES[name]
    masked, _ = _train(_make(name, mask={"w": True, "b": False}), params)
    off = {k: 0.0 for k in ("l1", "l2", "l2_shrinkage", "strength") if k in kwargs}
    unregularized, _ = _train(_make(name, **off), params)
    full, _ = _train(_make(name), params)
    chex.assert_trees_all_close(masked["b"], unregularized["b"], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(masked["w"], full["w"], rtol=1e-6, atol=1e-7)
    # The same through optax.masked (MaskedNode leaves) for the regularized part.
    outer = optax.masked(_make(name), {"w": True, "b": False})
    via_optax, _ = _train(outer, params)
    chex.assert_trees_all_close(via_optax["w"], full["w"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_params_none_raises(name):
    tx = _make(name)
    params = _params()
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(params, tx.init(params), None)


BAD_ARGS = {
    "proximal_adagrad": [("learning_rate", -0.1), ("strength", float("nan")), ("l2", -1.0)]
    + [("initial_accumulator_value", -0.1)],
    "ftrl": [("learning_rate", 0.0), ("strength", -1.0), ("l2", float("nan"))]
    + [("l2_shrinkage", -0.1), ("learning_rate_power", 0.5)]
    + [("initial_accumulator_value", -1.0), ("beta", float("inf"))],
    "proximal_adam": [("learning_rate", -1.0), ("strength", float("nan"))]
    + [("b1", 1.0), ("b2", -0.1), ("eps", -1e-8)],
    "proximal_adamw": [("weight_decay", -0.1), ("b1", 1.0), ("eps", float("nan"))]
    + [("weight_decay", float("inf"))],
    "wrapped_adagrad": [("learning_rate", float("nan")), ("strength", -0.5)],
}


@pytest.mark.parametrize("name, arg, value", [(n, a, v) for n in NAMES for a, v in BAD_ARGS[n]])
def test_invalid_numbers_raise_naming_the_argument(name, arg, value):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        _make(name, **{arg: value})


@pytest.mark.parametrize("name", NAMES)
def test_state_serialization_round_trip(name):
    tx = _make(name)
    params = _params()
    _, state = _train(tx, params, steps=3)
    restored = flax.serialization.from_bytes(tx.init(params), flax.serialization.to_bytes(state))
    chex.assert_trees_all_equal(restored, state)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    g = _grads(params, 5)
    chex.assert_trees_all_equal(tx.update(g, state, params), tx.update(g, restored, params))


@pytest.mark.parametrize("name", NAMES)
def test_updates_land_exactly(name):
    new, _ = _train(_make(name), _params(), steps=8, jit=False)
    w = np.asarray(new["w"])
    assert (w == 0).sum() > 0
    assert not np.signbit(w[w == 0]).any()  # exactly +0.0, not a tiny or negative zero


SHARDING_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import optax_l1

    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    spec = {"w": P("data", "model"), "b": P("model")}
    rng = np.random.default_rng(0)
    host = {"w": rng.normal(size=(8, 6)).astype(np.float32),
            "b": rng.normal(size=(6,)).astype(np.float32)}
    wrapped = optax_l1.with_preconditioned_l1(
        optax.adagrad(0.3), strength=0.1, learning_rate=0.3, accumulator="sum_of_squares",
        eps=0.0, eps_root=1e-7, bias_correction_decay=None, unseen="keep")
    txs = {"proximal_adagrad": optax_l1.proximal_adagrad(0.3, strength=0.1, l2=0.05),
           "ftrl": optax_l1.ftrl(0.3, strength=0.3, l2=0.05, l2_shrinkage=0.01),
           "proximal_adam": optax_l1.proximal_adam(0.1, strength=0.3),
           "wrapped_adagrad": wrapped}

    def run(tx, params):
        state = tx.init(params)
        update = jax.jit(tx.update)
        for t in range(4):
            grads = jax.tree.map(lambda p: p - 0.1 * t, params)
            updates, state = update(grads, state, params)
            # Wait for each step: collectives on 8 simulated devices can stall otherwise.
            params = jax.block_until_ready(optax.apply_updates(params, updates))
        return params

    for name, tx in txs.items():
        single = run(tx, jax.tree.map(jnp.asarray, host))
        sharded_in = jax.tree.map(
            lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), host, spec)
        sharded = run(tx, sharded_in)
        for key in host:
            assert sharded[key].sharding.is_equivalent_to(
                sharded_in[key].sharding, host[key].ndim), (name, key, sharded[key].sharding)
            np.testing.assert_allclose(sharded[key], single[key], rtol=1e-6, atol=1e-7)
        assert (np.asarray(sharded["w"]) == 0).any(), name
    print("SHARDING-OK")
    """
)


def test_sharding_on_8_host_devices():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, "-c", SHARDING_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SHARDING-OK" in result.stdout


# ----------------------------------------------------------------------------- edge cases

PRECONDITIONED = ["proximal_adagrad", "proximal_adam", "wrapped_adagrad"]


@pytest.mark.parametrize("name", PRECONDITIONED)
def test_integer_leaves_pass_through_the_wrapped_optimizer(name):
    params = {"w": jnp.array([1.0, -0.5, 0.02]), "i": jnp.array([1], jnp.int32)}
    grads = {"w": jnp.array([0.3, -0.2, 0.1]), "i": jnp.array([2], jnp.int32)}
    tx = _make(name)
    state0 = tx.init(params)
    updates, state1 = jax.jit(tx.update)(grads, state0, params)
    # The int leaf's update comes back unchanged; the float leaf as without the int leaf.
    assert updates["i"].dtype == jnp.int32
    np.testing.assert_array_equal(updates["i"], grads["i"])
    alone, w_only = _make(name), {"w": params["w"]}
    # Both jitted: eager and jitted float32 differ in the last bit (fusion), on old code too.
    expected, _ = jax.jit(alone.update)({"w": grads["w"]}, alone.init(w_only), w_only)
    np.testing.assert_array_equal(updates["w"], expected["w"])
    # No slot for the int leaf: the state's dtypes do not change (no retrace, cond works).
    chex.assert_trees_all_equal_dtypes(state1, state0)
    guarded = optax.apply_if_finite(_make(name), 3)
    g_updates, _ = jax.jit(guarded.update)(grads, guarded.init(params), params)
    np.testing.assert_array_equal(g_updates["w"], expected["w"])


def tf_ftrl_float64(var, grad, slots, *, lr, l1, l2, l2_shrinkage, lr_power, beta):
    """ApplyFtrlV2 (FtrlOptimizer's l2 adjusted by beta / (2 lr)) in float64."""
    accum, linear = slots
    l2 = l2 + beta / (2 * lr)
    new_accum = accum + grad * grad
    sigma = (new_accum ** (-lr_power) - accum ** (-lr_power)) / lr
    linear = linear + grad + 2 * l2_shrinkage * var - sigma * var
    quadratic = 1 / (new_accum**lr_power * lr) + 2 * l2
    var = np.where(np.abs(linear) > l1, (np.sign(linear) * l1 - linear) / quadratic, 0.0)
    return var, (new_accum, linear)


@pytest.mark.parametrize(
    "kw",
    [
        dict(learning_rate=np.float64(0.3)),
        dict(learning_rate=0.3, l2_shrinkage=np.float64(0.01)),
        dict(learning_rate=lambda count: jnp.asarray(0.3, jnp.float64)),
    ],
    ids=["np.float64 lr", "np.float64 l2_shrinkage", "float64 schedule"],
)
def test_ftrl_float32_slots_stay_float32_under_x64_with_float64_hyperparameters(kw):
    # A strict float64 learning rate or shrinkage made the slots float64 (0-d leaves: a
    # state whose dtype changed) or raised an unnamed TypeError in the in-place loop.
    with jax.enable_x64(True):
        params, grads = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32), jnp.full(6, 0.1, jnp.float32)
        tx = optax_l1.ftrl(strength=0.02, **kw)
        floats = {k: 0.3 if k == "learning_rate" else float(v) for k, v in kw.items()}
        ref = optax_l1.ftrl(strength=0.02, **floats)
        for p in (params, params[0]):  # a 0-d leaf takes the whole-leaf path
            u, state = tx.update(grads[: p.size].reshape(p.shape), tx.init(p), p)
            want, _ = ref.update(grads[: p.size].reshape(p.shape), ref.init(p), p)
            assert state.linear.dtype == state.accumulator.dtype == u.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(u), np.asarray(want), rtol=1e-6)


def test_ftrl_float64_keeps_learning_rate_power_exact():
    w0, target, noise = _problem(8, steps=10)
    w0, target, noise = (x.astype(np.float64) for x in (w0, target, noise))
    kw = dict(lr=0.2, l1=0.5, l2=0.1, l2_shrinkage=0.0, lr_power=-0.3, beta=0.0)
    ref, slots = w0, (np.full(SHAPE, 0.5), np.zeros(SHAPE))
    for noise_t in noise:  # float64 gradients (`_grad` rounds to float32)
        ref, slots = tf_ftrl_float64(ref, ref - target + noise_t, slots, **kw)
    with jax.enable_x64(True):
        tx = optax_l1.ftrl(
            0.2,
            strength=0.5,
            l2=0.1,
            l2_shrinkage=0.0,
            learning_rate_power=-0.3,
            initial_accumulator_value=0.5,
        )
        params = jnp.asarray(w0)
        state = tx.init(params)
        for noise_t in noise:
            g = jnp.asarray(params - target + noise_t)
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
        assert params.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(params), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("power, absent", [(-0.5, "pow"), (-0.3, "sqrt")])
def test_ftrl_python_power_picks_one_branch(power, absent):
    params = jnp.ones(3)
    tx = optax_l1.ftrl(0.5, strength=0.1, learning_rate_power=power)
    jaxpr = str(jax.make_jaxpr(tx.update)(params, tx.init(params), params))
    present = "sqrt" if absent == "pow" else "pow"
    assert re.search(rf"= {present} ", jaxpr)  # the primitive as spelled in a jaxpr
    assert not re.search(rf"= {absent} ", jaxpr)


def test_ftrl_zero_accumulator_without_beta_or_l2_raises():
    with pytest.raises(ValueError, match="`initial_accumulator_value`"):
        optax_l1.ftrl(0.1, strength=0.0, l2_shrinkage=0.1, initial_accumulator_value=0.0)
    # beta > 0 or l2 > 0 keep the denominator positive; with power 0 it is 1 / lr; without
    # l2_shrinkage z stays 0 until a gradient comes: finite weights everywhere.
    for kw in (
        dict(beta=1.0, l2_shrinkage=0.1),
        dict(l2=0.1, l2_shrinkage=0.1),
        dict(learning_rate_power=0.0, l2_shrinkage=0.1),
        dict(strength=0.1),
    ):
        tx = optax_l1.ftrl(0.1, initial_accumulator_value=0.0, **({"strength": 0.0} | kw))
        params = jnp.ones(2)
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(jnp.array([0.0, 0.5]), state, params)
            params = optax.apply_updates(params, updates)
        assert np.isfinite(np.asarray(params)).all()


def test_ftrl_python_float_leaves():
    tx = optax_l1.ftrl(0.5, strength=0.1)
    updates, state = tx.update({"w": 0.5}, tx.init({"w": 1.0}), {"w": 1.0})
    ref, _ = tx.update({"w": jnp.asarray(0.5)}, tx.init({"w": jnp.asarray(1.0)}), {"w": 1.0})
    np.testing.assert_allclose(updates["w"], ref["w"])
    assert state.accumulator["w"].dtype == jnp.float32


def test_adagrad_recipe_leaves_unseen_coordinates_like_optax():
    """eps=0, eps_root=eps as optax.adagrad: no gradient yet (sum 0), no move, no shrink."""
    inner = optax.adagrad(0.1, initial_accumulator_value=0.0)
    tx = optax_l1.with_preconditioned_l1(
        inner,
        strength=0.5,
        learning_rate=0.1,
        accumulator="sum_of_squares",
        eps=0.0,
        eps_root=1e-7,
        bias_correction_decay=None,
        unseen="keep",
    )
    params = jnp.array([0.5, 0.5, 0.12])
    grads = jnp.array([0.0, 1.0, 1.0])
    updates, _ = tx.update(grads, tx.init(params), params)
    plain, _ = inner.update(grads, inner.init(params), params)
    new = np.asarray(optax.apply_updates(params, updates))
    assert new[0] == 0.5 == optax.apply_updates(params, plain)[0]
    z = 0.5 - 0.1 / np.sqrt(1 + 1e-7)
    np.testing.assert_allclose(new[1:], [z - 0.05 / np.sqrt(1 + 1e-7), 0.0], rtol=1e-6)


def test_preconditioned_accumulator_tuple_of_names():
    params = {"w": jnp.array([1.0, 0.05, 0.5])}
    grads = {"w": jnp.array([1.0, 1.0, -2.0])}
    by_name = optax_l1.with_preconditioned_l1(
        optax.adam(0.1), strength=1.0, learning_rate=0.1, **ADAM
    )
    by_tuple = optax_l1.with_preconditioned_l1(
        optax.adam(0.1),
        strength=1.0,
        learning_rate=0.1,
        accumulator=("sum_of_squares", "nu"),
        **ADAM,
    )
    a, _ = by_name.update(grads, by_name.init(params), params)
    b, _ = by_tuple.update(grads, by_tuple.init(params), params)
    chex.assert_trees_all_equal(a, b)
    for bad in ((), ("nu", 3)):
        with pytest.raises(TypeError, match="accumulator"):
            optax_l1.with_preconditioned_l1(
                optax.adam(0.1), strength=1.0, learning_rate=0.1, accumulator=bad, **ADAM
            )
    with pytest.raises(ValueError, match="no field"):
        optax_l1.with_preconditioned_l1(
            optax.sgd(0.1), strength=1.0, learning_rate=0.1, accumulator=("a", "b"), **ADAM
        ).init(params)
