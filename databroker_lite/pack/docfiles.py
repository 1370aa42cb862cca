"""Reading document files (suitcase-msgpack, suitcase-jsonl, databroker-pack) safely.

suitcase-msgpack encodes numpy values the msgpack-numpy way: an array is a map
``{b"nd": True, b"type": "<f8", b"kind": b"", b"shape": [..], b"data": <raw bytes>}``,
a numpy scalar ``{b"nd": False, b"type", b"data"}``, a complex ``{b"complex": True,
b"data": "(1+2j)"}``. Plain numeric, boolean and string dtypes are decoded from the
raw bytes. Object (pickled) and structured arrays are refused: nothing is ever unpickled.
Every problem is a :class:`PackError` naming the file, the item and what is wrong.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np

from .errors import PackError

_KINDS = "biufcSU"  # bool, int, uint, float, complex, bytes-string, unicode-string
MAX_DEPTH = 200  # deeper than any real document; stops RecursionError further down


class _Bad(ValueError):
    """A value in a document that cannot be imported (turned into PackError with the place)."""


def _decode_numpy(obj: dict) -> Any:
    if b"nd" in obj:
        descr, data = obj.get(b"type"), obj.get(b"data")
        if obj.get(b"kind") in (b"O", "O"):
            raise _Bad("an object array (msgpack-numpy pickles those); refused: no pickle, ever")
        if not isinstance(descr, str) or not isinstance(data, bytes):
            raise _Bad(f"a numpy value of dtype {descr!r} (only plain numeric and string dtypes "
                       "are read)")
        try:
            dtype = np.dtype(descr)
        except TypeError as exc:
            raise _Bad(f"numpy dtype {descr!r} is not understood ({exc})") from None
        if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise _Bad(f"a numpy value of dtype {descr!r} (only plain numeric and string dtypes "
                       "are read)")
        if obj[b"nd"] is True:
            shape = obj.get(b"shape")
            if not (isinstance(shape, (list, tuple)) and all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
                raise _Bad(f"array shape {shape!r} is not a list of sizes")
            if math.prod(shape) * dtype.itemsize != len(data):
                raise _Bad(f"array of shape {list(shape)} and dtype {descr} needs "
                           f"{math.prod(shape) * dtype.itemsize} bytes, it has {len(data)}")
            return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        if len(data) != dtype.itemsize:
            raise _Bad(f"numpy scalar of dtype {descr} needs {dtype.itemsize} bytes, it has {len(data)}")
        return np.frombuffer(data, dtype=dtype)[0].item()
    if obj.get(b"complex") is True and isinstance(obj.get(b"data"), (str, bytes)):
        text = obj[b"data"].decode() if isinstance(obj[b"data"], bytes) else obj[b"data"]
        try:
            return complex(text)
        except ValueError:
            raise _Bad(f"complex number {text!r} is not understood") from None
    return obj


def _check(value: Any, depth: int = 0) -> None:
    """Refuse what no JSON document can hold: bytes, extension types, non-string keys."""
    if depth > MAX_DEPTH:
        raise _Bad(f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Bad(f"key {k!r} is not a string")
            _check(v, depth + 1)
    elif isinstance(value, msgpack.ExtType):  # a namedtuple: before the tuple test
        raise _Bad(f"it holds a msgpack extension value (type {value.code}), which this cannot read")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check(v, depth + 1)
    elif isinstance(value, (bytes, bytearray)):
        raise _Bad(f"it holds raw bytes ({bytes(value[:16])!r}...), which no document field can be")
    elif not (value is None or isinstance(value, (str, int, float, complex, np.ndarray))):
        raise _Bad(f"it holds a {type(value).__name__}")


def _pair(item: Any, where: str) -> tuple[str, dict]:
    if not (isinstance(item, (list, tuple)) and len(item) == 2
            and isinstance(item[0], str) and isinstance(item[1], dict)):
        raise PackError(f"{where}: not a [name, document] pair")
    try:
        _check(item[1])
    except _Bad as exc:
        raise PackError(f"{where}: {item[0]} document: {exc}") from None
    return item[0], item[1]


def _hook(obj: dict) -> Any:
    try:
        return _decode_numpy(obj)
    except _Bad as exc:
        raise PackError(str(exc)) from None


def iter_document_file(path: str) -> Iterator[tuple[str, dict]]:
    """(name, document) pairs of a .msgpack or .jsonl file, or PackError naming the file."""
    if path.endswith(".msgpack"):
        with open(path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False, object_hook=_hook,
                                        max_buffer_size=2**31 - 1)
            n = 0
            try:
                for n, item in enumerate(unpacker, 1):
                    yield _pair(item, f"{path}, item {n}")
            except PackError as exc:
                if str(exc).startswith(path):
                    raise
                raise PackError(f"{path}, item {n + 1}: {exc}") from None
            except (ValueError, msgpack.UnpackException, RecursionError) as exc:
                raise PackError(f"{path}: not a msgpack document stream "
                                f"({type(exc).__name__}: {exc})") from None
            size = os.fstat(f.fileno()).st_size
            if unpacker.tell() != size:
                raise PackError(f"{path}: cut short after {unpacker.tell()} bytes (the file has "
                                f"{size}): its last document is incomplete")
    elif path.endswith(".jsonl"):
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PackError(f"{path}, line {n}: not UTF-8 text ({exc})") from None
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except RecursionError:
                    raise PackError(f"{path}, line {n}: nested too deeply to be a document") from None
                except ValueError as exc:
                    raise PackError(f"{path}, line {n}: not a [name, document] JSON line ({exc})") from None
                yield _pair(item, f"{path}, line {n}")
    else:
        raise PackError(f"{path}: expected a .msgpack or .jsonl document file")


def split_runs(path: str, docs: list[tuple[str, dict]]) -> list[tuple[str, list[tuple[str, dict]]]]:
    """The runs of a document file, ``[(uid, documents)]``, split at each start document."""
    runs: list[tuple[str, list]] = []
    for name, doc in docs:
        if name == "start":
            uid = doc.get("uid")
            if not isinstance(uid, str) or not uid:
                raise PackError(f"{path}: start document #{len(runs) + 1} has no uid "
                                f"(uid is {uid!r}); nothing of this file was imported")
            runs.append((uid, []))
        elif not runs:
            raise PackError(f"{path}: a {name} document comes before any start document")
        runs[-1][1].append((name, doc))
    if not runs:
        raise PackError(f"{path}: no start document")
    return runs
