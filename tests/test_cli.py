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
