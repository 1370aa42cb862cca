"""Queries that reach the server, as the MongoDB-style queries ``Catalog.search`` takes.

Three kinds arrive: tiled's standard queries (``Eq``, ``Comparison``, ``In``, ``Regex``,
``Like``, ... from databroker 2's ``Key("start.x") == 1`` and from the stock tiled
client), the bluesky query types older databroker 2 clients send as themselves
(``scan_id``, ``scan_id_range``, ``partial_uid``, ``time_range``), and ours
(``MongoQuery``). A run's metadata is ``start``, ``stop`` and ``summary``, so keys
are ``start.X`` or ``stop.X`` (``summary.X`` for the few summary keys that come from
the start document). Anything else is a 400 that names it: never a silently ignored
query.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..catalogs import Catalog
from .specs import CATALOG_SPEC, LITE_RUN_SPEC, RUN_SPEC, error

_CMP = {"lt": "$lt", "le": "$lte", "gt": "$gt", "ge": "$gte", "eq": "$eq"}
_SUMMARY = {"uid": "uid", "scan_id": "scan_id", "plan_name": "plan_name", "timestamp": "time"}
_RUN_SPECS = {RUN_SPEC.name, LITE_RUN_SPEC.name}


def bad_query(message: str) -> Exception:
    return error(400, "InvalidQuery", message)


def mongo_key(key: Any) -> str:
    """``start.X`` -> ``X``; ``stop.X`` stays (the catalog searches stop documents too)."""
    if not isinstance(key, str) or not key:
        raise bad_query(f"a query key must be a non-empty string, not {key!r}")
    head, _, rest = key.partition(".")
    if head == "start" and rest:
        return rest
    if head == "stop" and rest:
        return key
    if head == "summary" and rest in _SUMMARY:
        return _SUMMARY[rest]
    if head == "summary":
        raise bad_query(f"cannot search on {key!r}; of the summary, search uid, scan_id, "
                        "plan_name or timestamp (or the start and stop documents directly)")
    raise bad_query(f"unknown query key {key!r}: a run's metadata is start, stop and summary, "
                    f"so search 'start.{key}' (the start document) or 'stop.{key}'")


def _like(pattern: str) -> str:
    """An SQL LIKE pattern (``%`` any text, ``_`` one character) as an anchored regex."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return "^" + "".join(out) + "$"


def _scan_ids(query: Any, catalog: Catalog) -> dict:
    ids = [int(i) for i in query.scan_ids]
    mode = getattr(query.duplicates, "value", query.duplicates)
    if mode == "all":
        return {"scan_id": {"$in": ids}}
    uids = []
    for sid in ids:
        found = list(catalog.search({"scan_id": sid}))
        if len(found) > 1 and mode == "error":
            raise bad_query(f"{len(found)} runs have scan_id {sid}: {found}")
        uids.extend(found[-1:])  # the most recent, as databroker 2's servers pick
    return {"uid": {"$in": uids}}


def _specs(query: Any) -> dict | None:
    include, exclude = set(query.include), set(query.exclude)
    if include <= _RUN_SPECS and not exclude & _RUN_SPECS:
        return None
    return {"uid": {"$in": []}}


def _by_name(query: Any, catalog: Catalog) -> dict | None:  # noqa: C901 - one branch per type
    name = type(query).__name__
    if name == "MongoQuery":
        try:
            q = json.loads(query.query)
        except ValueError as exc:
            raise bad_query(f"the query is not JSON: {exc}") from None
        if not isinstance(q, dict):
            raise bad_query(f"a query is a JSON object, not {q!r}")
        return q
    if name == "Eq":
        return {mongo_key(query.key): query.value}
    if name == "NotEq":
        return {mongo_key(query.key): {"$ne": query.value}}
    if name == "Comparison":
        if query.operator not in _CMP:
            raise bad_query(f"unknown comparison {query.operator!r}; use one of {sorted(_CMP)}")
        return {mongo_key(query.key): {_CMP[query.operator]: query.value}}
    if name == "In":
        return {mongo_key(query.key): {"$in": list(query.value)}}
    if name == "NotIn":
        return {mongo_key(query.key): {"$nin": list(query.value)}}
    if name == "Contains":  # a list that holds the value: equality does that, as in MongoDB
        return {mongo_key(query.key): query.value}
    if name == "KeyPresent":
        return {mongo_key(query.key): {"$exists": bool(query.exists)}}
    if name == "Regex":
        cond: dict = {"$regex": query.pattern}
        if not query.case_sensitive:
            cond["$options"] = "i"
        return {mongo_key(query.key): cond}
    if name == "Like":
        return {mongo_key(query.key): {"$regex": _like(query.pattern)}}
    if name == "KeysFilter":
        return {"uid": {"$in": list(query.keys)}}
    if name == "_PartialUID":
        uids = [str(u) for u in query.partial_uids]
        if any(not u for u in uids):
            raise bad_query("an empty partial uid matches every run; give at least 5 characters")
        conds = [{"uid": {"$regex": "^" + re.escape(u)}} for u in uids]
        return conds[0] if len(conds) == 1 else {"$or": conds}
    if name == "_ScanID":
        return _scan_ids(query, catalog)
    if name == "ScanIDRange":
        return {"scan_id": {"$gte": int(query.start_id), "$lt": int(query.end_id)}}
    if name == "TimeRange":
        cond = {}
        if query.since is not None:
            cond["$gte"] = float(query.since)
        if query.until is not None:
            cond["$lt"] = float(query.until)
        return {"time": cond} if cond else None
    if name == "SpecsQuery":
        return _specs(query)
    if name == "StructureFamilyQuery":
        family = getattr(query.value, "value", query.value)
        return None if family == "container" else {"uid": {"$in": []}}
    if name == "AccessTagsFilter":
        return None  # no access control below the server's own login
    raise bad_query(f"queries of type {name} are not supported on a databroker_lite catalog "
                    f"(spec {CATALOG_SPEC.name}); use Key('start.x') comparisons, In, Regex, "
                    "Like, ScanID, PartialUID or TimeRange")


def _fit_ints(value: Any) -> Any:
    """``value`` with integers beyond SQLite's 64 bits made floats (which compare right
    and match nothing stored as an integer), so that ``scan_id == 10**30`` finds no
    run instead of failing."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        return float(value)
    if isinstance(value, dict):
        return {k: _fit_ints(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fit_ints(v) for v in value]
    return value


def as_mongo(query: Any, catalog: Catalog) -> dict | None:
    """The MongoDB-style query of ``query`` (None: it keeps every run)."""
    mongo = _by_name(query, catalog)
    return _fit_ints(mongo) if mongo is not None else None
