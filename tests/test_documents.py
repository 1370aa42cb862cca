"""run.documents() gives back what went in: compose_run runs, RunEngine runs, pages, interleaving."""
from __future__ import annotations

import time

import event_model
import numpy as np
import pytest
from conftest import insert_all, make_run_docs, normalise

from databroker_lite import documents as _docs


def _singles(docs):
    """Pages turned into single documents, as documents() returns them."""
    out = []
    for name, doc in docs:
        out.extend(_docs.iter_singles(name, doc))
    return out


def test_compose_run_round_trip(cat, run_docs):
    insert_all(cat, run_docs)
    run = cat[run_docs[0][1]["uid"]]
    out = list(run.documents())
    assert [n for n, _ in out] == [n for n, _ in run_docs]
    assert normalise(out) == normalise(run_docs)
    # events come back in order with their uids
    assert [d["uid"] for n, d in out if n == "event"] == [d["uid"] for n, d in run_docs if n == "event"]
    assert [d["seq_num"] for n, d in out if n == "event"] == [1, 2, 3, 4, 5]


def test_round_trip_keeps_extra_metadata(cat):
    md = {"scan_id": 7, "plan_name": "scan", "sample": {"name": "Cu foil", "T": 295.5},
          "hints": {"dimensions": [[["motor"], "primary"]]}, "tags": ["a", "b"], "nan": None}
    docs = make_run_docs(2, metadata=md)
    insert_all(cat, docs)
    run = cat[7]
    assert run.metadata["start"] == docs[0][1]
    assert run.metadata["stop"] == docs[-1][1]
    assert normalise(list(run.documents())) == normalise(docs)


def test_metadata_keeps_numbers_json_has_and_fast_decoders_lose(cat):
    """Start and stop are decoded fast (orjson) where that is exact: integers beyond 64
    bits (orjson makes them floats), NaN and Infinity come back as the standard library
    reads them, from the index row and from the file alike."""
    md = {"scan_id": 9, "big": 123456789012345678901234567890, "neg": -(2**63) - 1,
          "u64": 2**64 - 1, "pi": 3.141592653589793, "text": "caf\u00e9 9999999999999999999999 \U0001F600"}
    docs = make_run_docs(1, metadata=md)
    insert_all(cat, docs)
    for start in (cat[9].metadata["start"], cat[9]._reader().start):
        for key, value in md.items():
            assert start[key] == value and type(start[key]) is type(value), key
    nan_md = {"scan_id": 10, "nan": float("nan"), "deep": {"x": [float("nan"), 1]},
              "inf": float("inf"), "ninf": -float("inf")}
    insert_all(cat, make_run_docs(1, metadata=nan_md))
    start = cat[10].metadata["start"]
    assert np.isnan(start["nan"]) and np.isnan(start["deep"]["x"][0]) and start["deep"]["x"][1] == 1
    assert start["inf"] == float("inf") and start["ninf"] == -float("inf")


def test_runengine_round_trip_with_resources(cat, RE, hw, tmp_path):
    from bluesky.plans import count, scan
    hw.img.save_path = str(tmp_path / "img")
    (tmp_path / "img").mkdir()
    seen = []
    RE.subscribe(cat.writer)
    RE.subscribe(lambda name, doc: seen.append((name, doc)))
    uid, = RE(scan([hw.det, hw.img], hw.motor, -1, 1, 4))
    uid2, = RE(count([hw.det], num=3))
    assert len(cat) == 2
    names = [n for n, _ in seen]
    assert "resource" in names and "datum" in names  # img writes external files

    first = seen[: names.index("stop") + 1]
    out = list(cat[uid].documents())
    assert normalise(out) == normalise(_singles(first))
    assert [n for n, _ in out].count("event") == 4

    run = cat[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    ds = run.primary.read()
    assert ds["img"].shape == (4, 10, 10)
    np.testing.assert_allclose(ds["motor"].values, [-1, -1 / 3, 1 / 3, 1])
    np.testing.assert_array_equal(ds["img"].values, np.ones((4, 10, 10)))
    second = cat[uid2]
    assert [d["seq_num"] for n, d in second.documents() if n == "event"] == [1, 2, 3]


def test_event_pages_come_back_as_events(cat):
    docs = make_run_docs(6)
    start, desc = docs[0], docs[1]
    events = [d for n, d in docs if n == "event"]
    page1 = event_model.pack_event_page(*events[:4])
    page2 = event_model.pack_event_page(*events[4:])
    insert_all(cat, [start, desc, ("event_page", page1), ("event_page", page2), docs[-1]])
    out = list(cat[-1].documents())
    assert normalise(out) == normalise(docs)


def test_datum_pages_come_back_as_datums(cat):
    bundle = event_model.compose_run(metadata={"scan_id": 3})
    res = bundle.compose_resource(spec="NPY_SEQ", root="/tmp", resource_path="x",
                                  resource_kwargs={})
    datums = [res.compose_datum(datum_kwargs={"index": i}) for i in range(3)]
    page = event_model.pack_datum_page(*datums)
    stop = bundle.compose_stop()
    cat.writer("start", bundle.start_doc)
    cat.writer("resource", res.resource_doc)
    cat.writer("datum_page", page)
    cat.writer("stop", stop)
    out = list(cat[3].documents())
    assert normalise(out) == normalise(
        [("start", bundle.start_doc), ("resource", res.resource_doc)]
        + [("datum", d) for d in datums] + [("stop", stop)])


def test_interleaved_runs(cat):
    t0 = time.time()
    a = make_run_docs(4, metadata={"scan_id": 1}, t0=t0)
    b = make_run_docs(3, metadata={"scan_id": 2}, t0=t0 + 1)
    # a's start, b's start, then alternate the rest
    order = [a[0], b[0]]
    rest_a, rest_b = a[1:], b[1:]
    for i in range(max(len(rest_a), len(rest_b))):
        order += rest_a[i:i + 1] + rest_b[i:i + 1]
    insert_all(cat, order)
    assert len(cat) == 2
    assert normalise(list(cat[1].documents())) == normalise(a)
    assert normalise(list(cat[2].documents())) == normalise(b)


def test_numeric_column_types(cat):
    data_keys = {
        "num": {"source": "s", "dtype": "number", "shape": []},
        "int": {"source": "s", "dtype": "integer", "shape": []},
    }
    docs = make_run_docs(3, data_keys=data_keys, data=lambda i: {"num": 5, "int": i * 10})
    insert_all(cat, docs)
    run = cat[-1]
    ds = run.primary.read()
    assert ds["num"].dtype == np.float64
    assert ds["int"].dtype == np.int64
    assert ds["num"].values.tolist() == [5.0, 5.0, 5.0]
    assert ds["int"].values.tolist() == [0, 10, 20]
    # documents keep the value: 5 == 5.0
    events = [d for n, d in run.documents() if n == "event"]
    assert [e["data"]["num"] for e in events] == [5, 5, 5]
    assert [e["data"]["int"] for e in events] == [0, 10, 20]
    assert all(isinstance(e["data"]["int"], int) for e in events)


def test_strings_booleans_arrays_round_trip(cat, run_docs):
    insert_all(cat, run_docs)
    run = cat[-1]
    ds = run.primary.read()
    assert ds["label"].values.tolist() == [f"point {i}" for i in range(5)]
    assert ds["flag"].dtype == np.bool_
    assert ds["flag"].values.tolist() == [False, True, False, True, False]
    assert ds["vec"].shape == (5, 3)
    assert ds["vec"].dtype == np.float64
    np.testing.assert_array_equal(ds["vec"].values[2], [2.0, 2.5, -2.0])
    events = [d for n, d in run.documents() if n == "event"]
    assert events[3]["data"] == {"x": 4.5, "n": 3, "label": "point 3", "flag": True,
                                 "vec": [3.0, 3.5, -3.0]}


@pytest.mark.parametrize("dtype_numpy", ["<i8", "<f4"])
def test_variable_length_arrays_round_trip(cat, dtype_numpy):
    data_keys = {"spec": {"source": "s", "dtype": "array", "shape": [None],
                          "dtype_numpy": dtype_numpy},
                 "img": {"source": "s", "dtype": "array", "shape": [2, None],
                         "dtype_numpy": dtype_numpy}}
    values = [list(range(k)) for k in (1, 4, 0, 2)]

    def data(i):
        return {"spec": values[i], "img": [values[i], values[i]]}
    docs = make_run_docs(4, data_keys=data_keys, data=data)
    insert_all(cat, docs)
    run = cat[-1]
    assert normalise(list(run.documents())) == normalise(docs)
    ds = run.primary.read()
    # a variable-length column reads as an object array of per-event numpy arrays
    assert ds["spec"].dtype == object
    assert ds["spec"].shape == (4,)
    for i, v in enumerate(values):
        got = ds["spec"].values[i]
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.dtype(dtype_numpy)
        np.testing.assert_array_equal(got, v)
        assert ds["img"].values[i].shape == (2, len(v))


def test_empty_stream_round_trip(cat):
    docs = make_run_docs(0)
    insert_all(cat, docs)
    run = cat[-1]
    assert normalise(list(run.documents())) == normalise(docs)
    assert run.primary.read()["x"].shape == (0,)


def test_run_without_stop_round_trips_what_was_written(cat):
    docs = make_run_docs(3, stop=False)
    insert_all(cat, docs)
    cat.writer.flush()
    run = cat[-1]
    assert run.metadata["stop"] is None
    assert normalise(list(run.documents())) == normalise(docs)


@pytest.mark.parametrize("obj", [{"point_number": 3}, {"b": 1, "a": "x", "c": None, "d": True},
                                 {"n": 2**70}, {"f": float("inf")}, {"l": [1, {"z": 2, "y": 1}]},
                                 {}, {1: 2}])
def test_sorted_json_reads_back_as_json_dumps_does(obj):
    import json
    text = _docs.sorted_json(obj)
    assert json.loads(text) == json.loads(json.dumps(obj, sort_keys=True))
    assert list(json.loads(text)) == sorted(json.loads(text))  # keys in order: one text per value
