"""One column of a stream as an array: ``run.primary["img"][3]``, no dask, no xarray.

:class:`ArrayColumn` is what ``stream[key]`` returns (the spelling of tiled's and
databroker 2's array clients): it has ``shape``, ``dtype``, numpy-style ``[...]``
returning numpy, ``read()`` and reductions over time that read a frame at a time.
Nothing is read until it is indexed; a selection reads only the rows it touches,
straight from the HDF5 dataset (or the external file) holding them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .errors import CorruptRunFile
from .storage import direct
from .storage.files import cached_h5, external_dataset, known_dataset
from .storage.handlers import AD_DATASET, explained
from .storage.lazy import needs_post, split_selection
from .storage.reader import read_dataset

if TYPE_CHECKING:
    from .storage import Column, Segment
    from .storage.lazy import ExternalStack

# Rows read per step of a reduction: about this many bytes (a 512 x 512 uint16 frame at a
# time). Fresh processes ran a 50 x 256 x 256 max() fastest with 128-256 KB blocks, warm
# ones with 256 KB-1 MB: a block stays in the CPU caches while it is reduced.
_REDUCE_BYTES = 1 << 18
_UNSET = object()


def _dims(col: Column) -> tuple[str, ...]:
    """The dimension names of a column in a Dataset: time, then the descriptor's ``dims``
    or ``<key>_dim_<i>`` (``Stream.read()`` and ``ArrayColumn.dims`` name them alike)."""
    nd = len(col.shape)
    if col.variable:
        return ("time",)
    if col.dims and len(col.dims) == nd:
        return ("time", *col.dims)
    return ("time", *(f"{col.key}_dim_{i}" for i in range(nd)))


def _attrs(col: Column) -> dict:
    dk = col.data_key
    out = {k: dk[k] for k in ("source", "units", "object_name", "precision") if k in dk}
    if col.external:
        out["external"] = col.external
    return out


class ColumnLike:
    """What every column array-like has, on top of its ``shape``, ``dtype``,
    ``__getitem__`` (numpy-style, returning numpy) and ``_reduce(how, axis)``."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sel: Any) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)

    def read(self, slice: Any = Ellipsis) -> np.ndarray:  # noqa: A002 - tiled's spelling
        """The values (all, or ``slice`` of them) as a numpy array."""
        return self[slice]

    def _reduce(self, how: str, axis: Any) -> np.ndarray:
        raise NotImplementedError

    def mean(self, axis: Any = 0, dtype: Any = None, out: np.ndarray | None = None,
             keepdims: bool = False) -> Any:
        """Mean over events (``axis=0``), a few frames at a time (float64); ``axis=None``
        (what ``np.mean(col)`` asks) the mean of every element."""
        return self._numpy("mean", axis, dtype, out, keepdims)

    def sum(self, axis: Any = 0, dtype: Any = None, out: np.ndarray | None = None,
            keepdims: bool = False) -> Any:
        """Sum over events, as ``numpy.sum`` gives it, a few frames at a time."""
        return self._numpy("sum", axis, dtype, out, keepdims)

    def max(self, axis: Any = 0, out: np.ndarray | None = None, keepdims: bool = False) -> Any:
        """Largest value over events, a few frames at a time."""
        return self._numpy("max", axis, None, out, keepdims)

    def min(self, axis: Any = 0, out: np.ndarray | None = None, keepdims: bool = False) -> Any:
        """Smallest value over events, a few frames at a time."""
        return self._numpy("min", axis, None, out, keepdims)

    def _numpy(self, how: str, axis: Any, dtype: Any, out: np.ndarray | None,
               keepdims: bool) -> Any:
        """A reduction with numpy's arguments, so ``np.mean(col)``, ``np.max(col, axis=0)``
        work: over events block by block (``_reduce``), the whole array as the reduction of
        that (every frame has as many elements, so a mean of means is the mean)."""
        extra = {} if dtype is None else {"dtype": dtype}
        if axis is None:
            res = getattr(np, how)(self._reduce(how, 0) if self.ndim > 1 else self[...], **extra)
        else:
            res = self._reduce(how, axis)
            if extra:
                res = np.asarray(res).astype(dtype)
        if keepdims:
            res = np.reshape(res, (1,) * self.ndim) if axis is None else np.expand_dims(res, axis)
        if out is not None:
            out[...] = res
            return out
        return res


class ArrayColumn(ColumnLike):
    """The values of one data key of a stream, all events, as an array-like.

    ``col[k]`` is event ``k``'s value, ``col[a:b, y0:y1]`` a box of frames, ``col[[1, 5]]``
    chosen events; the result is always a numpy array with the values ``read()[key]``
    has (text as ``'<U'`` strings). ``col.mean()``, ``sum()``, ``max()`` and ``min()``
    reduce over time (``axis=0``) reading a few frames at a time, so the peak memory is
    one result plus a few frames, never the whole stack.
    """

    def __init__(self, stream: Any, key: str, col: Column) -> None:
        # stream: the databroker_lite.stream.Stream (not imported here: it imports this module)
        self.stream, self.key, self._col = stream, key, col
        self._reader = stream._reader
        self._segs = list(stream.segments)
        self._rows = [stream._rows(s) for s in self._segs]
        self._text = col.dtype.kind == "O" and not col.variable and not col.json
        info = next((self._reader.dataset_info(s, key) for s in self._segs
                     if not col.external and key in s.descriptor["data_keys"]
                     and self._reader.dataset_info(s, key) is not None), None)
        if col.variable or col.json:
            row: tuple = ()
        elif info is not None:
            row = tuple(info[1][1:])
        else:
            row = tuple(s or 0 for s in col.shape)
        self.shape: tuple[int, ...] = (sum(self._rows), *row)
        # text: '<U' until its width is asked for (see dtype)
        self._dtype: np.dtype = np.dtype("U") if self._text else col.dtype
        if any(key not in s.descriptor["data_keys"] for s in self._segs) and col.dtype.kind in "biu":
            self._dtype = np.result_type(col.dtype, "f8")  # NaN where a descriptor lacks the key
        self._width: np.dtype | None = None
        self._fast: Any = _UNSET  # see _plan()
        self._dsname = info[0] if info is not None else None
        self._stacks: dict[int, ExternalStack] = {}

    # --- array-like --------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The dtype ``read()`` gives. Text is ``'<U'`` of its longest value: the first
        time it is asked, a text column's values are read to find that width."""
        if not self._text:
            return self._dtype
        if self._width is None:
            self._width = self[...].dtype if self.shape[0] else np.dtype("U1")
        return self._width

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names, as ``read()`` names them (the first is ``time``)."""
        return _dims(self._col)

    @property
    def attrs(self) -> dict:
        return _attrs(self._col)

    def __repr__(self) -> str:
        # reads nothing: a text column's width is shown once something asked for it (dtype)
        dtype = self._dtype if not self._text else (self._width or "<U (width not read yet)")
        return (f"<ArrayColumn {self.key!r} of stream {self.stream.name!r}: shape {self.shape}, "
                f"dtype {dtype}>")

    def __getitem__(self, sel: Any) -> np.ndarray:
        fast = self._fast if self._fast is not _UNSET else self._plan()
        if fast is not None:
            return self._direct(fast, sel)
        read, post = split_selection(sel, self.shape)
        out = self._gather(read)
        return out[post] if needs_post(post) else out

    # --- reading -------------------------------------------------------------
    def _plan(self) -> tuple | None:
        """Where the values are, if one HDF5 dataset holds them all in event order.

        ``(file, dataset, first row, rows per event, per-event shape or None)``: the
        column's own dataset (a finished run of one descriptor), or the ``AD_HDF5`` file
        whose consecutive points a single resource's datums name. None: read by segment.
        """
        col, reader = self._col, self._reader
        fast = None
        one = len(self._segs) == 1 and reader.finished and not (self._text or col.variable or col.json)
        if one and self._dsname is not None:
            with reader.h5() as f:
                reader._dataset(f, self._dsname, self._segs[0])  # its rows checked once
            fast = (reader.path, self._dsname, 0, 1, None)
        elif one and col.external and not str(col.external).startswith("STREAM:") \
                and None not in col.shape:
            stack = self._stack(0)
            hit = stack.direct()  # the shape check every read path makes (ShapeMismatch)
            if hit is not None and hit.rows >= (hit.first + len(stack)) * hit.fpp:
                fast = (hit.path, AD_DATASET, hit.first, hit.fpp,
                        None if hit.as_stored else tuple(col.shape))
        self._fast = fast  # not before: an error (a missing file) is raised again next time
        return fast

    @staticmethod
    @contextlib.contextmanager
    def _fast_dataset(path: str, name: str) -> Iterator[Any]:
        """The dataset of a plan (:meth:`_plan`): from the cached handle of a run file; a
        detector's file is open only while the block runs (:func:`~.files.external_dataset`)."""
        if name == AD_DATASET:
            with external_dataset(path, name) as ds:
                yield ds
        else:
            yield known_dataset(cached_h5(path), name, path, CorruptRunFile)

    def _blocks_into(self, fast: tuple, step: int, buf: np.ndarray) -> Iterator[np.ndarray]:
        """Every row, ``step`` rows at a time, read by HDF5 straight into ``buf`` (reused:
        no allocation and no page faults per block). h5py's low-level calls with one file
        space, since ``ds[a:b]`` and ``read_direct()`` build Python selections per call."""
        path, name, first, fpp, frame = fast
        with self._fast_dataset(path, name) as ds:
            dsid, rest = ds.id, tuple(ds.shape[1:])
            per = 1 if frame is None else fpp  # dataset rows per event
            fspace = dsid.get_space()
            mspaces: dict[int, Any] = {}
            n = self.shape[0]
            for a in range(0, n, step):
                m = min(step, n - a)
                out = buf[:m]
                mspace = mspaces.get(m)
                if mspace is None:
                    mspace = mspaces[m] = h5py.h5s.create_simple((m * per, *rest))
                fspace.select_hyperslab(((first + a) * per, *(0,) * len(rest)), (m * per, *rest))
                dsid.read(mspace, fspace, out)
                yield out

    def _direct(self, fast: tuple, sel: Any) -> np.ndarray:
        if fast[1] != AD_DATASET:  # the run file's own dataset, its handle cached: no block
            return self._direct_from(fast, sel, known_dataset(cached_h5(fast[0]), fast[1],
                                                              fast[0], CorruptRunFile))
        try:  # a detector's file
            return direct.read(fast[0], fast[1], lambda ds: self._direct_from(fast, sel, ds))
        except OSError as exc:  # gone or damaged since the plan was made: say whose it is
            ours = explained(exc, self._stack(0).refs[0], self.key, self.stream.run.uid)
            if ours is exc:
                raise
            raise ours from exc

    def _direct_from(self, fast: tuple, sel: Any, ds: Any) -> np.ndarray:
        first, fpp, frame = fast[2:]
        if isinstance(sel, (int, np.integer)) and not isinstance(sel, bool):
            n = self.shape[0]
            k = int(sel) + (n if sel < 0 else 0)
            if not 0 <= k < n:
                raise IndexError(f"index {int(sel)} is out of bounds for {self.key!r} "
                                 f"with {n} events")
            if frame is None:
                return ds[first + k]
            return ds[(first + k) * fpp:(first + k + 1) * fpp].reshape(frame)
        read, post = split_selection(sel, self.shape)
        rows = read[0]
        if frame is None:
            out = ds[(slice(first + rows.start, first + rows.stop, rows.step), *read[1:])]
        else:
            block = ds[(first + rows.start) * fpp:(first + rows.stop) * fpp]
            out = block.reshape(-1, *frame)[::rows.step][(slice(None), *read[1:])]
        return out[post] if needs_post(post) else out

    def _stack(self, i: int) -> ExternalStack:
        stack = self._stacks.get(i)
        if stack is None:
            stack = self._stacks[i] = self.stream._stack(self._segs[i], self._col, self._rows[i])
        return stack

    def _gather(self, read: tuple) -> np.ndarray:
        """``read`` (one forward slice per axis) over every segment, concatenated."""
        rows, inner = read[0], read[1:]
        want = range(self.shape[0])[rows]
        order = self.stream._order()
        if order is not None and len(want):  # descriptors' events interleaved
            return self._gather_rows(order[np.arange(want.start, want.stop, want.step)], inner)
        parts, offset = [], 0
        for i, (seg, m) in enumerate(zip(self._segs, self._rows)):
            lo, hi = offset, offset + m
            offset = hi
            if not len(want) or hi <= want[0] or lo > want[-1]:
                continue
            first = want[0] if want[0] >= lo else want[0] + -(-(lo - want[0]) // want.step) * want.step
            last = min(want[-1], hi - 1)
            if first > last:
                continue
            parts.append(self._segment(i, seg, m, slice(first - lo, last - lo + 1, want.step), inner))
        if not parts:
            shape = (0, *(len(range(n)[s]) for s, n in zip(inner, self.shape[1:])))
            return np.zeros(shape, dtype=object if self._col.variable or self._col.json
                            else ("U1" if self._text else self._dtype))
        out = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        if self._text or self._col.variable or self._col.json:
            return out
        return out.astype(self._dtype, copy=False)

    def _gather_rows(self, rows: np.ndarray, inner: tuple) -> np.ndarray:
        """Rows ``rows`` of the segments one after another (one read per segment touched),
        in the order given."""
        ends = np.cumsum(self._rows)
        which = np.searchsorted(ends, rows, side="right")
        parts, where = [], []
        for i in np.unique(which):
            pos = np.flatnonzero(which == i)
            local = rows[pos] - (ends[i] - self._rows[i])
            lo, hi = int(local.min()), int(local.max()) + 1
            block = self._segment(int(i), self._segs[i], self._rows[i], slice(lo, hi, 1), inner)
            parts.append(block[local - lo])
            where.append(pos)
        joined = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        out = np.empty_like(joined)
        out[np.concatenate(where)] = joined
        if self._text or self._col.variable or self._col.json:
            return out
        return out.astype(self._dtype, copy=False)

    def _segment(self, i: int, seg: Segment, n: int, rows: slice, inner: tuple) -> np.ndarray:
        col, stream = self._col, self.stream
        box = (rows, *inner)
        if self.key not in seg.descriptor["data_keys"]:
            return stream._filler(n, col, False)[box]
        if col.json:  # values that disagreed with the descriptor: objects, as read() has them
            return stream._segment_column(seg, col, False)[box]
        if col.external:
            fixed = None not in col.shape and not str(col.external).startswith("STREAM:")
            if not fixed:
                return stream._external(seg, col, n, False)[box]
            return self._stack(i)[box]
        info = self._reader.dataset_info(seg, self.key)
        if info is None:
            return np.zeros((0, *self.shape[1:]), dtype="U1" if self._text else self._dtype)
        sel = rows if col.variable else box
        with self._reader.h5() as f:
            out = read_dataset(f, info[0], sel, self._reader.path,
                               ds=self._reader._dataset(f, info[0], seg))
        if self._text:
            return out.astype(str) if out.size else np.zeros(out.shape, dtype="U1")
        return out

    # --- reductions over time ------------------------------------------------
    def _reduce(self, how: str, axis: Any) -> np.ndarray:
        if axis not in (0, -self.ndim) or self._dtype.kind not in "biuf" or self.shape[0] == 0:
            return getattr(np, how)(self[...], axis=axis)
        n = self.shape[0]
        per_row = max(1, self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64)))
        step = max(1, min(n, _REDUCE_BYTES // per_row))
        if how == "mean":
            acc_dtype = np.dtype("f8")
        elif how == "sum":
            acc_dtype = np.sum(np.zeros(1, self.dtype)).dtype  # numpy's: uint16 -> uint64
        else:
            acc_dtype = self.dtype
        ufunc = {"mean": np.add, "sum": np.add, "max": np.maximum, "min": np.minimum}[how]
        fast = self._fast if self._fast is not _UNSET else self._plan()
        if fast is not None:
            blocks = self._blocks_into(fast, step, np.empty((step, *self.shape[1:]), self.dtype))
        else:
            blocks = (self[a:a + step] for a in range(0, n, step))
        acc = None
        for block in blocks:
            if acc is None:
                acc = block[0].astype(acc_dtype)
                block = block[1:]
            if self.ndim == 1:  # scalars: one vectorised step per block
                if len(block):
                    acc = ufunc(acc, ufunc.reduce(block, axis=0, dtype=acc_dtype), dtype=acc_dtype)
                continue
            for row in block:  # frames: in place, no temporary as big as the result
                ufunc(acc, row, out=acc)
        return acc / n if how == "mean" else acc
