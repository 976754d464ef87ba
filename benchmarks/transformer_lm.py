"""Transformer LM: `sparsity_target` vs gradual magnitude pruning on a byte-level language model.

A 2-layer decoder-only transformer in plain JAX (pre-LayerNorm, learned positions, tied
byte embeddings, GELU MLP) is trained on the running Python's standard library (its
top-level ``*.py`` files, split 90/10 by file with a fixed permutation; bytes are the
tokens) with AdamW (lr warmup + cosine decay, global-norm clipping 1.0). The 8 attention
and MLP kernels are sparsified (embeddings, LayerNorm and biases never are); every run
reports held-out bits/byte and the fraction of exact zeros in those kernels.

Methods (``--methods``), all with the same data, steps, schedule and ramp window (a ramp
from ``--begin-frac`` of training for ``--ramp-frac`` of it: GMP's is cubic, the
``sparsity_target`` arms' the library's default unless ``--ramp`` names another; the
script's own research arms, ``hard``, ``firm``, ``hard_fisher``, ``drift``, ``*_latent``, use
the cube whatever ``--ramp`` says):

- ``dense``: AdamW alone.
- ``gmp`` / ``gmp_global``: gradual magnitude pruning (Zhu & Gupta 2017): every
  ``--prune-every`` steps of the ramp the smallest-magnitude weights of each kernel (or of
  all 8 at once) are masked to the ramp's sparsity; pruned weights stay zero (the mask is
  applied after every update), survivors are never shrunk, the mask is frozen after the ramp.
- ``target``: ``chain(adamw, optax_l1.sparsity_target(s, ramp_steps=T, begin_step=t0,
  mask=...))`` with the library's defaults; ``target_soft``: the same with ``shrink="soft"``
  (the 0.1 default); ``target_adam``: ``sparsity_target(s, ..., optimizer=adamw)``;
  ``target_uniform`` / ``target_erk``: ``allocation="uniform"`` (every kernel at ``s``, as
  ``gmp``) / ``"erk"``; ``target_latent_full``: ``latent_until=1.0`` (the latent copy for
  the whole ramp, not only its first half); ``target_cheap`` / ``target_adam_cheap``: the
  step-cost setting, ``latent=False, update_every=--prune-every`` (the support held between
  searches), after or with ``optimizer=adamw``; ``target_every``: the defaults (latent copy)
  with ``update_every=--prune-every``; ``target_sample``: the defaults with
  ``quantile="sample"`` (``--sample`` sets the sample's size: this model's 393,216 kernel
  weights are under the size the library samples, 16 x 65,536); ``target_lag``: the same
  searches exact at the rank the sampled one aims at (its margin without its noise; needs
  ``--sample``, run alone: it replaces the library's sampled search); ``ramp_lag`` /
  ``ramp_tail`` / ``ramp_mid``: that lag designed into the ramp, whole, only at its end, or only
  mid-ramp (``lagged_ramp``; run each alone: it replaces the library's ramp); ``ramp_power``:
  the defaults with ``ramp=--ramp-power`` (the exponent e of the ramp 1 - (1 - t)^e; 3 is the
  cube, 2 the library's default); ``gmp_power`` / ``gmp_global_power``: ``gmp`` /
  ``gmp_global`` on the same ramp; ``structured``: whole heads and MLP units (coupled
  across q/k/v, the output kernel, ``fc`` and ``proj``), each layer at
  ``s`` (``benchmarks/compaction.py`` compacts them); ``n_of_m``: ``allocation=Blocks(4,
  axis=0)`` on the kernels (``s=0.5`` is 2:4 along the reduction axis); ``blocks``:
  ``structure=Blocks(4, axis=0)`` (whole blocks of 4 along the reduction axis, one global
  threshold). Each of ``structured``, ``n_of_m`` and ``blocks`` ramps; its ``*_oneshot``
  twin is the matching magnitude-pruning baseline: dense until the ramp's end, one
  magnitude projection with the same structure there, then the same fine-tuning;
  ``blocks_gmp`` / ``structured_gmp`` are GMP on the same groups (``latent=False``, a
  search by group norm every ``--prune-every`` steps of the ramp, per tensor or coupled
  group of tensors, the support held in between and after: survivors never shrunk);
  ``blocks_cheap`` / ``n_of_m_cheap`` are ``blocks`` / ``n_of_m`` in the step-cost
  setting (``latent=False``, a search every ``--prune-every`` steps of the ramp);
  ``n_of_m`` keeps the latent copy for half the ramp (``latent_until=0.5``, the library's
  default until ``23b3b8c``: the rows measured before it); ``n_of_m_latent`` keeps it
  for the whole ramp (``latent_until=1``, the library's default for N:M since).
- ``proximal_adam`` / ``adamw_l1_prox``: fixed L1 strengths (``--strength``).
- Research arms defined here, thresholding ``z = p + u`` at the ramp's global quantile:
  ``hard`` (zero ``|z| <= tau``, others untouched), ``hard_pertensor`` (one quantile per
  kernel), ``firm`` (the MCP prox, gamma 2), ``hard_fisher`` (score ``|z| (sqrt(nu)+eps)``
  from AdamW's state), ``hard_every50`` (``hard`` every ``--prune-every`` steps only; zeros
  may revive in between); ``drift`` / ``drift_full`` (GMP-like, a search every
  ``--prune-every`` steps, the support held in between; at a search a zeroed weight scores
  its latent from the last search plus ``every * u``, the current update extrapolated over
  the window: a latent touched at searches only; ``drift`` restarts the latent from 0 from
  the ramp's midpoint on, ``drift_full`` keeps it); ``before_latent`` / ``int8_latent`` (the
  library's default, every-step search with a latent restarted at the ramp's midpoint,
  but scoring ``|p + L|`` before the update, the latent in float32 / in int8 codes of
  ``tau / 64`` with stochastic rounding); ``after_latent`` / ``int8_after`` score
  ``|p + L + u|`` after the update instead, as the library does (``after_latent`` is the
  arms' replica of ``target``). All freeze the support after the ramp.

    python benchmarks/transformer_lm.py --quick                     # smoke test, < 40 s
    python benchmarks/transformer_lm.py --methods gmp hard --targets 0.9 --seeds 3
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sysconfig
import time
from typing import Any, NamedTuple

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import header, markdown_table, ramp_arg, write_json
from jax import lax

import optax_l1

METHODS = (
    "dense",
    "gmp",
    "gmp_global",
    "gmp_power",
    "gmp_global_power",
    "target",
    "target_soft",
    "target_adam",
    "target_uniform",
    "target_erk",
    "target_latent_full",
    "target_cheap",
    "target_adam_cheap",
    "target_every",
    "target_sample",
    "target_dropped",
    "target_lag",
    "ramp_lag",
    "ramp_tail",
    "ramp_mid",
    "ramp_power",
    "structured",
    "structured_oneshot",
    "structured_gmp",
    "blocks",
    "blocks_oneshot",
    "blocks_gmp",
    "blocks_cheap",
    "n_of_m",
    "n_of_m_oneshot",
    "n_of_m_cheap",
    "n_of_m_latent",
    "proximal_adam",
    "adamw_l1_prox",
    "hard",
    "hard_pertensor",
    "firm",
    "hard_fisher",
    "hard_every50",
    "drift",
    "drift_full",
    "int8_latent",
    "before_latent",
    "after_latent",
    "int8_after",
)
STRENGTH_METHODS = ("proximal_adam", "adamw_l1_prox")
SPLIT_SEED = 20171001  # the train/validation file split; independent of --seeds


# ----------------------------------------------------------------------------- data


def load_corpus(val_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray, int]:
    """Train and validation bytes: the stdlib's top-level ``*.py`` files, split by file."""
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    n_val = max(1, round(val_frac * len(files)))
    val_ids, train_ids = set(perm[:n_val].tolist()), perm[n_val:]

    def read(ids: Any) -> np.ndarray:
        chunks = []
        for i in sorted(ids):
            with open(files[i], "rb") as f:
                chunks.append(np.frombuffer(f.read(), np.uint8))
        return np.concatenate(chunks)

    return read(train_ids), read(val_ids), len(files)


def eval_windows(val: np.ndarray, n_batches: int, batch: int, width: int) -> np.ndarray:
    """``n_batches * batch`` non-overlapping, evenly spaced windows of ``width`` bytes."""
    n = n_batches * batch
    stride = (val.size - width) // max(n - 1, 1)
    if stride < width:
        raise ValueError(f"validation text ({val.size} bytes) too short for {n} windows")
    starts = np.arange(n) * stride
    win = val[starts[:, None] + np.arange(width)[None, :]]
    return win.reshape(n_batches, batch, width).astype(np.int32)


# ----------------------------------------------------------------------------- model


def init_params(key: jax.Array, cfg: argparse.Namespace) -> dict[str, Any]:
    d, f, n_layers = cfg.d_model, cfg.mlp, cfg.layers
    keys = iter(jax.random.split(key, 2 + 4 * n_layers))

    def normal(shape: tuple[int, ...], std: float = 0.02) -> jax.Array:
        return jax.random.normal(next(keys), shape) * std

    def dense(m: int, n: int, std: float = 0.02) -> dict[str, jax.Array]:
        return {"kernel": normal((m, n), std), "bias": jnp.zeros((n,))}

    def norm() -> dict[str, jax.Array]:
        return {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))}

    resid_std = 0.02 / math.sqrt(2 * n_layers)  # GPT-2's scaled init of residual outputs
    params: dict[str, Any] = {"embed": normal((256, d)), "pos": normal((cfg.context, d))}
    for i in range(n_layers):
        params[f"layer_{i}"] = {
            "ln1": norm(),
            "qkv": dense(d, 3 * d),
            "out": dense(d, d, resid_std),
            "ln2": norm(),
            "fc": dense(d, f),
            "proj": dense(f, d, resid_std),
        }
    params["ln_f"] = norm()
    return params


def head_and_unit_structure(heads: int, layers: int) -> Any:
    """Head h of layer i: its q/k/v columns and biases (the fused kernel's layout is
    (3, heads, head_dim)) and its rows of the output kernel; MLP unit j of layer i: column
    j of ``fc``, its bias and row j of ``proj``. One coupled label each."""
    rules = {}
    for i in range(layers):
        att, mlp = f"heads{i}", f"units{i}"
        rules[f"^layer_{i}/qkv/kernel$"] = optax_l1.Heads(heads, axis=1, parts=3, couple=att)
        rules[f"^layer_{i}/qkv/bias$"] = optax_l1.Heads(heads, axis=0, parts=3, couple=att)
        rules[f"^layer_{i}/out/kernel$"] = optax_l1.Heads(heads, axis=0, couple=att)
        rules[f"^layer_{i}/fc/kernel$"] = optax_l1.Groups(0, couple=mlp)
        rules[f"^layer_{i}/fc/bias$"] = optax_l1.Elements(couple=mlp)
        rules[f"^layer_{i}/proj/kernel$"] = optax_l1.Groups(1, couple=mlp)
    return optax_l1.path_structure(rules)


def kernel_mask(params: Any) -> Any:
    """True exactly for the attention and MLP kernels."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def layer_norm(x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]


def forward(params: dict[str, Any], tokens: jax.Array, n_heads: int) -> jax.Array:
    b, t = tokens.shape
    x = params["embed"][tokens] + params["pos"][:t]
    causal = jnp.tril(jnp.ones((t, t), bool))
    n_layers = sum(k.startswith("layer_") for k in params)
    for i in range(n_layers):
        p = params[f"layer_{i}"]
        h = layer_norm(x, p["ln1"])
        qkv = h @ p["qkv"]["kernel"] + p["qkv"]["bias"]
        q, k, v = jnp.split(qkv.reshape(b, t, 3 * n_heads, -1), 3, axis=2)
        att = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
        att = jax.nn.softmax(jnp.where(causal, att, -jnp.inf), axis=-1)
        o = jnp.einsum("bhts,bshd->bthd", att, v).reshape(b, t, -1)
        x = x + o @ p["out"]["kernel"] + p["out"]["bias"]
        h = layer_norm(x, p["ln2"])
        h = jax.nn.gelu(h @ p["fc"]["kernel"] + p["fc"]["bias"])
        x = x + h @ p["proj"]["kernel"] + p["proj"]["bias"]
    x = layer_norm(x, params["ln_f"])
    return x @ params["embed"].T  # tied output embedding


def loss_fn(params: dict[str, Any], windows: jax.Array, n_heads: int) -> jax.Array:
    logits = forward(params, windows[:, :-1], n_heads)
    return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()


# ----------------------------------------------------------------------------- pruning arms


def ramp_at(
    count: jax.Array, target: Any, ramp_steps: int, begin: int, power: float = 3
) -> jax.Array:
    """Zhu & Gupta's ramp s_t = s_f (1 - (1 - (t - t0) / (n dt))^power), the fraction clipped
    to [0, 1]; cubic (power 3) unless ``gmp_power`` says otherwise."""
    frac = jnp.clip((count - begin) / ramp_steps, 0.0, 1.0)
    return jnp.asarray(target, jnp.float32) * (1.0 - (1.0 - frac) ** power)


def kth_smallest(scores: list[jax.Array], k: jax.Array) -> jax.Array:
    """The k-th smallest entry over all ``scores`` (-1 for k = 0: nothing at or below it)."""
    flat = jnp.sort(jnp.concatenate([s.ravel() for s in scores]))
    return jnp.where(k > 0, flat[jnp.clip(k - 1, 0, flat.size - 1)], -1.0)


def thresholds(scores: list[jax.Array], s: jax.Array, per_tensor: bool) -> list[jax.Array]:
    """One quantile for all leaves, or one per leaf, leaving floor(s n) entries at or below."""
    if per_tensor:
        return [kth_smallest([x], jnp.floor(s * x.size).astype(jnp.int32)) for x in scores]
    n = sum(x.size for x in scores)
    return [kth_smallest(scores, jnp.floor(s * n).astype(jnp.int32))] * len(scores)


class CountState(NamedTuple):
    count: jax.Array
    keep: Any = None  # gmp: keep-masks of the kernels
    inner: Any = None  # hard_fisher: the optimizer's state


def find_nu(state: Any) -> Any:
    """Adam's second moment ``nu`` from a (nested) optax state."""
    if hasattr(state, "nu"):
        return state.nu
    if isinstance(state, tuple):
        for s in state:
            nu = find_nu(s)
            if nu is not None:
                return nu
    return None


def gmp(
    target: Any,
    kmask: Any,
    *,
    begin: int,
    ramp_steps: int,
    every: int,
    per_tensor: bool,
    power: float = 3,
):
    """Gradual magnitude pruning as the last transformation of a chain (``power``: the
    ramp's exponent, Zhu & Gupta's cube by default)."""

    def init_fn(params):
        keep = _kernels(params, kmask, jnp.ones_like)
        return CountState(jnp.zeros([], jnp.int32), keep)

    def update_fn(updates, state, params):
        p_leaves, u_leaves, treedef, idx = _split(updates, params, kmask)
        z = [(p_leaves[i] + u_leaves[i]) * k for i, k in zip(idx, state.keep, strict=True)]
        t, end = state.count, begin + ramp_steps
        # The ramp's last step prunes too, when `every` does not divide it: the final
        # sparsity is the target's (it was short of it by the last interval's share).
        due = (t >= begin) & (t <= end) & (((t - begin) % every == 0) | (t == end))

        def prune():
            taus = thresholds(
                [jnp.abs(x) for x in z], ramp_at(t, target, ramp_steps, begin, power), per_tensor
            )
            return [k * (jnp.abs(x) > tau) for k, x, tau in zip(state.keep, z, taus, strict=True)]

        keep = lax.cond(due, prune, lambda: state.keep)
        out = list(u_leaves)
        for i, x, k in zip(idx, z, keep, strict=True):
            out[i] = x * k - p_leaves[i]
        return treedef.unflatten(out), CountState(t + 1, keep)

    return optax.GradientTransformation(init_fn, update_fn)


def thresholding(
    target: Any,
    kmask: Any,
    *,
    kind: str,
    begin: int,
    ramp_steps: int,
    every: int = 1,
    per_tensor: bool = False,
    inner: Any = None,
):
    """Hard / firm thresholding of ``z = p + u`` at the ramp's quantile, support frozen after.

    With ``inner`` (an Adam-family optimizer) the transformation runs it first and scores a
    weight by ``|z| (sqrt(nu) + 1e-8)``; otherwise it goes last in a chain, scoring ``|z|``.
    """

    def init_fn(params):
        return CountState(
            jnp.zeros([], jnp.int32), None, None if inner is None else inner.init(params)
        )

    def update_fn(updates, state, params):
        inner_state = state.inner
        if inner is not None:
            updates, inner_state = inner.update(updates, inner_state, params)
        p_leaves, u_leaves, treedef, idx = _split(updates, params, kmask)
        z = [p_leaves[i] + u_leaves[i] for i in idx]
        if inner is None:
            scores = [jnp.abs(x) for x in z]
        else:
            nu = jax.tree.leaves(find_nu(inner_state))
            scores = [jnp.abs(z[j]) * (jnp.sqrt(nu[i]) + 1e-8) for j, i in enumerate(idx)]
        t, end = state.count, begin + ramp_steps
        due = (t >= begin) & (t <= end) & (((t - begin) % every == 0) | (t == end))
        frozen = t > end

        def threshold():
            taus = thresholds(scores, ramp_at(t, target, ramp_steps, begin), per_tensor)
            out = []
            for x, sc, tau in zip(z, scores, taus, strict=True):
                y = x
                if kind == "firm":  # MCP prox, gamma = 2: continuous, identity beyond 2 tau
                    mid = jnp.sign(x) * (jnp.abs(x) - tau) * 2.0
                    y = jnp.where(jnp.abs(x) <= 2.0 * tau, mid, x)
                out.append(jnp.where(sc <= tau, jnp.zeros_like(x), y))
            return out

        new = lax.cond(due, threshold, lambda: z)
        out = list(u_leaves)
        for i, x in zip(idx, new, strict=True):
            x = jnp.where(frozen & (p_leaves[i] == 0), 0.0, x)
            out[i] = x - p_leaves[i]
        return treedef.unflatten(out), CountState(t + 1, None, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


def drift(target: Any, kmask: Any, *, begin: int, ramp_steps: int, every: int, until: float = 1.0):
    """GMP whose zeros keep a latent value that is touched at searches only.

    Between searches the support is held (zeros stay zero, survivors take the update
    unshrunk) and nothing else is read or written: a held step costs what GMP's does. At a
    search a zeroed weight scores ``|L + every * u|``, its latent ``L`` from the last
    search plus this step's update extrapolated over the ``every`` steps since (Adam's
    update is a momentum average, so ``every * u`` estimates the updates it would have
    taken); a survivor scores ``|p + u|``; one global quantile at the ramp's value; the
    zeroed weights keep their score's ``z`` as ``L``. From ``until`` of the ramp on, ``L``
    restarts from 0 (as the library's ``latent_until``). Support frozen after the ramp.
    """

    def init_fn(params):
        keep = _kernels(params, kmask, jnp.zeros_like)
        return CountState(jnp.zeros([], jnp.int32), keep)

    def update_fn(updates, state, params):
        p_leaves, u_leaves, treedef, idx = _split(updates, params, kmask)
        t, end = state.count, begin + ramp_steps
        due = (t >= begin) & (t <= end) & (((t - begin) % every == 0) | (t == end))
        late = t > begin + int(np.ceil(until * ramp_steps))

        def search():
            z = []
            for i, lat in zip(idx, state.keep, strict=True):
                p, u = p_leaves[i], u_leaves[i]
                lat = jnp.where(late, 0.0, lat) + every * u
                z.append(jnp.where(p == 0, lat, p + u))
            taus = thresholds([jnp.abs(x) for x in z], ramp_at(t, target, ramp_steps, begin), False)
            new = [jnp.where(jnp.abs(x) > tau, x, 0.0) for x, tau in zip(z, taus, strict=True)]
            lat = [jnp.where(n == 0, x, 0.0) for n, x in zip(new, z, strict=True)]
            return new, lat

        def held():
            new = [jnp.where(p_leaves[i] == 0, 0.0, p_leaves[i] + u_leaves[i]) for i in idx]
            return new, state.keep

        new, lat = lax.cond(due, search, held)
        out = list(u_leaves)
        for i, x in zip(idx, new, strict=True):
            out[i] = x - p_leaves[i]
        return treedef.unflatten(out), CountState(t + 1, lat)

    return optax.GradientTransformation(init_fn, update_fn)


class LatentState(NamedTuple):
    count: jax.Array
    latent: list[jax.Array]  # a zeroed weight's latent (int8 codes or float32), 0 elsewhere
    tau: jax.Array  # the last search's threshold: the int8 codes' unit is tau / 64


def latent_replica(
    target: Any,
    kmask: Any,
    *,
    begin: int,
    ramp_steps: int,
    until: float,
    int8: bool,
    key: Any,
    after: bool = False,
):
    """A replica of the library's default (a global hard search by an exact sort on every
    step of the ramp, a latent for the zeroed weights that restarts from the ramp's
    ``until`` on, the support frozen after the ramp) with two switches: ``after`` scores
    ``|p + L + u|`` after the update, as the library does; else the latent weights
    *before* it, ``|p + L|`` (existing buffers: a search would need no full-size
    temporary). ``int8`` keeps the latent in int8 codes in units of ``tau / 64``
    (stochastic rounding, clipped to +-2 tau): a quarter of the float32 copy's traffic.
    """
    unit = 64.0

    def init_fn(params):
        dt = jnp.int8 if int8 else jnp.float32
        lat = _kernels(params, kmask, lambda p: jnp.zeros(p.shape, dt))
        return LatentState(jnp.zeros([], jnp.int32), lat, jnp.zeros([], jnp.float32))

    def decode(q, tau):
        return q.astype(jnp.float32) * (tau / unit) if int8 else q

    def encode(x, tau, k):
        if not int8:
            return x
        r = jax.random.uniform(k, x.shape)
        scaled = jnp.where(tau > 0, x * (unit / jnp.maximum(tau, 1e-30)), 0.0)
        return jnp.clip(jnp.floor(scaled + r), -127, 127).astype(jnp.int8)

    def update_fn(updates, state, params):
        p_leaves, u_leaves, treedef, idx = _split(updates, params, kmask)
        t, end = state.count, begin + ramp_steps
        due = (t >= begin) & (t <= end)
        late = t > begin + int(np.ceil(until * ramp_steps))
        w = [p_leaves[i] + decode(q, state.tau) for i, q in zip(idx, state.latent, strict=True)]
        scored = [x + u_leaves[i] for x, i in zip(w, idx, strict=True)] if after else w

        def search():
            s = ramp_at(t, target, ramp_steps, begin)
            return thresholds([jnp.abs(x) for x in scored], s, False)[0]

        tau = lax.cond(due, search, lambda: state.tau)
        out, lat = list(u_leaves), []
        keys = jax.random.split(jax.random.fold_in(key, t), len(idx))
        for j, i in enumerate(idx):
            p, u = p_leaves[i], u_leaves[i]
            keep = jnp.where(due, jnp.abs(scored[j]) > tau, p != 0)
            z = w[j] + u
            new = jnp.where(keep, z, 0.0)
            rest = jnp.where(late, u, z)  # from `until` on a zeroed weight keeps one update
            lat.append(jnp.where(keep, jnp.zeros_like(state.latent[j]), encode(rest, tau, keys[j])))
            out[i] = new - p
        return treedef.unflatten(out), LatentState(t + 1, lat, tau)

    return optax.GradientTransformation(init_fn, update_fn)


def _kernels(params: Any, kmask: Any, make: Any) -> list[Any]:
    """``make(p)`` for each sparsified kernel ``p``: the research arms' per-kernel state."""
    return [make(p) for p, m in zip(*_flat(params, kmask), strict=True) if m]


def _split(updates: Any, params: Any, kmask: Any) -> tuple[list[Any], list[Any], Any, list[int]]:
    """The params' and updates' leaves, the updates' treedef and the kernels' indices."""
    p_leaves, m_leaves = _flat(params, kmask)
    u_leaves, treedef = jax.tree.flatten(updates)
    return p_leaves, u_leaves, treedef, [i for i, m in enumerate(m_leaves) if m]


def _flat(params: Any, kmask: Any) -> tuple[list[Any], list[bool]]:
    return jax.tree.leaves(params), jax.tree.leaves(kmask)


# ----------------------------------------------------------------------------- training


def ramp_of(cfg: argparse.Namespace) -> tuple[int, int]:
    """The ramp's first step and length, for every method."""
    return int(cfg.begin_frac * cfg.steps), max(1, int(cfg.ramp_frac * cfg.steps))


def lagged_exact_search(scores: list[Any], k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``target_lag``'s search (it replaces the library's sampled one, process-wide): the
    exact k'-th smallest, k' the rank the sampled search aims at (``MARGIN`` sds of a sample
    of ``--sample`` entries under k), scaled to all the entries: the sampled search's lag
    behind the ramp without its sampling noise. The ramp's last search stays exact at k."""
    sel = optax_l1._select
    items = [sel._scored(x) for x in scores]
    total = sum(x.size for x in items)
    sampled = -(-total // sel._stride(items))
    rank = sel._cautious_rank(jnp.asarray(k, jnp.float32), sampled, total)
    lagged = jnp.floor(rank.astype(jnp.float32) * (total / sampled)).astype(jnp.int32)
    kth, at_most = sel.kth_smallest_radix(items, jnp.maximum(lagged, 1))
    none = lagged < 1
    return jnp.where(none, -jnp.inf, kth), jnp.where(none, 0, at_most)


LAG = 3.0 / 4055**0.5  # target_lag's margin: 3 sds of a 4,055-entry sample, as a fraction
LIBRARY_RAMP = optax_l1._target._ramp  # before any arm replaces it (make_tx runs twice)


def lagged_ramp(kind: str, passes: int = 1):
    """A replacement for the library's ramp (``ramp_*`` arms; process-wide, so run alone):
    the cubic ramp's value s lowered by LAG sqrt(s (1 - s)) before its end (``"lag"``:
    ``target_lag``'s lag as a ramp, no search replaced), only by its value at the target T
    (``"tail"``: min(s, T - LAG sqrt(T (1 - T))), the ramp capped and the rest taken at its
    last search), or only mid-ramp (``"mid"``: the lag tapered to 0 as s comes within that
    value of T, so the last search jumps by nothing). Each reaches T exactly at the end.
    ``passes``: how many times the lowering is applied, each to the last one's ramp (the
    RESULTS rows of ``ramp_lag`` and ``ramp_mid`` were run with 2, by accident)."""

    def lower(s, t):
        end_gap = LAG * jnp.sqrt(t * (1.0 - t))
        lag = LAG * jnp.sqrt(s * (1.0 - s))
        if kind == "tail":
            lowered = jnp.minimum(s, t - end_gap)
        elif kind == "mid":
            lowered = s - lag * jnp.clip((t - s) / end_gap, 0.0, 1.0)
        else:
            lowered = s - lag
        return jnp.where(s >= t, s, jnp.maximum(lowered, 0.0))

    def ramp(count, target, ramp_steps, begin_step, shape):
        s = LIBRARY_RAMP(count, target, ramp_steps, begin_step, shape)
        for _ in range(passes):
            s = lower(s, jnp.asarray(target, jnp.float32))
        return s

    return ramp


def make_tx(method: str, value: Any, kmask: Any, cfg: argparse.Namespace):
    """The optimizer of ``method``; ``value`` is its target sparsity (or L1 strength)."""
    steps = cfg.steps
    sched = optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, warmup_steps=max(1, int(0.05 * steps)), decay_steps=steps, end_value=0.0
    )
    begin, ramp_steps = ramp_of(cfg)

    def adamw():
        return optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.adamw(sched, b1=0.9, b2=0.99, weight_decay=0.0),
        )

    ramp = dict(begin=begin, ramp_steps=ramp_steps)
    if method == "dense":
        return adamw()
    if method in ("gmp", "gmp_global"):
        prune = gmp(value, kmask, every=cfg.prune_every, per_tensor=method == "gmp", **ramp)
        return optax.chain(adamw(), prune)
    if method in ("gmp_power", "gmp_global_power"):  # gmp(_global), exponent --ramp-power
        per_tensor = method == "gmp_power"
        prune = gmp(
            value, kmask, every=cfg.prune_every, per_tensor=per_tensor, power=cfg.ramp_power, **ramp
        )
        return optax.chain(adamw(), prune)
    shape = {} if cfg.ramp is None else dict(ramp=cfg.ramp)  # None: the library's
    target_options = dict(ramp_steps=ramp_steps, begin_step=begin, mask=kmask) | shape
    cheap = dict(latent=False, update_every=cfg.prune_every)  # no latent copy, rare searches
    if method in ("target", "target_dropped"):  # the library's defaults (see drop_at)
        return optax.chain(adamw(), optax_l1.sparsity_target(value, **target_options))
    if method == "target_sample":  # the defaults with quantile="sample"
        st = optax_l1.sparsity_target(value, quantile="sample", **target_options)
        return optax.chain(adamw(), st)
    if method == "target_lag":  # the sample's margin without its noise (run alone)
        optax_l1._select.kth_smallest_sampled = lagged_exact_search
        st = optax_l1.sparsity_target(value, quantile="sample", **target_options)
        return optax.chain(adamw(), st)
    if method == "ramp_power":  # the defaults with the ramp's exponent --ramp-power
        st = optax_l1.sparsity_target(value, **(target_options | dict(ramp=cfg.ramp_power)))
        return optax.chain(adamw(), st)
    if method.startswith("ramp_"):  # the lag designed into the ramp (run alone)
        optax_l1._target._ramp = lagged_ramp(method.removeprefix("ramp_"), cfg.lag_passes)
        st = optax_l1.sparsity_target(value, **(target_options | dict(ramp="cubic")))
        return optax.chain(adamw(), st)
    if method == "target_every":  # the defaults with a search every --prune-every steps
        st = optax_l1.sparsity_target(value, update_every=cfg.prune_every, **target_options)
        return optax.chain(adamw(), st)
    if method == "target_latent_full":  # the latent copy for the whole ramp (before 0.2.0)
        st = optax_l1.sparsity_target(value, latent_until=1.0, **target_options)
        return optax.chain(adamw(), st)
    if method == "target_soft":  # the 0.1 default
        st = optax_l1.sparsity_target(value, shrink="soft", **target_options)
        return optax.chain(adamw(), st)
    if method in ("target_cheap", "target_adam_cheap"):  # the step-cost setting
        if method == "target_cheap":
            st = optax_l1.sparsity_target(value, **cheap, **target_options)
            return optax.chain(adamw(), st)
        return optax_l1.sparsity_target(value, optimizer=adamw(), **cheap, **target_options)
    when: dict[str, Any] = dict(ramp_steps=ramp_steps, begin_step=begin) | shape
    if method.endswith("_oneshot"):  # dense, one projection at the ramp's end, fine-tuning
        when = dict(ramp_steps=1, begin_step=begin + ramp_steps - 1, latent=False)
    if method.endswith("_gmp"):  # GMP on groups: per tensor, every 50 steps, support held
        when |= cheap | dict(allocation="uniform", ramp="cubic")  # GMP's own ramp
    if method.endswith("_cheap"):  # the step-cost setting
        when |= cheap
    blocks = optax_l1.Blocks(4, axis=0)
    if method in ("n_of_m", "n_of_m_latent"):  # the copy for half / the whole ramp
        when |= dict(latent_until=0.5 if method == "n_of_m" else 1.0)
    if method.startswith("n_of_m"):  # N:M on the reduction axis
        st = optax_l1.sparsity_target(value, allocation=blocks, mask=kmask, **when)
        return optax.chain(adamw(), st)
    if method in ("blocks", "blocks_oneshot", "blocks_gmp", "blocks_cheap"):  # blocks of 4
        st = optax_l1.sparsity_target(value, structure=blocks, mask=kmask, **when)
        return optax.chain(adamw(), st)
    if method in ("structured", "structured_oneshot", "structured_gmp"):  # heads, MLP units
        units = head_and_unit_structure(cfg.heads, cfg.layers)
        st = optax_l1.sparsity_target(value, structure=units, **({"allocation": "uniform"} | when))
        return optax.chain(adamw(), st)
    if method in ("target_uniform", "target_erk"):  # one threshold per kernel
        allocation = method.removeprefix("target_")
        st = optax_l1.sparsity_target(value, allocation=allocation, **target_options)
        return optax.chain(adamw(), st)
    if method == "target_adam":
        return optax_l1.sparsity_target(value, optimizer=adamw(), **target_options)
    if method == "proximal_adam":
        prox = optax_l1.proximal_adam(
            learning_rate=sched, strength=value, b1=0.9, b2=0.99, mask=kmask
        )
        return optax.chain(optax.clip_by_global_norm(1.0), prox)
    if method == "adamw_l1_prox":
        return optax.chain(adamw(), optax_l1.l1_prox(value, learning_rate=sched, mask=kmask))
    if method == "hard_fisher":
        return thresholding(value, kmask, kind="hard", inner=adamw(), **ramp)
    if method in ("int8_latent", "before_latent", "after_latent", "int8_after"):
        arm = latent_replica(
            value,
            kmask,
            until=0.5,
            int8=method.startswith("int8"),
            key=jax.random.key(7),
            after=method in ("after_latent", "int8_after"),
            **ramp,
        )
        return optax.chain(adamw(), arm)
    if method in ("drift", "drift_full"):
        until = 1.0 if method == "drift_full" else 0.5
        return optax.chain(adamw(), drift(value, kmask, every=cfg.prune_every, until=until, **ramp))
    kind = "firm" if method == "firm" else "hard"
    every = cfg.prune_every if method == "hard_every50" else 1
    arm = thresholding(
        value, kmask, kind=kind, every=every, per_tensor=method == "hard_pertensor", **ramp
    )
    return optax.chain(adamw(), arm)


def zero_fractions(params: Any, kmask: Any) -> tuple[float, dict[str, float]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    per, zeros, size = {}, 0, 0
    for (path, p), m in zip(flat, jax.tree.leaves(kmask), strict=True):
        if m:
            z = int(np.sum(np.asarray(p) == 0))
            per["/".join(k.key for k in path[:-1])] = z / p.size
            zeros, size = zeros + z, size + p.size
    return zeros / size, per


class Runner:
    """Compiles one method's step once; runs (value, seed) pairs with it."""

    def __init__(self, method: str, cfg: argparse.Namespace, train: np.ndarray, evals: jax.Array):
        self.method, self.cfg, self.train, self.evals = method, cfg, train, evals
        params = init_params(jax.random.key(0), cfg)
        self.kmask = kernel_mask(params)
        heads = cfg.heads

        def step(params, opt_state, batch, value):
            loss, grads = jax.value_and_grad(loss_fn)(params, batch, heads)
            tx = make_tx(method, value, self.kmask, cfg)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        def evaluate(params, windows):
            return lax.map(lambda w: loss_fn(params, w, heads), windows).mean()

        t0 = time.perf_counter()
        opt_state = self.init_state(params)
        batch = jnp.zeros((cfg.batch, cfg.context + 1), jnp.int32)
        self.jitted = jax.jit(step, donate_argnums=(0, 1))
        self.step = self.jitted.lower(params, opt_state, batch, jnp.float32(0.5)).compile()
        self.evaluate = jax.jit(evaluate).lower(params, evals).compile()
        self.compile_s = time.perf_counter() - t0

    def init_state(self, params):
        return make_tx(self.method, jnp.float32(0.5), self.kmask, self.cfg).init(params)

    def train_steps(self, value: float, seed: int, steps: int) -> tuple[Any, Any, list[Any]]:
        """The first ``steps`` steps of seed ``seed``'s run: params, optimizer state, losses."""
        cfg = self.cfg
        params = init_params(jax.random.key(seed), cfg)
        opt_state = self.init_state(params)
        rng = np.random.default_rng(seed)
        width = cfg.context + 1
        v = jnp.float32(value)
        losses = []
        step, drop = self.step, self.drop_at()
        for t in range(steps):
            starts = rng.integers(0, self.train.size - width + 1, cfg.batch)
            batch = self.train[starts[:, None] + np.arange(width)[None, :]].astype(np.int32)
            if t == drop:  # the support is frozen: the step without the latent copy
                opt_state = optax_l1.drop_latent(opt_state)
                step = self.jitted  # compiles once more, for the state without the copy
            params, opt_state, loss = step(params, opt_state, batch, v)
            losses.append(loss)
        return params, opt_state, losses

    def drop_at(self) -> int | None:
        """``target_dropped``: the first step after the ramp's last search, where
        ``optax_l1.drop_latent`` sheds the copy (the same steps to rounding)."""
        if self.method != "target_dropped":
            return None
        begin, ramp_steps = ramp_of(self.cfg)
        return begin + ramp_steps + 1

    def run(self, value: float, seed: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        params, _, losses = self.train_steps(value, seed, cfg.steps)
        bpb = float(self.evaluate(params, self.evals)) / math.log(2)
        train_s = time.perf_counter() - t0
        zeros, per = zero_fractions(params, self.kmask)
        tail = np.asarray(jnp.stack(losses[-max(1, cfg.steps // 10) :]))
        return {
            "method": self.method,
            "value": value,
            "seed": seed,
            "bits_per_byte": bpb,
            "zeros": zeros,
            "per_tensor_zeros": per,
            "train_bpb_tail": float(tail.mean()) / math.log(2),
            "finite": bool(np.isfinite(bpb)),
            "wall_s": train_s,
        }


# ----------------------------------------------------------------------------- reporting


def summarize(runs: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, float]]:
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["value"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        b = np.array([r["bits_per_byte"] for r in rs])
        z = np.array([r["zeros"] for r in rs])
        out[key] = {
            "n": len(rs),
            "bpb": float(b.mean()),
            "bpb_sd": float(b.std(ddof=1)) if len(rs) > 1 else 0.0,
            "zeros": float(z.mean()),
            "zeros_sd": float(z.std(ddof=1)) if len(rs) > 1 else 0.0,
            "wall_s": float(np.mean([r["wall_s"] for r in rs])),
        }
    return out


def tables(runs: list[dict[str, Any]]) -> str:
    summ = summarize(runs)
    parts = []
    for kinds, label in ((None, "target"), (STRENGTH_METHODS, "strength")):
        keys = [k for k in summ if (k[0] in STRENGTH_METHODS) == (kinds is not None)]
        if not keys:
            continue
        methods = list(dict.fromkeys(k[0] for k in keys))
        values = sorted({k[1] for k in keys if k[0] != "dense"})
        headers = ["method", *(f"{label} {v:g}" for v in values), "s/run"]
        rows = []
        for m in methods:
            cells = []
            for v in values:
                s = summ.get((m, v)) or (summ.get((m, 0.0)) if m == "dense" else None)
                if s is None:
                    cells.append("")
                    continue
                z = 100 * s["zeros"]
                cells.append(f"{s['bpb']:.4f} ± {s['bpb_sd']:.4f} [{z:.1f}%] (n={s['n']})")
            wall = np.mean([s["wall_s"] for k, s in summ.items() if k[0] == m])
            rows.append([m, *cells, f"{wall:.0f}"])
        parts.append(markdown_table(headers, rows))
    return "\n\n".join(parts)


def plot(runs: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = summarize(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in dict.fromkeys(k[0] for k in summ):
        pts = sorted(
            (s["zeros"], s["bpb"], s["bpb_sd"], s["zeros_sd"]) for k, s in summ.items() if k[0] == m
        )
        x, y, yerr, xerr = (np.array(c) for c in zip(*pts, strict=True))
        if m == "dense":
            ax.axhline(y.mean(), color="k", ls=":", label=f"dense ({y.mean():.3f})")
            continue
        ax.errorbar(100 * x, y, yerr=yerr, xerr=100 * xerr, marker="o", capsize=3, label=m)
    ax.set_xlabel("kernel zeros (%)")
    ax.set_ylabel("validation bits/byte")
    ax.set_title("byte-level transformer LM: sparsity frontier (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _common.Parser(__doc__.split("\n")[0], quick="tiny model, 30 steps: smoke test")
    p.add_scaled("--steps", 600, 30, type=_common.positive_int, help="training steps")
    p.add_scaled("--batch", 32, 8, type=_common.positive_int, help="windows per step")
    p.add_scaled("--context", 128, 32, type=_common.positive_int, help="bytes per window")
    p.add_scaled("--d-model", 128, 32, type=_common.positive_int, help="model width")
    p.add_argument("--heads", type=_common.positive_int, default=4, help="attention heads")
    p.add_scaled("--mlp", 512, 128, type=_common.positive_int, help="MLP hidden width")
    p.add_argument("--layers", type=_common.positive_int, default=2, help="transformer blocks")
    p.add_argument("--lr", type=_common.positive_float, default=3e-3, help="peak learning rate")
    p.add_scaled("--seeds", 1, 1, type=_common.positive_int, help="seeds 0..N-1")
    p.add_argument(
        "--first-seed",
        type=_common.nonnegative_int,
        default=0,
        help="seeds first..first+N-1",
    )
    p.add_scaled(
        "--targets",
        [0.5, 0.8, 0.9, 0.95],
        [0.5],
        type=_common.fraction,
        nargs="+",
        help="target fractions of kernel zeros",
    )
    p.add_argument(
        "--ramp-power", type=_common.positive_float, default=2.75, help="ramp_power's exponent"
    )
    p.add_argument(
        "--lag-passes",
        type=_common.nonnegative_int,
        default=1,
        help="times the ramp_* arms apply their lag",
    )
    p.add_argument(
        "--ramp",
        type=ramp_arg,
        default=None,
        help="sparsity_target's ramp for every arm but the GMP ones (cubic, linear or an "
        "exponent; default: the library's)",
    )
    p.add_argument(
        "--strength",
        type=_common.nonnegative_float,
        nargs="+",
        default=[1e-4],
        help="L1 strengths of proximal_adam / adamw_l1_prox",
    )
    p.add_scaled(
        "--methods",
        ["dense", "gmp", "target", "hard"],
        ["dense", "gmp", "target"],
        nargs="+",
        choices=METHODS,
        help="arms to run",
    )
    p.add_argument(
        "--begin-frac",
        type=_common.typed("a number in [0, 1)", float, lambda v: 0 <= v < 1),
        default=0.1,
        help="ramp start / steps",
    )
    p.add_argument(
        "--ramp-frac",
        type=_common.typed("a number in (0, 1]", float, lambda v: 0 < v <= 1),
        default=0.5,
        help="ramp length / steps",
    )
    p.add_scaled("--prune-every", 50, 5, type=_common.positive_int, help="GMP pruning interval")
    p.add_argument(
        "--sample",
        type=_common.positive_int,
        default=None,
        help="scores in a quantile='sample' search (default: the library's 65,536; smaller "
        "values sample this model's kernels, which are under the 16-samples size it samples)",
    )
    p.add_scaled("--eval-batches", 64, 4, type=_common.positive_int, help="validation batches")
    p.add_scaled("--eval-batch", 32, 8, type=_common.positive_int, help="windows per batch")
    p.add_json(help="raw per-run results (rewritten after each run)")
    p.add_argument("--plot", default=None, help="frontier figure (png)")
    return p.parse(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    cfg = parse_args(argv)
    if cfg.sample is not None:  # a stress test of the sampled search on a small model
        optax_l1._select.SAMPLE = cfg.sample
    train, val, n_files = load_corpus()
    info = header(
        "transformer_lm",
        steps=cfg.steps,
        batch=cfg.batch,
        context=cfg.context,
        d_model=cfg.d_model,
        heads=cfg.heads,
        mlp=cfg.mlp,
        layers=cfg.layers,
        lr=cfg.lr,
        seeds=cfg.seeds,
        begin=ramp_of(cfg)[0],
        ramp_steps=ramp_of(cfg)[1],
        prune_every=cfg.prune_every,
        files=n_files,
        train_bytes=train.size,
        val_bytes=val.size,
    )
    evals = jnp.asarray(eval_windows(val, cfg.eval_batches, cfg.eval_batch, cfg.context + 1))
    runs: list[dict[str, Any]] = []
    compile_s: dict[str, float] = {}
    for method in cfg.methods:
        runner = Runner(method, cfg, train, evals)
        compile_s[method] = runner.compile_s
        if method == "dense":
            values = [0.0]
        elif method in STRENGTH_METHODS:
            values = cfg.strength
        else:
            values = cfg.targets
        for value in values:
            for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
                r = runner.run(value, seed)
                runs.append(r)
                print(
                    f"{method:>15} value={value:<7g} seed={seed} bits/byte={r['bits_per_byte']:.4f}"
                    f" zeros={100 * r['zeros']:.2f}% train_tail={r['train_bpb_tail']:.3f}"
                    f" {r['wall_s']:.1f}s (compile {runner.compile_s:.1f}s)",
                    flush=True,
                )
                write_json(
                    cfg.json,
                    {"info": info, "config": vars(cfg), "compile_s": compile_s, "runs": runs},
                )
    print()
    print(tables(runs))
    if cfg.plot:
        plot(runs, cfg.plot)
    total = time.perf_counter() - t_start
    print(f"total wall time {total:.1f}s")
    return {
        "info": info,
        "runs": runs,
        "summary": {f"{k[0]}@{k[1]:g}": v for k, v in summarize(runs).items()},
        "compile_s": compile_s,
        "wall_s": total,
    }


if __name__ == "__main__":
    main()
