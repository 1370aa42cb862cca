"""Layer 3: the derived index in a PostgreSQL database (``pip install databroker_lite[postgres]``).

The same index as :class:`databroker_lite.index.Index` (same tables, same refresh from
the files, same queries through the one query compiler), with PostgreSQL's dialect.
Each catalog has its own schema in the database, named from its catalog key (the
``catalog=`` parameter of the URL, else the catalog's name, else its directory), so
the catalogs of several beamlines share one database without meeting.

Writers and refreshing readers of one catalog take turns through a transaction-level
advisory lock, as SQLite's writers do through its file lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from . import index_fill as _fill
from .dialects import PostgresDialect, pg_json
from .errors import CatalogError, InvalidQuery
from .index import SCHEMA_VERSION, Index
from .index_fill import pg_text
from .index_url import safe_url, split_url
from .query import sql_value

try:
    import psycopg
    from psycopg import sql as _sql
except ImportError:  # pragma: no cover - depends on the installation
    psycopg = None

POSTGRES = PostgresDialect()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text);
CREATE TABLE IF NOT EXISTS runs (
    uid text COLLATE "C" PRIMARY KEY,
    scan_id jsonb,
    time double precision,
    stop_time double precision,
    exit_status text,
    plan_name text COLLATE "C",
    streams text,
    file text COLLATE "C" UNIQUE,
    mtime_ns bigint,
    size bigint,
    start jsonb,
    stop jsonb
);
CREATE INDEX IF NOT EXISTS runs_time ON runs(time, uid);
CREATE INDEX IF NOT EXISTS runs_scan_id_file ON runs(scan_id, time, uid, file);
CREATE INDEX IF NOT EXISTS runs_uid_file ON runs(uid, time, file);
CREATE INDEX IF NOT EXISTS runs_plan_name ON runs(plan_name, time);
CREATE INDEX IF NOT EXISTS runs_start ON runs USING gin (start jsonb_path_ops);
CREATE TABLE IF NOT EXISTS bad_files (
    file text COLLATE "C" PRIMARY KEY, mtime_ns bigint, size bigint, error text
);
ALTER TABLE bad_files ADD COLUMN IF NOT EXISTS uid text;
ALTER TABLE bad_files ADD COLUMN IF NOT EXISTS scan_id jsonb;
"""


def schema_name(key: str) -> str:
    """A PostgreSQL schema name for a catalog key: readable, short and unique."""
    slug = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")[-40:] or "catalog"
    return f"dbl_{slug}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


class _Connection:
    """A psycopg connection that takes the index's ``?`` SQL and behaves like sqlite3's for
    the index: ``execute`` returns a cursor, ``with conn:`` is one transaction, which
    first takes this catalog's advisory lock (writers take turns)."""

    def __init__(self, raw: Any, lock_id: int, where: str) -> None:
        self.raw, self.lock_id, self.where = raw, lock_id, where
        self._tx: list[Any] = []

    def execute(self, sql: str, params: Iterable = ()) -> Any:
        text = sql.replace("%", "%%").replace("?", "%s")
        try:
            return self.raw.execute(text, list(params))
        except psycopg.errors.InvalidRegularExpression as exc:
            raise InvalidQuery(f"$regex: PostgreSQL cannot use this pattern "
                               f"({str(exc).strip()})") from None
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def executemany(self, sql: str, rows: list) -> None:
        """``sql`` once for each row, in one round trip (psycopg's pipeline)."""
        if not rows:
            return
        text = sql.replace("%", "%%").replace("?", "%s")
        try:
            with self.raw.cursor() as cur:
                cur.executemany(text, rows)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> CatalogError:
        return CatalogError(f"{self.where}: PostgreSQL index: {str(exc).strip()}")

    def __enter__(self) -> _Connection:
        try:
            tx = self.raw.transaction()
            tx.__enter__()
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        try:
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_id,))
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                tx.__exit__(type(exc), exc, exc.__traceback__)
            raise self._error(exc) from exc
        self._tx.append(tx)
        return self

    def __exit__(self, *exc: Any) -> None:
        tx = self._tx.pop()
        try:
            tx.__exit__(*exc)
        except psycopg.Error as err:
            raise self._error(err) from err

    def close(self) -> None:
        self.raw.close()


class PostgresIndex(Index):
    """The index of one catalog directory, kept in a PostgreSQL database."""

    dialect = POSTGRES
    kind = "postgresql"

    def __init__(self, directory: str, url: str, *, key: str | None = None,
                 writable: bool = True, rescan_seconds: float | None = None) -> None:
        if psycopg is None:
            raise CatalogError("a PostgreSQL index needs psycopg 3: pip install "
                               "'databroker_lite[postgres]'")
        self.directory = os.path.abspath(directory)
        self.url, url_key = split_url(url)
        self.key = url_key or key or self.directory
        self.schema = schema_name(self.key)
        self.path = f"{safe_url(self.url)} (schema {self.schema})"
        self.writable = writable
        self.in_memory = False
        self.rescan_seconds = rescan_seconds
        self._last_look = -float("inf")
        self._local = threading.local()
        self._lock_id = int.from_bytes(hashlib.sha1(self.schema.encode()).digest()[:8], "big",
                                       signed=True)
        self._init_db()
        self._check_schema_version()

    def _init_db(self) -> None:
        conn = self.conn
        with conn:  # the advisory lock: two processes creating one schema at once would clash
            conn.raw.execute(_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                _sql.Identifier(self.schema)))
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.raw.execute(statement)
            for k, v in (("schema_version", SCHEMA_VERSION), ("catalog_key", self.key),
                         ("directory", self.directory)):
                conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                             (k, str(v)))

    @property
    def conn(self) -> _Connection:  # type: ignore[override]
        c = getattr(self._local, "conn", None)
        if (c is None or getattr(self._local, "pid", None) != os.getpid()
                or (c.raw.broken and not c._tx)):  # the server went away: connect again
            try:
                raw = psycopg.connect(self.url, autocommit=True, connect_timeout=30,
                                      application_name="databroker_lite")
                raw.execute(_sql.SQL("SET search_path TO {}, public").format(
                    _sql.Identifier(self.schema)))
            except psycopg.Error as exc:
                raise CatalogError(f"cannot connect to the PostgreSQL index at "
                                   f"{safe_url(self.url)} ({str(exc).strip()})") from exc
            c = _Connection(raw, self._lock_id, self.path)
            self._local.conn = c
            self._local.pid = os.getpid()
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None and getattr(self._local, "pid", None) == os.getpid():
            c.close()
        self._local.conn = None

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                          "SET value = EXCLUDED.value", (key, str(value)))

    @contextlib.contextmanager
    def _updating(self) -> Iterator[None]:
        try:
            yield
        except CatalogError as exc:
            raise CatalogError(f"{exc}; the run files are untouched, and 'databroker-lite "
                               f"reindex {self.directory}' rebuilds the index once this is "
                               "fixed") from exc

    def _put_bad(self, file: str, mtime_ns: int, size: int, error: str,
                 held: tuple = (None, None)) -> None:
        uid, scan_id = held
        scan_id = None if scan_id is None else json.dumps(pg_json(sql_value(scan_id)))
        self.conn.execute("INSERT INTO bad_files VALUES (?, ?, ?, ?, ?, ?::jsonb) ON CONFLICT (file) "
                          "DO UPDATE SET mtime_ns = EXCLUDED.mtime_ns, size = EXCLUDED.size, "
                          "error = EXCLUDED.error, uid = EXCLUDED.uid, scan_id = EXCLUDED.scan_id",
                          (file, mtime_ns, size, pg_text(error), uid, scan_id))

    def _record_bad(self, file: str, mtime_ns: int, size: int, error: str,
                    held: tuple = (None, None)) -> bool:
        if self.conn.execute("SELECT 1 FROM runs WHERE file = ?", (file,)).fetchone():
            return False
        self._put_bad(file, mtime_ns, size, error, held)
        return True

    @contextlib.contextmanager
    def _unit(self) -> Iterator[None]:
        with self.conn:  # inside a transaction: a savepoint
            yield

    def _insert_runs(self, runs: list[_fill.Summary]) -> None:
        conn = self.conn
        uids, files = [r.uid for r in runs], [r.file for r in runs]
        # one statement per batch: a prepared "uid = $1 OR file = $2" run once per row
        # gets a generic plan that scans the table (1 ms a row at 10,000 rows)
        conn.execute("DELETE FROM runs WHERE uid = ANY(?::text[]) OR file = ANY(?::text[])",
                     (uids, files))
        conn.executemany("INSERT INTO runs VALUES (?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?, ?, ?::jsonb, ?::jsonb)",
                         [r.row for r in runs])
        conn.execute("DELETE FROM bad_files WHERE file = ANY(?::text[])", (files,))

    def _forget_all(self) -> None:
        self.conn.execute("TRUNCATE runs, bad_files")

    def refresh(self, *, full: bool = False, **kwargs: Any) -> dict[str, int]:
        counts = super().refresh(full=full, **kwargs)
        if counts["added"] + counts["updated"] + counts["removed"] >= 1000 and not self.conn._tx:
            # after a bulk change: the planner's statistics, and the visibility map that
            # lets COUNT(*) and look-ups read the indexes alone
            self.conn.execute("VACUUM (ANALYZE) runs")
        return counts

    def _key_placeholder(self, key: str) -> str:
        return "?::jsonb" if key == "scan_id" else "?"

    def _key_param(self, key: str, value: Any) -> Any:
        return json.dumps(pg_json(value)) if key == "scan_id" else value

    def row(self, uid: str) -> dict | None:
        fields = ("uid", "scan_id", "time", "stop_time", "exit_status", "plan_name", "streams", "file")
        r = self.conn.execute(f"SELECT {', '.join(fields)}, start, stop FROM runs WHERE uid = ?",
                              (uid,)).fetchone()
        if r is None:
            return None
        out = dict(zip((*fields, "start", "stop"), r))
        out["streams"] = json.loads(out["streams"])
        return out

    def drop(self) -> None:
        """Remove this catalog's schema from the database (the files are untouched)."""
        with self.conn as conn:
            conn.raw.execute(_sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                _sql.Identifier(self.schema)))
        self.close()
