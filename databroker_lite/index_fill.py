"""Layer 3: what the index stores for each run file, read in parallel when there are many.

Both index backends refresh from the files the same way (:meth:`databroker_lite.index.Index.refresh`):
each file to (re)index is read into a :class:`Summary`, the run's rows already encoded
for the backend's dialect, and the summaries are written in batches (one
``executemany`` per table and one transaction per batch). For a few thousand files or
more the reading and encoding, most of the cost, is spread over worker processes (one
per core, at most :data:`MAX_WORKERS`): fresh interpreters started with
``sys.executable``, so a user's script is never imported again in them (as
``multiprocessing``'s spawn would) and nothing is forked from a process that may hold
locks in other threads. If the workers cannot start or stop early, the files they did
not answer for are read here: the result is the same, only slower.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from . import documents as _docs
from .dialects import field_rows, pg_json
from .errors import CorruptRunFile
from .query import sql_value
from .storage import RunSummary

PARALLEL_FROM = 3000  # files: below this, starting workers (~0.5 s each) costs more than it saves
MAX_WORKERS = 2
BATCH = 2000  # summaries written per transaction
_CHUNK = 250  # summaries a worker sends at a time

# what makes a file "bad" (recorded in bad_files) rather than the refresh fail
READ_ERRORS = (CorruptRunFile, OSError, KeyError, ValueError, TypeError, OverflowError)


class Summary(NamedTuple):
    """A run file as the index stores it, encoded for one backend.

    ``row``: the values of a ``runs`` row, in column order; ``text``: the words full-text
    search finds it by (SQLite, None elsewhere); ``fields``: its (key, value) rows of the
    ``fields`` table (SQLite, empty elsewhere).
    """

    uid: str
    file: str
    finished: bool  # it has a stop document
    row: tuple
    text: str | None
    fields: list


# --- encoding one run, per backend ------------------------------------------------
def doc_time(doc: Mapping) -> float:
    """A document's ``time`` as the index stores it (0.0 when missing or not a number)."""
    t = doc.get("time", 0.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return 0.0
    t = sql_value(t)
    return t if t == t else 0.0  # NaN: no time


def _words(value: Any, out: list[str], top: bool = False) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not (top and k in ("uid", "run_start")):  # ids are found by look-up, not words
                _words(v, out)
    elif isinstance(value, list):
        for v in value:
            _words(v, out)


def text_of(start: Any, stop: Any) -> str:
    """The words full-text search finds a run by: every string in its start and stop
    documents (given as dicts or as their JSON)."""
    out: list[str] = []
    for doc in (start, stop):
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except ValueError:
                continue
        _words(doc, out, top=True)
    return "\n".join(out)


def pg_text(value: Any) -> Any:
    """Text as PostgreSQL can hold it (no NUL character)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def pg_jsonb(doc: Mapping) -> str:
    """A document as jsonb text (numpy types plain, see :func:`~databroker_lite.dialects.pg_json`)."""
    return json.dumps(pg_json(json.loads(_docs.dumps(doc))))


def encode(kind: str, with_text: bool, start: dict, stop: dict | None, streams: Iterable[str],
           file: str, mtime_ns: int, size: int) -> Summary:
    """The index rows of one run for the ``kind`` of index ('sqlite' or 'postgresql')."""
    scan_id = start.get("scan_id")
    if isinstance(scan_id, bool) or not isinstance(scan_id, (int, float, str)):
        scan_id = None
    else:
        scan_id = sql_value(scan_id)
    plan = start.get("plan_name")
    plan = plan if isinstance(plan, str) else None
    status = None if stop is None else stop.get("exit_status")
    status = status if isinstance(status, str) else None
    uid = start["uid"]
    stop_time = None if stop is None else doc_time(stop)
    streams = json.dumps(list(streams))
    if kind == "sqlite":
        row = (uid, scan_id, doc_time(start), stop_time, status, plan, streams, file, mtime_ns, size,
               _docs.dumps(start), None if stop is None else _docs.dumps(stop))
        fields = [*field_rows("start", start), *field_rows("stop", stop)]
        return Summary(uid, file, stop is not None, row,
                       text_of(start, stop) if with_text else None, fields)
    # PostgreSQL: scan_id is jsonb (as SQLite holds it: a huge int as a float, so look-ups agree)
    row = (uid, None if scan_id is None else json.dumps(pg_json(scan_id)), doc_time(start),
           stop_time, pg_text(status), pg_text(plan), streams, file, mtime_ns, size,
           pg_jsonb(start), None if stop is None else pg_jsonb(stop))
    return Summary(uid, file, stop is not None, row, None, [])


# --- reading files ----------------------------------------------------------------
Outcome = tuple  # ("ok", file, Summary) | ("bad", file, message) | ("error", file, exception)


def summarize(directory: str, kind: str, with_text: bool, file: str, mtime_ns: int,
              size: int) -> Outcome:
    """Read one run file into its :class:`Summary`; a file that does not read is "bad"."""
    try:
        s = RunSummary(os.path.join(directory, file))
        return "ok", file, encode(kind, with_text, s.start, s.stop, s.stream_names, file,
                                  mtime_ns, size)
    except READ_ERRORS as exc:
        return "bad", file, str(exc)
    except Exception as exc:  # noqa: BLE001 - raised again by the process that asked
        return "error", file, exc


def summaries(directory: str, kind: str, with_text: bool,
              todo: list[tuple[str, int, int]], *, workers: int | None = None) -> Iterator[Outcome]:
    """The outcome of every (file, mtime_ns, size) of ``todo``, in no particular order:
    in worker processes for :data:`PARALLEL_FROM` files or more (``workers``: how many;
    default one per core, at most :data:`MAX_WORKERS`), else here."""
    if workers is None:
        workers = min(MAX_WORKERS, os.cpu_count() or 1) if len(todo) >= PARALLEL_FROM else 1
    answered: set[str] = set()
    if workers > 1:
        for outcome in _in_workers(directory, kind, with_text, todo, workers):
            answered.add(outcome[1])
            yield outcome
    for item in todo:  # serial, or what the workers left
        if item[0] not in answered:
            yield summarize(directory, kind, with_text, *item)


def _in_workers(directory: str, kind: str, with_text: bool, todo: list, n: int) -> Iterator[Outcome]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # this very package, whatever the working directory holds (``-c`` puts it first)
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            "from databroker_lite.index_fill import worker; worker()")
    procs: list[subprocess.Popen] = []
    results: queue.Queue = queue.Queue()
    try:
        for i in range(n):
            try:
                proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)
            except OSError:
                break
            procs.append(proc)
            threading.Thread(target=_feed_and_read, daemon=True,
                             args=(proc, (directory, kind, with_text, todo[i::n]), results)).start()
        running = len(procs)
        while running:
            chunk = results.get()
            if chunk is None:
                running -= 1
                continue
            yield from chunk
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):  # a dead worker's pipe
                        pipe.close()


def _feed_and_read(proc: subprocess.Popen, task: tuple, results: queue.Queue) -> None:
    """Hand a worker its task, pass on what it answers; None when it is done (or died)."""
    try:
        pickle.dump(task, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        proc.stdin.close()
        while True:
            chunk = pickle.load(proc.stdout)
            if chunk is None:
                break
            results.put(chunk)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError):
        pass  # it died: the files it did not answer for are read by the caller
    finally:
        results.put(None)


def worker() -> None:
    """A worker process: read (directory, kind, with_text, todo) from stdin, write the
    outcomes to stdout in pickled chunks, then None."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    directory, kind, with_text, todo = pickle.load(stdin)
    chunk: list[Outcome] = []
    for item in todo:
        outcome = summarize(directory, kind, with_text, *item)
        if outcome[0] == "error":
            try:
                pickle.dumps(outcome[2])
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                outcome = ("error", outcome[1], RuntimeError(repr(outcome[2])))
        chunk.append(outcome)
        if len(chunk) >= _CHUNK:
            pickle.dump(chunk, stdout, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.flush()
            chunk = []
    pickle.dump(chunk, stdout, protocol=pickle.HIGHEST_PROTOCOL)
    pickle.dump(None, stdout)
    stdout.flush()


def batches(outcomes: Iterable[Outcome], size: int = BATCH) -> Iterator[list[Outcome]]:
    """``outcomes`` in lists of ``size`` (the last one shorter; at least one list)."""
    batch: list[Outcome] = []
    for outcome in outcomes:
        batch.append(outcome)
        if len(batch) >= size:
            yield batch
            batch = []
    yield batch
