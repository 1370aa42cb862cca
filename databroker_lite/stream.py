"""Streams of a run as xarray Datasets, in memory (read) or lazy (to_dask)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import documents as _docs
from .column import ArrayColumn, _attrs, _dims
from .errors import ExternalDataError
from .lookup import select_fields
from .storage import Column, Segment
from .storage.handlers import (
    ExternalRef,
    load_external,
    remap_path,
    resource_location,
    uri_to_path,
)
from .storage.layout import column_from_data_key
from .storage.lazy import ExternalStack, LazyDataset
from .summaries import ColumnInfo, stream_html, stream_summary

if TYPE_CHECKING:
    import xarray as xr

    from .storage import RunReader


class RunLike(Protocol):
    """What a stream needs of its run (:class:`databroker_lite.Run`); a Protocol, so that
    this module does not import the module that imports it."""

    uid: str
    catalog: Any  # has .root_map
    _stamp: tuple[int, int]

    def _reader(self) -> RunReader: ...


def _da():
    """dask.array, imported on first lazy use (it costs ~1 s; read() and the CLI need none)."""
    import dask.array

    return dask.array


def _tokenize(*args: Any) -> str:
    from dask.base import tokenize

    return tokenize(*args)


def _xr():
    """xarray, imported on first use: listing, searching and packing never need it."""
    import xarray
    return xarray


_CHUNK_BYTES = 32 << 20  # dask chunk size of per-event arrays (frames), along time


def _load_blocks(refs: tuple | list, shape: tuple, key: str, run_uid: str,
                 dtype: str | None = None) -> np.ndarray:
    """One dask chunk of an external column: several events or one stream block.

    The block is cast to the declared ``dtype``, as read() does: dask trusts that
    every chunk has the dtype of the array.
    """
    parts = [load_external(r, shape, key, run_uid) for r in refs]
    if refs and refs[0].spec.startswith("stream:"):
        out = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    else:
        out = np.stack(parts) if parts else np.zeros((0, *shape))
    return out if dtype is None else out.astype(dtype, copy=False)


class Stream:
    """One stream of a run (``run.primary``): its events as columns.

    A finished run never changes, so what a build looks up (times, row counts, datum
    refs, the dask arrays themselves) is remembered with its reader and a second
    ``to_dask()`` reads nothing. A run still being written gets a new Stream on each ``run[name]``
    (see :class:`~databroker_lite.Run`), so it sees the events flushed since.
    """

    def __init__(self, run: RunLike, name: str) -> None:
        self.run = run
        self.name = name
        self._reader = run._reader()
        self.segments: list[Segment] = self._reader.stream_segments(name)
        # Kept with the reader, which the process keeps while the file is unchanged, so a
        # new Run of the same file (cat[uid] again) finds them too; per root_map, since
        # the datum refs hold root-mapped paths.
        root_map = tuple(sorted((getattr(run.catalog, "root_map", None) or {}).items()))
        memo = getattr(self._reader, "_memo", None)
        self._memo: dict[tuple, Any] = (
            memo.setdefault(("stream memo", name, run.uid, root_map), {})
            if self._reader.finished and isinstance(memo, dict) else {})
        self._columns: dict[str, ArrayColumn] = {}  # this object's, not the reader's: they hold it

    def _remember(self, key: tuple, make: Any) -> Any:
        """``make()``, kept for the next call when the run is finished."""
        if not self._reader.finished:
            return make()
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = make()
            return value

    def __repr__(self) -> str:
        return stream_summary(self.name, self.run.uid, len(self), self.fields())

    def __len__(self) -> int:
        return sum(self._rows(s) for s in self.segments)  # rows of stream_datum-only streams too

    @property
    def metadata(self) -> dict:
        """``{"descriptors": [...]}``, the descriptor documents of this stream."""
        return {"descriptors": [s.descriptor for s in self.segments], "stream_name": self.name}

    @property
    def descriptors(self) -> list[dict]:
        return [s.descriptor for s in self.segments]

    def fields(self) -> list[str]:
        return list(self._reader.columns(self.name))

    # --- one column as an array ---------------------------------------------
    def __getitem__(self, key: str) -> ArrayColumn:
        """One data key as an :class:`~databroker_lite.ArrayColumn`: ``stream["img"][3]``
        reads event 3's frame straight from its file, no dask or xarray involved."""
        got = self._columns.get(key) if isinstance(key, str) else None
        if got is not None:  # a finished run's column: it keeps what its first read found
            return got
        col = self._select(key)[key] if isinstance(key, str) else None
        if col is None:
            raise TypeError(f"look up a column by its data key (str), not {type(key).__name__}")
        got = ArrayColumn(self, key, col)
        if self._reader.finished:
            self._columns[key] = got
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._reader.columns(self.name)

    # --- reading -----------------------------------------------------------
    def read(self, fields: Iterable[str] | str | None = None) -> xr.Dataset:
        """All events of the stream in memory, one data variable per data key."""
        return self._build(fields, lazy=False)

    def to_dask(self, fields: Iterable[str] | str | None = None) -> xr.Dataset:
        """The same Dataset backed by dask arrays; nothing bulk is read until computed."""
        return self._build(fields, lazy=True)

    def _select(self, fields: Iterable[str] | str | None) -> dict[str, Column]:
        cols = self._reader.columns(self.name)
        chosen = select_fields(fields, list(cols), self.name, self.run.uid)
        return cols if chosen is None else {f: cols[f] for f in chosen}

    def _times(self) -> np.ndarray:
        """The events' times (a copy: xarray hands the array to the user)."""
        return self._remember(("times",), self._read_times).copy()

    def _read_times(self) -> np.ndarray:
        parts = []
        for seg in self.segments:
            t = self._reader.read_events(seg, "time")
            if not len(t) and self._stream_rows(seg):
                t = np.full(self._stream_rows(seg), np.nan)
            parts.append(t)
        return _in_order(np.concatenate(parts) if parts else np.zeros(0), self._order())

    def _order(self) -> np.ndarray | None:
        """Where each row, in acquisition order, is among the segments' rows one after
        another; None when they already are in that order (one descriptor, or descriptors
        whose events did not interleave)."""
        return self._remember(("order",), self._find_order)

    def _find_order(self) -> np.ndarray | None:
        if len(self.segments) < 2:
            return None
        parts = []
        for seg in self.segments:
            if self._rows(seg) != self._reader.n_events(seg):
                return None  # rows of stream_datum without events: no document order per row
            parts.append(self._reader.read_events(seg, "doc_index"))
        idx = np.concatenate(parts)
        if len(idx) < 2 or bool(np.all(idx[1:] > idx[:-1])):
            return None
        return np.argsort(idx, kind="stable")

    def _build(self, fields: Any, lazy: bool) -> xr.Dataset:
        cols = self._select(fields)
        times = self._times()
        data_vars = {}
        for key, col in cols.items():
            if lazy:  # dask arrays never change: one per key serves every build
                arr = self._remember(("lazy", key), lambda col=col: self._lazy_column(col))
            else:
                pieces = [self._segment_column(seg, col, lazy) for seg in self.segments]
                arr = _in_order(np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0],
                                self._order())
            # fastpath: xarray would turn a None kept as it came into NaN; and for plain
            # numpy numbers and text it has nothing to convert, while its checks import
            # dask (~0.4 s) on a process's first read
            data_vars[key] = _xr().Variable(_dims(col), arr, attrs=_attrs(col),
                                            fastpath=col.json or _plain_numpy(arr))
        return _dataset(data_vars, times, {"stream_name": self.name, "uid": self.run.uid})

    def _lazy_column(self, col: Column):
        """One key over every segment, as one dask array."""
        pieces = [self._segment_column(seg, col, True) for seg in self.segments]
        arr = _in_order(_da().concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0],
                        self._order())
        if _is_text(col):
            # dask assembles chunks into an array of the FIRST chunk's dtype, so
            # '<U3' then '<U4' chunks would truncate: keep str objects per chunk and
            # turn them into one '<U' array in a single final task (text is small).
            arr = arr.rechunk(-1).map_blocks(_text_block, dtype=np.dtype("U1"))
        return arr

    def _rows(self, seg: Segment) -> int:
        n = self._reader.n_events(seg)
        return n if n else self._remember(("rows", seg.group), lambda: self._stream_rows(seg))

    def _stream_rows(self, seg: Segment) -> int:
        sd = [d for _, d, _ in self._reader.side_documents("stream_datum")
              if d["descriptor"] == seg.descriptor_uid]
        # seq_nums count from 1; an empty stream_datum (stop == start) covers no row
        return max((d["seq_nums"]["stop"] - 1 for d in sd
                    if d["seq_nums"]["stop"] > d["seq_nums"]["start"]), default=0)

    def _segment_column(self, seg: Segment, col: Column, lazy: bool):
        n = self._rows(seg)
        if col.key not in seg.descriptor["data_keys"]:
            return self._filler(n, col, lazy)
        if col.json:  # one object per event; a descriptor's external values are loaded first
            own = column_from_data_key(col.key, seg.descriptor["data_keys"][col.key])
            if own.external:
                return _per_event(self._external(seg, own, n, lazy), lazy)
        if col.external:
            return self._external(seg, col, n, lazy)
        if col.json:
            return self._json_column(seg, col, n, lazy)
        info = self._reader.dataset_info(seg, col.key, chunks=lazy)  # read(): no chunks needed
        text = _is_text(col)
        dtype = np.dtype("U") if text else col.dtype
        if info is None:  # a descriptor without events yet
            shape = (0, *(s or 0 for s in col.shape)) if not col.variable else (0,)
            z = np.zeros(shape, dtype=object if text and lazy else dtype)
            return _da().from_array(z, chunks=z.shape or (0,)) if lazy else z
        name, stored_shape, chunks = info
        shape = (n, *stored_shape[1:])
        if not lazy:
            out = self._reader.read_column(seg, col.key, slice(0, n))
            return out.astype(str) if text and out.size else (np.zeros(shape, "U1") if text else out)
        if text:  # str objects per chunk; _build makes them '<U' once assembled
            dtype = np.dtype(object)
        proxy = LazyDataset(self._reader.path, name, shape, dtype,
                            finished=self._reader.finished)
        token = _tokenize(self._reader.path, name, shape, self._reader.finished, self.run._stamp)
        return _from_arraylike(proxy, _dask_chunks(shape, chunks, dtype), f"{col.key}-{token}", dtype)

    def _json_column(self, seg: Segment, col: Column, n: int, lazy: bool):
        """A key whose values disagreed with the descriptor: one object per event, as it came.

        JSON lists of numbers (or of strings) become numpy arrays; anything else stays as
        it came. Segments of the stream that stored the key typed give their rows too.
        """
        info = self._reader.dataset_info(seg, col.key)
        if info is None:
            z = np.empty(0, dtype=object)
            return _da().from_array(z, chunks=(0,)) if lazy else z
        if not lazy:
            return _per_event(self._reader.read_column(seg, col.key, slice(0, n)), False)
        name, stored_shape, chunks = info
        sample = self._reader.read_column(seg, col.key, slice(0, 0))  # dtype and row shape only
        shape = (n, *sample.shape[1:])
        dtype = np.dtype(object) if sample.dtype.kind in "OU" else sample.dtype
        proxy = LazyDataset(self._reader.path, name, shape, dtype, finished=self._reader.finished)
        token = _tokenize(self._reader.path, name, shape, self._reader.finished, self.run._stamp)
        arr = _from_arraylike(proxy, _dask_chunks(shape, chunks, dtype) if len(shape) == 1
                              else (_dask_chunks(shape, chunks, dtype)[0], *shape[1:]),
                              f"{col.key}-json-{token}", dtype)
        return _per_event(arr, True)

    def _filler(self, n: int, col: Column, lazy: bool):
        """NaN (or "") for a key this segment's descriptor does not have."""
        shape = (n, *(s or 0 for s in col.shape))
        if col.dtype.kind in "fciub":
            value, dtype = np.nan, col.dtype if col.dtype.kind in "fc" else np.dtype("f8")
        else:
            value, dtype = "", np.dtype(object) if lazy else np.dtype("U1")
        if lazy:  # no memory until computed, chunked like the stored columns
            return _da().full(shape, value, dtype=dtype, chunks=_dask_chunks(shape, (1, *shape[1:]), dtype))
        return np.full(shape, value, dtype=dtype)

    # --- external data -------------------------------------------------------
    def _refs(self, seg: Segment, col: Column, n: int) -> list[ExternalRef]:
        """Where each of the segment's first ``n`` values of an external key lives."""
        return self._remember(("refs", seg.group, col.key, n), lambda: self._find_refs(seg, col, n))

    def _stack(self, seg: Segment, col: Column, n: int) -> ExternalStack:
        """The segment's values of a fixed-shape external key as one array-like (shared by
        ``to_dask()`` and :class:`~databroker_lite.ArrayColumn`, so its plan is worked out once)."""
        return self._remember(("stack", seg.group, col.key, n), lambda: ExternalStack(
            self._refs(seg, col, n), col.shape, col.dtype, col.key, self.run.uid))

    def _find_refs(self, seg: Segment, col: Column, n: int) -> list[ExternalRef]:
        reader, root_map, uid = self._reader, self.run.catalog.root_map, self.run.uid
        if str(col.external).startswith("STREAM:"):
            resources = {d["uid"]: d for _, d, _ in reader.side_documents("stream_resource")
                         if d.get("data_key") == col.key}
            refs = []
            for _, d, _ in reader.side_documents("stream_datum"):
                if d["descriptor"] != seg.descriptor_uid or d["stream_resource"] not in resources:
                    continue
                res = resources[d["stream_resource"]]
                path = remap_path(uri_to_path(res["uri"]), root_map)
                refs.append(ExternalRef(f"stream:{res['mimetype']}", path,
                                        json.dumps(res.get("parameters", {}), sort_keys=True),
                                        json.dumps([d["indices"]["start"], d["indices"]["stop"]]),
                                        res["uid"]))
            return refs
        datum_ids = reader.read_column(seg, col.key, slice(0, n))
        datums = {i: d for _, d, i in reader.side_documents("datum")}
        resources = {i: d for _, d, i in reader.side_documents("resource")}
        refs = []
        per_resource: dict[str, tuple] = {}  # spec, path, kwargs: worked out once per resource
        for did in datum_ids:
            datum = datums.get(did)
            if datum is None:
                raise ExternalDataError(f"run {uid}, key {col.key!r}: datum {did!r} is referenced "
                                        "by an event but was never inserted")
            where = per_resource.get(datum["resource"])
            if where is None:
                res = resources.get(datum["resource"])
                if res is None:
                    raise ExternalDataError(f"run {uid}, key {col.key!r}: datum {did!r} refers to "
                                            f"resource {datum['resource']!r}, which was never inserted")
                where = per_resource[datum["resource"]] = resource_location(res, root_map)
            refs.append(ExternalRef(*where, _docs.sorted_json(datum.get("datum_kwargs", {})),
                                    datum["resource"]))
        return refs

    def _external(self, seg: Segment, col: Column, n: int, lazy: bool):
        refs = self._refs(seg, col, n)
        shape = col.shape
        stream = str(col.external).startswith("STREAM:")
        uid = self.run.uid
        if not lazy:
            if not refs:
                return np.zeros((0, *(s or 0 for s in shape)), dtype=col.dtype)
            if stream or None in shape:
                return _load_blocks(refs, (None, *shape) if stream else shape, col.key, uid, col.dtype.str)
            return self._stack(seg, col, n)[:]  # one copy in memory
        # Name the graph by where the refs come from, not by hashing every ref (slow for
        # thousands of frames); the file's stamp changes whenever its datums could.
        token = _tokenize(self._reader.path, self.run._stamp, seg.group, col.key, shape,
                          sorted(self.run.catalog.root_map.items()))
        name = f"{col.key}-ext-{token}"
        dsk, row_chunks = {}, []
        zeros = (0,) * len(shape)
        if stream:
            for i, r in enumerate(refs):
                a, b = json.loads(r.datum_kwargs)
                dsk[(name, i, *zeros)] = (_load_blocks, (r,), (None, *shape), col.key, uid, col.dtype.str)
                row_chunks.append(b - a)
        elif None not in shape and refs:
            # One array-like over all frames: dask fuses x[i] into its read, so a frame
            # costs one frame while reductions get chunks of many frames.
            stack = self._stack(seg, col, n)
            frames = max(1, _CHUNK_BYTES // max(1, col.dtype.itemsize * int(np.prod(shape))))
            return _from_arraylike(stack, (frames, *shape), name, col.dtype)
        else:
            for i, r in enumerate(refs):
                dsk[(name, i, *zeros)] = (_load_blocks, (r,), shape, col.key, uid, col.dtype.str)
                row_chunks.append(1)
        if not row_chunks:
            zshape = (0, *(s or 0 for s in shape))  # explicit chunks: dask's "auto" divides by 0
            return _da().zeros(zshape, dtype=col.dtype, chunks=tuple((d,) for d in zshape))
        chunks = (tuple(row_chunks), *((s,) for s in shape))
        from dask.highlevelgraph import HighLevelGraph

        graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
        return _da().Array(graph, name, chunks, dtype=col.dtype)

    # --- timestamps and configuration ----------------------------------------
    @property
    def timestamps(self) -> xr.Dataset:
        """Per-key timestamps, one data variable per key, on the same ``time``."""
        cols = self._reader.columns(self.name)
        data = {}
        for key in cols:
            parts = [self._seg_timestamps(seg, key) for seg in self.segments]
            data[key] = ("time", _in_order(np.concatenate(parts) if parts else np.zeros(0), self._order()))
        return _xr().Dataset(data, coords={"time": ("time", self._times())})

    def _seg_timestamps(self, seg: Segment, key: str) -> np.ndarray:
        n = self._rows(seg)
        ts = (self._reader.read_timestamps(seg, key) if key in seg.descriptor["data_keys"]
              else np.zeros(0))
        # stream_datum rows without events have no per-key timestamps: NaN, one per row
        return ts if len(ts) == n else np.full(n, np.nan)

    @property
    def config(self) -> Mapping[str, xr.Dataset]:
        """Configuration readings by device: ``config["det"]`` is a Dataset with one row per
        descriptor (``config["det"].read()``, databroker's spelling, works too)."""
        from .configuration import config_datasets
        return config_datasets(self.descriptors)

    def _repr_html_(self) -> str:
        cols = self._reader.columns(self.name).values()
        return stream_html(self.name, len(self), [
            ColumnInfo(c.key, c.dtype, c.shape, c.external or "", c.data_key.get("units", ""))
            for c in cols])


def _from_arraylike(obj: Any, chunks: tuple, name: str, dtype: np.dtype):
    """A dask array of ``obj`` (an array-like that reads on ``__getitem__``): one low-level
    ``getter(obj, slices)`` task per chunk, the array-like inside each task.

    ``da.from_array`` makes a Blockwise layer plus a key holding ``obj``, which every
    compute then materialises, culls and fuses; this graph is already what that work
    ends with. dask still fuses ``x[k]`` into the read of a chunk (getter + getitem),
    so one frame reads one frame.
    """
    import itertools

    from dask.array.core import getter, normalize_chunks
    from dask.highlevelgraph import HighLevelGraph
    try:
        from dask._task_spec import DataNode, Task
    except ImportError:  # a dask without task objects: its own from_array
        return _da().from_array(obj, chunks=chunks, asarray=False, name=name,
                                meta=np.zeros((0,) * len(obj.shape), dtype=dtype))

    chunks = normalize_chunks(chunks, obj.shape, dtype=dtype)
    edges = [np.cumsum((0, *c)).tolist() for c in chunks]
    node = DataNode(None, obj)
    dsk = {}
    for idx in itertools.product(*(range(len(c)) for c in chunks)):
        key = (name, *idx)
        box = tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, idx))
        dsk[key] = Task(key, getter, node, DataNode(None, box))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return _da().Array(graph, name, chunks, meta=np.zeros((0,) * len(chunks), dtype=dtype))


def _dataset(data_vars: dict[str, Any], times: np.ndarray, attrs: dict) -> xr.Dataset:
    """``xr.Dataset(data_vars, coords={"time": ("time", times)}, attrs=attrs)``, the same
    Dataset built directly when the variables plainly fit: xarray's constructor (merging,
    alignment, index building) costs ~0.2 ms, most of a small read, for nothing to do here.
    Anything unusual (a key named ``time``, dimension sizes that disagree, another xarray)
    goes through the constructor, which also raises its errors."""
    xr = _xr()
    sizes = {"time": len(times)}
    plain = "time" not in data_vars
    for v in data_vars.values():
        if not plain:
            break
        plain = v.dims[:1] == ("time",) and "time" not in v.dims[1:]
        for d, n in zip(v.dims, v.shape):
            plain = plain and sizes.setdefault(d, n) == n
    if plain:
        try:
            from xarray.core.indexes import PandasIndex

            index = PandasIndex(_pd().Index(times, name="time"), "time")
            coords = index.create_variables({"time": xr.Variable(("time",), times,
                                                                 fastpath=_plain_numpy(times))})
            return xr.Dataset._construct_direct({**data_vars, **coords}, {"time"}, sizes, attrs,
                                                indexes={"time": index})
        except (ImportError, AttributeError, TypeError):  # an xarray without these internals
            pass
    return xr.Dataset(data_vars, coords={"time": ("time", times)}, attrs=attrs)


def _plain_numpy(arr: Any) -> bool:
    """A numpy array xarray keeps as it is (numbers or fixed-width text)."""
    return type(arr) is np.ndarray and arr.dtype.kind in "biufcUS"


def _pd():
    import pandas
    return pandas


def _is_text(col: Column) -> bool:
    return col.dtype.kind == "O" and not col.variable and not col.json


def _json_value(v: Any) -> Any:
    """A value kept as JSON, as users get it: lists of numbers or of strings as numpy arrays."""
    if not isinstance(v, list):
        return v
    try:
        a = np.asarray(v)
    except (ValueError, TypeError, OverflowError):  # ragged
        return v
    if a.dtype.kind in "biufc":
        return a
    if a.dtype.kind == "U" and all(isinstance(x, str) for x in np.ravel(np.asarray(v, dtype=object))):
        return a
    return v


def _in_order(arr: Any, order: np.ndarray | None) -> Any:
    """The rows of ``arr`` (numpy or dask, segments one after another) in acquisition order."""
    return arr if order is None else arr[order]


def _per_event(arr: Any, lazy: bool) -> Any:
    """Rows of ``arr`` (numpy or dask) as one object per event, as a JSON column has them."""
    if not lazy:
        return _object_rows(arr)
    return arr.map_blocks(_object_rows, drop_axis=list(range(1, arr.ndim)) or None,
                          dtype=object, meta=np.empty(0, dtype=object))


def _object_rows(block: np.ndarray) -> np.ndarray:
    """One object per event (row) of ``block``."""
    out = np.empty(len(block), dtype=object)
    for i in range(len(block)):
        out[i] = _json_value(block[i])
    return out


def _text_block(block: np.ndarray) -> np.ndarray:
    """str objects -> a '<U' array, as read() gives them (at least '<U1')."""
    return block.astype(str) if block.size else np.zeros(block.shape, dtype="U1")


def _dask_chunks(shape: tuple, h5chunks: tuple | None, dtype: np.dtype) -> tuple:
    """Dask chunks of whole HDF5 chunks, merged along time.

    One task per HDF5 chunk would make graphs of thousands of tasks and pay dask's
    per-task cost per frame in a reduction, so HDF5 chunks are merged along time up to
    ~16 MB (one value per event) or ~32 MB (arrays per event; the fastest for a mean over
    time of 512 x 512 frames among 8-128 MB). Reading one frame still
    reads one HDF5 chunk: dask fuses ``x[i]`` into the read of the chunk.
    """
    if not h5chunks or not shape:
        return shape or ()
    chunks = list(h5chunks)
    item = 16 if dtype.kind in "OU" else dtype.itemsize
    nbytes = item * int(np.prod(h5chunks))
    target = (16 << 20) if len(shape) == 1 else _CHUNK_BYTES
    chunks[0] = h5chunks[0] * max(1, target // max(nbytes, 1))
    chunks[0] = max(1, min(chunks[0], shape[0] or 1))
    return tuple(min(c, s) if s else 1 for c, s in zip(chunks, shape))



