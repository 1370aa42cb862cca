"""The main job until the tutorial catalogs land: write a run, read it back."""
from __future__ import annotations

import numpy as np
from event_model import compose_run

import databroker_lite


def run_demo() -> None:
    """Write a small energy scan with images to a temporary catalog and show it."""
    cat = databroker_lite.temp()
    rng = np.random.default_rng(0)
    bundle = compose_run(metadata={"scan_id": 1, "plan_name": "scan", "sample": {"name": "Cu foil"}})
    cat.insert("start", bundle.start_doc)
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "dcm_energy": {"dtype": "number", "shape": [], "source": "demo", "units": "eV"},
        "I0": {"dtype": "number", "shape": [], "source": "demo"},
        "It": {"dtype": "number", "shape": [], "source": "demo"},
        "image": {"dtype": "array", "shape": [64, 64], "dtype_numpy": "<u2", "source": "demo"},
    })
    cat.insert("descriptor", desc.descriptor_doc)
    for e in np.linspace(8900, 9100, 41):
        i0 = 1e5 * (1 + 0.01 * rng.standard_normal())
        mu = 0.5 + (1.0 if e > 8979 else 0.0)
        cat.insert("event", desc.compose_event(
            data={"dcm_energy": e, "I0": i0, "It": i0 * np.exp(-mu),
                  "image": rng.poisson(100, (64, 64)).astype("u2")},
            timestamps={k: 0.0 for k in ("dcm_energy", "I0", "It", "image")}))
    cat.insert("stop", bundle.compose_stop())
    print(repr(cat), "\n")
    run = cat[1]
    print(repr(run), "\n")
    print(run.primary.read(["dcm_energy", "I0", "It"]).to_dataframe().head(), "\n")
    print(run.primary.to_dask())
