"""The run-file layout (version 1): names, dtypes and chunking in one place.

See docs/layout.rst for the user-facing description. In short::

    /                      attrs: databroker_lite_layout=1, uid
    /start, /stop          JSON text (stop absent while the run is open)
    /streams/<stream>/<i>  one group per descriptor of that stream, in arrival order
        descriptor         JSON text            attrs: uid, doc_index
        time, seq_num, uid, doc_index           one row per event
        data/<key>         (n_events, *shape), typed and chunked
        timestamps/<key>   (n_events,) float64
        filled/<key>       (n_events,) int8: -1 absent, 0 false, 1 true
        no_filled          (n_events,) int8: 1 if the event came without 'filled'
                           (absent when every event had it)
        shapes/<key>       (n_events, ndim) for keys with a variable-length dimension
                           data/<key> with attrs dtype="json": one JSON text per event, for a
                           key whose values disagreed with its descriptor
    /documents/<name>      json, doc_index (and datum_id) for resource, datum,
                           stream_resource, stream_datum
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

LAYOUT_VERSION = 1
LAYOUT_ATTR = "databroker_lite_layout"
STR = h5py.string_dtype("utf-8")
SIDE_DOCUMENTS = ("resource", "datum", "stream_resource", "stream_datum")

_CHUNK_TARGET = 64 * 1024       # bytes per HDF5 chunk for small rows
_CHUNK_MAX_ROWS = 1024
_WHOLE_ROW = 256 * 1024         # rows at least this big get one chunk each


def h5name(name: str) -> str:
    """A key or stream name as an HDF5 link name ('/' cannot appear in one)."""
    out = name.replace("%", "%25").replace("/", "%2F")
    return "%2E" if out == "." else ("%2E%2E" if out == ".." else out)


def unh5name(name: str) -> str:
    return name.replace("%2E", ".").replace("%2F", "/").replace("%25", "%")


def is_stream_external(data_key: dict) -> bool:
    return str(data_key.get("external", "")).startswith("STREAM:")


def json_column(key: str, data_key: dict) -> Column:
    """The column of a key stored as JSON text (its values disagreed with the descriptor)."""
    return Column(key, np.dtype(object), (), (), None, dict(data_key), json=True)


def declared_shape(data_key: dict) -> tuple:
    return tuple(data_key.get("shape") or ())


def is_variable(data_key: dict) -> bool:
    """Whether the key's values differ in shape from event to event (None or -1 in its shape)."""
    return any(s is None or (isinstance(s, int) and s < 0) for s in declared_shape(data_key))


def declared_dtype(data_key: dict, sample: Any = None) -> np.dtype:
    """The numpy dtype a column has for users (what read() returns)."""
    dn = data_key.get("dtype_numpy")
    if dn:
        if isinstance(dn, list):
            return np.dtype([tuple(x) for x in dn])
        dt = np.dtype(dn)
        return np.dtype(object) if dt.kind in "US" else dt
    kind = data_key.get("dtype")
    if kind == "number":
        return np.dtype("float64")
    if kind == "integer":
        return np.dtype("int64")
    if kind == "boolean":
        return np.dtype("bool")
    if kind == "string":
        return np.dtype(object)
    if sample is not None:  # "array" without dtype_numpy: go by the first value
        arr = np.asarray(sample)
        if arr.dtype.kind in "USO":
            return np.dtype(object)
        if arr.dtype.kind == "i":
            return np.dtype("int64")
        return arr.dtype
    return np.dtype("float64")


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """How a user dtype is stored in HDF5 (text becomes variable-length UTF-8)."""
    return STR if dtype.kind in "USO" else dtype


def chunk_rows(row_shape: tuple, dtype: np.dtype) -> int:
    itemsize = 16 if dtype.kind == "O" else max(dtype.itemsize, 1)
    row_bytes = itemsize * int(np.prod(row_shape, dtype=np.int64))
    if row_bytes >= _WHOLE_ROW:
        return 1
    return int(min(_CHUNK_MAX_ROWS, max(1, _CHUNK_TARGET // max(row_bytes, 1))))


@dataclass(frozen=True)
class Segment:
    """The events of one descriptor: where they live in the file."""
    stream: str
    group: str                 # e.g. "streams/primary/0"
    descriptor: dict = field(hash=False, compare=False)
    n_events: int = 0

    @property
    def descriptor_uid(self) -> str:
        return self.descriptor["uid"]


@dataclass(frozen=True)
class Column:
    """What a column looks like before any byte is read."""
    key: str
    dtype: np.dtype            # what users get
    shape: tuple               # per event; None for a variable-length dimension
    dims: tuple                # per-event dimension names from the descriptor, or ()
    external: str | None       # None, "FILESTORE:", "STREAM:", ...
    data_key: dict = field(hash=False, compare=False, default_factory=dict)
    json: bool = False         # values that disagreed with the descriptor: JSON text per event

    @property
    def variable(self) -> bool:
        return any(s is None for s in self.shape)


def column_from_data_key(key: str, data_key: dict, sample: Any = None) -> Column:
    """The column a data key makes.

    A stream-external key (ophyd-async) declares its frames-per-event axis first:
    ``[1, H, W]`` per event is read as ``(H, W)`` per event and ``[1]`` as a scalar, as
    bluesky's TiledWriter reads them; ``[k, H, W]`` with ``k > 1`` stays ``(k, H, W)``.
    """
    shape = tuple(None if (s is None or (isinstance(s, int) and s < 0)) else int(s)
                  for s in declared_shape(data_key))
    ext = data_key.get("external") or None
    dims = tuple(data_key.get("dims") or ())
    if is_stream_external(data_key) and shape[:1] == (1,):
        if len(dims) == len(shape):
            dims = dims[1:]
        shape = shape[1:]
    return Column(key=key, dtype=declared_dtype(data_key, sample), shape=shape,
                  dims=dims, external=ext, data_key=dict(data_key))
