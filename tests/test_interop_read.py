"""A databroker-pack 0.3 msgpack pack reads like databroker 1.2.5 read it (expected_reads.json).

tests/data/dbpack03 is a copy of the pack's documents/*.msgpack, external_files/, catalog.yml,
and expected_reads.json (databroker's run.<stream>.read() of each run).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import msgpack
import numpy as np
import pytest
import xarray as xr
import yaml

import databroker_lite

PACK = Path(__file__).parent / "data" / "dbpack03"
EXPECTED = json.loads((PACK / "expected_reads.json").read_text())
CASES = [(uid, stream) for uid, streams in EXPECTED.items() for stream in streams]


def assert_same(actual: xr.Dataset, expected: xr.Dataset) -> None:
    """Identical Datasets, dtypes included (xarray's identical() ignores dtypes)."""
    xr.testing.assert_identical(actual, expected)
    for name, var in expected.variables.items():
        assert actual[name].dtype == var.dtype, (name, actual[name].dtype, var.dtype)


def _root_map() -> dict[str, str]:
    """The pack's own root_map (from catalog.yml), made absolute for where the copy lives."""
    cfg = yaml.safe_load((PACK / "catalog.yml").read_text())
    args = next(iter(cfg["sources"].values()))["args"]
    return {old: str(PACK / new) for old, new in args["root_map"].items()}


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    catalog = databroker_lite.open_catalog(tmp_path_factory.mktemp("interop"), root_map=_root_map())
    for path in sorted((PACK / "documents").glob("*.msgpack")):
        with open(path, "rb") as f:
            for name, doc in msgpack.Unpacker(f, raw=False):
                catalog.insert(name, doc)
    return catalog


def test_pack_root_map_points_at_copied_files():
    (old, new), = _root_map().items()
    assert os.path.isfile(os.path.join(new, "img", "103_primary.h5"))


def test_all_runs_inserted(cat):
    assert sorted(cat) == sorted(EXPECTED)
    for uid, streams in EXPECTED.items():
        assert sorted(cat[uid]) == sorted(streams)


@pytest.mark.parametrize(("uid", "stream"), CASES, ids=[f"{u[:8]}-{s}" for u, s in CASES])
def test_read_matches_databroker(cat, uid, stream):
    exp = EXPECTED[uid][stream]
    ds = cat[uid][stream].read()
    assert set(ds.data_vars) == set(exp["values"])
    np.testing.assert_allclose(ds["time"].values, exp["time"], rtol=0, atol=1e-6)
    for key, values in exp["values"].items():
        var = ds[key]
        assert list(var.shape) == exp["shapes"][key], key
        want = np.dtype(exp["dtypes"][key])
        if want.kind == "U":  # databroker: '<U4'; ours: '<U' wide enough for the values
            assert var.dtype.kind == "U", key
            assert var.values.tolist() == values, key
        else:
            assert var.dtype == want, key
            np.testing.assert_array_equal(var.values, np.asarray(values, dtype=want), err_msg=key)
        dims = exp["dims"][key]
        if len(dims) == 1:
            assert var.dims == tuple(dims), key
        else:  # by design: databroker says dim_0..; we say <key>_dim_0..
            assert var.dims == ("time", *(f"{key}_dim_{i}" for i in range(len(dims) - 1))), key


@pytest.mark.parametrize(("uid", "stream"), CASES, ids=[f"{u[:8]}-{s}" for u, s in CASES])
def test_to_dask_matches_read(cat, uid, stream):
    s = cat[uid][stream]
    assert_same(s.to_dask().compute(), s.read())


def test_images_from_external_files(cat):
    uid = "5f456f88-cd0b-4005-be76-7a552336f73b"
    exp = EXPECTED[uid]["primary"]["values"]["img_image"]
    lazy = cat[uid].primary.to_dask()
    assert lazy["img_image"].shape == (8, 1, 16, 16)
    np.testing.assert_array_equal(lazy["img_image"][5].values, np.asarray(exp[5], dtype="u2"))
    dark = cat[uid].dark.read()["img_image"].values
    np.testing.assert_array_equal(dark, np.asarray(EXPECTED[uid]["dark"]["values"]["img_image"], "u2"))


def test_without_root_map_the_missing_file_is_named(cat):
    plain = databroker_lite.open_catalog(cat.directory)
    uid = "5f456f88-cd0b-4005-be76-7a552336f73b"
    with pytest.raises(databroker_lite.MissingExternalFile, match="103_primary.h5"):
        plain[uid].primary.read()
    np.testing.assert_array_equal(plain[uid].primary.read(["img_total"])["img_total"].values,
                                  EXPECTED[uid]["primary"]["values"]["img_total"])
