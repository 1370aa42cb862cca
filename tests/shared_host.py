"""One simulated host on a shared catalog directory (run by tests/test_shared_storage.py).

    python tests/shared_host.py writer DIR N_RUNS OUT.json
    python tests/shared_host.py reader DIR MODE OUT.json DONE.json

The environment says which host this is (DATABROKER_LITE_HOST), that the directory is
on a network file system (DATABROKER_LITE_NETWORK_FS=1), where per-host indexes live,
and for readers HDF5_USE_FILE_LOCKING=FALSE (locks that do not reach across hosts).

The writer makes the directory's modification time lie, as a stale NFS attribute cache
does: after each new run file it puts the old time back.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

import event_model
import numpy as np

import databroker_lite

N_EVENTS = 30


def values(scan_id: int) -> np.ndarray:
    return np.arange(1, N_EVENTS + 1) * 10.0 + scan_id


def writer(directory: str, n_runs: int, out: str) -> None:
    cat = databroker_lite.open_catalog(directory)
    frozen = os.stat(directory)

    def write(name: str, doc: dict) -> None:
        """The writer, then the directory's old mtime put back: what other hosts see."""
        cat.writer(name, doc)
        os.utime(directory, ns=(frozen.st_atime_ns, frozen.st_mtime_ns))

    uids = []
    for i in range(n_runs):
        scan_id = i + 1
        b = event_model.compose_run(metadata={"scan_id": scan_id, "plan_name": "shared",
                                              "host": os.environ.get("DATABROKER_LITE_HOST")})
        write("start", b.start_doc)
        d = b.compose_descriptor(name="primary", data_keys={
            "x": {"dtype": "number", "shape": [], "source": "sim"}})
        write("descriptor", d.descriptor_doc)
        for k, x in enumerate(values(scan_id)):
            write("event", d.compose_event(data={"x": float(x)}, timestamps={"x": time.time()},
                                           seq_num=k + 1))
            if k % 10 == 9:
                cat.writer.flush()
                os.utime(directory, ns=(frozen.st_atime_ns, frozen.st_mtime_ns))
                time.sleep(0.02)
        write("stop", b.compose_stop())
        uids.append(b.start_doc["uid"])
    # and one run from a real RunEngine with ophyd.sim hardware
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import hw
    RE = RunEngine({}, context_managers=[])  # noqa: N806
    RE.subscribe(write)
    RE.md["scan_id"] = n_runs  # the RunEngine adds one
    uids += list(RE(count([hw().det], 5)))
    with open(out + ".part", "w") as f:
        json.dump({"uids": uids, "index": cat._index.path}, f)
    os.replace(out + ".part", out)


def reader(directory: str, mode: str, out: str, done: str) -> None:
    errors: list[str] = []
    verified: dict[str, int] = {}
    loops = 0
    expected: list[str] | None = None
    cat = databroker_lite.open_catalog(directory, mode=mode)
    deadline = time.monotonic() + float(os.environ.get("SHARED_HOST_SECONDS", "240"))
    while time.monotonic() < deadline:
        loops += 1
        try:
            if expected is None and os.path.exists(done):
                with open(done) as f:
                    expected = json.load(f)["uids"]
            n = len(cat)
            uids = list(cat)
            assert len(uids) >= n, (n, len(uids))  # runs only land (another host may add one)
            rows = {r["uid"]: r for r in cat.summaries(uids)}
            for uid in uids:
                r = rows[uid]
                if uid in verified or r["exit_status"] != "success":
                    continue
                run = cat[uid]
                start = run.metadata["start"]
                if start.get("plan_name") == "shared":
                    assert cat[start["scan_id"]].metadata["start"]["uid"] == uid
                    got = run.primary.read()["x"].values
                    assert np.array_equal(got, values(start["scan_id"])), (uid, got)
                else:  # the RunEngine's count
                    assert run.primary.read()["det"].shape == (5,)
                verified[uid] = start["scan_id"]
            if expected is not None and set(expected) <= set(verified):
                break
        except Exception:  # noqa: BLE001 - every exception is a failure to report
            if len(errors) < 5:
                errors.append(traceback.format_exc())
        time.sleep(0.05)
    with open(out, "w") as f:
        json.dump({"verified": verified, "errors": errors, "loops": loops, "index": cat._index.path,
                   "kind": cat._index.kind, "bad_files": cat.bad_files}, f)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "writer":
        writer(args[0], int(args[1]), args[2])
    else:
        reader(*args)
