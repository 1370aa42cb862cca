"""Remote reads (issue 8): one 512x512 uint16 frame and a 10-frame slice, three ways.

    python -m benchmarks.remote [--frames 40] [--repeat 30] [--clients 50] [--seconds 30] [--profile]

- ``ours``: ``databroker-lite serve`` (our chunk-aligned tiled adapters), one HTTP GET
  of ``/array/full/<uid>/primary/data/img?slice=...`` per read, and ``load_array``;
- ``local``: ``run.primary.to_dask()["img"][k].compute()`` in this process;
- ``tiled``: ``tiled serve directory`` on the same catalog directory (its own HDF5
  adapter on the same run file), the same GET on its path to the same dataset.

Goal: a frame through our server at least 3x faster than through ``tiled serve
directory`` (the two are timed turn about, so that a busy machine slows both alike),
and a 10-frame slice in one request.
Then ``--clients`` concurrent clients (default 50) loop for ``--seconds`` (default 30)
over a notebook's requests (scan_id look-up, run metadata, one frame, a column
slice): requests, errors and p50/p99 latency are printed. ``--profile`` runs the same request in-process under cProfile (tiled's ASGI app and a
test client, no socket) and prints where the time goes. Needs the ``server`` extra.
Warm page cache: it measures the software, not the disk. Loopback only.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import databroker_lite

KEY = "benchmarkkey0123456789"
FRAME = (512, 512)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_catalog(path: Path, n_frames: int) -> databroker_lite.Catalog:
    import event_model
    cat = databroker_lite.open_catalog(path)
    bundle = event_model.compose_run(metadata={"scan_id": 1, "plan_name": "count"})
    cat.writer("start", bundle.start_doc)
    dk = {"img": {"source": "sim", "dtype": "array", "shape": list(FRAME), "dtype_numpy": "<u2"},
          "I0": {"source": "sim", "dtype": "number", "shape": []}}
    desc = bundle.compose_descriptor(name="primary", data_keys=dk, object_keys={"sim": list(dk)})
    cat.writer("descriptor", desc.descriptor_doc)
    rng = np.random.default_rng(0)
    for i in range(n_frames):
        t = time.time()
        img = rng.integers(0, 4096, FRAME, dtype=np.uint16)
        cat.writer("event", desc.compose_event(data={"img": img, "I0": float(i)},
                                               timestamps={"img": t, "I0": t}, seq_num=i + 1))
    cat.writer("stop", bundle.compose_stop())
    return cat


def _wait(url: str, proc: subprocess.Popen, path: str = "", timeout: float = 120.0) -> None:
    import httpx
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded: a minute or two at most
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            r = httpx.get(f"{url}/api/v1/metadata/{path}",
                          headers={"Authorization": f"Apikey {KEY}"}, timeout=2)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not serve {path!r} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _times(fn, repeat: int) -> list[float]:
    fn(0)  # warm-up (connection, caches)
    out = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _interleaved(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Time several functions turn about (a, b, a, b, ...), so that a busy machine slows
    them alike and their ratio stays meaningful."""
    for fn in fns.values():
        fn(0)
    out: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(i)
            out[name].append(time.perf_counter() - t0)
    return out


def _fmt(values: list[float]) -> str:
    return (f"{statistics.median(values) * 1e3:8.2f} ms  "
            f"(min {min(values) * 1e3:.2f}, max {max(values) * 1e3:.2f}, n={len(values)})")


def profile_in_process(catalog_dir: Path, uid: str, n: int = 100) -> str:
    """Where the time of a one-frame request goes: our code vs tiled's web stack.

    The app runs in this process (httpx's ASGI transport, no socket); our adapters are
    timed by wrapping them, the rest is profiled with cProfile (work that tiled hands
    to worker threads shows up as waiting in ``epoll``).
    """
    import asyncio
    import collections

    import httpx

    from databroker_lite.server import adapters, build_app, limits
    app = build_app([str(catalog_dir)], KEY)
    spent: collections.defaultdict[str, float] = collections.defaultdict(float)
    patched = []

    def timed(owner: type, attr: str, label: str) -> None:
        fn = getattr(owner, attr)
        patched.append((owner, attr, fn))

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0
        setattr(owner, attr, wrapper)

    timed(adapters.ChunkedArrayAdapter, "read", "our array read (HDF5 chunk via LazyDataset)")
    timed(adapters._Runs, "__getitem__", "our run look-up (adapter cache)")
    timed(adapters._Lazy, "__getitem__", "our stream and part adapters")
    timed(limits.Guards, "__call__", "our guards (filters, key, live slice, size), incl. the app")
    prof = cProfile.Profile()

    async def run() -> float:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:
                headers = {"Authorization": f"Apikey {KEY}", "Accept": "application/octet-stream"}
                url = f"/api/v1/array/full/{uid}/primary/data/img"
                assert (await c.get(url, params={"slice": "0"}, headers=headers)).status_code == 200
                spent.clear()
                t0 = time.perf_counter()
                prof.enable()
                for i in range(n):
                    r = await c.get(url, params={"slice": str(i % 10)}, headers=headers)
                    assert r.status_code == 200, r.text
                prof.disable()
                return (time.perf_counter() - t0) / n

    try:
        per = asyncio.run(run())
    finally:
        for owner, attr, fn in patched:
            setattr(owner, attr, fn)
    out = io.StringIO()
    out.write(f"profile: {per * 1e3:.2f} ms per one-frame request in-process (no socket)\n")
    for label, total in spent.items():
        out.write(f"  {label:48s} {total / n * 1e3:6.2f} ms\n")
    out.write(f"  {'tiled / FastAPI / Starlette / compression (rest)':48s} "
              f"{(per - sum(spent.values()) / n) * 1e3:6.2f} ms\n\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    return out.getvalue()


def load_test(url: str, uid: str, n_frames: int, clients: int, seconds: float) -> dict:
    """``clients`` concurrent clients for ``seconds``, each looping over the requests a
    notebook makes (look-up by scan_id, a run's metadata, one frame, a slice of a
    scalar column); returns counts, errors and latency percentiles."""
    import asyncio
    import random

    import httpx
    headers = {"Authorization": f"Apikey {KEY}", "Accept": "application/octet-stream"}
    requests = [
        ("search", "/api/v1/search/", {"filter[eq][condition][key]": "start.scan_id",
                                       "filter[eq][condition][value]": "1", "page[limit]": "1"}),
        ("metadata", f"/api/v1/metadata/{uid}", {}),
        ("frame", f"/api/v1/array/full/{uid}/primary/data/img", None),
        ("column", f"/api/v1/array/full/{uid}/primary/data/I0", {"slice": "0:10"}),
    ]
    latencies: dict[str, list[float]] = {name: [] for name, _, _ in requests}
    errors: list[str] = []

    async def client(i: int, stop: float) -> None:
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while time.perf_counter() < stop:
                name, path, params = rng.choice(requests)
                if params is None:
                    params = {"slice": str(rng.randrange(n_frames))}
                t0 = time.perf_counter()
                try:
                    r = await http.get(path, params=params)
                    if r.status_code != 200:
                        errors.append(f"{name}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{name}: {exc!r}")
                latencies[name].append(time.perf_counter() - t0)

    async def run() -> None:
        stop = time.perf_counter() + seconds
        await asyncio.gather(*(client(i, stop) for i in range(clients)))

    asyncio.run(run())
    every = sorted(t for ts in latencies.values() for t in ts)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
    return {"requests": len(every), "errors": errors, "per_second": len(every) / seconds,
            "p50": pct(every, 0.50), "p99": pct(every, 0.99),
            "p99_by_kind": {k: pct(sorted(v), 0.99) for k, v in latencies.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.remote", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=40, help="frames in the run (default 40)")
    p.add_argument("--repeat", type=int, default=30, help="samples per figure (default 30)")
    p.add_argument("--profile", action="store_true", help="also profile one-frame requests")
    p.add_argument("--no-tiled-directory", action="store_true",
                   help="skip the `tiled serve directory` baseline")
    p.add_argument("--clients", type=int, default=50,
                   help="concurrent clients of the load test (default 50; 0 skips it)")
    p.add_argument("--seconds", type=float, default=30, help="length of the load test (default 30)")
    args = p.parse_args(argv)
    try:
        import httpx
        import tiled  # noqa: F401
    except ImportError:
        print("needs the server extra: pip install 'databroker_lite[server]'", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="dbl-remote-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        cat = make_catalog(tmp / "cat", args.frames)
        run = cat[-1]
        uid = run.uid
        expected = run.primary.read()["img"].values
        (tmp / "key").write_text(KEY)
        n = min(args.frames, 30)

        # --- local to_dask --------------------------------------------------------
        img = run.primary.to_dask()["img"].data
        results = {"local to_dask(), 1 frame": _times(lambda i: img[i % n].compute(), args.repeat),
                   "local to_dask(), 10 frames": _times(lambda i: img[i % n: i % n + 10].compute(),
                                                        args.repeat)}

        # --- servers ----------------------------------------------------------------
        ours_port, tiled_port = _free_port(), _free_port()
        ours_url, tiled_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{tiled_port}"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "databroker_lite", "serve", str(tmp / "cat"), "--port",
             str(ours_port), "--api-key-file", str(tmp / "key")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        tiled_path = f"{uid}/streams/primary/0/data/img"
        if not args.no_tiled_directory:
            tiled_exe = str(Path(sys.executable).with_name("tiled"))
            procs.append(subprocess.Popen(
                [tiled_exe, "serve", "directory", str(tmp / "cat"), "--port", str(tiled_port),
                 "--api-key", KEY, "--include-ext", ".h5"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp))
        _wait(ours_url, procs[0], uid)
        if not args.no_tiled_directory:
            _wait(tiled_url, procs[1], tiled_path)

        headers = {"Authorization": f"Apikey {KEY}", "Accept": "application/octet-stream"}
        with httpx.Client(headers=headers, timeout=30) as http:
            def get(base: str, path: str, sl: str) -> np.ndarray:
                r = http.get(f"{base}/api/v1/array/full/{path}", params={"slice": sl})
                r.raise_for_status()
                return np.frombuffer(r.content, dtype="<u2")

            # the answers are right, and a 10-frame slice is one request
            np.testing.assert_array_equal(get(ours_url, f"{uid}/primary/data/img", "3").reshape(FRAME),
                                          expected[3])
            np.testing.assert_array_equal(
                get(ours_url, f"{uid}/primary/data/img", "5:15").reshape((10, *FRAME)), expected[5:15])
            one = {"ours, GET 1 frame": lambda i: get(ours_url, f"{uid}/primary/data/img", str(i % n))}
            ten = {"ours, GET 10 frames (1 request)":
                   lambda i: get(ours_url, f"{uid}/primary/data/img", f"{i % n}:{i % n + 10}")}
            if not args.no_tiled_directory:
                np.testing.assert_array_equal(get(tiled_url, tiled_path, "3").reshape(FRAME),
                                              expected[3])
                one["tiled serve directory, GET 1 frame"] = lambda i: get(tiled_url, tiled_path, str(i % n))
                ten["tiled serve directory, GET 10 frames"] = \
                    lambda i: get(tiled_url, tiled_path, f"{i % n}:{i % n + 10}")
            results.update(_interleaved(one, args.repeat))
            results.update(_interleaved(ten, args.repeat))

        client = databroker_lite.from_uri(ours_url, api_key=KEY)
        results["ours, load_array(uid, 'primary/img', (k,)) incl. look-up"] = _times(
            lambda i: client.load_array(uid, "primary/img", slices=(i % n,)), args.repeat)
        rimg = client[uid].primary.to_dask()["img"].data
        results["ours, remote to_dask()[k].compute()"] = _times(
            lambda i: rimg[i % n].compute(), args.repeat)

        print(f"\nremote reads: {args.frames} frames of {FRAME[0]}x{FRAME[1]} uint16, "
              f"HDF5 chunk = 1 frame; medians of {args.repeat}")
        for name, values in results.items():
            print(f"  {name:58s} {_fmt(values)}")
        if not args.no_tiled_directory:
            ours_t, base_t = (results["ours, GET 1 frame"],
                              results["tiled serve directory, GET 1 frame"])
            ours, base = statistics.median(ours_t), statistics.median(base_t)
            ok = base / ours >= 3
            print(f"\n  one frame (measured turn about): tiled serve directory / ours = "
                  f"{base / ours:.1f}x by medians, {min(base_t) / min(ours_t):.1f}x by minima "
                  f"(goal >= 3x: {'yes' if ok else 'NO'})")
        if args.clients:
            out = load_test(ours_url, uid, n, args.clients, args.seconds)
            print(f"\n  load: {args.clients} concurrent clients for {args.seconds:.0f} s against our "
                  f"server: {out['requests']} requests ({out['per_second']:.0f}/s), "
                  f"{len(out['errors'])} errors; latency p50 {out['p50'] * 1e3:.0f} ms, "
                  f"p99 {out['p99'] * 1e3:.0f} ms")
            print("  p99 by request: " + ", ".join(f"{k} {v * 1e3:.0f} ms"
                                                   for k, v in out["p99_by_kind"].items()))
            for e in out["errors"][:5]:
                print(f"  error: {e}")
        if args.profile:
            print()
            print(profile_in_process(tmp / "cat", uid))
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
