"""Smoke tests for examples/: each script runs as a user would run it, in its --quick mode."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example -> (extra flags, optional modules it needs besides jax/optax/scikit-learn)
SMOKE_RUNS = {
    "quickstart": (["--out", "quickstart.png"], ("matplotlib", "tqdm")),
    "flax_linen_train_state": ([], ("flax",)),
    "flax_nnx": ([], ("flax",)),
    "compact_mlp": ([], ()),
    "lasso_path": (["--out", "lasso_path.png"], ("matplotlib",)),
    "equinox_example": ([], ("equinox",)),
    "sharded": ([], ()),
}


def missing_module(name: str) -> str | None:
    for module in ("sklearn", *SMOKE_RUNS[name][1]):
        if importlib.util.find_spec(module) is None:
            return module
    return None


class Runner:
    """Runs ``examples/<name>.py --quick`` in fresh interpreters, several at once.

    Each run spends most of its time importing and compiling on one core; started together
    they overlap, which keeps this file to about the time of the longest runs.
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        if name in self.procs or missing_module(name):
            return
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)  # sharded.py sets its own device count when none is given
        env["JAX_PLATFORMS"] = "cpu"
        with open(self.workdir / f"{name}.out", "w") as out:
            with open(self.workdir / f"{name}.err", "w") as err:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", *SMOKE_RUNS[name][0]],
                    cwd=self.workdir,
                    env=env,
                    stdout=out,
                    stderr=err,
                    text=True,
                )

    def stdout(self, name: str) -> str:
        """Waits for the run and returns its stdout; fails with its stderr if it failed."""
        module = missing_module(name)
        if module:
            pytest.skip(f"{module} is not installed (pip install optax_l1[examples])")
        self.start(name)
        returncode = self.procs[name].wait(timeout=300)
        out = (self.workdir / f"{name}.out").read_text()
        err = (self.workdir / f"{name}.err").read_text()
        assert returncode == 0, f"{name} failed:\n{out}\n{err[-4000:]}"
        return out

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def examples(request, tmp_path_factory):
    runner = Runner(tmp_path_factory.mktemp("examples"))
    if "PYTEST_XDIST_WORKER" not in os.environ:  # under xdist, each test starts its own run
        for item in request.session.items:
            name = item.name.removeprefix("test_")
            if getattr(item, "module", None) is request.module and name in SMOKE_RUNS:
                runner.start(name)
    yield runner
    runner.close()


def percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", sorted(SMOKE_RUNS))
def test_help_shows_every_default(name):
    if (missing := missing_module(name)) is not None:
        pytest.skip(f"needs {missing}")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    options = re.split(r"\n  (?=-)", out.split("options:", 1)[1])[1:]
    assert options, out
    for block in options:
        if not block.startswith("-h"):
            assert "(default:" in " ".join(block.split()), block


def test_quickstart(examples):
    out = examples.stdout("quickstart")
    header = next(line for line in out.splitlines() if line.startswith("run "))
    assert "test acc" in header and "Dense_0/kernel" in header and "kernels" in header
    assert re.search(r"proximal_adam [\d.e-]+ \(suggest_strength\)", out)
    rows = {}
    for run in ("none", "l1 in loss", "proximal_adam", "sparsity_target"):
        line = next(line for line in out.splitlines() if line.startswith(run + " "))
        cells = line[len(run) :].split()
        rows[run] = {"acc": percent(cells[0]), "kernels": percent(cells[-2])}
    assert rows["none"]["kernels"] == 0.0
    assert rows["l1 in loss"]["kernels"] == 0.0  # a subgradient gives no exact zero
    assert rows["sparsity_target"]["kernels"] == 0.9  # exactly the target (the default 90%)
    assert rows["proximal_adam"]["kernels"] > 0.5  # the suggested strength: many zeros
    assert rows["sparsity_target"]["acc"] > 0.6 and rows["proximal_adam"]["acc"] > 0.3
    assert_png(examples.workdir / "quickstart.png")


def test_flax_linen_train_state(examples):
    out = examples.stdout("flax_linen_train_state")
    l1_part = out.split("\nl1_prox:")[1]
    accuracy = re.search(r"test accuracy ([\d.]+%)", l1_part).group(1)
    assert percent(accuracy) > 0.8
    zeros = dict(re.findall(r"^\s+(Dense_\d/\w+)\s+([\d.]+%)", l1_part, re.M))
    assert set(zeros) == {"Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel", "Dense_1/bias"}
    assert percent(zeros["Dense_0/bias"]) == percent(zeros["Dense_1/bias"]) == 0.0
    assert percent(re.search(r"kernels: ([\d.]+%)", l1_part).group(1)) > 0.0


def test_flax_nnx(examples):
    out = examples.stdout("flax_nnx")
    assert percent(re.search(r"^\s+linear1/kernel\s+([\d.]+%)", out, re.M).group(1)) > 0.0
    assert percent(re.search(r"^\s+linear1/bias\s+([\d.]+%)", out, re.M).group(1)) == 0.0
    alive, total = map(int, re.search(r"hidden units: (\d+) of (\d+) alive", out).groups())
    pruned = int(re.search(r"pruned network\s*: (\d+) hidden units", out).group(1))
    assert pruned == alive < total
    max_diff = float(re.search(r"max \|logits - pruned logits\| = (\S+),", out).group(1))
    assert max_diff < 1e-4
    assert "same predictions: 100.0%" in out


def test_compact_mlp(examples):
    out = examples.stdout("compact_mlp")
    kept = [int(k) for k in re.search(r"units kept: (\d+) and (\d+) of (\d+)", out).groups()]
    assert kept[0] == kept[1] == kept[2] // 4  # 75% of each layer's units off
    accs = re.search(r"test accuracy\s*: ([\d.]+%) sparse dense-shaped, ([\d.]+%) compacted", out)
    assert accs.group(1) == accs.group(2) and percent(accs.group(1)) > 0.5
    diff = re.search(r"compacted logits\| = (\S+), (\S+) of the logits' scale", out)
    assert float(diff.group(2)) <= 1e-5
    assert "same predictions : 100.0%" in out


def test_lasso_path(examples):
    out = examples.stdout("lasso_path")
    deviation = float(re.search(r"largest \|coef - sklearn coef\| = (\S+)", out).group(1))
    assert deviation < 1e-5
    assert_png(examples.workdir / "lasso_path.png")


def test_equinox_example(examples):
    out = examples.stdout("equinox_example")
    l1_part = out.split("\nl1_prox:")[1]
    zeros = dict(re.findall(r"^\s+(layers/\d/\w+)\s+([\d.]+%)", l1_part, re.M))
    assert zeros and all(percent(v) == 0.0 for k, v in zeros.items() if k.endswith("bias"))
    assert any(percent(v) > 0.0 for k, v in zeros.items() if k.endswith("weight"))
    assert percent(re.search(r"test accuracy ([\d.]+%)", l1_part).group(1)) > 0.8


def test_sharded(examples):
    out = examples.stdout("sharded")
    assert "8 cpu devices, mesh {'data': 4, 'model': 2}" in out
    assert "shardings kept: params True, adam moments True" in out
    ours, host = re.search(
        r"optax_l1.sparsity \(jit, sharded\) (\S+), counted on gathered arrays (\S+)", out
    ).groups()
    assert ours == host
    per_shard, total, global_ = re.search(
        r"zeros per 'model' shard \[(.*)\], sum (\d+) == global (\d+)", out
    ).groups()
    assert sum(map(int, per_shard.split(","))) == int(total) == int(global_)
    diff = float(re.search(r"max \|param difference\| = (\S+),", out).group(1))
    assert diff < 1e-4


# ----------------------------------------------------------------------------- bad input


BAD_INPUT = [
    ("quickstart", ["--target", "1.5"], "--target"),
    ("quickstart", ["--target", "0"], "--target"),
    ("quickstart", ["--steps", "0"], "--steps"),
    ("compact_mlp", ["--steps", "0"], "--steps"),
    ("compact_mlp", ["--target", "1"], "--target"),
    ("compact_mlp", ["--hidden", "0"], "--hidden"),
    ("lasso_path", ["--n-alphas", "0"], "--n-alphas"),
    ("lasso_path", ["--eps", "1.5"], "--eps"),
    ("lasso_path", ["--eps", "0"], "--eps"),
    ("sharded", ["--model", "0"], "--model"),
    ("sharded", ["--model", "-2"], "--model"),
    ("sharded", ["--steps", "0"], "--steps"),
    ("flax_linen_train_state", ["--steps", "0"], "--steps"),
    ("flax_linen_train_state", ["--hidden", "32", "0"], "--hidden"),
    ("flax_nnx", ["--steps", "0"], "--steps"),
    ("equinox_example", ["--steps", "0"], "--steps"),
]


@pytest.mark.parametrize(("name", "argv", "option"), BAD_INPUT)
def test_bad_input_is_refused_naming_the_option(name, argv, option, capsys, monkeypatch):
    if (missing := missing_module(name)) is not None:
        pytest.skip(f"needs {missing}")
    # sharded.py sets XLA_FLAGS when it is unset: keep this process's value as it is.
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    monkeypatch.syspath_prepend(str(EXAMPLES))  # its folder first, as when run: `_cli`
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # flax's dataclasses look it up
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err
