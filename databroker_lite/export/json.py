"""JSON export: the metadata and every stream of a run in one strict-JSON file."""
from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np

from ._common import ExportWriter, dumps, run_prefix, safe_name

#: What the file says about itself (the ``"format"`` member).
FORMAT = "databroker_lite.export.json/2"

#: Members of the file that are not streams.
RESERVED = frozenset({"format", "nonfinite_floats", "metadata"})


class _Column:
    """The JSON text of one column, spooled to a file so that big streams are not in memory."""

    def __init__(self, path: str) -> None:
        self.path, self.n = path, 0
        self.f = open(path, "w", encoding="utf-8")

    def add(self, values: list, at_row: int, fill: Any) -> None:
        if at_row > self.n:  # rows of a descriptor without this key
            self.add([fill] * (at_row - self.n), self.n, fill)
        for v in values:
            self.f.write(("," if self.n else "") + dumps(v))
            self.n += 1


def _dims(key: str, dk: dict) -> list[str]:
    """The dimensions ``Stream.read()`` gives the key (``time`` first)."""
    shape = dk.get("shape") or []
    if any(s is None or (isinstance(s, int) and s < 0) for s in shape):
        return ["time"]  # variable length: one object per event
    dims = dk.get("dims")
    if dims and len(dims) == len(shape):
        return ["time", *dims]
    return ["time", *(f"{key}_dim_{i}" for i in range(len(shape)))]


def _attrs(dk: dict) -> dict:
    out = {k: dk[k] for k in ("source", "units", "object_name", "precision") if k in dk}
    if dk.get("external"):
        out["external"] = dk["external"]
    return out


def _fill(dk: dict) -> Any:
    """The value of a row whose descriptor lacks the key, as ``Stream.read()`` fills it."""
    if dk.get("dtype") in ("number", "integer", "boolean") or dk.get("dtype_numpy", "")[1:2] in "fiub":
        value: Any = float("nan")
    else:
        value = ""
    for n in reversed([int(s) for s in dk.get("shape") or [] if isinstance(s, int) and s >= 0]):
        value = [value] * n
    return value


class JSONWriter(ExportWriter):
    """Write each run as one JSON file ``scan<scan_id>_<uid8>.json`` in ``directory``.

    The layout is the one of the data-export guide (``data[stream] = ds.to_dict()``),
    so ``data["primary"]`` is what ``run.primary.read().to_dict()`` gives and
    ``xarray.Dataset.from_dict(data["primary"])`` reads it back::

        {"format": "databroker_lite.export.json/2", "nonfinite_floats": "strings",
         "metadata": {"start": {...}, "stop": {...} or null, "descriptors": {stream: [...]}},
         "primary": {"coords": {"time": {"dims": ["time"], "attrs": {}, "data": [...]}},
                     "attrs": {"stream_name": "primary", "uid": ...},
                     "dims": {"time": 5, ...},
                     "data_vars": {key: {"dims": [...], "attrs": {...}, "data": [...]}}},
         "baseline": {...}}

    The file is strict JSON: non-finite floats are written as the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"``; arrays are nested lists. Live, the file is written
    at start (metadata, no streams yet) and complete at stop; the rows wait in spool
    files beside it meanwhile.
    """

    def __init__(self, directory: str | os.PathLike, *, filename: str | None = None) -> None:
        super().__init__()
        self.directory = os.fspath(directory)
        self.filename = filename
        os.makedirs(self.directory, exist_ok=True)
        self._cols: dict[str, dict[str, _Column]] = {}
        self._keys: dict[str, dict[str, dict]] = {}
        self._shapes: dict[tuple[str, str], tuple] = {}
        self._nrows: dict[str, int] = {}
        self._spool = ""
        self._path = ""

    def start(self, doc: dict) -> dict:
        self._finish()
        super().start(doc)
        prefix = run_prefix(doc)
        self._path = os.path.join(self.directory, self.filename or prefix + ".json")
        self._spool = os.path.join(self.directory, f".{prefix}.json.spool")
        os.makedirs(self._spool, exist_ok=True)
        self._cols, self._keys, self._shapes, self._nrows = {}, {}, {}, {}
        self._write()
        return doc

    def _column(self, stream: str, key: str) -> _Column:
        cols = self._cols.setdefault(stream, {})
        if key not in cols:
            cols[key] = _Column(os.path.join(self._spool, f"{safe_name(stream)}.{len(cols)}.part"))
        return cols[key]

    def descriptor(self, doc: dict) -> dict:
        super().descriptor(doc)
        if doc["uid"] not in self._descriptors:  # not of the run being written
            return doc
        stream = doc.get("name", "primary")
        if stream in RESERVED:
            from ..errors import ExportError
            raise ExportError(f"run {doc.get('run_start')}: a stream named {stream!r} cannot be "
                              f"a member of the JSON file beside {sorted(RESERVED)}; export it "
                              "as CSV or NeXus")
        self._nrows.setdefault(stream, 0)
        self._column(stream, "time")
        keys = self._keys.setdefault(stream, {})
        for key, dk in doc["data_keys"].items():
            keys.setdefault(key, dk)
            self._column(stream, key)
        return doc

    def rows(self, descriptor: dict, page: dict) -> None:
        stream = descriptor.get("name", "primary")
        at = self._nrows[stream]
        self._column(stream, "time").add(list(page["time"]), at, None)
        keys = self._keys.get(stream, {})
        for key, values in page["data"].items():
            arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
            if arr.dtype.kind != "O" and arr.ndim > 1:
                self._shapes.setdefault((stream, key), arr.shape[1:])
            self._column(stream, key).add(list(values), at, _fill(keys.get(key, {})))
        self._nrows[stream] = at + len(page["time"])

    def _end(self, stop: dict | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self._path or not self._spool:
            return
        self._write(complete=True)
        for cols in self._cols.values():
            for c in cols.values():
                c.f.close()
        shutil.rmtree(self._spool, ignore_errors=True)
        self._spool = ""

    def _stream_dims(self, stream: str, n: int) -> dict[str, int]:
        dims = {"time": n}
        for key, dk in self._keys.get(stream, {}).items():
            names = _dims(key, dk)[1:]
            shape = self._shapes.get((stream, key)) or tuple(int(s) for s in dk.get("shape") or [])
            dims.update((d, int(s)) for d, s in zip(names, shape))
        return dims

    def _write(self, complete: bool = False) -> None:
        head = dumps({"format": FORMAT, "nonfinite_floats": "strings",
                      "metadata": self.run_metadata()})
        uid = (self._start or {}).get("uid")
        tmp = self._path + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(head[:-1])
            for stream, cols in (self._cols.items() if complete else []):
                n = self._nrows.get(stream, 0)
                f.write(", " + dumps(stream) + ': {"coords": {"time": {"dims": ["time"], '
                        '"attrs": {}, "data": [')
                self._copy(cols["time"], n, f, None)
                f.write("]}}, \"attrs\": " + dumps({"stream_name": stream, "uid": uid})
                        + ', "dims": ' + dumps(self._stream_dims(stream, n)) + ', "data_vars": {')
                keys = [k for k in cols if k != "time"]
                for j, key in enumerate(keys):
                    dk = self._keys.get(stream, {}).get(key, {})
                    f.write(("," if j else "") + dumps(key) + ': {"dims": ' + dumps(_dims(key, dk))
                            + ', "attrs": ' + dumps(_attrs(dk)) + ', "data": [')
                    self._copy(cols[key], n, f, _fill(dk))
                    f.write("]}")
                f.write("}}")
            f.write("}")
        os.replace(tmp, self._path)
        self._wrote(self._path)

    @staticmethod
    def _copy(col: _Column, n: int, out: Any, fill: Any) -> None:
        col.add([], n, fill)  # pad the tail
        col.f.flush()
        with open(col.path, encoding="utf-8") as src:
            shutil.copyfileobj(src, out)
