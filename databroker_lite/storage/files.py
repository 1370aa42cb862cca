"""Opening HDF5 files: lock-aware retries and a per-process cache of read handles.

A writer holds a run file open only while it flushes, so a reader that meets the
HDF5 file lock waits a moment and tries again instead of failing.
"""
from __future__ import annotations

import collections
import errno
import os
import threading
import time

import h5py

from ..errors import CatalogError, CorruptRunFile

_LOCK_WAIT = float(os.environ.get("DATABROKER_LITE_LOCK_WAIT", "30"))


def _is_lock_error(exc: OSError) -> bool:
    # Not a bare "lock": HDF5's message for a truncated file mentions "sblock->base_addr".
    if isinstance(exc, BlockingIOError) or getattr(exc, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK):
        return True
    text = str(exc).lower()
    return "unable to lock file" in text or "resource temporarily unavailable" in text


def open_h5(path: str | os.PathLike, mode: str = "r", *, wait: float | None = None) -> h5py.File:
    """Open an HDF5 file, waiting for another process's lock to be released.

    Raises CorruptRunFile (naming the path) for a file HDF5 cannot read and
    FileNotFoundError for a missing one.
    """
    path = os.fspath(path)
    deadline = time.monotonic() + (_LOCK_WAIT if wait is None else wait)
    delay = 0.002
    while True:
        try:
            return h5py.File(path, mode)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if mode == "r" and not os.path.exists(path):
                raise FileNotFoundError(errno.ENOENT, "No such run file", path) from exc
            if _is_lock_error(exc) and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            if _is_lock_error(exc):
                raise CatalogError(f"{path}: still locked by another process after "
                                   f"{_LOCK_WAIT:.0f} s ({exc})") from exc
            raise CorruptRunFile(f"{path}: not a readable HDF5 file ({exc})") from exc


class _FileCache:
    """Read-only h5py handles, one per path per process, reopened if the file changed."""

    def __init__(self, maxsize: int = 128) -> None:
        self._files: collections.OrderedDict[str, tuple[tuple, h5py.File]] = collections.OrderedDict()
        self._lock = threading.RLock()
        self.maxsize = maxsize
        self._pid = os.getpid()

    def get(self, path: str) -> h5py.File:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._pid != os.getpid():  # forked: handles are not ours to use
                self._files.clear()
                self._pid = os.getpid()
            hit = self._files.get(path)
            if hit is not None and hit[0] == stamp:
                self._files.move_to_end(path)
                return hit[1]
            if hit is not None:
                self._drop(path)
            f = open_h5(path, "r")
            self._files[path] = (stamp, f)
            while len(self._files) > self.maxsize:
                self._drop(next(iter(self._files)))
            return f

    def _drop(self, path: str) -> None:
        _, f = self._files.pop(path)
        try:
            f.close()
        except Exception:  # noqa: BLE001 - closing a stale handle must not fail a read
            pass

    def forget(self, path: str) -> None:
        with self._lock:
            if path in self._files:
                self._drop(path)

    def clear(self) -> None:
        with self._lock:
            for p in list(self._files):
                self._drop(p)

    @property
    def lock(self) -> threading.RLock:
        return self._lock


FILE_CACHE = _FileCache()


def cached_h5(path: str) -> h5py.File:
    """A cached read-only handle on a finished run file (or an external file)."""
    return FILE_CACHE.get(os.fspath(path))
