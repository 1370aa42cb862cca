"""Array-likes that say where data is and read it only when sliced.

They hold a file path and a dataset name, never an open h5py object, so they pickle
as a few strings and work on dask.distributed workers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .files import cached_h5, open_h5
from .reader import read_dataset


class LazyDataset:
    """``h5py_file[name][:n]`` of a run file, read on ``__getitem__``."""

    __slots__ = ("path", "name", "shape", "dtype", "finished", "text", "ndim")

    def __init__(self, path: str, name: str, shape: tuple, dtype: np.dtype, *,
                 finished: bool, text: bool = False) -> None:
        self.path, self.name = path, name
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.finished, self.text = finished, text

    def __getstate__(self) -> tuple:
        return (self.path, self.name, self.shape, self.dtype.str, self.finished, self.text)

    def __setstate__(self, state: tuple) -> None:
        path, name, shape, dtype, finished, text = state
        self.__init__(path, name, shape, np.dtype(dtype), finished=finished, text=text)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sel: Any) -> np.ndarray:
        if self.finished:
            out = read_dataset(cached_h5(self.path), self.name, sel, self.path)
        else:
            with open_h5(self.path, "r") as f:
                out = read_dataset(f, self.name, sel, self.path)
        if self.text:
            out = out.astype(str) if out.size else np.zeros(out.shape, dtype="U1")
        return out
