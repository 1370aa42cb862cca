"""tiled adapters over the public API: catalog -> runs -> streams -> xarray-style datasets.

Arrays are served from ``Stream.to_dask()`` (and chunked like it); a request for one
frame reads that frame and nothing else. Adapters of a run are kept
(per process) until its file changes.
"""
from __future__ import annotations

import json
import numbers
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.structures.array import ArrayStructure
from tiled.structures.core import Spec

from .. import lookup
from ..catalogs import Catalog
from ..documents import JSON_VALUES, json_texts
from ..errors import DatabrokerLiteError, InvalidQuery, RunNotFound
from ..run import Run
from ..storage.files import StampedCache
from ..storage.lazy import LazyDataset
from ..stream import Stream
from .queries import RunKey
from .specs import (  # noqa: F401 - also the names other modules and old code take from here
    CATALOG_SPEC,
    LITE_CATALOG_SPEC,
    LITE_RUN_SPEC,
    RUN_SPEC,
    STREAM_SPEC,
    error,
)


# --- arrays ---------------------------------------------------------------------
def _check_selection(sel: tuple, shape: tuple, name: str) -> None:
    """Reject integer indexes outside the array and slices that start past its end."""
    axis = 0
    for item in sel:
        if item is Ellipsis:
            axis = len(shape) - (len(sel) - 1 - sel.index(Ellipsis))
            continue
        if axis >= len(shape):
            raise error(400, "IndexError", f"{name}: too many indices for an array of "
                                           f"shape {shape}")
        n = shape[axis]
        if isinstance(item, numbers.Integral):
            if not -n <= int(item) < n:
                raise error(400, "IndexError", f"{name}: index {int(item)} is out of range for "
                                               f"axis {axis} of length {n} (shape {shape})")
        elif isinstance(item, slice):
            if item.step == 0:
                raise error(400, "IndexError", f"{name}: slice step cannot be zero "
                                               f"(axis {axis}); use a step of 1 or more, or -1")
            start, step = item.start, item.step or 1
            if step > 0 and start is not None and start >= n and n > 0 and item.stop != start:
                raise error(400, "IndexError", f"{name}: slice {start}:{item.stop} starts past "
                                               f"the end of axis {axis} (length {n}, shape {shape})")
        axis += 1


def _lazy_source(data: Any) -> LazyDataset | None:
    """The LazyDataset a dask array of ``to_dask()`` reads, if it reads exactly one."""
    graph = data.__dask_graph__()
    found = []
    for layer in getattr(graph, "layers", {}).values():
        if len(layer) == 1:
            value = next(iter(layer.values()))
            if isinstance(value, LazyDataset):
                found.append(value)
    if len(found) == 1 and found[0].shape == tuple(data.shape) and not found[0].text:
        return found[0]
    return None


def _direct(sel: tuple, shape: tuple) -> tuple | None:
    """``sel`` as h5py takes it (ints made non-negative), or None if h5py cannot."""
    out, axis = [], 0
    for item in sel:
        if item is Ellipsis:
            return None
        if isinstance(item, slice):
            if item.step is not None and item.step < 1:
                return None
            start, stop, step = item.indices(shape[axis])  # huge or negative ends made concrete
            out.append(slice(start, max(start, stop), step))
        else:
            out.append(int(item) % shape[axis] if shape[axis] else int(item))
        axis += 1
    return tuple(out)


class ChunkedArrayAdapter(ArrayAdapter):
    """One column of a stream, served from its dask array (chunked as ``to_dask()`` is).

    When the column is one HDF5 dataset, a read goes straight to the dataset behind
    the dask array (``LazyDataset``), which reads only the HDF5 chunks the selection
    touches; this saves the ~3 ms of building and running a dask graph per request.
    """

    def __init__(self, array: Any, structure: ArrayStructure, *, name: str,
                 metadata: dict | None = None, specs: list | None = None) -> None:
        super().__init__(array, structure, metadata=metadata, specs=specs)
        self._name = name
        self._source = _lazy_source(array)

    def _get(self, sel: tuple) -> np.ndarray:
        if self._source is not None:
            direct = _direct(sel, self._structure.shape)
            if direct is not None:
                return np.asarray(self._source[direct] if direct else self._source[()])
        out = self._array[sel] if sel else self._array
        return np.asarray(out.compute(scheduler="synchronous"))

    def read(self, slice: Any = ...) -> np.ndarray:  # noqa: A002 - tiled's signature
        sel = tuple(slice) if slice not in (None, ...) and slice else ()
        _check_selection(sel, self._structure.shape, self._name)
        shape = np.broadcast_to(np.empty((), np.uint8), self._structure.shape)[sel].shape
        if 0 in shape:  # an empty selection (e.g. 7:3) reads nothing
            return np.empty(shape, self._structure.data_type.to_numpy_dtype())
        return self._get(sel)

    def read_block(self, block: Any, slice: Any = ...) -> np.ndarray:  # noqa: A002
        out = self._get(tuple(block.slice_from_chunks(self._structure.chunks)))
        inner = tuple(slice) if slice not in (None, ...) and slice else ()
        return out[inner] if inner else out


def _variable_adapter(ds: Any, key: str, where: str) -> ArrayAdapter:
    var = ds[key].variable
    spec = Spec("xarray_coord") if key in ds.coords else Spec("xarray_data_var")
    meta = {"attrs": dict(var.attrs)}
    data = var.data
    if data.dtype.kind in "OU" or not hasattr(data, "dask"):  # text and coords: small, eager
        arr = np.asarray(var.values)
        if arr.dtype.kind == "O":  # values kept as they came: each as its JSON text
            arr = json_texts(arr)
            meta["attrs"][JSON_VALUES] = True
        return ArrayAdapter.from_array(arr, dims=var.dims, metadata=meta, specs=[spec])
    structure = ArrayStructure.from_array(data, dims=var.dims)
    return ChunkedArrayAdapter(data, structure, name=f"{where}/{key}", metadata=meta,
                               specs=[spec])


class _Variables(Mapping):
    """The columns of an xarray Dataset as tiled array adapters, built on first use."""

    def __init__(self, ds: Any, where: str) -> None:
        self._ds, self._where = ds, where
        self._keys = [*ds.data_vars, *ds.coords]
        self._adapters: dict[str, ArrayAdapter] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __getitem__(self, key: str) -> ArrayAdapter:
        a = self._adapters.get(key)
        if a is None:
            if key not in self._keys:
                raise error(404, "StreamNotFound", f"{self._where} has no column "
                                                  f"{key!r}; it has {self._keys}")
            a = self._adapters[key] = _variable_adapter(self._ds, key, self._where)
        return a


class DatasetAdapter(MapAdapter):
    """An xarray Dataset as tiled's ``xarray_dataset``: data variables and coordinates."""

    def inlined_contents_enabled(self, depth: int) -> bool:
        return True


StreamAdapter = DatasetAdapter  # the name of earlier releases


def dataset_adapter(ds: Any, where: str, metadata: dict | None = None) -> DatasetAdapter:
    return DatasetAdapter(_Variables(ds, where),
                          metadata={"attrs": dict(ds.attrs), **(metadata or {})},
                          specs=[Spec("xarray_dataset")])


class _Lazy(Mapping):
    """name -> adapter, each made by its factory on first use (then kept)."""

    def __init__(self, factories: dict[str, Any], where: str, what: str,
                 hidden: dict[str, Any] | None = None) -> None:
        self._factories, self._where, self._what = factories, where, what
        self._hidden = hidden or {}  # found by name, never listed
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._factories)

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            a = self._made.get(key)
            if a is None:
                make = self._factories.get(key) or self._hidden.get(key)
                if make is None:
                    raise error(404, "StreamNotFound", f"{self._where} has no {self._what} "
                                                      f"{key!r}; it has {list(self._factories)}")
                a = self._made[key] = make()
            return a


def _config_timestamps(stream: Stream) -> dict[str, Any]:
    """Per object, the timestamps of its configuration readings (one row per descriptor)."""
    import xarray as xr
    out = {}
    descriptors = stream.descriptors
    times = np.asarray([d.get("time", np.nan) for d in descriptors], dtype=float)
    for obj in dict.fromkeys(o for d in descriptors for o in d.get("configuration", {})):
        rows = [d.get("configuration", {}).get(obj, {}).get("timestamps", {}) for d in descriptors]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        data = {k: ("time", np.asarray([r.get(k, np.nan) for r in rows], dtype=float))
                for k in keys}
        out[obj] = xr.Dataset(data, coords={"time": ("time", times)})
    return out


def _config_node(datasets: Mapping[str, Any], where: str) -> MapAdapter:
    return MapAdapter({obj: dataset_adapter(ds, f"{where}/{obj}") for obj, ds in datasets.items()})


def stream_adapter(stream: Stream) -> MapAdapter:
    """A stream as databroker 2 serves one: ``data``, ``timestamps``, ``config``,
    ``config_timestamps`` (spec ``BlueskyEventStream``, version 1)."""
    where = f"{stream.run.uid}/{stream.name}"
    meta = servable({"descriptors": stream.descriptors, "stream_name": stream.name})
    factories = {
        "data": lambda: dataset_adapter(stream.to_dask(), f"{where}/data", meta),
        "timestamps": lambda: dataset_adapter(stream.timestamps, f"{where}/timestamps", meta),
        "config": lambda: _config_node(stream.config, f"{where}/config"),
        "config_timestamps": lambda: _config_node(_config_timestamps(stream),
                                                  f"{where}/config_timestamps"),
    }
    return MapAdapter(_Lazy(factories, f"stream {where}", "part"), metadata=meta,
                      specs=[STREAM_SPEC])


# --- runs ------------------------------------------------------------------------
_WIDEST = (-(2**63), 2**64 - 1)  # what msgpack and orjson, tiled's encoders, can write


def servable(value: Any) -> Any:
    """``value`` as tiled's msgpack and JSON encoders take it: an integer beyond 64 bits
    (valid JSON, kept exactly in the run file) travels as its decimal text. The same
    object comes back when nothing needs changing."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if not _WIDEST[0] <= value <= _WIDEST[1] else value
    if isinstance(value, dict):
        out = {k: servable(v) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, list):
        items = [servable(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    return value


def run_summary_metadata(run: Run) -> dict:
    """``start``, ``stop`` and the ``summary`` databroker 2 servers put on a run."""
    from datetime import datetime
    start, stop, names = run.start, run.stop, list(run)
    summary = {"uid": start["uid"], "scan_id": start.get("scan_id"), "timestamp": start["time"],
               "datetime": datetime.fromtimestamp(start["time"]).isoformat(),
               "plan_name": start.get("plan_name"), "stream_names": names,
               "duration": (stop["time"] - start["time"]) if stop else None}
    return servable({"start": start, "stop": stop, "summary": summary})


class RunAdapter(MapAdapter):
    """A run (spec ``BlueskyRun``, version 1): its streams; ``/documents`` serves its documents."""

    run: Run
    live: bool  # no stop document yet


def run_adapter(run: Run) -> RunAdapter:
    where = f"run {run.uid}"
    factories = {name: (lambda name=name: stream_adapter(run[name])) for name in run}
    # databroker 2's client (bluesky-tiled-plugins 2.0) builds ``run.descriptors`` from
    # ``run._stream_names``, which its class for this layout lacks: the attribute falls
    # through to a child of that name. A hidden child listing the streams answers it.
    streams = _Lazy(factories, where, "stream",
                    hidden={"_stream_names": lambda: MapAdapter(streams)})
    a = RunAdapter(streams, metadata=run_summary_metadata(run), specs=[RUN_SPEC, LITE_RUN_SPEC])
    a.run, a.live = run, a.metadata()["stop"] is None
    return a


_RUNS = StampedCache(256)
_LIVE: dict[str, tuple[int, RunAdapter]] = {}
_LIVE_LOCK = threading.Lock()
#: A run being written is served as a snapshot renewed at most this often (seconds):
#: a client reads a structure, then the data, in two requests, and both should see
#: the same events. (Array reads carry the shape the client expects and are exact
#: whatever the timing; see ``limits._live_slice``.)
LIVE_SNAPSHOT_SECONDS = 1.0


def cached_run_adapter(run: Run) -> RunAdapter:
    """The adapter of a run, kept until its file changes (LRU of 256 runs); a run being
    written is renewed at most every ``LIVE_SNAPSHOT_SECONDS``."""
    a = _RUNS.get(run.path, lambda: run_adapter(run))
    if not a.live:
        return a
    tick = int(time.monotonic() / LIVE_SNAPSHOT_SECONDS)
    with _LIVE_LOCK:
        prev = _LIVE.get(run.path)
        if prev is not None and prev[0] == tick:
            return prev[1]
        _LIVE[run.path] = (tick, a)
        while len(_LIVE) > 256:
            _LIVE.pop(next(iter(_LIVE)))
    return a


# --- catalogs --------------------------------------------------------------------
class _Runs(Mapping):
    """uid -> run adapter, oldest first, built only for the runs a request touches."""

    def __init__(self, catalog: Catalog, only: list[str] | None = None, *,
                 reverse: bool = False, searched: bool = False) -> None:
        self.catalog = catalog
        self.only = only  # a look-up result: these uids, in this order
        self.reverse = reverse  # newest first
        self.searched = searched

    def __len__(self) -> int:
        return len(self.only) if self.only is not None else len(self.catalog)

    def __iter__(self) -> Iterator[str]:
        uids = self.only if self.only is not None else list(self.catalog)
        return reversed(uids) if self.reverse else iter(uids)

    def __contains__(self, uid: object) -> bool:
        if self.only is not None:
            return uid in self.only
        return uid in self.catalog

    def __getitem__(self, uid: str) -> MapAdapter:
        if not isinstance(uid, str) or uid not in self:
            raise error(404, "RunNotFound", f"no run has uid {uid!r}"
                        + (" in this search" if self.searched else ""))
        return cached_run_adapter(self.catalog[uid])


def _no_deep_search(self: Any, max_depth: int | None = None) -> Any:
    # tiled's MapAdapter.search_deep walks every run, stream and column (opening every
    # file) and, from a root of several catalogs, would walk past their access filters.
    raise NotImplementedError("deep search is not served: it would open every run; "
                              "search a catalog instead (its index answers)")


class CatalogsAdapter(MapAdapter):
    """Several catalogs side by side, by name."""

    search_deep = _no_deep_search


class CatalogAdapter(MapAdapter):
    """A catalog: runs by uid, oldest first; searchable with databroker 2's queries,
    tiled's standard ones and ours (see :mod:`databroker_lite.server.search`)."""

    search_deep = _no_deep_search

    def search(self, query: Any) -> CatalogAdapter:
        from .search import as_mongo
        runs: _Runs = self._mapping
        if isinstance(query, RunKey):
            return self.new_variation(mapping=_Runs(runs.catalog, _lookup(runs.catalog, query)))
        mongo = as_mongo(query, runs.catalog)
        if mongo is None:  # a query that keeps every run (e.g. specs=BlueskyRun)
            return self
        if runs.only is not None:
            raise error(400, "InvalidQuery", "cannot search the result of a look-up")
        try:
            found = runs.catalog.search(mongo)
        except (InvalidQuery, TypeError) as exc:
            raise error(400, "InvalidQuery", str(exc)) from None
        return self.new_variation(mapping=_Runs(found, reverse=runs.reverse, searched=True))

    def sort(self, sorting: Any) -> CatalogAdapter:
        reverse = False
        for key, direction in sorting:
            if key != "_":
                raise error(400, "InvalidQuery", "runs are ordered by time; sort by '_' "
                                                 f"(1 or -1), not {key!r}")
            reverse ^= direction < 0
        # Not MapAdapter.sort: it builds the adapter of every run (opening every file).
        runs: _Runs = self._mapping
        return self.new_variation(mapping=_Runs(runs.catalog, runs.only, reverse=runs.reverse ^ reverse,
                                                searched=runs.searched), sorting=sorting)


def _lookup(catalog: Catalog, query: RunKey) -> list[str]:
    try:
        key = json.loads(query.key)
    except ValueError:
        raise error(400, "InvalidQuery", f"run key {query.key!r} is not JSON") from None
    try:
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            if key >= 2**63:
                raise RunNotFound(lookup.no_scan_id(key))
            found = list(catalog.search({"scan_id": key}))
            if not found:
                raise RunNotFound(lookup.no_scan_id(key))
            return found[::-1]  # newest first, as the local look-up picks
        if isinstance(key, int) and not isinstance(key, bool) and key < -2**62:
            raise RunNotFound(f"the catalog has {len(catalog)} run(s); there is no {key} "
                              "(most recent is -1)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", lookup.DuplicateScanIDWarning)
            return [catalog[key].uid]
    except RunNotFound as exc:
        raise error(404, exc) from None
    except (DatabrokerLiteError, TypeError) as exc:
        raise error(400, exc) from None


def catalog_adapter(catalog: Catalog, name: str | None = None) -> CatalogAdapter:
    # No directory in the metadata: a client has no use for the server's paths.
    return CatalogAdapter(_Runs(catalog), metadata={"name": name or catalog.name},
                          specs=[CATALOG_SPEC, LITE_CATALOG_SPEC])
