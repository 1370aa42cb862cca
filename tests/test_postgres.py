"""The PostgreSQL index: a real server started by the test session (tests/conftest.py).

The search and index tests of tests/test_query.py and tests/test_index.py run again on
PostgreSQL in tests/test_postgres_query.py and tests/test_postgres_index.py, and the
catalog contract in tests/test_conformance.py; here is what only PostgreSQL has: several
catalogs in one database, hosts sharing it, the YAML entry, reindex, serve, and the
translation of $regex into PostgreSQL's syntax.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import event_model
import numpy as np
import pytest
from conftest import insert_all, make_run_docs, serving
from test_shared_storage import _hosts

import databroker_lite
from databroker_lite import backends, index_pg
from databroker_lite.dialects import python_to_posix_regex
from databroker_lite.errors import CatalogError, InvalidQuery

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["Cu foil", "cu powder", "Fe foil", "line one\nline two", "x.y", "a+b", "tab\there",
         "ünïcode ß", "", "abc123", "ABC", "foo bar baz", "end\n", "hex\x41B"]


def _add(cat, **md) -> str:
    b = event_model.compose_run(metadata=md)
    cat.insert("start", b.start_doc)
    cat.insert("stop", b.compose_stop())
    return b.start_doc["uid"]


# --- $regex: Python's syntax, PostgreSQL's engine ----------------------------------

@pytest.mark.parametrize("pattern, flags, expected", [
    ("^Cu", 0, "(?s)^Cu"),
    ("foil$", re.I, r"(?si)foil(?=\n?$)"),
    ("foil$", re.M, "(?w)foil$"),
    ("a.b", re.S, "(?s)a.b"),
    ("a.b", 0, r"(?s)a[^\n]b"),
    ("^line", re.M | re.S, "(?w)^line"),
    (r"\bfoil\b", 0, r"(?s)\yfoil\y"),
    (r"\Bo", 0, r"(?s)\Yo"),
    (r"[\b.]", 0, r"(?s)[\u0008.]"),
    (r"\x41B", 0, r"(?s)\u0041B"),
    (r"(?P<metal>Cu|Fe) foil (?P=metal)", 0, r"(?s)(Cu|Fe) foil \1"),
    (r"(a)(b)\2", 0, r"(?s)(a)(b)\2"),
    ("(?i)cu", 0, "(?si)cu"),
    (r"(?:ab)+(?=c)(?!d)(?<=e)(?<!f)", 0, r"(?s)(?:ab)+(?=c)(?!d)(?<=e)(?<!f)"),
    (r"[]a]\d{2,3}", re.X, r"(?sx)[]a]\d{2,3}"),
    ("a(?#comment)b", 0, "(?s)ab"),
])
def test_python_regex_becomes_posix_regex(pattern, flags, expected):
    assert python_to_posix_regex(pattern, flags) == expected


@pytest.mark.parametrize("pattern, what", [
    (r"(?>ab)c", "the group '(?>a'"),
    ("a++", "a possessive repeat"),
    (r"\0", "an octal escape or a back-reference past \\9"),
    (r"[\D]", r"\D inside [...]"),
    ("a(?i:b)", "the group '(?i:'"),
    (r"\N{BULLET}", r"the escape \N"),
])
def test_regex_without_a_postgresql_equivalent_is_refused(pattern, what):
    with pytest.raises(InvalidQuery, match=re.escape(f"{what} has no PostgreSQL equivalent")):
        python_to_posix_regex(pattern)


@pytest.fixture(scope="module")
def both(tmp_path_factory, postgres_url):
    """The same directory indexed by SQLite and by PostgreSQL."""
    directory = tmp_path_factory.mktemp("both") / "cat"
    lite = databroker_lite.open_catalog(directory, index="beside")
    for i, text in enumerate(TEXTS):
        _add(lite, scan_id=i, plan_name=("count", "scan")[i % 2], text=text, n=i * 1.5,
             tags=[text, "common"], nested={"deep": {"v": i}}, flag=bool(i % 3),
             mixed=[i, str(i), None])
    _add(lite, scan_id=2**40, text=None, big=2**70)
    pg = databroker_lite.open_catalog(directory, index=postgres_url)
    assert pg._index.kind == "postgresql" and lite._index.kind == "sqlite"
    return lite, pg


REGEXES = [("^cu", ""), ("^cu", "i"), ("foil$", ""), ("o.l", ""), (r"\bfoil\b", ""), (r"\d{3}$", ""),
           ("^line two", "m"), ("one.line", "s"), ("one.line", ""), (r"x\.y", ""), (r"a\+b", ""),
           (r"\s", ""), ("ß", ""), ("^$", ""), ("[A-C]{3}", ""), ("[^a-z ]", ""), (r"\x41B", ""),
           ("(?P<w>o)(?P=w)", ""), ("(?P<w>o)(?P=w)?", ""), ("(?i)abc", ""), ("b(?=a)", ""), ("(?<=hex)A", ""),
           ("d$", ""), ("o$", "m"), (".$", ""), ("^.*$", ""), ("^.*$", "s")]


@pytest.mark.parametrize("pattern, options", REGEXES)
def test_regex_finds_the_same_runs_on_both(both, pattern, options):
    lite, pg = both
    q = {"text": {"$regex": pattern, "$options": options}}
    try:
        expected = sorted(lite.search(q))
    except InvalidQuery as exc:  # refused (a back-reference): refused on PostgreSQL too
        with pytest.raises(InvalidQuery, match=re.escape(str(exc))):
            pg.search(q)
        return
    assert sorted(pg.search(q)) == expected
    assert sorted(pg.search({"tags": {"$regex": pattern, "$options": options}})) == \
        sorted(lite.search({"tags": {"$regex": pattern, "$options": options}}))


QUERIES = [
    {}, {"text": "Cu foil"}, {"tags": "common"}, {"tags": "Fe foil"}, {"n": 3}, {"n": 3.0},
    {"n": {"$gt": 4, "$lte": 12}}, {"text": {"$gte": "a", "$lt": "f"}}, {"text": {"$gt": "Z"}},
    {"nested.deep.v": 4}, {"nested": {"deep": {"v": 5}}}, {"nested.deep": {"v": 6}},
    {"flag": True}, {"flag": False}, {"flag": 1}, {"text": None}, {"text": {"$exists": False}},
    {"big": {"$exists": True}}, {"big": 2**70}, {"scan_id": 2**40}, {"scan_id": {"$gte": 10}},
    {"scan_id": {"$lt": "T"}}, {"scan_id": {"$in": [1, 2, 2**40, "1"]}}, {"mixed": "3"}, {"mixed": 3},
    {"mixed": None}, {"tags": ["Cu foil", "common"]}, {"tags": ["common", "Cu foil"]},
    {"text": {"$ne": "Cu foil"}}, {"text": {"$nin": ["Cu foil", "ABC"]}},
    {"$or": [{"n": 0}, {"text": "ABC"}]}, {"$nor": [{"plan_name": "count"}]},
    {"n": {"$not": {"$gt": 5}}}, {"plan_name": {"$regex": "^sc"}}, {"uid": {"$gt": "8"}},
    {"time": {"$gt": 0}}, {"stop.exit_status": "success"}, {"start.text": "ABC"},
    {"n": float("nan")}, {"n": {"$lt": float("inf")}}, {"n": {"$gt": float("inf")}},
    {"n": {"$gt": -(10**400)}}, {"text": "it's \"odd\"; --"}, {'we"ird': 1}, {"text": "a\x00b"},
    # $in of more than three values: one array parameter (json_each, = ANY) on each kind of key
    {"scan_id": {"$in": [1, 2, 3, 4, 2**40, "1", 7.0]}}, {"plan_name": {"$in": ["a", "b", "c", "scan"]}},
    {"text": {"$in": ["Cu foil", "ABC", "abc123", "ünïcode ß", "none", "a\x00b"]}},
    {"tags": {"$in": ["x", "y", "z", "Fe foil"]}}, {"n": {"$in": [0, 1.5, 3, 4.5, float("nan")]}},
    {"mixed": {"$in": ["1", 2, "3", 4, None]}}, {"flag": {"$in": [True, 5, 6, 7]}},
    {"nested.deep.v": {"$in": [1, 2, 3, 4, 5]}}, {"time": {"$in": [1.0, 2.0, 3.0, 4.0]}},
    {"text": {"$nin": ["Cu foil", "ABC", "abc123", "x.y"]}},
    {"uid": {"$in": ["a", "b", "c", "d"]}}, {"big": {"$in": [1, 2, 3, 2**70]}},
    {"text": {"$in": [*TEXTS[::2], *(f"v{i}" for i in range(40))]}},
    {"tags": {"$in": [*(f"v{i}" for i in range(40)), "Fe foil"]}},
    {"n": {"$in": [*range(100, 140), 3, 4.5]}}, {"mixed": {"$nin": [*map(str, range(40)), 5]}},
]


@pytest.mark.parametrize("query", QUERIES, ids=[json.dumps(q, default=str)[:60] for q in QUERIES])
def test_every_operator_finds_the_same_runs_on_both(both, query):
    lite, pg = both
    expected = list(lite.search(query))
    assert list(pg.search(query)) == expected
    assert len(pg.search(query)) == len(expected)
    assert [pg.search(query)[-k].metadata["start"]["uid"] for k in range(1, min(3, len(expected)) + 1)] == \
        expected[::-1][:3]


def test_lookups_agree_on_both(both):
    lite, pg = both
    for key in (0, 5, 2**40, -1, -3, list(lite)[4][:8]):
        assert pg[key].metadata["start"]["uid"] == lite[key].metadata["start"]["uid"]
    assert pg.summaries(list(lite)) == lite.summaries(list(lite))
    with pytest.raises(databroker_lite.RunNotFound, match="no run has scan_id 999"):
        pg[999]


# --- several catalogs, several hosts, one database ---------------------------------

def test_several_catalogs_share_one_database_apart(tmp_path, postgres_url):
    a = databroker_lite.open_catalog(tmp_path / "45id", index=postgres_url)
    b = databroker_lite.open_catalog(tmp_path / "46id", index=postgres_url)
    ua = [_add(a, scan_id=1, beamline="45id"), _add(a, scan_id=2, beamline="45id")]
    ub = _add(b, scan_id=1, beamline="46id")
    assert list(a) == ua and list(b) == [ub]
    assert a._index.schema != b._index.schema
    assert a[1].metadata["start"]["beamline"] == "45id" and b[1].metadata["start"]["beamline"] == "46id"
    assert len(b.search({"beamline": "45id"})) == 0
    a.reindex()
    assert list(b) == [ub] and list(a) == ua
    import psycopg
    with psycopg.connect(postgres_url) as conn:
        names = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dbl_%'")}
        assert {a._index.schema, b._index.schema} <= names
        meta = dict(conn.execute(f'SELECT key, value FROM "{a._index.schema}".meta').fetchall())
    assert meta["directory"] == str(tmp_path / "45id") and meta["catalog_key"] == str(tmp_path / "45id")


def test_a_catalog_key_names_the_catalog_whatever_the_mount_point(tmp_path, postgres_url):
    """Hosts mount the same storage at different paths; ?catalog= keeps one index."""
    (tmp_path / "gpfs").mkdir()
    os.symlink(tmp_path / "gpfs", tmp_path / "mnt")
    url = postgres_url + "&catalog=45id-2026"
    acq = databroker_lite.open_catalog(tmp_path / "gpfs" / "45id", index=url)
    ana = databroker_lite.open_catalog(str(tmp_path / "mnt" / "45id"), mode="r", index=url)
    assert acq._index.schema == ana._index.schema and acq._index.key == "45id-2026"
    uid = _add(acq, scan_id=11)
    assert ana[11].metadata["start"]["uid"] == uid and len(ana) == 1
    named = databroker_lite.open_catalog(tmp_path / "gpfs" / "45id", index=postgres_url, name="45id-2026")
    assert named._index.schema == acq._index.schema


def test_hosts_sharing_one_postgresql_index_see_every_run(tmp_path, postgres_url):
    directory, written, reports = _hosts(tmp_path, {backends.INDEX_ENV: postgres_url + "&catalog=hosts"})
    for host, rep in reports.items():
        assert rep["errors"] == [], f"{host}: " + "\n".join(rep["errors"])
        assert rep["kind"] == "postgresql" and set(rep["verified"]) == set(written["uids"])
    assert not os.path.exists(os.path.join(directory, ".databroker_lite", "index.sqlite"))


def test_values_jsonb_cannot_hold_are_stored_and_the_file_keeps_them(tmp_path, postgres_url):
    cat = databroker_lite.open_catalog(tmp_path / "cat", index=postgres_url)
    uid = _add(cat, scan_id=1, nan=float("nan"), inf=float("-inf"), nul="a\x00b", keep="yes",
               arr=np.arange(3))
    assert list(cat.search({"keep": "yes"})) == [uid]
    assert list(cat.search({"arr": 2})) == [uid]
    start = cat[uid].metadata["start"]  # from the run file: unchanged
    assert math.isnan(start["nan"]) and start["inf"] == -math.inf and start["nul"] == "a\x00b"
    assert cat._index.row(uid)["start"]["nan"] is None  # the index's copy: null


# --- configuration, command line, server -------------------------------------------

def test_yaml_entry_names_the_index_and_reindex_fills_it(tmp_path, postgres_url, monkeypatch):
    directory = tmp_path / "data" / "45id"
    lite = databroker_lite.open_catalog(directory)
    uids = [_add(lite, scan_id=i) for i in range(1, 4)]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "45id.yml").write_text(
        "sources:\n  45id:\n    driver: databroker_lite\n"
        f"    args: {{path: {directory}, index: '{postgres_url}'}}\n")
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(conf))
    cat = databroker_lite.catalog["45id"]
    assert cat._index.kind == "postgresql" and cat._index.key == "45id"
    assert list(cat) == uids
    proc = subprocess.run([sys.executable, "-m", "databroker_lite", "reindex", "45id"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("45id: 3 runs indexed (3 read, 0 unreadable)")
    (conf / "45id.yml").write_text(
        f"sources:\n  45id:\n    driver: databroker_lite\n    args: {{path: {directory}, index: 5}}\n")
    with pytest.raises(CatalogError, match="index must be 'auto', 'beside', 'host' or a postgresql"):
        databroker_lite.catalog["45id"]


def test_reindex_command_fills_a_postgresql_index_from_the_files(tmp_path, postgres_url):
    directory = tmp_path / "cat"
    lite = databroker_lite.open_catalog(directory)
    insert_all(lite, make_run_docs(3, metadata={"scan_id": 5, "plan_name": "count"}))
    _add(lite, scan_id=6)
    (directory / "junk.h5").write_bytes(b"not hdf5")
    url = postgres_url + "&catalog=cli"
    proc = subprocess.run([sys.executable, "-m", "databroker_lite", "reindex", str(directory),
                           "--index", url], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs indexed (2 read, 1 unreadable)" in proc.stdout and "junk.h5" in proc.stdout
    pg = databroker_lite.open_catalog(directory, mode="r", index=url)
    assert pg._index.count([]) == 2 and list(pg) == list(lite)
    assert set(pg.bad_files) == {"junk.h5"}


needs_server = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tiled", "fastapi", "uvicorn")),
    reason="tiled[server] is not installed (pip install 'databroker_lite[server]')")


@needs_server
def test_build_app_serves_several_catalogs_from_one_postgresql_index(tmp_path, postgres_url,
                                                                     monkeypatch):
    """``index=`` of the Python API (``serve --index`` calls it): each catalog, by directory
    or by name, has its own key in the one database, and a named one keeps its name."""
    from tiled.client import Context, from_context

    from databroker_lite.server import build_app
    local = {}
    for name, sid in (("a", 1), ("b", 2)):
        local[name] = databroker_lite.open_catalog(tmp_path / name)
        insert_all(local[name], make_run_docs(3, metadata={"scan_id": sid, "plan_name": "count"}))
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "conf"))
    databroker_lite.install_catalog(tmp_path / "b", "beamline-b")
    key = "0123456789abcdef"
    app = build_app([str(tmp_path / "a"), "beamline-b"], key, index=postgres_url)
    with Context.from_app(app, api_key=key) as ctx:
        client = from_context(ctx)
        assert sorted(client) == ["a", "beamline-b"]
        assert list(client["a"]) == list(local["a"])
        assert list(client["beamline-b"]) == list(local["b"])
    named = databroker_lite.open_catalog(tmp_path / "b", "r", index=postgres_url, name="beamline-b")
    assert named._index.key == "beamline-b" and named._index.count([]) == 1
    by_dir = databroker_lite.open_catalog(tmp_path / "a", "r", index=postgres_url)
    assert by_dir._index.key == str(tmp_path / "a") and by_dir._index.count([]) == 1


@needs_server
def test_serve_a_postgresql_indexed_catalog(tmp_path, postgres_url, monkeypatch):
    directory = tmp_path / "cat"
    local = databroker_lite.open_catalog(directory, index=postgres_url)
    insert_all(local, make_run_docs(4, metadata={"scan_id": 7, "plan_name": "count", "sample": "Cu"}))
    _add(local, scan_id=8, sample="Fe")
    monkeypatch.setenv(backends.INDEX_ENV, postgres_url)  # the server process's default
    key = "0123456789abcdef"
    with serving(tmp_path, key, str(directory)) as url:
        remote = databroker_lite.from_uri(url, api_key=key)
        assert list(remote) == list(local)
        assert remote[7].uid == local[7].metadata["start"]["uid"]
        assert list(remote.search({"sample": "Fe"})) == list(local.search({"sample": "Fe"}))
        np.testing.assert_array_equal(remote[7].primary.read()["x"].values,
                                      local[7].primary.read()["x"].values)
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log


@needs_server
@pytest.mark.parametrize("how", ["--index", "yaml"])
def test_a_stock_tiled_client_lists_and_searches_a_postgresql_indexed_catalog(
        tmp_path, postgres_url, monkeypatch, how):
    """``serve --index URL`` (or a catalog YAML naming its index): nothing but the
    PostgreSQL index answers (no SQLite index appears), and tiled's own client lists,
    looks up, searches and pages through the runs as the local catalog has them."""
    from tiled.client import from_uri
    from tiled.queries import Comparison, Eq, In, Key
    directory = tmp_path / "data" / "45id"
    url = postgres_url + "&catalog=45id"
    local = databroker_lite.open_catalog(directory, index=url)
    uids = [_add(local, scan_id=i, sample=("Cu", "Fe", "Au")[i % 3], plan_name=("count", "scan")[i % 2])
            for i in range(1, 13)]
    monkeypatch.delenv(backends.INDEX_ENV, raising=False)
    if how == "yaml":
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "45id.yml").write_text("sources:\n  45id:\n    driver: databroker_lite\n"
                                       f"    args: {{path: {directory}, index: '{url}'}}\n")
        monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(conf))
        args = ["45id"]
    else:
        args = [str(directory), "--index", url]
    key = "0123456789abcdef"
    with serving(tmp_path, key, *args) as server:
        client = from_uri(server, api_key=key)
        assert list(client) == uids and len(client) == 12
        assert client[uids[4]].metadata["start"]["scan_id"] == 5
        for query, expected in [
                (Key("sample") == "Fe", {"sample": "Fe"}),
                (Eq("plan_name", "scan"), {"plan_name": "scan"}),
                (In("sample", ["Cu", "Au", "Pt", "Zn"]), {"sample": {"$in": ["Cu", "Au"]}}),
                (Comparison("gt", "scan_id", 6), {"scan_id": {"$gt": 6}})]:
            found = client.search(query)
            assert list(found) == list(local.search(expected)) != []
            assert len(found) == len(local.search(expected))
        assert list(client.search(Key("sample") == "Fe").search(Key("scan_id") > 4)) == \
            list(local.search({"sample": "Fe", "scan_id": {"$gt": 4}}))
        assert [k for k, _ in client.items()][:3] == uids[:3]
    assert not (directory / ".databroker_lite" / "index.sqlite").exists()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


# --- errors a facility meets ---------------------------------------------------------

def test_an_unreachable_server_is_a_catalog_error_without_the_password(tmp_path):
    url = f"postgresql://beamline:s3cret@/nodb?host={tmp_path}&connect_timeout=2"
    with pytest.raises(CatalogError, match="cannot connect to the PostgreSQL index at "
                       r"postgresql://beamline:\*\*\*@/nodb") as info:
        databroker_lite.open_catalog(tmp_path / "cat", index=url)
    assert "s3cret" not in str(info.value)


def test_a_sqlite_catalog_never_imports_psycopg(tmp_path, postgres_url):
    """Choosing the index reads the URL without index_pg: SQLite users pay nothing for
    psycopg (~65 ms of imports); a PostgreSQL URL brings it in."""
    databroker_lite.open_catalog(tmp_path / "cat")
    code = """
import sys, databroker_lite
cat = databroker_lite.open_catalog(sys.argv[1], "r", index=sys.argv[2] or None)
print(len(cat), cat._index.kind, sorted(m for m in ("psycopg", "databroker_lite.index_pg")
                                        if m in sys.modules))
"""
    out = [subprocess.run([sys.executable, "-c", code, str(tmp_path / "cat"), index],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
           for index in ("", "beside", postgres_url + "&catalog=imports")]
    assert [p.returncode for p in out] == [0, 0, 0], [p.stderr for p in out]
    assert [p.stdout.strip() for p in out] == [
        "0 sqlite []", "0 sqlite []", "0 postgresql ['databroker_lite.index_pg', 'psycopg']"]


def test_postgresql_urls_are_read_without_index_pg():
    from databroker_lite import index_url
    assert index_url.is_postgres_url("postgresql://u@h/db")
    assert index_url.is_postgres_url(" postgres://u@h/db")
    assert not index_url.is_postgres_url("beside") and not index_url.is_postgres_url(None)
    assert index_url.split_url("postgresql://u@h/db?catalog=45id&sslmode=require") == (
        "postgresql://u@h/db?sslmode=require", "45id")
    assert index_url.catalog_key("postgresql://u@h/db?catalog=45id") == "45id"
    assert index_url.catalog_key("postgresql://u@h/db?catalog=") is None
    assert index_url.catalog_key("postgresql://u@h/db") is None
    assert index_url.catalog_key("host") is None
    assert index_url.safe_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_without_psycopg_the_message_says_what_to_install(tmp_path, monkeypatch, postgres_url):
    monkeypatch.setattr(index_pg, "psycopg", None)
    with pytest.raises(CatalogError, match=r"pip install 'databroker_lite\[postgres\]'"):
        databroker_lite.open_catalog(tmp_path / "cat", index=postgres_url)


def test_a_regex_postgresql_rejects_is_an_invalid_query(both):
    _, pg = both
    with pytest.raises(InvalidQuery, match="has no PostgreSQL equivalent"):
        pg.search({"text": {"$regex": "(?>a)"}})
    with pytest.raises(InvalidQuery, match="PostgreSQL cannot use this pattern"):
        list(pg.search({"text": {"$regex": "x{1,300}"}}))  # PostgreSQL's bound is 255


def test_dropping_the_schema_and_reindexing_gives_the_same_catalog(tmp_path, postgres_url):
    cat = databroker_lite.open_catalog(tmp_path / "cat", index=postgres_url)
    uids = [_add(cat, scan_id=i) for i in range(3)]
    cat._index.drop()
    again = databroker_lite.open_catalog(tmp_path / "cat", index=postgres_url)
    assert list(again) == uids  # a new schema, filled from the files
    assert again.reindex() == {"added": 3, "updated": 0, "removed": 0, "bad": 0}


def test_a_writer_outlives_its_database_and_the_index_catches_up(tmp_path):
    """The server stops mid-run: the run is written whole (IndexNotUpdated warns), look-ups
    say the index is unreachable, and once a server is back the files fill it."""
    from databroker_lite.pgtemp import TempPostgres
    server = TempPostgres()
    url = server.start()
    try:
        cat = databroker_lite.open_catalog(tmp_path / "cat", index=url)
        docs = make_run_docs(25, metadata={"scan_id": 9, "plan_name": "count"})
        insert_all(cat, docs[:5])
        server.stop()
        with pytest.warns(databroker_lite.IndexNotUpdated, match="is written to .* regardless"):
            insert_all(cat, docs[5:])
        with pytest.raises(CatalogError, match="PostgreSQL index"):
            cat[9]
    finally:
        server.stop()
    lite = databroker_lite.open_catalog(tmp_path / "cat", index="beside")
    run = lite[9]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.primary.read()["x"].shape == (25,)
    with TempPostgres() as again:
        back = databroker_lite.open_catalog(tmp_path / "cat", index=again.url)
        assert back[9].uid == run.uid and back[9].primary.read()["x"].shape == (25,)


def test_a_long_in_is_one_array_parameter_on_postgresql():
    """$in of many values compiles to ``= ANY(array)``: one parameter, however many values."""
    from databroker_lite.index_pg import POSTGRES
    from databroker_lite.query import compile_queries
    values = [f"p{i}" for i in range(1000)]
    for key in ("plan_name", "scan_id", "proposal_id"):
        _, where, params = compile_queries([{key: {"$in": values}}], POSTGRES)
        assert "= ANY(?::" in where and where.count("?") <= 6, where
        assert any(isinstance(p, list) and len(p) == 1000 for p in params)


# --- collation: non-ASCII and mixed-case text the same on both backends ---------------
WORDS = ["apple", "Apple", "APPLE", "äpfel", "Äpfel", "Zebra", "zebra", "école", "Ecole", "ecole",
         "ß", "ss", "SS", "日本", "😀", "a b", "A", "a", "İstanbul", "istanbul", "Ω", "ω", "ﬁ", "fi"]


@pytest.fixture(scope="module")
def words(tmp_path_factory, postgres_url):
    directory = tmp_path_factory.mktemp("words") / "cat"
    lite = databroker_lite.open_catalog(directory, index="beside")
    uid_of = {w: _add(lite, scan_id=i, word=w, plan_name=w, tags=[w.lower(), w.upper()])
              for i, w in enumerate(WORDS)}
    pg = databroker_lite.open_catalog(directory, index=postgres_url + "&catalog=words")
    return lite, pg, uid_of


@pytest.mark.parametrize("key", ["word", "plan_name"])
def test_text_orders_and_matches_by_code_point_on_both(words, key):
    """Comparisons order text by code point (no locale: 'Z' < 'a' < 'ä'), equality is
    exact (no case folding, no normalisation), on both backends alike."""
    lite, pg, uid_of = words
    for pivot in WORDS:
        for op, test in (("$gt", str.__gt__), ("$lte", str.__le__)):
            q = {key: {op: pivot}}
            expected = sorted(uid_of[w] for w in WORDS if test(w, pivot))
            assert sorted(lite.search(q)) == expected, q
            assert sorted(pg.search(q)) == expected, q
        assert list(pg.search({key: pivot})) == list(lite.search({key: pivot})) == [uid_of[pivot]]
    many = ["apple", "ÄPFEL", "ss", "ω", "ﬁ", "nothing"]
    assert sorted(pg.search({key: {"$in": many}})) == sorted(lite.search({key: {"$in": many}})) == \
        sorted(uid_of[w] for w in many if w in uid_of)
    for pattern in ("^[a-z]", "^[A-Z]", "pfel$", "^.$", "(?i)^apple$"):
        q = {key: {"$regex": pattern}}
        assert sorted(pg.search(q)) == sorted(lite.search(q)) == \
            sorted(uid_of[w] for w in WORDS if re.search(pattern, w)), q


def test_array_elements_match_exactly_on_both(words):
    lite, pg, uid_of = words
    for w in ("apple", "APPLE", "äpfel", "ÄPFEL", "ss", "SS", "ω", "Ω"):
        q = {"tags": w}
        assert sorted(pg.search(q)) == sorted(lite.search(q)) == \
            sorted(u for x, u in uid_of.items() if w in (x.lower(), x.upper())), q
