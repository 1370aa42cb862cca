"""The PostgreSQL index beside SQLite: reindex, look-ups and searches on one catalog.

One directory of run files, indexed twice in the same run: SQLite beside the files (the
default) and PostgreSQL (a throwaway local server from :mod:`databroker_lite.pgtemp`, or
``$DATABROKER_LITE_BENCH_PG`` for a real one). Ours is the PostgreSQL-indexed catalog,
the baseline the SQLite-indexed one, so the ratio says what the server costs.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

import databroker_lite
from databroker_lite import ScanIDRange, TimeRange

from ._common import Baseline, Figure, timeit
from .catalog import SAMPLES, SPACING, T0, build

SECTION = "7. index backends"


def _server():
    url = os.environ.get("DATABROKER_LITE_BENCH_PG")
    if url:
        return url, None, "the server at $DATABROKER_LITE_BENCH_PG"
    from databroker_lite.pgtemp import PostgresUnavailable, TempPostgres
    try:
        server = TempPostgres()
        return server.start(), server, "a local throwaway server (unix socket, fsync off)"
    except PostgresUnavailable as exc:
        return None, None, str(exc)


def bench_index(tmp: str, repeat: int, n_runs: int, workers: int,
                rng: np.random.Generator) -> list[Figure]:
    """Reindex, look-ups, searches: PostgreSQL (ours) vs SQLite (baseline), same files."""
    url, server, where = _server()
    if url is None:
        print(f"  skipped: {where}", file=sys.stderr, flush=True)
        return []
    try:
        return _bench(tmp, repeat, n_runs, workers, rng, url + ("&" if "?" in url else "?")
                      + f"catalog=bench-{os.getpid()}-{time.time_ns()}", where)
    finally:
        if server is not None:
            server.stop()


def _bench(tmp: str, repeat: int, n_runs: int, workers: int, rng: np.random.Generator,
           url: str, where: str) -> list[Figure]:
    directory = os.path.join(tmp, "index_backends")
    print(f"  writing {n_runs:,} runs with {workers} process(es) ...", file=sys.stderr, flush=True)
    build(directory, n_runs, workers)
    lite = databroker_lite.open_catalog(directory, index="beside")
    t0 = time.perf_counter()
    pg = databroker_lite.open_catalog(directory, index=url)
    pg_first = time.perf_counter() - t0
    assert len(lite) == len(pg) == n_runs, (len(lite), len(pg), n_runs)

    t0 = time.perf_counter()
    c_lite = lite.reindex()
    re_lite = time.perf_counter() - t0
    t0 = time.perf_counter()
    c_pg = pg.reindex()
    re_pg = time.perf_counter() - t0
    assert c_lite == c_pg and c_pg["added"] == n_runs, (c_lite, c_pg)
    figs = [Figure(SECTION, f"reindex() of {n_runs:,} run files", "s", [re_pg],
                   [Baseline("SQLite index, same files", [re_lite])],
                   note=f"PostgreSQL: {where}; its first open (fills the index) took {pg_first:.1f} s")]

    batch, n_samples = 10, max(5, repeat * 3)
    uids = list(lite)
    scan_ids = [int(x) for x in rng.integers(1, n_runs + 1, size=batch)]
    prefixes = [uids[int(j)][:8] for j in rng.integers(0, n_runs, size=batch)]
    # correctness first: the same answers
    for key in (-1, -7, scan_ids[0], prefixes[0]):
        assert pg[key].uid == lite[key].uid, key

    def batched(fn, args):
        def go():
            for a in args:
                fn(a)
        return [t / len(args) for t in timeit(go, n_samples, warmup=1)]

    looks = [("cat[-1]", lambda c, _: c[-1], [None]),
             ("cat[scan_id]", lambda c, s: c[s], scan_ids),
             ("cat['<8-char uid prefix>']", lambda c, p: c[p], prefixes),
             ("len(cat)", lambda c, _: len(c), [None])]
    for op, fn, args in looks:
        figs.append(Figure(SECTION, f"{op} (PostgreSQL)", "s",
                           batched(lambda a, fn=fn: fn(pg, a), args),
                           [Baseline("SQLite index", batched(lambda a, fn=fn: fn(lite, a), args))],
                           ("max", 0.010)))

    day = T0 + SPACING * (n_runs // 2)
    sid = n_runs // 3
    searches = [("len(cat.search({'plan_name': 'grid_scan'}))", {"plan_name": "grid_scan"}),
                ("len(cat.search(TimeRange(one day)))", TimeRange(since=day, until=day + 86400.0)),
                (f"len(cat.search({{'sample.name': {SAMPLES[5]!r}}}))", {"sample.name": SAMPLES[5]}),
                ("len(cat.search(ScanIDRange(a, a+100)))", ScanIDRange(sid, sid + 100)),
                ("len(cat.search({'sample.temperature': {'$gt': 60}}))",
                 {"sample.temperature": {"$gt": 60}})]
    for op, q in searches:
        assert len(pg.search(q)) == len(lite.search(q)), op
        figs.append(Figure(SECTION, f"{op} (PostgreSQL)", "s",
                           batched(lambda q_: len(pg.search(q_)), [q] * 3),
                           [Baseline("SQLite index", batched(lambda q_: len(lite.search(q_)), [q] * 3))],
                           ("max", 0.100)))
    pg._index.drop()
    return figs
