"""Copying and hashing files: every file lands through a partial and a rename.

New packs checksum with BLAKE3 (``"blake3"`` in a manifest entry, pack format 2): it runs
at about 5 GB/s on one core, four times SHA-256 with the SHA instructions, so hashing
keeps up with the kernel's copy. Packs of format 1 carry ``"sha256"``, still read and
verified (:func:`file_digest` takes the algorithm an entry names).
"""
from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import threading
from typing import Any

import blake3

from .errors import PackError
from .paths import partial_name

#: the checksum of every file a pack writes; entries of older packs may name "sha256"
CHECKSUM = "blake3"
CHECKSUMS = ("blake3", "sha256")
BLOCK = 4 * 2**20
_WINDOW = 32 * 2**20  # mapped and hashed at a time (a multiple of mmap.ALLOCATIONGRANULARITY)
_SMALL = 8 * 2**20  # below this a file is hashed, then copied, in this thread


def _hasher(algorithm: str) -> Any:
    if algorithm == "blake3":
        return blake3.blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown checksum {algorithm!r}: one of {CHECKSUMS}")


def bytes_digest(data: bytes, algorithm: str = CHECKSUM) -> str:
    """The checksum of bytes held in memory, hex."""
    h = _hasher(algorithm)
    h.update(data)
    return h.hexdigest()


def file_digest(path: str, algorithm: str = CHECKSUM) -> str:
    """The checksum of a file, hex (BLAKE3 unless told otherwise)."""
    if algorithm == "blake3":
        # maps the file (no copy into Python); a large one is hashed on every core
        big = os.path.getsize(path) >= _SMALL
        h = blake3.blake3(max_threads=blake3.blake3.AUTO if big else 1)
        h.update_mmap(path)
        return h.hexdigest()
    h = _hasher(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str) -> str:
    """The SHA-256 of a file, hex (the checksum of pack format 1)."""
    return file_digest(path, "sha256")


def same_bytes(a: str, b: str) -> bool:
    """True when two files hold the same bytes (sizes first, then their BLAKE3)."""
    return os.path.getsize(a) == os.path.getsize(b) and file_digest(a) == file_digest(b)


def copy_hashed(src: str, dst: str, progress: Any = None, algorithm: str = CHECKSUM,
                expect: str | None = None) -> tuple[int, str]:
    """Copy src to dst through a partial file; return (size, checksum of what was copied).

    With ``expect`` (a hex digest of ``algorithm``), a source whose checksum is not that
    is refused (PackError) before anything is renamed into place.

    The kernel copies (``shutil.copyfile``: copy_file_range/sendfile, no pass through
    Python). For a large file it does so in a thread while this one hashes the source
    mapped in memory, so the copy and the hash run on two cores and the bytes are never
    copied into Python; a small file is read and hashed, then copied.
    A process killed here leaves at most ``dst.partial-*``, which the next run removes.
    """
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    part = partial_name(dst)
    h = _hasher(algorithm)
    try:
        with open(src, "rb") as fi:
            size = os.fstat(fi.fileno()).st_size
            if size < _SMALL:  # a thread would cost more than it saves
                data = fi.read()
                h.update(data)
                size = len(data)
                shutil.copyfile(src, part)  # the kernel's copy (tests break in here, too)
                if progress is not None:
                    progress.update(size)
            else:
                size = _copy_large(fi, part, h, progress)
        if os.path.getsize(part) != size:
            raise PackError(f"{src} changed while it was being copied; run the command again")
        if expect is not None and h.hexdigest() != expect:
            raise PackError(f"{src} does not match its {algorithm} checksum in the manifest "
                            "(changed since it was verified?); nothing was installed from it")
        shutil.copystat(src, part)
        os.replace(part, dst)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    return size, h.hexdigest()


def _map(fd: int, n: int, offset: int) -> mmap.mmap:
    """``n`` bytes of a file read-only in memory, faulted in at once where the OS can
    (``MAP_POPULATE``: one call instead of a page fault per 4 kB page)."""
    if hasattr(mmap, "MAP_POPULATE"):
        return mmap.mmap(fd, n, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ,
                         offset=offset)
    return mmap.mmap(fd, n, offset=offset, access=mmap.ACCESS_READ)


def _copy_large(fi: Any, part: str, h: Any, progress: Any) -> int:
    """Kernel copy of the open file ``fi`` to ``part`` in a thread, hashing it meanwhile."""
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            shutil.copyfile(fi.name, part)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            failed.append(exc)

    worker = threading.Thread(target=copy, name="pack-copy", daemon=True)
    worker.start()
    try:
        size = os.fstat(fi.fileno()).st_size
        for a in range(0, size, _WINDOW):  # a window at a time: the process stays small
            n = min(_WINDOW, size - a)
            with _map(fi.fileno(), n, a) as m:
                h.update(m)
            if progress is not None:
                progress.update(n)
    finally:
        worker.join()
    if failed:
        raise failed[0]
    return size


class _NoBar:
    """What a quiet command uses for a progress bar (tqdm's first bar costs ~50 ms: its locks)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def byte_bar(total: int, desc: str, quiet: bool) -> Any:
    """A progress bar over ``total`` bytes, or nothing at all when ``quiet`` (or nothing to do)."""
    if quiet or not total:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)


def write_text_atomic(path: str, text: str) -> None:
    """Write a small text file through a partial and a rename."""
    part = partial_name(path)
    try:
        with open(part, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
