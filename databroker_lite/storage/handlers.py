"""Handlers for external data: built-in AD_HDF5 and NPY_SEQ, more by entry point.

A handler follows databroker's convention: ``Handler(full_path, **resource_kwargs)``
then ``handler(**datum_kwargs)`` returns a numpy array. Stream resources are read by
mimetype: ``application/x-hdf5`` is built in.

Everything a lazy read needs travels as an :class:`ExternalRef` (strings and numbers),
so dask graphs pickle and run on other processes.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from ..errors import (
    ExternalDataError,
    MissingExternalFile,
    MissingHandler,
    ShapeMismatch,
)
from . import direct


class AreaDetectorHDF5Handler:
    """AD_HDF5: frames in ``/entry/data/data``, ``frame_per_point`` frames per datum."""

    specs = {"AD_HDF5"}

    def __init__(self, filename: str, frame_per_point: int = 1, **_: Any) -> None:
        self.filename = filename
        self.fpp = int(frame_per_point)

    def __call__(self, point_number: int, **_: Any) -> np.ndarray:
        start = int(point_number) * self.fpp
        stop = start + self.fpp

        def frames(ds: Any) -> np.ndarray:
            if stop > ds.shape[0]:
                raise ExternalDataError(
                    f"{self.filename}: datum asks for frames {start}:{stop} but the file holds "
                    f"{ds.shape[0]}")
            return ds[start:stop]
        return direct.read(self.filename, AD_DATASET, frames)

    def read_points(self, first: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Points ``first .. first+count-1`` in one read: (count * frame_per_point, ...).

        With ``out`` (a C-contiguous array of that many elements) HDF5 reads straight into it.
        """
        start, stop = first * self.fpp, (first + count) * self.fpp

        def frames(ds: Any) -> np.ndarray:
            if stop > ds.shape[0]:
                raise ExternalDataError(
                    f"{self.filename}: datums ask for frames {start}:{stop} but the file holds "
                    f"{ds.shape[0]}")
            shape = (stop - start, *ds.shape[1:])
            if out is not None and out.size == int(np.prod(shape)) and out.dtype == ds.dtype \
                    and out.flags.c_contiguous:
                ds.read_direct(out.reshape(shape), np.s_[start:stop])
                return out.reshape(shape)
            return ds[start:stop]
        return direct.read(self.filename, AD_DATASET, frames)

    def get_file_list(self, datum_kwargs: list[dict]) -> list[str]:
        return [self.filename]


class NpySeqHandler:
    """NPY_SEQ (ophyd.sim's img): one ``<path>_<index>.npy`` file per datum."""

    specs = {"NPY_SEQ"}

    def __init__(self, filename: str, root: str = "", **_: Any) -> None:
        self.base = os.path.join(root, filename)

    def __call__(self, index: int, **_: Any) -> np.ndarray:
        path = f"{self.base}_{index}.npy"
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        return np.load(path, allow_pickle=False)

    def get_file_list(self, datum_kwargs: list[dict]) -> list[str]:
        return [f"{self.base}_{kw['index']}.npy" for kw in datum_kwargs]


AD_DATASET = "entry/data/data"  # where AD_HDF5 files keep their frames


def read_hdf5_stream(path: str, parameters: dict, indices: tuple[int, int],
                     event_shape: tuple | None = None) -> np.ndarray:
    """application/x-hdf5 stream resource: the rows of events ``indices`` of ``parameters['dataset']``.

    ``indices`` count events. With ``event_shape`` (the per-event shape a descriptor gives,
    frames-per-event axis first, as ophyd-async writes it) a dataset holding
    ``n_events * event_shape[0]`` rows of ``event_shape[1:]`` (bluesky's "concat" layout:
    ophyd-async's ``[k, H, W]`` over an ``(N*k, H, W)`` dataset) is read as
    ``(b - a, *event_shape)``; a dataset of ``(N, *event_shape)`` rows is read as is.
    """
    name = parameters.get("dataset") or parameters.get("path") or "entry/data/data"
    a, b = (int(i) for i in indices)

    def rows(ds: Any) -> tuple[np.ndarray, int]:
        per = 1
        if event_shape and None not in event_shape and tuple(ds.shape[1:]) != tuple(event_shape) \
                and tuple(ds.shape[1:]) == tuple(event_shape[1:]):
            per = int(event_shape[0])  # frames per event, concatenated along the first axis
        if b * per > ds.shape[0]:
            raise ExternalDataError(f"{path}: stream datum asks for events {a}:{b} (rows "
                                    f"{a * per}:{b * per}) but {name} holds {ds.shape[0]} rows")
        return ds[a * per:b * per], per
    out, per = direct.read(path, name, rows)
    return out.reshape((b - a, *event_shape)) if per != 1 else out


_BUILTIN: dict[str, Any] = {"AD_HDF5": AreaDetectorHDF5Handler, "NPY_SEQ": NpySeqHandler}
_STREAM_BUILTIN = {"application/x-hdf5": read_hdf5_stream}
_registry: dict[str, Any] = {}   # register_handler() in this process
_from_entry_points: dict[str, Any] = {}
_lock = threading.Lock()


def _entry_point(spec: str, group: str) -> Any | None:
    """The handler an installed package registers for ``spec``, loaded only when needed.

    Loading every plugin up front would import their packages (ophyd, ...), which costs
    about a second on the first read of a process.
    """
    key = (group, spec)
    with _lock:
        if key in _from_entry_points:
            return _from_entry_points[key]
    cls = None
    from importlib.metadata import entry_points  # ~30 ms: only when a spec is looked up

    for ep in entry_points(group=group, name=spec):
        try:
            cls = ep.load()
            break
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break reads
            warnings.warn(f"handler entry point {spec!r} ({ep.value}) failed to load and is "
                          f"ignored: {exc}", stacklevel=3)
    with _lock:
        _from_entry_points[key] = cls
    return cls


def register_handler(spec: str, handler: Any, overwrite: bool = False) -> None:
    """Register a handler class for a resource ``spec`` in this process."""
    if spec in _registry and not overwrite and _registry[spec] is not handler:
        raise ValueError(f"a handler for {spec!r} is already registered; pass overwrite=True")
    _registry[spec] = handler


def get_handler_class(spec: str) -> Any:
    """The handler for a spec: registered here, then our entry points, built-in, databroker's."""
    cls = (_registry.get(spec) or _entry_point(spec, "databroker_lite.handlers")
           or _BUILTIN.get(spec) or _entry_point(spec, "databroker.handlers"))
    if cls is None:
        raise MissingHandler(
            f"no handler for resource spec {spec!r}. Register one with "
            f"databroker_lite.register_handler({spec!r}, HandlerClass) or by an entry point "
            f"in the 'databroker_lite.handlers' group (name = spec, value = module:Class)")
    return cls


@dataclass(frozen=True)
class ExternalRef:
    """Where one event's external value lives; pickles as a few strings."""
    spec: str                   # resource spec, or "stream:<mimetype>"
    path: str                   # root-mapped full path
    resource_kwargs: str        # JSON
    datum_kwargs: str           # JSON (or the stream indices)
    resource_uid: str


_handlers: dict[tuple, Any] = {}
_handlers_lock = threading.Lock()


def _handler(ref: ExternalRef):
    key = (ref.spec, ref.path, ref.resource_kwargs)
    h = _handlers.get(key)
    if h is None:
        cls = get_handler_class(ref.spec)
        h = cls(ref.path, **json.loads(ref.resource_kwargs))
        with _handlers_lock:
            _handlers[key] = h
    return h


def load_external(ref: ExternalRef, shape: tuple, key: str, run_uid: str) -> np.ndarray:
    """Read one external value (or one block of stream rows) and check its shape.

    ``shape`` is the expected shape (per event, or (rows, *per_event) for a stream
    block); None marks a variable-length dimension.
    """
    if ref.spec.startswith("stream:"):
        a, b = json.loads(ref.datum_kwargs)
        if shape and shape[0] is None:  # a block of stream rows: its length is known
            shape = (b - a, *shape[1:])

    def read() -> np.ndarray:
        if ref.spec.startswith("stream:"):
            mimetype = ref.spec[len("stream:"):]
            reader = _STREAM_BUILTIN.get(mimetype)
            if reader is None:
                reader = get_handler_class(mimetype)
            params = json.loads(ref.resource_kwargs)
            if reader is read_hdf5_stream:  # it knows the frames-per-event layout
                return reader(ref.path, params, (a, b), event_shape=shape[1:])
            return np.asarray(reader(ref.path, params, (a, b)))
        return np.asarray(_handler(ref)(**json.loads(ref.datum_kwargs)))
    return conform(_guarded(read, ref, key, run_uid), shape, key, run_uid)


def _consecutive_points(refs: list[ExternalRef]) -> int | None:
    """The first point_number if ``refs`` are consecutive AD_HDF5 points of one file."""
    r0 = refs[0]
    if r0.spec != "AD_HDF5" or not isinstance(_handler(r0), AreaDetectorHDF5Handler):
        return None
    points = []
    for r in refs:
        if r.path != r0.path or r.resource_kwargs != r0.resource_kwargs:
            return None
        kw = json.loads(r.datum_kwargs)
        if set(kw) != {"point_number"}:
            return None
        points.append(int(kw["point_number"]))
    return points[0] if points == list(range(points[0], points[0] + len(points))) else None


def points_plan(refs: list[ExternalRef]) -> tuple[str, int, int] | None:
    """``(file, first point, frames per point)`` if ``refs`` are consecutive points of one
    AD_HDF5 file read by the built-in handler: then any rows of them are one HDF5 slice."""
    if not refs:
        return None
    first = _consecutive_points(refs)
    return None if first is None else (refs[0].path, first, _handler(refs[0]).fpp)


def same_file_runs(refs: list[ExternalRef], most: int = 64) -> list[tuple[int, int]]:
    """Index ranges of consecutive refs in one file (at most ``most`` each, to bound memory)."""
    out, a = [], 0
    for i in range(1, len(refs) + 1):
        if i == len(refs) or refs[i].path != refs[a].path or i - a >= most:
            out.append((a, i))
            a = i
    return out


def load_external_many(refs: list[ExternalRef], shape: tuple, key: str, run_uid: str,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Several events' external values stacked, (len(refs), *shape).

    Consecutive points of one area-detector file are read in one slice instead of one
    handler call per event (500 frames: one read, not 500), into ``out`` when given.
    """
    first = _consecutive_points(refs) if len(refs) > 1 and None not in shape else None
    if first is not None:
        handler = _handler(refs[0])
        arr = _guarded(lambda: handler.read_points(first, len(refs), out), refs[0], key, run_uid)
        # read_points() gives len(refs) * frame_per_point rows (or raises)
        frame_shape((arr.shape[0] // len(refs), *arr.shape[1:]), shape, key, run_uid)
        return arr.reshape((len(refs), *shape))
    parts = [load_external(r, shape, key, run_uid) for r in refs]
    return np.stack(parts) if parts else np.zeros((0, *(s or 0 for s in shape)))


def _guarded(read: Any, ref: ExternalRef, key: str, run_uid: str) -> np.ndarray:
    """Run ``read()``, turning file errors into our errors naming the run, key and path."""
    try:
        return read()
    except (MissingHandler, ShapeMismatch, OSError, TypeError, ValueError, KeyError,
            IndexError) as exc:
        # (a handler refusing its resource or datum kwargs fails the same way as a bad file)
        ours = explained(exc, ref, key, run_uid)
        if ours is exc:
            raise
        raise ours from (None if isinstance(ours, MissingExternalFile) else exc)


def explained(exc: BaseException, ref: ExternalRef, key: str, run_uid: str) -> BaseException:
    """The error to raise for ``exc``, met reading ``ref``: ours, naming the run, key and
    resource (``exc`` itself when it already is)."""
    if isinstance(exc, (MissingHandler, ShapeMismatch, MissingExternalFile)):
        return exc
    if isinstance(exc, FileNotFoundError):
        return MissingExternalFile(
            f"run {run_uid}, key {key!r}: external file of resource {ref.resource_uid} not found "
            f"at {exc.filename or ref.path!r} (if the files moved, open the catalog with "
            f"root_map={{old_root: new_root}})")
    if isinstance(exc, ExternalDataError):  # a file's own complaint: say whose data it is
        if f"run {run_uid}," in str(exc):
            return exc
        return ExternalDataError(f"run {run_uid}, key {key!r}: reading resource {ref.resource_uid} "
                                 f"at {ref.path!r} failed: {exc}")
    try:  # spaced as json.dumps spaces it (refs hold compact text)
        kwargs = json.dumps(json.loads(ref.datum_kwargs), sort_keys=True)
    except ValueError:
        kwargs = ref.datum_kwargs
    return ExternalDataError(f"run {run_uid}, key {key!r}: reading resource {ref.resource_uid} "
                             f"at {ref.path!r} with datum kwargs {kwargs} failed: "
                             f"{type(exc).__name__}: {exc}")


def frame_shape(stored: tuple, declared: tuple, key: str, run_uid: str) -> tuple | None:
    """How a value stored with shape ``stored`` reads as the descriptor's ``declared`` shape:
    None if as it is, else the shape to reshape it to. The one shape rule of every read path
    (``read()``, ``to_dask()``, ``stream[key]``): only dimensions of length 1 may differ
    (a frames-per-point axis of 1, ophyd's ``[1, h, w]`` per datum); anything else, a
    transposed frame say, is a :class:`ShapeMismatch` naming the run, the key and both
    shapes: stored frames are never silently reinterpreted (nor padded: databroker's
    shape validation refuses them too). ``None`` in ``declared``: a dimension of any length.
    """
    if len(stored) == len(declared) and all(s is None or s == a for s, a in zip(declared, stored)):
        return None
    if None not in declared and [d for d in stored if d != 1] == [d for d in declared if d != 1]:
        return tuple(declared)
    raise ShapeMismatch(f"run {run_uid}, key {key!r}: the stored data has shape {list(stored)} "
                        f"but the descriptor declares {list(declared)} (only dimensions of "
                        "length 1 may differ)")


def conform(arr: np.ndarray, shape: tuple, key: str, run_uid: str) -> np.ndarray:
    """Return ``arr`` in the declared shape (:func:`frame_shape`'s rule)."""
    to = frame_shape(arr.shape, shape, key, run_uid)
    return arr if to is None else arr.reshape(to)


def uri_to_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path) if parsed.scheme else uri
    raise ExternalDataError(f"stream resource uri {uri!r}: only file:// URIs can be read")


def resource_location(resource: dict, root_map: dict[str, str] | None) -> tuple[str, str, str]:
    """(spec, root-mapped path, resource kwargs as JSON): a resource's part of an ExternalRef."""
    return (resource["spec"], resource_path(resource, root_map),
            json.dumps(resource.get("resource_kwargs", {}), sort_keys=True))


def resource_path(resource: dict, root_map: dict[str, str] | None) -> str:
    root = resource.get("root", "") or ""
    if root_map and root in root_map:
        root = root_map[root]
    return os.path.join(root, resource.get("resource_path", ""))


def remap_path(path: str, root_map: dict[str, str] | None) -> str:
    for old, new in (root_map or {}).items():
        if old and (path == old or path.startswith(old.rstrip("/") + "/")):
            return new.rstrip("/") + path[len(old.rstrip("/")):]
    return path
