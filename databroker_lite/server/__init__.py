"""Serve catalogs through tiled (optional extra: ``pip install databroker_lite[server]``).

Nothing in this subpackage is imported by ``import databroker_lite``; tiled takes
seconds to import and is a large install. ``databroker_lite.server.queries`` (the
query types both ends share) imports only tiled's light query module, so a client
does not load the server stack.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_app", "read_api_key", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
