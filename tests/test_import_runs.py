"""import: suitcase / databroker-pack files with array data, conflicts by uid, bad input.

Files are written by suitcase-msgpack and suitcase-jsonl themselves from RunEngine runs.
"""
from __future__ import annotations

import json
import os
import pickle

import msgpack
import numpy as np
import pytest
from event_model import compose_run

import databroker_lite
from databroker_lite.errors import ImportFailed, PackError

suitcase_msgpack = pytest.importorskip("suitcase.msgpack")
suitcase_jsonl = pytest.importorskip("suitcase.jsonl")


def _re_runs():
    """Two RunEngine runs with array data: float images, a uint16 frame, a string, scalars."""
    from bluesky import RunEngine
    from bluesky.plans import count, scan
    from ophyd.sim import SynSignal, det, direct_img, motor
    frame = SynSignal(name="frame", func=lambda: np.arange(12, dtype="u2").reshape(4, 3))
    label = SynSignal(name="label", func=lambda: "Cu-K")
    RE = RunEngine()
    runs: list[list] = []
    RE.subscribe(lambda n, d: runs[-1].append((n, d)) if n != "start" else runs.append([(n, d)]))
    RE(count([direct_img, det, frame, label], num=3))
    RE(scan([direct_img], motor, 0, 1, 3))
    return runs


def _events(docs):
    out = []
    for n, d in docs:
        if n == "event":
            out.append(d)
        elif n == "event_page":
            out += [{"data": {k: v[i] for k, v in d["data"].items()}} for i in range(len(d["seq_num"]))]
    return out


@pytest.mark.parametrize("mod", [suitcase_msgpack, suitcase_jsonl], ids=["msgpack", "jsonl"])
def test_suitcase_files_of_runengine_runs_with_arrays_import(tmp_path, mod):
    runs = _re_runs()
    src = tmp_path / "files"
    for docs in runs:
        mod.export(iter(docs), str(src))
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    report = databroker_lite.import_documents(src, cat)
    assert sorted(report.added) == sorted(docs[0][1]["uid"] for docs in runs)
    first = cat[runs[0][0][1]["uid"]].primary.read()
    events = _events(runs[0])
    img = np.stack([np.asarray(e["data"]["img"]) for e in events])
    assert first["img"].shape == (3, 10, 10) and first["img"].dtype == np.float64
    np.testing.assert_array_equal(first["img"].values, img)
    assert first["frame"].dtype == np.uint16 or mod is suitcase_jsonl  # JSON has no uint16
    np.testing.assert_array_equal(first["frame"].values, np.stack([np.arange(12).reshape(4, 3)] * 3))
    assert first["label"].values.tolist() == ["Cu-K"] * 3
    np.testing.assert_array_equal(first["det"].values, [e["data"]["det"] for e in events])
    second = cat[runs[1][0][1]["uid"]].primary.read()
    assert second["img"].shape == (3, 10, 10) and second["motor"].values.tolist() == [0.0, 0.5, 1.0]
    # importing the same files again: every run is the same run, skipped
    again = databroker_lite.import_documents(src, cat)
    assert again.added == [] and sorted(again.skipped_identical) == sorted(report.added)
    assert again.conflicts == []


def _msgpack_numpy_file(path, value, key="x"):
    """One run whose event holds ``value`` encoded as msgpack-numpy does (suitcase-msgpack)."""
    import msgpack_numpy
    b = compose_run(metadata={"scan_id": 1})
    d = b.compose_descriptor(name="primary", data_keys={
        key: {"dtype": "array", "shape": [2], "source": key}})
    ev = d.compose_event(data={key: value}, timestamps={key: 0.0})
    with open(path, "wb") as f:
        for item in (("start", b.start_doc), ("descriptor", d.descriptor_doc), ("event", ev),
                     ("stop", b.compose_stop())):
            f.write(msgpack.packb(item, default=msgpack_numpy.encode, use_bin_type=True))
    return b.start_doc["uid"]


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_object_arrays_are_refused_and_never_unpickled(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    evil = np.empty(2, dtype=object)
    evil[0], evil[1] = _Evil(), 1
    path = tmp_path / "evil.msgpack"
    _msgpack_numpy_file(path, evil)
    assert b"system" in path.read_bytes()  # the pickle really is in the file
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    with pytest.raises(ImportFailed, match="pickle") as info:
        databroker_lite.import_documents(path, cat)
    assert "evil.msgpack" in str(info.value)
    assert not _Evil.marker.exists() and len(cat) == 0
    structured = np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")])
    _msgpack_numpy_file(tmp_path / "struct.msgpack", structured)
    with pytest.raises(ImportFailed, match="only plain numeric and string dtypes"):
        databroker_lite.import_documents(tmp_path / "struct.msgpack", cat)


def test_msgpack_numpy_scalars_strings_and_complex_decode(tmp_path):
    path = tmp_path / "s.msgpack"
    uid = _msgpack_numpy_file(path, np.array(["ab", "cde"]))
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    databroker_lite.import_documents(path, cat)
    assert cat[uid].primary.read()["x"].values.tolist() == [["ab", "cde"]]
    path = tmp_path / "i.msgpack"
    uid = _msgpack_numpy_file(path, np.array([3, -4], dtype="<i4"))
    databroker_lite.import_documents(path, cat)
    x = cat[uid].primary.read()["x"]
    assert x.dtype.kind == "i" and x.values.tolist() == [[3, -4]]


def _docs(scan_id, values, uid=None):
    b = compose_run(metadata={"scan_id": scan_id, "plan_name": "count"}, uid=uid)
    d = b.compose_descriptor(name="primary", data_keys={"a": {"dtype": "number", "shape": [], "source": "a"}})
    docs = [("start", b.start_doc), ("descriptor", d.descriptor_doc)]
    docs += [("event", d.compose_event(data={"a": float(v)}, timestamps={"a": 0.0})) for v in values]
    return docs + [("stop", b.compose_stop())]


def _write(path, *runs):
    with open(path, "wb") as f:
        for docs in runs:
            for item in docs:
                f.write(msgpack.packb(item, use_bin_type=True))


@pytest.fixture
def existing(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    docs = _docs(1, [1, 2, 3])
    for n, d in docs:
        cat.insert(n, d)
    uid = docs[0][1]["uid"]
    return cat, uid, open(cat[uid].path, "rb").read()


def test_second_run_of_a_file_reusing_an_existing_uid_is_a_conflict_never_a_replacement(tmp_path, existing):
    cat, uid, before = existing
    new = _docs(2, [7])
    _write(tmp_path / "two.msgpack", new, _docs(1, [9, 9], uid=uid))
    report = databroker_lite.import_documents(tmp_path / "two.msgpack", cat)
    assert report.added == [new[0][1]["uid"]]
    assert len(report.conflicts) == 1 and report.conflicts[0].startswith(uid)
    assert report.skipped_identical == []
    assert open(cat[uid].path, "rb").read() == before
    assert cat[uid].primary.read()["a"].values.tolist() == [1.0, 2.0, 3.0]
    assert "1 conflict(s)" in str(report) and uid in str(report)


def test_existing_uid_is_compared_not_assumed_identical(tmp_path, existing):
    cat, uid, before = existing
    _write(tmp_path / "other.msgpack", _docs(1, [4, 5], uid=uid))
    report = databroker_lite.import_documents(tmp_path / "other.msgpack", cat)
    assert report.skipped_identical == [] and report.added == []
    assert [c.split(":")[0] for c in report.conflicts] == [uid]
    assert open(cat[uid].path, "rb").read() == before
    # the very documents it holds: the same run, skipped
    same = [(n, json.loads(json.dumps(d, default=lambda a: a.tolist()))) for n, d in cat[uid].documents()]
    _write(tmp_path / "same.msgpack", same)
    report = databroker_lite.import_documents(tmp_path / "same.msgpack", cat)
    assert report.skipped_identical == [uid] and report.conflicts == []


def test_pack_file_named_otherwise_holding_an_existing_uid_is_not_added_beside_it(tmp_path, existing):
    cat, uid, before = existing
    pack = tmp_path / "dbpack"
    (pack / "documents").mkdir(parents=True)
    (pack / "catalog.yml").write_text("sources:\n  packed_catalog:\n    driver: bluesky-msgpack-catalog\n"
                                      "    args:\n      paths:\n      - 'PACK_DIR/documents/*.msgpack'\n")
    _write(pack / "documents" / "renamed.msgpack", _docs(1, [8], uid=uid))
    report = databroker_lite.import_documents(pack, cat)
    assert report.added == [] and [c.split(":")[0] for c in report.conflicts] == [uid]
    assert sorted(f for f in os.listdir(cat.directory) if f.endswith(".h5")) == [f"{uid}.h5"]
    assert len(cat) == 1 and open(cat[uid].path, "rb").read() == before


def test_a_failed_run_does_not_stop_the_others(tmp_path):
    src = tmp_path / "files"
    src.mkdir()
    good1, good2 = _docs(1, [1]), _docs(3, [3])
    _write(src / "a.msgpack", good1)
    (src / "b.msgpack").write_bytes(b"\xc1" * 10)
    bad = _docs(2, [2])
    bad[2] = ("event", {**bad[2][1], "seq_num": "two"})
    _write(src / "c.msgpack", bad, good2)  # its second run is fine
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    with pytest.raises(ImportFailed) as info:
        databroker_lite.import_documents(src, cat)
    err = info.value
    assert isinstance(err, PackError)
    assert sorted(err.report.added) == sorted([good1[0][1]["uid"], good2[0][1]["uid"]])
    assert set(err.failed) == {str(src / "b.msgpack"), f"{src / 'c.msgpack'} (run {bad[0][1]['uid']})"}
    assert "not a msgpack document stream" in err.failed[str(src / "b.msgpack")]
    assert "nothing of this run was imported" in str(err) and "2 added" in str(err)
    assert len(cat) == 2 and bad[0][1]["uid"] not in cat


def _jsonl_bytes(docs):
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


def _bad_files():
    """name -> (file content, what the message must say), each once a raw Python exception."""
    docs = [list(d) for d in _docs(1, [1])]
    no_uid = [["start", {k: v for k, v in docs[0][1].items() if k != "uid"}], *docs[1:]]
    with_bytes = [list(d) for d in docs]
    with_bytes[0] = ["start", {**docs[0][1], "sample": b"\x00\x01raw"}]
    with_ext = [list(d) for d in docs]
    with_ext[0] = ["start", {**docs[0][1], "sample": msgpack.ExtType(7, b"xx")}]
    deep_json = b'["start", ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"]\n"
    return {
        "nouid.jsonl": (_jsonl_bytes(no_uid), "has no uid"),
        "nouid.msgpack": (b"".join(msgpack.packb(d) for d in no_uid), "has no uid"),
        "bytes.msgpack": (b"".join(msgpack.packb(d, use_bin_type=True) for d in with_bytes), "raw bytes"),
        "ext.msgpack": (b"".join(msgpack.packb(d) for d in with_ext), "extension"),
        "latin1.jsonl": (_jsonl_bytes(docs[:1]) + '["descriptor", {"x": "é"}]\n'.encode("latin-1"),
                         "line 2: not UTF-8"),
        "deep.jsonl": (deep_json, "nested too deeply"),
        "deep.msgpack": (b"\x91" * 100_000 + b"\xc0", "not a msgpack document stream"),
        "deep2.msgpack": (msgpack.packb(["start", json.loads(b'{"a": ' * 500 + b"1" + b"}" * 500)]),
                          "nested more than"),
    }


@pytest.mark.parametrize("name", list(_bad_files()))
def test_bad_import_files_are_pack_errors_naming_file_and_problem(tmp_path, name):
    content, why = _bad_files()[name]
    path = tmp_path / name
    path.write_bytes(content)
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    with pytest.raises(PackError, match=why) as info:
        databroker_lite.import_documents(path, cat)
    assert name in str(info.value)
    assert len(cat) == 0 and not [f for f in os.listdir(cat.directory) if f.endswith(".h5")]


def test_no_pickle_module_is_used_by_import(tmp_path, monkeypatch):
    """Decoding suitcase-msgpack arrays never goes through pickle."""
    def refuse(*a, **k):
        raise AssertionError("pickle.loads called")
    monkeypatch.setattr(pickle, "loads", refuse)
    path = tmp_path / "a.msgpack"
    uid = _msgpack_numpy_file(path, np.array([1.5, 2.5]))
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    databroker_lite.import_documents(path, cat)
    assert cat[uid].primary.read()["x"].values.tolist() == [[1.5, 2.5]]
