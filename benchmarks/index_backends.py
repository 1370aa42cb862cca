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


# --- how cost grows: 1k / 10k / 100k runs, SQLite and PostgreSQL side by side ---------
#
#   python -m benchmarks.index_backends [--sizes 1000 10000 100000] [--files DIR] [--repeat 5]
#
# The run files of the largest size are written once (benchmarks.catalog.build; or taken
# from --files, which keeps them for the next time); each size is a directory of hard
# links to the first N of them (by name, so a random sample of the runs), indexed by
# SQLite beside the files and by PostgreSQL. Every look-up and search is checked to give
# the same answer on both before it is timed. Figures are medians of --repeat samples
# (a look-up sample: the mean of 10 different keys).

POLICY_SAMPLES = (SAMPLES[3], SAMPLES[7])


def _policy() -> dict:
    """What an access policy adds to every query of a user in two proposals: their
    values as strings and as numbers, four values (here on the nested key sample.name)."""
    return {"sample.name": {"$in": [*POLICY_SAMPLES, 3, 7]}}


def _cpu() -> float:
    import resource
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _median(xs: list[float]) -> float:
    import statistics
    return statistics.median(xs)


def _size_figures(directory: str, url: str, repeat: int, rng: np.random.Generator) -> dict:
    """{operation: {"sqlite": [s...], "postgresql": [s...]}} for one catalog."""
    cats = {"sqlite": databroker_lite.open_catalog(directory, index="beside"),
            "postgresql": databroker_lite.open_catalog(directory, index=url)}
    lite, pg = cats["sqlite"], cats["postgresql"]
    n = len(lite)
    assert len(pg) == n, (len(pg), n)
    out: dict[str, dict[str, list[float]]] = {}
    wall: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    cpu: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for _ in range(repeat):  # alternating, so that a change in the machine's load hits both
        for name, cat in cats.items():
            c0, t0 = _cpu(), time.perf_counter()
            counts = cat.reindex()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu() - c0)
            assert counts["added"] == n and counts["bad"] == 0, counts
    out["reindex() (wall)"], out["reindex() (CPU, all processes of ours)"] = wall, cpu

    uids = list(lite)
    picks = [int(j) for j in rng.integers(0, n, size=10)]
    scan_ids = [r["scan_id"] for r in lite.summaries([uids[j] for j in picks])]
    prefixes = [uids[j][:8] for j in picks]
    times = sorted(r["time"] for r in lite.summaries(uids[:: max(1, n // 100)]))
    day = times[len(times) // 2]
    sid = sorted(scan_ids)[len(scan_ids) // 2]
    looks = [("cat[-1]", lambda c, _: c[-1].uid, [None]),
             ("cat[scan_id]", lambda c, s: c[s].uid, scan_ids),
             ("cat['<8-char uid prefix>']", lambda c, p: c[p].uid, prefixes),
             ("len(cat)", lambda c, _: len(c), [None]),
             ("len(cat) under an access policy", lambda c, _: len(c.search(_policy())), [None])]
    searches = [("search plan_name", {"plan_name": "grid_scan"}),
                ("search TimeRange (one day)", TimeRange(since=day, until=day + 86400.0)),
                ("search sample.name (nested key)", {"sample.name": SAMPLES[5]}),
                ("search ScanIDRange(a, a+1000)", ScanIDRange(sid, sid + 1000)),
                ("search sample.temperature > 60", {"sample.temperature": {"$gt": 60}})]
    for op, fn, args in looks:
        assert [fn(pg, a) for a in args] == [fn(lite, a) for a in args], op  # same answers
        out[op] = {}
        for name, cat in cats.items():
            def go(cat=cat, fn=fn, args=args):
                for a in args:
                    fn(cat, a)
            out[op][name] = [t / len(args) for t in timeit(go, repeat, warmup=1)]
    for op, q in searches:
        assert list(pg.search(q)) == list(lite.search(q)), op
        out[f"len({op})"] = {name: timeit(lambda c=cat, q=q: len(c.search(q)), repeat, warmup=1)
                             for name, cat in cats.items()}
    pg._index.drop()
    return out


def scale(sizes: list[int], files: str | None, repeat: int, seed: int = 0) -> dict:
    """Run the figures for each size; returns ``{"sizes", "figures", "load", ...}``."""
    import shutil
    import tempfile
    rng = np.random.default_rng(seed)
    tmp = tempfile.mkdtemp(prefix="dbl-index-scale-")
    url, server, where = _server()
    if url is None:
        raise SystemExit(f"PostgreSQL: {where}")
    try:
        files = files or os.path.join(tmp, "files")
        have = sorted(n for n in os.listdir(files) if n.endswith(".h5")) if os.path.isdir(files) else []
        if len(have) < max(sizes):
            print(f"writing {max(sizes):,} run files into {files} ...", file=sys.stderr, flush=True)
            shutil.rmtree(files, ignore_errors=True)
            build(files, max(sizes), 2)
            have = sorted(n for n in os.listdir(files) if n.endswith(".h5"))
        load = [os.getloadavg()]
        figures = {}
        for n in sizes:
            d = os.path.join(tmp, f"runs-{n}")
            os.makedirs(d)
            for name in have[:n]:
                os.link(os.path.join(files, name), os.path.join(d, name))
            print(f"{n:,} runs ...", file=sys.stderr, flush=True)
            key = f"scale-{n}-{os.getpid()}-{time.time_ns()}"
            figures[n] = _size_figures(d, url + ("&" if "?" in url else "?") + f"catalog={key}",
                                       repeat, rng)
            load.append(os.getloadavg())
            shutil.rmtree(d)
        return {"sizes": sizes, "repeat": repeat, "postgresql": where, "load": load,
                "cores": os.cpu_count(), "figures": figures}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def table(result: dict) -> str:
    """The medians as an RST list-table: one row per operation, SQLite | PostgreSQL per size."""
    sizes = result["sizes"]
    ops = list(result["figures"][sizes[0]])
    lines = [".. list-table::", "   :header-rows: 1", "", "   * - operation"]
    lines += [f"     - {n // 1000}k SQLite\n     - {n // 1000}k PostgreSQL" for n in sizes]
    for op in ops:
        lines.append(f"   * - ``{op}``" if op.startswith(("cat", "len")) else f"   * - {op}")
        for n in sizes:
            fig = result["figures"][n][op]
            lines.append(f"     - {_fmt(_median(fig['sqlite']))}\n     - {_fmt(_median(fig['postgresql']))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    p = argparse.ArgumentParser(prog="python -m benchmarks.index_backends",
                                description="how index cost grows: SQLite and PostgreSQL side by side")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--files", help="directory of run files to reuse (written there when short)")
    p.add_argument("--repeat", type=int, default=5, help="samples per figure (median quoted)")
    p.add_argument("--json", default=os.path.join("benchmarks", "results", "index_scale.json"))
    args = p.parse_args(argv)
    result = scale(sorted(args.sizes), args.files, args.repeat)
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(table(result))
    print(f"\nload (1/5/15 min) before and after each size: {result['load']}; "
          f"{result['cores']} cores; PostgreSQL: {result['postgresql']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
