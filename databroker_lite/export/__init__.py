"""Export runs for users: CSV, JSON, SPEC and NeXus files, from stored runs or live.

``export(runs, fmt, dest)`` (and ``Run.export``) writes stored runs; the writer classes are
also bluesky callbacks (``RE.subscribe(SpecWriter("scans.spec"))``) that write while data
is acquired. Only the public API of runs and streams is used.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import DatabrokerLiteError, ExportError, UnknownExportFormat
from ._common import ExportWriter, Run, replay
from .csv import CSVWriter
from .json import JSONWriter
from .nexus import NexusWriter
from .spec import SpecWriter

#: Export formats and what ``dest`` may be for each (a directory always works).
FORMATS = {"csv": "a directory",
           "json": "a directory, or a .json file for one run",
           "spec": "a directory, or a SPEC file (appended to; any name with a suffix)",
           "nexus": "a directory, or a .nxs/.h5/.hdf5 file for one run"}
_ALIASES = {"nxs": "nexus", "hdf5": "nexus", "h5": "nexus"}
_FILE_SUFFIXES = {"json": (".json",), "nexus": (".nxs", ".nx5", ".h5", ".hdf5", ".nexus")}


def _as_file(fmt: str, dest: str) -> bool:
    """Whether ``dest`` names the file to write (else it is the directory to write in)."""
    if os.path.isdir(dest) or dest.endswith((os.sep, "/")):
        return False
    if fmt == "spec":
        return os.path.isfile(dest) or bool(os.path.splitext(dest)[1])
    return dest.lower().endswith(_FILE_SUFFIXES.get(fmt, ()))


def _prepare(directory: str, dest: str, fmt: str) -> None:
    """Make the directory the export writes in, or say why it cannot be."""
    if os.path.isfile(directory):
        raise ExportError(f"cannot write the {fmt} export to {dest}: {directory} is a file, not "
                          f"a directory; give a directory ({fmt} dest: {FORMATS[fmt]})")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot write the {fmt} export to {dest}: cannot create the "
                          f"directory {exc.filename or directory} ({exc.strerror or exc}); give "
                          "a directory you can write to") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write the {fmt} export to {dest}: the directory {directory} "
                          "is not writable by you; give a directory you can write to")


def writer_for(fmt: str, dest: str | os.PathLike, *, first_run: Run | None = None,
               n_runs: int = 1) -> ExportWriter:
    """The writer of format ``fmt`` (``csv``, ``json``, ``spec``, ``nexus``) writing to ``dest``.

    ``dest`` is a directory for every format (files are named after the run), or the
    file itself where one file can hold the export (see :data:`FORMATS`).
    """
    name = _ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise UnknownExportFormat(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")
    dest = os.fspath(dest)
    if not _as_file(name, dest):
        _prepare(dest, dest, name)
        if name == "csv":
            return CSVWriter(dest)
        if name == "json":
            return JSONWriter(dest)
        if name == "nexus":
            return NexusWriter(dest)
        from ._common import run_prefix
        stem = run_prefix(first_run.metadata["start"]) if first_run is not None else "export"
        return SpecWriter(os.path.join(dest, stem + ".spec"))
    if n_runs > 1 and name != "spec":
        raise ExportError(f"{n_runs} runs cannot go into the one {name} file {dest}: give a "
                          "directory (one file per run is written in it)")
    parent, filename = os.path.split(os.path.abspath(dest))
    _prepare(parent, dest, name)
    if name == "spec":
        return SpecWriter(dest)
    return (JSONWriter if name == "json" else NexusWriter)(parent, filename=filename)


def export(runs: Run | Iterable[Run], fmt: str, dest: str | os.PathLike,
           streams: Iterable[str] | None = None) -> list[str]:
    """Write stored runs as ``fmt`` files under ``dest``; return the paths written.

    Image streams are read a block of frames at a time through ``to_dask()``. A
    destination that cannot be written is an :class:`~databroker_lite.errors.ExportError`
    naming it.

    Parameters
    ----------
    runs
        One :class:`~databroker_lite.Run` or several. Several runs go to one SPEC file as
        several scans; for the other formats each run gets its own files.
    fmt
        ``"csv"``, ``"json"``, ``"spec"`` or ``"nexus"``.
    dest
        A directory, for every format. It is created if missing, and the files in it
        are named after the run (``scan<scan_id>_<uid8>``), one SPEC file holding all
        the runs. Or the file itself where one file holds the export. That is a SPEC
        file (any name with a suffix, appended to if it exists), or for one run a
        ``.json`` file or a ``.nxs`` or ``.h5`` file.
    streams
        Only these streams (default: all).
    """
    runs = [runs] if isinstance(runs, Run) else list(runs)
    if not runs:
        return []
    writer = writer_for(fmt, dest, first_run=runs[0], n_runs=len(runs))
    target = os.path.abspath(os.fspath(dest))
    try:
        for run in runs:
            replay(run, writer, streams)
    except OSError as exc:
        where = os.path.abspath(exc.filename) if isinstance(exc.filename, str) else ""
        if isinstance(exc, DatabrokerLiteError) or not where.startswith(target):
            raise
        raise ExportError(f"cannot write the {fmt} export to {dest}: {where}: "
                          f"{exc.strerror or exc}") from exc
    return list(writer.paths)


__all__ = ["CSVWriter", "ExportWriter", "FORMATS", "JSONWriter", "NexusWriter", "SpecWriter",
           "export", "writer_for"]
