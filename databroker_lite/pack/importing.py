"""``import_documents``: runs from databroker-pack directories and suitcase files.

Each run is written aside (a hidden directory in the catalog) and only then linked into
place, so a run is imported whole or not at all. A run whose uid the catalog already
has is compared by the same-run rule (:mod:`.same`): the same run is skipped, another
run under that uid is a conflict, reported by uid and never written over. A file or run
that cannot be read or stored is reported with the reason, and the others go on; the
import then raises :class:`~databroker_lite.errors.ImportFailed` carrying the report.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile

from ..catalogs import Catalog, open_catalog, stored_root_map
from ..errors import ImportFailed
from ..index import RUN_SUFFIX
from .docfiles import iter_document_file, split_runs
from .errors import PackError
from .files import copy_hashed, same_bytes
from .paths import CATALOG_YML, resolve
from .plan import root_key
from .reports import UnpackReport
from .same import ABSENT, SAME, compare
from .unpacking import merge_root_map


def _databroker_pack_sources(src: str) -> tuple[list[str], dict[str, str]]:
    """The document files and root_map (old root -> directory in the pack) of a databroker-pack."""
    import yaml
    yml = os.path.join(src, CATALOG_YML)
    try:
        with open(yml, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise PackError(f"{yml}: not a catalog config this can read ({exc})") from None
    sources = cfg.get("sources") if isinstance(cfg, dict) else None
    if not isinstance(sources, dict):
        raise PackError(f"{yml}: has no 'sources' mapping; not a databroker-pack catalog.yml")
    files: list[str] = []
    root_map: dict[str, str] = {}
    for sname, source in sources.items():
        args = source.get("args") if isinstance(source, dict) else None
        paths, rm = (args or {}).get("paths", []), (args or {}).get("root_map") or {}
        if not isinstance(args, dict) or not isinstance(paths, list) or not isinstance(rm, dict):
            raise PackError(f"{yml}: source {sname!r} lacks args with a 'paths' list")
        for pattern in paths:
            rel = str(pattern).split("/documents/", 1)[-1]
            files += sorted(glob.glob(os.path.join(resolve(f"documents/{rel}", src, what="paths entry"))))
        for old, new in rm.items():
            new = str(new)
            for prefix in ("{{ CATALOG_DIR }}/", "{{CATALOG_DIR}}/", "PACK_DIR/"):
                new = new[len(prefix):] if new.startswith(prefix) else new
            resolve(new, src, what=f"{CATALOG_YML} root_map target for {old!r}:")
            root_map[str(old)] = new
    return files, root_map


def import_documents(src: str | os.PathLike, catalog: Catalog | str | os.PathLike,
                     *, quiet: bool = True) -> UnpackReport:
    """Insert runs from a databroker-pack directory or suitcase msgpack/jsonl files.

    External files of a databroker-pack directory are copied under the catalog's
    ``external/`` directory and its root_map kept in the catalog's ``catalog.json``.
    Returns the report (added, identical skipped, conflicts by uid); if any file or run
    could not be imported, raises ImportFailed (a PackError) with that report after
    importing all the others.
    """
    src = os.path.abspath(os.fspath(src))
    cat = catalog if isinstance(catalog, Catalog) else open_catalog(catalog)
    root_map: dict[str, str] = {}
    if os.path.isdir(src) and os.path.exists(os.path.join(src, CATALOG_YML)):
        files, root_map = _databroker_pack_sources(src)
    elif os.path.isdir(src):
        files = sorted(glob.glob(os.path.join(src, "*.msgpack")) + glob.glob(os.path.join(src, "*.jsonl")))
    else:
        files = [src]
    if not files:
        raise PackError(f"{src}: no .msgpack or .jsonl document files found")
    report = UnpackReport(name=cat.name, directory=cat.directory)
    # external files first, so runs are readable as soon as they are listed
    new_map = {}
    for old, rel in root_map.items():
        key = root_key(old)
        base = os.path.join(src, rel)
        for dirpath, _, names in os.walk(base):
            for n in names:
                s = os.path.join(dirpath, n)
                d = os.path.join(cat.directory, "external", key, os.path.relpath(s, base))
                if not os.path.exists(d):
                    copy_hashed(s, d)
                elif not same_bytes(d, s):
                    report.conflicts.append(f"{os.path.relpath(d, cat.directory)}: the catalog has "
                                            "a different file there (kept it)")
        new_map[old] = f"external/{key}"
    merge_root_map(cat.directory, new_map)
    cat.root_map.update(stored_root_map(cat.directory))
    from tqdm.auto import tqdm
    for path in tqdm(files, desc="import", unit="file", disable=quiet):
        try:
            runs = split_runs(path, list(iter_document_file(path)))
        except PackError as exc:
            report.failed[path] = str(exc)
            continue
        for uid, docs in runs:
            try:
                _import_run(cat, uid, docs, path, report)
            except PackError as exc:
                report.failed[f"{path} (run {uid})"] = str(exc)
    if report.failed:
        lines = "\n".join(f"  {v}" for v in report.failed.values())  # each names its file
        raise ImportFailed(f"{src}: {len(report.failed)} file(s) or run(s) could not be imported; "
                           f"the others were ({len(report.added)} added, "
                           f"{len(report.skipped_identical)} identical skipped, "
                           f"{len(report.conflicts)} conflict(s)):\n{lines}", report, report.failed)
    return report


def _import_run(cat: Catalog, uid: str, docs: list[tuple[str, dict]], path: str,
                report: UnpackReport) -> None:
    """Write one run aside, then add it, skip it (the same run) or report a conflict."""
    aside = tempfile.mkdtemp(prefix=".import-", dir=cat.directory)  # not a run file: not indexed
    try:
        tmp = open_catalog(aside)
        try:
            for name, doc in docs:
                tmp.insert(name, doc)
            tmp.writer.flush()  # a run without a stop: what it has
        except RecursionError:
            raise PackError(f"{path}: run {uid}: a document is nested too deeply; nothing of this "
                            "run was imported") from None
        except Exception as exc:  # noqa: BLE001 - any failure of one run is reported, the others go on
            raise PackError(f"{path}: run {uid}: {type(exc).__name__}: {exc}; nothing of this run "
                            "was imported") from None
        made = os.path.join(aside, f"{uid}{RUN_SUFFIX}")
        if not os.path.exists(made):
            raise PackError(f"{path}: run {uid}: no run file was written; nothing imported")
        row = next(iter(cat.summaries([uid])), None)
        verdict = compare(made, os.path.join(cat.directory, row["file"]) if row else None)
        if verdict == SAME:
            report.skipped_identical.append(uid)
            return
        if verdict != ABSENT:
            report.conflicts.append(f"{uid}: the catalog has another run with this uid "
                                    f"(other documents, from {os.path.basename(path)}); kept it")
            return
        try:  # a link, not a rename: it can never replace a file that is already there
            os.link(made, os.path.join(cat.directory, f"{uid}{RUN_SUFFIX}"))
        except FileExistsError:
            report.conflicts.append(f"{uid}: {uid}{RUN_SUFFIX} in the catalog is not a readable "
                                    "run of this uid; kept it (see cat.bad_files)")
            return
        report.added.append(uid)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    cat.refresh()
