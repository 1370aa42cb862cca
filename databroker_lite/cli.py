"""The ``databroker-lite`` command. It only calls the public Python API."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import databroker_lite
from databroker_lite.errors import DatabrokerLiteError


def _cmd_reindex(args: argparse.Namespace) -> int:
    cat = databroker_lite.open_catalog(args.path)
    counts = cat.reindex()
    print(f"{args.path}: {len(cat)} runs indexed "
          f"({counts['added'] + counts['updated']} read, {counts['bad']} unreadable)")
    for f, err in sorted(cat.bad_files.items()):
        print(f"  unreadable: {f}: {err}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from databroker_lite.demo import run_demo
    run_demo()
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    cat = databroker_lite.open_catalog(args.path, mode="r")
    print(repr(cat))
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
    s = sub.add_parser("demo", help="write a run to a temporary catalog and read it back")
    s.set_defaults(func=_cmd_demo)
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
