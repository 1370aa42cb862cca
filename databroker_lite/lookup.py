"""The look-up rules and the messages of the catalog contract, shared by every implementation.

``cat[key]``: an int is a scan_id (the most recent run with it) or, negative, the k-th
most recent run; a str is a uid or a unique uid prefix, never a scan_id. What is missing
or ambiguous raises a ``KeyError`` subclass whose message lists what matched. Local,
remote and any other catalog take their messages, errors and warnings from here, so they
say the same (each picks the ``RunNotFound`` subclass its own knowledge allows, e.g. the
local catalog's ``RunFileUnreadable`` when an unreadable file may hold the run).
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import AmbiguousKey, StreamNotFound
from .summaries import fmt_time


class DuplicateScanIDWarning(UserWarning):
    """Several runs share the scan_id asked for; the most recent one was returned."""


def check_key(key: Any) -> int | str:
    """``key`` as a look-up takes it (an int or a str), or a TypeError that says what does."""
    if type(key) is str:  # the common case, without the ~5 us of an ABC isinstance check
        return key
    if isinstance(key, bool) or not isinstance(key, (numbers.Integral, str)):
        raise TypeError(f"look up runs by scan_id (int), -k (int) or uid (str), "
                        f"not {type(key).__name__}" + (f" {key!r}" if isinstance(key, bool) else ""))
    return int(key) if isinstance(key, numbers.Integral) else key


def describe(row: Mapping) -> str:
    """One run in a message: uid, scan_id, start time, plan."""
    return (f"uid={row['uid']} scan_id={row['scan_id']} time={fmt_time(row['time'], ms=False)} "
            f"plan={row['plan_name']}")


def ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def no_kth(n_runs: int, k: int, where: str = "") -> str:
    """The message of ``cat[-k]`` beyond the oldest run (``where``: e.g. " in this search")."""
    return f"the catalog{where} has {n_runs} run(s); there is no {ordinal(k)} most recent"


def no_scan_id(scan_id: int, where: str = "") -> str:
    """The message of ``cat[scan_id]`` when no run has it."""
    return f"no run{where} has scan_id {scan_id}"


def no_uid(key: str, where: str = "") -> str:
    """The message of ``cat[key]`` when no uid starts with ``key``."""
    if not key:
        return "an empty string is not a uid or uid prefix"
    hint = " (strings are uids; for a scan_id use an int)" if key.isdigit() else ""
    return f"no run{where} has a uid starting with {key!r}{hint}"


def ambiguous(key: str, rows: Sequence[Mapping], more: bool = False) -> AmbiguousKey:
    """``key`` starts several uids: ``rows`` (index rows of up to ten of them)."""
    listing = "\n  ".join(describe(r) for r in rows[:10])
    return AmbiguousKey(f"{key!r} is the start of several uids{' (and more)' if more else ''}; "
                        f"give more characters:\n  {listing}", candidates=list(rows[:10]))


def warn_shared_scan_id(scan_id: int, newest_uid: str, others: Sequence[str],
                        stacklevel: int = 3) -> None:
    """Warn that ``scan_id`` is shared; ``others`` describe the older runs that have it."""
    warnings.warn(f"{len(others) + 1} runs have scan_id {scan_id}; returning the most recent "
                  f"({newest_uid}). Others: {'; '.join(others)}",
                  DuplicateScanIDWarning, stacklevel=stacklevel)


def no_stream(run_uid: str, name: str, have: Iterable[str]) -> StreamNotFound:
    return StreamNotFound(f"run {run_uid} has no stream {name!r}; it has {list(have)}")


def select_fields(fields: Iterable[str] | str | None, have: Sequence[str], stream: str,
                  run_uid: str) -> list[str] | None:
    """The columns ``read(fields)`` asks for (None: all), or StreamNotFound naming the missing."""
    if fields is None:
        return None
    fields = [fields] if isinstance(fields, str) else list(fields)
    missing = [f for f in fields if f not in have]
    if missing:
        raise StreamNotFound(f"stream {stream!r} of run {run_uid} has no column(s) {missing}; "
                             f"it has {list(have)}")
    return fields
