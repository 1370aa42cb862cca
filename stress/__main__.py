"""Fault and load tests too long for the unit tests: ``python -m stress [--quick]``.

* kill: SIGKILL a writer process at random moments (scalar and image runs) and check
  every run afterwards (stress/kill.py);
* points: kill a flush at each of its file writes, with and without the undo journal;
* concurrency: one writer process and four reader processes (stress/concurrency.py);
* scale: a long scalar run and a large image run, peak memory of writing and lazy reading
  (stress/scale.py; full: 4,000,000 events of 20 columns and 20 GB).

Exit status 1 if anything was lost, ragged, wrong or raised. ``--quick`` is the CI size.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI sizes (about two minutes on 2 cores)")
    ap.add_argument("--only", choices=("kill", "points", "concurrency", "scale"), action="append")
    ap.add_argument("--scale-events", type=int, help="scalar events (default 200,000 quick, 4,000,000 full)")
    ap.add_argument("--scale-gb", type=float, help="image run size in GB (default 0.25 quick, 20 full)")
    ap.add_argument("--kills", type=int, help="writer kills (default 50 quick, 200 full)")
    ap.add_argument("--seed", type=int, help="seed of the kill campaign (default: from the clock, printed)")
    ap.add_argument("--seconds", type=float, help="concurrency run time (default 15 quick, 60 full)")
    ap.add_argument("--events", type=int, default=300, help="events per run in the concurrency test")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    only = set(args.only or ("kill", "points", "concurrency", "scale"))
    work = args.dir or tempfile.mkdtemp(prefix="dbl-stress-")
    figures: dict = {}
    problems: list[str] = []
    try:
        if "kill" in only:
            from .kill import campaign
            kills = args.kills or (50 if args.quick else 200)
            t0 = time.monotonic()
            seed = args.seed if args.seed is not None else int(time.time()) % 10000
            print(f"kill: seed {seed} (again: python -m stress --only kill --seed {seed})", flush=True)
            t = campaign(f"{work}/kill", kills, seed=seed, verbose=False)
            figures["kill"] = {"seed": seed, "kills": t.kills, "unreadable_files": t.corrupt,
                               "interrupted_runs": t.interrupted, "finished_runs_checked": t.finished_checked,
                               "events_checked": t.events_checked, "seconds": round(time.monotonic() - t0, 1)}
            problems += [f"{f} (seed {seed})" for f in t.failures]
            if t.corrupt:
                problems.append(f"{t.corrupt} run file(s) unreadable after a kill (seed {seed})")
            print(f"kill: {json.dumps(figures['kill'])}", flush=True)
        if "points" in only:
            from .kill import kill_points
            figures["points"] = {"with_undo": kill_points(f"{work}/points1", undo=True),
                                 "without_undo": kill_points(f"{work}/points0", undo=False)}
            w = figures["points"]["with_undo"]
            if w["unreadable"] or w["wrong"]:
                problems.append(f"kill points with the undo journal: {w}")
            print(f"points: {json.dumps(figures['points'])}", flush=True)
        if "concurrency" in only:
            from .concurrency import check, run
            seconds = args.seconds or (15 if args.quick else 60)
            r = run(f"{work}/concurrency", seconds=seconds, n_events=args.events)
            figures["concurrency"] = {k: {kk: vv for kk, vv in v.items() if kk != "errors"}
                                      for k, v in r.items()}
            problems += check(r)
            print(f"concurrency: {json.dumps(figures['concurrency'])}", flush=True)
        if "scale" in only:
            from . import scale
            r = scale.run(f"{work}/scale", args.scale_events or (200_000 if args.quick else 4_000_000),
                          args.scale_gb or (0.25 if args.quick else 20.0))
            figures["scale"] = r
            problems += scale.check(r)
            print(f"scale: {json.dumps(r)}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"figures": figures, "problems": problems}, f, indent=1)
    for p in problems:
        print("PROBLEM:", p, file=sys.stderr)
    print("stress: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
