"""PostgreSQL index URLs: telling one from the other index choices, the ``?catalog=``
key, the password hidden for messages. Only :mod:`urllib`: choosing an index, or
checking a ``serve`` request, never imports psycopg (:mod:`databroker_lite.index_pg`)."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["catalog_key", "is_postgres_url", "safe_url", "split_url"]


def is_postgres_url(spec: Any) -> bool:
    """Whether an ``index=`` value is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(spec, str) and spec.strip().startswith(("postgresql://", "postgres://"))


def split_url(url: str) -> tuple[str, str | None]:
    """(the URL for psycopg, the catalog key given as ``?catalog=``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    key = next((v for k, v in query if k == "catalog"), None)
    rest = urlencode([(k, v) for k, v in query if k != "catalog"])
    return urlunsplit(parts._replace(query=rest)), key


def catalog_key(index: Any) -> str | None:
    """The catalog key an ``index=`` value names (``?catalog=NAME`` of a PostgreSQL URL),
    or None: then each catalog is keyed by its name or directory."""
    return (split_url(index.strip())[1] or None) if is_postgres_url(index) else None


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
