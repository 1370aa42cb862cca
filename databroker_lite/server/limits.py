"""Guards in front of tiled's routes: unknown query filters and non-ASCII keys are refused.

tiled turns only the query types it knows into route parameters and drops any other
``filter[...]`` silently, so a misspelled or unregistered query would return every
run. Here each ``filter[NAME][condition][FIELD]`` must name a registered query
type and one of its fields, or the request is a 400 that says which. An API key
(header or ``?api_key=``) with bytes outside ASCII would make tiled's key check
fail with a 500; it is a 401 here.
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from tiled.query_registration import default_query_registry

_FILTER = re.compile(r"filter\[(?P<name>[^\]]*)\](?:\[condition\]\[(?P<field>[^\]]*)\])?$")


def _bad_key(scope: dict, query_string: str) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization" and not value.isascii():
            return "the Authorization header is not ASCII; an API key is letters and digits"
    if "api_key=" in query_string:
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            if key == "api_key" and not value.isascii():
                return "the api_key parameter is not ASCII; an API key is letters and digits"
    return None


def _number(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v


def _undecodable(query_type: Any, kwargs: dict[str, str]) -> str | None:
    """Why tiled's route could not decode this filter (its fields as given), or None."""
    try:
        query_type.decode(**kwargs)
    except TypeError:
        return f"{kwargs}: it needs {', '.join(f.name for f in dataclasses.fields(query_type))}"
    except json.JSONDecodeError as exc:
        return (f"{kwargs}: {type(exc).__name__}: {exc} (values such as 'value' are JSON: a "
                "string in double quotes, a number, a list)")
    except ValueError as exc:  # a bad value, unless the route gives numbers (time_range)
        try:
            query_type.decode(**{f: _number(v) for f, v in kwargs.items()})
        except Exception:  # noqa: BLE001 - still bad: the caller's input
            return f"{kwargs}: {exc}"
    except Exception:  # noqa: BLE001, S110 - others the route decodes its own way
        pass
    return None


def unknown_filter(query_string: str) -> str | None:
    """Why the filters of a query string cannot be applied, or None if they can."""
    if "filter" not in query_string:
        return None
    types = default_query_registry.name_to_query_type
    given: dict[str, dict[str, list[str]]] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if not key.startswith("filter"):
            continue
        m = _FILTER.match(key)
        if m is None:
            return (f"cannot read the filter parameter {key!r}; filters are "
                    "filter[TYPE][condition][FIELD]=VALUE")
        name, field = m["name"], m["field"]
        if name not in types:
            return (f"unknown query type {name!r}; this server knows "
                    f"{', '.join(sorted(types))}")
        fields = [f.name for f in dataclasses.fields(types[name])]
        if field not in fields:
            return (f"query type {name!r} has no field {field!r}; its fields are "
                    f"{', '.join(fields)}")
        given.setdefault(name, {}).setdefault(field, []).append(value)
    for name, by_field in given.items():  # each filter as tiled will decode it
        for i in range(max(len(v) for v in by_field.values())):
            why = _undecodable(types[name], {f: v[i] for f, v in by_field.items() if i < len(v)})
            if why:
                return f"cannot read the {name!r} filter {why}"
    return None


async def _refuse(send: Any, status: int, error: str, message: str) -> None:
    body = json.dumps({"detail": {"error": error, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guards:
    """ASGI middleware in front of tiled: a 400 for a filter tiled would silently drop,
    a 401 for a non-ASCII key, the live-run slice, and a 413 for a data request whose
    answer would be too large (see :func:`too_large`)."""

    def __init__(self, app: Callable[..., Awaitable[None]], root: Any = None,
                 limit: int | None = None, api_key: str | None = None) -> None:
        self.app, self.root = app, root
        self.limit = DEFAULT_RESPONSE_LIMIT if limit is None else limit
        # With one API key (not logins), a binary array read is answered here: see fast_array
        self.fast_auth = f"Apikey {api_key}".encode() if api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            qs = scope.get("query_string", b"").decode("latin-1")
            why = _bad_key(scope, qs)
            if why is not None:
                return await _refuse(send, 401, "Unauthorized", why)
            why = unknown_filter(qs)
            if why is not None:
                return await _refuse(send, 400, "InvalidQuery", why)
            path = scope.get("path", "")
            if path.startswith(("/api/v1/array/full/", "/api/v1/array/block/")):
                live = _live_slice(path, qs)
                if live is not None:
                    scope = {**scope, "query_string": live.encode("latin-1")}
            if self.root is not None and path.startswith(_DATA_ROUTES):
                why = too_large(self.root, scope, self.limit)
                if why is not None and await self._authorized(scope, path):
                    return await _refuse(send, 413, "ResponseTooLarge", why)
            if self.fast_auth is not None and path.startswith("/api/v1/array/full/") \
                    and scope.get("method") == "GET":
                body = await fast_array(self.root, scope, self.fast_auth, self.limit)
                if body is not None:
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-type", b"application/octet-stream"),
                                            (b"content-length", str(len(body)).encode())]})
                    return await send({"type": "http.response.body", "body": body})
        await self.app(scope, receive, send)

    async def _authorized(self, scope: dict, path: str) -> bool:
        """Whether the request's credentials may read this node's metadata: asked of the
        app itself (its own login rules), so a 413 tells nothing to a stranger, who gets
        the route's own 401 instead."""
        route = next(r for r in _DATA_ROUTES if path.startswith(r))
        probe = {**scope, "method": "GET", "query_string": b"",
                 "path": "/api/v1/metadata/" + path[len(route):]}
        probe["raw_path"] = probe["path"].encode("latin-1")
        status = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
        await self.app(probe, receive, send)
        return bool(status) and status[0] < 400


FilterCheck = Guards  # its earlier name


# --- a run being written: answer in the shape the client was told --------------------
def _live_slice(path: str, query_string: str) -> str | None:
    """The query string with the client's ``expected_shape`` made explicit on axis 0.

    tiled's client asks for an array with the shape it read from the structure; a run
    still being written may have more events by the time the data is read, and tiled
    then fails the request (a 500, retried for ~26 s). Asking for the rows the client
    knows of (``slice=0:N``) gives it the events flushed when it looked.
    """
    if "expected_shape=" not in query_string:
        return None
    params = parse_qsl(query_string, keep_blank_values=True)
    got = dict(params)
    expected = got.get("expected_shape", "")
    if not expected or expected == "scalar" or not re.fullmatch(r"\d+(,\d+)*", expected):
        return None
    n = int(expected.split(",")[0])
    current = got.get("slice", "")
    if not current:
        new = f"0:{n}"
    elif path.startswith("/api/v1/array/full/"):
        first, sep, rest = current.partition(",")
        m = re.fullmatch(r"(\d*):(1?)", first)  # "a:" or ":" (step 1): open-ended on axis 0
        if m is None:
            return None
        start = int(m[1] or 0)
        new = f"{start}:{start + n}{sep}{rest}"
    else:
        return None
    out = [(k, v) for k, v in params if k != "slice"] + [("slice", new)]
    from urllib.parse import urlencode
    return urlencode(out)


# --- the size of a response, before anything is read ---------------------------------
#: Estimated server memory for a response, at most (tiled's own default limit).
DEFAULT_RESPONSE_LIMIT = 300_000_000
#: Memory per element of an array turned into JSON (or another text format): tiled
#: builds a Python list first (~40 bytes per number), then the text.
TEXT_BYTES_PER_ELEMENT = 64
_BINARY = ("application/octet-stream", "application/x-hdf5", "application/x-netcdf",
           "application/x-zarr", "image/", "application/x-npy")
GUARDED_ROUTES = ("/api/v1/array/full/{path:path}", "/api/v1/array/block/{path:path}",
                  "/api/v1/container/full/{path:path}", "/api/v1/node/full/{path:path}")


def _media_type(params: dict, headers: dict) -> str:
    fmt = params.get("format")
    if fmt:
        return fmt
    accept = headers.get("accept", "")
    return accept.split(",")[0].split(";")[0].strip() or "application/json"


def _cost(shape: tuple, itemsize: int, binary: bool) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * (itemsize if binary else max(itemsize, TEXT_BYTES_PER_ELEMENT))


def _selection_shape(shape: tuple, slice_param: str) -> tuple:
    import numpy as np
    from tiled.ndslice import NDSlice
    if not slice_param:
        return tuple(shape)
    try:
        sel = NDSlice.from_numpy_str(slice_param)
        return np.broadcast_to(np.empty((), np.uint8), tuple(shape))[tuple(sel)].shape
    except (ValueError, IndexError, TypeError):
        return tuple(shape)  # the route itself refuses it, with its message


#: Server memory per cell when a stream is sent as a table (tiled's DataFrame formats):
#: the stream becomes one row per element of its largest broadcast (an image column
#: makes a row per pixel) and openpyxl keeps ~440 bytes a cell (measured) for Excel.
TABLE_BYTES_PER_CELL = {
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": 512,
    "text/html": 128, "text/csv": 64, "text/comma-separated-values": 64, "text/plain": 64,
    "application/json": 64, "application/vnd.apache.arrow.file": 16,
    "application/x-parquet": 16}


def _table_cost(node: Any, media: str, fields: list[str] | None = None) -> int | None:
    """Bytes of a stream (``xarray_dataset``), or of its ``fields``, sent as a table, or
    None if it is not one. (tiled's client reads a stream's 1-D columns as one table,
    naming them with ``field=``, and its other columns one by one.)"""
    per_cell = TABLE_BYTES_PER_CELL.get(media)
    if per_cell is None or "xarray_dataset" not in {s.name for s in getattr(node, "specs", ())}:
        return None
    keys = [k for k in fields if k in node] if fields else list(node.keys())
    sizes: dict[str, int] = {}
    for key in keys:
        st = node[key].structure()
        sizes.update(zip(st.dims or (), st.shape))
    rows = 1
    for n in sizes.values():
        rows *= int(n)
    return rows * len(keys) * per_cell


def _tree_cost(node: Any, binary: bool, budget: int) -> int:
    """Bytes of every array under a container, stopping once over ``budget``."""
    total = 0
    for key in list(node.keys()):
        child = node[key]
        if getattr(child, "structure_family", None) == "array":
            st = child.structure()
            total += _cost(st.shape, st.data_type.to_numpy_dtype().itemsize, binary)
        else:
            total += _tree_cost(child, binary, budget - total)
        if total > budget:
            break
    return total


WHOLE_CATALOG = 2**62
_DATA_ROUTES = ("/api/v1/array/full/", "/api/v1/array/block/", "/api/v1/container/full/",
                "/api/v1/node/full/")


def response_cost(root: Any, route: str, path: str, params: dict, binary: bool,
                  budget: int, media: str = "", fields: list[str] | None = None
                  ) -> tuple[int, str, bool]:
    """(estimated bytes, what was asked, whether a stream goes as a table) of a request
    on one of the data routes."""
    from .adapters import CatalogAdapter
    node = root
    for part in (p for p in path.split("/") if p):
        node = node[part]
    if getattr(node, "structure_family", None) == "array":
        st = node.structure()
        itemsize = st.data_type.to_numpy_dtype().itemsize
        if route == "/api/v1/array/block/":
            from tiled.ndslice import NDBlock
            try:
                block = NDBlock.from_numpy_str(params.get("block", ""))
                shape = tuple(st.chunks[i][b] for i, b in enumerate(block))
            except (ValueError, IndexError, TypeError):
                return 0, path, False  # the route refuses it, with its message
        else:
            shape = tuple(st.shape)
        shape = _selection_shape(shape, params.get("slice", ""))
        return _cost(shape, itemsize, binary), path, False
    if isinstance(node, CatalogAdapter):
        return WHOLE_CATALOG, path, False
    table = _table_cost(node, media, fields)
    if table is not None:
        return table, path, True
    return _tree_cost(node, binary, budget), path, False


def too_large(root: Any, scope: dict, limit: int) -> str | None:
    """Why a data request would take more than ``limit`` bytes to answer, or None."""
    path = scope.get("path", "")
    route = next((r for r in _DATA_ROUTES if path.startswith(r)), None)
    if route is None:
        return None
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    params = dict(pairs)
    fields = [v for k, v in pairs if k == "field"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
    media = _media_type(params, headers)
    binary = media.startswith(_BINARY) or media in ("*/*", "")  # tiled's default: binary
    try:
        cost, what, as_table = response_cost(root, route, path[len(route):], params, binary,
                                             limit, media, fields)
    except Exception:  # noqa: BLE001 - a bad path or slice: the route answers it, with its message
        return None
    if cost <= limit:
        return None
    if cost == WHOLE_CATALOG:
        return (f"a whole catalog ({'/' + what}) is not sent in one response; ask for one "
                "run's stream (/api/v1/container/full/UID/STREAM/data) or an array")
    hint = ("ask for a slice of an array (/api/v1/array/full/PATH?slice=0:10), one block "
            "(/api/v1/array/block/PATH?block=0,0,0), or one column at a time")
    if as_table:
        hint = ("as a table a stream has a row for every element of its largest column "
                "(every pixel of an image); ask for format=application/x-hdf5, or for one "
                "column at a time (/api/v1/array/full/PATH/COLUMN, a slice with ?slice=0:10)")
    elif not binary:
        hint += "; binary (format=application/octet-stream) is ~8x smaller than JSON"
    return (f"the response to {what!r} as {media} would take about {_mb(cost)} on the "
            f"server, more than its limit of {_mb(limit)}; {hint}")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 10**6 else f"{n / 1e3:,.1f} kB"


# --- the hot path: one binary array read, without the web framework ----------------
_FAST_PARAMS = {"slice", "expected_shape", "format"}


async def fast_array(root: Any, scope: dict, auth: bytes, limit: int) -> bytes | None:
    """The bytes of ``GET /api/v1/array/full/PATH?slice=...`` as octet-stream, or None
    to let tiled answer (anything unusual: another format or parameter, another kind of
    credentials, an error, which tiled then reports with its message).

    A one-frame read through tiled's routing, dependencies and worker threads costs
    tens of ms on a busy machine, ~30x the read itself; here it is one worker-thread
    hop. Only with the server's single API key, compared in constant time.
    """
    import hmac

    import anyio
    import numpy as np
    headers = dict(scope.get("headers", ()))
    given = headers.get(b"authorization", b"")
    if not given or not hmac.compare_digest(given, auth):
        return None
    accept = headers.get(b"accept", b"")
    params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                            keep_blank_values=True))
    fmt = params.get("format")
    if set(params) - _FAST_PARAMS or (fmt and fmt != "application/octet-stream") or \
            (not fmt and b"application/octet-stream" not in accept):
        return None
    from tiled.ndslice import NDSlice

    from .adapters import ChunkedArrayAdapter
    try:
        node = root
        for part in (p for p in scope["path"][len("/api/v1/array/full/"):].split("/") if p):
            node = node[part]
        if not isinstance(node, ChunkedArrayAdapter):
            return None
        st = node.structure()
        sel = tuple(NDSlice.from_numpy_str(params.get("slice", "")))
        if _cost(_selection_shape(tuple(st.shape), params.get("slice", "")),
                 st.data_type.to_numpy_dtype().itemsize, True) > limit:
            return None
        arr = await anyio.to_thread.run_sync(node.read, sel or ...)
        expected = params.get("expected_shape")
        if expected and expected != "scalar" and \
                tuple(int(x) for x in expected.split(",")) != arr.shape:
            return None
        return np.ascontiguousarray(arr, dtype=st.data_type.to_numpy_dtype()).tobytes()
    except Exception:  # noqa: BLE001 - tiled answers it, with its message
        return None
