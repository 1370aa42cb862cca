"""The tiled application serving one or more catalogs, and ``databroker-lite serve``."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tiled.server.app import build_app as _tiled_app

from ..catalogs import Catalog
from ..config import as_catalog
from ..errors import CatalogError, InvalidArgument
from ..index_url import catalog_key
from . import queries  # noqa: F401 - registers our query types before the app is built
from .adapters import CatalogsAdapter, catalog_adapter
from .limits import DEFAULT_RESPONSE_LIMIT

try:  # databroker 2's query types (scan_id, partial_uid, ...), which older clients send
    import bluesky_tiled_plugins.queries  # noqa: F401
except ImportError:  # pragma: no cover - in the server extra; without it those are 400s
    pass


def open_catalogs(specs: Sequence[str | Catalog], *,
                  index: str | None = None) -> dict[str, Catalog]:
    """Catalog directories or named catalogs -> ``{name: Catalog}`` (read-only).

    ``index`` (``"beside"``, ``"host"`` or a ``postgresql://`` URL) is the index every
    catalog is answered from instead of its own; a named catalog keeps its name, which
    keys it in a PostgreSQL database. One ``?catalog=`` key for several catalogs is
    refused (:class:`~databroker_lite.errors.InvalidArgument`) before any is opened:
    their runs would overwrite each other's.
    """
    check_index_for(specs, index)
    out: dict[str, Catalog] = {}
    for spec in specs:
        cat = as_catalog(spec, index=index) if isinstance(spec, Catalog) else \
            as_catalog(spec, "r", index=index)
        if isinstance(spec, Catalog):
            name = spec.name or os.path.basename(spec.directory)
        elif os.path.isdir(spec):
            name = os.path.basename(os.path.abspath(spec))
        else:
            name = spec
        if name in out:
            raise CatalogError(f"two catalogs would be served as {name!r}; serve them "
                               "by name (databroker-lite install) to tell them apart")
        out[name] = cat
    return out


def check_index_for(specs: Sequence[str | Catalog], index: str | None) -> None:
    """Refuse an ``index`` naming one catalog key (``?catalog=``) for several catalogs."""
    key = catalog_key(index)
    if key is not None and len(specs) > 1:
        raise InvalidArgument(
            f"index= names one catalog key (catalog={key}) for {len(specs)} catalogs, whose "
            "runs would overwrite each other's in it: leave catalog= out of the URL (each "
            "catalog gets its own key: its name, else its directory) or serve them one at a time")


def read_api_key(path: str | os.PathLike) -> str:
    """The API key in a file (first line, letters and digits only, as tiled requires)."""
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as exc:
        raise CatalogError(f"cannot read the API key file {os.fspath(path)}: {exc}") from exc
    if not key or not key.isalnum():
        raise CatalogError(f"{os.fspath(path)}: an API key must be letters and digits only "
                           "(make one with: python -c \"import secrets; "
                           "print(secrets.token_hex(32))\")")
    return key


def build_app(catalogs: Sequence[str | Catalog], api_key: str | None = None, *,
              config: Any = None, index: str | None = None,
              response_limit: int = DEFAULT_RESPONSE_LIMIT) -> Any:
    """A tiled (FastAPI) app serving the catalogs; every request needs ``api_key``,
    or, with ``config`` (:func:`databroker_lite.server.auth.load_serve_config`), a user
    login or a user's key, and sees only what the config's access policy allows.

    One catalog is served at the root; several are served side by side, by name.
    ``index`` replaces each catalog's own index (see :func:`open_catalogs`).
    A data request whose response would take more than ``response_limit`` bytes of
    server memory is refused (413) with a message saying how to ask for less.
    """
    from tiled.config import Authentication
    if (api_key is None) == (config is None):
        raise CatalogError("serve with an API key or with a login config, one of the two")
    cats = open_catalogs(catalogs, index=index)
    if len(cats) == 1:
        (name, cat), = cats.items()
        tree = catalog_adapter(cat, name)
    else:
        tree = CatalogsAdapter({name: catalog_adapter(cat, name) for name, cat in cats.items()})
    from .documents import router as documents_router
    from .limits import Guards
    from .serializers import serialization_registry
    common = dict(include_routers=[documents_router],
                  serialization_registry=serialization_registry())
    if config is not None:
        app = _tiled_app(tree, config.authentication, server_settings=config.server_settings(),
                         access_policy=config.access_policy, **common)
    else:
        auth = Authentication(single_user_api_key=api_key, allow_anonymous_access=False)
        app = _tiled_app(tree, auth, server_settings={}, **common)
    _apply_dependency_overrides(app)
    if config is not None:
        from .auth import refuse_removed_users
        refuse_removed_users(app, config.access_policy)
    app.add_middleware(Guards, root=tree, limit=response_limit,
                       api_key=api_key if config is None else None)
    _add_error_handlers(app)
    return app


def error_status(exc: Exception) -> int:
    """The HTTP status of one of our errors raised while serving a request.

    A run that cannot be served as asked (data of another shape than its descriptor
    says, a damaged file, missing external data) is a 422, not a 5xx: tiled's client
    retries a 5xx for half a minute, and asking again cannot help.
    """
    from ..errors import CatalogNotFound, InvalidQuery, RunNotFound, StreamNotFound
    if isinstance(exc, (RunNotFound, StreamNotFound, CatalogNotFound)):
        return 404
    if isinstance(exc, InvalidQuery):
        return 400
    return 422


def _add_error_handlers(app: Any) -> None:
    """Our exceptions, and any other, as JSON ``{"detail": {"error", "message"}}``."""
    from starlette.responses import JSONResponse

    from ..errors import DatabrokerLiteError

    def ours(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": {"error": type(exc).__name__, "message": str(exc)}},
                            status_code=error_status(exc))

    def other(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": {"error": type(exc).__name__,
                                        "message": f"the server failed on {request.url.path}: "
                                                   f"{type(exc).__name__}: {exc}"}},
                            status_code=500)

    app.add_exception_handler(DatabrokerLiteError, ours)
    app.add_exception_handler(Exception, other)


class _AppliedOverrides(dict):
    """Dependency overrides already written into the routes. Falsy, so that FastAPI
    does not rebuild every dependency of every request to look for overrides."""

    def __bool__(self) -> bool:
        return False


def _apply_dependency_overrides(app: Any) -> None:
    """Write tiled's dependency overrides (its settings) into the routes, once.

    While ``app.dependency_overrides`` is non-empty, FastAPI re-inspects the signature
    of every sub-dependency on every request: about 20 ms per request here, most of
    a one-frame read. Overrides that take no parameters (tiled's ``get_settings``) can
    be swapped into the dependency tree instead; anything else is left as it was.
    """
    import inspect
    overrides = dict(app.dependency_overrides)
    if not overrides or any(inspect.signature(f).parameters or inspect.signature(o).parameters
                            for f, o in overrides.items()):
        return
    from .auth import replace_dependencies
    seen: set[int] = set()
    for route in app.router.routes:
        replace_dependencies(getattr(route, "dependant", None), overrides, seen)
    app.dependency_overrides = _AppliedOverrides(overrides)  # startup still looks them up


def serve(catalogs: Sequence[str | Catalog], *, api_key: str | None = None, config: Any = None,
          index: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "warning", response_limit: int = DEFAULT_RESPONSE_LIMIT) -> None:
    """Serve catalogs over HTTP until interrupted (blocks); see :func:`build_app`.

    Says on stdout where it listens once the catalogs are open.
    """
    import uvicorn
    app = build_app(catalogs, api_key, config=config, index=index, response_limit=response_limit)
    how = config.describe() if config is not None else "API key required"
    print(f"serving {', '.join(map(str, catalogs))} on http://{host}:{port} ({how}); "
          "Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
