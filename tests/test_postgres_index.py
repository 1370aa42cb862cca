"""The index tests of tests/test_index.py again, on a catalog indexed in PostgreSQL.

Refresh from the files, bad files, look-ups from the index alone, readers while another
process writes. The tests about the SQLite file itself (where it lives, a damaged or
deleted file, a full disk under it) are SQLite's only and are not repeated here.
"""
from __future__ import annotations

import os

import pytest
import test_index
from test_index import *  # noqa: F403 - the tests themselves

pytestmark = pytest.mark.usefixtures("on_postgres")

_SQLITE_FILE_ONLY = ("test_index_lives_in_hidden_directory", "test_deleted_index_is_rebuilt_with_same_answers",
                     "test_damaged_index_file_is_replaced", "test_full_index_disk_keeps_writing_runs_and_says_so")
for _name in _SQLITE_FILE_ONLY:
    globals().pop(_name, None)
assert all(hasattr(test_index, n) for n in _SQLITE_FILE_ONLY), "test_index.py renamed a test"


def test_these_catalogs_are_indexed_in_postgresql(four):
    cat = four[0] if isinstance(four, tuple) else four
    assert cat._index.kind == "postgresql"
    assert not os.path.exists(os.path.join(cat.directory, ".databroker_lite", "index.sqlite"))
