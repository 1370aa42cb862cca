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
from .files import open_h5
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


def read_side_documents(path: str | os.PathLike, kinds: tuple[str, ...] = SIDE_DOCUMENTS) -> SideDocs:
    """The side documents of the run file at ``path`` (only ``kinds``), the file closed again."""
    path = os.fspath(path)
    try:
        with open_h5(path, "r") as f:
            side = side_documents_of(f)
    except (CorruptRunFile, FileNotFoundError):
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py: RuntimeError too
        raise CorruptRunFile(f"{path}: damaged run file ({type(exc).__name__}: {exc})") from exc
    return {k: v for k, v in side.items() if k in kinds}

