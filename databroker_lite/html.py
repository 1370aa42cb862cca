"""HTML reprs for Jupyter: catalogs, runs and streams at a glance."""
from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalogs import Catalog
    from .run import Run
    from .stream import Stream

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:90%"


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th style='text-align:left;padding:0 8px'>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:0 8px'>{escape(str(c))}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table style='{_STYLE}'><tr>{th}</tr>{body}</table>"


def stream_html(stream: Stream) -> str:
    cols = stream._reader.columns(stream.name)
    rows = [[k, c.dtype if c.dtype.kind != "O" else "str", "x".join(str(s) for s in c.shape) or "scalar",
             c.external or "", c.data_key.get("units", "")] for k, c in cols.items()]
    return (f"<div><b>Stream {escape(stream.name)}</b>: {len(stream)} events"
            + _table(["column", "dtype", "shape per event", "external", "units"], rows) + "</div>")


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "?"


def run_html(run: Run) -> str:
    """The run at a glance: scan_id, plan, uid (once), how it ended, when, then each stream."""
    start, stop = run.metadata["start"], run.metadata["stop"]
    scan_id, plan = start.get("scan_id", "?"), start.get("plan_name") or "?"
    status = stop.get("exit_status", "?") if stop else "(running or no stop)"
    end = _when(stop.get("time")) if stop else "(no stop)"
    rows = [["scan_id", scan_id], ["plan_name", plan], ["uid", run.uid],
            ["exit_status", status], ["time", f"{_when(start.get('time'))} -- {end}"]]
    rows += [[k, start[k]] for k in ("sample", "operator", "proposal_id") if k in start]
    info = "".join(f"<tr><th style='text-align:left;padding:0 8px'>{escape(k)}</th>"
                   f"<td style='padding:0 8px'>{escape(str(v))}</td></tr>" for k, v in rows)
    parts = [f"<details open><summary><b>BlueskyRun</b> scan_id {escape(str(scan_id))} "
             f"&middot; {escape(str(plan))} &middot; {escape(str(status))}</summary>",
             f"<table style='{_STYLE}'>{info}</table>"]
    for name in run:
        parts.append(stream_html(run[name]))
    parts.append("</details>")
    return "".join(parts)


def _streams(value: object) -> str:
    names = json.loads(value) if isinstance(value, str) else (value or [])
    return ", ".join(names)


def catalog_html(cat: Catalog) -> str:
    rows = [[r["scan_id"], r["uid"][:8], r["time"] and datetime.fromtimestamp(
        r["time"]).strftime("%Y-%m-%d %H:%M:%S"), r["plan_name"] or "", r["exit_status"] or "—",
             _streams(r.get("streams"))]
            for r in cat._newest(10)]
    title = escape(cat.name or cat.directory)
    return (f"<div><b>Catalog {title}</b>: {len(cat)} runs at <code>{escape(cat.directory)}</code>"
            + _table(["scan_id", "uid", "start", "plan", "exit", "streams"], rows) + "</div>")
