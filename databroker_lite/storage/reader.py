"""Reading a run file: metadata eagerly (small), bulk data only on request."""
from __future__ import annotations

import contextlib
import heapq
import os
import stat
import warnings
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from .. import documents as _docs
from ..errors import CorruptRunFile, DescriptorMismatchWarning, StreamNotFound, UnsupportedLayout
from .files import (
    FILE_CACHE,
    JOURNAL_SUFFIX,
    cached_h5,
    find_dataset,
    known_dataset,
    known_datasets,
    open_h5,
)
from .layout import (
    LAYOUT_ATTR,
    LAYOUT_VERSION,
    Column,
    Segment,
    column_from_data_key,
    h5name,
    is_stream_external,
    json_column,
    unh5name,
)
from .side import side_documents_of


class RunSummary:
    """Just what the index needs from a run file: start, stop and stream names."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        head = _fast_head(self.path)
        if head is None:  # the careful way: open_h5 waits for locks and undoes a journal
            try:
                with open_h5(self.path, "r") as f:
                    head = (*_read_head(f.id, self.path), _stream_names(f.id))
            except (CorruptRunFile, FileNotFoundError):
                raise
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py: RuntimeError too
                raise CorruptRunFile(f"{self.path}: damaged run file ({type(exc).__name__}: {exc})") from exc
        self.start, self.stop, self.uid, self.stream_names = head


_VLEN_TEXT = np.dtype(object)
_LAYOUT_NAME = LAYOUT_ATTR.encode()


def _fast_head(path: str) -> tuple[dict, dict | None, str, list[str]] | None:
    """:func:`_read_head` and the stream names of a file opened with ``h5f.open`` (no lock
    retries, no journal handling: cheaper than :func:`open_h5`, which matters when an index
    reads 100,000 files), or None for anything unusual (not a plain file, locked, a writer's
    journal, damage), which the careful path then reads or refuses as it always has."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    except Exception:  # noqa: BLE001 - the careful path says what is wrong
        return None
    try:
        if os.path.exists(path + JOURNAL_SUFFIX):
            return None  # a dead writer's journal: open_h5 undoes it
        return (*_read_head(fid, path), _stream_names(fid))
    except Exception:  # noqa: BLE001 - the careful path says what is wrong
        return None
    finally:
        fid.close()


def _read_head(fid: Any, path: str) -> tuple[dict, dict | None, str]:
    """(start, stop or None, uid) of an open run file (its low-level ``FileID``: an
    ``h5py.File``'s ``.id`` or ``h5f.open``'s), its layout checked. RunSummary and RunReader
    both read it so; low-level calls (a third of the cost of the high-level ones), h5py's
    high-level ones only for what the writer does not write."""
    _check_layout(fid, path)
    start = _docs.loads(_read_scalar(fid, b"start"))
    try:
        stop_text = _read_scalar(fid, b"stop")
    except KeyError:  # no stop document (yet)
        stop = None
    else:
        stop = _docs.loads(stop_text)
    if not isinstance(start, dict) or not isinstance(start.get("uid"), str):
        raise CorruptRunFile(f"{path}: its start document has no uid")
    return start, stop, start["uid"]


def _stream_names(fid: Any) -> list[str]:
    names: list[bytes] = []
    # links.iterate: half the cost of iterating the GroupID (which looks up each index)
    group = h5py.h5g.open(fid, b"streams")  # held: iterate needs it alive
    group.links.iterate(names.append, idx_type=h5py.h5.INDEX_NAME, order=h5py.h5.ITER_INC)
    return [unh5name(n.decode()) for n in names]


def _check_layout(fid: Any, path: str) -> None:
    """CorruptRunFile unless the root group's layout attribute is a version number, and
    UnsupportedLayout if it is newer than this package reads."""
    try:
        attr = h5py.h5a.open(fid, _LAYOUT_NAME)
    except KeyError:
        raise CorruptRunFile(f"{path}: not a databroker_lite run file "
                             f"(no {LAYOUT_ATTR!r} attribute on the root group)") from None
    if attr.dtype.kind in "iu" and attr.get_space().get_simple_extent_type() == h5py.h5s.SCALAR:
        buf = np.zeros((), attr.dtype)
        attr.read(buf)
        version = int(buf)
    else:  # not what the writer writes ("1", say): h5py's way; int() refuses what is no number
        version = int(h5py.Group(h5py.h5g.open(fid, b"/")).attrs[LAYOUT_ATTR])
    if version > LAYOUT_VERSION:
        raise UnsupportedLayout(f"{path}: layout version {version} is newer than this "
                                f"databroker_lite reads ({LAYOUT_VERSION}); upgrade it")


class RunReader:
    """One run file, opened read-only.

    Finished runs (with a stop document) are read through the per-process file
    cache; runs still being written are opened for each read and closed again, so
    the writer can take its lock between flushes.
    """

    def __init__(self, path: str | os.PathLike,
                 head: tuple[dict, dict | None] | None = None) -> None:
        """``head``: the run's (start, stop) as the catalog's index read them from this
        file as it is now (same mtime and size); they are then not read again."""
        self.path = os.fspath(path)
        self._head = head
        self._side: dict[str, list[tuple[int, dict, str]]] | None = None
        self._memo: dict[tuple, Any] = {}
        try:
            # Opened once, through the file cache: a finished run keeps this handle for
            # its reads; one still being written gives it back so the writer can lock.
            if os.path.exists(self.path + JOURNAL_SUFFIX):
                FILE_CACHE.forget(self.path)  # open_h5 deals with it (undo, or set aside)
            f = FILE_CACHE.get(self.path)
            try:
                self._load(f)
            finally:
                if not getattr(self, "finished", False):
                    FILE_CACHE.forget(self.path)
        except (CorruptRunFile, FileNotFoundError):
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py: RuntimeError too
            FILE_CACHE.forget(self.path)
            raise CorruptRunFile(f"{self.path}: damaged run file ({type(exc).__name__}: {exc})") from exc

    @contextlib.contextmanager
    def _open_fresh(self):
        f = open_h5(self.path, "r")
        try:
            yield f
        finally:
            f.close()

    @contextlib.contextmanager
    def h5(self):
        """The open file: cached when the run is finished, else opened for this use."""
        if self.finished:
            yield cached_h5(self.path)
        else:
            with self._open_fresh() as f:
                yield f

    def _load(self, f: h5py.File) -> None:
        head, self._head = self._head, None
        if head is not None and isinstance(head[0], dict) and isinstance(head[0].get("uid"), str):
            _check_layout(f.id, self.path)  # the documents are the index's: ~0.1 ms less per run
            self.start, self.stop = head
            self.uid = self.start["uid"]
        else:
            self.start, self.stop, self.uid = _read_head(f.id, self.path)
        self.finished = self.stop is not None
        self.segments: dict[str, list[Segment]] = {}
        # Segments are listed with h5py's low-level calls (a high-level Group or Dataset
        # costs ~20 us to build, and a run of one stream used to build ~60). Each column's
        # rows are checked against doc_index when it is read (_dataset), not here.
        streams = h5py.h5g.open(f.id, b"streams")
        for sname in _children(streams):
            sg = h5py.h5g.open(streams, sname)
            segs = []
            for i in sorted(_children(sg), key=int):
                g = h5py.h5g.open(sg, i)
                desc = _docs.loads(_read_scalar(g, b"descriptor"))
                n = h5py.h5d.open(g, b"doc_index").shape[0] if g.links.exists(b"doc_index") else 0
                at = h5py.h5a.open(g, b"doc_index")
                idx = np.zeros(at.shape, dtype=at.dtype)
                at.read(idx)
                name = unh5name(sname.decode())
                group = f"streams/{sname.decode()}/{i.decode()}"
                segs.append((int(idx), Segment(name, group, desc, n)))
            self.segments[unh5name(sname.decode())] = [s for _, s in sorted(segs, key=lambda t: t[0])]

    def _dataset(self, f: h5py.File, name: str, seg: Segment | None = None) -> Any:
        """``f[name]``, remembered with the open handle ``f`` (:func:`~.files.known_dataset`);
        with ``seg``, its rows are checked against the segment's event count first."""
        return known_dataset(f, name, self.path, CorruptRunFile,
                             None if seg is None else lambda ds: self._check_rows(name, ds.shape, seg))

    def _check_rows(self, name: str, shape: tuple, seg: Segment) -> None:
        """CorruptRunFile unless dataset ``name`` (of ``shape``) has a row per event of ``seg``."""
        if shape[:1] < (seg.n_events,):
            rows = shape[0] if shape else 0
            raise CorruptRunFile(f"{self.path}: /{name} has {rows} rows where "
                                 f"/{seg.group}/doc_index counts {seg.n_events}: the file is damaged")

    def _dataset_id(self, f: h5py.File, name: str, seg: Segment) -> tuple[Any, tuple, np.dtype]:
        """(low-level dataset, shape, dtype) of ``name``, kept with the handle ``f`` like
        :meth:`_dataset`; its rows checked against the segment's event count when first
        looked up (a DatasetID's ``shape`` and ``dtype`` cost ~4 us each to ask)."""
        known = known_datasets(f)
        hit = known.get(("id", name))
        if hit is None:
            try:
                dsid = h5py.h5d.open(f.id, name.encode())
            except KeyError:
                raise CorruptRunFile(f"{self.path}: dataset {name!r} is missing") from None
            shape = dsid.shape
            self._check_rows(name, shape, seg)
            hit = known[("id", name)] = (dsid, shape, dsid.dtype)
        return hit

    def _read_plain(self, f: h5py.File, name: str, seg: Segment, sel: slice) -> np.ndarray | None:
        """Rows ``sel`` of a dataset of plain numbers, read with low-level calls (no
        high-level ``Dataset`` built); None for anything else (text, ragged rows)."""
        dsid, shape, dtype = self._dataset_id(f, name, seg)
        if sel.step != 1 or not shape or not _plain_numbers(dtype):
            return None
        try:
            return _read_rows(dsid, shape, dtype, sel)
        except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError for some damage
            raise CorruptRunFile(f"{self.path}: cannot read {name!r} ({exc})") from exc

    # --- streams ----------------------------------------------------------
    @property
    def stream_names(self) -> list[str]:
        return list(self.segments)

    def stream_segments(self, stream: str) -> list[Segment]:
        try:
            return self.segments[stream]
        except KeyError:
            raise StreamNotFound(f"run {self.uid} has no stream {stream!r}; it has "
                                 f"{sorted(self.segments)}") from None

    def columns(self, stream: str) -> dict[str, Column]:
        """The columns of a stream, merged over its descriptors."""
        cached = self._memo.get(("columns", stream))
        if cached is not None:
            return dict(cached)
        try:
            out = self._columns(stream)
        except (OSError, RuntimeError, ValueError) as exc:  # h5py: RuntimeError for some damage
            raise CorruptRunFile(f"{self.path}: damaged run file ({type(exc).__name__}: {exc})") from exc
        if self.finished:  # a finished run never changes: remember what we looked up
            self._memo[("columns", stream)] = dict(out)
        return out

    def _columns(self, stream: str) -> dict[str, Column]:
        out: dict[str, Column] = {}
        for seg in self.stream_segments(stream):
            with self.h5() as f:
                # low-level look-ups: a high-level Dataset per key was most of this
                data = h5py.h5g.open(f.id, f"{seg.group}/data".encode()) \
                    if f.id.links.exists(f"{seg.group}/data".encode()) else None
                known = known_datasets(f)
                for key, dk in seg.descriptor["data_keys"].items():
                    name = f"{seg.group}/data/{h5name(key)}"
                    stored = _open_dataset(data, h5name(key).encode())
                    dt = None if stored is None else stored.dtype  # an h5py object each time asked
                    if stored is None and seg.n_events and not is_stream_external(dk):
                        # every event stores every key: a segment with events and no dataset
                        # for one is damaged (a flipped bit in the group's B-tree, say)
                        raise CorruptRunFile(f"{self.path}: /{name} is missing although "
                                             f"/{seg.group} holds {seg.n_events} events: "
                                             "the file is damaged")
                    if self.finished:  # dataset_info's answer, found on the way
                        shape = None if stored is None else stored.shape
                        # chunks only when asked (dataset_info): a creation property
                        # list per column was a tenth of a small read
                        self._memo[("info", seg.group, key)] = (
                            None if stored is None else (name, shape, _UNKNOWN))
                        if shape and shape[0] >= seg.n_events:  # rows checked: read_column's
                            known.setdefault(("id", name), (stored, shape, dt))
                    col = column_from_data_key(key, dk)
                    if stored is not None and not col.external:
                        col = _stored_dtype(col, stored, dt)
                    prev = out.get(key)
                    if prev is not None and (prev.json or col.json):
                        if col.json and not prev.json:  # one descriptor's values are JSON: all are
                            out[key] = col
                        continue
                    if prev is not None and (prev.shape != col.shape or not _same_kind(prev, col)):
                        # a detector reconfigured mid-run (ROI, binning): one array per event
                        out[key] = json_column(key, prev.data_key)
                        _warn_descriptors_differ(self.uid, stream, key, prev, col)
                        continue
                    if prev is not None and prev.dtype != col.dtype:  # int64 then float64, say
                        out[key] = Column(key, np.result_type(prev.dtype, col.dtype), prev.shape,
                                          prev.dims, prev.external, prev.data_key)
                    out.setdefault(key, col)
        return out

    def n_events(self, seg: Segment) -> int:
        # The count when this reader opened the file, also for a run still being written:
        # every column read through one reader is cut at the same row, so a read never
        # comes out ragged while flushes land (a new reader sees the new rows).
        return seg.n_events

    def dataset_info(self, seg: Segment, key: str, chunks: bool = True
                     ) -> tuple[str, tuple, tuple | None] | None:
        """(dataset path, stored shape, HDF5 chunks) of an internal column, or None.

        With ``chunks=False`` the chunks may be left out (None): finding them costs a
        dataset creation property list, and a plain read does not need them."""
        memo_key = ("info", seg.group, key)
        if memo_key in self._memo:
            info = self._memo[memo_key]
            if info is None or info[2] is not _UNKNOWN:
                return info
            if not chunks:
                return (info[0], info[1], None)
            with self.h5() as f:
                hit = known_datasets(f).get(("id", info[0]))
                info = (info[0], info[1], _chunks(hit[0] if hit else h5py.h5d.open(f.id, info[0].encode())))
            self._memo[memo_key] = info
            return info
        name = f"{seg.group}/data/{h5name(key)}"
        with self.h5() as f:
            ds = f.get(name)
            info = None if ds is None else (name, ds.shape, ds.chunks)
        if self.finished:
            self._memo[memo_key] = info
        return info

    def stored_as_json(self, seg: Segment, key: str) -> bool:
        """Whether this segment keeps ``key`` as JSON text (its values disagreed with the descriptor)."""
        memo_key = ("json", seg.group, key)
        if memo_key in self._memo:
            return self._memo[memo_key]
        with self.h5() as f:
            ds = f.get(f"{seg.group}/data/{h5name(key)}")
            out = ds is not None and ds.attrs.get("dtype") == "json"
        if self.finished:
            self._memo[memo_key] = out
        return out

    def read_events(self, seg: Segment, field: str, sel: slice = slice(None)) -> np.ndarray:
        """time, seq_num, uid or doc_index of a segment's events."""
        n = self.n_events(seg)
        sel = slice(*sel.indices(n))
        name = f"{seg.group}/{field}"
        with self.h5() as f:
            if not n and name not in f:
                return np.zeros(0, dtype="f8" if field == "time" else "i8")
            if field != "uid":
                out = self._read_plain(f, name, seg, sel)
                if out is not None:
                    return out
            ds = self._dataset(f, name, seg)
            return ds.asstr()[sel].astype(object) if field == "uid" else ds[sel]

    def read_column(self, seg: Segment, key: str, sel: slice = slice(None)) -> np.ndarray:
        """The stored values of one column (datum ids for external keys)."""
        n = self.n_events(seg)
        sel = slice(*sel.indices(n))
        name = f"{seg.group}/data/{h5name(key)}"
        if self.finished:  # the cached handle, without a context manager: the common case
            return self._read_stored(cached_h5(self.path), name, seg, sel)
        with self.h5() as f:
            return self._read_stored(f, name, seg, sel)

    def _read_stored(self, f: h5py.File, name: str, seg: Segment, sel: slice) -> np.ndarray:
        out = self._read_plain(f, name, seg, sel)  # plain numbers, low-level; else h5py's way
        return out if out is not None else read_dataset(f, name, sel, self.path,
                                                        ds=self._dataset(f, name, seg))

    def read_timestamps(self, seg: Segment, key: str, sel: slice = slice(None)) -> np.ndarray:
        n = self.n_events(seg)
        sel = slice(*sel.indices(n))
        with self.h5() as f:
            name = f"{seg.group}/timestamps/{h5name(key)}"
            if name not in f:
                return np.full(len(range(n)[sel]), np.nan)
            return self._dataset(f, name, seg)[sel]

    def read_filled(self, seg: Segment, sel: slice = slice(None)) -> dict[str, np.ndarray]:
        n = self.n_events(seg)
        sel = slice(*sel.indices(n))
        with self.h5() as f:
            g = f[seg.group]
            if "filled" not in g:
                return {}
            out = {}
            for ds in g["filled"].values():
                if ds.shape[0] < n:
                    raise CorruptRunFile(f"{self.path}: {ds.name} has {ds.shape[0]} rows where "
                                         f"/{seg.group}/doc_index counts {n}: the file is damaged")
                out[ds.attrs["key"]] = ds[sel]
            return out

    # --- side documents ----------------------------------------------------
    def side_documents(self, name: str) -> list[tuple[int, dict, str]]:
        """(doc_index, document, id) of every resource, datum, stream_resource or stream_datum."""
        if self._side is None or not self.finished:
            with self.h5() as f:
                self._side = side_documents_of(f)
        return self._side.get(name, [])

    # --- documents -------------------------------------------------------
    def documents(self) -> Iterator[tuple[str, dict]]:
        """Every document, in the order it was inserted; pages come out as singles."""
        yield "start", self.start
        streams: list[Iterator[tuple[int, str, dict]]] = []
        for kind in ("resource", "datum", "stream_resource", "stream_datum"):
            streams.append(iter([(i, kind, d) for i, d, _ in self.side_documents(kind)]))
        for segs in self.segments.values():
            for seg in segs:
                streams.append(iter([(self._seg_index(seg), "descriptor", seg.descriptor)]))
                streams.append(self._iter_events(seg))
        for _, name, doc in heapq.merge(*streams, key=lambda t: t[0]):
            yield name, doc
        if self.stop is not None:
            yield "stop", self.stop

    def _seg_index(self, seg: Segment) -> int:
        with self.h5() as f:
            return int(f[seg.group].attrs["doc_index"])

    def _iter_events(self, seg: Segment, block: int = 4096) -> Iterator[tuple[int, str, dict]]:
        n = self.n_events(seg)
        keys = [k for k, dk in seg.descriptor["data_keys"].items() if not is_stream_external(dk)]
        desc_uid = seg.descriptor["uid"]
        for a in range(0, n, block):
            sl = slice(a, min(a + block, n))
            times = self.read_events(seg, "time", sl)
            seqs = self.read_events(seg, "seq_num", sl)
            uids = self.read_events(seg, "uid", sl)
            idx = self.read_events(seg, "doc_index", sl)
            data = {k: self.read_column(seg, k, sl) for k in keys}
            ts = {k: self.read_timestamps(seg, k, sl) for k in keys}
            filled = self.read_filled(seg, sl)  # this block's rows, not the whole column
            no_filled = self._no_filled(seg, sl)
            for j in range(len(times)):
                ev = {
                    "uid": uids[j],
                    "time": float(times[j]),
                    "seq_num": int(seqs[j]),
                    "descriptor": desc_uid,
                    "data": {k: _plain(data[k][j]) for k in keys},
                    "timestamps": {k: float(ts[k][j]) for k in keys},
                }
                if no_filled is None or not no_filled[j]:  # an event sent without 'filled' has none
                    ev["filled"] = {k: bool(v[j]) for k, v in filled.items() if v[j] >= 0}
                yield int(idx[j]), "event", ev

    def _no_filled(self, seg: Segment, sel: slice) -> np.ndarray | None:
        with self.h5() as f:
            g = f[seg.group]
            return g["no_filled"][sel] if "no_filled" in g else None


def _same_kind(a: Column, b: Column) -> bool:
    """Whether two descriptors' columns of one key concatenate as one typed array: both
    plain numbers (numpy promotes), or both the same other dtype (text, say), alike external."""
    if (a.external is None) != (b.external is None):
        return False
    if a.dtype == b.dtype:
        return True
    return _plain_numbers(a.dtype) and _plain_numbers(b.dtype) and a.external is None


def _warn_descriptors_differ(uid: str, stream: str, key: str, a: Column, b: Column) -> None:
    warnings.warn(f"run {uid}, stream {stream!r}: key {key!r} is {a.dtype} of shape {list(a.shape)} "
                  f"in one descriptor and {b.dtype} of shape {list(b.shape)} in another (a "
                  "detector reconfigured mid-run, say); it is read as one array per event",
                  DescriptorMismatchWarning, stacklevel=6)


_UNKNOWN: Any = object()  # chunks of a column not looked up yet (see dataset_info)


def _children(gid: Any) -> list[bytes]:
    """Link names of a low-level group, in HDF5's order."""
    names: list[bytes] = []
    gid.links.iterate(names.append)
    return names


def _read_scalar(gid: Any, name: bytes) -> Any:
    """A scalar string dataset (a JSON document) of a low-level group, as bytes.

    Read with h5py's low-level calls into a one-element buffer (without asking the
    dataset's dtype, ~4 us): a high-level ``Dataset`` costs ~20 us to build and
    ``f[name][()]`` ~70 us (a run reads three documents). KeyError if there is none."""
    dsid = h5py.h5d.open(gid, name)
    if dsid.get_space().get_simple_extent_type() == h5py.h5s.SCALAR:  # (a larger one must
        buf = np.empty((), _VLEN_TEXT)                                  # not meet this buffer)
        try:
            dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, buf)
        except OSError:  # not variable-length text
            pass
        else:
            if isinstance(buf[()], bytes):
                return buf[()]
    return h5py.Dataset(dsid)[()]  # not what the writer writes: let h5py sort it out


def _open_dataset(gid: Any, name: bytes) -> Any:
    """The low-level dataset ``name`` of a low-level group, or None if it has no such link."""
    if gid is None or not gid.links.exists(name):
        return None
    return h5py.h5d.open(gid, name)


def _chunks(dsid: Any) -> tuple | None:
    """A low-level dataset's HDF5 chunk shape (None if contiguous), as ``Dataset.chunks``."""
    plist = dsid.get_create_plist()
    return plist.get_chunk() if plist.get_layout() == h5py.h5d.CHUNKED else None


def _plain_numbers(dt: np.dtype) -> bool:
    return dt.kind in "biufc" and dt.fields is None


def _read_rows(dsid: Any, shape: tuple, dtype: np.dtype, sel: slice) -> np.ndarray:
    """Rows ``sel`` (step 1, within its rows) of a low-level dataset of plain numbers, read
    straight into a new numpy array (what ``Dataset[sel]`` gives, without building one)."""
    a, b = sel.start, max(sel.start, sel.stop)
    out = np.empty((b - a, *shape[1:]), dtype=dtype)
    if not out.size:
        return out
    mtype = _mem_type(dtype)
    if a == 0 and b == shape[0]:
        dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out, mtype)
    else:
        space = dsid.get_space()
        space.select_hyperslab((a,) + (0,) * (len(shape) - 1), out.shape)
        dsid.read(h5py.h5s.create_simple(out.shape), space, out, mtype)
    return out


_MEM_TYPES: dict[np.dtype, Any] = {}


def _mem_type(dt: np.dtype) -> Any:
    """The HDF5 memory type h5py would build for ``dt`` on every read (~5 us, most of
    reading 50 numbers), built once per dtype; None (h5py's own) for anything but plain
    integers, floats and complex numbers without h5py metadata (enums, bools)."""
    if dt.metadata is not None or dt.kind not in "iufc":
        return None
    mt = _MEM_TYPES.get(dt)
    if mt is None:
        mt = _MEM_TYPES[dt] = h5py.h5t.py_create(dt)
    return mt


def _stored_dtype(col: Column, stored: Any, dt: np.dtype | None = None) -> Column:
    """The column with the dtype its values were stored with (what read() gives back).

    ``stored`` is a low-level dataset. Plain numbers are stored in the dtype users get:
    the dataset's own dtype says it, without reading the ``dtype`` attribute (an HDF5
    attribute read per column per run was a tenth of a loop over runs). Text and ragged
    values keep the attribute's word. ``dt``: the dataset's dtype if already asked.
    """
    dt = stored.dtype if dt is None else dt
    if _plain_numbers(dt):
        if dt == col.dtype:
            return col
        return Column(col.key, dt, col.shape, col.dims, col.external, col.data_key)
    stored = h5py.Dataset(stored)
    if "dtype" not in stored.attrs:
        return col
    at = stored.attrs["dtype"]
    if at == "json":
        return json_column(col.key, col.data_key)
    return Column(col.key, np.dtype(object) if at == "str" else np.dtype(at),
                  col.shape, col.dims, col.external, col.data_key)


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_dataset(f: h5py.File, name: str, sel: Any, path: str, ds: Any = None) -> np.ndarray:
    """Read ``f[name][sel]`` as users see it: text as str objects, ragged rows reshaped."""
    if ds is None:
        ds = find_dataset(f, name, path)
    try:
        dt = ds.dtype
        if dt.kind != "O":  # plain numbers: the common, fast case
            return ds[sel]
        if h5py.check_string_dtype(dt) is not None:
            text = ds.asstr()[sel]
            if ds.attrs.get("dtype") == "json":  # values stored as they came: decode each
                out = np.empty(np.shape(text), dtype=object)
                flat = out.reshape(-1)
                for i, t in enumerate(np.ravel(text)):
                    flat[i] = _docs.loads(t)
                return out
            return np.asarray(text, dtype=object)
        vlen = h5py.check_vlen_dtype(dt)
        if vlen is not None:
            flat = ds[sel]
            grp, _, key = name.rpartition("/data/")
            shapes = f[f"{grp}/shapes/{key}"][sel]
            out = np.empty(len(flat), dtype=object)
            for i, (v, s) in enumerate(zip(flat, shapes)):
                out[i] = np.asarray(v).reshape(tuple(s))
            return out
        return ds[sel]
    except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError for some damage
        raise CorruptRunFile(f"{path}: cannot read {name!r} ({exc})") from exc
