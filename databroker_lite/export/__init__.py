"""Export runs for users: CSV, JSON, SPEC and NeXus files, from stored runs or live.

``export(runs, fmt, dest)`` (and ``Run.export``) writes stored runs; the writer classes are
also bluesky callbacks (``RE.subscribe(SpecWriter("scans.spec"))``) that write while data
is acquired. Only the public API of runs and streams is used.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._common import ExportWriter, replay
from .csv import CSVWriter
from .json import JSONWriter
from .nexus import NexusWriter
from .spec import SpecWriter

if TYPE_CHECKING:
    from ..run import Run

#: Export formats and what ``dest`` is for each.
FORMATS = {"csv": "a directory", "json": "a directory", "spec": "a file (or a directory)",
           "nexus": "a directory"}


def writer_for(fmt: str, dest: str | os.PathLike, *, first_run: Run | None = None) -> ExportWriter:
    """The writer of format ``fmt`` (``csv``, ``json``, ``spec``, ``nexus``) writing to ``dest``."""
    fmt = fmt.lower()
    dest = os.fspath(dest)
    if fmt == "csv":
        return CSVWriter(dest)
    if fmt == "json":
        return JSONWriter(dest)
    if fmt in ("nexus", "nxs", "hdf5"):
        return NexusWriter(dest)
    if fmt == "spec":
        if os.path.isdir(dest) or dest.endswith(os.sep):
            os.makedirs(dest, exist_ok=True)
            from ._common import run_prefix
            name = run_prefix(first_run.metadata["start"]) if first_run is not None else "export"
            dest = os.path.join(dest, name + ".spec")
        parent = os.path.dirname(os.path.abspath(dest))
        os.makedirs(parent, exist_ok=True)
        return SpecWriter(dest)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")


def export(runs: Run | Iterable[Run], fmt: str, dest: str | os.PathLike,
           streams: Iterable[str] | None = None) -> list[str]:
    """Write stored runs as ``fmt`` files under ``dest``; return the paths written.

    Parameters
    ----------
    runs
        One :class:`~databroker_lite.Run` or several. Several runs go to one SPEC file as
        several scans; for the other formats each run gets its own files.
    fmt
        ``"csv"``, ``"json"``, ``"spec"`` or ``"nexus"``.
    dest
        A directory (``csv``, ``json``, ``nexus``), or the SPEC file (an existing directory
        gets ``scan<scan_id>_<uid8>.spec``; an existing SPEC file is appended to).
    streams
        Only these streams (default: all).

    Image streams are read a block of frames at a time through ``to_dask()``.
    """
    from ..run import Run as _Run
    runs = [runs] if isinstance(runs, _Run) else list(runs)
    if not runs:
        return []
    writer = writer_for(fmt, dest, first_run=runs[0])
    for run in runs:
        replay(run, writer, streams)
    return list(writer.paths)


__all__ = ["CSVWriter", "ExportWriter", "FORMATS", "JSONWriter", "NexusWriter", "SpecWriter",
           "export", "writer_for"]
