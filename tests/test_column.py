"""stream[key]: an ArrayColumn whose slices equal read()'s values, dtypes and shapes."""
from __future__ import annotations

import contextlib
import os

import event_model
import h5py
import numpy as np
import pytest
from conftest import insert_all, make_run_docs

import databroker_lite
from databroker_lite import ArrayColumn, StreamNotFound

SELECTIONS = [0, 2, -1, slice(None), slice(1, 4), slice(None, None, 2), slice(None, None, -1),
              slice(3, 0, -2), [3, 0, 2], np.array([True, False, True, False, True]), Ellipsis,
              slice(5, 5)]


@pytest.fixture
def run(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    insert_all(cat, make_run_docs(5))
    return cat[-1]


def test_every_kind_of_column_equals_read(run):
    ds = run.primary.read()
    assert list(run.primary) == list(ds.data_vars)
    for key in ds.data_vars:
        col = run.primary[key]
        assert isinstance(col, ArrayColumn)
        want = ds[key].values
        assert col.shape == want.shape and col.ndim == want.ndim and len(col) == 5
        assert col.dims == ds[key].dims
        assert col.dtype.kind == want.dtype.kind
        if want.dtype.kind != "U":
            assert col.dtype == want.dtype
        for sel in SELECTIONS:
            got = col[sel]
            assert isinstance(got, np.ndarray) or np.isscalar(got)
            np.testing.assert_array_equal(got, want[sel])
            assert np.asarray(got).dtype.kind == want.dtype.kind
        np.testing.assert_array_equal(col.read(), want)
        np.testing.assert_array_equal(np.asarray(col), want)
    assert run.primary["vec"][1:3, 2].tolist() == [-1.0, -2.0]
    assert run.primary["label"][4] == "point 4"


def test_column_equals_to_dask(run):
    lazy = run.primary.to_dask()
    for key in ("x", "vec", "label"):
        for k in (0, 3):
            np.testing.assert_array_equal(run.primary[key][k], lazy[key][k].compute().values)


def test_unknown_key_and_bad_index(run):
    with pytest.raises(StreamNotFound, match="nope"):
        run.primary["nope"]
    with pytest.raises(KeyError):
        run.primary["nope"]
    with pytest.raises(TypeError, match="data key"):
        run.primary[0]
    with pytest.raises(IndexError, match="out of bounds"):
        run.primary["x"][5]
    with pytest.raises(IndexError):
        run.primary["label"][-6]
    assert "x" in run.primary and "nope" not in run.primary and 3 not in run.primary
    assert "shape (5, 3)" in repr(run.primary["vec"])


def test_several_descriptors_and_a_missing_key(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    b = event_model.compose_run()
    cat.insert("start", b.start_doc)
    both = {"I0": {"dtype": "number", "shape": [], "source": "s"},
            "im": {"dtype": "array", "shape": [2, 3], "dtype_numpy": "<i4", "source": "s"}}
    d1 = b.compose_descriptor(name="primary", data_keys=both)
    d2 = b.compose_descriptor(name="primary", data_keys={"I0": both["I0"]}, validate=False)
    cat.insert("descriptor", d1.descriptor_doc)
    cat.insert("descriptor", d2.descriptor_doc)
    for i in range(7):
        d = d1 if i < 4 else d2
        data = {"I0": float(i)} if d is d2 else {"I0": float(i), "im": np.full((2, 3), i, "i4")}
        cat.insert("event", d.compose_event(data=data, timestamps={k: 1.0 for k in data},
                                            seq_num=i + 1))
    cat.insert("stop", b.compose_stop())
    s = cat[-1].primary
    ds = s.read()
    for key in ("I0", "im"):
        want = ds[key].values
        col = s[key]
        assert col.shape == want.shape and col.dtype == want.dtype
        for sel in (slice(None), slice(2, 6), slice(1, None, 3), slice(None, None, -3), 5, [6, 0, 4],
                    (slice(3, 5), *((1,) if key == "im" else ()))):
            np.testing.assert_array_equal(col[sel], want[sel])
    assert np.isnan(s["im"][5]).all()


def _ad_run(cat, root: str, files: list[tuple[str, int]], fpp: int = 1) -> databroker_lite.Run:
    """A run whose 'img' frames (4 x 5 uint16, fpp per event) live in AD_HDF5 files."""
    b = event_model.compose_run()
    cat.insert("start", b.start_doc)
    shape = [fpp, 4, 5] if fpp > 1 else [4, 5]
    d = b.compose_descriptor(name="primary", data_keys={"img": {
        "dtype": "array", "shape": shape, "dtype_numpy": "<u2", "source": "cam",
        "external": "FILESTORE:"}})
    cat.insert("descriptor", d.descriptor_doc)
    seq, base = 0, 0
    for rel, count in files:
        frames = (np.arange(count * fpp * 20, dtype="u2") + base).reshape(count * fpp, 4, 5)
        base += frames.size
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with h5py.File(os.path.join(root, rel), "w") as f:
            f.create_dataset("entry/data/data", data=frames, chunks=(1, 4, 5))
        res = b.compose_resource(spec="AD_HDF5", root=root, resource_path=rel,
                                 resource_kwargs={"frame_per_point": fpp})
        cat.insert("resource", res.resource_doc)
        for i in range(count):
            datum = res.compose_datum(datum_kwargs={"point_number": i})
            cat.insert("datum", datum)
            cat.insert("event", d.compose_event(data={"img": datum["datum_id"]}, timestamps={"img": 1.0},
                                                seq_num=seq + 1, filled={"img": False}))
            seq += 1
    cat.insert("stop", b.compose_stop())
    return cat[-1]


@pytest.mark.parametrize("files,fpp", [([("a.h5", 6)], 1), ([("a.h5", 6)], 2),
                                       ([("a.h5", 2), ("b/b.h5", 4)], 1)])
def test_external_frames_equal_read(tmp_path, files, fpp):
    run = _ad_run(databroker_lite.open_catalog(tmp_path / "cat"), str(tmp_path / "det"), files, fpp)
    want = run.primary.read()["img"].values
    col = run.primary["img"]
    assert col.shape == want.shape and col.dtype == want.dtype == np.dtype("<u2")
    for sel in (0, 5, -2, slice(None), slice(1, 5, 2), slice(None, None, -1), [4, 1],
                (slice(2, 4), Ellipsis, slice(1, 3)), (3, ..., 0), slice(9, 20)):
        got = col[sel]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want[sel])
    assert col.shape[0] == 6


def test_reductions_equal_numpy(tmp_path):
    run = _ad_run(databroker_lite.open_catalog(tmp_path / "cat"), str(tmp_path / "det"),
                  [("a.h5", 3), ("b.h5", 4)])
    want = run.primary.read()["img"].values
    col = run.primary["img"]
    for how in ("mean", "sum", "max", "min"):
        got, exp = getattr(col, how)(), getattr(np, how)(want, axis=0)
        assert got.dtype == exp.dtype and got.shape == exp.shape == (4, 5)
        np.testing.assert_allclose(got, exp)
    assert col.sum().dtype == np.uint64 and col.sum()[0, 0] == want[:, 0, 0].sum()
    np.testing.assert_allclose(col.mean(axis=None), want.mean())
    np.testing.assert_array_equal(col.max(axis=1), want.max(axis=1))


def test_scalar_reductions_over_many_blocks(tmp_path, monkeypatch):
    from databroker_lite import column
    monkeypatch.setattr(column, "_REDUCE_BYTES", 24)  # 3 rows per block: several blocks
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    keys = {"x": {"dtype": "number", "shape": [], "source": "s"},
            "n": {"dtype": "integer", "shape": [], "source": "s"}}
    insert_all(cat, make_run_docs(10, data_keys=keys, data=lambda i: {"x": (i * 7 % 10) / 3, "n": i}))
    s = cat[-1].primary
    for key in keys:
        want = s.read()[key].values
        for how in ("mean", "sum", "max", "min"):
            got = getattr(s[key], how)()
            assert np.asarray(got).dtype == getattr(np, how)(want).dtype
            assert got == pytest.approx(getattr(np, how)(want))


def test_run_being_written_reads_its_flushed_rows(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    docs = make_run_docs(4, stop=False)
    w = cat.writer
    for name, doc in docs:
        w(name, doc)
    w.flush()
    col = cat[-1].primary["x"]
    assert col.shape == (4,)
    np.testing.assert_array_equal(col[1:3], [1.5, 3.0])
    assert col[-1] == 4.5


def test_a_finished_runs_column_is_kept_a_running_ones_is_not(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    docs = make_run_docs(4)
    assert [n for n, _ in docs] == ["start", "descriptor", *["event"] * 4, "stop"]
    w = cat.writer
    for name, doc in docs[:4]:
        w(name, doc)
    w.flush()
    run = cat[-1]
    assert run.primary["x"].shape == (2,)
    for name, doc in docs[4:6]:  # more rows while the run is open: the next column shows them
        w(name, doc)
    w.flush()
    assert run.primary["x"].shape == (4,)
    w(*docs[-1])
    col = run.primary["x"]
    assert col is run.primary["x"] and col.shape == (4,)  # finished: kept, with what it found
    np.testing.assert_array_equal(col[...], run.primary.read()["x"].values)


def test_text_dtype_has_the_width_read_gives(run):
    """stream["label"].dtype is '<U7' for values up to 'point 4', as read() has it."""
    col = run.primary["label"]
    assert col.dtype == run.primary.read()["label"].dtype == np.dtype("<U7")
    assert col[:].dtype == col.dtype and "<U7" in repr(col)


def test_repr_of_a_text_column_reads_nothing(run, monkeypatch):
    """repr(stream["label"]) names key, shape and dtype without reading the values; their
    width shows once dtype has been asked."""
    import databroker_lite.column as column_mod

    reads = []
    real = column_mod.read_dataset
    monkeypatch.setattr(column_mod, "read_dataset", lambda *a, **k: reads.append(a[1]) or real(*a, **k))
    col = run.primary["label"]
    text = repr(col)
    assert reads == []
    assert "'label'" in text and "shape (5,)" in text and "<U" in text and "<U7" not in text
    assert col.dtype == np.dtype("<U7") and reads
    assert "dtype <U7>" in repr(col)


@pytest.mark.parametrize("sel", [1.5, "x", np.float64(2.0), [0.5, 1.0], (0, 1.0), np.array([1], dtype=object)])
def test_a_non_integer_index_is_an_index_error(run, sel):
    """As numpy: floats, strings and non-integer arrays are no index (no row, no raw ufunc error)."""
    for key in ("x", "vec"):
        with pytest.raises(IndexError, match=None if isinstance(sel, tuple) else "only integers, slices"):
            run.primary[key][sel]
        with pytest.raises(IndexError):
            np.zeros(run.primary[key].shape)[sel]
    assert run.primary["x"][[]].shape == (0,)



def test_external_frames_whose_shape_changes_between_descriptors(tmp_path):
    """An area detector whose ROI changes mid-run: a second descriptor declares img
    [6, 7] instead of [4, 5], its frames in another AD_HDF5 file. Events interleave;
    img reads as one frame per event, in acquisition order, read() as stream[key]."""
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    root = str(tmp_path / "det")
    os.makedirs(root)
    b = event_model.compose_run()
    cat.insert("start", b.start_doc)
    descs, res = [], []
    for shape, rel in (((4, 5), "a.h5"), ((6, 7), "b.h5")):
        with h5py.File(os.path.join(root, rel), "w") as f:
            f.create_dataset("entry/data/data", data=np.stack(
                [np.full(shape, 10 * shape[0] + i, "u2") for i in range(2)]))
        d = b.compose_descriptor(name="primary", data_keys={"img": {
            "dtype": "array", "shape": list(shape), "dtype_numpy": "<u2", "source": "cam",
            "external": "FILESTORE:"}})
        with pytest.warns(databroker_lite.DescriptorMismatchWarning) if descs else contextlib.nullcontext():
            cat.insert("descriptor", d.descriptor_doc)
        r = b.compose_resource(spec="AD_HDF5", root=root, resource_path=rel,
                               resource_kwargs={"frame_per_point": 1})
        cat.insert("resource", r.resource_doc)
        descs.append(d)
        res.append(r)
    for seq, (j, point) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        datum = res[j].compose_datum(datum_kwargs={"point_number": point})
        cat.insert("datum", datum)
        cat.insert("event", descs[j].compose_event(data={"img": datum["datum_id"]},
                                                   timestamps={"img": 1.0}, seq_num=seq + 1))
    cat.insert("stop", b.compose_stop())
    stream = cat[-1].primary
    with pytest.warns(databroker_lite.DescriptorMismatchWarning):
        img = stream.read()["img"].values
    assert img.dtype == object
    assert [(v.shape, int(v[0, 0])) for v in img] == [((4, 5), 40), ((6, 7), 60), ((4, 5), 41), ((6, 7), 61)]
    lazy = stream.to_dask()["img"].compute().values
    col = stream["img"]
    assert col.shape == (4,) and col.dtype == object
    for sel in (slice(None), slice(None, None, -1), [3, 0]):
        for a, b_, c in zip(col[sel], img[sel], lazy[sel]):
            np.testing.assert_array_equal(a, b_)
            np.testing.assert_array_equal(c, b_)
