"""Reindex at scale: ``cat.reindex()`` of a directory of run files, wall and CPU time.

The baseline, measured in the same run on the same files, is the least any index must
do: two processes (one per core) open every file with h5py and read its start and stop
documents. Ours and the baseline take turns; medians are quoted. Files come from
``--files DIR`` (reused) or are written with the real writer (~5 ms a run); ``--copies N``
adds copies of them under new uids up to N files (~1 ms a copy).

    python -m benchmarks.reindex --files /data/runs --repeat 5
    python -m benchmarks.reindex --runs 10000 --copies 100000 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import databroker_lite

_NAIVE = r"""
import json, os, sys, h5py
d, names = sys.argv[1], sys.stdin.read().split()
n = 0
for name in names:
    with h5py.File(os.path.join(d, name), "r") as f:
        json.loads(f["start"][()])
        if "stop" in f:
            json.loads(f["stop"][()])
        n += 1
print(n)
"""


# copies of a directory's run files under new uids: start (uid, scan_id, time) and stop
# rewritten in place with h5py, through a temporary name, so no half-made file is seen
_COPY = r"""
import json, os, shutil, sys, uuid
import h5py
d, first, n, part, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
names = sys.stdin.read().split()
for i in range(first + part, n, parts):
    uid = str(uuid.uuid4())
    out = os.path.join(d, uid + ".h5")
    shutil.copyfile(os.path.join(d, names[i % len(names)]), out + ".copying")
    with h5py.File(out + ".copying", "r+") as f:
        start = json.loads(f["start"][()])
        start.update(uid=uid, scan_id=10**6 + i, time=start["time"] + i)
        f["start"][()] = json.dumps(start)
        f.attrs["uid"] = uid
        if "stop" in f:
            stop = json.loads(f["stop"][()])
            stop.update(run_start=uid, uid=str(uuid.uuid4()), time=start["time"] + 1)
            f["stop"][()] = json.dumps(stop)
    os.replace(out + ".copying", out)
"""


def grow(directory: str, total: int, procs: int = 2) -> None:
    """Add copies of the run files in ``directory`` under new uids, scan_ids and times until
    it holds ``total`` (``procs`` processes; about 1 ms a copy): 100,000 runs in minutes
    where the writer takes a quarter of an hour. Copies cost what originals cost to read."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".h5"))
    if not names or len(names) >= total:
        return
    children = [subprocess.Popen([sys.executable, "-c", _COPY, directory, str(len(names)), str(total),
                                  str(i), str(procs)], stdin=subprocess.PIPE, text=True)
                for i in range(procs)]
    for child in children:
        child.stdin.write("\n".join(names))
        child.stdin.close()
    for child in children:
        if child.wait() != 0:
            raise RuntimeError(f"copying run files failed (exit {child.returncode})")


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def naive(directory: str, names: list[str], procs: int = 2) -> int:
    """Start and stop of every file read by ``procs`` h5py processes; files read."""
    children = [subprocess.Popen([sys.executable, "-c", _NAIVE, directory], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    for i, child in enumerate(children):
        child.stdin.write("\n".join(names[i::procs]))
        child.stdin.close()
    seen = 0
    for child in children:
        text = child.stdout.read()
        if child.wait() != 0:
            raise RuntimeError(f"the naive reader failed (exit {child.returncode})")
        seen += int(text)
    return seen


def measure(directory: str, repeat: int) -> dict:
    names = sorted(n for n in os.listdir(directory) if n.endswith(".h5"))
    cat = databroker_lite.open_catalog(directory, index="beside")
    out: dict[str, list[float]] = {"ours_wall": [], "ours_cpu": [], "naive_wall": [], "naive_cpu": []}
    for i in range(repeat):
        steps = [("ours", lambda: cat.reindex()["added"]), ("naive", lambda: naive(directory, names))]
        for kind, fn in (steps if i % 2 == 0 else steps[::-1]):
            c0, t0 = _cpu(), time.perf_counter()
            n = fn()
            out[f"{kind}_wall"].append(time.perf_counter() - t0)
            out[f"{kind}_cpu"].append(_cpu() - c0)
            if n != len(names):
                raise RuntimeError(f"{kind} saw {n} of {len(names)} run files")
    return {"files": len(names), "repeat": repeat, "load": os.getloadavg(),
            "cores": os.cpu_count(), **out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reindex", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", help="directory of run files (default: write --runs new ones)")
    p.add_argument("--runs", type=int, default=10_000, help="runs to write without --files")
    p.add_argument("--copies", type=int, help="grow the directory to this many run files with "
                   "copies of its runs under new uids (see grow())")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", default=os.path.join("benchmarks", "results", "reindex.json"))
    args = p.parse_args(argv)
    directory = args.files
    if directory is None:
        from .catalog import build
        directory = os.path.join(tempfile.mkdtemp(prefix="dbl-reindex-"), "runs")
        print(f"writing {args.runs:,} runs into {directory} ...", file=sys.stderr, flush=True)
        build(directory, args.runs, 2)
    if args.copies:
        print(f"copying runs up to {args.copies:,} files ...", file=sys.stderr, flush=True)
        grow(directory, args.copies)
    load0 = os.getloadavg()
    r = measure(directory, args.repeat)
    r["load_before"] = load0
    med = {k: statistics.median(v) for k, v in r.items() if k.endswith(("_wall", "_cpu"))}
    print(f"reindex of {r['files']:,} run files, medians of {args.repeat}, "
          f"load {load0[0]:.1f} -> {r['load'][0]:.1f} on {r['cores']} cores")
    print(f"  ours:  wall {med['ours_wall']:.1f} s  CPU {med['ours_cpu']:.1f} s "
          f"({med['ours_cpu'] / r['files'] * 1e6:.0f} us a file)")
    print(f"  naive: wall {med['naive_wall']:.1f} s  CPU {med['naive_cpu']:.1f} s "
          "(2 h5py processes reading start + stop)")
    print(f"  ratio wall {med['ours_wall'] / med['naive_wall']:.2f}x, "
          f"CPU {med['ours_cpu'] / med['naive_cpu']:.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
