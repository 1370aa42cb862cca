"""Run files on disk: plain-h5py readability of the layout, and corrupt or foreign files."""
from __future__ import annotations

import json
import os
import shutil
import threading

import h5py
import numpy as np
import pytest
from conftest import insert_all, make_run_docs

import databroker_lite
from databroker_lite import CorruptRunFile, RunNotFound, UnsupportedLayout
from databroker_lite.storage import LAYOUT_VERSION


def _run_file(cat, uid: str) -> str:
    path = os.path.join(cat.directory, f"{uid}.h5")
    assert os.path.isfile(path)
    return path


def test_layout_is_readable_with_plain_h5py(cat, run_docs):
    insert_all(cat, run_docs)
    start = run_docs[0][1]
    desc = run_docs[1][1]
    with h5py.File(_run_file(cat, start["uid"]), "r") as f:
        assert f.attrs["databroker_lite_layout"] == LAYOUT_VERSION == 1
        assert json.loads(f["start"][()]) == start
        assert json.loads(f["stop"][()]) == run_docs[-1][1]
        g = f["streams/primary/0"]
        assert json.loads(g["descriptor"][()]) == desc
        assert g["uid"].asstr()[:].tolist() == [d["uid"] for n, d in run_docs if n == "event"]
        assert g["seq_num"][:].tolist() == [1, 2, 3, 4, 5]
        expected = {"x": (np.float64, (5,)), "n": (np.int64, (5,)), "flag": (np.bool_, (5,)),
                    "vec": (np.float64, (5, 3))}
        for key, (dtype, shape) in expected.items():
            ds = g["data"][key]
            assert ds.dtype == dtype, key
            assert ds.shape == shape, key
            assert ds.chunks is not None, key
            assert ds.maxshape[0] is None, key
            assert ds.maxshape[1:] == shape[1:], key
        assert g["data/x"][:].tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
        assert g["data/label"].asstr()[:].tolist() == [f"point {i}" for i in range(5)]
        assert g["data/vec"][4].tolist() == [4.0, 4.5, -4.0]
        assert g["timestamps/x"].shape == (5,)


def test_stream_names_with_slashes_are_escaped(cat):
    docs = make_run_docs(2, stream="a/b")
    insert_all(cat, docs)
    run = cat[-1]
    assert list(run) == ["a/b"]
    assert run["a/b"].read()["x"].values.tolist() == [0.0, 1.5]
    with h5py.File(_run_file(cat, docs[0][1]["uid"]), "r") as f:
        assert len(f["streams"]) == 1


# --- corrupt and foreign files -------------------------------------------------

@pytest.fixture
def good_cat(cat):
    """A catalog with two good runs (scan_id 1 and 2)."""
    insert_all(cat, make_run_docs(3, metadata={"scan_id": 1, "plan_name": "count"}))
    insert_all(cat, make_run_docs(3, metadata={"scan_id": 2, "plan_name": "scan"}))
    return cat


def _check_rest_works(cat, bad_name: str) -> None:
    cat.refresh()
    assert len(cat) == 2
    assert cat[1].primary.read()["x"].values.tolist() == [0.0, 1.5, 3.0]
    assert cat[-1].metadata["start"]["scan_id"] == 2
    assert len(cat.search({"plan_name": "scan"})) == 1
    assert bad_name in cat.bad_files
    # a fresh catalog object over the same directory sees the same
    again = databroker_lite.open_catalog(cat.directory, mode="r")
    assert len(again) == 2
    assert bad_name in again.bad_files


def _write_bad(cat, name: str, content: bytes) -> str:
    path = os.path.join(cat.directory, name)
    with open(path, "wb") as fh:
        fh.write(content)
    return path


def test_zero_length_file(good_cat):
    _write_bad(good_cat, "empty.h5", b"")
    _check_rest_works(good_cat, "empty.h5")


def test_text_file_named_h5(good_cat):
    _write_bad(good_cat, "x.h5", b"this is not HDF5\n" * 100)
    _check_rest_works(good_cat, "x.h5")
    assert "x.h5" in good_cat.bad_files["x.h5"] or "HDF5" in good_cat.bad_files["x.h5"]


def test_truncated_copy_of_a_run(good_cat, tmp_path, monkeypatch):
    other = databroker_lite.open_catalog(tmp_path / "other")
    docs = make_run_docs(50, metadata={"scan_id": 9})
    insert_all(other, docs)
    src = os.path.join(other.directory, f"{docs[0][1]['uid']}.h5")
    with open(src, "rb") as fh:
        blob = fh.read()
    _write_bad(good_cat, "truncated.h5", blob[: len(blob) // 2])
    from databroker_lite.storage import files
    waits = []
    real_sleep, here = files.time.sleep, threading.current_thread()

    def sleep(s: float) -> None:  # time.sleep is global: another test's threads sleep too
        if threading.current_thread() is here:
            waits.append(s)
        else:
            real_sleep(s)

    monkeypatch.setattr(files.time, "sleep", sleep)
    _check_rest_works(good_cat, "truncated.h5")
    # a damaged file is not mistaken for a locked one: no waiting for a lock to go away
    assert waits == []
    with pytest.raises(RunNotFound):
        good_cat[9]


def test_run_truncated_in_place_raises_naming_the_file(good_cat):
    run = good_cat[2]
    path = run.path
    uid = run.uid
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(CorruptRunFile, match=os.path.basename(path)):
        databroker_lite.storage.RunReader(path)
    # the index may still list it (the directory did not change): opening it names the file
    if uid in good_cat:
        with pytest.raises(CorruptRunFile, match=os.path.basename(path)):
            good_cat[uid].primary.read()
    good_cat.refresh()
    # The index keeps listing a file it already knew when it cannot read it (it may be a
    # run mid-flush in another process); either way the damage is reported by name.
    if uid in good_cat:
        with pytest.raises(CorruptRunFile, match=os.path.basename(path)):
            good_cat[uid].primary.read()
    else:
        assert f"{uid}.h5" in good_cat.bad_files
    assert good_cat[1].primary.read()["x"].values.tolist() == [0.0, 1.5, 3.0]
    assert len(good_cat.search({"plan_name": "count"})) == 1


def test_someone_elses_hdf5_layout(good_cat):
    path = os.path.join(good_cat.directory, "foreign.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data", data=np.arange(10))
        f.attrs["NX_class"] = "NXroot"
    _check_rest_works(good_cat, "foreign.h5")
    assert "databroker_lite_layout" in good_cat.bad_files["foreign.h5"]
    with pytest.raises(CorruptRunFile, match="foreign.h5"):
        databroker_lite.storage.RunReader(path)


def test_future_layout_version(good_cat, tmp_path):
    other = databroker_lite.open_catalog(tmp_path / "other")
    docs = make_run_docs(2, metadata={"scan_id": 5})
    insert_all(other, docs)
    src = os.path.join(other.directory, f"{docs[0][1]['uid']}.h5")
    dst = os.path.join(good_cat.directory, "future.h5")
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        f.attrs["databroker_lite_layout"] = LAYOUT_VERSION + 1
    _check_rest_works(good_cat, "future.h5")
    assert "layout version 2" in good_cat.bad_files["future.h5"]
    with pytest.raises(UnsupportedLayout, match="future.h5"):
        databroker_lite.storage.RunReader(dst)
    with pytest.raises(RunNotFound):
        good_cat[5]


def test_future_layout_in_place_raises_unsupported(good_cat):
    run = good_cat[1]
    with h5py.File(run.path, "a") as f:
        f.attrs["databroker_lite_layout"] = LAYOUT_VERSION + 1
    from databroker_lite.storage.files import FILE_CACHE
    FILE_CACHE.clear()
    with pytest.raises(UnsupportedLayout, match=os.path.basename(run.path)):
        databroker_lite.open_catalog(good_cat.directory)[run.uid].primary.read()


@pytest.mark.parametrize("start", [b'{"time": 1}', b'[1, 2]'])
def test_start_document_without_uid_is_named_damage(good_cat, start):
    """A run file whose start has no uid: CorruptRunFile naming the file, listed as bad."""
    run = good_cat[2]
    with h5py.File(run.path, "r+") as f:
        del f["start"]
        f["start"] = start
    from databroker_lite.storage.reader import RunSummary
    for reader in (RunSummary, databroker_lite.storage.RunReader):
        with pytest.raises(CorruptRunFile, match=f"{os.path.basename(run.path)}: its start document has no uid"):
            reader(run.path)


def _heads(path: str, monkeypatch) -> list:
    """(start, stop, uid, streams) or the error, as RunSummary reads it (its fast path and
    its careful one) and as RunReader does: one head reader serves them all."""
    from databroker_lite.storage import reader as reader_mod
    from databroker_lite.storage.files import FILE_CACHE

    def careful(p):
        with monkeypatch.context() as m:
            m.setattr(reader_mod, "_fast_head", lambda _: None)
            return reader_mod.RunSummary(p)

    out = []
    for read in (reader_mod.RunSummary, careful, reader_mod.RunReader):
        FILE_CACHE.clear()
        try:
            r = read(path)
            out.append((r.start, r.stop, r.uid, list(r.stream_names)))
        except Exception as exc:  # noqa: BLE001 - the error is what is compared
            out.append((type(exc), str(exc)))
    return out


@pytest.mark.parametrize("change", ["none", "no stop", "fixed-length start", "text layout",
                                    "layout 99"])
def test_run_summary_and_reader_read_a_head_alike(good_cat, change, monkeypatch):
    """Files as the writer writes them and as other tools might (a fixed-length start,
    the layout version as text): RunSummary (fast or careful) and RunReader agree."""
    run = good_cat[1]
    start = dict(run.metadata["start"])
    with h5py.File(run.path, "r+") as f:
        if change == "no stop":
            del f["stop"]
        elif change == "fixed-length start":  # not what the writer writes; another tool might
            del f["start"]
            f.create_dataset("start", data=np.bytes_(json.dumps(start)))
        elif change == "text layout":
            f.attrs["databroker_lite_layout"] = "1"
        elif change == "layout 99":
            f.attrs["databroker_lite_layout"] = 99
    heads = _heads(run.path, monkeypatch)
    assert heads[0] == heads[1] == heads[2], heads
    if change == "layout 99":
        assert heads[0][0] is UnsupportedLayout
        assert os.path.basename(run.path) in heads[0][1] and "version 99" in heads[0][1]
    else:
        assert heads[0][0] == start and heads[0][2] == run.uid and heads[0][3] == ["primary"]
        assert (heads[0][1] is None) == (change == "no stop")
