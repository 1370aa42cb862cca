"""Kill-and-resume: a real SIGKILL of a packing or unpacking process in the middle of a
file, then the same command again: it finishes the job, verify passes, nothing partial is left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import ad_hdf5_run
from event_model import compose_run

import databroker_lite
from databroker_lite import packing as P


def _scalar_run(cat, scan_id, n=20):
    b = compose_run(metadata={"scan_id": scan_id, "plan_name": "scan"}, time=1.7e9 + scan_id)
    cat.insert("start", b.start_doc)
    d = b.compose_descriptor(name="primary", data_keys={"y": {"dtype": "number", "shape": [], "source": "y"}})
    cat.insert("descriptor", d.descriptor_doc)
    for i in range(n):
        cat.insert("event", d.compose_event(data={"y": float(i * scan_id)}, timestamps={"y": 0.0}))
    cat.insert("stop", b.compose_stop())


@pytest.fixture
def source(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH", str(tmp_path / "catalogs"))
    monkeypatch.setenv("DATABROKER_LITE_DATA_DIR", str(tmp_path / "data"))
    cat = databroker_lite.open_catalog(tmp_path / "src")
    for s in (1, 2, 3):
        _scalar_run(cat, s)
    _, frames = ad_hdf5_run(cat, str(tmp_path / "detector"), frames=8, frame_shape=(64, 64), time=1.7e9 + 50)
    return cat, frames


def _killed_midway(call: str, nth: int, marker) -> None:
    """Run ``call`` in a child process whose ``nth`` file copy stops halfway; SIGKILL it there."""
    script = textwrap.dedent(f"""
        import os, shutil, time
        import databroker_lite.packing as P
        real = shutil.copyfile
        calls = []
        def halfway(src, dst, *a, **k):
            calls.append(src)
            if len(calls) == {nth}:
                data = open(src, "rb").read()
                with open(dst, "wb") as f:
                    f.write(data[: len(data) // 2])
                open({str(marker)!r}, "w").close()
                time.sleep(120)  # killed here, half a file written
            return real(src, dst, *a, **k)
        shutil.copyfile = halfway
        {call}
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, "the child ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _partials(directory):
    return [os.path.join(d, n) for d, _, names in os.walk(directory) for n in names if ".partial" in n]


@pytest.mark.parametrize("nth", [1, 3, 5])
def test_pack_killed_mid_file_then_run_again_finishes(source, tmp_path, nth):
    cat, frames = source
    dest = tmp_path / "pack"
    _killed_midway(f"P.pack({cat.directory!r}, {str(dest)!r}, all=True, quiet=True)", nth,
                   tmp_path / "marker")
    assert _partials(dest), "the kill should have left a partial file"
    assert not (dest / "manifest.json").exists()
    report = P.pack(cat.directory, dest, all=True, quiet=True)
    assert sorted(report.runs) == sorted(cat) and report.conflicts == []
    assert report.files_reused == nth - 1 and report.cleaned
    check = P.verify(dest)
    assert check.ok, str(check)
    assert _partials(dest) == []
    packed = databroker_lite.open_catalog(dest, "r")
    assert len(packed) == 4
    np.testing.assert_array_equal(packed[50].primary.read()["img"].values, frames)
    assert packed[3].primary.read()["y"].values.tolist() == [3.0 * i for i in range(20)]


@pytest.mark.parametrize("nth", [1, 2, 4])
def test_unpack_killed_mid_file_then_run_again_finishes(source, tmp_path, nth):
    cat, frames = source
    dest = tmp_path / "pack"
    P.pack(cat, dest, all=True, quiet=True)
    target = tmp_path / "target"
    _killed_midway(f"P.unpack({str(dest)!r}, 'site-b', to={str(target)!r})", nth, tmp_path / "marker")
    assert _partials(target), "the kill should have left a partial file"
    assert "site-b" not in databroker_lite.catalog
    report = P.unpack(dest, "site-b", to=target)
    assert report.conflicts == []
    assert sorted(report.added + report.skipped_identical) == sorted(cat)
    assert P.verify(dest).ok
    assert _partials(target) == []
    site_b = databroker_lite.catalog["site-b"]
    assert sorted(site_b) == sorted(cat) and site_b.bad_files == {}
    shutil_rm(tmp_path / "detector")  # the catalog holds its own copy of the images
    np.testing.assert_array_equal(site_b[50].primary.read()["img"].values, frames)
    assert site_b[2].primary.read()["y"].values.tolist() == [2.0 * i for i in range(20)]


def shutil_rm(path):
    import shutil
    shutil.rmtree(path)
