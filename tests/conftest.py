"""Shared fixtures: small real runs built with event_model.compose_run or a bluesky RunEngine."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import event_model
import numpy as np
import pytest

import databroker_lite

#: Data keys of the run made by :func:`make_run_docs`: one column of every kind.
DATA_KEYS = {
    "x": {"source": "sim", "dtype": "number", "shape": []},
    "n": {"source": "sim", "dtype": "integer", "shape": []},
    "label": {"source": "sim", "dtype": "string", "shape": []},
    "flag": {"source": "sim", "dtype": "boolean", "shape": []},
    "vec": {"source": "sim", "dtype": "array", "shape": [3], "dtype_numpy": "<f8"},
}


def event_data(i: int) -> dict:
    """The data of event ``i`` (0-based) of a :func:`make_run_docs` run."""
    return {"x": i * 1.5, "n": i, "label": f"point {i}", "flag": bool(i % 2),
            "vec": [float(i), i + 0.5, -float(i)]}


def make_run_docs(n_events: int = 5, *, metadata: dict | None = None,
                  data_keys: dict | None = None,
                  data: Callable[[int], dict] | None = None,
                  stream: str = "primary", stop: bool = True,
                  t0: float | None = None) -> list[tuple[str, dict]]:
    """The (name, doc) pairs of one small run made with ``event_model.compose_run``.

    Events are single documents with ``seq_num`` 1..n. With ``stop=False`` the run
    has no stop document.
    """
    data_keys = DATA_KEYS if data_keys is None else data_keys
    data = event_data if data is None else data
    md = {"scan_id": 1, "plan_name": "count"} if metadata is None else metadata
    t0 = time.time() if t0 is None else t0
    bundle = event_model.compose_run(metadata=md, time=t0)
    docs: list[tuple[str, dict]] = [("start", bundle.start_doc)]
    desc = bundle.compose_descriptor(name=stream, data_keys=data_keys,
                                     object_keys={"sim": list(data_keys)})
    docs.append(("descriptor", desc.descriptor_doc))
    for i in range(n_events):
        t = t0 + 0.1 * (i + 1)
        docs.append(("event", desc.compose_event(
            data=data(i), timestamps={k: t for k in data_keys}, seq_num=i + 1, time=t)))
    if stop:
        docs.append(("stop", bundle.compose_stop(time=t0 + 0.1 * (n_events + 1))))
    return docs


def insert_all(cat: databroker_lite.Catalog, docs: list[tuple[str, dict]]) -> None:
    """Give every document to ``cat.writer``."""
    for name, doc in docs:
        cat.writer(name, doc)


def normalise(docs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Documents as plain JSON-like values (numpy arrays and scalars to lists and numbers)."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        return v
    return [(name, plain(doc)) for name, doc in docs]


@pytest.fixture
def cat(tmp_path: Path) -> databroker_lite.Catalog:
    """An empty writable catalog in a fresh directory."""
    return databroker_lite.open_catalog(tmp_path / "catalog")


@pytest.fixture
def run_docs() -> list[tuple[str, dict]]:
    """The documents of one finished 5-event run with number, integer, string, bool, array keys."""
    return make_run_docs(5)


@pytest.fixture
def RE():  # noqa: N802 - the name every bluesky user knows
    """A bluesky RunEngine that does not touch signal handlers or the event loop policy."""
    from bluesky import RunEngine
    engine = RunEngine({}, context_managers=[])
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def hw():
    """ophyd.sim simulated hardware (``hw.det``, ``hw.motor``, ``hw.img``, ...)."""
    from ophyd.sim import hw as _hw
    return _hw()


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a throwaway PostgreSQL server started for this test session.

    Skipped only when the server binaries (initdb, pg_ctl) are not installed; psycopg
    is in the ``test`` extra, so its absence is an error, as is a server that fails.
    """
    from databroker_lite.pgtemp import TempPostgres, find_bin_dir
    if find_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed "
                    "(apt-get install postgresql-15); the PostgreSQL index is not tested")
    import psycopg  # noqa: F401 - in the test extra: fail here, not in each test
    server = TempPostgres()
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def on_postgres(postgres_url):
    """Every catalog opened in the module (and its subprocesses) is indexed in PostgreSQL."""
    from databroker_lite.backends import INDEX_ENV
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(INDEX_ENV, postgres_url)
        yield postgres_url
