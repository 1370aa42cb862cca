"""The read fast paths give what the slow ones gave: metadata from the index row, one
open per run file, columns and their rows checked when read."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from conftest import insert_all, make_run_docs

import databroker_lite
from databroker_lite import CorruptRunFile
from databroker_lite.storage import reader as reader_mod
from databroker_lite.storage.files import FILE_CACHE


@pytest.fixture
def cat(tmp_path):
    c = databroker_lite.open_catalog(tmp_path / "cat")
    for i in range(3):
        insert_all(c, make_run_docs(4, metadata={"scan_id": i + 1, "sample": {"name": f"s{i}"}}))
    return c


def _count_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    orig = reader_mod.RunReader.__init__

    def init(self, path, *args, **kwargs):
        opened.append(os.fspath(path))
        orig(self, path, *args, **kwargs)
    monkeypatch.setattr(reader_mod.RunReader, "__init__", init)
    return opened


def test_metadata_comes_from_the_index_without_opening_the_file(cat, monkeypatch):
    want = {}
    for uid in cat:
        r = reader_mod.RunReader(cat[uid].path)
        want[uid] = {"start": r.start, "stop": r.stop}
    opened = _count_opens(monkeypatch)
    for uid in cat:
        for run in (cat[uid], cat[uid[:8]], cat[want[uid]["start"]["scan_id"]]):
            assert run.metadata == want[uid]
            assert run.start == want[uid]["start"] and run.stop == want[uid]["stop"]
            assert run.metadata["start"]["sample"] == {"name": want[uid]["start"]["sample"]["name"]}
    assert cat[-1].metadata == want[cat[-1].uid]
    assert opened == []
    cat[-1].primary.read()  # reading data does open it
    assert len(opened) == 1


def test_metadata_of_a_changed_file_is_read_from_the_file(cat, monkeypatch):
    uid = cat[1].uid
    run = cat[uid]
    assert run.metadata["start"]["scan_id"] == 1
    FILE_CACHE.clear()
    with h5py.File(run.path, "r+") as f:  # the file changes behind the index's back
        del f["stop"]
        f["stop"] = json.dumps({"uid": "x", "run_start": uid, "time": 1.0, "exit_status": "abort"})
    opened = _count_opens(monkeypatch)
    fresh = databroker_lite.Run(cat, uid, run.path)
    assert fresh.metadata["stop"]["exit_status"] == "abort"  # the file's, not the index's
    assert run.stop["exit_status"] == "abort"  # a Run that had looked before sees it too
    assert opened


def test_run_being_written_metadata_follows_the_file(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    docs = make_run_docs(3)
    w = cat.writer
    for name, doc in docs[:-1]:
        w(name, doc)
    w.flush()
    run = cat[-1]
    assert run.metadata["stop"] is None and run.metadata["start"]["uid"] == docs[0][1]["uid"]
    w(*docs[-1])
    assert run.metadata["stop"]["uid"] == docs[-1][1]["uid"]
    assert cat[-1].stop["exit_status"] == "success"


def test_loop_over_runs_reads_each_once(cat, monkeypatch):
    opened = _count_opens(monkeypatch)
    from databroker_lite.run import _READERS
    _READERS._items.clear()
    sums = [float(cat[u].primary.read()["x"].values.sum()) for u in cat]
    assert sums == [sum(i * 1.5 for i in range(4))] * 3
    assert len(opened) == 3


def test_a_short_column_is_damage_named_when_read(cat):
    run = cat[2]
    seg = run.primary.segments[0]
    FILE_CACHE.clear()  # this process's read handles, before changing the file by hand
    with h5py.File(run.path, "r+") as f:
        ds = f[f"{seg.group}/data/x"]
        ds.resize((2,))
    fresh = databroker_lite.open_catalog(cat.directory)[run.uid]
    with pytest.raises(CorruptRunFile, match=r"data/x has 2 rows where .* counts 4"):
        fresh.primary.read()
    with pytest.raises(CorruptRunFile, match=os.path.basename(run.path)):
        fresh.primary["x"][:]
    # the other columns still read
    np.testing.assert_array_equal(fresh.primary.read(["n"])["n"].values, [0, 1, 2, 3])


def test_a_short_time_column_is_damage(cat):
    run = cat[3]
    seg = run.primary.segments[0]
    FILE_CACHE.clear()
    with h5py.File(run.path, "r+") as f:
        f[f"{seg.group}/time"].resize((1,))
    fresh = databroker_lite.open_catalog(cat.directory)[run.uid]
    with pytest.raises(CorruptRunFile, match="time"):
        fresh.primary.read()


def test_reader_given_the_index_documents_answers_as_one_reading_the_file(cat):
    run = cat[1]
    from_file = reader_mod.RunReader(run.path)
    md = run.metadata  # from the index row
    given = reader_mod.RunReader(run.path, (md["start"], md["stop"]))
    assert (given.start, given.stop, given.uid) == (from_file.start, from_file.stop, from_file.uid)
    assert given.finished and given.stream_names == from_file.stream_names


def test_a_reader_given_documents_still_checks_the_layout(cat):
    run = cat[1]
    md = run.metadata
    FILE_CACHE.clear()
    with h5py.File(run.path, "r+") as f:
        f.attrs["databroker_lite_layout"] = 99
    with pytest.raises(databroker_lite.errors.UnsupportedLayout, match="99"):
        reader_mod.RunReader(run.path, (md["start"], md["stop"]))


def test_rows_read_with_low_level_calls_match_the_dataset(cat):
    run = cat[2]
    r = run._reader()
    seg = run.primary.segments[0]
    keys = ("x", "n", "flag", "vec")
    with h5py.File(run.path, "r") as f:
        want = {k: f[f"{seg.group}/data/{k}"][:] for k in keys}
        want_t = f[f"{seg.group}/time"][:]
    assert want["vec"].shape == (4, 3) and want["flag"].dtype == bool
    for sel in (slice(None), slice(1, 3), slice(3, 1), slice(2, None), slice(0, 4, 2)):
        for k in keys:
            got = r.read_column(seg, k, sel)
            assert got.dtype == want[k].dtype and got.shape == want[k][sel].shape
            np.testing.assert_array_equal(got, want[k][sel])
        np.testing.assert_array_equal(r.read_events(seg, "time", sel), want_t[sel])
    assert r.read_column(seg, "x", slice(1, 3)).flags.writeable


def test_dataset_built_directly_is_the_one_xarray_builds(cat):
    import xarray as xr

    from databroker_lite.stream import _dataset
    ds = cat[1].primary.read()
    public = xr.Dataset({k: ds[k].variable for k in ds.data_vars},
                        coords={"time": ("time", ds["time"].values)}, attrs=ds.attrs)
    xr.testing.assert_identical(ds, public)
    assert list(ds.indexes) == ["time"] and ds.sizes == public.sizes
    t = ds["time"].values
    assert float(ds.sel(time=t[2])["x"]) == float(ds["x"][2])
    # dimensions that disagree go through xarray's constructor and its error
    bad = {"a": xr.Variable(("time", "d"), np.zeros((len(t), 2))),
           "b": xr.Variable(("time", "d"), np.zeros((len(t), 3)))}
    with pytest.raises(ValueError):
        _dataset(bad, t, {})
    # a key named "time" too
    with pytest.raises(ValueError):
        _dataset({"time": xr.Variable(("time",), np.zeros(len(t)))}, t + 1, {})


def test_dataset_info_gives_chunks_when_asked_after_the_columns_pass(cat):
    run = cat[1]
    r = run._reader()
    seg = run.primary.segments[0]
    r.columns("primary")  # fills dataset_info's answers, without chunks
    with h5py.File(run.path, "r") as f:
        ds = f[f"{seg.group}/data/vec"]
        want = (ds.name.lstrip("/"), ds.shape, ds.chunks)
    assert want[2] is not None
    assert r.dataset_info(seg, "vec", chunks=False) == (*want[:2], None)
    assert r.dataset_info(seg, "vec") == want
    assert r.dataset_info(seg, "vec", chunks=False) == want  # once found, kept
