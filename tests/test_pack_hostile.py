"""Hostile packs: every check happens before anything is copied; a pack's own index is never
trusted; bad manifests are PackErrors; runs are matched by uid with the one same-run rule."""
from __future__ import annotations

import json
import os
import sqlite3

import blake3
import pytest
from event_model import compose_run

import databroker_lite
from databroker_lite import packing as P


def _run(cat, scan_id, values, uid=None):
    b = compose_run(metadata={"scan_id": scan_id, "plan_name": "count"}, uid=uid)
    cat.insert("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys={"a": {"dtype": "number", "shape": [], "source": "a"}})
    cat.insert("descriptor", d.descriptor_doc)
    for v in values:
        cat.insert("event", d.compose_event(data={"a": float(v)}, timestamps={"a": 0.0}))
    cat.insert("stop", b.compose_stop())
    return b.start_doc["uid"]


@pytest.fixture
def named(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "catalogs"))
    monkeypatch.setenv("DATABROKER_LITE_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def packed(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "src")
    uids = [_run(cat, i, [i, i + 1]) for i in (1, 2)]
    dest = tmp_path / "pack"
    P.pack(cat, dest, all=True, quiet=True)
    return cat, uids, dest


def _rewrite(dest, rel, content: bytes):
    """Change a file of a pack and its manifest entry, so the pack still verifies."""
    (dest / rel).write_bytes(content)
    man = json.loads((dest / "manifest.json").read_text())
    for e in man["files"]:
        if e["path"] == rel:
            e["size"], e["blake3"] = len(content), blake3.blake3(content).hexdigest()
    (dest / "manifest.json").write_text(json.dumps(man))
    assert P.verify(dest).ok


@pytest.mark.parametrize("catalog_json", [
    b'{"root_map": {"/data": "/etc"}}', b'{"root_map": {"/data": "../.."}}', b"{not json",
    b'{"root_map": ["x"]}', b"\xff\xfe"])
def test_unpack_refuses_a_bad_root_map_before_copying_anything(packed, tmp_path, named, catalog_json):
    _, _, dest = packed
    _rewrite(dest, "catalog.json", catalog_json)
    target = tmp_path / "target"
    with pytest.raises(P.PackError, match="catalog.json"):
        P.unpack(dest, "site-b", to=target)
    assert not target.exists()
    assert not (tmp_path / "catalogs").exists() or not os.listdir(tmp_path / "catalogs")
    with pytest.raises(P.PackError, match="catalog.json"):
        P.unpack(dest, "here", in_place=True)
    assert "here" not in databroker_lite.catalog


def test_unpack_in_place_never_trusts_an_index_that_came_with_the_pack(packed, tmp_path, named):
    cat, uids, dest = packed
    # another catalog's run, which a planted index row points at by absolute path
    other = databroker_lite.open_catalog(tmp_path / "other")
    secret = _run(other, 99, [42])
    databroker_lite.open_catalog(dest).refresh()  # the pack now has an index of its own
    db = sqlite3.connect(dest / ".databroker_lite" / "index.sqlite")
    db.execute("ATTACH ? AS o", (str(tmp_path / "other" / ".databroker_lite" / "index.sqlite"),))
    db.execute("INSERT INTO runs SELECT * FROM o.runs")
    db.execute("UPDATE runs SET file = ? WHERE uid = ?", (other[secret].path, secret))
    db.commit()
    db.close()
    assert secret in databroker_lite.open_catalog(dest)  # the attack works on a plain open
    assert P.verify(dest).ok  # the index is derived: not part of the manifest
    report = P.unpack(dest, "here", in_place=True)
    assert sorted(report.added) == sorted(uids)
    here = databroker_lite.catalog["here"]
    assert sorted(here) == sorted(uids) and secret not in here


def test_unpack_in_place_of_a_pack_whose_manifest_lies_about_a_uid_is_refused(packed, named):
    _, uids, dest = packed
    man = json.loads((dest / "manifest.json").read_text())
    man["runs"][0]["uid"] = "someone-else"
    (dest / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(P.PackError, match="holds run"):
        P.unpack(dest, "here", in_place=True)


@pytest.mark.parametrize("bad, why", [
    ({"path": "a.h5", "size": "12", "sha256": "0" * 64}, "size '12' is not a number"),
    ({"path": "a.h5", "size": 1, "sha256": 5}, "sha256 5 is not"),
    ({"path": ["a"], "size": 1, "sha256": "0" * 64}, "path \\['a'\\] is not a string"),
    ("a.h5", "not an object"),
])
def test_bad_manifest_entries_are_pack_errors(tmp_path, named, bad, why):
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / "manifest.json").write_text(json.dumps(
        {"format": "databroker_lite-pack", "version": 1, "runs": [], "files": [bad]}))
    with pytest.raises(P.PackError, match=why) as info:
        P.verify(dest)
    assert "manifest.json, files[0]" in str(info.value)
    with pytest.raises(P.PackError, match=why):
        P.unpack(dest, "x", to=tmp_path / "t")
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("content, why", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"format": "databroker_lite-pack", "version": 1, "runs": [], "files": [' + b"[" * 100_000
     + b"]" * 100_000 + b"]}", "nested too deeply"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"format": "databroker_lite-pack", "version": "1", "runs": [], "files": []}', "version"),
    (b'{"format": "databroker_lite-pack", "version": 1, "runs": [{"uid": 1}], "files": []}', "runs\\[0\\]"),
])
def test_hostile_manifest_documents_are_pack_errors(tmp_path, content, why):
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / "manifest.json").write_bytes(content)
    with pytest.raises(P.PackError, match=why) as info:
        P.verify(dest)
    assert "manifest.json" in str(info.value)


def test_unpack_same_uid_under_another_file_name_is_the_same_run_or_a_conflict(packed, tmp_path, named):
    cat, uids, dest = packed
    target = tmp_path / "target"
    target.mkdir()
    # the target holds run 1 identically, but in a file of another name
    (target / "renamed.h5").write_bytes(open(cat[uids[0]].path, "rb").read())
    # and run 2's uid with other documents
    tcat = databroker_lite.open_catalog(target)
    _run(tcat, 2, [7, 7, 7], uid=uids[1])
    before = open(tcat[uids[1]].path, "rb").read()
    report = P.unpack(dest, "site-b", to=target)
    assert report.added == [] and report.skipped_identical == [uids[0]]
    assert [c.split(":")[0] for c in report.conflicts] == [uids[1]]
    assert sorted(f for f in os.listdir(target) if f.endswith(".h5")) == sorted(["renamed.h5", f"{uids[1]}.h5"])
    assert open(tcat[uids[1]].path, "rb").read() == before
    assert databroker_lite.catalog["site-b"][uids[1]].primary.read()["a"].values.tolist() == [7.0] * 3


def test_unpack_same_documents_in_different_bytes_is_the_same_run(packed, tmp_path, named):
    """Byte equality is not required: the documents decide."""
    cat, uids, dest = packed
    target = databroker_lite.open_catalog(tmp_path / "target")
    for name, doc in cat[uids[0]].documents():  # written again, a flush per event: other bytes
        target.insert(name, doc)
        target.writer.flush()
    assert open(target[uids[0]].path, "rb").read() != open(cat[uids[0]].path, "rb").read()
    report = P.unpack(dest, "site-b", to=target.directory)
    assert report.skipped_identical == [uids[0]] and report.added == [uids[1]] and report.conflicts == []


def test_pack_never_replaces_a_packed_run_with_another_run_of_its_uid(tmp_path):
    src = databroker_lite.open_catalog(tmp_path / "src")
    uid = _run(src, 1, [1, 2])
    dest = tmp_path / "pack"
    P.pack(src, dest, all=True, quiet=True)
    packed_bytes = (dest / f"{uid}.h5").read_bytes()
    other = databroker_lite.open_catalog(tmp_path / "other")
    _run(other, 1, [5, 6, 7], uid=uid)  # another run under the same uid
    report = P.pack(other, dest, all=True, quiet=True)
    assert report.files_copied == 0 and [c.split(" (")[0] for c in report.conflicts] == [f"run {uid}"]
    assert "conflict" in str(report)
    assert (dest / f"{uid}.h5").read_bytes() == packed_bytes and P.verify(dest).ok
    # the same documents in a file of other bytes: the same run, reused
    same = databroker_lite.open_catalog(tmp_path / "same")
    for name, doc in src[uid].documents():
        same.insert(name, doc)
        same.writer.flush()
    assert (same[uid].path and open(same[uid].path, "rb").read()) != packed_bytes
    report = P.pack(same, dest, all=True, quiet=True)
    assert report.conflicts == [] and report.files_reused == 1 and P.verify(dest).ok
