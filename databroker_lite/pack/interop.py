"""``pack(..., format="msgpack")``: a databroker-pack style directory databroker 1.x reads."""
from __future__ import annotations

import json
import os
import time

import msgpack

from ..run import Run
from .files import copy_hashed, write_text_atomic
from .paths import CATALOG_YML, partial_name
from .plan import external_files, root_key
from .reports import PackReport


def export_msgpack(runs: list[Run], dest: str, *, quiet: bool = True) -> PackReport:
    """Write runs as a databroker-pack style directory that databroker 1.x reads."""
    t0 = time.perf_counter()
    report = PackReport(dest=dest, runs=[r.uid for r in runs], new_runs=[r.uid for r in runs])
    os.makedirs(os.path.join(dest, "documents"), exist_ok=True)
    root_map = {}
    for run in runs:
        out = os.path.join(dest, "documents", f"{run.uid}.msgpack")
        part = partial_name(out)
        try:
            with open(part, "wb") as f:
                for name, doc in run.documents():
                    f.write(msgpack.packb([name, doc], use_bin_type=True))
            os.replace(part, out)
        finally:
            if os.path.exists(part):
                os.remove(part)
        size = os.path.getsize(out)
        report.files_copied += 1
        report.bytes_copied += size
        report.bytes_total += size
        for root, srcf, rel in external_files(run):
            key = root_key(root)
            root_map[root] = f"external_files/{key}"
            d = os.path.join(dest, "external_files", key, rel)
            if not os.path.exists(d):
                size, _ = copy_hashed(srcf, d)
                report.bytes_copied += size
                report.files_copied += 1
            else:  # another run's, or a previous pack's
                size = os.path.getsize(d)
                report.files_reused += 1
            report.bytes_total += size
    lines = ["sources:", "  packed_catalog:", "    driver: bluesky-msgpack-catalog", "    args:",
             "      paths:", "      - '{{ CATALOG_DIR }}/documents/*.msgpack'"]
    if root_map:
        lines.append("      root_map:")
        lines += [f"        {json.dumps(k)}: '{{{{ CATALOG_DIR }}}}/{v}'" for k, v in root_map.items()]
    write_text_atomic(os.path.join(dest, CATALOG_YML), "\n".join(lines) + "\n")
    report.seconds = time.perf_counter() - t0
    return report
