"""A run: its metadata, its streams and its documents."""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from . import documents as _docs
from . import lookup
from .errors import StreamNotFound
from .storage import RunReader
from .storage.files import StampedCache
from .stream import Stream
from .summaries import run_html, run_summary

__all__ = ["Run", "StreamAttributes", "run_summary"]


class CatalogLike(Protocol):
    """What a run needs of its catalog (a Protocol: this module does not import catalogs)."""

    root_map: Mapping[str, str]


_READERS = StampedCache(256)


def _open_reader(path: str, head: tuple[dict, dict | None] | None = None) -> RunReader:
    """A reader of a run file; finished runs are remembered (per process) until they change.
    ``head``: (start, stop) from the index, describing the file as it is now."""
    return _READERS.get(path, lambda: RunReader(path, head), keep=lambda r: r.finished)


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

    def __init__(self, catalog: CatalogLike, uid: str, path: str, *,
                 _indexed: tuple | None = None) -> None:
        self.catalog = catalog
        self.uid = uid
        self.path = path
        self.__reader: RunReader | None = None
        self._streams: dict[str, Stream] = {}
        self._md: tuple | None = None  # (file stamp, metadata from the index)
        self._row = _indexed  # ((mtime_ns, size), start JSON, stop JSON) from the look-up

    def _reader(self) -> RunReader:
        r = self.__reader
        if r is None or not r.finished:  # a run being written: look again each time
            md = self._indexed() if r is None else None  # start and stop need not be read
            head = (md["start"], md["stop"]) if md is not None else None
            r = self.__reader = _open_reader(self.path, head)
        return r

    @property
    def _stamp(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    @property
    def metadata(self) -> dict:
        """``{"start": ..., "stop": ...}``; stop is None while (or if) the run has no stop."""
        md = self._indexed()
        if md is not None:
            return dict(md)
        r = self._reader()
        return {"start": r.start, "stop": r.stop}

    def _indexed(self) -> dict | None:
        """Start and stop from the catalog's index row, if it describes the file as it is.

        The index keeps both documents and the file's (mtime, size) when it read them: while
        the file still has that stamp, they are the file's, and no HDF5 file is opened.
        """
        if self.__reader is not None and self.__reader.finished:
            return None  # already open: the reader has them
        try:
            stamp = self._stamp
        except OSError:
            return None
        if self._md is not None and self._md[0] == stamp:
            return self._md[1]
        got, self._row = self._row, None
        if got is None or got[0] != stamp:
            index = getattr(self.catalog, "_index", None)
            got = (index.run_documents(self.uid, os.path.basename(self.path))
                   if index is not None else None)
        if got is None or got[0] != stamp:
            return None
        md = {"start": _docs.loads(got[1]), "stop": _docs.loads(got[2]) if got[2] else None}
        self._md = (stamp, md)
        return md

    @property
    def start(self) -> dict:
        md = self._indexed()
        return md["start"] if md is not None else self._reader().start

    @property
    def stop(self) -> dict | None:
        md = self._indexed()
        return md["stop"] if md is not None else self._reader().stop

    def __iter__(self) -> Iterator[str]:
        return iter(self._reader().stream_names)

    def __len__(self) -> int:
        return len(self._reader().stream_names)

    def __contains__(self, name: object) -> bool:
        return name in self._reader().stream_names

    def __getitem__(self, name: str) -> Stream:
        r = self._reader()
        if name not in r.stream_names:
            raise lookup.no_stream(self.uid, name, r.stream_names)
        s = self._streams.get(name)
        if s is None or not r.finished or s._reader is not r:  # (one made while it was running)
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
        return the paths written. See :func:`databroker_lite.export.export`.

        A thin call into the export tool, imported only now (the tools sit above runs)."""
        from .export import export
        return export(self, fmt, dest, streams=streams)

    def __repr__(self) -> str:
        r = self._reader()
        return run_summary(self.uid, r.start, r.stop, r.stream_names)

    def _repr_html_(self) -> str:
        r = self._reader()
        return run_html(self.uid, r.start, r.stop, [self[n]._repr_html_() for n in r.stream_names])

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
