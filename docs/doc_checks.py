"""Checks the docs' hidden cells make at build time: a shown value is the one expected.

Each example's real output is shown on the page; a hidden cell after it checks the value
the cell before it showed, with doctest's rules (``...`` matches anything, whitespace is
normalised), so a change of behaviour fails the docs build (``tests/test_docs.py``)
instead of silently changing a page.
"""
from __future__ import annotations

import doctest

_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def expect(text: str) -> None:
    """Raise unless the cell just before showed a value whose repr matches ``text``."""
    from IPython import get_ipython

    shell = get_ipython()
    previous = len(shell.user_ns["In"]) - 2  # In holds this cell already
    out = shell.user_ns.get("Out", {})
    if previous not in out:
        raise AssertionError(f"the docs expected the cell before to show\n{text}\nbut it showed "
                             "no value")
    got = repr(out[previous]) + "\n"
    want = text.rstrip("\n") + "\n"
    if not doctest.OutputChecker().check_output(want, got, _FLAGS):
        raise AssertionError(f"the docs expected\n{want}but the code gave\n{got}")


def fresh_directory() -> str:
    """Work in a new temporary directory, as the page's examples assume (relative paths)."""
    import atexit
    import os
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="databroker_lite-docs-")
    os.chdir(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)  # when the page's kernel stops
    return path


def first_time() -> str:
    """Work as a first-time user: a fresh directory, no catalogs and no tutorial data yet
    (so the tutorial page shows what its first run prints)."""
    import os

    path = fresh_directory()
    os.environ["DATABROKER_LITE_CATALOG_PATH"] = os.path.join(path, "catalogs")
    os.environ["DATABROKER_LITE_DATA_DIR"] = os.path.join(path, "data")
    return path
