"""The side documents of a run file (resource, datum, stream_resource, stream_datum).

Read straight from ``/documents/<kind>`` without building a :class:`~.reader.RunReader`
(which also loads the start, stop and every stream's descriptors): what ``pack`` needs
to list the external files of many runs.
"""
from __future__ import annotations

import os

import h5py

from .. import documents as _docs
from ..errors import CorruptRunFile
from .files import JOURNAL_SUFFIX, open_h5
from .layout import SIDE_DOCUMENTS

SideDocs = dict[str, list[tuple[int, dict, str]]]


def side_documents_of(f: h5py.File) -> SideDocs:
    """{kind: [(doc_index, document, id), ...]} of an open run file."""
    side: SideDocs = {}
    if "documents" not in f:
        return side
    docs = f["documents"]
    for kind in docs:
        g = docs[kind]
        n = g["doc_index"].shape[0]
        js = g["json"].asstr()[:n]
        ids = g["id"].asstr()[:n]
        idx = g["doc_index"][:n]
        side[kind] = [(int(i), _docs.loads(j), d) for i, j, d in zip(idx, js, ids)]
    return side


def _has_side_documents(fid: h5py.h5f.FileID, kinds: tuple[str, ...]) -> bool:
    """True when the open file has a non-empty ``/documents/<kind>`` for one of ``kinds``."""
    if not fid.links.exists(b"documents"):
        return False
    docs = h5py.h5g.open(fid, b"documents")
    names: list[bytes] = []
    docs.links.iterate(names.append)
    return any(n.decode() in kinds for n in names)


def read_side_documents(path: str | os.PathLike, kinds: tuple[str, ...] = SIDE_DOCUMENTS) -> SideDocs:
    """The side documents of the run file at ``path`` (only ``kinds``), the file closed again.

    A finished run is opened with HDF5's own call and its ``/documents`` group listed
    before any h5py object is built (a run without external data costs ~0.1 ms); a run
    being written, or a file that does not open so, goes through :func:`~.files.open_h5`
    (lock waits, journal recovery, the errors that name the file).
    """
    path = os.fspath(path)
    if not os.path.exists(path + JOURNAL_SUFFIX):
        try:
            fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
        except (OSError, ValueError, RuntimeError):
            fid = None
        if fid is not None:
            try:
                if not _has_side_documents(fid, kinds):
                    return {}
                with h5py.File(fid) as f:
                    return {k: v for k, v in side_documents_of(f).items() if k in kinds}
            except (OSError, KeyError, ValueError, TypeError, RuntimeError):
                pass  # read it again below, with the errors that name the file
            finally:
                if fid.valid:
                    fid.close()
    try:
        with open_h5(path, "r") as f:
            side = side_documents_of(f)
    except (CorruptRunFile, FileNotFoundError):
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py: RuntimeError too
        raise CorruptRunFile(f"{path}: damaged run file ({type(exc).__name__}: {exc})") from exc
    return {k: v for k, v in side.items() if k in kinds}

