"""Bad documents: a clear InvalidDocument naming run, document and problem; nothing lost.

Values the schema accepts but the descriptor does not describe are stored as they came,
with one DescriptorMismatchWarning per key, and read back.
"""
from __future__ import annotations

import copy
import os
import warnings

import event_model
import numpy as np
import pytest
from conftest import insert_all, make_run_docs, normalise

import databroker_lite
from databroker_lite import DescriptorMismatchWarning, InvalidDocument


@pytest.fixture
def half_run(cat):
    """A catalog with one finished run (scan_id 1) and one open run (scan_id 2) with 2 events."""
    insert_all(cat, make_run_docs(3, metadata={"scan_id": 1}))
    docs = make_run_docs(5, metadata={"scan_id": 2})
    insert_all(cat, docs[:4])  # start, descriptor, 2 events
    return cat, docs


def _finish_and_check(cat, docs, n_before: int = 4) -> None:
    """Insert the rest of the open run; both runs read back exactly what was accepted."""
    insert_all(cat, docs[n_before:])
    assert len(cat) == 2
    assert normalise(list(cat[2].documents())) == normalise(docs)
    assert cat[2].primary.read()["x"].values.tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert cat[1].primary.read()["n"].values.tolist() == [0, 1, 2]


def test_invalid_document_is_a_value_error():
    assert issubclass(InvalidDocument, ValueError)
    assert issubclass(InvalidDocument, databroker_lite.DatabrokerLiteError)


def test_unknown_document_name(half_run):
    cat, docs = half_run
    with pytest.raises(InvalidDocument, match="unknown document name 'bogus'"):
        cat.writer("bogus", {"uid": "x"})
    _finish_and_check(cat, docs)


def test_document_that_is_not_a_dict(half_run):
    cat, docs = half_run
    with pytest.raises(InvalidDocument, match="event document.*expected a dict, got list"):
        cat.writer("event", [1, 2, 3])
    _finish_and_check(cat, docs)


def test_event_for_unknown_descriptor(half_run):
    cat, docs = half_run
    ev = copy.deepcopy(docs[4][1])
    ev["descriptor"] = "no-such-descriptor"
    with pytest.raises(InvalidDocument) as info:
        cat.writer("event", ev)
    msg = str(info.value)
    assert "no-such-descriptor" in msg and ev["uid"] in msg and "event" in msg
    _finish_and_check(cat, docs)


@pytest.mark.parametrize("change, words", [
    (lambda ev: ev["data"].pop("x"), ["missing ['x']"]),
    (lambda ev: ev["data"].update(y=1.0), ["unexpected ['y']"]),
])
def test_event_keys_differ_from_descriptor(half_run, change, words):
    cat, docs = half_run
    ev = copy.deepcopy(docs[4][1])
    change(ev)
    with pytest.raises(InvalidDocument) as info:
        cat.writer("event", ev)
    msg = str(info.value)
    for w in [docs[0][1]["uid"], ev["uid"], docs[1][1]["uid"], *words]:
        assert w in msg
    _finish_and_check(cat, docs)


def _store_odd_event(cat, docs, key: str, value, match: str):
    """Insert event 3 of the open run with ``data[key] = value``: stored, one warning."""
    ev = copy.deepcopy(docs[4][1])
    ev["data"][key] = value
    with pytest.warns(DescriptorMismatchWarning) as record:
        cat.writer("event", ev)
    mine = [w for w in record if issubclass(w.category, DescriptorMismatchWarning)]
    assert len(mine) == 1
    msg = str(mine[0].message)
    assert f"data[{key!r}]" in msg and match in msg and docs[0][1]["uid"] in msg
    assert docs[1][1]["uid"] in msg  # the descriptor it disagrees with
    return ev


def _finish_odd(cat, docs, ev, key: str, n_before: int = 4):
    """Finish the run; the odd event comes back as it came, the rest as before."""
    expected = [*docs[:n_before], ("event", ev), *docs[n_before + 1:]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DescriptorMismatchWarning)  # once per key, not per event
        insert_all(cat, docs[n_before + 1:])
    assert normalise(list(cat[2].documents())) == normalise(expected)
    col = cat[2].primary.read()[key]
    assert col.dims == ("time",) and col.dtype == object and len(col) == 5
    assert cat[1].primary.read()["n"].values.tolist() == [0, 1, 2]
    return col.values


@pytest.mark.parametrize("key, value, what", [
    ("x", "5.0", "a number"),
    ("x", None, "a number"),
    ("n", "3", "an integer"),
    ("n", 2**70, "out of range"),
    ("label", 3, "a string"),
    ("label", "a\x00b", "NUL"),
    ("flag", "yes", "a boolean"),
    ("vec", ["a", "b", "c"], "an array of float64"),
])
def test_wrong_value_type_is_stored_as_it_came(half_run, key, value, what):
    cat, docs = half_run
    ev = _store_odd_event(cat, docs, key, value, what)
    got = _finish_odd(cat, docs, ev, key)
    assert got[2] == value if not isinstance(value, list) else got[2].tolist() == value
    # the events before and after keep their values (typed rows rewritten as they were)
    want = [d["data"][key] for n, d in docs if n == "event"]
    for i in (0, 1, 3, 4):
        assert np.asarray(got[i]).tolist() == want[i]


def test_float_values_into_an_integer_array_are_stored(cat):
    keys = {"counts": {"source": "s", "dtype": "array", "shape": [3], "dtype_numpy": "<i8"}}
    docs = make_run_docs(2, data_keys=keys, data=lambda i: {"counts": [i, i + 1, i + 2]})
    insert_all(cat, docs[:3])
    bad = copy.deepcopy(docs[3][1])
    bad["data"]["counts"] = [1.5, 2.0, 3.0]
    with pytest.warns(DescriptorMismatchWarning, match=r"data\['counts'\].*non-integer"):
        cat.writer("event", bad)
    cat.writer("stop", docs[-1][1])
    got = cat[-1].primary.read()["counts"].values
    assert got[0].tolist() == [0, 1, 2] and got[1].tolist() == [1.5, 2.0, 3.0]


@pytest.mark.parametrize("flush", [True, False])
def test_a_fraction_after_integers_beyond_float_range_keeps_them_exact(cat, flush):
    """An integer column that gets 0.5 is widened to float64, unless it holds integers
    float64 would round (beyond 2**53): then it is kept as JSON and every value exact."""
    keys = {"ticks": {"source": "s", "dtype": "integer", "shape": []}}
    big = [2**60 + 1, -(2**53) - 3, 7]
    docs = make_run_docs(4, data_keys=keys, data=lambda i: {"ticks": (big + [0.5])[i]})
    insert_all(cat, docs[:5])  # start, descriptor, 3 events
    if flush:
        cat.writer.flush()
    with pytest.warns(DescriptorMismatchWarning, match=r"beyond float64's exact range"):
        cat.writer("event", docs[5][1])
    cat.writer("stop", docs[-1][1])
    got = databroker_lite.open_catalog(cat.directory, mode="r")[-1].primary.read()["ticks"]
    assert got.values.tolist() == [*big, 0.5] and type(got.values[0]) is int
    events = [d for n, d in cat[-1].documents() if n == "event"]
    assert [e["data"]["ticks"] for e in events] == [*big, 0.5]


def test_a_fraction_after_small_integers_widens_the_column_to_float(cat):
    keys = {"ticks": {"source": "s", "dtype": "integer", "shape": []}}
    docs = make_run_docs(3, data_keys=keys, data=lambda i: {"ticks": [3, 2**53, 0.5][i]})
    insert_all(cat, docs[:4])
    cat.writer.flush()
    with pytest.warns(DescriptorMismatchWarning, match="stored as float64 from now on"):
        insert_all(cat, docs[4:])
    got = cat[-1].primary.read()["ticks"]
    assert got.dtype == np.float64 and got.values.tolist() == [3.0, 2.0**53, 0.5]


@pytest.mark.parametrize("value, got", [
    ([1.0, 2.0], "(2,)"),
    ([[1.0, 2.0, 3.0]], "(1, 3)"),
    (7.0, "()"),
    ([[1.0], [2.0, 3.0]], "an array of shape [3]"),  # ragged
])
def test_array_with_wrong_shape_is_stored_as_it_came(half_run, value, got):
    cat, docs = half_run
    ev = _store_odd_event(cat, docs, "vec", value, got)
    vals = _finish_odd(cat, docs, ev, "vec")
    assert np.asarray(vals[2], dtype=object).tolist() == value
    assert vals[0].tolist() == [0.0, 0.5, -0.0] and vals[4].tolist() == [4.0, 4.5, -4.0]


def test_scalar_key_given_an_array_after_a_flush(half_run):
    cat, docs = half_run
    cat.writer.flush()  # the two earlier rows are on disk, typed: they are rewritten as JSON
    ev = _store_odd_event(cat, docs, "x", [1.0, 2.0], "a number")
    vals = _finish_odd(cat, docs, ev, "x")
    assert vals[2].tolist() == [1.0, 2.0] and vals[1] == 1.5
    lazy = cat[2].primary.to_dask()["x"].compute().values
    assert [np.asarray(v).tolist() for v in lazy] == [np.asarray(v).tolist() for v in vals]


def test_a_value_that_is_not_json_is_refused_and_nothing_changes(half_run):
    cat, docs = half_run
    ev = copy.deepcopy(docs[4][1])
    ev["data"]["x"] = object()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DescriptorMismatchWarning)
        with pytest.raises(InvalidDocument, match=r"data\['x'\].*not JSON-serialisable"):
            cat.writer("event", ev)
    _finish_and_check(cat, docs)
    assert cat[2].primary.read()["x"].dtype == np.float64  # the column stayed typed


def test_first_event_with_wrong_shape_is_stored(cat):
    keys = {"a": {"source": "s", "dtype": "array", "shape": [2], "dtype_numpy": "<f8"},
            "s": {"source": "s", "dtype": "number", "shape": []}}
    docs = make_run_docs(2, data_keys=keys, data=lambda i: {"a": [i, i], "s": float(i)})
    insert_all(cat, docs[:2])
    bad = copy.deepcopy(docs[2][1])
    bad["data"]["s"] = [1.0, 2.0]
    with pytest.warns(DescriptorMismatchWarning, match=r"data\['s'\] = \[1.0, 2.0\] is not a number"):
        cat.writer("event", bad)
    insert_all(cat, docs[3:])
    ds = cat[-1].primary.read()
    assert ds["s"].values[0].tolist() == [1.0, 2.0] and ds["s"].values[1] == 1.0
    assert ds["a"].values.tolist() == [[0.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize("remove, field", [
    (lambda d: d.pop("data_keys"), "'data_keys' is a required property"),
    (lambda d: d["data_keys"]["x"].pop("dtype"), "'dtype' is a required property"),
    (lambda d: d.pop("run_start"), "'run_start' is a required property"),
])
def test_descriptor_missing_required_fields(cat, remove, field):
    docs = make_run_docs(3, metadata={"scan_id": 5})
    cat.writer(*docs[0])
    bad = copy.deepcopy(docs[1][1])
    remove(bad)
    with pytest.raises(InvalidDocument) as info:
        cat.writer("descriptor", bad)
    msg = str(info.value)
    assert field in msg and "descriptor document" in msg and bad["uid"] in msg
    if "run_start" in bad:
        assert docs[0][1]["uid"] in msg  # names the run when the document says which
    insert_all(cat, docs[1:])
    assert normalise(list(cat[5].documents())) == normalise(docs)


def test_start_missing_uid(cat):
    with pytest.raises(InvalidDocument, match="start document.*'uid' is a required property"):
        cat.writer("start", {"time": 1.0})
    assert len(cat) == 0
    assert cat.bad_files == {}


def test_datum_for_unknown_resource(half_run):
    cat, docs = half_run
    datum = {"datum_id": "nowhere/0", "resource": "nowhere", "datum_kwargs": {}}
    with pytest.raises(InvalidDocument) as info:
        cat.writer("datum", datum)
    msg = str(info.value)
    assert "datum document nowhere/0" in msg and "resource 'nowhere'" in msg
    with pytest.raises(InvalidDocument, match="resource 'nowhere'"):
        cat.writer("datum_page", event_model.pack_datum_page(datum))
    _finish_and_check(cat, docs)


def test_stop_for_unknown_run(half_run):
    cat, docs = half_run
    stop = copy.deepcopy(docs[-1][1])
    stop["run_start"] = "no-such-run"
    with pytest.raises(InvalidDocument) as info:
        cat.writer("stop", stop)
    msg = str(info.value)
    assert "stop document" in msg and "no-such-run" in msg and stop["uid"] in msg
    _finish_and_check(cat, docs)


def test_second_stop_for_a_finished_run(half_run):
    cat, docs = half_run
    insert_all(cat, docs[4:])
    with pytest.raises(InvalidDocument, match="stop document"):
        cat.writer("stop", docs[-1][1])
    assert normalise(list(cat[2].documents())) == normalise(docs)


def test_duplicate_start_uid(half_run):
    cat, docs = half_run
    finished = cat[1].metadata["start"]
    with pytest.raises(InvalidDocument) as info:
        cat.writer("start", finished)
    assert finished["uid"] in str(info.value) and "already" in str(info.value)
    with pytest.raises(InvalidDocument, match="already"):
        cat.writer("start", docs[0][1])  # the open run
    _finish_and_check(cat, docs)
    assert cat[1].primary.read()["x"].values.tolist() == [0.0, 1.5, 3.0]


def test_duplicate_descriptor_and_datum_ids(cat):
    bundle = event_model.compose_run(metadata={"scan_id": 8})
    res = bundle.compose_resource(spec="NPY_SEQ", root="/", resource_path="d", resource_kwargs={})
    datum = res.compose_datum(datum_kwargs={"index": 0})
    cat.writer("start", bundle.start_doc)
    cat.writer("resource", res.resource_doc)
    cat.writer("datum", datum)
    with pytest.raises(InvalidDocument, match="already"):
        cat.writer("datum", datum)
    with pytest.raises(InvalidDocument, match="already"):
        cat.writer("resource", res.resource_doc)
    cat.writer("stop", bundle.compose_stop())
    names = [n for n, _ in cat[8].documents()]
    assert names == ["start", "resource", "datum", "stop"]


def test_bad_event_in_the_middle_of_a_page(half_run):
    cat, docs = half_run
    events = [copy.deepcopy(d) for n, d in docs if n == "event"]
    bad = copy.deepcopy(events[3])
    bad["data"]["x"] = object()  # cannot be stored in any form
    page = event_model.pack_event_page(events[2], bad, events[4])
    with pytest.raises(InvalidDocument) as info:
        cat.writer("event_page", page)
    msg = str(info.value)
    assert "data['x']" in msg and bad["uid"] in msg and docs[0][1]["uid"] in msg
    cat.writer.flush()
    # nothing of the page was stored; the two earlier events are intact
    assert cat[2].primary.read()["x"].values.tolist() == [0.0, 1.5]
    assert [n for n, _ in cat[2].documents()] == ["start", "descriptor", "event", "event"]
    _finish_and_check(cat, docs)


def test_bad_page_after_a_flush_keeps_flushed_rows(cat):
    keys = {"x": {"source": "s", "dtype": "number", "shape": []}}
    docs = make_run_docs(6, data_keys=keys, data=lambda i: {"x": float(i)})
    insert_all(cat, docs[:4])
    cat.writer.flush()
    events = [d for n, d in docs if n == "event"]
    bad = copy.deepcopy(events[3])
    bad["data"]["x"] = object()
    with pytest.raises(InvalidDocument, match="not JSON-serialisable"):
        cat.writer("event_page", event_model.pack_event_page(events[2], bad))
    insert_all(cat, docs[4:])
    assert normalise(list(cat[-1].documents())) == normalise(docs)


def test_a_page_with_an_odd_value_is_stored_whole(half_run):
    cat, docs = half_run
    events = [copy.deepcopy(d) for n, d in docs if n == "event"]
    events[3]["data"]["x"] = None
    with pytest.warns(DescriptorMismatchWarning, match=r"data\['x'\] = None is not a number"):
        cat.writer("event_page", event_model.pack_event_page(*events[2:]))
    cat.writer("stop", docs[-1][1])
    assert cat[2].primary.read()["x"].values.tolist() == [0.0, 1.5, 3.0, None, 6.0]
    expected = [*docs[:4], *(("event", e) for e in events[2:]), docs[-1]]
    assert normalise(list(cat[2].documents())) == normalise(expected)


def test_event_page_with_ragged_columns(half_run):
    cat, docs = half_run
    events = [d for n, d in docs if n == "event"]
    page = event_model.pack_event_page(events[2], events[3])
    page["data"]["x"] = page["data"]["x"][:1]
    with pytest.raises(InvalidDocument, match=r"data\['x'\] has 1 entries, 'uid' has 2"):
        cat.writer("event_page", page)
    _finish_and_check(cat, docs)


def test_catalog_stays_readable_from_a_fresh_process_view(half_run):
    cat, docs = half_run
    with pytest.raises(InvalidDocument):
        cat.writer("event", {**docs[4][1], "data": {**docs[4][1]["data"], "x": object()}})
    with pytest.warns(DescriptorMismatchWarning):
        cat.writer("event", {**docs[4][1], "data": {**docs[4][1]["data"], "x": np.array([1, 2])}})
    cat.writer.flush()
    again = databroker_lite.open_catalog(cat.directory, mode="r")
    assert len(again) == 2
    got = again[2].primary.read()["x"].values
    assert got[:2].tolist() == [0.0, 1.5] and got[2].tolist() == [1, 2]
    assert again.bad_files == {}


def test_event_page_with_a_scalar_column_or_a_list_descriptor(half_run):
    cat, docs = half_run
    desc = docs[1][1]
    keys = list(desc["data_keys"])
    page = {"uid": ["p1", "p2"], "time": [1.0, 2.0], "seq_num": [3, 4], "descriptor": desc["uid"],
            "data": {k: [1, 2] for k in keys}, "timestamps": {k: [1.0, 1.0] for k in keys}}
    with pytest.raises(InvalidDocument, match=rf"data\['{keys[0]}'\] must be an array of 2 entries, got int"):
        cat.insert("event_page", {**page, "data": {**page["data"], keys[0]: 5}})
    with pytest.raises(InvalidDocument, match="'descriptor' must be a string"):
        cat.insert("event_page", {**page, "descriptor": [desc["uid"]] * 2})
    _finish_and_check(cat, docs)  # nothing of the refused pages landed


@pytest.mark.parametrize("uid", ["a\0b", "../up", ".hidden"])
def test_start_uid_that_cannot_be_a_file_name(cat, uid):
    start = {**event_model.compose_run().start_doc, "uid": uid}
    with pytest.raises(InvalidDocument, match="uid cannot be used as a file name"):
        cat.insert("start", start)
    assert len(cat) == 0 and not [f for f in os.listdir(cat.directory) if f.endswith(".h5")]


def test_a_key_kept_as_json_reads_through_stream_getitem(half_run):
    cat, docs = half_run
    ev = _store_odd_event(cat, docs, "vec", [1.0, 2.0], "(2,)")
    vals = _finish_odd(cat, docs, ev, "vec")
    col = cat[2].primary["vec"]
    assert col.shape == (5,) and col.dtype == object
    assert col[2].tolist() == [1.0, 2.0] and col[0].tolist() == vals[0].tolist()
    assert [v.tolist() for v in col[1:3]] == [vals[1].tolist(), [1.0, 2.0]]


def test_a_null_in_a_number_column_reads_as_none_everywhere(half_run):
    """A ``None`` (JSON null) in a number column is a value the descriptor does not
    describe: kept as it came, one object per event, None where the producer sent
    nothing (not a NaN, which a reading can also be), in read(), to_dask() and
    stream[key] alike; ``astype(float)`` gives NaN for it."""
    cat, docs = half_run
    ev = _store_odd_event(cat, docs, "x", None, "a number")
    got = _finish_odd(cat, docs, ev, "x")
    want = got.tolist()
    assert want == [0.0, 1.5, None, 4.5, 6.0]
    stream = cat[2].primary
    lazy = stream.to_dask()["x"]
    assert lazy.dtype == object and lazy.compute().values.tolist() == want
    assert stream["x"].dtype == object and stream["x"][:].tolist() == want
    as_float = stream.read()["x"].astype(float).values
    assert np.isnan(as_float[2]) and as_float[[0, 1, 3, 4]].tolist() == [want[i] for i in (0, 1, 3, 4)]
