"""A detector's frames read straight from the bytes of its HDF5 file.

Opening an HDF5 file costs ~0.1-0.3 ms, and a detector's file is opened for every read
(:func:`~.files.external_dataset` says why it is never held), which is most of what one
frame costs. When the frames are stored plainly (no filters, whole frames per chunk or
one contiguous block, every chunk written), HDF5 itself tells where each chunk starts
the first time the file is read; later reads of the unchanged file are one ``open`` and
one ``preadv`` per run of adjacent chunks, with no HDF5 call at all. "Unchanged" is the
file's device, inode, size and modification time as seen through the descriptor being
read: a file rewritten or growing (a detector writing the next scan under the same name,
SWMR) is read through HDF5 again, which learns its new layout; a file modified in the
last two seconds, or open in this process for anything else, is always read through HDF5.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import h5py
import numpy as np

from .files import external_dataset

T = TypeVar("T")
_KEEP = 64  # layouts remembered per process (a few hundred bytes each, plus chunk offsets)
# A file modified less than this long ago is read through HDF5: file times tick in steps
# (a few ms on Linux), so a file rewritten at once with the same size could look unchanged.
SETTLED_NS = 2 * 10**9


class Stale(Exception):
    """The file is no longer the one whose layout was learnt: read it through HDF5."""


class RawFrames:
    """What ``_read_points`` and ``ArrayColumn`` use of an h5py dataset (``shape``,
    ``dtype``, ``[rows, ...]``), read from file offsets HDF5 gave."""

    __slots__ = ("path", "stamp", "shape", "dtype", "per_chunk", "offsets", "row_bytes", "ndim")

    def __init__(self, path: str, stamp: tuple, shape: tuple, dtype: np.dtype, per_chunk: int,
                 offsets: np.ndarray) -> None:
        self.path, self.stamp, self.shape, self.dtype = path, stamp, shape, dtype
        self.ndim = len(shape)
        self.per_chunk, self.offsets = per_chunk, offsets
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __getitem__(self, sel: Any) -> np.ndarray:
        sel = sel if isinstance(sel, tuple) else (sel,)
        first, inner = sel[0], sel[1:]
        if isinstance(first, (int, np.integer)):
            k = int(first) + (self.shape[0] if first < 0 else 0)
            return self._rows(range(k, k + 1))[(0, *inner)]
        rows = range(self.shape[0])[first]
        if rows.step < 0:
            raise IndexError("RawFrames reads forward slices only")
        out = self._rows(rows)
        if all(isinstance(s, slice) and s.indices(n) == (0, n, 1) for s, n in zip(inner, self.shape[1:])):
            return out
        return out[(slice(None), *inner)].copy()  # compact, as h5py gives it

    def read_direct(self, dest: np.ndarray, source_sel: slice) -> None:
        """Rows ``source_sel`` into ``dest`` (C-contiguous, of their shape and dtype), as
        h5py's ``Dataset.read_direct``."""
        self._rows(range(self.shape[0])[source_sel], dest)

    def _rows(self, rows: range, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        buf = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as f:
            if _stamp(os.fstat(f.fileno())) != self.stamp:
                raise Stale(self.path)
            for pos, offset, n in _spans(rows, self.per_chunk, self.offsets, self.row_bytes):
                _read_into(f, buf[pos:pos + n], offset)
        return out


def _read_into(f: Any, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``offset`` of the open file ``f`` (reads may come back short)."""
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            got = os.preadv(f.fileno(), [view[done:]], offset + done)
        else:  # Windows
            f.seek(offset + done)
            got = f.readinto(view[done:])
        if not got:
            raise Stale(f.name)  # shorter than HDF5 said: HDF5 will say why
        done += got


def _spans(rows: range, per: int, offsets: np.ndarray, row_bytes: int) -> list[tuple[int, int, int]]:
    """(position in the output, file offset, bytes) of each read ``rows`` needs, adjacent
    rows of one chunk, and of chunks that follow each other in the file, in one read."""
    spans: list[list[int]] = []
    pos = 0
    groups = [(r, r + 1) for r in rows] if rows.step != 1 else [(rows.start, rows.stop)]
    for a, b in groups:
        while a < b:
            c = a // per
            end = min(b, (c + 1) * per)
            offset = int(offsets[c]) + (a - c * per) * row_bytes
            n = (end - a) * row_bytes
            if spans and spans[-1][1] + spans[-1][2] == offset and spans[-1][0] + spans[-1][2] == pos:
                spans[-1][2] += n
            else:
                spans.append([pos, offset, n])
            pos += n
            a = end
    return [(p, o, n) for p, o, n in spans]


def _stamp(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def layout(path: str, ds: h5py.Dataset) -> RawFrames | None:
    """The raw layout of ``ds``, open in the file at ``path``, or None unless its bytes are
    plain frames: a number dtype, no filters, no external or virtual storage, whole
    frames per chunk (or contiguous), every chunk allocated and its full size."""
    st = os.stat(path)
    if time.time_ns() - st.st_mtime_ns < SETTLED_NS:
        return None  # just written: the clock that stamps files may not tick before it is again
    dtype = ds.dtype
    if dtype.kind not in "iuf" or ds.ndim < 1 or dtype.hasobject:
        return None
    dsid = ds.id
    fid = h5py.h5i.get_file_id(dsid)
    try:  # open elsewhere in this process (a writer, say): what is on disk may lag HDF5's
        if h5py.h5f.get_obj_count(fid, h5py.h5f.OBJ_FILE) != 1:
            return None
    finally:
        fid.close()
    dcpl = dsid.get_create_plist()
    if dcpl.get_nfilters() or dcpl.get_external_count():
        return None
    kind = dcpl.get_layout()
    shape = tuple(ds.shape)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    if kind == h5py.h5d.CONTIGUOUS:
        offset = dsid.get_offset()
        if offset is None or dsid.get_storage_size() < shape[0] * row_bytes:
            return None
        per, offsets = max(shape[0], 1), np.array([offset], dtype=np.int64)
    elif kind == h5py.h5d.CHUNKED:
        chunks = dcpl.get_chunk()
        if tuple(chunks[1:]) != shape[1:] or not shape[0]:
            return None
        per = int(chunks[0])
        n = -(-shape[0] // per)
        offsets = np.full(n, -1, dtype=np.int64)
        full = per * row_bytes
        ok = [True]

        def one(info: Any) -> None:
            c = info.chunk_offset[0] // per
            if info.filter_mask or info.size != full or not 0 <= c < n:
                ok[0] = False
            else:
                offsets[c] = info.byte_offset
        if hasattr(dsid, "chunk_iter"):
            dsid.chunk_iter(one)
        else:
            for i in range(dsid.get_num_chunks()):
                one(dsid.get_chunk_info(i))
        if not ok[0] or (offsets < 0).any():
            return None  # a filtered, odd or unwritten chunk: HDF5 reads it (fill values)
    else:  # compact, virtual
        return None
    return RawFrames(path, _stamp(st), shape, dtype, per, offsets)


_LAYOUTS: OrderedDict[tuple[str, str], RawFrames | None] = OrderedDict()
_LOCK = threading.Lock()


def read(path: str, name: str, fn: Callable[[Any], T]) -> T:
    """``fn(ds)``, ``ds`` being dataset ``name`` of the detector's file at ``path``: its raw
    frames when their layout is known and the file unchanged, else the h5py dataset
    (:func:`~.files.external_dataset`), whose layout is then learnt for the next read.
    ``fn`` may use ``shape``, ``dtype``, ``ds[rows, ...]`` and ``read_direct``."""
    key = (path, name)
    with _LOCK:
        raw = _LAYOUTS.get(key)
    if raw is not None:
        try:
            return fn(raw)
        except (Stale, OSError):  # changed, gone, unreadable: HDF5 reads it or says why
            pass
    with external_dataset(path, name) as ds:
        try:
            learnt = layout(path, ds)
        except (OSError, ValueError, KeyError, RuntimeError):  # nothing to learn: HDF5 reads it
            learnt = None
        with _LOCK:
            _LAYOUTS[key] = learnt
            _LAYOUTS.move_to_end(key)
            while len(_LAYOUTS) > _KEEP:
                _LAYOUTS.popitem(last=False)
        return fn(ds)
