"""Reading: a scalar table with read(), and an image stack frame by frame and whole."""
from __future__ import annotations

import os
import time

import event_model
import h5py
import numpy as np

import databroker_lite

from . import frames as frames_mod
from ._common import Baseline, Figure, in_child, timeit


def write_scalar_run(cat: databroker_lite.Catalog, n_events: int, n_cols: int,
                     rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """One run with ``n_events`` events of ``n_cols`` float columns; returns (uid, values)."""
    values = rng.random((n_events, n_cols))
    keys = [f"c{i}" for i in range(n_cols)]
    bundle = event_model.compose_run(metadata={"plan_name": "count", "scan_id": 1})
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(
        name="primary", data_keys={k: {"dtype": "number", "shape": [], "source": "sim"} for k in keys})
    cat.insert("descriptor", desc.descriptor_doc)
    now = time.time()
    for i in range(n_events):
        row = values[i]
        cat.insert("event", desc.compose_event(
            data={k: float(row[j]) for j, k in enumerate(keys)},
            timestamps={k: now + i for k in keys}, seq_num=i + 1))
    cat.insert("stop", bundle.compose_stop())
    return bundle.start_doc["uid"], values


def image_documents(stack: np.ndarray, scan_id: int = 1) -> list[tuple[str, dict]]:
    """The documents of one run whose events carry the frames of ``stack`` as array data."""
    _, h, w = stack.shape
    bundle = event_model.compose_run(metadata={"plan_name": "count", "scan_id": scan_id})
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [h, w], "dtype_numpy": stack.dtype.str, "source": "sim"}})
    docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc)]
    now = time.time()
    for k in range(len(stack)):
        docs.append(("event", desc.compose_event(data={"img": stack[k]}, timestamps={"img": now + k},
                                                 seq_num=k + 1)))
    docs.append(("stop", bundle.compose_stop()))
    return docs


def make_stack(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 4096, size=(n, h, w), dtype=np.uint16)


def bench_scalar(tmp: str, repeat: int, rng: np.random.Generator) -> list[Figure]:
    """Issue 2, item 1: read() of a 1,000-event, 10-column float stream vs raw h5py."""
    n_events, n_cols = 1000, 10
    cat = databroker_lite.open_catalog(os.path.join(tmp, "scalar"))
    uid, values = write_scalar_run(cat, n_events, n_cols, rng)
    run = cat[uid]
    seg = run.primary.segments[0]
    names = [f"{seg.group}/data/c{i}" for i in range(n_cols)]
    ds = run.primary.read()
    assert ds["c3"].shape == (n_events,) and np.array_equal(ds["c3"].values, values[:, 3])
    assert ds.sizes["time"] == n_events

    def h5_read(f: h5py.File) -> list[np.ndarray]:
        return [f[f"{seg.group}/time"][:], *(f[n][:] for n in names)]

    f = h5py.File(run.path, "r")
    try:
        assert np.array_equal(h5_read(f)[4], values[:, 3])
        base_open = timeit(lambda: h5_read(f), repeat * 4, warmup=2)
        ours_open = timeit(lambda: run.primary.read(), repeat * 4, warmup=2)
    finally:
        f.close()

    def h5_cold() -> None:
        with h5py.File(run.path, "r") as g:
            h5_read(g)
    from databroker_lite.run import _READERS
    from databroker_lite.storage.files import FILE_CACHE

    def forget() -> None:  # cold = cold: no reader or file handle kept from the last sample
        _READERS._items.clear()
        FILE_CACHE.clear()
    base_cold = timeit(h5_cold, repeat * 4, warmup=1, setup=forget)
    ours_cold = timeit(lambda: cat[uid].primary.read(), repeat * 4, warmup=1, setup=forget)
    label = f"{n_events} events x {n_cols} float columns"
    return [
        Figure("1. scalar read", f"run.primary.read(), {label}", "s", ours_open,
               [Baseline("h5py: 11 datasets [:] (file open)", base_open)], ("ratio", 2.0),
               note="run object already in hand; baseline reads time + 10 columns from the same file"),
        Figure("1. scalar read", "cat[uid].primary.read() from scratch", "s", ours_cold,
               [Baseline("h5py: File() + 11 datasets [:]", base_cold)], ("ratio", 2.0)),
    ]


def bench_images(tmp: str, repeat: int, n: int, h: int, w: int,
                 rng: np.random.Generator) -> list[Figure]:
    """Issue 2, item 2: one frame via to_dask() and the whole stack via read(), vs h5py."""
    stack = make_stack(n, h, w, rng)
    directory = os.path.join(tmp, "images")
    cat = databroker_lite.open_catalog(directory)
    for name, doc in image_documents(stack):
        cat.writer(name, doc)
    uid = cat[-1].uid
    run = cat[uid]
    seg = run.primary.segments[0]
    dsname = f"{seg.group}/data/img"
    f = h5py.File(run.path, "r")
    h5ds = f[dsname]
    label = f"{n} x {h} x {w} uint16"
    frames = rng.permutation(n)[: min(n, 16)]
    lazy = run.primary.to_dask()
    for k in frames[:3]:
        assert np.array_equal(lazy["img"][int(k)].compute().values, stack[k])
    try:
        def each_frame(get):
            def go():
                for k in frames:
                    get(int(k))
            return go

        per = len(frames)
        base = [t / per for t in timeit(each_frame(lambda k: h5ds[k]), repeat, warmup=1)]
        incl = [t / per for t in timeit(
            each_frame(lambda k: run.primary.to_dask()["img"][k].compute()), repeat, warmup=1)]
        excl = [t / per for t in timeit(each_frame(lambda k: lazy["img"][k].compute()), repeat, warmup=1)]
        import dask.array as da  # here: the other sections' figures import no dask
        floor = da.from_array(h5ds)
        floor_t = [t / per for t in timeit(each_frame(lambda k: floor[k].compute()), repeat, warmup=1)]
        col = run.primary["img"]
        for k in frames[:3]:
            assert np.array_equal(col[int(k)], stack[k])
        direct = [t / per for t in timeit(each_frame(lambda k: col[k]), repeat * 3, warmup=1)]
        direct_incl = [t / per for t in timeit(each_frame(lambda k: run.primary["img"][k]),
                                               repeat * 3, warmup=1)]
        base3 = [t / per for t in timeit(each_frame(lambda k: h5ds[k]), repeat * 3, warmup=1)]
        full_base = timeit(lambda: h5ds[:], repeat, warmup=1)
        full = timeit(lambda: run.primary.read(), repeat, warmup=1)
        assert np.array_equal(run.primary.read()["img"].values, stack)
    finally:
        f.close()


    rss = {}
    for kind in ("ours", "h5py"):
        for frame in (None, int(frames[0])):
            samples = [in_child("read", kind=kind, directory=directory, uid=uid, path=run.path,
                                name=dsname, frame=frame) for _ in range(max(1, min(repeat, 3)))]
            rss[kind, frame] = samples
    sec = "2. image stack read"
    figs = [
        Figure(sec, "run.primary['img'][k] (ArrayColumn, no dask)", "s", direct,
               [Baseline("h5py: ds[k]", base3)], ("ratio", 2.0),
               note=f"per frame, averaged over {per} different frames; column built once"),
        Figure(sec, "run.primary['img'][k] incl. building the column", "s", direct_incl,
               [Baseline("h5py: ds[k]", base3)], ("ratio", 2.0)),
        Figure(sec, f"to_dask()['img'][k].compute() incl. to_dask(), {label}", "s", incl,
               [Baseline("dask floor: da.from_array(ds)[k].compute()", floor_t, 1.2),
                Baseline("h5py: ds[k]", base)],
               note=f"per frame, averaged over {per} different frames per sample; issue 14's goal "
                    "is the dask floor (no dask graph computes a frame at h5py's cost)"),
        Figure(sec, "lazy['img'][k].compute() (to_dask() built once)", "s", excl,
               [Baseline("dask floor: da.from_array(ds)[k].compute()", floor_t, 1.2),
                Baseline("h5py: ds[k]", base)]),
        Figure(sec, f"run.primary.read() of the whole stack ({stack_mb(n, h, w):.0f} MB)", "s", full,
               [Baseline("h5py: ds[:]", full_base)], ("ratio", 1.3)),
    ]
    figs += frames_mod.reduce_figures(sec, repeat, directory=directory, uid=uid, path=run.path,
                                      name=dsname)
    for frame, what in ((None, "read() whole stack"), (int(frames[0]), "one frame via to_dask()")):
        ours, theirs = rss["ours", frame], rss["h5py", frame]
        figs.append(Figure(sec, f"peak RSS added by {what} (fresh process)", "MB",
                           [s["op_mb"] for s in ours],
                           [Baseline("h5py equivalent", [s["op_mb"] for s in theirs])],
                           note=(f"whole-process peak: ours {np.median([s['peak_mb'] for s in ours]):.0f} MB, "
                                 f"h5py {np.median([s['peak_mb'] for s in theirs]):.0f} MB "
                                 "(ours imports xarray and dask)")))
        figs.append(Figure(sec, f"{what}, time in a fresh process", "s",
                           [s["seconds"] for s in ours],
                           [Baseline("h5py equivalent", [s["seconds"] for s in theirs])]))
    return figs


def stack_mb(n: int, h: int, w: int) -> float:
    return n * h * w * 2 / 2**20


def bench_distinct(tmp: str, repeat: int, quick: bool, workers: int) -> list[Figure]:
    """Issue 14: a loop over distinct runs, each looked up, opened and read once.

    Every sample uses runs that no earlier sample (of either side) touched in this
    process, so no per-process cache serves them; the OS page cache holds all the files
    (both sides alike). The first read of the process, which imports what xarray imports
    on first use, is its own row, next to a fresh h5py process's first read. Loops are
    timed in CPU time (process_time), steadier than wall time on a shared machine; the
    work is single-threaded on both sides.
    """
    import json
    import sqlite3

    from .peer import N_COLS, N_EVENTS, build_scalar

    per = 30 if quick else 100
    samples = max(3, repeat)
    directory = os.path.join(tmp, "distinct")
    uids = build_scalar(directory, None, per * samples * 3 + 1, workers)
    databroker_lite.open_catalog(directory)  # builds the index file once
    cat = databroker_lite.open_catalog(directory, "r")
    index = cat._index.path
    first_uid, uids = uids[0], uids[1:]
    sets = [uids[i * per:(i + 1) * per] for i in range(3 * samples)]
    group = "streams/primary/0"

    conn = sqlite3.connect(index)

    def h5_loop(us: list[str]) -> float:
        total = 0.0
        for u in us:  # the same work: uid -> file, open, time + 8 columns
            file = conn.execute("SELECT file FROM runs WHERE uid = ?", (u,)).fetchone()[0]
            with h5py.File(os.path.join(directory, file), "r") as f:
                f[f"{group}/time"][:]
                cols = [f[f"{group}/data/c{j}"][:] for j in range(N_COLS)]
            total += float(cols[0].sum())
        return total

    def our_loop(us: list[str]) -> float:
        return sum(float(cat[u].primary.read()["c0"].values.sum()) for u in us)

    def sql_meta(us: list[str]) -> None:
        for u in us:
            start, stop = conn.execute("SELECT start, stop FROM runs WHERE uid = ?", (u,)).fetchone()
            json.loads(start), json.loads(stop) if stop else None

    def our_meta(us: list[str]) -> None:
        for u in us:
            assert cat[u].metadata["start"]["uid"] == u

    t0 = time.perf_counter()
    first = cat[first_uid].primary.read()
    first_s = time.perf_counter() - t0
    assert first["c0"].shape == (N_EVENTS,)
    ours, base, meta, sql = [], [], [], []
    for i in range(samples):
        # reads on a (both sides: the same files), metadata on b (ours) and c (SQLite),
        # so neither side's metadata comes from pages the other just read; the order
        # alternates between samples
        a, b, c = sets[3 * i], sets[3 * i + 1], sets[3 * i + 2]
        pair = [(ours, our_loop, a), (base, h5_loop, a)]
        for out, fn, us in (pair if i % 2 == 0 else pair[::-1]):
            t0 = time.process_time()  # CPU time: the machine may be shared
            fn(us)
            out.append((time.process_time() - t0) / len(us))
        assert np.isclose(our_loop(a[:3]), h5_loop(a[:3]))
        pair = [(meta, our_meta, b), (sql, sql_meta, c)]
        for out, fn, us in (pair if i % 2 == 0 else pair[::-1]):
            t0 = time.process_time()  # CPU time: the machine may be shared
            fn(us)
            out.append((time.process_time() - t0) / len(us))
    conn.close()
    fresh_ours = [in_child("first_read", kind="ours", directory=directory, uid=u)
                  for u in uids[-3:]]
    fresh_h5 = [in_child("first_read", kind="h5py", directory=directory, uid=u)
                for u in uids[-3:]]
    sec = "1b. distinct runs"
    label = f"{N_EVENTS} events x {N_COLS} columns"
    return [
        Figure(sec, f"cat[uid].primary.read() over {per} distinct runs, per run", "s", ours,
               [Baseline("sqlite3 uid->file + h5py File() + 9 datasets [:]", base)], ("ratio", 2.0),
               note=f"{label}; every sample on runs not read before in the process; "
                    f"the first read of the process took {first_s * 1e3:.0f} ms (own row below)"),
        Figure(sec, f"cat[uid].metadata over {per} distinct runs, per run", "s", meta,
               [Baseline("sqlite3: SELECT start, stop + json.loads", sql)], ("ratio", 2.0)),
        Figure(sec, "first cat[uid].primary.read() of a fresh process (first-use imports)", "s",
               [s["seconds"] for s in fresh_ours],
               [Baseline("h5py: first File() + 9 datasets [:] of a fresh process",
                         [s["seconds"] for s in fresh_h5])],
               note="after import and open_catalog (ours) / import h5py; what a new session pays "
                    "once: xarray's first Dataset imports pint and more"),
    ]
