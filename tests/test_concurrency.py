"""Several processes and threads on one catalog: writers, readers, dask."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys

import dask
import event_model
import numpy as np
import pytest

import databroker_lite
from databroker_lite.errors import InvalidDocument

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_runs(directory: str, tag: str, n_runs: int, n_events: int) -> list[str]:
    """Write runs whose values are a function of (tag, run number, seq_num)."""
    cat = databroker_lite.open_catalog(directory)
    uids = []
    for r in range(n_runs):
        b = event_model.compose_run(metadata={"plan_name": "two", "tag": tag, "r": r})
        cat.writer("start", b.start_doc)
        d = b.compose_descriptor(name="primary", data_keys={
            "x": {"dtype": "number", "shape": [], "source": "s"},
            "img": {"dtype": "array", "shape": [4, 5], "dtype_numpy": "<i4", "source": "s"}})
        cat.writer("descriptor", d.descriptor_doc)
        for i in range(n_events):
            cat.writer("event", d.compose_event(
                data={"x": float(i + 1000 * r), "img": np.full((4, 5), i + r, dtype="<i4")},
                timestamps={"x": 1.0, "img": 1.0}, seq_num=i + 1))
            if i % 20 == 19:
                cat.writer.flush()
        cat.writer("stop", b.compose_stop())
        uids.append(b.start_doc["uid"])
    return uids


def _child(directory: str, tag: str, q) -> None:
    q.put(_write_runs(directory, tag, 4, 60))


def test_two_writer_processes_into_one_catalog(tmp_path):
    directory = str(tmp_path / "cat")
    databroker_lite.open_catalog(directory)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(directory, tag, q)) for tag in ("A", "B")]
    for p in procs:
        p.start()
    written = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    cat = databroker_lite.open_catalog(directory)
    all_uids = {u for w in written for u in w}
    assert len(all_uids) == 8 and set(cat) == all_uids
    assert cat.bad_files == {}
    for uid in all_uids:
        run = cat[uid]
        r = run.metadata["start"]["r"]
        ds = run.primary.read()
        assert run.metadata["stop"]["exit_status"] == "success"
        np.testing.assert_array_equal(ds["x"].values, np.arange(60) + 1000.0 * r)
        np.testing.assert_array_equal(ds["img"].values[:, 0, 0], np.arange(60) + r)
    assert len(cat.search({"tag": "A"})) == 4 and len(cat.search({"tag": "B"})) == 4


def test_two_writers_of_the_same_run_uid_one_is_refused(tmp_path):
    # two RunEngines replaying one start document: the second is refused, the first intact
    a = databroker_lite.open_catalog(tmp_path / "cat")
    b = databroker_lite.open_catalog(tmp_path / "cat")
    bundle = event_model.compose_run(metadata={"plan_name": "dup"})
    a.writer("start", bundle.start_doc)
    with pytest.raises(InvalidDocument, match="already"):
        b.writer("start", bundle.start_doc)
    d = bundle.compose_descriptor(name="primary", data_keys={"x": {"dtype": "number", "shape": [], "source": "s"}})
    a.writer("descriptor", d.descriptor_doc)
    a.writer("event", d.compose_event(data={"x": 1.5}, timestamps={"x": 1.0}, seq_num=1))
    a.writer("stop", bundle.compose_stop())
    run = databroker_lite.open_catalog(tmp_path / "cat")[bundle.start_doc["uid"]]
    assert run.primary.read()["x"].values.tolist() == [1.5]


def test_threaded_dask_compute_over_many_runs_equals_sequential_reads(tmp_path):
    directory = str(tmp_path / "cat")
    uids = _write_runs(directory, "T", 10, 45)
    cat = databroker_lite.open_catalog(directory)
    lazy = []
    for uid in uids:
        ds = cat[uid].primary.to_dask()
        lazy += [ds["x"].data, ds["img"].data]
    with dask.config.set(scheduler="threads", num_workers=8):
        got = dask.compute(*lazy)
    expected = []
    for uid in uids:
        ds = cat[uid].primary.read()
        expected += [ds["x"].values, ds["img"].values]
    assert len(got) == len(expected) == 20
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)


def test_one_writer_and_four_reader_processes(tmp_path):
    """stress/concurrency.py for a few seconds: no exception, nothing ragged or wrong,
    no "database is locked", searches agree with listings, and the readers see runs land.

    All processes import first and start together; the readers go on until the writer is
    done, so a busy machine cannot make this fail by timing alone."""
    out = tmp_path / "conc.json"
    proc = subprocess.run([sys.executable, "-m", "stress", "--only", "concurrency", "--seconds", "6", "--events", "60",
                           "--dir", str(tmp_path / "w"), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["problems"] == [], proc.stderr[-3000:]
    figures = result["figures"]["concurrency"]
    assert figures["writer"]["runs"] >= 2
    readers = [v for k, v in figures.items() if k.startswith("reader")]
    assert len(readers) == 4
    assert all(r["reads"] > 0 and r["seq_checks"] > 0 for r in readers)
    assert all(r["ragged"] == r["wrong"] == r["locked"] == r["exceptions"] == r["missed"] == 0
               for r in readers)
    # after the writer finished, every reader's last look saw every run it wrote
    assert all(r["last_len"] == figures["writer"]["runs"] for r in readers)
    assert proc.returncode in (0, 1)


def test_reader_opening_while_a_flush_ends_retries(tmp_path, monkeypatch):
    """HDF5 sizes a file before it takes the lock: a flush ending in between is not damage."""
    from databroker_lite.storage import files

    uid = _write_runs(str(tmp_path), "grow", 1, 30)[0]
    path = str(tmp_path / f"{uid}.h5")
    with open(path, "rb") as fh:
        grown = fh.read()
    real_file = files.h5py.File
    calls = []

    def open_mid_flush(name, mode="r", *args, **kwargs):
        calls.append(name)
        if len(calls) == 1:  # the reader sizes the file before the flush's last bytes land
            with open(path, "r+b") as fh:
                fh.truncate(len(grown) - 4096)
            try:
                return real_file(name, mode, *args, **kwargs)
            finally:
                with open(path, "r+b") as fh:  # ... and the flush ends before its lock check
                    fh.write(grown)
        return real_file(name, mode, *args, **kwargs)

    monkeypatch.setattr(files.h5py, "File", open_mid_flush)
    files.FILE_CACHE.clear()
    f = files.open_h5(path)
    try:
        assert "documents" in f
    finally:
        f.close()
    assert len(calls) == 2
    ds = databroker_lite.open_catalog(str(tmp_path))[uid].primary.read()
    assert ds["x"].values.tolist() == [float(i) for i in range(30)]


def test_file_truncated_for_good_is_not_retried(tmp_path):
    from databroker_lite.errors import CorruptRunFile
    from databroker_lite.storage import files

    uid = _write_runs(str(tmp_path), "cut", 1, 30)[0]
    path = str(tmp_path / f"{uid}.h5")
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size - 4096)
    with pytest.raises(CorruptRunFile, match=os.path.basename(path)):
        files.open_h5(path, wait=60)
