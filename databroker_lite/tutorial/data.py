"""Tutorial catalogs, made here from a seed: no download, the same values every time.

``fetch_BMM_example()`` installs ``bluesky-tutorial-BMM``: X-ray absorption scans
(a Cu K-edge energy scan, scan_id 23463, and a few alignment scans) as taken at the
BMM beamline. ``fetch_RSOXS_example()`` installs ``bluesky-tutorial-RSOXS``: one
resonant soft X-ray scattering run (uid ``777b44a7-...``) with a stack of detector
images in ``primary`` and dark frames in ``dark``, large enough that reading it
lazily matters (about 250 MB in memory).

The numbers behind both live in ``tutorial_data/tutorial.json``, shipped in the
package. The data go to ``$DATABROKER_LITE_DATA_DIR/<catalog name>`` when that
variable is set, else to a ``data`` directory beside the first catalog-config
directory. Setting ``DATABROKER_LITE_TUTORIAL_SMALL=1`` shrinks the RSOXS images to a
few pixels: it is meant for test suites, not for learning.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from event_model import compose_run

from .. import config as _config
from ..catalogs import Catalog, open_catalog

__all__ = ["fetch_BMM_example", "fetch_RSOXS_example", "tutorial_data_dir"]

DATA_DIR_ENV = "DATABROKER_LITE_DATA_DIR"
SMALL_ENV = "DATABROKER_LITE_TUTORIAL_SMALL"
_MARKER = "tutorial-complete.json"
_UID_NAMESPACE = uuid.UUID("5d0f6c1e-3b7a-4c59-9f5e-4b1f0d7e2a10")
_HC = 0.262468  # 2 m_e / hbar**2 in 1/(eV Angstrom**2): k**2 = _HC * (E - E0)


# --- where things are ---------------------------------------------------------
def _parameters() -> dict:
    """The shipped parameters (``tutorial_data/tutorial.json``)."""
    here = Path(__file__).resolve().parent.parent  # the databroker_lite package
    for candidate in (here / "tutorial_data" / "tutorial.json",          # installed
                      here.parent / "tutorial_data" / "tutorial.json"):  # source tree
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    raise FileNotFoundError("tutorial_data/tutorial.json is missing from the databroker_lite "
                            f"installation at {here}; reinstall the package")


def tutorial_data_dir() -> Path:
    """The directory under which the tutorial catalogs' run files are written."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    config_dir = Path(_config.catalog_search_path()[0]).expanduser()
    return config_dir.parent / "data"


def _small() -> bool:
    return os.environ.get(SMALL_ENV, "").strip().lower() not in ("", "0", "false", "no")


# --- install once, regenerate when half made ------------------------------------
def _fetch(name: str, params: dict, generate: Callable[[Catalog, bool], None],
           progress: bool, summary: str = "") -> Catalog:
    target = tutorial_data_dir() / name
    target_s = os.fspath(target)
    if not _complete(target, params):
        if progress:  # one line before the bar: what is made, how big, where
            print(f"Making the tutorial catalog {name!r}: {summary}, in {target} (once: later "
                  "calls reuse it)", flush=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{name}.partial-*"):  # an interrupted earlier call
            shutil.rmtree(stale, ignore_errors=True)
        partial = target.parent / f".{name}.partial-{os.getpid()}"
        try:
            cat = open_catalog(partial, name=name)
            generate(cat, progress)
            cat._index.close()
            files = {p.name: p.stat().st_size for p in partial.glob("*.h5")}
            (partial / _MARKER).write_text(json.dumps({"parameters": params, "files": files},
                                                      indent=1, sort_keys=True))
            if target.exists():
                shutil.rmtree(target)
            os.replace(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    if not _installed(name, target_s):
        _config.install_catalog(target_s, name, overwrite=True)
    return _open_named(name, target_s)


def _complete(target: Path, params: dict) -> bool:
    try:
        marker = json.loads((target / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("parameters") != json.loads(json.dumps(params)):
        return False
    files = marker.get("files") or {}
    for fname, size in files.items():
        try:
            if (target / fname).stat().st_size != size:
                return False
        except OSError:
            return False
    return bool(files)


def _installed(name: str, target: str) -> bool:
    entry = _config.find_catalogs().get(name)
    if entry is None:
        return False
    try:
        return os.path.realpath(entry.path) == os.path.realpath(target)
    except _config.CatalogError:
        return False


def _open_named(name: str, target: str) -> Catalog:
    try:
        return _config.catalog[name]
    except (KeyError, _config.CatalogError):  # a search path that hides our config
        return open_catalog(target, mode="r", name=name)


def _uids(*parts: Any) -> Iterator[str]:
    i = 0
    while True:
        yield str(uuid.uuid5(_UID_NAMESPACE, "/".join(map(str, (*parts, i)))))
        i += 1


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm
    # leave=True: in a notebook the finished bar stays, showing 100%, in the saved output too
    return tqdm(total=total, desc=desc, unit="event", disable=not progress, leave=True)


# --- BMM: X-ray absorption spectroscopy -------------------------------------------
def fetch_BMM_example(*, progress: bool = True) -> Catalog:  # noqa: N802 - databroker's name
    """Install the catalog ``bluesky-tutorial-BMM`` and return it.

    Six runs from an XAS session on a Cu foil: scan_id 23463 (and 23464, a second
    sweep) are Cu K-edge energy scans with streams ``baseline`` and ``primary``
    (columns ``dcm_energy``, ``I0``, ``It``, ``Ir``, ``If``, ...); the others are
    ``count`` and ``rel_scan`` alignment runs. The first call generates the data (a
    second or so); later calls only return the catalog.

    Parameters
    ----------
    progress : show a progress bar while generating.
    """
    params = _parameters()["BMM"]
    n_events = sum(len(_xafs_grid(params)) if r["kind"] == "xafs" else r["num"] for r in params["runs"])
    summary = f"{len(params['runs'])} runs, {n_events} events of scalars, under 1 MB"
    return _fetch(params["catalog"], params, lambda cat, p: _make_bmm(cat, params, p), progress,
                  summary)


def _xafs_grid(p: dict) -> np.ndarray:
    e0 = p["e0"]
    pre = np.arange(e0 + p["pre_edge"][0], e0 + p["pre_edge"][1], p["pre_edge"][2])
    edge = np.arange(e0 + p["edge_region"][0], e0 + p["edge_region"][1], p["edge_region"][2])
    k0 = np.sqrt(_HC * p["edge_region"][1])
    k = np.arange(k0, p["k_max"] + 1e-9, p["k_step"])
    return np.round(np.concatenate([pre, edge, e0 + k**2 / _HC]), 3)


def _mu(energy: np.ndarray, p: dict) -> np.ndarray:
    """Absorption of a Cu foil: pre-edge slope, the edge, a post-edge decay and EXAFS."""
    e0, step = p["e0"], p["edge_step"]
    de = energy - e0
    mu = p["pre_edge_mu"] - 4e-4 * de                       # Victoreen-like pre-edge slope
    edge = 0.5 + np.arctan(de / 1.6) / np.pi                 # the edge itself
    shoulder = 0.12 * np.exp(-0.5 * ((de - 4.0) / 1.8) ** 2)  # Cu 1s -> 4p shoulder
    k = np.sqrt(_HC * np.clip(de, 0, None))
    chi = np.zeros_like(energy)
    kk = np.where(k > 0.5, k, 0.5)
    for r, n, sigma2 in p["shells"]:
        chi += (0.09 * n / (kk * r**2) * np.sin(2 * kk * r + 0.9 - 0.1 * kk)
                * np.exp(-2 * sigma2 * kk**2) * np.exp(-2 * r / 8.0))
    chi *= 1 - np.exp(-((np.clip(de, 0, None) / 15.0) ** 2))   # EXAFS starts above the edge
    post = 1 - 1.2e-4 * np.clip(de, 0, None)
    return mu + step * (edge * post * (1 + chi) + shoulder * edge)


def _baseline(bundle, uids: Iterator[str], t: float, cat: Catalog, values: dict[str, float], units: dict[str, str]) -> Any:
    desc = bundle.compose_descriptor(
        name="baseline", uid=next(uids), time=t,
        data_keys={k: {"dtype": "number", "shape": [], "source": f"PV:XF:06BM-{k}",
                       "units": units.get(k, "mm"), "object_name": k, "precision": 3}
                   for k in values})
    cat.insert("descriptor", desc.descriptor_doc)
    return desc


def _insert_baseline(cat: Catalog, desc, uids: Iterator[str], t: float, rng: np.random.Generator,
                     values: dict[str, float]) -> None:
    data = {k: float(round(v + 1e-4 * rng.standard_normal(), 4)) for k, v in values.items()}
    cat.insert("event", desc.compose_event(data=data, timestamps={k: t for k in data},
                                           uid=next(uids), time=t))


def _make_bmm(cat: Catalog, p: dict, progress: bool) -> None:
    rng = np.random.default_rng(p["seed"])
    t = p["start_time"]
    grid = _xafs_grid(p)
    n_events = sum(len(grid) if r["kind"] == "xafs" else r["num"] for r in p["runs"])
    baseline = {"xafs_x": 12.113, "xafs_y": 86.251, "xafs_pitch": 0.021, "xafs_roll": -0.004,
                "dcm_pitch": 3.871, "dcm_roll": -6.055, "m2_vertical": 6.99,
                "slits3_hsize": 7.0, "slits3_vsize": 1.0, "ring_current": 401.2}
    units = {"xafs_pitch": "deg", "xafs_roll": "deg", "dcm_pitch": "deg", "dcm_roll": "deg",
             "ring_current": "mA"}
    with _bar(n_events, p["catalog"], progress) as bar:
        for spec in p["runs"]:
            uids = _uids(p["catalog"], spec["scan_id"])
            md = {"scan_id": spec["scan_id"], "plan_name": spec["plan_name"],
                  "beamline_id": "BMM", "facility": "NSLS-II", "proposal": "307964",
                  "operator": "bravel", "sample": {"name": "Cu foil", "prep": "10 micron foil"},
                  "element": p["element"], "edge": p["edge"], "versions": {"bluesky": "1.6.0"}}
            if spec["kind"] == "xafs":
                x = grid
                md.update(motors=["dcm_energy"], detectors=["I0", "It", "Ir", "If"],
                          num_points=len(x), purpose="xafs", XDI={"Element": {"symbol": "Cu",
                          "edge": "K"}, "Scan": {"edge_energy": p["e0"]}, "sweep": spec["sweep"]},
                          hints={"dimensions": [[["dcm_energy"], "primary"]]})
            elif spec["kind"] == "line":
                center = baseline[spec["motor"]]
                x = np.round(center + np.linspace(*spec["span"], spec["num"]), 4)
                md.update(motors=[spec["motor"]], detectors=["I0", "It"], num_points=len(x),
                          purpose="alignment", hints={"dimensions": [[[spec["motor"]], "primary"]]})
            else:
                x = np.arange(spec["num"])
                md.update(detectors=["I0", "It", "Ir"], num_points=len(x), purpose="check",
                          hints={"dimensions": [[["time"], "primary"]]})
            bundle = compose_run(uid=next(uids), time=t, metadata=md)
            cat.insert("start", bundle.start_doc)
            bdesc = _baseline(bundle, uids, t, cat, baseline, units)
            _insert_baseline(cat, bdesc, uids, t + 0.1, rng, baseline)
            keys = _primary_keys(spec)
            desc = bundle.compose_descriptor(
                name="primary", uid=next(uids), time=t + 0.2, data_keys=keys,
                hints={k: {"fields": [k]} for k in ("I0", "It", "Ir", "If") if k in keys},
                object_keys={k: [k] for k in keys})
            cat.insert("descriptor", desc.descriptor_doc)
            t += 1.0
            for i, rows in enumerate(_primary_rows(spec, x, p, rng)):
                t += p["dwell_time"] + 0.35 + 0.05 * rng.random()
                cat.insert("event", desc.compose_event(
                    data=rows, timestamps={k: round(t - 0.01 * j, 6) for j, k in enumerate(rows)},
                    seq_num=i + 1, uid=next(uids), time=round(t, 6)))
                bar.update(1)
            t += 1.0
            _insert_baseline(cat, bdesc, uids, t, rng, baseline)
            cat.insert("stop", bundle.compose_stop(uid=next(uids), time=t + 0.1))
            t += 60.0


def _primary_keys(spec: dict) -> dict[str, dict]:
    def num(source: str, units: str | None = None, precision: int = 5) -> dict:
        out = {"dtype": "number", "shape": [], "source": source, "precision": precision}
        if units:
            out["units"] = units
        return out
    keys = {}
    if spec["kind"] == "xafs":
        keys["dcm_energy"] = num("PV:XF:06BMA-OP{Mono:DCM1-Ax:Bragg}Mtr.RBV", "eV", 3)
        keys["dcm_energy_setpoint"] = num("PV:XF:06BMA-OP{Mono:DCM1-Ax:Bragg}Mtr", "eV", 3)
    elif spec["kind"] == "line":
        keys[spec["motor"]] = num(f"PV:XF:06BMA-BI{{XAFS-Ax:{spec['motor']}}}Mtr.RBV", "mm", 4)
    for name in ("I0", "It", "Ir", "If"):
        if name in ("I0", "It") or spec["kind"] != "line":
            keys[name] = num(f"PV:XF:06BM-BI{{EM:1}}EM180:Current{name}", "nA")
    keys["dwti_dwell_time"] = num("PV:XF:06BM-BI{{EM:1}}EM180:AcquireTime", "s", 3)
    return keys


def _primary_rows(spec: dict, x: np.ndarray, p: dict, rng: np.random.Generator) -> Iterator[dict]:
    n = len(x)
    drift = 1 + 0.015 * np.sin(np.linspace(0, 2.5, n) + spec["scan_id"])
    i0 = p["i0_counts"] * drift * (1 + 2e-3 * rng.standard_normal(n))
    if spec["kind"] == "xafs":
        energy = x + 0.02 * rng.standard_normal(n)
        mu = _mu(energy, p)
        i0 = i0 * (energy / p["e0"]) ** -2.4          # ion chamber fills less at higher energy
        it = 0.92 * i0 * np.exp(-mu) * (1 + 5e-4 * rng.standard_normal(n))
        ir = 0.92 * it * np.exp(-(_mu(energy, p) - p["pre_edge_mu"] + 0.2))
        fl = 0.03 * i0 * (mu - p["pre_edge_mu"] + 4e-4 * (energy - p["e0"]) + 0.05)
        fl = fl * (1 + 2e-3 * rng.standard_normal(n))
        for i in range(n):
            yield {"dcm_energy": float(round(energy[i], 3)), "dcm_energy_setpoint": float(x[i]),
                   "I0": float(i0[i]), "It": float(it[i]), "Ir": float(ir[i]), "If": float(fl[i]),
                   "dwti_dwell_time": p["dwell_time"]}
    elif spec["kind"] == "line":
        edge = 0.5 * (1 + np.tanh((x - x.mean()) / 0.15))   # the sample edge moves into the beam
        it = 0.92 * i0 * np.exp(-(0.35 + 1.6 * edge)) * (1 + 5e-4 * rng.standard_normal(n))
        for i in range(n):
            yield {spec["motor"]: float(x[i]), "I0": float(i0[i]), "It": float(it[i]),
                   "dwti_dwell_time": p["dwell_time"]}
    else:
        it = 0.92 * i0 * np.exp(-(p["pre_edge_mu"] + p["edge_step"]))
        for i in range(n):
            yield {"I0": float(i0[i]), "It": float(it[i]), "Ir": float(it[i] * 0.3),
                   "If": float(i0[i] * 0.03), "dwti_dwell_time": p["dwell_time"]}


# --- RSOXS: resonant soft X-ray scattering images -----------------------------------
def fetch_RSOXS_example(*, progress: bool = True) -> Catalog:  # noqa: N802 - databroker's name
    """Install the catalog ``bluesky-tutorial-RSOXS`` and return it.

    One run, uid ``777b44a7-...``: an energy scan across the carbon K edge with a
    detector image per point. Stream ``primary`` has ``Synced_saxs_image`` (120 frames
    of shape (1, 1024, 1024), uint16) and scalars such as ``en_energy``; stream
    ``dark`` has 10 dark frames of the same shape. Generating it takes a few seconds
    and about 250 MB of disk; later calls only return the catalog.

    Set ``DATABROKER_LITE_TUTORIAL_SMALL=1`` (tests only) for tiny images.

    Parameters
    ----------
    progress : show a progress bar while generating.
    """
    params = dict(_parameters()["RSOXS"])
    params["image_shape"] = params["small_shape"] if _small() else params["shape"]
    h, w = params["image_shape"]
    frames = params["n_frames"] + params["n_dark"]
    summary = (f"1 run, {frames} detector frames of {h}x{w} uint16, about "
               f"{max(1, round(frames * h * w * 2 / 1e6))} MB")
    return _fetch(params["catalog"], params, lambda cat, p: _make_rsoxs(cat, params, p), progress,
                  summary)


def _saxs_model(p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed ingredients of every frame: radius map, isotropic background, beamstop mask."""
    h, w = p["image_shape"]
    scale = w / p["shape"][1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = 0.47 * h, 0.52 * w
    r = np.hypot(yy - cy, xx - cx)
    background = 3000.0 / (1 + (r / (60 * scale)) ** 2) ** 2 + 2.0
    stop = (r < 40 * scale) | ((np.abs(xx - cx) < 12 * scale) & (yy > cy))
    transmission = np.where(stop, 0.01, 1.0).astype(np.float32)
    return r / scale, background.astype(np.float32), transmission


def _make_rsoxs(cat: Catalog, p: dict, progress: bool) -> None:
    h, w = p["image_shape"]
    n, n_dark = p["n_frames"], p["n_dark"]
    uids = _uids(p["catalog"], p["uid"], h, w)
    rng = np.random.default_rng(p["seed"])
    fixed_pattern = rng.normal(p["dark_level"], 4.0, (h, w)).astype(np.float32)
    hot = rng.random((h, w)) < 2e-4
    fixed_pattern[hot] += 3000.0
    r, background, transmission = _saxs_model(p)
    energies = np.round(np.linspace(*p["energies"], n), 3)
    t = p["start_time"]
    md = {"scan_id": p["scan_id"], "plan_name": "full_carbon_scan_nd",
          "beamline_id": "SST-1 RSoXS", "facility": "NSLS-II", "sample_name": "PS-b-PMMA film",
          "sample": {"name": "PS-b-PMMA film", "thickness_nm": 100},
          "RSoXS_Config": "SAXS", "detectors": ["Synced_saxs", "Izero_Mesh_Drain_Current"],
          "motors": ["en_energy"], "num_points": n, "dark_frames": n_dark,
          "hints": {"dimensions": [[["en_energy"], "primary"]]}}
    bundle = compose_run(uid=p["uid"], time=t, metadata=md)
    cat.insert("start", bundle.start_doc)
    image_key = {"dtype": "array", "shape": [1, h, w], "dtype_numpy": "<u2",
                 "source": "PV:XF:07ID1-ES:1{GE:1}image1:ArrayData", "object_name": "Synced_saxs"}
    exposure_key = {"dtype": "number", "shape": [], "source": "PV:XF:07ID1-ES:1{GE:1}cam1:AcquireTime",
                    "units": "s", "object_name": "Synced_saxs"}
    base_keys = {k: {"dtype": "number", "shape": [], "source": f"PV:XF:07ID-ES{{{k}}}Mtr.RBV",
                     "units": "mm", "object_name": k} for k in ("RSoXS_Sample_Outboard_Inboard",
                                                               "RSoXS_Sample_Up_Down", "RSoXS_Sample_Rotation")}
    bdesc = bundle.compose_descriptor(name="baseline", uid=next(uids), time=t, data_keys=base_keys)
    cat.insert("descriptor", bdesc.descriptor_doc)
    base = {"RSoXS_Sample_Outboard_Inboard": -1.73, "RSoXS_Sample_Up_Down": 34.21,
            "RSoXS_Sample_Rotation": 0.0}

    def insert_baseline(at: float) -> None:
        cat.insert("event", bdesc.compose_event(data=base, timestamps={k: at for k in base},
                                                uid=next(uids), time=at))
    insert_baseline(t + 0.1)

    def frame(signal: np.ndarray | None, i: int) -> np.ndarray:
        g = np.random.default_rng([p["seed"], i])   # one stream per frame: order-independent
        counts = fixed_pattern if signal is None else fixed_pattern + signal
        noise = g.standard_normal((h, w), dtype=np.float32)
        var = 9.0 if signal is None else signal + 9.0
        img = counts + noise * np.sqrt(var)
        return np.clip(np.rint(img), 0, 65535).astype("<u2").reshape(1, h, w)

    with _bar(n + n_dark, p["catalog"], progress) as bar:
        ddesc = bundle.compose_descriptor(
            name="dark", uid=next(uids), time=t + 0.2,
            data_keys={"Synced_saxs_image": image_key, "Synced_saxs_cam_acquire_time": exposure_key})
        cat.insert("descriptor", ddesc.descriptor_doc)
        for i in range(n_dark):
            t += p["exposure"] + 0.4
            cat.insert("event", ddesc.compose_event(
                data={"Synced_saxs_image": frame(None, 10_000 + i),
                      "Synced_saxs_cam_acquire_time": p["exposure"]},
                timestamps={"Synced_saxs_image": t, "Synced_saxs_cam_acquire_time": t - 0.5},
                seq_num=i + 1, uid=next(uids), time=t, validate=False))
            bar.update(1)
        scalar_keys = {
            "en_energy": {"dtype": "number", "shape": [], "units": "eV", "precision": 3,
                          "source": "PV:XF:07ID1-OP{Mono:PGM1-Ax:Energy}Mtr.RBV", "object_name": "en"},
            "en_energy_setpoint": {"dtype": "number", "shape": [], "units": "eV", "precision": 3,
                                   "source": "PV:XF:07ID1-OP{Mono:PGM1-Ax:Energy}Mtr", "object_name": "en"},
            "en_polarization": {"dtype": "number", "shape": [], "units": "deg",
                                "source": "PV:SR:C07-ID:G1A{SST1:1}Pol", "object_name": "en"},
            "Izero_Mesh_Drain_Current": {"dtype": "number", "shape": [], "units": "A",
                                         "source": "PV:XF:07ID-ES1{Slt1:Mesh}I", "object_name": "Izero"},
            "Sample_Current": {"dtype": "number", "shape": [], "units": "A",
                               "source": "PV:XF:07ID-ES1{Smpl}I", "object_name": "Sample"},
        }
        desc = bundle.compose_descriptor(
            name="primary", uid=next(uids), time=t + 0.3,
            data_keys={"Synced_saxs_image": image_key, "Synced_saxs_cam_acquire_time": exposure_key,
                       **scalar_keys},
            hints={"Synced_saxs": {"fields": ["Synced_saxs_image"]},
                   "en": {"fields": ["en_energy"]}})
        cat.insert("descriptor", desc.descriptor_doc)
        ring = np.exp(-0.5 * ((r - p["q_peak_pixels"]) / 18.0) ** 2).astype(np.float32)
        for i, e in enumerate(energies):
            # the carbon edge: a pi* resonance at 285.3 eV, a sigma* hump, then absorption
            contrast = 1 + 6 * np.exp(-0.5 * ((e - 285.3) / 0.6) ** 2) + 1.5 * np.exp(-0.5 * ((e - 292.5) / 3.0) ** 2)
            flux = 0.6 + 0.4 * np.exp(-((e - 300.0) / 40.0) ** 2)
            absorb = np.exp(-0.8 * (0.5 + np.arctan((e - 284.5) / 0.8) / np.pi))
            signal = (flux * absorb) * (background + 800.0 * contrast * ring) * transmission
            t += p["exposure"] + 0.4
            izero = 1.2e-9 * flux * (1 + 2e-3 * rng.standard_normal())
            data = {"Synced_saxs_image": frame(signal, i),
                    "Synced_saxs_cam_acquire_time": p["exposure"],
                    "en_energy": float(round(e + 0.005 * rng.standard_normal(), 4)),
                    "en_energy_setpoint": float(e), "en_polarization": 0.0,
                    "Izero_Mesh_Drain_Current": float(izero),
                    "Sample_Current": float(izero * 0.4 * absorb)}
            cat.insert("event", desc.compose_event(
                data=data, timestamps={k: t for k in data}, seq_num=i + 1, uid=next(uids),
                time=t, validate=False))
            bar.update(1)
    insert_baseline(t + 0.5)
    cat.insert("stop", bundle.compose_stop(uid=next(uids), time=t + 1.0))
