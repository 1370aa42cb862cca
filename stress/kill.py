"""SIGKILL a writer process at random moments and check that nothing flushed is lost.

The child writes runs (scalar and image, alternating) into one catalog forever and
logs ``<uid> <n>`` after every ``cat.writer.flush()`` returns. The parent kills it at
a random moment, reopens the catalog and checks every run against the values the
child was told to write (they are a function of the start document).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

IMG = (128, 128)


def expected(start: dict, n: int) -> dict[str, np.ndarray]:
    """The column values event 1..n of a stress run carry."""
    s = start["seed"]
    j = np.arange(n)
    if start["kind"] == "scalar":
        return {"x": j * 1.5 + s, "k": (s * 7 + j).astype("int64"),
                "t": np.array([f"v{s}-{i}" for i in range(n)], dtype=object)}
    base = np.arange(IMG[0] * IMG[1], dtype=np.int64).reshape(IMG)
    return {"img": ((base[None] + (j * 31 + s)[:, None, None]) % 65536).astype("uint16"),
            "k": (s * 7 + j).astype("int64")}


def child(directory: str, seed: int, log: str) -> None:
    """Write runs until killed; log what each flush made durable."""
    import event_model

    import databroker_lite
    rng = random.Random(seed)
    cat = databroker_lite.open_catalog(directory)
    w = cat.writer
    logfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    print("ready", flush=True)
    run_no = 0
    while True:
        kind = "image" if (seed + run_no) % 2 else "scalar"
        n = rng.randint(5, 60) if kind == "image" else rng.randint(50, 3000)
        s = seed * 1000 + run_no
        run_no += 1
        b = event_model.compose_run(metadata={"kind": kind, "seed": s, "n": n, "plan_name": "stress"})
        w("start", b.start_doc)
        if kind == "scalar":
            keys = {"x": {"dtype": "number", "shape": [], "source": "s"},
                    "k": {"dtype": "integer", "shape": [], "source": "s"},
                    "t": {"dtype": "string", "shape": [], "source": "s"}}
        else:
            keys = {"img": {"dtype": "array", "shape": list(IMG), "dtype_numpy": "<u2", "source": "s"},
                    "k": {"dtype": "integer", "shape": [], "source": "s"}}
        d = b.compose_descriptor(name="primary", data_keys=keys)
        w("descriptor", d.descriptor_doc)
        vals = expected(b.start_doc, n)
        every = rng.choice([1, 3, 10, 50, 200])
        for i in range(n):
            data = {k: (v[i].item() if v.ndim == 1 and v.dtype != object else v[i]) for k, v in vals.items()}
            w("event", d.compose_event(data=data, timestamps=dict.fromkeys(keys, time.time()), seq_num=i + 1))
            if (i + 1) % every == 0:
                w.flush()
                os.write(logfd, f"{b.start_doc['uid']} {i + 1}\n".encode())
        w("stop", b.compose_stop())
        os.write(logfd, f"{b.start_doc['uid']} {n} stop\n".encode())


@dataclass
class Tally:
    kills: int = 0
    corrupt: int = 0          # run files that did not open after a kill
    interrupted: int = 0      # runs left without a stop
    finished_checked: int = 0
    events_checked: int = 0
    failures: list[str] = field(default_factory=list)


def _flushed(log: str) -> dict[str, tuple[int, bool]]:
    out: dict[str, tuple[int, bool]] = {}
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and line.endswith("\n"):
                    out[parts[0]] = (int(parts[1]), len(parts) == 3)
    return out


def check(directory: str, log: str, tally: Tally, seen: set[str]) -> None:
    """Reopen the catalog and compare every new or unfinished run with what was written."""
    import databroker_lite
    from databroker_lite.errors import CorruptRunFile
    from databroker_lite.storage import RunSummary
    cat = databroker_lite.open_catalog(directory)
    flushed = _flushed(log)
    tally.corrupt += len(cat.bad_files)
    for f, err in cat.bad_files.items():
        tally.failures.append(f"kill {tally.kills}: {f} unreadable: {err[:200]}")
    on_disk = set()
    for name in os.listdir(directory):
        if name.endswith(".h5"):
            try:
                summ = RunSummary(os.path.join(directory, name))
            except CorruptRunFile:
                continue
            on_disk.add(summ.uid)
            row = cat._index.row(summ.uid)
            if row is None or (row["exit_status"] is None) != (summ.stop is None):
                tally.failures.append(f"kill {tally.kills}: index disagrees with {name}: {row and row['exit_status']}")
    if set(cat) != on_disk:
        tally.failures.append(f"kill {tally.kills}: index {len(set(cat))} runs, files {len(on_disk)}")
    for uid in sorted(on_disk - seen):
        run = cat[uid]
        start, stop = run.metadata["start"], run.metadata["stop"]
        n_logged, logged_stop = flushed.get(uid, (0, False))
        try:
            ds = run.primary.read() if "primary" in run else None
        except Exception as exc:  # noqa: BLE001 - report, do not stop the campaign
            tally.failures.append(f"kill {tally.kills}: run {uid} read failed: {exc!r}")
            continue
        n = 0 if ds is None else ds.sizes.get("time", 0)
        if stop is not None:
            if n != start["n"]:
                tally.failures.append(f"run {uid}: finished with {n} of {start['n']} events")
                continue
            tally.finished_checked += 1
            seen.add(uid)
        else:
            tally.interrupted += 1
            if logged_stop:
                tally.failures.append(f"run {uid}: the stop was written but is lost")
            if n < n_logged:
                tally.failures.append(f"run {uid}: {n} events, but {n_logged} were flushed before the kill")
            seen.add(uid)  # it will never change again
        for k, v in expected(start, n).items() if n else ():
            got = ds[k].values
            if got.shape != v.shape or not np.array_equal(got, v):
                tally.failures.append(f"run {uid}: column {k} differs")
        if ds is not None:
            lens = {ds[k].shape[0] for k in ds.data_vars}
            if len(lens) > 1:
                tally.failures.append(f"run {uid}: ragged columns {lens}")
        tally.events_checked += n
        docs = list(run.documents())
        if sum(1 for nm, _ in docs if nm == "event") != n:
            tally.failures.append(f"run {uid}: documents() disagrees with read()")


def campaign(directory: str, kills: int, seed: int = 0, max_delay: float = 0.6,
             verbose: bool = True) -> Tally:
    """Kill a writer ``kills`` times; returns the tally."""
    rng = random.Random(seed)
    tally = Tally()
    seen: set[str] = set()
    os.makedirs(directory, exist_ok=True)
    log = os.path.join(directory, "..", os.path.basename(directory) + ".log")
    for k in range(kills):
        p = subprocess.Popen([sys.executable, "-m", "stress.kill", "child", directory, str(seed * 10000 + k), log],
                             stdout=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        line = p.stdout.readline()
        if line.strip() != b"ready":
            p.kill()
            raise RuntimeError(f"writer child did not start: {line!r}")
        time.sleep(rng.uniform(0.0, max_delay))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        tally.kills += 1
        check(directory, log, tally, seen)
        if verbose:
            print(f"  kill {tally.kills:3d}: corrupt so far {tally.corrupt}, finished runs checked "
                  f"{tally.finished_checked}, interrupted {tally.interrupted}, failures {len(tally.failures)}",
                  flush=True)
    return tally


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])


def kill_points(directory: str, undo: bool = True, frames: int = 40) -> dict:
    """Kill a forked writer at every file write of one flush (before it, and half-way
    through it); count the kill points after which the run file no longer opens or no
    longer holds exactly the events of the earlier flush.

    ``undo=False`` measures the same kills with the undo journal thrown away, i.e. what
    a kill did before the journal existed.
    """
    import event_model

    from databroker_lite.errors import CorruptRunFile
    from databroker_lite.storage import RunReader, RunWriter
    from databroker_lite.storage import files as _files
    os.makedirs(directory, exist_ok=True)
    b = event_model.compose_run(metadata={"kind": "image", "seed": 1, "n": frames})
    keys = {"img": {"dtype": "array", "shape": list(IMG), "dtype_numpy": "<u2", "source": "s"},
            "k": {"dtype": "integer", "shape": [], "source": "s"}}
    d = b.compose_descriptor(name="primary", data_keys=keys)
    vals = expected(b.start_doc, frames)
    events = [d.compose_event(data={"img": vals["img"][i], "k": int(vals["k"][i])},
                              timestamps=dict.fromkeys(keys, 1.0), seq_num=i + 1) for i in range(frames)]
    half = frames // 2

    def prepare(path: str) -> RunWriter:
        w = RunWriter(path, dict(b.start_doc), flush_rows=10**6, flush_seconds=10**6)
        w.descriptor(dict(d.descriptor_doc))
        for ev in events[:half]:
            w.event(ev)
        w.flush()
        for ev in events[half:]:
            w.event(ev)
        return w

    real = _files._UndoFile.write
    count = [0]

    def counting(self, data):
        count[0] += 1
        return real(self, data)
    _files._UndoFile.write = counting
    try:
        prepare(os.path.join(directory, "count.h5")).flush()
    finally:
        _files._UndoFile.write = real
    n_writes = count[0]
    out = {"kill_points": 0, "unreadable": 0, "wrong": 0, "writes_per_flush": n_writes}
    for k in range(1, n_writes + 1):
        for torn in (False, True):
            path = os.path.join(directory, f"k{k}-{int(torn)}-{int(undo)}.h5")
            w = prepare(path)
            pid = os.fork()
            if pid == 0:  # the child: flush, dying at write k
                calls = [0]

                def dying(self, data, k=k, torn=torn, calls=calls):
                    calls[0] += 1
                    if calls[0] == k:
                        if torn:
                            real(self, memoryview(data).cast("B")[: max(1, len(data) // 2)])
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(self, data)
                _files._UndoFile.write = dying
                if not undo:
                    _files._UndoFile._save = lambda self, a, b: None
                try:
                    w.flush()
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            out["kill_points"] += 1
            if not undo and os.path.exists(path + _files.JOURNAL_SUFFIX):
                os.remove(path + _files.JOURNAL_SUFFIX)
            try:
                r = RunReader(path)
                seg = r.stream_segments("primary")[0]
                n = r.n_events(seg)
                img = r.read_column(seg, "img")
                ok = n >= half and np.array_equal(img, vals["img"][:n])
                out["wrong"] += not ok
            except (CorruptRunFile, OSError, KeyError, ValueError):
                out["unreadable"] += 1
            os.remove(path)
    return out
