"""packet-drops on Debian's 6.1 over ssh, each drop mechanism forced by masking what the
node has: the in-kernel counter on tp_btf (the default), the same without drop reasons
(what kernels before 5.17 give), and on a kprobe of kfree_skb_reason. Each names the
REJECT rule, not the lab's innocent DROP, and the report says which mechanism ran. A
run killed with SIGKILL leaves no counter on the node within seconds, with no cleanup
run: the node process that holds it sees the ssh pipe close."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab import cleanup, lab
from netlab.lab import guest
from netlab.report import run as runner
from netlab.report.notebook import read_evidence
from netlab.targets import open_target
from tests.kernel.labtools import drop_counters

pytestmark = pytest.mark.guest
NAME = "conntrack-reject"


@pytest.fixture(scope="module")
def incident(booted_guest: guest.Guest) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NETLAB_SSH_CONFIG", booted_guest.ssh_config)
        url = guest.up().url
        lab.up(NAME, target=url)
        yield url
        lab.down(NAME, target=url)


@pytest.mark.parametrize(("mask", "mechanism", "reason"), [
    ("", "BPF program on tp_btf/kfree_skb", "NETFILTER_DROP"),
    ("drop_reasons", "BPF program on tp_btf/kfree_skb", "no reason (kernel < 5.17)"),
    ("tp_btf", "BPF program on a kprobe on kfree_skb_reason", "NETFILTER_DROP"),
], ids=["tp_btf", "no-reason", "kprobe"])  # fmt: skip
def test_each_mechanism_names_the_rule_on_the_guest(incident: str, monkeypatch: pytest.MonkeyPatch, mask: str,
                                                    mechanism: str, reason: str, tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setenv("NETLAB_SSH_CONFIG", guest.up().ssh_config)
    monkeypatch.setenv("NETLAB_MASK", mask)
    result = runner.run("packet-drops", target=incident, lab=NAME, out=tmp_path, html=False)
    findings = result.findings
    assert findings.verdict == "netfilter-drop", findings.summary
    assert "iptables filter/FORWARD rule 4 (REJECT" in findings.summary and "rule 2" not in findings.summary
    assert reason in findings.summary and "nf_hook_slow" in findings.summary
    assert "CLOSE_WAIT" in findings.summary
    assert read_evidence(result.notebook).mechanisms["drop points"].startswith(mechanism)
    assert drop_counters(incident) == []


def test_sigkill_over_ssh_leaves_no_counter_within_5_s(incident: str, tmp_path: Path) -> None:
    env = {**os.environ, "NETLAB_SSH_CONFIG": guest.up().ssh_config}
    argv = [sys.executable, "-m", "netlab", "run", "packet-drops", "--target", incident, "--lab", NAME,
            "--out", str(tmp_path), "-p", "duration", "120"]  # fmt: skip
    before = set(cleanup.leftovers(open_target(incident)))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        seen_since = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            if drop_counters(incident):  # the window's, held for more than a capability check's moment
                seen_since = seen_since or time.monotonic()
                if time.monotonic() - seen_since > 5:
                    break
            else:
                seen_since = None
            time.sleep(1)
        assert seen_since is not None, "the drop counter never started on the node"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while drop_counters(incident) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert drop_counters(incident) == [], "the counter outlived its run by more than 5 s"
        # The run guard sweeps the node the killed kernel announced (its CO-RE object
        # copy, say); each ssh command takes about a second on the emulated guest.
        deadline, left = time.monotonic() + 30, ["?"]
        while left and time.monotonic() < deadline:
            left = sorted(set(cleanup.leftovers(open_target(incident))) - before)
        assert left == [], f"left on the node by the killed run: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
