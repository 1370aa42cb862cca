"""``databroker-lite demo``: install the tutorial catalogs and show what is in them."""
from __future__ import annotations

import numpy as np

from .. import config
from . import data


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def run_demo(*, progress: bool = True) -> None:
    """Install ``bluesky-tutorial-BMM`` and ``bluesky-tutorial-RSOXS`` and print a tour.

    The first run generates the data (a few seconds, about 270 MB on disk under the
    tutorial data directory); later runs reuse it.
    """
    data.fetch_BMM_example(progress=progress)
    data.fetch_RSOXS_example(progress=progress)

    _section("Named catalogs: databroker_lite.catalog")
    print(repr(config.catalog))

    _section("catalog = databroker_lite.catalog['bluesky-tutorial-BMM']")
    catalog = config.catalog["bluesky-tutorial-BMM"]
    print(repr(catalog))

    _section("run = catalog[23463]")
    run = catalog[23463]
    print(repr(run))
    print("list(run) ->", list(run))

    _section("ds = run.primary.read()")
    ds = run.primary.read()
    print(ds[["dcm_energy", "I0", "It", "Ir", "If"]].to_dataframe().head())
    mu = np.log(ds["I0"] / ds["It"])
    above = float(mu.where(ds["dcm_energy"] > 9000).mean())
    below = float(mu.where(ds["dcm_energy"] < 8950).mean())
    print(f"\nlog(I0/It): {below:.3f} below 8950 eV, {above:.3f} above 9000 eV (the Cu K edge)")

    _section("run = databroker_lite.catalog['bluesky-tutorial-RSOXS']['777b44a']")
    run = config.catalog["bluesky-tutorial-RSOXS"]["777b44a"]
    print(repr(run))

    _section("lazy_ds = run.primary.to_dask()   (nothing read yet)")
    lazy_ds = run.primary.to_dask()
    print(lazy_ds)
    image = lazy_ds["Synced_saxs_image"]
    n = image.data.npartitions
    print(f"\nSynced_saxs_image: {image.nbytes / 1e6:.0f} MB if loaded, in {n} "
          f"chunk{'s' if n != 1 else ''}, each read only when needed")

    _section("corrected[100, 0, :, :].compute()   (reads one frame and the darks)")
    corrected = image - run.dark.to_dask()["Synced_saxs_image"].mean("time")
    frame = corrected[100, 0, :, :].compute()
    print(f"shape {frame.shape}, dtype {frame.dtype}, mean {float(frame.mean()):.1f}, "
          f"max {float(frame.max()):.1f}")
    print("\nNext: the tutorial in docs/tutorial.rst walks through the same steps.")
