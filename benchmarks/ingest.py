"""Writing: an image stack and 10,000 scalar events through cat.writer, vs raw h5py."""
from __future__ import annotations

import os
import shutil
import time

import event_model
import h5py
import numpy as np

import databroker_lite

from ._common import Baseline, Figure, in_child, timeit
from .reads import image_documents, make_stack


def _fresh_dir(tmp: str, name: str) -> str:
    d = os.path.join(tmp, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def bench_ingest(tmp: str, repeat: int, n: int, h: int, w: int, n_scalar: int,
                 rng: np.random.Generator) -> list[Figure]:
    """Issue 2, item 3: ingest speed of cat.writer."""
    stack = make_stack(n, h, w, rng)
    target = {}

    # --- image stack: documents are composed beforehand (that is the producer's cost)
    def setup_ours() -> None:
        target["docs"] = image_documents(stack)
        target["cat"] = databroker_lite.open_catalog(_fresh_dir(tmp, "ingest_img"))

    def ours() -> None:
        w_ = target["cat"].writer
        for name, doc in target["docs"]:
            w_(name, doc)

    def base() -> None:
        h5py_write_stack(_fresh_dir(tmp, "ingest_img.h5"), stack)

    def rm_base() -> None:
        os.remove(os.path.join(tmp, "ingest_img.h5"))

    img_base = timeit(base, repeat, teardown=rm_base)
    img_ours = timeit(ours, repeat, setup=setup_ours)
    check = target["cat"][-1].primary.read()["img"].values
    assert np.array_equal(check, stack), "ingested stack reads back different"
    shutil.rmtree(os.path.join(tmp, "ingest_img"), ignore_errors=True)
    target.clear()
    del check

    # --- scalar events: 10 float columns
    n_cols = 10
    keys = [f"c{i}" for i in range(n_cols)]
    values = rng.random((n_scalar, n_cols))

    def scalar_docs() -> list[tuple[str, dict]]:
        b = event_model.compose_run(metadata={"plan_name": "count", "scan_id": 1})
        d = b.compose_descriptor(name="primary", data_keys={
            k: {"dtype": "number", "shape": [], "source": "sim"} for k in keys})
        now = time.time()
        docs = [("start", b.start_doc), ("descriptor", d.descriptor_doc)]
        for i in range(n_scalar):
            row = values[i].tolist()
            docs.append(("event", d.compose_event(data=dict(zip(keys, row)),
                                                  timestamps=dict.fromkeys(keys, now + i), seq_num=i + 1)))
        docs.append(("stop", b.compose_stop()))
        return docs

    def setup_scalar() -> None:
        target["docs"] = scalar_docs()
        target["cat"] = databroker_lite.open_catalog(_fresh_dir(tmp, "ingest_scalar"))

    def scalar_base() -> None:
        # what a hand-written writer does: buffer rows, append in blocks of 1,000
        with h5py.File(_fresh_dir(tmp, "ingest_scalar.h5"), "w") as f:
            cols = {k: f.create_dataset(k, shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
                    for k in [*keys, "time"]}
            buf: dict[str, list] = {k: [] for k in cols}
            for name, doc in target["docs"]:
                if name != "event":
                    continue
                for k, v in doc["data"].items():
                    buf[k].append(v)
                buf["time"].append(doc["time"])
                if len(buf["time"]) == 1000:
                    _append(cols, buf)
            _append(cols, buf)

    def rm_scalar_base() -> None:
        os.remove(os.path.join(tmp, "ingest_scalar.h5"))

    def ours_scalar() -> None:
        ours()

    sc_ours = timeit(ours_scalar, repeat, setup=setup_scalar)
    back = target["cat"][-1].primary.read()
    assert np.array_equal(back["c7"].values, values[:, 7]), "ingested events read back different"
    target["docs"] = scalar_docs()
    sc_base = timeit(scalar_base, repeat, teardown=rm_scalar_base)
    shutil.rmtree(os.path.join(tmp, "ingest_scalar"), ignore_errors=True)
    target.clear()

    def write_in_child(kind: str) -> dict:
        d = _fresh_dir(tmp, f"rss_{kind}")
        try:
            return in_child("ingest", kind=kind, directory=d, n=n, h=h, w=w)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    rss = {kind: [write_in_child(kind) for _ in range(max(1, min(repeat, 3)))]
           for kind in ("ours", "h5py")}
    mb = n * h * w * 2 / 2**20
    n_docs = n_scalar + 3
    sec = "3. ingest"
    return [
        Figure(sec, f"cat.writer: {n} x {h} x {w} uint16 stack, event per frame ({mb:.0f} MB)", "s",
               img_ours, [Baseline("h5py: resizable, chunk per frame", img_base)], ("ratio", 1.5),
               note=f"throughput ours {mb / np.median(img_ours):.0f} MB/s, "
                    f"h5py {mb / np.median(img_base):.0f} MB/s; documents composed before timing"),
        Figure(sec, "peak RSS added by writing the stack (fresh process)", "MB",
               [r["op_mb"] for r in rss["ours"]],
               [Baseline("h5py equivalent", [r["op_mb"] for r in rss["h5py"]])],
               note="stack and documents already in memory before the measurement; the writer "
                    "buffers rows up to 64 MB before a flush"),
        Figure(sec, f"cat.writer: {n_scalar:,} events x {n_cols} float columns", "/s",
               [n_scalar / t for t in sc_ours],
               [Baseline("h5py: rows buffered, appended per 1,000", [n_scalar / t for t in sc_base])],
               ("min", 10_000.0),
               note=f"events per second over the whole run ({n_docs:,} documents incl. start, "
                    "descriptor, stop); each event validated"),
    ]


def h5py_write_stack(path: str, stack: np.ndarray) -> None:
    """The baseline writer: a resizable dataset chunked per frame, grown one frame at a time."""
    n, h, w = stack.shape
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("img", shape=(0, h, w), maxshape=(None, h, w), dtype=stack.dtype,
                              chunks=(1, h, w))
        ts = f.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(4096,))
        for k in range(n):
            ds.resize(k + 1, axis=0)
            ds[k] = stack[k]
            ts.resize(k + 1, axis=0)
            ts[k] = time.time()


def _append(cols: dict, buf: dict) -> None:
    n = len(buf["time"])
    if not n:
        return
    for k, ds in cols.items():
        n0 = ds.shape[0]
        ds.resize(n0 + n, axis=0)
        ds[n0:] = np.asarray(buf[k], dtype="f8")
        buf[k].clear()
