"""JSON export: the metadata and every stream of a run in one strict-JSON file."""
from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from typing import Any

import numpy as np

from ._common import ExportWriter, dumps, is_container, is_variable, run_prefix, safe_name

#: What the file says about itself (the ``"format"`` member).
FORMAT = "databroker_lite.export.json/2"

#: Members of the file that are not streams.
RESERVED = frozenset({"format", "nonfinite_floats", "metadata"})


class _Column:
    """The JSON text of one column, spooled to a file (one row a line) so that big streams
    are not in memory."""

    def __init__(self, path: str) -> None:
        self.path, self.n = path, 0
        self.f = open(path, "w", encoding="utf-8")

    def add(self, values: list, at_row: int, fill: Any) -> None:
        if at_row > self.n:  # rows of a descriptor without this key
            self.add([fill] * (at_row - self.n), self.n, fill)
        for v in values:
            self.f.write(dumps(v) + "\n")
            self.n += 1


def _dims(key: str, dk: dict, shape: tuple | None) -> list[str]:
    """The dimensions of the key (``time`` first) for rows of ``shape``; ``None`` for rows
    that are not one regular array (one JSON text per event)."""
    if shape is None:
        return ["time"]
    dims = dk.get("dims")
    if dims and len(dims) == len(shape):
        return ["time", *dims]
    return ["time", *(f"{key}_dim_{i}" for i in range(len(shape)))]


def _attrs(dk: dict, as_json: bool) -> dict:
    out = {k: dk[k] for k in ("source", "units", "object_name", "precision") if k in dk}
    if dk.get("external"):
        out["external"] = dk["external"]
    if as_json:
        out["encoding"] = "json"
    return out


def _row_shape(values: Any, dk: dict) -> tuple | None:
    """The shape of one row of a page's ``values``, or ``None`` if they are not one regular
    array: rows of different shapes, arrays or mappings in an object column, or a shape
    other than the descriptor's (what the run file stores as it came)."""
    try:
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    except ValueError:  # ragged rows
        return None
    if arr.dtype.kind == "O" and any(is_container(x) for x in arr.ravel()):
        return None
    if arr.ndim > 1 and "shape" in dk and tuple(dk["shape"] or ()) != arr.shape[1:]:
        return None
    return arr.shape[1:]


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
    ``"Infinity"`` and ``"-Infinity"``; arrays are nested lists, with the dims of the rows as
    they came. A key whose rows are not one regular array (a ``None`` in its shape, values
    stored as they came) has dims ``["time"]``, each row as its JSON text and
    ``attrs["encoding"] = "json"``, so that ``from_dict`` reads it. Live, the file is written
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
        self._shapes: dict[tuple[str, str], tuple | None] = {}  # row shapes as they came
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
            dk = keys.get(key, {})
            seen = self._shapes.get((stream, key), False)  # False: no rows yet
            if seen is not None:  # None: irregular, for good
                shape = None if is_variable(dk) else _row_shape(values, dk)
                self._shapes[(stream, key)] = shape if seen is False or seen == shape else None
            self._column(stream, key).add(list(values), at, _fill(dk))
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

    def _shape(self, stream: str, key: str) -> tuple | None:
        """The row shape of a column: as its rows came (``None`` if irregular), else as declared."""
        dk = self._keys.get(stream, {}).get(key, {})
        if (stream, key) in self._shapes:
            return self._shapes[(stream, key)]
        return None if is_variable(dk) else tuple(int(s) for s in dk.get("shape") or [])

    def _elsewhere(self, stream: str, key: str) -> bool:
        """Whether no event carried ``key``: live, an ophyd-async detector's data (a
        ``stream_datum`` key, ``external="STREAM:"``) is in the detector's own files."""
        dk = self._keys.get(stream, {}).get(key, {})
        return dk.get("external") == "STREAM:" and (stream, key) not in self._shapes

    def _stream_dims(self, stream: str, n: int, skip: Collection[str] = ()) -> dict[str, int]:
        dims = {"time": n}
        for key, dk in self._keys.get(stream, {}).items():
            if key in skip:
                continue
            shape = self._shape(stream, key)
            if shape is not None:
                dims.update(zip(_dims(key, dk, shape)[1:], shape))
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
                elsewhere = [k for k in cols if k != "time" and self._elsewhere(stream, k)]
                keys = [k for k in cols if k != "time" and k not in elsewhere]
                attrs: dict[str, Any] = {"stream_name": stream, "uid": uid}
                if elsewhere:
                    attrs["not_in_events"] = elsewhere
                f.write(", " + dumps(stream) + ': {"coords": {"time": {"dims": ["time"], '
                        '"attrs": {}, "data": [')
                self._copy(cols["time"], n, f, None)
                f.write("]}}, \"attrs\": " + dumps(attrs) + ', "dims": '
                        + dumps(self._stream_dims(stream, n, skip=elsewhere)) + ', "data_vars": {')
                for j, key in enumerate(keys):
                    dk = self._keys.get(stream, {}).get(key, {})
                    shape = self._shape(stream, key)
                    f.write(("," if j else "") + dumps(key) + ': {"dims": '
                            + dumps(_dims(key, dk, shape)) + ', "attrs": '
                            + dumps(_attrs(dk, shape is None)) + ', "data": [')
                    self._copy(cols[key], n, f, _fill(dk), as_json=shape is None)
                    f.write("]}")
                f.write("}}")
            f.write("}")
        os.replace(tmp, self._path)
        self._wrote(self._path)

    @staticmethod
    def _copy(col: _Column, n: int, out: Any, fill: Any, as_json: bool = False) -> None:
        """Write the column's rows, comma-separated; with ``as_json`` each as a JSON string
        of its text (so that ``xarray.Dataset.from_dict`` reads rows of any shape)."""
        col.add([], n, fill)  # pad the tail
        col.f.flush()
        with open(col.path, encoding="utf-8") as src:
            for i, line in enumerate(src):
                row = line[:-1]
                out.write(("," if i else "") + (dumps(row) if as_json else row))
