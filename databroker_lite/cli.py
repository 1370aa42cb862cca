"""The ``databroker-lite`` command. It only calls the public Python API."""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import warnings
from collections.abc import Sequence

import databroker_lite
from databroker_lite.errors import DatabrokerLiteError


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--al`` is not ``--all``), saying what was meant."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _options(self) -> list[str]:
        return [o for a in self._actions for o in a.option_strings if o.startswith("--")]

    def error(self, message: str):  # type: ignore[override]
        m = re.match(r"argument \S+: invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'?([\w.-]+)'?", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = getattr(ns, "_parser", self)
            hints = []
            for e in extras:
                close = (difflib.get_close_matches(e.split("=", 1)[0], sub._options(), n=1,
                                                   cutoff=0.5) if e.startswith("-") else [])
                hints.append(f"{e} (did you mean {close[0]}?)" if close else e)
            sub.error("unrecognized arguments: " + " ".join(hints))
        return ns


def _cmd_reindex(args: argparse.Namespace) -> int:
    # a directory or a named catalog (whose entry may say where its index is); never
    # made: a typo must not make a catalog
    cat = databroker_lite.as_catalog(args.path, "a", index=args.index)
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
    print(repr(databroker_lite.as_catalog(args.path)))
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
    s.add_argument("dest", metavar="PACK", help="pack directory (written by 'pack')")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_verify)
    s = sub.add_parser("unpack", help="verify a pack and install it as a named catalog")
    s.add_argument("dest", metavar="PACK", help="pack directory (written by 'pack')")
    s.add_argument("name", metavar="NAME", help="name to install the catalog as (then databroker_lite.catalog[NAME]"
                                " opens it); letters, digits, '_', '.', '-'")
    s.add_argument("--to", help="directory to copy the runs into (default: the data directory)")
    s.add_argument("--in-place", action="store_true", help="use the pack directory itself")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_unpack)
    s = sub.add_parser("import", help="insert runs from a databroker-pack directory or "
                                      "suitcase msgpack/jsonl files")
    s.add_argument("src", help="databroker-pack directory, or a suitcase .msgpack/.jsonl file "
                               "or a directory of them")
    s.add_argument("catalog", help="catalog directory (created if missing)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
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
    s.add_argument("name", metavar="NAME", help="the name to give it: letters, digits, '_', '.', '-'")
    s.add_argument("--root-map", action="append", metavar="OLD=NEW",
                   help="map an old root of external files to a new one (repeatable)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing catalog of that name")
    s.set_defaults(func=_cmd_install)


def _export_positionals(args: argparse.Namespace) -> tuple[list[str], str, str]:
    """RUN... FORMAT DEST from the words after CATALOG, saying what is missing."""
    from databroker_lite.export import FORMATS
    words, parser = args.items, args._parser
    names = ", ".join(FORMATS)
    if len(words) >= 2 and words[-2].lower() in FORMATS:
        return words[:-2], words[-2].lower(), words[-1]
    if words and words[-1].lower() in FORMATS:
        parser.error(f"no destination after the format {words[-1]!r}: give a directory (or a file, "
                     f"for spec/json/nexus), e.g. 'databroker-lite export {args.catalog} "
                     f"{' '.join(words)} ./exported'")
    close = difflib.get_close_matches(words[-2].lower(), list(FORMATS), n=1) if len(words) >= 2 else []
    hint = f"; did you mean {close[0]!r} for {words[-2]!r}?" if close else ""
    parser.error(f"no export format: after the runs give FORMAT ({names}) and DEST{hint}")
    raise AssertionError  # parser.error exits


def _cmd_export(args: argparse.Namespace) -> int:
    import json

    from databroker_lite.export import export
    runs_given, fmt, dest = _export_positionals(args)
    if args.query and runs_given:
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
        if not runs:
            from databroker_lite.matching import no_match_message
            raise databroker_lite.NoRunsMatch(no_match_message(cat, query))
    elif runs_given:  # digits: a scan_id; -k: the k-th most recent; anything else: a uid or prefix
        runs = [cat[int(r) if r.lstrip("-").isdigit() else r] for r in runs_given]
    else:
        args._parser.error("say which runs: RUN... (scan_id, -k, uid prefix) or --query JSON")
    streams = [x for x in args.streams.split(",") if x] if args.streams else None
    paths = export(runs, fmt, dest, streams=streams)
    for path in paths:
        print(path)
    return 0


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "export", help="write runs as CSV, JSON, SPEC or NeXus files for users",
        usage="%(prog)s [-h] [--query JSON] [--streams A,B] CATALOG [RUN ...] FORMAT DEST",
        description="Write runs as files: CATALOG, then the runs (or --query), then FORMAT "
                    "(csv, json, spec, nexus) and DEST (a directory, or a file for spec, and "
                    "for one run json/nexus). Prints the paths written.")
    s.add_argument("catalog", metavar="CATALOG", help="catalog directory or name")
    s.add_argument("items", nargs="+", metavar="RUN ... FORMAT DEST",
                   help="runs: scan_id (digits), -k (k-th most recent), uid or uid prefix; "
                        "FORMAT: csv, json, spec or nexus; DEST: where to write")
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
    if args.config:
        from databroker_lite.server.auth import load_serve_config
        config = load_serve_config(args.config)
        serve(args.catalogs, config=config, index=args.index, host=args.host, port=args.port)
        return 0
    key = read_api_key(args.api_key_file)
    serve(args.catalogs, api_key=key, index=args.index, host=args.host, port=args.port)
    return 0


def _cmd_passwd(args: argparse.Namespace) -> int:
    try:
        from databroker_lite.server.auth import remove_user, set_password
    except ImportError as exc:
        print(f"databroker-lite passwd: error: needs the server extra: {exc}", file=sys.stderr)
        return 2
    if args.remove:
        remove_user(args.users_file, args.name)
        print(f"removed {args.name} from {args.users_file}: a server using it refuses their "
              "sessions and API keys from now on")
    else:
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        set_password(args.users_file, args.name, password)
        print(f"set the password of {args.name} in {args.users_file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="databroker-lite", description=databroker_lite.__doc__)
    p.add_argument("--version", action="version", version=databroker_lite.__version__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    s = sub.add_parser("reindex", help="rebuild a catalog's index from its run files")
    s.add_argument("path", metavar="CATALOG", help="catalog directory or name")
    s.add_argument("--index", metavar="WHERE", help="the index to fill: 'beside', 'host' or a "
                   "postgresql://user@server/db[?catalog=NAME] URL (default: $DATABROKER_LITE_INDEX, "
                   "else SQLite beside the files, or per host on a network file system)")
    s.set_defaults(func=_cmd_reindex)
    s = sub.add_parser("ls", help="show a catalog: how many runs, the newest")
    s.add_argument("path", metavar="CATALOG", help="catalog directory or name")
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
    s.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    s.add_argument("--index", metavar="WHERE", help="the index to answer from: 'beside', 'host' "
                   "or a postgresql://user@server/db[?catalog=NAME] URL (default: each catalog's "
                   "own: its YAML entry's, $DATABROKER_LITE_INDEX, else SQLite)")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--api-key-file", metavar="FILE",
                     help="file holding the API key clients must send (letters and digits)")
    how.add_argument("--config", metavar="FILE",
                     help="user logins and per-proposal access instead (docs: howto/logins)")
    s.set_defaults(func=_cmd_serve)
    s = sub.add_parser("passwd", help="add a user to a serve users file, or change or remove "
                                      "one (argon2id hashes; needs the server extra)")
    s.add_argument("users_file", help="the users file of the serve config (made if missing)")
    s.add_argument("name", help="the user's login name")
    s.add_argument("--remove", action="store_true", help="remove the user")
    s.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin (no prompt)")
    s.set_defaults(func=_cmd_passwd)
    for sp in sub.choices.values():
        sp.set_defaults(_parser=sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        # a warning is one line for the person at the terminal, not Python's "file:line:
        # Category: message" and the source line under it
        warnings.showwarning = _warning_line(args.command)
        try:
            return args.func(args)
        except DatabrokerLiteError as exc:
            print(f"databroker-lite {args.command}: error: {exc}", file=sys.stderr)
            return 1


def _warning_line(command: str):
    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"databroker-lite {command}: warning: {message}", file=file or sys.stderr)
    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
