"""Case 001 on the real kernel: the conntrack-reject lab and the packet-drops
investigation, both twins; the drop trace is bounded and leaves nothing behind, also
when `netlab run` is interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import lab, naming
from netlab.cli import main
from tests.kernel.labtools import investigate, leftovers, scenario

pytestmark = pytest.mark.kernel
NAME = "conntrack-reject"


def test_broken_lab_names_rule_flow_state_and_location() -> None:
    with scenario(NAME) as params:
        check = lab.verify(NAME)
        assert check.ok, check.text()
        findings = investigate("packet-drops", NAME, healthy=False)
    assert findings.verdict == "netfilter-drop", findings.summary
    assert "filter/FORWARD rule 3 (REJECT" in findings.summary
    assert "icmp-port-unreachable" in findings.summary
    assert "nf_hook_slow" in findings.summary and "nft_do_chain" in findings.summary
    assert (
        "CLOSE_WAIT" in findings.summary and f"{params['server']}:{params['server_port']}" in findings.summary
    )
    assert any("-I FORWARD 3" in r for r in findings.remediation)
    assert "tracefs" in findings.mechanisms["drop points"]
    assert leftovers() == []


def test_healthy_twin_is_healthy() -> None:
    with scenario(NAME, healthy=True):
        assert lab.verify(NAME).ok
        findings = investigate("packet-drops", NAME, healthy=True)
    assert findings.verdict == "healthy", findings.summary
    assert leftovers() == []


def test_netlab_run_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with scenario(NAME):
        assert main(["run", "packet-drops", "--lab", NAME, "--out", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "netfilter-drop"
    page = next(tmp_path.glob("*.html")).read_text()
    assert "netfilter-drop" in page and 'src="http' not in page
    assert leftovers() == []


def _tracefs_instances(kind: str = "") -> list[str]:
    found = [n for n in os.listdir("/sys/kernel/tracing/instances") if naming.owned(n)]
    return [n for n in found if f"_{kind}_" in n] if kind else found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_ctrl_c_term_or_hangup_during_the_trace_leaves_nothing(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with scenario(NAME):
        proc = subprocess.Popen(
            [sys.executable, "-m", "netlab", "run", "packet-drops", "--lab", NAME, "--out", str(tmp_path), "-p", "duration", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        # The drop trace's instance, not a capability probe's (nlab_doctor_*).
        while time.monotonic() < deadline and not _tracefs_instances("drops"):
            time.sleep(0.2)
        assert _tracefs_instances("drops"), "the trace never started"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum, err
        said = "interrupted" if signum == signal.SIGINT else f"terminated ({signum.name})"
        assert err.strip().splitlines()[-1] == f"netlab: {said}; probes removed", err
    assert _tracefs_instances() == []
    assert leftovers() == []


def test_cell_timeout_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with scenario(NAME):
        code = main(
            [
                "run",
                "packet-drops",
                "--lab",
                NAME,
                "--out",
                str(tmp_path),
                "-p",
                "duration",
                "30",
                "--timeout",
                "5",
            ]
        )
    assert code == 2
    assert "longer than 5 s" in capsys.readouterr().err
    assert _tracefs_instances() == []
    assert leftovers() == []


def test_without_iptables_the_nft_view_names_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback mechanism, run on a kernel that has the preferred one: with iptables
    masked the netfilter step reads the nft ruleset and the verdict still names the rule."""
    monkeypatch.setenv("NETLAB_MASK", "iptables")
    with scenario(NAME):
        findings = investigate("packet-drops", NAME, healthy=False)
    assert findings.mechanisms["netfilter rules"].startswith("nft -j list ruleset")
    assert findings.verdict == "netfilter-drop", findings.summary
    assert "filter/FORWARD rule" in findings.summary and "REJECT" in findings.summary
    assert leftovers() == []
