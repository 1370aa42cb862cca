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


def run_html(run: Run) -> str:
    text = escape(repr(run))
    parts = [f"<details open><summary><b>BlueskyRun</b> {escape(run.uid)}</summary>",
             f"<pre>{text}</pre>"]
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
