"""Choosing runs, and listing the files (run files and external files) they need."""
from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..catalogs import Catalog
from ..errors import InvalidQuery
from ..queries import TimeRange
from ..run import Run
from ..storage.handlers import get_handler_class, remap_path, resource_path, uri_to_path
from ..storage.side import read_side_documents
from .errors import PackError


def scan_id_ranges(items: Iterable[str | int]) -> list[tuple[int, int]]:
    """``["5", "7-9", 12]`` -> ``[(5, 5), (7, 9), (12, 12)]`` (ranges inclusive)."""
    out: list[tuple[int, int]] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            a, sep, b = part.partition("-") if not part.startswith("-") else (part, "", "")
            try:
                lo, hi = int(a), int(b) if sep else int(a)
            except ValueError:
                raise InvalidQuery(f"{part!r} is not a scan_id or a range like 5-9") from None
            if hi < lo:
                raise InvalidQuery(f"the range {part!r} is reversed: write {hi}-{lo}")
            out.append((lo, hi))
    return out


def parse_scan_ids(items: Iterable[str | int]) -> list[int]:
    """``["5", "7-9", 12]`` -> ``[5, 7, 8, 9, 12]`` (ranges inclusive; at most a million)."""
    ranges = scan_id_ranges(items)
    if sum(hi - lo + 1 for lo, hi in ranges) > 1_000_000:
        raise InvalidQuery("more than a million scan_ids: give a range to select_runs, "
                           "which searches it without listing every number")
    return [s for lo, hi in ranges for s in range(lo, hi + 1)]


def select_runs(catalog: Catalog, *, all: bool = False, uids: Iterable[str] | None = None,
                scan_ids: Iterable[str | int] | None = None, query: Mapping | str | None = None,
                since: Any = None, until: Any = None) -> list[Run]:
    """The runs a pack or export names, oldest first, each once."""
    if not (all or uids or scan_ids or query or since or until):
        raise InvalidQuery("say which runs: all, uids, scan_ids, query, or since/until")
    cat = catalog
    if isinstance(query, str):
        try:
            query = json.loads(query)
        except (ValueError, RecursionError) as exc:
            raise InvalidQuery(f"--query is not valid JSON: {exc}") from None
    if query:
        cat = cat.search(query)
    if since is not None or until is not None:
        cat = cat.search(TimeRange(since=since, until=until))
    chosen: dict[str, Run] = {}
    if uids or scan_ids:
        for u in uids or ():
            run = cat[str(u)]
            chosen[run.uid] = run
        for lo, hi in scan_id_ranges(scan_ids or ()):  # one search a range, however wide
            for uid in cat.search({"scan_id": lo} if lo == hi else
                                  {"scan_id": {"$gte": lo, "$lte": hi}}):
                chosen[uid] = cat[uid]
        if not chosen:
            from ..errors import NoRunsMatch
            raise NoRunsMatch(f"no run has the scan_id(s) {', '.join(map(str, scan_ids or ()))}"
                              if not uids else "none of the runs named was found")
    else:
        for uid in cat:
            chosen[uid] = cat[uid]
    if not chosen and not (uids or scan_ids) and (query or since is not None or until is not None):
        from ..errors import NoRunsMatch
        from ..matching import no_match_message
        span = " and ".join(f"{k} {v}" for k, v in (("since", since), ("until", until)) if v)
        what = "the query" + (f" (with {span})" if query and span else "") if query else span
        raise NoRunsMatch(no_match_message(catalog, query or None, what))
    times = {row["uid"]: row["time"] or 0.0 for row in catalog.summaries(list(chosen))}
    return sorted(chosen.values(), key=lambda r: (times.get(r.uid, 0.0), r.uid))


def root_key(root: str) -> str:
    """The directory name under ``external/`` that stands for an original root."""
    return hashlib.sha1(root.encode()).hexdigest()[:16]


def external_files(run: Run) -> list[tuple[str, str, str]]:
    """(original root, absolute source path, path relative to that root) of each external file.

    The resource and datum documents are read straight from the run file (no run reader
    is built: a pack of many runs would load every run's streams just for this).
    """
    root_map = run.catalog.root_map
    side = read_side_documents(run.path)
    resources = [d for kind in ("resource", "stream_resource") for _, d, _ in side.get(kind, ())]
    if not resources:
        return []
    datums: dict[str, list[dict]] = {}
    for kind in ("datum", "stream_datum"):
        for _, d, _ in side.get(kind, ()):
            if "resource" in d:
                datums.setdefault(d["resource"], []).append(d.get("datum_kwargs", {}))
    out = []
    for res in resources:
        if "uri" in res:  # a stream_resource: its file, keyed by its directory
            src = remap_path(uri_to_path(res["uri"]), root_map)
            orig_dir = os.path.dirname(uri_to_path(res["uri"]))
            out.append((orig_dir, src, os.path.basename(src)))
            continue
        root = res.get("root", "") or ""
        if not root:
            raise PackError(f"run {run.uid}: resource {res['uid']} has no 'root', so its files "
                            "cannot be relocated; pack with external='fill' or 'skip'")
        mapped_root = root_map.get(root, root)
        full = resource_path(res, root_map)
        files: list[str]
        try:
            handler = get_handler_class(res["spec"])(full, **res.get("resource_kwargs", {}))
            lister = getattr(handler, "get_file_list", None)
            files = list(lister(datums.get(res["uid"], []))) if lister else []
        except Exception:  # noqa: BLE001 - fall back to what is on disk
            files = []
        if not files:
            files = [full] if os.path.exists(full) else sorted(glob.glob(glob.escape(full) + "*"))
        for f in files:
            if os.path.isdir(f):
                for dirpath, _, names in os.walk(f):
                    out += [(root, os.path.join(dirpath, n),
                             os.path.relpath(os.path.join(dirpath, n), mapped_root)) for n in names]
            else:
                out.append((root, f, os.path.relpath(f, mapped_root)))
    return out
