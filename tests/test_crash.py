"""A writer killed in the middle of a flush, or failing in one, loses nothing flushed before.

Kills are exact: a forked child runs a flush whose file writes go through
``files._UndoFile.write`` and SIGKILLs itself at the k-th write (before it, or after
writing half of it), for every k the flush makes. The random-moment campaign over
whole processes is ``python -m stress`` (stress/kill.py).
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys

import event_model
import numpy as np
import pytest

import databroker_lite
from databroker_lite.errors import CatalogError
from databroker_lite.storage import RunReader, RunWriter
from databroker_lite.storage import files as _files

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _docs(kind: str, n: int):
    b = event_model.compose_run(metadata={"plan_name": "crash"})
    if kind == "image":
        keys = {"img": {"dtype": "array", "shape": [16, 24], "dtype_numpy": "<u2", "source": "t"}}
    else:
        keys = {"x": {"dtype": "number", "shape": [], "source": "t"},
                "s": {"dtype": "string", "shape": [], "source": "t"}}
    d = b.compose_descriptor(name="primary", data_keys=keys)
    events = []
    for i in range(n):
        if kind == "image":
            data = {"img": np.full((16, 24), i, dtype="<u2")}
        else:
            data = {"x": i * 0.5, "s": f"row {i}"}
        events.append(d.compose_event(data=data, timestamps=dict.fromkeys(keys, 1.0 + i), seq_num=i + 1))
    return b, d, events


def _first_part(path: str, kind: str) -> tuple[RunWriter, list, object]:
    """A run file holding one complete flush of 5 events, and the writer with 7 more buffered."""
    b, d, events = _docs(kind, 12)
    w = RunWriter(path, dict(b.start_doc), flush_rows=10**6, flush_seconds=10**6)
    w.descriptor(dict(d.descriptor_doc))
    for ev in events[:5]:
        w.event(ev)
    w.flush()
    for ev in events[5:]:
        w.event(ev)
    return w, events, b


def _in_child(fn) -> int:
    """Run fn in a forked child; return the signal that ended it (0 for a normal exit)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            fn()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def _kill_at(k: int, torn: bool):
    """Patch the journaled file so the k-th write of a flush kills the process."""
    real = _files._UndoFile.write
    count = [0]

    def write(self, b):
        count[0] += 1
        if count[0] == k:
            if torn:
                real(self, memoryview(b).cast("B")[: max(1, len(b) // 2)])
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, b)
    _files._UndoFile.write = write


def _count_writes(tmp_path, kind: str, stop: bool) -> int:
    path = str(tmp_path / "count.h5")
    w, _, b = _first_part(path, kind)
    n = [0]
    real = _files._UndoFile.write

    def write(self, data):
        n[0] += 1
        return real(self, data)
    _files._UndoFile.write = write
    try:
        w.stop(dict(b.compose_stop())) if stop else w.flush()
    finally:
        _files._UndoFile.write = real
    return n[0]


@pytest.mark.parametrize("kind,stop", [("scalar", False), ("image", False), ("scalar", True)])
def test_kill_at_every_write_of_a_flush_keeps_the_earlier_flush(tmp_path, kind, stop):
    n_writes = _count_writes(tmp_path, kind, stop)
    assert n_writes >= 5
    killed = 0
    for k in range(1, n_writes + 1):
        for torn in (False, True) if k % 2 else (False,):  # torn writes at every other k: CI time
            path = str(tmp_path / f"run-{k}-{int(torn)}.h5")
            w, events, b = _first_part(path, kind)

            def go(k=k, torn=torn, w=w, b=b):
                _kill_at(k, torn)
                w.stop(dict(b.compose_stop())) if stop else w.flush()
            assert _in_child(go) == signal.SIGKILL
            killed += 1
            assert os.path.exists(path + _files.JOURNAL_SUFFIX)  # the kill left its journal
            r = RunReader(path)  # opening undoes the cut-short flush
            assert not os.path.exists(path + _files.JOURNAL_SUFFIX)
            assert r.stop is None
            seg = r.stream_segments("primary")[0]
            assert r.n_events(seg) == 5
            assert list(r.read_events(seg, "seq_num")) == [1, 2, 3, 4, 5]
            if kind == "image":
                np.testing.assert_array_equal(r.read_column(seg, "img"),
                                              np.stack([ev["data"]["img"] for ev in events[:5]]))
            else:
                assert list(r.read_column(seg, "s")) == [f"row {i}" for i in range(5)]
            # and the writer could carry on: a fresh flush on the repaired file works
            w.flush()
            r = RunReader(path)
            assert r.n_events(r.stream_segments("primary")[0]) == 12
    assert killed == n_writes + (n_writes + 1) // 2


def test_a_flush_that_completed_in_a_killed_process_is_kept(tmp_path):
    path = str(tmp_path / "run.h5")
    w, _, b = _first_part(path, "scalar")

    def go():
        w.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    assert _in_child(go) == signal.SIGKILL
    assert not os.path.exists(path + _files.JOURNAL_SUFFIX)
    r = RunReader(path)
    assert r.n_events(r.stream_segments("primary")[0]) == 12


def _enospc_after(n_ok: int):
    real = _files._UndoFile._raw_write
    count = [0]

    def write(self, b):
        count[0] += 1
        if count[0] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, b)
    return real, write


@pytest.mark.parametrize("n_ok", [0, 1, 3, 8])
def test_disk_full_in_a_flush_is_a_clear_error_and_keeps_everything(tmp_path, monkeypatch, n_ok):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b0, d0, ev0 = _docs("scalar", 4)  # an earlier, finished run
    cat.writer("start", b0.start_doc)
    cat.writer("descriptor", d0.descriptor_doc)
    for ev in ev0:
        cat.writer("event", ev)
    cat.writer("stop", b0.compose_stop())
    before = cat[b0.start_doc["uid"]].primary.read()

    b, d, events = _docs("image", 9)
    cat.writer("start", b.start_doc)
    cat.writer("descriptor", d.descriptor_doc)
    for ev in events[:4]:
        cat.writer("event", ev)
    cat.writer.flush()
    for ev in events[4:]:
        cat.writer("event", ev)
    real, failing = _enospc_after(n_ok)
    monkeypatch.setattr(_files._UndoFile, "_raw_write", failing)
    stop = b.compose_stop()
    with pytest.raises(CatalogError) as info:
        cat.writer("stop", stop)
    assert info.value.errno == errno.ENOSPC
    assert "No space left on device" in str(info.value) and "earlier flushes" in str(info.value)
    path = os.path.join(cat.directory, b.start_doc["uid"] + ".h5")
    assert not os.path.exists(path + _files.JOURNAL_SUFFIX)
    # the open run still reads its first flush; the finished run is untouched
    run = databroker_lite.open_catalog(cat.directory)[b.start_doc["uid"]]
    assert run.stop is None
    assert run.primary.read()["img"].shape == (4, 16, 24)
    other = databroker_lite.open_catalog(cat.directory)[b0.start_doc["uid"]]
    assert other.primary.read().equals(before)
    # space is back: the same stop succeeds and nothing buffered was lost
    monkeypatch.setattr(_files._UndoFile, "_raw_write", real)
    cat.writer("stop", stop)
    run = databroker_lite.open_catalog(cat.directory)[b.start_doc["uid"]]
    assert run.stop is not None
    np.testing.assert_array_equal(run.primary.read()["img"].values,
                                  np.stack([ev["data"]["img"] for ev in events]))


def test_disk_full_when_a_run_starts_leaves_no_file(tmp_path, monkeypatch):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b, _, _ = _docs("scalar", 1)
    import h5py

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(h5py, "File", full)
    with pytest.raises(CatalogError) as info:
        cat.writer("start", b.start_doc)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(cat.directory) == [".databroker_lite"]


def test_a_read_only_opener_says_how_to_repair(tmp_path):
    path = str(tmp_path / "run.h5")
    w, _, _ = _first_part(path, "scalar")

    def go():
        _kill_at(3, False)
        w.flush()
    assert _in_child(go) == signal.SIGKILL
    with open(path, "rb") as fh:
        before = fh.read()
    os.chmod(path, 0o444)
    code = ("import sys\n"
            "from databroker_lite.errors import CorruptRunFile\n"
            "from databroker_lite.storage import RunReader\n"
            "try:\n    RunReader(sys.argv[1])\n"
            "except CorruptRunFile as exc:\n    print(exc)\n    sys.exit(3)\n")
    cmd = [sys.executable, "-c", code, path]
    if os.geteuid() == 0:  # root ignores file modes: take away the capability that lets it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and util-linux's setpriv is missing: cannot drop CAP_DAC_OVERRIDE")
        cmd = [setpriv, "--bounding-set=-dac_override", "--inh-caps=-dac_override", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "write access" in proc.stdout and os.path.basename(path) in proc.stdout
    with open(path, "rb") as fh:  # the opener changed nothing
        assert fh.read() == before
