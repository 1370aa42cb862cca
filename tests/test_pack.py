"""Pack, verify, unpack and import (SPEC section 7)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import blake3
import h5py
import msgpack
import numpy as np
import pytest
from conftest import ad_hdf5_run
from event_model import compose_run

import databroker_lite
from databroker_lite import packing as P
from databroker_lite.cli import main as cli

DATA = os.path.join(os.path.dirname(__file__), "data", "databroker-pack-0.3")


def _scalar_run(cat, scan_id, n=5, t0=1.7e9, plan="scan", sample="Cu"):
    b = compose_run(metadata={"scan_id": scan_id, "plan_name": plan, "sample": {"name": sample}},
                    time=t0 + scan_id)
    cat.insert("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys={
        "x": {"dtype": "number", "shape": [], "source": "x"},
        "y": {"dtype": "number", "shape": [], "source": "y"}})
    cat.insert("descriptor", d.descriptor_doc)
    for i in range(n):
        cat.insert("event", d.compose_event(data={"x": float(i), "y": float(i * scan_id)},
                                            timestamps={"x": 0.0, "y": 0.0}))
    cat.insert("stop", b.compose_stop())
    return b.start_doc["uid"]


@pytest.fixture
def source(tmp_path):
    cat = databroker_lite.open_catalog(tmp_path / "src")
    uids = [_scalar_run(cat, s) for s in (1, 2, 3)]
    ad_uid, frames = ad_hdf5_run(cat, str(tmp_path / "detector_files"))
    return cat, uids, ad_uid, frames


@pytest.fixture
def named(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "catalogs"))
    monkeypatch.setenv("DATABROKER_LITE_DATA_DIR", str(tmp_path / "data"))


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _b3(path):
    return blake3.blake3(open(path, "rb").read()).hexdigest()


def test_pack_all_then_move_and_open(source, tmp_path):
    cat, uids, ad_uid, frames = source
    dest = tmp_path / "pack"
    report = P.pack(cat, dest, all=True, quiet=True)
    assert sorted(report.runs) == sorted([*uids, ad_uid])
    man = json.loads((dest / "manifest.json").read_text())
    assert man["format"] == "databroker_lite-pack" and man["version"] == 2
    assert {r["uid"] for r in man["runs"]} == {*uids, ad_uid}
    for e in man["files"]:  # every file listed with its true size and checksum, all relative
        assert not os.path.isabs(e["path"])
        full = dest / e["path"]
        assert full.stat().st_size == e["size"]
        assert _b3(full) == e["blake3"] and "sha256" not in e
    assert any(e["path"].startswith("external/") and e["path"].endswith("img/50.h5") for e in man["files"])
    # move the pack and remove the original detector files: it must still read
    moved = tmp_path / "elsewhere" / "renamed-pack"
    shutil.move(str(dest), moved)
    shutil.rmtree(tmp_path / "detector_files")
    packed = databroker_lite.open_catalog(moved)
    assert len(packed) == 4
    np.testing.assert_array_equal(packed[50].primary.read()["img"].values, frames)
    np.testing.assert_array_equal(packed[2].primary.read()["y"].values, [0.0, 2.0, 4.0, 6.0, 8.0])
    assert P.verify(moved).ok


def test_dry_run_counts_and_writes_nothing(source, tmp_path):
    cat, uids, ad_uid, _ = source
    report = P.pack(cat, tmp_path / "p", scan_ids=["1-2"], dry_run=True)
    assert report.dry_run and sorted(report.runs) == sorted(uids[:2])
    assert report.bytes_total == sum(os.path.getsize(cat[s].path) for s in (1, 2))
    assert not (tmp_path / "p").exists()


def test_select_by_query_and_time(source, tmp_path):
    cat, uids, ad_uid, _ = source
    report = P.pack(cat, tmp_path / "p", query='{"plan_name": "count"}', quiet=True)
    assert report.runs == [ad_uid]
    report = P.pack(cat, tmp_path / "q", since=1.7e9 + 1.5, until=1.7e9 + 3.5, quiet=True)
    assert sorted(report.runs) == sorted(uids[1:])


def test_query_is_parsed_never_evaluated(source, tmp_path):
    cat, *_ = source
    with pytest.raises(databroker_lite.InvalidQuery, match="not valid JSON"):
        P.pack(cat, tmp_path / "p", query='__import__("os").system("touch /tmp/pwned")')
    with pytest.raises(databroker_lite.InvalidQuery, match="unknown operator"):
        P.pack(cat, tmp_path / "p", query='{"scan_id": {"$where": "1"}}')
    with pytest.raises(databroker_lite.InvalidQuery, match="say which runs"):
        P.pack(cat, tmp_path / "p")


def test_parse_scan_ids():
    assert P.parse_scan_ids(["5", "7-9", "12,14"]) == [5, 7, 8, 9, 12, 14]
    with pytest.raises(databroker_lite.InvalidQuery):
        P.parse_scan_ids(["x"])
    with pytest.raises(databroker_lite.InvalidQuery, match="reversed: write 2-4"):
        P.parse_scan_ids(["4-2"])
    with pytest.raises(databroker_lite.InvalidQuery, match="more than a million"):
        P.parse_scan_ids(["1-3000000000"])


def test_huge_and_empty_scan_id_ranges_select_by_search(source, tmp_path, capsys):
    """A range is one search, however wide; a selection that finds nothing is an error."""
    cat = source[0]
    report = P.pack(cat, tmp_path / "p", scan_ids=[f"1-{10**23}"], dry_run=True)
    assert len(report.runs) == len(cat.search({"scan_id": {"$gte": 1}}))
    with pytest.raises(databroker_lite.NoRunsMatch, match="no run has the scan_id"):
        P.pack(cat, tmp_path / "q", scan_ids=["900-901"], dry_run=True)
    assert cli(["pack", cat.directory, str(tmp_path / "r"), "--scan-ids", "4-2", "-q"]) != 0
    assert "reversed: write 2-4" in capsys.readouterr().err


def test_pack_again_adds_only_new_runs(source, tmp_path):
    cat, uids, ad_uid, _ = source
    dest = tmp_path / "p"
    P.pack(cat, dest, scan_ids=[1], quiet=True)
    new_uid = _scalar_run(cat, 7)
    report = P.pack(cat, dest, scan_ids=[1, 7], quiet=True)
    assert report.new_runs == [new_uid]
    assert report.files_copied == 1 and report.files_reused == 1
    man = json.loads((dest / "manifest.json").read_text())
    assert {r["uid"] for r in man["runs"]} == {uids[0], new_uid}
    assert P.verify(dest).ok


def test_interrupted_pack_resumes(source, tmp_path, monkeypatch):
    cat, uids, ad_uid, _ = source
    dest = tmp_path / "p"
    from databroker_lite.pack import files as pack_files
    real = pack_files.copy_hashed
    calls = []

    def failing(src, dst, progress=None):
        calls.append(src)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-pack
        return real(src, dst, progress)

    monkeypatch.setattr(pack_files, "copy_hashed", failing)
    with pytest.raises(KeyboardInterrupt):
        P.pack(cat, dest, all=True, quiet=True)
    assert not (dest / "manifest.json").exists()
    assert not [p for p in dest.rglob("*") if ".partial-" in p.name]
    monkeypatch.setattr(pack_files, "copy_hashed", real)
    report = P.pack(cat, dest, all=True, quiet=True)
    assert report.files_reused == 2
    assert P.verify(dest).ok
    assert len(databroker_lite.open_catalog(dest)) == 4


def test_pack_killed_midway_then_finished(source, tmp_path):
    """SIGKILL a packing process after its first file; pack again; the result verifies."""
    cat, *_ = source
    dest = tmp_path / "p"
    script = textwrap.dedent(f"""
        import time
        import databroker_lite.packing as P
        from databroker_lite.pack import files as F
        real = F.copy_hashed
        calls = []
        def slow(src, dst, progress=None):
            calls.append(src)
            if len(calls) == 2:  # the first file is in place and journaled: wait to be killed
                time.sleep(60)
            return real(src, dst, progress)
        F.copy_hashed = slow
        P.pack({str(cat.directory)!r}, {str(dest)!r}, all=True, quiet=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    journal = dest / ".databroker_lite" / "pack-journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journal.exists() and journal.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (dest / "manifest.json").exists()
    with pytest.raises(P.PackError, match="unfinished"):
        P.verify(dest)
    report = P.pack(cat.directory, dest, all=True, quiet=True)
    assert report.files_reused >= 1
    assert P.verify(dest).ok


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "extra"])
def test_verify_finds_damage(source, tmp_path, damage, capsys):
    cat, *_ = source
    dest = tmp_path / "p"
    P.pack(cat, dest, all=True, quiet=True)
    victim = dest / os.path.basename(cat[2].path)
    if damage == "flip":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        victim.write_bytes(bytes(raw))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    elif damage == "delete":
        victim.unlink()
    else:
        (dest / "stray.txt").write_text("hello")
    report = P.verify(dest)
    assert not report.ok
    field = {"flip": "changed", "truncate": "changed", "delete": "missing", "extra": "extra"}[damage]
    expected = "stray.txt" if damage == "extra" else victim.name
    assert getattr(report, field) == [expected]
    assert cli(["verify", str(dest)]) == 1
    assert expected in capsys.readouterr().out


def test_unpack_refuses_tampered_pack_and_leaves_destination(source, tmp_path, named):
    cat, *_ = source
    dest = tmp_path / "p"
    P.pack(cat, dest, all=True, quiet=True)
    victim = dest / os.path.basename(cat[1].path)
    victim.write_bytes(victim.read_bytes()[:-10])
    target = tmp_path / "target"
    with pytest.raises(P.PackError, match=victim.name):
        P.unpack(dest, "site-b", to=target)
    assert not target.exists()
    assert "site-b" not in list(databroker_lite.config.catalog)


def test_unpack_installs_named_catalog(source, tmp_path, named):
    cat, uids, ad_uid, frames = source
    dest = tmp_path / "p"
    P.pack(cat, dest, all=True, quiet=True)
    report = P.unpack(dest, "site-b")
    assert sorted(report.added) == sorted([*uids, ad_uid])
    installed = databroker_lite.config.catalog["site-b"]
    assert len(installed) == 4
    np.testing.assert_array_equal(installed[50].primary.read()["img"].values, frames)
    assert str(tmp_path / "data") in installed.directory


def test_unpack_into_existing_skips_identical_reports_conflicts(source, tmp_path, named):
    cat, uids, ad_uid, _ = source
    dest = tmp_path / "p"
    P.pack(cat, dest, scan_ids=[1, 2], quiet=True)
    target = tmp_path / "target"
    P.unpack(dest, "site-b", to=target)
    # a different file under the same run name in the target: a conflict, never overwritten
    other = target / os.path.basename(cat[2].path)
    other.write_bytes(b"not the same run")
    before = other.read_bytes()
    report = P.unpack(dest, "site-b", to=target)
    assert report.skipped_identical == [uids[0]]
    assert len(report.conflicts) == 1 and uids[1] in report.conflicts[0]
    assert other.read_bytes() == before


def test_unpack_in_place(source, tmp_path, named):
    cat, *_ = source
    dest = tmp_path / "p"
    P.pack(cat, dest, all=True, quiet=True)
    P.unpack(dest, "here", in_place=True)
    assert databroker_lite.config.catalog["here"].directory == str(dest)


def _write_manifest(dest, files, runs=(), version=1):
    man = {"format": "databroker_lite-pack", "version": version, "runs": list(runs), "files": files}
    (dest / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("path", ["../evil.h5", "/etc/passwd", "a/../../evil", "C:/x"])
def test_escaping_manifest_paths_are_refused(tmp_path, named, path):
    dest = tmp_path / "p"
    dest.mkdir()
    _write_manifest(dest, [{"path": path, "size": 1, "sha256": "0" * 64}])
    report = P.verify(dest)
    assert report.unsafe == [path]
    with pytest.raises(P.PackError, match="refusing"):
        P.unpack(dest, "evil", to=tmp_path / "target")
    assert not (tmp_path / "evil.h5").exists() and not (tmp_path / "target").exists()


def test_symlink_out_of_pack_is_refused(tmp_path, named):
    dest = tmp_path / "p"
    dest.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    os.symlink(secret, dest / "link.h5")
    _write_manifest(dest, [{"path": "link.h5", "size": 6, "sha256": _sha(secret)}])
    assert P.verify(dest).unsafe == ["link.h5"]
    with pytest.raises(P.PackError):
        P.unpack(dest, "evil", to=tmp_path / "target")


def test_bad_manifests(tmp_path):
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / "manifest.json").write_text("{not json")
    with pytest.raises(P.PackError, match="not valid JSON"):
        P.verify(dest)
    _write_manifest(dest, [], version=99)
    with pytest.raises(P.PackError, match="newer"):
        P.verify(dest)
    (dest / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(P.PackError, match="not a databroker_lite pack"):
        P.verify(dest)


def test_cli_pack_verify_roundtrip(source, tmp_path, capsys):
    cat, *_ = source
    dest = tmp_path / "p"
    assert cli(["pack", cat.directory, str(dest), "--scan-ids", "1-3", "-q"]) == 0
    assert "packed 3 run(s)" in capsys.readouterr().out
    assert cli(["verify", str(dest)]) == 0
    assert "OK" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "databroker_lite", "pack", cat.directory,
                          str(tmp_path / "q"), "--all", "--dry-run"], capture_output=True, text=True)
    assert out.returncode == 0 and "would pack 4 run(s)" in out.stdout


# --- interop with databroker-pack 0.3 and suitcase ---------------------------------

def _expected():
    with open(os.path.join(DATA, "expected_reads.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("flavour", ["msgpack", "jsonl"])
def test_import_databroker_pack(tmp_path, flavour):
    src = tmp_path / flavour
    shutil.copytree(os.path.join(DATA, "packs", flavour), src)
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    report = P.import_documents(src, cat)
    assert len(report.added) == 4
    expected = _expected()
    for uid, streams in expected.items():
        run = cat[uid]
        for stream, exp in streams.items():
            ds = run[stream].read()
            np.testing.assert_allclose(ds["time"].values, exp["time"])
            for key, values in exp["values"].items():
                assert list(ds[key].shape) == exp["shapes"][key]
                if exp["dtypes"][key].startswith("<U"):
                    assert ds[key].dtype.kind == "U"
                    assert ds[key].values.tolist() == values
                else:
                    assert str(ds[key].dtype) == exp["dtypes"][key]
                    np.testing.assert_array_equal(ds[key].values, np.asarray(values))
    # the external files now live inside the catalog: the source pack can go
    shutil.rmtree(src)
    reopened = databroker_lite.open_catalog(tmp_path / "cat")
    assert reopened[103].primary.read()["img_image"].shape == (8, 1, 16, 16)
    # importing again adds nothing
    shutil.copytree(os.path.join(DATA, "packs", flavour), src)
    again = P.import_documents(src, cat)
    assert again.added == [] and len(again.skipped_identical) == 4


def test_import_suitcase_files_written_by_suitcase(tmp_path):
    suitcase_msgpack = pytest.importorskip("suitcase.msgpack")
    suitcase_jsonl = pytest.importorskip("suitcase.jsonl")
    b = compose_run(metadata={"scan_id": 9, "plan_name": "count"})
    d = b.compose_descriptor(name="primary", data_keys={"a": {"dtype": "number", "shape": [], "source": "a"}})
    docs = [("start", b.start_doc), ("descriptor", d.descriptor_doc)]
    docs += [("event", d.compose_event(data={"a": float(i)}, timestamps={"a": 0.0})) for i in range(3)]
    docs.append(("stop", b.compose_stop()))
    for mod, sub in ((suitcase_msgpack, "mp"), (suitcase_jsonl, "jl")):
        mod.export(iter(docs), str(tmp_path / sub))
        cat = databroker_lite.open_catalog(tmp_path / f"cat-{sub}")
        report = P.import_documents(tmp_path / sub, cat)
        assert report.added == [b.start_doc["uid"]]
        assert cat[9].primary.read()["a"].values.tolist() == [0.0, 1.0, 2.0]
        assert [n for n, _ in cat[9].documents()] == [n for n, _ in docs]


def test_import_bad_document_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('["start", {"uid": "x"\n')
    with pytest.raises(P.PackError, match="line 1"):
        P.import_documents(bad, tmp_path / "cat")


def test_pack_msgpack_format_is_databroker_pack_layout(source, tmp_path):
    cat, uids, ad_uid, frames = source
    dest = tmp_path / "mp"
    report = P.pack(cat, dest, all=True, format="msgpack", quiet=True)
    files = sorted(os.listdir(dest / "documents"))
    written = [p for p in dest.rglob("*") if p.is_file() and p.name != "catalog.yml"]
    assert report.files_copied == len(written) == len(files) + 1  # and the detector's file
    assert report.bytes_total == report.bytes_copied == sum(p.stat().st_size for p in written)
    assert f"{len(files)} run(s) ({len(files)} new)" in str(report)
    assert " 0 B in all" not in str(report)
    assert files == sorted(f"{u}.msgpack" for u in [*uids, ad_uid])
    with open(dest / "documents" / f"{uids[0]}.msgpack", "rb") as f:
        items = list(msgpack.Unpacker(f, raw=False))
    assert [i[0] for i in items] == [n for n, _ in cat[1].documents()]
    assert "bluesky-msgpack-catalog" in (dest / "catalog.yml").read_text()
    # and it imports back into a catalog with the same data
    shutil.rmtree(tmp_path / "detector_files")
    back = databroker_lite.open_catalog(tmp_path / "back")
    P.import_documents(dest, back)
    np.testing.assert_array_equal(back[50].primary.read()["img"].values, frames)


def _peer_python() -> str | None:
    """databroker 1.2.5's interpreter, if `python -m benchmarks --only peer` has built it."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        from benchmarks.peer import peer_python
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    return peer_python(build=False)[0]


def test_databroker_1_2_5_reads_our_msgpack_pack(tmp_path):
    """The real incumbent opens our --format msgpack pack through its catalog.yml and reads
    the same metadata and values, external AD_HDF5 frames included (after the detector
    files are gone from their original place)."""
    py = _peer_python()
    if py is None:
        pytest.skip("no databroker 1.2.5 venv (built by `python -m benchmarks --only peer`)")
    cat = databroker_lite.open_catalog(tmp_path / "src")
    uids = [_scalar_run(cat, s) for s in (1, 2)]
    root = str(tmp_path / "detector_files")
    # as ophyd describes area detectors: one (1, h, w) block per datum
    os.makedirs(os.path.join(root, "img"))
    frames = np.arange(4 * 6 * 5, dtype="u2").reshape(4, 6, 5)
    with h5py.File(os.path.join(root, "img", "50.h5"), "w") as f:
        f.create_dataset("entry/data/data", data=frames)
    b = compose_run(metadata={"scan_id": 50, "plan_name": "count"})
    cat.insert("start", b.start_doc)
    res = b.compose_resource(spec="AD_HDF5", root=root, resource_path="img/50.h5",
                             resource_kwargs={"frame_per_point": 1})
    cat.insert("resource", res.resource_doc)
    d = b.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": [1, 6, 5], "source": "img", "external": "FILESTORE:",
                "dtype_numpy": "<u2"}})
    cat.insert("descriptor", d.descriptor_doc)
    for i in range(4):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        cat.insert("datum", datum)
        cat.insert("event", d.compose_event(data={"img": datum["datum_id"]}, timestamps={"img": 0.0},
                                            filled={"img": False}))
    cat.insert("stop", b.compose_stop())
    ad_uid = b.start_doc["uid"]
    dest = tmp_path / "pack"
    P.pack(cat, dest, all=True, format="msgpack", quiet=True)
    shutil.rmtree(root)
    code = textwrap.dedent(f"""
        import json, intake
        cat = intake.open_catalog({str(dest / 'catalog.yml')!r})["packed_catalog"]
        out = {{}}
        for uid in cat:
            run = cat[uid]
            ds = run.primary.read()
            out[uid] = {{"scan_id": run.metadata["start"]["scan_id"],
                         "exit_status": run.metadata["stop"]["exit_status"],
                         "vars": {{k: ds[k].values.tolist() for k in ds.data_vars}}}}
        print(json.dumps(out))
    """)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "INTAKE_"))}
    env["HOME"] = str(home)
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(theirs) == sorted([*uids, ad_uid])
    for uid in uids:
        ours = cat[uid].primary.read()
        assert theirs[uid]["exit_status"] == "success"
        assert theirs[uid]["vars"]["x"] == ours["x"].values.tolist()
        assert theirs[uid]["vars"]["y"] == ours["y"].values.tolist()
    assert theirs[ad_uid]["scan_id"] == 50
    np.testing.assert_array_equal(np.array(theirs[ad_uid]["vars"]["img"]), frames[:, None])


def test_external_fill_puts_the_data_in_the_pack(source, tmp_path):
    cat, uids, ad_uid, frames = source
    dest = tmp_path / "filled"
    assert cli(["pack", cat.directory, str(dest), "--all", "--external", "fill", "-q"]) == 0
    assert not (dest / "external").exists()
    assert databroker_lite.verify(dest).ok
    shutil.rmtree(tmp_path / "detector_files")  # the pack needs no file from elsewhere
    packed = databroker_lite.open_catalog(dest, "r")
    run = packed[50]
    assert run.resources() == [] and run.datums() == []
    assert not run.primary.metadata["descriptors"][0]["data_keys"]["img"].get("external")
    np.testing.assert_array_equal(run.primary.read()["img"].values, frames)
    np.testing.assert_array_equal(run.primary.to_dask()["img"].values, frames)
    assert run.metadata["start"] == cat[50].metadata["start"]
    np.testing.assert_array_equal(packed[2].primary.read()["y"].values, cat[2].primary.read()["y"].values)


def test_external_skip_leaves_the_files_out(source, tmp_path):
    cat, uids, ad_uid, frames = source
    dest = tmp_path / "skipped"
    P.pack(cat, dest, all=True, external="skip", quiet=True)
    assert not (dest / "external").exists() and databroker_lite.verify(dest).ok
    shutil.rmtree(tmp_path / "detector_files")
    packed = databroker_lite.open_catalog(dest, "r")
    assert packed[1].primary.read()["x"].values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(databroker_lite.MissingExternalFile, match="50.h5"):
        packed[50].primary.read()


def test_missing_external_file_at_pack_time_is_a_pack_error(source, tmp_path):
    cat, *_ = source
    shutil.rmtree(tmp_path / "detector_files")
    with pytest.raises(P.PackError, match="50.h5"):
        P.pack(cat, tmp_path / "p", all=True, quiet=True)
    assert not (tmp_path / "p" / "manifest.json").exists()
    with pytest.raises(databroker_lite.MissingExternalFile, match="50.h5"):
        P.pack(cat, tmp_path / "p2", all=True, external="fill", quiet=True)


def test_unpack_refuses_a_bad_or_taken_name_before_copying(source, tmp_path, named):
    cat, *_ = source
    dest = tmp_path / "p"
    P.pack(cat, dest, all=True, quiet=True)
    data = tmp_path / "data"
    for bad in ("../escaped", "a/b", ".hidden"):
        with pytest.raises(databroker_lite.InvalidCatalogName, match="catalog name"):
            P.unpack(dest, bad, to=data / "x")
    assert not data.exists() and not (tmp_path / "escaped").exists()
    other = databroker_lite.open_catalog(tmp_path / "elsewhere")
    databroker_lite.install_catalog(other.directory, "taken")
    with pytest.raises(databroker_lite.CatalogError, match="already exists"):
        P.unpack(dest, "taken", to=data / "y")
    assert not (data / "y").exists()


def _docs_of(cat, scan_id):
    return [[n, json.loads(json.dumps(d, default=lambda a: a.tolist()))] for n, d in cat[scan_id].documents()]


def test_import_refuses_cut_short_garbage_and_half_valid_files_whole(source, tmp_path):
    """A damaged document file is refused naming the file, and no part of its run lands."""
    cat, *_ = source
    docs = _docs_of(cat, 2)
    blob = b"".join(msgpack.packb(d) for d in docs)
    cases = {
        "cut.msgpack": (blob[:-7], "cut short"),
        "garbage.msgpack": (b"\xc1" * 64, "not a msgpack document stream"),
        "notpairs.msgpack": (msgpack.packb({"a": 1}), "not a \\[name, document\\] pair"),
    }
    bad_event = [list(d) for d in docs]
    i = next(k for k, (n, _) in enumerate(bad_event) if n == "event")
    bad_event[i] = ["event", {**bad_event[i][1], "seq_num": "three"}]
    cases["bad_event.jsonl"] = ("\n".join(json.dumps(d) for d in bad_event).encode(),
                                "nothing of this run was imported")
    for name, (content, why) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        target = databroker_lite.open_catalog(tmp_path / f"cat-{name}")
        with pytest.raises(P.PackError, match=why) as info:
            P.import_documents(path, target)
        assert name in str(info.value)
        assert len(target) == 0 and not [f for f in os.listdir(target.directory) if not f.startswith(".")]
        assert not [f for f in os.listdir(target.directory) if f.startswith(".import-")]
    # the same documents, whole, import fine (a run without its stop too)
    good = tmp_path / "good.msgpack"
    good.write_bytes(b"".join(msgpack.packb(d) for d in docs if d[0] != "stop"))
    target = databroker_lite.open_catalog(tmp_path / "cat-good")
    assert P.import_documents(good, target).added == [cat[2].uid]
    assert target[2].metadata["stop"] is None
    np.testing.assert_array_equal(target[2].primary.read()["y"].values, cat[2].primary.read()["y"].values)


def test_import_hostile_catalog_yml_is_a_pack_error(tmp_path):
    src = tmp_path / "pack"
    (src / "documents").mkdir(parents=True)
    (src / "catalog.yml").write_text("sources: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(P.PackError, match="catalog.yml"):
        P.import_documents(src, tmp_path / "cat")
