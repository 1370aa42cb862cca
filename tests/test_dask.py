"""to_dask(): lazy building, chunks of whole HDF5 chunks, slices that read only what they
touch, pickling, distributed."""
from __future__ import annotations

import os
import pickle

import dask
import dask.array as da
import event_model
import h5py
import numpy as np
import pytest
import xarray as xr

import databroker_lite
from databroker_lite.storage import handlers, lazy

FRAME = (370, 370)          # float64: just over 1 MB, so one HDF5 chunk (and dask chunk) per frame
N_FRAMES = 5


def assert_same(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Identical Datasets, dtypes included (xarray's identical() ignores dtypes)."""
    xr.testing.assert_identical(actual, expected)
    for name, var in expected.variables.items():
        assert actual[name].dtype == var.dtype, (name, actual[name].dtype, var.dtype)


@pytest.fixture
def image_run():
    """A run with a stack of large frames and a scalar column, stored inside the run file."""
    cat = databroker_lite.temp()
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "frame": {"dtype": "array", "shape": list(FRAME), "source": "cam", "dtype_numpy": "<f8"},
        "I0": {"dtype": "number", "shape": [], "source": "I0"},
        "small": {"dtype": "array", "shape": [8], "source": "s", "dtype_numpy": "<i4"},
    })
    cat.insert("descriptor", desc.descriptor_doc)
    for i in range(N_FRAMES):
        cat.insert("event", desc.compose_event(
            data={"frame": np.full(FRAME, float(i)), "I0": float(i), "small": np.arange(8, dtype="i4") * i},
            timestamps={"frame": 1.0, "I0": 1.0, "small": 1.0}, seq_num=i + 1))
    cat.insert("stop", bundle.compose_stop())
    return cat[-1]


@pytest.fixture
def counting(monkeypatch):
    """Count bulk reads: LazyDataset.__getitem__ and external handler loads."""
    calls = {"getitem": 0, "external": 0}
    orig_getitem = lazy.LazyDataset.__getitem__
    orig_load = handlers.load_external

    def getitem(self, sel):
        calls["getitem"] += 1
        return orig_getitem(self, sel)

    def load(*args, **kwargs):
        calls["external"] += 1
        return orig_load(*args, **kwargs)

    monkeypatch.setattr(lazy.LazyDataset, "__getitem__", getitem)
    monkeypatch.setattr(handlers, "load_external", load)
    import databroker_lite.stream as stream_mod
    monkeypatch.setattr(stream_mod, "load_external", load)
    return calls


def _h5_chunks(run, key: str) -> tuple:
    with h5py.File(run.path, "r") as f:
        return f[f"streams/primary/0/data/{key}"].chunks


def test_to_dask_reads_no_bulk_data(image_run, counting):
    with dask.config.set(scheduler="synchronous"):
        ds = image_run.primary.to_dask()
    assert counting == {"getitem": 0, "external": 0}
    assert ds["frame"].shape == (N_FRAMES, *FRAME)
    assert ds["frame"].dtype == np.float64
    assert isinstance(ds["frame"].data, da.Array)


def test_chunks_follow_hdf5_chunks(image_run):
    ds = image_run.primary.to_dask()
    for key in ("frame", "small", "I0"):
        h5 = _h5_chunks(image_run, key)
        chunks = ds[key].data.chunks
        # along time: whole HDF5 chunks (the last one may be short); other axes: the HDF5 chunking
        assert all(c % h5[0] == 0 for c in chunks[0][:-1]), (key, chunks, h5)
        for axis in range(1, len(h5)):
            assert all(c == h5[axis] for c in chunks[axis][:-1]), (key, chunks, h5)
    assert _h5_chunks(image_run, "frame")[0] == 1
    # small frames: HDF5's one-frame chunks are merged into one dask chunk along time
    assert ds["frame"].data.chunks[0] == (N_FRAMES,)


def test_one_frame_reads_one_chunk(image_run, monkeypatch):
    """The dask chunk holds several frames; x[i] is fused into a read of frame i alone."""
    read = []
    orig = lazy.read_dataset

    def spy(f, name, sel, path, **kwargs):
        out = orig(f, name, sel, path, **kwargs)
        read.append((name.rpartition("/")[2], out.shape))
        return out

    monkeypatch.setattr(lazy, "read_dataset", spy)
    frame = image_run.primary.to_dask()["frame"]
    assert frame.data.numblocks[0] == 1
    with dask.config.set(scheduler="synchronous"):
        value = frame[3].values
        sub = frame[1:4, 2].values
    assert read == [("frame", (1, *FRAME)), ("frame", (3, 1, FRAME[1]))]  # only what was asked
    np.testing.assert_array_equal(value, np.full(FRAME, 3.0))
    np.testing.assert_array_equal(sub, np.array([np.full(FRAME[1:], float(i)) for i in (1, 2, 3)]))


def test_graph_pickles_and_computes(image_run):
    ds = image_run.primary.to_dask()
    arr = ds["frame"].data
    blob = pickle.dumps(arr)
    assert len(blob) < 100_000  # no data inside, only where it is
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again[2].compute(), np.full(FRAME, 2.0))
    ds2 = pickle.loads(pickle.dumps(ds))
    assert_same(ds2.compute(), image_run.primary.read())


def test_lazy_run_file_unreadable_until_computed(image_run, tmp_path):
    """Building touches only metadata: moving the run file away breaks compute, not build."""
    ds = image_run.primary.to_dask(["frame"])
    from databroker_lite.storage.files import FILE_CACHE
    moved = tmp_path / "moved.h5"
    os.rename(image_run.path, moved)
    FILE_CACHE.forget(image_run.path)
    try:
        with pytest.raises(OSError):
            ds["frame"][0].compute()
    finally:
        os.rename(moved, image_run.path)
    np.testing.assert_array_equal(ds["frame"][1].values, np.full(FRAME, 1.0))


def test_computes_on_distributed_process_cluster(tmp_path):
    """The graph (internal and NPY_SEQ external data) runs on two worker processes."""
    distributed = pytest.importorskip("distributed")
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import hw

    cat = databroker_lite.open_catalog(tmp_path / "cat")
    sim = hw(save_path=str(tmp_path / "npy"))
    os.makedirs(tmp_path / "npy", exist_ok=True)
    engine = RunEngine({})
    engine.subscribe(cat.writer)
    engine(count([sim.img, sim.det], num=3))
    stream = cat[-1].primary
    eager = stream.read()
    lazy_ds = stream.to_dask()
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        futures = client.compute([lazy_ds["img"].data, lazy_ds["det"].data])
        img, det = client.gather(futures)
        pids = set(client.run(os.getpid).values())
    assert os.getpid() not in pids and len(pids) == 2
    np.testing.assert_array_equal(img, eager["img"].values)
    np.testing.assert_array_equal(det, eager["det"].values)
    assert img.shape == (3, 10, 10)
