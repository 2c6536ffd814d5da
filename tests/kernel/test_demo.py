"""``make demo``'s job: the four lab incidents side by side, each with its verdict, a
report under 1.5 MB (plotly.js is one shared copy beside the index) and an index page;
nothing of the labs or their probes left afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netlab.report import demo
from tests.kernel.labtools import leftovers

pytestmark = pytest.mark.kernel

VERDICTS = {
    "lab stuck-tcp": "stale-sockmap-entry",
    "lab conntrack-reject": "netfilter-drop",
    "lab ipv6-route-cache": "percpu-counter-skew",
    "lab stale-cgroup-prog": "stale-cgroup-program",
}


def test_demo_gives_every_verdict_with_small_reports_and_an_index(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert demo.main(str(out)) == 0
    rows = json.loads((out / "index.json").read_text())
    assert {r["target"]: r["verdict"] for r in rows} == VERDICTS, rows
    for row in rows:
        report = out / row["report"]
        assert report.stat().st_size < 1_500_000, f"{report} is {report.stat().st_size:,} bytes"
        assert report.with_suffix(".ipynb").stat().st_size < 1_500_000
    charts = [r for r in rows if 'src="../plotly-' in (out / r["report"]).read_text()]
    assert len(charts) >= 3  # every report with charts loads the one copy beside the index
    assert len(list(out.glob("plotly-*.min.js"))) == 1 and not list(out.glob("*/*.js"))
    index = (out / "index.html").read_text()
    assert index.count("report</a>") == 4 and "4 targets" in index
    assert "kprobes" in (out / "doctor.txt").read_text()
    assert leftovers() == []
