"""Pack, verify, unpack and import (kept for its import paths; the code is in :mod:`databroker_lite.pack`)."""
from __future__ import annotations

from .pack import (
    JOURNAL,
    MANIFEST,
    PACK_FORMAT,
    PACK_VERSION,
    ImportFailed,
    PackError,
    PackReport,
    UnpackReport,
    VerifyReport,
    default_data_dir,
    export_msgpack,
    external_files,
    import_documents,
    pack,
    parse_scan_ids,
    read_manifest,
    same_run,
    select_runs,
    sha256_file,
    unpack,
    verify,
)

__all__ = ["ImportFailed", "PackError", "PackReport", "UnpackReport", "VerifyReport", "external_files",
           "import_documents", "pack", "parse_scan_ids", "select_runs", "unpack", "verify",
           "JOURNAL", "MANIFEST", "PACK_FORMAT", "PACK_VERSION", "default_data_dir", "export_msgpack",
           "read_manifest", "same_run", "sha256_file"]
