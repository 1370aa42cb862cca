"""Sphinx configuration for databroker_lite."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

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
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
intersphinx_mapping = {}  # offline builds: no inventories are fetched
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
# The package's docstrings use a few numpydoc forms napoleon renders loosely.
suppress_warnings = ["ref.python"]
nitpicky = False
