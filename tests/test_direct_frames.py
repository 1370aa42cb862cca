"""Detector frames read from the file's bytes (storage.direct) equal what HDF5 reads, and
any change to the file sends the read back through HDF5."""
from __future__ import annotations

import os
import time

import event_model
import h5py
import numpy as np
import pytest

import databroker_lite
from databroker_lite import ExternalDataError
from databroker_lite.storage import direct

SHAPE = (9, 6, 5)
SELECTIONS = [0, 4, -1, slice(None), slice(2, 7), slice(1, 9, 3), slice(None, None, -2), [7, 0, 3],
              (slice(1, 8), Ellipsis, slice(1, 4)), (5, slice(2, 6), 3)]


@pytest.fixture(autouse=True)
def _nothing_learnt():
    direct._LAYOUTS.clear()
    yield
    direct._LAYOUTS.clear()


def _old(path: str) -> None:
    """Make the file look written an hour ago (raw reads wait for a file to settle)."""
    t = time.time() - 3600
    os.utime(path, (t, t))


def _run(tmp_path, storage: dict, dtype: str = "<u2", frames: np.ndarray | None = None):
    path = str(tmp_path / "det" / "img.h5")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if frames is None:
        frames = np.random.default_rng(1).integers(0, 2**15, SHAPE).astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frames, **storage)
    _old(path)
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = event_model.compose_run()
    cat.insert("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys={"img": {
        "dtype": "array", "shape": list(SHAPE[1:]), "dtype_numpy": np.dtype(dtype).str,
        "source": "cam", "external": "FILESTORE:"}})
    cat.insert("descriptor", d.descriptor_doc)
    res = b.compose_resource(spec="AD_HDF5", root=str(tmp_path / "det"), resource_path="img.h5",
                             resource_kwargs={"frame_per_point": 1})
    cat.insert("resource", res.resource_doc)
    for i in range(SHAPE[0]):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        cat.insert("datum", datum)
        cat.insert("event", d.compose_event(data={"img": datum["datum_id"]}, timestamps={"img": 1.0},
                                            seq_num=i + 1, filled={"img": False}))
    cat.insert("stop", b.compose_stop())
    return cat[-1], path, frames


@pytest.mark.parametrize("storage,dtype,raw", [
    ({"chunks": (1, 6, 5)}, "<u2", True),        # an area detector's one frame per chunk
    ({"chunks": (4, 6, 5)}, "<u2", True),        # several per chunk, the last one partly used
    ({}, "<i4", True),                           # contiguous
    ({"chunks": (2, 6, 5)}, ">u2", True),        # big-endian: read as stored, converted after
    ({"chunks": (3, 6, 5)}, "<f8", True),
    ({"chunks": (1, 6, 5), "compression": "gzip"}, "<u2", False),  # filtered: HDF5's to read
    ({"chunks": (1, 3, 5)}, "<u2", False),       # a frame over two chunks
])
def test_direct_reads_equal_hdf5s(tmp_path, storage, dtype, raw):
    run, path, frames = _run(tmp_path, storage, dtype)
    assert (path, "entry/data/data") not in direct._LAYOUTS
    want = run.primary.read()["img"].values  # through HDF5, which learns the layout
    np.testing.assert_array_equal(want, frames)
    col = run.primary["img"]
    for _ in range(2):  # the first read learns the layout through HDF5, the second uses it
        for sel in SELECTIONS:
            got = col[sel]
            assert got.dtype == want.dtype and got.shape == want[sel].shape, sel
            np.testing.assert_array_equal(got, want[sel])
    learnt = direct._LAYOUTS.get((path, "entry/data/data"))
    assert (learnt is not None) == raw
    lazy = run.primary.to_dask()["img"]
    np.testing.assert_array_equal(lazy[3].compute().values, want[3])
    np.testing.assert_array_equal(lazy[2:8:2, 1:5].compute().values, want[2:8:2, 1:5])
    np.testing.assert_array_equal(run.primary.read()["img"].values, want)


def test_a_file_rewritten_under_the_same_name_is_read_again(tmp_path):
    run, path, frames = _run(tmp_path, {"chunks": (1, 6, 5)})
    col = run.primary["img"]
    col[2], col[3]
    assert direct._LAYOUTS[(path, "entry/data/data")] is not None
    # the next scan's detector writes the same name, same shape, other values (ophyd-async)
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=frames[::-1].copy(), chunks=(2, 6, 5))
    np.testing.assert_array_equal(col[2], frames[::-1][2])
    _old(path)  # settled again: learnt anew, still the new values
    col[0]
    np.testing.assert_array_equal(col[2], frames[::-1][2])
    assert direct._LAYOUTS[(path, "entry/data/data")].per_chunk == 2


@pytest.mark.parametrize("why", ["just written", "open in this process"])
def test_a_file_just_written_or_open_here_is_read_through_hdf5(tmp_path, why):
    run, path, frames = _run(tmp_path, {"chunks": (1, 6, 5)})
    held = h5py.File(path, "r") if why == "open in this process" else None  # a user's, a writer's
    if held is None:
        os.utime(path)  # modified now
    try:
        col = run.primary["img"]
        for _ in range(2):
            np.testing.assert_array_equal(col[4], frames[4])
        assert direct._LAYOUTS[(path, "entry/data/data")] is None
    finally:
        if held is not None:
            held.close()


def test_a_truncated_or_removed_file_after_a_direct_read_says_what_is_wrong(tmp_path):
    run, path, frames = _run(tmp_path, {"chunks": (1, 6, 5)})
    col = run.primary["img"]
    col[1], col[1]
    assert direct._LAYOUTS[(path, "entry/data/data")] is not None
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ExternalDataError) as err:
        col[8]
    assert path in str(err.value) and "img" in str(err.value)
    os.remove(path)
    with pytest.raises(ExternalDataError, match="img.h5"):
        col[1]
