"""Export for users (SPEC section 8): CSV, JSON, SPEC and NeXus, from stored runs and live."""
from __future__ import annotations

import csv
import glob
import json
import math
import os

import event_model
import numpy as np
import pytest
from conftest import insert_all, make_run_docs

import databroker_lite
from databroker_lite import cli
from databroker_lite.errors import StreamNotFound
from databroker_lite.export import (
    CSVWriter,
    ExportWriter,
    JSONWriter,
    NexusWriter,
    SpecWriter,
    _common,
    export,
)

nexus = pytest.importorskip("nexusformat.nexus")
spec2nexus_spec = pytest.importorskip("spec2nexus.spec")


def _no_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _two_descriptor_docs() -> list[tuple[str, dict]]:
    """Run scan_id 5: primary has two descriptors (det's gain changes after two events),
    and a third descriptor is a 'monitor' stream of I0 readings."""
    import time

    import event_model
    t0 = time.time()
    num = {"dtype": "number", "shape": [], "source": "sim"}
    keys = {"det": num, "motor": num}
    b = event_model.compose_run(metadata={"scan_id": 5, "plan_name": "gain_change",
                                          "motors": ["motor"]}, time=t0)
    docs = [("start", b.start_doc)]

    def conf(gain):
        return {"det": {"data": {"det_gain": gain}, "timestamps": {"det_gain": t0},
                        "data_keys": {"det_gain": num}}}

    d1 = b.compose_descriptor(name="primary", data_keys=keys, configuration=conf(1.0),
                              object_keys={"det": ["det"], "motor": ["motor"]},
                              hints={"det": {"fields": ["det"]}})
    d2 = b.compose_descriptor(name="primary", data_keys=keys, configuration=conf(10.0),
                              object_keys={"det": ["det"], "motor": ["motor"]},
                              hints={"det": {"fields": ["det"]}})
    mon = b.compose_descriptor(name="monitor", data_keys={"I0": num}, object_keys={"I0": ["I0"]})
    docs += [("descriptor", d1.descriptor_doc), ("descriptor", mon.descriptor_doc)]
    for i, d in enumerate([d1, d1, d2]):
        if i == 2:
            docs.append(("descriptor", d2.descriptor_doc))
        docs.append(("event", d.compose_event(data={"det": 10.0 * (i + 1), "motor": float(i)},
                                              timestamps={"det": t0 + i, "motor": t0 + i},
                                              seq_num=i + 1, time=t0 + i)))
        docs.append(("event", mon.compose_event(data={"I0": 100.0 + i}, timestamps={"I0": t0 + i},
                                                seq_num=i + 1, time=t0 + i + 0.5)))
    docs.append(("stop", b.compose_stop(time=t0 + 3)))
    return docs


# --- one RunEngine session for the whole module -------------------------------------------
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Runs acquired with a RunEngine, a baseline, and all four live writers subscribed.

    Runs, by scan_id: 1 scan([det, img], motor), 2 grid_scan(det; motor1, motor2),
    3 paused then RE.abort()ed after 2 points, 4 a plan that raises after 2 points,
    5 a primary stream with two descriptors (the second adds motor2).
    """
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    import bluesky.preprocessors as bpp
    from bluesky import RunEngine
    from bluesky.utils import RunEngineInterrupted
    from ophyd.sim import hw

    h = hw()
    root = tmp_path_factory.mktemp("export")
    cat = databroker_lite.open_catalog(root / "catalog")
    live = root / "live"
    RE = RunEngine({}, context_managers=[])  # noqa: N806
    RE.subscribe(cat.writer)
    writers = {"spec": SpecWriter(live / "live.spec"), "csv": CSVWriter(live / "csv"),
               "json": JSONWriter(live / "json"), "nexus": NexusWriter(live / "nexus")}
    for w in writers.values():
        RE.subscribe(w)
    growth: list[tuple[int, int]] = []  # (SPEC data lines, CSV data lines) at each primary event

    def probe(name, doc):
        if name == "event" and doc["seq_num"] and "det" in doc["data"] and "img" in doc["data"]:
            spec_rows = sum(1 for line in open(live / "live.spec") if line[:1] not in "#\n")
            csv_files = glob.glob(str(live / "csv" / "scan1_*_primary.csv"))
            csv_rows = sum(1 for _ in open(csv_files[0])) - 1 if csv_files else -1
            growth.append((spec_rows, csv_rows))

    RE.subscribe(probe)
    RE.preprocessors.append(bpp.SupplementalData(baseline=[h.motor1, h.motor2]))
    RE(bps.mv(h.motor1, 2, h.motor2, -3))  # integral: ophyd.sim setpoints describe as integer

    RE(bp.scan([h.det, h.img], h.motor, -1, 1, 5))
    RE(bp.grid_scan([h.det], h.motor1, -1, 1, 2, h.motor2, -2, 2, 3))

    @bpp.run_decorator(md={"plan_name": "paused_scan"})
    def paused():
        for x in (0.0, 0.5):
            yield from bps.mv(h.motor, x)
            yield from bps.trigger_and_read([h.det, h.motor])
        yield from bps.checkpoint()
        yield from bps.pause()
        yield from bps.trigger_and_read([h.det, h.motor])

    with pytest.raises(RunEngineInterrupted):
        RE(paused())
    RE.abort("beam lost")

    @bpp.run_decorator(md={"plan_name": "failing"})
    def failing():
        for x in (0.0, 0.5):
            yield from bps.mv(h.motor, x)
            yield from bps.trigger_and_read([h.det, h.motor])
        raise RuntimeError("sample fell off")

    with pytest.raises(RuntimeError, match="sample fell off"):
        RE(failing())

    # bluesky refuses a second set of objects in one stream, but event-model allows it
    # (another acquisition system, or configuration changes): compose such a run by hand
    for name, doc in _two_descriptor_docs():
        cat.writer(name, doc)
        for w in writers.values():
            w(name, doc)
    return {"cat": cat, "live": live, "writers": writers, "growth": growth, "root": root}


@pytest.fixture(scope="module")
def runs(session):
    cat = session["cat"]
    return {sid: cat[sid] for sid in (1, 2, 3, 4, 5)}


# --- CSV ---------------------------------------------------------------------------------------
def test_csv_export_one_file_per_stream_with_npy_for_images(runs, tmp_path):
    run = runs[1]
    paths = run.export("csv", tmp_path)
    ds = run.primary.read()
    prefix = f"scan1_{run.uid[:8]}"
    assert sorted(os.path.basename(p) for p in paths) == sorted([
        f"{prefix}_metadata.json", f"{prefix}_baseline.csv", f"{prefix}_primary.csv",
        f"{prefix}_primary_img.npy"])
    header, rows = _read_csv(tmp_path / f"{prefix}_primary.csv")
    assert header[0] == "time" and set(header[1:]) == set(ds.data_vars)
    col = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    np.testing.assert_array_equal(np.array(col["time"], float), ds["time"].values)
    np.testing.assert_array_equal(np.array(col["det"], float), ds["det"].values)
    np.testing.assert_array_equal(np.array(col["motor"], float), ds["motor"].values)
    assert col["img"] == [f"{prefix}_primary_img.npy[{i}]" for i in range(5)]
    img = np.load(tmp_path / f"{prefix}_primary_img.npy")
    assert img.shape == (5, 10, 10) and img.dtype == ds["img"].dtype
    np.testing.assert_array_equal(img, ds["img"].values)
    md = json.loads((tmp_path / f"{prefix}_metadata.json").read_text(), parse_constant=_no_constant)
    assert md["start"]["uid"] == run.uid and md["stop"]["exit_status"] == "success"
    assert "det" in md["descriptors"]["primary"][0]["data_keys"]
    _, base_rows = _read_csv(tmp_path / f"{prefix}_baseline.csv")
    assert [float(x) for x in base_rows[0][1:]] == pytest.approx(
        [float(run.baseline.read()[k][0]) for k in _read_csv(tmp_path / f"{prefix}_baseline.csv")[0][1:]])


def test_csv_streams_argument_and_unknown_stream(runs, tmp_path):
    paths = runs[1].export("csv", tmp_path, streams=["baseline"])
    assert [os.path.basename(p).split("_", 2)[2] for p in paths] == ["metadata.json", "baseline.csv"]
    with pytest.raises(StreamNotFound, match="no stream.*'nope'"):
        runs[1].export("csv", tmp_path, streams=["nope"])


# --- JSON ---------------------------------------------------------------------------------------
def test_json_export_has_everything_and_is_strict(runs, tmp_path):
    run = runs[1]
    (path,) = run.export("json", tmp_path)
    doc = json.loads(open(path).read(), parse_constant=_no_constant)
    assert doc["metadata"]["start"] == json.loads(json.dumps(run.metadata["start"]))
    assert doc["metadata"]["stop"]["exit_status"] == "success"
    ds = run.primary.read()
    prim = doc["primary"]  # the data-export guide's shape: data[stream] = ds.to_dict()
    np.testing.assert_array_equal(prim["coords"]["time"]["data"], ds["time"].values)
    np.testing.assert_array_equal(prim["data_vars"]["det"]["data"], ds["det"].values)
    np.testing.assert_array_equal(np.array(prim["data_vars"]["img"]["data"]), ds["img"].values)
    assert set(doc) == {"format", "nonfinite_floats", "metadata", "baseline", "primary"}
    assert doc["format"] == "databroker_lite.export.json/2"
    assert prim == json.loads(_common.dumps(ds.to_dict()))
    xr = pytest.importorskip("xarray")
    xr.testing.assert_identical(xr.Dataset.from_dict(doc["baseline"]), run.baseline.read())


def test_json_non_finite_floats_are_strings(cat, tmp_path):
    keys = {"x": {"source": "sim", "dtype": "number", "shape": []},
            "v": {"source": "sim", "dtype": "array", "shape": [2], "dtype_numpy": "<f8"}}
    vals = [math.nan, math.inf, -math.inf]
    insert_all(cat, make_run_docs(3, data_keys=keys,
                                  data=lambda i: {"x": vals[i], "v": [vals[i], 1.0]}))
    (path,) = export(cat[-1], "json", tmp_path)
    text = open(path).read()
    assert "NaN," not in text and "Infinity]" not in text.replace('"Infinity"]', "")
    doc = json.loads(text, parse_constant=_no_constant)
    assert doc["primary"]["data_vars"]["x"]["data"] == ["NaN", "Infinity", "-Infinity"]
    assert doc["primary"]["data_vars"]["v"]["data"][0] == ["NaN", 1.0]
    assert doc["nonfinite_floats"] == "strings"


# --- SPEC ---------------------------------------------------------------------------------------
def test_spec_export_several_runs_read_by_spec2nexus(runs, tmp_path, caplog):
    path = tmp_path / "user.spec"
    written = export([runs[1], runs[2]], "spec", path)
    assert written == [str(path)]
    lines = path.read_text().splitlines()
    assert [ln[:2] for ln in lines[:4]] == ["#F", "#E", "#D", "#C"]
    assert spec2nexus_spec.is_spec_file_with_header(str(path))
    sdf = spec2nexus_spec.SpecDataFile(str(path))
    assert sdf.getScanNumbers() == ["1", "2"]

    s1 = sdf.getScan(1)
    assert s1.scanCmd == "scan motor -1 1 5"
    assert s1.L[0] == "motor" and s1.L[-1] == "det" and "img" not in s1.L
    ds = runs[1].primary.read()
    for key in ("motor", "det", "motor_setpoint"):
        np.testing.assert_allclose(s1.data[key], ds[key].values)
    # SPEC's convention: #E is the header's epoch, no later than its first scan, and
    # #E + Epoch is the event's time
    epoch = int(lines[1].split()[1])
    assert sdf.headers[0].epoch == epoch == int(runs[1].metadata["start"]["time"])
    np.testing.assert_allclose(epoch + np.asarray(s1.data["Epoch"]), ds["time"].values, atol=1e-6)
    assert min(s1.data["Epoch"]) >= 0
    assert any("not numeric scalars): img" in c for c in s1.comments)
    base = runs[1].baseline.read()
    assert sorted(s1.positioner) == ["motor1", "motor1_setpoint", "motor2", "motor2_setpoint"]
    assert s1.positioner["motor1"] == pytest.approx(float(base["motor1"][0])) == pytest.approx(2)
    assert s1.positioner["motor2"] == pytest.approx(-3)

    s2 = sdf.getScan(2)
    assert s2.L[:2] == ["motor1", "motor2"]  # both motors first, from the plan's hints
    ds2 = runs[2].primary.read()
    np.testing.assert_allclose(s2.data["motor2"], ds2["motor2"].values)
    np.testing.assert_allclose(s2.data["det"], ds2["det"].values)
    assert not [r for r in caplog.records if "younger" in r.getMessage()]


def test_spec_older_run_after_newer_gets_its_own_header(cat, tmp_path, caplog):
    """Exported newest first, each scan is still no older than the #E it counts from."""
    t0 = 1_700_000_000.25
    insert_all(cat, make_run_docs(3, metadata={"scan_id": 1, "plan_name": "count"}, t0=t0))
    insert_all(cat, make_run_docs(3, metadata={"scan_id": 2, "plan_name": "count"}, t0=t0 + 60))
    path = tmp_path / "rev.spec"
    export([cat[2], cat[1]], "spec", path)
    sdf = spec2nexus_spec.SpecDataFile(str(path))
    assert [h.epoch for h in sdf.headers] == [int(t0 + 60), int(t0)]
    for n in (1, 2):
        scan = sdf.getScan(n)
        np.testing.assert_allclose(scan.header.epoch + np.asarray(scan.data["Epoch"]),
                                   cat[n].primary.read()["time"].values, atol=1e-6)
    assert not [r for r in caplog.records if "younger" in r.getMessage()]


def test_spec_export_appends_to_an_existing_file(runs, tmp_path):
    path = tmp_path / "user.spec"
    runs[1].export("spec", path)
    runs[2].export("spec", path)
    sdf = spec2nexus_spec.SpecDataFile(str(path))
    assert sdf.getScanNumbers() == ["1", "2"]


def test_spec_into_directory_names_the_file_after_the_run(runs, tmp_path):
    (path,) = runs[2].export("spec", tmp_path)
    assert os.path.basename(path) == f"scan2_{runs[2].uid[:8]}.spec"


def test_several_descriptors_and_streams(runs, tmp_path):
    run = runs[5]
    assert len(run.primary.metadata["descriptors"]) == 2
    (path,) = run.export("spec", tmp_path / "x.spec")
    scan = spec2nexus_spec.SpecDataFile(path).getScan(5)
    assert scan.L == ["motor", "Epoch", "det"]
    np.testing.assert_allclose(scan.data["det"], run.primary.read()["det"].values)  # 10, 20, 30
    assert any("stream 'monitor' (3 events) is not in this scan" in c for c in scan.comments)
    paths = run.export("csv", tmp_path)
    assert sorted(os.path.basename(p).split("_", 2)[2] for p in paths) == [
        "metadata.json", "monitor.csv", "primary.csv"]
    md = json.load(open(paths[0]))
    gains = [d["configuration"]["det"]["data"]["det_gain"] for d in md["descriptors"]["primary"]]
    assert gains == [1.0, 10.0]
    (nxs,) = run.export("nexus", tmp_path)
    entry = nexus.nxload(nxs)["entry"]
    np.testing.assert_array_equal(entry["bluesky/streams/monitor/I0"].nxdata, [100.0, 101.0, 102.0])
    assert entry["data"].nxsignal.nxname == "det"


# --- NeXus --------------------------------------------------------------------------------------
def test_nexus_export_read_by_nexusformat(runs, tmp_path):
    run = runs[1]
    (path,) = run.export("nexus", tmp_path)
    root = nexus.nxload(path)
    entry = root["entry"]
    assert root.nxclass == "NXroot" and entry.nxclass == "NXentry"
    data = entry["data"]
    assert data.nxclass == "NXdata"
    assert data.nxsignal.nxname == "det" and [a.nxname for a in data.nxaxes] == ["motor"]
    ds = run.primary.read()
    np.testing.assert_array_equal(data.nxsignal.nxdata, ds["det"].values)
    np.testing.assert_array_equal(data["motor"].nxdata, ds["motor"].values)
    assert entry["instrument"].nxclass == "NXinstrument" and entry["sample"].nxclass == "NXsample"
    assert str(entry["entry_identifier"].nxvalue) == run.uid
    assert str(entry["exit_status"].nxvalue) == "success"
    start = json.loads(entry["bluesky/start_json"].nxvalue)
    assert start["uid"] == run.uid and start["plan_name"] == "scan"
    assert str(entry["bluesky/start/plan_name"].nxvalue) == "scan"
    assert int(entry["bluesky/start/scan_id"].nxvalue) == 1
    img = entry["bluesky/streams/primary/img"]
    assert img.shape == (5, 10, 10)
    np.testing.assert_array_equal(img.nxdata, ds["img"].values)
    base = entry["bluesky/streams/baseline/motor1"].nxdata
    np.testing.assert_array_equal(base, run.baseline.read()["motor1"].values)


def test_nexus_grid_scan_axes_from_hints(runs, tmp_path):
    (path,) = runs[2].export("nexus", tmp_path)
    data = nexus.nxload(path)["entry/data"]
    assert data.nxsignal.nxname == "det"
    assert [a.nxname for a in data.nxaxes] == ["motor1"]
    assert int(data.attrs["motor2_indices"]) == 0
    np.testing.assert_array_equal(data["motor2"].nxdata, runs[2].primary.read()["motor2"].values)


# --- live callbacks -----------------------------------------------------------------------------
def test_live_files_grow_while_the_run_goes(session):
    growth = session["growth"]
    assert len(growth) == 5
    # the probe is called after the writers for each event: event k is on disk already
    assert [g[0] for g in growth] == [1, 2, 3, 4, 5]
    assert [g[1] for g in growth] == [1, 2, 3, 4, 5]


def test_live_spec_file_matches_the_stored_runs(session, runs):
    sdf = spec2nexus_spec.SpecDataFile(str(session["live"] / "live.spec"))
    assert sdf.getScanNumbers() == ["1", "2", "3", "4", "5"]
    for sid in (1, 2):
        ds = runs[sid].primary.read()
        np.testing.assert_allclose(sdf.getScan(sid).data["det"], ds["det"].values)
    assert sdf.getScan(5).data["det"] == [10.0, 20.0, 30.0]  # two descriptors, one scan


def test_live_abort_leaves_valid_files_saying_so(session, runs):
    live, run = session["live"], runs[3]
    assert run.metadata["stop"]["exit_status"] == "abort"
    scan = spec2nexus_spec.SpecDataFile(str(live / "live.spec")).getScan(3)
    assert len(scan.data["det"]) == 2
    assert any("exit_status = abort" in c for c in scan.comments)
    assert any(c.endswith("Scan aborted after 2 points (abort)") for c in scan.comments)
    failed = spec2nexus_spec.SpecDataFile(str(live / "live.spec")).getScan(4)
    assert any("exit_status = fail" in c for c in failed.comments)
    assert any("Scan aborted after 2 points (fail): sample fell off" in c for c in failed.comments)

    prefix = f"scan3_{run.uid[:8]}"
    md = json.loads((live / "csv" / f"{prefix}_metadata.json").read_text())
    assert md["stop"]["exit_status"] == "abort"
    _, rows = _read_csv(live / "csv" / f"{prefix}_primary.csv")
    assert len(rows) == 2
    doc = json.loads((live / "json" / f"{prefix}.json").read_text(), parse_constant=_no_constant)
    assert doc["metadata"]["stop"]["exit_status"] == "abort"
    assert len(doc["primary"]["data_vars"]["det"]["data"]) == 2
    entry = nexus.nxload(str(live / "nexus" / f"{prefix}.nxs"))["entry"]
    assert str(entry["exit_status"].nxvalue) == "abort"
    assert entry["data"].nxsignal.shape == (2,)
    assert not glob.glob(str(live / "json" / ".*spool"))  # spool files are cleaned up


def test_live_csv_and_json_values_match_read(session, runs):
    live, run = session["live"], runs[1]
    prefix = f"scan1_{run.uid[:8]}"
    ds = run.primary.read()
    header, rows = _read_csv(live / "csv" / f"{prefix}_primary.csv")
    det = [float(r[header.index("det")]) for r in rows]
    np.testing.assert_array_equal(det, ds["det"].values)
    # live, area-detector frames are not filled: the cells hold the datum ids
    assert all("/" in r[header.index("img")] for r in rows)
    doc = json.loads((live / "json" / f"{prefix}.json").read_text(), parse_constant=_no_constant)
    np.testing.assert_array_equal(doc["primary"]["data_vars"]["motor"]["data"], ds["motor"].values)
    entry = nexus.nxload(str(live / "nexus" / f"{prefix}.nxs"))["entry"]
    np.testing.assert_array_equal(entry["data/det"].nxdata, ds["det"].values)


def test_live_several_descriptors_one_csv_file_per_stream(session, runs):
    prefix = f"scan5_{runs[5].uid[:8]}"
    header, rows = _read_csv(session["live"] / "csv" / f"{prefix}_primary.csv")
    assert header == ["time", "det", "motor"] and [r[1] for r in rows] == ["10.0", "20.0", "30.0"]
    _, rows = _read_csv(session["live"] / "csv" / f"{prefix}_monitor.csv")
    assert [r[1] for r in rows] == ["100.0", "101.0", "102.0"]


def test_live_spec_new_keys_mid_run_continue_as_a_new_scan(tmp_path):
    """Not what event-model composes, but documents from elsewhere may do it."""
    docs = make_run_docs(2, metadata={"scan_id": 8, "plan_name": "count"},
                         data_keys={"x": {"source": "s", "dtype": "number", "shape": []}},
                         data=lambda i: {"x": float(i)}, stop=False)
    start, desc = docs[0][1], docs[1][1]
    desc2 = dict(desc, uid="desc-2", data_keys={**desc["data_keys"],
                                                "y": {"source": "s", "dtype": "number", "shape": []}})
    ev = {"uid": "ev-3", "descriptor": "desc-2", "time": start["time"] + 1, "seq_num": 3,
          "data": {"x": 2.0, "y": 5.0}, "timestamps": {"x": 0, "y": 0}}
    stop = {"uid": "stop-8", "run_start": start["uid"], "time": start["time"] + 2,
            "exit_status": "success"}
    w = SpecWriter(tmp_path / "n.spec")
    for name, doc in [*docs, ("descriptor", desc2), ("event", ev), ("stop", stop)]:
        w(name, doc)
    sdf = spec2nexus_spec.SpecDataFile(str(tmp_path / "n.spec"))
    assert sdf.getScanNumbers() == ["8", "8.1"]
    assert sdf.getScan(8).data["x"] == [0.0, 1.0]
    assert sdf.getScan("8.1").data["y"] == [5.0]


def test_live_image_shape_changed_mid_run_loses_no_rows(tmp_path):
    """A detector's ROI changed mid-run (a second descriptor declares another shape): the
    live CSV and NeXus writers keep going and write every row (they raised before, which
    a RunEngine takes as the scan failing)."""
    import h5py
    docs = make_run_docs(2, metadata={"scan_id": 9, "plan_name": "count"},
                         data_keys={"img": {"source": "s", "dtype": "array", "shape": [2, 2]}},
                         data=lambda i: {"img": np.full((2, 2), i)}, stop=False)
    start, desc = docs[0][1], docs[1][1]
    desc2 = dict(desc, uid="desc-roi", data_keys={"img": {"source": "s", "dtype": "array",
                                                          "shape": [3, 3]}})
    ev = {"uid": "ev-3", "descriptor": "desc-roi", "time": start["time"] + 1, "seq_num": 3,
          "data": {"img": np.full((3, 3), 7).tolist()}, "timestamps": {"img": 0}}
    back = {"uid": "ev-4", "descriptor": desc["uid"], "time": start["time"] + 1.5, "seq_num": 4,
            "data": {"img": np.full((2, 2), 9).tolist()}, "timestamps": {"img": 0}}
    stop = {"uid": "stop-9", "run_start": start["uid"], "time": start["time"] + 2,
            "exit_status": "success"}
    writers = [CSVWriter(tmp_path / "csv"), NexusWriter(tmp_path / "nexus")]
    for name, doc in [*docs, ("descriptor", desc2), ("event", ev), ("event", back), ("stop", stop)]:
        for w in writers:
            w(name, doc)
    (path,) = glob.glob(str(tmp_path / "csv" / "*_primary.csv"))
    _, rows = _read_csv(path)
    assert len(rows) == 4 and json.loads(rows[2][1]) == [[7] * 3] * 3
    (nxs,) = glob.glob(str(tmp_path / "nexus" / "*.nxs"))
    with h5py.File(nxs, "r") as f:
        g = f["entry/bluesky/streams/primary"]
        assert g["time"].shape == (4,)  # every key's rows in step with time
        assert g["img"].shape == (4, 2, 2) and g["img"][1].tolist() == [[1, 1], [1, 1]]
        assert g["img"][3].tolist() == [[9, 9], [9, 9]]
        assert g["img_shape_3x3"].shape == (4, 3, 3) and g["img_shape_3x3"][2].tolist() == [[7] * 3] * 3


def test_run_without_stop_is_marked_incomplete(cat, tmp_path):
    insert_all(cat, make_run_docs(2, stop=False, metadata={"scan_id": 7, "plan_name": "count"}))
    run = cat[7]
    (spec,) = run.export("spec", tmp_path / "x.spec")
    assert "the run has no stop document" in open(spec).read()
    (nxs,) = run.export("nexus", tmp_path)
    assert "incomplete" in nexus.nxload(nxs)["entry/exit_status"].nxvalue


def test_document_level_abort_and_event_pages(tmp_path):
    """A stop document saying 'abort', and event_page documents, straight to the callbacks."""
    import event_model
    docs = make_run_docs(3, metadata={"scan_id": 9, "plan_name": "count"}, stop=False)
    start, desc = docs[0][1], docs[1][1]
    events = [d for n, d in docs if n == "event"]
    page = event_model.pack_event_page(*events)
    stop = {"uid": "s-9", "time": start["time"] + 1, "run_start": start["uid"],
            "exit_status": "abort", "reason": "operator", "num_events": {"primary": 3}}
    w = SpecWriter(tmp_path / "p.spec")
    for name, doc in [("start", start), ("descriptor", desc), ("event_page", page), ("stop", stop)]:
        w(name, doc)
    scan = spec2nexus_spec.SpecDataFile(str(tmp_path / "p.spec")).getScan(9)
    assert scan.data["x"] == [0.0, 1.5, 3.0] and scan.data["n"] == [0, 1, 2]
    assert scan.data["flag"] == [0, 1, 0]
    assert any("Scan aborted after 3 points (abort): operator" in c for c in scan.comments)


# --- images: never the whole stack in memory --------------------------------------------------
class _Recorder(ExportWriter):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def rows(self, descriptor: dict, page: dict) -> None:
        self.sizes.append(len(page["time"]))


def test_images_are_exported_a_block_at_a_time(runs, monkeypatch, tmp_path):
    from databroker_lite.stream import Stream

    def no_read(self, *a, **k):
        raise AssertionError("export must not read a whole stream into memory")

    monkeypatch.setattr(Stream, "read", no_read)
    frame = 10 * 10 * 8
    monkeypatch.setattr(_common, "BLOCK_BYTES", 2 * (frame + 3 * 8))
    rec = _Recorder()
    _common.replay(runs[1], rec, streams=["primary"])
    assert rec.sizes == [2, 2, 1]
    paths = runs[1].export("nexus", tmp_path)  # and a real export works that way too
    monkeypatch.undo()
    img = nexus.nxload(paths[0])["entry/bluesky/streams/primary/img"].nxdata
    np.testing.assert_array_equal(img, runs[1].primary.read()["img"].values)


# --- command line and errors ------------------------------------------------------------------
def test_cli_export_several_runs(session, runs, tmp_path, capsys):
    catdir = str(session["cat"].directory)
    out = tmp_path / "cli.spec"
    assert cli.main(["export", catdir, "1", "-4", runs[5].uid[:10], "spec", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out)]
    assert spec2nexus_spec.SpecDataFile(str(out)).getScanNumbers() == ["1", "2", "5"]
    assert cli.main(["export", catdir, "--query", '{"plan_name": "grid_scan"}', "csv",
                     str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3 and all(f"scan2_{runs[2].uid[:8]}" in p for p in printed)
    assert cli.main(["export", catdir, "-1", "json", str(tmp_path / "j"), "--streams", "primary"]) == 0
    (jpath,) = capsys.readouterr().out.split()
    assert list(json.load(open(jpath))) == ["format", "nonfinite_floats", "metadata", "primary"]
    assert cli.main(["export", catdir, "99", "csv", str(tmp_path / "c")]) == 1
    assert "no run has scan_id 99" in capsys.readouterr().err


def test_unknown_format_is_refused(runs, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'xlsx'.*csv"):
        runs[1].export("xlsx", tmp_path)


def test_writers_are_document_routers():
    import event_model
    for cls in (CSVWriter, JSONWriter, NexusWriter, SpecWriter):
        assert issubclass(cls, event_model.DocumentRouter)


def test_every_kind_of_column(cat, tmp_path):
    """Numbers, integers, text, booleans and 1-d arrays, in all four formats."""
    insert_all(cat, make_run_docs(4))
    run = cat[-1]
    ds = run.primary.read()
    paths = run.export("csv", tmp_path / "csv")
    header, rows = _read_csv([p for p in paths if p.endswith("primary.csv")][0])
    assert header == ["time", "x", "n", "label", "flag", "vec"]
    assert [r[3] for r in rows] == ["point 0", "point 1", "point 2", "point 3"]
    np.testing.assert_array_equal(np.load([p for p in paths if p.endswith("_vec.npy")][0]),
                                  ds["vec"].values)
    (spec,) = run.export("spec", tmp_path / "s.spec")
    scan = spec2nexus_spec.SpecDataFile(spec).getScan(1)
    assert scan.L == ["Epoch", "x", "n", "flag"] and scan.data["flag"] == [0, 1, 0, 1]
    assert any("label, vec" in c for c in scan.comments)
    (nxs,) = run.export("nexus", tmp_path / "n")
    entry = nexus.nxload(nxs)["entry"]
    assert entry["data"].nxsignal.nxname == "x"  # a number, not the boolean flag
    assert [a.nxname for a in entry["data"].nxaxes] == ["time"]  # a count: no motor
    assert list(entry["bluesky/streams/primary/label"].nxvalue) == list(ds["label"].values)
    (js,) = run.export("json", tmp_path / "j")
    data = json.load(open(js))["primary"]["data_vars"]
    assert data["flag"]["data"] == [False, True, False, True]
    assert data["vec"]["data"][1] == [1.0, 1.5, -1.0] and data["vec"]["dims"] == ["time", "vec_dim_0"]


def test_variable_length_column_is_exported_whole(cat, tmp_path):
    """Rows of different lengths (one of 5,000 values) lose nothing in CSV or NeXus."""
    import h5py
    bundle = event_model.compose_run(metadata={"scan_id": 7})
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "x"},
        "spec": {"dtype": "array", "shape": [None], "source": "mca"}})
    cat.insert("descriptor", desc.descriptor_doc)
    rows = [np.arange(3.0), np.linspace(0, 1, 5000), np.array([7.5])]
    for i, r in enumerate(rows):
        cat.insert("event", desc.compose_event(data={"x": float(i), "spec": r},
                                               timestamps={"x": 1.0, "spec": 1.0}, seq_num=i + 1))
    cat.insert("stop", bundle.compose_stop())
    run = cat[7]
    paths = run.export("csv", tmp_path / "csv")
    header, cells = _read_csv([p for p in paths if p.endswith("primary.csv")][0])
    col = header.index("spec")
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(np.load(tmp_path / "csv" / cells[i][col]), r)
    (nxs,) = run.export("nexus", tmp_path / "n")
    with h5py.File(nxs, "r") as f:
        g = f["entry/bluesky/streams/primary"]
        for i, r in enumerate(rows):
            np.testing.assert_array_equal(g["spec"][i].reshape(g["spec_shape"][i]), r)


# --- destinations ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "json", "spec", "nexus"])
def test_every_format_takes_a_directory(runs, tmp_path, fmt):
    dest = tmp_path / "new" / fmt  # not there yet: created
    paths = runs[1].export(fmt, dest)
    assert paths and all(os.path.dirname(p) == str(dest) for p in paths)
    assert all(os.path.basename(p).startswith(f"scan1_{runs[1].uid[:8]}") for p in paths)
    again = runs[1].export(fmt, str(dest) + os.sep)  # an existing directory, spelt with /
    assert {os.path.dirname(p) for p in again} == {str(dest)}


@pytest.mark.parametrize("fmt,name", [("json", "mine.json"), ("nexus", "mine.h5"),
                                      ("nexus", "mine.nxs"), ("spec", "mine.dat")])
def test_a_file_where_one_file_holds_the_export(runs, tmp_path, fmt, name):
    (path,) = runs[1].export(fmt, tmp_path / "sub" / name)
    assert path == str(tmp_path / "sub" / name) and os.path.isfile(path)
    assert os.listdir(tmp_path / "sub") == [name]  # no spool or partial file left


def test_several_runs_into_one_json_file_is_refused(runs, tmp_path):
    with pytest.raises(databroker_lite.ExportError, match="2 runs cannot go into the one json "
                                                          "file .*give a directory"):
        export([runs[1], runs[2]], "json", tmp_path / "both.json")
    assert not (tmp_path / "both.json").exists()


def test_an_unwritable_destination_is_an_export_error(runs, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for fmt in ("csv", "json", "spec", "nexus"):
        with pytest.raises(databroker_lite.ExportError, match=f"cannot write the {fmt} export to "
                                                              f".*afile.*"):
            runs[1].export(fmt, blocker / "out")
    with pytest.raises(databroker_lite.ExportError, match="afile is a file, not a directory"):
        runs[1].export("csv", blocker)
    catdir = runs[1].catalog.directory
    assert cli.main(["export", catdir, "1", "csv", str(blocker / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("databroker-lite export: error: cannot write the csv export")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_format_is_an_export_error_and_a_value_error(runs, tmp_path):
    with pytest.raises(databroker_lite.ExportError) as info:
        runs[1].export("xlsx", tmp_path)
    assert isinstance(info.value, ValueError)
    assert os.listdir(tmp_path) == []
