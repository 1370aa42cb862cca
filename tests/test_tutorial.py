"""Seed 002 (databroker's "Get Data from a Run" tutorial), line by line, on databroker_lite.

The RSOXS images are made small (DATABROKER_LITE_TUTORIAL_SMALL=1) to keep the suite fast;
frame counts, dtypes, streams and uids are those of the full-size catalog.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import databroker_lite
import databroker_lite.tutorial_utils
from databroker_lite import tutorial_utils


def _env(mp: pytest.MonkeyPatch, root: Path) -> None:
    mp.setenv("DATABROKER_LITE_CATALOG_PATH", str(root / "catalogs"))
    mp.setenv("DATABROKER_LITE_DATA_DIR", str(root / "data"))
    mp.setenv("DATABROKER_LITE_TUTORIAL_SMALL", "1")


@pytest.fixture(scope="module")
def tutorial_env(tmp_path_factory: pytest.TempPathFactory):
    """Catalog configs and tutorial data in a temporary directory, shared by this module."""
    root = tmp_path_factory.mktemp("tutorial")
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, root)
        yield root


@pytest.fixture
def fresh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _env(monkeypatch, tmp_path)
    return tmp_path


def test_seed_002_bmm(tutorial_env: Path) -> None:
    # Set up for Tutorial
    databroker_lite.tutorial_utils.fetch_BMM_example(progress=False)
    catalog = databroker_lite.catalog["bluesky-tutorial-BMM"]
    run = catalog[23463]
    assert "bluesky-tutorial-BMM" in list(databroker_lite.catalog)
    assert catalog.directory == str(tutorial_env / "data" / "bluesky-tutorial-BMM")
    assert len(catalog) >= 4
    assert len({r.metadata["start"]["scan_id"] for r in catalog.values()}) == len(catalog)

    # What's in the Run?
    text = repr(run)
    assert text.startswith("BlueskyRun")
    assert "exit_status='success'" in text and "* baseline" in text and "* primary" in text
    assert run.metadata["start"]["scan_id"] == 23463
    assert "scan" in run.metadata["start"]["plan_name"]
    assert list(run) == ["baseline", "primary"]

    # Get the data
    ds = run.primary.read()
    assert isinstance(ds, xr.Dataset)
    for key in ("dcm_energy", "I0", "It", "Ir", "If"):
        assert ds[key].dtype == np.float64 and ds[key].dims == ("time",)
    assert ds.sizes["time"] > 200
    assert ds["I0"].head().shape == (5,)
    normed = ds["I0"] / ds["It"]
    assert normed.head().shape == (5,)
    assert type(ds["I0"]) is xr.DataArray
    assert type(ds["I0"].data) is np.ndarray

    # the physics: an absorption edge at the Cu K edge (8979 eV)
    energy = ds["dcm_energy"].values
    mu = np.log(ds["I0"].values / ds["It"].values)
    assert energy.min() < 8800 and energy.max() > 9400
    assert mu[energy > 9000].mean() > mu[energy < 8950].mean() + 0.5
    jump = np.argmax(np.diff(mu))
    assert 8970 < energy[jump] < 8990
    pre = (energy > 8800) & (energy < 8950)
    slope = np.polyfit(energy[pre], mu[pre], 1)[0]
    assert slope < 0  # the pre-edge falls with energy, as absorption does
    post = energy > 9050
    wiggle = mu[post] - np.polyval(np.polyfit(energy[post], mu[post], 2), energy[post])
    assert wiggle.std() > 0.005  # EXAFS oscillations, not a flat line
    baseline = run.baseline.read()
    assert baseline.sizes["time"] == 2


def test_seed_002_rsoxs(tutorial_env: Path) -> None:
    # Handle large data
    databroker_lite.tutorial_utils.fetch_RSOXS_example(progress=False)
    run = databroker_lite.catalog["bluesky-tutorial-RSOXS"]["777b44a"]
    assert run.uid.startswith("777b44a")
    assert len(databroker_lite.catalog["bluesky-tutorial-RSOXS"]) == 1
    assert {"primary", "dark"} <= set(run)

    lazy_ds = run.primary.to_dask()
    ds = run.primary.read()
    assert isinstance(ds["Synced_saxs_image"].data, np.ndarray)
    assert isinstance(lazy_ds["Synced_saxs_image"].data, da.Array)
    n, one, h, w = lazy_ds["Synced_saxs_image"].shape
    assert n >= 110 and one == 1
    assert lazy_ds["Synced_saxs_image"].dtype == np.uint16
    assert "en_energy" in lazy_ds and lazy_ds["en_energy"].dims == ("time",)
    xr.testing.assert_equal(lazy_ds.compute(), ds)

    corrected = (run.primary.to_dask()["Synced_saxs_image"]
                 - run.dark.to_dask()["Synced_saxs_image"].mean("time"))
    assert isinstance(corrected.data, da.Array)
    frame = corrected[100, 0, :, :].compute()
    assert frame.shape == (h, w)
    dark = run.dark.read()["Synced_saxs_image"].values.astype(float).mean(axis=0)
    expected = ds["Synced_saxs_image"].values[100, 0].astype(float) - dark[0]
    np.testing.assert_allclose(frame.values, expected)
    assert frame.values.max() > 50  # scattered light above the dark level


def test_full_size_is_large_enough() -> None:
    params = tutorial_utils._parameters()["RSOXS"]
    h, w = params["shape"]
    nbytes = params["n_frames"] * h * w * 2
    assert params["n_frames"] >= 110
    assert nbytes > 200e6  # "large enough that lazy reading matters"
    assert params["uid"].startswith("777b44a")


def test_to_dask_reads_no_bulk_data(tutorial_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import h5py
    databroker_lite.tutorial_utils.fetch_RSOXS_example(progress=False)
    run = databroker_lite.catalog["bluesky-tutorial-RSOXS"]["777b44a"]
    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        if self.name.endswith("Synced_saxs_image"):
            reads.append(key)
        return original(self, key)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    lazy = run.primary.to_dask()["Synced_saxs_image"]
    assert reads == []
    lazy[100].compute()
    assert 0 < len(reads) <= 2


def test_fetch_is_idempotent(tutorial_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = databroker_lite.tutorial_utils.fetch_BMM_example(progress=False)
    files = sorted(Path(first.directory).glob("*.h5"))
    stamps = [f.stat().st_mtime_ns for f in files]
    config = tutorial_env / "catalogs" / "bluesky-tutorial-BMM.yml"
    config_stamp = config.stat().st_mtime_ns
    from databroker_lite import tutorial_utils

    def no_second_generation(*args, **kwargs):
        raise AssertionError("the second fetch generated the runs again")
    monkeypatch.setattr(tutorial_utils, "_make_bmm", no_second_generation)
    second = databroker_lite.tutorial_utils.fetch_BMM_example(progress=False)
    assert second.directory == first.directory
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert config.stat().st_mtime_ns == config_stamp
    assert list(databroker_lite.catalog).count("bluesky-tutorial-BMM") == 1


def test_half_made_catalog_is_regenerated(fresh_env: Path) -> None:
    cat = tutorial_utils.fetch_BMM_example(progress=False)
    directory = Path(cat.directory)
    n_runs = len(cat)
    victim = sorted(directory.glob("*.h5"))[0]
    victim.write_bytes(victim.read_bytes()[:1000])          # a run file cut short
    (directory / tutorial_utils._MARKER).unlink()             # and no completion marker
    partial = directory.parent / ".bluesky-tutorial-BMM.partial-99999"
    partial.mkdir()                                           # debris of an interrupted call
    (partial / "junk.h5").write_bytes(b"not hdf5")
    cat = tutorial_utils.fetch_BMM_example(progress=False)
    assert len(cat) == n_runs and cat.bad_files == {}
    assert cat[23463].primary.read().sizes["time"] > 200
    assert not partial.exists()
    assert json.loads((directory / tutorial_utils._MARKER).read_text())["files"]


def test_interrupted_generation_leaves_no_catalog(fresh_env: Path, monkeypatch) -> None:
    def boom(cat, params, progress):
        cat.insert("start", {"uid": "half-made", "time": 0.0})
        raise KeyboardInterrupt
    monkeypatch.setattr(tutorial_utils, "_make_bmm", boom)
    with pytest.raises(KeyboardInterrupt):
        tutorial_utils.fetch_BMM_example(progress=False)
    assert "bluesky-tutorial-BMM" not in list(databroker_lite.catalog)
    assert not (fresh_env / "data" / "bluesky-tutorial-BMM").exists()
    assert list((fresh_env / "data").iterdir()) == []
    monkeypatch.undo()
    _env(monkeypatch, fresh_env)
    assert 23463 in {r.metadata["start"]["scan_id"]
                     for r in tutorial_utils.fetch_BMM_example(progress=False).values()}


def _snapshot(cat: databroker_lite.Catalog) -> dict:
    out = {}
    for uid, run in cat.items():
        for name in run:
            ds = run[name].read()
            out[(uid, name)] = {k: ds[k].values for k in ds.variables}
    return out


def test_generation_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots = []
    docs = []
    for attempt in ("a", "b"):
        _env(monkeypatch, tmp_path / attempt)
        bmm = tutorial_utils.fetch_BMM_example(progress=False)
        rsoxs = tutorial_utils.fetch_RSOXS_example(progress=False)
        snapshots.append({**_snapshot(bmm), **_snapshot(rsoxs)})
        docs.append([(n, d) for n, d in rsoxs["777b44a"].documents() if n != "event"])
    a, b = snapshots
    assert a.keys() == b.keys() and len(a) >= 13
    for key in a:
        assert a[key].keys() == b[key].keys()
        for var in a[key]:
            np.testing.assert_array_equal(a[key][var], b[key][var], err_msg=f"{key} {var}")
    assert docs[0] == docs[1]


def test_data_dir_defaults_next_to_config_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DATABROKER_LITE_DATA_DIR", raising=False)
    monkeypatch.setenv("DATABROKER_LITE_CATALOG_PATH",
                       os.pathsep.join([str(tmp_path / "cfg" / "catalogs"), str(tmp_path / "other")]))
    assert tutorial_utils.tutorial_data_dir() == tmp_path / "cfg" / "data"
    monkeypatch.setenv("DATABROKER_LITE_DATA_DIR", str(tmp_path / "mine"))
    assert tutorial_utils.tutorial_data_dir() == tmp_path / "mine"


def test_small_mode_only_shrinks_images(tutorial_env: Path) -> None:
    run = tutorial_utils.fetch_RSOXS_example(progress=False)["777b44a"]
    params = tutorial_utils._parameters()["RSOXS"]
    shape = run.primary.to_dask()["Synced_saxs_image"].shape
    assert shape == (params["n_frames"], 1, *params["small_shape"])
    assert run.dark.to_dask()["Synced_saxs_image"].shape[0] == params["n_dark"]


def test_demo_shows_the_tutorial(tutorial_env: Path, capsys: pytest.CaptureFixture) -> None:
    from databroker_lite.cli import main
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "bluesky-tutorial-BMM: " in out and "bluesky-tutorial-RSOXS: " in out
    assert "uid='8aaf81b9-85f2-51ac-8655-1b712a81002a'" in out
    assert "list(run) -> ['baseline', 'primary']" in out
    head = out.split("ds = run.primary.read()")[1]
    assert "dcm_energy" in head and "I0" in head and "8779.0" in head
    below, above = (float(x) for x in
                    out.split("log(I0/It): ")[1].split(" eV (")[0].replace(" below 8950 eV,", "")
                    .replace(" above 9000", "").split())
    assert above > below + 0.5
    assert "uid='777b44a7-" in out
    assert "dask.array<chunksize=" in out and "Synced_saxs_image" in out
    assert re.search(r"Synced_saxs_image: \d+ MB if loaded, in \d+ chunks?, each read only", out)


def test_generation_says_what_it_makes_and_how_big(fresh_env: Path, capsys) -> None:
    tutorial_utils.fetch_RSOXS_example()
    out, err = capsys.readouterr()
    params = tutorial_utils._parameters()["RSOXS"]
    h, w = params["small_shape"]
    n = params["n_frames"] + params["n_dark"]
    line = out.splitlines()[0]
    assert line.startswith("Making the tutorial catalog 'bluesky-tutorial-RSOXS': 1 run, "
                           f"{n} detector frames of {h}x{w} uint16, about ")
    assert str(fresh_env / "data" / "bluesky-tutorial-RSOXS") in line
    assert f"{n}/{n}" in err  # the tqdm bar is left showing that it finished
    tutorial_utils.fetch_RSOXS_example()
    assert capsys.readouterr().out == ""  # nothing is made the second time
    tutorial_utils.fetch_BMM_example(progress=False)
    assert capsys.readouterr().out == ""
