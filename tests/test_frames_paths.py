"""Frames through every path: ArrayColumn, to_dask() and read() agree on values, dtypes and
shapes (one AD_HDF5 file read as one slice, frames in the run file, reductions in blocks);
a finished stream's second to_dask() reads nothing; a run being written shows new events."""
from __future__ import annotations

import os

import event_model
import h5py
import numpy as np
import pytest

import databroker_lite
from databroker_lite import column
from databroker_lite.storage.reader import RunReader

H, W = 4, 5
N = 7

SELECTIONS = [0, 3, -1, slice(None), slice(1, 6), slice(None, None, 2), slice(5, 0, -2),
              slice(2, 2), [4, 0, 6], np.array([True, False] * 3 + [True]), Ellipsis,
              (slice(1, 5), Ellipsis, slice(1, 4)), (Ellipsis, 2), (2, ..., 0),
              (slice(None, None, 3), Ellipsis, slice(4, 0, -1))]


def _ad_file(path: str, rows: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=rows, chunks=(1, *rows.shape[1:]))


def _docs_ad(root: str, shape: list, fpp: int, n: int, stop: bool = True):
    """(start, descriptor, resource, [(datum, event)] * n, stop) of one AD_HDF5 run."""
    b = event_model.compose_run()
    desc = b.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": shape, "dtype_numpy": "<u2", "source": "cam",
                "external": "FILESTORE:"},
        "I0": {"dtype": "number", "shape": [], "source": "I0"}})
    res = b.compose_resource(spec="AD_HDF5", root=root, resource_path="img.h5",
                             resource_kwargs={"frame_per_point": fpp})
    pairs = []
    for i in range(n):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        pairs.append((datum, desc.compose_event(data={"img": datum["datum_id"], "I0": float(i)},
                                                timestamps={"img": 1.0 + i, "I0": 1.0 + i},
                                                seq_num=i + 1, time=100.0 + i,
                                                filled={"img": False})))
    head = [("start", b.start_doc), ("descriptor", desc.descriptor_doc),
            ("resource", res.resource_doc)]
    return head, pairs, ("stop", b.compose_stop())


def _insert(cat, head, pairs, stop) -> databroker_lite.Run:
    for name, doc in head:
        cat.insert(name, doc)
    for datum, event in pairs:
        cat.insert("datum", datum)
        cat.insert("event", event)
    cat.insert(*stop)
    return cat[-1]


# (descriptor shape, frames per point): plain frames, ophyd's [1, h, w], two frames a point
LAYOUTS = [([H, W], 1), ([1, H, W], 1), ([2, H, W], 2)]


@pytest.fixture(params=LAYOUTS, ids=["hw", "1hw", "fpp2"])
def ad_run(request, tmp_path, monkeypatch):
    shape, fpp = request.param
    monkeypatch.setattr("databroker_lite.stream._CHUNK_BYTES", 3 * fpp * H * W * 2)  # 3 events a chunk
    rows = np.arange(N * fpp * H * W, dtype="u2").reshape(N * fpp, H, W)
    _ad_file(str(tmp_path / "det" / "img.h5"), rows)
    run = _insert(databroker_lite.open_catalog(tmp_path / "cat"),
                  *_docs_ad(str(tmp_path / "det"), shape, fpp, N))
    return run, rows.reshape(N, *shape)


def test_one_file_of_frames_reads_alike_everywhere(ad_run):
    run, frames = ad_run
    read = run.primary.read()
    lazy = run.primary.to_dask()
    col = run.primary["img"]
    np.testing.assert_array_equal(read["img"].values, frames)
    assert read["img"].dtype == lazy["img"].dtype == col.dtype == np.dtype("<u2")
    assert read["img"].shape == lazy["img"].shape == col.shape == frames.shape
    assert lazy["img"].data.numblocks[0] == 3  # several chunks: selections cross them
    for sel in SELECTIONS:
        want = frames[sel]
        for got in (col[sel], lazy["img"].data[sel].compute(), read["img"].values[sel]):
            assert got.shape == want.shape and got.dtype == want.dtype, sel
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lazy["img"][5].compute().values, frames[5])
    np.testing.assert_array_equal(lazy["I0"].values, np.arange(N, dtype="f8"))


def test_one_file_of_frames_reduces_alike_everywhere(ad_run, monkeypatch):
    run, frames = ad_run
    monkeypatch.setattr(column, "_REDUCE_BYTES", 3 * frames[0].nbytes)  # 3 events a block
    col, lazy = run.primary["img"], run.primary.to_dask()["img"]
    for how in ("mean", "sum", "max", "min"):
        want = getattr(np, how)(frames, axis=0)
        for got in (getattr(col, how)(), getattr(lazy, how)("time").values):
            assert got.dtype == want.dtype and got.shape == want.shape, how
            np.testing.assert_allclose(got, want)


def test_frames_in_the_run_file_reduce_in_blocks_like_numpy(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 4000, size=(N, H, W), dtype="u2")
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = event_model.compose_run()
    desc = b.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [H, W], "dtype_numpy": "<u2", "source": "cam"}})
    cat.insert("start", b.start_doc)
    cat.insert("descriptor", desc.descriptor_doc)
    for i in range(N):
        cat.insert("event", desc.compose_event(data={"img": frames[i]}, timestamps={"img": 1.0},
                                               seq_num=i + 1))
    cat.insert("stop", b.compose_stop())
    s = cat[-1].primary
    for rows in (1, 3, N):  # one row a block; 3 (the last block short); all at once
        monkeypatch.setattr(column, "_REDUCE_BYTES", rows * H * W * 2)
        for how in ("mean", "sum", "max", "min"):
            want = getattr(np, how)(frames, axis=0)
            got = getattr(s["img"], how)()
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want)
            lazy = getattr(s.to_dask()["img"], how)("time").values
            np.testing.assert_allclose(lazy, want)
    assert s["img"].sum().dtype == np.uint64


def test_second_to_dask_of_a_finished_stream_reads_nothing(ad_run, monkeypatch):
    run, frames = ad_run
    s = run.primary
    first = s.to_dask()
    calls = []
    for name in ("side_documents", "read_column", "read_events", "dataset_info"):
        real = getattr(RunReader, name)
        monkeypatch.setattr(RunReader, name, lambda self, *a, _real=real, _n=name, **k:
                            calls.append(_n) or _real(self, *a, **k))
    second = s.to_dask()
    s["img"]  # the column shares the stream's datum refs too
    other = run.catalog[run.uid].primary.to_dask()  # a new Run of the same, unchanged file
    assert calls == []
    np.testing.assert_array_equal(other["img"].values, frames)
    np.testing.assert_array_equal(second["img"].values, frames)
    np.testing.assert_array_equal(second["time"].values, first["time"].values)
    # Datasets are the user's to change: nothing of one build leaks into the next
    second.attrs["note"] = "mine"
    second["img"].attrs["units"] = "counts"
    second["time"].attrs["units"] = "s"
    third = s.to_dask()
    assert "note" not in third.attrs and "units" not in third["img"].attrs
    assert third["time"].attrs == {}
    assert third["img"].dtype == frames.dtype and third["img"].shape == frames.shape


def test_run_being_written_shows_new_events_in_to_dask(tmp_path):
    root = str(tmp_path / "det")
    frames = np.arange(6 * H * W, dtype="u2").reshape(6, H, W)
    _ad_file(os.path.join(root, "img.h5"), frames)  # the detector writes ahead of the events
    head, pairs, stop = _docs_ad(root, [H, W], 1, 6)
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    w = cat.writer
    for name, doc in head:
        w(name, doc)
    for datum, event in pairs[:3]:
        w("datum", datum)
        w("event", event)
    w.flush()
    run = cat[-1]
    first = run.primary.to_dask()
    assert first.sizes["time"] == 3 and run.primary["img"].shape == (3, H, W)
    np.testing.assert_array_equal(first["img"].values, frames[:3])

    for datum, event in pairs[3:]:
        w("datum", datum)
        w("event", event)
    w.flush()
    again = run.primary.to_dask()  # the same Run: it looks at the file again
    assert again.sizes["time"] == 6
    np.testing.assert_array_equal(again["img"].values, frames)
    np.testing.assert_array_equal(again["I0"].values, np.arange(6.0))
    np.testing.assert_array_equal(again["time"].values, 100.0 + np.arange(6))
    np.testing.assert_array_equal(run.primary["img"][5], frames[5])
    assert run.primary["img"].shape == (6, H, W)
    assert first["img"].shape == (3, H, W)  # what was built before stays as it was
    np.testing.assert_array_equal(first["img"].values, frames[:3])

    w(*stop)
    done = run.primary.to_dask()
    np.testing.assert_array_equal(done["img"].values, run.primary.read()["img"].values)
    assert done.sizes["time"] == 6
