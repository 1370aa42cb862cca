"""How search cost grows with the number of runs: an index filled with synthetic rows.

No run files are written (the index alone answers searches), so 100,000 runs take
about a minute to set up. Each figure is the median of 7 timings after a warm-up,
next to the same question asked the pre-fields way (``json_extract`` over every row),
measured on the same index in the same run.

    python -m benchmarks.search_scale 1000 10000 100000
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
import uuid

from databroker_lite.catalogs import Catalog
from databroker_lite.index import Index

PLANS = ("count", "scan", "rel_scan", "grid_scan", "list_scan")


def fill(directory: str, n: int) -> tuple[Index, float]:
    idx = Index(directory)
    conn = idx.conn
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    for i in range(n):
        uid = str(uuid.UUID(int=i + 1, version=4))
        start = {"uid": uid, "time": 1.7e9 + 60 * i, "scan_id": i + 1, "plan_name": PLANS[i % 5],
                 "sample": {"name": f"sample-{i % 37:02d}", "temperature": 20.0 + i % 50},
                 "operator": "bench", "detectors": ["det"], "motors": ["motor"],
                 "plan_args": {"detectors": ["det"], "num": 3}, "versions": {"bluesky": "1.13"}}
        stop = {"uid": uid + "-stop", "run_start": uid, "time": start["time"] + 5,
                "exit_status": ("success", "abort")[i % 50 == 0], "num_events": {"primary": 3}}
        idx._upsert(start, stop, ["primary"], uid + ".h5", 0, 0)
    idx._set_meta("dir_stamp", idx.dir_stamp())
    conn.execute("COMMIT")
    return idx, time.perf_counter() - t0


def median(fn, n: int = 7) -> float:
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(sizes: list[int]) -> None:
    print(f"{'runs':>8}  {'query':<42} {'ours':>10} {'json_extract scan':>18} {'ratio':>7}")
    for n in sizes:
        d = tempfile.mkdtemp(prefix="dbl-search-")
        try:
            idx, fill_s = fill(d, n)
            cat = Catalog(d, _index=idx)
            conn = idx.conn
            cases = [
                ({"sample.name": "sample-05"},
                 "SELECT COUNT(*) FROM runs WHERE json_extract(start, '$.sample.name') = 'sample-05'"),
                ({"sample.temperature": {"$gt": 68}},
                 "SELECT COUNT(*) FROM runs WHERE json_extract(start, '$.sample.temperature') > 68"),
                ({"stop.exit_status": "abort"},
                 "SELECT COUNT(*) FROM runs WHERE json_extract(stop, '$.exit_status') = 'abort'"),
                ({"$text": {"$search": "sample 05"}},
                 "SELECT COUNT(*) FROM runs WHERE instr(start, 'sample-05') > 0"),
            ]
            for q, base in cases:
                ours = median(lambda q=q, cat=cat: len(cat.search(q)))
                theirs = median(lambda base=base, conn=conn: conn.execute(base).fetchone())
                print(f"{n:>8,}  {str(q):<42} {ours * 1e3:>8.2f}ms {theirs * 1e3:>16.2f}ms "
                      f"{ours / theirs:>7.3f}")
            print(f"{n:>8,}  (index rows written in {fill_s:.1f} s, {fill_s / n * 1e3:.2f} ms per run)")
        finally:
            idx.close()
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10_000, 100_000])
