"""The pack tools' errors (defined in :mod:`databroker_lite.errors`)."""
from __future__ import annotations

from ..errors import ImportFailed, PackError

__all__ = ["ImportFailed", "PackError"]
