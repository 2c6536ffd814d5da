"""Case 000 on the real kernel: the stuck-tcp lab (sockops + sk_msg acceleration with a
planted stale entry) and the stuck-tcp investigation, both twins."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netlab import lab
from netlab.cli import main
from netlab.probes import bpf_iter
from netlab.targets import NetnsTarget
from tests.kernel.labtools import investigate, leftovers, scenario

pytestmark = pytest.mark.kernel
NAME = "stuck-tcp"


def test_broken_lab_names_the_stale_key_and_handlers() -> None:
    with scenario(NAME):
        check = lab.verify(NAME)
        assert check.ok, check.text()
        findings = investigate("stuck-tcp", NAME, healthy=False)
    assert findings.verdict == "stale-sockmap-entry", findings.summary
    # The stale key, decoded: the pod's server end of a node client port in the range.
    assert "Stale sockmap entry 10.244.1.11:8080 -> 192.168.50.1:4012" in findings.summary
    assert "belongs to a different 5-tuple" in findings.summary
    assert "uses tcp_bpf_recvmsg" in findings.summary and "server 10.244.1.11:8080" in findings.summary
    assert "uses tcp_recvmsg" in findings.summary
    assert findings.remediation[0].startswith("bpftool map delete id ")
    scope = next(e for e in findings.evidence if e.title.startswith("probe matrix")).frame()
    node_http = scope[(scope["vantage"] == "node -> pod") & (scope["kind"] == "http")]["success"].iloc[0]
    assert node_http < 1.0
    others = scope[scope["vantage"] != "node -> pod"]
    assert set(others["vantage"]) == {"pod -> pod (same node)", "remote node -> pod"}
    assert (others["success"] == 1.0).all()
    counters = next(e for e in findings.evidence if e.title.startswith("the flow's socket counters")).frame()
    assert len(counters) >= 2 and not counters["counters_moved"].any()
    assert findings.mechanisms["recvmsg handler per socket"].startswith("BPF TCP iterator")
    assert leftovers() == []


def test_healthy_twin_is_healthy() -> None:
    with scenario(NAME, healthy=True):
        assert lab.verify(NAME).ok
        findings = investigate("stuck-tcp", NAME, healthy=True)
    assert findings.verdict == "healthy", findings.summary
    assert leftovers() == []


def test_netlab_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with scenario(NAME):
        assert main(["run", "stuck-tcp", "--lab", NAME, "--out", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "stale-sockmap-entry" and data["healthy"] is False
    assert "recvmsg handler per socket" in data["mechanisms"]


def test_iterator_pin_is_removed_on_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt between pinning and reading still unpins the iterator."""
    real_run = NetnsTarget.run

    def interrupt_cat(self, argv, **kw):  # type: ignore[no-untyped-def]
        if argv[:1] == ["cat"] and "/sys/fs/bpf/" in argv[-1]:
            raise KeyboardInterrupt
        return real_run(self, argv, **kw)

    with scenario(NAME) as params:
        monkeypatch.setattr(NetnsTarget, "run", interrupt_cat)
        with pytest.raises(KeyboardInterrupt):
            bpf_iter.run("tcp_sockets.bpf.c", NetnsTarget(params["node_netns"]))
        monkeypatch.undo()
        assert [n for n in os.listdir("/sys/fs/bpf") if "_iter_" in n] == []
    assert leftovers() == []
