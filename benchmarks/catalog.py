"""A large catalog: building it, opening it, looking runs up and searching it."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

import event_model
import h5py
import numpy as np

import databroker_lite
from databroker_lite import ScanIDRange, TimeRange

from ._common import Baseline, Figure, in_child, timeit

PLANS = ("count", "scan", "rel_scan", "grid_scan", "list_scan")
SAMPLES = tuple(f"sample-{i:02d}" for i in range(37))
T0 = 1_735_689_600.0   # 2025-01-01 00:00 UTC
SPACING = 60.0         # seconds between run starts
TASK_RUNS = 250        # runs per generation task


def start_metadata(i: int) -> dict:
    """Metadata of run number ``i`` (0-based): unique scan_id, regular times, cycling names."""
    return {"scan_id": i + 1, "plan_name": PLANS[i % len(PLANS)],
            "sample": {"name": SAMPLES[i % len(SAMPLES)], "temperature": 20.0 + (i % 50)},
            "operator": "bench", "detectors": ["det"], "motors": ["motor"]}


def write_runs(cat: databroker_lite.Catalog, first: int, stop: int) -> None:
    """Runs ``first .. stop-1``: start, descriptor, 3 events, stop each, through cat.insert."""
    data_keys = {"det": {"dtype": "number", "shape": [], "source": "sim"},
                 "motor": {"dtype": "number", "shape": [], "source": "sim"}}
    for i in range(first, stop):
        t = T0 + i * SPACING
        b = event_model.compose_run(time=t, metadata=start_metadata(i))
        cat.insert("start", b.start_doc)
        d = b.compose_descriptor(name="primary", data_keys=data_keys, time=t)
        cat.insert("descriptor", d.descriptor_doc)
        for j in range(3):
            cat.insert("event", d.compose_event(data={"det": float(j * i), "motor": float(j)},
                                                timestamps={"det": t + j, "motor": t + j},
                                                seq_num=j + 1, time=t + j))
        cat.insert("stop", b.compose_stop(time=t + 5))


def _gen_task(directory: str, first: int, stop: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    write_runs(databroker_lite.open_catalog(directory), first, stop)
    return stop - first, time.perf_counter() - t0


def build(directory: str, n_runs: int, workers: int) -> tuple[list[float], float]:
    """Write ``n_runs`` runs in ``workers`` processes, each task into its own catalog, then
    move every file into ``directory`` (without an index). Returns per-task seconds per run
    and the wall time."""
    parts = directory + ".parts"
    os.makedirs(directory, exist_ok=True)
    tasks = [(os.path.join(parts, f"{a:07d}"), a, min(a + TASK_RUNS, n_runs))
             for a in range(0, n_runs, TASK_RUNS)]
    per_run: list[float] = []
    t0 = time.perf_counter()
    done = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futs = [pool.submit(_gen_task, *t) for t in tasks]
        for fut in as_completed(futs):
            n, dt = fut.result()
            per_run.append(dt / n)
            done += n
            if len(per_run) % max(1, len(tasks) // 10) == 0 or done == n_runs:
                el = time.perf_counter() - t0
                print(f"  ... {done:,}/{n_runs:,} runs written in {el:.0f} s "
                      f"({done / el:.0f} runs/s)", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    for part, _, _ in tasks:
        for name in os.listdir(part):
            if name.endswith(".h5"):
                os.rename(os.path.join(part, name), os.path.join(directory, name))
    shutil.rmtree(parts)
    return per_run, wall


def naive_scan(directory: str) -> list[dict]:
    """What a tool without an index does: open every run file and read its start document."""
    out = []
    for name in os.listdir(directory):
        if name.endswith(".h5"):
            with h5py.File(os.path.join(directory, name), "r") as f:
                out.append(json.loads(f["start"][()]))
    return out


def h5py_tiny_run(path: str, i: int) -> None:
    """Baseline for one small run: the same content written with plain h5py."""
    md = start_metadata(i)
    with h5py.File(path, "w") as f:
        f.create_dataset("start", data=json.dumps(md))
        g = f.create_group("primary")
        g.create_dataset("det", data=np.arange(3.0), maxshape=(None,), chunks=True)
        g.create_dataset("motor", data=np.arange(3.0), maxshape=(None,), chunks=True)
        g.create_dataset("time", data=np.arange(3.0), maxshape=(None,), chunks=True)
        f.create_dataset("stop", data=json.dumps({"exit_status": "success"}))


def bench_catalog(tmp: str, repeat: int, n_runs: int, workers: int,
                  rng: np.random.Generator) -> list[Figure]:
    """Issue 2, item 4."""
    sec = "4. catalog"
    directory = os.path.join(tmp, "catalog")
    print(f"  writing {n_runs:,} runs with {workers} process(es) ...", file=sys.stderr, flush=True)
    per_run, wall = build(directory, n_runs, workers)

    # per-run baseline with plain h5py, same process count of one
    base_dir = os.path.join(tmp, "h5py_runs")
    os.makedirs(base_dir)
    k = 200
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(k):
            h5py_tiny_run(os.path.join(base_dir, f"{i}.h5"), i)
        samples.append((time.perf_counter() - t0) / k)
    shutil.rmtree(base_dir)
    figs = [Figure(sec, "write one small run via cat.insert (start, descriptor, 3 events, stop)", "s",
                   per_run, [Baseline("h5py: same content, one file", samples)],
                   note=f"{n_runs:,} runs written in {wall:.0f} s with {workers} processes "
                        f"({n_runs / wall:.0f} runs/s); per-run times are per task of {TASK_RUNS} runs "
                        "in one process, including composing the documents with event_model")]

    # the index: built on first open, then rebuilt with reindex()
    t0 = time.perf_counter()
    cat = databroker_lite.open_catalog(directory)
    first_open = time.perf_counter() - t0
    assert len(cat) == n_runs, (len(cat), n_runs)
    t0 = time.perf_counter()
    counts = cat.reindex()
    reindex = time.perf_counter() - t0
    assert counts["added"] == n_runs and counts["bad"] == 0, counts
    t0 = time.perf_counter()
    starts = naive_scan(directory)
    scan = time.perf_counter() - t0
    assert len(starts) == n_runs
    figs.append(Figure(sec, f"cat.reindex() of {n_runs:,} run files", "s", [reindex],
                       [Baseline("naive: open every file, read start", [scan])],
                       note=f"first open without an index (builds it): {first_open:.1f} s; "
                            f"{reindex / n_runs * 1e3:.2f} ms per file"))

    # cold open in a fresh process
    index = os.path.join(directory, ".databroker_lite", "index.sqlite")
    opens = [in_child("open_catalog", directory=directory) for _ in range(repeat)]
    sq = [in_child("open_sqlite", index=index) for _ in range(repeat)]
    assert all(o["n"] == n_runs for o in opens + sq)
    figs.append(Figure(sec, "open_catalog(path) in a fresh process", "s", [o["open_s"] for o in opens],
                       [Baseline("sqlite3.connect + COUNT(*)", [o["open_s"] for o in sq])],
                       ("max", 0.010),
                       note=f"plus 'import databroker_lite': "
                            f"{np.median([o['import_s'] for o in opens]):.2f} s"))

    # look-ups and searches: ours vs plain sqlite3 on the same index file vs a naive scan
    conn = sqlite3.connect(index)
    batch = 10
    n_samples = max(5, repeat * 3)
    scan_ids = [int(x) for x in rng.integers(1, n_runs + 1, size=batch)]
    uids = [starts[int(j)]["uid"] for j in rng.integers(0, n_runs, size=batch)]
    prefixes = [u[:8] for u in uids]
    day = T0 + SPACING * (n_runs // 2)
    tr = (day, day + 86400.0)
    sid_lo = n_runs // 3

    def batched(fn, args):
        def go():
            for a in args:
                fn(a)
        return lambda: [t / len(args) for t in timeit(go, n_samples, warmup=1)]

    def naive(filt):
        t0 = time.perf_counter()
        filt(starts)
        return [scan + time.perf_counter() - t0]

    plan = "grid_scan"
    sample = SAMPLES[5]
    q_plan, q_time = {"plan_name": plan}, TimeRange(since=tr[0], until=tr[1])
    q_nested, q_range = {"sample.name": sample}, ScanIDRange(sid_lo, sid_lo + 100)
    # correctness first: each answer agrees with the naive scan
    assert cat[-1].uid == max(starts, key=lambda s: s["time"])["uid"]
    assert cat[scan_ids[0]].start["scan_id"] == scan_ids[0]
    assert cat[prefixes[0]].uid == uids[0]
    expect = {
        "plan": sum(s["plan_name"] == plan for s in starts),
        "time": sum(tr[0] <= s["time"] < tr[1] for s in starts),
        "nested": sum(s["sample"]["name"] == sample for s in starts),
        "range": sum(sid_lo <= s["scan_id"] < sid_lo + 100 for s in starts),
    }
    got = {"plan": len(cat.search(q_plan)), "time": len(cat.search(q_time)),
           "nested": len(cat.search(q_nested)), "range": len(cat.search(q_range))}
    assert got == expect, (got, expect)

    def sql(query, params=()):
        return lambda _=None: conn.execute(query, params).fetchall()

    look = [
        ("cat[-1]", lambda _: cat[-1], [None],
         sql("SELECT uid, file FROM runs ORDER BY time DESC, uid DESC LIMIT 1"),
         lambda ss: max(ss, key=lambda s: s["time"])),
        ("cat[scan_id]", lambda s: cat[s], scan_ids,
         lambda s: conn.execute("SELECT uid, file FROM runs WHERE scan_id = ? ORDER BY time DESC",
                                (s,)).fetchall(),
         lambda ss: [s for s in ss if s["scan_id"] == scan_ids[0]]),
        ("cat['<8-char uid prefix>']", lambda p: cat[p], prefixes,
         lambda p: conn.execute("SELECT uid, file FROM runs WHERE uid >= ? AND uid < ? LIMIT 2",
                                (p, p + "\U0010ffff")).fetchall(),
         lambda ss: [s for s in ss if s["uid"].startswith(prefixes[0])]),
        ("len(cat)", lambda _: len(cat), [None], sql("SELECT COUNT(*) FROM runs"), len),
    ]
    for op, fn, args, base, filt in look:
        figs.append(Figure(sec, op, "s", batched(fn, args)(),
                           [Baseline("sqlite3 query, same index", batched(base, args)()),
                            Baseline("naive scan of all start docs", naive(filt))], ("max", 0.010)))
    searches = [
        (f"len(cat.search({{'plan_name': {plan!r}}}))", q_plan,
         sql("SELECT COUNT(*) FROM runs WHERE plan_name = ?", (plan,)),
         lambda ss: [s for s in ss if s["plan_name"] == plan], ""),
        ("len(cat.search(TimeRange(one day)))", q_time,
         sql("SELECT COUNT(*) FROM runs WHERE time >= ? AND time < ?", tr),
         lambda ss: [s for s in ss if tr[0] <= s["time"] < tr[1]], ""),
        (f"len(cat.search({{'sample.name': {sample!r}}}))", q_nested,
         sql("SELECT COUNT(*) FROM runs WHERE json_extract(start, '$.sample.name') = ?", (sample,)),
         lambda ss: [s for s in ss if s["sample"]["name"] == sample],
         "nested key: not an indexed column, SQLite evaluates json_extract on every row"),
        ("len(cat.search(ScanIDRange(a, a+100)))", q_range,
         sql("SELECT COUNT(*) FROM runs WHERE scan_id >= ? AND scan_id < ?", (sid_lo, sid_lo + 100)),
         lambda ss: [s for s in ss if sid_lo <= s["scan_id"] < sid_lo + 100], ""),
    ]
    for op, q, base, filt, note in searches:
        figs.append(Figure(sec, op, "s", batched(lambda q_: len(cat.search(q_)), [q] * 3)(),
                           [Baseline("sqlite3 query, same index", batched(base, [None] * 3)()),
                            Baseline("naive scan of all start docs", naive(filt))], ("max", 0.100),
                           note=note))

    # cat[uid].metadata on distinct runs: every sample uses runs that no earlier sample of
    # either side touched, so no per-process cache serves them (start and stop come from
    # the index row); baselines: the same row from SQLite, and the run file read with h5py
    per = 5
    rows = conn.execute("SELECT uid, file FROM runs ORDER BY time DESC LIMIT ?",
                        (per * 3 * (n_samples + 1),)).fetchall()
    sets = [rows[i:i + per] for i in range(0, len(rows), per)]
    md_ours, md_sql, md_h5 = [], [], []
    for i in range(n_samples + 1):
        a, b, c = sets[3 * i:3 * i + 3]
        t0 = time.perf_counter()
        got = [cat[u].metadata for u, _ in a]
        t1 = time.perf_counter()
        for u, _ in b:
            start, stop = conn.execute("SELECT start, stop FROM runs WHERE uid = ?", (u,)).fetchone()
            json.loads(start), json.loads(stop) if stop else None
        t2 = time.perf_counter()
        for _, file in c:
            with h5py.File(os.path.join(directory, file), "r") as f:
                json.loads(f["start"][()]), json.loads(f["stop"][()])
        t3 = time.perf_counter()
        assert [m["start"]["uid"] for m in got] == [u for u, _ in a]
        if i:  # the first set warms SQLite's statement cache on both sides
            md_ours.append((t1 - t0) / per)
            md_sql.append((t2 - t1) / per)
            md_h5.append((t3 - t2) / per)
    figs.append(Figure(sec, f"cat[uid].metadata, distinct runs ({per} per sample)", "s", md_ours,
                       [Baseline("sqlite3: SELECT start, stop + json.loads", md_sql),
                        Baseline("h5py: File() + start + stop", md_h5)], ("max", 0.010),
                       note="every sample on runs not looked up before in the process"))
    conn.close()
    return figs
