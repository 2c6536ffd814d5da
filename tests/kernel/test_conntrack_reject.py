"""Case 001 on the real kernel: the conntrack-reject lab and the packet-drops
investigation, both twins, IPv4 and IPv6, each drop mechanism (the in-kernel counter,
without drop reasons, the tracefs fallback); the lab's innocent DROP rule, which counts
other traffic all the time, is never blamed; the drop trace is bounded and leaves
nothing behind, also when `netlab run` is interrupted or killed."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import lab, naming
from netlab.cli import main
from netlab.investigations import get
from netlab.lab.topology import module_argv
from tests.kernel.labtools import drop_counters, investigate, leftovers, scenario

pytestmark = pytest.mark.kernel
NAME = "conntrack-reject"


INNOCENT = "filter/FORWARD rule 2 (DROP: -s"


def _names_the_reject_only(findings, params: dict, *, tool: str = "iptables", client: str = "",
                           server: str = "") -> None:  # fmt: skip
    assert findings.verdict == "netfilter-drop", findings.summary
    assert f"{tool} filter/FORWARD rule 4 (REJECT" in findings.summary
    assert "port-unreachable" in findings.summary
    assert "nf_hook_slow" in findings.summary and "nft_do_chain" in findings.summary
    assert "CLOSE_WAIT" in findings.summary
    assert f"{server or params['server']}]:{params['server_port']}" in findings.summary or (
        f"{server or params['server']}:{params['server_port']}" in findings.summary
    )
    assert INNOCENT not in findings.summary
    assert any(r.startswith("not blamed: " + tool + " " + INNOCENT) for r in findings.reasons), (
        findings.reasons
    )
    assert any("-I FORWARD 4" in r and f"-s {client or params['client']}" in r for r in findings.remediation)


def test_broken_lab_names_rule_flow_state_and_location() -> None:
    with scenario(NAME) as params:
        check = lab.verify(NAME)
        assert check.ok, check.text()
        findings = investigate("packet-drops", NAME, healthy=False)
        _names_the_reject_only(findings, params)
        assert "NETFILTER_DROP" in findings.summary
        assert findings.mechanisms["drop points"].startswith("BPF program on tp_btf/kfree_skb")
        # The flow's own dropped packet: the client's address and ephemeral port.
        assert f"packets of {params['client']}:" in findings.summary
        six = get("packet-drops").start(lab=NAME, client=params["client6"], server=params["server6"]).run()
        _names_the_reject_only(
            six, params, tool="ip6tables", client=params["client6"], server=params["server6"]
        )
        assert "ICMPv6" in six.summary
    assert leftovers() == []


@pytest.mark.parametrize(("mask", "mechanism", "reason"), [
    ("drop_reasons", "BPF program on tp_btf/kfree_skb", "no reason (kernel < 5.17)"),
    ("tp_btf", "tracefs instance", "NETFILTER_DROP"),
], ids=["no-reason", "tracefs"])  # fmt: skip
def test_fallback_mechanisms_give_the_verdict(monkeypatch: pytest.MonkeyPatch, mask: str, mechanism: str,
                                              reason: str) -> None:  # fmt: skip
    """Each fallback, forced by masking what this kernel has: the tracepoint without drop
    reasons (as before 5.17) and tracefs (no BTF); this machine has no kprobes."""
    monkeypatch.setenv("NETLAB_MASK", mask)
    with scenario(NAME) as params:
        findings = investigate("packet-drops", NAME, healthy=False)
    _names_the_reject_only(findings, params)
    assert findings.mechanisms["drop points"].startswith(mechanism), findings.mechanisms
    assert reason in findings.summary
    assert leftovers() == []


def test_healthy_twin_is_healthy() -> None:
    with scenario(NAME, healthy=True) as params:
        assert lab.verify(NAME).ok
        findings = investigate("packet-drops", NAME, healthy=True)
        assert findings.verdict == "healthy", findings.summary
        # The innocent rule moved during the window and is named, not blamed.
        assert any(r.startswith("not blamed: iptables " + INNOCENT) for r in findings.reasons), (
            findings.reasons
        )
        six = get("packet-drops").start(lab=NAME, client=params["client6"], server=params["server6"]).run()
        assert six.verdict == "healthy", six.summary
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


def _start_run(tmp_path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "netlab", "run", "packet-drops", "--lab", NAME, "--out", str(tmp_path), "-p", "duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    # The window's counter, not a capability check's (which lives for a moment).
    seen_since = None
    while time.monotonic() < deadline:
        if drop_counters():
            seen_since = seen_since or time.monotonic()
            if time.monotonic() - seen_since > 3:
                return proc
        else:
            seen_since = None
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the drop counter never started")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_ctrl_c_term_or_hangup_during_the_trace_leaves_nothing(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with scenario(NAME):
        proc = _start_run(tmp_path)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum, err
        said = "interrupted" if signum == signal.SIGINT else f"terminated ({signum.name})"
        assert err.strip().splitlines()[-1] == f"netlab: {said}; probes removed", err
    assert drop_counters() == []
    assert _tracefs_instances() == []
    assert leftovers() == []


def test_sigkill_during_the_window_leaves_no_counter_within_5_s(tmp_path: Path) -> None:
    """No cleanup runs after SIGKILL: the counter goes with the process that holds it,
    which sees its input close when netlab dies."""
    with scenario(NAME):
        proc = _start_run(tmp_path)
        os.killpg(os.getpgid(proc.pid), 0)  # still there
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while drop_counters() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert drop_counters() == []


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
    assert drop_counters() == []
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


def test_a_trigger_reproduces_the_failure_in_the_window() -> None:
    """As on a real node, without the lab's reproduction: the user's command (the pull,
    run from the pod's namespace) starts when the window opens, and the verdict follows."""
    with scenario(NAME) as params:
        pull = shlex.join(
            module_argv("netlab.lab.halfclose", "client", params["server"], str(params["server_port"]), "3")
        )
        run = get("packet-drops").start(f"netns://{params['node_netns']}", client=params["client"],
                                        server=params["server"], server_port=params["server_port"],
                                        pod_netns=params["pod_netns"]["pod1"], trigger=pull)  # fmt: skip
        assert run.during is None
        findings = run.run()
    _names_the_reject_only(findings, params)
    assert "'exit': 0" in run.results["window"]["reproduction"].iloc[0]
    assert any(e.title == "the capture window" and e.note.startswith("trigger: ") for e in findings.evidence)
    assert leftovers() == []
