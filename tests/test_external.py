"""External data through handlers: NPY_SEQ, AD_HDF5, stream resources, root_map, errors."""
from __future__ import annotations

import os
import shutil

import dask
import event_model
import h5py
import numpy as np
import pytest
import xarray as xr

import databroker_lite
from databroker_lite import ExternalDataError, MissingExternalFile, MissingHandler, ShapeMismatch
from databroker_lite.storage import handlers

H, W = 4, 5


def assert_same(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Identical Datasets, dtypes included (xarray's identical() ignores dtypes)."""
    xr.testing.assert_identical(actual, expected)
    for name, var in expected.variables.items():
        assert actual[name].dtype == var.dtype, (name, actual[name].dtype, var.dtype)


def _frames(n: int, shape: tuple = (H, W)) -> np.ndarray:
    return (np.arange(n * int(np.prod(shape)), dtype="u2")).reshape(n, *shape)


def _write_ad_file(path, frames: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frames, chunks=(1, *frames.shape[1:]))


def _ad_run(cat, root: str, rel: str, *, n: int, fpp: int = 1, shape: list | None = None,
            spec: str = "AD_HDF5", resource_kwargs: dict | None = None,
            dtype_numpy: str | None = "<u2", more_files: tuple = ()) -> str:
    """Insert a run whose 'img' key lives in an AD_HDF5 file; returns its uid.

    ``more_files``: further (rel, n) files whose points follow, one resource each.
    """
    bundle = event_model.compose_run(metadata={"plan_name": "count"})
    cat.insert("start", bundle.start_doc)
    shape = shape if shape is not None else ([fpp, H, W] if fpp > 1 else [H, W])
    img = {"dtype": "array", "shape": shape, "source": "cam", "external": "FILESTORE:"}
    if dtype_numpy is not None:
        img["dtype_numpy"] = dtype_numpy
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "img": img, "I0": {"dtype": "number", "shape": [], "source": "I0"}})
    cat.insert("descriptor", desc.descriptor_doc)
    seq = 0
    for path, count in ((rel, n), *more_files):
        res = bundle.compose_resource(spec=spec, root=root, resource_path=path,
                                      resource_kwargs=resource_kwargs or {"frame_per_point": fpp})
        cat.insert("resource", res.resource_doc)
        for i in range(count):
            datum = res.compose_datum(datum_kwargs={"point_number": i})
            cat.insert("datum", datum)
            cat.insert("event", desc.compose_event(data={"img": datum["datum_id"], "I0": float(seq)},
                                                   timestamps={"img": 1.0, "I0": 1.0}, seq_num=seq + 1,
                                                   filled={"img": False}))
            seq += 1
    cat.insert("stop", bundle.compose_stop())
    return bundle.start_doc["uid"]


@pytest.fixture
def cat(tmp_path):
    return databroker_lite.open_catalog(tmp_path / "catalog")


@pytest.fixture
def ad_run(cat, tmp_path):
    root = str(tmp_path / "detector")
    _write_ad_file(os.path.join(root, "scan1", "img.h5"), _frames(3))
    uid = _ad_run(cat, root, "scan1/img.h5", n=3)
    return cat[uid]


def _count_loads(monkeypatch) -> dict:
    calls = {"n": 0}
    orig = handlers.load_external

    def load(*args, **kwargs):
        calls["n"] += 1
        return orig(*args, **kwargs)

    import databroker_lite.stream as stream_mod
    monkeypatch.setattr(stream_mod, "load_external", load)
    monkeypatch.setattr(handlers, "load_external", load)
    return calls


# --- NPY_SEQ from ophyd.sim's img --------------------------------------------------------

def test_npy_seq_from_ophyd_sim_img(cat, tmp_path, monkeypatch):
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import hw

    save = tmp_path / "npy"
    save.mkdir()
    sim = hw(save_path=str(save))
    sim.img.sim_set_func(lambda: np.arange(100.0).reshape(10, 10))
    engine = RunEngine({})
    engine.subscribe(cat.writer)
    engine(count([sim.img], num=3))
    assert len(list(save.glob("*.npy"))) == 3

    stream = cat[-1].primary
    assert stream.metadata["descriptors"][0]["data_keys"]["img"]["external"]
    ds = stream.read()
    assert ds["img"].shape == (3, 10, 10)
    assert ds["img"].dims == ("time", "img_dim_0", "img_dim_1")
    np.testing.assert_array_equal(ds["img"].values[1], np.arange(100.0).reshape(10, 10))

    calls = _count_loads(monkeypatch)
    lazy = stream.to_dask()
    assert calls["n"] == 0
    with dask.config.set(scheduler="synchronous"):
        frame = lazy["img"][2].values
    assert calls["n"] == 1
    np.testing.assert_array_equal(frame, np.arange(100.0).reshape(10, 10))
    assert_same(lazy.compute(), ds)


# --- AD_HDF5 ---------------------------------------------------------------------------

def test_ad_hdf5_read_and_lazy(ad_run, monkeypatch):
    ds = ad_run.primary.read()
    assert ds["img"].shape == (3, H, W)
    assert ds["img"].dtype == np.dtype("<u2")
    np.testing.assert_array_equal(ds["img"].values, _frames(3))
    np.testing.assert_array_equal(ds["I0"].values, [0.0, 1.0, 2.0])
    calls = _count_loads(monkeypatch)
    lazy = ad_run.primary.to_dask()
    assert calls["n"] == 0
    assert_same(lazy.compute(), ds)


def test_ad_hdf5_frame_per_point(cat, tmp_path):
    root = str(tmp_path / "det")
    _write_ad_file(os.path.join(root, "a.h5"), _frames(6))
    uid = _ad_run(cat, root, "a.h5", n=3, fpp=2)
    ds = cat[uid].primary.read()
    assert ds["img"].shape == (3, 2, H, W)
    np.testing.assert_array_equal(ds["img"].values[1], _frames(6)[2:4])
    assert_same(cat[uid].primary.to_dask().compute(), ds)


def test_root_map_re_roots_moved_files(ad_run, cat, tmp_path):
    old_root = _resource(ad_run)["root"]
    new_root = str(tmp_path / "moved_detector")
    shutil.move(old_root, new_root)
    with pytest.raises(MissingExternalFile):
        cat[ad_run.uid].primary.read()
    moved = databroker_lite.open_catalog(cat.directory, root_map={old_root: new_root})
    ds = moved[ad_run.uid].primary.read()
    np.testing.assert_array_equal(ds["img"].values, _frames(3))
    np.testing.assert_array_equal(moved[ad_run.uid].primary.to_dask()["img"][2].values, _frames(3)[2])


def _resource(run) -> dict:
    return next(doc for name, doc in run.documents() if name == "resource")


def test_missing_file_raises_only_when_needed(ad_run, tmp_path):
    path = os.path.join(_resource(ad_run)["root"], "scan1", "img.h5")
    os.remove(path)
    stream = ad_run.primary
    lazy = stream.to_dask()  # builds: no external file is opened
    assert lazy["img"].shape == (3, H, W)
    np.testing.assert_array_equal(stream.read(["I0"])["I0"].values, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(lazy["I0"].values, [0.0, 1.0, 2.0])
    res_uid = _resource(ad_run)["uid"]
    for attempt in (lambda: lazy["img"][0].values, lambda: stream.read()):
        with pytest.raises(MissingExternalFile) as info:
            attempt()
        msg = str(info.value)
        assert res_uid in msg, msg
        assert path in msg, msg
        assert ad_run.uid in msg, msg
        assert isinstance(info.value, FileNotFoundError)


def test_unreadable_file_does_not_break_building(ad_run):
    path = os.path.join(_resource(ad_run)["root"], "scan1", "img.h5")
    with open(path, "wb") as f:
        f.write(b"not an hdf5 file")
    lazy = ad_run.primary.to_dask()
    assert lazy["img"].shape == (3, H, W)
    with pytest.raises(ExternalDataError) as info:
        lazy["img"].compute()
    assert _resource(ad_run)["uid"] in str(info.value) and path in str(info.value)


def test_unknown_spec_names_spec_and_registration(cat, tmp_path):
    root = str(tmp_path / "det")
    _write_ad_file(os.path.join(root, "a.h5"), _frames(2))
    uid = _ad_run(cat, root, "a.h5", n=2, spec="NO_SUCH_SPEC")
    lazy = cat[uid].primary.to_dask()
    for attempt in (lambda: cat[uid].primary.read(), lambda: lazy["img"].values):
        with pytest.raises(MissingHandler) as info:
            attempt()
        msg = str(info.value)
        assert "NO_SUCH_SPEC" in msg
        assert "register_handler" in msg and "entry point" in msg


def test_shape_mismatch_names_key_and_shapes(cat, tmp_path):
    root = str(tmp_path / "det")
    _write_ad_file(os.path.join(root, "a.h5"), _frames(2, shape=(H, W + 1)))
    uid = _ad_run(cat, root, "a.h5", n=2)  # the descriptor says (4, 5); the file has (4, 6)
    lazy = cat[uid].primary.to_dask()
    for attempt in (lambda: cat[uid].primary.read(), lambda: lazy["img"].values):
        with pytest.raises(ShapeMismatch) as info:
            attempt()
        msg = str(info.value)
        assert "'img'" in msg
        assert "[4, 5]" in msg and "[1, 4, 6]" in msg, msg


def test_register_handler(cat, tmp_path, monkeypatch):
    monkeypatch.setattr(handlers, "_registry", dict(handlers._registry))

    class Ramp:
        def __init__(self, filename: str, scale: int = 1) -> None:
            self.scale = scale

        def __call__(self, point_number: int) -> np.ndarray:
            return np.full((H, W), point_number * self.scale, dtype="u2")

    databroker_lite.register_handler("RAMP", Ramp)
    with pytest.raises(ValueError, match="RAMP"):
        databroker_lite.register_handler("RAMP", dict)
    _ad_run(cat, str(tmp_path), "none", n=2, spec="RAMP", resource_kwargs={"scale": 3})
    ds = cat[-1].primary.read()
    np.testing.assert_array_equal(ds["img"].values[1], np.full((H, W), 3, dtype="u2"))
    assert_same(cat[-1].primary.to_dask().compute(), ds)


# --- stream_resource / stream_datum ------------------------------------------------------

def _stream_run(cat, path: str, n: int, per_datum: int = 2, shape: tuple = (H, W)) -> str:
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "cam": {"dtype": "array", "shape": list(shape), "source": "cam", "external": "STREAM:",
                "dtype_numpy": "<u2"},
        "I0": {"dtype": "number", "shape": [], "source": "I0"}})
    cat.insert("descriptor", desc.descriptor_doc)
    sres = bundle.compose_stream_resource(mimetype="application/x-hdf5", uri=f"file://{path}",
                                          data_key="cam", parameters={"dataset": "/entry/data/data"})
    cat.insert("stream_resource", sres.stream_resource_doc)
    seq = 1
    for start in range(0, n, per_datum):
        stop = min(start + per_datum, n)
        cat.insert("stream_datum", sres.compose_stream_datum(
            indices={"start": start, "stop": stop}, seq_nums={"start": seq, "stop": seq + stop - start},
            descriptor=desc.descriptor_doc))
        for j in range(start, stop):
            cat.insert("event", desc.compose_event(data={"I0": float(j)}, timestamps={"I0": 1.0},
                                                   seq_num=seq, time=3000.0 + j))
            seq += 1
    cat.insert("stop", bundle.compose_stop())
    return bundle.start_doc["uid"]


def test_stream_resource_hdf5(cat, tmp_path, monkeypatch):
    path = str(tmp_path / "det" / "stream.h5")
    _write_ad_file(path, _frames(5))
    uid = _stream_run(cat, path, n=5)
    stream = cat[uid].primary
    ds = stream.read()
    assert ds["cam"].shape == (5, H, W)
    assert ds["cam"].dtype == np.dtype("<u2")
    np.testing.assert_array_equal(ds["cam"].values, _frames(5))
    np.testing.assert_array_equal(ds["time"].values, 3000.0 + np.arange(5))
    calls = _count_loads(monkeypatch)
    lazy = stream.to_dask()
    assert calls["n"] == 0
    assert lazy["cam"].data.chunks[0] == (2, 2, 1)
    assert_same(lazy.compute(), ds)
    # root_map also re-roots stream resources (their uri)
    new_dir = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "det"), new_dir)
    with pytest.raises(MissingExternalFile):
        databroker_lite.open_catalog(cat.directory)[uid].primary.read()
    moved = databroker_lite.open_catalog(cat.directory, root_map={str(tmp_path / "det"): str(new_dir)})
    np.testing.assert_array_equal(moved[uid].primary.read()["cam"].values, _frames(5))


def test_stream_resource_shape_mismatch(cat, tmp_path):
    path = str(tmp_path / "s.h5")
    _write_ad_file(path, _frames(4, shape=(H + 1, W)))
    uid = _stream_run(cat, path, n=4)
    with pytest.raises(ShapeMismatch, match="'cam'"):
        cat[uid].primary.read()
    lazy = cat[uid].primary.to_dask()
    with pytest.raises(ShapeMismatch, match=r"\[2, 5, 5\]"):
        lazy["cam"].compute()


def test_stream_datum_only_stream(cat, tmp_path):
    """A flyer-style stream: stream_datum documents and no events at all."""
    path = str(tmp_path / "fly.h5")
    _write_ad_file(path, _frames(5))
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "cam": {"dtype": "array", "shape": [H, W], "source": "cam", "external": "STREAM:",
                "dtype_numpy": "<u2"}})
    cat.insert("descriptor", desc.descriptor_doc)
    sres = bundle.compose_stream_resource(mimetype="application/x-hdf5", uri=f"file://{path}",
                                          data_key="cam", parameters={"dataset": "entry/data/data"})
    cat.insert("stream_resource", sres.stream_resource_doc)
    for a, b in ((0, 3), (3, 5)):
        cat.insert("stream_datum", sres.compose_stream_datum(
            indices={"start": a, "stop": b}, seq_nums={"start": a + 1, "stop": b + 1},
            descriptor=desc.descriptor_doc))
    cat.insert("stop", bundle.compose_stop())
    stream = cat[-1].primary
    ds = stream.read()
    np.testing.assert_array_equal(ds["cam"].values, _frames(5))
    assert ds.sizes["time"] == 5
    assert len(stream) == 5
    lazy = stream.to_dask()
    assert lazy["cam"].data.chunks[0] == (3, 2)
    assert_same(lazy.compute(), ds)
    ts = stream.timestamps
    assert ts["cam"].shape == (5,)


def test_external_dtype_is_the_declared_one_lazy_too(cat, tmp_path):
    """Regression: lazy chunks kept the file's uint16 where the descriptor declares float64."""
    root = str(tmp_path / "det")
    _write_ad_file(os.path.join(root, "a.h5"), _frames(3))
    _ad_run(cat, root, "a.h5", n=3, dtype_numpy=None)
    stream = cat[-1].primary
    eager = stream.read()
    assert eager["img"].dtype == np.float64
    computed = stream.to_dask().compute()
    assert computed["img"].dtype == np.float64
    assert_same(computed, eager)


def test_consecutive_ad_hdf5_frames_are_read_in_one_slice(tmp_path, monkeypatch):
    """read() of many frames of one AD_HDF5 file: one read, same values; a transposed
    descriptor shape is still a ShapeMismatch, never a silent reshape."""
    frames = np.arange(6 * 4 * 5, dtype="u2").reshape(6, 4, 5)
    with h5py.File(tmp_path / "ad.h5", "w") as f:
        f.create_dataset("entry/data/data", data=frames)

    def make(cat, shape):
        return cat[_ad_run(cat, str(tmp_path), "ad.h5", n=6, shape=shape)]

    calls = []
    real = h5py.Dataset.__getitem__

    def spy(ds, sel, *args, **kwargs):
        if os.path.basename(ds.file.filename) == "ad.h5":
            calls.append(sel)
        return real(ds, sel, *args, **kwargs)
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    run = make(cat, [4, 5])
    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    np.testing.assert_array_equal(run.primary.read()["img"].values, frames)
    assert calls == [slice(0, 6)]
    np.testing.assert_array_equal(run.primary.to_dask()["img"].values, frames)
    with pytest.raises(databroker_lite.ShapeMismatch, match=r"\[5, 4\]"):
        make(cat, [5, 4]).primary.read()


def _every_path(run) -> dict:
    """What each read path gives for 'img': read(), to_dask() (all, one frame), stream[key]
    (a frame, all, a reduction, on a fresh column each so none reuses another's plan)."""
    s = run.primary
    paths = {"read()": lambda: s.read()["img"].values,
             "to_dask().compute()": lambda: s.to_dask()["img"].compute().values,
             "to_dask()[-1]": lambda: s.to_dask()["img"][-1].values,
             "stream[key][-1]": lambda: s["img"][-1],
             "stream[key].read()": lambda: s["img"].read(),
             "stream[key].max()": lambda: s["img"].max()}
    out = {}
    for name, read in paths.items():
        try:
            out[name] = read()
        except Exception as exc:  # noqa: BLE001 - the error is what is compared
            out[name] = exc
    return out


@pytest.mark.parametrize("layout", ["one file", "two files", "one event"])
def test_every_path_refuses_frames_of_another_shape_alike(cat, tmp_path, layout):
    """Frames stored (64, 32) under a descriptor saying [32, 64]: the same number of
    pixels, but a reshape would scramble the image. read(), to_dask() and stream[key]
    all raise the same ShapeMismatch naming the run, the key and both shapes."""
    root = str(tmp_path / "det")
    n = 1 if layout == "one event" else 3
    _write_ad_file(os.path.join(root, "a.h5"), _frames(n, shape=(64, 32)))
    more = ()
    if layout == "two files":
        _write_ad_file(os.path.join(root, "b.h5"), _frames(2, shape=(64, 32)))
        more = (("b.h5", 2),)
    run = cat[_ad_run(cat, root, "a.h5", n=n, shape=[32, 64], more_files=more)]
    got = _every_path(run)
    for name, value in got.items():
        assert isinstance(value, ShapeMismatch), (name, value)
    messages = {str(v) for v in got.values()}
    assert len(messages) == 1, messages
    msg = messages.pop()
    assert run.uid in msg and "'img'" in msg and "[1, 64, 32]" in msg and "[32, 64]" in msg, msg


@pytest.mark.parametrize("stored,declared", [((H, W), [1, H, W]), ((1, H, W), [H, W]),
                                             ((H, 1, W), [H, W])])
def test_every_path_reads_frames_differing_in_unit_dimensions_alike(cat, tmp_path, stored, declared):
    """Only dimensions of length 1 may differ (ophyd's [1, h, w] per datum, say): every
    path gives the same values, in the descriptor's shape."""
    root = str(tmp_path / "det")
    frames = _frames(3, shape=stored)
    _write_ad_file(os.path.join(root, "a.h5"), frames)
    run = cat[_ad_run(cat, root, "a.h5", n=3, shape=declared)]
    want = frames.reshape(3, *declared)
    got = _every_path(run)
    for name in ("read()", "to_dask().compute()", "stream[key].read()"):
        assert not isinstance(got[name], Exception), (name, got[name])
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    np.testing.assert_array_equal(got["to_dask()[-1]"], want[-1])
    np.testing.assert_array_equal(got["stream[key][-1]"], want[-1])
    np.testing.assert_array_equal(got["stream[key].max()"], want.max(axis=0))


def test_stream_key_of_a_missing_file_names_the_resource_as_read_does(ad_run):
    """stream[key][k] on a removed AD_HDF5 file: the MissingExternalFile read() raises
    (resource, path, run), not a bare FileNotFoundError."""
    path = os.path.join(_resource(ad_run)["root"], "scan1", "img.h5")
    os.remove(path)
    col = ad_run.primary["img"]
    for attempt in (lambda: col[0], lambda: col[0], lambda: ad_run.primary.read()):
        with pytest.raises(MissingExternalFile) as info:
            attempt()
        msg = str(info.value)
        assert _resource(ad_run)["uid"] in msg and path in msg and ad_run.uid in msg, msg


# (selection, how many frames it reads). dask takes index lists, masks and reversed
# strides from whole chunks (it does not fuse them into the read), so those read all 8.
SELECTIONS = [(2, 1), (-1, 1), (slice(None), 8), (slice(1, 7), 6), (slice(7, 0, -3), 8),
              (slice(None, None, 2), 4), (slice(4, 4), 0), ([5, 0, 5], 8),
              (np.array([True, False] * 4), 8), ((slice(2, 6), 1), 4), ((Ellipsis, 2), 8),
              ((slice(2, 6), slice(None), [0, W - 1]), 4), ((slice(None, None, -1), slice(1, 3), -1), 8)]


@pytest.mark.parametrize("sel,needed", SELECTIONS, ids=repr)
def test_lazy_selection_reads_what_numpy_would(cat, tmp_path, sel, needed, monkeypatch):
    """to_dask()[sel] equals read()[sel] for frames in two files, and reads only those frames."""
    from databroker_lite.stream import _CHUNK_BYTES
    monkeypatch.setattr("databroker_lite.stream._CHUNK_BYTES", 5 * H * W * 2)  # 5 frames a chunk
    assert _CHUNK_BYTES != 5 * H * W * 2
    root = str(tmp_path / "det")
    frames = _frames(8)
    _write_ad_file(os.path.join(root, "a.h5"), frames[:3])
    _write_ad_file(os.path.join(root, "b.h5"), frames[3:])
    _ad_run(cat, root, "a.h5", n=3, more_files=(("b.h5", 5),))
    stream = cat[-1].primary
    lazy = stream.to_dask()["img"].data
    assert lazy.chunks[0] == (5, 3)
    expected = frames[sel]
    frames_read = []
    ad = handlers.AreaDetectorHDF5Handler
    call, read_points = ad.__call__, ad.read_points
    monkeypatch.setattr(ad, "__call__", lambda h, point_number, **kw: (
        frames_read.append(1), call(h, point_number, **kw))[1])
    monkeypatch.setattr(ad, "read_points", lambda h, first, n, out=None: (
        frames_read.append(n), read_points(h, first, n, out))[1])
    with dask.config.set(scheduler="synchronous"):
        got = lazy[sel].compute()
    assert got.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(got, expected)
    # only the frames the selection needs are read (a frame listed twice may be read twice)
    assert needed <= sum(frames_read) <= needed + 1, frames_read


def test_datum_of_a_resource_not_in_the_file_names_both(ad_run):
    """A run file whose resource entry was lost: a clear error, at read and at compute."""
    from databroker_lite.errors import ExternalDataError
    path, uid = ad_run.path, ad_run.uid
    with h5py.File(path, "r+") as f:
        ids = f["documents/resource/id"]
        old = ids.asstr()[0]
        ids[0] = "not-the-resource"
    run = databroker_lite.open_catalog(os.path.dirname(path), "r")[uid]
    for read in (lambda: run.primary.read(), lambda: run.primary.to_dask()):
        with pytest.raises(ExternalDataError, match=f"refers to resource '{old}', which was never inserted"):
            read()
    # the rest of the run still reads
    assert run.primary.read(["I0"])["I0"].values.tolist() == [0.0, 1.0, 2.0]


def test_datum_kwargs_the_handler_refuses_name_resource_and_kwargs(cat, tmp_path):
    root = str(tmp_path / "det")
    _write_ad_file(os.path.join(root, "a.h5"), _frames(2))
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [H, W], "source": "cam", "external": "FILESTORE:"}})
    cat.insert("descriptor", desc.descriptor_doc)
    res = bundle.compose_resource(spec="AD_HDF5", root=root, resource_path="a.h5", resource_kwargs={})
    cat.insert("resource", res.resource_doc)
    datum = res.compose_datum(datum_kwargs={"frame": 0})  # AD_HDF5 wants point_number
    cat.insert("datum", datum)
    cat.insert("event", desc.compose_event(data={"img": datum["datum_id"]}, timestamps={"img": 1.0},
                                           seq_num=1, filled={"img": False}))
    cat.insert("stop", bundle.compose_stop())
    stream = cat[-1].primary
    lazy = stream.to_dask()  # building reads nothing
    for read in (stream.read, lambda: lazy.compute()):
        with pytest.raises(ExternalDataError, match=r"resource .* with datum kwargs \{\"frame\": 0\} failed: "
                                                    r"TypeError"):
            read()


def test_no_read_path_keeps_the_detectors_file(ad_run):
    """After every kind of read, the detector can create its file again at once, in this
    process (HDF5 refuses to truncate a file it has open) and in another one (which an
    HDF5 read lock would block): the next scan with the same file name must not fail."""
    import subprocess
    import sys
    path = os.path.join(_resource(ad_run)["root"], "scan1", "img.h5")
    want = _frames(3)
    reads = [lambda: ad_run.primary.read()["img"].values,
             lambda: ad_run.primary.to_dask()["img"].compute().values,
             lambda: ad_run.primary.to_dask()["img"][1].compute().values,
             lambda: ad_run.primary["img"][1],
             lambda: ad_run.primary["img"][0:3],
             lambda: ad_run.primary["img"].mean()]
    expected = [want, want, want[1], want[1], want, want.mean(axis=0)]
    for read, value in zip(reads, expected):
        np.testing.assert_array_equal(read(), value)
        _write_ad_file(path, want)  # the detector writes its file again: "w" truncates
        code = ("import h5py, sys; f = h5py.File(sys.argv[1], 'a'); f.close()")
        subprocess.run([sys.executable, "-c", code, path], check=True, timeout=60)


def test_a_detector_file_open_in_this_process_is_still_read(ad_run):
    """The user (or a detector writing here) has the file open with h5py's defaults:
    every read path still reads it (HDF5 refuses a second open with other lock flags)."""
    path = os.path.join(_resource(ad_run)["root"], "scan1", "img.h5")
    want = _frames(3)
    with h5py.File(path, "r") as mine:
        np.testing.assert_array_equal(ad_run.primary.read()["img"].values, want)
        np.testing.assert_array_equal(ad_run.primary.to_dask()["img"][2].compute().values, want[2])
        np.testing.assert_array_equal(ad_run.primary["img"][1], want[1])
        np.testing.assert_array_equal(mine["entry/data/data"][0], want[0])  # still the user's
