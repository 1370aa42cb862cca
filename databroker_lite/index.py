"""Layer 3: the derived look-up and search index (SQLite, rebuildable from the files).

The run files are the truth. The index keeps one row per run (uid, scan_id, times,
plan name, the start and stop documents as JSON, the file's size and mtime) and one
row per file it could not read. A catalog whose directory changed since the index
last looked (directory mtime) refreshes it; ``rebuild()`` starts over.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import index_fill as _fill
from .dialects import field_rows
from .errors import CatalogError, InvalidQuery
from .index_fill import text_of as _text_of
from .query import HOIST_LEVEL, SQLITE, compile_queries, db_regexp, sql_value
from .storage.files import not_a_run_file

INDEX_DIR = ".databroker_lite"
INDEX_NAME = "index.sqlite"
# 2: runs_text (full text), bad_files.uid/scan_id (what a bad file held); 3: fields
SCHEMA_VERSION = 3
RUN_SUFFIX = ".h5"
RECHECK_RUNNING_FOR = 86400.0  # s: how long a network FS catalog re-reads a run without a stop

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    uid TEXT PRIMARY KEY,
    scan_id,
    time REAL,
    stop_time REAL,
    exit_status TEXT,
    plan_name TEXT,
    streams TEXT,
    file TEXT UNIQUE,
    mtime_ns INTEGER,
    size INTEGER,
    start TEXT,
    stop TEXT
);
CREATE INDEX IF NOT EXISTS runs_time ON runs(time);
DROP INDEX IF EXISTS runs_scan_id;
CREATE INDEX IF NOT EXISTS runs_scan_id_file ON runs(scan_id, time, uid, file);
CREATE INDEX IF NOT EXISTS runs_uid_file ON runs(uid, time, file);
CREATE INDEX IF NOT EXISTS runs_plan_name ON runs(plan_name, time);
CREATE TABLE IF NOT EXISTS bad_files (
    file TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, error TEXT, uid TEXT, scan_id
);
"""

# Full-text search ($text): the words of each run's start and stop documents, by runs.rowid.
# Rows of runs are only ever deleted, then inserted (never REPLACEd), so the trigger
# keeps both tables in step.
_TEXT_SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS runs_text USING fts5(body, "
    "tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS runs_text_gone AFTER DELETE ON runs BEGIN "
    "DELETE FROM runs_text WHERE rowid = old.rowid; END",
)

# Every scalar of each run's documents, for look-ups on any key (see dialects.field_rows).
_FIELDS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fields (key TEXT NOT NULL, value NOT NULL, run INTEGER NOT NULL, "
    "PRIMARY KEY (key, value, run)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS fields_run ON fields(run)",
    "CREATE TRIGGER IF NOT EXISTS fields_gone AFTER DELETE ON runs BEGIN "
    "DELETE FROM fields WHERE run = old.rowid; END",
)


def _field_rows(rowid: int, start: Any, stop: Any) -> list[tuple]:
    rows = []
    for name, doc in (("start", start), ("stop", stop)):
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except ValueError:
                continue
        rows.extend((k, v, rowid) for k, v in field_rows(name, doc))
    return rows



# what SQLite says of a statement nested deeper than its parser or expression limits
_TOO_COMPLEX = ("parser stack overflow", "Expression tree is too large", "too many levels")

# the columns of runs, in order
_RUN_COLUMNS = ("uid", "scan_id", "time", "stop_time", "exit_status", "plan_name", "streams", "file",
                "mtime_ns", "size", "start", "stop")
RUN_FIELDS = ("uid", "scan_id", "time", "stop_time", "exit_status", "plan_name", "streams", "file")


_UID_DOCUMENTS = "SELECT uid, file, mtime_ns, size, start, stop FROM runs WHERE uid = ? LIMIT ?"


def plain_run_file(name: object) -> bool:
    """Whether ``name`` is a run file's name in the catalog directory (no path in it)."""
    return (isinstance(name, str) and name.endswith(RUN_SUFFIX) and not name.startswith(".")
            and os.path.basename(name) == name and "/" not in name and "\\" not in name
            and "\0" not in name)


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


class IndexNotUpdated(UserWarning):
    """The index could not record a run (the run's file is written all the same)."""


class Index:
    """The SQLite index of one catalog directory.

    ``path`` puts the index file elsewhere than ``<directory>/.databroker_lite/`` (a
    per-host index for a catalog on a network file system). ``rescan_seconds``: also
    look at the files again when the last look is older than that, whatever the
    directory's modification time says (network file systems cache it).
    """

    dialect = SQLITE
    kind = "sqlite"

    def __init__(self, directory: str, *, writable: bool = True, path: str | None = None,
                 rescan_seconds: float | None = None) -> None:
        self.directory = os.path.abspath(directory)
        self.writable = writable
        self.rescan_seconds = rescan_seconds
        self._last_look = -float("inf")
        self._local = threading.local()
        self.path = path or os.path.join(self.directory, INDEX_DIR, INDEX_NAME)
        self.in_memory = False
        if writable:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        elif not os.path.exists(self.path) or not os.access(os.path.dirname(self.path), os.W_OK):
            self.in_memory = True  # read-only catalog without a usable index: build one in memory
        try:
            self._init_db()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, disk I/O, ...: not ours to fix
                raise CatalogError(f"{self.path}: cannot use the index ({exc})") from exc
            # not a database or corrupt: the index is derived, so start a new one
            self.close()
            if writable:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(self.path + suffix):
                        os.remove(self.path + suffix)
            else:
                self.in_memory = True
            self._init_db()
        self._check_schema_version()

    def _check_schema_version(self) -> None:
        """Refuse an index written by a newer release (its rows may mean something else)."""
        version = self._meta("schema_version")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise CatalogError(f"{self.path}: index schema {version} is newer than this package "
                               f"knows; run 'databroker-lite reindex {self.directory}'")

    def _init_db(self) -> None:
        conn = self.conn
        if self.in_memory or self.writable:
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._upgrade()
        elif conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone() is None:
            self.close()  # read-only, and the index file was never filled: use one in memory
            self.in_memory = True
            self._init_db()
        elif int(self._meta("schema_version") or 0) < SCHEMA_VERSION:
            try:
                self._upgrade()
            except sqlite3.OperationalError:  # cannot write it here: upgrade a copy in memory
                self.close()
                self.in_memory = True
                self._init_db()

    def _upgrade(self) -> None:
        """Bring an index of an older schema up to this one, from its own rows (the run
        files are not read again). Several processes may try at once: one does it."""
        conn = self.conn
        if int(self._meta("schema_version") or 0) >= SCHEMA_VERSION and self._has_text() \
                and self._has("fields"):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(self._meta("schema_version") or 0)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(bad_files)")}
            for col in ("uid", "scan_id"):
                if col not in columns:
                    conn.execute(f"ALTER TABLE bad_files ADD COLUMN {col}")
            if not self._has_text():
                try:
                    for stmt in _TEXT_SCHEMA:
                        conn.execute(stmt)
                except sqlite3.OperationalError as exc:
                    if "fts5" not in str(exc):
                        raise
                    # this SQLite has no FTS5: everything but $text works
                else:
                    for rowid, start, stop in conn.execute("SELECT rowid, start, stop FROM runs").fetchall():
                        conn.execute("INSERT INTO runs_text(rowid, body) VALUES (?, ?)",
                                     (rowid, _text_of(start, stop)))
            if not self._has("fields"):
                for stmt in _FIELDS_SCHEMA:
                    conn.execute(stmt)
                for rowid, start, stop in conn.execute("SELECT rowid, start, stop FROM runs").fetchall():
                    conn.executemany("INSERT OR IGNORE INTO fields VALUES (?, ?, ?)",
                                     _field_rows(rowid, start, stop))
                self._fields_ok = True
            if version < SCHEMA_VERSION:
                self._set_meta("schema_version", SCHEMA_VERSION)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute("ROLLBACK")
            raise

    def _has(self, table: str) -> bool:
        if getattr(self, f"_{table}_ok", False):
            return True
        has = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone() is not None
        if has:
            setattr(self, f"_{table}_ok", True)
        return has

    def _has_text(self) -> bool:
        if self.kind != "sqlite":
            return False
        has = getattr(self, "_text_ok", None)
        if has is None:
            has = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs_text'").fetchone() is not None
            if has:
                self._text_ok = True
        return bool(has)

    # --- connection per thread (sqlite3 connections are not shared across threads)
    @property
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None or getattr(self._local, "pid", None) != os.getpid():
            if self.in_memory:
                c = getattr(self, "_memconn", None)
                if c is None:
                    c = self._memconn = self._memory_copy()
            else:
                c = sqlite3.connect(self.path, timeout=60, isolation_level=None if not self.writable else "")
                c.execute("PRAGMA busy_timeout = 60000")
                if self.writable:
                    mode = c.execute("PRAGMA journal_mode").fetchone()[0]
                    if mode != "wal":
                        c.execute("PRAGMA journal_mode = WAL")
                    c.execute("PRAGMA synchronous = NORMAL")
            c.create_function("db_regexp", 3, db_regexp, deterministic=True)
            self._local.conn = c
            self._local.pid = os.getpid()
        return c

    def _memory_copy(self) -> sqlite3.Connection:
        """An in-memory index, starting from a copy of the on-disk one if it can be read.

        A read-only catalog (say on a read-only mount) then only catches up with what
        changed since, instead of reading every run file.
        """
        uri = pathlib.Path(self.path).as_uri()
        # mode=ro reads the write-ahead log too; immutable=1 works where even that cannot
        for flags in ("?mode=ro", "?immutable=1"):
            mem = sqlite3.connect(":memory:", check_same_thread=False)
            if not os.path.exists(self.path):
                return mem
            try:
                src = sqlite3.connect(uri + flags, uri=True)
                try:
                    src.backup(mem)
                finally:
                    src.close()
                return mem
            except sqlite3.DatabaseError:  # unreadable this way
                mem.close()
        return sqlite3.connect(":memory:", check_same_thread=False)

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None and not self.in_memory:
            c.close()
        self._local.conn = None

    def _meta(self, key: str) -> str | None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        return row[0] if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    # --- keeping up with the files --------------------------------------------
    def dir_stamp(self) -> str:
        st = os.stat(self.directory)
        return f"{st.st_mtime_ns}"

    def is_stale(self) -> bool:
        if self.rescan_seconds is not None and time.monotonic() - self._last_look > self.rescan_seconds:
            return True  # the directory's mtime may be a cached, old one: look at the files
        stamp = self.dir_stamp()
        if stamp == getattr(self, "_seen_fresh", None):
            return False  # the directory has not changed since the index last matched it
        stale = self._meta("dir_stamp") != stamp
        if not stale:
            self._seen_fresh = stamp
        return stale

    def refresh(self, *, full: bool = False, held: Mapping[str, tuple] | None = None) -> dict[str, int]:
        """Bring the index in line with the files; returns counts of what changed."""
        self._last_look = time.monotonic()
        stamp = self.dir_stamp()
        on_disk: dict[str, tuple[int, int]] = {}
        odd: dict[str, tuple[tuple[int, int], str]] = {}  # FIFOs, symlink loops, directories...
        with os.scandir(self.directory) as it:
            for entry in it:
                if not entry.name.endswith(RUN_SUFFIX):
                    continue
                try:
                    if entry.is_file():
                        st = entry.stat()
                        on_disk[entry.name] = (st.st_mtime_ns, st.st_size)
                        continue
                except OSError:  # a symlink loop, a file gone meanwhile...
                    pass
                why = not_a_run_file(entry.path)
                if why is not None:
                    try:
                        lst = entry.stat(follow_symlinks=False)
                        odd[entry.name] = ((lst.st_mtime_ns, lst.st_size), why)
                    except OSError:
                        pass  # gone meanwhile
        held: dict[str, tuple] = dict(held or {})  # file -> (uid, scan_id) it held when it read
        known: dict[str, tuple[int, int]] = {}
        running = set()  # runs without a stop yet
        for f, m, sz, no_stop, uid, scan_id in self.conn.execute(
                "SELECT file, mtime_ns, size, stop IS NULL, uid, scan_id FROM runs"):
            known[f] = (m, sz)
            held[f] = (uid, scan_id)
            if no_stop:
                running.add(f)
        bad = {}
        for f, m, sz, uid, scan_id in self.conn.execute(
                "SELECT file, mtime_ns, size, uid, scan_id FROM bad_files"):
            bad[f] = (m, sz)
            if uid is not None:
                held.setdefault(f, (uid, scan_id))

        def was(f: str) -> tuple:
            return held.get(f) or (f[:-len(RUN_SUFFIX)], None)  # a run file is named <uid>.h5
        counts = {"added": 0, "updated": 0, "removed": 0, "bad": 0}
        if known and not on_disk and not odd and not full:
            # Every run gone at once is a file system not mounted (on this host, or yet),
            # not a deletion: an index shared by several hosts would lose every run.
            from .errors import RunFilesMissingWarning
            warnings.warn(f"{self.directory} holds no run files although the index lists "
                          f"{len(known)} runs: is its file system mounted? The index is kept "
                          "as it is; 'databroker-lite reindex' empties it if the runs were "
                          "deleted", RunFilesMissingWarning, stacklevel=3)
            return counts
        todo = [f for f, st in on_disk.items()
                if full or (known.get(f) != st and bad.get(f) != st)
                or (f in running and self._may_be_stale(st))]
        gone = [f for f in known if f not in on_disk]
        gone_bad = [f for f in bad if f not in on_disk and f not in odd]
        conn = self.conn

        def tidy() -> None:  # files gone, and what is not a run file at all
            for f in gone:
                # a writer may have created and recorded it since the directory was listed;
                # a row naming anything but a file in this directory is never trusted
                if f not in odd and plain_run_file(f) and os.path.isfile(os.path.join(self.directory, f)):
                    continue
                conn.execute("DELETE FROM runs WHERE file = ?", (f,))
                counts["removed"] += 1
            for f in gone_bad:
                conn.execute("DELETE FROM bad_files WHERE file = ?", (f,))
            for f, (st, why) in odd.items():
                if bad.get(f) != st:
                    self._put_bad(f, *st, f"{os.path.join(self.directory, f)}: {why}", held=was(f))
                    counts["bad"] += 1

        # Read (in worker processes when there are many), write in batches: one
        # transaction each, so that writers of new runs are not kept waiting for long.
        outcomes = _fill.summaries(self.directory, self.kind, self._has_text(),
                                   [(f, *on_disk[f]) for f in todo])
        first = True
        for batch in _fill.batches(outcomes):
            with self._updating(), conn:
                if first:
                    tidy()
                    first = False
                self._write_outcomes(batch, on_disk, known, counts, was)
        with self._updating(), conn:
            self._set_meta("dir_stamp", stamp)
            self._set_meta("refreshed", time.time())
        return counts

    def _write_outcomes(self, batch: list[tuple], on_disk: Mapping, known: Mapping,
                        counts: dict[str, int], was: Any) -> None:
        """Write a batch of :func:`~databroker_lite.index_fill.summaries` outcomes (in a
        transaction): runs in one go, unreadable files one by one."""
        conn = self.conn
        # The unfinished runs the index already has with their stop (their file was read
        # before its writer added it): one look-up per 500 runs, not one per run (on
        # PostgreSQL each is a round trip). Nothing below changes what it finds: the rows
        # deleted are of unreadable files, which hold none of these runs.
        running = [(what.uid, f) for kind, f, what in batch if kind == "ok" and not what.finished]
        stopped: set[tuple[str, str]] = set()
        for i in range(0, len(running), 500):
            uids = [uid for uid, _ in running[i:i + 500]]
            stopped.update((uid, f) for uid, f in conn.execute(
                "SELECT uid, file FROM runs WHERE stop IS NOT NULL AND uid IN "
                f"({', '.join('?' * len(uids))})", uids))
        good: dict[str, _fill.Summary] = {}  # by uid: of two files holding one run, the last
        for kind, f, what in batch:
            if kind == "error":
                raise what
            if kind == "bad":
                # A listed run without a stop may be mid-flush in another process: keep
                # its row. A finished run that no longer reads is damaged: say so.
                conn.execute("DELETE FROM runs WHERE file = ? AND stop IS NOT NULL", (f,))
                counts["bad"] += self._record_bad(f, *on_disk[f], what, held=was(f))
                continue
            if not what.finished and (what.uid, f) in stopped:
                continue  # read before its writer added the stop, which the index has
            good.pop(what.uid, None)
            good[what.uid] = what
            counts["updated" if f in known else "added"] += 1
        for run, exc in self._write_runs(list(good.values())) if good else ():
            counts["updated" if run.file in known else "added"] -= 1
            conn.execute("DELETE FROM runs WHERE file = ? AND stop IS NOT NULL", (run.file,))
            counts["bad"] += self._record_bad(run.file, *on_disk[run.file], str(exc), held=was(run.file))

    def _may_be_stale(self, st: tuple[int, int]) -> bool:
        """Whether a running run's file must be read again although its (mtime, size) did
        not change: on a network file system (rescan_seconds set), whose attribute cache
        can hide another host's last write, a file modified in the last day is."""
        return self.rescan_seconds is not None and time.time() - st[0] / 1e9 < RECHECK_RUNNING_FOR

    def _put_bad(self, file: str, mtime_ns: int, size: int, error: str,
                 held: tuple = (None, None)) -> None:
        """Note an unreadable file; ``held``: the (uid, scan_id) it held when it read."""
        self.conn.execute("INSERT OR REPLACE INTO bad_files VALUES (?, ?, ?, ?, ?, ?)",
                          (file, mtime_ns, size, error, *held))

    def _record_bad(self, file: str, mtime_ns: int, size: int, error: str,
                    held: tuple = (None, None)) -> bool:
        """Note an unreadable file, unless a run row (one being written) holds it."""
        cur = self.conn.execute("INSERT OR REPLACE INTO bad_files SELECT ?, ?, ?, ?, ?, ? "
                                "WHERE NOT EXISTS (SELECT 1 FROM runs WHERE file = ?)",
                                (file, mtime_ns, size, error, *held, file))
        return cur.rowcount > 0

    def rebuild(self) -> dict[str, int]:
        """Forget everything and index every file again."""
        conn = self.conn
        # what each file held, so a file that no longer reads still says which run it was
        held = {f: (u, s) for f, u, s in conn.execute("SELECT file, uid, scan_id FROM runs")}
        for f, u, s in conn.execute("SELECT file, uid, scan_id FROM bad_files WHERE uid IS NOT NULL"):
            held.setdefault(f, (u, s))
        with self._updating(), conn:
            self._forget_all()
        return self.refresh(full=True, held=held)

    def _forget_all(self) -> None:
        """Empty the tables (in the caller's transaction). Without their triggers for the
        while, so that SQLite drops the rows in one go instead of one by one."""
        conn = self.conn
        conn.execute("DELETE FROM bad_files")  # (opens the transaction: DDL does not)
        text = self._has_text()
        conn.execute("DROP TRIGGER IF EXISTS runs_text_gone")
        conn.execute("DROP TRIGGER IF EXISTS fields_gone")
        if text:
            conn.execute("DROP TABLE runs_text")
        conn.execute("DELETE FROM fields")
        conn.execute("DELETE FROM runs")
        for stmt in (*(_TEXT_SCHEMA if text else ()), *_FIELDS_SCHEMA):
            conn.execute(stmt)

    @contextlib.contextmanager
    def _updating(self) -> Iterator[None]:
        """SQLite's errors while writing the index (a full disk, an I/O error) as ours."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            code = (errno.ENOSPC if "full" in text else errno.EROFS if "readonly" in text
                    else errno.EIO)
            raise CatalogError(code, f"{self.path}: cannot update the catalog index ({text}); "
                                     "the run files are untouched, and 'databroker-lite reindex "
                                     f"{self.directory}' rebuilds the index once this is fixed") from exc

    def _upsert(self, start: dict, stop: dict | None, streams: Iterable[str], file: str,
                mtime_ns: int, size: int) -> None:
        """Index one run (replacing what held its uid or its file)."""
        summary = _fill.encode(self.kind, self._has_text(), start, stop, streams, file, mtime_ns, size)
        for _, exc in self._write_runs([summary]):
            raise exc

    def _write_runs(self, runs: list[_fill.Summary]) -> list[tuple[_fill.Summary, Exception]]:
        """Index these runs (distinct uids and files), all at once if they go in, else one
        by one; returns the runs the index refused (a value it cannot hold), with why."""
        try:
            with self._unit():
                self._insert_runs(runs)
            return []
        except _fill.READ_ERRORS as exc:
            if len(runs) == 1:
                return [(runs[0], exc)]
        return [failed for run in runs for failed in self._write_runs([run])]

    @contextlib.contextmanager
    def _unit(self) -> Iterator[None]:
        """All or nothing, inside the current transaction or as one of its own (which
        first takes the write lock: no stale snapshot)."""
        conn = self.conn
        own = not conn.in_transaction
        conn.execute("BEGIN IMMEDIATE" if own else "SAVEPOINT upsert")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # (SQLite itself rolls back on some errors, a full disk)
                with contextlib.suppress(sqlite3.OperationalError):
                    if own:
                        conn.execute("ROLLBACK")
                    else:
                        conn.execute("ROLLBACK TO upsert")
                        conn.execute("RELEASE upsert")
            raise
        conn.execute("COMMIT" if own else "RELEASE upsert")

    def _insert_runs(self, runs: list[_fill.Summary]) -> None:
        """Delete, then insert (a REPLACE would not fire the triggers that keep runs_text
        and fields), with rowids given here so the runs' words and fields name them."""
        conn = self.conn
        conn.executemany("DELETE FROM runs WHERE uid = ? OR file = ?", [(r.uid, r.file) for r in runs])
        base = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM runs").fetchone()[0] + 1
        conn.executemany(f"INSERT INTO runs(rowid, {', '.join(_RUN_COLUMNS)}) "
                         f"VALUES (?{', ?' * len(_RUN_COLUMNS)})",
                         [(base + i, *r.row) for i, r in enumerate(runs)])
        if self._has_text():
            conn.executemany("INSERT INTO runs_text(rowid, body) VALUES (?, ?)",
                             [(base + i, r.text) for i, r in enumerate(runs)])
        rows = [(k, v, base + i) for i, r in enumerate(runs) for k, v in r.fields]
        rows.sort()  # in key order (one kind of value per key): the B-tree fills page by page
        conn.executemany("INSERT OR IGNORE INTO fields VALUES (?, ?, ?)", rows)
        conn.executemany("DELETE FROM bad_files WHERE file = ?", [(r.file,) for r in runs])

    def record_run(self, start: dict, stop: dict | None, streams: Iterable[str], file: str,
                   *, dir_before: str | None = None) -> None:
        """Called by the writer when a run starts or stops.

        ``dir_before`` is the directory stamp seen just before the file was created: if the
        index was up to date then, it still is, and the new stamp is recorded.
        """
        path = os.path.join(self.directory, file)
        mtime, size = _stat(path)
        try:
            with self._updating(), self.conn:
                self._upsert(start, stop, streams, file, mtime, size)
                # a reader may have met the file half-created and called it bad
                self.conn.execute("DELETE FROM bad_files WHERE file = ?", (file,))
                if dir_before is not None and self._meta("dir_stamp") == dir_before:
                    self._set_meta("dir_stamp", self.dir_stamp())
        except CatalogError as exc:
            # The file is the record; the index is derived. Keep writing the run: the index
            # is out of date (its directory stamp was not moved on) and the next catalog
            # that looks refreshes it from the files.
            warnings.warn(f"{exc}; run {start.get('uid')} is written to {file} regardless",
                          IndexNotUpdated, stacklevel=3)

    # --- questions --------------------------------------------------------
    def _where(self, queries: list[Mapping], hoist: int = HOIST_LEVEL) -> tuple[str, str, list]:
        """(WITH prefix, WHERE clause, parameters) of the ANDed queries."""
        if not queries:
            return "", self.dialect.true, []
        return compile_queries(list(queries), self.dialect, hoist=hoist)

    def _query(self, queries: list[Mapping], select: str, tail: str = "",
               extra: tuple = (), more: list | None = None) -> list:
        """Run ``{select} WHERE <queries> {extra[0]} {tail}``; parameters in text order.

        A query SQLite's parser cannot take (nested too deep for it) is compiled again
        with every nested part in its own common table expression.
        """
        for hoist in (HOIST_LEVEL, 1):
            prefix, where, params = self._where(queries, hoist)
            cond = f"{where}{extra[0]}" if extra else where
            sql = f"{prefix}{select} WHERE {cond} {tail}"
            try:
                return self.conn.execute(sql, [*params, *(extra[1] if extra else ()),
                                               *(more or ())]).fetchall()
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if any(t in text for t in _TOO_COMPLEX):
                    if hoist == 1:
                        raise InvalidQuery(f"the query is too complex for the index ({text}); "
                                           "split it into several searches") from None
                    continue
                if "too many SQL variables" in text:
                    raise InvalidQuery(f"the query has too many values for the index ({text}); "
                                       "split it into several searches") from None
                raise CatalogError(f"{self.path}: the search failed ({text})") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def count(self, queries: list[Mapping]) -> int:
        if not queries:  # no WHERE at all lets SQLite use its fast whole-table count
            return self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return self._query(queries, "SELECT COUNT(*) FROM runs")[0][0]

    def uids(self, queries: list[Mapping], *, newest_first: bool = False,
             limit: int | None = None, offset: int = 0) -> list[str]:
        order = "DESC" if newest_first else "ASC"
        tail = f"ORDER BY time {order}, uid {order}"
        more: list = []
        if limit is not None:
            tail += " LIMIT ? OFFSET ?"
            more = [limit, offset]
        return [r[0] for r in self._query(queries, "SELECT uid FROM runs", tail, more=more)]

    def _match(self, key: str, value: Any, prefix: str | None) -> tuple[str, list]:
        """`` AND key = value`` (or a uid prefix) and its parameters."""
        if prefix is not None:
            return " AND uid >= ? AND uid < ?", [prefix, prefix + "\U0010ffff"]
        value = sql_value(value)
        if value is None or value != value:  # None and NaN equal nothing
            return f" AND {self.dialect.false}", []
        return f" AND {key} = {self._key_placeholder(key)}", [self._key_param(key, value)]

    def _key_placeholder(self, key: str) -> str:
        return "?"

    def _key_param(self, key: str, value: Any) -> Any:
        return value

    def rows(self, queries: list[Mapping], *, key: str, value: Any = None,
             prefix: str | None = None, newest_first: bool = True, limit: int = 50) -> list[dict]:
        """Runs matching the queries and either ``key = value`` or a uid prefix."""
        order = "DESC" if newest_first else "ASC"
        found = self._query(queries, f"SELECT {', '.join(RUN_FIELDS)} FROM runs",
                            f"ORDER BY time {order} LIMIT ?",
                            extra=self._match(key, value, prefix), more=[limit])
        return [dict(zip(RUN_FIELDS, r)) for r in found]

    def locate(self, queries: list[Mapping], *, key: str, value: Any = None,
               prefix: str | None = None, limit: int = 50,
               newest_first: bool = True) -> list[tuple[str, str]]:
        """(uid, file) of runs as :meth:`rows` finds them, from the index alone.

        The (scan_id, time, uid, file) and (uid, time, file) indexes answer this without
        reading the table: a look-up touches a few pages. ``newest_first=False`` leaves
        the order to SQLite (enough to tell one match from several, and cheaper).
        """
        order = "ORDER BY time DESC" if newest_first else ""
        return self._query(queries, "SELECT uid, file FROM runs", f"{order} LIMIT ?",
                           extra=self._match(key, value, prefix), more=[limit])

    def locate_with_documents(self, queries: list[Mapping], *, key: str, value: Any = None,
                              prefix: str | None = None, limit: int = 50,
                              newest_first: bool = True) -> list[tuple]:
        """:meth:`locate`, each row followed by ``((mtime_ns, size), start JSON, stop JSON)``.

        One more page of the table per run found: the look-up that hands out a run also
        hands its metadata (see :meth:`run_documents`), so ``cat[uid].metadata`` costs one query.
        """
        if self.kind != "sqlite":  # jsonb holds the documents re-encoded: not the file's text
            return [(*r, None) for r in self.locate(queries, key=key, value=value, prefix=prefix,
                                                    limit=limit, newest_first=newest_first)]
        if not queries and key == "uid" and type(value) is str and not newest_first:
            # cat[uid], the commonest look-up: one statement, nothing to compile
            rows = self.conn.execute(_UID_DOCUMENTS, (value, limit)).fetchall()
        else:
            order = "ORDER BY time DESC" if newest_first else ""
            rows = self._query(queries, "SELECT uid, file, mtime_ns, size, start, stop FROM runs",
                               f"{order} LIMIT ?", extra=self._match(key, value, prefix),
                               more=[limit])
        return [(u, f, ((m, n), a, b)) for u, f, m, n, a, b in rows]

    def row(self, uid: str) -> dict | None:
        r = self.conn.execute(f"SELECT {', '.join(RUN_FIELDS)}, start, stop FROM runs WHERE uid = ?",
                              (uid,)).fetchone()
        if r is None:
            return None
        out = dict(zip((*RUN_FIELDS, "start", "stop"), r))
        out["start"] = json.loads(out["start"])
        out["stop"] = json.loads(out["stop"]) if out["stop"] else None
        out["streams"] = json.loads(out["streams"])
        return out

    def run_documents(self, uid: str, file: str) -> tuple[tuple[int, int], str, str | None] | None:
        """((mtime_ns, size) of the file when indexed, start JSON, stop JSON or None)."""
        if self.kind != "sqlite":
            return None
        r = self.conn.execute("SELECT mtime_ns, size, start, stop FROM runs WHERE uid = ? AND file = ?",
                              (uid, file)).fetchone()
        return None if r is None else ((r[0], r[1]), r[2], r[3])

    def summaries(self, uids: list[str]) -> list[dict]:
        out = []
        for uid in uids:
            r = self.conn.execute(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE uid = ?", (uid,)).fetchone()
            if r is not None:
                out.append(dict(zip(RUN_FIELDS, r)))
        return out

    def bad_files(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT file, error FROM bad_files"))

    def bad_entries(self) -> list[dict]:
        """Each unreadable file: file, error, and the uid and scan_id it held (None if unknown)."""
        cur = self.conn.execute("SELECT file, error, uid, scan_id FROM bad_files ORDER BY file")
        return [dict(zip(("file", "error", "uid", "scan_id"), r)) for r in cur]
