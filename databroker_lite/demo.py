"""``databroker-lite demo`` (kept for its import path; the code is in :mod:`databroker_lite.tutorial.demo`)."""
from __future__ import annotations

from .tutorial.demo import run_demo

__all__ = ["run_demo"]
