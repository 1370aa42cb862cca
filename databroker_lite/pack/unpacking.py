"""``unpack``: verify a pack, check everything, then install its runs as a named catalog.

Nothing is written until every check has passed: the manifest and every checksum
(``verify``), the ``catalog.json`` root_map (each target inside the pack), and every run
file (readable, its uid taken from its own start document, one file per uid). Then each
run is compared with the target by the same-run rule (:mod:`.same`): absent runs are
copied, the same runs skipped, other runs under a uid the target has are conflicts,
kept as they were. External files are copied before the run files that need them, each
through a partial and a rename, so a killed unpack leaves only partials, which the next
unpack removes before it finishes the job. An index that came with the pack is never
used: the files are the truth.
"""
from __future__ import annotations

import os

from ..catalogs import open_catalog
from ..index import RUN_SUFFIX
from .errors import PackError
from .files import CHECKSUM, byte_bar, copy_hashed, write_text_atomic
from .manifest import checksum_of, load_json, matches, read_manifest, read_pack_root_map
from .paths import CATALOG_CONFIG, CATALOG_YML, INDEX_DIR, clean_partials, resolve
from .reports import UnpackReport
from .same import ABSENT, SAME, compare, run_uid
from .verifying import verify


def default_data_dir(name: str) -> str:
    """Where ``unpack`` puts a named catalog's files unless told otherwise."""
    base = os.environ.get("DATABROKER_LITE_DATA_DIR")
    if not base:
        from .. import config
        base = os.path.join(os.path.dirname(config.catalog_search_path()[0]), "data")
    return os.path.join(base, name)


def pack_runs(src: str, man: dict) -> dict[str, str]:
    """{uid: relative path} of the run files of a verified pack, uids read from the files."""
    rels = {r["file"] for r in man["runs"]}
    rels |= {e["path"] for e in man["files"] if "/" not in e["path"] and e["path"].endswith(RUN_SUFFIX)}
    out: dict[str, str] = {}
    claimed = {r["file"]: r["uid"] for r in man["runs"]}
    for rel in sorted(rels):
        uid = run_uid(resolve(rel, src))
        if rel in claimed and claimed[rel] != uid:
            raise PackError(f"{src}: the manifest says {rel} is run {claimed[rel]}, but the file "
                            f"holds run {uid}; the pack is not what it claims")
        if uid in out:
            raise PackError(f"{src}: run {uid} is in two files, {out[uid]} and {rel}")
        if os.sep in uid or "/" in uid or uid.startswith(".") or "\0" in uid:
            raise PackError(f"{src}: run uid {uid!r} (in {rel}) cannot be a file name")
        out[uid] = rel
    return out


def _drop_index(directory: str) -> None:
    """Remove a derived index that came with a pack; the next open rebuilds it from the files."""
    idx = os.path.join(directory, INDEX_DIR)
    try:
        for n in os.listdir(idx) if os.path.isdir(idx) else ():
            if n.startswith("index"):
                os.remove(os.path.join(idx, n))
    except OSError as exc:
        raise PackError(f"{idx}: cannot remove the index that came with the pack ({exc}); "
                        "unpack it into a catalog instead (without --in-place)") from None


def unpack(dest: str | os.PathLike, name: str, *, to: str | os.PathLike | None = None,
           in_place: bool = False, quiet: bool = True) -> UnpackReport:
    """Verify a pack, then install it as the named catalog ``name``.

    With ``in_place`` the pack directory itself becomes the catalog; otherwise its runs
    are copied into ``to`` (default: the data directory for ``name``), skipping runs that
    are already there (the same run) and reporting, never overwriting, conflicting ones.
    Run again after an interruption, it finishes the job.
    """
    from .. import config
    src = os.path.abspath(os.fspath(dest))
    target = src if in_place else (os.path.abspath(os.fspath(to)) if to else default_data_dir(name))
    config.check_install(target, name)  # a bad or taken name: refused before anything is copied
    check = verify(src, quiet=quiet)
    if not check.ok:
        raise PackError(f"refusing to unpack: the pack does not match its manifest\n{check}")
    man = read_manifest(src)
    root_map = read_pack_root_map(src)
    runs = pack_runs(src, man)
    if in_place:
        _drop_index(src)
        open_catalog(src).reindex()
        config.install_catalog(src, name)
        return UnpackReport(name=name, directory=src, added=sorted(runs, key=runs.get))
    report = UnpackReport(name=name, directory=target)
    run_rels = set(runs.values())
    externals: list[tuple[str, str]] = []  # (source, destination) to copy
    for e in man["files"]:
        rel = e["path"]
        if rel in (CATALOG_CONFIG, CATALOG_YML) or rel in run_rels:
            continue
        dst = resolve(rel, target, what="file")
        if not os.path.exists(dst):
            externals.append((resolve(rel, src), dst))
        elif not os.path.isfile(dst) or not matches(dst, e):
            report.conflicts.append(f"{rel}: the catalog has a different file there (kept it)")
    existing = {}
    if os.path.isdir(target):
        tcat = open_catalog(target)
        existing = {row["uid"]: os.path.join(target, row["file"]) for row in tcat.summaries(list(runs))}
    copies: list[tuple[str, str, str]] = []  # (uid, source, destination)
    for uid, rel in runs.items():
        dst = os.path.join(target, f"{uid}{RUN_SUFFIX}")
        verdict = compare(resolve(rel, src), existing.get(uid))
        if verdict == ABSENT and os.path.lexists(dst):
            report.conflicts.append(f"{uid}: {os.path.basename(dst)} in the catalog is not a readable "
                                    "run file; kept it (see cat.bad_files)")
        elif verdict == ABSENT:
            copies.append((uid, resolve(rel, src), dst))
        elif verdict == SAME:
            report.skipped_identical.append(uid)
        else:
            report.conflicts.append(f"{uid}: the catalog has another run with this uid "
                                    "(other documents); kept it")
    ours = _target_root_map(target)
    for k, v in root_map.items():
        if k in ours and ours[k] != v:
            report.conflicts.append(f"root_map {k!r}: the catalog maps it to {ours[k]!r}, the pack "
                                    f"to {v!r}; kept the catalog's")
    # every check done: now write
    os.makedirs(target, exist_ok=True)
    clean_partials(target, {d for _, d in externals} | {d for _, _, d in copies}
                   | {os.path.join(target, CATALOG_CONFIG)})
    merge_root_map(target, root_map)
    total = sum(os.path.getsize(s) for s, _ in externals) + sum(os.path.getsize(s) for _, s, _ in copies)
    # each copy is hashed again as it is made: a file changed since verify is not installed
    expected = {resolve(e["path"], src): checksum_of(e) for e in man["files"]}
    with byte_bar(total, "unpack", quiet) as bar:
        for s, d in externals:  # the external files first: a listed run can read its data
            copy_hashed(s, d, bar, *expected.get(s, (CHECKSUM, None)))
        for uid, s, d in copies:
            copy_hashed(s, d, bar, *expected.get(s, (CHECKSUM, None)))
            report.added.append(uid)
    open_catalog(target).refresh()
    config.install_catalog(target, name)
    return report


def _target_config(target: str) -> dict:
    path = os.path.join(target, CATALOG_CONFIG)
    if not os.path.exists(path):
        return {}
    cfg = load_json(path, "catalog config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("root_map", {}), dict):
        raise PackError(f"{path}: the catalog's config is not an object with a root_map object")
    return cfg


def _target_root_map(target: str) -> dict:
    return _target_config(target).get("root_map", {})


def merge_root_map(target: str, root_map: dict[str, str]) -> None:
    """Add ``root_map`` to a catalog's ``catalog.json``; entries it has already win."""
    cfg = _target_config(target)
    merged = {**root_map, **cfg.get("root_map", {})}
    if merged != cfg.get("root_map", {}):
        import json
        write_text_atomic(os.path.join(target, CATALOG_CONFIG),
                          json.dumps({**cfg, "root_map": merged}, indent=1, sort_keys=True))
