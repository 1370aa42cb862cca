"""One side of a side-by-side measurement, run as a plain script in a fresh interpreter.

``python benchmarks/_side.py TASK JSON_KWARGS`` prints one JSON line. The same file runs
under the project's interpreter (``backend="lite"``: databroker_lite, ``"h5py"``: raw h5py
and ``"dask"``: dask over h5py) and under the peer venv's interpreter (``backend=
"databroker"``: databroker 1.2.5's msgpack catalog), so both sides are timed by the same
code. It imports nothing from the ``benchmarks`` package: the peer venv does not have it.
Peak RSS is VmHWM from /proc/self/status, reset before the operation where the kernel
allows (``/proc/self/clear_refs``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _open(backend: str, path: str) -> tuple[Any, dict]:
    """Import the library and open the catalog at ``path``; the seconds of each step."""
    t0 = time.perf_counter()
    if backend == "lite":
        import databroker_lite
        t1 = time.perf_counter()
        cat = databroker_lite.open_catalog(path, "r")
    else:
        from databroker._drivers.msgpack import BlueskyMsgpackCatalog
        t1 = time.perf_counter()
        cat = BlueskyMsgpackCatalog(os.path.join(path, "*.msgpack"))
    n = len(cat)
    t2 = time.perf_counter()
    return cat, {"import_s": t1 - t0, "open_s": t2 - t1, "n": n}


def _queries(backend: str, plan: str, sample: str, tr: list[float], sid: list[int]) -> dict:
    if backend == "lite":
        from databroker_lite import ScanIDRange, TimeRange
        srange: Any = ScanIDRange(sid[0], sid[1])
    else:
        from databroker.queries import TimeRange
        srange = {"scan_id": {"$gte": sid[0], "$lt": sid[1]}}
    return {"plan": {"plan_name": plan}, "time": TimeRange(since=tr[0], until=tr[1]),
            "nested": {"sample.name": sample}, "range": srange}


def task_catalog(backend: str, path: str, scan_ids: list[int], prefixes: list[str],
                 plan: str, sample: str, tr: list[float], sid: list[int],
                 searches: int = 1) -> dict:
    """Cold open, then look-ups (one sample per argument) and the four searches."""
    cat, out = _open(backend, path)
    # Each look-up is timed with .metadata: our cat[key] hands back a Run that has read
    # nothing yet, databroker's has loaded its entry, so the look-up alone would flatter us.
    out["last"], out["scan_id"], out["prefix"] = [], [], []
    t, md = _timed(lambda: cat[-1].metadata)
    out["last"].append(t)
    out["last_uid"] = md["start"]["uid"]
    for _ in range(4):
        out["last"].append(_timed(lambda: cat[-1].metadata)[0])
    out["scan_id_found"] = []
    for s in scan_ids:
        t, md = _timed(lambda s=s: cat[s].metadata)
        out["scan_id"].append(t)
        out["scan_id_found"].append(md["start"]["scan_id"])
    out["prefix_found"] = []
    for p in prefixes:
        t, md = _timed(lambda p=p: cat[p].metadata)
        out["prefix"].append(t)
        out["prefix_found"].append(md["start"]["uid"])
    counts = {}
    for name, q in _queries(backend, plan, sample, tr, sid).items():
        out["search_" + name] = []
        for _ in range(searches):
            t, counts[name] = _timed(lambda q=q: len(cat.search(q)))
            out["search_" + name].append(t)
    out["counts"] = counts
    return out


def _warm_lazy_imports() -> None:
    """Import, before timing, what the libraries import on first use.

    databroker imports xarray and dask up front, we on first use: time neither. And
    dask's first compute imports ``distributed``, xarray's first index ``pint``, when
    installed: 0.3-0.4 s in a fresh interpreter, whichever library runs. Our venv has
    both (test extras), the peer's neither, so timing them would compare installed
    packages, not libraries.
    """
    import importlib
    for mod in ("xarray", "dask.array", "distributed", "pint"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def task_first_read(backend: str, path: str, uid: str = "", names: list[str] | None = None) -> dict:
    """What a new user pays once: import, open and the first read of a fresh interpreter,
    nothing imported beforehand (``backend="h5py"``: ``path`` is the run file, ``names``
    its datasets)."""
    t0 = time.perf_counter()
    if backend == "h5py":
        import h5py
        with h5py.File(path, "r") as f:
            arrays = [f[x][:] for x in names or []]
        return {"seconds": time.perf_counter() - t0, "sum": float(arrays[4].sum()),
                "peak_mb": _status_kb("VmHWM") / 1024}
    cat, out = _open(backend, path)
    out["read_s"], ds = _timed(lambda: cat[uid].primary.read())
    out["seconds"] = time.perf_counter() - t0
    out["sum"] = float(ds["c3"].values.sum())
    out["peak_mb"] = _status_kb("VmHWM") / 1024
    return out


def task_scalar(backend: str, path: str, uids: list[str], loop_uids: list[str]) -> dict:
    """``cat[uid].primary.read()`` once per uid, then all of ``loop_uids`` in a loop."""
    _warm_lazy_imports()
    cat, out = _open(backend, path)
    out["read"], sums = [], []
    for u in uids:
        t, ds = _timed(lambda u=u: cat[u].primary.read())
        out["read"].append(t)
        sums.append(float(ds["c3"].values.sum()))
    out["sums"] = sums
    out["shape"] = list(ds["c3"].shape)

    def loop() -> float:
        total = 0.0
        for u in loop_uids:
            total += float(cat[u].primary.read()["c0"].values.sum())
        return total
    if loop_uids:
        out["loop"], out["loop_sum"] = _timed(loop)
    return out


def task_image(backend: str, path: str, uid: str = "", frame: int = 100,
               dataset: str = "entry/data/data", warm: bool = True) -> dict:
    """Cold: build to_dask(), compute one frame, then the mean over time; or the h5py floor.

    ``warm=False``: nothing is imported first, and ``first_use`` is import + open +
    ``to_dask()`` + the frame (h5py: import + ``File()`` + ``ds[k]``), what a new user pays."""
    out: dict[str, Any] = {}
    t_import = time.perf_counter()
    if backend in ("h5py", "dask"):
        import h5py
        import numpy as np
        t0 = time.perf_counter()
        out["import_s"] = t0 - t_import
        f = h5py.File(path, "r")
        ds = f[dataset]
        if backend == "h5py":
            arr = ds[frame]
            out["frame"] = time.perf_counter() - t0  # cold: File() + ds[frame]
            out["first_use"] = time.perf_counter() - t_import
            out["frame_warm"] = min(_timed(lambda k=k: ds[(frame + k) % ds.shape[0]])[0]
                                    for k in range(1, 6))

            def chunked_mean() -> Any:
                acc = np.zeros(ds.shape[1:], dtype="f8")
                for k in range(ds.shape[0]):
                    acc += ds[k]
                return acc / ds.shape[0]
            out["mean"], m = _timed(chunked_mean)
        else:
            if warm:
                _warm_lazy_imports()
            import dask.array as da
            lazy = da.from_array(ds, chunks=(1, *ds.shape[1:]))
            t, arr = _timed(lambda: lazy[frame].compute())
            out["frame"] = t
            out["frame_warm"] = min(_timed(lambda k=k: lazy[(frame + k) % ds.shape[0]].compute())[0]
                                    for k in range(1, 6))
            out["mean"], m = _timed(lambda: lazy.mean(axis=0).compute())
        out["frame_sum"] = int(arr.sum())
        out["mean_sum"] = float(m.sum())
        return out
    if warm:
        _warm_lazy_imports()
    cat, out = _open(backend, path)
    run = cat[uid]
    out["to_dask"], lazy = _timed(lambda: run.primary.to_dask())
    out["frame"], arr = _timed(lambda: lazy["img"][frame].compute())
    out["first_use"] = time.perf_counter() - t_import
    n = lazy["img"].shape[0]
    out["frame_warm"] = min(_timed(lambda k=k: lazy["img"][(frame + k) % n].compute())[0]
                            for k in range(1, 6))
    out["frame_sum"] = int(arr.values.sum())
    out["mean"], m = _timed(lambda: lazy["img"].mean("time").compute())
    out["mean_sum"] = float(m.values.sum())
    return out


def task_image_read(backend: str, path: str, uid: str = "",
                    dataset: str = "entry/data/data") -> dict:
    """The whole image stack into memory: seconds and peak RSS of that operation."""
    if backend == "h5py":
        import h5py
        f = h5py.File(path, "r")
        ds = f[dataset]

        def op() -> Any:
            return ds[:]
    else:
        _warm_lazy_imports()
        cat, _ = _open(backend, path)
        run = cat[uid]

        def op() -> Any:
            return run.primary.read()["img"].values
    reset = _reset_peak()
    before = _status_kb("VmRSS")
    t, arr = _timed(op)
    peak = _status_kb("VmHWM")
    return {"seconds": t, "peak_mb": peak / 1024, "op_mb": (peak - before) / 1024,
            "peak_reset": reset, "shape": list(arr.shape), "sum": int(arr.sum(dtype="u8"))}


TASKS = {"catalog": task_catalog, "scalar": task_scalar, "image": task_image,
         "image_read": task_image_read, "first_read": task_first_read}


if __name__ == "__main__":
    print(json.dumps(TASKS[sys.argv[1]](**json.loads(sys.argv[2]))))
