"""A databroker user's habits: attribute errors, stream.config, the HTML reprs."""
from __future__ import annotations

import event_model
import numpy as np
import pytest
import xarray as xr

import databroker_lite

T0 = 1_700_000_000.0
NUM = {"source": "sim", "dtype": "number", "shape": []}


def _conf(exposure: float, gain: int) -> dict:
    return {"det": {"data": {"det_exposure": exposure, "det_gain": gain},
                    "timestamps": {"det_exposure": T0, "det_gain": T0},
                    "data_keys": {"det_exposure": {**NUM, "units": "s"},
                                  "det_gain": {**NUM, "dtype": "integer"}}}}


@pytest.fixture
def run() -> databroker_lite.Run:
    """scan_id 42, a 'scan' whose primary stream has two descriptors (the gain changes)."""
    cat = databroker_lite.temp()
    b = event_model.compose_run(metadata={"scan_id": 42, "plan_name": "scan", "sample": "Cu"},
                                time=T0)
    cat.insert("start", b.start_doc)
    for i, gain in enumerate((1, 4)):
        d = b.compose_descriptor(name="primary", data_keys={"det": NUM}, time=T0 + i,
                                 configuration=_conf(0.1 * (i + 1), gain),
                                 object_keys={"det": ["det"]})
        cat.insert("descriptor", d.descriptor_doc)
        cat.insert("event", d.compose_event(data={"det": float(i)}, timestamps={"det": T0 + i},
                                            seq_num=i + 1, time=T0 + i + 0.5))
    cat.insert("stop", b.compose_stop(time=T0 + 5))
    return cat[42]


@pytest.mark.parametrize("name", ["canonical", "describe", "read"])
def test_unknown_attribute_is_an_attribute_error_listing_the_streams(run, name):
    with pytest.raises(AttributeError) as info:
        getattr(run, name)
    msg = str(info.value)
    assert f"has no attribute or stream {name!r}" in msg and "['primary']" in msg
    assert not isinstance(info.value, KeyError)
    assert not hasattr(run, name)  # hasattr() works: it only catches AttributeError


def test_a_typo_suggests_the_stream_or_attribute(run):
    with pytest.raises(AttributeError, match=r"'primry' \(did you mean 'primary'\?\)"):
        run.primry  # noqa: B018
    with pytest.raises(AttributeError, match=r"'metdata' \(did you mean 'metadata'\?\)"):
        run.metdata  # noqa: B018
    assert run.primary is run["primary"] or run.primary.name == "primary"
    with pytest.raises(databroker_lite.StreamNotFound):  # run["x"] stays a KeyError
        run["canonical"]


def test_config_is_a_dataset_per_device_with_a_row_per_descriptor(run):
    config = run.primary.config
    assert list(config) == ["det"]
    cfg = config["det"]
    assert isinstance(cfg, xr.Dataset)
    np.testing.assert_allclose(cfg["det_exposure"].values, [0.1, 0.2])
    assert cfg["det_gain"].values.tolist() == [1, 4] and cfg["det_gain"].dtype.kind == "i"
    np.testing.assert_array_equal(cfg["time"].values, [T0, T0 + 1])
    assert cfg["det_exposure"].attrs["units"] == "s"
    plain = cfg.read()  # databroker's run.primary.config["det"].read()
    assert type(plain) is xr.Dataset
    assert plain.identical(cfg) and plain.attrs == {"object_name": "det"}


def test_run_html_shows_scan_id_plan_and_the_uid_once(run):
    html = run._repr_html_()
    assert html.count(run.uid) == 1
    assert "scan_id 42" in html and "scan" in html and "Cu" in html
    assert "success" in html and "primary" in html and "2 events" in html


def test_catalog_html_lists_the_newest_runs(run):
    html = run.catalog._repr_html_()
    assert run.uid[:8] in html and ">42<" in html and ">scan<" in html and "1 runs" in html
