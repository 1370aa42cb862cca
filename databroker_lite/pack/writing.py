"""``pack``: copy runs and the external files they need into a pack directory.

Resuming is built in. Each file is copied through a partial and renamed into place,
then recorded in the journal (``.databroker_lite/pack-journal.jsonl``: path, size,
checksum and the source's size and mtime); the manifest is written last. Run again, a
pack first removes the partial files a killed run left, reuses every journaled file
whose source has not changed, copies the rest, and after the manifest is written
removes files an unfinished pack had copied that the finished one does not list.
A run already in a finished pack is never replaced: if the catalog's copy is not the
same run (see :mod:`.same`), it is a conflict, reported, and the packed one kept.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .._version import __version__
from ..catalogs import Catalog, open_catalog
from ..run import Run
from . import files as _files
from .errors import PackError
from .manifest import PACK_FORMAT, PACK_VERSION, checksum_of, entry, load_json, matches, read_manifest
from .paths import CATALOG_CONFIG, CATALOG_YML, INDEX_DIR, JOURNAL, MANIFEST, clean_partials, resolve
from .plan import external_files, root_key, select_runs
from .reports import PackReport
from .same import SAME, compare

_YML = ("sources:\n  packed_catalog:\n    driver: databroker_lite\n"
        "    args:\n      path: '{{ CATALOG_DIR }}'\n")


def pack(catalog: Catalog | str | os.PathLike, dest: str | os.PathLike, *, all: bool = False,
         uids: Iterable[str] | None = None, scan_ids: Iterable[str | int] | None = None,
         query: Mapping | str | None = None, since: Any = None, until: Any = None,
         external: str = "copy", format: str = "hdf5", dry_run: bool = False,
         quiet: bool = False) -> PackReport:
    """Pack runs of a catalog (a Catalog, a directory or a catalog name) into ``dest``.

    ``external`` is "copy" (copy the external files the runs need), "skip" (leave them
    out) or "fill" (write the external data into the packed run files, so the pack needs
    no other file; see :meth:`Run.documents`; runs with stream resources are refused).
    ``format="msgpack"`` writes documents that databroker 1.x's msgpack catalog reads.
    Running it again on the same ``dest`` finishes an interrupted pack and adds new runs.
    """
    if external not in ("copy", "skip", "fill"):
        raise ValueError(f"external must be 'copy', 'skip' or 'fill', not {external!r}")
    if format not in ("hdf5", "msgpack"):
        raise ValueError(f"format must be 'hdf5' or 'msgpack', not {format!r}")
    t0 = time.perf_counter()
    from ..config import as_catalog
    cat = as_catalog(catalog)
    dest = os.path.abspath(os.fspath(dest))
    runs = select_runs(cat, all=all, uids=uids, scan_ids=scan_ids, query=query, since=since, until=until)
    if external == "fill":
        streamed = [r.uid for r in runs if any("uri" in d for d in r.resources())]
        if streamed:  # refused before anything is written, all of them named at once
            raise PackError(
                f"--external fill cannot put stream resources (the files ophyd-async detectors "
                f"write) into events yet, and {len(streamed)} of the {len(runs)} runs have them: "
                f"{', '.join(streamed)}; pack with --external copy (the default), which copies "
                "those files into the pack")
    if format == "msgpack":
        from .interop import export_msgpack
        if dry_run:
            return PackReport(dest=dest, runs=[r.uid for r in runs], dry_run=True)
        return export_msgpack(runs, dest, quiet=quiet)
    old_man = read_manifest(dest) if os.path.exists(os.path.join(dest, MANIFEST)) else None
    old_runs = {r["uid"]: r for r in old_man["runs"]} if old_man else {}
    plan: list[tuple[str, str]] = []  # (relative path in the pack, source path)
    run_of: dict[str, str] = {}  # relative path of a run file -> uid
    root_map: dict[str, str] = {}
    filling = tempfile.TemporaryDirectory(prefix="databroker_lite-fill-") if external == "fill" else None
    with filling or contextlib.nullcontext():
        for run in runs:
            src = run.path
            if filling is not None and run.resources():
                src = _filled_copy(run, filling.name, dry_run)
            rel = old_runs[run.uid]["file"] if run.uid in old_runs else os.path.basename(run.path)
            plan.append((rel, src))
            run_of[rel] = run.uid
            if external == "copy":
                for root, ext_src, ext_rel in external_files(run):
                    key = root_key(root)
                    root_map[root] = f"external/{key}"
                    plan.append((f"external/{key}/{ext_rel}", ext_src))
        return _pack_plan(cat, runs, dest, dict(plan), run_of, root_map, old_man, dry_run, quiet, t0)


def _filled_copy(run: Run, tmp: str, dry_run: bool) -> str:
    """A copy of the run with its external data in the events (a dry run counts the run
    file as it is: the filled copy is bigger by the external data it takes in)."""
    if dry_run:
        return run.path
    target = open_catalog(os.path.join(tmp, run.uid))
    for name, doc in run.documents(fill=True):
        target.insert(name, doc)
    return os.path.join(target.directory, os.path.basename(run.path))


def _checksum(rec: dict) -> tuple[str, str] | None:
    """(algorithm, digest) a journal record holds, or None if it holds none usable."""
    try:
        return checksum_of(rec)
    except PackError:
        return None


def _load_journal(dest: str) -> dict[str, dict]:
    path = os.path.join(dest, JOURNAL)
    out: dict[str, dict] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    if isinstance(rec, dict) and isinstance(rec.get("path"), str):
                        out[rec["path"]] = rec
                except (ValueError, RecursionError):
                    continue  # a torn last line from an interrupted pack
    return out


def _pack_plan(cat: Catalog, runs: list[Run], dest: str, plan: dict[str, str], run_of: dict[str, str],
               root_map: dict[str, str], old_man: dict | None, dry_run: bool, quiet: bool,
               t0: float) -> PackReport:
    """Copy the planned files into ``dest`` with checksums, then write the manifest."""
    old_runs = {r["uid"]: r for r in old_man["runs"]} if old_man else {}
    for rel, src in plan.items():
        resolve(rel, dest)  # nothing we write may leave dest
        if not os.path.exists(src):
            raise PackError(f"cannot pack {src!r}: it does not exist (needed for {rel})")
    report = PackReport(dest=dest, runs=[r.uid for r in runs], dry_run=dry_run,
                        new_runs=[r.uid for r in runs if r.uid not in old_runs])
    report.bytes_total = sum(os.path.getsize(src) for src in plan.values())
    if dry_run:
        report.seconds = time.perf_counter() - t0
        return report
    if os.path.isdir(os.path.join(dest, INDEX_DIR)):  # a pack (perhaps unfinished) is there
        report.cleaned = clean_partials(dest)
    os.makedirs(os.path.join(dest, INDEX_DIR), exist_ok=True)
    journal = _load_journal(dest)
    old_entries = {e["path"]: e for e in old_man["files"]} if old_man else {}
    entries: dict[str, dict] = dict(old_entries)
    conflicted: set[str] = set()
    todo = []
    reused = []
    for rel, src in plan.items():
        st = os.stat(src)
        stamp = [st.st_size, st.st_mtime_ns]
        rec = journal.get(rel)
        dst = os.path.join(dest, rel)
        held = _checksum(rec) if rec else None
        if held and rec.get("src_stamp") == stamp and os.path.isfile(dst) \
                and os.path.getsize(dst) == rec.get("size"):
            entries[rel] = entry(rel, rec["size"], held[1], held[0])
            report.files_reused += 1
        elif rel in old_entries and os.path.isfile(dst):  # in a finished pack: never replaced
            same = compare(src, dst) == SAME if rel in run_of else matches(src, old_entries[rel])
            if same:
                report.files_reused += 1
                reused.append({**old_entries[rel], "src_stamp": stamp})
            else:
                what = f"run {run_of[rel]}" if rel in run_of else "external file"
                report.conflicts.append(f"{what} ({rel}): the pack holds a different one")
                conflicted.add(run_of.get(rel, rel))
        else:
            todo.append((rel, src, stamp))
    bar = _files.byte_bar(sum(s[0] for _, _, s in todo), "pack", quiet)
    with bar, open(os.path.join(dest, JOURNAL), "a", encoding="utf-8") as jf:
        for rec in reused:
            jf.write(json.dumps(rec) + "\n")
        for rel, src, stamp in todo:
            size, digest = _files.copy_hashed(src, os.path.join(dest, rel), bar)
            entries[rel] = entry(rel, size, digest)
            jf.write(json.dumps({**entries[rel], "src_stamp": stamp}) + "\n")
            jf.flush()
            report.files_copied += 1
            report.bytes_copied += size
    all_runs = dict(old_runs)
    file_of = {uid: rel for rel, uid in run_of.items()}
    for row in cat.summaries([r.uid for r in runs]):  # from the index: no file opened
        if row["uid"] not in conflicted:
            all_runs[row["uid"]] = {"uid": row["uid"], "scan_id": row["scan_id"], "time": row["time"],
                                    "plan_name": row["plan_name"], "file": file_of[row["uid"]]}
    cfg_path = os.path.join(dest, CATALOG_CONFIG)
    old_cfg = {}
    if os.path.exists(cfg_path):
        cfg = load_json(cfg_path, "catalog config")
        old_cfg = cfg.get("root_map", {}) if isinstance(cfg, dict) else {}
    cfg_text = json.dumps({"root_map": {**old_cfg, **root_map}}, indent=1, sort_keys=True)
    _files.write_text_atomic(cfg_path, cfg_text)
    _files.write_text_atomic(os.path.join(dest, CATALOG_YML), _YML)
    for name, text in ((CATALOG_CONFIG, cfg_text), (CATALOG_YML, _YML)):
        entries[name] = entry(name, len(text.encode()), _files.bytes_digest(text.encode()))
    manifest = {
        "format": PACK_FORMAT, "version": PACK_VERSION,
        "tool": {"name": "databroker_lite", "version": __version__},
        "created": time.time(),
        "source": {"directory": cat.directory, "name": cat.name},
        "runs": sorted(all_runs.values(), key=lambda r: (r.get("time") or 0, r["uid"])),
        "files": sorted(entries.values(), key=lambda e: e["path"]),
    }
    _files.write_text_atomic(os.path.join(dest, MANIFEST), json.dumps(manifest, indent=1))
    # files an interrupted pack copied that this finished one does not list
    for rel in set(journal) - set(entries):
        with contextlib.suppress(OSError, PackError):
            os.remove(resolve(rel, dest))
    report.seconds = time.perf_counter() - t0
    return report
