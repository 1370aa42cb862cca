"""A beamline's day with ophyd-async's simulated devices, end to end.

A ``SimStage`` moves, a ``SimBlobDetector`` writes its frames to its own HDF5 files
(stream_resource / stream_datum) and a ``SimPointDetector`` reads numbers, in a ``scan``
with a baseline and a ``grid_scan``, with the catalog's writer and all four live export
writers subscribed. Then: the runs read locally (compared with the detector's own
files), through the stock tiled client and databroker 2's classes, after pack ->
verify -> unpack with the detector's files gone, and exported (read back with
spec2nexus and nexusformat).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import databroker_lite

pytest.importorskip("ophyd_async")

from ophyd_async.core import StaticPathProvider, UUIDFilenameProvider, init_devices  # noqa: E402
from ophyd_async.sim import (  # noqa: E402
    PatternGenerator,
    SimBlobDetector,
    SimPointDetector,
    SimStage,
)

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The catalog, the live exports' directory and the uids of a ``scan``, a ``grid_scan``
    and a ``rel_scan``."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    import bluesky.preprocessors as bpp
    from bluesky import RunEngine

    from databroker_lite.export import CSVWriter, JSONWriter, NexusWriter, SpecWriter

    tmp = tmp_path_factory.mktemp("async_day")
    (tmp / "det").mkdir()
    cat = databroker_lite.open_catalog(tmp / "cat")
    RE = RunEngine({}, context_managers=[])  # noqa: N806
    RE.subscribe(cat.writer)
    live = tmp / "live"
    for writer in (SpecWriter(live / "beamtime.spec"), CSVWriter(live), JSONWriter(live),
                   NexusWriter(live)):
        RE.subscribe(writer)
    pattern = PatternGenerator()
    with init_devices():  # names the devices after their variables
        stage = SimStage(pattern)
        blob = SimBlobDetector(StaticPathProvider(UUIDFilenameProvider(), tmp / "det"), pattern)
        point = SimPointDetector(pattern)
    RE(bps.mv(stage.x.velocity, 1000, stage.y.velocity, 1000))
    RE.preprocessors.append(bpp.SupplementalData(baseline=[stage]))
    scan_uid, = RE(bp.scan([blob, point], stage.x, -2, 2, 4), sample="Cu foil")
    grid_uid, = RE(bp.grid_scan([blob], stage.x, -1, 1, 2, stage.y, 0, 1, 2))
    rel_uid, = RE(bp.rel_scan([blob], stage.y, -1, 1, 3))  # the frames only, and a baseline
    RE.preprocessors.clear()
    return {"tmp": tmp, "cat": cat, "live": live, "scan": scan_uid, "grid": grid_uid,
            "rel": rel_uid}


def _detector_file(run) -> tuple[np.ndarray, np.ndarray]:
    """(frames, sums) as the detector wrote them, read with plain h5py."""
    (uri,) = {r["uri"] for r in run.resources()}
    with h5py.File(uri[len("file://localhost"):], "r") as f:
        return f["entry/data/data"][()], f["entry/sum"][()]


def test_a_scan_with_a_baseline_reads_the_detectors_frames(day) -> None:
    run = day["cat"][day["scan"]]
    assert list(run) == ["baseline", "primary"]
    frames, sums = _detector_file(run)
    assert frames.shape == (4, 240, 320)
    ds = run.primary.read()
    assert ds["blob"].dtype == np.uint8 and ds["blob"].shape == (4, 240, 320)
    np.testing.assert_array_equal(ds["blob"].values, frames)
    np.testing.assert_array_equal(ds["blob-sum"].values, sums)
    np.testing.assert_allclose(ds["stage-x"].values, [-2, -2 / 3, 2 / 3, 2])
    assert ds["point-channel-1-value"].shape == (4,)
    assert ds.equals(run.primary.to_dask().compute())
    col = run.primary["blob"]
    assert (col.shape, col.dtype) == (frames.shape, frames.dtype)
    np.testing.assert_array_equal(col[3], frames[3])
    np.testing.assert_array_equal(col[1:3], frames[1:3])
    np.testing.assert_array_equal(col[..., 10], frames[..., 10])
    np.testing.assert_array_equal(col[:, 100:110, -5:], frames[:, 100:110, -5:])
    np.testing.assert_allclose(col.mean(), frames.mean(axis=0))
    np.testing.assert_array_equal(run.baseline.read()["stage-x"].values, [0.0, 2.0])


def test_the_detectors_settled_file_is_read_from_its_bytes(day) -> None:
    """ophyd-async's HDF5 file, once settled, is read without HDF5 (storage.direct): the
    same frames and sums as h5py reads, through read(), to_dask() and stream[key]."""
    from databroker_lite.storage import direct
    run = day["cat"][day["grid"]]
    frames, sums = _detector_file(run)
    (uri,) = {r["uri"] for r in run.resources()}
    path = uri[len("file://localhost"):]
    t = os.path.getmtime(path) - 3600
    os.utime(path, (t, t))
    direct._LAYOUTS.clear()
    for _ in range(2):  # learnt through HDF5, then read from the bytes
        ds = run.primary.read()
        np.testing.assert_array_equal(ds["blob"].values, frames)
        np.testing.assert_array_equal(ds["blob-sum"].values, sums)
    assert direct._LAYOUTS.get((path, "/entry/data/data")) is not None, direct._LAYOUTS
    np.testing.assert_array_equal(run.primary.to_dask()["blob"][2:4].compute().values, frames[2:4])


def test_a_grid_scan_reads_its_positions_and_frames(day) -> None:
    run = day["cat"][day["grid"]]
    ds = run.primary.read()
    np.testing.assert_array_equal(ds["stage-x"].values, [-1, -1, 1, 1])
    np.testing.assert_array_equal(ds["stage-y"].values, [0, 1, 0, 1])
    frames, _ = _detector_file(run)
    np.testing.assert_array_equal(run.primary["blob"][:], frames)


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None
                        for m in ("tiled", "fastapi", "bluesky_tiled_plugins")),
                    reason="needs tiled[server] and bluesky-tiled-plugins")
def test_served_to_the_stock_tiled_client_and_databroker2(day) -> None:
    from tiled.client import Context, from_context
    from tiled.queries import Key

    from databroker_lite.server import build_app
    run = day["cat"][day["scan"]]
    frames, sums = _detector_file(run)
    with Context.from_app(build_app([day["cat"].directory], KEY), api_key=KEY) as ctx:
        client = from_context(ctx)
        remote = client[run.uid]
        assert type(remote).__name__.startswith("BlueskyRun")  # databroker 2's class, by spec
        assert remote.start["sample"] == "Cu foil"
        arr = remote["primary"]["data"]["blob"]
        assert (arr.shape, arr.dtype) == (frames.shape, frames.dtype)
        np.testing.assert_array_equal(arr[2], frames[2])
        np.testing.assert_array_equal(arr[..., 10], frames[..., 10])
        np.testing.assert_array_equal(arr.read(slice=(slice(0, 2),)), frames[:2])
        ds = remote.primary.read()
        np.testing.assert_array_equal(ds["blob"].values, frames)
        np.testing.assert_array_equal(ds["blob-sum"].values, sums)
        assert list(client.search(Key("start.plan_name") == "grid_scan")) == [day["grid"]]


def test_pack_verify_unpack_without_the_detectors_files(day, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "configs"))
    src = day["cat"]
    want = {uid: src[uid].primary.read() for uid in src}
    report = databroker_lite.pack(src, tmp_path / "pack", all=True, quiet=True)
    assert len(report.runs) == 3
    assert databroker_lite.verify(tmp_path / "pack").ok
    added = databroker_lite.unpack(tmp_path / "pack", "site-b", to=tmp_path / "site-b")
    assert len(added.added) == 3
    det = day["tmp"] / "det"
    os.rename(det, det.with_name("det.gone"))  # the pack carries the detector's files
    try:
        fresh = databroker_lite.catalog["site-b"]
        for uid, ds in want.items():
            got = fresh[uid].primary.read()
            assert got.equals(ds)
            np.testing.assert_array_equal(fresh[uid].primary["blob"][1], ds["blob"].values[1])
    finally:
        os.rename(det.with_name("det.gone"), det)


def test_pack_external_fill_refuses_stream_resources_naming_every_run(day,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(databroker_lite.PackError, match="--external copy") as info:
        databroker_lite.pack(day["cat"], tmp_path / "pack", all=True, external="fill",
                             quiet=True)
    assert all(day[k] in str(info.value) for k in ("scan", "grid", "rel"))
    assert "3 of the 3 runs" in str(info.value)
    assert not (tmp_path / "pack").exists()


def test_exports_read_back_with_spec2nexus_and_nexusformat(day, tmp_path: Path) -> None:
    pytest.importorskip("spec2nexus")
    nx = pytest.importorskip("nexusformat.nexus")
    from spec2nexus.spec import SpecDataFile
    run = day["cat"][day["scan"]]
    ds = run.primary.read()
    (spec,) = run.export("spec", tmp_path / "spec")
    scan = SpecDataFile(spec).getScan(1)
    scan.interpret()
    assert scan.S == "1 scan stage-x -2 2 4"  # the motor's name, not SimMotor(name="stage-x")
    assert scan.L[:2] == ["stage-x", "Epoch"] and "blob-sum" in scan.L
    np.testing.assert_array_equal(scan.data["blob-sum"], ds["blob-sum"].values)
    assert scan.positioner == {"stage-x": 0.0, "stage-y": 0.0}
    (nxs,) = run.export("nexus", tmp_path / "nexus")
    plot = nx.nxload(nxs).entry.plottable_data
    assert plot.nxsignal.nxname == "blob" and plot.nxaxes[0].nxname == "stage-x"
    np.testing.assert_array_equal(plot.nxsignal.nxdata, ds["blob"].values)


def test_live_writers_say_the_detectors_data_is_in_its_own_files(day) -> None:
    """Live, no event carries an ophyd-async detector's frames (they are in its files):
    the live files say so instead of writing fill values in their place."""
    pytest.importorskip("spec2nexus")
    from spec2nexus.spec import SpecDataFile
    live, uid = day["live"], day["scan"]
    spec = SpecDataFile(str(live / "beamtime.spec"))
    scan = spec.getScan(1)
    scan.interpret()
    assert scan.S == "1 scan stage-x -2 2 4"
    assert scan.L[:2] == ["stage-x", "Epoch"]
    assert any("in the detectors' own files" in c and c.endswith("blob, blob-sum")
               for c in scan.comments), scan.comments
    prefix = f"scan1_{uid[:8]}"
    doc = json.loads((live / f"{prefix}.json").read_text())
    primary = xr.Dataset.from_dict(doc["primary"])  # no NaN-filled (4, 1, 240, 320) blob
    assert "blob" not in primary and "blob-sum" not in primary
    assert primary.attrs["not_in_events"] == ["blob", "blob-sum"]
    assert set(primary.sizes) == {"time"}
    np.testing.assert_array_equal(primary["stage-x"].values,
                                  day["cat"][uid].primary.read()["stage-x"].values)
    with h5py.File(live / f"{prefix}.nxs", "r") as f:  # the point detector is the signal
        assert f["entry/data"].attrs["signal"].startswith("point-channel-")
        assert f["entry/data"].attrs["axes"].tolist() == ["stage-x"]
    rel = day["rel"]
    with h5py.File(live / f"scan3_{rel[:8]}.nxs", "r") as f:  # only the blob detector:
        assert "data" not in f["entry"]  # no plot of the baseline's stage-x against stage-y
        assert f["entry/bluesky/streams/primary/stage-y"].shape == (3,)
