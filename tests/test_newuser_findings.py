"""Bugs found by using the package as a new beamline user would, reproduced; each test is
what that user typed, and fails until the bug is fixed (strict xfail)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import insert_all, make_run_docs

FRAME = (4, 5)


@pytest.fixture
def column(cat):
    """``run.primary["img"]`` of a 3-event run, and the frames the events carried."""
    dk = {"img": {"source": "sim", "dtype": "array", "shape": list(FRAME), "dtype_numpy": "<u2"}}
    frames = np.arange(3 * FRAME[0] * FRAME[1], dtype="u2").reshape(3, *FRAME)
    insert_all(cat, make_run_docs(3, data_keys=dk, data=lambda i: {"img": frames[i]}))
    return cat[-1].primary["img"], frames


@pytest.mark.xfail(strict=True, raises=TypeError, reason="column.py: ColumnLike.mean/sum/max/min take only axis; "
                   "numpy's np.mean(col) calls col.mean(axis=None, dtype=None, out=None) -> "
                   "TypeError: unexpected keyword argument 'dtype'")
@pytest.mark.parametrize("func", [np.mean, np.sum, np.max, np.min])
def test_numpy_reductions_of_an_array_column(column, func) -> None:
    col, frames = column
    assert func(col) == func(frames)  # a scalar, as numpy gives for the whole array
    np.testing.assert_array_equal(func(col, axis=0), func(frames, axis=0))
