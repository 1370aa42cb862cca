"""Stream.read(), to_dask() equality, timestamps, config, descriptors and reprs (SPEC 5-6)."""
from __future__ import annotations

import pickle
import re
import time
import uuid
from datetime import datetime

import dask.array as da
import event_model
import numpy as np
import pytest
import xarray as xr

import databroker_lite

DATA_KEYS = {
    "I0": {"dtype": "number", "shape": [], "source": "PV:I0", "units": "V"},
    "It": {"dtype": "integer", "shape": [], "source": "PV:It"},
    "label": {"dtype": "string", "shape": [], "source": "PV:label"},
    "ok": {"dtype": "boolean", "shape": [], "source": "PV:ok"},
    "im": {"dtype": "array", "shape": [3, 4], "source": "PV:im", "dtype_numpy": "<u2",
           "dims": ["y", "x"]},
    "spec": {"dtype": "array", "shape": [5], "source": "PV:spec"},
}
CONFIG = {"det": {"data": {"exposure": 0.1, "mode": "fast"},
                  "timestamps": {"exposure": 10.0, "mode": 10.0},
                  "data_keys": {"exposure": {"dtype": "number", "shape": [], "source": "PV:exp"},
                                "mode": {"dtype": "string", "shape": [], "source": "PV:mode"}}}}
N = 4


def assert_same(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Identical Datasets, dtypes included (xarray's identical() ignores dtypes)."""
    xr.testing.assert_identical(actual, expected)
    for name, var in expected.variables.items():
        assert actual[name].dtype == var.dtype, (name, actual[name].dtype, var.dtype)


def _values(i: int) -> dict:
    return {"I0": 1.5 * i, "It": 10 * i, "label": "pt" * (i + 1), "ok": bool(i % 2),
            "im": np.full((3, 4), i, dtype="u2"), "spec": np.arange(5.0) + i}


@pytest.fixture
def cat():
    return databroker_lite.temp()


@pytest.fixture
def run(cat):
    """One run: a primary stream of every kind of value, an empty stream, a baseline."""
    bundle = event_model.compose_run(metadata={"scan_id": 7, "plan_name": "count"})
    cat.insert("start", bundle.start_doc)
    prim = bundle.compose_descriptor(name="primary", data_keys=DATA_KEYS, configuration=CONFIG,
                                     object_keys={"det": ["I0", "It"]})
    cat.insert("descriptor", prim.descriptor_doc)
    empty = bundle.compose_descriptor(name="empty", data_keys=DATA_KEYS)
    cat.insert("descriptor", empty.descriptor_doc)
    base = bundle.compose_descriptor(name="baseline",
                                     data_keys={"m2": {"dtype": "number", "shape": [], "source": "m2"}})
    cat.insert("descriptor", base.descriptor_doc)
    cat.insert("event", base.compose_event(data={"m2": 1.5}, timestamps={"m2": 50.0}, seq_num=1,
                                           time=1000.0))
    for i in range(N):
        cat.insert("event", prim.compose_event(data=_values(i), timestamps={k: 100.0 + i for k in DATA_KEYS},
                                               seq_num=i + 1, time=1000.5 + i))
    cat.insert("event", base.compose_event(data={"m2": 2.5}, timestamps={"m2": 51.0}, seq_num=2,
                                           time=1010.0))
    cat.insert("stop", bundle.compose_stop())
    return cat[-1]


@pytest.fixture
def multi_run(cat):
    """A primary stream with two descriptors whose events interleave; strings get longer."""
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    keys = {k: DATA_KEYS[k] for k in ("I0", "label", "im")}
    d1 = bundle.compose_descriptor(name="primary", data_keys=keys)
    d2 = bundle.compose_descriptor(name="primary", data_keys=keys)
    cat.insert("descriptor", d1.descriptor_doc)
    cat.insert("descriptor", d2.descriptor_doc)
    for i in range(5):
        d = d1 if i % 2 else d2
        cat.insert("event", d.compose_event(
            data={"I0": float(i), "label": "x" * i, "im": np.full((3, 4), i, dtype="u2")},
            timestamps={k: 1.0 for k in keys}, seq_num=i + 1, time=2000.0 + i))
    cat.insert("stop", bundle.compose_stop())
    return cat[-1]


def test_read_gives_typed_dataset_with_time(run):
    ds = run.primary.read()
    assert isinstance(ds, xr.Dataset)
    assert set(ds.data_vars) == set(DATA_KEYS)
    np.testing.assert_array_equal(ds["time"].values, 1000.5 + np.arange(N))
    assert ds["time"].dims == ("time",)
    assert ds["I0"].dtype == np.float64
    assert ds["It"].dtype == np.int64
    assert ds["ok"].dtype == np.bool_
    assert ds["label"].dtype.kind == "U"
    assert ds["im"].dtype == np.dtype("<u2")
    assert ds["spec"].dtype == np.float64
    for key, shape in {"I0": (N,), "label": (N,), "im": (N, 3, 4), "spec": (N, 5)}.items():
        assert ds[key].shape == shape, key
    np.testing.assert_array_equal(ds["I0"].values, 1.5 * np.arange(N))
    np.testing.assert_array_equal(ds["It"].values, 10 * np.arange(N))
    assert list(ds["label"].values) == ["pt", "ptpt", "ptptpt", "ptptptpt"]
    assert list(ds["ok"].values) == [False, True, False, True]
    np.testing.assert_array_equal(ds["im"].values[2], np.full((3, 4), 2, dtype="u2"))
    np.testing.assert_array_equal(ds["spec"].values[3], np.arange(5.0) + 3)
    assert ds["I0"].attrs.get("units") == "V"


def test_dims_from_descriptor_else_key_dim_i(run):
    ds = run.primary.read()
    assert ds["im"].dims == ("time", "y", "x")
    assert ds["spec"].dims == ("time", "spec_dim_0")
    assert ds["I0"].dims == ("time",)


def test_read_chosen_columns_only(run):
    ds = run.primary.read(["I0", "It"])
    assert set(ds.data_vars) == {"I0", "It"}
    np.testing.assert_array_equal(ds["It"].values, 10 * np.arange(N))
    assert set(run.primary.read("label").data_vars) == {"label"}
    assert set(run.primary.to_dask(["im"]).data_vars) == {"im"}


def test_read_unknown_column_names_it(run):
    with pytest.raises(KeyError, match="nope"):
        run.primary.read(["I0", "nope"])


@pytest.mark.parametrize("stream", ["primary", "empty", "baseline"])
def test_read_equals_to_dask_compute(run, stream):
    eager = run[stream].read()
    lazy = run[stream].to_dask()
    for key in lazy.data_vars:
        assert isinstance(lazy[key].data, da.Array), key
    computed = lazy.compute()
    assert_same(computed, eager)
    assert_same(pickle.loads(pickle.dumps(lazy)).compute(), eager)
    for key in eager.data_vars:
        assert computed[key].dtype == eager[key].dtype, key
        assert computed[key].dims == eager[key].dims, key


def test_several_descriptors_in_one_stream(multi_run):
    """Events of two descriptors interleaved (d2, d1, d2, d1, d2) come back in the order
    they were acquired, not grouped by descriptor: read(), to_dask(), stream[key] and
    timestamps alike."""
    stream = multi_run.primary
    eager = stream.read()
    assert eager.sizes["time"] == 5
    np.testing.assert_array_equal(eager["time"].values, 2000.0 + np.arange(5))
    np.testing.assert_array_equal(eager["I0"].values, np.arange(5.0))
    assert list(eager["label"].values) == ["", "x", "xx", "xxx", "xxxx"]
    np.testing.assert_array_equal(eager["im"].values[:, 0, 0], np.arange(5))
    assert_same(stream.to_dask().compute(), eager)
    np.testing.assert_array_equal(stream.timestamps["time"].values, eager["time"].values)
    for key in ("I0", "label", "im"):
        col = stream[key]
        assert col.dtype == eager[key].dtype
        for sel in (slice(None), 3, -1, slice(None, None, -2), [4, 0, 1], slice(1, 4)):
            np.testing.assert_array_equal(col[sel], eager[key].values[sel])
    assert [d["data"]["I0"] for n, d in multi_run.documents() if n == "event"] == [0, 1, 2, 3, 4]
    assert len(stream.metadata["descriptors"]) == 2


def test_a_key_whose_shape_changes_between_descriptors(cat):
    """A detector reconfigured mid-run (ROI or binning): bluesky sends a second descriptor
    declaring img [3, 3] instead of [2, 2]. Insertion warns; the run reads: scalar columns
    as usual, img as one array per event, the same way in read(), to_dask() and stream[key]."""
    def key(n):
        return {"dtype": "array", "shape": [n, n], "source": "cam", "dtype_numpy": "<u2"}

    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    d1 = bundle.compose_descriptor(name="primary", data_keys={
        "img": key(2), "x": DATA_KEYS["I0"]})
    d2 = bundle.compose_descriptor(name="primary", data_keys={
        "img": key(3), "x": DATA_KEYS["I0"]})
    cat.insert("descriptor", d1.descriptor_doc)
    cat.insert("event", d1.compose_event(data={"img": np.full((2, 2), 1, "u2"), "x": 1.0},
                                         timestamps={"img": 1.0, "x": 1.0}, seq_num=1, time=10.0))
    with pytest.warns(databroker_lite.DescriptorMismatchWarning, match=r"'img' of shape \[3, 3\]"):
        cat.insert("descriptor", d2.descriptor_doc)
    for i in (2, 3):
        cat.insert("event", d2.compose_event(data={"img": np.full((3, 3), i, "u2"), "x": float(i)},
                                             timestamps={"img": 1.0, "x": 1.0}, seq_num=i, time=10.0 + i))
    cat.insert("stop", bundle.compose_stop())
    run = cat[-1]
    stream = run.primary
    with pytest.warns(databroker_lite.DescriptorMismatchWarning, match="one array per event"):
        assert stream.read(["x"])["x"].values.tolist() == [1.0, 2.0, 3.0]
    eager = stream.read()
    assert eager["x"].dtype == np.float64
    img = eager["img"]
    assert img.dims == ("time",) and img.dtype == object
    assert [v.shape for v in img.values] == [(2, 2), (3, 3), (3, 3)]
    assert [v.dtype for v in img.values] == [np.dtype("u2")] * 3
    assert [int(v[0, 0]) for v in img.values] == [1, 2, 3]
    computed = stream.to_dask().compute()
    assert [v.shape for v in computed["img"].values] == [(2, 2), (3, 3), (3, 3)]
    for a, b in zip(computed["img"].values, img.values):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(computed["x"].values, eager["x"].values)
    col = stream["img"]
    assert col.shape == (3,) and col.dtype == object
    np.testing.assert_array_equal(col[1], np.full((3, 3), 2, "u2"))
    assert [v.shape for v in col[::-1]] == [(3, 3), (3, 3), (2, 2)]
    events = [d for n, d in run.documents() if n == "event"]
    assert [np.asarray(e["data"]["img"]).shape for e in events] == [(2, 2), (3, 3), (3, 3)]


def test_lazy_strings_are_not_truncated(multi_run):
    """Regression: dask assembled '<U3' then '<U4' chunks into '<U3', cutting 'xxxx'."""
    computed = multi_run.primary.to_dask().compute()
    eager = multi_run.primary.read()
    assert "xxxx" in computed["label"].values.tolist()
    assert_same(computed, eager)


def test_empty_stream_has_zero_length_time(run):
    ds = run.empty.read()
    assert ds.sizes["time"] == 0
    assert ds["time"].shape == (0,)
    assert ds["im"].shape == (0, 3, 4)
    assert ds["im"].dtype == np.dtype("<u2")
    assert ds["I0"].dtype == np.float64
    assert len(run.empty) == 0


def test_missing_key_in_one_descriptor_is_filled(cat):
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    d1 = bundle.compose_descriptor(name="primary", data_keys={
        "n": {"dtype": "integer", "shape": [], "source": "n"},
        "s": {"dtype": "string", "shape": [], "source": "s"}})
    cat.insert("descriptor", d1.descriptor_doc)
    d2 = dict(d1.descriptor_doc, uid=str(uuid.uuid4()),
              data_keys={"m": {"dtype": "number", "shape": [], "source": "m"}})
    cat.insert("descriptor", d2)
    cat.insert("event", d1.compose_event(data={"n": 3, "s": "abc"}, timestamps={"n": 1, "s": 1}, seq_num=1))
    cat.insert("event", {"uid": str(uuid.uuid4()), "descriptor": d2["uid"], "time": time.time(),
                         "seq_num": 2, "data": {"m": 2.5}, "timestamps": {"m": 1.0}})
    cat.insert("stop", bundle.compose_stop())
    stream = cat[-1].primary
    eager = stream.read()
    assert eager["n"].values[0] == 3 and np.isnan(eager["n"].values[1])
    assert eager["m"].values[1] == 2.5 and np.isnan(eager["m"].values[0])
    assert list(eager["s"].values) == ["abc", ""]
    assert_same(stream.to_dask().compute(), eager)


def test_timestamps_per_key(run):
    ts = run.primary.timestamps
    assert isinstance(ts, xr.Dataset)
    assert set(ts.data_vars) == set(DATA_KEYS)
    np.testing.assert_array_equal(ts["time"].values, 1000.5 + np.arange(N))
    np.testing.assert_array_equal(ts["I0"].values, 100.0 + np.arange(N))
    np.testing.assert_array_equal(ts["im"].values, 100.0 + np.arange(N))
    np.testing.assert_array_equal(run.baseline.timestamps["m2"].values, [50.0, 51.0])


def test_config_is_a_dataset_per_object(run):
    cfg = run.primary.config["det"]
    assert isinstance(cfg, xr.Dataset)
    assert cfg["exposure"].values.tolist() == [0.1]
    assert cfg["mode"].values.tolist() == ["fast"]
    assert "det" in run.primary.config
    assert dict(run.baseline.config) == {}


def test_metadata_descriptors(run):
    descs = run.primary.metadata["descriptors"]
    assert len(descs) == 1
    assert descs[0]["name"] == "primary"
    assert descs[0]["data_keys"]["im"]["shape"] == [3, 4]
    assert descs[0]["configuration"]["det"]["data"]["exposure"] == 0.1


def test_run_text_summary_like_databroker(run):
    text = repr(run)
    lines = text.splitlines()
    assert lines[0] == "BlueskyRun"
    assert lines[1] == f"  uid={run.uid!r}"
    assert lines[2] == "  exit_status='success'"
    start = datetime.fromtimestamp(run.metadata["start"]["time"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    stop = datetime.fromtimestamp(run.metadata["stop"]["time"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    assert lines[3] == f"  {start} -- {stop}"
    assert re.fullmatch(r"  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} -- \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}",
                        lines[3])
    assert lines[4] == "  Streams:"
    assert sorted(lines[5:]) == ["    * baseline", "    * empty", "    * primary"]


def test_run_without_stop_summary(cat):
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    text = repr(cat[-1])
    assert "exit_status=None" in text
    assert "(no stop)" in text


def test_repr_html_of_run_stream_catalog(run, cat):
    html = run._repr_html_()
    for text in ("primary", "baseline", "empty", "I0", "label", "im", "3x4", "uint16", "float64",
                 "int64", "bool", run.uid):
        assert text in html, text
    shtml = run.primary._repr_html_()
    assert "primary" in shtml and "spec" in shtml and ">5<" in shtml and "4 events" in shtml
    chtml = cat._repr_html_()
    assert run.uid[:8] in chtml
    assert "count" in chtml and "primary" in chtml and "baseline" in chtml


def test_stream_len_and_fields(run):
    assert len(run.primary) == N
    assert sorted(run.primary.fields()) == sorted(DATA_KEYS)
    assert sorted(run) == ["baseline", "empty", "primary"]
    assert run["primary"].read().identical(run.primary.read())


def test_filler_for_a_missing_image_key_costs_nothing_until_computed(cat):
    """Frames missing from one descriptor are NaN; to_dask() does not allocate them."""
    import tracemalloc
    bundle = event_model.compose_run()
    cat.insert("start", bundle.start_doc)
    d1 = bundle.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "x"}})
    cat.insert("descriptor", d1.descriptor_doc)
    for i in range(200):  # 200 events x 1000 x 1000 float64 NaN would be 1.6 GB
        cat.insert("event", d1.compose_event(data={"x": float(i)}, timestamps={"x": 1.0}, seq_num=i + 1))
    d2 = dict(d1.descriptor_doc, uid=str(uuid.uuid4()), data_keys={
        "img": {"dtype": "array", "shape": [1000, 1000], "source": "c"}})
    cat.insert("descriptor", d2)
    cat.insert("event", {"uid": str(uuid.uuid4()), "descriptor": d2["uid"], "time": time.time(),
                         "seq_num": 201, "data": {"img": np.ones((1000, 1000))}, "timestamps": {"img": 1.0}})
    cat.insert("stop", bundle.compose_stop())
    stream = cat[-1].primary
    tracemalloc.start()
    lazy = stream.to_dask()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, peak
    img = lazy["img"]
    assert img.shape == (201, 1000, 1000)
    assert np.isnan(img[5].values).all() and (img[200].values == 1).all()
