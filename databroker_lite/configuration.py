"""Configuration readings of a stream's devices (``run.primary.config["det"]``).

Imported when ``Stream.config`` is first used: it needs xarray.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import xarray as xr


class ConfigDataset(xr.Dataset):
    """An :class:`xarray.Dataset` of one device's configuration, one row per descriptor.

    It is a Dataset (``cfg["det_exposure"]``), and ``read()`` gives a plain one, as
    databroker's ``run.primary.config["det"].read()`` does.
    """

    __slots__ = ()

    def read(self) -> xr.Dataset:
        """This configuration as a plain :class:`xarray.Dataset` (databroker's spelling)."""
        return xr.Dataset({k: v.variable for k, v in self.data_vars.items()},
                          coords={k: v.variable for k, v in self.coords.items()},
                          attrs=dict(self.attrs))


def config_datasets(descriptors: Iterable[dict]) -> dict[str, ConfigDataset]:
    """``{object name: ConfigDataset}`` from a stream's descriptors (time: descriptor time)."""
    descriptors = list(descriptors)
    objs = list(dict.fromkeys(o for d in descriptors for o in d.get("configuration") or {}))
    times = np.asarray([d.get("time", np.nan) for d in descriptors], dtype=float)
    out = {}
    for obj in objs:
        rows = [(d.get("configuration") or {}).get(obj) or {} for d in descriptors]
        keys = list(dict.fromkeys(k for r in rows for k in r.get("data") or {}))
        data = {}
        for k in keys:
            arr = np.asarray([(r.get("data") or {}).get(k, np.nan) for r in rows])
            dk = next(((r.get("data_keys") or {}).get(k) for r in rows
                       if k in (r.get("data_keys") or {})), None) or {}
            attrs = {a: dk[a] for a in ("source", "units", "precision") if a in dk}
            dims = ("time", *(f"{k}_dim_{i}" for i in range(arr.ndim - 1)))
            data[k] = xr.Variable(dims, arr, attrs=attrs)
        out[obj] = ConfigDataset(data, coords={"time": ("time", times)},
                                 attrs={"object_name": obj})
    return out
