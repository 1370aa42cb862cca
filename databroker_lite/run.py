"""A run: its metadata, its streams and its documents."""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import StreamNotFound
from .storage import RunReader
from .storage.files import StampedCache
from .stream import Stream

if TYPE_CHECKING:
    from .catalogs import Catalog


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "?"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def run_summary(uid: str, start: dict, stop: dict | None, streams: list[str]) -> str:
    """The databroker-style text summary of a run (local or remote)."""
    lines = ["BlueskyRun",
             f"  uid={uid!r}",
             f"  exit_status={stop.get('exit_status') if stop else None!r}",
             f"  {_fmt_time(start.get('time'))} -- {_fmt_time(stop.get('time')) if stop else '(no stop)'}",
             "  Streams:"]
    lines += [f"    * {name}" for name in streams]
    return "\n".join(lines)


_READERS = StampedCache(256)


def _open_reader(path: str) -> RunReader:
    """A reader of a run file; finished runs are remembered (per process) until they change."""
    return _READERS.get(path, lambda: RunReader(path), keep=lambda r: r.finished)


class StreamAttributes:
    """``run.primary`` as a spelling of ``run["primary"]`` (local and remote runs).

    A name that is neither an attribute nor a stream (``run.canonical()``, a typo) is an
    :class:`AttributeError` that says so and lists the streams, never a stream look-up error.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        try:
            return self[name]  # type: ignore[index]
        except StreamNotFound:
            pass
        streams = list(self)  # type: ignore[call-overload]
        close = difflib.get_close_matches(name, [*streams, *_public(self)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise AttributeError(
            f"{type(self).__name__} has no attribute or stream {name!r}{hint}. Its streams are "
            f"{streams} (run.<stream> or run[\"<stream>\"]); see dir(run) for its attributes"
        ) from None


def _public(obj: object) -> list[str]:
    return [n for n in dir(type(obj)) if not n.startswith("_")]


class Run(StreamAttributes):
    """One Bluesky run. ``run.primary`` or ``run["primary"]`` is a :class:`Stream`."""

    def __init__(self, catalog: Catalog, uid: str, path: str) -> None:
        self.catalog = catalog
        self.uid = uid
        self.path = path
        self.__reader: RunReader | None = None
        self._streams: dict[str, Stream] = {}

    def _reader(self) -> RunReader:
        r = self.__reader
        if r is None or not r.finished:  # a run being written: look again each time
            r = self.__reader = _open_reader(self.path)
        return r

    @property
    def _stamp(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    @property
    def metadata(self) -> dict:
        """``{"start": ..., "stop": ...}``; stop is None while (or if) the run has no stop."""
        r = self._reader()
        return {"start": r.start, "stop": r.stop}

    @property
    def start(self) -> dict:
        return self._reader().start

    @property
    def stop(self) -> dict | None:
        return self._reader().stop

    def __iter__(self) -> Iterator[str]:
        return iter(self._reader().stream_names)

    def __len__(self) -> int:
        return len(self._reader().stream_names)

    def __contains__(self, name: object) -> bool:
        return name in self._reader().stream_names

    def __getitem__(self, name: str) -> Stream:
        if name not in self._reader().stream_names:
            raise StreamNotFound(f"run {self.uid} has no stream {name!r}; it has "
                                 f"{self._reader().stream_names}")
        s = self._streams.get(name)
        if s is None or not self._reader().finished:
            s = self._streams[name] = Stream(self, name)
        return s

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._reader().stream_names))

    def items(self) -> Iterator[tuple[str, Stream]]:
        for name in self:
            yield name, self[name]

    def documents(self, fill: bool | str = False) -> Iterator[tuple[str, dict]]:
        """The run's documents, as inserted (pages as single documents).

        With ``fill=True`` (or databroker's ``"yes"``) the run comes out as if its
        detectors had put their data in the events: each event carries the values of its
        external keys (read one event at a time), descriptors no longer mark those keys
        external, and the resource and datum documents are left out. ``fill="delayed"``
        does the same with dask arrays that read on ``compute()``. ``False`` / ``"no"``
        gives the documents as inserted. Runs with stream resources cannot be filled yet.
        Any other value raises :class:`~databroker_lite.InvalidArgument`.
        """
        mode = _fill_mode(fill)
        docs = self._reader().documents()
        return _filled(self, docs, delayed=mode == "delayed") if mode != "no" else docs

    def resources(self) -> list[dict]:
        """The run's resource and stream_resource documents (where its external data is)."""
        r = self._reader()
        return [d for kind in ("resource", "stream_resource") for _, d, _ in r.side_documents(kind)]

    def datums(self) -> list[dict]:
        """The run's datum and stream_datum documents."""
        r = self._reader()
        return [d for kind in ("datum", "stream_datum") for _, d, _ in r.side_documents(kind)]

    def export(self, fmt: str, dest: str | os.PathLike,
               streams: list[str] | None = None) -> list[str]:
        """Write this run as ``csv``, ``json``, ``spec`` or ``nexus`` files under ``dest``;
        return the paths written. See :func:`databroker_lite.export.export`."""
        from .export import export
        return export(self, fmt, dest, streams=streams)

    def __repr__(self) -> str:
        r = self._reader()
        return run_summary(self.uid, r.start, r.stop, r.stream_names)

    def _repr_html_(self) -> str:
        from .html import run_html
        return run_html(self)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Run) and other.uid == self.uid and other.path == self.path

    def __hash__(self) -> int:
        return hash((self.uid, self.path))


def _fill_mode(fill: Any) -> str:
    """``"yes"``, ``"no"`` or ``"delayed"`` from a bool or databroker's spellings."""
    if fill is True or fill is False:
        return "yes" if fill else "no"
    if isinstance(fill, str) and fill in ("yes", "no", "delayed"):
        return fill
    from .errors import InvalidArgument
    raise InvalidArgument(f"fill={fill!r}: use True or 'yes' (read external data into the "
                          "events), 'delayed' (dask arrays), or False or 'no' (as inserted)")


def _filled(run: Run, docs: Iterator[tuple[str, dict]], delayed: bool = False) -> Iterator[tuple[str, dict]]:
    """``docs`` with external data read into the events (see :meth:`Run.documents`)."""
    import json

    from .errors import ExternalDataError
    from .storage.handlers import ExternalRef, load_external, resource_location
    resources: dict[str, dict] = {}
    datums: dict[str, dict] = {}
    external: dict[str, dict[str, tuple]] = {}  # descriptor uid -> {key: shape}
    dtypes: dict[str, dict] = {}  # descriptor uid -> {key: numpy dtype}, for fill="delayed"
    for name, doc in docs:
        if name == "resource":
            resources[doc["uid"]] = doc
            continue
        if name == "datum":
            datums[doc["datum_id"]] = doc
            continue
        if name in ("stream_resource", "stream_datum"):
            raise ExternalDataError(f"run {run.uid}: its data is in stream resources, which "
                                    "cannot be filled into events yet")
        if name == "descriptor":
            keys = {k: tuple(dk.get("shape") or ()) for k, dk in doc["data_keys"].items()
                    if dk.get("external")}
            if keys:
                external[doc["uid"]] = keys
                from .storage.layout import declared_dtype
                dtypes[doc["uid"]] = {k: declared_dtype(doc["data_keys"][k]) for k in keys}
                doc = {**doc, "data_keys": {
                    k: {f: v for f, v in dk.items() if f != "external" or k not in keys}
                    for k, dk in doc["data_keys"].items()}}
        elif name == "event" and doc["descriptor"] in external:
            data, filled = dict(doc["data"]), dict(doc.get("filled", {}))
            for key, shape in external[doc["descriptor"]].items():
                datum = datums.get(data[key])
                res = resources.get(datum["resource"]) if datum else None
                if res is None:
                    raise ExternalDataError(f"run {run.uid}, key {key!r}: datum {data[key]!r} or its "
                                            "resource was never inserted")
                ref = ExternalRef(*resource_location(res, run.catalog.root_map),
                                  json.dumps(datum.get("datum_kwargs", {}), sort_keys=True), res["uid"])
                if delayed and None not in shape:
                    data[key] = _delayed_external(ref, shape, key, run.uid, dtypes[doc["descriptor"]][key])
                else:
                    data[key] = load_external(ref, shape, key, run.uid)
                filled.pop(key, None)
            doc = {**doc, "data": data, **({"filled": filled} if "filled" in doc else {})}
        yield name, doc


def _delayed_external(ref: Any, shape: tuple, key: str, run_uid: str, dtype: Any) -> Any:
    """One external value as a dask array that reads it on compute (``fill="delayed"``)."""
    import dask
    import dask.array as da

    from .storage.handlers import load_external
    return da.from_delayed(dask.delayed(load_external, pure=True)(ref, shape, key, run_uid),
                           shape=shape, dtype=dtype)
