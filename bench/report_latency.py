"""Report latency: ``netlab run`` end to end (papermill + HTML) against plain
``papermill`` plus ``jupyter nbconvert --to html`` on the same notebook and parameters,
on the stale-cgroup-prog lab (its investigation has no trace window to subtract)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netlab import lab
from netlab.report import run as runner

BIN = Path(sys.executable).parent


def main() -> None:
    scenario, investigation = "stale-cgroup-prog", "cgroup-progs"
    lab.down(scenario)
    lab.up(scenario)
    try:
        with tempfile.TemporaryDirectory() as out:
            netlab_times, plain_times = [], []
            for _ in range(2):
                start = time.perf_counter()
                runner.run(investigation, lab=scenario, out=out)
                netlab_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                executed = f"{out}/plain.ipynb"
                subprocess.run([str(BIN / "papermill"), str(runner.notebooks_dir() / f"{investigation}.ipynb"), executed,
                                "-p", "lab", scenario, "-k", "python3", "--no-progress-bar"],
                               check=True, capture_output=True, cwd=str(runner.notebooks_dir()))  # fmt: skip
                subprocess.run(
                    [str(BIN / "jupyter"), "nbconvert", "--to", "html", executed],
                    check=True,
                    capture_output=True,
                )
                plain_times.append(time.perf_counter() - start)
        best_netlab, best_plain = min(netlab_times), min(plain_times)
        print(f"netlab run {investigation}: {best_netlab:.1f} s; papermill + nbconvert: {best_plain:.1f} s; "
              f"ratio {best_netlab / best_plain:.2f}")  # fmt: skip
    finally:
        lab.down(scenario)


if __name__ == "__main__":
    main()
