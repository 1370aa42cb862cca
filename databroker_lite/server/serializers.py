"""The formats the server writes: tiled's own serializers, an HDF5 writer that takes what
Bluesky runs hold (text columns, nested metadata), and a 406 in place of a 500 for data a
format cannot hold."""
from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

HDF5 = "application/x-hdf5"


def serialization_registry() -> Any:
    """A copy of tiled's serialization registry with our HDF5 and HTML writers, every
    writer refusing (406) what it cannot write instead of failing the request (500)."""
    from tiled.media_type_registration import default_serialization_registry
    from tiled.serialization import register_builtin_serializers
    from tiled.structures.core import StructureFamily

    register_builtin_serializers()
    registry = copy.deepcopy(default_serialization_registry)
    registry.register(StructureFamily.container, HDF5, _container_hdf5)
    registry.register("xarray_dataset", HDF5, _dataset_hdf5)
    registry.register(StructureFamily.array, "text/html", _array_html)
    registry.register(StructureFamily.array, _CSV_TYPES, _array_csv)
    _register_dataset_tables(registry)
    for family in list(registry.structure_families):
        for media_type, func in list(registry.media_types(family).items()):
            registry.register(family, media_type, _refusing(str(family), media_type, func))
    return registry


def _refusing(family: str, media_type: str, func: Callable) -> Callable:
    """``func``, raising tiled's SerializationError (a 406 naming the format) for any
    failure other than the ones tiled already turns into a 406."""
    from tiled.utils import SerializationError, UnsupportedShape, ensure_awaitable

    async def serialize(*args: Any) -> Any:
        try:
            return await ensure_awaitable(func, *args)
        except (SerializationError, UnsupportedShape):
            raise
        except Exception as exc:
            name = getattr(family, "value", family)
            raise SerializationError(
                f"this {name} cannot be written as {media_type} "
                f"({type(exc).__name__}: {exc}); ask for another format") from exc

    serialize.__wrapped__ = func
    return serialize


_CSV_TYPES = ["text/csv", "text/x-comma-separated-values", "text/plain",
              "application/vnd.ms-excel"]
_TABLE_TYPES = ["text/csv", "text/comma-separated-values", "text/plain", "text/html",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"]


def _array_csv(mimetype: str, array: Any, metadata: dict) -> bytes:
    """An array as CSV; text quoted as CSV quotes it (tiled's ``savetxt`` writes a comma
    or a newline inside a value as it is, which makes more cells and rows)."""
    import csv

    from tiled.serialization.array import serialize_csv
    from tiled.utils import UnsupportedShape
    arr = np.asarray(array)
    if arr.dtype.kind not in "OUS":
        return serialize_csv(mimetype, arr, metadata)
    if arr.ndim > 2:
        raise UnsupportedShape(arr.shape)
    rows = np.atleast_1d(arr)
    rows = rows.reshape(len(rows), -1)  # one value a row, or a 2-D array's rows
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[str(v) for v in row] for row in rows])
    return buffer.getvalue().encode()


def _array_html(mimetype: str, array: Any, metadata: dict) -> str:
    """An array as an HTML page of its CSV (tiled 0.2's own calls the CSV writer wrongly)."""
    import html

    csv = _array_csv("text/csv", array, metadata)
    return f"<html><body><pre>{html.escape(bytes(csv).decode())}</pre></body></html>"


def _register_dataset_tables(registry: Any) -> None:
    """A stream as a table (CSV, HTML, Excel, JSON) keeps its ``time`` column: tiled's
    writers drop the DataFrame's index, which is where ``time`` is."""
    from tiled.serialization import table

    writers = {"text/html": table.serialize_html}
    if hasattr(table, "serialize_excel"):
        writers[_TABLE_TYPES[-1]] = table.serialize_excel

    async def dataset_table(media: str, node: Any, metadata: dict, filter_for_access: Any) -> Any:
        from tiled.serialization.xarray import as_dataset
        df = (await as_dataset(node)).to_dataframe()
        write = writers.get(media.split(";")[0], table.serialize_csv)
        return write(media, df, metadata, preserve_index=True)

    async def dataset_json(media: str, node: Any, metadata: dict, filter_for_access: Any) -> Any:
        import orjson
        from tiled.serialization.xarray import as_dataset
        df = (await as_dataset(node)).to_dataframe().reset_index()
        return orjson.dumps({c: df[c].tolist() for c in df}, option=orjson.OPT_SERIALIZE_NUMPY)

    for media in _TABLE_TYPES:  # Excel only where pandas can write it
        if media.startswith("text/") or media in writers:
            registry.register("xarray_dataset", media, dataset_table)
    registry.register("xarray_dataset", "application/json", dataset_json)


def _h5_data(data: Any) -> tuple[np.ndarray, Any]:
    """The array to store and its HDF5 dtype: text as variable-length UTF-8 strings, other
    Python objects (JSON columns) as their JSON text."""
    import h5py

    arr = np.asarray(data)
    if arr.dtype.kind == "U":
        return arr.astype(object), h5py.string_dtype()
    if arr.dtype.kind == "O":
        flat = [v if isinstance(v, str) else json.dumps(v, default=str) for v in arr.ravel()]
        return np.array(flat, dtype=object).reshape(arr.shape), h5py.string_dtype()
    return arr, None


def _set_attrs(attrs: Any, metadata: dict) -> None:
    """Metadata as HDF5 attributes; what HDF5 cannot hold (mappings, None, mixed lists)
    is kept as its JSON text."""
    for key, value in metadata.items():
        try:
            attrs[key] = value
        except (TypeError, ValueError):
            attrs[key] = json.dumps(value, default=str)


async def _write_hdf5(node: Any, metadata: dict, filter_for_access: Any,
                      attrs_of: Callable) -> memoryview:
    import h5py
    from tiled.serialization.container import walk
    from tiled.utils import BrokenLink, ensure_awaitable

    buffer = io.BytesIO()
    with h5py.File(buffer, mode="w") as file:
        _set_attrs(file.attrs, attrs_of(metadata))
        async for key_path, array_adapter in walk(node, filter_for_access):
            group, parent = file, node
            for key in key_path[:-1]:
                try:
                    parent = (await parent.lookup_adapter([key])
                              if hasattr(parent, "lookup_adapter") else parent[key])
                except BrokenLink:
                    continue
                if key in group:
                    group = group[key]
                else:
                    group = group.create_group(key)
                    _set_attrs(group.attrs, attrs_of(parent.metadata()))
            data, dtype = _h5_data(await ensure_awaitable(array_adapter.read))
            dataset = group.create_dataset(key_path[-1], data=data, dtype=dtype)
            _set_attrs(dataset.attrs, attrs_of(array_adapter.metadata()))
    return buffer.getbuffer()


async def _container_hdf5(mimetype: str, node: Any, metadata: dict,
                          filter_for_access: Any) -> memoryview:
    """A run, stream or catalog node and everything below it as one HDF5 file."""
    return await _write_hdf5(node, metadata, filter_for_access, dict)


async def _dataset_hdf5(mimetype: str, node: Any, metadata: dict,
                        filter_for_access: Any) -> memoryview:
    """An xarray_dataset node as HDF5, its ``attrs`` as attributes."""
    return await _write_hdf5(node, metadata, filter_for_access, lambda md: dict(md.get("attrs", {})))
