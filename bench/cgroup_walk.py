"""cgroup-progs at Cilium scale: 10,000 services with 3 backends each, in both generations'
maps, read once each, decoded and walked program by program.

Brings up the ``stale-cgroup-prog`` lab (real connect4 and post_bind4 programs, two
generations on one cgroup, maps of Cilium's 65536 entries, an empty side copy), then
fills each generation's service map (10,000 frontends + 30,000 slots) and backend map
(30,000 backends) with the kernel's batch update, the old generation's with one service
pointing elsewhere. Then times:

- ``netlab``: the investigation's inventory, LB maps (batch lookup, vectorised decode,
  each map once) and the walk of every service through both programs;
- baseline: what the previous version did for the maps alone, one ``bpftool -j map
  dump`` + JSON decode per program that uses a map (the same map dumped again for each);
- the whole ``netlab run cgroup-progs`` command, ``RUNS`` times (median), with where its
  time goes, read from the executed notebook's own timestamps (papermill records when
  each cell started and ended): until the first cell runs (interpreter, imports,
  parameter checks, the kernel's start), the first cell (the kernel's imports and
  ``init_notebook``), the investigation's cells, and after the last cell (kernel shutdown,
  the HTML report, exit).

Run: ``.venv/bin/python bench/run.py cgroup_walk`` (root; about 30 s).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import lab  # noqa: E402
from netlab.collectors import bpf_objects, bpfmap  # noqa: E402
from netlab.decoders import decode_lb_backends, decode_lb_services, map_layout  # noqa: E402
from netlab.decoders.bulk import encode  # noqa: E402
from netlab.investigations import get  # noqa: E402

NAME = "stale-cgroup-prog"
SERVICES, BACKENDS_EACH = 10_000, 3
RUNS = 5  # the whole command, median of


def _rows(stale: bool) -> tuple[bytes, bytes, bytes, bytes]:
    """Service and backend map contents (keys, values) for SERVICES services; in the
    stale generation's, backend 1 is another address."""
    svc, be = map_layout("lb4_services", "D"), map_layout("lb4_backends", "E")
    n = np.arange(SERVICES)
    address = [f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}" for i in n]
    slots = np.tile(np.arange(BACKENDS_EACH + 1), SERVICES)
    keys = pd.DataFrame(
        {"address": np.repeat(address, BACKENDS_EACH + 1), "dport": 80, "backend_slot": slots}
    )
    backend_ids = np.repeat(n * BACKENDS_EACH, BACKENDS_EACH + 1) + np.maximum(slots, 1)
    values = pd.DataFrame({
        "backend_id": np.where(slots == 0, 0, backend_ids),
        "count": np.where(slots == 0, BACKENDS_EACH, 0),
        "rev_nat_index": np.repeat(n + 1, BACKENDS_EACH + 1),
    })  # fmt: skip
    ids = np.arange(1, SERVICES * BACKENDS_EACH + 1)
    backends = pd.DataFrame({
        "address": [f"10.{200 + i // 65536}.{(i // 256) % 256}.{i % 256}" for i in ids], "port": 8080, "proto": 6,
    })  # fmt: skip
    if stale:
        backends.loc[0, "address"] = "10.250.0.1"
    return (encode(svc.key, keys), encode(svc.value, values),
            encode(be.key, pd.DataFrame({"backend_id": ids})), encode(be.value, backends))  # fmt: skip


def _fill(map_id: int, keys: bytes, values: bytes, key_size: int) -> None:
    lib = bpfmap.libbpf()
    fd = lib.bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        raise OSError(-fd, f"map {map_id}")
    try:
        count = len(keys) // key_size
        kbuf, vbuf = (
            ctypes.create_string_buffer(keys, len(keys)),
            ctypes.create_string_buffer(values, len(values)),
        )
        n = ctypes.c_uint32(count)
        rc = lib.bpf_map_update_batch(fd, kbuf, vbuf, ctypes.byref(n), None)
        if rc < 0:
            raise OSError(-rc, f"bpf_map_update_batch on map {map_id}")
    finally:
        os.close(fd)


PHASES = [
    ("until_first_cell", "until the first cell runs: interpreter, imports, parameter checks, kernel start"),
    ("first_cell", "first cell: the kernel's imports, init_notebook (sweep, guard)"),
    ("cells", "the investigation's cells (and papermill's saves between them)"),
    ("after", "after the last cell: kernel shutdown, findings, HTML report, exit"),
]


def _command(params: dict) -> dict[str, float]:
    """One ``netlab run cgroup-progs`` over every service: its time, and the phases read
    from the executed notebook (papermill's cell timestamps, the same clock)."""
    with tempfile.TemporaryDirectory() as out:
        started = time.time()
        subprocess.run([sys.executable, "-m", "netlab", "run", "cgroup-progs", "--target",
                        f"netns://{params['node_netns']}", "-p", "cgroup_root", params["attach_cgroup"], "--out", out],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        ended = time.time()
        (executed,) = Path(out).glob("*.ipynb")
        cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
        size = sum(f.stat().st_size for f in Path(out).glob("*.html")) / 1e6

    def at(cell: dict, key: str) -> float:
        return dt.datetime.fromisoformat(cell["metadata"]["papermill"][key]).timestamp()

    return {
        "total": ended - started,
        "until_first_cell": at(cells[0], "start_time") - started,
        "first_cell": at(cells[0], "end_time") - at(cells[0], "start_time"),
        "cells": at(cells[-1], "end_time") - at(cells[0], "end_time"),
        "after": ended - at(cells[-1], "end_time"),
        "html_mb": size,
    }


def main() -> None:
    lab.down(NAME)
    params = lab.up(NAME)
    try:
        run = get("cgroup-progs").start(
            f"netns://{params['node_netns']}", cgroup_root=params["attach_cgroup"]
        )
        run.inventory()
        progs, maps = run._progs, run._maps
        assert progs is not None and maps is not None
        connect = progs[progs["prog_id"].isin([params["old_prog_id"], params["new_prog_id"]])]
        names = dict(zip(maps["map_id"], maps["name"], strict=False))
        for prog_id, ids in zip(connect["prog_id"], connect["map_ids"], strict=True):
            svc = next(i for i in ids if names[i].startswith("cilium_lb4_serv"))
            back = next(i for i in ids if names[i].startswith("cilium_lb4_back"))
            skeys, svalues, bkeys, bvalues = _rows(stale=prog_id == params["old_prog_id"])
            _fill(svc, skeys, svalues, 12)
            _fill(back, bkeys, bvalues, 4)

        # netlab: a fresh run over every service (no lab: it would name one service).
        started = time.perf_counter()
        run = get("cgroup-progs").start(
            f"netns://{params['node_netns']}", cgroup_root=params["attach_cgroup"]
        )
        run.inventory()
        run.duplicate_maps()
        inventory = time.perf_counter() - started
        run.lb_maps()
        read = time.perf_counter() - started - inventory
        walk = run.connect_walk()
        total = time.perf_counter() - started
        findings = run.decide(run.collected())

        # Baseline: every program's maps dumped through bpftool JSON and decoded.
        started = time.perf_counter()
        for ids in progs["map_ids"]:
            for i in ids:
                if names[i].startswith("cilium_lb4_serv"):
                    decode_lb_services(bpf_objects.dump(run.target, i), map_name=names[i])
                elif names[i].startswith("cilium_lb4_back"):
                    decode_lb_backends(bpf_objects.dump(run.target, i), map_name=names[i])
        baseline = time.perf_counter() - started

        # The whole command, notebook kernel, report and HTML included.
        commands = [_command(params) for _ in range(RUNS)]
        command = {k: statistics.median(c[k] for c in commands) for k in commands[0]}

        rows = len(walk)
        print(
            f"{SERVICES:,} services x {BACKENDS_EACH} backends, 2 generations of the socket-LB family (connect4/6, post_bind4/6)"
        )
        print(
            f"| step | seconds |\n|---|---|\n| inventory + duplicate maps (bpftool -j show) | {inventory:.2f} |"
        )
        print(
            f"| LB maps: {run.results['lb_copies']['map_id'].nunique()} maps read once each, decoded | {read:.2f} |"
        )
        print(f"| walk: {rows:,} program steps | {total - inventory - read:.2f} |")
        print(f"| **netlab total** | **{total:.2f}** |")
        print(f"| baseline: bpftool JSON dump + decode per program using a map | {baseline:.2f} |")
        spread = sorted(c["total"] for c in commands)
        print(f"| `netlab run cgroup-progs` over every service, as a command (HTML of {command['html_mb']:.1f} MB; "
              f"median of {RUNS}, {spread[0]:.2f} to {spread[-1]:.2f}) | {command['total']:.2f} |")  # fmt: skip
        print("where the command's time goes (medians):")
        for key, what in PHASES:
            print(f"| {what} | {command[key]:.2f} |")
        print(f"verdict: {findings.verdict}")
    finally:
        lab.down(NAME)


if __name__ == "__main__":
    main()
