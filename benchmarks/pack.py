"""5. Pack: ``databroker_lite.pack`` (copy + BLAKE3 of every file) vs ``cp -r`` of the same files."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time

import numpy as np
from event_model import compose_run

import databroker_lite

from ._common import Baseline, Figure, in_child, timeit


def _write_runs(directory: str, n_runs: int, frames: int, rng: np.random.Generator) -> int:
    cat = databroker_lite.open_catalog(directory)
    for i in range(n_runs):
        b = compose_run(metadata={"scan_id": i + 1, "plan_name": "count"})
        cat.insert("start", b.start_doc)
        d = b.compose_descriptor(name="primary", data_keys={
            "img": {"dtype": "array", "shape": [512, 512], "dtype_numpy": "<u2", "source": "bench"}})
        cat.insert("descriptor", d.descriptor_doc)
        for _ in range(frames):
            cat.insert("event", d.compose_event(
                data={"img": rng.integers(0, 4096, (512, 512), dtype="u2")}, timestamps={"img": 0.0}))
        cat.insert("stop", b.compose_stop())
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
               if f.endswith(".h5"))


def _check_read_back(src: str, dest: str) -> None:
    """The pack holds every source run file byte for byte, and its runs read the source's values."""
    from databroker_lite.pack.files import same_bytes
    if not databroker_lite.verify(dest).ok:
        raise RuntimeError(f"pack benchmark: verify({dest}) fails")
    names = sorted(f for f in os.listdir(src) if f.endswith(".h5"))
    for name in names:
        if not same_bytes(os.path.join(src, name), os.path.join(dest, name)):
            raise RuntimeError(f"pack benchmark: {name} in the pack differs from the source file")
    a, b = databroker_lite.open_catalog(src, "r"), databroker_lite.open_catalog(dest, "r")
    for uid in a:
        if not np.array_equal(a[uid].primary.read()["img"].values, b[uid].primary.read()["img"].values):
            raise RuntimeError(f"pack benchmark: run {uid} reads back different from the pack")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench_pack(tmp: str, repeat: int, total_mb: int, rng: np.random.Generator) -> list[Figure]:
    src = os.path.join(tmp, "pack-src")
    n_runs = 4
    frames = max(1, total_mb * 2**20 // (n_runs * 512 * 512 * 2))
    nbytes = _write_runs(src, n_runs, frames, rng)
    dest = os.path.join(tmp, "pack-dest")

    def clear() -> None:
        shutil.rmtree(dest, ignore_errors=True)

    def ours_once() -> None:
        databroker_lite.pack(src, dest, all=True, quiet=True)

    def cp_once() -> None:
        subprocess.run(["cp", "-r", src, dest], check=True)

    # ours and cp taken in turn, so a change of machine load falls on both; wall and CPU
    # time (ours: every thread of this process; cp: the child's user + system time)
    ours, cp, ours_cpu, cp_cpu = [], [], [], []
    for i in range(repeat + 1):  # the first round warms up, and its pack is checked
        for fn, wall, cpu in ((ours_once, ours, ours_cpu), (cp_once, cp, cp_cpu)):
            clear()
            os.sync()  # no sample starts behind the last one's writeback (the same for both)
            c0 = time.process_time() + _children_cpu()
            wall_s = timeit(fn, 1)[0]
            if i:
                wall.append(wall_s)
                cpu.append(time.process_time() + _children_cpu() - c0)
            elif fn is ours_once:
                _check_read_back(src, dest)
    clear()
    mb = nbytes / 1e6
    rss = [in_child("pack", src=src, dest=os.path.join(tmp, f"pack-rss-{i}"))["op_mb"]
           for i in range(max(1, repeat // 2))]
    shutil.rmtree(src, ignore_errors=True)
    note = (f"{n_runs} runs, {mb:.0f} MB; ours copies through a partial file and hashes every byte "
            f"(BLAKE3); load average {os.getloadavg()[0]:.1f}")
    return [
        Figure("5. pack", f"pack --all, {mb:.0f} MB (throughput)", "/s",
               [mb / t for t in ours], [Baseline("cp -r of the same files", [mb / t for t in cp])],
               goal=("ratio", 1 / 0.8), note=note + " (unit: MB/s)"),
        Figure("5. pack", f"  CPU time of that pack, {mb:.0f} MB", "s", ours_cpu,
               [Baseline("cp -r (the child's user + system time)", cp_cpu)],
               note="every thread of this process; steadier than wall time on a shared machine, "
                    "and what a second idle core cannot hide"),
        Figure("5. pack", "peak RSS added by pack (fresh process)", "MB", rss,
               note="memory must stay flat: files are hashed 32 MB of a memory map at a time"),
    ]
