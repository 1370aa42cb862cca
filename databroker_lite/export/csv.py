"""CSV export: one CSV file per stream, arrays in side ``.npy`` files, metadata as JSON."""
from __future__ import annotations

import csv
import os
from typing import Any, TextIO

import numpy as np

from ._common import ExportWriter, dumps, is_container, is_variable, run_prefix, safe_name, write_atomic

_NPY_HEADER = 256  # bytes; fixed so that the shape can be rewritten as rows are appended


class NpyAppender:
    """A ``.npy`` file that grows one block of rows at a time and is valid after each one."""

    def __init__(self, path: str, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape, self.n = path, np.dtype(dtype), row_shape, 0
        self._f = open(path, "wb")
        self._header()

    def _header(self) -> None:
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
             "shape": (self.n, *self.row_shape)}
        text = repr(d).encode("latin1")
        pad = _NPY_HEADER - 10 - len(text) - 1
        if pad < 0:  # pragma: no cover - a shape of > 200 characters
            raise ValueError(f"{self.path}: shape {d['shape']} too long for the npy header")
        head = b"\x93NUMPY\x01\x00" + np.uint16(_NPY_HEADER - 10).tobytes() + text + b" " * pad + b"\n"
        self._f.seek(0)
        self._f.write(head)
        self._f.seek(0, os.SEEK_END)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        self._f.write(rows.tobytes())
        self.n += len(rows)
        self._header()
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class _StreamFile:
    def __init__(self, path: str, keys: list[str]) -> None:
        self.path, self.keys, self.n = path, keys, 0
        self.f: TextIO = open(path, "w", newline="", encoding="utf-8")
        self.w = csv.writer(self.f)
        self.w.writerow(["time", *keys])
        self.f.flush()
        self.npy: dict[str, NpyAppender] = {}
        self.ragged: dict[str, int] = {}  # variable-shape key -> rows written (one .npy each)


class CSVWriter(ExportWriter):
    """Write each run as CSV files in ``directory``, while it is acquired or from a stored run.

    For a run with scan_id 5 and uid ``1a2b3c4d...`` the files are
    ``scan5_1a2b3c4d_<stream>.csv`` (columns ``time`` then the data keys; one row per event,
    flushed as it arrives) and ``scan5_1a2b3c4d_metadata.json`` (start, stop and descriptors).
    A column whose values are arrays is stored in ``scan5_1a2b3c4d_<stream>_<key>.npy`` (one
    row per event) and its CSV cells name that file and the row: ``file.npy[3]``; one
    whose rows differ in shape (a variable-length dimension) has one ``..._<key>_<row>.npy``
    per event, named in its cell; a value stored as it came (an array of another shape than
    declared, a mapping) is its JSON text in the cell.
    A later descriptor of the same stream that brings new keys starts ``..._<stream>_2.csv``.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        super().__init__()
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._files: dict[str, _StreamFile] = {}   # descriptor uid -> file
        self._prefix = ""

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, f"{self._prefix}_{name}")

    def _write_metadata(self) -> None:
        path = self._path("metadata.json")
        write_atomic(path, dumps(self.run_metadata(), indent=2))
        self._wrote(path)

    def start(self, doc: dict) -> dict:
        self._close_files()
        super().start(doc)
        self._prefix = run_prefix(doc)
        self._write_metadata()
        return doc

    def descriptor(self, doc: dict) -> dict:
        super().descriptor(doc)
        if doc["uid"] not in self._descriptors:  # not of the run being written
            return doc
        stream = doc.get("name", "primary")
        keys = list(doc["data_keys"])
        same = [f for u, f in self._files.items() if self._descriptors[u].get("name") == stream]
        reuse = next((f for f in same if set(keys) <= set(f.keys)), None)
        if reuse is None:
            suffix = f"_{len(same) + 1}" if same else ""
            reuse = _StreamFile(self._path(f"{safe_name(stream)}{suffix}.csv"), keys)
            self._wrote(reuse.path)
        self._files[doc["uid"]] = reuse
        self._write_metadata()
        return doc

    def _cells(self, sf: _StreamFile, stream: str, key: str, values: Any, dk: dict) -> list:
        variable = is_variable(dk)
        stem = f"{os.path.splitext(os.path.basename(sf.path))[0]}_{safe_name(key)}"
        if variable:  # rows of different shapes: one .npy file per row, named in the cell
            cells = []
            for v in values:
                name = f"{stem}_{sf.ragged.get(key, 0)}.npy"
                sf.ragged[key] = sf.ragged.get(key, 0) + 1
                np.save(os.path.join(self.directory, name), np.asarray(v))
                self._wrote(os.path.join(self.directory, name))
                cells.append(name)
            return cells
        arr = None
        if isinstance(values, np.ndarray) and values.ndim > 1 or (
                isinstance(values, list) and values and isinstance(values[0], (list, np.ndarray))):
            try:
                arr = np.asarray(values)
            except ValueError:  # rows of different lengths, as they came: JSON text cells
                arr = None
        if arr is not None and "shape" in dk and tuple(dk["shape"] or ()) != arr.shape[1:]:
            arr = None  # not the descriptor's shape: stored as it came, so JSON text cells
        if arr is not None and arr.ndim > 1:
            if arr.dtype.kind == "O":
                arr = arr.astype(str)
            app = sf.npy.get(key)
            if app is None:
                app = sf.npy[key] = NpyAppender(os.path.join(self.directory, f"{stem}.npy"),
                                                arr.dtype, arr.shape[1:])
                self._wrote(app.path)
            if arr.shape[1:] != app.row_shape:  # a new descriptor changed the shape mid-run:
                return [_cell(v) for v in arr]   # these rows as JSON text, whole
            first = app.n
            app.append(arr)
            base = os.path.basename(app.path)
            return [f"{base}[{first + i}]" for i in range(len(arr))]
        return [_cell(v) for v in (values.tolist() if isinstance(values, np.ndarray) else values)]

    def rows(self, descriptor: dict, page: dict) -> None:
        sf = self._files[descriptor["uid"]]
        n = len(page["time"])
        cols = [[repr(float(t)) for t in page["time"]]]
        for key in sf.keys:
            if key in page["data"]:
                cols.append(self._cells(sf, descriptor.get("name", ""), key, page["data"][key],
                                        descriptor["data_keys"].get(key, {})))
            else:
                cols.append([""] * n)
        sf.w.writerows(zip(*cols))
        sf.n += n
        sf.f.flush()

    def _end(self, stop: dict | None) -> None:
        if stop is not None:
            self._write_metadata()
        self._close_files()

    def _close_files(self) -> None:
        for sf in {id(f): f for f in self._files.values()}.values():
            sf.f.close()
            for app in sf.npy.values():
                app.close()
        self._files = {}


def _cell(v: Any) -> Any:
    """One CSV cell: numbers and text as they are; an array, list or mapping (a value
    stored as it came) as its JSON text, whole."""
    if is_container(v):
        return dumps(v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return repr(float(v))
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v
