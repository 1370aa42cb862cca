"""databroker_lite: Bluesky runs in HDF5 files, read back as xarray, no server needed."""
from __future__ import annotations

from . import queries
from .catalogs import Catalog, CatalogWriter, DuplicateScanIDWarning, open_catalog, temp
from .column import ArrayColumn
from .config import as_catalog, catalog, install_catalog, uninstall_catalog  # shadows the .catalog module
from .errors import (
    AmbiguousKey,
    CatalogError,
    CatalogNotFound,
    CorruptRunFile,
    DatabrokerLiteError,
    DescriptorMismatchWarning,
    ExportError,
    ExternalDataError,
    InvalidArgument,
    InvalidCatalogName,
    InvalidDocument,
    InvalidQuery,
    MissingExternalFile,
    MissingHandler,
    NoRunsMatch,
    ReadOnlyCatalog,
    RecentRunNotFound,
    RunFilesMissingWarning,
    RunFileUnreadable,
    RunNotFound,
    ShapeMismatch,
    StreamNotFound,
    UnsupportedLayout,
)
from .index import IndexNotUpdated
from .packing import (
    PackError,
    PackReport,
    UnpackReport,
    VerifyReport,
    import_documents,
    pack,
    unpack,
    verify,
)
from .queries import ScanID, ScanIDRange, TimeRange
from .run import Run
from .storage.handlers import register_handler
from .stream import Stream


def from_uri(url: str, api_key: str | None = None, **kwargs):
    """A catalog served by ``databroker-lite serve`` (needs the ``server`` extra).

    See :func:`databroker_lite.remote.from_uri`; tiled is imported only when called.
    """
    from .remote import from_uri as _from_uri
    return _from_uri(url, api_key=api_key, **kwargs)


try:
    from ._version import __version__
except ImportError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.1.0"

__all__ = [
    "as_catalog",
    "AmbiguousKey", "ArrayColumn", "Catalog", "CatalogError", "CatalogNotFound", "ExportError", "CatalogWriter", "CorruptRunFile",
    "DatabrokerLiteError", "DescriptorMismatchWarning", "DuplicateScanIDWarning", "ExternalDataError", "IndexNotUpdated", "InvalidArgument", "InvalidCatalogName", "InvalidDocument",
    "InvalidQuery", "PackError", "PackReport", "UnpackReport", "VerifyReport", "import_documents",
    "pack", "unpack", "verify", "MissingExternalFile", "MissingHandler", "NoRunsMatch", "ReadOnlyCatalog",
    "RecentRunNotFound", "Run", "RunFileUnreadable", "RunFilesMissingWarning", "RunNotFound", "ScanID", "ScanIDRange", "ShapeMismatch",
    "Stream", "StreamNotFound",
    "TimeRange", "UnsupportedLayout", "catalog", "from_uri", "install_catalog", "open_catalog",
    "queries", "register_handler", "temp", "uninstall_catalog",
]
