"""The one rule that decides "is this run already here, and is it the same?".

Import, unpack and pack all ask it. Runs are matched by the uid of their start document,
read from the run file itself (never from a manifest, a file name or an index). Two run
files of one uid are *the same run* when they are byte for byte equal, or when their
documents (``Run.documents()``: every document of the run, in order, pages as single
documents) are equal, value for value, numpy types aside. Anything else is a
*conflict*: it is reported by uid and the run already there is kept, never overwritten.
"""
from __future__ import annotations

import math
import os
from itertools import zip_longest
from typing import Any

import numpy as np

from ..storage import RunReader
from .errors import PackError
from .files import same_bytes

SAME, CONFLICT, ABSENT = "same", "conflict", "absent"


def run_uid(path: str) -> str:
    """The uid in a run file's start document (PackError if the file is not a readable run)."""
    try:
        uid = RunReader(path).start.get("uid")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same refusal
        raise PackError(f"{path}: not a readable run file ({type(exc).__name__}: {exc})") from None
    if not isinstance(uid, str):
        raise PackError(f"{path}: its start document has no uid")
    return uid


def _documents(path: str):
    return RunReader(path).documents()


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, np.generic):
        a = a.item()
    if isinstance(b, np.generic):
        b = b.item()
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def same_run(a: str, b: str) -> bool:
    """True when the run files ``a`` and ``b`` hold the same run (see the module docstring)."""
    try:
        if same_bytes(a, b):
            return True
        sentinel = object()
        for da, db in zip_longest(_documents(a), _documents(b), fillvalue=sentinel):
            if da is sentinel or db is sentinel or da[0] != db[0] or not _equal(da[1], db[1]):
                return False
        return True
    except RecursionError:
        return False
    except Exception:  # noqa: BLE001 - a file that cannot be read is not the same run
        return False


def compare(candidate: str, existing: str | None) -> str:
    """ABSENT (nothing there), SAME or CONFLICT for a run file against the one already there."""
    if existing is None or not os.path.exists(existing):
        return ABSENT
    return SAME if same_run(candidate, existing) else CONFLICT
