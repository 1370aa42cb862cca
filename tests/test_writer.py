"""The writer: buffered appends, reading a run while it is written, and writers that died."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import pytest
from conftest import insert_all, make_run_docs

import databroker_lite
from databroker_lite.storage import writer as _writer

SCALAR_KEYS = {"x": {"source": "s", "dtype": "number", "shape": []},
               "n": {"source": "s", "dtype": "integer", "shape": []}}


def test_10000_events_are_not_10000_resizes(cat, monkeypatch):
    flushes = []
    stores = []
    real_flush, real_store = _writer.RunWriter.flush, _writer._SegmentBuffer.store

    def counting_flush(self, *args, **kwargs):
        flushes.append(1)
        return real_flush(self)

    def counting_store(self, f, *args, **kwargs):
        stores.append(len(self))
        return real_store(self, f, *args, **kwargs)
    monkeypatch.setattr(_writer.RunWriter, "flush", counting_flush)
    monkeypatch.setattr(_writer._SegmentBuffer, "store", counting_store)

    n = 10_000
    docs = make_run_docs(n, data_keys=SCALAR_KEYS, data=lambda i: {"x": i * 0.5, "n": i})
    insert_all(cat, docs)
    rows_per_store = [k for k in stores if k]
    assert sum(rows_per_store) == n
    # about n / FLUSH_ROWS batches (a few more if a slow machine hits the time limit)
    assert n // _writer.FLUSH_ROWS <= len(rows_per_store) <= 3 * n // _writer.FLUSH_ROWS
    assert len(flushes) <= 3 * n // _writer.FLUSH_ROWS + 2
    ds = cat[-1].primary.read()
    assert ds["n"].values.tolist() == list(range(n))
    assert ds["x"].values[-1] == (n - 1) * 0.5
    with h5py.File(cat[-1].path, "r") as f:
        x = f["streams/primary/0/data/x"]
        assert x.shape == (n,)
        assert x.chunks[0] > 1  # chunked by many rows, not one per event


def test_flush_makes_buffered_events_visible(cat):
    docs = make_run_docs(5, stop=False)
    insert_all(cat, docs[:4])  # start, descriptor, 2 events
    path = os.path.join(cat.directory, f"{docs[0][1]['uid']}.h5")
    cat.writer.flush()
    with h5py.File(path, "r") as f:
        assert f["streams/primary/0/data/x"].shape == (2,)
        assert "stop" not in f
    run = cat[docs[0][1]["uid"]]
    assert run.metadata["stop"] is None
    assert run.primary.read()["x"].values.tolist() == [0.0, 1.5]
    insert_all(cat, docs[4:])
    cat.writer.flush()
    assert run.primary.read()["x"].values.tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert cat.writer.open_runs == [docs[0][1]["uid"]]


_CHILD_WRITER = textwrap.dedent("""
    import os, signal, sys, time
    import event_model
    import databroker_lite

    cat = databroker_lite.open_catalog(sys.argv[1])
    how = sys.argv[2]
    keys = {"x": {"source": "s", "dtype": "number", "shape": []},
            "v": {"source": "s", "dtype": "array", "shape": [2], "dtype_numpy": "<i8"}}
    b = event_model.compose_run(metadata={"scan_id": 42, "plan_name": "child"})
    d = b.compose_descriptor(name="primary", data_keys=keys)

    def event(i):
        t = time.time()
        cat.writer("event", d.compose_event(data={"x": float(i), "v": [i, -i]},
                                            timestamps={"x": t, "v": t}, seq_num=i + 1))

    cat.writer("start", b.start_doc)
    cat.writer("descriptor", d.descriptor_doc)
    for i in range(7):
        event(i)
    cat.writer.flush()
    print(b.start_doc["uid"], flush=True)
    if how == "wait":  # the parent reads, then tells us to finish
        sys.stdin.readline()
        for i in range(7, 10):
            event(i)
        cat.writer("stop", b.compose_stop())
        print("done", flush=True)
        sys.stdin.readline()
    elif how == "exit":  # die without flushing what comes next, without atexit
        for i in range(7, 10):
            event(i)
        os._exit(3)
    elif how == "sigkill":
        for i in range(7, 10):
            event(i)
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _child(catalog_dir, how: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD_WRITER, str(catalog_dir), how],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_run_being_written_is_readable_from_another_process(tmp_path):
    directory = tmp_path / "catalog"
    child = _child(directory, "wait")
    try:
        uid = child.stdout.readline().strip()
        assert uid, child.stderr.read()
        cat = databroker_lite.open_catalog(directory, mode="r")
        assert uid in cat
        run = cat[42]
        assert run.metadata["stop"] is None
        ds = run.primary.read()
        assert ds["x"].values.tolist() == [float(i) for i in range(7)]
        assert ds["v"].values[6].tolist() == [6, -6]
        assert [n for n, _ in run.documents()] == ["start", "descriptor"] + ["event"] * 7
        child.stdin.write("go on\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done", child.stderr.read()
        # the writer process is still alive; the run is finished and complete
        run = databroker_lite.open_catalog(directory, mode="r")[42]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run.primary.read()["x"].values.tolist() == [float(i) for i in range(10)]
        child.stdin.write("bye\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_reader_process_sees_flushed_events(cat):
    docs = make_run_docs(5, stop=False)
    insert_all(cat, docs[:5])  # start, descriptor, 3 events
    cat.writer.flush()
    code = textwrap.dedent("""
        import json, sys
        import databroker_lite
        run = databroker_lite.open_catalog(sys.argv[1], mode="r")[-1]
        print(json.dumps({"stop": run.metadata["stop"],
                          "x": run.primary.read()["x"].values.tolist()}))
    """)
    out = subprocess.run([sys.executable, "-c", code, cat.directory], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"stop": None, "x": [0.0, 1.5, 3.0]}


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_run_whose_writer_died_reads_back_without_stop(tmp_path, how):
    directory = tmp_path / "catalog"
    child = _child(directory, how)
    uid = child.stdout.readline().strip()
    code = child.wait(timeout=120)
    assert uid, child.stderr.read()
    assert code == (3 if how == "exit" else -signal.SIGKILL)
    cat = databroker_lite.open_catalog(directory)
    assert list(cat) == [uid]
    run = cat[42]
    assert run.metadata["stop"] is None
    assert "no stop" in repr(run)
    ds = run.primary.read()
    # what was flushed before the process died; the 3 buffered events are lost
    assert ds["x"].values.tolist() == [float(i) for i in range(7)]
    names = [n for n, _ in run.documents()]
    assert names == ["start", "descriptor"] + ["event"] * 7
    # the catalog is still writable
    insert_all(cat, make_run_docs(2, metadata={"scan_id": 43}))
    assert len(cat) == 2
    assert cat[43].metadata["stop"] is not None


def test_integer_column_given_a_fraction_is_widened_not_rejected(tmp_path):
    """ophyd.sim setpoints describe themselves as integer, then report 0.25: keep the data."""
    import warnings

    from event_model import compose_run

    import databroker_lite
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = compose_run(metadata={"scan_id": 1})
    d = b.compose_descriptor(name="baseline", data_keys={
        "sp": {"dtype": "integer", "shape": [], "source": "sim"}})
    cat.insert("start", b.start_doc)
    cat.insert("descriptor", d.descriptor_doc)
    cat.insert("event", d.compose_event(data={"sp": 0}, timestamps={"sp": 0.0}))
    cat.writer.flush()  # the int64 column is on disk before the fraction arrives
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cat.insert("event", d.compose_event(data={"sp": 0.25}, timestamps={"sp": 0.0}))
    assert any("'sp'" in str(w.message) and "float64" in str(w.message) for w in caught)
    cat.insert("event", d.compose_event(data={"sp": 3}, timestamps={"sp": 0.0}))
    cat.insert("stop", b.compose_stop())
    ds = cat[1].baseline.read()
    assert ds["sp"].dtype == "float64"
    assert ds["sp"].values.tolist() == [0.0, 0.25, 3.0]
    assert [d["data"]["sp"] for n, d in cat[1].documents() if n == "event"] == [0, 0.25, 3]
