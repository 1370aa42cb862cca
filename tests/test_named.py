"""Named catalogs: search path, install/uninstall, databroker_lite.catalog, intake, CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import insert_all, make_run_docs

import databroker_lite
from databroker_lite import config
from databroker_lite.cli import main
from databroker_lite.errors import CatalogError, CatalogNotFound, DatabrokerLiteError


@pytest.fixture(autouse=True)
def search_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own (not yet existing) catalog search directory."""
    d = tmp_path / "catalogs"
    monkeypatch.setenv(config.ENV_VAR, str(d))
    return d


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A catalog directory holding two runs (scan_id 1 with 3 events, scan_id 2 with 4)."""
    d = tmp_path / "data"
    cat = databroker_lite.open_catalog(d)
    insert_all(cat, make_run_docs(3, metadata={"scan_id": 1, "plan_name": "count"}))
    insert_all(cat, make_run_docs(4, metadata={"scan_id": 2, "plan_name": "scan"}))
    return d


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- search path ---------------------------------------------------------------------

def test_default_dir_linux(monkeypatch, tmp_path):
    monkeypatch.delenv(config.ENV_VAR)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = str(tmp_path / "home" / ".local" / "share" / "databroker_lite" / "catalogs")
    assert config.default_catalog_dir() == expected
    assert config.catalog_search_path() == [expected]
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert config.default_catalog_dir() == str(tmp_path / "xdg" / "databroker_lite" / "catalogs")


def test_default_dir_macos(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "/ignored/on/macos")
    assert config.default_catalog_dir() == os.path.join(
        str(tmp_path), "Library", "Application Support", "databroker_lite", "catalogs")


def test_default_dir_windows(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", r"C:\Users\ada\AppData\Roaming")
    assert config.default_catalog_dir() == r"C:\Users\ada\AppData\Roaming\databroker_lite\catalogs"
    monkeypatch.delenv("APPDATA")
    monkeypatch.setenv("HOME", r"C:\Users\ada")
    monkeypatch.setattr(os.path, "expanduser", lambda p: p.replace("~", r"C:\Users\ada"))
    assert config.default_catalog_dir() == r"C:\Users\ada\AppData\Roaming\databroker_lite\catalogs"


def test_env_var_overrides_default(monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv(config.ENV_VAR, os.pathsep.join([str(a), "", str(b)]))
    assert config.catalog_search_path() == [str(a), str(b)]
    assert databroker_lite.catalog.search_path == [str(a), str(b)]
    monkeypatch.setenv(config.ENV_VAR, "")
    assert config.catalog_search_path() == [config.default_catalog_dir()]


# --- install and look up ---------------------------------------------------------------

def test_install_after_import_is_seen(data_dir, search_dir):
    named = databroker_lite.catalog  # the object users hold since import
    assert list(named) == []
    assert "bl1" not in named
    written = databroker_lite.install_catalog(data_dir, "bl1", root_map={"/old": "/new"})
    assert written == str(search_dir / "bl1.yml")
    assert list(named) == ["bl1"] and len(named) == 1 and "bl1" in named
    cat = named["bl1"]
    assert isinstance(cat, databroker_lite.Catalog)
    assert cat.name == "bl1"
    assert cat.directory == str(data_dir)
    assert cat.root_map == {"/old": "/new"}
    assert len(cat) == 2
    assert cat[2].metadata["start"]["plan_name"] == "scan"
    np.testing.assert_array_equal(cat[1].primary.read()["x"].values, [0.0, 1.5, 3.0])
    assert "bl1" in repr(named) and str(data_dir) in repr(named)


def test_installed_file_is_an_intake_style_yaml(data_dir, search_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    written = databroker_lite.install_catalog("data", "bl1")  # relative path is made absolute
    content = yaml.safe_load(Path(written).read_text())
    src = content["sources"]["bl1"]
    assert src["driver"] == "databroker_lite"
    assert src["args"] == {"path": str(data_dir), "root_map": {}}
    assert sorted(os.listdir(search_dir)) == ["bl1.yml"]  # no partial file left behind


def test_install_refuses_to_replace_a_different_entry(data_dir, tmp_path, search_dir):
    other = tmp_path / "other"
    other.mkdir()
    written = databroker_lite.install_catalog(data_dir, "bl1")
    before = Path(written).read_text()
    assert databroker_lite.install_catalog(data_dir, "bl1") == written  # same entry: no-op
    with pytest.raises(CatalogError, match="already exists.*overwrite=True") as info:
        databroker_lite.install_catalog(other, "bl1")
    assert written in str(info.value)
    assert Path(written).read_text() == before
    with pytest.raises(CatalogError, match="already exists"):
        databroker_lite.install_catalog(data_dir, "bl1", root_map={"/a": "/b"})
    databroker_lite.install_catalog(other, "bl1", overwrite=True)
    assert databroker_lite.catalog["bl1"].directory == str(other)
    assert len(databroker_lite.catalog["bl1"]) == 0


@pytest.mark.parametrize("bad", ["", "a/b", "../up", ".hidden", "-x", "sp ace"])
def test_install_rejects_bad_names(data_dir, search_dir, bad):
    with pytest.raises(ValueError, match="catalog name"):
        databroker_lite.install_catalog(data_dir, bad)
    assert not search_dir.exists()


def test_install_requires_an_existing_directory(tmp_path, search_dir):
    with pytest.raises(CatalogError, match="not a directory"):
        databroker_lite.install_catalog(tmp_path / "nope", "bl1")
    assert not search_dir.exists()


def test_install_writes_to_first_dir_and_first_dir_wins(data_dir, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    other = tmp_path / "other"
    databroker_lite.open_catalog(other)
    monkeypatch.setenv(config.ENV_VAR, str(second))
    databroker_lite.install_catalog(other, "bl1")
    monkeypatch.setenv(config.ENV_VAR, os.pathsep.join([str(first), str(second)]))
    assert databroker_lite.catalog["bl1"].directory == str(other)
    with pytest.raises(CatalogError, match="already exists"):
        databroker_lite.install_catalog(data_dir, "bl1")
    written = databroker_lite.install_catalog(data_dir, "bl1", overwrite=True)
    assert written == str(first / "bl1.yml")
    assert databroker_lite.catalog["bl1"].directory == str(data_dir)
    assert (second / "bl1.yml").exists()  # shadowed, not deleted


def test_unknown_name_lists_known_ones(data_dir):
    databroker_lite.install_catalog(data_dir, "bl1")
    databroker_lite.install_catalog(data_dir, "bl2")
    with pytest.raises(CatalogNotFound, match="'nope'.*known catalogs: 'bl1', 'bl2'") as info:
        databroker_lite.catalog["nope"]
    assert isinstance(info.value, KeyError) and isinstance(info.value, DatabrokerLiteError)
    assert databroker_lite.catalog.get("nope") is None


def test_no_catalogs_message(search_dir):
    with pytest.raises(KeyError, match=r"known catalogs: none \(search path: .*catalogs"):
        databroker_lite.catalog["x"]


def test_uninstall(data_dir, search_dir):
    written = databroker_lite.install_catalog(data_dir, "bl1")
    assert databroker_lite.uninstall_catalog("bl1") == written
    assert not os.path.exists(written)
    assert list(databroker_lite.catalog) == []
    assert os.path.isdir(data_dir) and len(databroker_lite.open_catalog(data_dir)) == 2
    with pytest.raises(CatalogNotFound, match="'bl1'"):
        databroker_lite.uninstall_catalog("bl1")


def test_uninstall_leaves_hand_written_files(data_dir, search_dir):
    f = write_yaml(search_dir / "site.yml", f"""\
        sources:
          a: {{driver: databroker_lite, args: {{path: {data_dir}}}}}
          b: {{driver: databroker_lite, args: {{path: {data_dir}}}}}
        """)
    with pytest.raises(CatalogError, match="did not write"):
        databroker_lite.uninstall_catalog("a")
    assert f.exists() and list(databroker_lite.catalog) == ["a", "b"]


# --- hand-written config files ------------------------------------------------------------

def test_relative_paths_other_drivers_and_broken_files(data_dir, search_dir, monkeypatch):
    write_yaml(search_dir / "a.yml", """\
        sources:
          rel: {driver: databroker_lite, args: {path: ../data}, metadata: {beamline: 45-ID}}
          tmpl:
            driver: databroker_lite
            args: {path: "{{ CATALOG_DIR }}/../data", mode: r}
          table: {driver: csv, args: {urlpath: x.csv}}
        """)
    write_yaml(search_dir / "b.yaml", "sources: [not, a, mapping\n")
    (search_dir / "notes.txt").write_text("ignored")
    monkeypatch.chdir("/")
    with pytest.warns(UserWarning, match="b.yaml"):
        names = list(databroker_lite.catalog)
    assert names == ["rel", "tmpl"]  # the csv source is intake's business, not ours
    with pytest.warns(UserWarning):
        rel, tmpl = databroker_lite.catalog["rel"], databroker_lite.catalog["tmpl"]
    assert rel.directory == tmpl.directory == str(data_dir)
    assert len(rel) == 2 and rel.mode == "a"
    assert tmpl.mode == "r"
    with pytest.raises(databroker_lite.ReadOnlyCatalog):
        _ = tmpl.writer


def test_entry_pointing_nowhere(tmp_path, search_dir):
    f = write_yaml(search_dir / "gone.yml", f"""\
        sources:
          gone: {{driver: databroker_lite, args: {{path: {tmp_path / 'moved'}}}}}
          typo: {{driver: databroker_lite, args: {{path: {tmp_path}, root_mpa: {{}}}}}}
        """)
    assert list(databroker_lite.catalog) == ["gone", "typo"]
    with pytest.raises(CatalogError, match="'gone'.*gone.yml.*not a directory"):
        databroker_lite.catalog["gone"]
    assert not (tmp_path / "moved").exists()  # looking up never creates directories
    with pytest.raises(CatalogError, match="unknown args.*root_mpa"):
        databroker_lite.catalog["typo"]
    assert f.exists()


# --- intake ----------------------------------------------------------------------------------

def test_intake_open_catalog_returns_our_catalog(data_dir, search_dir, tmp_path, monkeypatch):
    intake = pytest.importorskip("intake")
    from databroker_lite.intake_driver import IntakeCatalog
    assert intake.registry["databroker_lite"] is IntakeCatalog  # via the entry point
    f = write_yaml(search_dir / "site.yml", """\
        sources:
          bl1:
            driver: databroker_lite
            args: {path: ../data, root_map: {/old: /new}}
            metadata: {beamline: 45-ID}
        """)
    monkeypatch.chdir(tmp_path / "data")  # relative to the YAML file, not the cwd
    icat = intake.open_catalog(str(f))
    assert list(icat) == ["bl1"]
    cat = icat["bl1"]
    assert isinstance(cat, databroker_lite.Catalog)
    assert cat.name == "bl1"
    assert cat.directory == str(data_dir)
    assert cat.root_map == {"/old": "/new"}
    assert cat.metadata["beamline"] == "45-ID"
    assert len(cat) == 2
    np.testing.assert_array_equal(cat[-1].primary.read()["n"].values, [0, 1, 2, 3])
    assert cat[1].metadata["start"]["scan_id"] == 1
    assert icat.bl1.read() is icat.bl1  # attribute access and .read() give the catalog too
    assert icat.walk(depth=3)["bl1"].describe()["container"] == "catalog"


def test_intake_opens_installed_file(data_dir):
    intake = pytest.importorskip("intake")
    written = databroker_lite.install_catalog(data_dir, "bl1")
    cat = intake.open_catalog(written)["bl1"]
    assert len(cat) == 2 and cat[2].metadata["start"]["plan_name"] == "scan"


def test_intake_driver_missing_directory(tmp_path, search_dir):
    intake = pytest.importorskip("intake")
    f = write_yaml(search_dir / "x.yml", f"""\
        sources:
          gone: {{driver: databroker_lite, args: {{path: {tmp_path / 'moved'}}}}}
        """)
    with pytest.raises(CatalogError, match="not a directory"):
        intake.open_catalog(str(f))["gone"]


@pytest.mark.filterwarnings("ignore:Use shutil.which:DeprecationWarning")
def test_intake_search_path_discovery(data_dir, tmp_path, monkeypatch):
    intake = pytest.importorskip("intake")
    from intake.catalog.default import load_combo_catalog
    idir = tmp_path / "intake_cats"
    monkeypatch.setenv(config.ENV_VAR, str(idir))
    databroker_lite.install_catalog(data_dir, "bl1")
    monkeypatch.setitem(intake.conf, "catalog_path", [str(idir)])
    combo = load_combo_catalog()  # what intake.cat is built from
    assert "bl1" in list(combo)
    assert len(combo["bl1"]) == 2


def _run_python(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_intake_cat_and_core_without_intake(data_dir, tmp_path):
    pytest.importorskip("intake")
    cfg = tmp_path / "cfg"
    env = {config.ENV_VAR: str(cfg), "INTAKE_CONF_DIR": str(tmp_path / "intake_conf"),
           # intake parses INTAKE_* values with ast.literal_eval: a plain path is split
           # into characters, so the catalog path must be written as a Python list
           "INTAKE_CATALOG_PATH": repr([str(cfg)])}
    core = _run_python("""
        import sys, databroker_lite
        databroker_lite.install_catalog(sys.argv[1], "bl1")
        print(len(databroker_lite.catalog["bl1"]))
        print("intake" in sys.modules)
        """, env, str(data_dir))
    assert core.returncode == 0, core.stderr
    assert core.stdout.split() == ["2", "False"]  # the core never imports intake
    viaintake = _run_python("""
        import intake
        cat = intake.cat["bl1"]
        print(type(cat).__name__, len(cat))
        """, env)
    assert viaintake.returncode == 0, viaintake.stderr
    assert viaintake.stdout.split() == ["IntakeCatalog", "2"]


# --- command line ------------------------------------------------------------------------------

def test_cli_install_and_catalogs(data_dir, tmp_path, search_dir, capsys):
    assert main(["catalogs"]) == 0
    assert "no named catalogs" in capsys.readouterr().out
    assert main(["install", str(data_dir), "bl1", "--root-map", "/old=/new"]) == 0
    out = capsys.readouterr().out
    assert "'bl1'" in out and str(search_dir / "bl1.yml") in out
    assert databroker_lite.catalog["bl1"].root_map == {"/old": "/new"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["install", str(empty), "zz"]) == 0
    capsys.readouterr()
    assert main(["catalogs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "LOCATION", "RUNS"]
    assert lines[1].split() == ["bl1", str(data_dir), "2"]
    assert lines[2].split() == ["zz", str(empty), "0"]


def test_cli_install_errors(data_dir, tmp_path, capsys):
    assert main(["install", str(data_dir), "bl1"]) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    assert main(["install", str(other), "bl1"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["install", str(other), "bl1", "--overwrite"]) == 0
    assert databroker_lite.catalog["bl1"].directory == str(other)
    assert main(["install", str(other), "a/b"]) == 1
    assert "catalog name" in capsys.readouterr().err
    assert main(["install", str(other), "bl2", "--root-map", "nonsense"]) == 2
    assert "OLD=NEW" in capsys.readouterr().err
    assert "bl2" not in databroker_lite.catalog


def test_cli_catalogs_reports_broken_entry(tmp_path, search_dir, capsys):
    write_yaml(search_dir / "gone.yml", f"""\
        sources:
          gone: {{driver: databroker_lite, args: {{path: {tmp_path / 'moved'}}}}}
        """)
    assert main(["catalogs"]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.startswith("gone") and "not a directory" in row


def test_relative_root_map_targets_resolve_against_the_yaml_directory(tmp_path, search_dir, monkeypatch):
    # a run whose external frames were written under /old/place, now moved next to the YAML
    import event_model
    data = np.arange(2 * 3 * 4, dtype="<u2").reshape(2, 3, 4)
    moved = search_dir / "frames"
    moved.mkdir(parents=True)
    import h5py
    with h5py.File(moved / "det.h5", "w") as f:
        f["entry/data/data"] = data
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = event_model.compose_run()
    d = b.compose_descriptor(name="primary", data_keys={"img": {
        "source": "s", "dtype": "array", "shape": [3, 4], "dtype_numpy": "<u2", "external": "FILESTORE:"}})
    res = b.compose_resource(spec="AD_HDF5", root="/old/place", resource_path="det.h5",
                             resource_kwargs={"frame_per_point": 1})
    docs = [("start", b.start_doc), ("descriptor", d.descriptor_doc), ("resource", res.resource_doc)]
    for i in range(2):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        docs += [("datum", datum), ("event", d.compose_event(
            data={"img": datum["datum_id"]}, timestamps={"img": 1.0}, seq_num=i + 1))]
    insert_all(cat, [*docs, ("stop", b.compose_stop())])
    f = write_yaml(search_dir / "moved.yml", f"""\
        sources:
          moved: {{driver: databroker_lite, args: {{path: {tmp_path / 'cat'}, root_map: {{/old/place: frames}}}}}}
          tmpl: {{driver: databroker_lite, args: {{path: {tmp_path / 'cat'}, root_map: {{/old/place: "{{{{ CATALOG_DIR }}}}/frames"}}}}}}
        """)
    monkeypatch.chdir("/")  # not the YAML's directory: a relative target must not depend on it
    for name in ("moved", "tmpl"):
        named = databroker_lite.catalog[name]
        assert named.root_map == {"/old/place": str(moved)}
        np.testing.assert_array_equal(named[-1].primary.read()["img"].values, data)
    intake = pytest.importorskip("intake")
    icat = intake.open_catalog(str(f))
    assert icat["moved"].root_map == {"/old/place": str(moved)}
    np.testing.assert_array_equal(icat["moved"][-1].primary.read()["img"].values, data)
