"""Pack formats: packs of format 1 (SHA-256) still verify, unpack and grow; format 2 is BLAKE3."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from event_model import compose_run

import databroker_lite
from databroker_lite import packing as P

V1 = os.path.join(os.path.dirname(__file__), "data", "lite-pack-v1")
RUN1 = "00000001-aaaa-4bbb-8ccc-dddddddddddd"


@pytest.fixture
def v1(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "catalogs"))
    monkeypatch.setenv("DATABROKER_LITE_DATA_DIR", str(tmp_path / "data"))
    dest = tmp_path / "old-pack"
    shutil.copytree(V1, dest, ignore=shutil.ignore_patterns("README.md"))
    return dest


def _manifest(dest):
    return json.loads((dest / "manifest.json").read_text())


def test_a_format_1_pack_verifies_and_unpacks(v1, tmp_path):
    man = _manifest(v1)
    assert man["version"] == 1 and all("sha256" in e and "blake3" not in e for e in man["files"])
    report = P.verify(v1)
    assert report.ok and report.n_files == 6
    P.unpack(v1, "old", to=tmp_path / "installed")
    cat = databroker_lite.catalog["old"]
    assert sorted(cat[s].metadata["start"]["scan_id"] for s in (1, 2, 50)) == [1, 2, 50]
    np.testing.assert_array_equal(cat[1].primary.read()["x"].values, [10.0, 11.0, 12.0])
    np.testing.assert_array_equal(cat[2].primary.read()["x"].values, [20.0, 21.0, 22.0])
    img = cat[50].primary.read()["img"].values
    assert img.shape == (4, 6, 5) and img.dtype == np.uint16
    np.testing.assert_array_equal(img, np.arange(120, dtype="u2").reshape(4, 6, 5))


def test_a_changed_byte_in_a_format_1_pack_is_caught(v1, tmp_path):
    ext = next(p for p in v1.rglob("50.h5"))
    data = bytearray(ext.read_bytes())
    data[-1] ^= 0xFF
    ext.write_bytes(bytes(data))
    report = P.verify(v1)
    assert not report.ok and report.changed == [str(ext.relative_to(v1))]
    with pytest.raises(P.PackError, match="does not match its manifest"):
        P.unpack(v1, "old", to=tmp_path / "installed")
    assert not (tmp_path / "installed").exists()


def test_adding_to_a_format_1_pack_keeps_its_entries_and_hashes_the_new_with_blake3(v1, tmp_path):
    P.unpack(v1, "src", to=tmp_path / "src")
    cat = databroker_lite.open_catalog(tmp_path / "src")
    b = compose_run(metadata={"scan_id": 3, "plan_name": "count"})
    cat.insert("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys={"x": {"dtype": "number", "shape": [], "source": "x"}})
    cat.insert("descriptor", d.descriptor_doc)
    cat.insert("event", d.compose_event(data={"x": 3.5}, timestamps={"x": 0.0}))
    cat.insert("stop", b.compose_stop())
    old = {e["path"]: e for e in _manifest(v1)["files"]}
    report = P.pack(cat, v1, all=True, quiet=True)
    assert report.new_runs == [b.start_doc["uid"]] and not report.conflicts
    man = _manifest(v1)
    assert man["version"] == 2
    files = {e["path"]: e for e in man["files"]}
    for rel in (f"{RUN1}.h5", next(r for r in old if r.startswith("external/"))):
        assert files[rel] == old[rel]  # not hashed again: still its SHA-256
    new = files[f"{b.start_doc['uid']}.h5"]
    assert "blake3" in new and "sha256" not in new and len(new["blake3"]) == 64
    assert P.verify(v1).ok
    assert len(databroker_lite.open_catalog(v1)) == 4


def test_a_format_2_entry_must_hold_a_checksum_it_can_check(tmp_path):
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / "a.h5").write_bytes(b"x")
    for e, msg in (({"path": "a.h5", "size": 1}, "no checksum"),
                   ({"path": "a.h5", "size": 1, "blake3": "zz"}, "blake3 'zz' is not a BLAKE3"),
                   ({"path": "a.h5", "size": 1, "md5": "0" * 32}, "no checksum")):
        (dest / "manifest.json").write_text(json.dumps(
            {"format": "databroker_lite-pack", "version": 2, "runs": [], "files": [e]}))
        with pytest.raises(P.PackError, match=msg):
            P.verify(dest)
    # a format 1 manifest names SHA-256 only
    (dest / "manifest.json").write_text(json.dumps({"format": "databroker_lite-pack", "version": 1, "runs": [],
                                                    "files": [{"path": "a.h5", "size": 1, "blake3": "0" * 64}]}))
    with pytest.raises(P.PackError, match="no checksum \\(sha256\\)"):
        P.verify(dest)


def test_a_file_changed_after_verify_is_not_installed(v1, tmp_path, monkeypatch):
    from databroker_lite.pack import unpacking
    real = unpacking.verify
    ext = next(p for p in v1.rglob("50.h5"))

    def verify_then_change(*a, **k):
        report = real(*a, **k)
        data = bytearray(ext.read_bytes())
        data[-1] ^= 0xFF
        ext.write_bytes(bytes(data))  # same size, other bytes
        return report

    monkeypatch.setattr(unpacking, "verify", verify_then_change)
    target = tmp_path / "installed"
    with pytest.raises(P.PackError, match="does not match its sha256 checksum"):
        P.unpack(v1, "old", to=target)
    installed = [p.name for p in target.rglob("*") if p.is_file()]
    assert "50.h5" not in installed and not [n for n in installed if ".partial-" in n]
