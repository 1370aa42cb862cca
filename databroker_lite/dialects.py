"""SQL dialects of the index: every difference between SQLite and PostgreSQL SQL.

Part of the index layer. :mod:`databroker_lite.query` has one query compiler; it asks
a dialect for the few primitives that differ between databases (how to reach a value
in a JSON start document, what its JSON type is called, how to compare it, how to
match a regular expression, the literals for true and false). Everything else (the
operators, validation, negation, how queries combine) is the compiler's, so both
backends answer a query the same way.

SQL is always written with ``?`` placeholders; a backend whose driver wants another
style translates them (so a dialect never writes a literal ``?`` or ``%``). Every
parameter is added through ``c.p(value)`` at the place its ``?`` appears in the text.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Protocol

from .errors import InvalidQuery


def _parsable(doc: str) -> str:
    """SQL for a stored document SQLite's JSON functions can read: documents keep NaN and
    infinities as JSON's NaN/Infinity tokens, which SQLite 3.40 refuses ("malformed
    JSON", failing the whole search); there they read as null, as in PostgreSQL's jsonb.
    Stored documents are compact (``documents.dumps``), so a bare token follows ``:``,
    ``,`` or ``[``; text holding such a token is the rare document this can misread."""
    fixed = doc
    for token in ("-Infinity", "Infinity", "NaN"):
        for before in (":", ",", "["):
            fixed = f"replace({fixed}, '{before}{token}', '{before}null')"
    return f"(CASE WHEN json_valid({doc}) THEN {doc} ELSE {fixed} END)"


class _Compiler(Protocol):
    """The query compiler (:mod:`databroker_lite.query`) as a dialect sees it; a Protocol,
    so that this module does not import the compiler that imports it."""

    def p(self, value: Any) -> str:
        """Add a parameter; return its placeholder (``?``)."""

# keys stored as their own indexed columns in the index
COLUMNS = {"uid": "uid", "scan_id": "scan_id", "time": "time", "plan_name": "plan_name"}


class Ref:
    """Where a query key's value lives: an index column, or a path in a JSON document."""

    __slots__ = ("key", "column", "doc", "parts")

    def __init__(self, key: str, column: str | None = None, doc: str = "start",
                 parts: tuple[str, ...] = ()) -> None:
        self.key, self.column, self.doc, self.parts = key, column, doc, parts


def json_path(key: str) -> str:
    """'sample.name' -> '$."sample"."name"' (SQLite JSON path, each part quoted)."""
    if not key or any(part == "" for part in key.split(".")):
        raise InvalidQuery(f"query key {key!r} is not a valid dotted key")
    return "$" + "".join('."' + part.replace('"', '""') + '"' for part in key.split("."))


def _path(parts: tuple[str, ...]) -> str:
    return "$" + "".join('."' + part.replace('"', '""') + '"' for part in parts)


def kind_of(value: Any) -> str:
    """The JSON kind a query value compares as: 'bool', 'number' or 'text'."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


# --- the SQLite index's field table ----------------------------------------------
# Every scalar of a run's start and stop documents is a row (key, value, run) of the
# table ``fields``, whose primary key makes equality, $in, ranges and $regex on any key,
# nested or not, an index look-up instead of parsing every run's JSON. The key names the
# document ('s' start, 'e' stop), the kind (N number, T text, B bool; lower case for an
# element of an array at that key) and the path (a JSON list, so dots in key names stay
# apart from nesting).
_KIND_CHAR = {"number": "N", "text": "T", "bool": "B"}
_START_COLUMNS = frozenset(COLUMNS)  # start keys kept in their own columns: not repeated


_FIELD_KEYS: dict[tuple, str] = {}  # the same keys recur in every run: built once each


def field_key(doc: str, kind: str, parts: tuple[str, ...] | list[str], element: bool = False) -> str:
    memo = (doc, kind, element, *parts)
    key = _FIELD_KEYS.get(memo)
    if key is None:
        char = _KIND_CHAR[kind]
        key = (("s" if doc == "start" else "e") + (char.lower() if element else char)
               + json.dumps(list(parts), ensure_ascii=False, separators=(",", ":")))
        if len(_FIELD_KEYS) >= 20_000:  # a catalog of ever-new keys: bounded
            _FIELD_KEYS.clear()
        _FIELD_KEYS[memo] = key
    return key


def _field_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))  # bool is an int


def field_rows(doc_name: str, doc: Any) -> list[tuple[str, Any]]:
    """The (key, value) rows of one document for the ``fields`` table."""
    out: list[tuple[str, Any]] = []

    def walk(value: Any, parts: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if not parts and doc_name == "start" and k in _START_COLUMNS:
                    continue
                walk(v, (*parts, str(k)))
        elif isinstance(value, list):
            for v in value:
                if _field_scalar(v):
                    out.append((field_key(doc_name, kind_of(v), parts, element=True), _stored(v)))
        elif parts and _field_scalar(value):
            out.append((field_key(doc_name, kind_of(value), parts), _stored(value)))

    if isinstance(doc, dict):
        walk(doc, ())
    return out


def _stored(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        try:
            return float(value)  # as SQLite's JSON functions read it
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


class SQLiteDialect:
    """SQLite's JSON1 functions; ``db_regexp`` is a Python function the connection registers."""

    name = "sqlite"
    true, false = "1", "0"
    _KINDS = {"number": "IN ('integer', 'real')", "bool": "IN ('true', 'false')",
              "text": "= 'text'", "array": "= 'array'", "null": "= 'null'"}

    def not_(self, sql: str) -> str:
        # SQL's NOT NULL is NULL, but a run without the key is "not equal", as in MongoDB
        return f"NOT COALESCE(({sql}), 0)"

    def is_kind(self, type_sql: str, kind: str) -> str:
        return f"{type_sql} {self._KINDS[kind]}"

    def addressable(self, ref: Ref) -> bool:
        """Whether SQLite's JSON path syntax can name this key (it has no escape for '"')."""
        return ref.column is not None or not any('"' in p for p in ref.parts)

    def value(self, c: _Compiler, ref: Ref) -> str:
        if ref.column:
            return ref.column
        if not self.addressable(ref):
            return "NULL"
        return f"json_extract({_parsable(ref.doc)}, {c.p(_path(ref.parts))})"

    def type_of(self, c: _Compiler, ref: Ref) -> str:
        """SQL for the key's JSON type ('integer', 'real', 'text', 'array', ...; NULL when absent)."""
        if ref.column:
            col = ref.column
            return (f"(CASE WHEN {col} IS NULL THEN NULL WHEN typeof({col})='integer' THEN 'integer' "
                    f"WHEN typeof({col})='real' THEN 'real' ELSE 'text' END)")
        if not self.addressable(ref):
            return "NULL"
        return f"json_type({_parsable(ref.doc)}, {c.p(_path(ref.parts))})"

    def eq_json(self, c: _Compiler, ref: Ref, value: Any) -> str:
        """The key's value equals this list or dict."""
        return f"({self.value(c, ref)} = json({c.p(json.dumps(value))}))"

    def eq_scalar(self, c: _Compiler, ref: Ref, value: Any) -> str:
        """The key equals this number, string or bool, or is an array holding it."""
        if ref.column:
            if isinstance(value, bool):
                return self.false  # no column holds a bool (True is not 1)
            return f"({self.value(c, ref)} = {c.p(value)})"
        kind = kind_of(value)
        keys = (field_key(ref.doc, kind, ref.parts), field_key(ref.doc, kind, ref.parts, element=True))
        return (f"(rowid IN (SELECT run FROM fields WHERE key IN ({c.p(keys[0])}, {c.p(keys[1])}) "
                f"AND value = {c.p(value)}))")

    def compare(self, c: _Compiler, ref: Ref, op: str, value: Any) -> str:
        """The key is a number (or string) and ``key <op> value`` (op: < <= > >=)."""
        if ref.column:
            return (f"({self.is_kind(self.type_of(c, ref), kind_of(value))} AND "
                    f"{self.value(c, ref)} {op} {c.p(value)})")
        return (f"(rowid IN (SELECT run FROM fields WHERE key = "
                f"{c.p(field_key(ref.doc, kind_of(value), ref.parts))} AND value {op} {c.p(value)}))")

    def regex(self, c: _Compiler, ref: Ref, pattern: str, flags: int) -> str:
        if ref.column:
            return (f"({self.is_kind(self.type_of(c, ref), 'text')} AND "
                    f"db_regexp({c.p(pattern)}, {c.p(flags)}, {self.value(c, ref)}))")
        return (f"(rowid IN (SELECT run FROM fields WHERE key = "
                f"{c.p(field_key(ref.doc, 'text', ref.parts))} AND "
                f"db_regexp({c.p(pattern)}, {c.p(flags)}, value)))")

    def in_scalars(self, c: _Compiler, ref: Ref, kind: str, values: list) -> str:
        """The key equals one of these values (all of one kind), or is an array holding
        one: a single parameter (a JSON array read by json_each), however many values."""
        if ref.column:
            if kind == "bool":
                return self.false  # no column holds a bool (True is not 1)
            return (f"({self.is_kind(f'typeof({ref.column})', kind)} AND {ref.column} IN "
                    f"(SELECT value FROM json_each({c.p(json.dumps(values))})))")
        keys = (field_key(ref.doc, kind, ref.parts), field_key(ref.doc, kind, ref.parts, element=True))
        return (f"(rowid IN (SELECT run FROM fields WHERE key IN ({c.p(keys[0])}, {c.p(keys[1])}) "
                f"AND value IN (SELECT value FROM json_each({c.p(json.dumps(values))}))))")

    def text_search(self, c: _Compiler, words: list[str]) -> str:
        """Runs whose start or stop document holds all these words (FTS5 table runs_text)."""
        match = " AND ".join(f'"{w}"' for w in words)  # words are letters and digits only
        return f"(rowid IN (SELECT rowid FROM runs_text WHERE runs_text MATCH {c.p(match)}))"


# --- PostgreSQL -----------------------------------------------------------------

_INT64 = 2**63


def pg_json(value: Any) -> Any:
    """A document as PostgreSQL's jsonb can hold it: NaN and infinities become null and
    NUL characters U+FFFD (jsonb has neither; the run file keeps the original), and an
    integer beyond 64 bits a float, as SQLite's JSON functions read it (so both answer
    a query the same way)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        try:
            return pg_json(float(value))
        except OverflowError:
            return None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {pg_json(k): pg_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [pg_json(v) for v in value]
    return value


def _nest(parts: tuple[str, ...], value: Any) -> dict:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


class PostgresDialect:
    """PostgreSQL's jsonb operators. Start and stop documents are ``jsonb`` columns (with
    a GIN index), ``scan_id`` is ``jsonb`` (it may be a number or a string), text columns
    and string comparisons use the "C" collation, so order is by code point as in SQLite."""

    name = "postgresql"
    true, false = "true", "false"
    _KINDS = {"number": "= 'number'", "bool": "= 'boolean'", "text": "= 'string'",
              "array": "= 'array'", "null": "= 'null'"}
    _TEXT_COLUMNS = ("uid", "plan_name")
    IN_INDEXED = 32  # $in on a document key: up to this many values, each through the GIN index

    def not_(self, sql: str) -> str:
        return f"NOT COALESCE(({sql}), false)"

    def is_kind(self, type_sql: str, kind: str) -> str:
        return f"{type_sql} {self._KINDS[kind]}"

    def addressable(self, ref: Ref) -> bool:
        return True

    def _at(self, c: _Compiler, ref: Ref) -> str:
        """The jsonb value at the key (NULL when absent)."""
        if ref.column == "scan_id":
            return "scan_id"
        return f"({ref.doc} #> {c.p(list(ref.parts))}::text[])"

    def value(self, c: _Compiler, ref: Ref) -> str:
        return ref.column or self._at(c, ref)

    def type_of(self, c: _Compiler, ref: Ref) -> str:
        if ref.column in self._TEXT_COLUMNS:
            return f"(CASE WHEN {ref.column} IS NULL THEN NULL ELSE 'string' END)"
        if ref.column == "time":
            return "(CASE WHEN time IS NULL THEN NULL ELSE 'number' END)"
        return f"jsonb_typeof({self._at(c, ref)})"

    @staticmethod
    def _param(value: Any) -> Any:
        return pg_json(value)

    def eq_json(self, c: _Compiler, ref: Ref, value: Any) -> str:
        if ref.column:
            return self.false  # no column holds a list or a dict
        return f"({self._at(c, ref)} = {c.p(json.dumps(pg_json(value)))}::jsonb)"

    def _column_ok(self, ref: Ref, kind: str) -> bool:
        return {"uid": "text", "plan_name": "text", "time": "number"}.get(ref.column) == kind

    def eq_scalar(self, c: _Compiler, ref: Ref, value: Any) -> str:
        kind = kind_of(value)
        if isinstance(value, str) and "\x00" in value:
            value = pg_json(value)
        if isinstance(value, float) and not math.isfinite(value):
            return self.false  # stored documents hold no NaN or infinity (see pg_json)
        if ref.column and ref.column != "scan_id":
            return f"({ref.column} = {c.p(value)})" if self._column_ok(ref, kind) else self.false
        as_json = json.dumps(value)
        if ref.column == "scan_id":
            return f"(scan_id = {c.p(as_json)}::jsonb)"
        # The containment prefilter is a superset of the matches that the GIN index
        # answers; the exact test (the value itself, or a direct element of an array) follows.
        return (f"(({ref.doc} @> {c.p(json.dumps(_nest(ref.parts, value)))}::jsonb OR "
                f"{ref.doc} @> {c.p(json.dumps(_nest(ref.parts, [value])))}::jsonb) AND "
                f"({self._at(c, ref)} = {c.p(as_json)}::jsonb OR "
                f"({self.is_kind(self.type_of(c, ref), 'array')} AND "
                f"{self._at(c, ref)} @> {c.p('[' + as_json + ']')}::jsonb)))")

    def in_scalars(self, c: _Compiler, ref: Ref, kind: str, values: list) -> str:
        """The key equals one of these values (all of one kind), or is an array holding
        one: ``= ANY`` of a single array parameter, however many values."""
        values = [pg_json(v) for v in values
                  if not (isinstance(v, float) and not math.isfinite(v))]  # no jsonb holds them
        if not values:
            return self.false
        if ref.column and ref.column != "scan_id":
            if not self._column_ok(ref, kind):
                return self.false
            if ref.column == "time":
                return f"(time = ANY({c.p([float(v) for v in values])}::float8[]))"
            return f"({ref.column} = ANY({c.p(values)}::text[]))"
        as_json = [json.dumps(v) for v in values]
        if ref.column == "scan_id":
            return f"(scan_id = ANY({c.p(as_json)}::jsonb[]))"
        if len(values) <= self.IN_INDEXED:  # each value's containment test uses the GIN index
            return "(" + " OR ".join(self.eq_scalar(c, ref, v) for v in values) + ")"
        return (f"({self._at(c, ref)} = ANY({c.p(as_json)}::jsonb[]) OR "
                f"({self.is_kind(self.type_of(c, ref), 'array')} AND EXISTS (SELECT 1 FROM "
                f"jsonb_array_elements({self._at(c, ref)}) AS e(v) WHERE e.v = ANY({c.p(as_json)}::jsonb[]))))")

    def compare(self, c: _Compiler, ref: Ref, op: str, value: Any) -> str:
        kind = kind_of(value)
        if ref.column and ref.column != "scan_id":
            return f"({ref.column} {op} {c.p(value)})" if self._column_ok(ref, kind) else self.false
        if isinstance(value, float) and not math.isfinite(value):
            # jsonb holds no infinity: every number is above -inf and below +inf
            if value != value or (value > 0) == (op in (">", ">=")):
                return self.false
            return f"({self.is_kind(self.type_of(c, ref), 'number')})"
        at = self._at(c, ref)
        if kind == "number":
            return (f"({self.is_kind(self.type_of(c, ref), 'number')} AND "
                    f"{at} {op} {c.p(json.dumps(value))}::jsonb)")
        return (f"({self.is_kind(self.type_of(c, ref), 'text')} AND "
                f"({at} #>> '{{}}') COLLATE \"C\" {op} {c.p(pg_json(value))})")

    def text_search(self, c: _Compiler, words: list[str]) -> str:
        """Runs whose start or stop document holds all these words, in any case (the
        strings of both documents as a 'simple' text-search vector)."""
        vector = ("(jsonb_to_tsvector('simple', start, '[\"string\"]') || "
                  "jsonb_to_tsvector('simple', COALESCE(stop, '{}'::jsonb), '[\"string\"]'))")
        query = " & ".join("'" + w + "'" for w in words)  # words are letters and digits only
        return f"({vector} @@ to_tsquery('simple', {c.p(query)}))"

    def regex(self, c: _Compiler, ref: Ref, pattern: str, flags: int) -> str:
        translated = python_to_posix_regex(pattern, flags)
        text = ref.column if ref.column in self._TEXT_COLUMNS else f"({self._at(c, ref)} #>> '{{}}')"
        return f"({self.is_kind(self.type_of(c, ref), 'text')} AND {text} ~ {c.p(translated)})"


_INLINE_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_ESCAPES_KEPT = set("dDwWsSAZntrfv.^$*+?()[]{}|\\/-#&~ '\"")


def python_to_posix_regex(pattern: str, flags: int = 0) -> str:
    """A Python ``re`` pattern as the same search in PostgreSQL's ``~`` (its "advanced" syntax).

    Flags become an embedded-options prefix: ``^``/``$`` only at the ends is PostgreSQL's
    ``s``, ``re.M`` (at every line) is ``w``; ``re.I`` is ``i``, ``re.X`` is ``x``. Without
    ``re.S``, ``.`` becomes ``[^\\n]`` (PostgreSQL has no mode where ``.`` skips a newline
    but ``[^a]`` does not). ``\\b``/``\\B`` become ``\\y``/``\\Y``, ``\\xHH`` becomes
    ``\\u00HH``, named groups plain groups and ``(?P=name)`` a numbered back-reference.
    Without ``re.M``, ``$`` becomes ``(?=\\n?$)`` (Python's ``$`` also matches before a
    final newline). What PostgreSQL cannot do the same way (scoped inline flags, atomic groups and
    possessive repeats, ``\\D``/``\\W``/``\\S`` inside brackets, octal escapes) is refused
    with :class:`InvalidQuery`.
    """
    compiled = re.compile(pattern, flags)
    flags |= compiled.flags  # leading inline flags such as "(?i)"
    while True:
        m = _INLINE_FLAGS.match(pattern)
        if not m:
            break
        pattern = pattern[m.end():]
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False

    def refuse(what: str) -> InvalidQuery:
        return InvalidQuery(f"$regex {pattern!r}: {what} has no PostgreSQL equivalent; the "
                            "PostgreSQL index cannot run this pattern (rewrite it without that)")

    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", pattern[i + 2:i + 4]):
                out.append("\\u00" + pattern[i + 2:i + 4])
                i += 4
                continue
            if nxt in "uU":
                width = 4 if nxt == "u" else 8
                out.append(pattern[i:i + 2 + width])
                i += 2 + width
                continue
            if nxt == "b":
                out.append("\\u0008" if in_class else "\\y")
            elif nxt == "B" and not in_class:
                out.append("\\Y")
            elif nxt in "123456789" and not pattern[i + 2:i + 3].isdigit():
                out.append(ch + nxt)  # a back-reference, \\1 to \\9 in both
            elif nxt.isdigit():
                raise refuse("an octal escape or a back-reference past \\9")
            elif in_class and nxt in "DWS":
                raise refuse(f"\\{nxt} inside [...]")
            elif nxt in _ESCAPES_KEPT or not nxt.isalnum():
                out.append(ch + nxt)
            else:
                raise refuse(f"the escape \\{nxt}")
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
            else:
                out.append("[")
                i += 1
            if i < n and pattern[i] == "]":  # a leading ']' is a literal
                out.append("]")
                i += 1
            continue
        if ch == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2:]
            if rest.startswith("P="):
                end = pattern.index(")", i)
                number = compiled.groupindex[pattern[i + 4:end]]
                if number > 9:
                    raise refuse("a back-reference past \\9")
                out.append(f"\\{number}")
                i = end + 1
                continue
            if rest.startswith("P<"):
                end = pattern.index(">", i)
                out.append("(")
                i = end + 1
                continue
            if rest[:1] in (":", "=", "!") or rest.startswith(("<=", "<!")):
                out.append("(?")
                i += 2
                continue
            if rest.startswith("#"):
                i = pattern.index(")", i) + 1  # a comment
                continue
            raise refuse("the group '(?" + rest[:2] + "'")
        if ch in "*+?}" and pattern.startswith("+", i + 1):
            raise refuse("a possessive repeat")
        if ch == "." and not flags & re.S:
            ch = "[^\\n]"
        elif ch == "$" and not flags & re.M:
            ch = "(?=\\n?$)"  # Python's $ also matches before a last newline
        out.append(ch)
        i += 1
    opts = "w" if flags & re.M else "s"
    if flags & re.I:
        opts += "i"
    if flags & re.X:
        opts += "x"
    return f"(?{opts})" + "".join(out)
