"""What every export writer shares: the base callback, JSON encoding, and the replay of a
stored run as documents whose events carry filled, row-blocked data."""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import event_model
import numpy as np

from ..storage.layout import is_variable


class StreamLike(Protocol):
    """What the exporters read of a stream: its descriptors and its lazy Dataset."""

    metadata: dict

    def to_dask(self) -> Any: ...


@runtime_checkable
class Run(Protocol):
    """What the exporters read of a run: the public API of :class:`databroker_lite.Run`
    (a remote run has it too). A Protocol, so that the exporters (a tool) never import
    the run module, which sits below them."""

    uid: str
    metadata: dict

    def __iter__(self) -> Iterator[str]: ...

    def __getitem__(self, name: str) -> StreamLike: ...

#: Bytes of bulk data one exported block may hold (image stacks are read this much at a time).
BLOCK_BYTES = 32 * 2**20

#: How non-finite floats are written in JSON: strict JSON has no NaN/Infinity tokens.
NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: numpy to lists and numbers, non-finite floats to
    the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, bytes to text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub":
            return value.tolist()
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return NONFINITE[repr(value)]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (``allow_nan=False``) of ``plain(value)``."""
    return json.dumps(plain(value), allow_nan=False, **kwargs)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def safe_name(text: str) -> str:
    """``text`` usable as a file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def run_prefix(start: dict) -> str:
    """The file name stem of a run: ``scan<scan_id>_<uid[:8]>``."""
    sid = start.get("scan_id")
    return safe_name(f"scan{sid if sid is not None else ''}_{start['uid'][:8]}")


def row_shape(data_key: dict) -> tuple[int, ...]:
    return tuple(int(s or 0) for s in (data_key.get("shape") or []))


class ExportWriter(event_model.DocumentRouter):
    """Base of the export callbacks: a :class:`event_model.DocumentRouter` that remembers the
    files it wrote (``self.paths``) and the descriptors of the current run.

    Live from a RunEngine, events of external data (area detectors) carry datum ids, not
    pixels: the writers record those ids as text. ``Run.export`` gives the writers filled data.
    """

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self._descriptors: dict[str, dict] = {}
        self._start: dict | None = None
        self._stop: dict | None = None
        #: Set by :func:`replay`: the stored descriptors behind each merged one.
        self._source_descriptors: dict[str, list[dict]] = {}

    def _wrote(self, path: str) -> None:
        path = os.path.abspath(path)
        if path not in self.paths:
            self.paths.append(path)

    def start(self, doc: dict) -> dict:
        self._start = doc
        self._stop = None
        self._descriptors = {}
        return doc

    def stop(self, doc: dict) -> dict:
        self._stop = doc
        self._end(doc)
        return doc

    def _end(self, stop: dict | None) -> None:
        """Finish the run's files; ``stop`` is None when the run ended without one."""

    def run_metadata(self) -> dict:
        """``{"start", "stop", "descriptors": {stream: [descriptor, ...]}}`` of the current run."""
        descs: dict[str, list[dict]] = {}
        for d in self._descriptors.values():
            name = d.get("name", "primary")
            descs[name] = self._source_descriptors.get(name) or [*descs.get(name, []), d]
        return {"start": self._start, "stop": self._stop, "descriptors": descs}

    def descriptor(self, doc: dict) -> dict:
        if self._start is not None and doc.get("run_start") in (None, self._start["uid"]):
            self._descriptors[doc["uid"]] = doc
        return doc

    def event_page(self, doc: dict) -> dict:
        desc = self._descriptors.get(doc["descriptor"])
        if desc is not None:
            self.rows(desc, doc)
        return doc

    def rows(self, descriptor: dict, page: dict) -> None:  # pragma: no cover - abstract
        """Handle one event page (columns of equal length) of ``descriptor``'s stream."""
        raise NotImplementedError

    def close(self) -> None:
        """Finish files of a run that ended without a stop document."""
        self._end(None)


# --- replaying a stored run -------------------------------------------------------------------
def stream_order(names: Iterable[str]) -> list[str]:
    """Baseline first (SPEC needs its first reading before the scan header), then primary."""
    names = list(names)
    rank = {"baseline": 0, "primary": 1}
    return sorted(names, key=lambda n: (rank.get(n, 2), names.index(n)))


def merged_descriptor(descriptors: list[dict], name: str) -> dict:
    """One descriptor for a whole stream: the first, with the data keys of all of them
    (``Stream.read()`` merges several descriptors the same way)."""
    first = dict(descriptors[0])
    keys: dict[str, dict] = {}
    hints: dict[str, Any] = {}
    obj_keys: dict[str, list] = {}
    for d in descriptors:
        for k, v in d.get("data_keys", {}).items():
            keys.setdefault(k, v)
        for k, v in (d.get("hints") or {}).items():
            hints.setdefault(k, v)
        for k, v in (d.get("object_keys") or {}).items():
            obj_keys.setdefault(k, v)
    first.update(data_keys=keys, hints=hints, object_keys=obj_keys, name=name)
    return first


def as_read(descriptor: dict, ds: Any) -> dict:
    """``descriptor`` with each key's ``shape`` and ``dims`` as ``Stream.read()`` gives them
    (an ophyd-async ``[1, 240, 320]`` reads as ``(240, 320)`` per event, ``[1]`` as a scalar),
    so the writers lay out what the user reads. Keys whose rows differ in shape (a declared
    variable length, or values stored as they came) keep their declared shape: the writers
    tell them apart by their data."""
    keys = {}
    for key, dk in descriptor.get("data_keys", {}).items():
        var = ds.data_vars.get(key) if key in ds.data_vars else None
        if var is not None and not is_variable(dk) and not (
                var.dtype.kind == "O" and var.ndim == 1 and row_shape(dk)):
            dk = {**dk, "shape": [int(s) for s in var.shape[1:]], "dims": list(var.dims[1:])}
        keys[key] = dk
    return {**descriptor, "data_keys": keys}


def is_container(value: Any) -> bool:
    """Whether an (object) value is an array, list or mapping: written as JSON text."""
    return isinstance(value, (list, tuple, dict, np.ndarray))


def _rows_per_block(ds: Any) -> int:
    per_row = sum(int(np.prod(v.shape[1:], dtype=np.int64)) * max(v.dtype.itemsize, 8)
                  for v in ds.data_vars.values()) or 8
    return max(1, BLOCK_BYTES // per_row)


def iter_pages(ds: Any, descriptor_uid: str) -> Iterator[dict]:
    """Event pages of a (dask-backed) stream Dataset, a bounded block of rows at a time.

    Only the chunks a block touches are computed, so an image stack is never in memory whole.
    """
    n = ds.sizes.get("time", 0)
    step = _rows_per_block(ds)
    times = np.asarray(ds["time"].values, dtype=float)
    for a in range(0, n, step):
        b = min(n, a + step)
        data = {k: np.asarray(v.data[a:b]) for k, v in ds.data_vars.items()}
        t = times[a:b].tolist()
        yield {"descriptor": descriptor_uid, "time": t, "seq_num": list(range(a + 1, b + 1)),
               "uid": [f"{descriptor_uid}-{i}" for i in range(a, b)], "data": data,
               "timestamps": {k: t for k in data}, "filled": {}}


def replay(run: Run, writer: ExportWriter, streams: Iterable[str] | None = None) -> None:
    """Give ``writer`` the documents of a stored ``run``: start, one merged descriptor per
    stream, event pages of filled data read via ``to_dask()``, and stop."""
    md = run.metadata
    names = [n for n in run]
    if streams is not None:
        wanted = list(streams)
        missing = [s for s in wanted if s not in names]
        if missing:
            from ..errors import StreamNotFound
            raise StreamNotFound(f"run {run.uid} has no stream(s) {missing}; it has {names}")
        names = [n for n in names if n in wanted]
    names = stream_order(names)
    writer("start", md["start"])
    writer._source_descriptors = {}
    datasets = {}
    for name in names:
        stream = run[name]
        descs = stream.metadata["descriptors"]
        if not descs:
            continue
        ds = stream.to_dask()
        desc = as_read(merged_descriptor(descs, name), ds)
        writer._source_descriptors[name] = descs
        writer("descriptor", desc)
        datasets[name] = (desc, ds)
    for desc, ds in datasets.values():
        for page in iter_pages(ds, desc["uid"]):
            writer("event_page", page)
    if md["stop"] is not None:
        writer("stop", md["stop"])
    else:
        writer.close()
