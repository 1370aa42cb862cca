"""The manifest (``manifest.json``) and the small JSON files of a pack, read defensively.

A manifest is ``{"format": "databroker_lite-pack", "version": 2, "tool", "created",
"source", "runs": [{"uid", "file", "scan_id", "time", "plan_name"}, ...],
"files": [{"path", "size", "blake3"}, ...]}``. Version 1 (packs written before BLAKE3)
has ``"sha256"`` in every file entry instead; a version-2 manifest may hold both kinds
of entry (files of an older pack that a newer one added to are not hashed again).
Everything in it is checked here, once, so the verbs can trust its types (never its
claims: checksums and run files decide).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

from .._version import __version__
from .errors import PackError
from .files import CHECKSUM, CHECKSUMS, file_digest
from .paths import CATALOG_CONFIG, MANIFEST, resolve

PACK_FORMAT = "databroker_lite-pack"
PACK_VERSION = 2
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAMES = {"blake3": "BLAKE3", "sha256": "SHA-256"}


def load_json(path: str, what: str) -> Any:
    """A JSON file's content, or PackError naming the file and what is wrong with it."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PackError(f"{path}: {what} is not UTF-8 text ({exc})") from None
    except RecursionError:
        raise PackError(f"{path}: {what} is nested too deeply to be a {what}") from None
    except ValueError as exc:
        raise PackError(f"{path}: {what} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise PackError(f"{path}: cannot read the {what} ({exc})") from None


def read_manifest(dest: str) -> dict:
    """The validated manifest of the pack in ``dest``."""
    path = os.path.join(dest, MANIFEST)
    if not os.path.exists(path):
        raise PackError(f"{dest}: no {MANIFEST}; not a pack, or an unfinished one "
                        "(run pack again to finish it)")
    man = load_json(path, "manifest")
    if not isinstance(man, dict) or man.get("format") != PACK_FORMAT:
        raise PackError(f"{path}: not a databroker_lite pack manifest")
    version = man.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PackError(f"{path}: 'version' must be a positive integer, not {version!r}")
    if version > PACK_VERSION:
        raise PackError(f"{path}: pack format version {version!r} is newer than this "
                        f"databroker_lite ({__version__}) reads; upgrade it")
    if not isinstance(man.get("files"), list) or not isinstance(man.get("runs"), list):
        raise PackError(f"{path}: manifest lacks its 'files' or 'runs' list")
    seen = set()
    for n, e in enumerate(man["files"]):
        where = f"{path}, files[{n}]"
        if not isinstance(e, dict):
            raise PackError(f"{where}: not an object with path, size and {CHECKSUM}")
        size, rel = e.get("size"), e.get("path")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PackError(f"{where}: size {size!r} is not a number of bytes")
        allowed = ("sha256",) if version == 1 else CHECKSUMS
        named = [a for a in allowed if a in e]
        if not named:
            raise PackError(f"{where}: no checksum ({' or '.join(allowed)})")
        for algorithm in named:
            if not isinstance(e[algorithm], str) or not _HEX.match(e[algorithm]):
                raise PackError(f"{where}: {algorithm} {e[algorithm]!r} is not a "
                                f"{_NAMES[algorithm]} hex digest")
        if not isinstance(rel, str):
            raise PackError(f"{where}: path {rel!r} is not a string")
        if rel in seen:
            raise PackError(f"{where}: {rel!r} is listed twice")
        seen.add(rel)
    for n, r in enumerate(man["runs"]):
        if not (isinstance(r, dict) and isinstance(r.get("uid"), str) and isinstance(r.get("file"), str)):
            raise PackError(f"{path}, runs[{n}]: not an object with a 'uid' and a 'file'")
    return man


def read_pack_root_map(src: str) -> dict[str, str]:
    """A pack's ``catalog.json`` root_map, every target checked to stay inside the pack."""
    path = os.path.join(src, CATALOG_CONFIG)
    if not os.path.exists(path):
        return {}
    cfg = load_json(path, "catalog config")
    rm = cfg.get("root_map", {}) if isinstance(cfg, dict) else None
    if not isinstance(rm, dict):
        raise PackError(f"{path}: 'root_map' must be an object of original root -> pack directory")
    for k, v in rm.items():
        resolve(v, src, what=f"{CATALOG_CONFIG} root_map target for {k!r}:")
    return rm


def entry(path: str, size: int, digest: str, algorithm: str = CHECKSUM) -> dict:
    """A manifest file entry."""
    return {"path": path, "size": size, algorithm: digest}


def checksum_of(e: dict) -> tuple[str, str]:
    """(algorithm, hex digest) an entry (or a journal record) is checked by: BLAKE3 if it has one."""
    for algorithm in CHECKSUMS:
        if isinstance(e.get(algorithm), str):
            return algorithm, e[algorithm]
    raise PackError(f"{e.get('path')!r}: no checksum ({' or '.join(CHECKSUMS)})")


def matches(path: str, e: dict) -> bool:
    """True when the file at ``path`` has the size and checksum of entry ``e``."""
    algorithm, digest = checksum_of(e)
    return os.path.getsize(path) == e.get("size") and file_digest(path, algorithm) == digest
