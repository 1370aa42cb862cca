"""Queries our tiled adapters understand; registered with tiled on import.

Client and server both import this module, so that the names are known on both
ends. It imports only tiled's light query machinery, never its server.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tiled.queries import NoBool
from tiled.query_registration import register


@register(name="databroker_lite_mongo")
@dataclass
class MongoQuery(NoBool):
    """A MongoDB-style query on start documents, as ``Catalog.search`` takes it (JSON)."""

    query: str

    @classmethod
    def from_dict(cls, query: dict) -> MongoQuery:
        return cls(query=json.dumps(query))

    def encode(self) -> dict:
        return {"query": self.query}

    @classmethod
    def decode(cls, *, query: str) -> MongoQuery:
        return cls(query=query)


@register(name="databroker_lite_run")
@dataclass
class RunKey(NoBool):
    """A look-up as ``Catalog[key]`` does it: scan_id (int), -k (int), uid or uid prefix (str).

    The key travels as JSON so that ``23463`` (a scan_id) and ``"23463"`` (a uid
    prefix) stay apart. A scan_id matches every run that has it, newest first.
    """

    key: str

    @classmethod
    def of(cls, key: Any) -> RunKey:
        return cls(key=json.dumps(key))

    def encode(self) -> dict:
        return {"key": self.key}

    @classmethod
    def decode(cls, *, key: str) -> RunKey:
        return cls(key=key)
