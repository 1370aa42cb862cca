"""Bugs found by using the package as a new beamline user would, reproduced; each test is
what that user typed, and fails until the bug is fixed (strict xfail)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import insert_all, make_run_docs

FRAME = (4, 5)


@pytest.fixture
def column(cat):
    """``run.primary["img"]`` of a 3-event run, and the frames the events carried."""
    dk = {"img": {"source": "sim", "dtype": "array", "shape": list(FRAME), "dtype_numpy": "<u2"}}
    frames = np.arange(3 * FRAME[0] * FRAME[1], dtype="u2").reshape(3, *FRAME)
    insert_all(cat, make_run_docs(3, data_keys=dk, data=lambda i: {"img": frames[i]}))
    return cat[-1].primary["img"], frames


@pytest.mark.parametrize("func", [np.mean, np.sum, np.max, np.min])
def test_numpy_reductions_of_an_array_column(column, func) -> None:
    col, frames = column
    assert func(col) == func(frames)  # a scalar, as numpy gives for the whole array
    np.testing.assert_array_equal(func(col, axis=0), func(frames, axis=0))


@pytest.fixture
def static_blob(tmp_path, RE):  # noqa: N803
    """An ophyd-async SimBlobDetector that writes every run to the same file, blob/blob.h5
    (StaticFilenameProvider, as ophyd-async's tutorials set it up)."""
    pytest.importorskip("ophyd_async")
    from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, init_devices
    from ophyd_async.sim import SimBlobDetector
    (tmp_path / "blob").mkdir()
    with init_devices():
        blob = SimBlobDetector(StaticPathProvider(StaticFilenameProvider("blob"), tmp_path / "blob"))
    return blob, tmp_path / "blob" / "blob.h5"


def test_a_second_scan_after_reading_the_first_in_the_same_process(RE, cat, static_blob) -> None:  # noqa: N803
    import bluesky.plans as bp
    blob, _ = static_blob
    RE.subscribe(cat.writer)
    RE(bp.count([blob], 3))
    assert cat[-1].primary.read()["blob"].shape == (3, 240, 320)  # look at it, as users do
    RE(bp.count([blob], 2))  # the next scan: FailedStatus(OSError) today
    assert cat[-1].primary.read()["blob"].shape == (2, 240, 320)


def test_the_detectors_file_opens_with_swmr_after_a_read(RE, cat, static_blob) -> None:  # noqa: N803
    import bluesky.plans as bp
    import h5py
    blob, path = static_blob
    RE.subscribe(cat.writer)
    RE(bp.count([blob], 3))
    frames = cat[-1].primary.read()["blob"].values
    with h5py.File(path, "r", swmr=True) as f:
        np.testing.assert_array_equal(f["entry/data/data"][()], frames)


def test_numpy_reduction_arguments_of_an_array_column(column) -> None:
    col, frames = column
    np.testing.assert_array_equal(col.mean(), frames.mean(axis=0))  # over events, as documented
    assert np.mean(col, dtype="f4").dtype == np.float32
    out = np.zeros(FRAME, dtype="u8")
    assert np.sum(col, axis=0, out=out) is out
    np.testing.assert_array_equal(out, frames.sum(axis=0))
    assert np.max(col, keepdims=True).shape == (1, 1, 1)
    np.testing.assert_array_equal(np.min(col, axis=0, keepdims=True), frames.min(axis=0, keepdims=True))
