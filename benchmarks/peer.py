"""6. Side by side with databroker 1.2.5 (msgpack catalog) and raw h5py, on the same data.

The peer runs in a venv of its own, built from ``benchmarks/peer-requirements.txt`` and
cached under ``~/.cache/databroker_lite-bench/peer-<hash>``. Each run's documents are
composed once, inserted into a databroker_lite catalog and written as a suitcase-msgpack
file (one ``<start uid>.msgpack`` per run, the layout databroker 1.x's
``BlueskyMsgpackCatalog`` reads). Every peer measurement runs in a fresh peer interpreter
with ``HOME`` pointed at a scratch directory, so nothing lands in the real intake config.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import event_model
import h5py
import msgpack
import numpy as np

import databroker_lite

from ._common import Baseline, Figure, timeit
from .catalog import PLANS, SAMPLES, SPACING, T0, start_metadata

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "peer-requirements.txt")
SIDE = os.path.join(HERE, "_side.py")
N_EVENTS, N_COLS = 50, 8
TASK_RUNS = 250


# ---------------------------------------------------------------- the peer venv
def peer_dir() -> str:
    """Where the peer venv for the current requirements file lives."""
    with open(REQUIREMENTS, "rb") as f:
        digest = hashlib.sha256(f.read() + sys.version.encode()).hexdigest()[:12]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "databroker_lite-bench", f"peer-{digest}")


def peer_python(build: bool) -> tuple[str | None, str]:
    """The peer interpreter, building the venv if allowed; (None, why) if there is none."""
    root = peer_dir()
    py = os.path.join(root, "bin", "python")
    if os.path.exists(os.path.join(root, "READY")):
        return py, f"cached peer venv {root}"
    if not build:
        return None, f"no cached peer venv at {root} and building it is off"
    shutil.rmtree(root, ignore_errors=True)   # a half-built venv from an interrupted build
    print(f"  building the databroker 1.2.5 peer venv in {root} (one time, a few minutes) ...",
          flush=True)
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "venv", root], check=True, capture_output=True)
        proc = subprocess.run([py, "-m", "pip", "install", "-q",
                               "-r", REQUIREMENTS], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-1500:])
    except (OSError, subprocess.SubprocessError, RuntimeError) as err:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"the peer venv could not be built: {err}"
    with open(os.path.join(root, "READY"), "w") as f:
        with open(REQUIREMENTS) as src:
            f.write(src.read())
    print(f"  peer venv built in {time.perf_counter() - t0:.0f} s", flush=True)
    return py, f"built peer venv {root}"


def peer_env(home: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "XDG_", "INTAKE_", "VIRTUAL_ENV"))}
    env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
               XDG_DATA_HOME=os.path.join(home, ".local", "share"))
    return env


def side(python: str, task: str, env: dict | None = None, **kwargs) -> dict:
    """Run one ``_side.py`` task in a fresh interpreter; its JSON answer."""
    if env is None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(HERE)
    proc = subprocess.run([python, SIDE, task, json.dumps(kwargs)], capture_output=True,
                          text=True, env=env, cwd=os.path.dirname(HERE), timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{task} ({kwargs.get('backend')}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the data
def scalar_run_docs(i: int) -> list[tuple[str, dict]]:
    """Run number ``i``: start, descriptor, one event page of 50 events x 8 float columns, stop."""
    t = T0 + i * SPACING
    rng = np.random.default_rng(i)
    keys = [f"c{j}" for j in range(N_COLS)]
    b = event_model.compose_run(time=t, metadata=start_metadata(i))
    d = b.compose_descriptor(name="primary", time=t, data_keys={
        k: {"dtype": "number", "shape": [], "source": "sim"} for k in keys})
    vals = rng.random((N_EVENTS, N_COLS))
    times = [t + 0.1 * k for k in range(N_EVENTS)]
    page = d.compose_event_page(
        data={k: vals[:, j].tolist() for j, k in enumerate(keys)},
        timestamps={k: times for k in keys}, seq_num=list(range(1, N_EVENTS + 1)),
        time=times, validate=False)
    return [("start", b.start_doc), ("descriptor", d.descriptor_doc), ("event_page", page),
            ("stop", b.compose_stop(time=t + 10))]


def image_run_docs(ext_dir: str, n: int, h: int, w: int, i: int) -> list[tuple[str, dict]]:
    """An image run whose frames live in an external AD_HDF5 file (written here).

    Each datum is one frame (``frame_per_point=1``); as ophyd describes area detectors, the
    data key's shape is ``[1, h, w]`` (what an AD_HDF5 handler returns per datum), so a
    frame read back is ``(1, h, w)`` on both sides."""
    os.makedirs(ext_dir, exist_ok=True)
    with h5py.File(os.path.join(ext_dir, "image.h5"), "w") as f:
        ds = f.create_dataset("entry/data/data", shape=(n, h, w), dtype="<u2", chunks=(1, h, w))
        for k in range(n):
            ds[k] = frame_values(k, h, w)
    t = T0 + i * SPACING
    b = event_model.compose_run(time=t, metadata={**start_metadata(i), "plan_name": "count"})
    res = b.compose_resource(spec="AD_HDF5", root=ext_dir, resource_path="image.h5",
                             resource_kwargs={"frame_per_point": 1})
    datums = [res.compose_datum(datum_kwargs={"point_number": k}) for k in range(n)]
    d = b.compose_descriptor(name="primary", time=t, data_keys={
        "img": {"dtype": "array", "shape": [1, h, w], "dtype_numpy": "<u2", "source": "sim",
                "external": "FILESTORE:"}})
    times = [t + 0.1 * k for k in range(n)]
    page = d.compose_event_page(data={"img": [x["datum_id"] for x in datums]},
                                timestamps={"img": times}, seq_num=list(range(1, n + 1)),
                                time=times, filled={"img": [False] * n}, validate=False)
    return [("start", b.start_doc), ("descriptor", d.descriptor_doc),
            ("resource", res.resource_doc), ("datum_page", event_model.pack_datum_page(*datums)),
            ("event_page", page), ("stop", b.compose_stop(time=t + n))]


def frame_values(k: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(10_000 + k).integers(0, 4096, size=(h, w), dtype=np.uint16)


def write_both(docs: list[tuple[str, dict]], cat: databroker_lite.Catalog,
               msgpack_dir: str | None) -> None:
    """Insert ``docs`` into ``cat`` and write them as ``<uid>.msgpack`` (suitcase layout)."""
    for name, doc in docs:
        cat.insert(name, doc)
    if msgpack_dir:
        uid = docs[0][1]["uid"]
        with open(os.path.join(msgpack_dir, f"{uid}.msgpack"), "xb") as f:
            for name, doc in docs:
                f.write(msgpack.packb((name, doc), use_bin_type=True))


def _gen_task(part: str, msgpack_dir: str | None, first: int, stop: int) -> list[str]:
    cat = databroker_lite.open_catalog(part)
    uids = []
    for i in range(first, stop):
        docs = scalar_run_docs(i)
        write_both(docs, cat, msgpack_dir)
        uids.append(docs[0][1]["uid"])
    return uids


def build_scalar(directory: str, msgpack_dir: str | None, n_runs: int,
                 workers: int) -> list[str]:
    """``n_runs`` scalar runs in our catalog ``directory`` (index built on first open) and as
    msgpack files; the uids in run order."""
    parts = directory + ".parts"
    os.makedirs(directory, exist_ok=True)
    if msgpack_dir:
        os.makedirs(msgpack_dir, exist_ok=True)
    tasks = [(os.path.join(parts, f"{a:07d}"), msgpack_dir, a, min(a + TASK_RUNS, n_runs))
             for a in range(0, n_runs, TASK_RUNS)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        uids = [u for chunk in pool.map(_gen_task, *zip(*tasks)) for u in chunk]
    for part, *_ in tasks:
        for name in os.listdir(part):
            if name.endswith(".h5"):
                os.rename(os.path.join(part, name), os.path.join(directory, name))
    shutil.rmtree(parts)
    return uids


# ---------------------------------------------------------------- the measurements
def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _flat(samples: list[dict], key: str) -> list[float]:
    out: list[float] = []
    for s in samples:
        v = s[key]
        out += v if isinstance(v, list) else [v]
    return out


# Started by a small interpreter, not by this process: a child's ru_maxrss includes the
# peak of the process it was spawned from (Linux records the old memory's high-water mark
# at exec), and this one holds GBs by then. The launcher times the command and writes
# "seconds maxrss_kb" to the file named by its first argument.
_LAUNCH = ("import os, sys, time; t = time.perf_counter(); pid = os.posix_spawnp(sys.argv[2], "
           "sys.argv[2:], os.environ); _, st, ru = os.wait4(pid, 0); dt = time.perf_counter() - t; "
           "open(sys.argv[1], 'w').write(f'{dt} {ru.ru_maxrss}'); "
           "sys.exit(os.waitstatus_to_exitcode(st))")


def _wait_rss(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run ``cmd``; its wall seconds and peak RSS in MB (from wait4, in a small launcher)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCH, out.name, *cmd],
                              env=env, capture_output=True)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{err[-3000:]}")
        dt, kb = out.read().split()
    return float(dt), int(kb) / 1024


def _check_pack(dest: str, uids: list[str], who: str) -> None:
    """The same check of either pack: a file named by every run's uid, and the image file."""
    copied = [os.path.join(r, x) for r, _, fs in os.walk(dest) for x in fs]
    names = " ".join(os.path.basename(x) for x in copied)
    missing = [u for u in uids if u not in names]
    assert not missing, f"{who} packed no file for runs {missing[:3]}"
    assert any(x.endswith("image.h5") for x in copied), f"{who} copied no image file"


def _check_our_pack(dest: str, src: str, ext_file: str, n_runs: int, img_uid: str) -> None:
    """Our pack verifies (every checksum recomputed), holds every run and the image file
    byte for byte, and reads back what the source catalog reads."""
    from databroker_lite.pack.files import same_bytes
    report = databroker_lite.verify(dest)
    if not report.ok:
        raise RuntimeError(f"pack benchmark: verify({dest}) fails:\n{report}")
    packed, source = databroker_lite.open_catalog(dest, "r"), databroker_lite.open_catalog(src, "r")
    if len(packed) != n_runs:
        raise RuntimeError(f"pack benchmark: {len(packed)} runs in the pack, not {n_runs}")
    images = [os.path.join(r, x) for r, _, fs in os.walk(dest) for x in fs if x == "image.h5"]
    if len(images) != 1 or not same_bytes(images[0], ext_file):
        raise RuntimeError(f"pack benchmark: the pack's image files {images} differ from {ext_file}")
    for uid in (img_uid, next(iter(source))):
        a, b = source[uid].primary.read(), packed[uid].primary.read()
        if any(not np.array_equal(a[k].values, b[k].values) for k in a.data_vars):
            raise RuntimeError(f"pack benchmark: run {uid} reads back different from the pack")


def _check_their_pack(dest: str, ext_file: str, n_runs: int) -> None:
    """databroker-pack's output holds a document file per run and the image file byte for byte."""
    from databroker_lite.pack.files import same_bytes
    files = [os.path.join(r, x) for r, _, fs in os.walk(dest) for x in fs]
    docs = [x for x in files if x.endswith(".msgpack")]
    images = [x for x in files if x.endswith("image.h5")]
    if len(docs) != n_runs or len(images) != 1 or not same_bytes(images[0], ext_file):
        raise RuntimeError(f"databroker-pack wrote {len(docs)} document files (not {n_runs}) "
                           f"and image files {images}, not a copy of {ext_file}")


def bench_peer(tmp: str, quick: bool, repeat: int, workers: int, peer: bool | None,
               rng: np.random.Generator) -> list[Figure]:
    """The side-by-side figures of issue 6."""
    sec = "6. vs databroker 1.2.5"
    n_runs = 300 if quick else 10_000
    n, h, w = (50, 256, 256) if quick else (500, 512, 512)
    frame = min(100, n - 1)
    n_pack = 10 if quick else 100
    n_loop = 20 if quick else 200
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if peer is False:
        py, why = None, "--no-peer"
    else:
        build = peer is True or not (quick and in_ci)
        py, why = peer_python(build)
        if py is None and not build:
            why += " (CI=true in quick mode: the peer venv is not built in CI; pass --peer to force)"
    # fresh processes per cold figure (quick without the peer: CI, one each)
    cold = 3 if not quick else (2 if py else 1)
    if py is None:
        print(f"  peer skipped: {why}; databroker_lite and h5py figures only", flush=True)
    else:
        print(f"  peer: {why}", flush=True)
    home = os.path.join(tmp, "peer-home")
    os.makedirs(home, exist_ok=True)
    penv = peer_env(home)
    ours_py = sys.executable

    # -- data: scalar runs, the image run, and a smaller catalog for pack
    lite_dir, mp_dir = os.path.join(tmp, "p-lite"), (os.path.join(tmp, "p-msgpack") if py else None)
    t0 = time.perf_counter()
    uids = build_scalar(lite_dir, mp_dir, n_runs, workers)
    print(f"  {n_runs:,} runs of {N_EVENTS} events x {N_COLS} columns written in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    img_lite, img_mp = os.path.join(tmp, "i-lite"), (os.path.join(tmp, "i-msgpack") if py else None)
    ext = os.path.join(tmp, "external")
    img_docs = image_run_docs(ext, n, h, w, n_runs)
    img_uid = img_docs[0][1]["uid"]
    if img_mp:
        os.makedirs(img_mp)
    write_both(img_docs, databroker_lite.open_catalog(img_lite), img_mp)
    pk_lite, pk_mp = os.path.join(tmp, "k-lite"), (os.path.join(tmp, "k-msgpack") if py else None)
    pk_cat = databroker_lite.open_catalog(pk_lite)
    if pk_mp:
        os.makedirs(pk_mp)
    pack_uids = [img_uid]
    for i in range(n_pack):
        docs = scalar_run_docs(i)
        write_both(docs, pk_cat, pk_mp)
        pack_uids.append(docs[0][1]["uid"])
    write_both(img_docs, pk_cat, pk_mp)
    del pk_cat
    databroker_lite.open_catalog(lite_dir)   # build the index once (mode "a" writes it)

    figs: list[Figure] = []

    def fig(op: str, unit: str, ours: list[float], bases: list[tuple], note: str = "") -> None:
        """``bases``: (name, samples or None when not measured, ratio goal or None)."""
        figs.append(Figure(sec, op, unit, ours, [Baseline(*b) for b in bases if b[1]], None,
                           note))

    t_sec = time.perf_counter()

    def step(what: str) -> None:
        print(f"  [{time.perf_counter() - t_sec:5.0f} s] {what} ...", flush=True)

    # -- catalog: cold open, look-ups, searches
    step("catalog open, look-ups, searches")
    k = 5
    scan_ids = [int(x) for x in rng.integers(1, n_runs + 1, size=k)]
    # an all-digit prefix would be read as a scan_id (by both libraries)
    prefixes = [p for p in (uids[int(j)][:8] for j in rng.permutation(n_runs))
                if not p.isdigit()][:k]
    day = T0 + SPACING * (n_runs // 2)
    qargs = dict(scan_ids=scan_ids, prefixes=prefixes, plan=PLANS[3], sample=SAMPLES[5],
                 tr=[day, day + 86400.0], sid=[n_runs // 3, n_runs // 3 + 100])
    # both sides sampled alike: the same processes, look-ups and searches per process
    ours_c = [side(ours_py, "catalog", backend="lite", path=lite_dir, searches=3, **qargs)
              for _ in range(cold)]
    theirs_c = ([side(py, "catalog", penv, backend="databroker", path=mp_dir, searches=3, **qargs)
                 for _ in range(cold)] if py else None)
    for s in ours_c + (theirs_c or []):
        assert s["n"] == n_runs, s["n"]
        assert s["last_uid"] == uids[-1] and s["scan_id_found"] == scan_ids
        assert [u[:8] for u in s["prefix_found"]] == prefixes
    if theirs_c:
        assert theirs_c[0]["counts"] == ours_c[0]["counts"], (theirs_c[0]["counts"],
                                                              ours_c[0]["counts"])
    P = "databroker 1.2.5"

    def pe(key: str) -> list[float] | None:
        return _flat(theirs_c, key) if theirs_c else None
    note_n = f"{n_runs:,} runs"
    fig(f"catalog open + len(), {note_n} (fresh process)", "s", _flat(ours_c, "open_s"),
        [(P, pe("open_s"), 0.01)],
        note=f"import: ours {_med(_flat(ours_c, 'import_s')):.2f} s"
             + (f", databroker {_med(pe('import_s')):.2f} s" if theirs_c else ""))
    fig("cat[-1].metadata", "s", _flat(ours_c, "last"), [(P, pe("last"), 0.01)],
        note="each look-up timed with .metadata on both sides (ours reads it from the index row)")
    fig("cat[scan_id].metadata", "s", _flat(ours_c, "scan_id"), [(P, pe("scan_id"), 0.01)])
    fig("cat['<8-char uid prefix>'].metadata", "s", _flat(ours_c, "prefix"),
        [(P, pe("prefix"), 0.01)])
    cnt = ours_c[0]["counts"]
    for key, label in (("plan", f"search plan_name ({cnt['plan']} hits)"),
                       ("time", f"search TimeRange one day ({cnt['time']} hits)"),
                       ("nested", f"search nested key sample.name ({cnt['nested']} hits)"),
                       ("range", f"search scan_id range ({cnt['range']} hits)")):
        fig(label, "s", _flat(ours_c, "search_" + key), [(P, pe("search_" + key), 0.01)])

    # -- scalar read
    step("scalar reads")
    pick = [uids[int(j)] for j in rng.integers(0, n_runs, size=5)]
    loop = uids[:n_loop]
    ours_s = [side(ours_py, "scalar", backend="lite", path=lite_dir, uids=pick, loop_uids=loop)
              for _ in range(cold)]
    theirs_s = ([side(py, "scalar", penv, backend="databroker", path=mp_dir, uids=pick,
                      loop_uids=loop) for _ in range(cold)] if py else None)
    assert ours_s[0]["shape"] == [N_EVENTS]
    if theirs_s:
        assert np.allclose(theirs_s[0]["sums"], ours_s[0]["sums"])
        assert np.isclose(theirs_s[0]["loop_sum"], ours_s[0]["loop_sum"])
    cat = databroker_lite.open_catalog(lite_dir, "r")
    run = cat[pick[0]]
    seg = run.primary.segments[0]
    names = [f"{seg.group}/time", *(f"{seg.group}/data/c{j}" for j in range(N_COLS))]

    def h5_read() -> None:
        with h5py.File(run.path, "r") as f:
            [f[x][:] for x in names]
    h5s = timeit(h5_read, repeat * 3, warmup=1)
    fig(f"cat[uid].primary.read(), {N_EVENTS} events x {N_COLS} columns", "s",
        _flat(ours_s, "read"),
        [(P, _flat(theirs_s, "read") if theirs_s else None, 0.05),
         ("h5py: File() + 9 datasets [:]", h5s, 2.0)],
        note="goals: >= 20x faster than databroker (<= 0.05x) and <= 2x raw h5py; "
             "the first read of each process is included")
    fig(f"read {n_loop} runs' primary streams in a loop", "s", _flat(ours_s, "loop"),
        [(P, _flat(theirs_s, "loop") if theirs_s else None, 0.05)])

    # -- what a new user pays once: nothing imported before the first read
    step("first use in fresh processes")
    firsts = uids[-cold:]
    ours_f = [side(ours_py, "first_read", backend="lite", path=lite_dir, uid=u) for u in firsts]
    h5_f = [side(ours_py, "first_read", backend="h5py", path=cat[u].path, names=names)
            for u in firsts]
    theirs_f = ([side(py, "first_read", penv, backend="databroker", path=mp_dir, uid=u)
                 for u in firsts] if py else None)
    for a, b in zip(ours_f, h5_f):
        assert np.isclose(a["sum"], b["sum"])
    for a, b in zip(ours_f, theirs_f or []):
        assert np.isclose(a["sum"], b["sum"])
    fig("first read of a fresh process: import + open + cat[uid].primary.read()", "s",
        _flat(ours_f, "seconds"),
        [(P, _flat(theirs_f, "seconds") if theirs_f else None, None),
         ("h5py: import + File() + 9 datasets [:]", _flat(h5_f, "seconds"), None)],
        note="nothing pre-imported: what a new session pays once. Ours: import "
             f"{_med(_flat(ours_f, 'import_s')):.2f} s, the read {_med(_flat(ours_f, 'read_s')):.2f} s "
             "(xarray's first Dataset imports pandas and what it finds installed; our venv "
             "has distributed and pint through the test extras, databroker's has neither)"
             + (f"; databroker: import {_med(_flat(theirs_f, 'import_s')):.2f} s, "
                f"the read {_med(_flat(theirs_f, 'read_s')):.2f} s" if theirs_f else ""))
    fig("  whole-process peak RSS after that first read", "MB", _flat(ours_f, "peak_mb"),
        [(P, _flat(theirs_f, "peak_mb") if theirs_f else None, None),
         ("h5py", _flat(h5_f, "peak_mb"), None)])

    # -- the image run
    step("image run")
    ext_file = os.path.join(ext, "image.h5")
    label = f"{n} x {h} x {w} uint16, external AD_HDF5"
    ours_i = [side(ours_py, "image", backend="lite", path=img_lite, uid=img_uid, frame=frame)
              for _ in range(cold)]
    h5_i = [side(ours_py, "image", backend="h5py", path=ext_file, frame=frame)
            for _ in range(cold)]
    dk_i = [side(ours_py, "image", backend="dask", path=ext_file, frame=frame)
            for _ in range(cold)]
    theirs_i = ([side(py, "image", penv, backend="databroker", path=img_mp, uid=img_uid,
                      frame=frame) for _ in range(cold)] if py else None)
    expect = int(frame_values(frame, h, w).sum())
    ours_i0 = [side(ours_py, "image", backend="lite", path=img_lite, uid=img_uid, frame=frame,
                    warm=False) for _ in range(cold)]
    theirs_i0 = ([side(py, "image", penv, backend="databroker", path=img_mp, uid=img_uid,
                       frame=frame, warm=False) for _ in range(cold)] if py else None)
    for s in ours_i + h5_i + dk_i + (theirs_i or []) + ours_i0 + (theirs_i0 or []):
        assert s["frame_sum"] == expect, (s["frame_sum"], expect)
        assert np.isclose(s["mean_sum"], h5_i[0]["mean_sum"])

    def ti(key: str) -> list[float] | None:
        return _flat(theirs_i, key) if theirs_i else None
    fig(f"run.primary.to_dask() build, {label}", "s", _flat(ours_i, "to_dask"),
        [(P, ti("to_dask"), 0.02)])
    fig(f"to_dask()['img'][{frame}].compute(), cold", "s", _flat(ours_i, "frame"),
        [(P, ti("frame"), 0.02), ("h5py: File() + ds[k]", _flat(h5_i, "frame"), 2.0),
         ("dask floor: from_array(ds)[k].compute()", _flat(dk_i, "frame"), None)],
        note="goals: >= 50x faster than databroker (<= 0.02x) and <= 2x raw h5py")
    fig(f"first frame of a fresh process: import + open + to_dask()['img'][{frame}].compute()", "s",
        _flat(ours_i0, "first_use"),
        [(P, _flat(theirs_i0, "first_use") if theirs_i0 else None, None),
         ("h5py: import + File() + ds[k]", _flat(h5_i, "first_use"), None)],
        note="nothing pre-imported (the row above pre-imports xarray, dask, distributed and pint "
             "on both sides): dask's first compute imports distributed where installed (ours)")
    fig("one more frame, warm (best of 5)", "s", _flat(ours_i, "frame_warm"),
        [("h5py: ds[k]", _flat(h5_i, "frame_warm"), 2.0), (P, ti("frame_warm"), None),
         ("dask floor: from_array(ds)[k].compute()", _flat(dk_i, "frame_warm"), None)],
        note="the dask floor is what computing one frame through any dask graph costs")
    fig("to_dask()['img'].mean('time').compute()", "s", _flat(ours_i, "mean"),
        [("h5py: chunk-by-chunk mean", _flat(h5_i, "mean"), 1.3), (P, ti("mean"), None),
         ("dask floor: from_array(ds).mean(0)", _flat(dk_i, "mean"), None)])
    ours_r = [side(ours_py, "image_read", backend="lite", path=img_lite, uid=img_uid)
              for _ in range(cold)]
    h5_r = [side(ours_py, "image_read", backend="h5py", path=ext_file) for _ in range(cold)]
    theirs_r = ([side(py, "image_read", penv, backend="databroker", path=img_mp, uid=img_uid)
                 for _ in range(cold)] if py else None)
    for s in ours_r + h5_r + (theirs_r or []):
        assert s["sum"] == h5_r[0]["sum"] and np.prod(s["shape"]) == n * h * w, s
    mb = n * h * w * 2 / 2**20
    fig(f"run.primary.read() of the whole stack ({mb:.0f} MB)", "s", _flat(ours_r, "seconds"),
        [("h5py: ds[:]", _flat(h5_r, "seconds"), 1.3),
         (P, _flat(theirs_r, "seconds") if theirs_r else None, None)])
    fig("whole-process peak RSS of that read (imports included)", "MB", _flat(ours_r, "peak_mb"),
        [("h5py: ds[:]", _flat(h5_r, "peak_mb"), None),
         (P, _flat(theirs_r, "peak_mb") if theirs_r else None, None)])
    fig("peak RSS added by that read", "MB", _flat(ours_r, "op_mb"),
        [("h5py: ds[:]", _flat(h5_r, "op_mb"), 1.3),
         (P, _flat(theirs_r, "op_mb") if theirs_r else None, None)],
        note="VmHWM after minus VmRSS before (imports excluded); whole-process peaks: ours "
             f"{_med(_flat(ours_r, 'peak_mb')):.0f} MB, h5py {_med(_flat(h5_r, 'peak_mb')):.0f} MB"
             + (f", databroker {_med(_flat(theirs_r, 'peak_mb')):.0f} MB" if theirs_r else ""))

    # -- pack: n_pack scalar runs + the image run
    step("pack")
    ext_mb = os.path.getsize(ext_file) / 1e6
    dest = os.path.join(tmp, "pack-out")

    def clear() -> None:
        shutil.rmtree(dest, ignore_errors=True)
    cp_src = [pk_lite, ext]
    ours_p, cp_p = [], []
    ours_rss = []
    n_pk = max(cold, 5) if not quick else cold  # whole commands: medians of at least 5
    for i in range(n_pk):
        clear()
        t, rss = _wait_rss([ours_py, "-c", "import sys, databroker_lite; "
                            "databroker_lite.pack(sys.argv[1], sys.argv[2], all=True, quiet=True)",
                            pk_lite, dest], dict(os.environ))
        ours_p.append(t)
        ours_rss.append(rss)
        if i == 0:  # checked in a child: reading the image run would grow this process
            _check_pack(dest, pack_uids, "databroker_lite.pack")
            chk = subprocess.run([ours_py, "-c", "import sys, json; from benchmarks.peer import "
                                  "_check_our_pack; _check_our_pack(*json.loads(sys.argv[1]))",
                                  json.dumps([dest, pk_lite, ext_file, n_pack + 1, img_uid])],
                                 cwd=os.path.dirname(HERE), capture_output=True, text=True)
            if chk.returncode:
                raise RuntimeError(f"our pack fails its check:\n{chk.stderr[-3000:]}")
        clear()
        os.makedirs(dest)
        cp_p.append(_wait_rss(["cp", "-r", *cp_src, dest], dict(os.environ))[0])
    clear()
    total_mb = (sum(os.path.getsize(os.path.join(pk_lite, x)) for x in os.listdir(pk_lite)
                    if x.endswith(".h5")) / 1e6 + ext_mb)
    theirs_p, theirs_rss = [], []
    if py:
        cfgdir = os.path.join(home, ".local", "share", "intake")
        os.makedirs(cfgdir, exist_ok=True)
        with open(os.path.join(cfgdir, "bench.yml"), "w") as f:
            f.write("sources:\n  bench:\n    driver: bluesky-msgpack-catalog\n    args:\n"
                    f"      paths: ['{pk_mp}/*.msgpack']\n")
        tool = os.path.join(os.path.dirname(py), "databroker-pack")
        for _ in range(n_pk):
            clear()
            t, rss = _wait_rss([py, tool, "bench", "--all", "--copy-external", "--strict", dest], penv)
            theirs_p.append(t)
            theirs_rss.append(rss)
        _check_pack(dest, pack_uids, "databroker-pack")
        _check_their_pack(dest, ext_file, n_pack + 1)
        clear()
    fig(f"pack {n_pack} scalar runs + the image run ({total_mb:.0f} MB), with checksums", "s",
        ours_p, [(P + "-pack --copy-external", theirs_p or None, 0.2),
                 ("cp -r of the same files", cp_p, 1.25)],
        note="whole command in a fresh process; goals: >= 5x faster than databroker-pack "
             "(<= 0.2x) and >= 80% of cp -r throughput (<= 1.25x its time)")
    fig("pack: peak RSS of the process", "MB", ours_rss,
        [(P + "-pack", theirs_rss or None, None)])
    if py is None:
        figs[0].note = f"peer skipped: {why}. " + figs[0].note
    return figs
