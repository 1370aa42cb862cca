"""Network file systems: telling them apart, and where a per-host index lives.

SQLite's write-ahead log keeps its shared memory in a file that only processes on one
host can share, and its locks rely on the file system's (often unreliable over NFS). A
catalog directory on NFS, SMB, Lustre, GPFS, CephFS, ... therefore gets a per-host
index in the user's cache directory (on a local disk), rebuilt from the run files: the
files are the truth, each host derives its own index from them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import socket
import sys
import tempfile

# statfs(2) f_type magic numbers of shared / network file systems (linux/magic.h and
# the file systems' own sources).
NETWORK_MAGIC = {
    0x6969: "nfs", 0x517B: "smb", 0xFF534D42: "cifs", 0xFE534D42: "smb2",
    0x0BD00BD0: "lustre", 0x47504653: "gpfs", 0x00C36400: "ceph", 0x5346414F: "afs",
    0x01021997: "9p", 0x01161970: "gfs2", 0x7461636F: "ocfs2", 0x19830326: "beegfs",
    0xAAD7AAEA: "panfs", 0x65735546: "fuse", 0x564C: "ncp", 0x013111A8: "ibrix",
}
# /proc/mounts type names (the fallback where statfs cannot be called)
NETWORK_TYPES = {"nfs", "nfs4", "smb", "smbfs", "smb3", "cifs", "lustre", "gpfs", "ceph",
                 "afs", "9p", "gfs2", "ocfs2", "beegfs", "panfs", "glusterfs", "fuse.sshfs",
                 "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
                 "fuse.juicefs", "fuse.weka", "wekafs", "ncpfs", "davfs", "fuse.davfs"}

FORCE_ENV = "DATABROKER_LITE_NETWORK_FS"    # "1": treat every catalog as on a network FS; "0": none
HOST_ENV = "DATABROKER_LITE_HOST"           # the host name a per-host index is filed under
CACHE_ENV = "DATABROKER_LITE_INDEX_CACHE"   # where per-host indexes live


class _Statfs(ctypes.Structure):
    # struct statfs on 64-bit Linux: f_type is the first word
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]


def _statfs_type(path: str) -> int | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = _Statfs()
        if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
            return None
        return buf.f_type & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def _mount_type(path: str) -> str | None:
    """The file system type of the mount holding ``path``, from /proc/mounts."""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fstype
    return kind


def filesystem_type(path: str) -> str:
    """A short name for the file system holding ``path`` ("nfs", "lustre", ..., or "local")."""
    magic = _statfs_type(path)
    if magic is not None:
        return NETWORK_MAGIC.get(magic, "local")
    kind = _mount_type(path)
    return kind if kind in NETWORK_TYPES else "local"


def is_network_fs(path: str) -> bool:
    """Whether ``path`` is on a file system shared between hosts (``DATABROKER_LITE_NETWORK_FS``
    set to 1 or 0 overrides the detection, for tests and for file systems it misses)."""
    forced = os.environ.get(FORCE_ENV, "").strip().lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    return filesystem_type(path) != "local"


def host_name() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname() or "localhost"


def _user_cache() -> str:
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches")
    return os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")


def host_index_path(directory: str) -> str:
    """Where this host keeps its own index of a catalog directory.

    ``$DATABROKER_LITE_INDEX_CACHE`` if set, else the user's cache directory; if that is
    itself on a network file system (a shared home), a local temporary directory. The
    file name holds the host and a hash of the directory's real path.
    """
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(_user_cache(), "databroker_lite", "indexes")
        probe = next((p for p in (root, os.path.dirname(root), _user_cache()) if os.path.isdir(p)),
                     None)
        if probe is None or is_network_fs(probe) and not os.environ.get(FORCE_ENV):
            root = os.path.join(tempfile.gettempdir(), f"databroker_lite-{os.getuid()}", "indexes")
    real = os.path.realpath(directory)
    digest = hashlib.sha1(real.encode()).hexdigest()[:16]
    name = os.path.basename(real.rstrip("/")) or "root"
    return os.path.join(root, host_name(), f"{name}-{digest}.sqlite")
