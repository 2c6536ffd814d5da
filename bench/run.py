"""Run the benchmarks: ``python bench/run.py [map_decode|trace_overhead|report_latency|decode_paste ...]``.
Each prints its figures with the baseline measured in the same run; bench/README.md
records the latest results."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = ["map_decode", "trace_overhead", "report_latency", "decode_paste", "sockmap_join", "cgroup_walk"]


def main() -> int:
    chosen = [a for a in sys.argv[1:] if not a.startswith("-")] or ALL
    extra = [a for a in sys.argv[1:] if a.startswith("-")]
    print(
        f"machine: {platform.node()} {platform.release()} {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs"
    )
    for name in chosen:
        print(f"\n== {name}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra]).returncode
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
