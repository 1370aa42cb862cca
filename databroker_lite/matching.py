"""Saying why a query matched nothing: the keys and the time span the catalog's runs have."""
from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalogs import Catalog

#: How many of the newest runs' start documents are looked at for their keys.
SAMPLE = 500


def _fields(query: Any) -> list[str]:
    """The start-document keys a MongoDB-style query names (``$and``/``$or`` walked)."""
    out: list[str] = []
    if isinstance(query, Mapping):
        for k, v in query.items():
            if k in ("$and", "$or", "$nor") and isinstance(v, list):
                for q in v:
                    out += _fields(q)
            elif not str(k).startswith("$"):
                out.append(str(k))
    return out


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "?"


def no_match_message(catalog: Catalog, query: Mapping | None, what: str = "the query") -> str:
    """Why ``query`` matches no run of ``catalog``: the keys it names that no run has (with
    the closest key), the keys the runs have, and the span of their start times."""
    index = catalog._fresh()
    uids = index.uids([], newest_first=True, limit=SAMPLE)
    name = catalog.name or catalog.directory
    shown = json.dumps(query, default=str) if query is not None else ""
    head = f"no run of {name} matches {what}" + (f" {shown}" if shown else "")
    if not uids:
        return f"{head}: the catalog has no runs"
    keys: dict[str, Any] = {}
    for uid in uids:
        row = index.row(uid) or {}
        for k, v in (row.get("start") or {}).items():
            keys.setdefault(k, v)
    parts = [head + f" (the catalog has {index.count([])} runs)"]
    for field in dict.fromkeys(_fields(query)):
        top = field.split(".", 1)[0]
        if top not in keys:
            close = difflib.get_close_matches(top, list(keys), n=1)
            parts.append(f"no run's start document has the key {top!r}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif top == "plan_name":
            plans = sorted({str((index.row(u) or {}).get("plan_name")) for u in uids} - {"None"})
            parts.append(f"the plan names are {plans}")
    times = [r["time"] for r in index.summaries(uids) if r.get("time")]
    if times:
        parts.append(f"the runs started between {_when(min(times))} and {_when(max(times))}")
    parts.append("their start documents have the keys " + ", ".join(sorted(keys)))
    return "; ".join(parts)
