"""databroker's query helpers, as MongoDB-style queries for :meth:`Catalog.search`.

The names and call signatures are those of ``databroker.queries`` in databroker 2.0.2
(which takes them from ``tiled.queries`` and ``bluesky_tiled_plugins.queries``), so
code written for databroker runs unchanged against a local catalog::

    from databroker_lite.queries import Key, TimeRange, ScanID
    cat.search(TimeRange(since="2024-05-01")).search(Key("sample.name") == "Cu foil")

Each query is a read-only mapping: the MongoDB-style dict it stands for, which is
what ``Catalog.search`` runs (``dict(q)`` shows it). Keys address the start
document; ``"start.x"`` says so explicitly and ``"stop.x"`` addresses the stop
document. :func:`to_mongo` turns tiled's and bluesky-tiled-plugins' query objects of
the same names into the same dicts.

Only the standard library is used here: the local catalog needs no tiled.
"""
from __future__ import annotations

import enum
import numbers
import re
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from datetime import timezone as _tz
from typing import Any

from .errors import InvalidQuery

__all__ = [
    "Comparison", "Contains", "Duplicates", "Eq", "FullText", "In", "Key", "KeyPresent",
    "Like", "NotEq", "NotIn", "Operator", "PartialUID", "QueryValueError", "RawMongo",
    "Regex", "ScanID", "ScanIDRange", "TimeRange", "to_mongo",
]

#: databroker's name for a bad query value (ours is :class:`InvalidQuery`, a ValueError).
QueryValueError = InvalidQuery


class Query(Mapping):
    """A query: a read-only mapping holding the MongoDB-style dict it stands for."""

    _fields: tuple[str, ...] = ()

    def __init__(self, query: Mapping) -> None:
        self._query = dict(query)

    @property
    def query(self) -> dict:
        """The MongoDB-style dict (a copy)."""
        return dict(self._query)

    def __getitem__(self, key: str) -> Any:
        return self._query[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._query)

    def __len__(self) -> int:
        return len(self._query)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Query):
            return type(self) is type(other) and self._query == other._query
        return isinstance(other, Mapping) and self._query == dict(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidQuery(f"a query key is a non-empty string, got {key!r}")
    return key


class Eq(Query):
    """Runs whose ``key`` equals ``value`` (an array holding it matches too)."""

    _fields = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = _key(key), value
        super().__init__({self.key: {"$eq": value}})


class NotEq(Query):
    """Runs whose ``key`` is not ``value`` (runs without the key included)."""

    _fields = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = _key(key), value
        super().__init__({self.key: {"$ne": value}})


class Operator(str, enum.Enum):
    """The comparisons of :class:`Comparison`."""

    lt = "lt"
    gt = "gt"
    le = "le"
    ge = "ge"


_MONGO_CMP = {"lt": "$lt", "gt": "$gt", "le": "$lte", "ge": "$gte"}


class Comparison(Query):
    """``Comparison("gt", "temperature", 300)``: runs with ``temperature > 300``."""

    _fields = ("operator", "key", "value")

    def __init__(self, operator: str | Operator, key: str, value: Any) -> None:
        try:
            self.operator = Operator(operator)
        except ValueError:
            raise InvalidQuery(f"Comparison operator {operator!r} is not one of "
                               f"{[o.value for o in Operator]}") from None
        self.key, self.value = _key(key), value
        super().__init__({self.key: {_MONGO_CMP[self.operator.value]: value}})


class Contains(Query):
    """Runs whose ``key`` (an array, e.g. ``detectors``) holds ``value``.

    As in MongoDB, a run whose ``key`` equals ``value`` itself matches too.
    """

    _fields = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = _key(key), value
        super().__init__({self.key: {"$eq": value}})


def _values(name: str, value: Any) -> list:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise InvalidQuery(f"{name} takes a list of values, got {value!r}")
    return list(value)


class In(Query):
    """Runs whose ``key`` is one of ``value`` (a list)."""

    _fields = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = _key(key), _values("In", value)
        super().__init__({self.key: {"$in": self.value}})


class NotIn(Query):
    """Runs whose ``key`` is none of ``value`` (runs without the key included)."""

    _fields = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = _key(key), _values("NotIn", value)
        super().__init__({self.key: {"$nin": self.value}})


class KeyPresent(Query):
    """Runs that have ``key`` (``exists=False``: that do not)."""

    _fields = ("key", "exists")

    def __init__(self, key: str, exists: bool = True) -> None:
        self.key, self.exists = _key(key), bool(exists)
        super().__init__({self.key: {"$exists": self.exists}})


class Regex(Query):
    """Runs whose string ``key`` matches ``pattern`` (``re.search``)."""

    _fields = ("key", "pattern", "case_sensitive")

    def __init__(self, key: str, pattern: str, case_sensitive: bool = True) -> None:
        if not isinstance(pattern, str):
            raise InvalidQuery(f"Regex pattern is a string, got {pattern!r}")
        self.key, self.pattern, self.case_sensitive = _key(key), pattern, bool(case_sensitive)
        cond: dict = {"$regex": pattern}
        if not self.case_sensitive:
            cond["$options"] = "i"
        super().__init__({self.key: cond})


def like_to_regex(pattern: str) -> str:
    """An SQL LIKE pattern (``%`` any text, ``_`` one character) as an anchored regex."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return "^" + "".join(out) + r"\Z"


class Like(Query):
    """``Like("sample.name", "Ni%")``: SQL LIKE on a string key, case-sensitive."""

    _fields = ("key", "pattern")

    def __init__(self, key: str, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise InvalidQuery(f"Like pattern is a string, got {pattern!r}")
        self.key, self.pattern = _key(key), pattern
        super().__init__({self.key: {"$regex": like_to_regex(pattern), "$options": "s"}})


class FullText(Query):
    """Runs whose metadata holds every word of ``text`` (whole words, any case)."""

    _fields = ("text",)

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise InvalidQuery(f"FullText takes a string, got {text!r}")
        self.text = text
        super().__init__({"$text": {"$search": text}})


class Key:
    """``Key("temperature") > 300``, ``Key("sample.name") == "Cu"``, ``Key("x").in_([1, 2])``.

    Not a query itself: comparing it with a value makes one.
    """

    def __init__(self, key: str) -> None:
        self.key = _key(key)

    def __eq__(self, value: Any) -> Eq:  # type: ignore[override]
        return Eq(self.key, value)

    def __ne__(self, value: Any) -> NotEq:  # type: ignore[override]
        return NotEq(self.key, value)

    def __lt__(self, value: Any) -> Comparison:
        return Comparison("lt", self.key, value)

    def __gt__(self, value: Any) -> Comparison:
        return Comparison("gt", self.key, value)

    def __le__(self, value: Any) -> Comparison:
        return Comparison("le", self.key, value)

    def __ge__(self, value: Any) -> Comparison:
        return Comparison("ge", self.key, value)

    def in_(self, values: Any) -> In:
        return In(self.key, values)

    def not_in(self, values: Any) -> NotIn:
        return NotIn(self.key, values)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Key({self.key!r})"


class Duplicates(str, enum.Enum):
    """What a scan_id search does with runs sharing a scan_id (databroker's spelling)."""

    latest = "latest"
    all = "all"
    error = "error"


def _scan_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise InvalidQuery(f"a scan_id is an integer, got {value!r}")
    return int(value)


def _duplicates(value: Any) -> Duplicates:
    try:
        return Duplicates(value)
    except ValueError:
        raise InvalidQuery(f"duplicates={value!r}: use 'latest', 'all' or 'error'") from None


class ScanID(Query):
    """Runs with any of these scan_ids: ``ScanID(101, 102)``.

    A search returns every run with one of them, even where scan_ids were reset and
    several runs share one, as databroker 2.0.2's client does; ``duplicates`` is
    accepted for compatibility (``cat[101]`` is the look-up that picks the latest).
    """

    _fields = ("scan_ids", "duplicates")

    def __init__(self, *scan_ids: int, duplicates: str = "latest") -> None:
        self.scan_ids = [_scan_id(s) for s in scan_ids]
        self.duplicates = _duplicates(duplicates)
        super().__init__({"scan_id": {"$in": self.scan_ids}})


class ScanIDRange(Query):
    """Runs with ``start_id <= scan_id < end_id``."""

    _fields = ("start_id", "end_id", "duplicates")

    def __init__(self, start_id: int, end_id: int, duplicates: str = "latest") -> None:
        self.start_id, self.end_id = _scan_id(start_id), _scan_id(end_id)
        self.duplicates = _duplicates(duplicates)
        super().__init__({"scan_id": {"$gte": self.start_id, "$lt": self.end_id}})


class PartialUID(Query):
    """Runs whose uid starts with any of these: ``PartialUID("80a03", "1f2e")``."""

    _fields = ("partial_uids",)

    def __init__(self, *partial_uids: str) -> None:
        for p in partial_uids:
            if not isinstance(p, str) or not p:
                raise InvalidQuery(f"a partial uid is a non-empty string, got {p!r}")
        self.partial_uids = list(partial_uids)
        branches = [{"uid": {"$regex": "^" + re.escape(p)}} for p in self.partial_uids]
        super().__init__(branches[0] if len(branches) == 1 else
                         {"$or": branches} if branches else {"uid": {"$in": []}})


class RawMongo(Query):
    """A MongoDB query on the start document as it is: ``RawMongo({"plan_name": "scan"})``.

    databroker 2 limits this to one ``key == value``; a local catalog runs any query
    :meth:`Catalog.search` accepts.
    """

    _fields = ("start",)

    def __init__(self, start: Mapping) -> None:
        if not isinstance(start, Mapping):
            raise InvalidQuery(f"RawMongo takes a dict, got {type(start).__name__}")
        self.start = dict(start)
        super().__init__(self.start)


# --- time ---------------------------------------------------------------------

# the human-friendly formats databroker accepts, most precise first
_TS_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H", "%Y-%m-%d", "%Y-%m", "%Y")


def _zone(tz: str):
    from zoneinfo import ZoneInfo
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidQuery(f"unknown time zone {tz!r}; use a name like 'UTC' or "
                           "'America/New_York'") from None


def to_timestamp(value: Any, tz: str | None = None) -> float:
    """Epoch seconds of a time given as a number, datetime, date or ISO/human string.

    A time without a zone is in ``tz`` (a zone name) or, if None, local time.
    """
    if value is None or isinstance(value, bool):
        raise InvalidQuery(f"cannot use {value!r} as a time")
    if isinstance(value, numbers.Real):  # epoch seconds, numpy scalars included
        return float(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):  # a whole day starts at midnight
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):  # UTC; fromisoformat reads "Z" only from Python 3.11
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            for fmt in _TS_FORMATS:
                try:
                    dt = datetime.strptime(text, fmt)
                    break
                except ValueError:
                    pass
            else:
                raise InvalidQuery(f"cannot read {value!r} as a date/time; use ISO format like "
                                   "'2021-12-06' or '2021-12-06 15:46'") from None
    else:
        raise InvalidQuery(f"cannot use {value!r} as a time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_zone(tz)) if tz else dt.astimezone()  # local, like databroker
    return dt.astimezone(_tz.utc).timestamp()


class TimeRange(Query):
    """Runs whose start time is in ``[since, until)``.

    ``since``/``until``: epoch seconds, a datetime or date, or a string such as
    ``"2024"``, ``"2024-05"``, ``"2024-05-01 14:30"`` or ISO 8601. ``timezone`` names
    the zone of times given without one (default: local time). After construction
    ``since`` and ``until`` are epoch seconds, as in databroker.
    """

    _fields = ("timezone", "since", "until")

    def __init__(self, since: Any = None, until: Any = None, timezone: str | None = None) -> None:
        if timezone is not None and not isinstance(timezone, str):
            raise InvalidQuery(f"timezone is a zone name, got {timezone!r}")
        self.timezone = timezone
        self.since = None if since is None else to_timestamp(since, timezone)
        self.until = None if until is None else to_timestamp(until, timezone)
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidQuery(f"TimeRange since={since!r} is after until={until!r}")
        cond = {}
        if self.since is not None:
            cond["$gte"] = self.since
        if self.until is not None:
            cond["$lt"] = self.until
        super().__init__({"time": cond} if cond else {})


# --- other libraries' query objects -------------------------------------------

def _attr(query: Any, name: str) -> Any:
    try:
        return getattr(query, name)
    except AttributeError:
        raise InvalidQuery(f"a {type(query).__name__} query without {name!r}") from None


def _enum_value(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


_FOREIGN = {
    "Eq": lambda q: Eq(_attr(q, "key"), _attr(q, "value")),
    "NotEq": lambda q: NotEq(_attr(q, "key"), _attr(q, "value")),
    "Comparison": lambda q: Comparison(_enum_value(_attr(q, "operator")), _attr(q, "key"),
                                       _attr(q, "value")),
    "Contains": lambda q: Contains(_attr(q, "key"), _attr(q, "value")),
    "In": lambda q: In(_attr(q, "key"), _attr(q, "value")),
    "NotIn": lambda q: NotIn(_attr(q, "key"), _attr(q, "value")),
    "KeyPresent": lambda q: KeyPresent(_attr(q, "key"), _attr(q, "exists")),
    "Regex": lambda q: Regex(_attr(q, "key"), _attr(q, "pattern"),
                             getattr(q, "case_sensitive", True)),
    "Like": lambda q: Like(_attr(q, "key"), _attr(q, "pattern")),
    "FullText": lambda q: FullText(_attr(q, "text")),
    "_ScanID": lambda q: ScanID(*_attr(q, "scan_ids"),
                                duplicates=_enum_value(getattr(q, "duplicates", "latest"))),
    "ScanIDRange": lambda q: ScanIDRange(_attr(q, "start_id"), _attr(q, "end_id"),
                                         _enum_value(getattr(q, "duplicates", "latest"))),
    "_PartialUID": lambda q: PartialUID(*_attr(q, "partial_uids")),
    # bluesky-tiled-plugins' TimeRange holds epoch seconds already
    "TimeRange": lambda q: TimeRange(since=_attr(q, "since"), until=_attr(q, "until")),
}


_QUERY_NAMES = ("Comparison", "Contains", "Eq", "FullText", "In", "KeyPresent", "Like", "NotEq",
                "NotIn", "PartialUID", "RawMongo", "Regex", "ScanID", "ScanIDRange", "TimeRange")


def to_mongo(query: Any) -> dict:
    """The MongoDB-style dict of a query: a dict, one of ours, or tiled's/databroker's.

    tiled's query objects (``tiled.queries.Eq`` and the rest) and bluesky-tiled-plugins'
    (``ScanID``, ``TimeRange``, ...) are recognised by their type name and fields.
    Anything else is an :class:`InvalidQuery` naming its type.
    """
    if isinstance(query, Mapping):
        return dict(query)
    convert = _FOREIGN.get(type(query).__name__)
    if convert is None and type(query).__module__ == "builtins":
        raise InvalidQuery(f"a query is a dict, got {type(query).__name__}")
    if convert is None:
        raise InvalidQuery(f"queries of type {type(query).__name__} are not supported; use a "
                           "MongoDB-style dict or one of databroker_lite.queries: "
                           f"{', '.join(_QUERY_NAMES)}")
    return dict(convert(query))
