"""Layer 2: run files in HDF5, their writer and reader, and external-data handlers.

Nothing here imports xarray or dask: the reader hands out numpy arrays and plain
descriptions of where data lives (:class:`~.layout.Column`).
"""
from .files import cached_h5, open_h5
from .layout import LAYOUT_VERSION, Column, Segment
from .reader import RunReader, RunSummary
from .writer import RunWriter

__all__ = ["LAYOUT_VERSION", "Column", "RunReader", "RunSummary", "RunWriter", "Segment", "cached_h5", "open_h5"]
