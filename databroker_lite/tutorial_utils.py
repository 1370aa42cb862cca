"""``databroker_lite.tutorial_utils``, as databroker's: kept for its import path; the code is
in :mod:`databroker_lite.tutorial.data`."""
from __future__ import annotations

from .tutorial.data import (  # noqa: F401 - re-exported, private names for old tests too
    _MARKER,
    DATA_DIR_ENV,
    SMALL_ENV,
    _parameters,
    fetch_BMM_example,
    fetch_RSOXS_example,
    tutorial_data_dir,
)

__all__ = ["DATA_DIR_ENV", "SMALL_ENV", "fetch_BMM_example", "fetch_RSOXS_example",
           "tutorial_data_dir"]
