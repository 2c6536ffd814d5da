"""``make demo``: every lab incident brought up, investigated headlessly, reported.

For each scenario: ``lab up``, ``netlab run INVESTIGATION --lab SCENARIO``, ``lab down``;
then an index page. Prints where the reports are.
"""

from __future__ import annotations

import time
from pathlib import Path

from netlab import doctor, lab
from netlab.errors import NetlabError
from netlab.investigations import REGISTRY
from netlab.report import batch, run


def main(out: str = "reports/demo") -> int:
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    report = doctor.check("local")
    (base / "doctor.txt").write_text(report.text() + "\n")
    print(report.text())
    scenarios = lab.SCENARIOS()
    rows = []
    for info in REGISTRY.values():
        if info.scenario not in scenarios:
            continue
        started = time.monotonic()
        print(f"\n== {info.scenario}: lab up, then netlab run {info.name} --lab {info.scenario}", flush=True)
        row = {
            "target": f"lab {info.scenario}",
            "verdict": None,
            "summary": "",
            "report": None,
            "error": None,
        }
        try:
            lab.up(info.scenario)
            result = run.run(info.name, lab=info.scenario, out=base)
            row.update(verdict=result.findings.verdict, summary=result.findings.summary,
                       report=result.html.name if result.html else None)  # fmt: skip
            print(
                f"   verdict: {result.findings.verdict} ({time.monotonic() - started:.0f} s)\n   {result.findings.summary}"
            )
        except NetlabError as exc:
            row["error"] = exc.message
            print(f"   error: {exc}")
        finally:
            lab.down(info.scenario)
        rows.append(row)
    page = batch.write_index("demo: every lab incident", rows, base)
    print(f"\nreports: {page.resolve()}")
    return 0 if all(r["verdict"] for r in rows) else 1
