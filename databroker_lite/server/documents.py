"""``GET /api/v1/documents/{run path}``: a run's documents, streamed, as databroker 2 serves them.

databroker 2's client (``BlueskyRun.documents()``) asks for ``application/json-seq``;
each document goes out as an RFC 7464 record ``\\x1e{"name": ..., "doc": ...}\\n``
(its reader also takes the older newline-only framing). Its reader knows
``datum_page`` but not ``datum``, so each datum goes out as a one-row datum_page;
every other document goes out as it was inserted. ``application/x-msgpack``
gives the same pairs as msgpack maps. Documents are read and sent one at a time,
so a run of any size streams in constant memory.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from starlette.responses import StreamingResponse
from tiled.server.authentication import (
    check_scopes,
    get_current_access_tags,
    get_current_principal,
    get_current_scopes,
    get_session_state,
)
from tiled.server.dependencies import get_entry, get_root_tree
from tiled.utils import safe_json_dump

from ..errors import DatabrokerLiteError
from .adapters import RunAdapter, error

router = APIRouter()
MEDIA_TYPES = ("application/json-seq", "application/x-msgpack")


def _chosen(accept: str) -> str:
    for part in accept.split(","):
        media = part.split(";")[0].strip()
        if media in ("*/*", "application/*", ""):
            return MEDIA_TYPES[0]
        if media in MEDIA_TYPES:
            return media
    raise HTTPException(status_code=406, detail=f"documents are served as {' or '.join(MEDIA_TYPES)}, "
                                                f"not {accept!r}")


def _records(first: tuple[str, dict] | None, rest: Iterator[tuple[str, dict]],
             media: str) -> Iterator[bytes]:
    if media == "application/x-msgpack":
        import msgpack
        import numpy as np

        def default(obj: Any) -> Any:
            return obj.tolist() if isinstance(obj, (np.ndarray, np.generic)) else str(obj)
        packer = msgpack.Packer(default=default)

        def encode(name: str, doc: dict) -> bytes:
            return packer.pack({"name": name, "doc": doc})
    else:
        def encode(name: str, doc: dict) -> bytes:
            return b"\x1e" + safe_json_dump({"name": name, "doc": doc}) + b"\n"
    if first is not None:
        yield encode(*_paged(*first))
    for name, doc in rest:  # an error after the first byte can only end the stream
        yield encode(*_paged(name, doc))


def _paged(name: str, doc: dict) -> tuple[str, dict]:
    """A datum as a one-row datum_page: databroker 2's client reads no single datums."""
    if name == "datum":
        from event_model import pack_datum_page
        return "datum_page", pack_datum_page(doc)
    return name, doc


@router.get("/documents/{path:path}")
async def get_documents(
    request: Request,
    path: str,
    principal: Annotated[Any, Depends(get_current_principal)],
    root_tree: Annotated[Any, Depends(get_root_tree)],
    session_state: Annotated[dict, Depends(get_session_state)],
    authn_access_tags: Annotated[Any, Depends(get_current_access_tags)],
    authn_scopes: Annotated[Any, Depends(get_current_scopes)],
    _: Annotated[Any, Security(check_scopes, scopes=["read:data", "read:metadata"])],
    fill: bool = False,
) -> StreamingResponse:
    """The run's documents in order, as ``Run.documents(fill=...)`` gives them locally."""
    media = _chosen(request.headers.get("Accept", MEDIA_TYPES[0]))
    entry = await get_entry(path, ["read:data", "read:metadata"], principal, authn_access_tags,
                            authn_scopes, root_tree, session_state, request.state.metrics,
                            None, getattr(request.app.state, "access_policy", None))
    if not isinstance(entry, RunAdapter):
        raise error(404, "RunNotFound", f"{path!r} is not a run: documents are served for "
                                        "/api/v1/documents/<run uid>")
    try:  # the first document now, so that a run that cannot be read is a 4xx, not a cut stream
        docs = entry.run.documents(fill=bool(fill))
        first = next(docs, None)
    except DatabrokerLiteError as exc:
        raise error(422 if fill else 500, exc) from None
    return StreamingResponse(_records(first, docs, media), media_type=media)
