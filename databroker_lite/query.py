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

from .dialects import COLUMNS, Ref, SQLiteDialect, json_path, kind_of
from .errors import InvalidQuery

try:  # the regular-expression parser, to spot catastrophic patterns before they run
    import re._parser as _sre_parse  # Python >= 3.11
except ImportError:  # pragma: no cover
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_OPS = {"$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$ne", "$eq", "$exists", "$regex", "$options", "$not"}
_CMP = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
SQLITE = SQLiteDialect()


MAX_DEPTH = 200   # levels of nesting a query may have; deeper is refused
HOIST_LEVEL = 6   # boolean levels of SQL nesting before a sub-query moves to a CTE
IN_INLINE = 3     # $in lists up to this long compile to equalities (their prefilters apply)
_BALANCE = 8      # longer AND/OR lists are joined as a balanced tree, not a chain

# A query is first parsed into a tree (validated, flattened, equalities on one key in an
# $or merged into one $in), then emitted as SQL. Nodes: ("and", [nodes]), ("or", [nodes]),
# ("not", node), ("field", key, {op: arg}), ("text", [words]), ("const", bool).


def _flat(kind: str, nodes: list) -> list:
    out = []
    for n in nodes:
        if n[0] == kind:
            out.extend(n[1])
        elif not (n[0] == "const" and n[1] == (kind == "and")):  # True in AND, False in OR
            out.append(n)
    return out


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and value == value and value not in (
        float("inf"), float("-inf"))


def _merge_equalities(nodes: list) -> list:
    """In an $or: ``{k: a}``, ``{k: b}``, ``{k: {"$in": [c]}}`` -> ``{k: {"$in": [a, b, c]}}``."""
    groups: dict[str, list] = {}
    for n in nodes:
        if n[0] == "field":
            (op, arg), = n[2].items() if len(n[2]) == 1 else ((None, None),)
            if op == "$eq" and _scalar(_normalise(arg)):
                groups.setdefault(n[1], []).append(n)
            elif op == "$in" and isinstance(arg, (list, tuple)) and all(_scalar(_normalise(v)) for v in arg):
                groups.setdefault(n[1], []).append(n)
    merged = {k: v for k, v in groups.items() if len(v) > 1}
    if not merged:
        return nodes
    out, done = [], set()
    for n in nodes:
        key = n[1] if n[0] == "field" else None
        if key in merged and any(n is m for m in merged[key]):
            if key not in done:
                values = []
                for m in merged[key]:
                    (op, arg), = m[2].items()
                    values.extend([arg] if op == "$eq" else arg)
                out.append(("field", key, {"$in": values}))
                done.add(key)
        else:
            out.append(n)
    return out


def _join(kind: str, nodes: list) -> tuple:
    nodes = _flat(kind, nodes)
    if kind == "or":
        nodes = _merge_equalities(nodes)
    if not nodes:
        return ("const", kind == "and")
    return nodes[0] if len(nodes) == 1 else (kind, nodes)


def text_words(cond: Any) -> list[str]:
    """The words of ``{"$search": "Cu foil"}``: a run matches if it holds every one (any case).

    Words are runs of letters and digits; everything else (punctuation, FTS syntax such
    as ``OR`` or ``*`` between words is still a word, quotes are not) separates them.
    """
    if not isinstance(cond, Mapping) or "$search" not in cond:
        raise InvalidQuery(f'$text takes {{"$search": "words"}}, got {cond!r}')
    unknown = set(cond) - {"$search", "$caseSensitive", "$diacriticSensitive", "$language"}
    if unknown:
        raise InvalidQuery(f"unknown $text option(s) {sorted(unknown)}; use $search")
    if cond.get("$caseSensitive"):
        raise InvalidQuery("$text searches ignore case; use $regex for a case-sensitive search")
    text = cond["$search"]
    if not isinstance(text, str):
        raise InvalidQuery(f"$text $search takes a string, got {text!r}")
    words = [w.lower() for w in re.findall(r"[^\W_]+", text)]
    if not words:
        raise InvalidQuery(f"$text $search {text!r} holds no word to search for")
    return list(dict.fromkeys(words))


class _Compiler:
    """Builds one WHERE clause in one SQL dialect (see :mod:`databroker_lite.dialects`).

    Every ``?`` is created by ``p()`` at the very place it appears in the SQL text
    (f-strings evaluate left to right), so parameters always line up with their
    placeholders. Sub-queries nested deeper than ``hoist`` levels become common table
    expressions (``ctes``, each with its own parameters), so SQLite's parser never
    meets more nesting than it can take.
    """

    def __init__(self, dialect: Any = None, hoist: int = HOIST_LEVEL) -> None:
        self.params: list[Any] = []
        self.d = dialect or SQLITE
        self.hoist = hoist
        self.ctes: list[tuple[str, str, list]] = []

    def p(self, value: Any) -> str:
        self.params.append(sql_value(value))
        return "?"

    def compile(self, query: Mapping) -> str:
        return self.emit(self.tree(query), 0)

    # --- the tree ---------------------------------------------------------------
    def tree(self, query: Any, depth: int = 0) -> tuple:
        if not isinstance(query, Mapping):
            raise InvalidQuery(f"a query is a dict, got {type(query).__name__}")
        if depth > MAX_DEPTH:
            raise InvalidQuery(f"the query is nested more than {MAX_DEPTH} levels deep; "
                               "flatten it (an $and or $or takes any number of queries)")
        terms = []
        for key, cond in query.items():
            if not isinstance(key, str):
                raise InvalidQuery(f"query keys are strings, got {key!r}")
            if key in ("$and", "$or", "$nor"):
                if not isinstance(cond, (list, tuple)) or not cond:
                    raise InvalidQuery(f"{key} takes a non-empty list of queries")
                subs = [self.tree(c, depth + 1) for c in cond]
                node = _join("and" if key == "$and" else "or", subs)
                terms.append(("not", node) if key == "$nor" else node)
            elif key == "$text":
                terms.append(("text", text_words(cond)))
            elif key.startswith("$"):
                raise InvalidQuery(f"unknown top-level operator {key!r}; use $and, $or, $nor, $text")
            else:
                terms.append(self.field_tree(key, cond, depth + 1))
        return _join("and", terms)

    def field_tree(self, key: str, cond: Any, depth: int) -> tuple:
        if depth > MAX_DEPTH:
            raise InvalidQuery(f"the query is nested more than {MAX_DEPTH} levels deep")
        self.ref(key)  # validate the key now
        if isinstance(cond, Mapping) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
            unknown = set(cond) - _OPS
            if unknown:
                raise InvalidQuery(f"unknown operator(s) {sorted(unknown)} on {key!r}; "
                                   f"supported: {sorted(_OPS - {'$options'})}")
            if "$options" in cond and "$regex" not in cond:
                raise InvalidQuery(f"$options on {key!r} goes with $regex")
            terms = []
            for op, arg in cond.items():
                if op == "$options":
                    continue
                if op == "$not":
                    if not isinstance(arg, Mapping) or not arg or not all(
                            isinstance(k, str) and k.startswith("$") for k in arg):
                        raise InvalidQuery(f"$not on {key!r} takes an operator dict, got {arg!r}")
                    terms.append(("not", self.field_tree(key, arg, depth + 1)))
                elif op == "$regex":
                    terms.append(("field", key, {"$regex": arg, "$options": cond.get("$options", "")}))
                else:
                    terms.append(("field", key, {op: arg}))
            return _join("and", terms)
        if isinstance(cond, Mapping) and cond:
            if any(isinstance(k, str) and k.startswith("$") for k in cond):
                raise InvalidQuery(f"{key!r}: do not mix operators and plain keys in one dict")
            for k in cond:
                if not isinstance(k, str):
                    raise InvalidQuery(f"query keys are strings, got {k!r} under {key!r}")
            return _join("and", [self.field_tree(f"{key}.{k}", v, depth + 1) for k, v in cond.items()])
        return ("field", key, {"$eq": cond})

    # --- SQL ----------------------------------------------------------------------
    def emit(self, node: tuple, level: int) -> str:
        kind = node[0]
        if kind in ("and", "or", "not") and level >= self.hoist:
            return self._hoisted(node)
        if kind == "const":
            return self.d.true if node[1] else self.d.false
        if kind == "field":
            (op, arg), = [(o, a) for o, a in node[2].items() if o != "$options"]
            return self.op(node[1], op, arg, node[2])
        if kind == "text":
            return self.text(node[1])
        if kind == "not":
            return self.d.not_(self.emit(node[1], level + 1))
        return self._balanced(" AND " if kind == "and" else " OR ", node[1], level)

    def _balanced(self, sep: str, nodes: list, level: int) -> str:
        if len(nodes) <= _BALANCE:
            return "(" + sep.join(f"({self.emit(n, level + 1)})" for n in nodes) + ")"
        mid = len(nodes) // 2
        return (f"({self._balanced(sep, nodes[:mid], level + 1)}{sep}"
                f"{self._balanced(sep, nodes[mid:], level + 1)})")

    def _hoisted(self, node: tuple) -> str:
        outer, self.params = self.params, []
        try:
            body = self.emit(node, 0)
            name = f"_q{len(self.ctes) + 1}"
            self.ctes.append((name, f"SELECT uid FROM runs WHERE {body}", self.params))
        finally:
            self.params = outer
        return f"(uid IN (SELECT uid FROM {name}))"

    def text(self, words: list[str]) -> str:
        search = getattr(self.d, "text_search", None)
        if search is None:
            raise InvalidQuery(f"$text is not supported by the {self.d.name} index")
        return search(self, words)

    def any_of(self, parts: list[str]) -> str:
        """OR of SQL already emitted in order (a balanced tree, so long lists parse)."""
        if len(parts) == 1:
            return parts[0]
        if len(parts) <= _BALANCE:
            return "(" + " OR ".join(parts) + ")"
        mid = len(parts) // 2
        return f"({self.any_of(parts[:mid])} OR {self.any_of(parts[mid:])})"

    def is_in(self, key: str, values: list) -> str:
        values = [_normalise(v) for v in values]
        in_scalars = self.d.in_scalars
        if len(values) <= IN_INLINE:
            return self.any_of([self.eq(key, v) for v in values])
        by_kind: dict[str, list] = {}
        others = []
        for v in values:
            if _scalar(v):
                by_kind.setdefault(kind_of(v), []).append(v)
            else:
                others.append(v)
        ref = self.ref(key)
        parts = [in_scalars(self, ref, kind, vals) for kind, vals in by_kind.items()]
        return self.any_of(parts + [self.eq(key, v) for v in others])

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
            any_of = self.is_in(key, list(arg))
            return any_of if op == "$in" else d.not_(any_of)
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
    start documents, in the given dialect (SQLite by default). A query nested too deep
    for one clause is :class:`InvalidQuery` here; :func:`compile_queries` answers it."""
    c = _Compiler(dialect, hoist=10**9)
    sql = c.compile(query)
    return sql, c.params


def compile_queries(queries: list[Mapping], dialect: Any = None, *,
                    hoist: int = HOIST_LEVEL) -> tuple[str, str, list[Any]]:
    """``(with_clause, where_clause, params)`` for all of ``queries`` (ANDed).

    ``with_clause`` is empty or ``"WITH ... "`` (the parts of deeply nested queries),
    to be put before the SELECT; ``params`` are in SQL-text order (WITH first).
    """
    c = _Compiler(dialect, hoist=hoist)
    where = c.emit(_join("and", [c.tree(q) for q in queries]), 0)
    if not c.ctes:
        return "", where, c.params
    params = [p for _, _, ps in c.ctes for p in ps] + c.params
    with_sql = "WITH " + ", ".join(f"{name} AS ({body})" for name, body, _ in c.ctes) + " "
    return with_sql, where, params


# the helpers moved to databroker_lite.queries; this import path keeps working
from .queries import ScanID, ScanIDRange, TimeRange  # noqa: E402,F401
