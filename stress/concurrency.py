"""One writer process appending runs while reader processes list, search and read.

Every read must see all columns at one length, with the values the writer was told
to write (a function of seq_num and the run's seed), and no exception at all (in
particular no "database is locked"). Readers must see runs land while they loop.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback

import numpy as np

KEYS = ("x", "y", "k")


def _values(seed: int, seq: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": seq * 2.0 + seed, "y": np.sin(seq + seed), "k": (seq * 3 + seed).astype("int64")}


def _ready(go, ready) -> None:
    """Import what the loop needs, then wait for everyone: a process that is still
    importing (seconds on a busy machine) must not shorten the others' time together."""
    import event_model  # noqa: F401
    import xarray  # noqa: F401

    import databroker_lite  # noqa: F401
    ready.release()
    go.wait()


def writer(directory: str, seconds: float, n_events: int, q, go, ready, done) -> None:
    """Write runs for ``seconds``; events arrive in bursts with explicit flushes in between."""
    _ready(go, ready)
    import event_model

    import databroker_lite
    cat = databroker_lite.open_catalog(directory)
    w = cat.writer
    t_end = time.monotonic() + seconds
    runs = 0
    try:
        while time.monotonic() < t_end:
            b = event_model.compose_run(metadata={"plan_name": "conc", "seed": runs, "scan_id": runs + 1})
            w("start", b.start_doc)
            d = b.compose_descriptor(name="primary", data_keys={
                "x": {"dtype": "number", "shape": [], "source": "s"},
                "y": {"dtype": "number", "shape": [], "source": "s"},
                "k": {"dtype": "integer", "shape": [], "source": "s"}})
            w("descriptor", d.descriptor_doc)
            vals = _values(runs, np.arange(1, n_events + 1))
            for i in range(n_events):
                w("event", d.compose_event(data={k: vals[k][i].item() for k in KEYS},
                                           timestamps=dict.fromkeys(KEYS, time.time()), seq_num=i + 1))
                if i % 50 == 49:
                    w.flush()
            w("stop", b.compose_stop())
            runs += 1
        q.put(("writer", {"runs": runs, "errors": []}))
    except Exception:  # noqa: BLE001 - reported to the parent
        q.put(("writer", {"runs": runs, "errors": [traceback.format_exc()]}))
    finally:
        done.set()


def reader(directory: str, mode: str, ident: int, q, go, ready, done) -> None:
    """List, search and read in a loop until the writer is done, then once more; report
    counts and every problem seen."""
    _ready(go, ready)
    import databroker_lite
    stats = {"loops": 0, "reads": 0, "events": 0, "first_len": None, "max_len": 0, "last_len": 0,
             "errors": [], "ragged": 0, "wrong": 0, "locked": 0, "exceptions": 0, "vanished": 0,
             "missed": 0, "seq_checks": 0}
    cat = databroker_lite.open_catalog(directory, mode=mode)
    last = False
    while not last:
        last = done.is_set()  # the writer has finished: this loop must see every run
        try:
            n = len(cat)
            stats["first_len"] = n if stats["first_len"] is None else stats["first_len"]
            stats["max_len"] = max(stats["max_len"], n)
            stats["last_len"] = n
            uids = list(cat)
            # every run matches this query, so the search answers all runs listed before
            # it and nothing that is not listed just after it
            found = set(cat.search({"plan_name": "conc", "seed": {"$gte": 0}}))
            after = set(cat)
            if not set(uids) <= found <= after:
                stats["missed"] += 1
            for uid in uids[-3:]:
                try:
                    run = cat[uid]
                except KeyError:  # listed a moment ago, gone now: the index dropped it
                    stats["vanished"] += 1
                    continue
                if "primary" not in run:
                    if os.environ.get("STRESS_DEBUG") and stats["reads"]:
                        print(f"reader{ident}: {uid} has no primary; n={n} "
                              f"in_memory={cat._index.in_memory}", flush=True)
                    continue
                ds = run.primary.read()
                stats["reads"] += 1
                lens = {ds[k].shape[0] for k in ds.data_vars} | {ds.sizes.get("time", 0)}
                if len(lens) > 1:
                    stats["ragged"] += 1
                    continue
                m = ds.sizes.get("time", 0)
                stats["events"] += m
                if m:
                    exp = _values(run.metadata["start"]["seed"], np.arange(1, m + 1))
                    if not all(np.array_equal(ds[k].values, exp[k]) for k in KEYS):
                        stats["wrong"] += 1
                if stats["reads"] % 10 == 1:  # the events' own seq_num, from the documents
                    seq = [d["seq_num"] for name, d in run.documents() if name == "event"]
                    stats["seq_checks"] += 1
                    if seq != list(range(1, len(seq) + 1)) or len(seq) < m:
                        stats["wrong"] += 1
            stats["loops"] += 1
        except Exception as exc:  # noqa: BLE001 - every exception is a failure to report
            stats["exceptions"] += 1
            if os.environ.get("STRESS_DEBUG"):
                print(f"reader{ident}: {exc!r}; bad files {cat._index.bad_files()}", flush=True)
            if "locked" in str(exc):
                stats["locked"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(traceback.format_exc())
    q.put((f"reader{ident}", stats))


def run(directory: str, seconds: float = 15.0, readers: int = 4, n_events: int = 300) -> dict:
    """Start the writer and the readers; return what each reported."""
    ctx = mp.get_context("spawn")
    os.makedirs(directory, exist_ok=True)
    import databroker_lite
    databroker_lite.open_catalog(directory)  # the index exists before anyone reads
    q = ctx.Queue()
    go, ready, done = ctx.Event(), ctx.Semaphore(0), ctx.Event()
    sync = (go, ready, done)
    procs = [ctx.Process(target=writer, args=(directory, seconds, n_events, q, *sync))]
    procs += [ctx.Process(target=reader, args=(directory, "r" if i % 2 else "a", i, q, *sync))
              for i in range(readers)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError("a stress process did not start within 300 s")
    go.set()
    out = dict(q.get(timeout=seconds + 300) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return out


def check(result: dict) -> list[str]:
    """The problems in a result (empty when all is well)."""
    problems = list(result["writer"]["errors"])
    if result["writer"]["runs"] < 2:
        problems.append(f"the writer finished only {result['writer']['runs']} runs")
    for name, s in result.items():
        if name == "writer":
            continue
        problems += [f"{name}: {e}" for e in s["errors"]]
        for what in ("ragged", "wrong", "locked", "exceptions", "vanished"):
            if s[what]:
                problems.append(f"{name}: {s[what]} {what} reads")
        if s["missed"]:
            problems.append(f"{name}: {s['missed']} searches missed listed runs or found unlisted ones")
        landed = result["writer"]["runs"]
        if s["last_len"] != landed:
            problems.append(f"{name} saw {s['first_len']} -> {s['last_len']} runs after the "
                            f"writer had finished {landed}")
        if s["max_len"] - (s["first_len"] or 0) < min(2, landed):
            problems.append(f"{name} saw no runs land ({s['first_len']} -> {s['max_len']})")
        if not s["reads"] or not s["seq_checks"]:
            problems.append(f"{name} read nothing")
    return problems
