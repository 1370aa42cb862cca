"""Layer 1: validation and normalisation of event-model documents.

Knows nothing of HDF5 or xarray. Start, descriptor, stop, resource, datum and the
stream documents are checked against event-model's JSON schemas. Events and event
pages, the hot path, get an equivalent hand-written check (the schema only asks for
the types below) because jsonschema costs ~150 us per event, which alone would cap
ingest below 10,000 events per second.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np
import orjson

from .errors import InvalidDocument

#: Every document name the writer accepts.
DOCUMENT_NAMES = (
    "start", "descriptor", "event", "event_page", "resource", "datum", "datum_page",
    "stream_resource", "stream_datum", "stop",
)


#: Mimetypes of the specs legacy stream resources name (the ones bluesky's TiledWriter
#: maps to HDF5); any other spec becomes application/octet-stream, as there.
_HDF5_SPECS = frozenset({
    "HDF5", "AD_HDF5", "AD_HDF5_SINGLE", "AD_HDF5_SWMR", "AD_HDF5_SWMR_STREAM",
    "AD_HDF5_SWMR_SLICE", "AD_HDF5_GERM", "ADHDF5_SWMR", "PIL100k_HDF5", "XSP3", "XPS3",
    "XSP3_BULK", "XSP3_STEP", "PANDA", "ROI_HDF5_FLY", "ROI_HDF51_FLY", "SIS_HDF51_FLY_STREAM_V1",
    "MERLIN_FLY_STREAM_V2", "MERLIN_HDF5_BULK", "TPX_HDF5", "EIGER2_STREAM", "NPY_SEQ_HDF5",
    "HDF5_STREAM", "hdf5",
})
_SPEC_MIMETYPES = {"AD_TIFF": "multipart/related;type=image/tiff",
                   "PIZZABOX_ENC_FILE_TXT_PD": "text/csv"}


def stream_resource_mimetype(spec: str) -> str:
    """The mimetype of a legacy stream resource's ``spec``."""
    if spec in _HDF5_SPECS:
        return "application/x-hdf5"
    return _SPEC_MIMETYPES.get(spec, "application/octet-stream")


def normalize(name: str, doc: Any) -> Any:
    """A document in the current event-model schema; other documents are returned as they are.

    Legacy stream_resource documents (``spec``, ``root``, ``resource_path``,
    ``resource_kwargs`` and no ``mimetype``, as ophyd-async before 0.5 wrote them) get
    ``mimetype``, ``uri`` and ``parameters`` the way bluesky's TiledWriter derives them
    (``path`` in the parameters of an HDF5 resource is named ``dataset``). Their legacy
    fields are kept, so nothing the producer sent is lost.
    """
    if name != "stream_resource" or not isinstance(doc, Mapping) or "mimetype" in doc:
        return doc
    if not isinstance(doc.get("spec"), str):
        return doc  # validation will say what is missing
    out = dict(doc)
    out["mimetype"] = stream_resource_mimetype(doc["spec"])
    params = dict(doc.get("resource_kwargs") or {}) if isinstance(doc.get("resource_kwargs", {}), Mapping) else {}
    if isinstance(doc.get("parameters"), Mapping):
        params.update(doc["parameters"])
    if out["mimetype"] == "application/x-hdf5" and "dataset" not in params and "path" in params:
        params["dataset"] = params.pop("path")
    out["parameters"] = params
    if "uri" not in doc:
        root = str(doc.get("root") or "").strip("/")
        rel = str(doc.get("resource_path") or "").strip("/")
        path = "/".join(p for p in (root, rel) if p)
        out["uri"] = "file://localhost/" + path
    out.setdefault("data_key", "")
    return out


def doc_uid(name: str, doc: Mapping) -> str | None:
    """The identifier a document carries, for error messages."""
    if not isinstance(doc, Mapping):
        return None
    if name == "datum":
        return doc.get("datum_id")
    if name in ("event_page", "datum_page"):
        ids = doc.get("uid") or doc.get("datum_id") or []
        return f"{ids[0]}..." if isinstance(ids, list) and ids else None
    return doc.get("uid")


def validate(name: str, doc: Any, run_uid: str | None = None) -> None:
    """Check one document against the event-model schema; raise InvalidDocument."""
    if name not in DOCUMENT_NAMES:
        raise InvalidDocument(f"unknown document name {name!r}; expected one of "
                              f"{', '.join(DOCUMENT_NAMES)}", run_uid=run_uid)
    if not isinstance(doc, Mapping):
        raise InvalidDocument(f"expected a dict, got {type(doc).__name__}",
                              run_uid=run_uid, name=name)
    if name == "event":
        _check_event(doc, run_uid)
    elif name == "event_page":
        _check_event_page(doc, run_uid)
    else:  # event-model's JSON schema, imported on first use (~0.25 s reading never needs)
        from event_model import DocumentNames, schema_validators
        validator = schema_validators[getattr(DocumentNames, name)]
        error = next(iter(validator.iter_errors(_jsonable(doc))), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            msg = error.message if not where else f"at {where!r}: {error.message}"
            raise InvalidDocument(msg, run_uid=run_uid, name=name, doc_uid=doc_uid(name, doc))
        _check_json(name, doc, run_uid)


def _check_json(name: str, doc: Mapping, run_uid: str | None) -> None:
    """Refuse, before anything is written, a document with a value JSON cannot hold."""
    try:
        dumps(doc)
    except (TypeError, ValueError, RecursionError) as exc:
        where = _unjsonable_path(doc)
        at = f" at {'/'.join(where)!r}" if where else ""
        raise InvalidDocument(f"a value{at} cannot be stored: it has no JSON form ({exc}); "
                              "metadata must be JSON (numbers, strings, lists, dicts, numpy "
                              "values)", run_uid=run_uid, name=name,
                              doc_uid=doc_uid(name, doc)) from None


def _unjsonable_path(value: Any, path: tuple = ()) -> list[str] | None:
    """The keys leading to the first value :func:`dumps` refuses, or None."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                return [*path, repr(k)]
            found = _unjsonable_path(v, (*path, str(k)))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _unjsonable_path(v, (*path, str(i)))
            if found is not None:
                return found
        return None
    try:
        dumps(value)
    except (TypeError, ValueError, RecursionError):
        return list(path)
    return None


def _jsonable(doc: Any) -> Any:
    # jsonschema does not know numpy scalars and arrays; show it their JSON form.
    if isinstance(doc, Mapping):
        return {k: _jsonable(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_jsonable(v) for v in doc]
    if isinstance(doc, np.ndarray):
        return doc.tolist()
    if isinstance(doc, np.generic):
        return doc.item()
    return doc


def _fail(msg: str, run_uid: str | None, name: str, doc: Mapping) -> None:
    raise InvalidDocument(msg, run_uid=run_uid, name=name, doc_uid=doc_uid(name, doc))


def _is_number(x: Any) -> bool:
    return type(x) is float or type(x) is int or (isinstance(x, Real) and not isinstance(x, bool))


def _check_event(doc: Mapping, run_uid: str | None) -> None:
    for key in ("uid", "time", "seq_num", "descriptor", "data", "timestamps"):
        if key not in doc:
            _fail(f"{key!r} is a required property", run_uid, "event", doc)
    if not isinstance(doc["uid"], str):
        _fail("'uid' must be a string", run_uid, "event", doc)
    if not isinstance(doc["descriptor"], str):
        _fail("'descriptor' must be a string", run_uid, "event", doc)
    if not _is_number(doc["time"]):
        _fail(f"'time' must be a number, got {doc['time']!r}", run_uid, "event", doc)
    if not isinstance(doc["seq_num"], Integral) or isinstance(doc["seq_num"], bool):
        _fail(f"'seq_num' must be an integer, got {doc['seq_num']!r}", run_uid, "event", doc)
    for key in ("data", "timestamps", "filled"):
        if key in doc and not isinstance(doc[key], Mapping):
            _fail(f"{key!r} must be an object", run_uid, "event", doc)
    for k, v in doc.get("filled", {}).items():
        if not isinstance(v, (bool, np.bool_, str)):
            _fail(f"filled[{k!r}] must be a boolean or a datum id", run_uid, "event", doc)


def _check_event_page(doc: Mapping, run_uid: str | None) -> None:
    for key in ("uid", "time", "seq_num", "descriptor", "data", "timestamps"):
        if key not in doc:
            _fail(f"{key!r} is a required property", run_uid, "event_page", doc)
    n = len(doc["uid"]) if isinstance(doc["uid"], (list, tuple)) else -1
    if n < 0:
        _fail("'uid' must be an array", run_uid, "event_page", doc)
    if not isinstance(doc["descriptor"], str):
        _fail("'descriptor' must be a string (one descriptor for the page)", run_uid, "event_page", doc)
    for key in ("time", "seq_num"):
        if not isinstance(doc[key], (list, tuple, np.ndarray)) or len(doc[key]) != n:
            _fail(f"{key!r} must be an array of length {n} like 'uid'", run_uid, "event_page", doc)
    for key in ("data", "timestamps", "filled"):
        if key not in doc:
            continue
        if not isinstance(doc[key], Mapping):
            _fail(f"{key!r} must be an object", run_uid, "event_page", doc)
        for k, col in doc[key].items():
            if not isinstance(col, (list, tuple, np.ndarray)):
                _fail(f"{key}[{k!r}] must be an array of {n} entries, got {type(col).__name__}",
                      run_uid, "event_page", doc)
            if len(col) != n:
                _fail(f"{key}[{k!r}] has {len(col)} entries, 'uid' has {n}",
                      run_uid, "event_page", doc)


def iter_singles(name: str, doc: Mapping) -> Iterator[tuple[str, dict]]:
    """Turn a page into its single documents; pass other documents through."""
    if name == "event_page":
        from event_model import unpack_event_page
        for ev in unpack_event_page(doc):
            yield "event", ev
    elif name == "datum_page":
        from event_model import unpack_datum_page
        for datum in unpack_datum_page(doc):
            yield "datum", datum
    else:
        yield name, dict(doc)


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        return super().default(o)


def dumps(doc: Any) -> str:
    """Serialise a document to JSON: numpy types become plain JSON; NaN/inf kept."""
    return json.dumps(doc, cls=_Encoder, allow_nan=True, separators=(",", ":"))


# Digits to b"1", every other byte to b"0": 19 ones in a row may be an integer beyond 64
# bits, which orjson would turn into a float (a translate and a find: a fifth of a regex)
_DIGITS = bytes(49 if 48 <= i <= 57 else 48 for i in range(256))
_LONG_NUMBER = b"1" * 19


def loads(text: str | bytes) -> Any:
    """Inverse of :func:`dumps`."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if _LONG_NUMBER not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:  # NaN, Infinity: not JSON, but documents may hold them
            pass
    return json.loads(text)



_FLAT = (int, str, bool, type(None))


def sorted_json(obj: Any) -> str:
    """``json.dumps(obj, sort_keys=True)``, or the same JSON more compactly and ~5x faster
    for a flat dict of integers, text, booleans and None (a datum's kwargs, say)."""
    if type(obj) is dict and all(type(v) in _FLAT for v in obj.values()):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:  # an integer beyond 64 bits, a key that is not text
            pass
    return json.dumps(obj, sort_keys=True)


#: The attribute of a served column whose values are JSON texts, one per event: values
#: a run kept as they came (None, bools in a number column, ragged arrays, dicts). The
#: server writes it (:mod:`databroker_lite.server.adapters`), the client reads it.
JSON_VALUES = "databroker_lite_json_values"


def json_texts(values: np.ndarray) -> np.ndarray:
    """Each value of an object array as its JSON text (a '<U' array of the same shape)."""
    flat = [dumps(v) for v in values.ravel()]
    return np.array(flat, dtype=str).reshape(values.shape) if flat else values.astype("U1")


def from_json_texts(texts: np.ndarray) -> np.ndarray:
    """Inverse of :func:`json_texts`: an object array of the decoded values."""
    texts = np.asarray(texts)
    out = np.empty(texts.shape, dtype=object)
    flat = out.reshape(-1)
    for i, text in enumerate(texts.ravel()):
        flat[i] = loads(str(text))
    return out
