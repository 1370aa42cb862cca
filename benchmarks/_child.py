"""Measurements that need a fresh interpreter: peak RSS and cold catalog opens.

Run as ``python -m benchmarks._child TASK JSON_KWARGS``; prints one JSON line.
Peak RSS is VmHWM from /proc/self/status (falling back to getrusage). Before the
measured operation the high-water mark is reset (``/proc/self/clear_refs``), so
``peak_mb`` is the process's peak during the operation and ``op_mb`` what the
operation added on top of the imports and open file handles.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kb() -> int:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _measure(op) -> dict:
    reset = _reset_peak()
    before = _status_kb("VmRSS") or _peak_kb()
    t0, c0 = time.perf_counter(), time.process_time()
    result = op()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _peak_kb()
    out = {"seconds": dt, "cpu_s": cpu, "peak_mb": peak / 1024, "before_mb": before / 1024,
           "op_mb": (peak - before) / 1024, "peak_reset": reset,
           "nbytes_mb": getattr(result, "nbytes", 0) / 2**20}
    del result
    return out


def task_read(kind: str, directory: str = "", uid: str = "", path: str = "", name: str = "",
              frame: int | None = None, field: str = "img") -> dict:
    """A full read (frame None) or one frame, by databroker_lite or by raw h5py."""
    if kind == "ours":
        import databroker_lite
        run = databroker_lite.open_catalog(directory, "r")[uid]
        if frame is None:
            return _measure(lambda: run.primary.read()[field].data)
        return _measure(lambda: run.primary.to_dask()[field][frame].compute().data)
    import h5py
    f = h5py.File(path, "r")
    ds = f[name]
    if frame is None:
        return _measure(lambda: ds[:])
    return _measure(lambda: ds[frame])


def task_reduce(kind: str, how: str, directory: str = "", uid: str = "", path: str = "",
                name: str = "", field: str = "img", warm: int = 5, preimport: bool = True) -> dict:
    """mean/sum/max over time of an image stack: ArrayColumn, to_dask(), or h5py frame by frame.

    The first call of the process is measured with its peak memory (for dask with
    ``preimport=False``: everything a new user pays, importing xarray and dask
    included); then ``warm`` more calls, whose medians are ``warm_s`` (wall),
    ``warm_cpu_s`` (CPU time of the process) and ``warm_op_mb`` (memory each added).
    """
    import numpy as np
    if kind == "h5py":
        import h5py
        f = h5py.File(path, "r")
        ds = f[name]

        def op():
            n = ds.shape[0]
            if how == "max":
                acc = ds[0]
                for k in range(1, n):
                    np.maximum(acc, ds[k], out=acc)
                return acc
            acc = np.zeros(ds.shape[1:], dtype="f8" if how == "mean" else np.sum(ds[0]).dtype)
            for k in range(n):
                acc += ds[k]
            return acc / n if how == "mean" else acc
    else:
        import databroker_lite
        run = databroker_lite.open_catalog(directory, "r")[uid]
        if kind == "column":
            col = run.primary[field]

            def op():
                return getattr(col, how)()
        else:  # dask, through xarray
            if preimport:
                import dask.array  # noqa: F401 - imported before timing on both lazy paths
                import xarray  # noqa: F401

            def op():
                return getattr(run.primary.to_dask()[field], how)("time").compute().values
    res = {}

    def keep():
        res["v"] = op()
        return res["v"]
    out = _measure(keep)
    out["checksum"] = float(np.asarray(res["v"], dtype="f8").sum())
    del res["v"]
    warm_runs = [_measure(op) for _ in range(warm)]
    if warm_runs:
        for key, got in (("warm_s", "seconds"), ("warm_cpu_s", "cpu_s"), ("warm_op_mb", "op_mb")):
            out[key] = float(np.median([w[got] for w in warm_runs]))
    return out


def task_first_read(kind: str, directory: str, uid: str) -> dict:
    """The first read of a fresh process: ours after import + open_catalog, or h5py's."""
    if kind == "ours":
        import databroker_lite
        cat = databroker_lite.open_catalog(directory, "r")
        t0 = time.perf_counter()
        ds = cat[uid].primary.read()
        return {"seconds": time.perf_counter() - t0, "n": int(ds.sizes["time"])}
    import os
    import sqlite3

    import h5py
    conn = sqlite3.connect(os.path.join(directory, ".databroker_lite", "index.sqlite"))
    t0 = time.perf_counter()
    file = conn.execute("SELECT file FROM runs WHERE uid = ?", (uid,)).fetchone()[0]
    with h5py.File(os.path.join(directory, file), "r") as f:
        g = f["streams/primary/0"]
        n = len(g["time"][:])
        [g["data"][k][:] for k in g["data"]]
    return {"seconds": time.perf_counter() - t0, "n": n}


def task_ingest(kind: str, directory: str, n: int, h: int, w: int) -> dict:
    """Write an n x h x w uint16 stack through cat.writer (ours) or raw h5py."""
    import os

    import numpy as np
    stack = np.random.default_rng(3).integers(0, 4096, size=(n, h, w), dtype=np.uint16)
    if kind == "ours":
        import databroker_lite

        from .reads import image_documents
        docs = image_documents(stack)
        writer = databroker_lite.open_catalog(directory).writer

        def op() -> None:
            for name, doc in docs:
                writer(name, doc)
        return _measure(op)

    from .ingest import h5py_write_stack
    os.makedirs(directory, exist_ok=True)
    return _measure(lambda: h5py_write_stack(os.path.join(directory, "stack.h5"), stack))


def task_open_catalog(directory: str) -> dict:
    """Seconds to import databroker_lite and for open_catalog() to return, cold process."""
    t0 = time.perf_counter()
    import databroker_lite
    t1 = time.perf_counter()
    cat = databroker_lite.open_catalog(directory)
    t2 = time.perf_counter()
    n = len(cat)
    return {"import_s": t1 - t0, "open_s": t2 - t1, "n": n}


def task_open_sqlite(index: str) -> dict:
    """The baseline: sqlite3.connect plus a count, cold process."""
    t0 = time.perf_counter()
    import sqlite3
    t1 = time.perf_counter()
    conn = sqlite3.connect(index)
    n = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "open_s": t2 - t1, "n": n}


def task_pack(src: str, dest: str) -> dict:
    """Peak memory of packing a catalog."""
    import databroker_lite
    return _measure(lambda: databroker_lite.pack(src, dest, all=True, quiet=True))


TASKS = {"pack": task_pack, "read": task_read, "reduce": task_reduce, "first_read": task_first_read, "ingest": task_ingest, "open_catalog": task_open_catalog, "open_sqlite": task_open_sqlite}


def main(argv: list[str]) -> None:
    task, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    out: Any = TASKS[task](**kwargs)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
