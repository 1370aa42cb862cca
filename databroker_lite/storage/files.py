"""Opening HDF5 files: lock-aware retries, crash-safe flushes, a cache of read handles.

A writer holds a run file open only while it flushes, so a reader that meets the
HDF5 file lock waits a moment and tries again instead of failing.

A flush goes through :func:`journaled_h5`: HDF5 writes the file through a Python
file object that, before it overwrites any byte the file held when the flush began,
appends the old bytes to ``<file>.journal`` (an undo journal: a JSON header, then
checksummed records ``offset, length, crc32, bytes``). The journal is deleted when the
flush has closed the file. A process killed mid-flush leaves the journal; whoever
opens the file next (:func:`recover`) puts the saved bytes back and truncates the file
to its old length: the file is again exactly what the last complete flush left.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import io
import json
import os
import re
import stat
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import h5py

from ..errors import CatalogError, CorruptRunFile, ExternalDataError

_LOCK_WAIT = float(os.environ.get("DATABROKER_LITE_LOCK_WAIT", "30"))
JOURNAL_SUFFIX = ".journal"
# What survives a power cut (a killed process loses nothing flushed whatever this says):
# "none" (default): the operating system writes files out in its own time (seconds);
# "stop": a run's file is fsynced when its stop is written; "flush": at every flush.
SYNC = os.environ.get("DATABROKER_LITE_SYNC", "none").strip().lower()
SYNC_EVERY_FLUSH = SYNC == "flush"
SYNC_AT_STOP = SYNC in ("stop", "flush")
_MAGIC = b"DBLJ1\n"
_REC = struct.Struct("<QQI")    # offset, length, crc32 of the saved bytes
_PAGE = 4096


def _is_lock_error(exc: OSError) -> bool:
    # Not a bare "lock": HDF5's message for a truncated file mentions "sblock->base_addr".
    if isinstance(exc, BlockingIOError) or getattr(exc, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK):
        return True
    text = str(exc).lower()
    return "unable to lock file" in text or "resource temporarily unavailable" in text


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*?stored_eof = (\d+)")


def _grown_meanwhile(exc: OSError, path: str) -> bool:
    """Whether HDF5 called the file truncated only because a flush grew it while it opened.

    HDF5 measures the file's size when it opens it but reads the superblock only after it
    gets the lock: a flush that ends in between makes a sound file look truncated.
    """
    m = _TRUNCATED.search(str(exc))
    if m is None:
        return False
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    return size >= int(m.group(2)) and size != int(m.group(1))


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def not_a_run_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a run file (None if it is a regular file or missing).

    Opening a FIFO or a device would block or read for ever, and a symlink loop cannot
    be opened at all: none of them is handed to HDF5.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "a symbolic link to a file that does not exist"
        return None
    except OSError as exc:  # ELOOP, EACCES, ENAMETOOLONG...
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"cannot be looked at ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    for test, kind in _KINDS:
        if test(st.st_mode):
            return f"not a regular file but {kind}"
    return "not a regular file"


def open_h5(path: str | os.PathLike, mode: str = "r", *, wait: float | None = None) -> h5py.File:
    """Open an HDF5 file, waiting for another process's lock to be released.

    Raises CorruptRunFile (naming the path) for a file HDF5 cannot read and
    FileNotFoundError for a missing one.
    """
    path = os.fspath(path)
    if mode == "r":
        why = not_a_run_file(path)
        if why:
            raise CorruptRunFile(f"{path}: {why}; a run file is an HDF5 file")
    deadline = time.monotonic() + (_LOCK_WAIT if wait is None else wait)
    delay = 0.002
    repaired = False
    while True:
        try:
            f = h5py.File(path, mode)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if mode == "r" and not os.path.exists(path):
                raise FileNotFoundError(errno.ENOENT, "No such run file", path) from exc
            if (_is_lock_error(exc) or (mode == "r" and _grown_meanwhile(exc, path))) \
                    and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            if _is_lock_error(exc):
                raise CatalogError(f"{path}: still locked by another process after "
                                   f"{_LOCK_WAIT:.0f} s ({exc})") from exc
            if mode == "r" and not repaired and os.path.exists(path + JOURNAL_SUFFIX):
                recover(path)  # unreadable, with a journal: a writer died mid-flush
                repaired = True
                continue
            if mode != "r":
                raise CatalogError(getattr(exc, "errno", None) or errno.EIO,
                                   f"{path}: cannot write ({exc})") from exc
            raise CorruptRunFile(f"{path}: not a readable HDF5 file ({exc})") from exc
        if mode == "r" and not repaired and os.path.exists(path + JOURNAL_SUFFIX):
            # We hold HDF5's shared lock, and a live writer holds the exclusive one for a
            # whole flush, journal included: so this journal is a dead writer's. Undo it.
            f.close()
            recover(path)
            repaired = True
            continue
        return f


def _lock(fd: int, path: str) -> None:
    """Take the exclusive lock HDF5 readers respect (flock), waiting for them to finish."""
    deadline = time.monotonic() + _LOCK_WAIT
    delay = 0.0002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise CatalogError(f"{path}: still locked by another process after "
                                   f"{_LOCK_WAIT:.0f} s") from None
            # Poll often: readers open and close the file all the time, and a writer that
            # backed off like they do would rarely find a moment when none has it open.
            time.sleep(delay)
            delay = min(delay * 2, 0.002)


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _UndoFile(io.FileIO):
    """The run file as HDF5 writes it during a flush: old bytes are journaled first."""

    _raw_write = io.FileIO.write  # the one place bytes reach the file (tests inject faults here)

    def __init__(self, path: str) -> None:
        super().__init__(path, "r+")
        self.path = path
        self.journal = path + JOURNAL_SUFFIX
        self.error: OSError | None = None
        self._jfd = -1
        self._saved: set[int] = set()
        try:
            _lock(self.fileno(), path)
            if os.path.exists(self.journal):  # an earlier flush of this file was cut short
                _rollback(self.fileno(), self.journal)
            self.size0 = os.fstat(self.fileno()).st_size
            self._jfd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            head = json.dumps({"size": self.size0, "file": os.path.basename(path),
                               "ino": os.fstat(self.fileno()).st_ino}).encode()
            os.write(self._jfd, _MAGIC + head + b"\n")
        except BaseException:
            self.discard()
            raise

    def write(self, b) -> int:  # type: ignore[override]
        # After a failed write the flush will be undone. HDF5 is told every write worked:
        # an error raised into HDF5 (often from a handle's deallocation) leaves its file
        # half-closed, and h5py then crashes the process. journaled_h5 checks self.error.
        n = len(memoryview(b).cast("B"))
        if self.error is not None:
            return n
        pos = self.tell()
        try:
            if pos < self.size0:
                self._save(pos, min(pos + n, self.size0))
            done = self._raw_write(b)
            if done != n:
                raise OSError(errno.ENOSPC, "short write", self.path)
            return done
        except OSError as exc:
            self.error = exc
            self.seek(pos + n)
            return n

    def truncate(self, size: int | None = None) -> int:
        size = self.tell() if size is None else size
        if self.error is not None:
            return size
        try:
            if size < self.size0:
                self._save(size, self.size0)
            return super().truncate(size)
        except OSError as exc:
            self.error = exc
            return size

    def _save(self, a: int, b: int) -> None:
        """Journal the bytes [a, b) as they are now, page by page, each page once."""
        pages = [p for p in range(a // _PAGE, (b - 1) // _PAGE + 1) if p not in self._saved]
        i = 0
        while i < len(pages):  # one record per run of consecutive pages
            j = i
            while j + 1 < len(pages) and pages[j + 1] == pages[j] + 1:
                j += 1
            off = pages[i] * _PAGE
            length = min((pages[j] + 1) * _PAGE, self.size0) - off
            old = os.pread(self.fileno(), length, off)
            rec = _REC.pack(off, len(old), zlib.crc32(old)) + old
            if os.write(self._jfd, rec) != len(rec):
                raise OSError(errno.ENOSPC, "short write to the journal", self.journal)
            i = j + 1
        if pages and SYNC_EVERY_FLUSH and not self._saved:
            os.fsync(self._jfd)  # the old bytes are on disk before the first overwrite
        self._saved.update(pages)

    def commit(self, sync: bool) -> None:
        """The flush is complete: make it durable if asked, then drop the journal."""
        if sync:
            os.fsync(self.fileno())
        os.close(self._jfd)
        self._jfd = -1
        os.unlink(self.journal)  # the commit: from here on the flush stands
        if sync:
            with contextlib.suppress(OSError):  # must not turn a committed flush into an error
                _fsync_dir(self.path)

    def rollback(self) -> None:
        """Undo this flush (the lock is still held)."""
        if self._jfd >= 0:
            os.close(self._jfd)
            self._jfd = -1
        _rollback(self.fileno(), self.journal)

    def discard(self) -> None:
        if self._jfd >= 0:
            os.close(self._jfd)
            self._jfd = -1
        self.close()  # releases the lock


def _rollback(fd: int, journal: str) -> bool:
    """Put back what the journal saved and cut the file to its length before the flush.

    Idempotent: a rollback interrupted in turn is simply done again. Returns whether
    anything was undone.
    """
    with open(journal, "rb") as j:
        data = j.read()
    size_now = os.fstat(fd).st_size
    if not data.startswith(_MAGIC) or b"\n" not in data[len(_MAGIC):]:
        # a header cut short: the flush died before it wrote anything to the file
        if len(data) <= len(_MAGIC) + 256 and _MAGIC.startswith(data[:len(_MAGIC)]):
            os.unlink(journal)
            return False
        _set_aside(journal, "it does not start with a databroker_lite journal header")
        return False
    line, _, rest = data[len(_MAGIC):].partition(b"\n")
    try:
        head = json.loads(line)
        size0 = int(head["size"])
    except (ValueError, KeyError, TypeError):
        _set_aside(journal, "its header is not valid")
        return False
    # A flush only grows a file (shrinking is journaled): a journal for a longer file, or
    # one saving bytes beyond its own size, is not ours to apply.
    records = []
    pos = 0
    while pos + _REC.size <= len(rest):
        off, length, crc = _REC.unpack_from(rest, pos)
        old = rest[pos + _REC.size:pos + _REC.size + length]
        if len(old) != length or zlib.crc32(old) != crc:
            break  # torn last record: the file was not touched there yet
        records.append((off, old))
        pos += _REC.size + length
    if size0 < 0 or size0 > size_now or any(off + len(old) > size0 for off, old in records):
        _set_aside(journal, f"it does not fit the file (size {size0}, file {size_now})")
        return False
    if head.get("ino", os.fstat(fd).st_ino) != os.fstat(fd).st_ino or \
            head.get("file", os.path.basename(journal)[:-len(JOURNAL_SUFFIX)]) != \
            os.path.basename(journal)[:-len(JOURNAL_SUFFIX)]:
        _set_aside(journal, "it was written for another file")
        return False
    for off, old in records:
        os.pwrite(fd, old, off)
    os.ftruncate(fd, size0)
    os.fsync(fd)
    os.unlink(journal)
    _fsync_dir(journal)
    return True


def _set_aside(journal: str, why: str) -> None:
    """Keep a file that is not a usable journal out of the way, without applying it."""
    bad = f"{journal}.invalid"
    os.replace(journal, bad)
    warnings.warn(f"{journal} was not applied ({why}); it is kept as {bad}", stacklevel=3)


def recover(path: str | os.PathLike) -> bool:
    """Undo a flush that a killed writer left half done; returns whether one was undone.

    Waits while a live writer is flushing (it holds the lock and removes its journal).
    """
    path = os.fspath(path)
    journal = path + JOURNAL_SUFFIX
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CorruptRunFile(f"{path}: a flush was interrupted ({journal} exists) and the file "
                             f"cannot be repaired from here ({exc}); open the catalog with write "
                             "access once to repair it") from exc
    try:
        _lock(fd, path)
        if not os.path.exists(journal):  # the writer finished its flush meanwhile
            return False
        FILE_CACHE.forget(path)
        return _rollback(fd, journal)
    except OSError as exc:
        if isinstance(exc, CatalogError):
            raise
        raise CorruptRunFile(f"{path}: could not undo an interrupted flush ({exc})") from exc
    finally:
        os.close(fd)


@contextlib.contextmanager
def journaled_h5(path: str | os.PathLike, *, sync: bool = False) -> Iterator[h5py.File]:
    """Open a run file for a flush that is all or nothing, even if the process dies.

    On an exception inside the block the file is put back as it was and the error
    re-raised (a write error, e.g. a full disk, as CatalogError with its errno).
    ``sync=True`` (or ``DATABROKER_LITE_SYNC=flush``) fsyncs the file before returning.
    """
    path = os.fspath(path)
    FILE_CACHE.forget(path)
    try:
        fobj = _UndoFile(path)
    except CatalogError:
        raise
    except OSError as exc:
        raise CatalogError(exc.errno or errno.EIO, f"{path}: cannot start a flush ({exc})") from exc
    try:
        try:
            f = h5py.File(fobj, "r+")
        except OSError as exc:
            raise CorruptRunFile(f"{path}: not a readable HDF5 file ({exc})") from exc
        try:
            yield f
        except BaseException:
            with contextlib.suppress(Exception):
                f.close()
            raise
        f.close()
        if fobj.error is not None:
            raise fobj.error
        fobj.commit(sync or SYNC_EVERY_FLUSH)
    except BaseException as exc:
        try:
            fobj.rollback()
        except OSError:
            pass  # the journal stays; the next open undoes the flush
        err = fobj.error or (exc if isinstance(exc, OSError) and exc.errno else None)
        if err is not None and not isinstance(exc, CatalogError):
            raise CatalogError(err.errno or errno.EIO,
                               f"{path}: cannot write ({os.strerror(err.errno or errno.EIO)}); the "
                               "run keeps every event of its earlier flushes and this flush's "
                               "rows stay buffered") from exc
        raise
    finally:
        fobj.discard()


_KEEP_DATASETS = 8  # files whose looked-up h5py datasets are kept (see known_datasets)


class _FileCache:
    """Read-only h5py handles, one per path per process, reopened if the file changed."""

    def __init__(self, maxsize: int = 32) -> None:
        # Not more: every HDF5 file open in the process makes opening and closing any
        # other dearer (128 open files: +90 us per open and close, ~9% of a small read).
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
            if len(self._files) > _KEEP_DATASETS:
                # h5py's File.close() walks every h5py object alive in the process: keep the
                # looked-up datasets of the most recently opened files only.
                older = list(self._files.values())[-_KEEP_DATASETS - 1][1]
                known_datasets(older).clear()
            return f

    def _drop(self, path: str) -> None:
        _, f = self._files.pop(path)
        known_datasets(f).clear()  # h5py's close() is slower for every object still open
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


FILE_CACHE = _FileCache()


class StampedCache:
    """Values derived from a file, kept per process until the file changes (mtime, size)."""

    def __init__(self, maxsize: int = 256) -> None:
        self._items: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.maxsize = maxsize

    def get(self, path: str, make: Callable[[], Any],
            keep: Callable[[Any], bool] = lambda value: True) -> Any:
        """The cached value for ``path``, or ``make()`` (remembered if ``keep(value)``)."""
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                return value
        value = make()
        if keep(value):
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.maxsize:
                    self._items.popitem(last=False)
        return value


def known_datasets(f: h5py.File) -> dict[str, Any]:
    """Datasets looked up in the open handle ``f``, by name: kept with the handle and
    dropped before the cache closes it (an h5py look-up costs ~20 us, a read ~10 us)."""
    known = getattr(f, "_databroker_lite_datasets", None)
    if known is None:
        known = f._databroker_lite_datasets = {}
    return known


def cached_h5(path: str) -> h5py.File:
    """A cached read-only handle on a finished run file (a detector's file is never
    cached: :func:`external_dataset`)."""
    return FILE_CACHE.get(os.fspath(path))


@contextlib.contextmanager
def external_dataset(path: str, name: str) -> Iterator[Any]:
    """``name`` in the external (detector's) file at ``path``, open only while the block
    runs, without HDF5's file lock.

    A detector's file is never held between reads: its writer, in this process or
    another, must be able to create it again for the next scan (ophyd-async's static file
    names do), which an open read handle or its shared lock would make fail. The cost is
    an open per read (0.1-0.3 ms), paid once per block of frames, not per frame; readers
    go through :func:`~.direct.read`, which skips it for a settled, unchanged file.
    FileNotFoundError if the file is not there, ExternalDataError if it does not read.
    """
    try:
        fid = _open_external(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such external file", path) from exc
        raise ExternalDataError(f"{path}: not a readable HDF5 file ({exc})") from exc
    ds = None
    try:
        try:
            ds = h5py.Dataset(h5py.h5d.open(fid, name.encode()))
        except KeyError:
            raise ExternalDataError(f"{path}: dataset {name!r} is missing") from None
        yield ds
    finally:
        # The dataset's and the file's own handles, closed: HDF5 closes the file with its
        # last object, even if ``ds`` outlives the block (a traceback keeps it, say).
        # (h5py's File.close() walks every h5py object alive in the process: ~0.5 ms.)
        if ds is not None:
            ds.id._close()
        fid._close()


def _fapl(locking: bool) -> Any:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    if not locking:
        fapl.set_file_locking(False, True)
    return fapl


_FAPLS: dict[bool, Any] = {}


def _open_external(path: str) -> Any:
    """A low-level handle on ``path``, read-only and unlocked where it can be."""
    flags = h5py.h5f.ACC_RDONLY
    name = os.fsencode(path)
    for locking in (False, True):
        fapl = _FAPLS.get(locking) or _FAPLS.setdefault(locking, _fapl(locking))
        try:
            return h5py.h5f.open(name, flags, fapl=fapl)
        except OSError as exc:
            # Already open in this process (the user's own h5py.File, a detector writing
            # it here): HDF5 then wants the flags it was opened with, and the lock is this
            # process's anyway.
            text = str(exc)
            if "locking flag" in text and not locking:
                continue
            if "SWMR" in text:
                return h5py.h5f.open(name, flags | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def find_dataset(f: h5py.File, name: str, path: str,
                 missing: type[Exception] = CorruptRunFile) -> Any:
    """``f[name]``; a missing one raises ``missing`` naming the file and the dataset."""
    try:
        return f[name]
    except KeyError:
        raise missing(f"{path}: dataset {name!r} is missing") from None


def known_dataset(f: h5py.File, name: str, path: str,
                  missing: type[Exception] = CorruptRunFile,
                  check: Callable[[Any], None] | None = None) -> Any:
    """:func:`find_dataset`, remembered with the handle ``f`` (:func:`known_datasets`): later
    look-ups cost a dict look-up, not h5py's ~20 us. Only for read handles that stay open
    (:func:`cached_h5`'s), whose datasets do not change. ``check(ds)`` runs once, before
    the dataset is remembered (a row count checked against the events, say)."""
    known = getattr(f, "_databroker_lite_datasets", None)
    ds = None if known is None else known.get(name)
    if ds is None:
        ds = find_dataset(f, name, path, missing)
        if check is not None:
            check(ds)
        known_datasets(f)[name] = ds
    return ds
