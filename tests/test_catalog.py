"""Catalog look-ups, modes and repr (SPEC section 4)."""
from __future__ import annotations

import os
import re
import warnings

import event_model
import numpy as np
import pytest

import databroker_lite
from databroker_lite import (
    AmbiguousKey,
    CatalogError,
    DuplicateScanIDWarning,
    ReadOnlyCatalog,
    Run,
    RunNotFound,
)
from databroker_lite.errors import DatabrokerLiteError
from databroker_lite.storage.reader import RunReader

T0 = 1_600_000_000.0  # 2020-09-13, a fixed epoch so run order is known


def add_run(cat: databroker_lite.Catalog, *, scan_id: int | None = 1, t: float = T0,
            uid: str | None = None, plan_name: str = "count", n: int = 2, stop: bool = True,
            **md) -> str:
    """Insert a small run (one 'primary' stream, ``n`` events of det) and return its uid."""
    meta = {"plan_name": plan_name, "detectors": ["det"], **md}
    if scan_id is not None:
        meta["scan_id"] = scan_id
    bundle = event_model.compose_run(uid=uid, time=t, metadata=meta)
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(
        name="primary", data_keys={"det": {"source": "sim", "dtype": "number", "shape": []}}, time=t)
    cat.insert("descriptor", desc.descriptor_doc)
    for i in range(n):
        cat.insert("event", desc.compose_event(data={"det": float(i)}, timestamps={"det": t + i},
                                               seq_num=i + 1, time=t + i))
    if stop:
        cat.insert("stop", bundle.compose_stop(time=t + n))
    return bundle.start_doc["uid"]


@pytest.fixture
def cat(tmp_path) -> databroker_lite.Catalog:
    return databroker_lite.open_catalog(tmp_path / "cat")


@pytest.fixture
def five(cat) -> tuple[databroker_lite.Catalog, list[str]]:
    """Five runs, scan_ids 101..105, inserted in time order (oldest first)."""
    uids = [add_run(cat, scan_id=101 + i, t=T0 + 100 * i) for i in range(5)]
    return cat, uids


# --- mapping basics -------------------------------------------------------------

def test_len_iter_contains_items(five):
    cat, uids = five
    assert len(cat) == 5
    assert list(cat) == uids  # oldest first
    assert uids[2] in cat
    assert "not-a-uid" not in cat
    assert 103 not in cat  # membership is by uid, never by scan_id
    items = list(cat.items())
    assert [k for k, _ in items] == uids
    assert all(isinstance(r, Run) and r.uid == k for k, r in items)
    assert items[0][1].metadata["start"]["scan_id"] == 101


def test_iteration_order_follows_time_not_insertion(cat):
    late = add_run(cat, scan_id=1, t=T0 + 50)
    early = add_run(cat, scan_id=2, t=T0)
    assert list(cat) == [early, late]
    assert cat[-1].uid == late


def test_empty_catalog(cat):
    assert len(cat) == 0
    assert list(cat) == []
    with pytest.raises(RunNotFound, match="0 run"):
        cat[-1]


# --- look-ups -----------------------------------------------------------------

def test_scan_id_lookup(five):
    cat, uids = five
    run = cat[103]
    assert run.uid == uids[2]
    assert run.metadata["start"]["scan_id"] == 103
    assert run.primary.read()["det"].values.tolist() == [0.0, 1.0]


def test_negative_index_is_kth_most_recent(five):
    cat, uids = five
    assert cat[-1].uid == uids[-1]
    assert cat[-2].uid == uids[-2]
    assert cat[-5].uid == uids[0]
    with pytest.raises(RunNotFound, match="6th most recent"):
        cat[-6]


@pytest.mark.parametrize("k", [6, 100, 10**30])
def test_kth_most_recent_beyond_the_runs_is_recent_run_not_found(five, k):
    cat, _ = five
    with pytest.raises(databroker_lite.RecentRunNotFound, match="has 5 run") as info:
        cat[-k]
    assert isinstance(info.value, IndexError) and isinstance(info.value, KeyError)
    assert isinstance(info.value, RunNotFound)
    with pytest.raises(IndexError, match="no 7th most recent run|7th most recent"):
        cat.search({"scan_id": {"$gte": 103}})[-4 - 3]


@pytest.mark.parametrize("key", [10**30, -(10**30) + 0, 2**63, 2**64 + 1, 10**400])
def test_huge_scan_ids_are_not_found_not_overflow_errors(five, key):
    cat, _ = five
    if key > 0:
        with pytest.raises(RunNotFound, match=f"no run has scan_id {key}"):
            cat[key]
    assert cat.get(key) is None


@pytest.mark.parametrize("scan_id", [2**70, -(2**65), 10**400])
def test_a_run_with_a_huge_scan_id_is_stored_and_found(cat, scan_id):
    uid = add_run(cat, scan_id=scan_id)
    other = add_run(cat, scan_id=5, t=T0 + 1)
    if scan_id > 0:  # (a negative key is the k-th most recent)
        assert cat[scan_id].uid == uid
        assert cat[scan_id].metadata["start"]["scan_id"] == scan_id
    assert list(cat.search({"scan_id": scan_id})) == [uid]
    assert list(cat.search({"scan_id": {"$lt": 6}})) == ([uid, other] if scan_id < 0 else [other])
    fresh = databroker_lite.open_catalog(cat.directory)
    assert fresh.reindex()["added"] == 2 and list(fresh.search({"scan_id": scan_id})) == [uid]


def test_uid_and_unique_prefix(cat):
    a = add_run(cat, uid="777b44a0-1111-4111-8111-111111111111", scan_id=1, t=T0)
    b = add_run(cat, uid="888c55b0-2222-4222-8222-222222222222", scan_id=2, t=T0 + 1)
    assert cat[a].uid == a
    assert cat["777b44a"].uid == a
    assert cat["888c"].uid == b
    assert cat[b[:20]].uid == b


def test_ambiguous_prefix_lists_candidates(cat):
    a = add_run(cat, uid="abc12300-1111-4111-8111-111111111111", scan_id=7, t=T0, plan_name="scan")
    b = add_run(cat, uid="abc12399-2222-4222-8222-222222222222", scan_id=8, t=T0 + 60,
                plan_name="rel_scan")
    with pytest.raises(AmbiguousKey) as info:
        cat["abc123"]
    msg = str(info.value)
    assert a in msg and b in msg
    assert "scan_id=7" in msg and "scan_id=8" in msg
    assert "plan=scan" in msg and "plan=rel_scan" in msg
    assert re.search(r"time=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", msg)
    assert {c["uid"] for c in info.value.candidates} == {a, b}
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, DatabrokerLiteError)
    assert cat["abc1230"].uid == a  # one more character disambiguates


def test_missing_key_says_nothing_matched(five):
    cat, _ = five
    with pytest.raises(RunNotFound, match="no run has scan_id 999"):
        cat[999]
    with pytest.raises(RunNotFound, match="no run has a uid starting with 'zzz'"):
        cat["zzz"]
    with pytest.raises(KeyError):  # plain KeyError handlers catch both kinds
        cat["zzz"]
    with pytest.raises(KeyError):
        cat[999]
    assert cat.get(999) is None
    assert cat.get("zzz", "dflt") == "dflt"


def test_string_is_never_a_scan_id(cat):
    add_run(cat, scan_id=554, uid="c6b461f7-53aa-4b9b-9b6c-000000000554")
    assert cat[554].metadata["start"]["scan_id"] == 554
    with pytest.raises(RunNotFound) as info:
        cat["554"]
    msg = str(info.value)
    assert "'554'" in msg
    assert "scan_id use an int" in msg  # the hint


def test_digit_string_that_is_a_uid_prefix_is_a_uid(cat):
    u = add_run(cat, scan_id=1, uid="12345678-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
    add_run(cat, scan_id=12345, t=T0 + 1)
    assert cat["1234"].uid == u


def test_duplicate_scan_ids_warn_and_return_most_recent(cat):
    old = add_run(cat, scan_id=5, t=T0)
    mid = add_run(cat, scan_id=5, t=T0 + 10)
    new = add_run(cat, scan_id=5, t=T0 + 20)
    add_run(cat, scan_id=6, t=T0 + 30)
    with pytest.warns(DuplicateScanIDWarning) as rec:
        run = cat[5]
    assert run.uid == new
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "3 runs have scan_id 5" in msg
    assert old in msg and mid in msg
    assert rec[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cat[6].metadata["start"]["scan_id"] == 6  # a unique scan_id does not warn


@pytest.mark.parametrize("np_int", [np.int64, np.int32, np.uint16, np.intp])
def test_numpy_ints_are_scan_ids(five, np_int):
    cat, uids = five
    assert cat[np_int(104)].uid == uids[3]
    assert cat[np.int64(-1)].uid == uids[-1]


@pytest.mark.parametrize("key", [True, False, 101.0, np.float64(101), None, 1.5, b"777"])
def test_bad_key_types_raise_type_error(five, key):
    cat, _ = five
    with pytest.raises(TypeError):
        cat[key]


def _tamper(cat, uid: str, file: str) -> None:
    """Point the index row of a run at another file, as a hostile index would."""
    conn = cat._index.conn
    with conn:
        conn.execute("UPDATE runs SET file = ? WHERE uid = ?", (file, uid))
        # and claim to be up to date with the directory, so no refresh repairs the row first
        conn.execute("UPDATE meta SET value = ? WHERE key = 'dir_stamp'", (cat._index.dir_stamp(),))


@pytest.mark.parametrize("file", ["/etc/passwd", "../outside.h5", "sub/dir.h5", "..", ""])
def test_an_index_row_naming_a_path_is_never_followed(five, tmp_path, file):
    cat, uids = five
    outside = tmp_path / "outside.h5"
    os.link(os.path.join(cat.directory, uids[0] + ".h5"), outside)  # a real run file, elsewhere
    _tamper(cat, uids[0], str(outside) if file == "/etc/passwd" else file)
    with pytest.raises(CatalogError, match="not a run file name") as info:
        cat[101]
    assert "reindex" in str(info.value)
    # the next refresh drops the row and finds the run in its own file again
    with open(os.path.join(cat.directory, "other.txt"), "w"):
        pass  # the directory changed: a refresh happens
    assert cat[101].uid == uids[0]
    assert cat[101].path == os.path.join(cat.directory, uids[0] + ".h5")
    assert len(cat) == 5


def test_lookups_on_search_results(five):
    cat, uids = five
    sub = cat.search({"scan_id": {"$in": [101, 103, 105]}})
    assert len(sub) == 3
    assert list(sub) == [uids[0], uids[2], uids[4]]
    assert sub[-1].uid == uids[4]
    assert sub[-2].uid == uids[2]  # k-th most recent among the matches
    assert sub[-3].uid == uids[0]
    with pytest.raises(RunNotFound):
        sub[-4]
    assert sub[103].uid == uids[2]
    with pytest.raises(RunNotFound):
        sub[102]  # in the catalog, not in the search result
    assert uids[1] not in sub
    assert uids[2] in sub
    with pytest.raises(RunNotFound):
        sub[uids[1]]
    assert sub[uids[0][:8]].uid == uids[0]


def test_duplicate_scan_ids_within_search(cat):
    a = add_run(cat, scan_id=9, t=T0, plan_name="count")
    add_run(cat, scan_id=9, t=T0 + 5, plan_name="scan")
    sub = cat.search({"plan_name": "count"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sub[9].uid == a  # only one match inside the search result: no warning


# --- modes ----------------------------------------------------------------------

def test_open_creates_directory(tmp_path):
    path = tmp_path / "new" / "nested"
    cat = databroker_lite.open_catalog(path)
    assert path.is_dir()
    assert len(cat) == 0


def test_read_only_missing_directory(tmp_path):
    with pytest.raises(CatalogError, match="no catalog directory"):
        databroker_lite.open_catalog(tmp_path / "missing", mode="r")
    assert not (tmp_path / "missing").exists()


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        databroker_lite.open_catalog(tmp_path, mode="w")


def test_read_only_refuses_writes(five):
    cat, uids = five
    ro = databroker_lite.open_catalog(cat.directory, mode="r")
    assert len(ro) == 5
    assert ro[-1].uid == uids[-1]
    bundle = event_model.compose_run(metadata={"scan_id": 1})
    with pytest.raises(ReadOnlyCatalog):
        ro.insert("start", bundle.start_doc)
    with pytest.raises(ReadOnlyCatalog):
        ro.writer  # noqa: B018 - the property raises
    with pytest.raises(PermissionError):  # also a builtin PermissionError
        ro.insert("start", bundle.start_doc)
    assert len(ro) == 5
    assert not os.path.exists(os.path.join(cat.directory, bundle.start_doc["uid"] + ".h5"))
    with pytest.raises(ReadOnlyCatalog):
        ro.search({"scan_id": 101}).insert("start", bundle.start_doc)


def test_read_only_without_index_answers_from_memory(five, tmp_path):
    import shutil
    cat, uids = five
    copy = tmp_path / "copy"
    copy.mkdir()
    for u in uids:
        shutil.copy(os.path.join(cat.directory, u + ".h5"), copy)
    ro = databroker_lite.open_catalog(copy, mode="r")
    assert len(ro) == 5
    assert list(ro) == uids
    assert ro[103].uid == uids[2]
    assert len(ro.search({"scan_id": {"$gte": 104}})) == 2
    assert ro[-1].primary.read()["det"].values.tolist() == [0.0, 1.0]
    assert not (copy / ".databroker_lite").exists()  # a read-only open writes nothing


def test_read_only_on_unwritable_directory(five, tmp_path, monkeypatch):
    import shutil
    cat, uids = five
    copy = tmp_path / "ro"
    shutil.copytree(cat.directory, copy)  # run files and their index
    os.remove(copy / (uids[4] + ".h5"))  # the copied index is now out of date
    real_access = os.access

    def no_writes_under_copy(path, mode, *args, **kwargs):  # chmod does not stop root
        if mode & os.W_OK and os.path.abspath(path).startswith(str(copy)):
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", no_writes_under_copy)
    with pytest.raises(CatalogError, match="not writable"):
        databroker_lite.open_catalog(copy)
    index = copy / ".databroker_lite" / "index.sqlite"
    stamp = os.stat(index).st_mtime_ns

    def refuse(self, path, *args, **kwargs):
        raise AssertionError(f"opened {path}: the copied index should have been used")

    monkeypatch.setattr(RunReader, "__init__", refuse)
    ro = databroker_lite.open_catalog(copy, mode="r")
    assert list(ro) == uids[:4]
    assert ro[-1].uid == uids[3]
    assert len(ro.search({"scan_id": {"$gt": 102}})) == 2
    assert os.stat(index).st_mtime_ns == stamp  # the index was not written
    monkeypatch.undo()
    assert ro[-1].primary.read()["det"].values.tolist() == [0.0, 1.0]


# --- temp and repr ------------------------------------------------------------------

def test_temp_is_a_fresh_writable_catalog():
    a = databroker_lite.temp()
    b = databroker_lite.temp()
    assert a.directory != b.directory
    assert os.path.isdir(a.directory)
    uid = add_run(a)
    assert list(a) == [uid]
    assert len(b) == 0


def test_repr_is_short_and_names_location_count_newest(cat):
    uids = [add_run(cat, scan_id=200 + i, t=T0 + i, plan_name=f"plan{i}") for i in range(8)]
    text = repr(cat)
    lines = text.splitlines()
    assert len(lines) <= 8
    assert cat.directory in lines[0]
    assert "8 runs" in lines[0]
    assert uids[-1][:8] in text and "207" in text and "plan7" in text
    assert uids[0][:8] not in text  # only the newest few
    assert "3 older" in text
    sub = cat.search({"scan_id": {"$lt": 202}})
    assert "2 runs" in repr(sub) and "search" in repr(sub)


def test_repr_of_empty_and_single(cat):
    assert "0 runs" in repr(cat)
    add_run(cat, stop=False)
    text = repr(cat)
    assert "1 run" in text and "1 runs" not in text
    assert "no stop" in text


def test_finding_and_packing_do_not_import_xarray_or_schemas(tmp_path):
    """Listing, look-ups, metadata, search, pack and verify start fast: no xarray, pandas,
    dask or event-model's schemas (about half a second of imports) until data is read."""
    import subprocess
    import sys
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    for i in range(3):
        add_run(cat, scan_id=i + 1, t=T0 + i)
    code = f"""
import sys, databroker_lite
cat = databroker_lite.open_catalog({str(tmp_path / 'cat')!r}, "r")
assert len(cat) == 3 and cat[2].metadata["start"]["scan_id"] == 2 and len(cat.search({{"scan_id": 3}})) == 1
report = databroker_lite.pack(cat, {str(tmp_path / 'pack')!r}, all=True, quiet=True)
assert databroker_lite.verify({str(tmp_path / 'pack')!r}).ok
heavy = sorted(m for m in ("xarray", "pandas", "dask", "event_model", "jsonschema") if m in sys.modules)
print(heavy)
ds = cat[2].primary.read()  # reading data brings xarray in
print("xarray" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"], out.stdout
