"""Shared pieces: timing, figures, the results table and fresh-process measurements."""
from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def timeit(fn: Callable[[], Any], repeat: int, *, setup: Callable[[], Any] | None = None,
           warmup: int = 0, teardown: Callable[[], Any] | None = None) -> list[float]:
    """Wall-clock seconds of ``fn()`` for ``repeat`` runs (setup/teardown not timed)."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
        if teardown:
            teardown()
    out = []
    for _ in range(repeat):
        if setup:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if teardown:
            teardown()
    return out


@dataclass
class Baseline:
    """What our figure is compared with, measured in the same run on the same data."""
    name: str
    values: list[float]
    goal: float | None = None   # a ratio limit against this baseline (ours/baseline <= goal)


@dataclass
class Figure:
    """One operation: our samples, its baselines and the goal from issue 2.

    ``unit`` is "s" (lower is better), "MB" (lower is better) or "/s" (a rate,
    higher is better). ``goal`` is one of ("ratio", x): ours/baseline cost <= x,
    ("max", x): our median <= x, ("min", x): our median >= x, or None.
    """
    section: str
    op: str
    unit: str
    values: list[float]
    baselines: list[Baseline] = field(default_factory=list)
    goal: tuple | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def ratio(self, b: Baseline) -> float:
        """Cost ratio: how many times slower (or bigger) ours is than the baseline."""
        ours, base = self.median, statistics.median(b.values)
        if self.unit == "/s":
            ours, base = base, ours
        return ours / base if base else float("inf")

    def met(self) -> bool | None:
        own = [self.ratio(b) <= b.goal for b in self.baselines if b.goal is not None]
        if self.goal is None:
            return all(own) if own else None
        kind, x = self.goal
        if kind == "ratio":
            return bool(self.baselines) and self.ratio(self.baselines[0]) <= x
        if kind == "max":
            return self.median <= x
        if kind == "min":
            return self.median >= x
        raise ValueError(kind)

    def goal_text(self) -> str:
        if self.goal is None:
            return "-" if not any(b.goal for b in self.baselines) else ""
        kind, x = self.goal
        if kind == "ratio":
            return f"<= {x:g}x"
        return f"{'<=' if kind == 'max' else '>='} {fmt(x, self.unit)}"

    def as_json(self) -> dict:
        d = asdict(self)
        d["median"] = self.median
        d["spread"] = [min(self.values), max(self.values)]
        d["ratios"] = {b.name: self.ratio(b) for b in self.baselines}
        d["met"] = self.met()
        return d


def fmt(v: float, unit: str) -> str:
    """A value with a readable unit."""
    if unit == "s":
        if v < 1e-3:
            return f"{v * 1e6:.0f} us"
        if v < 1:
            return f"{v * 1e3:.2f} ms"
        return f"{v:.2f} s"
    if unit == "MB":
        return f"{v:.0f} MB"
    if unit == "/s":
        return f"{v:,.0f}/s"
    return f"{v:g} {unit}"


def fmt_ratio(r: float) -> str:
    """A ratio with two significant digits below 0.1 (0.0031x), else two decimals."""
    return f"{r:.2g}x" if r < 0.1 else f"{r:.2f}x"


def spread(values: list[float], unit: str) -> str:
    if len(values) == 1:
        return "(n=1)"
    return f"({fmt(min(values), unit)}-{fmt(max(values), unit)})"


def table(figures: list[Figure]) -> str:
    """The results as a fixed-width text table, one line per baseline."""
    head = ["operation", "ours: median (min-max)", "baseline", "baseline median", "ratio", "goal", "met?"]
    rows = []
    section = None
    for f in figures:
        if f.section != section:
            section = f.section
            rows.append([f"[{section}]", "", "", "", "", "", ""])
        ours = f"{fmt(f.median, f.unit)} {spread(f.values, f.unit)}"
        met = {None: "-", True: "yes", False: "NO"}[f.met()]
        bases = f.baselines or [None]
        for i, b in enumerate(bases):
            rows.append([
                f.op if i == 0 else "",
                ours if i == 0 else "",
                b.name if b else "-",
                fmt(statistics.median(b.values), f.unit) if b else "-",
                fmt_ratio(f.ratio(b)) if b else "-",
                (f.goal_text() if i == 0 else "") + (f"<= {b.goal:g}x" if b and b.goal else ""),
                met if i == 0 else "",
            ])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    notes = [f"  * {f.op}: {f.note}" for f in figures if f.note]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def in_child(task: str, **kwargs: Any) -> dict:
    """Run ``benchmarks._child`` task in a fresh interpreter; returns what it reports."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "benchmarks._child", task, json.dumps(kwargs)],
                          capture_output=True, text=True, env=env, cwd=root, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"child task {task} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info() -> dict:
    """What the figures were measured on."""
    import platform

    import dask
    import h5py
    import xarray

    import databroker_lite
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpus": os.cpu_count(), "numpy": np.__version__, "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version, "xarray": xarray.__version__, "dask": dask.__version__,
        "databroker_lite": databroker_lite.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
