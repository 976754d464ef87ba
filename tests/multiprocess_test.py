"""Two JAX processes on localhost (CPU collectives through gloo), one global 4x2 mesh: every
transform gives the zero pattern and, within 1e-6, the params of a single-process run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import multiprocess_worker as worker
import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    out = tmp_path / "two.npz"
    port = str(_free_port())
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "multiprocess_worker.py"), port, str(i), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the 2-process run took over {TIMEOUT_S} s")
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    two = np.load(out)
    x, y, params = worker.problem()
    for name, tx in worker.transforms().items():
        one = worker.train(tx, {k: jnp.asarray(v) for k, v in params.items()}, x, y)
        for k in ("w", "b"):
            got, want = two[f"{name}/{k}"], np.asarray(one[k])
            np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"{name}/{k} zeros")
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"{name}/{k}")
        assert np.mean(two[f"{name}/w"] == 0) > 0.1, name  # the run made zeros
