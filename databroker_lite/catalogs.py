"""Catalogs: a directory of run files, looked up and searched through the index."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from . import documents as _docs
from . import lookup
from .backends import open_index
from .errors import (
    CatalogError,
    InvalidDocument,
    ReadOnlyCatalog,
    RecentRunNotFound,
    RunFileUnreadable,
    RunNotFound,
)
from .index import RUN_SUFFIX, Index, plain_run_file
from .lookup import DuplicateScanIDWarning
from .query import sql_value
from .run import Run
from .storage import RunWriter
from .summaries import catalog_html, catalog_summary

__all__ = ["Catalog", "CatalogWriter", "DuplicateScanIDWarning", "open_catalog", "temp"]


_WHOLE_UID = 32  # characters: a key this long is looked up as a whole uid first

class Catalog(Mapping):
    """Runs in one directory. Look up by scan_id, -k, uid or uid prefix; search by metadata."""

    def __init__(self, directory: str | os.PathLike, *, mode: str = "a",
                 root_map: Mapping[str, str] | None = None, name: str | None = None,
                 index: str | None = None, _index: Index | None = None,
                 _queries: tuple = ()) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.mode = mode
        self.root_map = {**stored_root_map(self.directory), **dict(root_map or {})}
        self.name = name
        self._queries = tuple(_queries)
        if _index is None:
            _index = open_index(self.directory, index, writable=(mode != "r"), name=name)
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
        if not plain_run_file(file):
            # the index is derived and may have been written by someone else: a row that
            # names a path (absolute, '..', a sub-directory) is never followed
            raise CatalogError(f"{self._index.path}: the index row of run {uid} names the file "
                               f"{file!r}, which is not a run file name in {self.directory}; "
                               f"run 'databroker-lite reindex {self.directory}'")
        return Run(self, uid, os.path.join(self.directory, file), _indexed=indexed)

    def __getitem__(self, key: Any) -> Run:
        """A run by scan_id, -k, uid or unique uid prefix (the rules: :mod:`.lookup`)."""
        key = lookup.check_key(key)
        index = self._fresh()
        q = list(self._queries)
        if isinstance(key, int):
            where = self._in_search()
            if key < 0:
                # no count first: on PostgreSQL a count visits every row (10 ms at 100k runs)
                uids = index.uids(q, newest_first=True, limit=1, offset=-key - 1) if -key < 2**62 else []
                if not uids:
                    n = index.count(q)
                    raise RecentRunNotFound(lookup.no_kth(n, -key, where) + self._bad_note())
                return self._run(*index.locate_with_documents(q, key="uid", value=uids[0], limit=1)[0])
            found = index.locate_with_documents(q, key="scan_id", value=key, limit=2)
            if not found:
                self._not_found(lookup.no_scan_id(key, where), scan_id=key)
            if len(found) > 1:
                rows = index.rows(q, key="scan_id", value=key)
                lookup.warn_shared_scan_id(key, rows[0]["uid"],
                                           [lookup.describe(r) for r in rows[1:]])
            return self._run(*found[0])
        found = []
        if len(key) >= _WHOLE_UID:  # most likely a whole uid: one equality look-up
            found = index.locate_with_documents(q, key="uid", value=key, limit=1,
                                                newest_first=False)
        if not found and key:
            found = index.locate_with_documents(q, key="uid", prefix=key, limit=2,
                                                newest_first=False)
        if len(found) > 1:  # a whole uid that also starts others is still that run
            found = index.locate_with_documents(q, key="uid", value=key, limit=1,
                                                newest_first=False) or found
        if len(found) == 1:
            return self._run(*found[0])
        where = self._in_search()
        if not key:
            raise RunNotFound(lookup.no_uid(key, where))
        rows = index.rows(q, key="uid", prefix=key, limit=11)
        if not rows:
            self._not_found(lookup.no_uid(key, where), uid_prefix=key)
        raise lookup.ambiguous(key, rows, more=len(rows) > 10)

    def _in_search(self) -> str:
        return " in this search" if self._queries else ""

    def _bad_note(self) -> str:
        bad = self._index.bad_files()
        if not bad:
            return ""
        return (f"; {len(bad)} run file(s) could not be read and are not counted "
                "(see cat.bad_files)")

    def _not_found(self, message: str, *, scan_id: int | None = None,
                   uid_prefix: str | None = None) -> None:
        """Raise RunNotFound, or RunFileUnreadable when an unreadable file holds (or may
        hold) the run: the index remembers the uid and scan_id of a file that once read."""
        entries = self._index.bad_entries()
        if uid_prefix is not None:
            held = [e for e in entries if (e["uid"] or e["file"]).startswith(uid_prefix)]
            maybe: list[dict] = []
        else:
            held = [e for e in entries if e["scan_id"] is not None and e["scan_id"] == sql_value(scan_id)]
            maybe = [e for e in entries if e["scan_id"] is None]
        if not held and not maybe:
            raise RunNotFound(message)
        found = held or maybe
        files = {os.path.join(self.directory, e["file"]): e["error"] for e in found}
        lines = []
        for e in found[:5]:
            path = os.path.join(self.directory, e["file"])
            what = f" (uid {e['uid']}, scan_id {e['scan_id']})" if e["scan_id"] is not None else ""
            lines.append(f"{path}{what}: {e['error'][len(path) + 2:] if e['error'].startswith(path + ': ') else e['error']}")
        more = f"\n  ... and {len(found) - 5} more" if len(found) > 5 else ""
        if held:
            head = (f"{message} that can be read: the run file that held it could not be read"
                    if len(held) == 1 else
                    f"{message} that can be read: {len(held)} run files that held it could not be read")
        else:
            head = (f"{message} that can be read; {len(maybe)} run file(s) could not be read "
                    "and may hold it")
        listing = "\n  ".join(lines)
        raise RunFileUnreadable(f"{head}:\n  {listing}{more}\ncat.bad_files lists every file "
                                "that could not be read, with the reason", files=files)

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
    def search(self, query: Any) -> Catalog:
        """The runs matching a query (chainable).

        ``query`` is a MongoDB-style dict on the start document (keys under ``stop.``
        address the stop document), or a query of :mod:`databroker_lite.queries`
        (databroker's ``TimeRange``, ``Key``, ...; tiled's query objects work too).
        """
        from .queries import to_mongo
        from .query import compile_query
        query = to_mongo(query)
        compile_query(query, self._index.dialect)  # raise InvalidQuery now, not at first use
        return Catalog(self.directory, mode=self.mode, root_map=self.root_map, name=self.name,
                       _index=self._index, _queries=(*self._queries, query))

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
        return catalog_summary("Catalog", self.directory, len(self), self._newest(),
                               label=self.name, searches=len(self._queries))

    def _repr_html_(self) -> str:
        return catalog_html(self.name or self.directory, self.directory, len(self),
                            self._newest(10))


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
                 root_map: Mapping[str, str] | None = None, name: str | None = None,
                 index: str | None = None) -> Catalog:
    """Open the catalog in a directory.

    Parameters
    ----------
    path : directory of run files; created if missing when ``mode="a"``.
    mode : "a" (read and write) or "r" (read-only; the directory must exist).
    root_map : ``{old_root: new_root}`` for external files that moved.
    index : where the derived index lives: ``"auto"`` (default: SQLite beside the files,
        or per host on a network file system), ``"beside"``, ``"host"``, or a
        ``postgresql://`` URL (see :mod:`databroker_lite.backends`).
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
    return Catalog(path, mode=mode, root_map=root_map, name=name, index=index)


def temp() -> Catalog:
    """A throwaway catalog in a temporary directory, removed when Python exits."""
    d = tempfile.mkdtemp(prefix="databroker_lite-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return open_catalog(d, name="temp")
