"""The intake driver: makes a named-catalog YAML file a real intake catalog.

Registered under the entry point group ``intake.drivers`` as ``databroker_lite``, so::

    import intake
    cat = intake.open_catalog("45id.yml")["45id"]   # a databroker_lite Catalog
    cat[-1].primary.read()

Indexing an intake (v1-style YAML) catalog instantiates the driver class with the
entry's ``args``; here that class *is* a :class:`databroker_lite.Catalog`, so the
object returned is the catalog itself, with the few attributes intake sets or reads.
This module needs nothing from intake at import time, and the rest of the package
never imports it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .catalogs import Catalog
from .config import check_directory, check_root_map, resolve_path


class IntakeCatalog(Catalog):
    """A :class:`~databroker_lite.Catalog` opened by intake from a YAML entry.

    Parameters
    ----------
    path : the catalog directory; relative paths are taken from the YAML file's directory.
    root_map : ``{old_root: new_root}`` for external files that moved; relative new roots
        are taken from the YAML file's directory too.
    mode : "a" or "r"; by default "a" when the directory is writable, else "r".
    metadata, CATALOG_DIR, storage_options : passed by intake.
    """

    # What intake reads from a driver class (name is replaced per instance by the entry name).
    name = "databroker_lite"
    container = "catalog"
    version = "1"
    partition_access = False

    def __init__(self, path: str | os.PathLike, root_map: Mapping[str, str] | None = None,
                 mode: str | None = None, *, metadata: Mapping | None = None,
                 CATALOG_DIR: str | None = None,  # noqa: N803 - intake's spelling
                 storage_options: Any = None) -> None:
        where = f"intake source databroker_lite (path={path!r})"
        # intake gives the YAML file's directory as CATALOG_DIR or in metadata["catalog_dir"]
        base = CATALOG_DIR or (metadata or {}).get("catalog_dir") or None
        directory = resolve_path(path, base, where=where)
        directory, mode = check_directory(directory, mode, where=where)
        root_map = check_root_map(root_map, where, base_dir=base)
        super().__init__(directory, mode=mode, root_map=root_map)
        self.metadata = dict(metadata or {})
        self.description: str | None = None
        self.user_parameters: dict = {}

    def describe(self) -> dict:
        """Intake's summary of a source."""
        return {"name": self.name, "container": self.container, "plugin": ["databroker_lite"],
                "driver": ["databroker_lite"], "description": self.description,
                "direct_access": True, "user_parameters": [],
                "metadata": self.metadata, "args": {"path": self.directory,
                                                    "root_map": self.root_map}}

    def read(self) -> Catalog:
        """Intake's "load it" call; the source already is the catalog."""
        return self

    def walk(self, sofar: dict | None = None, prefix: list | None = None,
             depth: int = 2) -> dict:
        """Intake descends into ``container == "catalog"`` sources; runs are not intake entries."""
        return {} if sofar is None else sofar
