"""Choosing a catalog's index: SQLite beside the files, SQLite per host, or PostgreSQL.

``open_catalog(path, index=...)`` (and ``index:`` in a catalog's YAML entry) takes:

``None`` / ``"auto"`` (default)
    SQLite in ``<catalog>/.databroker_lite/``, unless the directory is on a network file
    system (see :mod:`databroker_lite.netfs`): then ``"host"``.
``"beside"``
    SQLite in ``<catalog>/.databroker_lite/`` whatever the file system.
``"host"``
    SQLite in this host's cache directory, refreshed from the files, which are also
    listed again every ``rescan_seconds`` (network file systems cache directory times).
``"postgresql://user@server/database[?catalog=NAME]"``
    A PostgreSQL database (:mod:`databroker_lite.index_pg`).

The environment variable ``DATABROKER_LITE_INDEX`` gives the default for catalogs
opened without ``index=``.
"""
from __future__ import annotations

import os
from typing import Any

from . import netfs
from .errors import CatalogError
from .index import Index
from .index_url import is_postgres_url

INDEX_ENV = "DATABROKER_LITE_INDEX"
RESCAN_ENV = "DATABROKER_LITE_RESCAN_SECONDS"
DEFAULT_RESCAN_SECONDS = 10.0


def _rescan_seconds() -> float:
    text = os.environ.get(RESCAN_ENV, "").strip()
    try:
        return float(text) if text else DEFAULT_RESCAN_SECONDS
    except ValueError:
        raise CatalogError(f"{RESCAN_ENV}={text!r} is not a number of seconds") from None


def open_index(directory: str, index: Any = None, *, writable: bool = True,
               name: str | None = None) -> Index:
    """The index a catalog in ``directory`` uses, as ``index`` (see the module) asks."""
    spec = index if index is not None else (os.environ.get(INDEX_ENV) or "auto")
    if not isinstance(spec, str):
        raise CatalogError(f"index={spec!r}: give 'auto', 'beside', 'host' or a "
                           "postgresql:// URL")
    spec = spec.strip()
    # index_pg (and psycopg, ~65 ms) is imported only for a PostgreSQL URL
    if is_postgres_url(spec):
        from .index_pg import PostgresIndex
        network = netfs.is_network_fs(directory)
        return PostgresIndex(directory, spec, key=name, writable=True,
                             rescan_seconds=_rescan_seconds() if network else None)
    if spec == "auto":
        spec = "host" if netfs.is_network_fs(directory) else "beside"
    if spec == "beside":
        return Index(directory, writable=writable)
    if spec == "host":
        path = netfs.host_index_path(directory)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create the per-host index directory "
                               f"{os.path.dirname(path)} ({exc}); set "
                               f"{netfs.CACHE_ENV} to a writable local directory") from exc
        return Index(directory, writable=True, path=path, rescan_seconds=_rescan_seconds())
    raise CatalogError(f"index={spec!r}: give 'auto', 'beside', 'host' or a postgresql:// URL")
