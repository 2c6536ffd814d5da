"""``netlab decode`` on a pasted bpftool map dump of a million lines.

Generates (no network, no root, no kernel) a ``bpftool map dump`` text of Cilium's
lb4 service map (12-byte key and value, one-line entries, 1% of them for 10.96.0.10)
under its command line and ``Found N elements`` trailer, and times, each in a fresh
process so peak memory is its own:

- ``grep``: ``grep -c 'key: 0a 60 00 0a'`` over the file (what is done by hand; baseline)
- ``naive``: a Python loop splitting each line into key and value bytes (baseline: the
  least any Python parser does)
- ``netlab``: ``netlab decode FILE`` printing the decoded table (layout detected from the
  map name and sizes) to /dev/null
- ``pasted``: the same dump as pasted into a mail: inside a markdown fence, every line
  quoted ``> `` (decoration stripped first)

Goal: ``netlab`` under 10 s for 1M lines. Run: ``.venv/bin/python bench/run.py decode_paste``
(``--lines N`` for another size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_SECONDS = 10.0
COMMAND = "$ bpftool map dump pinned /sys/fs/bpf/tc/globals/cilium_lb4_services_v2"


def write_dump(path: Path, entries: int, *, pasted: bool = False) -> None:
    """A bpftool text dump of ``entries`` one-line entries, written in chunks."""
    rng = np.random.default_rng(0)
    prefix = "> " if pasted else ""
    with path.open("w") as out:
        if pasted:
            out.write("On Monday the on-call wrote:\n\n> ```console\n")
        out.write(f"{prefix}{COMMAND}\n")
        step = 100_000
        for start in range(0, entries, step):
            n = min(step, entries - start)
            keys = np.zeros((n, 12), np.uint8)
            keys[:, :4] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
            keys[: n // 100, :4] = [10, 96, 0, 10]
            keys[:, 4:6] = [0, 80]
            keys[:, 6:8] = (
                (np.arange(start, start + n, dtype=np.uint32) % 65536)
                .astype("<u2")
                .view(np.uint8)
                .reshape(n, 2)
            )
            values = rng.integers(0, 256, (n, 12), dtype=np.uint8)
            lines = [
                f"{prefix}key: {k[:8].tobytes().hex(' ')}  {k[8:].tobytes().hex(' ')}  "
                f"value: {v[:8].tobytes().hex(' ')}  {v[8:].tobytes().hex(' ')}\n"
                for k, v in zip(keys, values, strict=True)
            ]
            out.writelines(lines)
        out.write(f"{prefix}Found {entries} elements\n")
        if pasted:
            out.write("> ```\n")


def route(name: str, path: str) -> dict[str, float]:
    """Run one route in this (fresh) process: seconds, rows, and peak RSS of the route
    (this process or the command it ran)."""
    start = time.perf_counter()
    if name == "grep":
        out = subprocess.run(["grep", "-c", "key: 0a 60 00 0a", path], capture_output=True, text=True).stdout
        rows = int(out.strip() or 0)
    elif name == "naive":
        rows = 0
        with open(path) as f:
            for line in f:
                head, sep, tail = line.partition("value:")
                if sep:
                    bytes.fromhex(head[4:])
                    bytes.fromhex(tail)
                    rows += 1
    elif name in ("netlab", "pasted"):
        netlab = Path(sys.executable).with_name("netlab")
        argv = [str(netlab)] if netlab.exists() else [sys.executable, "-m", "netlab"]
        with open(os.devnull, "w") as devnull:
            subprocess.run([*argv, "decode", path], stdout=devnull, check=True)
        rows = -1
    else:
        raise SystemExit(f"unknown route {name}")
    seconds = time.perf_counter() - start
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"seconds": seconds, "rows": rows, "peak_mb": peak / 1024}


def measure(name: str, path: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--route", name, "--file", path],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--route")
    parser.add_argument("--file")
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.route:
        print(json.dumps(route(args.route, args.file)))
        return
    with tempfile.TemporaryDirectory(prefix="nlab_bench_") as tmp:
        plain, pasted = Path(tmp, "dump.txt"), Path(tmp, "pasted.txt")
        write_dump(plain, args.lines)
        write_dump(pasted, args.lines, pasted=True)
        size_mb = plain.stat().st_size / 1e6
        print(f"{args.lines:,} entry lines, {size_mb:.0f} MB of text")
        print(f"{'route':>8} {'seconds':>9} {'peak MB':>8} {'x vs naive':>11}")
        results = {name: measure(name, str(pasted if name == "pasted" else plain))
                   for name in ("grep", "naive", "netlab", "pasted")}  # fmt: skip
        for name, r in results.items():
            print(
                f"{name:>8} {r['seconds']:9.2f} {r['peak_mb']:8.0f} {results['naive']['seconds'] / r['seconds']:11.2f}"
            )
        took = results["netlab"]["seconds"]
        verdict = "met" if took < GOAL_SECONDS else f"missed by {took - GOAL_SECONDS:.1f} s"
        print(f"goal: netlab decode under {GOAL_SECONDS:.0f} s for {args.lines:,} lines: {verdict}")


if __name__ == "__main__":
    main()
