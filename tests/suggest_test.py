"""Tests for suggest_strength (a strength for a wanted sparsity) and chain_l1_prox."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize, stats

import optax_l1

B1, B2, EPS = 0.9, 0.99, 1e-8


def _params():
    rng = np.random.default_rng(0)
    return {
        "dense": {"kernel": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)},
        "out": {"kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)},
        "bias": jnp.zeros(3),
    }


def _grads(t):
    rng = np.random.default_rng(100 + t)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.standard_cauchy(size=p.shape) * 0.1, jnp.float32), _params()
    )


def _run(tx, steps=7):
    params = _params()
    state = tx.init(params)
    for t in range(steps):
        _, state = tx.update(_grads(t), state, params)
    return state


def _kernels(tree):
    return np.concatenate([np.ravel(tree["dense"]["kernel"]), np.ravel(tree["out"]["kernel"])])


def _reference(steps, sparsity, kind, batch_size, noise_floor=False):
    """NumPy transcription: Adam's moments, bias-corrected, the drift score; its quantile, or
    for the chain at a noise floor the lambda where the mean probability of |d + c Z| <=
    lambda is the sparsity, d from the drift's mean (scipy's brentq on the normal cdf)."""
    m = v = 0.0
    for t in range(steps):
        g = _kernels(_grads(t)).astype(np.float64)
        m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g * g
    m_hat, v_hat = np.abs(m) / (1 - B1**steps), v / (1 - B2**steps)
    curvature_step = np.abs(_kernels(_params()).astype(np.float64)) * batch_size * v_hat
    if kind != "l1_prox":
        return np.quantile(np.maximum(m_hat, np.sqrt(m_hat * curvature_step)), sparsity)
    if not noise_floor:
        return np.quantile(np.maximum(m_hat, curvature_step) / (np.sqrt(v_hat) + EPS), sparsity)
    c2 = (1 - B1) / (1 + B1)
    share = c2 * (1 + B1**steps) / (1 - B1**steps)  # the noise's share of m_hat^2 at `steps`
    mean = np.sqrt(np.clip((m_hat**2 - share * v_hat) / (1 - share), 0, None))  # the drift's
    score = np.maximum(np.minimum(mean, m_hat), curvature_step) / (np.sqrt(v_hat) + EPS)
    sd = np.sqrt(c2) * np.sqrt(v_hat) / (np.sqrt(v_hat) + EPS)

    def excess(lam):
        return np.mean(stats.norm.cdf((lam - score) / sd) - stats.norm.cdf((-lam - score) / sd))

    return optimize.brentq(lambda lam: excess(lam) - sparsity, 0.0, score.max() + 10, xtol=1e-14)


@pytest.mark.parametrize(
    ("kind", "noise_floor"), [("l1_prox", False), ("l1_prox", True), ("proximal_adam", False)]
)
@pytest.mark.parametrize("sparsity", [0.3, 0.9])
def test_matches_the_numpy_transcription_of_the_bias_corrected_score(kind, sparsity, noise_floor):
    state = _run(optax.adam(0.1, b1=B1, b2=B2, eps=EPS))
    got = optax_l1.suggest_strength(
        _params(),
        state,
        sparsity,
        for_transform=kind,
        batch_size=16,
        b1=B1,
        b2=B2,
        eps=EPS,
        noise_floor=noise_floor,
        mask=optax_l1.kernel_mask,
    )
    np.testing.assert_allclose(got, _reference(7, sparsity, kind, 16, noise_floor), rtol=2e-6)
    if noise_floor:  # the noise moves it off the drift's quantile (here by 5% and 13%)
        assert abs(got / _reference(7, sparsity, kind, 16) - 1) > 0.04
    assert isinstance(got, float)
    if kind == "proximal_adam":  # proximal_adamw's strength has the same units (it was refused)
        again = optax_l1.suggest_strength(
            _params(),
            state,
            sparsity,
            for_transform="proximal_adamw",
            batch_size=16,
            b1=B1,
            b2=B2,
            eps=EPS,
            mask=optax_l1.kernel_mask,
        )
        assert again == got


def test_reads_adam_inside_chains_adamw_inject_hyperparams_and_proximal_adam():
    want = optax_l1.suggest_strength(
        _params(), _run(optax.adam(0.1, b2=B2)), 0.5, for_transform="l1_prox", batch_size=8, b2=B2
    )
    for tx in (
        optax.chain(optax.clip_by_global_norm(1e6), optax.adamw(0.1, b2=B2, weight_decay=0.0)),
        optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b2=B2),
        optax_l1.proximal_adam(0.1, strength=0.0, b2=B2),
        optax.chain(optax.adam(0.1, b2=B2), optax_l1.l1_prox(0.0, learning_rate=0.1)),
    ):
        got = optax_l1.suggest_strength(
            _params(), _run(tx), 0.5, for_transform="l1_prox", batch_size=8, b2=B2
        )
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bad_input_raises_naming_the_argument():
    state, P = _run(optax.adam(0.1)), _params()
    with pytest.raises(ValueError, match="`batch_size`"):
        optax_l1.suggest_strength(P, state, 0.5, for_transform="l1_prox", batch_size=0)
    with pytest.raises(ValueError, match="structure of `params`"):
        optax_l1.suggest_strength(
            {"w": P["bias"]}, state, 0.5, for_transform="l1_prox", batch_size=8
        )
    for value in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="`sparsity`"):
            optax_l1.suggest_strength(P, state, value, for_transform="l1_prox", batch_size=8)
    # One number each: arrays broadcast against the leaves (batch_size [8, 1, 1, 1] gave
    # 0.94 instead of 3.28, a probe) or failed without the argument's name.
    for name, value in (("sparsity", np.array([0.2, 0.7])), ("batch_size", np.array([8, 1]))):
        with pytest.raises(TypeError, match=f"`{name}` must be a scalar"):
            kwargs = {"sparsity": 0.5, "batch_size": 8, name: value}
            optax_l1.suggest_strength(P, state, for_transform="l1_prox", **kwargs)
    with pytest.raises(TypeError, match="`eps` must be a scalar"):
        optax_l1.suggest_strength(
            P, state, 0.5, for_transform="l1_prox", batch_size=8, eps=np.ones(2)
        )
    with pytest.raises(ValueError, match="`for_transform`"):
        optax_l1.suggest_strength(P, state, 0.5, for_transform="adam", batch_size=8)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`b2`"):
        optax_l1.suggest_strength(P, state, 0.5, for_transform="l1_prox", batch_size=8, b2=1.0)
    with pytest.raises(ValueError, match="exactly one Adam state.*found 0"):
        optax_l1.suggest_strength(
            P, _run(optax.sgd(0.1)), 0.5, for_transform="l1_prox", batch_size=8
        )
    two = optax.chain(optax.scale_by_adam(), optax.scale_by_adam())
    with pytest.raises(ValueError, match="found 2"):
        optax_l1.suggest_strength(P, _run(two), 0.5, for_transform="l1_prox", batch_size=8)
    fresh = optax.adam(0.1).init(_params())
    for noise_floor in (False, True):  # True divided by 1 - b1^0 = 0 first, unnamed
        with pytest.raises(ValueError, match="no step yet"):
            optax_l1.suggest_strength(
                P, fresh, 0.5, for_transform="l1_prox", batch_size=8, noise_floor=noise_floor
            )
    with pytest.raises(ValueError, match="`mask` selects no"):
        optax_l1.suggest_strength(
            P, state, 0.5, for_transform="l1_prox", batch_size=8, mask=lambda p: False
        )
    with pytest.raises(TypeError, match="`noise_floor` must be True or False"):
        optax_l1.suggest_strength(
            P,
            state,
            0.5,
            for_transform="l1_prox",
            batch_size=8,
            noise_floor="yes",  # pyright: ignore[reportArgumentType]
        )
    kw = dict(for_transform="l1_prox", batch_size=8)
    assert optax_l1.suggest_strength(P, state, 0.5, noise_floor=np.True_, **kw) == (
        optax_l1.suggest_strength(P, state, 0.5, noise_floor=True, **kw)
    )
    for kind in ("proximal_adam", "proximal_adamw"):  # gradient units: no noise model
        with pytest.raises(ValueError, match="`noise_floor=True` is for"):
            optax_l1.suggest_strength(
                P, state, 0.5, for_transform=kind, batch_size=8, noise_floor=True
            )


def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = jnp.asarray(x[perm], jnp.float32), jnp.asarray(y[perm], jnp.int32)
    return x[:1200], y[:1200], x[1200:], y[1200:]


def _mlp_loss(p, x, y):
    h = jax.nn.relu(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"][None])
    logits = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"][None]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["l1_prox", "proximal_adam"])
def test_lands_near_the_wanted_sparsity_on_a_small_digits_mlp(kind):
    """A regression guard on a small MLP (64-64-10, one seed): a 10% dense run, then full
    runs at the suggestion. Measured here: 59/75/82% (chain) and 70/82/87% (proximal_adam)
    zeros for 50/80/90% wanted: within 10 points but proximal_adam at 50%, which
    overshoots as on the benchmarks' MLP. The 3-seed measurement on that MLP and on the
    transformer is benchmarks/suggest_strength.py (RESULTS.md)."""
    xtr, ytr, xte, yte = _digits()
    lr, steps, warm, batch = 3e-3, 1500, 150, 128
    k0, k1 = jax.random.split(jax.random.key(0))
    init = {
        "dense_0": {"kernel": jax.random.normal(k0, (64, 64)) * 0.18, "bias": jnp.zeros(64)},
        "dense_1": {"kernel": jax.random.normal(k1, (64, 10)) * 0.18, "bias": jnp.zeros(10)},
    }
    keys = jax.random.split(jax.random.key(1), steps)
    grad = jax.grad(lambda p, x, y: _mlp_loss(p, x, y)[0])

    def train(tx, n):
        def step(carry, k):
            p, s = carry
            idx = jax.random.randint(k, (batch,), 0, xtr.shape[0])
            u, s = tx.update(grad(p, xtr[idx], ytr[idx]), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (init, tx.init(init)), keys[:n])[0]

    dense_params, dense = train(optax.adam(lr), warm)
    mask = optax_l1.kernel_mask
    for sparsity in (0.9, 0.8, 0.5):
        lam = optax_l1.suggest_strength(
            dense_params, dense, sparsity, for_transform=kind, batch_size=batch, mask=mask
        )
        if kind == "l1_prox":
            tx = optax_l1.chain_l1_prox(optax.adam, learning_rate=lr, strength=lam, mask=mask)
        else:
            tx = optax_l1.proximal_adam(lr, strength=lam, mask=mask)
        params, _ = train(tx, steps)
        reached = float(optax_l1.sparsity(params, mask=mask))
        if kind == "proximal_adam" and sparsity == 0.5:  # the known overshoot (RESULTS.md)
            assert 0.5 < reached <= 0.75, reached
        else:
            assert abs(reached - sparsity) <= 0.10, (sparsity, reached)
        accuracy = jnp.mean(jnp.argmax(_mlp_loss(params, xte, yte)[1], -1) == yte)
        assert float(accuracy) > 0.8


# ----------------------------------------------------------------------------- chain_l1_prox


def test_chain_l1_prox_is_the_chain_with_one_learning_rate():
    schedule = optax.linear_schedule(0.1, 0.01, 5)
    mask = {"dense": {"kernel": True}, "out": {"kernel": True}, "bias": False}
    ours = optax_l1.chain_l1_prox(
        optax.sgd, learning_rate=schedule, strength=0.5, l2=0.1, mask=mask, momentum=0.9
    )
    ref = optax.chain(
        optax.sgd(schedule, momentum=0.9),
        optax_l1.l1_prox(0.5, learning_rate=schedule, l2=0.1, mask=mask),
    )
    params_a = params_b = _params()
    sa, sb = ours.init(params_a), ref.init(params_b)
    for t in range(6):
        ua, sa = ours.update(_grads(t), sa, params_a)
        ub, sb = ref.update(_grads(t), sb, params_b)
        params_a, params_b = optax.apply_updates(params_a, ua), optax.apply_updates(params_b, ub)
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
    assert optax_l1.sparsity(params_a, mask=mask) > 0
    assert isinstance(ours, optax.GradientTransformationExtraArgs)


def test_chain_l1_prox_refuses_a_built_optimizer_and_bad_strength():
    with pytest.raises(TypeError, match="`optimizer` must be an optax optimizer factory"):
        optax_l1.chain_l1_prox(optax.adam(0.1), learning_rate=0.1, strength=0.1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`strength`"):
        optax_l1.chain_l1_prox(optax.adam, learning_rate=0.1, strength=-1.0)
    with pytest.raises(TypeError, match="learning_rate"):
        optax_l1.chain_l1_prox(optax.adam, strength=0.1)  # pyright: ignore[reportCallIssue]


def test_chain_l1_prox_under_inject_hyperparams():
    """inject_hyperparams passes **optimizer_kwargs back as one keyword of that name (sgd got
    `optimizer_kwargs=`), and calls the factory as a schedule without static_args."""
    params = jnp.array([1.0, -0.25, 0.75])
    grads = jnp.array([0.1, 0.0, -0.3])
    injected = optax.inject_hyperparams(optax_l1.chain_l1_prox, static_args=("optimizer",))(
        optax.sgd, learning_rate=0.1, strength=1.0, momentum=0.9
    )
    plain = optax_l1.chain_l1_prox(optax.sgd, learning_rate=0.1, strength=1.0, momentum=0.9)
    ends = []
    for tx in (injected, plain):
        p, s = params, tx.init(params)
        for _ in range(3):
            u, s = tx.update(grads, s, p)
            p = optax.apply_updates(p, u)
        ends.append(p)
    np.testing.assert_allclose(ends[0], ends[1], rtol=1e-6)
    assert np.any(ends[0] == 0)
    with pytest.raises(TypeError, match="static_args=\\('optimizer',\\)"):
        optax.inject_hyperparams(optax_l1.chain_l1_prox)(
            optax.sgd, learning_rate=0.1, strength=0.5
        ).init(params)


def _one_adam_step(opt, params, grads):
    state = opt.init(params)
    _, state = opt.update(grads, state, params)
    return state


def test_faults_give_nan_or_a_named_error_never_a_plausible_strength():
    """Probes: an inf weight gave 2.5 (np.quantile interpolated past it); eps=0 with a
    never-seen entry gave NaN for valid input (0/0); a leaf outside an optax.masked Adam
    crashed on a MaskedNode naming nothing."""
    params = {"w": jnp.array([1.0, 0.5, 0.5, 2.0])}
    grads = {"w": jnp.array([0.5, 0.1, -0.1, 0.0])}
    state = _one_adam_step(optax.adam(0.1), params, grads)
    kw = dict(for_transform="l1_prox", batch_size=4)
    inf = {"w": params["w"].at[0].set(jnp.inf)}
    assert np.isnan(optax_l1.suggest_strength(inf, state, 0.5, **kw))
    # eps = 0: the entry with no gradient scores 0 (it would stay at zero), not NaN.
    got = optax_l1.suggest_strength(params, state, 0.5, eps=0.0, **kw)
    m, v = np.array([0.5, 0.1, 0.1, 0.0]), np.array([0.25, 0.01, 0.01, 0.0])
    w = np.array([1.0, 0.5, 0.5, 2.0])
    d = np.sqrt(v)
    want = np.quantile(np.maximum(m, w * 4 * v) / np.where(d > 0, d, 1.0), 0.5)
    assert np.isfinite(got) and np.isclose(got, want)
    pp = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    masked = optax.masked(optax.adam(0.1), {"w": True, "b": False})
    st = _one_adam_step(masked, pp, pp)
    with pytest.raises(ValueError, match="no Adam moments for leaf 'b'.*`mask=`"):
        optax_l1.suggest_strength(pp, st, 0.5, **kw)
    mask = {"w": True, "b": False}
    # A negative second moment (a corrupted state) is NaN, not a divisor of 1 (gave 1.0).
    bad = (state[0]._replace(nu={"w": state[0].nu["w"].at[0].set(-0.25)}),) + state[1:]
    for transform, noise in (("l1_prox", False), ("l1_prox", True), ("proximal_adam", False)):
        got = optax_l1.suggest_strength(
            params, bad, 0.5, for_transform=transform, batch_size=4, noise_floor=noise
        )
        assert np.isnan(got), transform
    assert np.isnan(optax_l1.suggest_strength(inf, state, 0.5, noise_floor=True, **kw))
    # b1 = 0 (c = 1): m_hat is the last gradient, whose mean cannot be read off (it divided
    # by 1 - c^2 = 0); the drift is the curvature alone and the noise has sd 1, but 0 on
    # the entry no gradient reached (a zero at any strength: it was counted as noise).
    plain = _one_adam_step(optax.adam(0.1, b1=0.0), params, grads)
    got = optax_l1.suggest_strength(params, plain, 0.5, b1=0.0, noise_floor=True, **kw)
    seen = v > 0
    curvature = w[seen] * 4 * v[seen] / (np.sqrt(v[seen]) + 1e-8)  # |w| B v_hat / D

    def excess(lam):  # the unseen entry counts 1/4 whole
        inside = stats.norm.cdf(lam - curvature) - stats.norm.cdf(-lam - curvature)
        return (np.sum(inside) + 1) / 4 - 0.5

    np.testing.assert_allclose(got, optimize.brentq(excess, 0, 20, xtol=1e-14), rtol=1e-6)
    # Half the entries unreached: 0 is enough for half zeros (it was 0.236, a probe).
    half = _one_adam_step(optax.adam(0.1), params, {"w": jnp.array([0.5, 0.1, 0.0, 0.0])})
    assert optax_l1.suggest_strength(params, half, 0.4, noise_floor=True, **kw) == 0.0
    ok = optax_l1.suggest_strength(pp, st, 0.5, mask=mask, **kw)
    ref = optax_l1.suggest_strength(
        {"w": pp["w"]}, _one_adam_step(optax.adam(0.1), {"w": pp["w"]}, {"w": pp["w"]}), 0.5, **kw
    )
    assert ok == ref
