"""Copying and hashing files: every file lands through a partial and a rename."""
from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import PackError
from .paths import partial_name

BLOCK = 4 * 2**20


def sha256_file(path: str) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            h.update(chunk)
    return h.hexdigest()


def copy_hashed(src: str, dst: str, progress: Any = None) -> tuple[int, str]:
    """Copy src to dst through a partial file; return (size, sha256).

    The kernel copies (``shutil.copyfile`` uses copy_file_range/sendfile) in a thread
    while this thread hashes the source, so the two overlap on separate cores.
    A process killed here leaves at most ``dst.partial-*``, which the next run removes.
    """
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    part = partial_name(dst)
    h = hashlib.sha256()
    size = 0
    try:
        with ThreadPoolExecutor(1) as pool:
            copying = pool.submit(shutil.copyfile, src, part)
            with open(src, "rb") as fi:
                while chunk := fi.read(BLOCK):
                    h.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
            copying.result()
        if os.path.getsize(part) != size:
            raise PackError(f"{src} changed while it was being copied; run the command again")
        shutil.copystat(src, part)
        os.replace(part, dst)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    return size, h.hexdigest()


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
