"""The code in the tutorial and how-to pages runs, and the docs build without warnings."""
from __future__ import annotations

import doctest
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
REQUIRED = ["tutorial.rst", "howto/find_runs.rst", "howto/write_runs.rst",
            "howto/lazy_and_distributed.rst", "howto/named_catalogs.rst", "layout.rst"]
#: every page with examples in it, so a new how-to is tested without being listed here
PAGES = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.rst")
               if "_build" not in p.parts and ">>> " in p.read_text(encoding="utf-8"))


def test_the_pages_with_examples_are_found() -> None:
    assert set(REQUIRED) <= set(PAGES), sorted(set(REQUIRED) - set(PAGES))


@pytest.fixture
def doc_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Catalog configs, tutorial data and the working directory in a temporary directory."""
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "catalogs"))
    monkeypatch.setenv("DATABROKER_LITE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABROKER_LITE_TUTORIAL_SMALL", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page: str, doc_env: Path, capsys: pytest.CaptureFixture) -> None:
    result = doctest.testfile(str(DOCS / page), module_relative=False, report=True,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = capsys.readouterr().out
    assert result.attempted >= 5, f"{page} has only {result.attempted} examples"
    assert result.failed == 0, out


def test_every_page_is_in_the_toctree() -> None:
    index = (DOCS / "index.rst").read_text()
    pages = sorted(str(p.relative_to(DOCS).with_suffix("")) for p in DOCS.rglob("*.rst")
                   if "_build" not in p.parts and p.name != "index.rst")
    assert pages and all(p in index for p in pages), pages


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html",
                           str(DOCS), str(tmp_path / "html")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    html = (tmp_path / "html" / "layout.html").read_text()
    assert "databroker_lite_layout" in html
    api = (tmp_path / "html" / "api.html").read_text()
    assert "fetch_BMM_example" in api and "open_catalog" in api
    shutil.rmtree(tmp_path / "html")
