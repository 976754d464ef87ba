"""Smoke tests for benchmarks/*.py: each runs with --quick in a subprocess (so the scripts
cannot rot) and its printed output and JSON are checked for sane, complete figures."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run_script(name: str, tmp_path: Path, *extra: str, timeout: int = 240) -> tuple[str, dict]:
    out_json = tmp_path / f"{name}.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the host-device count some tests set must not leak in
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--json", str(out_json), *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out_json.read_text()) if out_json.exists() else {}
    return proc.stdout, data


def finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def assert_header(stdout: str, title: str) -> None:
    assert stdout.startswith(f"# {title}\n")
    assert "device: " in stdout and "jax " in stdout and "optax " in stdout


def test_step_overhead_quick(tmp_path):
    stdout, data = run_script("step_overhead", tmp_path)
    assert_header(stdout, "step_overhead")
    rows = data["results"]
    # --quick times the multi layout only (every row compiled once); every core row is there,
    # and optional transforms are listed when skipped.
    assert {r["layout"] for r in rows} == {"multi"}
    names = {r["B"] for r in rows}
    for b in ("sgd + l1_prox", "adam + l1_prox", "adamw + l1_prox"):
        assert b in names
    assert "add_l1_subgradient + sgd" in names
    assert "sgd + group_l1_prox(axis=0)" in names
    for optional in ("proximal_adam", "proximal_adagrad", "ftrl"):
        present = any(r["B"] == optional for r in rows)
        assert present or optional in data["skipped"]
    for r in rows:
        assert finite_positive(r["ratio_median"]), r
        lo, hi = r["ratio_ci95"]
        assert 0 < lo <= r["ratio_median"] <= hi
        assert finite_positive(r["t_A_ms"]) and finite_positive(r["t_B_ms"])
        assert r["memory_A"]["temp"] >= 0 and r["memory_B"]["temp"] >= 0
    sgd_rows = [r for r in rows if r["B"] == "sgd + l1_prox"]
    assert all(finite_positive(r["bandwidth_GBps"]) for r in sgd_rows)
    # The plain L1 prox fuses into the optimizer's loop: no temporary buffer of its own.
    for r in rows:
        if r["row"] == "l1_prox":
            assert not r["extra_full_size_temp"], r
    # The oracle (a hand-written fused step, checked to compute B) is timed for these rows.
    with_oracle = [r for r in rows if r["row"] in ("l1_prox", "l1_prox(schedule)")]
    with_oracle += [r for r in rows if r["B"] == "proximal_adam"]
    with_oracle += [r for r in rows if r["row"] in ("group_l1_prox", "group_l1_prox(workspace)")]
    assert len(with_oracle) == 10
    assert all(finite_positive(r["B_over_oracle_median"]) for r in with_oracle)
    assert "| layout | A | B | median B/A | 95% CI | B / oracle |" in stdout
    assert "l1_prox worst median ratio" in stdout


def test_step_overhead_diagnose_quick(tmp_path):
    stdout, data = run_script("step_overhead", tmp_path, "--diagnose")
    variants = [d["variant"] for d in data["diagnose"]]
    assert variants[0].startswith("sgd") and any(v.startswith("library") for v in variants)
    assert all(finite_positive(d["ratio_vs_sgd"]) for d in data["diagnose"])


def test_memory_quick(tmp_path):
    stdout, data = run_script("memory", tmp_path)
    assert_header(stdout, "memory")
    rows = data["results"]
    assert {r["layout"] for r in rows} == {"multi"}  # --quick: one layout
    for r in rows:
        for tag in ("memory_A", "memory_B"):
            m = r[tag]
            assert m["argument"] > 0 and m["output"] > 0 and m["peak"] > 0
            # Params and optimizer state are donated: outputs alias their inputs.
            assert m["alias"] > 0
        if r["B"] == "sgd + l1_prox":
            assert r["extra_temp"] < r["params"] * 4  # no full-size float32 temporary
    assert "| dtype | layout | step |" in stdout


def test_frontier_quick(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    stdout, data = run_script("frontier", tmp_path, "--out", str(tmp_path / "fig"))
    assert_header(stdout, "frontier")
    assert (tmp_path / "fig" / "frontier.png").stat().st_size > 1000
    res = data["results"]
    for method in ("loss", "prox", "prune", "prune+ft"):
        assert method in res
        acc = res[method]["acc"]
        sp = res[method]["sparsity"]
        assert len(acc) == len(res[method]["lambda"])
        assert all(0.0 <= a <= 1.0 for row in acc for a in row)
        assert all(0.0 <= s <= 1.0 for row in sp for s in row)
    # Pruning targets (b)'s sparsity exactly (up to rounding of the count).
    for sp_b, sp_d in zip(res["prox"]["sparsity"], res["prune"]["sparsity"], strict=True):
        for a, b in zip(sp_b, sp_d, strict=True):
            assert abs(a - b) < 1e-3
    assert "(b) adam + l1_prox" in stdout and "verdict:" in stdout


def test_lasso_solvers_quick(tmp_path):
    pytest.importorskip("sklearn")
    stdout, data = run_script("lasso_solvers", tmp_path)
    assert_header(stdout, "lasso_solvers")
    rows = data["results"]
    solvers = {r["solver"] for r in rows}
    assert {"optax_l1 ISTA", "optax_l1 FISTA", "sklearn Lasso (CD)"} <= solvers
    if "jaxopt: included" in stdout:
        assert {"jaxopt PG", "jaxopt FISTA"} <= solvers
    else:
        assert "jaxopt" in stdout  # the skip is announced
    for r in rows:
        assert r["reached"], r
        assert r["gap"] <= 1e-6 + 1e-12
        assert finite_positive(r["time_ms"])
    synth = [r for r in rows if r["problem"].startswith("synthetic")]
    assert synth and all(r["recall"] == 1.0 for r in synth)


def test_lasso_solvers_without_jaxopt(tmp_path):
    pytest.importorskip("sklearn")
    stdout, data = run_script("lasso_solvers", tmp_path, "--no-jaxopt")
    assert "jaxopt: skipped" in stdout
    assert not any(r["solver"].startswith("jaxopt") for r in data["results"])


def test_torch_loop_quick(tmp_path):
    stdout, data = run_script("torch_loop", tmp_path)
    assert_header(stdout, "torch_loop")
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "skipped" in stdout
        pytest.skip("torch is not installed; the script printed its skip note")
    rows = {r["arm"]: r for r in data["results"]}
    assert len(rows) >= 4
    for r in rows.values():
        assert finite_positive(r["steps_per_s"]) and finite_positive(r["ratio_vs_torch"])
        assert 0 <= r["zeros"] <= r["params"] == 899
    # Same algorithm, same start: torch's loop and the JAX loss-L1 arm agree closely.
    torch_loss = rows["torch (L1 in loss)"]["final_objective"]
    jax_loss = rows["jax loss-L1 (same algorithm)"]["final_objective"]
    assert abs(torch_loss - jax_loss) < 1e-3 * max(1.0, abs(torch_loss))


def test_transformer_lm_quick(tmp_path):
    stdout, data = run_script("transformer_lm", tmp_path, timeout=600)
    assert_header(stdout, "transformer_lm")
    runs = {r["method"]: r for r in data["runs"]}
    assert set(runs) == {"dense", "gmp", "target"}
    assert runs["dense"]["zeros"] == 0.0
    for method in ("gmp", "target"):  # both hit the quick run's 50% exactly, per tensor for gmp
        assert runs[method]["zeros"] == pytest.approx(0.5, abs=1e-6)
    assert all(v == pytest.approx(0.5, abs=1e-6) for v in runs["gmp"]["per_tensor_zeros"].values())
    for r in runs.values():  # bits/byte of a byte model that learned something: under 8
        assert r["finite"] and 0 < r["bits_per_byte"] < 8


def _arms_end_on_target(tmp_path, arms: tuple[str, ...], *extra: str) -> None:
    """The quick transformer_lm run of ``arms`` ends each at the quick run's 50% exactly."""
    _, data = run_script("transformer_lm", tmp_path, "--methods", *arms, *extra, timeout=600)
    runs = {r["method"]: r for r in data["runs"]}
    assert set(runs) == set(arms)
    for r in runs.values():
        assert r["zeros"] == pytest.approx(0.5, abs=1e-6)
        assert r["finite"] and 0 < r["bits_per_byte"] < 8


def test_transformer_lm_gmp_prunes_at_the_ramps_end_off_its_interval(tmp_path):
    # With --prune-every not dividing the ramp (4 against the quick run's 15 steps) GMP's
    # last prune came before the ramp's end and stopped short of the target.
    _arms_end_on_target(tmp_path, ("gmp",), "--prune-every", "4")


def test_transformer_lm_step_cost_arms_quick(tmp_path):
    # The step-cost settings (no latent copy, a search every --prune-every steps) reach
    # their target exactly: global for the Fisher score, per block of 4 for 2:4 and blocks.
    _arms_end_on_target(tmp_path, ("target_adam_cheap", "n_of_m_cheap", "blocks_cheap"))


def test_transformer_lm_n_of_m_latent_arm_quick(tmp_path):
    # 2:4 with the latent copy for the whole ramp ends on 2:4 exactly (50% zeros).
    _arms_end_on_target(tmp_path, ("n_of_m_latent",))


def test_transformer_lm_search_arms_quick(tmp_path):
    # The latent copy with rare searches, a latent touched at searches only, and the sampled
    # search (--sample small enough that the quick model's kernels are sampled) all end on
    # the target exactly: each ramp's last search is exact.
    _arms_end_on_target(tmp_path, ("target_every", "drift", "target_sample"), "--sample", "256")


def test_transformer_lm_lag_arm_quick(tmp_path):
    # The sampled search's margin, exact (it replaces the library's sampled search in its
    # process, so it runs alone): the ramp's last search is exact, on target.
    _arms_end_on_target(tmp_path, ("target_lag",), "--sample", "256")


@pytest.mark.parametrize("arm", ["ramp_lag", "ramp_tail", "ramp_mid"])
def test_transformer_lm_lagged_ramp_arms_quick(tmp_path, arm):
    # The lag designed into the ramp (each replaces the library's ramp in its process, so
    # each runs alone) still ends on the target exactly: the ramp's last value is T.
    _arms_end_on_target(tmp_path, (arm,))


def test_transformer_lm_ramp_power_arm_quick(tmp_path):
    # sparsity_target(ramp=e) and GMP on the same ramp (--ramp-power): on target at the end.
    _arms_end_on_target(tmp_path, ("ramp_power", "gmp_power"), "--ramp-power", "2.5")


def test_transformer_lm_dropped_copy_arm_quick(tmp_path):
    # The default with its latent copy dropped after the ramp (a second compiled step) takes
    # the default's steps to rounding: same zeros, same bits/byte.
    _, data = run_script(
        "transformer_lm", tmp_path, "--methods", "target", "target_dropped", timeout=600
    )
    runs = {r["method"]: r for r in data["runs"]}
    assert runs["target_dropped"]["zeros"] == pytest.approx(0.5, abs=1e-6)
    assert runs["target_dropped"]["bits_per_byte"] == pytest.approx(
        runs["target"]["bits_per_byte"], abs=1e-4
    )


def test_compile_scale_quick(tmp_path):
    stdout, data = run_script("compile_scale", tmp_path)
    assert_header(stdout, "compile_scale")
    assert data["info"]["sizes"]["leaves"] == 60
    assert set(data["seconds"]) == {"adamw", "adamw + l1_prox", "adamw + sparsity_target"}
    assert all(finite_positive(t) for ts in data["seconds"].values() for t in ts)


def test_compile_scale_references_quick(tmp_path):
    _, data = run_script("compile_scale", tmp_path, "--references")
    assert set(data["seconds"]) == {
        "adamw",
        "adamw + l1_prox",
        "adamw + sparsity_target",
        "adamw + sparsity_target(latent=False)",
        "adamw + latent_copy (reference)",
    }
    assert all(finite_positive(t) for ts in data["seconds"].values() for t in ts)


def test_latent_copy_reference_matches_its_formula():
    """compile_scale's reference: z <- z + u on each kernel, the update lands the params on
    where(|z| > t, z, 0); biases pass through. A NumPy transcription."""
    import jax.numpy as jnp
    import numpy as np

    tx = load_benchmark("compile_scale").latent_copy(threshold=0.5)
    rng = np.random.default_rng(0)
    params = {"b": jnp.asarray(rng.normal(size=3)), "k": jnp.asarray(rng.normal(size=(3, 4)))}
    state = tx.init(params)
    z = np.asarray(params["k"], np.float64)
    for _ in range(3):
        u = {"b": jnp.asarray(rng.normal(size=3)), "k": jnp.asarray(rng.normal(size=(3, 4)))}
        out, state = tx.update(u, state, params)
        z = z + np.asarray(u["k"])
        want = np.where(np.abs(z) > 0.5, z, 0.0) - np.asarray(params["k"])
        np.testing.assert_allclose(out["k"], want, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(out["b"], u["b"])
        np.testing.assert_allclose(state[0], z, rtol=1e-6, atol=1e-6)
        params = {"b": params["b"] + out["b"], "k": params["k"] + out["k"]}
        assert np.all((np.asarray(params["k"]) == 0) | (np.abs(z) > 0.5 - 1e-6))


def test_suggest_strength_quick(tmp_path):
    stdout, data = run_script("suggest_strength", tmp_path)
    assert_header(stdout, "suggest_strength")
    runs = data["runs"]
    assert {(r["model"], r["transform"]) for r in runs} == {
        ("digits", "adam + l1_prox"),
        ("digits", "proximal_adam"),
    }
    for r in runs:
        assert finite_positive(r["strength"]) and 0 < r["zeros"] < 1 and r["quality"] > 10
    assert "reached − wanted (pts)" in stdout


class Parsed(Exception):
    """Raised in place of a benchmark's header: its command line parsed."""


def test_gpu_script_names_only_scripts_and_flags_that_exist(tmp_path, monkeypatch):
    """benchmarks/gpu.sh runs only on a GPU machine; here: its syntax, and every benchmark
    and command line it runs parses (so it does not rot before a GPU is available)."""
    script = BENCH / "gpu.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    lines = script.read_text().splitlines()
    calls = [line.split()[1:] for line in lines if line.strip().startswith("run ")]
    assert {c[0] for c in calls} == {"step_overhead", "memory", "target_sparsity"}

    def parsed(*args, **kwargs):
        raise Parsed

    for name, *args in calls:
        module = load_benchmark(name)
        monkeypatch.setattr(sys.modules["_common"], "header", parsed)
        if hasattr(module, "header"):
            monkeypatch.setattr(module, "header", parsed)
        with pytest.raises(Parsed):
            module.main([*args, "--json", str(tmp_path / f"{name}.json")])


def test_compaction_quick(tmp_path):
    # The MLP half is examples/compact_mlp.py's run, smoke-tested in examples_test.py.
    stdout, out = run_script("compaction", tmp_path, "--models", "transformer", timeout=300)
    assert_header(stdout, "compaction")
    assert out["mlp"] == [] and len(out["transformer"]) == 1
    for r in out["transformer"]:
        assert r["compacted"]["heads"] == 2 and r["compacted"]["units"] == [64]
        assert r["max_diff"] <= 1e-5 * r["scale"]
        assert abs(r["compacted"]["bits_per_byte"] - r["structured"]["bits_per_byte"]) < 1e-4
        assert r["params"][1] < r["params"][0]


def test_structures_quick(tmp_path):
    # The two structures the export needs (coupled units: the compaction smoke run's model).
    stdout, out = run_script("structures", tmp_path, "--structures", "elements", "2:4")
    assert_header(stdout, "structures")
    runs = {(r["structure"], r["arm"]): r for r in out["runs"]}
    assert runs[("2:4", "gradual")]["n_of_m"] == 1.0 == runs[("2:4", "one-shot")]["n_of_m"]
    for arm in ("gradual", "one-shot"):  # equal sparsity in both arms
        for s in ("elements", "2:4"):
            assert abs(runs[(s, arm)]["zeros"] - {"elements": 0.9, "2:4": 0.5}[s]) < 0.01
    assert "| 2:4 | 50.0% |" in stdout
    for fmt in ("elements", "2:4"):  # BCOO of 90% zeros, packed 2:4: smaller, same product
        e = out["export"][fmt]
        assert e["stored_bytes"] < e["dense_bytes"] and e["max_rel_err"] < 1e-5


# ----------------------------------------------------------------------------- bad input
# In-process: each script's main(argv) must refuse a bad value at parse time (argparse's
# exit 2) with the option named, before any work starts. Milliseconds each.


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (its folder first on sys.path, as when run)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    module_name = f"_bench_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


BAD_INPUT = [
    ("compile_scale", ["--reps", "0"], "--reps"),
    ("compile_scale", ["--leaves", "0"], "--leaves"),
    ("compile_scale", ["--leaves", "-4"], "--leaves"),
    ("compile_scale", ["--dim", "0"], "--dim"),
    ("step_overhead", ["--reps", "0"], "--reps"),
    ("step_overhead", ["--diagnose", "--reps", "0"], "--reps"),
    ("step_overhead", ["--rows", "l1_prox,nope"], "--rows"),
    ("step_overhead", ["--layouts", "single,both"], "--layouts"),
    ("step_overhead", ["--layouts", ""], "--layouts"),
    ("step_overhead", ["--target-every", "1,x"], "--target-every"),
    ("step_overhead", ["--target-every", "0"], "--target-every"),
    ("step_overhead", ["--target-every-sample", "1;0"], "--target-every-sample"),
    ("step_overhead", ["--single-dim", "0"], "--single-dim"),
    ("memory", ["--params", "0"], "--params"),
    ("memory", ["--leaves", "0"], "--leaves"),
    ("memory", ["--params", "10", "--leaves", "100"], "--params"),
    ("memory", ["--dtypes", "float99"], "--dtypes"),
    ("memory", ["--dtypes", "float32,int32"], "--dtypes"),
    ("memory", ["--layouts", "single,mult"], "--layouts"),
    ("lasso_solvers", ["--reps", "0"], "--reps"),
    ("lasso_solvers", ["--chunk", "0"], "--chunk"),
    ("lasso_solvers", ["--max-iter", "0"], "--max-iter"),
    ("lasso_solvers", ["--k", "200", "--p", "100"], "--k"),
    ("frontier", ["--lambdas", "0.1,,x"], "--lambdas"),
    ("frontier", ["--lambdas-proximal-adam", "-1"], "--lambdas-proximal-adam"),
    ("frontier", ["--seeds", "0"], "--seeds"),
    ("frontier", ["--steps", "0"], "--steps"),
    ("frontier", ["--hidden", "32,0"], "--hidden"),
    ("frontier", ["--test-size", "1.5"], "--test-size"),
    ("compaction", ["--seeds", "0"], "--seeds"),
    ("compaction", ["--mlp-target", "1.5"], "--mlp-target"),
    ("compaction", ["--lm-target", "0"], "--lm-target"),
    ("structures", ["--seeds", "0"], "--seeds"),
    ("structures", ["--steps", "1"], "--steps"),
    ("suggest_strength", ["--seeds", "0"], "--seeds"),
    ("suggest_strength", ["--targets", "0.5", "1.5"], "--targets"),
    ("suggest_strength", ["--steps", "0"], "--steps"),
    ("suggest_strength", ["--hidden", "32,,"], "--hidden"),
    ("target_sparsity", ["--targets", "1.5"], "--targets"),
    ("target_sparsity", ["--seeds", "0"], "--seeds"),
    ("target_sparsity", ["--update-every", "0"], "--update-every"),
    ("target_sparsity", ["--steps", "0"], "--steps"),
    ("torch_loop", ["--rounds", "0"], "--rounds"),
    ("torch_loop", ["--block", "-1"], "--block"),
    ("transformer_lm", ["--targets", "1.5"], "--targets"),
    ("transformer_lm", ["--seeds", "0"], "--seeds"),
    ("transformer_lm", ["--steps", "0"], "--steps"),
    ("transformer_lm", ["--ramp-frac", "0"], "--ramp-frac"),
]


@pytest.mark.parametrize(("name", "argv", "option"), BAD_INPUT)
def test_bad_input_is_refused_naming_the_option(name, argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark(name).main(argv)
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_json_path_is_checked_at_startup(name, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark(name).main(["--json", str(blocker / "out.json")])
    assert exit_info.value.code == 2
    assert "--json" in capsys.readouterr().err


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_gives_every_option_a_purpose_and_default(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark(name).main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", out.split("options:", 1)[1])[1:]
    assert options, out
    for block in options:
        if block.startswith("-h"):
            continue
        flat = " ".join(block.split())
        assert "default:" in flat, block
        assert len(flat.split(" (default")[0].split()) > 2, block  # more than the metavar


def test_step_overhead_help_lists_the_row_names(capsys):
    with pytest.raises(SystemExit):
        load_benchmark("step_overhead").main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for row in ("l1_prox(schedule)", "sparsity_target(phase)", "group_l1_prox(blocks)"):
        assert row in help_text


def test_quick_keeps_options_the_user_gave():
    lm = load_benchmark("transformer_lm")
    assert lm.parse_args(["--quick"]).methods == ["dense", "gmp", "target"]
    assert lm.parse_args(["--quick"]).targets == [0.5]
    assert lm.parse_args(["--quick", "--targets", "0.8"]).targets == [0.8]
    assert lm.parse_args(["--quick", "--methods=gmp"]).methods == ["gmp"]
    assert lm.parse_args(["--quick", "--meth", "gmp"]).methods == ["gmp"]
    assert lm.parse_args([]).methods == ["dense", "gmp", "target", "hard"]
    ts = load_benchmark("target_sparsity")
    assert ts.parse_args(["--quick", "--seeds", "2"]).seeds == 2
    assert ts.parse_args(["--quick"]).targets == [0.9]
    cfg = load_benchmark("structures").parse_args(["--quick", "--hidden", "48"])
    assert (cfg.hidden, cfg.seeds, cfg.export) == (48, 1, True)
    cfg = load_benchmark("compaction").parse_args(["--quick", "--mlp-steps", "7"])
    assert (cfg.mlp_steps, cfg.reps) == (7, 5)
    so = load_benchmark("step_overhead").parser()
    args = so.parse(["--quick", "--reps", "5", "--layouts", "single"])
    assert (args.reps, args.layouts, args.leaves) == (5, ["single"], 3)


def test_documented_step_overhead_lists_parse():
    p = load_benchmark("step_overhead").parser()
    args = p.parse(["--target-every", "", "--target-every-plain", "50,100"])
    assert (args.target_every, args.target_every_plain) == ([], [50, 100])
    assert p.parse([]).target_every_sample == ([1, 10], [1])
    args = p.parse(["--rows", "group_l1_prox,group_l1_prox(workspace)"])
    assert args.rows == ["group_l1_prox", "group_l1_prox(workspace)"]
    assert p.parse([]).rows == [] and p.parse([]).layouts == ["single", "multi"]
