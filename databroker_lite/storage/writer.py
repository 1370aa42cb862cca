"""Writing one run into one HDF5 file, with buffered appends.

Rows are buffered in memory and appended in batches; the file is open only while a
batch is written, so other processes can read the run between flushes. A flush is
all or nothing: it writes through an undo journal (see :func:`.files.journaled_h5`),
so a process killed mid-flush leaves the file as the previous flush left it, and an
error inside a flush (a full disk) puts the file back and keeps the rows buffered.
Within a flush every column is extended before ``doc_index``, which readers take as
the count of complete rows.
"""
from __future__ import annotations

import errno
import os
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np

from .. import documents as _docs
from ..errors import CatalogError, DescriptorMismatchWarning, InvalidDocument
from . import files as _files
from .files import FILE_CACHE, journaled_h5, open_h5
from .layout import (
    LAYOUT_ATTR,
    LAYOUT_VERSION,
    SIDE_DOCUMENTS,
    STR,
    Column,
    chunk_rows,
    column_from_data_key,
    h5name,
    is_stream_external,
    json_column,
    storage_dtype,
)
from .reader import read_dataset

FLUSH_ROWS = 1000            # rows buffered in one descriptor before a flush
FLUSH_BYTES = 64 * 2**20     # bytes buffered before a flush
FLUSH_SECONDS = 1.0          # a document arriving this long after the last flush flushes


class _Mismatch(Exception):
    """A value disagrees with its column (shape or type): the key is stored as JSON from now on."""


def _checker(col: Column, run_uid: str) -> Callable[[Any, dict], Any]:
    """A function that checks one value of a column and returns what to store.

    A value the column cannot hold raises :class:`_Mismatch` (the segment then stores
    the key as JSON text); only what cannot be stored at all raises InvalidDocument.
    """
    key = col.key

    def bad(value: Any, ev: dict, what: str) -> None:
        raise _Mismatch(f"data[{key!r}] = {value!r:.80} is not {what}")

    if col.json:
        def check_json(v: Any, ev: dict) -> Any:
            try:
                return _docs.dumps(v)
            except (TypeError, ValueError) as exc:
                raise InvalidDocument(f"data[{key!r}] = {v!r:.80} cannot be stored: it is not "
                                      f"JSON-serialisable ({exc})", run_uid=run_uid, name="event",
                                      doc_uid=ev.get("uid")) from None
        return check_json
    if col.external:
        def check_ext(v: Any, ev: dict) -> Any:
            if not isinstance(v, str):
                raise InvalidDocument(f"data[{key!r}] = {v!r:.80} is not a datum id (the key is "
                                      "external)", run_uid=run_uid, name="event", doc_uid=ev.get("uid"))
            return v
        return check_ext
    kind = col.dtype.kind
    if col.shape == ():
        if kind == "f" or kind == "c":
            def check_num(v: Any, ev: dict) -> Any:
                if type(v) is float:  # the common case, without ABC checks
                    return v
                if type(v) is int and -1e308 < v < 1e308:  # not beyond a float64
                    return v
                if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iuf" + kind:
                    return v.item()
                if not isinstance(v, (Real, np.number)) or isinstance(v, (str, int)):
                    bad(v, ev, "a number")
                return v
            return check_num
        if kind in "iu":
            info = np.iinfo(col.dtype)

            def check_int(v: Any, ev: dict) -> Any:
                if isinstance(v, (Integral, np.integer)) and not isinstance(v, bool):
                    if info.min <= v <= info.max:
                        return v
                    bad(v, ev, f"a {col.dtype} (out of range)")
                if isinstance(v, (float, np.floating)) and float(v).is_integer() \
                        and info.min <= v <= info.max:
                    return int(v)
                if isinstance(v, (float, np.floating)):
                    raise _NeedsFloat
                bad(v, ev, "an integer")
            return check_int
        if kind == "b":
            def check_bool(v: Any, ev: dict) -> Any:
                if isinstance(v, (bool, np.bool_)):
                    return bool(v)
                if isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1):
                    return bool(v)
                bad(v, ev, "a boolean")
            return check_bool
        if kind == "O":
            def check_str(v: Any, ev: dict) -> Any:
                if not isinstance(v, str):
                    bad(v, ev, "a string")
                if "\x00" in v:  # HDF5 strings end at NUL: JSON text keeps it
                    bad(v, ev, "a string without NUL characters")
                return v
            return check_str
    shape = col.shape

    def check_array(v: Any, ev: dict) -> Any:
        try:
            arr = np.asarray(v)
        except (ValueError, TypeError, OverflowError):  # ragged lists, say
            bad(v, ev, f"an array of shape {list(shape)}")
        if col.variable:
            if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
                raise _Mismatch(f"data[{key!r}] has shape {arr.shape}, the descriptor declares {list(shape)}")
        elif arr.shape != shape:
            raise _Mismatch(f"data[{key!r}] has shape {arr.shape}, the descriptor declares {list(shape)}")
        if kind == "O":
            if arr.dtype.kind not in "UO" or (arr.dtype.kind == "O" and not all(
                    isinstance(x, str) for x in arr.flat)):
                bad(v, ev, "an array of strings")
            if any("\x00" in x for x in arr.flat):
                bad(v, ev, "an array of strings without NUL characters")
            return arr.astype(object)
        if arr.dtype.kind in "USO" or (kind in "iufb" and arr.dtype.kind == "c"):
            bad(v, ev, f"an array of {col.dtype}")
        if kind in "iu" and arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
            bad(v, ev, f"an array of {col.dtype} (it has non-integer values)")  # no silent truncation
        return arr
    return check_array


EXACT_IN_FLOAT = 2**53


def _beyond_float(v: Any) -> bool:
    """Whether an integer value (or array) holds a number float64 would round."""
    a = np.asarray(v)
    if a.size == 0 or a.dtype.kind not in "iuO":
        return False
    return bool(a.max() > EXACT_IN_FLOAT or a.min() < -EXACT_IN_FLOAT)


class _NeedsFloat(Exception):
    """An "integer" column received a fractional number (ophyd.sim setpoints do this)."""


class _SegmentBuffer:
    """Buffered rows of one descriptor and how to store them."""

    def __init__(self, writer: RunWriter, descriptor: dict, group: str, doc_index: int) -> None:
        self.descriptor = descriptor
        self.group = group
        self.doc_index = doc_index
        self.created = False
        self.final = False
        self.n_stored = 0
        self.columns: dict[str, Column] = {}
        self.checkers: dict[str, Callable] = {}
        self.data_keys = {k: v for k, v in descriptor["data_keys"].items()
                          if not is_stream_external(v)}
        self.key_set = set(self.data_keys)
        self.filled_keys: set[str] = {k for k, v in self.data_keys.items() if v.get("external")}
        self.json_keys: set[str] = set()
        self.big_ints: set[str] = set()  # integer keys with stored values beyond 2**53
        self.run_uid = writer.run_uid
        self.writer = writer
        self._reset()

    def _reset(self) -> None:
        self.time: list = []
        self.seq_num: list = []
        self.uid: list = []
        self.index: list = []
        self.data: dict[str, list] = {k: [] for k in self.data_keys}
        self.timestamps: dict[str, list] = {k: [] for k in self.data_keys}
        self.filled: dict[str, list] = {k: [] for k in self.filled_keys}
        self.no_filled: list[bool] = []  # the event came without a 'filled' key
        self.nbytes = 0

    def _column(self, key: str, sample: Any) -> Column:
        col = self.columns.get(key)
        if col is None:
            col = column_from_data_key(key, self.data_keys[key], sample)
            self.columns[key] = col
            self.checkers[key] = _checker(col, self.run_uid)
        return col

    def _promote(self, key: str, value: Any, ev: Mapping) -> Any:
        # Rejecting the event would abort the user's run and lose data; widen the column
        # to float64 instead (stored rows are converted at the next flush) and say so.
        # Integers float64 cannot hold exactly (beyond 2**53) keep the key as JSON instead.
        if key in self.big_ints or any(_beyond_float(v) for v in self.data[key]):
            return self._to_json(key, f"data[{key!r}] = {value!r} is not an integer, and "
                                 "integers this column holds are beyond float64's exact range "
                                 "(2**53)", value, ev)
        old = self.columns[key]
        self.columns[key] = col = Column(key, np.dtype("float64"), old.shape, old.dims,
                                         old.external, old.data_key)
        self.checkers[key] = _checker(col, self.run_uid)
        warnings.warn(f"run {self.run_uid}: data[{key!r}] = {value!r} is not an integer although "
                      f"descriptor {self.descriptor['uid']} declares one; the column is stored "
                      "as float64 from now on", DescriptorMismatchWarning, stacklevel=6)
        return self.checkers[key](value, ev)

    def _to_json(self, key: str, why: str, value: Any, ev: Mapping) -> Any:
        # The value cannot go in the declared column: aborting the scan would lose the
        # user's data, so keep this key as JSON text (rows buffered or stored before too).
        col = json_column(key, self.data_keys[key])
        check = _checker(col, self.run_uid)
        text = check(value, ev)  # not JSON-serialisable: refused before anything changes
        if key not in self.json_keys:
            self.json_keys.add(key)
            self.columns[key], self.checkers[key] = col, check
            self.data[key] = [check(v, ev) for v in self.data[key]]
            self.writer.mismatch(key, why, self.descriptor)
        return text

    def add(self, ev: Mapping, doc_index: int) -> None:
        data, ts = ev["data"], ev["timestamps"]
        if data.keys() != self.key_set:
            missing = sorted(self.key_set - set(data))
            extra = sorted(set(data) - self.key_set)
            raise InvalidDocument(
                f"data keys differ from descriptor {self.descriptor['uid']}: "
                f"missing {missing}, unexpected {extra}",
                run_uid=self.run_uid, name="event", doc_uid=ev.get("uid"))
        if ts.keys() != self.key_set:
            raise InvalidDocument(
                f"timestamps keys {sorted(ts)} differ from data keys {sorted(self.key_set)}",
                run_uid=self.run_uid, name="event", doc_uid=ev.get("uid"))
        filled = ev.get("filled") or {}
        values = {}
        for key, v in data.items():  # check everything before buffering anything
            if key not in self.checkers:
                self._column(key, v)
            try:
                values[key] = self.checkers[key](v, ev)
            except _NeedsFloat:
                values[key] = self._promote(key, v, ev)
            except _Mismatch as exc:
                values[key] = self._to_json(key, str(exc), v, ev)
            t = ts[key]
            if type(t) is not float and (not isinstance(t, (Real, np.number)) or isinstance(t, (str, bool))):
                raise InvalidDocument(f"timestamps[{key!r}] = {t!r} is not a number",
                                      run_uid=self.run_uid, name="event", doc_uid=ev.get("uid"))
        for k in filled:
            if k not in self.key_set:
                raise InvalidDocument(f"filled names {k!r}, which is not a data key",
                                      run_uid=self.run_uid, name="event", doc_uid=ev.get("uid"))
        for key, v in values.items():
            self.data[key].append(v)
            self.timestamps[key].append(ts[key])
            if isinstance(v, np.ndarray):
                self.nbytes += v.nbytes
        for k in set(filled) - self.filled_keys:  # a key first named in 'filled' now
            self.filled_keys.add(k)
            self.filled[k] = [-1] * len(self.time)
        for k in self.filled_keys:
            f = filled.get(k)
            self.filled[k].append(-1 if f is None else (1 if f is True or isinstance(f, str) else int(bool(f))))
        self.no_filled.append("filled" not in ev)
        self.time.append(ev["time"])
        self.seq_num.append(ev["seq_num"])
        self.uid.append(ev["uid"])
        self.index.append(doc_index)
        self.nbytes += 64 + 16 * len(values)

    def __len__(self) -> int:
        return len(self.time)

    # --- storing -----------------------------------------------------------
    def _create(self, f) -> None:
        g = f.require_group(self.group)
        g.attrs["uid"] = self.descriptor["uid"]
        g.attrs["doc_index"] = self.doc_index
        g.attrs["name"] = self.descriptor.get("name", "primary")
        if "descriptor" not in g:
            g.create_dataset("descriptor", data=_docs.dumps(self.descriptor), dtype=STR)
        for name, dt in (("time", "f8"), ("seq_num", "i8"), ("uid", STR), ("doc_index", "i8")):
            if name not in g:
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(self._rows(1024),))
        g.require_group("data")
        g.require_group("timestamps")
        self.created = True

    def _ensure_column(self, g, key: str) -> None:
        name = h5name(key)
        if name in g["data"]:
            ds = g["data"][name]
            col = self.columns.get(key)
            if col is not None and col.json and ds.attrs.get("dtype") != "json":
                self._rewrite_as_json(g, key)
                return
            if col is not None and col.dtype.kind == "f" and ds.dtype.kind in "iu":
                old = ds[...]  # promoted from integer: rewrite the column as float64
                attrs = dict(ds.attrs)
                del g["data"][name]
                new = g["data"].create_dataset(name, data=old.astype("f8"), maxshape=(None,),
                                               chunks=(chunk_rows((), col.dtype),))
                new.attrs.update(attrs)
                new.attrs["dtype"] = "<f8"
            return
        col = self.columns.get(key) or column_from_data_key(key, self.data_keys[key])
        if col.external or col.json:
            dt, row = STR, ()
        elif col.variable:
            import h5py
            dt, row = h5py.vlen_dtype(storage_dtype(col.dtype)), ()
            g.require_group("shapes").create_dataset(
                name, shape=(0, len(col.shape)), maxshape=(None, len(col.shape)),
                dtype="i8", chunks=(1024, max(1, len(col.shape))))
        else:
            dt, row = storage_dtype(col.dtype), col.shape
        # HDF5 chunks cannot have a 0-length side: such a dimension is declared unlimited
        ds = g["data"].create_dataset(
            name, shape=(0, *row), maxshape=(None, *(None if s == 0 else s for s in row)), dtype=dt,
            chunks=(self._rows(chunk_rows(row, col.dtype)), *(max(1, s) for s in row)))
        ds.attrs["key"] = key
        ds.attrs["dtype"] = "json" if col.json else (col.dtype.str if col.dtype.kind != "O" else "str")
        g["timestamps"].create_dataset(name, shape=(0,), maxshape=(None,), dtype="f8",
                                       chunks=(self._rows(1024),))

    def _rewrite_as_json(self, g, key: str) -> None:
        """Rows stored before a key turned to JSON: rewrite them as JSON text."""
        name = h5name(key)
        ds = g["data"][name]
        old = read_dataset(g.file, ds.name, slice(0, self.n_stored), g.file.filename)
        texts = np.empty(len(old), dtype=object)
        for i, v in enumerate(old):
            texts[i] = _docs.dumps(v)
        del g["data"][name]
        if "shapes" in g and name in g["shapes"]:
            del g["shapes"][name]
        new = g["data"].create_dataset(name, data=texts, dtype=STR, maxshape=(None,),
                                       chunks=(self._rows(1024),))
        new.attrs["key"] = key
        new.attrs["dtype"] = "json"

    def _rows(self, rows: int) -> int:
        # A segment first stored at the run's stop will never grow: size its chunks to fit.
        return max(1, min(rows, len(self.time))) if self.final else rows

    def store(self, f, final: bool = False) -> None:
        self.final = final and not self.created
        if not self.created or self.group not in f:
            self._create(f)
        g = f[self.group]
        n0, n = self.n_stored, len(self.time)
        for key in self.data_keys:
            self._ensure_column(g, key)
        if "filled" not in g and self.filled_keys:
            g.create_group("filled")
        for key in self.filled_keys:
            name = h5name(key)
            if name not in g["filled"]:
                ds = g["filled"].create_dataset(name, shape=(n0,), maxshape=(None,), dtype="i1",
                                                chunks=(self._rows(1024),), fillvalue=-1)
                ds.attrs["key"] = key
        if n == 0:
            return
        for key, values in self.data.items():
            name = h5name(key)
            ds = g["data"][name]
            col = self.columns[key]
            if col.variable and not col.external:
                flat = np.empty(n, dtype=object)
                for i, v in enumerate(values):  # one by one: equal lengths must not make a 2-D array
                    flat[i] = np.asarray(v, dtype=col.dtype).ravel()
                shapes = np.array([np.shape(v) for v in values], dtype="i8").reshape(n, -1)
                sds = g["shapes"][name]
                sds.resize(n0 + n, axis=0)
                sds[n0:n0 + n] = shapes
                arr = flat
            elif col.dtype.kind == "O" or col.external:
                arr = np.empty((n, *ds.shape[1:]), dtype=object)
                arr[...] = values if ds.ndim == 1 else np.stack(values)
            else:
                arr = np.asarray(values, dtype=col.dtype)
                if col.dtype.kind in "iu" and key not in self.big_ints and _beyond_float(arr):
                    self.big_ints.add(key)
            ds.resize(n0 + n, axis=0)
            if col.variable and not col.external:
                for i, v in enumerate(arr):  # h5py mis-broadcasts slices of equal-length rows
                    ds[n0 + i] = v
            else:
                ds[n0:n0 + n] = arr
            tds = g["timestamps"][name]
            tds.resize(n0 + n, axis=0)
            tds[n0:n0 + n] = np.asarray(self.timestamps[key], dtype="f8")
        for key, values in self.filled.items():
            ds = g["filled"][h5name(key)]
            ds.resize(n0 + n, axis=0)
            ds[n0:n0 + n] = np.asarray(values, dtype="i1")
        if "no_filled" in g or any(self.no_filled):  # only runs with such events have it
            if "no_filled" not in g:
                g.create_dataset("no_filled", shape=(n0,), maxshape=(None,), dtype="i1",
                                 chunks=(self._rows(1024),), fillvalue=0)
            ds = g["no_filled"]
            ds.resize(n0 + n, axis=0)
            ds[n0:n0 + n] = np.asarray(self.no_filled, dtype="i1")
        for name, values, dt in (("time", self.time, "f8"), ("seq_num", self.seq_num, "i8"),
                                 ("uid", self.uid, object), ("doc_index", self.index, "i8")):
            ds = g[name]
            ds.resize(n0 + n, axis=0)
            ds[n0:n0 + n] = np.asarray(values, dtype=dt)

    def committed(self) -> None:
        """The flush that stored the buffered rows is complete: drop them from memory."""
        self.n_stored += len(self.time)
        self._reset()


class RunWriter:
    """Writes the documents of one run to ``path``; call ``flush()`` to make them visible.

    Documents are expected to be validated already (see :mod:`databroker_lite.documents`);
    this class checks what the schema cannot: that events match their descriptor.
    """

    def __init__(self, path: str | os.PathLike, start: dict, *, flush_rows: int = FLUSH_ROWS,
                 flush_bytes: int = FLUSH_BYTES, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.path = os.fspath(path)
        self.run_uid = start["uid"]
        self.start_doc = start
        self.stop_doc: dict | None = None
        self.flush_rows, self.flush_bytes, self.flush_seconds = flush_rows, flush_bytes, flush_seconds
        self._segments: dict[str, _SegmentBuffer] = {}
        self._stream_counts: dict[str, int] = {}
        self._side: dict[str, list[tuple[int, str, str]]] = {n: [] for n in SIDE_DOCUMENTS}
        self._side_ids: dict[str, set] = {n: set() for n in SIDE_DOCUMENTS}
        self._doc_index = 1
        self._warned: set[str] = set()
        self._warned_shapes: set[str] = set()  # keys whose shape changed between descriptors
        if os.path.exists(self.path):
            raise InvalidDocument(f"a run file already exists at {self.path}",
                                  run_uid=self.run_uid, name="start")
        # Build the file aside and rename it into place, so nobody sees it half made.
        part = f"{self.path}.{uuid.uuid4().hex[:8]}.partial"
        try:
            with open_h5(part, "w-") as f:
                f.attrs[LAYOUT_ATTR] = LAYOUT_VERSION
                f.attrs["uid"] = self.run_uid
                f.create_dataset("start", data=_docs.dumps(start), dtype=STR)
                f.create_group("streams")
                f.create_group("documents")
            try:  # a hard link never replaces: of two writers of one uid, one wins
                os.link(part, self.path)
            except FileExistsError:
                raise InvalidDocument(f"a run file already exists at {self.path}",
                                      run_uid=self.run_uid, name="start") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                if os.path.exists(self.path):  # no hard links here (some network file systems)
                    raise InvalidDocument(f"a run file already exists at {self.path}",
                                          run_uid=self.run_uid, name="start") from None
                os.replace(part, self.path)
        except (InvalidDocument, CatalogError):
            raise
        except OSError as exc:  # a full disk, say: no run file is left behind
            raise CatalogError(exc.errno or errno.EIO,
                               f"{self.path}: cannot create the run file ({exc})") from exc
        finally:
            if os.path.exists(part):
                os.remove(part)
        self._last_flush = time.monotonic()

    @property
    def closed(self) -> bool:
        return self.stop_doc is not None

    def _fail(self, name: str, doc: Mapping, msg: str) -> None:
        raise InvalidDocument(msg, run_uid=self.run_uid, name=name, doc_uid=_docs.doc_uid(name, doc))

    def mismatch(self, key: str, why: str, descriptor: Mapping) -> None:
        """Say (once per key) that a key's values are kept as JSON text."""
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(f"run {self.run_uid}, stream {descriptor.get('name', 'primary')!r}: {why}; "
                      f"descriptor {descriptor['uid']} declares {descriptor['data_keys'][key].get('dtype')!r} "
                      f"of shape {descriptor['data_keys'][key].get('shape')}. The key is stored as it "
                      "came (JSON text, one per event) and read back as one object per event",
                      DescriptorMismatchWarning, stacklevel=7)

    def _compare_descriptors(self, stream: str, doc: Mapping) -> None:
        """Say (once per key) that a key changes shape between descriptors of a stream (a
        detector's ROI or binning reconfigured mid-run): it is read as one array per event."""
        for seg in self._segments.values():
            if seg.descriptor.get("name", "primary") != stream:
                continue
            for key, dk in doc["data_keys"].items():
                old = seg.descriptor["data_keys"].get(key)
                if old is None or key in self._warned_shapes or \
                        list(old.get("shape") or []) == list(dk.get("shape") or []):
                    continue
                self._warned_shapes.add(key)
                warnings.warn(f"run {self.run_uid}, stream {stream!r}: descriptor {doc['uid']} declares "
                              f"{key!r} of shape {dk.get('shape')}, descriptor {seg.descriptor['uid']} "
                              f"of shape {old.get('shape')}; the key is read as one array per event",
                              DescriptorMismatchWarning, stacklevel=6)

    def _next_index(self) -> int:
        i = self._doc_index
        self._doc_index += 1
        return i

    def descriptor(self, doc: dict) -> None:
        if doc["uid"] in self._segments:
            self._fail("descriptor", doc, "a descriptor with this uid was already inserted")
        for name in (doc.get("name", "primary"), *doc["data_keys"]):
            if "\x00" in name:  # HDF5 names end at NUL
                self._fail("descriptor", doc, f"the name {name!r} contains a NUL character")
        stream = doc.get("name", "primary")
        self._compare_descriptors(stream, doc)
        i = self._stream_counts.get(stream, 0)
        self._stream_counts[stream] = i + 1
        seg = _SegmentBuffer(self, doc, f"streams/{h5name(stream)}/{i}", self._next_index())
        self._segments[doc["uid"]] = seg
        self._maybe_flush()

    def _segment(self, name: str, doc: Mapping) -> _SegmentBuffer:
        seg = self._segments.get(doc["descriptor"])
        if seg is None:
            self._fail(name, doc, f"refers to descriptor {doc['descriptor']!r}, "
                                  "which this run has not received")
        return seg

    def event(self, doc: Mapping) -> None:
        seg = self._segment("event", doc)
        seg.add(doc, self._doc_index)
        self._doc_index += 1
        if len(seg) >= self.flush_rows:
            self.flush()
        else:
            self._maybe_flush()

    def event_page(self, doc: Mapping) -> None:
        seg = self._segment("event_page", doc)
        events = list(_docs.iter_singles("event_page", doc))
        start_len = len(seg)
        try:
            for _, ev in events:
                seg.add(ev, self._doc_index)
                self._doc_index += 1
        except InvalidDocument:
            self._rollback(seg, start_len)
            raise
        if len(seg) >= self.flush_rows:
            self.flush()
        else:
            self._maybe_flush()

    def _rollback(self, seg: _SegmentBuffer, n: int) -> None:
        # undo the part of a page buffered before a bad event was found
        k = len(seg) - n
        self._doc_index -= k
        for lst in (seg.time, seg.seq_num, seg.uid, seg.index, seg.no_filled, *seg.data.values(),
                    *seg.timestamps.values(), *seg.filled.values()):
            del lst[n:]

    def _side_doc(self, name: str, doc: Mapping, ident: str) -> None:
        if ident in self._side_ids[name]:
            self._fail(name, doc, f"a {name} with id {ident!r} was already inserted")
        self._side_ids[name].add(ident)
        self._side[name].append((self._next_index(), _docs.dumps(doc), ident))
        self._maybe_flush()

    def resource(self, doc: Mapping) -> None:
        self._side_doc("resource", doc, doc["uid"])

    def datum(self, doc: Mapping) -> None:
        if doc["resource"] not in self._side_ids["resource"]:
            self._fail("datum", doc, f"refers to resource {doc['resource']!r}, "
                                     "which this run has not received")
        self._side_doc("datum", doc, doc["datum_id"])

    def datum_page(self, doc: Mapping) -> None:
        for _, d in _docs.iter_singles("datum_page", doc):
            self.datum(d)

    def stream_resource(self, doc: Mapping) -> None:
        self._side_doc("stream_resource", doc, doc["uid"])

    def stream_datum(self, doc: Mapping) -> None:
        if doc["stream_resource"] not in self._side_ids["stream_resource"]:
            self._fail("stream_datum", doc, f"refers to stream_resource {doc['stream_resource']!r}, "
                                            "which this run has not received")
        self._segment("stream_datum", doc)
        self._side_doc("stream_datum", doc, doc["uid"])

    def stop(self, doc: dict) -> None:
        self.flush(final=True, stop=doc)
        self.stop_doc = doc
        FILE_CACHE.forget(self.path)

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_seconds or self._buffered_bytes() >= self.flush_bytes:
            self.flush()

    def _buffered_bytes(self) -> int:
        return sum(s.nbytes for s in self._segments.values())

    def flush(self, final: bool = False, stop: dict | None = None) -> None:
        """Write everything buffered to the file, so other processes can read it."""
        dirty = [s for s in self._segments.values() if len(s) or not s.created]
        side = {k: v for k, v in self._side.items() if v}
        if not dirty and not side and stop is None:
            self._last_flush = time.monotonic()
            return
        before = [(s, s.created, s.final) for s in dirty]
        try:
            self._store(dirty, side, final, stop)
        except BaseException:
            for s, created, fin in before:  # the file was put back: so is what we know of it
                s.created, s.final = created, fin
            raise
        for name in side:
            self._side[name] = []
        for seg in dirty:
            seg.committed()
        self._last_flush = time.monotonic()

    def _store(self, dirty: list[_SegmentBuffer], side: dict[str, list], final: bool,
               stop: dict | None) -> None:
        # DATABROKER_LITE_SYNC=stop: a finished run is fsynced, so it survives a power cut too
        with journaled_h5(self.path, sync=stop is not None and _files.SYNC_AT_STOP) as f:
            for name, rows in side.items():
                g = f["documents"].require_group(name)
                if "json" not in g:
                    g.create_dataset("json", shape=(0,), maxshape=(None,), dtype=STR, chunks=(256,))
                    g.create_dataset("id", shape=(0,), maxshape=(None,), dtype=STR, chunks=(256,))
                    g.create_dataset("doc_index", shape=(0,), maxshape=(None,), dtype="i8", chunks=(256,))
                n0, n = g["doc_index"].shape[0], len(rows)
                for ds_name, col, dt in (("json", 1, object), ("id", 2, object), ("doc_index", 0, "i8")):
                    ds = g[ds_name]
                    ds.resize(n0 + n, axis=0)
                    ds[n0:] = np.asarray([r[col] for r in rows], dtype=dt)
            for seg in dirty:
                seg.store(f, final=final)
            if stop is not None:  # last, so a file with /stop holds every row
                f.create_dataset("stop", data=_docs.dumps(stop), dtype=STR)
