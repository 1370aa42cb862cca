"""Guards in front of tiled's routes: unknown query filters are refused.

tiled turns only the query types it knows into route parameters and drops any other
``filter[...]`` silently, so a misspelled or unregistered query would return every
run. Here each ``filter[NAME][condition][FIELD]`` must name a registered query
type and one of its fields, or the request is a 400 that says which.
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


def unknown_filter(query_string: str) -> str | None:
    """Why the filters of a query string cannot be applied, or None if they can."""
    if "filter" not in query_string:
        return None
    types = default_query_registry.name_to_query_type
    for key, _ in parse_qsl(query_string, keep_blank_values=True):
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
    return None


class FilterCheck:
    """ASGI middleware: a 400 for any filter tiled would silently drop."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            why = unknown_filter(scope.get("query_string", b"").decode("latin-1"))
            if why is not None:
                body = json.dumps({"detail": {"error": "InvalidQuery", "message": why}}).encode()
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
