"""databroker 2.0.2's own client (bluesky-tiled-plugins' classes, selected by spec) against
our server, on a catalog of RunEngine runs: what a databroker 2 user's notebook does."""
from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

import event_model
import numpy as np
import pytest
from conftest import normalise

import databroker_lite

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tiled", "fastapi", "databroker",
                                                      "bluesky_tiled_plugins")),
    reason="needs tiled[server] and databroker[client]==2.0.2 (pip install '.[test,server]')")
pytestmark = [pytestmark, pytest.mark.filterwarnings("ignore::databroker_lite.DuplicateScanIDWarning")]

KEY = "secret0123456789"
AMBIGUOUS = ("abcde111-0000-4000-8000-000000000001", "abcde222-0000-4000-8000-000000000002")


def _composed_run(uid: str, scan_id: int, t0: float) -> list[tuple[str, dict]]:
    bundle = event_model.compose_run(uid=uid, metadata={"scan_id": scan_id, "plan_name": "made"},
                                     time=t0)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"source": "sim", "dtype": "number", "shape": []}}, object_keys={"sim": ["x"]})
    docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc)]
    docs += [("event", desc.compose_event(data={"x": float(i)}, timestamps={"x": t0 + i},
                                          seq_num=i + 1, time=t0 + i)) for i in range(3)]
    return [*docs, ("stop", bundle.compose_stop(time=t0 + 5))]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> databroker_lite.Catalog:
    from bluesky import RunEngine
    from bluesky.plans import count, scan
    from ophyd.sim import det, det1, img, motor
    path = tmp_path_factory.mktemp("db2") / "cat"
    cat = databroker_lite.open_catalog(path)
    for uid, sid in zip(AMBIGUOUS, (501, 502)):
        for name, doc in _composed_run(uid, sid, time.time() - 1000 + sid):
            cat.writer(name, doc)
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(cat.writer)
    RE(count([det], 3), sample="Au", operator="ana")  # scan_id 1
    RE(scan([det, det1], motor, -1, 1, 5), sample="Cu")  # scan_id 2
    RE(count([img], 2))  # scan_id 3: external (resource/datum) images
    RE.md["scan_id"] = 1
    RE(count([det1], 2), sample="Au")  # scan_id 2 again: the latest is this one
    return databroker_lite.open_catalog(path, mode="r")


@pytest.fixture(scope="module")
def client(local):
    from tiled.client import Context, from_context

    from databroker_lite.server import build_app
    ctx = Context.from_app(build_app([local.directory], KEY), api_key=KEY)
    yield from_context(ctx)
    ctx.close()


def test_databroker2_client_classes_are_selected(client) -> None:
    from databroker.client import BlueskyEventStream, BlueskyRun, CatalogOfBlueskyRuns
    assert isinstance(client, CatalogOfBlueskyRuns)
    run = client[-1]
    assert isinstance(run, BlueskyRun) and isinstance(run.primary, BlueskyEventStream)
    assert repr(run).startswith("<BlueskyRun v2.0 {'primary'} scan_id=2 ")
    assert set(run.primary) == {"data", "timestamps", "config", "config_timestamps"}


def test_lookups_match_local(client, local) -> None:
    uids = list(local)
    assert list(client) == uids
    assert client[1].start["uid"] == local[1].uid
    assert client[2].start["uid"] == uids[-1] == local[2].uid  # duplicate scan_id: latest
    assert client[-1].start["uid"] == uids[-1] and client[-3].start["uid"] == uids[-3]
    assert client[uids[3]].start["uid"] == uids[3]  # a whole uid
    assert client[uids[3][:8]].start["uid"] == uids[3]  # a prefix
    assert [r.start["uid"] for r in client[[1, -1]]] == [local[1].uid, uids[-1]]
    with pytest.raises(ValueError, match="multiple matches"):
        client["abcde"]
    assert client["abcde1"].start["uid"] == AMBIGUOUS[0]
    with pytest.raises(KeyError, match="scan_id=999"):
        client[999]
    with pytest.raises(KeyError):
        client["fffff0"]


def test_run_metadata_and_streams(client, local) -> None:
    run, here = client[2], local[2]
    assert run.start == here.start and run.stop == here.stop
    assert run.metadata["start"] == here.metadata["start"]
    summary = run.metadata["summary"]
    assert summary["uid"] == here.uid and summary["scan_id"] == 2
    assert summary["stream_names"] == list(here) == list(run)
    assert summary["duration"] == pytest.approx(here.stop["time"] - here.start["time"])
    assert run.stop["exit_status"] == "success"


def test_primary_read_equals_local(client, local) -> None:
    for key in (1, 2, 3, -2):
        remote_ds, here_ds = client[key].primary.read(), local[key].primary.read()
        assert sorted(remote_ds.data_vars) == sorted(here_ds.data_vars)
        np.testing.assert_array_equal(remote_ds["time"].values, here_ds["time"].values)
        for name in here_ds.data_vars:
            assert remote_ds[name].dims == here_ds[name].dims
            assert remote_ds[name].dtype == here_ds[name].dtype
            np.testing.assert_array_equal(remote_ds[name].values, here_ds[name].values)
    img = client[3].primary.read()["img"]
    assert img.shape == (2, 10, 10) and float(img.sum()) > 0
    part = client[3].primary["data"]["img"].read(slice=(1, slice(2, 5)))
    np.testing.assert_array_equal(part, local[3].primary.read()["img"].values[1, 2:5])


def test_timestamps_and_config_equal_local(client, local) -> None:
    run, here = client[-3], local[-3]  # the scan: det, det1, motor
    ts, here_ts = run.primary["timestamps"].read(), here.primary.timestamps
    for name in here_ts.data_vars:
        np.testing.assert_array_equal(ts[name].values, here_ts[name].values)
    config = run.primary["config"]
    assert sorted(config) == sorted(here.primary.config)
    for obj, ds in here.primary.config.items():
        got = config[obj].read()
        for name in ds.data_vars:
            np.testing.assert_array_equal(got[name].values, ds[name].values)
        conf_ts = run.primary["config_timestamps"][obj].read()
        desc = here.primary.descriptors[0]["configuration"][obj]
        assert {k: float(conf_ts[k].values[0]) for k in conf_ts.data_vars} == desc["timestamps"]


def test_descriptors_equal_local(client, local) -> None:
    run, here = client[3], local[3]
    assert run.primary.descriptors == here.primary.descriptors
    assert run.descriptors == [d for name in here for d in here[name].descriptors]


def _unpaged(docs) -> list[tuple[str, dict]]:
    out = []
    for name, doc in docs:
        if name == "datum_page":
            out.extend(("datum", d) for d in event_model.unpack_datum_page(doc))
        else:
            out.append((name, dict(doc)))
    return out


def test_documents_equal_local(client, local) -> None:
    for key in (1, 3):  # 3 has a resource and datums (sent as datum_page)
        got = _unpaged(client[key].documents())
        assert normalise(got) == normalise(list(local[key].documents()))
        assert [n for n, _ in got][0] == "start" and got[-1][0] == "stop"
    names = [n for n, _ in client[3].documents()]
    assert "resource" in names and "datum_page" in names


def test_databroker_queries(client, local) -> None:
    from databroker.queries import In, Key, PartialUID, Regex, ScanID, ScanIDRange, TimeRange

    def uids(results) -> list[str]:
        return list(results)

    assert uids(client.search(Key("sample") == "Au")) == list(local.search({"sample": "Au"}))
    assert len(uids(client.search(Key("sample") == "Au"))) == 2
    assert uids(client.search(Key("start.plan_name") == "scan")) == [local[-3].uid]
    assert uids(client.search(Key("scan_id") > 500)) == list(AMBIGUOUS)
    assert uids(client.search(ScanID(2))) == list(local.search({"scan_id": 2}))
    assert uids(client.search(ScanIDRange(1, 3))) == list(local.search({"scan_id": {"$in": [1, 2]}}))
    assert uids(client.search(PartialUID("abcde2"))) == [AMBIGUOUS[1]]
    assert uids(client.search(In("sample", ["Cu", "Au"]))) == list(local.search({"sample": {"$exists": True}}))
    assert uids(client.search(Regex("plan_name", "^sc"))) == [local[-3].uid]
    t = local[1].start["time"]
    assert uids(client.search(TimeRange(since=t - 1e-3))) == list(local)[2:]
    assert uids(client.search(TimeRange(since=t - 1e-3, until=t + 1e-3))) == [local[1].uid]
    assert uids(client.search(Key("sample") == "Au").search(Key("scan_id") == 2)) == [list(local)[-1]]
    assert client.search(Key("sample") == "Au")[-1].start["uid"] == list(local)[-1]
    assert uids(client.search(Key("stop.exit_status") == "success")) == list(local)  # stop documents
    assert uids(client.search(Key("stop.num_events.primary") == 5)) == [local[-3].uid]


def test_old_clients_query_types_run_on_the_server(client, local) -> None:
    """Older databroker 2 clients send scan_id / partial_uid / time_range as themselves."""
    from bluesky_tiled_plugins.queries import ScanID, TimeRange, _PartialUID
    from tiled.client.container import Container

    def raw(query) -> list[str]:
        return list(Container.search(client, query))

    assert raw(ScanID(2, duplicates="all")) == list(local.search({"scan_id": 2}))
    assert raw(ScanID(2, 501)) == [AMBIGUOUS[0], list(local)[-1]]  # latest of each
    assert raw(_PartialUID(partial_uids=["abcde1", "abcde2"])) == list(AMBIGUOUS)
    t = local[1].start["time"]
    assert raw(TimeRange(since=t - 1e-3, until=t + 1e-3)) == [local[1].uid]


def test_unknown_query_type_or_key_is_a_400_naming_it(client) -> None:
    import httpx
    from tiled.queries import FullText, Key
    http = client.context.http_client
    r = http.get("/api/v1/search/", params={"filter[nosuchquery][condition][key]": "x"})
    assert r.status_code == 400 and "unknown query type 'nosuchquery'" in r.text
    r = http.get("/api/v1/search/", params={"filter[eq][condition][kee]": "start.x"})
    assert r.status_code == 400 and "has no field 'kee'" in r.text
    from tiled.client.container import Container
    with pytest.raises(httpx.HTTPStatusError, match="unknown query key 'plan_name'") as info:
        list(Container.search(client, Key("plan_name") == "scan"))
    assert info.value.response.status_code == 400
    with pytest.raises(httpx.HTTPStatusError, match="FullText are not supported"):
        list(client.search(FullText("Au")))
    with pytest.raises(KeyError, match=f"No match for scan_id={10**30}"):
        client[10**30]  # beyond 64 bits: no run has it (never a failing server)


def test_catalog_metadata_has_no_server_paths(client, local) -> None:
    http = client.context.http_client
    directory = str(Path(local.directory).resolve())
    for url in ("/api/v1/", "/api/v1/metadata/", "/api/v1/search/",
                f"/api/v1/metadata/{local[3].uid}", f"/api/v1/search/{local[3].uid}/primary"):
        r = http.get(url)
        assert r.status_code == 200, url
        assert directory not in r.text and local.directory not in r.text, url
    assert client.metadata == {"name": "cat"}


def test_v1_and_v2_accessors_of_databroker(client, local) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = client.v2[1]
        assert run.start["uid"] == local[1].uid
        np.testing.assert_array_equal(run.primary.read()["det"].values,
                                      local[1].primary.read()["det"].values)


def test_a_run_being_written_is_readable(tmp_path: Path, monkeypatch) -> None:
    """The events flushed so far, through databroker 2's client; a node fetched before
    more events arrived still reads the rows it was told about (no shape error)."""
    from conftest import make_run_docs
    from tiled.client import Context, from_context

    from databroker_lite.server import adapters, build_app
    monkeypatch.setattr(adapters, "LIVE_SNAPSHOT_SECONDS", 1e-9)  # every request sees the file now
    cat = databroker_lite.open_catalog(tmp_path / "live")
    docs = make_run_docs(10, stop=False)
    for name, doc in docs[:6]:  # start, descriptor, 4 events
        cat.writer(name, doc)
    cat.writer.flush()
    with Context.from_app(build_app([cat.directory], KEY), api_key=KEY) as ctx:
        c = from_context(ctx)
        run = c[-1]
        assert run.stop is None and run.metadata["summary"]["duration"] is None
        np.testing.assert_array_equal(run.primary.read()["x"].values, [0, 1.5, 3, 4.5])
        x, vec = run.primary["data"]["x"], run.primary["data"]["vec"]
        for name, doc in docs[6:9]:
            cat.writer(name, doc)
        cat.writer.flush()
        np.testing.assert_array_equal(x.read(), [0, 1.5, 3, 4.5])  # what it was told of
        assert vec.read().shape == (4, 3) and x[1:].tolist() == [1.5, 3, 4.5]
        fresh = c[-1].primary.read()
        np.testing.assert_array_equal(fresh["x"].values, cat[-1].primary.read()["x"].values)
        assert fresh.sizes["time"] == 7
        assert [n for n, _ in c[-1].documents()].count("event") == 7
        for name, doc in docs[9:]:
            cat.writer(name, doc)
        cat.writer.flush()
        assert c[-1].primary.read().sizes["time"] == 10


def test_a_run_whose_data_does_not_fit_its_descriptor_is_a_422(tmp_path: Path) -> None:
    """Data of another shape than the descriptor declares: a 422 naming the key and both
    shapes, not a bare 500 retried for half a minute."""
    import httpx
    from test_external import H, W, _ad_run, _frames, _write_ad_file
    from tiled.client import Context, from_context

    from databroker_lite.server import build_app
    root = tmp_path / "det"
    _write_ad_file(str(root / "a.h5"), _frames(2, shape=(H, W + 1)))
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    uid = _ad_run(cat, str(root), "a.h5", n=2)  # declares (H, W)
    with Context.from_app(build_app([cat.directory], KEY), api_key=KEY) as ctx:
        c = from_context(ctx)
        with pytest.raises(httpx.HTTPStatusError) as info:
            c[uid].primary.read()
        assert info.value.response.status_code == 422
        detail = info.value.response.json()["detail"]
        assert detail["error"] == "ShapeMismatch"
        assert "'img'" in detail["message"] and f"[{H}, {W}]" in detail["message"]
        r = ctx.http_client.get(f"/api/v1/array/full/{uid}/primary/data/img", params={"slice": "0"})
        assert r.status_code == 422 and "ShapeMismatch" in r.text
        assert c[uid].primary.read(variables=["I0"])["I0"].values.tolist() == [0.0, 1.0]


def test_a_key_whose_shape_changes_between_descriptors_is_served(tmp_path: Path) -> None:
    """A detector reconfigured mid-run (img [2, 2], then [3, 3]): the run is served, its
    scalar columns as numbers in acquisition order, img one text (JSON) per event."""
    import json

    from tiled.client import Context, from_context

    from databroker_lite.server import build_app
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = event_model.compose_run()
    cat.insert("start", b.start_doc)
    desc = [b.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [n, n], "source": "cam"},
        "x": {"dtype": "number", "shape": [], "source": "x"}}) for n in (2, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", databroker_lite.DescriptorMismatchWarning)
        for d in desc:
            cat.insert("descriptor", d.descriptor_doc)
        for i, d in enumerate([desc[0], desc[1], desc[0]]):
            n = 2 if d is desc[0] else 3
            cat.insert("event", d.compose_event(data={"img": np.full((n, n), float(i)), "x": float(i)},
                                                timestamps={"img": 1.0, "x": 1.0}, seq_num=i + 1))
        cat.insert("stop", b.compose_stop())
        uid = b.start_doc["uid"]
        with Context.from_app(build_app([cat.directory], KEY), api_key=KEY) as ctx:
            ds = from_context(ctx)[uid].primary.read()
    assert ds["x"].values.tolist() == [0.0, 1.0, 2.0]
    assert [np.asarray(json.loads(v)).shape for v in ds["img"].values] == [(2, 2), (3, 3), (2, 2)]


def test_readings_the_descriptor_does_not_describe_are_served_as_json(tmp_path: Path) -> None:
    """ophyd.sim signals whose readings drift from what they described (a spectrum that
    grows, a number that becomes None) in a RunEngine scan: the server sends each value
    as JSON text (not a 500), and they decode to what read() gives locally."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import SynSignal
    from tiled.client import Context, from_context

    from databroker_lite.documents import JSON_VALUES, from_json_texts
    from databroker_lite.server import build_app
    calls = {"spec": 0, "maybe": 0}

    def spectrum():
        calls["spec"] += 1
        return list(range(calls["spec"]))  # one value longer at every reading

    def maybe():
        calls["maybe"] += 1
        return None if calls["maybe"] >= 3 and calls["maybe"] % 2 else 1.5

    spec, maybe_sig = SynSignal(func=spectrum, name="spec"), SynSignal(func=maybe, name="maybe")
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    RE = RunEngine({}, context_managers=[])
    RE.subscribe(cat.writer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", databroker_lite.DescriptorMismatchWarning)
        (uid,) = RE(count([spec, maybe_sig], 4))
        here = cat[uid].primary.read()
    assert None in list(here["maybe"].values) and len({len(v) for v in here["spec"].values}) > 1
    with Context.from_app(build_app([cat.directory], KEY), api_key=KEY) as ctx:
        node = from_context(ctx)[uid]["primary"]["data"]
        there = node.read()
        assert node["spec"].metadata["attrs"][JSON_VALUES] is True
    for key in ("spec", "maybe"):
        assert here[key].dtype == object, key
        got = from_json_texts(there[key].values)
        assert [np.asarray(v).tolist() if v is not None else None for v in got] == \
               [np.asarray(v).tolist() if v is not None else None for v in here[key].values], key
