"""Runs real Bluesky producers emit, stored and read back.

ophyd-async's simulated HDF5 detector (stream_resource/stream_datum, a frames-per-event
axis first in its descriptors), legacy stream_resource documents, ophyd.sim devices
whose describe() disagrees with their data, and bluesky plans of every kind
round-tripping document for document.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import databroker_lite

pytest.importorskip("ophyd_async")

from ophyd_async.core import (  # noqa: E402
    StaticFilenameProvider,
    StaticPathProvider,
    TriggerInfo,
    init_devices,
)
from ophyd_async.sim import SimBlobDetector  # noqa: E402


@pytest.fixture
def blob(tmp_path: Path, RE):  # noqa: N803
    """An ophyd-async SimBlobDetector writing ``tmp_path/blob/blob.h5``."""
    (tmp_path / "blob").mkdir()
    pp = StaticPathProvider(StaticFilenameProvider("blob"), tmp_path / "blob")
    with init_devices():  # names the device after its variable: "blob"
        blob = SimBlobDetector(pp)
    return blob


def _detector_file(run) -> tuple[np.ndarray, np.ndarray]:
    """The (images, sums) the detector wrote, read with plain h5py from its own file."""
    (res,) = {d["uri"] for d in run.resources()}
    path = res[len("file://localhost"):]
    with h5py.File(path, "r") as f:
        return f["entry/data/data"][()], f["entry/sum"][()]


def _fly(det, n: int, per_event: int = 1):
    import bluesky.plan_stubs as bps
    yield from bps.open_run()
    yield from bps.stage(det)
    yield from bps.prepare(det, TriggerInfo(number_of_events=n, collections_per_event=per_event),
                           wait=True)
    yield from bps.declare_stream(det, name="primary", collect=True)
    yield from bps.kickoff(det, wait=True)
    yield from bps.collect_while_completing([det], [det], flush_period=0.1)
    yield from bps.unstage(det)
    yield from bps.close_run()


def test_ophyd_async_count_reads_the_detectors_own_frames(RE, blob, cat):  # noqa: N803
    import bluesky.plans as bp
    RE.subscribe(cat.writer)
    (uid,) = RE(bp.count([blob], num=3))
    run = cat[uid]
    desc = run.primary.descriptors[0]
    assert desc["data_keys"]["blob"]["shape"] == [1, 240, 320]
    assert desc["data_keys"]["blob-sum"]["shape"] == [1]
    frames, sums = _detector_file(run)
    assert frames.shape == (3, 240, 320) and sums.shape == (3,)
    ds = run.primary.read()
    # [1, H, W] per event reads as (n_events, H, W) and [1] as one number per event,
    # the shapes bluesky's TiledWriter gives the same run
    assert ds["blob"].shape == (3, 240, 320) and ds["blob"].dtype == np.uint8
    assert ds["blob-sum"].shape == (3,) and ds["blob-sum"].dtype == np.int64
    np.testing.assert_array_equal(ds["blob"].values, frames)
    np.testing.assert_array_equal(ds["blob-sum"].values, sums)
    lazy = run.primary.to_dask()
    np.testing.assert_array_equal(lazy["blob"][1].compute().values, frames[1])
    assert lazy.compute().equals(ds)
    assert run.metadata["stop"]["exit_status"] == "success"


@pytest.mark.parametrize("per_event", [1, 2])
def test_ophyd_async_fly_collect_reads_every_frame(RE, blob, cat, per_event):  # noqa: N803
    RE.subscribe(cat.writer)
    (uid,) = RE(_fly(blob, 5, per_event))
    run = cat[uid]
    frames, sums = _detector_file(run)
    assert frames.shape == (5 * per_event, 240, 320)
    ds = run.primary.read()
    assert len(run.primary) == 5
    if per_event == 1:
        assert ds["blob"].shape == (5, 240, 320) and ds["blob-sum"].shape == (5,)
    else:  # k frames per event stay on their own axis: (n_events, k, H, W)
        assert ds["blob"].shape == (5, 2, 240, 320) and ds["blob-sum"].shape == (5, 2)
    np.testing.assert_array_equal(ds["blob"].values.reshape(frames.shape), frames)
    np.testing.assert_array_equal(ds["blob-sum"].values.reshape(sums.shape), sums)
    assert run.primary.to_dask().compute().equals(ds)
    # each key's stream_datums (how many depends on collect's timing) cover the 5 events
    covered: dict[str, int] = {}
    for name, doc in run.documents():
        if name == "stream_datum":
            rows = doc["indices"]["stop"] - doc["indices"]["start"]
            covered[doc["stream_resource"]] = covered.get(doc["stream_resource"], 0) + rows
    assert sorted(covered.values()) == [5, 5]


def _legacy_stream_run(tmp_path: Path, *, with_path_param: bool = True):
    """A run whose stream_resource is in the pre-1.20 event-model schema (no mimetype)."""
    import event_model
    data = np.arange(4 * 3 * 5, dtype="<f4").reshape(4, 3, 5)
    ext = tmp_path / "legacy"
    ext.mkdir()
    with h5py.File(ext / "det.h5", "w") as f:
        f["entry/data/data"] = data
    b = event_model.compose_run(metadata={"scan_id": 9})
    d = b.compose_descriptor(name="primary", data_keys={
        "det": {"source": "sim", "dtype": "array", "shape": [1, 3, 5], "dtype_numpy": "<f4",
                "external": "STREAM:"}})
    kwargs = {"path": "/entry/data/data"} if with_path_param else {"dataset": "/entry/data/data"}
    sres = {"uid": "sres-1", "run_start": b.start_doc["uid"], "data_key": "det",
            "spec": "AD_HDF5_SWMR_STREAM", "root": str(ext), "resource_path": "det.h5",
            "resource_kwargs": kwargs, "path_semantics": "posix"}
    sdat = {"uid": "sres-1/0", "stream_resource": "sres-1", "descriptor": d.descriptor_doc["uid"],
            "indices": {"start": 0, "stop": 4}, "seq_nums": {"start": 1, "stop": 5}}
    docs = [("start", b.start_doc), ("descriptor", d.descriptor_doc),
            ("stream_resource", sres), ("stream_datum", sdat), ("stop", b.compose_stop())]
    return docs, data


@pytest.mark.parametrize("with_path_param", [True, False])
def test_legacy_stream_resource_is_normalised_and_read(tmp_path, cat, with_path_param):
    docs, data = _legacy_stream_run(tmp_path, with_path_param=with_path_param)
    for name, doc in docs:
        cat.writer(name, doc)
    run = cat[docs[0][1]["uid"]]
    ds = run.primary.read()
    np.testing.assert_array_equal(ds["det"].values, data)
    assert run.primary.to_dask()["det"][2].compute().values.tolist() == data[2].tolist()
    (sres,) = [d for n, d in run.documents() if n == "stream_resource"]
    # the current schema's fields, derived as bluesky's TiledWriter derives them ...
    assert sres["mimetype"] == "application/x-hdf5"
    assert sres["uri"] == "file://localhost" + str(tmp_path / "legacy" / "det.h5")
    assert sres["parameters"]["dataset"] == "/entry/data/data"
    # ... and the legacy fields as they came
    assert sres["spec"] == "AD_HDF5_SWMR_STREAM" and sres["resource_path"] == "det.h5"


def test_legacy_stream_resource_follows_root_map(tmp_path):
    docs, data = _legacy_stream_run(tmp_path)
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    for name, doc in docs:
        cat.writer(name, doc)
    moved = tmp_path / "moved"
    (tmp_path / "legacy").rename(moved)
    cat2 = databroker_lite.open_catalog(tmp_path / "cat", root_map={str(tmp_path / "legacy"): str(moved)})
    np.testing.assert_array_equal(cat2[-1].primary.read()["det"].values, data)


# --- ophyd.sim devices whose describe() disagrees with what they read ----------------

def test_a_signal_described_as_a_number_that_reads_an_array(RE, cat):  # noqa: N803
    """An ophyd Signal described before its first array arrives (shape [] then [4])."""
    import bluesky.plan_stubs as bps
    from ophyd import Signal
    wave = Signal(name="wave", value=0.0)

    def plan():
        yield from bps.open_run()
        for i in range(3):
            yield from bps.trigger_and_read([wave])
            yield from bps.abs_set(wave, np.arange(4.0) * (i + 1))
        yield from bps.close_run()

    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cat.writer)
    with pytest.warns(databroker_lite.DescriptorMismatchWarning, match=r"data\['wave'\]") as rec:
        (uid,) = RE(plan())
    assert sum(issubclass(w.category, databroker_lite.DescriptorMismatchWarning) for w in rec) == 1
    run = cat[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    (desc,) = run.primary.descriptors
    assert desc["data_keys"]["wave"]["shape"] == [] and desc["data_keys"]["wave"]["dtype"] == "number"
    got = run.primary.read()["wave"].values
    assert got[0] == 0.0 and got[1].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert got[2].tolist() == [0.0, 2.0, 4.0, 6.0]
    from conftest import normalise
    assert normalise(list(run.documents())) == normalise(docs)


def test_synsignal_whose_array_grows_and_a_list_of_mixed_items(RE, cat):  # noqa: N803
    import bluesky.plans as bp
    from ophyd import Signal
    from ophyd.sim import SynSignal
    n = [0]

    def grow():
        n[0] += 1
        return np.ones(n[0] + 2)

    growing = SynSignal(func=grow, name="growing")  # describes [3], then reads 4, 5 values
    mixed = Signal(name="mixed", value=["a", 1, None])  # described as an array of [3]
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cat.writer)
    with pytest.warns(databroker_lite.DescriptorMismatchWarning) as rec:
        (uid,) = RE(bp.count([growing, mixed], num=3))
    msgs = [str(w.message) for w in rec if issubclass(w.category, databroker_lite.DescriptorMismatchWarning)]
    assert len(msgs) == 2 and any("'growing'" in m for m in msgs) and any("'mixed'" in m for m in msgs)
    run = cat[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    ds = run.primary.read()
    assert [len(v) for v in ds["growing"].values] == [len(d["data"]["growing"]) for name, d in docs
                                                      if name == "event"]
    assert [v for v in ds["mixed"].values] == [["a", 1, None]] * 3
    from conftest import normalise
    assert normalise(list(run.documents())) == normalise(docs)
    assert run.primary.to_dask()["growing"].compute().values[2].tolist() == ds["growing"].values[2].tolist()


# --- odd but schema-valid runs --------------------------------------------------------

def test_an_event_without_filled_comes_back_without_it(cat):
    from conftest import make_run_docs, normalise
    docs = make_run_docs(4)
    for i in (2, 4):  # two of the events were sent without the optional key
        docs[i] = ("event", {k: v for k, v in docs[i][1].items() if k != "filled"})
    for name, doc in docs[:4]:
        cat.writer(name, doc)
    cat.writer.flush()  # across a flush too
    for name, doc in docs[4:]:
        cat.writer(name, doc)
    out = list(cat[-1].documents())
    assert ["filled" in d for n, d in out if n == "event"] == [False, True, False, True]
    assert normalise(out) == normalise(docs)


def test_start_metadata_without_a_json_form_is_refused_before_anything_is_written(cat):
    import event_model
    b = event_model.compose_run(metadata={"sample": {"name": "Cu", "holder": object()}})
    with pytest.raises(databroker_lite.InvalidDocument) as info:
        cat.writer("start", b.start_doc)
    msg = str(info.value)
    assert b.start_doc["uid"] in msg and "sample/holder" in msg and "JSON" in msg
    assert len(cat) == 0 and [p for p in Path(cat.directory).iterdir() if p.suffix == ".h5"] == []
    d = event_model.compose_run(metadata={"sample": "Cu"})
    cat.writer("start", d.start_doc)
    cat.writer("stop", d.compose_stop())
    assert len(cat) == 1


def _external_run(tmp_path: Path, cat, n: int = 3):
    """A run with AD_HDF5 frames; returns (run, frames)."""
    import event_model
    frames = np.arange(n * 2 * 3, dtype="<u2").reshape(n, 2, 3)
    with h5py.File(tmp_path / "frames.h5", "w") as f:
        f["entry/data/data"] = frames
    b = event_model.compose_run()
    d = b.compose_descriptor(name="primary", data_keys={"img": {
        "source": "s", "dtype": "array", "shape": [2, 3], "dtype_numpy": "<u2", "external": "FILESTORE:"}})
    res = b.compose_resource(spec="AD_HDF5", root=str(tmp_path), resource_path="frames.h5",
                             resource_kwargs={"frame_per_point": 1})
    cat.writer("start", b.start_doc)
    cat.writer("descriptor", d.descriptor_doc)
    cat.writer("resource", res.resource_doc)
    for i in range(n):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        cat.writer("datum", datum)
        cat.writer("event", d.compose_event(data={"img": datum["datum_id"]}, timestamps={"img": 1.0},
                                            seq_num=i + 1))
    cat.writer("stop", b.compose_stop())
    return cat[-1], frames


@pytest.mark.parametrize("fill, kind", [(True, "yes"), ("yes", "yes"), ("delayed", "delayed"),
                                        (False, "no"), ("no", "no")])
def test_documents_fill_takes_databrokers_spellings(tmp_path, cat, fill, kind):
    run, frames = _external_run(tmp_path, cat)
    events = [d for n, d in run.documents(fill=fill) if n == "event"]
    values = [e["data"]["img"] for e in events]
    if kind == "no":
        assert all(isinstance(v, str) for v in values)  # datum ids, as inserted
        assert "datum" in [n for n, _ in run.documents(fill=fill)]
        return
    if kind == "delayed":
        import dask.array as da
        assert all(isinstance(v, da.Array) for v in values)
        values = [v.compute() for v in values]
    np.testing.assert_array_equal(np.stack(values), frames)
    assert "datum" not in [n for n, _ in run.documents(fill=fill)]


@pytest.mark.parametrize("fill", ["true", "No", 1, None, "lazy"])
def test_documents_fill_refuses_anything_else(tmp_path, cat, fill):
    run, _ = _external_run(tmp_path, cat)
    with pytest.raises(databroker_lite.InvalidArgument, match=f"fill={fill!r}.*'delayed'"):
        run.documents(fill=fill)
    assert issubclass(databroker_lite.InvalidArgument, ValueError)


def test_empty_streams_with_large_keys_and_an_empty_stream_datum(tmp_path, cat):
    import event_model
    b = event_model.compose_run()
    d = b.compose_descriptor(name="primary", data_keys={
        "img": {"source": "s", "dtype": "array", "shape": [4096, 4096], "dtype_numpy": "<u2",
                "external": "FILESTORE:"},
        "big": {"source": "s", "dtype": "array", "shape": [4096, 4096], "dtype_numpy": "<u2"},
        "cam": {"source": "s", "dtype": "array", "shape": [1, 64, 64], "dtype_numpy": "<u2",
                "external": "STREAM:"}})
    with h5py.File(tmp_path / "cam.h5", "w") as f:
        f.create_dataset("entry/data/data", shape=(0, 64, 64), maxshape=(None, 64, 64), dtype="<u2")
    cat.writer("start", b.start_doc)
    cat.writer("descriptor", d.descriptor_doc)
    cat.writer("stream_resource", {
        "uid": "r1", "run_start": b.start_doc["uid"], "data_key": "cam", "mimetype": "application/x-hdf5",
        "uri": f"file://localhost{tmp_path / 'cam.h5'}", "parameters": {"dataset": "/entry/data/data"}})
    cat.writer("stream_datum", {"uid": "r1/0", "stream_resource": "r1", "descriptor": d.descriptor_doc["uid"],
                                "indices": {"start": 0, "stop": 0}, "seq_nums": {"start": 0, "stop": 0}})
    cat.writer("stop", b.compose_stop())
    run = cat[-1]
    assert len(run.primary) == 0
    ds = run.primary.read()
    lazy = run.primary.to_dask()
    for got in (ds, lazy, lazy.compute()):
        assert got.sizes["time"] == 0
        assert got["img"].shape == (0, 4096, 4096) and got["big"].shape == (0, 4096, 4096)
        assert got["cam"].shape == (0, 64, 64) and got["cam"].dtype == np.uint16
    assert run.primary["cam"].shape == (0, 64, 64)
    assert [n for n, _ in run.documents()].count("stream_datum") == 1


# --- bluesky plans across the board: documents out == documents in ------------------

def _singles(docs):
    import event_model
    out = []
    for name, doc in docs:
        if name == "event_page":
            out += [("event", e) for e in event_model.unpack_event_page(doc)]
        elif name == "datum_page":
            out += [("datum", d) for d in event_model.unpack_datum_page(doc)]
        else:
            out.append((name, doc))
    return out


def _plans(hw):
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    import bluesky.preprocessors as bpp
    from bluesky.utils import FailedStatus  # noqa: F401 - the kind of failure a plan raises

    def failing():
        yield from bps.open_run()
        yield from bps.trigger_and_read([hw.det])
        raise RuntimeError("the plan fails mid-run")

    def empty_streams():
        yield from bps.open_run()
        yield from bps.declare_stream(hw.det, name="never_read")
        yield from bps.close_run()

    def monitored():
        return (yield from bpp.monitor_during_wrapper(bp.count([hw.det], num=3, delay=0.05),
                                                      [hw.rand]))

    return {
        "count": lambda: bp.count([hw.det, hw.img], num=3),
        "scan": lambda: bp.scan([hw.det], hw.motor, -1, 1, 5),
        "grid_scan": lambda: bp.grid_scan([hw.det4], hw.motor1, -1, 1, 3, hw.motor2, -1, 1, 2),
        "fly": lambda: bp.fly([hw.trivial_flyer]),
        "monitor": monitored,
        "failing": failing,
        "empty_streams": empty_streams,
    }


@pytest.mark.parametrize("plan", ["count", "scan", "grid_scan", "fly", "monitor", "failing",
                                  "empty_streams", "aborted"])
def test_bluesky_plans_round_trip_exactly(RE, hw, cat, plan):  # noqa: N803
    from conftest import normalise
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE.subscribe(cat.writer)
    if hasattr(hw.rand, "start_simulation"):
        hw.rand.start_simulation()
    if plan == "aborted":
        import bluesky.plan_stubs as bps

        def pausing():
            yield from bps.open_run()
            yield from bps.trigger_and_read([hw.det])
            yield from bps.checkpoint()
            yield from bps.pause()
            yield from bps.trigger_and_read([hw.det])
            yield from bps.close_run()
        from bluesky.utils import RunEngineInterrupted
        with pytest.raises(RunEngineInterrupted):
            RE(pausing())
        assert RE.state == "paused"
        RE.abort("stopped by the user")
        status = "abort"
    elif plan == "failing":
        with pytest.raises(RuntimeError, match="fails mid-run"):
            RE(_plans(hw)[plan]())
        status = "fail"
    else:
        RE(_plans(hw)[plan]())
        status = "success"
    if hasattr(hw.rand, "stop_simulation"):
        hw.rand.stop_simulation()
    starts = [d for n, d in docs if n == "start"]
    assert len(starts) == 1
    run = cat[starts[0]["uid"]]
    assert run.metadata["stop"]["exit_status"] == status
    got = normalise(list(run.documents()))
    want = normalise(_singles(docs))  # pages come out as their single documents (SPEC 2)
    assert [n for n, _ in got] == [n for n, _ in want]
    assert got == want
    for name in run:  # every stream reads, empty or not
        ds = run[name].read()
        assert ds.sizes.get("time", 0) == len(run[name])
