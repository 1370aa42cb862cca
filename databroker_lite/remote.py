"""A catalog served by ``databroker-lite serve``, read over HTTP through tiled's client.

``databroker_lite.from_uri(url, api_key=...)`` gives a :class:`RemoteCatalog` with the
look-ups, search, repr, ``read()`` and ``to_dask()`` of a local catalog. Needs the
``server`` extra (tiled's client); nothing here is imported by ``import databroker_lite``.
"""
from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import xarray as xr

from . import lookup
from .column import ColumnLike
from .documents import JSON_VALUES, from_json_texts
from .errors import (
    AmbiguousKey,
    CatalogNotFound,
    DatabrokerLiteError,
    InvalidQuery,
    RecentRunNotFound,
    RunFileUnreadable,
    RunNotFound,
    StreamNotFound,
)
from .run import StreamAttributes
from .storage.lazy import needs_post, split_selection
from .summaries import (
    ColumnInfo,
    catalog_html,
    catalog_row,
    catalog_summary,
    run_html,
    run_summary,
    stream_html,
    stream_summary,
)


class RemoteError(DatabrokerLiteError, OSError):
    """The server could not be reached or refused a request; the message is the server's."""


class Unauthorized(RemoteError, PermissionError):
    """The server refused the API key (HTTP 401), or none was given."""


class OutOfRange(DatabrokerLiteError, IndexError):
    """A slice or index lies outside the array on the server."""


_ERRORS: dict[str, type[Exception]] = {
    "RunNotFound": RunNotFound, "StreamNotFound": StreamNotFound,
    "InvalidQuery": InvalidQuery, "IndexError": OutOfRange,
    "RecentRunNotFound": RecentRunNotFound, "RunFileUnreadable": RunFileUnreadable,
}


def _tiled():
    try:
        import tiled.client  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading a remote catalog needs tiled's client: "
                          "pip install 'databroker_lite[server]'") from exc
    from .server import queries
    return queries


def _detail(resp: Any) -> Any:
    """The ``detail`` of a tiled error response (its reason phrase if it is not JSON)."""
    try:
        return resp.json().get("detail", "")
    except ValueError:
        return resp.reason_phrase


@contextlib.contextmanager
def _translate(url: str) -> Iterator[None]:
    """tiled/httpx errors -> our exception types, keeping the server's message."""
    import httpx
    from tiled.client.auth import CannotRefreshAuthentication
    try:
        yield
    except CannotRefreshAuthentication:
        raise Unauthorized(f"{url} no longer accepts this session (401) and it cannot be "
                           "renewed: log in again with from_uri(url, username=...)") from None
    except httpx.HTTPStatusError as exc:
        resp = exc.response
        detail = _detail(resp)
        if resp.status_code == 401:
            raise Unauthorized(f"{url}: the server refused the API key (401: {detail})") from None
        if isinstance(detail, dict) and "error" in detail:
            name, message = detail["error"], detail.get("message", "")
            if name == "AmbiguousKey":
                raise AmbiguousKey(message, candidates=[]) from None
            raise _ERRORS.get(name, RemoteError)(message) from None
        raise RemoteError(f"{resp.status_code}: {detail} ({exc.request.url})") from None
    except httpx.TransportError as exc:
        raise RemoteError(f"cannot reach {url}: {exc}") from None


def from_uri(url: str, api_key: str | None = None, *, username: str | None = None,
             password: str | None = None, provider: str | None = None,
             catalog: str | None = None) -> RemoteCatalog | RemoteCatalogs:
    """Connect to a server started with ``databroker-lite serve``.

    Parameters
    ----------
    url : the server, e.g. ``"http://127.0.0.1:8000"``.
    api_key : the key in the server's ``--api-key-file``, or a user's own key
        (:meth:`RemoteCatalog.create_api_key`) on a server with logins.
    username, password : log in (a server started with ``--config``); the password is
        prompted for when not given. tiled keeps the session's tokens (in memory) and
        renews them as they expire.
    provider : on a server with several login providers, which one.
    catalog : when the server serves several catalogs, the name of one of them.

    Returns
    -------
    A :class:`RemoteCatalog`, or, for a server of several catalogs and no ``catalog``
    given, a mapping of names to them.
    """
    _tiled()
    from tiled.client import from_uri as tiled_from_uri
    if username is not None:
        if api_key:
            raise ValueError("give an API key or a user name, not both")
        root = _login(url, username, password, provider)
    elif not api_key:
        raise Unauthorized(f"{url} needs an API key: from_uri(url, api_key=...) with the key "
                           "in the server's --api-key-file (or username=... to log in)")
    elif not api_key.isascii() or not api_key.isprintable():
        raise Unauthorized(f"{url}: an API key is ASCII letters and digits; this one is not "
                           "(check the key in the server's --api-key-file)")
    with _translate(url):
        if username is None:
            root = tiled_from_uri(url, api_key=api_key, remember_me=False,
                                  structure_clients=_plain_clients())
        if _is_catalog(root):
            served = root.metadata.get("name")
            if catalog is not None and catalog != served:
                raise CatalogNotFound(f"{url} serves one catalog, {served!r}, not {catalog!r}")
            return RemoteCatalog(root, url)
        cats = RemoteCatalogs(root, url)
        return cats[catalog] if catalog is not None else cats


def _login(url: str, username: str, password: str | None, provider: str | None) -> Any:
    """tiled's password grant (``POST /auth/provider/P/token``), its tokens on the client."""
    import getpass

    import httpx
    from tiled.client.constructors import from_context
    from tiled.client.context import Context, password_grant
    with _translate(url):
        context, parts = Context.from_any_uri(url)
        specs = [p for p in context.server_info.authentication.providers
                 if p.mode in ("internal", "password")]
    names = [p.provider for p in specs]
    if not specs:
        raise Unauthorized(f"{url} takes no user logins: it was started with an API key "
                           "(from_uri(url, api_key=...))")
    if provider is None and len(specs) > 1:
        raise ValueError(f"{url} has several login providers {names}; choose one: provider=...")
    spec = specs[0] if provider is None else next((p for p in specs if p.provider == provider),
                                                  None)
    if spec is None:
        raise ValueError(f"{url} has no login provider {provider!r}; it has {names}")
    if password is None:
        password = getpass.getpass(f"Password for {username} at {url}: ")
    with _translate(url):
        try:
            tokens = password_grant(context.http_client, spec.links["auth_endpoint"],
                                    spec.provider, username, password)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (401, 422):  # 422: an empty field
                raise Unauthorized(f"{url} refused the login of {username!r}: wrong user "
                                   "name or password") from None
            if exc.response.status_code == 429:
                raise Unauthorized(f"{url} refused the login of {username!r} for now: "
                                   f"{_detail(exc.response)}") from None
            raise
        context.configure_auth(tokens, remember_me=False)
        return from_context(context, node_path_parts=parts, remember_me=False,
                            structure_clients=_plain_clients())


def _plain_clients() -> dict:
    """tiled's plain client classes: not databroker 2's, which the server's specs would
    select (their ``search`` rewrites our queries)."""
    from tiled.client.array import ArrayClient
    from tiled.client.container import Container
    from tiled.client.xarray import DatasetClient
    return {"container": Container, "array": ArrayClient, "xarray_dataset": DatasetClient}


def _is_catalog(node: Any) -> bool:
    return any(s.name == "databroker_lite_catalog" for s in node.specs)


class RemoteCatalogs(Mapping):
    """The catalogs of a server that serves several, by name."""

    def __init__(self, root: Any, url: str) -> None:
        self._root, self.url = root, url

    def __getitem__(self, name: str) -> RemoteCatalog:
        with _translate(self.url):
            if name not in self._root:
                raise CatalogNotFound(f"{self.url} serves no catalog {name!r}; it serves "
                                      f"{list(self)}")
            return RemoteCatalog(self._root[name], f"{self.url} {name}")

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._root))

    def __len__(self) -> int:
        return len(self._root)

    def __repr__(self) -> str:
        return f"<RemoteCatalogs at {self.url}: {list(self)}>"


class RemoteCatalog(Mapping):
    """Runs on a server: ``cat[scan_id]``, ``cat[-1]``, ``cat[uid or prefix]``, ``search``."""

    def __init__(self, node: Any, url: str) -> None:
        self._node, self.url = node, url

    def __len__(self) -> int:
        with _translate(self.url):
            return len(self._node)

    def __iter__(self) -> Iterator[str]:
        with _translate(self.url):
            uids = list(self._node)
        return iter(uids)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with _translate(self.url):
            return key in self._node

    def keys(self):  # noqa: D102 - a list, as Catalog.keys
        return list(self)

    def __getitem__(self, key: Any) -> RemoteRun:
        return RemoteRun(self, self._uid(key))

    def _uid(self, key: Any) -> str:
        """The uid of the run ``cat[key]`` gives, resolved by the server (one request)."""
        queries = _tiled()
        key = lookup.check_key(key)
        with _translate(self.url):
            found = self._node.search(queries.RunKey.of(key))
            uids = list(found)
        if not uids:  # pragma: no cover - the server answers 404 instead
            raise RunNotFound(f"no run matches {key!r}")
        if len(uids) > 1:
            lookup.warn_shared_scan_id(key, uids[0], uids[1:], stacklevel=4)
        return uids[0]

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except RunNotFound:
            return default

    def search(self, query: Mapping) -> RemoteCatalog:
        """The runs whose start documents match a MongoDB-style query; run on the server."""
        queries = _tiled()
        if not isinstance(query, Mapping):
            raise TypeError(f"search takes a dict query, got {type(query).__name__}")
        q = queries.MongoQuery.from_dict(dict(query))
        with _translate(self.url):
            node = self._node.search(q)
            len(node)  # the server checks the query now, not at first use
            return RemoteCatalog(node, self.url)

    def create_api_key(self, *, expires_in: int | str | None = None,
                       note: str | None = None) -> str:
        """A new API key of the logged-in user, for scripts: ``from_uri(url, api_key=key)``.

        It reads what the user reads, until it expires (``expires_in`` seconds, or
        ``"30d"``, ``"12h"``) or is revoked (:meth:`revoke_api_key`). Keep it as a password.
        """
        with _translate(self.url):
            return self._node.context.create_api_key(expires_in=expires_in, note=note)["secret"]

    def revoke_api_key(self, key: str) -> None:
        """Revoke one of the user's API keys (the key, or its first eight characters)."""
        with _translate(self.url):
            self._node.context.revoke_api_key(key[:8])

    def load_array(self, uid: Any, path: str,
                   slices: Iterable[slice | int] | None = None) -> np.ndarray:
        """One column of a run, or a slice of it, as numpy (as BisQue's ``load_array``).

        ``path`` is ``"STREAM/FIELD"``, e.g. ``"primary/I0"``. ``slices`` are numpy
        slices, one per axis: ``slice(10, 20)`` is rows 10 to 19 (the end is excluded,
        unlike BisQue's inclusive ends). Only the slice travels.
        """
        stream, sep, field = path.partition("/")
        if not sep or not stream or not field or "/" in field or {stream, field} & {".", ".."}:
            raise ValueError(f"path {path!r} should be 'STREAM/FIELD', e.g. 'primary/I0'")
        from tiled.client.constructors import from_context
        parts = [*self._node.path_parts, self._uid(uid), stream, "data", field]
        with _translate(self.url):  # a missing stream or column: the server says which
            arr = from_context(self._node.context, node_path_parts=parts,
                               structure_clients=_plain_clients())
        sel = tuple(slices) if slices is not None else ()
        for s in sel:
            if not isinstance(s, (slice, numbers.Integral)) or isinstance(s, bool):
                raise TypeError(f"slices are slice objects or ints, not {s!r}")
        sel = tuple(s if isinstance(s, slice) else int(s) for s in sel)
        return _read_slice(arr, sel, self.url)

    def _newest(self, k: int) -> list[dict]:
        """Summary rows of the ``k`` newest runs (one page of ``k``; streams listed)."""
        with _translate(self.url):
            newest = list(self._node.sort(("_", -1)).items().head(k))
            return [catalog_row(uid, node.metadata["start"], node.metadata["stop"],
                                node.metadata.get("summary", {}).get("stream_names")
                                or list(node))
                    for uid, node in newest]

    def __repr__(self) -> str:
        with _translate(self.url):
            newest = [catalog_row(uid, node.metadata["start"], node.metadata["stop"])
                      for uid, node in self._node.sort(("_", -1)).items().head(5)]
        return catalog_summary("RemoteCatalog", self.url, len(self), newest)

    def _repr_html_(self) -> str:
        return catalog_html(self.url, self.url, len(self), self._newest(10))


def _read_slice(arr: Any, sel: tuple, url: str) -> np.ndarray:
    """One request for ``arr[sel]``; the server, not the client, judges the bounds."""
    st = arr.structure()
    dtype = st.data_type.to_numpy_dtype()
    if dtype.kind in "OUS":  # text: small; let tiled's client decode it
        with _translate(url):
            return arr.read(slice=sel) if sel else arr.read()
    if not sel and st.shape:  # a run being written may have more rows by now: ask for these
        sel = (slice(0, st.shape[0]),)
    try:  # numpy semantics for the shape of the answer, without any data
        shape = np.broadcast_to(np.zeros((), dtype), tuple(st.shape))[sel].shape
    except IndexError:
        shape = None  # out of range: the server says so, with its message
    out = _fetch(arr, sel, shape, dtype.str, url)
    if shape is None:  # pragma: no cover - the server rejects these
        raise OutOfRange(f"{arr.uri}: {sel} is out of range for shape {tuple(st.shape)}")
    return out


def _fetch(arr: Any, sel: tuple, shape: tuple | None, dtype: str, url: str) -> np.ndarray:
    """GET the raw bytes of ``arr[sel]`` (one request) as a numpy array of ``shape``."""
    return _get_raw(arr.context.http_client, arr.item["links"]["full"], sel, shape, dtype, url)


def _get_raw(client: Any, link: str, sel: tuple, shape: tuple | None, dtype: str,
             url: str) -> np.ndarray:
    from tiled.client.utils import handle_error
    from tiled.ndslice import NDSlice
    params = {"slice": NDSlice(*sel).to_numpy_str()} if sel else {}
    with _translate(url):
        resp = handle_error(client.get(link, params=params,
                                       headers={"Accept": "application/octet-stream"}))
    data = np.frombuffer(resp.content, dtype=np.dtype(dtype))
    return data.reshape(shape).copy() if shape is not None else data.copy()


_clients: dict[tuple[str, str], Any] = {}


def _client_for(url: str, auth: str) -> Any:
    """This process's HTTP client for a server and key (for graphs unpickled elsewhere)."""
    client = _clients.get((url, auth))
    if client is None:
        import httpx
        client = _clients[(url, auth)] = httpx.Client(headers={"Authorization": auth}, timeout=60)
    return client


class _RemoteArray:
    """A served array as dask reads it: each read is one request for the selection's box.

    Pickles as the array's address and the API key's header (not tiled's client), so a
    graph computes on dask.distributed workers too, each with its own connection.
    """

    def __init__(self, arr: Any, shape: tuple, dtype: np.dtype, url: str) -> None:
        self.arr, self.url = arr, url
        self.link = arr.item["links"]["full"] if arr is not None else ""
        self.auth = arr.context.http_client.headers.get("Authorization", "") if arr is not None else ""
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    def __getstate__(self) -> tuple:
        return (self.link, self.auth, self.shape, self.dtype.str, self.url)

    def __setstate__(self, state: tuple) -> None:
        self.link, self.auth, shape, dtype, self.url = state
        self.arr, self.shape, self.dtype, self.ndim = None, tuple(shape), np.dtype(dtype), len(shape)

    def __getitem__(self, sel: Any) -> np.ndarray:
        read, post = split_selection(sel, self.shape)
        box = tuple(slice(s.start, s.stop) for s in read)
        shape = tuple(s.stop - s.start for s in box)
        if 0 in shape:
            out = np.zeros(shape, self.dtype)
        else:
            client = (self.arr.context.http_client if self.arr is not None
                      else _client_for(self.url, self.auth))
            out = _get_raw(client, self.link, box, shape, self.dtype.str, self.url)
        if any(s.step != 1 for s in read):
            out = out[tuple(slice(None, None, s.step) for s in read)]
        return out[post] if needs_post(post) else out


def _from_json_texts(var: xr.Variable) -> xr.Variable:
    """A served column of JSON texts as read() gives it locally: one object per event."""
    from .stream import _object_rows
    decoded = from_json_texts(var.values)
    attrs = {k: v for k, v in var.attrs.items() if k != JSON_VALUES}
    return xr.Variable(var.dims, _object_rows(decoded) if decoded.ndim == 1 else decoded,
                       attrs=attrs)


def _lazy_variable(arr: Any, url: str) -> xr.Variable:
    """A served array as a dask-backed Variable, chunked like the server's chunks.

    dask fuses ``x[i]`` into the read of a chunk, so a frame travels alone (one request).
    """
    import dask.array as da
    from dask.base import tokenize
    st = arr.structure()
    dtype = st.data_type.to_numpy_dtype()
    dims, attrs = tuple(st.dims or ()), dict(arr.metadata.get("attrs", {}))
    if dtype.kind in "OUS" or not st.shape:  # text and scalars: small, read now
        var = xr.Variable(dims, _read_slice(arr, (), url), attrs=attrs)
        if attrs.get(JSON_VALUES):
            var = _from_json_texts(var)
        values = var.values
        return var.copy(data=da.from_array(values, chunks=values.shape or ()))
    chunks = tuple(tuple(c) for c in st.chunks)
    name = f"remote-{tokenize(arr.uri, tuple(st.shape), chunks, dtype.str)}"
    source = _RemoteArray(arr, tuple(st.shape), dtype, url)
    data = da.from_array(source, chunks=chunks, asarray=False, name=name,
                         meta=np.zeros((0,) * len(st.shape), dtype=dtype))
    return xr.Variable(dims, data, attrs=attrs)


class RemoteRun(StreamAttributes):
    """One run on a server; ``run.primary`` or ``run["primary"]`` is a :class:`RemoteStream`."""

    def __init__(self, catalog: RemoteCatalog, uid: str) -> None:
        self.catalog, self.uid = catalog, uid
        with _translate(catalog.url):
            self._node = catalog._node[uid]

    @property
    def metadata(self) -> dict:
        """``{"start": ..., "stop": ...}``, as a local run's."""
        md = self._node.metadata
        return {"start": dict(md["start"]), "stop": dict(md["stop"]) if md["stop"] else None}

    @property
    def start(self) -> dict:
        return self.metadata["start"]

    @property
    def stop(self) -> dict | None:
        return self.metadata["stop"]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def _names(self) -> list[str]:
        with _translate(self.catalog.url):
            return list(self._node)

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __getitem__(self, name: str) -> RemoteStream:
        names = self._names()
        if name not in names:
            raise lookup.no_stream(self.uid, name, names)
        return RemoteStream(self, name)

    def __repr__(self) -> str:
        return run_summary(self.uid, self.start, self.stop, self._names())

    def documents(self, fill: bool = False) -> Iterator[tuple[str, dict]]:
        """The run's documents in order, as :meth:`databroker_lite.Run.documents` gives them
        (pages as single documents), streamed from the server's documents route."""
        from event_model import unpack_datum_page
        client = self._node.context.http_client
        link = self._node.uri.replace("/metadata/", "/documents/", 1)
        params = {"fill": "true"} if fill else {}
        with _translate(self.catalog.url), client.stream(
                "GET", link, params=params, headers={"Accept": "application/json-seq"}) as resp:
            if resp.is_error:
                resp.read()
                resp.raise_for_status()
            rest = b""
            for chunk in resp.iter_bytes():
                *records, rest = (rest + chunk).split(b"\x1e")
                for record in records:
                    yield from _document(record, unpack_datum_page)
            yield from _document(rest, unpack_datum_page)

    def export(self, fmt: str, dest: str | os.PathLike,
               streams: list[str] | None = None) -> list[str]:
        """Write this run as ``csv``, ``json``, ``spec`` or ``nexus`` files under ``dest``
        (on this machine), as a local run's ``export`` does; return the paths written.

        The data travel a block of rows at a time (see :func:`databroker_lite.export.export`)."""
        from .export import export
        return export(self, fmt, dest, streams=streams)

    def _repr_html_(self) -> str:
        md = self.metadata
        return run_html(self.uid, md["start"], md["stop"],
                        [self[n]._repr_html_() for n in self._names()])


def _document(record: bytes, unpack_datum_page: Any) -> Iterator[tuple[str, dict]]:
    """One json-seq record ``{"name": ..., "doc": ...}`` as (name, doc) pairs (a datum_page,
    which the route sends for each datum, as its datums)."""
    import json
    record = record.strip()
    if not record:
        return
    item = json.loads(record)
    if item["name"] == "datum_page":
        for datum in unpack_datum_page(item["doc"]):
            yield "datum", datum
    else:
        yield item["name"], item["doc"]


class RemoteColumn(ColumnLike):
    """One column of a remote stream as an array-like, as a local
    :class:`~databroker_lite.ArrayColumn`: ``col[k]`` or ``col[a:b, y0:y1]`` is one
    request for that box, returned as numpy; no dask or xarray in between."""

    def __init__(self, stream: RemoteStream, key: str) -> None:
        self.stream, self.key = stream, key
        self._arr, self._url = stream._array(key), stream.run.catalog.url
        st = self._arr.structure()
        self.shape: tuple[int, ...] = tuple(st.shape)
        dtype = st.data_type.to_numpy_dtype()
        self.dtype: np.dtype = np.dtype("U") if dtype.kind in "OUS" else dtype
        self.dims: tuple[str, ...] = tuple(st.dims or ())
        self.attrs: dict = dict(self._arr.metadata.get("attrs", {}))
        self._json = bool(self.attrs.pop(JSON_VALUES, False))
        if self._json:  # values kept as they came: one object per event, as locally
            self.dtype = np.dtype(object)

    def __repr__(self) -> str:
        return (f"<RemoteColumn {self.key!r} of stream {self.stream.name!r}: shape "
                f"{self.shape}, dtype {self.dtype}>")

    def __getitem__(self, sel: Any) -> np.ndarray:
        if self._json:
            texts = xr.Variable(self.dims, np.asarray(_read_slice(self._arr, (), self._url)))
            return np.asarray(_from_json_texts(texts).values)[sel]
        if self.dtype.kind == "U":  # text travels whole (it is small), as in read()
            values = np.asarray(_read_slice(self._arr, (), self._url))
            return (values.astype(str) if values.size else values.astype("U1"))[sel]
        return _RemoteArray(self._arr, self.shape, self.dtype, self._url)[sel]

    def _reduce(self, how: str, axis: Any) -> np.ndarray:
        # dask over the server's chunks: a chunk at a time travels and is reduced
        if self.dtype.kind not in "biuf":
            return getattr(np, how)(self[...], axis=axis)
        return np.asarray(getattr(_lazy_variable(self._arr, self._url).data, how)(axis=axis)
                          .compute())


class RemoteStream:
    """One stream of a remote run: ``read()`` in memory, ``to_dask()`` lazily,
    ``stream[key]`` one column sliced on the server."""

    def __init__(self, run: RemoteRun, name: str) -> None:
        self.run, self.name = run, name
        with _translate(run.catalog.url):
            self._stream = run._node[name]  # data, timestamps, config, as databroker 2's
            self._node = self._stream["data"]

    def fields(self) -> list[str]:
        return [k for k in self._node if k != "time"]

    def __getitem__(self, key: str) -> RemoteColumn:
        """One data key as a :class:`RemoteColumn`: ``stream["img"][3]`` is one request."""
        if not isinstance(key, str):
            raise TypeError(f"look up a column by its data key (str), not {type(key).__name__}")
        return RemoteColumn(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.fields()

    @property
    def metadata(self) -> dict:
        return {"descriptors": list(self._stream.metadata.get("descriptors", [])),
                "stream_name": self.name}

    def __len__(self) -> int:
        return int(self._array("time").structure().shape[0])

    def __repr__(self) -> str:
        return stream_summary(self.name, self.run.uid, len(self), self.fields())

    def _repr_html_(self) -> str:
        with _translate(self.run.catalog.url):
            columns = []
            for key, arr in self._node.items():
                if key == "time":
                    continue
                st, attrs = arr.structure(), arr.metadata.get("attrs", {})
                columns.append(ColumnInfo(key, st.data_type.to_numpy_dtype(), tuple(st.shape[1:]),
                                          attrs.get("external", ""), attrs.get("units", "")))
        return stream_html(self.name, len(self), columns)

    @property
    def timestamps(self) -> xr.Dataset:
        """Per-key timestamps, one data variable per key, on the same ``time``."""
        with _translate(self.run.catalog.url):
            return self._stream["timestamps"].read()

    @property
    def config(self) -> Mapping[str, xr.Dataset]:
        """Configuration readings by device, from the descriptors (as a local stream's)."""
        from .configuration import config_datasets
        return config_datasets(self.metadata["descriptors"])

    def _variables(self, fields: Iterable[str] | str | None) -> list[str] | None:
        chosen = lookup.select_fields(fields, self.fields(), self.name, self.run.uid)
        return None if chosen is None else [*chosen, "time"]

    def _array(self, field: str) -> Any:
        with _translate(self.run.catalog.url):
            if field not in self._node:
                lookup.select_fields([field], self.fields(), self.name, self.run.uid)  # raises
            return self._node[field]

    def read(self, fields: Iterable[str] | str | None = None) -> xr.Dataset:
        """All events of the stream in memory (every column, or ``fields``)."""
        variables = self._variables(fields)
        with _translate(self.run.catalog.url):
            ds = self._node.read(variables=variables)
        for k, v in ds.variables.items():  # text travels as objects: '<U' as read() locally
            if v.attrs.get(JSON_VALUES):
                ds[k] = _from_json_texts(v)
            elif v.dtype.kind == "O":
                ds[k] = v.astype(str) if v.size else v.astype("U1")
        return ds

    def to_dask(self, fields: Iterable[str] | str | None = None) -> xr.Dataset:
        """The same Dataset backed by dask: only the chunks a computation touches travel."""
        names = self._variables(fields) or list(self._node)
        url = self.run.catalog.url
        with _translate(url):
            arrays = {k: self._node[k] for k in names}
            variables = {k: _lazy_variable(a, url) for k, a in arrays.items()}
            coords = {k: v.compute() for k, v in variables.items()
                      if any(s.name == "xarray_coord" for s in arrays[k].specs)}
            data_vars = {k: v for k, v in variables.items() if k not in coords}
            return xr.Dataset(data_vars, coords=coords, attrs=dict(self._node.metadata["attrs"]))
