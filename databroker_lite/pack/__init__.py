"""Pack, verify, unpack and import: carry runs between sites (a tool on the public catalog API).

A pack is a plain directory::

    DEST/
      manifest.json        format, version, tool, source, runs, and every file's size + BLAKE3
                           (format 2; packs of format 1 have SHA-256, still read)
      catalog.json         root_map for the external files, relative to DEST
      catalog.yml          the same catalog as an intake/databroker_lite config (relative path)
      <uid>.h5             one run file per run (the catalog's own files, unchanged)
      external/<key>/...   the external files the runs need (``--external copy``)

Where the rules live:

- :mod:`.paths`: the one place that resolves a path written in a pack (nothing may
  leave the pack), and the names of partial files.
- :mod:`.manifest`: reading and checking ``manifest.json`` and a pack's ``catalog.json``.
- :mod:`.same`: the one "is this run already here, and is it the same?" rule, used by
  pack, unpack and import.
- :mod:`.plan` (which runs, which files), :mod:`.files` (copy + hash through partials),
  :mod:`.writing` (``pack``), :mod:`.verifying` (``verify``), :mod:`.unpacking`
  (``unpack``), :mod:`.docfiles` and :mod:`.importing` (``import_documents``),
  :mod:`.interop` (``format="msgpack"``).

Note: ``databroker_lite.pack`` as an attribute is the :func:`pack` function; import
names from this package with ``from databroker_lite.pack import ...``.
"""
from __future__ import annotations

from .errors import ImportFailed, PackError
from .files import sha256_file
from .importing import import_documents
from .interop import export_msgpack
from .manifest import PACK_FORMAT, PACK_VERSION, read_manifest
from .paths import JOURNAL, MANIFEST, resolve
from .plan import external_files, parse_scan_ids, select_runs
from .reports import PackReport, UnpackReport, VerifyReport
from .same import same_run
from .unpacking import default_data_dir, unpack
from .verifying import verify
from .writing import pack

__all__ = ["JOURNAL", "MANIFEST", "PACK_FORMAT", "PACK_VERSION", "ImportFailed", "PackError",
           "PackReport", "UnpackReport", "VerifyReport", "default_data_dir", "export_msgpack",
           "external_files", "import_documents", "pack", "parse_scan_ids", "read_manifest",
           "resolve", "same_run", "select_runs", "sha256_file", "unpack", "verify"]
