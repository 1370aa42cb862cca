"""The exception family of databroker_lite.

Every error inherits :class:`DatabrokerLiteError` and, where it fits, the matching
builtin, so callers can catch either (``except KeyError`` keeps working).
"""
from __future__ import annotations


class DatabrokerLiteError(Exception):
    """Base class of every error raised by databroker_lite."""


class InvalidDocument(DatabrokerLiteError, ValueError):
    """A document failed validation; nothing of it was stored."""

    def __init__(self, message: str, *, run_uid: str | None = None,
                 name: str | None = None, doc_uid: str | None = None) -> None:
        self.run_uid = run_uid
        self.name = name
        self.doc_uid = doc_uid
        where = []
        if run_uid:
            where.append(f"run {run_uid}")
        if name:
            where.append(f"{name} document" + (f" {doc_uid}" if doc_uid else ""))
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RunNotFound(DatabrokerLiteError, KeyError):
    """No run matches a look-up key."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


class AmbiguousKey(RunNotFound):
    """A uid prefix or look-up matches more than one run."""

    def __init__(self, message: str, candidates: list[dict]) -> None:
        super().__init__(message)
        self.candidates = candidates


class RecentRunNotFound(RunNotFound, IndexError):
    """``cat[-k]`` with k larger than the number of runs (also an ``IndexError``)."""


class RunFileUnreadable(RunNotFound):
    """The run looked up is (or may be) in a run file that could not be read.

    ``files`` maps each such file (a path) to the reason; ``cat.bad_files`` lists every
    file of the catalog that could not be read.
    """

    def __init__(self, message: str, files: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.files = dict(files or {})


class NoRunsMatch(RunNotFound):
    """A query (or time range) that a pack, an export or a command needs runs from matches
    none; the message names the keys the catalog's runs have."""


class StreamNotFound(DatabrokerLiteError, KeyError):
    """A run has no stream of that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CorruptRunFile(DatabrokerLiteError, OSError):
    """A run file is unreadable, truncated, or not in our layout."""


class UnsupportedLayout(CorruptRunFile):
    """A run file was written with a newer layout version than this package reads."""


class ExternalDataError(DatabrokerLiteError, OSError):
    """External data (resource/datum) could not be read."""


class MissingExternalFile(ExternalDataError, FileNotFoundError):
    """An external file a run needs is not where the resource says."""


class MissingHandler(DatabrokerLiteError, KeyError):
    """No handler is registered for a resource's spec."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgument(DatabrokerLiteError, ValueError):
    """A function was given an argument value it does not accept."""


class DescriptorMismatchWarning(UserWarning):
    """Event data disagreed with its descriptor (shape or type); it was stored as it came.

    Issued once per run and data key. The key's values are then kept as JSON text, one
    per event, and read back as they came (``read()`` gives one object per event).
    """


class RunFilesMissingWarning(UserWarning):
    """A catalog's directory holds no run files although its index lists runs: an
    unmounted or not yet mounted file system, most likely. The index is kept as it is
    (nothing is removed) until the files are back or ``reindex`` is asked for."""


class ShapeMismatch(DatabrokerLiteError, ValueError):
    """Data has a shape other than the one its descriptor declares."""


class CatalogError(DatabrokerLiteError, OSError):
    """A catalog directory is missing, unwritable, or its index unusable."""


class InvalidCatalogName(CatalogError, ValueError):
    """A catalog name that cannot be a config file name (letters, digits, ``_ . -``)."""


class ReadOnlyCatalog(CatalogError, PermissionError):
    """A write was attempted on a catalog opened with mode='r'."""


class InvalidQuery(DatabrokerLiteError, ValueError):
    """A search query uses an unknown operator or an unusable value."""


class CatalogNotFound(DatabrokerLiteError, KeyError):
    """No named catalog of that name is on the catalog search path."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ExportError(DatabrokerLiteError, OSError):
    """An export cannot be written: the destination is unusable, or the runs do not fit it."""


class UnknownExportFormat(ExportError, ValueError):
    """An export format other than csv, json, spec or nexus."""


class PackError(DatabrokerLiteError, OSError):
    """A pack or document file is incomplete, corrupt, unsafe, or cannot be written."""


class ImportFailed(PackError):
    """Some runs of an import could not be read or stored; the others were imported.

    ``report`` is the :class:`~databroker_lite.pack.UnpackReport` of what was done,
    ``failed`` maps each failed source (file, and run uid where known) to the reason.
    """

    def __init__(self, message: str, report: object = None, failed: dict | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.failed = dict(failed or {})


class ServerConfigError(DatabrokerLiteError, ValueError):
    """A ``serve`` config, users file or access policy is wrong; the message names the file."""
