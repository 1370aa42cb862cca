"""SPEC export: runs as scans of a standard SPEC data file (``#F #E #D #O #S #P #N #L``)."""
from __future__ import annotations

import getpass
import math
import os
import re
import time
from typing import Any

import numpy as np

from ._common import ExportWriter

_PER_LINE = 8  # positioner names/values per #O/#P line, as SPEC writes them


def _ctime(t: float | None) -> str:
    return time.ctime(t if t is not None else time.time())


def _numeric_scalar(dk: dict) -> bool:
    return (dk.get("dtype") in ("number", "integer", "boolean") and not dk.get("shape")
            and not dk.get("external"))


def _numeric_values(values: Any) -> bool:
    """Whether a page's values of a key are one number per event, whatever the descriptor
    says (an ophyd-async ``[1]`` reads as scalars; an EnumSignal's "integer" carries text)."""
    try:
        arr = np.asarray(values)
    except ValueError:  # rows of different lengths
        return False
    if arr.ndim != 1:
        return False
    if arr.dtype.kind == "O":
        return all(isinstance(x, (int, float, np.number, np.bool_)) for x in arr)
    return arr.dtype.kind in "iufb"


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "nan"
    return repr(f) if math.isfinite(f) else ("nan" if f != f else ("inf" if f > 0 else "-inf"))


def _short(v: Any) -> str | None:
    if isinstance(v, str):
        # a device's repr in plan_args: ophyd's ``SynAxis(prefix='', name='motor', ...)``
        # or ophyd-async's ``SimMotor(name="stage-x")``
        m = re.search(r"""\bname=(['"])(.+?)\1""", v)
        if m:
            return m.group(2)
        return None if v == "None" or len(v) > 30 or " " in v else v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return None


def plan_description(start: dict) -> str:
    """The plan the way SPEC shows a scan command: ``scan motor -1 1 5``."""
    words = [str(start.get("plan_name", "unknown"))]
    args = start.get("plan_args") or {}
    for k, v in sorted(args.items(), key=lambda kv: kv[0] != "args"):  # motors and ranges first
        if k in ("detectors", "per_step", "md"):
            continue
        for x in (v if isinstance(v, list) else [v]):
            w = _short(x)
            if w is not None:
                words.append(w)
    return " ".join(words)


class SpecWriter(ExportWriter):
    """Append each run to the SPEC data file ``path`` as a new scan.

    The scan is ``#S <scan_id> <plan description>``; its ``#P`` positioner values are the
    first reading of the ``baseline`` stream (names in the file header's ``#O`` lines,
    a new header block being written when they change); its columns (``#L``) are the keys of
    the ``primary`` stream whose values (in the first event page) are one number per event: the scanned motors first (plan hints, then
    ``start["motors"]``), ``Epoch`` (seconds since the header's ``#E``, as SPEC counts
    it: ``#E`` is the start of the header's first run, so ``#E + Epoch`` is the event
    time; an older run gets a new header block), the other keys, and the
    hinted detectors last. Rows are flushed as events arrive. Other streams, columns that are
    not numeric scalars (and, live, those an ophyd-async detector writes to its own files,
    which no event carries), and how the run ended are stated in ``#C`` lines; an aborted run
    ends with ``#C ... Scan aborted after N points``. A primary descriptor that brings new
    columns mid-run continues the run as a new scan with the same number.
    """

    def __init__(self, path: str | os.PathLike, stream: str = "primary") -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.stream = stream
        self._header_names: list[str] | None = None
        self._epoch = 0  # the #E of the header block being written to
        self._reset()

    def _reset(self) -> None:
        self._baseline: dict[str, Any] | None = None
        self._columns: list[str] | None = None
        self._npts = 0
        self._others: dict[str, int] = {}

    def _write(self, lines: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self._wrote(self.path)

    def start(self, doc: dict) -> dict:
        super().start(doc)
        self._reset()
        return doc

    def _primary_keys(self) -> dict[str, dict]:
        keys: dict[str, dict] = {}
        for d in self._descriptors.values():
            if d.get("name") == self.stream:
                for k, v in d["data_keys"].items():
                    keys.setdefault(k, v)
        return keys

    def _choose_columns(self, data: dict) -> tuple[list[str], list[str]]:
        """``#L``'s columns and the keys left out; a key is a column if its values in the
        first page (``data``) are numbers, one per event (by its descriptor if absent)."""
        start = self._start or {}
        keys = self._primary_keys()
        numeric = [k for k, v in keys.items()
                   if (_numeric_values(data[k]) if k in data else _numeric_scalar(v))]
        motors: list[str] = []
        for fields, stream in (start.get("hints") or {}).get("dimensions", []) or []:
            if stream == self.stream:
                motors += [f for f in fields if f in numeric]
        motors += [m for m in start.get("motors", []) or [] if m in numeric]
        motors = list(dict.fromkeys(motors))
        hinted = [f for d in self._descriptors.values() if d.get("name") == self.stream
                  for h in (d.get("hints") or {}).values() for f in h.get("fields", [])
                  if f in numeric and f not in motors]
        hinted = list(dict.fromkeys(hinted))
        rest = [k for k in numeric if k not in motors and k not in hinted]
        skipped = [k for k in keys if k not in numeric]
        return [*motors, "Epoch", *rest, *hinted], skipped

    def _file_header(self, names: list[str]) -> list[str]:
        """A header block whose ``#E`` is the (whole second of the) run's start, so that
        ``#E + Epoch`` is an event's time and no scan is older than its header."""
        start = self._start or {}
        self._epoch = int(math.floor(start.get("time") or time.time()))
        lines = [] if not os.path.exists(self.path) or not os.path.getsize(self.path) else [""]
        user = start.get("owner") or _user()
        lines += [f"#F {os.path.basename(self.path)}", f"#E {self._epoch}",
                  f"#D {_ctime(self._epoch)}",
                  f"#C databroker_lite SPEC file  User = {user}"]
        for i in range(0, len(names), _PER_LINE):
            lines.append(f"#O{i // _PER_LINE} " + "  ".join(names[i:i + _PER_LINE]))
        return lines

    def _scan_header(self, data: dict) -> None:
        start = self._start or {}
        base = self._baseline or {}
        names = sorted(base)  # descriptor key order is not stable across runs
        lines: list[str] = []
        t = start.get("time")
        if names != self._header_names or (t is not None and t < self._epoch):
            lines += self._file_header(names)
            self._header_names = names
        self._columns, skipped = self._choose_columns(data)
        lines += ["", f"#S {start.get('scan_id', 0)} {plan_description(start)}",
                  f"#D {_ctime(start.get('time'))}",
                  f"#C uid = {start.get('uid')}"]
        values = [_fmt(base[n]) for n in names]
        for i in range(0, len(values), _PER_LINE):
            lines.append(f"#P{i // _PER_LINE} " + " ".join(values[i:i + _PER_LINE]))
        keys = self._primary_keys()
        elsewhere = [k for k in skipped if k not in data and keys[k].get("external") == "STREAM:"]
        skipped = [k for k in skipped if k not in elsewhere]
        if skipped:
            lines.append("#C columns not in #L (not numeric scalars): " + ", ".join(skipped))
        if elsewhere:  # live, an ophyd-async detector's data is in its own files, not the events
            lines.append("#C columns not in #L (in the detectors' own files, not in the events; "
                         "export the stored run to get them): " + ", ".join(elsewhere))
        lines += [f"#N {len(self._columns)}", "#L " + "  ".join(self._columns)]
        self._write(lines)

    def descriptor(self, doc: dict) -> dict:
        new = (doc.get("name") == self.stream and self._columns is not None
               and any(_numeric_scalar(v) and k not in self._columns
                       for k, v in doc["data_keys"].items()))
        super().descriptor(doc)
        if new and doc["uid"] in self._descriptors:
            self._write([f"#C {_ctime(doc.get('time'))}  a new {self.stream} descriptor brings "
                         "new columns: the run continues as the next scan"])
            self._columns = None
        return doc

    def rows(self, descriptor: dict, page: dict) -> None:
        name = descriptor.get("name")
        if name == "baseline" and self.stream != "baseline":
            if self._baseline is None:
                self._baseline = {k: page["data"][k][0] for k in descriptor["data_keys"]
                                  if k in page["data"] and _numeric_values(page["data"][k])}
            return
        if name != self.stream:
            self._others[name] = self._others.get(name, 0) + len(page["time"])
            return
        if self._columns is None:
            self._scan_header(page["data"])
        t0 = self._epoch
        cols = []
        for c in self._columns or []:
            if c == "Epoch":
                cols.append([_fmt(t - t0) for t in page["time"]])
            elif c in page["data"]:
                cols.append([_fmt(v) for v in page["data"][c]])
            else:
                cols.append(["nan"] * len(page["time"]))
        self._write([" ".join(r) for r in zip(*cols)])
        self._npts += len(page["time"])

    def _end(self, stop: dict | None) -> None:
        if self._start is None:
            return
        if self._columns is None and self._npts == 0:
            self._scan_header({})
        lines = [f"#C stream {n!r} ({k} events) is not in this scan; export the run as CSV, "
                 "JSON or NeXus to get it" for n, k in self._others.items()]
        if stop is None:
            lines.append(f"#C {_ctime(None)}  the run has no stop document (incomplete)")
        else:
            status = stop.get("exit_status", "?")
            lines.append(f"#C {_ctime(stop.get('time'))}  exit_status = {status}")
            if status != "success":
                reason = stop.get("reason") or ""
                lines.append(f"#C Scan aborted after {self._npts} points ({status})"
                             + (f": {reason}" if reason else ""))
        self._write(lines)
        self._start = None



def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"
