"""``python -m benchmarks [--quick] [--repeat N] [--json PATH]``: the issue 2 speed figures."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from ._common import Figure, machine_info, table

FULL = {"stack": (500, 512, 512), "scalar_events": 10_000, "catalog_runs": 100_000, "repeat": 5,
        "pack_mb": 1024}
QUICK = {"stack": (50, 256, 256), "scalar_events": 10_000, "catalog_runs": 2_000, "repeat": 3,
         "pack_mb": 64}
SECTIONS = ("scalar", "images", "ingest", "catalog", "pack", "peer", "index")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="CI-sized data (about a minute)")
    p.add_argument("--repeat", type=int, default=None, help="samples per figure (5 full, 3 quick)")
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "latest.json"),
                   help="where to write the results as JSON (default %(default)s)")
    p.add_argument("--catalog-runs", type=int, default=None,
                   help="runs in the catalog benchmark (100,000 full, 2,000 quick)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes writing the catalog's runs (default %(default)s)")
    p.add_argument("--only", choices=SECTIONS, action="append",
                   help="run only these sections (repeatable)")
    p.add_argument("--tmp", default=None, help="parent directory for the generated data")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None,
                   help="compare with databroker 1.2.5 in a cached venv of its own (default: "
                        "build the venv if missing, except in --quick mode with CI=true)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, write the JSON; exit 0 unless something broke."""
    args = parse(argv)
    cfg = dict(QUICK if args.quick else FULL)
    repeat = args.repeat or cfg["repeat"]
    n_runs = args.catalog_runs or cfg["catalog_runs"]
    sections = args.only or list(SECTIONS)
    rng = np.random.default_rng(2)
    tmp = tempfile.mkdtemp(prefix="dbl-bench-", dir=args.tmp)
    figures: list[Figure] = []
    timings: dict[str, float] = {}
    mode = "quick" if args.quick else "full"
    print(f"databroker_lite benchmarks ({mode}, repeat={repeat}); data in {tmp}", flush=True)
    try:
        from . import catalog, frames, index_backends, ingest, pack, peer, reads
        n, h, w = cfg["stack"]
        plan = {
            "scalar": lambda: (reads.bench_scalar(tmp, repeat, rng)
                               + reads.bench_distinct(tmp, repeat, args.quick, args.workers)),
            "images": lambda: (reads.bench_images(tmp, repeat, n, h, w, rng)
                               + frames.bench_external(tmp, repeat, *((128, 128) if args.quick
                                                                       else (h, w)))),
            "ingest": lambda: ingest.bench_ingest(tmp, repeat, n, h, w, cfg["scalar_events"], rng),
            "catalog": lambda: catalog.bench_catalog(tmp, repeat, n_runs, args.workers, rng),
            "pack": lambda: pack.bench_pack(tmp, repeat, cfg["pack_mb"], rng),
            "peer": lambda: peer.bench_peer(tmp, args.quick, repeat, args.workers, args.peer, rng),
            "index": lambda: index_backends.bench_index(tmp, repeat, n_runs, args.workers, rng),
        }
        for name in sections:
            print(f"- {name} ...", flush=True)
            t0 = time.perf_counter()
            figures += plan[name]()
            timings[name] = time.perf_counter() - t0
            print(f"  done in {timings[name]:.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(figures))
    met = [f.met() for f in figures if f.met() is not None]
    print(f"\ngoals met: {sum(met)}/{len(met)}  (ratio = ours/baseline cost: time, memory, "
          "or baseline rate/our rate; below 1 means ours is cheaper)")
    out = {"mode": mode, "repeat": repeat, "sizes": {**cfg, "catalog_runs": n_runs},
           "machine": machine_info(), "section_seconds": timings,
           "figures": [f.as_json() for f in figures]}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
