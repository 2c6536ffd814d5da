"""Map dump and decode at Cilium scale.

Creates real pinned hash maps (netlab's prefix) with Cilium's lb4 service layout (12-byte
key, 12-byte value) of 1k, 64k and 1M entries and times, each in a fresh process so peak
memory is its own:

- ``bpftool``: ``bpftool -j map dump`` plus ``json.loads`` (the usual route; baseline)
- ``naive``: the same bytes decoded entry by entry in Python (baseline)
- ``shell``: the case's pipeline, ``bpftool map dump | grep -c '<ip hex>'`` (baseline)
- ``lookup``: the kernel's batch lookup alone, into two buffers (what any reader pays)
- ``netlab``: ``bpfmap.frame``: batch lookup and a compact vectorised decode into a
  DataFrame (IPv4 addresses as integers, formatted when shown)
- ``file``: reading a saved ``bpftool map dump`` text file with netlab's parser

Run: ``.venv/bin/python bench/run.py map_decode`` (``--full`` adds the bpftool JSON
route at 1M entries: about 25 s and 2 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fill, pinned_map  # noqa: E402

SIZES = {"1k": 1_000, "64k": 65_536, "1M": 1_000_000}
IP_HEX = "0a 60 00 0a"  # 10.96.0.10, the service the shell pipeline counts


def route(name: str, pin: str, dump_file: str) -> dict[str, float]:
    """Run one route in this process; return seconds and peak RSS in MB."""
    start = time.perf_counter()
    if name == "bpftool":
        out = subprocess.run(
            ["bpftool", "-j", "map", "dump", "pinned", pin], capture_output=True, check=True
        ).stdout
        rows = len(json.loads(out))
    elif name == "naive":
        import ipaddress
        import struct

        from netlab.collectors import bpfmap

        data = bpfmap.read(pin=pin)
        rows = 0
        for i in range(data.count):
            k = data.keys[i * 12 : (i + 1) * 12]
            address, dport, slot = struct.unpack_from(">4sHH", k)
            _ = (
                str(ipaddress.IPv4Address(address)),
                dport,
                slot,
                struct.unpack_from("<IHH", data.values, i * 12),
            )
            rows += 1
    elif name == "shell":
        out = subprocess.run(["sh", "-c", f"bpftool map dump pinned '{pin}' | grep -c 'key: {IP_HEX}'"],
                             capture_output=True, text=True).stdout  # fmt: skip
        rows = int(out.strip() or 0)
    elif name == "lookup":
        from netlab.collectors import bpfmap

        rows = bpfmap.read(pin=pin).count
    elif name == "netlab":
        from netlab.collectors import bpfmap

        rows = len(bpfmap.frame(pin=pin))
    elif name == "file":
        from netlab.decoders import parse_map_dump

        rows = len(parse_map_dump(Path(dump_file).read_text()))
    else:
        raise SystemExit(f"unknown route {name}")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak, "rows": rows}


def measure(name: str, pin: str, dump_file: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--route", name, "--pin", pin, "--dump-file", dump_file],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--route")
    parser.add_argument("--pin")
    parser.add_argument("--dump-file", default="")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--sizes", default="1k,64k,1M")
    parser.add_argument("--repeat", type=int, default=5, help="runs per route (half as many at 1M)")
    parser.add_argument("--show-runs", action="store_true", help="print every run's seconds")
    parser.add_argument("--maps", type=int, default=5, help="fresh maps the 64k goal is measured on")
    args = parser.parse_args()
    if args.route:
        print(json.dumps(route(args.route, args.pin, args.dump_file)))
        return
    baseline_rss = measure_empty()
    print(
        f"median of {args.repeat} runs per route at 1k and 64k, {max(1, args.repeat // 2)} at 1M; "
        "each run a fresh process"
    )
    print(f"{'size':>5} {'route':>8} {'seconds':>9} {'peak MB':>8} {'x vs bpftool':>13} {'x vs naive':>11}")
    rng = np.random.default_rng(0)
    for label in args.sizes.split(","):
        n = SIZES[label]
        keys = np.zeros((n, 12), np.uint8)
        keys[:, :4] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
        keys[: n // 100, :4] = [10, 96, 0, 10]
        keys[:, 4:8] = np.arange(n, dtype=np.uint32).view(np.uint8).reshape(n, 4)
        values = rng.integers(0, 256, (n, 12), dtype=np.uint8)
        routes = [name for name in ("bpftool", "naive", "shell", "lookup", "netlab", "file")
                  if not (name == "bpftool" and n > 65_536 and not args.full)
                  and not (name == "file" and n > 65_536)]  # fmt: skip
        repeat = args.repeat if n <= 65_536 else max(1, args.repeat // 2)
        results = timed_map(label, keys, values, routes, repeat, args.show_runs)
        for name, r in results.items():
            vs_json = results["bpftool"]["seconds"] / r["seconds"] if "bpftool" in results else float("nan")
            vs_naive = results["naive"]["seconds"] / r["seconds"]
            print(
                f"{label:>5} {name:>8} {r['seconds']:9.3f} {r['peak_mb'] - baseline_rss:8.0f} {vs_json:13.1f} {vs_naive:11.1f}"
            )
        raw_mb = n * 24 / 1e6
        peak = results["netlab"]["peak_mb"] - baseline_rss
        # The goals (issue #20) are for 1M entries, and against bpftool at 64k.
        big, mid = label == "1M", label == "64k"
        print(f"{label:>5} netlab total / batch lookup alone: {results['netlab']['seconds']:.3f} / "
              f"{results['lookup']['seconds']:.3f} s = {results['netlab']['seconds'] / results['lookup']['seconds']:.2f}"
              f"{' (goal <= 1.3)' if big else ''}; peak {peak:.0f} MB for {raw_mb:.1f} MB of map bytes"
              f" = {peak / raw_mb:.1f}x{' (goal <= 3)' if big else ''}")  # fmt: skip
        if "bpftool" not in results:
            continue
        ratios = [results["bpftool"]["seconds"] / results["netlab"]["seconds"]]
        if mid and args.maps > 1:
            # Where the entries fall in the buckets follows each map's hash seed, and one
            # map's figure once hid a cost a third of the maps paid (bench/README, section
            # 1). So the goal's figure is the median over fresh maps, each shown.
            print(f"{label:>5} the same entries in {args.maps - 1} more maps, each freshly created (its own "
                  f"allocation and hash seed), {repeat} runs each:")  # fmt: skip
            print(f"{'':>5} {'map':>8} {'lookup':>9} {'netlab':>8} {'bpftool':>8} {'x':>5}")
            first = results
            for i in range(1, args.maps):
                r = timed_map(
                    f"{label}_{i}", keys, values, ["bpftool", "lookup", "netlab"], repeat, args.show_runs
                )
                ratios.append(r["bpftool"]["seconds"] / r["netlab"]["seconds"])
                print(f"{'':>5} {i + 1:>8} {r['lookup']['seconds']:9.3f} {r['netlab']['seconds']:8.3f} "
                      f"{r['bpftool']['seconds']:8.3f} {ratios[-1]:5.0f}")  # fmt: skip
            print(f"{'':>5} {1:>8} {first['lookup']['seconds']:9.3f} {first['netlab']['seconds']:8.3f} "
                  f"{first['bpftool']['seconds']:8.3f} {ratios[0]:5.0f}  (the table above)")  # fmt: skip
        spread = (
            f", median of {len(ratios)} maps ({min(ratios):.0f}x to {max(ratios):.0f}x)"
            if len(ratios) > 1
            else ""
        )
        print(f"{label:>5} netlab vs bpftool JSON: {float(np.median(ratios)):.0f}x{spread}"
              f"{' (goal >= 40)' if mid else ''}")  # fmt: skip


def timed_map(name: str, keys: np.ndarray, values: np.ndarray, routes: list[str], repeat: int,
              show_runs: bool) -> dict[str, dict[str, float]]:  # fmt: skip
    """A fresh pinned map filled with the entries, each route run ``repeat`` times on it."""
    with (
        pinned_map(f"lb4_{name}", 12, 12, len(keys), "cilium_lb4_serv") as pin,
        tempfile.NamedTemporaryFile("w", suffix=".txt") as dump,
    ):
        fill(pin, keys, values)
        if "file" in routes:
            dump.write(
                subprocess.run(
                    ["bpftool", "map", "dump", "pinned", pin], capture_output=True, text=True
                ).stdout
            )
            dump.flush()
        # Each route in a fresh process, the routes interleaved, the median of the runs:
        # one run moves by a third between runs here (bpftool, and a cold first walk).
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in routes}
        for _ in range(repeat):
            for route_name in routes:
                runs[route_name].append(measure(route_name, pin, dump.name))
        if show_runs:
            print({k: [round(x["seconds"], 4) for x in v] for k, v in runs.items()})
        return {route_name: median_run(r) for route_name, r in runs.items()}


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median seconds (the slower middle run for an even count) and the highest peak."""
    seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
    return {"seconds": seconds, "peak_mb": max(r["peak_mb"] for r in runs), "rows": runs[0]["rows"]}


def measure_empty() -> float:
    code = "import resource, pandas, numpy; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    return float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


if __name__ == "__main__":
    main()
