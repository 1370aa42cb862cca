"""A throwaway PostgreSQL server in a temporary directory (for tests, benchmarks, demos).

Needs the server binaries (``initdb``, ``pg_ctl``: on Debian/Ubuntu the ``postgresql-15``
package puts them in ``/usr/lib/postgresql/15/bin``). The server listens only on a
unix socket inside its directory, so several can run at once without a free port.
PostgreSQL refuses to run as root: as root, the server runs as the ``postgres`` user.

>>> with TempPostgres() as pg:              # doctest: +SKIP
...     cat = open_catalog("/data/45id", index=pg.url)
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from typing import Any


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (or the server would not start)."""


def find_bin_dir() -> str | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH first, then the usual places)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return os.path.dirname(on_path)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
                        + glob.glob("/opt/homebrew/opt/postgresql*/bin"),
                        key=lambda p: [int(x) for x in p.split("/") if x.isdigit()] or [0])
    for d in reversed(candidates):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return d
    return None


class TempPostgres:
    """Start a PostgreSQL server in a new temporary directory; ``stop()`` removes it all."""

    def __init__(self, bin_dir: str | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        if self.bin_dir is None:
            raise PostgresUnavailable("the PostgreSQL server binaries (initdb, pg_ctl) are not "
                                      "installed: install postgresql (e.g. apt-get install "
                                      "postgresql-15) or put its bin directory on PATH")
        self.dir: str | None = None
        self.url = ""

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            kwargs.update(user="postgres", group="postgres")
        cmd = [os.path.join(self.bin_dir, args[0]), *args[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
        if proc.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}): "
                                      f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def start(self) -> str:
        """Initialise and start the server; returns its URL (also ``self.url``)."""
        self.dir = tempfile.mkdtemp(prefix="dbl-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = os.path.join(self.dir, "data")
        self._run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C.UTF-8" if "C.utf8" in _locales() else "--no-locale")
        opts = (f"-k {self.dir} -c listen_addresses='' -c fsync=off -c full_page_writes=off "
                "-c synchronous_commit=off -c max_connections=200")
        try:
            self._run("pg_ctl", "-D", data, "-l", os.path.join(self.dir, "log"), "-o", opts,
                      "-w", "-t", "60", "start")
        except PostgresUnavailable:
            self.stop()
            raise
        self.url = f"postgresql://postgres@/postgres?host={self.dir}"
        return self.url

    def log(self) -> str:
        """The server's log so far."""
        try:
            with open(os.path.join(self.dir or "", "log"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.dir is None:
            return
        data = os.path.join(self.dir, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            try:
                self._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> TempPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _locales() -> str:
    try:
        return subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
