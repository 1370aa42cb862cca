"""The tutorial tool: catalogs made from a seed (``fetch_BMM_example``, ``fetch_RSOXS_example``)
and ``databroker-lite demo``. A tool on the catalog layer; the documented import path
``databroker_lite.tutorial_utils`` still works."""
from __future__ import annotations

from .data import DATA_DIR_ENV, SMALL_ENV, fetch_BMM_example, fetch_RSOXS_example, tutorial_data_dir

__all__ = ["DATA_DIR_ENV", "SMALL_ENV", "fetch_BMM_example", "fetch_RSOXS_example",
           "tutorial_data_dir"]
