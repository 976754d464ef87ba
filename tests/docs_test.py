"""Docs never drift from the code.

1. Every name in ``optax_l1.__all__`` is documented in ``docs/api.rst`` (and nothing else is).
2. Every docstring example (``>>>``) in the package runs and prints what it says (doctest,
   in-process, so a plain ``pytest`` runs them; no ``--doctest-modules`` needed).
3. Every guide snippet (``docs/guides/snippets/*.py``, shown in the guides through
   ``literalinclude``) runs, with its own assertions. A snippet that uses an ``optax_l1`` name
   that does not exist fails; one that needs a missing optional package (flax, equinox,
   scikit-learn) is skipped with the package named.
4. When Sphinx is installed, the docs build with ``-W`` (warnings are errors); skipped otherwise.
   That one build (shared by the xdist workers) is then checked for what a reader sees:
   math renders offline (a local MathJax, no CDN); the API page names no private module or
   type; its summary tables show every required parameter; and the code shown in the guides
   (snippet regions and inline blocks) defines every name it uses, carries no lint comments
   and fits the page (88 characters a line).
5. Install lines in the docs work from a checkout (``pip install .``): the package is not on
   PyPI.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import doctest
import html
import importlib
import importlib.util
import inspect
import io
import json
import os
import pickle
import pkgutil
import re
import runpy
import subprocess
import symtable
import sys
from collections.abc import Iterator
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


@dataclasses.dataclass(frozen=True)
class DocsBuild:
    returncode: int
    output: str
    html: Path
    doctrees: Path


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    import fcntl  # only called where it exists (see docs_build)

    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def docs_build(tmp_path_factory: pytest.TempPathFactory) -> DocsBuild:
    """The docs built once with ``-W``; under xdist the workers share one build."""
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip('sphinx is not installed (pip install ".[docs]")')
    root = tmp_path_factory.getbasetemp()
    shared = os.environ.get("PYTEST_XDIST_WORKER") and importlib.util.find_spec("fcntl")
    if shared:
        root = root.parent  # this run's base directory, common to its workers
    out = root / "sphinx_build"
    lock = _exclusive(root / "sphinx_build.lock") if shared else contextlib.nullcontext()
    with lock:
        result = out / "result.json"
        if not result.is_file():
            env = dict(os.environ)
            env.pop("OPTAX_L1_DOCS_INTERSPHINX", None)  # offline: no inventories to fetch
            cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
            cmd += ["-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
            )
            out.mkdir(parents=True, exist_ok=True)
            output = f"{proc.stdout}\n{proc.stderr}"
            result.write_text(json.dumps({"returncode": proc.returncode, "output": output}))
        done = json.loads(result.read_text())
    return DocsBuild(done["returncode"], done["output"], out / "html", out / "doctrees")


def _built(build: DocsBuild) -> DocsBuild:
    if build.returncode != 0:
        pytest.fail(f"sphinx-build -W failed:\n{build.output}")
    return build


def test_sphinx_build_has_no_warnings(docs_build: DocsBuild):
    assert docs_build.returncode == 0, f"sphinx-build -W failed:\n{docs_build.output}"
    assert (docs_build.html / "api.html").is_file()


def _text(markup: str) -> str:
    """What a reader sees of some HTML: no tags, entities decoded, no-break spaces plain."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup)).replace("\xa0", " ")


def test_math_renders_offline(docs_build: DocsBuild):
    build = _built(docs_build)
    pages = sorted(build.html.rglob("*.html"))
    with_math = [page for page in pages if 'class="math' in page.read_text()]
    names = {page.relative_to(build.html).as_posix() for page in with_math}
    assert {"index.html", "api.html"} <= names, f"math not found where expected: {names}"
    for page in with_math:
        source = page.read_text()
        scripts = re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", source)
        where = page.relative_to(build.html)
        remote = [s for s in scripts if re.match(r"(?i)(https?:)?//", s)]
        assert not remote, f"{where} loads scripts over the network: {remote}"
        assert "cdn." not in source.lower(), f"{where} names a CDN"
        mathjax = [s for s in scripts if "mathjax" in s.lower()]
        assert mathjax, f"{where} has math but loads no MathJax script: {scripts}"
        for src in mathjax:
            local = (page.parent / src.split("?")[0]).resolve()
            assert local.is_file(), f"{where} loads {src}, which is not in the build"
            assert build.html.resolve() in local.parents


# Private modules of the package, and the spellings of jax/Sphinx internals, that a reader
# cannot import or look up.
PRIVATE_MODULES = sorted(
    info.name for info in pkgutil.iter_modules(optax_l1.__path__) if info.name[0] == "_"
)
PRIVATE = re.compile(
    r"(?<!\w)(?:" + "|".join(map(re.escape, PRIVATE_MODULES)) + r")\."
    r"|TypeAliasForwardRef|jaxlib|_jax\.Array"
)


def test_api_page_shows_no_private_names(docs_build: DocsBuild):
    assert {"_operators", "_inner", "_select", "_target"} <= set(PRIVATE_MODULES)
    text = _text((_built(docs_build).html / "api.html").read_text())
    found = sorted({m.group(0) for m in PRIVATE.finditer(text)})
    contexts = [text[max(0, m.start() - 60) : m.end() + 20] for m in PRIVATE.finditer(text)]
    assert not found, f"api.html shows private names {found}, e.g.: {contexts[:3]}"
    assert "docs_test" not in text, "a note for maintainers is rendered on the API page"


def _summary_rows(page: str) -> list[tuple[str, str]]:
    """``(name, shown parameters)`` for every row of the page's autosummary tables."""
    rows = []
    for table in re.findall(r'<table class="autosummary.*?</table>', page, re.S):
        for cell in re.findall(r"<tr[^>]*>\s*<td>(.*?)</td>", table, re.S):
            m = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", _text(cell), re.S)
            assert m, f"unexpected autosummary entry: {_text(cell)!r}"
            rows.append((m.group(1), m.group(2)))
    return rows


def summary_signature_errors(obj: object, shown: str) -> list[str]:
    """How the parameters shown in a summary table, ``a, b[, c], *, d[, ...]``, differ from
    ``inspect.signature(obj)``: every required parameter (and ``*`` before keyword-only
    ones) must be shown in order, outside brackets; bracketed names must be optional ones,
    all of them unless ``...`` stands for the rest."""
    tokens, depth, current = [], 0, ""
    for char in shown + ",":
        if char in "[],":
            if current.strip():
                tokens.append((current.strip(), depth > 0))
            current = ""
            depth += (char == "[") - (char == "]")
        else:
            current += char
    params = inspect.signature(obj).parameters.values()
    kind = inspect.Parameter
    required = []
    for p in params:
        if p.kind is kind.VAR_POSITIONAL:
            required.append(f"*{p.name}")
        elif p.kind is kind.VAR_KEYWORD:
            required.append(f"**{p.name}")
        elif p.kind is kind.KEYWORD_ONLY and not any(n.startswith("*") for n in required):
            required.append("*")
        if p.default is p.empty and p.kind not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD):
            required.append(p.name)
    optional = {p.name for p in params if p.default is not p.empty}
    errors = []
    if [name for name, opt in tokens if not opt] != required:
        errors.append(f"required {required}, shown {[n for n, o in tokens if not o]}")
    bracketed = [name for name, opt in tokens if opt]
    if not set(bracketed) <= optional | {"..."}:
        errors.append(f"bracketed {sorted(set(bracketed) - optional)} are not optional")
    if "..." not in bracketed and set(bracketed) != optional:
        errors.append(f"optional {sorted(optional - set(bracketed))} missing, no '...'")
    return errors


def test_summary_signature_check_catches_a_missing_required_parameter():
    # What Sphinx's own autosummary once showed for group_l1_penalty: no required `axis`
    # (`axis` is optional now; sparsity_target's `ramp_steps` is the same case).
    assert summary_signature_errors(optax_l1.sparsity_target, "target[, ...]")
    assert not summary_signature_errors(optax_l1.sparsity_target, "target, *, ramp_steps[, ...]")
    assert not summary_signature_errors(optax_l1.l1_prox, "strength, *, learning_rate[, ...]")


def test_summary_tables_show_the_real_signatures(docs_build: DocsBuild):
    rows = _summary_rows((_built(docs_build).html / "api.html").read_text())
    assert {"group_l1_penalty", "l1_prox", "L1ProxState"} <= {name for name, _ in rows}
    # Which names the tables list is test_api_page_documents_every_public_name's business.
    public = [(name, shown) for name, shown in rows if name in optax_l1.__all__]
    wrong = {
        f"{name}({shown})": errors
        for name, shown in public
        if (errors := summary_signature_errors(getattr(optax_l1, name), shown))
    }
    assert not wrong, f"summary tables in api.html disagree with the signatures: {wrong}"


# ----------------------------------------------------------------------------- shown code

SHOWN_LINE_MAX = 88  # longer lines are clipped (scrolled) in the rendered pages
LINT_COMMENT = re.compile(r"#.*\b(?:noqa\b|type:\s*ignore|pyright:|fmt:|ruff:)")
PYTHON = {"python", "python3", "py"}
LANGUAGES = PYTHON | {"bash", "console", "text", "none"}
MODULE_NAMES = {"__name__", "__file__", "__doc__"}


def undefined_names(code: str) -> set[str]:
    """Names that ``code``, run as a module, reads without ever binding at module level.

    A stand-in for pyflakes' undefined-name check, from the symbol tables: the names read at
    module level or as globals inside functions and classes, less those the module assigns,
    imports, defines or declares global and assigns in a function, and the builtins.
    """
    top = symtable.symtable(code, "<shown code>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    read = set()

    def visit(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            if symbol.is_declared_global() and symbol.is_assigned():
                bound.add(symbol.get_name())
            if symbol.is_referenced() and (table.get_type() == "module" or symbol.is_global()):
                read.add(symbol.get_name())
        for child in table.get_children():
            visit(child)

    visit(top)
    return read - bound - set(dir(builtins)) - MODULE_NAMES


def test_undefined_name_check_catches_what_was_reported():
    assert undefined_names("import jax\nprint(jax.numpy.zeros(3) + zero)\n") == {"zero"}
    code = """
def train(tx):
    return data_loss(tx) + [i for i in range(3) if i < n][0]


class Model(Base):
    size = 3
    twice = size * 2

    def __call__(self, x):
        return x * size


with open(__file__) as handle:
    first = handle.readline()
try:
    pass
except ValueError as error:
    print(error, first, train, Model)
"""
    assert undefined_names(code) == {"data_loss", "n", "Base", "size"}


@dataclasses.dataclass(frozen=True)
class ShownBlock:
    page: str  # the document, "guides/masks"
    where: str  # for messages: the included file, or the line of the .rst
    program: str  # blocks of one program share it: a page's regions of one snippet file
    language: str | None
    code: str


def _shown_blocks(build: DocsBuild) -> list[ShownBlock]:
    """Every code block of the built pages (not docstrings) as the reader sees it."""
    from docutils import nodes

    blocks = []
    for path in sorted(build.doctrees.rglob("*.doctree")):
        page = path.relative_to(build.doctrees).with_suffix("").as_posix()
        doctree = pickle.loads(path.read_bytes())
        for node in doctree.findall(nodes.literal_block):
            if "docstring of" in (node.source or ""):
                continue  # autodoc: checked by the doctests, not shown code of the guides
            included = node.get("source")
            if included:
                where = Path(included).resolve().relative_to(ROOT).as_posix()
                program = f"{page}: {where}"
            else:
                where = f"{Path(node.source or page).name}, line {node.line}"
                program = f"{page}: {where}"
            blocks.append(ShownBlock(page, where, program, node.get("language"), node.astext()))
    return blocks


def test_shown_code_blocks_were_found(docs_build: DocsBuild):
    blocks = _shown_blocks(_built(docs_build))
    assert {b.page for b in blocks} >= {"index", "guides/masks", "guides/migrating"}
    no_language = [f"{b.page} ({b.where})" for b in blocks if b.language not in LANGUAGES]
    assert not no_language, f"state the language (.. code-block:: python): {no_language}"


def test_shown_python_defines_every_name_it_uses(docs_build: DocsBuild):
    programs: dict[str, list[str]] = {}
    for block in _shown_blocks(_built(docs_build)):
        if block.language in PYTHON:
            programs.setdefault(block.program, []).append(block.code)
    assert len(programs) >= 10
    problems = {}
    for program, codes in programs.items():
        code = "\n\n".join(codes)
        try:
            ast.parse(code)
        except SyntaxError as error:
            problems[program] = f"does not parse: {error}"
            continue
        if names := undefined_names(code):
            problems[program] = f"uses names it never defines or imports: {sorted(names)}"
    assert not problems, (
        "code shown in the docs must run as shown (the regions of one snippet on a page, "
        f"read in order, or an inline block alone): {problems}"
    )


def test_shown_code_has_no_lint_comments(docs_build: DocsBuild):
    shown = [
        f"{b.page} ({b.where}): {line.strip()}"
        for b in _shown_blocks(_built(docs_build))
        for line in b.code.splitlines()
        if LINT_COMMENT.search(line)
    ]
    assert not shown, f"lint comments in the rendered docs (keep them out of view): {shown}"


def test_shown_code_fits_the_page(docs_build: DocsBuild):
    long = [
        f"{b.page} ({b.where}): {len(line)} chars: {line.strip()[:60]}"
        for b in _shown_blocks(_built(docs_build))
        for line in b.code.splitlines()
        if len(line) > SHOWN_LINE_MAX
    ]
    assert not long, f"shown code lines over {SHOWN_LINE_MAX} characters: {long}"


def test_install_lines_work_from_a_checkout():
    # optax_l1 is not on PyPI: it installs from a checkout (`pip install .`, `".[docs]"`).
    by_name = re.compile(r"pip install\b[^\n#]*?(?<![\w./-])[\"']?optax_l1\b")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(DOCS.rglob("*"))
        if path.suffix in {".rst", ".py"} and "_build" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if by_name.search(line)
    ]
    assert not found, f"install lines that ask PyPI for optax_l1: {found}"


def test_readme_quick_start_runs_and_finds_the_three_features():
    text = (ROOT / "README.md").read_text()
    # The quick start trains `params` (the first block, imports and all, only builds optimizers).
    found = re.findall(r"```python\n(.*?)```", text, re.S)
    blocks = [b for b in found if "import" in b and "params" in b]
    assert blocks, "README has no runnable quick start"
    namespace: dict = {}
    with jax.numpy_rank_promotion("allow"), contextlib.redirect_stdout(io.StringIO()):
        exec(blocks[0], namespace)
    w = np.asarray(namespace["params"]["w"])
    assert np.all(w[3:] == 0.0) and np.all(w[:3] != 0.0)
