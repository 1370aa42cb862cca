"""Array-likes that say where data is and read it only when sliced.

They hold a file path and a dataset name, never an open h5py object, so they pickle
as a few strings and work on dask.distributed workers.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..errors import ExternalDataError
from . import direct, handlers
from .files import cached_h5, external_dataset, known_dataset, open_h5
from .handlers import ExternalRef, load_external_many, same_file_runs
from .reader import read_dataset


class LazyDataset:
    """``h5py_file[name][:n]`` of a run file, read on ``__getitem__``."""

    __slots__ = ("path", "name", "shape", "dtype", "finished", "text", "ndim")

    def __init__(self, path: str, name: str, shape: tuple, dtype: np.dtype, *,
                 finished: bool, text: bool = False) -> None:
        self.path, self.name = path, name
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.finished, self.text = finished, text

    def __getstate__(self) -> tuple:
        return (self.path, self.name, self.shape, self.dtype.str, self.finished, self.text)

    def __setstate__(self, state: tuple) -> None:
        path, name, shape, dtype, finished, text = state
        self.__init__(path, name, shape, np.dtype(dtype), finished=finished, text=text)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sel: Any) -> np.ndarray:
        read, post = split_selection(sel, self.shape)
        if self.finished:
            f = cached_h5(self.path)
            out = read_dataset(f, self.name, read, self.path,
                               ds=known_dataset(f, self.name, self.path))
        else:
            with open_h5(self.path, "r") as f:
                out = read_dataset(f, self.name, read, self.path)
        if self.text:
            out = out.astype(str) if out.size else np.zeros(out.shape, dtype="U1")
        return out[post] if needs_post(post) else out


class ExternalStack:
    """One external value per event (area-detector frames, say) as one array.

    Holds where each value is (:class:`ExternalRef`), never data; reads on
    ``__getitem__`` only the events the selection touches, consecutive frames of one
    file in one read. When every ref is a consecutive point of one AD_HDF5 file (the
    usual detector run) a selection is one h5py slice of that file's dataset.
    """

    __slots__ = ("refs", "frame", "dtype", "key", "run_uid", "shape", "ndim", "_points", "_rest")

    def __init__(self, refs: list[ExternalRef], frame: tuple, dtype: np.dtype, key: str,
                 run_uid: str, points: Any = None) -> None:
        self.refs, self.frame, self.key, self.run_uid = list(refs), tuple(frame), key, run_uid
        self.dtype = np.dtype(dtype)
        self.shape = (len(self.refs), *self.frame)
        self.ndim = len(self.shape)
        self._points = points  # see points(): None until worked out, then a tuple or False
        self._rest: tuple | None = None  # the stored frame shape direct() found right

    def __getstate__(self) -> tuple:
        return (self.refs, self.frame, self.dtype.str, self.key, self.run_uid, self._points)

    def __setstate__(self, state: tuple) -> None:
        refs, frame, dtype, key, run_uid, *points = state
        self.__init__(refs, frame, np.dtype(dtype), key, run_uid, *points)

    def __len__(self) -> int:
        return self.shape[0]

    def points(self) -> tuple[str, int, int] | None:
        """``(file, first point, frames per point)`` if one AD_HDF5 slice holds every
        value (:func:`~.handlers.points_plan`), worked out once; else None."""
        if self._points is None:
            plan = handlers.points_plan(self.refs) if None not in self.frame else None
            self._points = plan or False
        return self._points or None

    def direct(self) -> Points | None:
        """Where one AD_HDF5 slice holds every value (:meth:`points`), its frames checked
        against the descriptor's shape by :func:`~.handlers.frame_shape`: the check every
        read of the stack makes (``read()``, ``to_dask()``, ``stream[key]``), so all of
        them agree. None: not one slice. A missing or unreadable file raises the error a
        read raises (naming the run, key and resource)."""
        plan = self.points()
        if plan is None:
            return None

        def look() -> Points:
            with external_dataset(plan[0], handlers.AD_DATASET) as ds:
                return self._direct(plan, ds)
        return handlers._guarded(look, self.refs[0], self.key, self.run_uid)

    def _direct(self, plan: tuple[str, int, int], ds: Any) -> Points:
        path, first, fpp = plan
        rest = ds.shape[1:]
        if rest != self._rest:  # checked once per stored shape (again if the file changes)
            handlers.frame_shape((fpp, *rest), self.frame, self.key, self.run_uid)
            self._rest = rest
        return Points(path, ds.shape[0], first, fpp, fpp == 1 and rest == self.frame)

    def __getitem__(self, sel: Any) -> np.ndarray:
        read, post = split_selection(sel, self.shape)
        plan = self.points()
        if plan is not None:
            def read_points() -> np.ndarray:
                return direct.read(plan[0], handlers.AD_DATASET,
                                   lambda ds: self._read_points(self._direct(plan, ds), ds, read))
            out = handlers._guarded(read_points, self.refs[0], self.key, self.run_uid)
            return out[post] if needs_post(post) else out
        rows = range(self.shape[0])[read[0]]
        out = np.empty((len(rows), *self.frame), dtype=self.dtype)
        if rows.step == 1:
            refs = self.refs[rows.start:rows.stop]
            for a, b in same_file_runs(refs):
                got = load_external_many(refs[a:b], self.frame, self.key, self.run_uid, out=out[a:b])
                if not np.shares_memory(got, out):  # not read in place: copy it over
                    out[a:b] = got
        else:
            for j, i in enumerate(rows):
                out[j] = handlers.load_external(self.refs[i], self.frame, self.key, self.run_uid)
        inner = (slice(None), *read[1:])
        if any(s != slice(0, n) for s, n in zip(read[1:], self.frame)):
            out = out[inner]
        return out[post] if needs_post(post) else out

    def _read_points(self, hit: Points, ds: Any, read: tuple) -> np.ndarray:
        """``read`` (one forward slice per axis) as one slice of the AD_HDF5 dataset ``ds``."""
        path, _, first, fpp, as_stored = hit
        rows = range(self.shape[0])[read[0]]
        want = (len(rows), *(len(range(n)[s]) for s, n in zip(read[1:], self.frame)))
        if not all(want):
            return np.empty(want, dtype=self.dtype)
        start, stop = (first + rows.start) * fpp, (first + rows[-1] + 1) * fpp
        if stop > ds.shape[0]:
            raise ExternalDataError(f"{path}: datums ask for frames {start}:{stop} but the file "
                                    f"holds {ds.shape[0]}")
        if rows.step == 1 and all(s == slice(0, n) for s, n in zip(read[1:], self.frame)):
            # whole frames: one read (h5py's fast slice path; read_direct() into a buffer
            # costs ~30 us more per call and saves no copy here), what the handler's
            # read_points() reads, without looking the dataset up again
            return ds[start:stop].reshape(want).astype(self.dtype, copy=False)
        row_sel = slice(first + rows.start, first + rows[-1] + 1, rows.step)
        if as_stored:
            out = ds[(row_sel, *read[1:])]
        elif fpp == 1 and self.frame == (1, *ds.shape[1:]):  # ophyd's [1, h, w] per datum
            out = ds[(row_sel, *read[2:])][:, None]
        else:
            block = ds[start:stop].reshape(-1, *self.frame)[::rows.step]
            out = block[(slice(None), *read[1:])]
        return out.astype(self.dtype, copy=False)


class Points(NamedTuple):
    """:meth:`ExternalStack.direct`'s answer: every value is a row (or ``fpp`` rows) of
    the AD_HDF5 dataset of ``path`` (``rows`` rows when looked at), from point ``first``
    on; ``as_stored``: one row per event, of the descriptor's shape (no reshape)."""
    path: str
    rows: int
    first: int
    fpp: int
    as_stored: bool


def split_selection(sel: Any, shape: tuple) -> tuple[tuple, tuple]:
    """Split a numpy index into what h5py reads well, then what numpy applies after.

    The read part has one forward slice per axis (the bounding box of the selection);
    the rest (ints, reversed steps, index arrays, new axes) is applied to what was read.
    dask hands its getter any of these when it fuses ``x[...]`` into the read of a chunk.
    """
    if not isinstance(sel, tuple):
        sel = (sel,)
    if any(s is Ellipsis for s in sel):
        i = next(i for i, s in enumerate(sel) if s is Ellipsis)
        real = sum(1 for s in sel if s is not None and s is not Ellipsis)
        sel = sel[:i] + (slice(None),) * (len(shape) - real) + sel[i + 1:]
    read: list[slice] = []
    post: list[Any] = []
    axis = 0
    for s in sel:
        if s is None:
            post.append(None)
            continue
        if axis >= len(shape):
            raise IndexError(f"too many indices for an array of shape {shape}")
        n = shape[axis]
        axis += 1
        if isinstance(s, slice):
            start, stop, step = s.indices(n)
            r = range(start, stop, step)
            if not r:
                read.append(slice(0, 0))
                post.append(slice(None))
            elif step > 0:
                read.append(slice(r[0], r[-1] + 1, step))
                post.append(slice(None))
            else:  # reversed: read forwards, flip after
                read.append(slice(r[-1], r[0] + 1, -step))
                post.append(slice(None, None, -1))
            continue
        if isinstance(s, (int, np.integer)):
            i = int(s) + (n if s < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {int(s)} is out of bounds for axis {axis - 1} with size {n}")
            read.append(slice(i, i + 1))
            post.append(0)
            continue
        a = np.asarray(s)
        if a.dtype == bool:
            a = np.flatnonzero(a)
        elif a.dtype.kind not in "iu" and (a.size or a.dtype.kind not in "f"):  # [] is fine
            raise IndexError("only integers, slices (`:`), ellipsis (`...`), numpy.newaxis "
                             f"(`None`) and integer or boolean arrays are valid indices, not {s!r:.40}")
        a = np.where(a < 0, a + n, a).astype(np.intp)
        if a.size and (a.min() < 0 or a.max() >= n):
            raise IndexError(f"index out of bounds for axis {axis - 1} with size {n}")
        lo = int(a.min()) if a.size else 0
        read.append(slice(lo, int(a.max()) + 1 if a.size else 0))
        post.append(a - lo)
    for n in shape[axis:]:
        read.append(slice(0, n))
        post.append(slice(None))
    return tuple(read), tuple(post)


def needs_post(post: tuple) -> bool:
    """Whether the second part of :func:`split_selection` changes anything."""
    return any(not (isinstance(p, slice) and p == slice(None)) for p in post)
