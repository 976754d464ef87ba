"""One process of the 2-process test (tests/multiprocess_test.py), and the problem it trains.

Run as ``python multiprocess_worker.py PORT PROCESS_ID OUT.npz`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``: two such processes form one global
4x2 mesh of 8 CPU devices (collectives through gloo), train each transform of ``TRANSFORMS``
for ``STEPS`` steps on sharded params, and process 0 writes the gathered params.
"""

from __future__ import annotations

import sys

import numpy as np

STEPS = 30


def problem():
    """Fixed least-squares data and initial params (NumPy: identical in every process)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    w_true = rng.standard_normal((16, 8)).astype(np.float32) * (rng.random((16, 8)) < 0.3)
    y = x @ w_true
    params = {
        "w": rng.standard_normal((16, 8)).astype(np.float32),
        "b": np.zeros(8, np.float32),
    }
    return x, y, params


def transforms():
    import optax

    import optax_l1

    mask = {"w": True, "b": False}
    return {
        "adamw_l1_prox": optax.chain(
            optax.adamw(0.05), optax_l1.l1_prox(0.5, learning_rate=0.05, mask=mask)
        ),
        "sparsity_target": optax.chain(
            optax.adam(0.05), optax_l1.sparsity_target(0.7, ramp_steps=15, mask=mask)
        ),
        "group_l1_prox": optax.chain(
            optax.adam(0.05), optax_l1.group_l1_prox(2.0, learning_rate=0.05, axis=0, mask=mask)
        ),
    }


def train(tx, params, x, y, steps=STEPS):
    import jax
    import jax.numpy as jnp
    import optax

    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"][None, :] - y) ** 2)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


def main(port: str, process_id: int, out: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id
    )
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    assert jax.process_count() == 2 and jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    specs = {"w": P("data", "model"), "b": P("model")}
    x, y, params = problem()

    def put(tree, spec_tree):
        return jax.tree.map(
            lambda a, s: jax.make_array_from_callback(
                a.shape, NamedSharding(mesh, s), lambda idx: a[idx]
            ),
            tree,
            spec_tree,
        )

    x_g, y_g = put({"x": x, "y": y}, {"x": P(), "y": P()}).values()
    results = {}
    for name, tx in transforms().items():
        trained = train(tx, put(params, specs), x_g, y_g)
        assert trained["w"].sharding.spec == specs["w"], trained["w"].sharding  # kept
        full = multihost_utils.process_allgather(trained, tiled=True)
        for k, v in full.items():
            results[f"{name}/{k}"] = np.asarray(v)
    if process_id == 0:
        np.savez(out, **results)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
