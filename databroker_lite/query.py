"""MongoDB-style queries on start documents, compiled to SQL (SQLite or PostgreSQL).

Part of the index layer. Values always travel as bound parameters and JSON paths
are built from quoted key parts, so no key or value can change the SQL.
"""
from __future__ import annotations

import re
import signal
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from .dialects import COLUMNS, Ref, SQLiteDialect, json_path
from .errors import InvalidQuery

try:  # the regular-expression parser, to spot catastrophic patterns before they run
    import re._parser as _sre_parse  # Python >= 3.11
except ImportError:  # pragma: no cover
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_OPS = {"$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$ne", "$eq", "$exists", "$regex", "$options", "$not"}
_CMP = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
SQLITE = SQLiteDialect()


class _Compiler:
    """Builds one WHERE clause in one SQL dialect (see :mod:`databroker_lite.dialects`).

    Every ``?`` is created by ``p()`` at the very place it appears in the SQL text
    (f-strings evaluate left to right), so parameters always line up with their
    placeholders.
    """

    def __init__(self, dialect: Any = None) -> None:
        self.params: list[Any] = []
        self.d = dialect or SQLITE

    def p(self, value: Any) -> str:
        self.params.append(sql_value(value))
        return "?"

    def compile(self, query: Mapping) -> str:
        if not isinstance(query, Mapping):
            raise InvalidQuery(f"a query is a dict, got {type(query).__name__}")
        parts = []
        for key, cond in query.items():
            if not isinstance(key, str):
                raise InvalidQuery(f"query keys are strings, got {key!r}")
            if key in ("$and", "$or", "$nor"):
                if not isinstance(cond, (list, tuple)) or not cond:
                    raise InvalidQuery(f"{key} takes a non-empty list of queries")
                subs = [self.compile(c) for c in cond]
                joined = (" AND " if key == "$and" else " OR ").join(f"({s})" for s in subs)
                parts.append(self.d.not_(joined) if key == "$nor" else f"({joined})")
            elif key.startswith("$"):
                raise InvalidQuery(f"unknown top-level operator {key!r}; use $and, $or, $nor")
            else:
                parts.append(self.field(key, cond))
        return " AND ".join(parts) if parts else self.d.true

    # --- one field: each call below adds its own parameter, in SQL-text order ----
    @staticmethod
    def ref(key: str) -> Ref:
        """Where the key's value lives (validating the key).

        ``"stop.exit_status"`` is the stop document's ``exit_status``; ``"start.x"`` (as
        databroker 2 clients spell it) and a plain ``"x"`` are the start document's.
        """
        json_path(key)
        if key.startswith("stop.") and len(key) > 5:
            return Ref(key, doc="stop", parts=tuple(key[5:].split(".")))
        if key.startswith("start.") and len(key) > 6:
            key = key[6:]
        if key in COLUMNS:
            return Ref(key, column=COLUMNS[key])
        return Ref(key, parts=tuple(key.split(".")))

    def field(self, key: str, cond: Any) -> str:
        if isinstance(cond, Mapping) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
            unknown = set(cond) - _OPS
            if unknown:
                raise InvalidQuery(f"unknown operator(s) {sorted(unknown)} on {key!r}; "
                                   f"supported: {sorted(_OPS - {'$options'})}")
            return " AND ".join(self.op(key, op, arg, cond) for op, arg in cond.items() if op != "$options")
        if isinstance(cond, Mapping) and cond:
            if any(isinstance(k, str) and k.startswith("$") for k in cond):
                raise InvalidQuery(f"{key!r}: do not mix operators and plain keys in one dict")
            return " AND ".join(self.field(f"{key}.{k}", v) for k, v in cond.items())
        return self.eq(key, cond)

    def eq(self, key: str, value: Any) -> str:
        value = _normalise(value)
        ref = self.ref(key)
        d = self.d
        if value is None:
            return f"({d.type_of(self, ref)} IS NULL OR {d.is_kind(d.type_of(self, ref), 'null')})"
        if isinstance(value, (list, dict)):
            return d.eq_json(self, ref, value)
        return d.eq_scalar(self, ref, value)

    def op(self, key: str, op: str, arg: Any, cond: Mapping) -> str:
        # Negations go through the dialect's not_(): a run without the key is "not
        # equal" / "not in", as in MongoDB, although SQL's NOT NULL is NULL.
        d = self.d
        if op == "$eq":
            return self.eq(key, arg)
        if op == "$ne":
            return d.not_(self.eq(key, arg))
        if op in ("$in", "$nin"):
            if not isinstance(arg, (list, tuple, set)):
                raise InvalidQuery(f"{op} on {key!r} takes a list, got {arg!r}")
            if not arg:
                return d.false if op == "$in" else d.true
            any_of = " OR ".join(self.eq(key, v) for v in arg)
            return f"({any_of})" if op == "$in" else d.not_(any_of)
        if op in _CMP:
            arg = _normalise(arg)
            if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
                raise InvalidQuery(f"{op} on {key!r} compares numbers or strings, got {arg!r}")
            return d.compare(self, self.ref(key), _CMP[op], arg)
        if op == "$exists":
            ref = self.ref(key)
            return f"({d.type_of(self, ref)} IS NOT NULL)" if arg else f"({d.type_of(self, ref)} IS NULL)"
        if op == "$regex":
            flags = _regex_flags(cond.get("$options", ""))
            pattern = arg.pattern if isinstance(arg, re.Pattern) else arg
            if not isinstance(pattern, str):
                raise InvalidQuery(f"$regex on {key!r} takes a string, got {arg!r}")
            if isinstance(arg, re.Pattern):
                flags |= arg.flags & (re.I | re.M | re.S | re.X)
            try:
                re.compile(pattern, flags)
            except re.error as exc:
                raise InvalidQuery(f"$regex on {key!r}: {pattern!r} is not a valid regular "
                                   f"expression ({exc})") from None
            risk = regex_risk(pattern, flags)
            if risk:
                raise InvalidQuery(f"$regex on {key!r}: {pattern!r} is refused: {risk}, which can "
                                   "take exponential time; rewrite it without that")
            return d.regex(self, self.ref(key), pattern, flags)
        if op == "$not":
            if not isinstance(arg, Mapping):
                raise InvalidQuery(f"$not on {key!r} takes an operator dict")
            return d.not_(self.field(key, arg))
        raise InvalidQuery(f"unknown operator {op!r}")


def _regex_flags(options: str) -> int:
    flags = 0
    for ch in options or "":
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}.get(ch, 0)
    return flags


_INT64 = 2**63


def sql_value(value: Any) -> Any:
    """A value as SQLite can hold it: an integer beyond 64 bits becomes a float
    (infinite beyond a float's range), as SQLite's JSON functions read such numbers."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        try:
            return float(value)
        except OverflowError:
            return float("inf") if value > 0 else float("-inf")
    return value


def _normalise(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()  # numpy scalar
    return sql_value(value)


_regex_cache: dict[tuple[str, int], re.Pattern | None] = {}
REGEX_TIME_LIMIT = 1.0   # seconds one $regex may spend on one value (main thread)
_MAXREPEAT = getattr(_sre_parse, "MAXREPEAT", 2**32 - 1)


class RegexTimeout(UserWarning):
    """A $regex took too long on a value; the value was counted as not matching."""


def regex_risk(pattern: str, flags: int = 0) -> str | None:
    """Why a pattern may backtrack catastrophically (None if it looks safe).

    Refused: a back-reference, and an unbounded repetition of something that itself
    repeats or has alternatives (``(a+)+``, ``(a|aa)*``): the classic exponential cases.
    Polynomial cases (``.*.*x``) are bounded by the time limit in :func:`db_regexp`.
    """
    try:
        tree = _sre_parse.parse(pattern, flags)
    except re.error:
        return None  # compile reports it

    def walk(items, outer: str) -> str | None:  # outer: "", "bounded" or "unbounded" repeat
        in_repeat = outer == "unbounded"
        for op, av in items:
            name = str(op)
            if name in ("GROUPREF", "GROUPREF_EXISTS", "GROUPREF_IGNORE", "GROUPREF_LOC_IGNORE",
                        "GROUPREF_UNI_IGNORE"):
                return "a back-reference"
            if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                lo, hi, sub = av
                unbounded = hi == _MAXREPEAT or hi > 1000
                if (in_repeat and (hi > 1 or lo != hi)) or (outer and unbounded):
                    return "a repetition inside a repetition"
                if name != "POSSESSIVE_REPEAT" and hi > 1:
                    r = walk(sub, "unbounded" if (unbounded or in_repeat) else "bounded")
                    if r:
                        return r
            elif name == "BRANCH":
                if in_repeat:
                    return "alternatives inside a repetition"
                for b in av[1]:
                    r = walk(b, outer)
                    if r:
                        return r
            elif name == "SUBPATTERN":
                r = walk(av[-1], outer)
                if r:
                    return r
            elif name in ("ASSERT", "ASSERT_NOT"):
                r = walk(av[1], outer)
                if r:
                    return r
        return None
    return walk(tree, "")


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _search(rx: re.Pattern, text: str) -> bool:
    """rx.search with a time limit where one can be set: Python's re is interrupted by
    signals, so in the main thread (with SIGALRM unused) a timer ends a runaway match."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None)
            or signal.getitimer(signal.ITIMER_REAL)[0] != 0 or len(text) < 256):
        return rx.search(text) is not None  # short texts cannot take long
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, REGEX_TIME_LIMIT)
        try:
            return rx.search(text) is not None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)


def db_regexp(pattern: str, flags: int, value: Any) -> bool:
    """The SQLite function behind $regex (re.search semantics).

    A pattern that runs over the time limit on a value is given up for this process:
    it matches nothing from then on (a RegexTimeout warning says so), so a search ends
    in about REGEX_TIME_LIMIT instead of hanging the catalog.
    """
    if value is None:
        return False
    key = (pattern, flags)
    if key in _regex_cache:
        rx = _regex_cache[key]
    else:
        rx = _regex_cache.setdefault(key, re.compile(pattern, flags))
    if rx is None:
        return False
    try:
        return _search(rx, str(value))
    except _Timeout:
        _regex_cache[key] = None
        warnings.warn(f"$regex {pattern!r} took over {REGEX_TIME_LIMIT} s on one value and was "
                      "abandoned; values it had not reached count as not matching", RegexTimeout,
                      stacklevel=2)
        return False


def compile_query(query: Mapping, dialect: Any = None) -> tuple[str, list[Any]]:
    """A WHERE clause (``?`` placeholders) and its parameters for a MongoDB-style query on
    start documents, in the given dialect (SQLite by default)."""
    c = _Compiler(dialect)
    sql = c.compile(query)
    return sql, c.params


# the helpers moved to databroker_lite.queries; this import path keeps working
from .queries import ScanID, ScanIDRange, TimeRange  # noqa: E402,F401
