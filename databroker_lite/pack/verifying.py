"""``verify``: recompute every checksum of a pack against its manifest."""
from __future__ import annotations

import os

from .errors import PackError
from .files import byte_bar
from .manifest import matches, read_manifest
from .paths import INDEX_DIR, MANIFEST, resolve
from .reports import VerifyReport


def walk_files(dest: str) -> list[str]:
    """Every file of a pack directory, relative, ``/``-separated, the derived index left out."""
    out = []
    for dirpath, dirnames, names in os.walk(dest):
        rel_dir = os.path.relpath(dirpath, dest)
        for n in names:
            out.append(os.path.normpath(os.path.join(rel_dir, n)).replace(os.sep, "/"))
        dirnames[:] = [d for d in dirnames if not (rel_dir == "." and d == INDEX_DIR)]
    return out


def verify(dest: str | os.PathLike, *, quiet: bool = True) -> VerifyReport:
    """Recompute every checksum of a pack; list missing, changed, extra and unsafe files."""
    dest = os.path.abspath(os.fspath(dest))
    man = read_manifest(dest)
    report = VerifyReport(dest=dest, n_files=len(man["files"]))
    listed = set()
    with byte_bar(sum(e["size"] for e in man["files"]), "verify", quiet) as bar:
        for e in man["files"]:
            rel = e["path"]
            try:
                full = resolve(rel, dest)
            except PackError:
                report.unsafe.append(str(rel))
                continue
            listed.add(os.path.normpath(rel).replace(os.sep, "/"))
            if os.path.islink(full):
                report.unsafe.append(rel)
            elif not os.path.isfile(full):
                report.missing.append(rel)
            elif not matches(full, e):
                report.changed.append(rel)
            bar.update(e["size"])
    for rel in walk_files(dest):
        if rel != MANIFEST and rel not in listed:
            report.extra.append(rel)
    return report
