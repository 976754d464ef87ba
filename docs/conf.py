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
import os
import sys
from pathlib import Path

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
# Show the annotations as written (`optax.ScalarOrSchedule`), not expanded into long unions.
autodoc_type_aliases = {
    name: name
    for name in (
        "optax.ScalarOrSchedule",
        "optax.GradientTransformation",
        "optax.GradientTransformationExtraArgs",
        "optax.OptState",
        "jax.typing.ArrayLike",
        "_operators.Axis",
        "AccumulatorGetter",
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
