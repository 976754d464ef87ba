"""Sphinx configuration for optax_l1.

Build (warnings are errors)::

    sphinx-build -W -b html docs docs/_build/html

Intersphinx links to the jax, optax, flax and Python docs need their ``objects.inv``
inventories, fetched over the network at build time. An offline build cannot fetch them and
Sphinx would warn (an error under ``-W``), so intersphinx is enabled only when
``OPTAX_L1_DOCS_INTERSPHINX=1`` is set (do that for the published build). Without it,
references such as :func:`optax.masked` render as plain code: Python-domain references
that do not resolve are not warnings unless ``nitpicky`` is on.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path

from sphinx.ext import autosummary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document the source tree next to these docs

import optax_l1  # noqa: E402

project = "optax_l1"
author = "optax_l1 authors"
copyright = "optax_l1 authors"
release = optax_l1.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # Ships MathJax 3 with the build (_static/mathjax/) and points mathjax_path at it, so math
    # renders without internet (sphinx.ext.mathjax alone loads it from a CDN).
    "sphinx-mathjax-offline",
]

INTERSPHINX = os.environ.get("OPTAX_L1_DOCS_INTERSPHINX", "") == "1"
if INTERSPHINX:
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "jax": ("https://docs.jax.dev/en/latest", None),
        "optax": ("https://optax.readthedocs.io/en/latest", None),
        "flax": ("https://flax.readthedocs.io/en/latest", None),
    }
    intersphinx_timeout = 10

# autodoc / autosummary / napoleon (Google style, as the docstrings are written).
autosummary_generate = False  # api.rst documents each name itself; tables link to them
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Show the annotations as written (`optax.ScalarOrSchedule`, `jax.Array`), not expanded into
# long unions or spelled by their defining module (`jax.jaxlib._jax.Array`). Aliases private to
# optax_l1 (`_operators.Axis`, `_select.Method`) are not listed: they expand to what they stand
# for (`int | Sequence[int]`, a `Literal`), since a reader cannot import them.
autodoc_type_aliases = {
    name: name
    for name in (
        "optax.ScalarOrSchedule",
        "optax.GradientTransformation",
        "optax.GradientTransformationExtraArgs",
        "optax.OptState",
        "jax.Array",
        "jax.typing.ArrayLike",
    )
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Plain ".rst" sources; guides include their code from guides/snippets/*.py.
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "guides/snippets", "Thumbs.db", ".DS_Store"]
default_role = "code"
pygments_style = "sphinx"

html_theme = "furo" if importlib.util.find_spec("furo") is not None else "alabaster"
html_title = f"optax_l1 {release}"
html_static_path: list[str] = []


# ----------------------------------------------------------------------------- API page hooks

# Spellings that Sphinx produces but a reader cannot use, and the public name for each:
# `TypeAliasForwardRef('optax.GradientTransformation') | None` (Sphinx's repr of an alias inside
# a union or a generic) and the defining module of `jax.Array` (napoleon's attribute types).
# tests/docs_test.py checks that the built API page has none of these.
PUBLIC_SPELLING = [
    (re.compile(r"TypeAliasForwardRef\('([^']*)'\)"), r"\1"),
    (re.compile(r"\b(?:jax\.)?jaxlib\.[\w.]*?\.(?:Array|ArrayImpl)\b"), "jax.Array"),
]


def public_spelling(text: str | None) -> str | None:
    if text is None:
        return None
    for pattern, replacement in PUBLIC_SPELLING:
        text = pattern.sub(replacement, text)
    return text


def _process_signature(app, what, name, obj, options, signature, return_annotation):
    return public_spelling(signature), public_spelling(return_annotation)


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = [public_spelling(line) for line in lines]


def summary_signature(obj: object, max_chars: int = 50) -> str:
    """The signature shown in an autosummary table: every required parameter, in order.

    Optional parameters are in brackets, as in ``group_l1_penalty(params[, strength], *, axis[,
    mask])``; when the line would pass ``max_chars``, optional names (never required ones) give
    way to ``...``. Sphinx's own abbreviation drops required keyword-only parameters that follow
    an optional one (``group_l1_penalty(params[, strength, mask])``: no ``axis``).
    """
    params = list(inspect.signature(obj).parameters.values())
    kind = inspect.Parameter
    positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    keyword = [p for p in params if p.kind is kind.KEYWORD_ONLY]
    star = [f"*{p.name}" for p in params if p.kind is kind.VAR_POSITIONAL]
    starstar = [f"**{p.name}" for p in params if p.kind is kind.VAR_KEYWORD]
    if keyword and not star:
        star = ["*"]

    def required(group):
        return [p.name for p in group if p.default is p.empty]

    def optional(group):
        return [p.name for p in group if p.default is not p.empty]

    def render(n_pos: int, n_kw: int) -> str:
        out = ""
        for section, names, extra in (
            (required(positional), optional(positional)[:n_pos], optional(positional)),
            (star + required(keyword), optional(keyword)[:n_kw], optional(keyword)),
        ):
            if len(names) < len(extra):
                names = [*names, "..."]
            for name in section:
                out += f", {name}" if out else name
            if names:
                out += f"[, {', '.join(names)}]" if out else f"[{', '.join(names)}]"
        for name in starstar:
            out += f", {name}" if out else name
        return f"({out})"

    n_pos, n_kw = len(optional(positional)), len(optional(keyword))
    sig = render(n_pos, n_kw)
    while len(sig) > max_chars and (n_pos or n_kw):
        if n_kw:
            n_kw -= 1
        else:
            n_pos -= 1
        sig = render(n_pos, n_kw)
    return sig


class Autosummary(autosummary.Autosummary):
    """``autosummary`` whose table signatures keep every required parameter."""

    def get_items(self, names):
        items = []
        for display_name, sig, summary, real_name in super().get_items(names):
            if sig:  # None with :nosignatures:, "" for objects without a signature
                obj = autosummary.import_by_name(real_name)[1]
                sig = summary_signature(obj, max_chars=max(10, 60 - len(display_name)))
            items.append((display_name, sig, summary, real_name))
        return items


def setup(app):
    app.connect("autodoc-process-signature", _process_signature)
    # After napoleon (priority 500), which writes the attribute types.
    app.connect("autodoc-process-docstring", _process_docstring, priority=900)
    app.add_directive("autosummary", Autosummary, override=True)
