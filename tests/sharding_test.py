"""Sharded params on 8 virtual CPU devices (a 4x2 mesh) behave as on one device.

XLA_FLAGS must be set before JAX starts, so the checks run in a child Python process that
prints a JSON summary; the tests below assert on it.
"""

import functools
import json
import os
import subprocess
import sys
import textwrap

import pytest

import optax_l1

CHILD = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import optax_l1

    devices = jax.devices()
    mesh = Mesh(np.array(devices).reshape(4, 2), ("data", "model"))
    specs = {
        "kernel": P("data", "model"),
        "wide": P(None, "data"),
        "bias": P("model"),
        "scalar": P(),
    }
    rng = np.random.default_rng(0)
    host = {
        "kernel": rng.normal(size=(16, 8)).astype(np.float32) * 0.1,
        "wide": rng.normal(size=(8, 12)).astype(np.float32) * 0.1,
        "bias": rng.normal(size=(8,)).astype(np.float32) * 0.1,
        "scalar": np.float32(0.3),
    }
    host["kernel"][:, 3] = 0.0
    host["kernel"][:, 4:] *= 10.0  # columns that survive the group prox
    host["wide"][:, 6:] *= 10.0
    x = rng.normal(size=(32, 16)).astype(np.float32)

    def put(tree, sharded):
        if sharded:
            return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in tree.items()}
        return {k: jax.device_put(v, devices[0]) for k, v in tree.items()}

    def loss(p, x):
        h = jnp.tanh(x @ p["kernel"] + p["bias"])
        out = h @ p["wide"][:, :8].T
        return jnp.mean((out - 0.5) ** 2) + p["scalar"] ** 2

    def train(tx, params, x, steps=5):
        @jax.jit
        def step(p, s):
            u, s = tx.update(jax.grad(loss)(p, x), s, p)
            return optax.apply_updates(p, u), s

        state = tx.init(params)
        for _ in range(steps):
            # Wait for each step: collectives across 8 simulated devices on 2 cores can stall
            # when many steps are in flight at once (seen with jax 0.10 on CPU).
            params, state = jax.block_until_ready(step(params, state))
        return params, state

    def same_sharding(a, b):
        return bool(a.sharding.is_equivalent_to(b.sharding, a.ndim))

    result = {"n_devices": len(devices)}
    lr = 0.05
    txs = {
        "adam_l1": optax.chain(optax.adam(lr), optax_l1.l1_prox(0.5, learning_rate=lr)),
        "adam_group": optax.chain(
            optax.adam(lr),
            optax_l1.group_l1_prox(3.0, learning_rate=lr, axis=0, mask={
                "kernel": True, "wide": True, "bias": False, "scalar": False}),
        ),
    }
    txs["adam_group_workspace"] = optax.chain(
        optax.adam(lr),
        optax_l1.group_l1_prox(3.0, learning_rate=lr, axis=0, workspace=True, mask={
            "kernel": True, "wide": True, "bias": False, "scalar": False}),
    )
    # A unit couples kernel column j and bias j, both sharded on "model" (a coupled group
    # across leaves sharded on different mesh axes is left to XLA's propagation: give the
    # step out_shardings there).
    units = {
        "kernel": optax_l1.Groups(0, couple="u"),
        "bias": optax_l1.Elements(couple="u"),
        "wide": optax_l1.Groups(0),
        "scalar": None,
    }
    kernels = {"kernel": True, "wide": True, "bias": False, "scalar": False}
    txs["adam_coupled"] = optax.chain(
        optax.adam(lr), optax_l1.group_l1_prox(3.0, learning_rate=lr, structure=units)
    )
    txs["target_units"] = optax.chain(
        optax.adam(lr), optax_l1.sparsity_target(0.5, ramp_steps=3, structure=units)
    )
    txs["target_n_of_m"] = optax.chain(
        optax.adam(lr),
        optax_l1.sparsity_target(
            0.5, ramp_steps=3, allocation=optax_l1.Blocks(4, axis=0), mask=kernels
        ),
    )
    for name, tx in txs.items():
        p_sh = put(host, True)
        p_one = put(host, False)
        x_sh = jax.device_put(x, NamedSharding(mesh, P("data", None)))
        out_sh, state_sh = train(tx, p_sh, x_sh)
        out_one, _ = train(tx, p_one, jax.device_put(x, devices[0]))
        result[name] = {
            "sharding_kept": {k: same_sharding(out_sh[k], p_sh[k]) for k in host},
            "max_rel_diff": max(
                float(np.max(np.abs(np.asarray(out_sh[k]) - np.asarray(out_one[k]))))
                / (1.0 + float(np.max(np.abs(np.asarray(out_one[k])))))
                for k in host
            ),
            "zero_pattern_equal": all(
                bool(np.array_equal(np.asarray(out_sh[k]) == 0, np.asarray(out_one[k]) == 0))
                for k in host
            ),
            "n_zeros": int(sum(int(np.sum(np.asarray(v) == 0)) for v in out_sh.values())),
            "spec": {k: [str(a) for a in out_sh[k].sharding.spec] for k in host},
            "kernel_devices": len(out_sh["kernel"].sharding.device_set),
            # (all-zero columns, columns with some zero) of the 2-D leaves
            "zero_columns": [
                int(np.sum(np.all(np.asarray(out_sh[k]) == 0, axis=0))) for k in ("kernel", "wide")
            ],
            "touched_columns": [
                int(np.sum(np.any(np.asarray(out_sh[k]) == 0, axis=0))) for k in ("kernel", "wide")
            ],
        }
        if name == "adam_l1":
            trained_sh, trained_one = out_sh, out_one
        if name == "adam_group_workspace":
            ws = state_sh[1].workspace
            result["workspace_sharding_kept"] = {
                k: ws[k] is not None and same_sharding(ws[k], p_sh[k]) for k in ("kernel", "wide")
            }

    pen = jax.jit(lambda p: optax_l1.l1_penalty(p, 0.7))
    result["penalty_sharded"] = float(pen(trained_sh))
    result["penalty_single"] = float(pen(trained_one))
    result["penalty_numpy"] = float(
        0.7 * sum(np.sum(np.abs(np.asarray(v, np.float64))) for v in trained_one.values())
    )
    result["penalty_fresh_sharded"] = float(optax_l1.l1_penalty(put(host, True), 0.7))
    result["penalty_fresh_numpy"] = float(
        0.7 * sum(np.sum(np.abs(np.asarray(v, np.float64))) for v in host.values())
    )
    sp = jax.jit(optax_l1.sparsity)
    result["sparsity_sharded"] = float(sp(trained_sh))
    result["sparsity_single"] = float(sp(trained_one))
    n_total = sum(np.size(v) for v in trained_one.values())
    n_zero = sum(int(np.sum(np.asarray(v) == 0)) for v in trained_one.values())
    result["sparsity_numpy"] = n_zero / n_total
    rep_sh = jax.jit(optax_l1.sparsity_report)(trained_sh)
    rep_one = optax_l1.sparsity_report(trained_one)
    result["report_equal"] = {k: float(rep_sh[k]) == float(rep_one[k]) for k in rep_one}
    print("RESULT " + json.dumps(result))
    """
)


@functools.lru_cache(maxsize=1)
def child_result():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    # the child imports the same optax_l1 as this process (source tree or installed wheel)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(optax_l1.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"child failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def result():
    return child_result()


def test_child_sees_eight_devices(result):
    assert result["n_devices"] == 8


TXS = [
    "adam_l1",
    "adam_group",
    "adam_group_workspace",
    "adam_coupled",
    "target_units",
    "target_n_of_m",
]


@pytest.mark.parametrize("tx", TXS)
def test_jitted_step_keeps_input_sharding(result, tx):
    assert result[tx]["sharding_kept"] == {k: True for k in ("kernel", "wide", "bias", "scalar")}
    assert result[tx]["spec"]["kernel"] == ["data", "model"]
    assert result[tx]["kernel_devices"] == 8


@pytest.mark.parametrize("tx", TXS)
def test_sharded_numbers_equal_single_device(result, tx):
    assert result[tx]["max_rel_diff"] <= 1e-5
    assert result[tx]["zero_pattern_equal"]
    assert result[tx]["n_zeros"] > 8  # the prox produced zeros beyond the preset column


def test_group_workspace_keeps_the_params_sharding(result):
    assert result["workspace_sharding_kept"] == {"kernel": True, "wide": True}


def test_group_prox_zeroes_whole_columns_across_shards(result):
    zero_cols, touched = (
        result["adam_group"]["zero_columns"],
        result["adam_group"]["touched_columns"],
    )
    assert zero_cols == touched  # a column is either all zero or has no zero
    assert zero_cols[0] >= 1 and zero_cols[1] >= 1  # the kernel's groups span 4 shards
    assert sum(zero_cols) < 8 + 12


def test_l1_penalty_of_sharded_params_equals_unsharded(result):
    assert result["penalty_sharded"] == pytest.approx(result["penalty_single"], rel=1e-6)
    assert result["penalty_sharded"] == pytest.approx(result["penalty_numpy"], rel=1e-5)
    assert result["penalty_fresh_sharded"] == pytest.approx(result["penalty_fresh_numpy"], rel=1e-5)


def test_sparsity_of_sharded_params_equals_unsharded(result):
    assert result["sparsity_sharded"] == result["sparsity_single"]
    assert result["sparsity_sharded"] == pytest.approx(result["sparsity_numpy"], rel=1e-6)
    assert 0.0 < result["sparsity_numpy"] < 1.0
    assert all(result["report_equal"].values()) and "total" in result["report_equal"]
