"""The docs build, running every example of the tutorial and the how-tos in a Jupyter
kernel (jupyter-sphinx), with no warning; the pages show real output and plots.

The build is the test of the examples: a cell that raises, or a hidden check cell
(``docs/doc_checks.py``) whose value differs, fails it. It runs once per session (about
a minute; the RSOXS images are made small).
"""
from __future__ import annotations

import html as html_lib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXECUTED = ["tutorial.rst", "howto/find_runs.rst", "howto/write_runs.rst",
            "howto/lazy_and_distributed.rst", "howto/named_catalogs.rst", "howto/pack.rst",
            "howto/export.rst", "howto/logins.rst", "layout.rst"]


def _pages() -> list[Path]:
    return [p for p in DOCS.rglob("*.rst") if "_build" not in p.parts]


#: pages with doctest examples (none: the build runs every example, so none is left to doctest)
DOCTEST_PAGES = sorted(str(p.relative_to(DOCS)) for p in _pages()
                       if ">>> " in p.read_text(encoding="utf-8"))


def test_the_pages_with_examples_run_them_at_build_time() -> None:
    for page in EXECUTED:
        text = (DOCS / page).read_text(encoding="utf-8")
        assert text.count(".. jupyter-execute::") >= 5, page
    assert DOCTEST_PAGES == [], "convert these to jupyter-execute cells"


def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.rst").read_text()
    pages = sorted(str(p.relative_to(DOCS).with_suffix("")) for p in _pages()
                   if p.name != "index.rst")
    assert pages and all(p in index for p in pages), pages


def test_the_docs_say_how_to_install_truthfully() -> None:
    index = (DOCS / "index.rst").read_text()
    assert "pip install databroker_lite" not in index  # not on PyPI
    assert "pip install ." in index and "python -m sphinx" in index
    readme = (DOCS.parent / "README.md").read_text()
    assert "python -m sphinx -b html docs" in readme


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs built once, -W (a warning is an error), examples executed."""
    pytest.importorskip("sphinx")
    pytest.importorskip("jupyter_sphinx")
    root = tmp_path_factory.mktemp("docs")
    env = {**os.environ,
           "DATABROKER_LITE_CATALOG_PATH": str(root / "catalogs"),
           "DATABROKER_LITE_DATA_DIR": str(root / "data"),
           "DATABROKER_LITE_TUTORIAL_SMALL": "1"}
    out = root / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html",
                           "-d", str(root / "doctrees"), str(DOCS), str(out)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:] + proc.stdout[-2000:]
    return out


def _text(page: Path) -> str:
    """The page's text, without tags, entities decoded."""
    return html_lib.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def test_sphinx_build_has_no_warnings(html: Path) -> None:
    assert "databroker_lite_layout" in (html / "layout.html").read_text()
    api = (html / "api.html").read_text()
    assert "fetch_BMM_example" in api and "open_catalog" in api


def test_tutorial_shows_real_output_and_the_plots(html: Path) -> None:
    page = (html / "tutorial.html").read_text(encoding="utf-8")
    text = _text(html / "tutorial.html")
    assert "Making the tutorial catalog 'bluesky-tutorial-BMM': 6 runs" in text
    assert "uid='8aaf81b9-85f2-51ac-8655-1b712a81002a'" in text  # print(run)
    assert "scan_id 23463" in text  # the run's HTML summary
    assert "['baseline', 'primary']" in text
    assert "mu: 0.49 below the edge, 1.70 above it" in text
    assert "dask.array" in page and "xarray.Dataset" in page
    assert "Traceback" not in text and "Error" not in text.replace("MemoryError", "")
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert len(images) == 2  # the Cu K edge and the dark-subtracted RSOXS frame
    for src in images:
        png = (html / src).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000


@pytest.mark.parametrize("page", [p for p in EXECUTED if p != "tutorial.rst"])
def test_howto_pages_show_their_outputs(html: Path, page: str) -> None:
    built = html / page.replace(".rst", ".html")
    source = built.read_text(encoding="utf-8")
    assert source.count('class="cell_output') >= 3, page
    assert "Traceback" not in _text(built)
    assert "expect(" not in source and "fresh_directory" not in source  # checks are hidden


def test_export_page_shows_the_guides_json_shape(html: Path) -> None:
    text = _text(html / "howto" / "export.html")
    assert "['format', 'nonfinite_floats', 'metadata', 'baseline', 'primary']" in text
    assert "#L motor  Epoch  motor_setpoint  det" in text


def test_write_runs_page_shows_a_config_dataset(html: Path) -> None:
    text = _text(html / "howto" / "write_runs.html")
    assert "config[" in text and "xarray.Dataset" in text
