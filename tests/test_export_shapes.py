"""Export of what real producers send that the descriptor does not describe: rows stored as
they came (other lengths than declared), variable-length rows, ophyd-async's frames-per-event
axis, text in an "integer" column, fly scans without a primary stream, empty arrays.

Each output is read back with the consumer a user would use: csv/json, xarray's
``Dataset.from_dict``, spec2nexus, nexusformat and h5py.
"""
from __future__ import annotations

import csv
import json

import event_model
import h5py
import numpy as np
import pytest
import xarray as xr

from databroker_lite.export import CSVWriter, JSONWriter, NexusWriter

nexus = pytest.importorskip("nexusformat.nexus")
spec2nexus_spec = pytest.importorskip("spec2nexus.spec")


def _docs(data_keys: dict, rows: list[dict], scan_id: int = 1) -> list[tuple[str, dict]]:
    """The documents of a run of one primary descriptor and one event per row."""
    b = event_model.compose_run(metadata={"scan_id": scan_id}, time=1.7e9)
    d = b.compose_descriptor(name="primary", data_keys=data_keys, time=1.7e9)
    docs = [("start", b.start_doc), ("descriptor", d.descriptor_doc)]
    for i, row in enumerate(rows):
        docs.append(("event", d.compose_event(data=row, timestamps={k: 1.7e9 for k in row},
                                              seq_num=i + 1, time=1.7e9 + i)))
    return [*docs, ("stop", b.compose_stop(time=1.7e9 + len(rows)))]


def _insert(cat, docs):
    for name, doc in docs:
        cat.insert(name, doc)
    return cat[-1]


def _csv_column(paths: list[str], key: str) -> list[str]:
    (path,) = [p for p in paths if p.endswith("_primary.csv")]
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return [r[rows[0].index(key)] for r in rows[1:]]


def _json_primary(path: str) -> dict:
    with open(path) as f:
        return json.load(f)["primary"]


# rows of 2000 and 3000 values where the descriptor says 5, and a mapping: stored as they came
AS_THEY_CAME = [list(range(2000)), list(range(3000)), {"peak": 1.5, "width": [1, 2]}]


def _as_they_came_docs():
    return _docs({"x": {"dtype": "number", "shape": [], "source": "x"},
                  "spec": {"dtype": "array", "shape": [5], "source": "mca"}},
                 [{"x": float(i), "spec": v} for i, v in enumerate(AS_THEY_CAME)])


def test_rows_stored_as_they_came_are_written_whole(cat, tmp_path):
    """Not numpy's elided repr ('[0 1 2 ... 1999]'): the JSON text of every value."""
    with pytest.warns(Warning):
        run = _insert(cat, _as_they_came_docs())
    assert [len(v) for v in run.primary.read()["spec"].values[:2]] == [2000, 3000]
    cells = _csv_column(run.export("csv", tmp_path / "csv"), "spec")
    assert [json.loads(c) for c in cells] == AS_THEY_CAME
    (nxs,) = run.export("nexus", tmp_path / "nx")
    with h5py.File(nxs, "r") as f:
        ds = f["entry/bluesky/streams/primary/spec"]
        assert ds.attrs["encoding"] == "json" and ds.shape == (3,)
        assert [json.loads(v) for v in ds.asstr()[()]] == AS_THEY_CAME
    entry = nexus.nxload(nxs)["entry"]
    assert entry["data"].nxsignal.nxname == "x"
    assert json.loads(entry["bluesky/streams/primary/spec"].nxvalue[1]) == AS_THEY_CAME[1]
    (js,) = run.export("json", tmp_path / "js")
    back = xr.Dataset.from_dict(_json_primary(js))
    assert back["spec"].dims == ("time",) and back["spec"].attrs["encoding"] == "json"
    assert [json.loads(v) for v in back["spec"].values] == AS_THEY_CAME
    assert back["x"].values.tolist() == [0.0, 1.0, 2.0]


def test_rows_as_they_came_live(tmp_path):
    """The live writers, given the event documents as they come, write the same."""
    writers = [CSVWriter(tmp_path / "csv"), NexusWriter(tmp_path / "nx"), JSONWriter(tmp_path / "js")]
    for name, doc in _as_they_came_docs():
        for w in writers:
            w(name, doc)
    assert [json.loads(c) for c in _csv_column(writers[0].paths, "spec")] == AS_THEY_CAME
    (nxs,) = writers[1].paths
    with h5py.File(nxs, "r") as f:
        assert [json.loads(v) for v in f["entry/bluesky/streams/primary/spec"].asstr()[()]] \
            == AS_THEY_CAME
    (js,) = writers[2].paths
    back = xr.Dataset.from_dict(_json_primary(js))
    assert [json.loads(v) for v in back["spec"].values] == AS_THEY_CAME


def test_json_variable_length_rows_read_back_with_from_dict(cat, tmp_path):
    """Descriptor shape [None] (a spectrum of varying length): one JSON text per event."""
    rows = [[0, 1], [0, 1, 2], [7]]
    run = _insert(cat, _docs({"spec": {"dtype": "array", "shape": [None], "source": "mca"}},
                             [{"spec": r} for r in rows]))
    (js,) = run.export("json", tmp_path)
    doc = _json_primary(js)
    assert doc["data_vars"]["spec"]["dims"] == ["time"] and doc["dims"] == {"time": 3}
    back = xr.Dataset.from_dict(doc)
    assert [json.loads(v) for v in back["spec"].values] == rows
    assert back["spec"].attrs == {"source": "mca", "encoding": "json"}


def test_json_dims_follow_the_read_data_of_ophyd_async(RE, cat, tmp_path):  # noqa: N803
    """ophyd-async's [1, 240, 320] reads as (n, 240, 320): the file's dims say 3, not 4."""
    pytest.importorskip("ophyd_async")
    import bluesky.plans as bp
    from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, init_devices
    from ophyd_async.sim import SimBlobDetector
    (tmp_path / "blob").mkdir()
    with init_devices():
        blob = SimBlobDetector(StaticPathProvider(StaticFilenameProvider("blob"), tmp_path / "blob"))
    RE.subscribe(cat.writer)
    (uid,) = RE(bp.count([blob], num=2))
    run = cat[uid]
    ds = run.primary.read()
    (js,) = run.export("json", tmp_path / "js")
    doc = _json_primary(js)
    assert doc["data_vars"]["blob"]["dims"] == list(ds["blob"].dims)
    back = xr.Dataset.from_dict(doc)
    assert back["blob"].shape == (2, 240, 320)
    np.testing.assert_array_equal(back["blob"].values, ds["blob"].values)
    assert back["blob-sum"].dims == ("time",)
    np.testing.assert_array_equal(back["blob-sum"].values, ds["blob-sum"].values)

    # SPEC: the scalar 'blob-sum' (descriptor shape [1]) is a column; the image is not
    (spec,) = run.export("spec", tmp_path / "s.spec")
    scan = spec2nexus_spec.SpecDataFile(spec).getScan(1)
    assert "blob-sum" in scan.L and "blob" not in scan.L
    assert scan.data["blob-sum"] == ds["blob-sum"].values.tolist()
    assert any("not in #L" in c and c.endswith(": blob") for c in scan.comments)


def test_spec_leaves_text_of_an_integer_column_out_of_the_columns(RE, cat, tmp_path):  # noqa: N803
    """ophyd.sim's EnumSignal describes itself as "integer" but reads as text."""
    import bluesky.plans as bp
    from ophyd.sim import EnumSignal, SynAxis
    shutter = EnumSignal(name="shutter", value=1, enum_strings=("Closed", "Open"))
    motor = SynAxis(name="motor")
    RE.subscribe(cat.writer)
    (uid,) = RE(bp.scan([shutter], motor, 0, 1, 3))
    run = cat[uid]
    assert run.primary.read()["shutter"].values.tolist() == ["Open"] * 3
    (spec,) = run.export("spec", tmp_path / "s.spec")
    scan = spec2nexus_spec.SpecDataFile(spec).getScan(1)
    assert "shutter" not in scan.L and "shutter" not in scan.data
    assert scan.L[0] == "motor" and scan.data["motor"] == [0.0, 0.5, 1.0]
    assert any(c.endswith("(not numeric scalars): shutter") for c in scan.comments)


def test_nexus_fly_scan_has_nxdata_of_its_stream(RE, cat, tmp_path):  # noqa: N803
    """No 'primary' stream: NXdata (and /entry@default) of the flyer's stream."""
    import bluesky.plans as bp
    from ophyd.sim import hw
    h = hw()
    RE.subscribe(cat.writer)
    (uid,) = RE(bp.fly([h.flyer1]))
    run = cat[uid]
    assert list(run) == ["flyer1"]
    ds = run.flyer1.read()
    (nxs,) = run.export("nexus", tmp_path)
    root = nexus.nxload(nxs)
    assert root["entry"].attrs["default"] == "data"
    data = root.plottable_data
    assert data is not None and data.nxpath == "/entry/data"
    signal = data.nxsignal.nxname
    assert signal in ds and signal != "time"
    np.testing.assert_array_equal(data.nxsignal.nxvalue, ds[signal].values)


def test_nexus_without_numbers_has_no_default(cat, tmp_path):
    """A run whose only column is text: no NXdata, so no /entry@default pointing nowhere."""
    run = _insert(cat, _docs({"label": {"dtype": "string", "shape": [], "source": "x"}},
                             [{"label": "a"}, {"label": "b"}]))
    (nxs,) = run.export("nexus", tmp_path)
    with h5py.File(nxs, "r") as f:
        assert "default" not in f["entry"].attrs and "data" not in f["entry"]
        assert f["entry/bluesky/streams/primary/label"].asstr()[()].tolist() == ["a", "b"]


def test_nexus_writes_zero_length_arrays(cat, tmp_path):
    """Descriptor shape [0] (a peak list without peaks): written, shape (n, 0)."""
    run = _insert(cat, _docs({"I0": {"dtype": "number", "shape": [], "source": "s"},
                              "peaks": {"dtype": "array", "shape": [0], "source": "s"}},
                             [{"I0": 1.0, "peaks": []}, {"I0": 2.0, "peaks": []}]))
    (nxs,) = run.export("nexus", tmp_path / "nx")
    with h5py.File(nxs, "r") as f:
        g = f["entry/bluesky/streams/primary"]
        assert g["peaks"].shape == (2, 0) and g["I0"][()].tolist() == [1.0, 2.0]
    assert nexus.nxload(nxs)["entry/data"].nxsignal.nxname == "I0"
    (js,) = run.export("json", tmp_path / "js")
    assert xr.Dataset.from_dict(_json_primary(js))["peaks"].shape == (2, 0)
