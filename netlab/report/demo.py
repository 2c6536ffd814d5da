"""``make demo``: every lab incident brought up, investigated headlessly, reported.

For each scenario: ``lab up``, ``netlab run INVESTIGATION --lab SCENARIO``, ``lab down``;
then an index page. Prints where the reports are.

The scenarios are independent (each its own namespaces, cgroups, pins and rules), so
they run side by side, each in its own processes as a batch runs targets, with the
doctor's check beside them: the demo takes as long as its longest investigation, not
the sum of them.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from netlab import doctor, lab
from netlab.investigations import REGISTRY
from netlab.report import batch
from netlab.report.run import write_plotly_js
from netlab.targets import LocalTarget


def _lab(action: str, scenario: str) -> str | None:
    """``netlab lab ACTION SCENARIO`` in its own process; the error line, or None."""
    result = LocalTarget().run(
        [sys.executable, "-m", "netlab", "lab", action, scenario], timeout=300, check=False
    )
    return None if result.ok else result.brief_error().removeprefix("netlab: ")


def _one(investigation: str, scenario: str, base: Path) -> dict[str, Any]:
    started = time.monotonic()
    row: dict[str, Any] = {
        "target": f"lab {scenario}",
        "verdict": None,
        "summary": "",
        "report": None,
        "error": None,
    }
    try:
        row["error"] = _lab("up", scenario)
        if row["error"] is None:
            # Its own directory, as a batch target's: plotly.js is the one beside the index.
            directory = base / scenario
            directory.mkdir(exist_ok=True)
            row = {**batch.run_one(investigation, "local", lab=scenario, parameters={}, out=directory, timeout=600),
                   "target": f"lab {scenario}"}  # fmt: skip
            if row["report"]:
                row["report"] = f"{scenario}/{row['report']}"
    finally:
        down = _lab("down", scenario)
        if down and not row["error"]:
            row["error"] = f"lab down: {down}"
    outcome = f"verdict: {row['verdict']}" if row["verdict"] else f"error: {row['error']}"
    print(f"== {scenario} (netlab run {investigation} --lab {scenario}, {time.monotonic() - started:.0f} s)\n"
          f"   {outcome}\n   {row['summary']}", flush=True)  # fmt: skip
    return row


def main(out: str = "reports/demo") -> int:
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    write_plotly_js(base)
    scenarios = lab.SCENARIOS()
    runs = [(info.name, info.scenario) for info in REGISTRY.values() if info.scenario in scenarios]
    started = time.monotonic()
    print(f"demo: {len(runs)} lab incidents side by side: " + ", ".join(s for _, s in runs), flush=True)
    with ThreadPoolExecutor(max_workers=len(runs) + 1) as pool:
        checked = pool.submit(doctor.check, "local")
        rows = list(pool.map(lambda item: _one(item[0], item[1], base), runs))
        report = checked.result()
    (base / "doctor.txt").write_text(report.text() + "\n")
    page = batch.write_index("demo: every lab incident", rows, base)
    print(f"\ndoctor: {base / 'doctor.txt'}\nreports: {page.resolve()} ({time.monotonic() - started:.0f} s)")
    return 0 if all(r["verdict"] for r in rows) else 1
