"""Every search test of tests/test_query.py again, on a catalog indexed in PostgreSQL.

One query compiler, two dialects: the same queries must give the same runs.
"""
from __future__ import annotations

import pytest
from test_query import *  # noqa: F403 - the tests themselves

pytestmark = pytest.mark.usefixtures("on_postgres")


def test_these_searches_ran_on_postgresql(catalog):
    cat, _ = catalog
    assert cat._index.kind == "postgresql"
    assert cat.search({"plan_name": "count"})._index.kind == "postgresql"
