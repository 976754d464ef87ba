"""Docs never drift from the code.

1. Every name in ``optax_l1.__all__`` is documented in ``docs/api.rst`` (and nothing else is).
2. Every docstring example (``>>>``) in the package runs and prints what it says (doctest,
   in-process, so a plain ``pytest`` runs them; no ``--doctest-modules`` needed).
3. Every guide snippet (``docs/guides/snippets/*.py``, shown in the guides through
   ``literalinclude``) runs, with its own assertions. A snippet that uses an ``optax_l1`` name
   that does not exist fails; one that needs a missing optional package (flax, equinox,
   scikit-learn) is skipped with the package named.
4. When Sphinx is installed, the docs build with ``-W`` (warnings are errors); skipped otherwise.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib
import importlib.util
import io
import os
import pkgutil
import re
import runpy
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import optax_l1

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "guides" / "snippets"

# Snippets that must run in a fresh interpreter, with these extra environment variables.
SUBPROCESS_ENV = {
    "sharding.py": {
        # 8 CPU devices; on a busy 2-core machine a collective can wait longer than XLA's
        # default 40 s before it aborts the process, so allow more (less than the timeout below).
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8"
        " --xla_cpu_collective_call_terminate_timeout_seconds=150",
        "JAX_PLATFORMS": "cpu",
    },
}
# Packages a snippet may import that are not runtime dependencies of optax_l1.
OPTIONAL_PACKAGES = ("flax", "equinox", "sklearn")

AUTODOC = re.compile(r"^\.\. auto(?:function|class|data)::\s+(?:optax_l1\.)?(\w+)\s*$", re.M)
INCLUDE = re.compile(
    r"^\.\. literalinclude:: (\S+)\n((?:[ \t]+:[\w-]+:.*\n)*)", re.M
)  # a literalinclude directive and its options


pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="docs/ is not next to tests/")


# ----------------------------------------------------------------------------- API page


def test_api_page_documents_every_public_name():
    documented = AUTODOC.findall((DOCS / "api.rst").read_text())
    public = set(optax_l1.__all__)
    missing = sorted(public - set(documented))
    assert not missing, f"add to docs/api.rst (autofunction/autoclass): {missing}"
    unknown = sorted(set(documented) - public)
    assert not unknown, f"docs/api.rst documents names not in optax_l1.__all__: {unknown}"
    repeated = sorted({n for n in documented if documented.count(n) > 1})
    assert not repeated, f"documented twice in docs/api.rst: {repeated}"


def test_every_public_function_has_an_example():
    no_example = [
        name
        for name in optax_l1.__all__
        if callable(obj := getattr(optax_l1, name))
        and not isinstance(obj, type)
        and ">>>" not in (obj.__doc__ or "")
    ]
    assert not no_example, f"public functions without an `Examples:` doctest: {no_example}"


# ----------------------------------------------------------------------------- doctests


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for info in pkgutil.iter_modules(optax_l1.__path__, "optax_l1."):
        module = importlib.import_module(info.name)
        tests.extend(t for t in finder.find(module, module.__name__) if t.examples)
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()


def test_doctests_were_found():
    assert len(DOCTESTS) >= len([n for n in optax_l1.__all__ if not n[0].isupper()])


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example(test: doctest.DocTest):
    # ELLIPSIS, as pytest's --doctest-modules uses by default.
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = io.StringIO()
    result = runner.run(test, out=out.write, clear_globs=True)
    assert result.failed == 0, out.getvalue()


# ----------------------------------------------------------------------------- guides


SNIPPET_FILES = sorted(SNIPPETS.glob("*.py")) if SNIPPETS.is_dir() else []


def _imported_top_level(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_guides_include_only_existing_snippets_and_markers():
    used = set()
    for rst in sorted(DOCS.rglob("*.rst")):
        if "_build" in rst.parts:
            continue
        for target, options in INCLUDE.findall(rst.read_text()):
            path = (rst.parent / target).resolve()
            assert path.is_file(), f"{rst.relative_to(ROOT)} includes a missing file {target}"
            used.add(path)
            text = path.read_text()
            for marker in re.findall(r":(?:start-after|end-before): (.+)", options):
                assert marker.strip() in text, f"{target}: no marker {marker.strip()!r}"
    unused = sorted(p.name for p in SNIPPET_FILES if p.resolve() not in used)
    assert not unused, f"snippets not shown in any guide: {unused}"


@pytest.mark.parametrize("path", SNIPPET_FILES, ids=[p.name for p in SNIPPET_FILES])
def test_guide_snippet_runs(path: Path):
    for package in sorted(_imported_top_level(path) & set(OPTIONAL_PACKAGES)):
        pytest.importorskip(package, reason=f"{path.name} needs the optional package {package}")
    extra_env = SUBPROCESS_ENV.get(path.name)
    if extra_env is None:
        # Guide code is user code: it broadcasts biases, which conftest's strict
        # rank-promotion mode (meant for the library) would reject.
        with jax.numpy_rank_promotion("allow"):
            runpy.run_path(str(path), run_name="__main__")
        return
    env = {**os.environ, **extra_env}
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout}\n{proc.stderr}"


# ----------------------------------------------------------------------------- build


def test_sphinx_build_has_no_warnings(tmp_path: Path):
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("sphinx is not installed (pip install 'optax_l1[docs]')")
    env = dict(os.environ)
    env.pop("OPTAX_L1_DOCS_INTERSPHINX", None)  # offline: no inventories to fetch
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "html" / "api.html").is_file()


def test_readme_quick_start_runs_and_finds_the_three_features():
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "import" in b]
    assert blocks, "README has no runnable quick start"
    namespace: dict = {}
    with jax.numpy_rank_promotion("allow"), contextlib.redirect_stdout(io.StringIO()):
        exec(blocks[0], namespace)
    w = np.asarray(namespace["params"]["w"])
    assert np.all(w[3:] == 0.0) and np.all(w[:3] != 0.0)
