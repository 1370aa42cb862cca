"""The derived SQLite index: rebuildable, follows the files, lazy, safe with concurrent readers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import event_model
import pytest

import databroker_lite
from databroker_lite import Run
from databroker_lite.storage.reader import RunReader, RunSummary

T0 = 1_600_000_000.0


def add_run(cat: databroker_lite.Catalog, *, scan_id: int = 1, t: float = T0,
            plan_name: str = "count", n: int = 2, **md) -> str:
    """Insert a small finished run and return its uid."""
    bundle = event_model.compose_run(time=t, metadata={"scan_id": scan_id, "plan_name": plan_name,
                                                        **md})
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(
        name="primary", data_keys={"det": {"source": "sim", "dtype": "number", "shape": []}}, time=t)
    cat.insert("descriptor", desc.descriptor_doc)
    for i in range(n):
        cat.insert("event", desc.compose_event(data={"det": float(i)}, timestamps={"det": t + i},
                                               seq_num=i + 1, time=t + i))
    cat.insert("stop", bundle.compose_stop(time=t + n))
    return bundle.start_doc["uid"]


def answers(cat: databroker_lite.Catalog) -> dict:
    """What a user would ask a catalog, as plain values."""
    return {
        "len": len(cat),
        "uids": list(cat),
        "newest": cat[-1].uid if len(cat) else None,
        "scan_3": cat[3].uid if len(cat.search({"scan_id": 3})) else None,
        "counts": list(cat.search({"plan_name": "count"})),
        "sample": list(cat.search({"sample.name": "Cu"})),
        "stop_status": [cat[u].metadata["stop"]["exit_status"] for u in cat],
    }


@pytest.fixture
def four(tmp_path) -> tuple[databroker_lite.Catalog, list[str]]:
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    uids = [add_run(cat, scan_id=i + 1, t=T0 + 10 * i, plan_name=("count", "scan")[i % 2],
                    sample={"name": "Cu" if i < 2 else "Fe"}) for i in range(4)]
    return cat, uids


def test_index_lives_in_hidden_directory(four):
    cat, uids = four
    assert os.path.isfile(os.path.join(cat.directory, ".databroker_lite", "index.sqlite"))
    assert sorted(os.listdir(cat.directory)) == sorted([".databroker_lite", *(u + ".h5" for u in uids)])


def test_deleted_index_is_rebuilt_with_same_answers(four):
    cat, uids = four
    before = answers(cat)
    assert before["uids"] == uids and before["len"] == 4
    shutil.rmtree(os.path.join(cat.directory, ".databroker_lite"))
    again = databroker_lite.open_catalog(cat.directory)
    assert answers(again) == before
    assert os.path.isfile(os.path.join(cat.directory, ".databroker_lite", "index.sqlite"))
    ro = databroker_lite.open_catalog(cat.directory, mode="r")
    assert answers(ro) == before


@pytest.mark.parametrize("content", [b"", b"not a database" * 100])
@pytest.mark.parametrize("mode", ["a", "r"])
def test_damaged_index_file_is_replaced(four, content, mode):
    cat, uids = four
    before = answers(cat)
    index_dir = os.path.join(cat.directory, ".databroker_lite")
    shutil.rmtree(index_dir)
    os.mkdir(index_dir)
    with open(os.path.join(index_dir, "index.sqlite"), "wb") as f:
        f.write(content)
    again = databroker_lite.open_catalog(cat.directory, mode=mode)
    assert answers(again) == before
    if mode == "r":  # read-only answers from memory and leaves the file alone
        with open(os.path.join(index_dir, "index.sqlite"), "rb") as f:
            assert f.read() == content
    else:
        assert answers(databroker_lite.open_catalog(cat.directory, mode="r")) == before


def test_reindex_method_rebuilds(four):
    cat, uids = four
    before = answers(cat)
    counts = cat.reindex()
    assert counts["added"] == 4 and counts["bad"] == 0
    assert answers(cat) == before


def test_run_file_copied_in_by_hand_is_seen(four, tmp_path):
    cat, uids = four
    other = databroker_lite.open_catalog(tmp_path / "other")
    new = add_run(other, scan_id=99, t=T0 + 1000, plan_name="count")
    already_open = cat.search({"plan_name": "count"})
    assert len(cat) == 4 and len(already_open) == 2
    shutil.copy(os.path.join(other.directory, new + ".h5"), cat.directory)
    # an already-open catalog sees it on its next call, and so do its search results
    assert len(cat) == 5
    assert cat[-1].uid == new
    assert cat[99].uid == new
    assert new in cat
    assert list(already_open)[-1] == new
    assert cat[-1].primary.read()["det"].values.tolist() == [0.0, 1.0]
    # a catalog opened afterwards too, read-only or not
    assert list(databroker_lite.open_catalog(cat.directory)) == [*uids, new]
    assert list(databroker_lite.open_catalog(cat.directory, mode="r")) == [*uids, new]


def test_deleted_run_file_is_gone(four):
    cat, uids = four
    os.remove(os.path.join(cat.directory, uids[1] + ".h5"))
    assert len(cat) == 3
    assert list(cat) == [uids[0], uids[2], uids[3]]
    assert uids[1] not in cat
    with pytest.raises(databroker_lite.RunNotFound):
        cat[2]
    assert len(cat.search({"plan_name": "scan"})) == 1
    assert list(databroker_lite.open_catalog(cat.directory, mode="r")) == [uids[0], uids[2], uids[3]]


def test_unreadable_files_are_reported_not_listed(four):
    cat, uids = four
    with open(os.path.join(cat.directory, "junk.h5"), "wb") as f:
        f.write(b"this is not HDF5")
    with open(os.path.join(cat.directory, "notes.txt"), "w") as f:
        f.write("ignored: not a run file name")
    assert list(cat) == uids
    assert list(cat.bad_files) == ["junk.h5"]
    assert "junk.h5" in cat.bad_files["junk.h5"]  # the reason names the file
    counts = cat.reindex()
    assert counts["bad"] == 1 and counts["added"] == 4
    os.remove(os.path.join(cat.directory, "junk.h5"))
    assert cat.bad_files == {}


def test_unreadable_run_listed_only_while_it_has_no_stop(four, monkeypatch):
    """A run without a stop may be mid-flush in another process: it stays listed.
    A finished run that no longer reads is damaged: it moves to bad_files."""
    cat, uids = four
    from databroker_lite.errors import CorruptRunFile
    with cat._index.conn:  # pretend uids[2] is still being written
        cat._index.conn.execute("UPDATE runs SET stop = NULL WHERE uid = ?", (uids[2],))

    def mid_flush(self, path):
        raise CorruptRunFile(f"{path}: damaged run file (truncated)")

    monkeypatch.setattr(RunSummary, "__init__", mid_flush)
    for u in uids[1:3]:
        p = os.path.join(cat.directory, u + ".h5")
        st = os.stat(p)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with open(os.path.join(cat.directory, "junk.h5"), "wb") as f:  # also changes the directory
        f.write(b"junk")
    assert list(cat) == [uids[0], uids[2], uids[3]]
    assert sorted(cat.bad_files) == sorted(["junk.h5", uids[1] + ".h5"])


def test_lookups_do_not_open_run_files(four, monkeypatch):
    cat, uids = four
    opened: list[str] = []

    def refuse(self, path, *args, **kwargs):
        opened.append(os.fspath(path))
        raise AssertionError(f"a look-up opened {path}")

    monkeypatch.setattr(RunReader, "__init__", refuse)
    monkeypatch.setattr(RunSummary, "__init__", refuse)
    fresh = databroker_lite.open_catalog(cat.directory, mode="r")
    for c in (cat, fresh):
        assert len(c) == 4
        assert list(c) == uids
        assert uids[0] in c
        assert [u for u, _ in c.items()] == uids
        assert len(c.search({"sample.name": "Cu", "scan_id": {"$gt": 1}})) == 1
        for key in (-1, 3, uids[2], uids[2][:7]):
            run = c[key]  # a Run object is made from the index alone
            assert isinstance(run, Run)
        assert c[-1].uid == uids[3] and c[3].uid == uids[2]
        repr(c)
    assert opened == []
    if cat._index.kind == "sqlite":  # PostgreSQL's jsonb re-encodes them: read from the file
        # start and stop come from the index row while the file is as the index saw it
        assert cat[-1].metadata["start"]["uid"] == uids[3]
        assert opened == []
    with pytest.raises(AssertionError, match="opened"):
        cat[-1].primary  # noqa: B018 - the file is opened only when the run's content is asked for
    assert opened == [os.path.join(cat.directory, uids[3] + ".h5")]


def test_lookups_use_the_index_not_the_files(four, monkeypatch):
    """A look-up does not even list the directory when nothing changed in it."""
    cat, uids = four
    len(cat)
    calls = []
    real_scandir = os.scandir

    def counting_scandir(*args, **kwargs):
        calls.append(args)
        return real_scandir(*args, **kwargs)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    assert cat[-1].uid == uids[-1]
    assert len(cat.search({"plan_name": "scan"})) == 2
    assert calls == []


WRITER = textwrap.dedent("""
    import sys, time
    import event_model
    import databroker_lite

    cat = databroker_lite.open_catalog(sys.argv[1])
    for i in range(int(sys.argv[2])):
        b = event_model.compose_run(metadata={"scan_id": i + 1, "plan_name": "count"})
        cat.insert("start", b.start_doc)
        d = b.compose_descriptor(name="primary",
                                 data_keys={"det": {"source": "sim", "dtype": "number", "shape": []}})
        cat.insert("descriptor", d.descriptor_doc)
        for j in range(4):
            cat.insert("event", d.compose_event(data={"det": float(j)}, timestamps={"det": time.time()},
                                                seq_num=j + 1))
            cat.writer.flush()
            time.sleep(0.005)
        cat.insert("stop", b.compose_stop())
        print("wrote", i + 1, flush=True)
""")


def test_readers_while_another_process_writes(tmp_path):
    path = tmp_path / "busy"
    path.mkdir()
    n_runs = 12
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n_runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        open_rw = databroker_lite.open_catalog(path)
        seen = {"rw": [], "r": [], "new": []}
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            open_r = databroker_lite.open_catalog(path, mode="r")
            for label, c in (("rw", open_rw), ("r", open_r)):
                n = len(c)
                seen[label].append(n)
                assert len(list(c.search({"plan_name": "count"}))) >= n
                if n:
                    newest = c[-1]
                    assert newest.uid in c
            seen["new"].append(len(databroker_lite.open_catalog(path)))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "database is locked" not in err
    assert out.split()[-1] == str(n_runs)
    for label, counts in seen.items():
        assert counts == sorted(counts), f"{label} count went down: {counts}"
    assert len(seen["rw"]) > 3  # the readers really ran alongside the writer
    final = databroker_lite.open_catalog(path, mode="r")
    assert len(final) == n_runs == len(open_rw)
    assert [final[u].metadata["start"]["scan_id"] for u in final] == list(range(1, n_runs + 1))
    assert all(final[u].metadata["stop"]["exit_status"] == "success" for u in final)
    assert all(len(final[u].primary.read()["time"]) == 4 for u in final)
    assert final.bad_files == {}
    assert "no stop" not in repr(final)  # the index knows every run finished


def _fill_index(cat: databroker_lite.Catalog) -> None:
    """Make the index's disk full, as SQLite sees it: no page beyond those it has."""
    conn = cat._index.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def test_full_index_disk_keeps_writing_runs_and_says_so(four, tmp_path):
    cat, uids = four
    _fill_index(cat)
    big = {"notes": "x" * 200_000}  # start documents too big for the pages left
    with pytest.warns(databroker_lite.IndexNotUpdated, match="cannot update the catalog index") as rec:
        new = [add_run(cat, scan_id=10 + i, t=T0 + 100 + i, **big) for i in range(2)]
    msg = str(rec[0].message)
    assert "database or disk is full" in msg and "reindex" in msg and new[0] in msg
    for uid in new:  # the runs themselves are whole on disk
        assert os.path.exists(os.path.join(cat.directory, f"{uid}.h5"))
        ds = RunReader(os.path.join(cat.directory, f"{uid}.h5"))
        assert ds.stop["exit_status"] == "success"
    # bringing the full index up to date names the problem and the fix
    with pytest.raises(databroker_lite.CatalogError, match="cannot update the catalog index") as exc:
        cat.refresh()
    assert exc.value.errno == 28  # ENOSPC
    # with room again, the index catches up from the files
    cat._index.conn.execute("PRAGMA max_page_count = 1073741823")
    fresh = databroker_lite.open_catalog(cat.directory)
    assert set(fresh) == set(uids) | set(new)
    assert fresh[10].metadata["start"]["notes"] == big["notes"]


def _make_v1(cat: databroker_lite.Catalog) -> None:
    """Turn the index into one of schema 1 (before full text and bad-file memory)."""
    conn = cat._index.conn
    conn.commit()
    conn.execute("DROP TRIGGER runs_text_gone")
    conn.execute("DROP TABLE runs_text")
    conn.execute("DROP TRIGGER fields_gone")
    conn.execute("DROP TABLE fields")
    conn.execute("DROP TABLE bad_files")
    conn.execute("CREATE TABLE bad_files (file TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, "
                 "error TEXT)")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    cat._index.close()


@pytest.mark.parametrize("mode", ["a", "r"])
def test_an_index_of_schema_1_or_2_is_upgraded_in_place_without_reading_the_runs(four, monkeypatch, mode):
    cat, uids = four
    if cat._index.kind != "sqlite":
        pytest.skip("the SQLite index's own schema upgrade")
    _make_v1(cat)

    def no_reads(self, path):
        raise AssertionError("the upgrade read a run file")
    monkeypatch.setattr(RunSummary, "__init__", no_reads)
    up = databroker_lite.open_catalog(cat.directory, mode=mode)
    assert list(up.search({"$text": {"$search": "Fe"}})) == uids[2:]
    assert list(up.search({"sample.name": "Fe"})) == uids[2:]
    assert list(up.search({"stop.exit_status": {"$in": ["success", "x", "y", "z"]}})) == uids
    assert list(up) == uids
    from databroker_lite.index import SCHEMA_VERSION
    assert up._index._meta("schema_version") == str(SCHEMA_VERSION) == "3"
    monkeypatch.undo()
    with open(os.path.join(cat.directory, "junk.h5"), "wb") as f:
        f.write(b"junk")
    assert list(up.bad_files) == ["junk.h5"]


def test_full_text_follows_updates_and_removals(four):
    cat, uids = four
    assert list(cat.search({"$text": {"$search": "Cu"}})) == uids[:2]
    os.remove(os.path.join(cat.directory, uids[0] + ".h5"))
    assert list(cat.search({"$text": {"$search": "Cu"}})) == uids[1:2]
    new = add_run(cat, scan_id=9, t=T0 + 100, sample={"name": "Cu"})
    assert list(cat.search({"$text": {"$search": "cu"}})) == [uids[1], new]
    assert cat.reindex()["added"] == 4
    assert list(cat.search({"$text": {"$search": "cu"}})) == [uids[1], new]
    if cat._index.kind == "sqlite":
        n_text = cat._index.conn.execute("SELECT COUNT(*) FROM runs_text").fetchone()[0]
        assert n_text == len(cat) == 4  # one row per run, none left behind


def test_a_search_sqlite_cannot_run_is_our_error(four, monkeypatch):
    cat, _ = four
    import sqlite3
    real = cat._index.conn

    class Broken:
        def __getattr__(self, name):
            return getattr(real, name)

        def __enter__(self):
            return real.__enter__()

        def __exit__(self, *exc):
            return real.__exit__(*exc)

        def execute(self, sql, *args):
            if "SELECT uid FROM runs WHERE" in sql:
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)
    monkeypatch.setattr(type(cat._index), "conn", property(lambda self: Broken()))
    with pytest.raises(databroker_lite.CatalogError, match="the search failed .disk I/O error"):
        list(cat.search({"plan_name": "count"}))


def _messy(four) -> databroker_lite.Catalog:
    """four runs, a file that is not HDF5, a copy of a run under another name, a run
    without a stop and one with a newer layout."""
    cat, uids = four
    with open(os.path.join(cat.directory, "junk.h5"), "wb") as f:
        f.write(b"this is not HDF5")
    shutil.copy(os.path.join(cat.directory, uids[0] + ".h5"), os.path.join(cat.directory, "copy.h5"))
    bundle = event_model.compose_run(time=T0 + 100, metadata={"scan_id": 9, "plan_name": "count"})
    cat.insert("start", bundle.start_doc)
    return cat


def _state(cat: databroker_lite.Catalog) -> tuple:
    return (list(cat), cat[-1].uid, cat[3].uid, list(cat.search({"sample.name": "Cu"})),
            [(cat[u].metadata["stop"] or {}).get("exit_status") for u in cat],
            sorted(cat.bad_files), len(cat.search({"scan_id": 9})),
            len(cat.search({"$or": [{"plan_name": "count"}, {"sample.name": "Fe"}]})))


def test_a_reindex_in_worker_processes_gives_what_reading_here_gives(four, monkeypatch):
    from databroker_lite import index_fill
    cat = _messy(four)
    serial = (cat.reindex(), _state(cat))
    started = []
    popen = index_fill.subprocess.Popen

    def spy(*args, **kwargs):
        started.append(args[0])
        return popen(*args, **kwargs)

    monkeypatch.setattr(index_fill.subprocess, "Popen", spy)
    monkeypatch.setattr(index_fill, "PARALLEL_FROM", 1)
    parallel = (cat.reindex(), _state(cat))
    assert len(started) == min(index_fill.MAX_WORKERS, os.cpu_count() or 1) > 1 or os.cpu_count() == 1
    assert parallel == serial
    assert serial[0] == {"added": 6, "updated": 0, "removed": 0, "bad": 1}
    fresh = databroker_lite.open_catalog(cat.directory, mode="r")
    assert _state(fresh) == serial[1]


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"])
def test_workers_that_cannot_start_or_die_leave_the_reading_to_the_catalog(four, monkeypatch,
                                                                           executable):
    from databroker_lite import index_fill
    cat = _messy(four)
    serial = (cat.reindex(), _state(cat))
    monkeypatch.setattr(index_fill, "PARALLEL_FROM", 1)
    monkeypatch.setattr(index_fill.sys, "executable", executable)
    assert (cat.reindex(), _state(cat)) == serial


def test_worker_outcomes_are_those_of_reading_here(four):
    from databroker_lite import index_fill
    cat = _messy(four)
    todo = [(e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(cat.directory)
            if e.name.endswith(".h5")]
    for kind in ("sqlite", "postgresql"):
        here = sorted(index_fill.summaries(cat.directory, kind, True, todo, workers=1))
        there = sorted(index_fill.summaries(cat.directory, kind, True, todo, workers=2))
        assert here == there and len(here) == len(todo)
        assert [o[0] for o in here].count("bad") == 1


def test_a_stale_read_of_finished_runs_keeps_their_stop(tmp_path, monkeypatch):
    """Files read again before their writers' stop reached them (another host's stale
    cache, say) do not undo the stops the index has; a run with no stop stays running.
    More runs than one look-up of the refresh asks about (500)."""
    from databroker_lite import index_fill
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    done = [add_run(cat, scan_id=i, t=T0 + i, n=1) for i in range(1, 522)]
    bundle = event_model.compose_run(time=T0 + 600, metadata={"scan_id": 600})
    cat.insert("start", bundle.start_doc)
    real = index_fill.summaries

    def as_if_running(*args, **kwargs):
        for kind, f, what in real(*args, **kwargs):
            if kind == "ok" and what.finished:  # stop_time, exit_status and stop not yet there
                row = (*what.row[:3], None, None, *what.row[5:11], None)
                what = what._replace(finished=False, row=row)
            yield kind, f, what

    monkeypatch.setattr(index_fill, "summaries", as_if_running)
    counts = cat._index.refresh(full=True)
    assert counts == {"added": 0, "updated": 1, "removed": 0, "bad": 0}  # only the running one
    fresh = databroker_lite.open_catalog(tmp_path / "cat", mode="r")
    assert len(fresh) == 522
    assert [fresh[u].metadata["stop"]["exit_status"] for u in done] == ["success"] * 521
    assert fresh[600].metadata["stop"] is None
    assert fresh._index.conn.execute(  # what the index holds, not the files
        "SELECT count(*) FROM runs WHERE stop IS NOT NULL").fetchone()[0] == 521
