"""Text and HTML summaries of catalogs, runs and streams, the same for every implementation.

Every function takes plain data (documents, index-like rows, column descriptions), not
catalog objects: the local catalog, the remote one and any other gather the data their
own way and show the same thing. This module imports nothing else of the package.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any, NamedTuple

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:90%"


def fmt_time(t: float | None, *, ms: bool = True) -> str:
    """Local time of ``t`` (seconds since the epoch), to the millisecond; ``?`` if unknown."""
    if t is None:
        return "?"
    text = datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:-3] if ms else text[:19]


# --- runs --------------------------------------------------------------------------
def run_summary(uid: str, start: Mapping, stop: Mapping | None, streams: Iterable[str]) -> str:
    """The databroker-style text summary of a run (``repr(run)``)."""
    end = fmt_time(stop.get("time")) if stop else "(no stop)"
    lines = ["BlueskyRun",
             f"  uid={uid!r}",
             f"  exit_status={stop.get('exit_status') if stop else None!r}",
             f"  {fmt_time(start.get('time'))} -- {end}",
             "  Streams:"]
    lines += [f"    * {name}" for name in streams]
    return "\n".join(lines)


def run_html(uid: str, start: Mapping, stop: Mapping | None, streams_html: Iterable[str]) -> str:
    """The run at a glance: scan_id, plan, uid (once), how it ended, when, then each stream."""
    scan_id, plan = start.get("scan_id", "?"), start.get("plan_name") or "?"
    status = stop.get("exit_status", "?") if stop else "(running or no stop)"
    end = fmt_time(stop.get("time"), ms=False) if stop else "(no stop)"
    rows = [["scan_id", scan_id], ["plan_name", plan], ["uid", uid],
            ["exit_status", status], ["time", f"{fmt_time(start.get('time'), ms=False)} -- {end}"]]
    rows += [[k, start[k]] for k in ("sample", "operator", "proposal_id") if k in start]
    info = "".join(f"<tr><th style='text-align:left;padding:0 8px'>{escape(k)}</th>"
                   f"<td style='padding:0 8px'>{escape(str(v))}</td></tr>" for k, v in rows)
    parts = [f"<details open><summary><b>BlueskyRun</b> scan_id {escape(str(scan_id))} "
             f"&middot; {escape(str(plan))} &middot; {escape(str(status))}</summary>",
             f"<table style='{_STYLE}'>{info}</table>", *streams_html, "</details>"]
    return "".join(parts)


# --- streams -----------------------------------------------------------------------
class ColumnInfo(NamedTuple):
    """One column of a stream as the summaries show it."""

    key: str
    dtype: Any  # a numpy dtype (text: kind "O" or "U")
    shape: tuple  # per event
    external: str = ""
    units: str = ""


def stream_summary(name: str, run_uid: str, n_events: int, fields: Sequence[str]) -> str:
    """``repr(stream)``."""
    return f"<Stream {name!r} of run {run_uid[:8]}: {n_events} events, columns {list(fields)}>"


def stream_html(name: str, n_events: int, columns: Iterable[ColumnInfo]) -> str:
    """A stream's columns as a table: dtype, shape per event, external, units."""
    rows = [[c.key, "str" if getattr(c.dtype, "kind", "") in "OU" else c.dtype,
             "x".join(str(s) for s in c.shape) or "scalar", c.external or "", c.units or ""]
            for c in columns]
    return (f"<div><b>Stream {escape(name)}</b>: {n_events} events"
            + _table(["column", "dtype", "shape per event", "external", "units"], rows) + "</div>")


# --- catalogs ----------------------------------------------------------------------
def catalog_row(uid: str, start: Mapping, stop: Mapping | None,
                streams: Iterable[str] = ()) -> dict:
    """A run as a catalog summary line shows it, from its start and stop documents
    (the local catalog reads the same fields from its index)."""
    stop = stop or {}
    return {"uid": uid, "scan_id": start.get("scan_id"), "time": start.get("time"),
            "plan_name": start.get("plan_name"), "exit_status": stop.get("exit_status"),
            "streams": list(streams)}


def catalog_summary(kind: str, where: str, n: int, newest: Sequence[Mapping], *,
                    label: str | None = None, searches: int = 0) -> str:
    """``repr(catalog)``: what and where, how many runs, the newest five (``newest``)."""
    name = f"{label!r} " if label else ""
    search = f", {searches} search(es) applied" if searches else ""
    lines = [f"<{kind} {name}at {where}: {n} run{'s' if n != 1 else ''}{search}"]
    for r in newest[:5]:
        lines.append(f"  scan_id={r['scan_id']!s:>6}  {r['uid'][:8]}  "
                     f"{fmt_time(r['time'], ms=False)}  {r['plan_name'] or ''}  "
                     f"{r['exit_status'] or '(running or no stop)'}")
    if n > 5:
        lines.append(f"  ... and {n - 5} older")
    return "\n".join(lines) + ">"


def catalog_html(title: str, where: str, n: int, newest: Iterable[Mapping]) -> str:
    """The catalog as a table of its newest runs (``newest``, up to ten)."""
    rows = [[r["scan_id"], r["uid"][:8], fmt_time(r["time"], ms=False) if r["time"] else None,
             r["plan_name"] or "", r["exit_status"] or "—", _streams(r.get("streams"))]
            for r in newest]
    return (f"<div><b>Catalog {escape(title)}</b>: {n} runs at <code>{escape(where)}</code>"
            + _table(["scan_id", "uid", "start", "plan", "exit", "streams"], rows) + "</div>")


def _streams(value: object) -> str:
    names = json.loads(value) if isinstance(value, str) else (value or [])
    return ", ".join(names)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th style='text-align:left;padding:0 8px'>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:0 8px'>{escape(str(c))}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table style='{_STYLE}'><tr>{th}</tr>{body}</table>"
