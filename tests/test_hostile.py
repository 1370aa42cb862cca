"""Hostile input not covered elsewhere: bit-flipped run files, bogus journals, newer
packs, code-executing YAML, catastrophic regular expressions.

(Zero-length, not-HDF5, truncated, foreign-layout and future-layout files are in
tests/test_storage.py; pack tampering, escaping paths, symlinks and bad manifests in
tests/test_pack.py; SQL injection in tests/test_query.py.)
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import warnings

import event_model
import numpy as np
import pytest

import databroker_lite
from databroker_lite import config
from databroker_lite.errors import CatalogError, DatabrokerLiteError, InvalidQuery
from databroker_lite.query import RegexTimeout, regex_risk
from databroker_lite.storage import RunReader
from databroker_lite.storage import files as _files


def _run(cat, scan_id: int, n: int = 20) -> str:
    b = event_model.compose_run(metadata={"scan_id": scan_id, "plan_name": "count"})
    d = b.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "s"},
        "img": {"dtype": "array", "shape": [8, 8], "dtype_numpy": "<u2", "source": "s"}})
    cat.writer("start", b.start_doc)
    cat.writer("descriptor", d.descriptor_doc)
    for i in range(n):
        cat.writer("event", d.compose_event(data={"x": i * 0.5, "img": np.full((8, 8), i, "<u2")},
                                            timestamps={"x": 1.0, "img": 1.0}, seq_num=i + 1))
    cat.writer("stop", b.compose_stop())
    return b.start_doc["uid"]


@pytest.fixture
def two_runs(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    return cat, _run(cat, 1), _run(cat, 2)


def _read_all(cat, uid):
    run = cat[uid]
    ds = run.primary.read()
    list(run.documents())
    return ds


def test_bit_flips_anywhere_in_a_run_file_fail_that_run_only(two_runs):
    cat, good, victim = two_runs
    expected = _read_all(cat, good)
    path = cat[victim].path
    blob = open(path, "rb").read()
    outcomes = {"error": 0, "read": 0}
    for k, off in enumerate(np.linspace(0, len(blob) - 1, 40).astype(int)):
        raw = bytearray(blob)
        raw[off] ^= 1 << (k % 8)
        with open(path, "wb") as fh:
            fh.write(raw)
        _files.FILE_CACHE.clear()
        fresh = databroker_lite.open_catalog(cat.directory)
        try:
            ds = _read_all(fresh, victim)
            assert ds["x"].shape[0] <= 20
            outcomes["read"] += 1  # a flip in raw data or slack space: HDF5 cannot tell
        except KeyError:
            assert f"{victim}.h5" in fresh.bad_files  # damaged at refresh: listed, named
            outcomes["error"] += 1
        except DatabrokerLiteError as exc:
            assert victim in str(exc)
            outcomes["error"] += 1
        # the other run is untouched, and searching still works
        assert _read_all(fresh, good).equals(expected)
        assert good in fresh.search({"plan_name": "count"})
    assert outcomes["error"] > 0 and outcomes["error"] + outcomes["read"] == 40


def test_a_journal_that_is_not_ours_is_set_aside_not_applied(two_runs):
    cat, good, victim = two_runs
    path = cat[victim].path
    before = open(path, "rb").read()
    for content in (b"garbage" * 100, _files._MAGIC + b"{not json}\n",
                    _files._MAGIC + json.dumps({"size": len(before) * 2}).encode() + b"\n",
                    # a journal of another file (copied along with it, say)
                    _files._MAGIC + json.dumps({"size": 10, "file": "other.h5"}).encode() + b"\n",
                    _files._MAGIC + json.dumps({"size": 10, "file": os.path.basename(path),
                                                "ino": os.stat(path).st_ino + 1}).encode() + b"\n"):
        with open(path + _files.JOURNAL_SUFFIX, "wb") as fh:
            fh.write(content)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = RunReader(path)
        assert r.stop is not None
        assert open(path, "rb").read() == before  # nothing applied, nothing truncated
        assert not os.path.exists(path + _files.JOURNAL_SUFFIX)
        assert os.path.exists(path + _files.JOURNAL_SUFFIX + ".invalid")
        assert any("was not applied" in str(x.message) for x in w)
    # a header cut short (the writer died writing it) is simply dropped
    with open(path + _files.JOURNAL_SUFFIX, "wb") as fh:
        fh.write(_files._MAGIC[:3])
    assert RunReader(path).stop is not None and open(path, "rb").read() == before


def test_a_pack_from_a_newer_version_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    from databroker_lite import packing as P
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "configs"))
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / "manifest.json").write_text(json.dumps(
        {"format": "databroker_lite-pack", "version": 99, "runs": [], "files": []}))
    with pytest.raises(P.PackError, match="newer"):
        P.unpack(dest, "future", to=tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "configs").exists() or not os.listdir(tmp_path / "configs")


def test_yaml_config_asking_for_code_execution_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "configs"
    d.mkdir()
    marker = tmp_path / "pwned"
    (d / "evil.yml").write_text(
        "sources:\n"
        "  evil:\n"
        "    driver: databroker_lite\n"
        f"    args: !!python/object/apply:os.system ['touch {marker}']\n")
    (d / "good.yml").write_text(
        f"sources:\n  good:\n    driver: databroker_lite\n    args:\n      path: {tmp_path / 'cat'}\n")
    databroker_lite.open_catalog(tmp_path / "cat")
    monkeypatch.setenv(config.ENV_VAR, str(d))
    with pytest.warns(UserWarning, match="evil.yml"):
        names = list(config.catalog)
    assert names == ["good"]
    assert not marker.exists()
    with pytest.raises(databroker_lite.CatalogError, match="evil.yml.*python/object"):
        config.read_config_file(str(d / "evil.yml"))
    assert not marker.exists()


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a|aa)*$", r"^(\w+\s?)*$", r"(.*a){12}", r"(x)\1"])
def test_catastrophic_regex_is_refused_before_it_runs(two_runs, pattern):
    cat, *_ = two_runs
    assert regex_risk(pattern)
    with pytest.raises(InvalidQuery, match="refused"):
        cat.search({"plan_name": {"$regex": pattern}})


@pytest.mark.parametrize("pattern", [r"^count$", r"co.*t", r"(foo|count)", r"^[a-z]+$", r"c(?:ou)+nt"])
def test_ordinary_regexes_still_work(two_runs, pattern):
    cat, *_ = two_runs
    assert regex_risk(pattern) is None
    assert len(cat.search({"plan_name": {"$regex": pattern}})) == 2


def test_polynomial_regex_on_a_huge_value_is_time_limited(tmp_path, monkeypatch):
    from databroker_lite import query
    monkeypatch.setattr(query, "REGEX_TIME_LIMIT", 0.3)
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = event_model.compose_run(metadata={"note": "a" * 20000})
    cat.writer("start", b.start_doc)
    cat.writer("stop", b.compose_stop())
    with pytest.warns(RegexTimeout, match="abandoned"):
        found = list(cat.search({"note": {"$regex": ".*.*.*x"}}))  # ~n**3 steps: hours unchecked
    assert found == []
    # the catalog is fine afterwards, and ordinary searches still match
    assert list(cat.search({"note": {"$regex": "^a+$"}})) == [b.start_doc["uid"]]


def test_disk_full_error_is_ours_and_an_oserror(tmp_path):
    """A real full index (SQLite says SQLITE_FULL): callers catch it as our error or as
    OSError, and read ENOSPC from errno."""
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    conn = cat._index.conn
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    other = databroker_lite.open_catalog(tmp_path / "other")
    b = event_model.compose_run(metadata={"notes": "x" * 200_000})
    other.writer("start", b.start_doc)
    other.writer("stop", b.compose_stop())
    shutil.copy(os.path.join(other.directory, f"{b.start_doc['uid']}.h5"), cat.directory)
    with pytest.raises(OSError) as info:
        cat.refresh()
    assert isinstance(info.value, CatalogError) and isinstance(info.value, DatabrokerLiteError)
    assert info.value.errno == errno.ENOSPC and "reindex" in str(info.value)


def test_nul_characters_in_data_are_kept_and_in_names_refused(tmp_path):
    # HDF5 strings end at NUL: a string value with one is kept as JSON text (with a
    # warning), a key name with one cannot be an HDF5 name and is refused up front
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = event_model.compose_run()
    cat.writer("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys={"s": {"dtype": "string", "shape": [], "source": "x"}})
    cat.writer("descriptor", d.descriptor_doc)
    with pytest.warns(databroker_lite.DescriptorMismatchWarning, match="NUL"):
        cat.writer("event", d.compose_event(data={"s": "a\x00b"}, timestamps={"s": 1.0}, seq_num=1))
    cat.writer("event", d.compose_event(data={"s": "ab"}, timestamps={"s": 1.0}, seq_num=2))
    bad = b.compose_descriptor(name="other", data_keys={"k\x00": {"dtype": "number", "shape": [], "source": "x"}})
    with pytest.raises(databroker_lite.errors.InvalidDocument, match="NUL"):
        cat.writer("descriptor", bad.descriptor_doc)
    cat.writer("stop", b.compose_stop())
    run = databroker_lite.open_catalog(cat.directory)[b.start_doc["uid"]]
    assert list(run) == ["primary"] and run.primary.read()["s"].values.tolist() == ["a\x00b", "ab"]
    assert [d["data"]["s"] for n, d in run.documents() if n == "event"] == ["a\x00b", "ab"]


# --- look-ups and search over odd entries in a catalog directory (h13) -------------

def _no_hang(seconds: float = 20.0):
    """Fail instead of hanging for ever (a FIFO opened for reading blocks)."""
    import signal

    def boom(signum, frame):
        raise AssertionError(f"hung for {seconds} s")
    signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _stop_alarm():
    import signal
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)


def test_a_corrupt_run_file_is_named_in_the_lookup_error(two_runs):
    cat, good, victim = two_runs
    path = cat[victim].path
    with open(path, "r+b") as fh:
        fh.write(b"garbage!" * 64)  # the superblock is gone
    _files.FILE_CACHE.clear()
    open(os.path.join(cat.directory, "notes.txt"), "w").close()  # the directory changes too
    fresh = databroker_lite.open_catalog(cat.directory)
    for key in (2, victim, victim[:8]):
        with pytest.raises(databroker_lite.RunFileUnreadable) as info:
            fresh[key]
        msg = str(info.value)
        assert path in msg and "could not be read" in msg and "cat.bad_files" in msg
        assert list(info.value.files) == [path]
        assert isinstance(info.value, KeyError)  # still a RunNotFound / KeyError
    assert list(fresh.bad_files) == [f"{victim}.h5"]
    # a look-up that no bad file can answer is the plain "not found"
    with pytest.raises(databroker_lite.RunNotFound, match="no run has a uid starting with 'zz'") as info:
        fresh["zz"]
    assert type(info.value) is databroker_lite.RunNotFound
    assert fresh[1].uid == good


@pytest.mark.parametrize("kind", ["symlink loop", "dangling symlink", "fifo", "directory"])
def test_odd_entries_named_like_runs_cost_only_themselves(two_runs, kind):
    cat, good, other = two_runs
    name = "0bad0000-0000-4000-8000-000000000000.h5"
    path = os.path.join(cat.directory, name)
    if kind == "symlink loop":
        os.symlink(name, path)
    elif kind == "dangling symlink":
        os.symlink("/nonexistent/run.h5", path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkdir(path)
    _no_hang()
    try:
        fresh = databroker_lite.open_catalog(cat.directory)
        assert list(fresh) == [good, other]
        assert list(fresh.bad_files) == [name]
        assert path in fresh.bad_files[name]
        assert _read_all(fresh, good)["x"].shape == (20,)
        with pytest.raises(databroker_lite.RunFileUnreadable, match="0bad0000"):
            fresh["0bad"]
        assert fresh.reindex()["bad"] == 1
        ro = databroker_lite.open_catalog(cat.directory, mode="r")
        assert len(ro) == 2 and list(ro.bad_files) == [name]
    finally:
        _stop_alarm()


def test_a_run_file_replaced_by_a_fifo_does_not_hang_a_read(two_runs):
    cat, good, victim = two_runs
    path = cat[victim].path
    run = cat[victim]  # looked up before the file was replaced
    os.remove(path)
    os.mkfifo(path)
    _files.FILE_CACHE.clear()
    _no_hang()
    try:
        with pytest.raises(databroker_lite.CorruptRunFile, match="FIFO"):
            run.primary.read()
        fresh = databroker_lite.open_catalog(cat.directory)
        with pytest.raises(databroker_lite.RunFileUnreadable, match="FIFO"):
            fresh[2]
        assert f"{victim}.h5" in fresh.bad_files and list(fresh) == [good]
    finally:
        _stop_alarm()


def test_a_run_file_gone_bad_is_remembered_by_its_scan_id(two_runs):
    cat, good, victim = two_runs
    path = cat[victim].path
    with open(path, "r+b") as fh:
        fh.write(b"garbage!" * 64)
    _files.FILE_CACHE.clear()
    open(os.path.join(cat.directory, "notes.txt"), "w").close()
    for fresh in (databroker_lite.open_catalog(cat.directory),
                  databroker_lite.open_catalog(cat.directory)):
        with pytest.raises(databroker_lite.RunFileUnreadable,
                           match=f"no run has scan_id 2 that can be read: the run file that held it "
                                 f"could not be read:\n  {path} .uid {victim}, scan_id 2.: "):
            fresh[2]
        with pytest.raises(databroker_lite.RunNotFound) as info:
            fresh[7]  # the bad file held scan_id 2: scan_id 7 is simply not there
        assert type(info.value) is databroker_lite.RunNotFound
        fresh.reindex()  # a rebuild keeps what the bad file held
    with pytest.raises(databroker_lite.RunFileUnreadable, match="scan_id 2"):
        databroker_lite.open_catalog(cat.directory)[2]
