"""NeXus export: one HDF5 NeXus file per run (NXentry, NXdata with signal/axes, metadata)."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import h5py
import numpy as np

from ._common import ExportWriter, dumps, is_container, is_variable, plain, run_prefix
from .spec import plan_description

_STR = h5py.string_dtype()


def _iso(t: float | None) -> str:
    return datetime.fromtimestamp(t if t is not None else 0, tz=timezone.utc).isoformat()


def _text(group: h5py.Group, name: str, value: str) -> None:
    if name in group:
        del group[name]
    group.create_dataset(name, data=str(value), dtype=_STR)


def _nx_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    g = parent.require_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _h5name(key: str) -> str:
    return str(key).replace("/", "_") or "_"


def write_collection(group: h5py.Group, mapping: dict) -> None:
    """``mapping`` as an NXcollection: dicts become subgroups; numbers, strings and
    homogeneous lists become datasets; anything else is stored as a JSON string."""
    for key, value in mapping.items():
        name = _h5name(key)
        if isinstance(value, dict):
            write_collection(_nx_group(group, name, "NXcollection"), value)
            continue
        v = plain(value)
        arr = None
        if isinstance(v, (bool, int, float)) or (
                isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            arr = np.asarray(v)
        elif isinstance(v, str):
            group.create_dataset(name, data=v, dtype=_STR)
            continue
        elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            group.create_dataset(name, data=v, dtype=_STR)
            continue
        if arr is not None and arr.dtype.kind in "iufb":
            group.create_dataset(name, data=arr)
        else:
            ds = group.create_dataset(name, data=dumps(value), dtype=_STR)
            ds.attrs["encoding"] = "json"


class NexusWriter(ExportWriter):
    """Write each run as a NeXus HDF5 file ``scan<scan_id>_<uid8>.nxs`` in ``directory``.

    Layout (``NX_class`` attributes on every group; the root's ``default`` is ``entry``)::

        /entry                      NXentry: title, entry_identifier (uid), start_time,
                                             end_time, exit_status, plan_name
          /data                     NXdata of the primary stream: ``signal`` (the first
                                    hinted detector), ``axes`` (the plan's
                                    start["hints"]["dimensions"], else the motors, else time);
                                    without primary numbers (a fly scan), of the first other
                                    stream with some (but not live when an ophyd-async
                                    detector's frames are in its own files); none (and no ``default``) if no stream has
          /instrument               NXinstrument: name (beamline_id), /bluesky_streams ->
          /sample                   NXsample: from start["sample"]
          /bluesky                  NXcollection: start (as an NXcollection), start_json,
                                    stop_json, descriptors_json
            /streams/<stream>       NXcollection: time and one dataset per data key

    Datasets grow as events arrive and the file is flushed after each page. A key whose
    rows are not one regular array (values stored as they came: arrays of other lengths,
    mappings) is a string dataset of each row's JSON text, with ``encoding="json"``.
    """

    def __init__(self, directory: str | os.PathLike, stream: str = "primary", *,
                 filename: str | None = None) -> None:
        super().__init__()
        self.directory = os.fspath(directory)
        self.stream = stream
        self.filename = filename
        os.makedirs(self.directory, exist_ok=True)
        self._f: h5py.File | None = None
        self._nrows: dict[str, int] = {}

    @property
    def _entry(self) -> h5py.Group:
        assert self._f is not None
        return self._f["entry"]

    def start(self, doc: dict) -> dict:
        self.close()
        super().start(doc)
        path = os.path.join(self.directory, self.filename or run_prefix(doc) + ".nxs")
        f = self._f = h5py.File(path, "w")
        self._wrote(path)
        self._nrows = {}
        f.attrs.update(NX_class="NXroot", default="entry", creator="databroker_lite",
                       file_name=os.path.basename(path), file_time=_iso(doc.get("time")),
                       HDF5_Version=h5py.version.hdf5_version, h5py_version=h5py.version.version)
        e = _nx_group(f, "entry", "NXentry")  # its "default" is set with the NXdata
        _text(e, "title", f"scan {doc.get('scan_id', '?')}: {plan_description(doc)}")
        _text(e, "entry_identifier", doc["uid"])
        _text(e, "start_time", _iso(doc.get("time")))
        _text(e, "plan_name", str(doc.get("plan_name", "")))
        _text(e, "program_name", "bluesky")
        inst = _nx_group(e, "instrument", "NXinstrument")
        _text(inst, "name", str(doc.get("beamline_id") or doc.get("instrument") or "unknown"))
        sample = _nx_group(e, "sample", "NXsample")
        s = doc.get("sample")
        if isinstance(s, dict):
            write_collection(sample, s)
        elif s is not None:
            _text(sample, "name", str(s))
        bs = _nx_group(e, "bluesky", "NXcollection")
        bs.create_dataset("start_json", data=dumps(doc), dtype=_STR)
        write_collection(_nx_group(bs, "start", "NXcollection"), doc)
        streams = _nx_group(bs, "streams", "NXcollection")
        inst["bluesky_streams"] = h5py.SoftLink(streams.name)
        f.flush()
        return doc

    def descriptor(self, doc: dict) -> dict:
        super().descriptor(doc)
        if self._f is None or doc["uid"] not in self._descriptors:
            return doc
        name = doc.get("name", "primary")
        _nx_group(self._entry["bluesky/streams"], _h5name(name), "NXcollection")
        self._nrows.setdefault(name, 0)
        self._set_json("descriptors_json", self.run_metadata()["descriptors"])
        return doc

    def _set_json(self, name: str, value: Any) -> None:
        bs = self._entry["bluesky"]
        if name in bs:
            del bs[name]
        bs.create_dataset(name, data=dumps(value), dtype=_STR)

    def _append(self, g: h5py.Group, key: str, values: Any, at: int, dk: dict | None) -> None:
        if dk is not None and is_variable(dk):
            # rows of different shapes: flattened into a variable-length dataset, each
            # row's shape in <key>_shape (as the run files store them)
            rows = [np.asarray(v) for v in values]
            base = np.result_type(*rows) if rows else np.dtype("f8")
            flat = np.empty(len(rows), dtype=object)
            flat[:] = [r.astype(base).ravel() for r in rows]
            self._append(g, f"{key}_shape", np.array([r.shape for r in rows], dtype="i8"), at, None)
            self._extend(g, key, flat, h5py.vlen_dtype(base), at, dk)
            return
        arr = self._json_rows(g, key, values, dk)
        if arr is not None:  # values stored as they came (arrays of other shapes, mappings)
            self._extend(g, key, arr, _STR, at, dk)
            g[_h5name(key)].attrs["encoding"] = "json"
            return
        arr = np.asarray(plain(values) if isinstance(values, list) and values
                         and isinstance(values[0], str) else values)
        if arr.dtype.kind in "OUS":
            arr = np.asarray([str(x) for x in arr.ravel()], dtype=object).reshape(arr.shape)
            dtype: Any = _STR
        else:
            dtype = arr.dtype
        self._extend(g, key, arr, dtype, at, dk)

    @staticmethod
    def _json_rows(g: h5py.Group, key: str, values: Any, dk: dict | None) -> np.ndarray | None:
        """The JSON text of each row, if the key's rows are not one regular array: rows of
        different shapes, arrays in an object column, or a shape other than the descriptor's
        (what the run file stores as it came). ``None`` for a regular column."""
        name = _h5name(key)
        if name in g:
            if g[name].attrs.get("encoding") != "json":
                return None
        else:
            try:
                arr = np.asarray(values)
            except ValueError:  # ragged rows
                arr = None
            if arr is not None:
                declared = tuple((dk or {}).get("shape") or ())
                if not (arr.dtype.kind == "O" and any(is_container(x) for x in arr.ravel())
                        or dk and "shape" in dk and arr.ndim > 1 and arr.shape[1:] != declared):
                    return None
        out = np.empty(len(values), dtype=object)
        out[:] = [dumps(v) for v in values]
        return out

    def _extend(self, g: h5py.Group, key: str, arr: np.ndarray, dtype: Any, at: int,
                dk: dict | None) -> None:
        """Append ``arr``'s rows to dataset ``key`` at row ``at``, creating it on first use."""
        name = _h5name(key)
        if name not in g:
            fill = (np.nan if arr.dtype.kind == "f" else b"" if dtype is _STR
                    else None if arr.dtype.kind == "O" else 0)
            row = int(np.prod(arr.shape[1:], dtype=np.int64)) * max(arr.dtype.itemsize, 8)
            chunk_rows = max(1, min(1024, (1 << 16) // max(row, 1)))  # ~64 kB chunks
            rest = arr.shape[1:]  # a zero-length axis (an empty peak list) stays resizable,
            # as HDF5 wants chunks of at least 1 along every axis
            ds = g.create_dataset(name, shape=(0, *rest), maxshape=(None, *(s or None for s in rest)),
                                  dtype=dtype, chunks=(chunk_rows, *(s or 1 for s in rest)),
                                  fillvalue=fill)
            for a in ("units", "source", "dtype", "precision"):
                if dk and a in dk:
                    ds.attrs[a] = str(dk[a])
        ds = g[name]
        if arr.shape[1:] != ds.shape[1:]:  # a new descriptor changed the shape mid-run: the
            # rows of this shape go to a dataset of their own, the others' rows left empty
            shape = "x".join(str(s) for s in arr.shape[1:]) or "scalar"
            ds.resize(max(ds.shape[0], at + len(arr)), axis=0)  # rows stay aligned with time
            return self._extend(g, f"{key}_shape_{shape}", arr, dtype, at, dk)
        ds.resize(at + len(arr), axis=0)
        ds[at:at + len(arr)] = arr

    def rows(self, descriptor: dict, page: dict) -> None:
        if self._f is None:
            return
        name = descriptor.get("name", "primary")
        g = self._entry["bluesky/streams"][_h5name(name)]
        at = self._nrows[name]
        self._append(g, "time", np.asarray(page["time"], dtype=float), at, {"units": "s"})
        for key, values in page["data"].items():
            self._append(g, key, values, at, descriptor["data_keys"].get(key))
        self._nrows[name] = end = at + len(page["time"])
        for ds in g.values():  # keys this descriptor lacks, or of another shape: rows kept
            if isinstance(ds, h5py.Dataset) and ds.ndim and ds.shape[0] < end:  # in step
                ds.resize(end, axis=0)  # with time, left at the fill value
        if name == self.stream and "data" not in self._entry:
            self._nxdata(name)
        self._f.flush()

    def _nxdata(self, stream: str) -> bool:
        """Link ``stream``'s signal and axes into ``/entry/data`` (NXdata) and make it the
        entry's default; False if the stream has no numeric data key with rows."""
        g = self._entry["bluesky/streams"].get(_h5name(stream))
        if g is None:
            return False
        start = self._start or {}
        numeric = [k for k in g if isinstance(g[k], h5py.Dataset) and g[k].dtype.kind in "iufb"
                   and len(g[k]) and 0 not in g[k].shape[1:]]
        axes: list[str] = []
        for fields, s in (start.get("hints") or {}).get("dimensions", []) or []:
            if s == stream:
                axes += [_h5name(f) for f in fields if _h5name(f) in numeric]
        if not axes:
            axes = [_h5name(m) for m in start.get("motors", []) or [] if _h5name(m) in numeric]
        axes = list(dict.fromkeys(axes)) or ["time"]
        hinted = [_h5name(f) for d in self._descriptors.values() if d.get("name") == stream
                  for h in (d.get("hints") or {}).values() for f in h.get("fields", [])]
        candidates = [k for k in hinted if k in numeric and k not in axes]
        order = [_h5name(k) for d in self._descriptors.values() if d.get("name") == stream
                 for k in d["data_keys"]]
        rest = [k for k in dict.fromkeys(order) if k in numeric and k not in axes]
        candidates += sorted(rest, key=lambda k: g[k].dtype.kind == "b")  # numbers before flags
        if not candidates or axes[0] not in g:
            return False
        signal = candidates[0]
        d = _nx_group(self._entry, "data", "NXdata")
        for k in dict.fromkeys([signal, *axes]):
            d[k] = g[k]  # hard links: the same growing datasets
        d.attrs["signal"] = signal
        d.attrs["axes"] = [axes[0]] + ["."] * (g[signal].ndim - 1)
        for a in axes:
            d.attrs[f"{a}_indices"] = 0
        self._entry.attrs["default"] = "data"
        return True

    def _detectors_elsewhere(self) -> bool:
        """Whether the primary stream has rows and keys no event carried: live, an
        ophyd-async detector's frames are in its own files (``stream_datum``). Such a run
        gets no NXdata rather than a plot of another stream (the baseline's motors)."""
        g = self._entry["bluesky/streams"].get(_h5name(self.stream))
        if g is None or not self._nrows.get(self.stream):
            return False
        return any(dk.get("external") == "STREAM:" and _h5name(k) not in g
                   for d in self._descriptors.values() if d.get("name") == self.stream
                   for k, dk in d["data_keys"].items())

    def _end(self, stop: dict | None) -> None:
        if self._f is None:
            return
        e = self._entry
        if "data" not in e and not self._detectors_elsewhere():
            # no primary (a fly scan): the first other stream with numbers
            names = [n for n in self._nrows if n != self.stream]
            for name in sorted(names, key=lambda n: n == "baseline"):  # baseline last
                if self._nxdata(name):
                    break
        if stop is not None:
            _text(e, "end_time", _iso(stop.get("time")))
            _text(e, "exit_status", str(stop.get("exit_status", "")))
            if stop.get("reason"):
                _text(e, "exit_reason", str(stop["reason"]))
            self._set_json("stop_json", stop)
        else:
            _text(e, "exit_status", "incomplete (no stop document)")
        self._set_json("descriptors_json", self.run_metadata()["descriptors"])
        self._f.close()
        self._f = None

