"""Sphinx configuration for databroker_lite."""
from __future__ import annotations

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
# The examples run at build time in Jupyter kernels (jupyter-sphinx), which inherit this
# environment: they import this source tree, and the tutorial data and catalog configs go
# under docs/_build/, not into your own catalogs (unless these are set already).
# (docs/ too: its doc_checks module checks the examples' values in hidden cells)
_PATH = (ROOT, os.path.join(ROOT, "docs"), os.environ.get("PYTHONPATH"))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in _PATH if p)
_BUILD_DATA = os.path.join(ROOT, "docs", "_build", "example_data")
os.environ.setdefault("DATABROKER_LITE_CATALOG_PATH", os.path.join(_BUILD_DATA, "catalogs"))
os.environ.setdefault("DATABROKER_LITE_DATA_DIR", os.path.join(_BUILD_DATA, "data"))
# plots go into the page as images, whatever backend the environment asks for
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

import databroker_lite  # noqa: E402

project = "databroker_lite"
author = "databroker_lite developers"
copyright = "databroker_lite developers"
version = release = databroker_lite.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "jupyter_sphinx",  # runs the examples at build time: real output and plots
]
jupyter_execute_default_kernel = "python3"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
intersphinx_mapping = {}  # offline builds: no inventories are fetched
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"page_width": "1100px", "body_max_width": "none"}
# The package's docstrings use a few numpydoc forms napoleon renders loosely.
suppress_warnings = ["ref.python"]
nitpicky = False
