"""``databroker_lite.tutorial_utils``, as databroker's: kept for its import path.

The code is in :mod:`databroker_lite.tutorial.data`; this name is that very module (not a
copy of its names), so everything in it, patching included, works through either path.
"""
from __future__ import annotations

import sys

from .tutorial import data as _data

sys.modules[__name__] = _data
