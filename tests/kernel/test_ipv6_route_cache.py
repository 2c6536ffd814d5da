"""Case 002 on the real kernel: the ipv6-route-cache lab and the route-cache
investigation, both twins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netlab import lab
from netlab.cli import main
from netlab.collectors import kernel_btf
from netlab.investigations import route_cache
from netlab.targets import LocalTarget
from tests.kernel.labtools import investigate, leftovers, scenario

pytestmark = pytest.mark.kernel
NAME = "ipv6-route-cache"


def test_broken_lab_names_the_skew_and_enforcement() -> None:
    with scenario(NAME):
        check = lab.verify(NAME)
        assert check.ok, check.text()
        findings = investigate("route-cache", NAME, healthy=False)
    # This kernel's own BTF, read apart: the verdict follows what it says of max_size.
    gc = kernel_btf.function_pointer_returns(kernel_btf.raw_dump(LocalTarget()), "dst_ops", "gc")
    rules = route_cache.kernel_rules(findings.kernel, 1, gc)
    assert findings.verdict == (
        "route-cache-over-max-size" if rules.enforces_max_size else "percpu-counter-skew"
    )
    assert f"certain: this kernel's BTF has dst_ops.gc returning {gc}" in findings.summary
    if not rules.enforces_max_size:
        assert "does not enforce net.ipv6.route.max_size" in findings.summary
    # No kprobes on this machine: the ip6_pkt_drop step says so rather than guessing.
    assert findings.mechanisms["ip6_pkt_drop calls (kprobes)"].startswith(
        "skipped: no mechanism can run here"
    )
    counter = next(e for e in findings.evidence if e.title == "dst counter: fast vs slow").frame()
    # The dst count grew; slow matches rt6_stats; the gap is within the batch bound.
    assert (counter["slow"] == counter["rt6_dst_entries"]).all()
    assert counter["slow"].iloc[-1] >= 200
    state = next(e for e in findings.evidence if e.title == "why it is intermittent").frame().iloc[0]
    assert 0 <= (counter["slow"] - counter["fast"]).max() <= state["worst_case_gap"]
    assert leftovers() == []


def test_healthy_twin_is_healthy() -> None:
    with scenario(NAME, healthy=True):
        assert lab.verify(NAME).ok
        findings = investigate("route-cache", NAME, healthy=True)
    assert findings.verdict == "healthy", findings.summary
    assert leftovers() == []


def test_netlab_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with scenario(NAME):
        assert main(["run", "route-cache", "--lab", NAME, "--out", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] in ("percpu-counter-skew", "route-cache-over-max-size")
    assert "percpu fast vs slow" in data["mechanisms"]
