"""Catalogs: a directory of run files, looked up and searched through the index."""
from __future__ import annotations

import atexit
import json
import numbers
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from . import documents as _docs
from .errors import AmbiguousKey, CatalogError, InvalidDocument, ReadOnlyCatalog, RunNotFound
from .index import RUN_SUFFIX, Index
from .run import Run
from .storage import RunWriter


class DuplicateScanIDWarning(UserWarning):
    """Several runs share the scan_id asked for; the most recent one was returned."""


def _fmt(t: float | None) -> str:
    return "?" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _describe(row: dict) -> str:
    return (f"uid={row['uid']} scan_id={row['scan_id']} time={_fmt(row['time'])} "
            f"plan={row['plan_name']}")


class Catalog(Mapping):
    """Runs in one directory. Look up by scan_id, -k, uid or uid prefix; search by metadata."""

    def __init__(self, directory: str | os.PathLike, *, mode: str = "a",
                 root_map: Mapping[str, str] | None = None, name: str | None = None,
                 _index: Index | None = None, _queries: tuple = ()) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.mode = mode
        self.root_map = {**stored_root_map(self.directory), **dict(root_map or {})}
        self.name = name
        self._queries = tuple(_queries)
        if _index is None:
            _index = Index(self.directory, writable=(mode != "r"))
            if _index.is_stale():
                _index.refresh()
        self._index = _index
        self._writer: CatalogWriter | None = None

    # --- keeping the index current ----------------------------------------
    def _fresh(self) -> Index:
        if self._index.is_stale():
            self._index.refresh()
        return self._index

    def refresh(self) -> None:
        """Pick up run files added, changed or removed by hand."""
        self._index.refresh()

    def reindex(self) -> dict[str, int]:
        """Rebuild the index from the run files."""
        return self._index.rebuild()

    @property
    def bad_files(self) -> dict[str, str]:
        """Files in the directory that could not be read as runs, with the reason."""
        self._fresh()
        return self._index.bad_files()

    # --- mapping ------------------------------------------------------------
    def __len__(self) -> int:
        return self._fresh().count(list(self._queries))

    def __iter__(self) -> Iterator[str]:
        return iter(self._fresh().uids(list(self._queries)))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        rows = self._fresh().rows(list(self._queries), key="uid", value=key, limit=1)
        return bool(rows)

    def keys(self):  # noqa: D102 - a list is more useful than a view here
        return list(self)

    def _run(self, uid: str, file: str, indexed: tuple | None = None) -> Run:
        return Run(self, uid, os.path.join(self.directory, file), _indexed=indexed)

    def __getitem__(self, key: Any) -> Run:
        index = self._fresh()
        q = list(self._queries)
        if isinstance(key, bool):
            raise TypeError(f"cannot look up a run by {key!r}")
        if isinstance(key, numbers.Integral):
            key = int(key)
            if key < 0:
                uids = index.uids(q, newest_first=True, limit=1, offset=-key - 1)
                if not uids:
                    raise RunNotFound(f"the catalog has {index.count(q)} run(s); there is no "
                                      f"{_ordinal(-key)} most recent")
                return self._run(*index.locate_with_documents(q, key="uid", value=uids[0], limit=1)[0])
            found = index.locate_with_documents(q, key="scan_id", value=key, limit=2)
            if not found:
                raise RunNotFound(f"no run has scan_id {key}")
            if len(found) > 1:
                rows = index.rows(q, key="scan_id", value=key)
                others = "; ".join(_describe(r) for r in rows[1:])
                warnings.warn(f"{len(rows)} runs have scan_id {key}; returning the most recent "
                              f"({rows[0]['uid']}). Others: {others}",
                              DuplicateScanIDWarning, stacklevel=2)
            return self._run(*found[0])
        if isinstance(key, str):
            found = index.locate_with_documents(q, key="uid", prefix=key, limit=2,
                                                newest_first=False) if key else []
            if len(found) > 1:  # a whole uid that also starts others is still that run
                found = index.locate_with_documents(q, key="uid", value=key, limit=1,
                                                    newest_first=False) or found
            if len(found) == 1:
                return self._run(*found[0])
            if not key:
                raise RunNotFound("an empty string is not a uid or uid prefix")
            rows = index.rows(q, key="uid", prefix=key, limit=11)
            if not rows:
                hint = " (strings are uids; for a scan_id use an int)" if key.isdigit() else ""
                raise RunNotFound(f"no run has a uid starting with {key!r}{hint}")
            listing = "\n  ".join(_describe(r) for r in rows[:10])
            more = " (and more)" if len(rows) > 10 else ""
            raise AmbiguousKey(f"{key!r} is the start of several uids{more}; give more "
                               f"characters:\n  {listing}", candidates=rows[:10])
        raise TypeError(f"look up runs by scan_id (int), -k (int) or uid (str), "
                        f"not {type(key).__name__}")

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except RunNotFound:
            return default

    def items(self) -> Iterator[tuple[str, Run]]:  # type: ignore[override]
        for uid in self:
            yield uid, self[uid]

    def values(self) -> Iterator[Run]:  # type: ignore[override]
        for uid in self:
            yield self[uid]

    def summaries(self, uids: list[str]) -> list[dict]:
        """Index rows (uid, scan_id, time, stop_time, exit_status, plan_name, streams, file)
        of these runs, without opening their files."""
        return self._fresh().summaries(list(uids))

    # --- search -------------------------------------------------------------
    def search(self, query: Mapping) -> Catalog:
        """The runs whose start documents match a MongoDB-style query (chainable)."""
        from .query import compile_query
        compile_query(query)  # raise InvalidQuery now (a non-dict too), not at first use
        return Catalog(self.directory, mode=self.mode, root_map=self.root_map, name=self.name,
                       _index=self._index, _queries=(*self._queries, dict(query)))

    # --- writing ------------------------------------------------------------
    @property
    def writer(self) -> CatalogWriter:
        """A callable ``(name, doc)`` for ``RunEngine.subscribe``."""
        if self.mode == "r":
            raise ReadOnlyCatalog(f"catalog {self.directory} was opened with mode='r'")
        if self._writer is None:
            self._writer = CatalogWriter(self)
        return self._writer

    def insert(self, name: str, doc: Mapping) -> None:
        """Insert one document (any event-model document type)."""
        self.writer(name, doc)

    # --- display --------------------------------------------------------------
    def _newest(self, k: int = 5) -> list[dict]:
        uids = self._index.uids(list(self._queries), newest_first=True, limit=k)
        return self._index.summaries(uids)

    def __repr__(self) -> str:
        n = len(self)
        label = f"{self.name!r} " if self.name else ""
        search = f", {len(self._queries)} search(es) applied" if self._queries else ""
        lines = [f"<Catalog {label}at {self.directory}: {n} run{'s' if n != 1 else ''}{search}"]
        for r in self._newest():
            lines.append(f"  scan_id={r['scan_id']!s:>6}  {r['uid'][:8]}  {_fmt(r['time'])}  "
                         f"{r['plan_name'] or ''}  {r['exit_status'] or '(running or no stop)'}")
        if n > 5:
            lines.append(f"  ... and {n - 5} older")
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        from .html import catalog_html
        return catalog_html(self)


CATALOG_CONFIG = "catalog.json"


def stored_root_map(directory: str) -> dict[str, str]:
    """The root_map kept in ``<catalog>/catalog.json``; relative targets are relative to it."""
    path = os.path.join(directory, CATALOG_CONFIG)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: unreadable catalog config ({exc})") from exc
    rm = cfg.get("root_map") or {}
    if not isinstance(rm, dict):
        raise CatalogError(f"{path}: 'root_map' must be an object")
    return {str(k): os.path.normpath(os.path.join(directory, v)) for k, v in rm.items()}


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


class CatalogWriter:
    """Routes documents of any number of interleaved runs into run files.

    Use ``RunEngine.subscribe(cat.writer)``. Buffered rows reach the file every
    ``flush_rows`` events per descriptor, every ``flush_seconds`` or at ``stop``;
    ``flush()`` forces it.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._runs: dict[str, RunWriter] = {}
        self._owner: dict[tuple[str, str], str] = {}  # (kind, uid) -> run uid
        _OPEN_WRITERS.add(self)

    def __call__(self, name: str, doc: Mapping) -> None:
        doc = _docs.normalize(name, doc)
        _docs.validate(name, doc, run_uid=self._run_uid_of(name, doc))
        getattr(self, "_" + name)(doc)

    def _run_uid_of(self, name: str, doc: Any) -> str | None:
        """The run a document says (or is known) to belong to, for error messages."""
        if not isinstance(doc, Mapping):
            return None
        if name == "start":
            return doc.get("uid") if isinstance(doc.get("uid"), str) else None
        ref = doc.get("run_start")
        if isinstance(ref, str):
            return ref
        for kind, field in (("descriptor", "descriptor"), ("resource", "resource")):
            ref = doc.get(field)
            if isinstance(ref, str) and (kind, ref) in self._owner:
                return self._owner[(kind, ref)]
        return None

    def _run_of(self, name: str, kind: str, ref: str, doc: Mapping) -> RunWriter:
        run_uid = self._owner.get((kind, ref))
        if run_uid is None or run_uid not in self._runs:
            raise InvalidDocument(f"refers to {kind} {ref!r}, which belongs to no open run",
                                  name=name, doc_uid=_docs.doc_uid(name, doc))
        return self._runs[run_uid]

    def _known(self, uid: str, fname: str) -> bool:
        try:
            return uid in self.catalog
        except CatalogError:  # the index cannot catch up (full disk): the files still can say
            return os.path.exists(os.path.join(self.catalog.directory, fname))

    def _start(self, doc: Mapping) -> None:
        uid = doc["uid"]
        if os.sep in uid or uid.startswith(".") or "\0" in uid:
            raise InvalidDocument("uid cannot be used as a file name", run_uid=uid, name="start")
        fname = f"{uid}{RUN_SUFFIX}"
        if uid in self._runs or self._known(uid, fname):
            raise InvalidDocument("a run with this uid is already in the catalog",
                                  run_uid=uid, name="start")
        index = self.catalog._index
        before = index.dir_stamp()
        w = RunWriter(os.path.join(self.catalog.directory, fname), dict(doc))
        self._runs[uid] = w
        index.record_run(w.start_doc, None, [], fname, dir_before=before)

    def _descriptor(self, doc: Mapping) -> None:
        run = self._runs.get(doc["run_start"])
        if run is None:
            raise InvalidDocument(f"refers to run {doc['run_start']!r}, which is not open",
                                  name="descriptor", doc_uid=doc.get("uid"))
        run.descriptor(dict(doc))
        self._owner[("descriptor", doc["uid"])] = run.run_uid

    def _event(self, doc: Mapping) -> None:
        self._run_of("event", "descriptor", doc["descriptor"], doc).event(doc)

    def _event_page(self, doc: Mapping) -> None:
        self._run_of("event_page", "descriptor", doc["descriptor"], doc).event_page(doc)

    def _resource(self, doc: Mapping) -> None:
        run_uid = doc.get("run_start")
        if run_uid is None:
            if len(self._runs) != 1:
                raise InvalidDocument("has no 'run_start' and several runs are open, so it "
                                      "cannot be placed", name="resource", doc_uid=doc.get("uid"))
            run_uid = next(iter(self._runs))
        run = self._runs.get(run_uid)
        if run is None:
            raise InvalidDocument(f"refers to run {run_uid!r}, which is not open",
                                  name="resource", doc_uid=doc.get("uid"))
        run.resource(doc)
        self._owner[("resource", doc["uid"])] = run.run_uid

    def _datum(self, doc: Mapping) -> None:
        self._run_of("datum", "resource", doc["resource"], doc).datum(doc)

    def _datum_page(self, doc: Mapping) -> None:
        self._run_of("datum_page", "resource", doc["resource"], doc).datum_page(doc)

    def _stream_resource(self, doc: Mapping) -> None:
        run_uid = doc.get("run_start") or (next(iter(self._runs)) if len(self._runs) == 1 else None)
        run = self._runs.get(run_uid) if run_uid else None
        if run is None:
            raise InvalidDocument(f"refers to run {run_uid!r}, which is not open",
                                  name="stream_resource", doc_uid=doc.get("uid"))
        run.stream_resource(doc)
        self._owner[("stream_resource", doc["uid"])] = run.run_uid

    def _stream_datum(self, doc: Mapping) -> None:
        self._run_of("stream_datum", "descriptor", doc["descriptor"], doc).stream_datum(doc)

    def _stop(self, doc: Mapping) -> None:
        run = self._runs.get(doc["run_start"])
        if run is None:
            raise InvalidDocument(f"refers to run {doc['run_start']!r}, which is not open",
                                  name="stop", doc_uid=doc.get("uid"))
        run.stop(dict(doc))
        streams = list(dict.fromkeys(s.descriptor.get("name", "primary")
                                     for s in run._segments.values()))
        self.catalog._index.record_run(run.start_doc, run.stop_doc, streams,
                                       os.path.basename(run.path))
        del self._runs[run.run_uid]
        self._owner = {k: v for k, v in self._owner.items() if v != run.run_uid}

    def flush(self) -> None:
        """Write every open run's buffered rows to disk now."""
        for run in list(self._runs.values()):
            run.flush()

    @property
    def open_runs(self) -> list[str]:
        return list(self._runs)


_OPEN_WRITERS: weakref.WeakSet[CatalogWriter] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for w in list(_OPEN_WRITERS):
        try:
            w.flush()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def open_catalog(path: str | os.PathLike, mode: str = "a", *,
                 root_map: Mapping[str, str] | None = None, name: str | None = None) -> Catalog:
    """Open the catalog in a directory.

    Parameters
    ----------
    path : directory of run files; created if missing when ``mode="a"``.
    mode : "a" (read and write) or "r" (read-only; the directory must exist).
    root_map : ``{old_root: new_root}`` for external files that moved.
    """
    if mode not in ("a", "r"):
        raise ValueError(f"mode must be 'a' or 'r', not {mode!r}")
    path = os.fspath(path)
    if mode == "r":
        if not os.path.isdir(path):
            raise CatalogError(f"no catalog directory at {path}")
    else:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create catalog directory {path}: {exc}") from exc
        if not os.access(path, os.W_OK):
            raise CatalogError(f"catalog directory {path} is not writable; open it with mode='r'")
    return Catalog(path, mode=mode, root_map=root_map, name=name)


def temp() -> Catalog:
    """A throwaway catalog in a temporary directory, removed when Python exits."""
    d = tempfile.mkdtemp(prefix="databroker_lite-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return open_catalog(d, name="temp")
