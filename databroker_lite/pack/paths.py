"""The one place that turns a path written in a pack into a path on disk.

Every relative path a pack holds (manifest entries, ``catalog.json`` root_map targets,
a databroker-pack ``catalog.yml`` root_map) goes through :func:`resolve`, which refuses
anything absolute, anything with ``..``, and anything that leaves the pack through a
symlink. Partial files (``<name>.partial-<8 hex>``) are named here too, so a rerun of
an interrupted command can find and remove exactly its own leftovers.
"""
from __future__ import annotations

import os
import re
import uuid

from ..catalogs import CATALOG_CONFIG
from ..index import INDEX_DIR
from .errors import PackError

MANIFEST = "manifest.json"
CATALOG_YML = "catalog.yml"
JOURNAL = os.path.join(INDEX_DIR, "pack-journal.jsonl")
_PARTIAL = re.compile(r"\.partial-[0-9a-f]{8}$")

__all__ = ["CATALOG_CONFIG", "CATALOG_YML", "INDEX_DIR", "JOURNAL", "MANIFEST", "clean_partials",
           "is_partial", "partial_name", "resolve"]


def resolve(rel: object, base: str, *, what: str = "manifest path") -> str:
    """The absolute path of ``rel`` inside ``base``, or PackError if it would leave ``base``."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise PackError(f"{what} {rel!r} is not a relative path")
    parts = rel.replace("\\", "/").split("/")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise PackError(f"{what} {rel!r} is absolute or escapes the pack directory")
    full = os.path.join(base, rel)
    real_base = os.path.realpath(base)
    if os.path.commonpath([os.path.realpath(full), real_base]) != real_base:
        raise PackError(f"{what} {rel!r} resolves outside the pack (through a symlink)")
    return full


def partial_name(path: str) -> str:
    """Where a file is written before it is renamed to ``path``."""
    return f"{path}.partial-{uuid.uuid4().hex[:8]}"


def is_partial(path: str) -> bool:
    return bool(_PARTIAL.search(path))


def clean_partials(directory: str, finals: set[str] | None = None) -> list[str]:
    """Remove the partial files an interrupted command left under ``directory``.

    With ``finals`` (absolute paths), only partials of those files are removed: used in a
    catalog, where other files are not ours. Returns the paths removed.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for dirpath, dirnames, names in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not (dirpath == directory and d == INDEX_DIR)]
        for n in names:
            if not is_partial(n):
                continue
            full = os.path.join(dirpath, n)
            if finals is not None and _PARTIAL.sub("", full) not in finals:
                continue
            try:
                os.remove(full)
                removed.append(full)
            except FileNotFoundError:
                pass
    return removed
