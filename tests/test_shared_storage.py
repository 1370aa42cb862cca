"""A catalog on shared storage (NFS, Lustre, GPFS...) written on one host, read on others.

Hosts are simulated as processes with their own DATABROKER_LITE_HOST, each keeping its
own index of the one directory, with the network-file-system path forced on, HDF5 file
locking off in the readers (locks that do not reach across hosts) and a directory
modification time that lies (a stale attribute cache).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import event_model
import pytest

import databroker_lite
from databroker_lite import backends, netfs
from databroker_lite.errors import CatalogError

HERE = os.path.dirname(os.path.abspath(__file__))


def _add(cat, scan_id: int) -> str:
    b = event_model.compose_run(metadata={"scan_id": scan_id})
    cat.insert("start", b.start_doc)
    cat.insert("stop", b.compose_stop())
    return b.start_doc["uid"]


@pytest.fixture
def network(monkeypatch, tmp_path):
    """Every directory counts as on a network file system; per-host indexes in tmp."""
    monkeypatch.setenv(netfs.FORCE_ENV, "1")
    monkeypatch.setenv(netfs.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(netfs.HOST_ENV, "acq")
    monkeypatch.delenv(backends.INDEX_ENV, raising=False)
    return tmp_path / "cache"


# --- telling network file systems apart --------------------------------------------

def test_local_directories_are_local_and_the_index_stays_beside_the_files(tmp_path, monkeypatch):
    monkeypatch.delenv(netfs.FORCE_ENV, raising=False)
    monkeypatch.delenv(backends.INDEX_ENV, raising=False)
    assert netfs.filesystem_type(str(tmp_path)) == "local"
    assert not netfs.is_network_fs(str(tmp_path))
    cat = databroker_lite.open_catalog(tmp_path / "cat")
    assert cat._index.path == str(tmp_path / "cat" / ".databroker_lite" / "index.sqlite")
    assert cat._index.rescan_seconds is None


@pytest.mark.parametrize("magic, name", [(0x6969, "nfs"), (0x0BD00BD0, "lustre"),
                                         (0x47504653, "gpfs"), (0xFF534D42, "cifs"),
                                         (0x00C36400, "ceph"), (0xEF53, "local")])
def test_statfs_magic_numbers_name_the_file_system(monkeypatch, tmp_path, magic, name):
    monkeypatch.delenv(netfs.FORCE_ENV, raising=False)
    monkeypatch.setattr(netfs, "_statfs_type", lambda path: magic)
    assert netfs.filesystem_type(str(tmp_path)) == name
    assert netfs.is_network_fs(str(tmp_path)) == (name != "local")


def test_without_statfs_proc_mounts_decides(monkeypatch, tmp_path):
    monkeypatch.delenv(netfs.FORCE_ENV, raising=False)
    monkeypatch.setattr(netfs, "_statfs_type", lambda path: None)
    monkeypatch.setattr(netfs, "_mount_type", lambda path: "nfs4")
    assert netfs.filesystem_type(str(tmp_path)) == "nfs4" and netfs.is_network_fs(str(tmp_path))
    monkeypatch.setattr(netfs, "_mount_type", lambda path: "xfs")
    assert netfs.filesystem_type(str(tmp_path)) == "local"


def test_the_mount_holding_a_path_is_the_longest_prefix():
    # this machine's own /proc/mounts: "/" is mounted, and /proc is procfs
    assert netfs._mount_type("/proc/self") == "proc"
    assert netfs._mount_type("/") is not None


def test_environment_forces_either_way(monkeypatch, tmp_path):
    monkeypatch.setattr(netfs, "_statfs_type", lambda path: 0x6969)
    monkeypatch.setenv(netfs.FORCE_ENV, "0")
    assert not netfs.is_network_fs(str(tmp_path))
    monkeypatch.setenv(netfs.FORCE_ENV, "1")
    monkeypatch.setattr(netfs, "_statfs_type", lambda path: 0xEF53)
    assert netfs.is_network_fs(str(tmp_path))


# --- the per-host index ---------------------------------------------------------------

def test_on_a_network_fs_the_index_is_per_host_in_the_cache(network, tmp_path, monkeypatch):
    directory = tmp_path / "shared" / "45id"
    cat = databroker_lite.open_catalog(directory)
    uid = _add(cat, 7)
    path = cat._index.path
    assert path.startswith(str(network / "acq")) and path.endswith(".sqlite")
    assert os.path.isfile(path)
    assert not os.path.exists(directory / ".databroker_lite" / "index.sqlite")
    assert cat._index.rescan_seconds == backends.DEFAULT_RESCAN_SECONDS
    assert cat[7].metadata["start"]["uid"] == uid
    # another host: its own index file, filled from the files
    monkeypatch.setenv(netfs.HOST_ENV, "ana1")
    other = databroker_lite.open_catalog(directory, mode="r")
    assert other._index.path.startswith(str(network / "ana1")) and other._index.path != path
    assert list(other) == [uid] and not other._index.in_memory


def test_index_choice_by_name_and_by_environment(network, tmp_path, monkeypatch):
    directory = tmp_path / "cat"
    beside = databroker_lite.open_catalog(directory, index="beside")
    assert beside._index.path == str(directory / ".databroker_lite" / "index.sqlite")
    monkeypatch.setenv(netfs.FORCE_ENV, "0")
    host = databroker_lite.open_catalog(directory, index="host")
    assert host._index.path.startswith(str(network)) and host._index.rescan_seconds is not None
    monkeypatch.setenv(backends.INDEX_ENV, "host")
    assert databroker_lite.open_catalog(directory)._index.path == host._index.path
    with pytest.raises(CatalogError, match="index='sqlite:///x'.*'auto', 'beside', 'host'"):
        databroker_lite.open_catalog(directory, index="sqlite:///x")
    monkeypatch.setenv(backends.RESCAN_ENV, "soon")
    with pytest.raises(CatalogError, match="DATABROKER_LITE_RESCAN_SECONDS='soon' is not a number"):
        databroker_lite.open_catalog(directory, index="host")


def test_a_stale_directory_time_does_not_hide_runs(network, tmp_path, monkeypatch):
    """Another host adds a run file; the directory's mtime (cached) says nothing changed."""
    monkeypatch.setenv(backends.RESCAN_ENV, "0")
    directory = tmp_path / "cat"
    reader = databroker_lite.open_catalog(directory)
    assert len(reader) == 0
    monkeypatch.setenv(netfs.HOST_ENV, "acq2")
    writer = databroker_lite.open_catalog(directory)
    before = os.stat(directory)
    uid = _add(writer, 1)
    os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert reader._index.dir_stamp() == str(before.st_mtime_ns)
    assert list(reader) == [uid]


def _unmount_and_mount_again(directory, check) -> None:
    """Run ``check`` while ``directory`` is an empty mount point, then put the files back."""
    hidden = directory.with_name("hidden")
    os.rename(directory, hidden)
    directory.mkdir()
    try:
        check()
    finally:
        directory.rmdir()
        os.rename(hidden, directory)


def test_an_unmounted_directory_removes_no_runs_from_a_shared_index(network, tmp_path,
                                                                     monkeypatch, request):
    """A host whose mount point is still empty opens the catalog: the index it shares (or
    its own) keeps every run, with a warning; the runs read again once the files are
    back. Checked on the per-host SQLite index and on a PostgreSQL index."""
    monkeypatch.setenv(backends.RESCAN_ENV, "0")
    directory = tmp_path / "cat"
    from databroker_lite.pgtemp import find_bin_dir
    indexes = ["host"]
    if find_bin_dir() is not None:  # the suite's throwaway server (skipped without its binaries)
        indexes.append(request.getfixturevalue("postgres_url") + "&catalog=unmount-test")
    for index in indexes:
        cat = databroker_lite.open_catalog(directory, index=index)
        uids = [_add(cat, i) for i in (1, 2)] if not len(cat) else list(cat)

        def check(index=index, uids=uids, cat=cat):
            with pytest.warns(databroker_lite.RunFilesMissingWarning, match="is its file system mounted"):
                other = databroker_lite.open_catalog(directory, mode="r", index=index)
                assert len(other) == 2
            assert len(cat) == 2 and sorted(cat) == sorted(uids)

        _unmount_and_mount_again(directory, check)
        again = databroker_lite.open_catalog(directory, mode="r", index=index)
        assert sorted(again) == sorted(uids) and again[2].start["scan_id"] == 2


def test_a_running_run_is_read_again_though_its_file_looks_unchanged(network, tmp_path, monkeypatch):
    """The stop was written on another host, but this host's cached (mtime, size) did not move."""
    monkeypatch.setenv(backends.RESCAN_ENV, "0")
    directory = tmp_path / "cat"
    writer = databroker_lite.open_catalog(directory)
    b = event_model.compose_run(metadata={"scan_id": 3})
    writer.insert("start", b.start_doc)
    monkeypatch.setenv(netfs.HOST_ENV, "ana")
    reader = databroker_lite.open_catalog(directory, mode="r")
    assert reader.summaries(list(reader))[0]["exit_status"] is None
    path = os.path.join(directory, b.start_doc["uid"] + ".h5")
    st = os.stat(path)
    writer.insert("stop", b.compose_stop())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the stale file time
    assert reader.summaries(list(reader))[0]["exit_status"] == "success"


def _hosts(tmp_path, index_env: dict, n_runs: int = 6, readers=(("ana1", "a"), ("ana2", "r"), ("ana3", "r"))):
    """Start a writer host and reader hosts on one directory; return their reports."""
    directory = str(tmp_path / "shared" / "cat")
    os.makedirs(directory)
    env = {**os.environ, netfs.FORCE_ENV: "1", netfs.CACHE_ENV: str(tmp_path / "cache"),
           backends.RESCAN_ENV: "0.3", **index_env}
    if backends.INDEX_ENV not in index_env:
        env.pop(backends.INDEX_ENV, None)
    done = str(tmp_path / "writer.json")
    script = os.path.join(HERE, "shared_host.py")
    procs = [subprocess.Popen([sys.executable, script, "reader", directory, mode,
                               str(tmp_path / f"{host}.json"), done],
                              env={**env, netfs.HOST_ENV: host, "HDF5_USE_FILE_LOCKING": "FALSE"},
                              stderr=subprocess.PIPE, text=True)
             for host, mode in readers]
    w = subprocess.run([sys.executable, script, "writer", directory, str(n_runs), done],
                       env={**env, netfs.HOST_ENV: "acq"}, capture_output=True, text=True, timeout=300)
    assert w.returncode == 0, w.stderr[-3000:]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    with open(done) as f:
        written = json.load(f)
    reports = {}
    for host, _ in readers:
        with open(tmp_path / f"{host}.json") as f:
            reports[host] = json.load(f)
    return directory, written, reports


def test_many_hosts_one_directory_every_run_seen_nothing_lost(tmp_path, monkeypatch):
    directory, written, reports = _hosts(tmp_path, {})
    assert len(written["uids"]) == 7
    paths = {written["index"]}
    for host, rep in reports.items():
        assert rep["errors"] == [], f"{host}: " + "\n".join(rep["errors"])
        assert set(rep["verified"]) == set(written["uids"]), host
        assert rep["kind"] == "sqlite" and rep["index"].startswith(str(tmp_path / "cache" / host))
        assert rep["bad_files"] == {}
        paths.add(rep["index"])
    assert len(paths) == 4  # one index per host
    assert not os.path.exists(os.path.join(directory, ".databroker_lite", "index.sqlite"))
    # and a host arriving later derives the same catalog from the files
    monkeypatch.setenv(netfs.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(netfs.HOST_ENV, "late")
    late = databroker_lite.open_catalog(directory, mode="r", index="host")
    assert set(late) == set(written["uids"])
