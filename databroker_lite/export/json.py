"""JSON export: the metadata and every stream of a run in one strict-JSON file."""
from __future__ import annotations

import os
import shutil
from typing import Any

from ._common import ExportWriter, dumps, run_prefix, safe_name

#: What the file says about itself (the ``"format"`` member).
FORMAT = "databroker_lite.export.json/1"


class _Column:
    """The JSON text of one column, spooled to a file so that big streams are not in memory."""

    def __init__(self, path: str) -> None:
        self.path, self.n = path, 0
        self.f = open(path, "w", encoding="utf-8")

    def add(self, values: list, at_row: int) -> None:
        if at_row > self.n:  # rows of a descriptor without this key
            self.add([None] * (at_row - self.n), self.n)
        for v in values:
            self.f.write(("," if self.n else "") + dumps(v))
            self.n += 1


class JSONWriter(ExportWriter):
    """Write each run as one JSON file ``scan<scan_id>_<uid8>.json`` in ``directory``.

    The file is strict JSON (``json.loads(text, parse_constant=...)`` never sees a constant):
    non-finite floats are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.
    Layout::

        {"format": "databroker_lite.export.json/1",
         "metadata": {"start": {...}, "stop": {...} or null, "descriptors": {stream: [...]}},
         "streams": {stream: {"time": [...], "data": {key: [...one value per event...]}}}}

    Arrays are nested lists. Live, the file is written at start (metadata, no data yet) and
    complete at stop; the rows wait in spool files beside it meanwhile.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        super().__init__()
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._cols: dict[str, dict[str, _Column]] = {}
        self._nrows: dict[str, int] = {}
        self._spool = ""
        self._path = ""

    def start(self, doc: dict) -> dict:
        self._finish()
        super().start(doc)
        prefix = run_prefix(doc)
        self._path = os.path.join(self.directory, prefix + ".json")
        self._spool = os.path.join(self.directory, f".{prefix}.json.spool")
        os.makedirs(self._spool, exist_ok=True)
        self._cols, self._nrows = {}, {}
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
        self._nrows.setdefault(stream, 0)
        self._column(stream, "time")
        for key in doc["data_keys"]:
            self._column(stream, key)
        return doc

    def rows(self, descriptor: dict, page: dict) -> None:
        stream = descriptor.get("name", "primary")
        at = self._nrows[stream]
        self._column(stream, "time").add(list(page["time"]), at)
        for key, values in page["data"].items():
            self._column(stream, key).add(list(values), at)
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

    def _write(self, complete: bool = False) -> None:
        head = dumps({"format": FORMAT, "nonfinite_floats": "strings",
                      "metadata": self.run_metadata()})
        tmp = self._path + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(head[:-1] + ', "streams": {')
            for i, (stream, cols) in enumerate(self._cols.items() if complete else []):
                n = self._nrows.get(stream, 0)
                f.write(("," if i else "") + dumps(stream) + ': {"time": [')
                self._copy(cols["time"], n, f)
                f.write('], "data": {')
                keys = [k for k in cols if k != "time"]
                for j, key in enumerate(keys):
                    f.write(("," if j else "") + dumps(key) + ": [")
                    self._copy(cols[key], n, f)
                    f.write("]")
                f.write("}}")
            f.write("}}")
        os.replace(tmp, self._path)
        self._wrote(self._path)

    @staticmethod
    def _copy(col: _Column, n: int, out: Any) -> None:
        col.add([], n)  # pad the tail
        col.f.flush()
        with open(col.path, encoding="utf-8") as src:
            shutil.copyfileobj(src, out)

