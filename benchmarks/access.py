"""What the per-proposal access policy (server/auth.py) costs in the index, on N runs.

``python -m benchmarks.access [--runs 100000] [--repeat 5]``: an index of N runs in
200 proposals (rows written straight into the index; no run files), then the queries
a logged-in user's requests make, each with the policy's condition (two proposals,
1% of the runs) and without it (what staff or ``--api-key-file`` pay), in the same run.
Prints best-of-repeat times in ms and the ratio; asserts only that the answers agree.
"""
from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
import uuid

from databroker_lite.index import Index

POLICY = {"proposal_id": {"$in": ["2025-0007", "2025-0100"]}}


def build(directory: str, n: int) -> Index:
    ix = Index(directory)
    rnd = random.Random(0)
    with ix.conn:
        for i in range(n):
            t = 1.7e9 + i * 60
            start = {"uid": str(uuid.UUID(int=rnd.getrandbits(128))), "time": t, "scan_id": i + 1,
                     "plan_name": "count", "proposal_id": f"2025-{i % 200:04d}",
                     "sample": {"name": f"s{i % 37}"}, "operator": "bench"}
            ix._upsert(start, {"time": t + 5, "exit_status": "success"}, ["primary"],
                       f"f{i}.h5", 0, 0)
    return ix


def best_ms(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.access", description=__doc__)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="dbl-access-")
    try:
        ix = build(tmp, args.runs)
        n = args.runs
        ops = {
            "len()": lambda q: ix.count(q),
            "first page (100 uids)": lambda q: ix.uids(q, limit=100),
            "cat[-1]": lambda q: ix.uids(q, newest_first=True, limit=1),
            "cat[scan_id]": lambda q: ix.locate(q, key="scan_id", value=n // 2 + 8, limit=2),
            "search sample.name": lambda q: ix.count([*q, {"sample.name": "s3"}]),
        }
        assert ix.count([POLICY]) == 2 * (n // 200) + sum(
            1 for i in range(n - n % 200, n) if i % 200 in (7, 100))
        print(f"{n} runs, policy: 2 of 200 proposals ({ix.count([POLICY])} runs)")
        print(f"{'operation':24} {'with policy':>12} {'without':>10} {'ratio':>8}")
        for name, op in ops.items():
            with_p = best_ms(lambda op=op: op([POLICY]), args.repeat)
            without = best_ms(lambda op=op: op([]), args.repeat)
            print(f"{name:24} {with_p:10.2f}ms {without:8.2f}ms {with_p / max(without, 1e-3):7.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
