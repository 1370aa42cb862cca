"""One catalog contract (SPEC 4-6 and the error types), run against every implementation.

In the manner of zarr v3's store test base class: :class:`CatalogContract` holds the
tests, written once; each implementation is a subclass that gives the ``cat`` fixture
(the contract catalog, opened its way). Today: the local SQLite-indexed catalog and the
remote catalog through ``databroker-lite serve`` (``from_uri``). To add one (the
PostgreSQL-indexed catalog, say), write a subclass whose ``cat`` fixture opens
``contract_dir`` that way; see :class:`TestPostgresIndexed`.

The expected values come from the documents (:func:`contract_docs`), not from another
implementation, so every implementation is held to the same truth. A difference that is
intended is written down in docs/architecture.rst ("One contract, several implementations").
"""
from __future__ import annotations

import functools
import importlib.util
import json
import warnings
from pathlib import Path

import event_model
import numpy as np
import pytest
import xarray as xr
from conftest import normalise, serving

import databroker_lite
from databroker_lite import (
    AmbiguousKey,
    DuplicateScanIDWarning,
    InvalidQuery,
    RunNotFound,
    ScanID,
    StreamNotFound,
    TimeRange,
)

T0 = 1_600_000_000.0  # 2020-09-13: every run starts at a known time

# uids chosen for the look-up rules: "c6b4" starts two uids, "c6b461" one; "12345678"
# is all digits (a string is never a scan_id); "777b44a" is SPEC's partial uid.
UIDS = ["c6b461f7-53aa-4941-9e38-ce842f08bf2d",
        "c6b4d00d-1111-4111-8111-111111111111",
        "12345678-2222-4222-8222-222222222222",
        "777b44a0-3333-4333-8333-333333333333",
        "ffff0000-4444-4444-8444-444444444444"]
#: (scan_id, plan_name, sample, exit_status or None for a run without stop)
RUNS = [(1, "count", "Cu foil", "success"), (7, "scan", "Fe foil", "abort"),
        (2, "count", "Cu foil", "success"), (2, "scan", "Ni foil", "success"),
        (3, "count", "Cu foil", None)]

PRIMARY_KEYS = {
    "x": {"source": "sim", "dtype": "number", "shape": [], "units": "mm"},
    "n": {"source": "sim", "dtype": "integer", "shape": []},
    "label": {"source": "sim", "dtype": "string", "shape": []},
    "flag": {"source": "sim", "dtype": "boolean", "shape": []},
    "vec": {"source": "sim", "dtype": "array", "shape": [3], "dtype_numpy": "<f8"},
}
IMAGE_KEYS = {
    "img": {"source": "sim", "dtype": "array", "shape": [4, 6], "dtype_numpy": "<f8",
            "dims": ["y", "x"]},
    "I0": {"source": "sim", "dtype": "number", "shape": []},
}
CONFIG = {"det": {"data": {"det_gain": 5, "det_mode": "fast"},
                  "timestamps": {"det_gain": T0, "det_mode": T0},
                  "data_keys": {"det_gain": {"source": "sim", "dtype": "integer", "shape": []},
                                "det_mode": {"source": "sim", "dtype": "string", "shape": []}}}}


def primary_data(i: int) -> dict:
    return {"x": i * 1.5, "n": i, "label": f"point {i}", "flag": bool(i % 2),
            "vec": [float(i), i + 0.5, -float(i)]}


#: External data of run 1 (NPY_SEQ files), under a root the catalog's catalog.json maps
#: to ``<catalog>/external``, so every implementation (and the server) finds the files.
EXTERNAL_ROOT = "/contract-external"
CAM_KEY = {"source": "sim", "dtype": "array", "shape": [2, 3], "dtype_numpy": "<f8",
           "external": "FILESTORE:"}


def cam_frame(i: int) -> np.ndarray:
    return np.arange(6, dtype="f8").reshape(2, 3) + 10 * i


def image_data(i: int) -> dict:
    return {"img": np.arange(24, dtype="f8").reshape(4, 6) + 100 * i, "I0": 10.0 + i}


def event_time(run: int, i: int) -> float:
    return T0 + 100 * run + 1 + i


def _events(desc, n: int, run: int, data, offset: float = 0.0) -> list:
    out = []
    for i in range(n):
        t = event_time(run, i) + offset
        values = data(i)
        out.append(("event", desc.compose_event(
            data=values, timestamps={k: t - 0.25 for k in values}, seq_num=i + 1, time=t)))
    return out


@functools.cache
def contract_docs() -> list[list[tuple[str, dict]]]:
    """The documents of the contract's five runs, oldest first (made once per session)."""
    runs = []
    for r, (uid, (scan_id, plan, sample, exit_status)) in enumerate(zip(UIDS, RUNS)):
        bundle = event_model.compose_run(uid=uid, time=T0 + 100 * r, metadata={
            "scan_id": scan_id, "plan_name": plan, "sample": {"name": sample}})
        docs = [("start", bundle.start_doc)]
        if r == 0:  # baseline and primary, with configuration
            base = bundle.compose_descriptor(
                name="baseline", data_keys={"motor": {"source": "sim", "dtype": "number",
                                                      "shape": []}},
                object_keys={"motor": ["motor"]}, time=T0)
            prim = bundle.compose_descriptor(name="primary", data_keys=PRIMARY_KEYS,
                                             configuration=CONFIG, time=T0 + 0.5,
                                             object_keys={"det": list(PRIMARY_KEYS)})
            docs += [("descriptor", base.descriptor_doc), ("descriptor", prim.descriptor_doc)]
            docs += _events(base, 1, r, lambda i: {"motor": 4.5}, offset=-0.5)
            docs += _events(prim, 5, r, primary_data)
            docs += _events(base, 1, r, lambda i: {"motor": 5.5}, offset=10)
        elif r == 3:  # an image stream
            prim = bundle.compose_descriptor(name="primary", data_keys=IMAGE_KEYS,
                                             object_keys={"det": list(IMAGE_KEYS)})
            docs += [("descriptor", prim.descriptor_doc)]
            docs += _events(prim, 8, r, image_data)
        elif r == 1:  # external data: a resource and one datum per event
            prim = bundle.compose_descriptor(name="primary", object_keys={"det": ["x", "cam"]},
                                             data_keys={"x": PRIMARY_KEYS["x"], "cam": CAM_KEY})
            res = bundle.compose_resource(spec="NPY_SEQ", root=EXTERNAL_ROOT,
                                          resource_path="cam", resource_kwargs={})
            docs += [("descriptor", prim.descriptor_doc), ("resource", res.resource_doc)]
            for i in range(3):
                datum = res.compose_datum(datum_kwargs={"index": i})
                t = event_time(r, i)
                docs += [("datum", datum), ("event", prim.compose_event(
                    data={"x": i * 1.5, "cam": datum["datum_id"]}, filled={"cam": False},
                    timestamps={"x": t - 0.25, "cam": t - 0.25}, seq_num=i + 1, time=t))]
        else:
            prim = bundle.compose_descriptor(name="primary", data_keys={"x": PRIMARY_KEYS["x"]},
                                             object_keys={"det": ["x"]})
            docs += [("descriptor", prim.descriptor_doc)]
            docs += _events(prim, 3 if r != 4 else 2, r, lambda i: {"x": i * 1.5})
            if r == 4:  # an empty stream, and no stop: a run still being written or dead
                dark = bundle.compose_descriptor(name="dark", data_keys={"x": PRIMARY_KEYS["x"]},
                                                 object_keys={"det": ["x"]})
                docs += [("descriptor", dark.descriptor_doc)]
        if exit_status is not None:
            docs.append(("stop", bundle.compose_stop(time=T0 + 100 * r + 50,
                                                     exit_status=exit_status)))
        runs.append(docs)
    return runs


@pytest.fixture(scope="module")
def contract_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog directory holding the contract's runs, written by the local writer."""
    path = tmp_path_factory.mktemp("contract") / "catalog"
    (path / "external").mkdir(parents=True)
    for i in range(3):
        np.save(path / "external" / f"cam_{i}.npy", cam_frame(i))
    (path / "catalog.json").write_text(json.dumps({"root_map": {EXTERNAL_ROOT: "external"}}))
    cat = databroker_lite.open_catalog(path)
    for docs in contract_docs():
        for name, doc in docs:
            cat.insert(name, doc)
    cat.writer.flush()
    return path


def _line(r: int) -> str:
    """The time range line of run ``r``'s text summary."""
    from datetime import datetime

    def fmt(t: float) -> str:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    stop = fmt(T0 + 100 * r + 50) if RUNS[r][3] else "(no stop)"
    return f"  {fmt(T0 + 100 * r)} -- {stop}"


class CatalogContract:
    """The tests every catalog implementation passes. Subclasses give the ``cat`` fixture.

    ``not_yet`` names the contract tests an implementation does not pass yet, with why:
    they run as strict xfails, so the day one passes the suite says to remove it.
    """

    not_yet: dict[str, str] = {}

    @pytest.fixture
    def cat(self):  # pragma: no cover - each implementation overrides it
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _known_gaps(self, request: pytest.FixtureRequest) -> None:
        reason = self.not_yet.get(request.function.__name__)
        if reason:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    # --- SPEC 4: len, iteration, membership ------------------------------------------
    def test_len_iteration_and_membership(self, cat) -> None:
        assert len(cat) == 5
        assert list(cat) == UIDS  # oldest first
        assert list(cat.keys()) == UIDS
        assert UIDS[3] in cat
        assert "777b44a" not in cat  # membership is by whole uid
        assert 1 not in cat
        assert [uid for uid, _ in cat.items()] == UIDS
        assert [run.uid for _, run in cat.items()] == UIDS

    # --- look-ups ----------------------------------------------------------------------
    def test_scan_id_lookup(self, cat) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert cat[1].uid == UIDS[0]
            assert cat[7].uid == UIDS[1]
            assert cat[np.int64(3)].uid == UIDS[4]

    def test_shared_scan_id_warns_and_gives_the_most_recent(self, cat) -> None:
        with pytest.warns(DuplicateScanIDWarning) as record:
            run = cat[2]
        assert run.uid == UIDS[3]
        message = str(record[0].message)
        assert "2 runs have scan_id 2" in message
        assert UIDS[2] in message and UIDS[3] in message

    def test_negative_index_counts_from_the_most_recent(self, cat) -> None:
        assert cat[-1].uid == UIDS[4]
        assert cat[-2].uid == UIDS[3]
        assert cat[-5].uid == UIDS[0]
        with pytest.raises(RunNotFound, match="5 run"):
            cat[-6]

    def test_uid_and_unique_prefix(self, cat) -> None:
        for uid in UIDS:
            assert cat[uid].uid == uid
        assert cat["777b44a"].uid == UIDS[3]
        assert cat["c6b461"].uid == UIDS[0]

    def test_a_string_is_never_a_scan_id(self, cat) -> None:
        assert cat["12345678"].uid == UIDS[2]  # a uid prefix, all digits
        assert cat["1"].uid == UIDS[2]  # prefix "1", not scan_id 1
        with pytest.raises(RunNotFound, match="for a scan_id use an int"):
            cat["9"]

    def test_ambiguous_prefix_lists_what_matched(self, cat) -> None:
        with pytest.raises(AmbiguousKey) as info:
            cat["c6b4"]
        assert isinstance(info.value, KeyError)
        message = str(info.value)
        for r in (0, 1):
            assert UIDS[r] in message
            assert f"scan_id={RUNS[r][0]}" in message and f"plan={RUNS[r][1]}" in message
        assert "give more characters" in message

    def test_missing_runs(self, cat) -> None:
        with pytest.raises(RunNotFound, match="no run has scan_id 99") as info:
            cat[99]
        assert isinstance(info.value, KeyError)
        with pytest.raises(RunNotFound, match="no run has a uid starting with 'abc'"):
            cat["abc"]
        assert cat.get(99) is None
        assert cat.get("abc", "nothing") == "nothing"
        assert cat.get(7).uid == UIDS[1]

    @pytest.mark.parametrize("key", [1.5, True, None, b"c6b4"])
    def test_keys_of_other_types_are_type_errors(self, cat, key) -> None:
        with pytest.raises(TypeError, match="scan_id|look up"):
            cat[key]

    # --- search --------------------------------------------------------------------------
    def test_search(self, cat) -> None:
        assert list(cat.search({"plan_name": "scan"})) == [UIDS[1], UIDS[3]]
        assert list(cat.search({"sample.name": "Cu foil"})) == [UIDS[0], UIDS[2], UIDS[4]]
        assert list(cat.search({"scan_id": {"$gte": 2, "$lt": 7}})) == UIDS[2:]
        assert list(cat.search({"scan_id": {"$in": [1, 7]}})) == UIDS[:2]
        assert list(cat.search({"plan_name": {"$regex": "^sc"}})) == [UIDS[1], UIDS[3]]
        assert list(cat.search({"nothing": {"$exists": True}})) == []
        assert list(cat.search({"sample.name": {"$ne": "Cu foil"}})) == [UIDS[1], UIDS[3]]

    def test_search_on_the_stop_document(self, cat) -> None:
        assert list(cat.search({"stop.exit_status": "abort"})) == [UIDS[1]]
        assert list(cat.search({"stop.exit_status": {"$in": ["success"]}})) == [UIDS[0], *UIDS[2:4]]
        assert list(cat.search({"stop.exit_status": {"$exists": True}})) == UIDS[:4]
        assert list(cat.search({"stop.exit_status": {"$exists": False}})) == [UIDS[4]]
        assert list(cat.search({"stop.num_events.primary": {"$gte": 1},
                                "plan_name": "scan"})) == [UIDS[1], UIDS[3]]

    def test_search_helpers(self, cat) -> None:
        assert list(cat.search(ScanID(2))) == [UIDS[2], UIDS[3]]
        assert list(cat.search(TimeRange(since=T0 + 150, until=T0 + 350))) == UIDS[2:4]

    def test_search_results_have_the_catalog_api(self, cat) -> None:
        found = cat.search({"sample.name": "Cu foil"})
        assert len(found) == 3
        assert found[-1].uid == UIDS[4] and found[-3].uid == UIDS[0]
        assert found[1].uid == UIDS[0]
        with pytest.raises(RunNotFound):
            found[7]  # scan_id 7 is in the catalog, not in the search
        again = found.search({"scan_id": {"$gt": 1}})
        assert list(again) == [UIDS[2], UIDS[4]]
        assert len(cat.search({"plan_name": "nothing"})) == 0

    def test_bad_query_is_invalid_query(self, cat) -> None:
        with pytest.raises(InvalidQuery, match=r"\$bogus"):
            list(cat.search({"scan_id": {"$bogus": 1}}))

    # --- reprs -------------------------------------------------------------------------------
    def test_catalog_repr_and_html(self, cat) -> None:
        text = repr(cat)
        assert "5 runs" in text
        lines = text.splitlines()
        assert len(lines) == 6  # the header and the newest five
        assert "scan_id=     3" in lines[1] and UIDS[4][:8] in lines[1]
        assert "(running or no stop)" in lines[1]
        assert "abort" in lines[4] and "scan" in lines[4]
        html = cat._repr_html_()
        assert "<table" in html and "5 runs" in html
        for uid in UIDS:
            assert uid[:8] in html

    def test_run_repr_is_databrokers_summary(self, cat) -> None:
        assert repr(cat[1]) == "\n".join([
            "BlueskyRun", f"  uid={UIDS[0]!r}", "  exit_status='success'", _line(0),
            "  Streams:", "    * baseline", "    * primary"])
        assert repr(cat[3]) == "\n".join([
            "BlueskyRun", f"  uid={UIDS[4]!r}", "  exit_status=None", _line(4),
            "  Streams:", "    * dark", "    * primary"])

    def test_run_and_stream_html(self, cat) -> None:
        run = cat[1]
        html = run._repr_html_()
        assert UIDS[0] in html
        assert "Stream baseline</b>: 2 events" in html and "Stream primary</b>: 5 events" in html
        for key in (*PRIMARY_KEYS, "motor"):
            assert f"<td style='padding:0 8px'>{key}</td>" in html
        assert "mm" in html  # units
        stream_html = run.primary._repr_html_()
        assert "Stream primary</b>: 5 events" in stream_html and "float64" in stream_html

    def test_stream_repr(self, cat) -> None:
        text = repr(cat[1].primary)
        assert "'primary'" in text and UIDS[0][:8] in text and "5 events" in text
        for key in PRIMARY_KEYS:
            assert key in text

    # --- SPEC 5: runs ----------------------------------------------------------------------
    def test_run_metadata(self, cat) -> None:
        docs = contract_docs()
        run = cat[1]
        assert run.metadata["start"] == normalise([docs[0][0]])[0][1]
        assert run.metadata["stop"] == normalise([docs[0][-1]])[0][1]
        assert run.start == run.metadata["start"] and run.stop == run.metadata["stop"]
        assert run.start["sample"] == {"name": "Cu foil"}
        running = cat[-1]
        assert running.metadata["stop"] is None and running.stop is None

    def test_streams_of_a_run(self, cat) -> None:
        run = cat[1]
        assert list(run) == ["baseline", "primary"]
        assert len(run) == 2 and "primary" in run and "dark" not in run
        assert run.primary.name == run["primary"].name == "primary"
        with pytest.raises(StreamNotFound, match="has no stream 'dark'") as info:
            run["dark"]
        assert isinstance(info.value, KeyError)
        with pytest.raises(AttributeError, match="stream 'dark'") as info:
            _ = run.dark
        assert "['baseline', 'primary']" in str(info.value)

    def test_documents_round_trip(self, cat) -> None:
        for r, docs in enumerate(contract_docs()):
            assert normalise(list(cat[UIDS[r]].documents())) == normalise(docs)

    # --- SPEC 6: streams ---------------------------------------------------------------------
    def test_read_values_dtypes_shapes(self, cat) -> None:
        ds = cat[1].primary.read()
        assert isinstance(ds, xr.Dataset)
        assert set(ds.data_vars) == set(PRIMARY_KEYS)
        np.testing.assert_array_equal(ds["time"].values, [event_time(0, i) for i in range(5)])
        assert ds["time"].dtype == np.float64
        np.testing.assert_array_equal(ds["x"].values, [i * 1.5 for i in range(5)])
        assert ds["x"].dtype == np.float64 and ds["x"].dims == ("time",)
        np.testing.assert_array_equal(ds["n"].values, np.arange(5))
        assert ds["n"].dtype.kind == "i"
        assert list(ds["label"].values) == [f"point {i}" for i in range(5)]
        assert ds["label"].dtype.kind == "U"
        assert ds["flag"].dtype == np.bool_ and list(ds["flag"].values) == [False, True] * 2 + [False]
        assert ds["vec"].shape == (5, 3) and ds["vec"].dims == ("time", "vec_dim_0")
        np.testing.assert_array_equal(ds["vec"].values[2], [2.0, 2.5, -2.0])
        assert ds["x"].attrs["units"] == "mm"

    def test_read_images_with_declared_dims(self, cat) -> None:
        ds = cat["777b44a"].primary.read()
        assert ds["img"].dims == ("time", "y", "x")
        assert ds["img"].shape == (8, 4, 6) and ds["img"].dtype == np.float64
        np.testing.assert_array_equal(ds["img"].values[5], image_data(5)["img"])
        np.testing.assert_array_equal(ds["I0"].values, 10.0 + np.arange(8))

    def test_a_column_slices_like_numpy_without_dask(self, cat) -> None:
        col = cat["777b44a"].primary["img"]
        assert col.shape == (8, 4, 6) and col.dtype == np.float64 and col.ndim == 3
        assert len(col) == 8
        frame = col[5]
        assert isinstance(frame, np.ndarray)
        np.testing.assert_array_equal(frame, image_data(5)["img"])
        np.testing.assert_array_equal(col[2:4, 1:3], np.stack([image_data(i)["img"][1:3] for i in (2, 3)]))
        np.testing.assert_array_equal(col[-1], image_data(7)["img"])
        np.testing.assert_array_equal(col.read(), cat["777b44a"].primary.read()["img"].values)
        np.testing.assert_array_equal(cat[1].primary["x"][:], cat[1].primary.read()["x"].values)
        with pytest.raises(IndexError):
            col[8]
        with pytest.raises(StreamNotFound, match="nope"):
            cat["777b44a"].primary["nope"]

    def test_read_chosen_columns(self, cat) -> None:
        stream = cat[1].primary
        ds = stream.read(["x", "label"])
        assert set(ds.data_vars) == {"x", "label"} and ds.sizes["time"] == 5
        assert set(stream.read("n").data_vars) == {"n"}
        with pytest.raises(StreamNotFound, match=r"no column\(s\) \['nope'\]") as info:
            stream.read(["x", "nope"])
        assert "'primary'" in str(info.value) and UIDS[0] in str(info.value)
        with pytest.raises(StreamNotFound, match=r"\['nope'\]"):
            stream.to_dask("nope")

    def test_to_dask_is_lazy_and_equal_to_read(self, cat) -> None:
        import dask.array as da
        for key in (1, "777b44a"):
            stream = cat[key].primary
            lazy = stream.to_dask()
            for name, var in lazy.data_vars.items():
                assert isinstance(var.data, da.Array), name
            xr.testing.assert_identical(lazy.compute(), stream.read())
        lazy = cat["777b44a"].primary.to_dask(["img"])
        np.testing.assert_array_equal(lazy["img"][3, 1:3].compute().values,
                                      image_data(3)["img"][1:3])

    def test_empty_stream_reads_with_zero_length_time(self, cat) -> None:
        run = cat[-1]
        assert list(run) == ["dark", "primary"]
        ds = run.dark.read()
        assert ds.sizes["time"] == 0 and ds["x"].shape == (0,)
        assert run.dark.to_dask().sizes["time"] == 0
        assert len(run.dark) == 0 and len(run.primary) == 2

    def test_timestamps(self, cat) -> None:
        ts = cat[1].primary.timestamps
        assert set(ts.data_vars) == set(PRIMARY_KEYS)
        expected = [event_time(0, i) - 0.25 for i in range(5)]
        np.testing.assert_array_equal(ts["x"].values, expected)
        np.testing.assert_array_equal(ts["time"].values, [event_time(0, i) for i in range(5)])

    def test_config_and_descriptors(self, cat) -> None:
        stream = cat[1].primary
        config = stream.config
        assert list(config) == ["det"]
        assert int(config["det"]["det_gain"].values[0]) == 5
        assert str(config["det"]["det_mode"].values[0]) == "fast"
        descriptors = stream.metadata["descriptors"]
        assert len(descriptors) == 1
        assert descriptors[0]["uid"] == contract_docs()[0][2][1]["uid"]
        assert set(descriptors[0]["data_keys"]) == set(PRIMARY_KEYS)
        assert stream.fields() == list(PRIMARY_KEYS)

    def test_external_data_is_read_through_handlers(self, cat) -> None:
        stream = cat[7].primary
        ds = stream.read()
        assert ds["cam"].shape == (3, 2, 3) and ds["cam"].dtype == np.float64
        for i in range(3):
            np.testing.assert_array_equal(ds["cam"].values[i], cam_frame(i))
        xr.testing.assert_identical(stream.to_dask().compute(), ds)
        assert [d["spec"] for n, d in cat[7].documents() if n == "resource"] == ["NPY_SEQ"]

    def test_documents_filled(self, cat) -> None:
        docs = list(cat[7].documents(fill=True))
        names = [n for n, _ in docs]
        assert "resource" not in names and "datum" not in names
        events = [d for n, d in docs if n == "event"]
        assert len(events) == 3
        for i, event in enumerate(events):
            np.testing.assert_array_equal(np.asarray(event["data"]["cam"]), cam_frame(i))
            assert event["data"]["x"] == i * 1.5
        desc = next(d for n, d in docs if n == "descriptor")
        assert "external" not in desc["data_keys"]["cam"]

    def test_baseline_reads_both_readings(self, cat) -> None:
        ds = cat[1].baseline.read()
        np.testing.assert_array_equal(ds["motor"].values, [4.5, 5.5])


class TestLocal(CatalogContract):
    """The SQLite-indexed catalog in a directory (``open_catalog``)."""

    @pytest.fixture
    def cat(self, contract_dir: Path):
        return databroker_lite.open_catalog(contract_dir, mode="r")


HAVE_SERVER = all(importlib.util.find_spec(m) is not None for m in ("tiled", "fastapi", "uvicorn"))
KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def served(contract_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The URL of ``databroker-lite serve`` serving the contract catalog."""
    if not HAVE_SERVER:
        pytest.skip("tiled[server] is not installed (pip install 'databroker_lite[server]')")
    with serving(tmp_path_factory.mktemp("served"), KEY, str(contract_dir)) as url:
        yield url


class TestRemote(CatalogContract):
    """The same catalog through ``databroker-lite serve`` and ``from_uri``."""

    @pytest.fixture
    def cat(self, served: str):
        return databroker_lite.from_uri(served, api_key=KEY)


class TestPostgresIndexed(CatalogContract):
    """The same directory with a PostgreSQL index: ``postgres_url`` is a throwaway server
    the test suite starts (tests/conftest.py; skipped only without PostgreSQL's binaries)."""

    @pytest.fixture
    def cat(self, contract_dir: Path, postgres_url: str):
        cat = databroker_lite.open_catalog(contract_dir, mode="r", index=postgres_url)
        assert cat._index.kind == "postgresql"
        return cat


def test_every_implementation_runs_the_whole_contract() -> None:
    """A subclass cannot drop a contract test by overriding it with something else."""
    tests = {n for n in dir(CatalogContract) if n.startswith("test_")}
    assert len(tests) >= 25
    for impl in (TestLocal, TestRemote, TestPostgresIndexed):
        for name in tests:
            assert getattr(impl, name) is getattr(CatalogContract, name), (impl, name)
