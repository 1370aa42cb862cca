"""The ``databroker-lite reindex`` and ``ls`` commands."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import event_model
import pytest

import databroker_lite
from databroker_lite.cli import main

T0 = 1_600_000_000.0


def add_run(cat: databroker_lite.Catalog, *, scan_id: int, t: float) -> str:
    """Insert a small finished run and return its uid."""
    bundle = event_model.compose_run(time=t, metadata={"scan_id": scan_id, "plan_name": "count"})
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(
        name="primary", data_keys={"det": {"source": "sim", "dtype": "number", "shape": []}}, time=t)
    cat.insert("descriptor", desc.descriptor_doc)
    cat.insert("event", desc.compose_event(data={"det": 1.0}, timestamps={"det": t}, seq_num=1, time=t))
    cat.insert("stop", bundle.compose_stop(time=t + 1))
    return bundle.start_doc["uid"]


@pytest.fixture
def three(tmp_path) -> tuple[str, list[str]]:
    path = tmp_path / "cat"
    cat = databroker_lite.open_catalog(path)
    uids = [add_run(cat, scan_id=10 + i, t=T0 + i) for i in range(3)]
    return str(path), uids


def test_reindex_rebuilds_and_prints_counts(three, capsys):
    path, uids = three
    shutil.rmtree(os.path.join(path, ".databroker_lite"))
    with open(os.path.join(path, "broken.h5"), "wb") as f:
        f.write(b"\x89HDF garbage")
    assert main(["reindex", path]) == 0
    out = capsys.readouterr().out
    assert "3 runs indexed" in out
    assert "3 read, 1 unreadable" in out
    assert "unreadable: broken.h5" in out
    assert os.path.isfile(os.path.join(path, ".databroker_lite", "index.sqlite"))
    cat = databroker_lite.open_catalog(path, mode="r")
    assert list(cat) == uids
    assert cat[11].uid == uids[1]


def test_reindex_replaces_a_stale_index(three, capsys, tmp_path):
    path, uids = three
    # an index copied from elsewhere that lists runs which are not here
    other = tmp_path / "other"
    add_run(databroker_lite.open_catalog(other), scan_id=99, t=T0 + 50)
    shutil.rmtree(os.path.join(path, ".databroker_lite"))
    shutil.copytree(other / ".databroker_lite", os.path.join(path, ".databroker_lite"))
    assert main(["reindex", path]) == 0
    assert "3 runs indexed" in capsys.readouterr().out
    cat = databroker_lite.open_catalog(path)
    assert list(cat) == uids
    with pytest.raises(databroker_lite.RunNotFound):
        cat[99]


def test_reindex_repairs_a_damaged_index(three, capsys):
    path, uids = three
    index = os.path.join(path, ".databroker_lite", "index.sqlite")
    for leftover in (index + "-wal", index + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    with open(index, "wb") as f:
        f.write(b"garbage" * 200)
    assert main(["reindex", path]) == 0
    assert "3 runs indexed" in capsys.readouterr().out
    assert list(databroker_lite.open_catalog(path, mode="r")) == uids


def test_reindex_missing_directory_is_an_error_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "typo"
    assert main(["reindex", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "error" in err and "typo" in err
    assert not missing.exists()


def test_reindex_as_a_module_subprocess(three):
    path, uids = three
    shutil.rmtree(os.path.join(path, ".databroker_lite"))
    proc = subprocess.run([sys.executable, "-m", "databroker_lite", "reindex", path],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "3 runs indexed" in proc.stdout
    assert "0 unreadable" in proc.stdout
    assert list(databroker_lite.open_catalog(path, mode="r")) == uids


def test_ls_shows_count_and_newest(three, capsys):
    path, uids = three
    assert main(["ls", path]) == 0
    out = capsys.readouterr().out
    assert "3 runs" in out
    assert os.path.abspath(path) in out
    assert uids[-1][:8] in out and "12" in out


def test_ls_missing_directory(tmp_path, capsys):
    assert main(["ls", str(tmp_path / "nope")]) == 1
    assert "no catalog directory" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_export_bad_query_or_both_selections_is_a_one_line_error(three, capsys, tmp_path):
    d, _ = three
    assert main(["export", d, "csv", str(tmp_path / "out"), "--query", "[1]"]) == 1
    assert "a query is a dict, got list" in capsys.readouterr().err
    assert main(["export", d, "1", "csv", str(tmp_path / "out"), "--query", "{}"]) == 2
    assert "give RUNS or --query, not both" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- mistakes the command line explains ---------------------------------------------------
def test_an_abbreviated_flag_is_refused_with_the_flag_meant(three, tmp_path, capsys):
    path, _ = three
    with pytest.raises(SystemExit) as info:
        main(["pack", path, str(tmp_path / "p"), "--al"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: databroker-lite pack" in err  # the subcommand's usage, not the top level's
    assert "unrecognized arguments: --al (did you mean --all?)" in err
    assert not (tmp_path / "p").exists()
    with pytest.raises(SystemExit):
        main(["pack", path, str(tmp_path / "p"), "--scan-id", "10"])
    assert "--scan-id (did you mean --scan-ids?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["exprot", path])
    assert "did you mean 'export'?" in capsys.readouterr().err


def test_every_positional_argument_has_help():
    from databroker_lite.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        for action in sp._actions:
            if not action.option_strings:
                assert action.help, (name, action.dest)
            assert sp.allow_abbrev is False


def test_ls_and_reindex_take_a_catalog_name(three, tmp_path, monkeypatch, capsys):
    path, uids = three
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "configs"))
    databroker_lite.install_catalog(path, "beamline-x")
    assert main(["ls", "beamline-x"]) == 0
    out = capsys.readouterr().out
    assert "'beamline-x'" in out and "3 runs" in out and uids[-1][:8] in out
    assert main(["reindex", "beamline-x"]) == 0
    assert "3 runs indexed" in capsys.readouterr().out
    assert main(["ls", "beamline-y"]) == 1
    err = capsys.readouterr().err
    assert "no catalog named 'beamline-y'" in err and "beamline-x" in err


def test_export_without_a_destination_says_so(three, tmp_path, capsys):
    path, _ = three
    with pytest.raises(SystemExit) as info:
        main(["export", path, "10", "csv"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "no destination after the format 'csv'" in err and "invalid choice" not in err
    with pytest.raises(SystemExit):
        main(["export", path, "10", "cvs", str(tmp_path / "out")])
    assert "did you mean 'csv' for 'cvs'?" in capsys.readouterr().err
    assert main(["export", path, "10", "11", "CSV", str(tmp_path / "out")]) == 0
    assert len(capsys.readouterr().out.split()) == 2 * 2  # metadata + primary, per run


def test_a_query_matching_nothing_exits_1_naming_the_keys(three, tmp_path, capsys):
    path, _ = three
    for argv in (["pack", path, str(tmp_path / "p"), "--query", '{"plan_nam": "count"}'],
                 ["export", path, "--query", '{"plan_nam": "count"}', "csv", str(tmp_path / "e")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "matches the query" in err and "give RUNS" not in err
        assert "no run's start document has the key 'plan_nam' (did you mean 'plan_name'?)" in err
        assert "plan_name, scan_id" in err and "(the catalog has 3 runs)" in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "e").exists()
    assert main(["pack", path, str(tmp_path / "p"), "--query", '{"plan_name": "scan"}']) == 1
    assert "the plan names are ['count']" in capsys.readouterr().err
    assert main(["pack", path, str(tmp_path / "p"), "--since", "2030-01-01"]) == 1
    err = capsys.readouterr().err
    assert "matches since 2030-01-01" in err and "the runs started between 2020-09-1" in err
    with pytest.raises(databroker_lite.NoRunsMatch):
        databroker_lite.pack(path, tmp_path / "p", query={"plan_name": "scan"})
    assert not (tmp_path / "p").exists()


def test_a_warning_is_one_line_naming_the_command(tmp_path, capfd):
    """Two runs share scan_id 7: exporting 7 warns, in one line, without Python's
    file:line and source line."""
    path = tmp_path / "cat"
    cat = databroker_lite.open_catalog(path)
    add_run(cat, scan_id=7, t=T0)
    newest = add_run(cat, scan_id=7, t=T0 + 60)
    assert main(["export", str(path), "7", "csv", str(tmp_path / "out")]) == 0
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("databroker-lite export: warning: ") and newest in err[0]
    assert ".py:" not in err[0] and "Warning:" not in err[0]
