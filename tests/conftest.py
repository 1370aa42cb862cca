"""Shared fixtures: small real runs built with event_model.compose_run or a bluesky RunEngine."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


def ad_hdf5_run(cat: databroker_lite.Catalog, root: str, scan_id: int = 50, frames: int = 4,
                frame_shape: tuple[int, int] = (6, 5), time: float | None = None) -> tuple[str, np.ndarray]:
    """Insert a run whose images live in an AD_HDF5 file under ``root``; (uid, the frames)."""
    import h5py
    from event_model import compose_run

    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    data = np.arange(frames * frame_shape[0] * frame_shape[1], dtype="u2").reshape(frames, *frame_shape)
    with h5py.File(os.path.join(root, "img", f"{scan_id}.h5"), "w") as f:
        f.create_dataset("entry/data/data", data=data)
    b = compose_run(metadata={"scan_id": scan_id, "plan_name": "count"},
                    **({} if time is None else {"time": time}))
    cat.insert("start", b.start_doc)
    res = b.compose_resource(spec="AD_HDF5", root=root, resource_path=f"img/{scan_id}.h5",
                             resource_kwargs={"frame_per_point": 1})
    cat.insert("resource", res.resource_doc)
    d = b.compose_descriptor(name="primary", data_keys={
        "img": {"dtype": "array", "shape": list(frame_shape), "source": "img", "external": "FILESTORE:",
                "dtype_numpy": "<u2"}})
    cat.insert("descriptor", d.descriptor_doc)
    for i in range(frames):
        datum = res.compose_datum(datum_kwargs={"point_number": i})
        cat.insert("datum", datum)
        cat.insert("event", d.compose_event(data={"img": datum["datum_id"]}, timestamps={"img": 0.0},
                                            filled={"img": False}))
    cat.insert("stop", b.compose_stop())
    return b.start_doc["uid"], data


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


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_subprocess(tmp: Path, *args: str, procs: list | None = None,
                     wait: float = 60.0) -> Iterator[str]:
    """``databroker-lite serve ARGS`` in a subprocess on a free loopback port; yields its URL.

    The server's output goes to ``tmp/server.log``; its Popen is appended to ``procs``.
    """
    import httpx
    url = f"http://127.0.0.1:{free_port()}"
    with open(tmp / "server.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "databroker_lite", "serve", *args,
                                 "--port", url.rsplit(":", 1)[1]],
                                stdout=log, stderr=subprocess.STDOUT)
        if procs is not None:
            procs.append(proc)
        try:
            for _ in range(int(wait * 4)):  # the server imports tiled: slow on a busy machine
                if proc.poll() is not None:
                    break
                try:
                    httpx.get(f"{url}/api/v1/", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.25)
            else:
                pytest.fail(f"the server did not answer within {wait:.0f} s")
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the server exited: {log.read()}")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def serving(tmp: Path, api_key: str, *catalogs: str, procs: list | None = None) -> Iterator[str]:
    """``databroker-lite serve CATALOGS`` with ``api_key``; yields its URL."""
    (tmp / "key").write_text(api_key + "\n")
    with serve_subprocess(tmp, *catalogs, "--api-key-file", str(tmp / "key"), procs=procs) as url:
        yield url


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
