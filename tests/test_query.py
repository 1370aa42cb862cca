"""Searching catalogs: MongoDB-style queries, helpers, bad queries, SQL injection."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import event_model
import numpy as np
import pytest

import databroker_lite
from databroker_lite import InvalidQuery, RunNotFound, ScanID, ScanIDRange, TimeRange

T0 = 1_600_000_000.0  # 2020-09-13 12:26:40 UTC
HOUR, DAY = 3600.0, 86400.0

# name -> (start time, metadata)
RUNS = {
    "r1": (T0, dict(scan_id=1, plan_name="count", detectors=["det"], operator="alice", energy=8.0,
                    sample={"name": "Cu foil", "temp": 300})),
    "r2": (T0 + HOUR, dict(scan_id=2, plan_name="scan", detectors=["det", "I0"], operator="bob",
                           energy=7.1, sample={"name": "Fe foil", "temp": 77})),
    "r3": (T0 + DAY, dict(scan_id=3, plan_name="rel_scan", detectors=["I0"], energy=9,
                          sample={"name": "cu powder"})),
    "r4": (T0 + 2 * DAY, dict(scan_id=4, plan_name="count", detectors=["det"], operator=None,
                              notes="it's \"odd\"; -- ok", energy=12.5)),
}


def _add(cat: databroker_lite.Catalog, t: float, md: dict) -> str:
    bundle = event_model.compose_run(time=t, metadata=md)
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(
        name="primary", data_keys={"x": {"source": "sim", "dtype": "number", "shape": []}}, time=t)
    cat.insert("descriptor", desc.descriptor_doc)
    cat.insert("event", desc.compose_event(data={"x": 1.0}, timestamps={"x": t}, seq_num=1, time=t))
    cat.insert("stop", bundle.compose_stop(time=t + 1))
    return bundle.start_doc["uid"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> tuple[databroker_lite.Catalog, dict[str, str]]:
    cat = databroker_lite.open_catalog(tmp_path_factory.mktemp("query") / "cat")
    uids = {name: _add(cat, t, md) for name, (t, md) in RUNS.items()}
    return cat, uids


def names(result: databroker_lite.Catalog, uids: dict[str, str]) -> list[str]:
    """The short names of the runs in a search result, in catalog order."""
    by_uid = {u: n for n, u in uids.items()}
    return [by_uid[u] for u in result]


@pytest.mark.parametrize("query, expected", [
    ({}, ["r1", "r2", "r3", "r4"]),
    ({"plan_name": "count"}, ["r1", "r4"]),
    ({"operator": "alice"}, ["r1"]),
    ({"energy": 7.1}, ["r2"]),
    ({"energy": 9}, ["r3"]),
    ({"energy": 9.0}, ["r3"]),  # int and float compare as numbers
    ({"scan_id": 3}, ["r3"]),
    ({"scan_id": np.int64(3)}, ["r3"]),
    ({"sample.name": "Cu foil"}, ["r1"]),
    ({"sample.temp": 77}, ["r2"]),
    ({"detectors": "det"}, ["r1", "r2", "r4"]),  # equality on an array means "contains"
    ({"detectors": "I0"}, ["r2", "r3"]),
    ({"detectors": ["det", "I0"]}, ["r2"]),  # a whole array matches exactly
    ({"operator": None}, ["r3", "r4"]),  # null or missing
    ({"plan_name": "count", "operator": "alice"}, ["r1"]),  # keys are ANDed
    ({"sample.name": "cu foil"}, []),  # case matters
    ({"nope": 1}, []),
    ({"energy": "8.0"}, []),  # a string never equals a number
])
def test_equality(catalog, query, expected):
    cat, uids = catalog
    assert names(cat.search(query), uids) == expected


@pytest.mark.parametrize("query, expected", [
    ({"operator": {"$in": ["alice", "bob"]}}, ["r1", "r2"]),
    ({"scan_id": {"$in": [2, 4, 99]}}, ["r2", "r4"]),
    ({"detectors": {"$in": ["I0"]}}, ["r2", "r3"]),
    ({"sample.name": {"$in": ["Fe foil", "cu powder"]}}, ["r2", "r3"]),
    ({"scan_id": {"$in": []}}, []),
    ({"plan_name": {"$nin": ["count"]}}, ["r2", "r3"]),
    ({"operator": {"$nin": ["alice"]}}, ["r2", "r3", "r4"]),  # a missing key is "not in"
    ({"detectors": {"$nin": ["I0"]}}, ["r1", "r4"]),
    ({"energy": {"$gt": 8}}, ["r3", "r4"]),
    ({"energy": {"$gte": 8}}, ["r1", "r3", "r4"]),
    ({"energy": {"$lt": 8}}, ["r2"]),
    ({"energy": {"$lte": 8.0}}, ["r1", "r2"]),
    ({"energy": {"$gt": 7.5, "$lt": 10}}, ["r1", "r3"]),
    ({"sample.temp": {"$lt": 100}}, ["r2"]),
    ({"scan_id": {"$gte": 2, "$lte": 3}}, ["r2", "r3"]),
    ({"plan_name": {"$gt": "count"}}, ["r2", "r3"]),  # strings compare as strings
    ({"plan_name": {"$ne": "count"}}, ["r2", "r3"]),
    ({"operator": {"$ne": "alice"}}, ["r2", "r3", "r4"]),  # missing key is "not equal"
    ({"sample.name": {"$ne": "Cu foil"}}, ["r2", "r3", "r4"]),
    ({"detectors": {"$ne": "det"}}, ["r3"]),
    ({"operator": {"$exists": True}}, ["r1", "r2", "r4"]),  # present, even if null
    ({"operator": {"$exists": False}}, ["r3"]),
    ({"sample.temp": {"$exists": True}}, ["r1", "r2"]),
    ({"sample": {"$exists": False}}, ["r4"]),
    ({"sample.name": {"$regex": "^Cu"}}, ["r1"]),
    ({"sample.name": {"$regex": "^cu", "$options": "i"}}, ["r1", "r3"]),
    ({"sample.name": {"$regex": re.compile("foil$")}}, ["r1", "r2"]),
    ({"plan_name": {"$regex": "scan"}}, ["r2", "r3"]),  # re.search: anywhere in the string
    ({"energy": {"$regex": "8"}}, []),  # only strings match a regex
    ({"$or": [{"operator": "alice"}, {"scan_id": 3}]}, ["r1", "r3"]),
    ({"$and": [{"detectors": "det"}, {"energy": {"$gt": 8}}]}, ["r4"]),
    ({"$nor": [{"operator": "alice"}]}, ["r2", "r3", "r4"]),
    ({"energy": {"$not": {"$gt": 8}}}, ["r1", "r2"]),
    ({"operator": {"$not": {"$regex": "^a"}}}, ["r2", "r3", "r4"]),
])
def test_operators(catalog, query, expected):
    cat, uids = catalog
    assert names(cat.search(query), uids) == expected


def test_time_range_with_iso_strings_and_epoch_floats(catalog):
    cat, uids = catalog

    def local_iso(t: float) -> str:
        return datetime.fromtimestamp(t).isoformat()

    assert names(cat.search(TimeRange(since=local_iso(T0 + 1))), uids) == ["r2", "r3", "r4"]
    assert names(cat.search(TimeRange(until=local_iso(T0 + 1))), uids) == ["r1"]
    assert names(cat.search(TimeRange(since=local_iso(T0 + HOUR), until=local_iso(T0 + DAY))),
                 uids) == ["r2"]  # since inclusive, until exclusive
    assert names(cat.search(TimeRange(since=T0 + 10, until=T0 + 2 * DAY)), uids) == ["r2", "r3"]
    assert names(cat.search(TimeRange(since=int(T0))), uids) == ["r1", "r2", "r3", "r4"]
    # an explicit offset or a timezone name pins the instant
    assert names(cat.search(TimeRange(since="2020-09-13T13:26:40+00:00")), uids) == ["r2", "r3", "r4"]
    assert names(cat.search(TimeRange(until="2020-09-14 12:26:40", timezone="UTC")), uids) == ["r1", "r2"]
    assert names(cat.search(TimeRange(since=datetime(2020, 9, 15, tzinfo=timezone.utc))), uids) == ["r4"]
    assert names(cat.search(TimeRange(since="2020-09-13T13:26:40Z")), uids) == ["r2", "r3", "r4"]
    assert names(cat.search(TimeRange(since=np.float64(T0 + 1))), uids) == ["r2", "r3", "r4"]
    local_day = datetime.fromtimestamp(T0 + DAY).date()  # the local calendar day of r3
    assert "r3" in names(cat.search(TimeRange(since=local_day)), uids)
    assert names(cat.search(TimeRange(since=local_day)), uids)[-1] == "r4"


def test_time_range_errors():
    with pytest.raises(InvalidQuery, match="ISO"):
        TimeRange(since="yesterday-ish")
    with pytest.raises(InvalidQuery, match="after"):
        TimeRange(since=T0 + 10, until=T0)
    with pytest.raises(InvalidQuery):
        TimeRange(since=True)
    with pytest.raises(InvalidQuery):
        TimeRange(until=[T0])


def test_scan_id_helpers(catalog):
    cat, uids = catalog
    assert names(cat.search(ScanID(2, 4)), uids) == ["r2", "r4"]
    assert names(cat.search(ScanID(3)), uids) == ["r3"]
    assert names(cat.search(ScanIDRange(2, 4)), uids) == ["r2", "r3"]  # stop exclusive
    assert names(cat.search(ScanIDRange(10, 20)), uids) == []


def test_chained_search_and_lookups(catalog):
    cat, uids = catalog
    counts = cat.search({"plan_name": {"$in": ["count", "scan"]}})
    assert names(counts, uids) == ["r1", "r2", "r4"]
    both = counts.search({"detectors": "det"}).search(TimeRange(since=T0 + 1))
    assert names(both, uids) == ["r2", "r4"]
    assert len(both) == 2
    assert both[-1].uid == uids["r4"]
    assert both[-2].uid == uids["r2"]
    assert both[2].uid == uids["r2"]
    assert both[uids["r4"][:10]].uid == uids["r4"]
    with pytest.raises(RunNotFound):
        both[1]  # scan_id 1 exists in the catalog but not in this result
    with pytest.raises(RunNotFound):
        both[-3]
    assert uids["r1"] not in both and uids["r2"] in both
    assert [u for u, _ in both.items()] == [uids["r2"], uids["r4"]]
    assert len(cat) == 4  # the parent is untouched


@pytest.mark.parametrize("query", [
    {"energy": {"$foo": 1}},
    {"$where": "1 == 1"},
    {"sample.name": {"$regex": "(unclosed"}},
    {"sample.name": {"$regex": 5}},
    {"scan_id": {"$in": 3}},
    {"scan_id": {"$gt": None}},
    {"scan_id": {"$gt": [1, 2]}},
    {"": 1},
    {"a..b": 1},
    {"sample": {"$exists": True, "name": "x"}},
    {"$or": "not a list"},
])
def test_bad_queries_raise_invalid_query(catalog, query):
    cat, _ = catalog
    with pytest.raises(InvalidQuery):
        cat.search(query)


def test_invalid_query_is_a_value_error_and_names_the_problem(catalog):
    cat, _ = catalog
    with pytest.raises(ValueError, match=r"\$foo"):
        cat.search({"energy": {"$foo": 1}})
    with pytest.raises(InvalidQuery, match="not a valid regular expression"):
        cat.search({"sample.name": {"$regex": "[a-"}})
    with pytest.raises(InvalidQuery, match="a query is a dict, got str"):
        cat.search("plan_name = 'count'")


INJECTIONS = [
    "') OR 1=1 --",
    "\") OR 1=1 --",
    "x' OR '1'='1",
    "count'; DROP TABLE runs; --",
    "1; DELETE FROM runs",
    "$.\"plan_name\"",
    "%",
    "*",
    "a\"]) OR 1=1 --",
]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_sql_injection_in_values_matches_nothing(catalog, evil):
    cat, uids = catalog
    for query in ({"plan_name": evil}, {"sample.name": evil}, {"detectors": evil},
                  {"operator": {"$in": [evil]}}, {"scan_id": evil}, {"uid": evil},
                  {"sample.name": {"$gt": evil, "$lt": evil}}):
        assert list(cat.search(query)) == []
    with pytest.raises(RunNotFound):
        cat[evil]
    assert evil not in cat
    assert len(cat) == 4


KEY_INJECTIONS = [e for e in INJECTIONS if not e.startswith("$")] + [
    "sample.name\") OR 1=1 --", "plan_name; --", "plan_name') OR 1=1 --"]


@pytest.mark.parametrize("evil", KEY_INJECTIONS)
def test_sql_injection_in_keys_matches_nothing(catalog, evil):
    cat, uids = catalog
    assert list(cat.search({evil: "count"})) == []
    assert list(cat.search({evil: {"$exists": True}})) == []
    assert list(cat.search({f"sample.{evil}": "Cu foil"})) == []
    assert names(cat.search({evil: {"$exists": False}}), uids) == ["r1", "r2", "r3", "r4"]
    assert len(cat) == 4


def test_keys_starting_with_dollar_are_operators(catalog):
    cat, _ = catalog
    with pytest.raises(InvalidQuery, match="unknown top-level operator"):
        cat.search({'$."plan_name"': "count"})


def test_quotes_in_values_are_matched_literally(catalog):
    cat, uids = catalog
    assert names(cat.search({"notes": "it's \"odd\"; -- ok"}), uids) == ["r4"]
    assert names(cat.search({"notes": {"$regex": "'s \"odd\"; --"}}), uids) == ["r4"]


def test_index_still_works_after_injection_attempts(catalog):
    cat, uids = catalog
    for evil in KEY_INJECTIONS:
        assert list(cat.search({evil: evil})) == []
        cat.search({"plan_name": {"$regex": re.escape(evil)}})
    assert len(cat) == 4
    assert list(cat) == list(uids.values())
    assert cat[-1].uid == uids["r4"]
    assert names(cat.search({"plan_name": "count"}), uids) == ["r1", "r4"]
    fresh = databroker_lite.open_catalog(cat.directory, mode="r")
    assert len(fresh) == 4


# --- databroker_lite.queries: databroker 2.0.2's query classes --------------------

from databroker_lite import queries as Q  # noqa: E402


@pytest.mark.parametrize("query, expected", [
    (Q.Key("plan_name") == "count", ["r1", "r4"]),
    (Q.Key("plan_name") != "count", ["r2", "r3"]),
    (Q.Key("energy") > 8, ["r3", "r4"]),
    (Q.Key("energy") >= 8, ["r1", "r3", "r4"]),
    (Q.Key("energy") < 8, ["r2"]),
    (Q.Key("energy") <= 8, ["r1", "r2"]),
    (Q.Key("sample.name").in_(["Fe foil", "cu powder"]), ["r2", "r3"]),
    (Q.Key("operator").not_in(["alice"]), ["r2", "r3", "r4"]),
    (Q.Key("start.scan_id") == 3, ["r3"]),  # databroker 2 clients spell keys "start.x"
    (Q.Eq("sample.temp", 77), ["r2"]),
    (Q.Eq("detectors", ["det", "I0"]), ["r2"]),
    (Q.NotEq("detectors", "det"), ["r3"]),
    (Q.Comparison("gt", "scan_id", 2), ["r3", "r4"]),
    (Q.Comparison(Q.Operator.le, "scan_id", 2), ["r1", "r2"]),
    (Q.Contains("detectors", "I0"), ["r2", "r3"]),
    (Q.In("scan_id", (1, 4)), ["r1", "r4"]),
    (Q.NotIn("scan_id", [1, 4]), ["r2", "r3"]),
    (Q.Regex("sample.name", "^cu"), ["r3"]),
    (Q.Regex("sample.name", "^cu", case_sensitive=False), ["r1", "r3"]),
    (Q.Like("sample.name", "%foil"), ["r1", "r2"]),
    (Q.Like("sample.name", "C_ foil"), ["r1"]),
    (Q.Like("notes", "it's \"odd\"; -- ok"), ["r4"]),  # LIKE's other characters are literal
    (Q.KeyPresent("sample.temp"), ["r1", "r2"]),
    (Q.KeyPresent("sample", exists=False), ["r4"]),
    (Q.RawMongo({"plan_name": {"$in": ["scan", "rel_scan"]}}), ["r2", "r3"]),
    (Q.ScanID(2, 4), ["r2", "r4"]),
    (Q.ScanID(2, duplicates="all"), ["r2"]),
    (Q.ScanIDRange(2, 4), ["r2", "r3"]),
    (Q.TimeRange(since=T0 + 10, until=T0 + 2 * DAY), ["r2", "r3"]),
    (Q.TimeRange(since="2020", timezone="UTC"), ["r1", "r2", "r3", "r4"]),
    (Q.TimeRange(until="2020-09", timezone="UTC"), []),
    (Q.TimeRange(since="2020-09-14 12", timezone="UTC"), ["r3", "r4"]),
])
def test_databroker_query_classes_search_a_local_catalog(catalog, query, expected):
    cat, uids = catalog
    assert names(cat.search(query), uids) == expected


def test_partial_uid_query(catalog):
    cat, uids = catalog
    assert names(cat.search(Q.PartialUID(uids["r2"][:6])), uids) == ["r2"]
    assert names(cat.search(Q.PartialUID(uids["r1"][:6], uids["r3"][:8])), uids) == ["r1", "r3"]
    assert names(cat.search(Q.PartialUID(".*")), uids) == []  # a prefix, never a pattern
    with pytest.raises(InvalidQuery):
        Q.PartialUID("")


def test_query_objects_are_the_mongo_dicts_they_stand_for():
    assert dict(Q.Key("a.b") == 1) == {"a.b": {"$eq": 1}}
    assert dict(Q.Comparison("ge", "x", 3)) == {"x": {"$gte": 3}}
    assert dict(Q.Regex("s", "^a", case_sensitive=False)) == {"s": {"$regex": "^a", "$options": "i"}}
    assert dict(Q.FullText("Cu foil")) == {"$text": {"$search": "Cu foil"}}
    assert dict(Q.ScanID(5, 6)) == {"scan_id": {"$in": [5, 6]}}
    assert dict(Q.TimeRange()) == {}
    tr = Q.TimeRange(since="2021-12-06", until="2021-12-07", timezone="UTC")
    assert (tr.since, tr.until, tr.timezone) == (1638748800.0, 1638835200.0, "UTC")
    assert dict(tr) == {"time": {"$gte": 1638748800.0, "$lt": 1638835200.0}}
    assert repr(Q.Eq("a", 1)) == "Eq(key='a', value=1)"
    assert Q.ScanIDRange(1, 3).duplicates is Q.Duplicates.latest
    assert Q.Key("x").in_([1]).value == [1]


@pytest.mark.parametrize("make, match", [
    (lambda: Q.Comparison("bigger", "x", 1), "bigger"),
    (lambda: Q.ScanID("five"), "scan_id"),
    (lambda: Q.ScanID(1, duplicates="some"), "duplicates"),
    (lambda: Q.In("x", "abc"), "list"),
    (lambda: Q.Regex("x", 5), "string"),
    (lambda: Q.TimeRange(since="2021", timezone="Mars/Olympus"), "time zone"),
    (lambda: Q.TimeRange(since="2022", until="2021"), "after"),
    (lambda: Q.Key(""), "key"),
    (lambda: Q.RawMongo("plan_name"), "dict"),
])
def test_bad_query_arguments_are_invalid_query(make, match):
    with pytest.raises(InvalidQuery, match=match):
        make()
    assert issubclass(Q.QueryValueError, ValueError)


def test_same_names_and_signatures_as_databroker_2_queries():
    dbq = pytest.importorskip("databroker.queries")
    import inspect
    for name in ("TimeRange", "ScanID", "ScanIDRange", "PartialUID", "Key", "Eq", "NotEq",
                 "Comparison", "Contains", "In", "NotIn", "Regex", "FullText", "Operator",
                 "QueryValueError"):
        theirs, ours = getattr(dbq, name), getattr(Q, name)
        if inspect.isclass(theirs) and issubclass(theirs, Exception) or name == "Operator":
            continue
        want = {p.name: p.default for p in inspect.signature(theirs).parameters.values()}
        got = {p.name: p.default for p in inspect.signature(ours).parameters.values()}
        assert want == got, name
    from tiled import queries as tq
    for name in ("Like", "KeyPresent"):
        assert (list(inspect.signature(getattr(tq, name)).parameters)
                == list(inspect.signature(getattr(Q, name)).parameters))


def test_tiled_and_databroker_query_objects_search_a_local_catalog(catalog):
    dbq = pytest.importorskip("databroker.queries")
    cat, uids = catalog
    assert names(cat.search(dbq.Key("plan_name") == "count"), uids) == ["r1", "r4"]
    assert names(cat.search(dbq.Key("energy") > 8), uids) == ["r3", "r4"]
    assert names(cat.search(dbq.In("scan_id", [1, 2])), uids) == ["r1", "r2"]
    assert names(cat.search(dbq.Regex("sample.name", "^cu", case_sensitive=False)), uids) == ["r1", "r3"]
    assert names(cat.search(dbq.ScanID(3)), uids) == ["r3"]
    assert names(cat.search(dbq.ScanIDRange(2, 4)), uids) == ["r2", "r3"]
    assert names(cat.search(dbq.PartialUID(uids["r4"][:7])), uids) == ["r4"]
    assert names(cat.search(dbq.TimeRange(since=T0 + 10, until=T0 + 2 * DAY)), uids) == ["r2", "r3"]
    from tiled.queries import KeyPresent, Like, SpecsQuery
    assert names(cat.search(KeyPresent("sample.temp")), uids) == ["r1", "r2"]
    assert names(cat.search(Like("sample.name", "%foil")), uids) == ["r1", "r2"]
    with pytest.raises(InvalidQuery, match="SpecsQuery"):
        cat.search(SpecsQuery(["x"]))


@pytest.mark.parametrize("query, expected", [
    ({"scan_id": 10**30}, []),
    ({"scan_id": {"$gt": -(10**400)}}, ["r1", "r2", "r3", "r4"]),
    ({"energy": {"$in": [2**70, 8.0]}}, ["r1"]),
    ({"scan_id": float("nan")}, []),
    ({"scan_id": {"$lt": float("inf")}}, ["r1", "r2", "r3", "r4"]),
])
def test_huge_and_odd_numbers_in_queries_answer(catalog, query, expected):
    cat, uids = catalog
    assert names(cat.search(query), uids) == expected


# --- big and deep queries --------------------------------------------------------

@pytest.fixture(scope="module")
def many(tmp_path_factory) -> tuple[databroker_lite.Catalog, list[str]]:
    """40 runs: scan_id i, plan_name count/scan alternating, sample.name "s<i>"."""
    cat = databroker_lite.open_catalog(tmp_path_factory.mktemp("many") / "cat")
    uids = [_add(cat, T0 + i, dict(scan_id=i, plan_name=("count", "scan")[i % 2],
                                    sample={"name": f"s{i}"}, tags=[f"t{i}", "all"]))
            for i in range(40)]
    return cat, uids


def test_in_with_a_thousand_values(many):
    cat, uids = many
    fake = [f"00000000-0000-4000-8000-{i:012d}" for i in range(996)]
    wanted = [uids[3], uids[17], uids[20], uids[39]]
    assert list(cat.search({"uid": {"$in": fake + wanted}})) == wanted
    assert len(cat.search({"uid": {"$nin": fake + wanted}})) == 36
    assert list(cat.search({"scan_id": {"$in": list(range(-1000, 0)) + [5, 6]}})) == uids[5:7]
    assert list(cat.search({"sample.name": {"$in": [f"x{i}" for i in range(1000)] + ["s7"]}})) == [uids[7]]
    assert list(cat.search({"tags": {"$in": [f"y{i}" for i in range(1000)] + ["t8", "t9"]}})) == uids[8:10]
    mixed = {"scan_id": {"$in": [str(i) for i in range(1000)] + [True, None, 2.0, [1]]}}
    assert list(cat.search(mixed)) == [uids[2]]  # "2" is not 2, True is not 1
    assert cat.search({"uid": {"$in": fake + wanted}})[-1].uid == uids[39]


def test_or_of_a_thousand_branches(many):
    cat, uids = many
    same_key = {"$or": [{"uid": f"00000000-0000-4000-8000-{i:012d}"} for i in range(998)]
                + [{"uid": uids[1]}, {"uid": uids[2]}]}
    assert list(cat.search(same_key)) == uids[1:3]
    mixed = {"$or": [{"scan_id": i, "plan_name": "count"} for i in range(1000)]}
    assert list(cat.search(mixed)) == uids[0:40:2]
    ranges = {"$or": [{"scan_id": {"$gte": i, "$lt": i + 1}} for i in range(30, 1030)]}
    assert list(cat.search(ranges)) == uids[30:]
    assert len(cat.search({"$and": [{"scan_id": {"$ne": i}} for i in range(1000)]})) == 0
    assert len(cat.search({"$nor": [{"scan_id": i} for i in range(1000)]})) == 0


def _nest(op: str, depth: int, leaf: dict) -> dict:
    q = leaf
    for _ in range(depth):
        q = {op: [q, {"scan_id": {"$exists": True}}]}
    return q


def test_deeply_nested_queries_answer(many):
    cat, uids = many
    leaf = {"sample.name": "s4"}
    assert list(cat.search(_nest("$and", 50, leaf))) == [uids[4]]
    assert len(cat.search(_nest("$or", 50, leaf))) == 40
    alt = leaf
    for i in range(50):  # and/or alternating: nothing to flatten
        alt = {("$and", "$or")[i % 2]: [alt, {"plan_name": ("count", "nope")[i % 2]}]}
    assert list(cat.search(alt)) == [uids[4]]
    notnot = {"$gte": 4}
    for _ in range(50):  # an even number of $not
        notnot = {"$not": notnot}
    assert list(cat.search({"scan_id": {"$lt": 6, **notnot}})) == uids[4:6]
    nor = {"scan_id": 9}
    for _ in range(51):
        nor = {"$nor": [nor]}
    assert len(cat.search(nor)) == 39
    nested_dict: dict = {"s": 1}
    for i in range(60):
        nested_dict = {f"k{i}": nested_dict}
    assert len(cat.search(nested_dict)) == 0


def test_a_query_too_deep_to_mean_anything_is_invalid(many):
    cat, _ = many
    deep: dict = {"scan_id": 1}
    for _ in range(100_000):
        deep = {"$and": [deep]}
    with pytest.raises(InvalidQuery, match="nested more than"):
        cat.search(deep)


@pytest.mark.parametrize("query, name", [
    ({"tags": {"$elemMatch": {"$eq": "all"}}}, "$elemMatch"),
    ({"tags": {"$all": ["all"]}}, "$all"),
    ({"$where": "1"}, "$where"),
    ({"$expr": {"$eq": [1, 1]}}, "$expr"),
    ({"scan_id": {"$type": "int"}}, "$type"),
    ({"sample.name": {"$options": "i"}}, "$options"),
    ({"$text": {"$search": "x", "$foo": 1}}, "$foo"),
    ({"$text": "x"}, "$text"),
    ({"$and": [{"scan_id": 1}, {"x": {"$size": 2}}]}, "$size"),
    ({"$or": [{"scan_id": 1}, {"$comment": "x"}]}, "$comment"),
    ({"scan_id": {"$not": 5}}, "$not"),
])
def test_unknown_operators_are_named_never_ignored(many, query, name):
    cat, _ = many
    with pytest.raises(InvalidQuery, match=re.escape(name)):
        cat.search(query)


# --- the stop document and full text -------------------------------------------

@pytest.fixture(scope="module")
def stops(tmp_path_factory) -> tuple[databroker_lite.Catalog, list[str]]:
    cat = databroker_lite.open_catalog(tmp_path_factory.mktemp("stops") / "cat")
    uids = []
    for i, (status, reason) in enumerate([("success", ""), ("abort", "user pressed Ctrl-C"),
                                          ("fail", "motor stalled"), ("success", "")]):
        b = event_model.compose_run(time=T0 + i, metadata={
            "scan_id": i, "sample": {"name": ["Cu foil", "Fe foil", "copper wire", "Ni"][i]},
            "purpose": ["align", "measure", "measure", "dark current"][i]})
        cat.insert("start", b.start_doc)
        cat.insert("stop", b.compose_stop(exit_status=status, reason=reason, time=T0 + i + 1))
        uids.append(b.start_doc["uid"])
    return cat, uids


def test_stop_document_keys_search_the_stop_document(stops):
    cat, uids = stops
    assert list(cat.search({"stop.exit_status": "success"})) == [uids[0], uids[3]]
    assert list(cat.search({"stop.exit_status": {"$ne": "success"}})) == uids[1:3]
    assert list(cat.search({"stop.exit_status": {"$in": ["abort", "fail"]}})) == uids[1:3]
    assert list(cat.search({"stop.reason": {"$regex": "stall"}})) == [uids[2]]
    assert list(cat.search({"stop.time": {"$gte": T0 + 3}})) == uids[2:]
    assert list(cat.search(Q.Key("stop.exit_status") == "abort")) == [uids[1]]
    assert list(cat.search({"start.scan_id": 2, "stop.exit_status": "fail"})) == [uids[2]]
    assert list(cat.search({"exit_status": "success"})) == []  # a start key: no start has it
    assert cat.search({"stop.exit_status": "success"})[-1].uid == uids[3]


@pytest.mark.parametrize("text, expected", [
    ("foil", [0, 1]),
    ("FOIL", [0, 1]),  # any case
    ("Fe foil", [1]),  # every word
    ("foil Fe", [1]),
    ("copper", [2]),
    ("measure", [1, 2]),
    ("stalled", [2]),  # the stop document too
    ("success", [0, 3]),
    ("dark-current", [3]),  # punctuation splits words, as it does in the documents
    ("fo", []),  # whole words only
    ('"foil" OR NOT AND * ( ) :', []),  # FTS5 syntax in the text is just text
    ("nothing-here", []),
])
def test_full_text_search(stops, text, expected):
    cat, uids = stops
    assert list(cat.search(Q.FullText(text))) == [uids[i] for i in expected]
    assert list(cat.search({"$text": {"$search": text}})) == [uids[i] for i in expected]


def test_full_text_search_needs_a_word(stops):
    cat, _ = stops
    with pytest.raises(InvalidQuery, match="no word"):
        cat.search(Q.FullText("  ... "))
    with pytest.raises(InvalidQuery, match="case"):
        cat.search({"$text": {"$search": "x", "$caseSensitive": True}})


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[databroker_lite.Catalog, list[str]]:
    cat = databroker_lite.open_catalog(tmp_path_factory.mktemp("shapes") / "cat")
    mds = [{"a": 1, "flag": True, "vals": [1, 5], "big": 2**70},
           {"a": {"b": 1}, "flag": 1, "vals": 5, "big": 3},
           {"a": {"b": [1, 2]}, "flag": False, "vals": [[5]], "deep": {"x": [{"y": 1}]}},
           {"a": {"b": 3}, "temp": float("nan"), "limits": [float("-inf"), float("inf")]}]
    return cat, [_add(cat, T0 + i, md) for i, md in enumerate(mds)]


@pytest.mark.parametrize("query, expected", [
    ({"a.b": 1}, [1, 2]),  # a dot is nesting
    ({"a.b": 2}, [2]),
    ({"a": {"b": 1}}, [1, 2]),
    ({"flag": True}, [0]),  # True is not 1
    ({"flag": 1}, [1]),
    ({"flag": {"$in": [False, 7, 8, 9]}}, [2]),
    ({"vals": 5}, [0, 1]),  # the value, or an element of an array
    ({"vals": {"$gt": 3}}, [1]),  # comparisons look at the value itself
    ({"vals": {"$in": [5, 6, 7, 8]}}, [0, 1]),
    ({"deep.x.y": 1}, []),  # no reaching into documents inside arrays
    ({"big": 2**70}, [0]),
    ({"big": {"$gt": 10**20}}, [0]),
    ({"a.b": {"$exists": True}}, [1, 2, 3]),
    # a NaN or infinity in one start document fails no search of the others
    ({"temp": {"$exists": True}}, [3]),
    ({"limits": {"$exists": False}, "a": {"$exists": True}}, [0, 1, 2]),
    ({"a": {"b": 3}}, [3]),
    ({"temp": {"$gt": 0}}, []),
])
def test_value_shapes_match_as_documented(shapes, query, expected):
    cat, uids = shapes
    assert list(cat.search(query)) == [uids[i] for i in expected]
