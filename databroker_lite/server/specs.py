"""What every module of the server shares: the specs its nodes carry and the HTTP error
whose detail our client re-raises as our own exception type. Imports nothing of the
server, so the adapters, the search and the routes all build on it without a circle."""
from __future__ import annotations

from fastapi import HTTPException
from tiled.structures.core import Spec

# databroker 2's specs (its MongoDB layout, version 1) select its client classes;
# ours follow, for our own client.
CATALOG_SPEC = Spec("CatalogOfBlueskyRuns", version="1")
RUN_SPEC = Spec("BlueskyRun", version="1")
STREAM_SPEC = Spec("BlueskyEventStream", version="1")
LITE_CATALOG_SPEC = Spec("databroker_lite_catalog")
LITE_RUN_SPEC = Spec("databroker_lite_run")


def error(status: int, exc_or_name: Exception | str, message: str | None = None) -> HTTPException:
    """An HTTP error whose JSON detail names our exception type, for the client to re-raise."""
    if isinstance(exc_or_name, Exception):
        name, message = type(exc_or_name).__name__, str(exc_or_name)
    else:
        name = exc_or_name
    return HTTPException(status_code=status, detail={"error": name, "message": message})
