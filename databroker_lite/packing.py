"""Pack, verify, unpack and import: carry runs between sites.

A pack is a plain directory::

    DEST/
      manifest.json        format, version, tool, source, runs, and every file's size + sha256
      catalog.json         root_map for the external files, relative to DEST
      catalog.yml          the same catalog as an intake/databroker_lite config (relative path)
      <uid>.h5             one run file per run (the catalog's own files, unchanged)
      external/<key>/...   the external files the runs need (``--external copy``)

Every path is relative, so the directory can be moved, renamed or archived and still
opens with ``open_catalog(DEST)``. Files are written as ``*.partial-*`` and renamed into
place; the manifest is written last. A journal under ``DEST/.databroker_lite/`` lets
an interrupted pack resume without re-reading what it already copied.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ._version import __version__
from .catalogs import CATALOG_CONFIG, Catalog, open_catalog, stored_root_map
from .errors import DatabrokerLiteError, InvalidQuery
from .index import INDEX_DIR
from .query import TimeRange
from .run import Run
from .storage.handlers import remap_path, resource_path, uri_to_path

MANIFEST = "manifest.json"
PACK_FORMAT = "databroker_lite-pack"
PACK_VERSION = 1
JOURNAL = os.path.join(INDEX_DIR, "pack-journal.jsonl")
_BLOCK = 4 * 2**20


class PackError(DatabrokerLiteError, OSError):
    """A pack is incomplete, corrupt, unsafe, or cannot be written."""


# --- reports -------------------------------------------------------------------

@dataclass
class PackReport:
    """What ``pack`` did (or, with ``dry_run``, would do)."""
    dest: str
    runs: list[str] = field(default_factory=list)
    new_runs: list[str] = field(default_factory=list)
    files_copied: int = 0
    files_reused: int = 0
    bytes_total: int = 0
    bytes_copied: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = "would pack" if self.dry_run else "packed"
        rate = self.bytes_copied / self.seconds / 1e6 if self.seconds and not self.dry_run else 0
        return (f"{verb} {len(self.runs)} run(s) ({len(self.new_runs)} new) into {self.dest}: "
                f"{_size(self.bytes_total)} in all, {self.files_copied} file(s) copied "
                f"({_size(self.bytes_copied)}{f', {rate:.0f} MB/s' if rate else ''}), "
                f"{self.files_reused} already there")


@dataclass
class VerifyReport:
    """The result of checking a pack against its manifest; true when the pack is intact."""
    dest: str
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    n_files: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.extra or self.unsafe)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"{self.dest}: OK, {self.n_files} file(s) match the manifest"
        lines = [f"{self.dest}: NOT OK"]
        for label, items in (("missing", self.missing), ("changed", self.changed),
                             ("extra", self.extra), ("unsafe path", self.unsafe)):
            lines += [f"  {label}: {p}" for p in items]
        return "\n".join(lines)


@dataclass
class UnpackReport:
    """What ``unpack`` or ``import_documents`` installed."""
    name: str | None
    directory: str
    added: list[str] = field(default_factory=list)
    skipped_identical: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        s = (f"{self.directory}: {len(self.added)} run(s) added, {len(self.skipped_identical)} "
             f"identical skipped, {len(self.conflicts)} conflict(s)")
        if self.name:
            s += f"; catalog {self.name!r}"
        return s + "".join(f"\n  conflict (kept the existing one): {c}" for c in self.conflicts)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


# --- choosing runs -------------------------------------------------------------

def parse_scan_ids(items: Iterable[str | int]) -> list[int]:
    """``["5", "7-9", 12]`` -> ``[5, 7, 8, 9, 12]`` (ranges inclusive)."""
    out: list[int] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            a, sep, b = part.partition("-") if not part.startswith("-") else (part, "", "")
            try:
                out.extend(range(int(a), int(b) + 1) if sep else [int(a)])
            except ValueError:
                raise InvalidQuery(f"{part!r} is not a scan_id or a range like 5-9") from None
    return out


def select_runs(catalog: Catalog, *, all: bool = False, uids: Iterable[str] | None = None,
                scan_ids: Iterable[str | int] | None = None, query: Mapping | str | None = None,
                since: Any = None, until: Any = None) -> list[Run]:
    """The runs a pack or export names, oldest first, each once."""
    if not (all or uids or scan_ids or query or since or until):
        raise InvalidQuery("say which runs: all, uids, scan_ids, query, or since/until")
    cat = catalog
    if isinstance(query, str):
        try:
            query = json.loads(query)
        except ValueError as exc:
            raise InvalidQuery(f"--query is not valid JSON: {exc}") from None
    if query:
        cat = cat.search(query)
    if since is not None or until is not None:
        cat = cat.search(TimeRange(since=since, until=until))
    chosen: dict[str, Run] = {}
    if uids or scan_ids:
        for u in uids or ():
            run = cat[str(u)]
            chosen[run.uid] = run
        for s in parse_scan_ids(scan_ids or ()):
            for uid in cat.search({"scan_id": s}):
                chosen[uid] = cat[uid]
    else:
        for uid in cat:
            chosen[uid] = cat[uid]
    times = {row["uid"]: row["time"] or 0.0 for row in catalog.summaries(list(chosen))}
    return sorted(chosen.values(), key=lambda r: (times.get(r.uid, 0.0), r.uid))


# --- which external files a run needs -----------------------------------------

def _root_key(root: str) -> str:
    return hashlib.sha1(root.encode()).hexdigest()[:16]


def external_files(run: Run) -> list[tuple[str, str, str]]:
    """(original root, absolute source path, path relative to that root) of each external file."""
    from .storage.handlers import get_handler_class
    root_map = run.catalog.root_map
    datums: dict[str, list[dict]] = {}
    for d in run.datums():
        if "resource" in d:
            datums.setdefault(d["resource"], []).append(d.get("datum_kwargs", {}))
    out = []
    for res in run.resources():
        if "uri" in res:  # a stream_resource: its file, keyed by its directory
            src = remap_path(uri_to_path(res["uri"]), root_map)
            orig_dir = os.path.dirname(uri_to_path(res["uri"]))
            out.append((orig_dir, src, os.path.basename(src)))
            continue
        root = res.get("root", "") or ""
        if not root:
            raise PackError(f"run {run.uid}: resource {res['uid']} has no 'root', so its files "
                            "cannot be relocated; pack with external='fill' or 'skip'")
        mapped_root = root_map.get(root, root)
        full = resource_path(res, root_map)
        files: list[str]
        try:
            handler = get_handler_class(res["spec"])(full, **res.get("resource_kwargs", {}))
            lister = getattr(handler, "get_file_list", None)
            files = list(lister(datums.get(res["uid"], []))) if lister else []
        except Exception:  # noqa: BLE001 - fall back to what is on disk
            files = []
        if not files:
            files = [full] if os.path.exists(full) else sorted(glob.glob(glob.escape(full) + "*"))
        for f in files:
            if os.path.isdir(f):
                for dirpath, _, names in os.walk(f):
                    out += [(root, os.path.join(dirpath, n),
                             os.path.relpath(os.path.join(dirpath, n), mapped_root)) for n in names]
            else:
                out.append((root, f, os.path.relpath(f, mapped_root)))
    return out


# --- copying with checksums ----------------------------------------------------

def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashed(src: str, dst: str, progress: Any = None) -> tuple[int, str]:
    """Copy src to dst through a partial file; return (size, sha256).

    The kernel copies (``shutil.copyfile`` uses copy_file_range/sendfile) in a thread
    while this thread hashes the source, so the two overlap on separate cores.
    """
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    part = f"{dst}.partial-{uuid.uuid4().hex[:8]}"
    h = hashlib.sha256()
    size = 0
    try:
        with ThreadPoolExecutor(1) as pool:
            copying = pool.submit(shutil.copyfile, src, part)
            with open(src, "rb") as fi:
                while chunk := fi.read(_BLOCK):
                    h.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress.update(len(chunk))
            copying.result()
        if os.path.getsize(part) != size:
            raise PackError(f"{src} changed while it was being packed; pack again")
        shutil.copystat(src, part)
        os.replace(part, dst)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    return size, h.hexdigest()


def _write_text_atomic(path: str, text: str) -> None:
    part = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    with open(part, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def _safe_relpath(rel: str, base: str) -> str:
    """The absolute path of a manifest entry, or PackError if it would leave ``base``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")) \
            or ".." in rel.replace("\\", "/").split("/") or ":" in rel.split("/")[0]:
        raise PackError(f"manifest path {rel!r} is absolute or escapes the pack directory")
    full = os.path.join(base, rel)
    real_base = os.path.realpath(base)
    if os.path.commonpath([os.path.realpath(full), real_base]) != real_base:
        raise PackError(f"manifest path {rel!r} resolves outside the pack (through a symlink)")
    return full


# --- pack ------------------------------------------------------------------------

def _load_journal(dest: str) -> dict[str, dict]:
    path = os.path.join(dest, JOURNAL)
    out: dict[str, dict] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    out[rec["path"]] = rec
                except (ValueError, KeyError):
                    continue  # a torn last line from an interrupted pack
    return out


def _read_manifest(dest: str) -> dict:
    path = os.path.join(dest, MANIFEST)
    if not os.path.exists(path):
        raise PackError(f"{dest}: no {MANIFEST}; not a pack, or an unfinished one "
                        "(run pack again to finish it)")
    try:
        with open(path, encoding="utf-8") as f:
            man = json.load(f)
    except ValueError as exc:
        raise PackError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(man, dict) or man.get("format") != PACK_FORMAT:
        raise PackError(f"{path}: not a databroker_lite pack manifest")
    if not isinstance(man.get("version"), int) or man["version"] > PACK_VERSION:
        raise PackError(f"{path}: pack format version {man.get('version')!r} is newer than this "
                        f"databroker_lite ({__version__}) reads; upgrade it")
    if not isinstance(man.get("files"), list) or not isinstance(man.get("runs"), list):
        raise PackError(f"{path}: manifest lacks its 'files' or 'runs' list")
    return man


def pack(catalog: Catalog | str | os.PathLike, dest: str | os.PathLike, *, all: bool = False,
         uids: Iterable[str] | None = None, scan_ids: Iterable[str | int] | None = None,
         query: Mapping | str | None = None, since: Any = None, until: Any = None,
         external: str = "copy", format: str = "hdf5", dry_run: bool = False,
         quiet: bool = False) -> PackReport:
    """Pack runs of a catalog (a Catalog, a directory or a catalog name) into ``dest``.

    ``external`` is "copy" (copy the external files the runs need), "skip" (leave them
    out) or "fill" (write the external data into the packed run files, so the pack needs
    no other file; see :meth:`Run.documents`).
    ``format="msgpack"`` writes documents that databroker 1.x's msgpack catalog reads.
    Running it again on the same ``dest`` finishes an interrupted pack and adds new runs.
    """
    if external not in ("copy", "skip", "fill"):
        raise ValueError(f"external must be 'copy', 'skip' or 'fill', not {external!r}")
    if format not in ("hdf5", "msgpack"):
        raise ValueError(f"format must be 'hdf5' or 'msgpack', not {format!r}")
    t0 = time.perf_counter()
    from .config import as_catalog
    cat = as_catalog(catalog)
    dest = os.path.abspath(os.fspath(dest))
    runs = select_runs(cat, all=all, uids=uids, scan_ids=scan_ids, query=query, since=since, until=until)
    if format == "msgpack":
        if dry_run:
            return PackReport(dest=dest, runs=[r.uid for r in runs], dry_run=True)
        return export_msgpack(runs, dest, quiet=quiet)
    old_runs: dict[str, dict] = {}
    if os.path.exists(os.path.join(dest, MANIFEST)):
        old = _read_manifest(dest)
        old_runs = {r["uid"]: r for r in old["runs"]}
    # what goes where: (relative path in pack, source path)
    plan: list[tuple[str, str]] = []
    root_map: dict[str, str] = {}
    filling = tempfile.TemporaryDirectory(prefix="databroker_lite-fill-") if external == "fill" else None
    with filling or contextlib.nullcontext():
        for run in runs:
            src = run.path
            if filling is not None and run.resources():
                src = _filled_copy(run, filling.name, dry_run)
            plan.append((os.path.basename(run.path), src))
            if external == "copy":
                for root, ext_src, rel in external_files(run):
                    key = _root_key(root)
                    root_map[root] = f"external/{key}"
                    plan.append((f"external/{key}/{rel}", ext_src))
        return _pack_plan(cat, runs, dest, plan, root_map, old_runs, dry_run, quiet, t0)


def _filled_copy(run: Run, tmp: str, dry_run: bool) -> str:
    """A copy of the run with its external data in the events (a dry run counts the run
    file as it is: the filled copy is bigger by the external data it takes in)."""
    if dry_run:
        return run.path
    target = open_catalog(os.path.join(tmp, run.uid))
    for name, doc in run.documents(fill=True):
        target.insert(name, doc)
    return os.path.join(target.directory, os.path.basename(run.path))


def _pack_plan(cat: Catalog, runs: list[Run], dest: str, plan: list[tuple[str, str]],
               root_map: dict[str, str], old_runs: dict[str, dict], dry_run: bool, quiet: bool,
               t0: float) -> PackReport:
    """Copy the planned files into ``dest`` with checksums, then write the manifest."""
    for rel, src in plan:
        _safe_relpath(rel, dest)  # nothing we write may leave dest
        if not os.path.exists(src):
            raise PackError(f"cannot pack {src!r}: it does not exist (needed for {rel})")
    report = PackReport(dest=dest, runs=[r.uid for r in runs], dry_run=dry_run,
                        new_runs=[r.uid for r in runs if r.uid not in old_runs])
    report.bytes_total = sum(os.path.getsize(src) for _, src in dict(plan).items())
    if dry_run:
        report.seconds = time.perf_counter() - t0
        return report
    os.makedirs(os.path.join(dest, INDEX_DIR), exist_ok=True)
    journal = _load_journal(dest)
    entries: dict[str, dict] = {}
    if old_runs:
        entries.update({e["path"]: e for e in _read_manifest(dest)["files"]})
    from tqdm.auto import tqdm
    todo = []
    for rel, src in dict(plan).items():
        st = os.stat(src)
        stamp = [st.st_size, st.st_mtime_ns]
        rec = journal.get(rel)
        dst = os.path.join(dest, rel)
        if rec and rec.get("src_stamp") == stamp and os.path.exists(dst) \
                and os.path.getsize(dst) == rec["size"]:
            entries[rel] = {"path": rel, "size": rec["size"], "sha256": rec["sha256"]}
            report.files_reused += 1
        else:
            todo.append((rel, src, stamp))
    bar = tqdm(total=sum(s[0] for _, _, s in todo), unit="B", unit_scale=True,
               unit_divisor=1024, desc="pack", disable=quiet or not todo)
    with bar, open(os.path.join(dest, JOURNAL), "a", encoding="utf-8") as jf:
        for rel, src, stamp in todo:
            size, digest = _copy_hashed(src, os.path.join(dest, rel), bar)
            entries[rel] = {"path": rel, "size": size, "sha256": digest}
            jf.write(json.dumps({"path": rel, "size": size, "sha256": digest, "src_stamp": stamp}) + "\n")
            jf.flush()
            report.files_copied += 1
            report.bytes_copied += size
    all_runs = dict(old_runs)
    for row in cat.summaries([r.uid for r in runs]):  # from the index: no file opened
        all_runs[row["uid"]] = {"uid": row["uid"], "scan_id": row["scan_id"], "time": row["time"],
                                "plan_name": row["plan_name"], "file": row["file"]}
    old_cfg = {}
    cfg_path = os.path.join(dest, CATALOG_CONFIG)
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            old_cfg = json.load(f).get("root_map", {})
    cfg_text = json.dumps({"root_map": {**old_cfg, **root_map}}, indent=1, sort_keys=True)
    _write_text_atomic(cfg_path, cfg_text)
    yml = ("sources:\n  packed_catalog:\n    driver: databroker_lite\n"
           "    args:\n      path: '{{ CATALOG_DIR }}'\n")
    _write_text_atomic(os.path.join(dest, "catalog.yml"), yml)
    for name, text in ((CATALOG_CONFIG, cfg_text), ("catalog.yml", yml)):
        entries[name] = {"path": name, "size": len(text.encode()),
                         "sha256": hashlib.sha256(text.encode()).hexdigest()}
    manifest = {
        "format": PACK_FORMAT, "version": PACK_VERSION,
        "tool": {"name": "databroker_lite", "version": __version__},
        "created": time.time(),
        "source": {"directory": cat.directory, "name": cat.name},
        "runs": sorted(all_runs.values(), key=lambda r: (r["time"] or 0, r["uid"])),
        "files": sorted(entries.values(), key=lambda e: e["path"]),
    }
    _write_text_atomic(os.path.join(dest, MANIFEST), json.dumps(manifest, indent=1))
    report.seconds = time.perf_counter() - t0
    return report


# --- verify ----------------------------------------------------------------------

def _walk_files(dest: str) -> list[str]:
    out = []
    for dirpath, dirnames, names in os.walk(dest):
        rel_dir = os.path.relpath(dirpath, dest)
        if rel_dir == INDEX_DIR or rel_dir.startswith(INDEX_DIR + os.sep):
            continue
        for n in names:
            rel = os.path.normpath(os.path.join(rel_dir, n)).replace(os.sep, "/")
            out.append(rel)
        dirnames[:] = [d for d in dirnames if not (rel_dir == "." and d == INDEX_DIR)]
    return out


def verify(dest: str | os.PathLike, *, quiet: bool = True) -> VerifyReport:
    """Recompute every checksum of a pack; list missing, changed, extra and unsafe files."""
    dest = os.path.abspath(os.fspath(dest))
    man = _read_manifest(dest)
    report = VerifyReport(dest=dest, n_files=len(man["files"]))
    listed = set()
    from tqdm.auto import tqdm
    total = sum(e.get("size", 0) for e in man["files"] if isinstance(e, dict))
    with tqdm(total=total, unit="B", unit_scale=True, desc="verify", disable=quiet) as bar:
        for e in man["files"]:
            rel = e.get("path") if isinstance(e, dict) else None
            try:
                full = _safe_relpath(rel, dest)
            except PackError:
                report.unsafe.append(str(rel))
                continue
            listed.add(rel)
            if os.path.islink(full):
                report.unsafe.append(rel)
            elif not os.path.isfile(full):
                report.missing.append(rel)
            elif os.path.getsize(full) != e.get("size") or sha256_file(full) != e.get("sha256"):
                report.changed.append(rel)
            bar.update(e.get("size", 0) or 0)
    for rel in _walk_files(dest):
        if rel != MANIFEST and rel not in listed:
            report.extra.append(rel)
    return report


# --- unpack -----------------------------------------------------------------------

def default_data_dir(name: str) -> str:
    """Where ``unpack`` puts a named catalog's files unless told otherwise."""
    base = os.environ.get("DATABROKER_LITE_DATA_DIR")
    if not base:
        from . import config
        base = os.path.join(os.path.dirname(config.catalog_search_path()[0]), "data")
    return os.path.join(base, name)


def unpack(dest: str | os.PathLike, name: str, *, to: str | os.PathLike | None = None,
           in_place: bool = False, quiet: bool = True) -> UnpackReport:
    """Verify a pack, then install it as the named catalog ``name``.

    With ``in_place`` the pack directory itself becomes the catalog; otherwise its runs
    are copied into ``to`` (default: the data directory for ``name``), skipping runs that
    are already there identically and reporting (never overwriting) conflicting ones.
    """
    from . import config
    src = os.path.abspath(os.fspath(dest))
    target = src if in_place else (os.path.abspath(os.fspath(to)) if to else default_data_dir(name))
    config.check_install(target, name)  # a bad or taken name: refused before anything is copied
    check = verify(src, quiet=quiet)
    if not check.ok:
        raise PackError(f"refusing to unpack: the pack does not match its manifest\n{check}")
    man = _read_manifest(src)
    if in_place:
        config.install_catalog(src, name)
        return UnpackReport(name=name, directory=src, added=[r["uid"] for r in man["runs"]])
    report = _merge_into(src, man, target)
    config.install_catalog(target, name)
    report.name = name
    return report


def _merge_into(src: str, man: dict, target: str) -> UnpackReport:
    report = UnpackReport(name=None, directory=target)
    os.makedirs(target, exist_ok=True)
    files = {e["path"]: e for e in man["files"]}
    run_files = {r["file"]: r["uid"] for r in man["runs"]}
    for rel, e in files.items():
        if rel in (CATALOG_CONFIG, "catalog.yml"):
            continue
        dst = os.path.join(target, rel)
        uid = run_files.get(rel)
        if os.path.exists(dst):
            if sha256_file(dst) == e["sha256"]:
                if uid:
                    report.skipped_identical.append(uid)
            else:
                report.conflicts.append(f"{rel} (run {uid})" if uid else rel)
            continue
        _copy_hashed(os.path.join(src, rel), dst)
        if uid:
            report.added.append(uid)
    _merge_root_map(target, _pack_root_map(src))
    open_catalog(target).refresh()
    return report


def _pack_root_map(src: str) -> dict[str, str]:
    path = os.path.join(src, CATALOG_CONFIG)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        rm = json.load(f).get("root_map", {})
    for v in rm.values():
        _safe_relpath(v, src)
    return rm


def _merge_root_map(target: str, root_map: dict[str, str]) -> None:
    if not root_map:
        return
    path = os.path.join(target, CATALOG_CONFIG)
    cfg: dict = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    cfg["root_map"] = {**cfg.get("root_map", {}), **root_map}
    _write_text_atomic(path, json.dumps(cfg, indent=1, sort_keys=True))


# --- interop with databroker-pack / suitcase ----------------------------------------

def _iter_document_file(path: str):
    if path.endswith(".msgpack"):
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
            try:
                for n, item in enumerate(unpacker, 1):
                    if not (isinstance(item, (list, tuple)) and len(item) == 2
                            and isinstance(item[0], str) and isinstance(item[1], dict)):
                        raise PackError(f"{path}, item {n}: not a [name, document] pair")
                    yield item[0], item[1]
            except (ValueError, msgpack.UnpackException) as exc:  # FormatError, ExtraData, ...
                raise PackError(f"{path}: not a msgpack document stream "
                                f"({type(exc).__name__}: {exc})") from None
            if unpacker.tell() != os.fstat(f.fileno()).st_size:
                raise PackError(f"{path}: cut short after {unpacker.tell()} bytes (the file has "
                                f"{os.fstat(f.fileno()).st_size}): its last document is incomplete")
    elif path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        name, doc = json.loads(line)
                    except ValueError as exc:
                        raise PackError(f"{path}, line {n}: not a [name, document] JSON line ({exc})") from None
                    yield name, doc
    else:
        raise PackError(f"{path}: expected a .msgpack or .jsonl document file")


def import_documents(src: str | os.PathLike, catalog: Catalog | str | os.PathLike,
                     *, quiet: bool = True) -> UnpackReport:
    """Insert runs from a databroker-pack directory or suitcase msgpack/jsonl files.

    External files of a databroker-pack directory are copied under the catalog's
    ``external/`` directory and its root_map kept in the catalog's ``catalog.json``.
    """
    import yaml
    src = os.path.abspath(os.fspath(src))
    cat = catalog if isinstance(catalog, Catalog) else open_catalog(catalog)
    files: list[str] = []
    root_map: dict[str, str] = {}
    yml = os.path.join(src, "catalog.yml")
    if os.path.isdir(src) and os.path.exists(yml):
        try:
            with open(yml, encoding="utf-8") as f:
                cfg = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise PackError(f"{yml}: not a catalog config this can read ({exc})") from None
        for source in (cfg or {}).get("sources", {}).values():
            args = source.get("args", {})
            for pattern in args.get("paths", []):
                rel = pattern.split("/documents/", 1)[-1]
                files += sorted(glob.glob(os.path.join(src, "documents", rel)))
            for old, new in (args.get("root_map") or {}).items():
                new = str(new)
                for prefix in ("{{ CATALOG_DIR }}/", "{{CATALOG_DIR}}/", "PACK_DIR/"):
                    new = new[len(prefix):] if new.startswith(prefix) else new
                _safe_relpath(new, src)
                root_map[old] = new
    elif os.path.isdir(src):
        files = sorted(glob.glob(os.path.join(src, "*.msgpack")) + glob.glob(os.path.join(src, "*.jsonl")))
    else:
        files = [src]
    if not files:
        raise PackError(f"{src}: no .msgpack or .jsonl document files found")
    report = UnpackReport(name=cat.name, directory=cat.directory)
    # copy external files first so runs are readable as soon as they are listed
    new_map = {}
    for old, rel in root_map.items():
        key = _root_key(old)
        for dirpath, _, names in os.walk(os.path.join(src, rel)):
            for n in names:
                s = os.path.join(dirpath, n)
                d = os.path.join(cat.directory, "external", key, os.path.relpath(s, os.path.join(src, rel)))
                if not os.path.exists(d):
                    _copy_hashed(s, d)
        new_map[old] = f"external/{key}"
    _merge_root_map(cat.directory, new_map)
    cat.root_map.update(stored_root_map(cat.directory))
    for path in files:
        docs = list(_iter_document_file(path))
        start = next((d for n, d in docs if n == "start"), None)
        if start is None:
            raise PackError(f"{path}: no start document")
        if start["uid"] in cat:
            report.skipped_identical.append(start["uid"])
            continue
        _insert_whole(cat, docs, path)
        report.added.append(start["uid"])
    return report


def _insert_whole(cat: Catalog, docs: list[tuple[str, dict]], path: str) -> None:
    """Write one run's documents aside, then move the finished file in: all or nothing."""
    aside = tempfile.mkdtemp(prefix=".import-", dir=cat.directory)  # not a run file: not indexed
    try:
        tmp = open_catalog(aside)
        try:
            for name, doc in docs:
                tmp.insert(name, doc)
        except DatabrokerLiteError as exc:
            raise PackError(f"{path}: {exc}; nothing of this run was imported") from exc
        tmp.writer.flush()  # a run without a stop: what it has
        for f in os.listdir(aside):
            if f.endswith(".h5"):
                os.replace(os.path.join(aside, f), os.path.join(cat.directory, f))
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    cat.refresh()


def export_msgpack(runs: list[Run], dest: str, *, quiet: bool = True) -> PackReport:
    """Write runs as a databroker-pack style directory that databroker 1.x reads."""
    t0 = time.perf_counter()
    report = PackReport(dest=dest, runs=[r.uid for r in runs], new_runs=[r.uid for r in runs])
    os.makedirs(os.path.join(dest, "documents"), exist_ok=True)
    root_map = {}
    for run in runs:
        out = os.path.join(dest, "documents", f"{run.uid}.msgpack")
        part = out + ".partial"
        with open(part, "wb") as f:
            for name, doc in run.documents():
                f.write(msgpack.packb([name, doc], use_bin_type=True))
        os.replace(part, out)
        report.files_copied += 1
        for root, srcf, rel in external_files(run):
            key = _root_key(root)
            root_map[root] = f"external_files/{key}"
            d = os.path.join(dest, "external_files", key, rel)
            if not os.path.exists(d):
                size, _ = _copy_hashed(srcf, d)
                report.bytes_copied += size
                report.files_copied += 1
    lines = ["sources:", "  packed_catalog:", "    driver: bluesky-msgpack-catalog", "    args:",
             "      paths:", "      - '{{ CATALOG_DIR }}/documents/*.msgpack'"]
    if root_map:
        lines.append("      root_map:")
        lines += [f"        {json.dumps(k)}: '{{{{ CATALOG_DIR }}}}/{v}'" for k, v in root_map.items()]
    _write_text_atomic(os.path.join(dest, "catalog.yml"), "\n".join(lines) + "\n")
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["PackError", "PackReport", "UnpackReport", "VerifyReport", "external_files",
           "import_documents", "pack", "parse_scan_ids", "select_runs", "unpack", "verify"]
