"""Scale: a long scalar run and a large image run, written and read back with flat memory.

Each measurement runs in a fresh process so its peak RSS (VmHWM) is its own. The image
frames are generated on the fly, so the size on disk is not limited by memory.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

_CHILD = r'''
import json, os, sys, time
import numpy as np
from event_model import compose_run
import databroker_lite

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

task, directory, n, side = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
N_COLUMNS = int(os.environ["SCALE_COLUMNS"])
import dask.array, xarray  # imported before the baseline so their memory is not counted
base = hwm_mb()
t0 = time.perf_counter()
out = {}
if task == "write_scalar":
    cat = databroker_lite.open_catalog(directory)
    b = compose_run(metadata={"scan_id": 1, "plan_name": "count"})
    keys = {f"c{i}": {"dtype": "number", "shape": [], "source": "scale"} for i in range(N_COLUMNS)}
    cat.insert("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys=keys)
    cat.insert("descriptor", d.descriptor_doc)
    page = 500  # event pages, as a fly scan's collect gives them: the run is long, not slow
    for i0 in range(0, n, page):
        seq = list(range(i0, min(n, i0 + page)))
        cat.insert("event_page", d.compose_event_page(
            data={k: [float(i) for i in seq] for k in keys},
            timestamps={k: [0.0] * len(seq) for k in keys}, seq_num=[i + 1 for i in seq],
            time=[0.0] * len(seq), validate=False))  # time our checks, not event-model's
    cat.insert("stop", b.compose_stop())
elif task == "write_image":
    cat = databroker_lite.open_catalog(directory)
    b = compose_run(metadata={"scan_id": 2, "plan_name": "count"})
    cat.insert("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [side, side], "dtype_numpy": "<u2", "source": "scale"}})
    cat.insert("descriptor", d.descriptor_doc)
    frame = np.arange(side * side, dtype="u2").reshape(side, side)
    for i in range(n):
        cat.insert("event", d.compose_event(data={"img": frame + np.uint16(i)}, timestamps={"img": 0.0},
                                            validate=False))
    cat.insert("stop", b.compose_stop())
elif task == "read_scalar":
    ds = databroker_lite.open_catalog(directory, "r")[1].primary.to_dask()
    total = float(ds["c3"].sum().compute())
    out["check"] = total == float(n) * (n - 1) / 2
elif task == "read_image":
    ds = databroker_lite.open_catalog(directory, "r")[2].primary.to_dask()
    last = ds["img"][n - 1].compute().values
    frame = np.arange(side * side, dtype="u2").reshape(side, side)
    m = ds["img"][:, :4, :4].mean("time").compute().values  # every frame, a corner of each
    out["check"] = bool((last == frame + np.uint16(n - 1)).all() and m.shape == (4, 4))
out["seconds"] = time.perf_counter() - t0
out["peak_mb"] = hwm_mb()
out["added_mb"] = out["peak_mb"] - base
print(json.dumps(out))
'''


N_COLUMNS = 20  # scalar columns: the run's data is 160 bytes an event


def _child(task: str, directory: str, n: int, side: int = 0) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, task, directory, str(n), str(side)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "SCALE_COLUMNS": str(N_COLUMNS)})
    if proc.returncode:
        raise RuntimeError(f"{task} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(work: str, n_scalar: int, image_gb: float, side: int = 1024) -> dict:
    """Write and lazily read a scalar run of ``n_scalar`` events and an image run of ``image_gb``."""
    os.makedirs(work, exist_ok=True)
    frames = max(1, int(image_gb * 2**30 // (side * side * 2)))
    out = {"scalar_events": n_scalar, "scalar_mb": round(n_scalar * N_COLUMNS * 8 / 2**20, 1),
           "image_frames": frames, "image_mb": round(frames * side * side * 2 / 2**20, 1),
           "image_gb": round(frames * side * side * 2 / 2**30, 2)}
    for task, n, s in (("write_scalar", n_scalar, 0), ("read_scalar", n_scalar, 0),
                       ("write_image", frames, side), ("read_image", frames, side)):
        t0 = time.monotonic()
        out[task] = _child(task, work, n, s)
        out[task]["wall"] = round(time.monotonic() - t0, 1)
    return out


def check(result: dict) -> list[str]:
    problems = []
    for task in ("read_scalar", "read_image"):
        if not result[task].get("check"):
            problems.append(f"scale: {task} read back wrong values")
    # Limits derived from each run's own size, so that a path holding the whole run (a
    # writer that never flushes, a to_dask() that loads everything) crosses them at any
    # size, CI's included: a fixed allowance for the libraries' own allocations plus a
    # fraction of the run. Reading the scalar run touches one column of twenty (seen: 27-38
    # MB added at CI size, limit 45; a to_dask() that loads everything: 66).
    scalar, image = result["scalar_mb"], result["image_mb"]
    limits = (("write_scalar", 30 + scalar / 4), ("read_scalar", 30 + scalar / 2),
              ("write_image", 80 + image / 2), ("read_image", 40 + image / 2))
    for task, limit in limits:
        if result[task]["added_mb"] > limit:
            problems.append(f"scale: {task} added {result[task]['added_mb']:.0f} MB of memory "
                            f"(limit {limit:.0f} MB: memory must stay flat)")
    return problems
