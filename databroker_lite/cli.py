"""The ``databroker-lite`` command. It only calls the public Python API."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import databroker_lite
from databroker_lite.errors import DatabrokerLiteError


def _cmd_reindex(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.path):  # mode "a" would create it: a typo must not make a catalog
        raise databroker_lite.CatalogError(f"no catalog directory at {args.path}")
    cat = databroker_lite.open_catalog(args.path)
    counts = cat.reindex()
    print(f"{args.path}: {len(cat)} runs indexed "
          f"({counts['added'] + counts['updated']} read, {counts['bad']} unreadable)")
    for f, err in sorted(cat.bad_files.items()):
        print(f"  unreadable: {f}: {err}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from databroker_lite.tutorial.demo import run_demo
    run_demo()
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    cat = databroker_lite.open_catalog(args.path, mode="r")
    print(repr(cat))
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    report = databroker_lite.pack(args.catalog, args.dest, all=args.all, uids=args.uids,
                                  scan_ids=args.scan_ids, query=args.query, since=args.since,
                                  until=args.until, external=args.external, format=args.format,
                                  dry_run=args.dry_run, quiet=args.quiet)
    print(report)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    report = databroker_lite.verify(args.dest, quiet=args.quiet)
    print(report)
    return 0 if report.ok else 1


def _cmd_unpack(args: argparse.Namespace) -> int:
    report = databroker_lite.unpack(args.dest, args.name, to=args.to, in_place=args.in_place,
                                    quiet=args.quiet)
    print(report)
    return 1 if report.conflicts else 0


def _cmd_import(args: argparse.Namespace) -> int:
    report = databroker_lite.import_documents(args.src, args.catalog, quiet=args.quiet)
    print(report)
    return 0


def _add_pack_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("pack", help="pack runs into a directory to carry to another site")
    s.add_argument("catalog", help="catalog directory or name")
    s.add_argument("dest", help="pack directory (created; an existing pack is extended)")
    which = s.add_argument_group("which runs")
    which.add_argument("--all", action="store_true", help="every run")
    which.add_argument("--uids", nargs="+", metavar="UID", help="uids or unique prefixes")
    which.add_argument("--scan-ids", nargs="+", metavar="N", help="scan_ids and ranges like 5-9")
    which.add_argument("--query", metavar="JSON", help='MongoDB-style query, e.g. \'{"plan_name": "scan"}\'')
    which.add_argument("--since", help="start time at or after (ISO date/time)")
    which.add_argument("--until", help="start time before (ISO date/time)")
    s.add_argument("--external", choices=["copy", "skip", "fill"], default="copy",
                   help="copy the external files the runs need (default), leave them out, or "
                        "fill their data into the packed run files")
    s.add_argument("--format", choices=["hdf5", "msgpack"], default="hdf5",
                   help="hdf5: our run files (default); msgpack: documents databroker 1.x reads")
    s.add_argument("--dry-run", action="store_true", help="say how many runs and bytes, copy nothing")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_pack)
    s = sub.add_parser("verify", help="recompute a pack's checksums; exit 1 if anything is wrong")
    s.add_argument("dest")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=_cmd_verify)
    s = sub.add_parser("unpack", help="verify a pack and install it as a named catalog")
    s.add_argument("dest")
    s.add_argument("name")
    s.add_argument("--to", help="directory to copy the runs into (default: the data directory)")
    s.add_argument("--in-place", action="store_true", help="use the pack directory itself")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=_cmd_unpack)
    s = sub.add_parser("import", help="insert runs from a databroker-pack directory or "
                                      "suitcase msgpack/jsonl files")
    s.add_argument("src")
    s.add_argument("catalog", help="catalog directory (created if missing)")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=_cmd_import)


def _cmd_catalogs(args: argparse.Namespace) -> int:
    entries = databroker_lite.catalog.entries()
    search = os.pathsep.join(databroker_lite.catalog.search_path)
    if not entries:
        print(f"no named catalogs (search path: {search}); add one with "
              f"'databroker-lite install PATH NAME'")
        return 0
    rows = []
    for name in sorted(entries):
        try:
            location = entries[name].path
            runs = str(len(entries[name].open()))
        except (DatabrokerLiteError, OSError) as exc:
            location = entries[name].args.get("path", "?")
            runs = f"? ({exc})"
        rows.append((name, str(location), runs))
    w_name = max(len("NAME"), *(len(r[0]) for r in rows))
    w_loc = max(len("LOCATION"), *(len(r[1]) for r in rows))
    print(f"{'NAME':<{w_name}}  {'LOCATION':<{w_loc}}  RUNS")
    for name, location, runs in rows:
        print(f"{name:<{w_name}}  {location:<{w_loc}}  {runs}")
    print(f"(search path: {search})")
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    root_map = {}
    for item in args.root_map or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            print(f"databroker-lite install: error: --root-map takes OLD=NEW, got {item!r}",
                  file=sys.stderr)
            return 2
        root_map[old] = new
    written = databroker_lite.install_catalog(args.path, args.name, root_map=root_map,
                                              overwrite=args.overwrite)
    print(f"catalog {args.name!r} -> {os.path.abspath(args.path)} (config {written})")
    return 0


def _add_catalog_commands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("catalogs", help="list the named catalogs: name, location, number of runs")
    s.set_defaults(func=_cmd_catalogs)
    s = sub.add_parser("install", help="make a catalog directory available by name "
                                       "(databroker_lite.catalog[NAME], intake)")
    s.add_argument("path", help="catalog directory")
    s.add_argument("name")
    s.add_argument("--root-map", action="append", metavar="OLD=NEW",
                   help="map an old root of external files to a new one (repeatable)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing catalog of that name")
    s.set_defaults(func=_cmd_install)


def _cmd_export(args: argparse.Namespace) -> int:
    import json

    from databroker_lite.export import export
    if args.query and args.runs:
        print("databroker-lite export: error: give RUNS or --query, not both", file=sys.stderr)
        return 2
    cat = databroker_lite.as_catalog(args.catalog)
    if args.query:
        try:
            query = json.loads(args.query)
        except json.JSONDecodeError as exc:
            print(f"databroker-lite export: error: --query is not JSON: {exc}", file=sys.stderr)
            return 2
        runs = list(cat.search(query).values())
    else:  # digits: a scan_id; -k: the k-th most recent; anything else: a uid or prefix
        keys = [int(r) if r.lstrip("-").isdigit() else r for r in args.runs]
        runs = [cat[k] for k in keys]
    if not runs:
        print("databroker-lite export: error: no runs to export (give RUNS or --query)",
              file=sys.stderr)
        return 1
    streams = [x for x in args.streams.split(",") if x] if args.streams else None
    paths = export(runs, args.format, args.dest, streams=streams)
    for path in paths:
        print(path)
    return 0


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("export", help="write runs as CSV, JSON, SPEC or NeXus files for users")
    s.add_argument("catalog", help="catalog directory or name")
    s.add_argument("runs", nargs="*", metavar="RUN",
                   help="scan_id (digits), -k (k-th most recent), or uid / uid prefix")
    s.add_argument("format", choices=["csv", "json", "spec", "nexus"])
    s.add_argument("dest", help="directory (csv, json, nexus) or SPEC file")
    s.add_argument("--query", metavar="JSON", help="export the runs matching this query instead")
    s.add_argument("--streams", metavar="A,B", help="only these streams (comma-separated)")
    s.set_defaults(func=_cmd_export)


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from databroker_lite.server import read_api_key, serve
    except ImportError as exc:
        print(f"databroker-lite serve: error: needs the server extra "
              f"(pip install 'databroker_lite[server]'): {exc}", file=sys.stderr)
        return 2
    key = read_api_key(args.api_key_file)
    print(f"serving {', '.join(args.catalogs)} on http://{args.host}:{args.port} "
          "(API key from the key file); Ctrl-C stops", flush=True)
    serve(args.catalogs, api_key=key, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="databroker-lite", description=databroker_lite.__doc__)
    p.add_argument("--version", action="version", version=databroker_lite.__version__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("reindex", help="rebuild a catalog's index from its run files")
    s.add_argument("path")
    s.set_defaults(func=_cmd_reindex)
    s = sub.add_parser("ls", help="show a catalog: how many runs, the newest")
    s.add_argument("path")
    s.set_defaults(func=_cmd_ls)
    s = sub.add_parser("demo", help="install the tutorial catalogs and show what is in them")
    s.set_defaults(func=_cmd_demo)
    _add_pack_commands(sub)
    _add_catalog_commands(sub)
    _add_export_command(sub)
    s = sub.add_parser("serve", help="serve catalogs over HTTP through tiled, with an API key "
                                     "(needs the server extra)")
    s.add_argument("catalogs", nargs="+", metavar="CATALOG", help="catalog directory or name")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key-file", required=True, metavar="FILE",
                   help="file holding the API key clients must send (letters and digits)")
    s.set_defaults(func=_cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DatabrokerLiteError as exc:
        print(f"databroker-lite {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
