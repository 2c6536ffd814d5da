"""Case 000 on the real kernel: the stuck-tcp lab (Cilium-shaped sockops + sk_msg
acceleration; a stale entry left by a restarted pod's leaked sockets) and the stuck-tcp
investigation, both twins."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from netlab import lab, naming
from netlab.cli import main
from netlab.collectors import netns
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
    # The stale key, decoded (Cilium's orientation: the client's end first), the socket
    # holding it (in the old pod's namespace), the ports it poisons and both handlers.
    assert "Stale sockmap entry 192.168.50.1:4012" in findings.summary
    assert "-> 10.244.1.11:8080 (its namespace no longer has the address" in findings.summary
    assert "(ESTABLISHED) lives in netns" in findings.summary and "has it now" in findings.summary
    assert "they poison client ports 40120, 40121" in findings.summary
    assert "uses tcp_bpf_recvmsg, server 10.244.1.11:8080 uses tcp_recvmsg" in findings.summary
    assert findings.remediation[0].startswith("bpftool map delete id ")
    dump, stale = findings.mechanisms["sockmap dump"], findings.mechanisms["stale entries"]
    assert "pinned at /sys/fs/bpf/tc/globals/cilium_sock_ops" in dump
    if not dump.startswith("BPF sockmap iterator"):
        # Kernels that refuse map element iterators (this VM's 6.18 build answers EPERM):
        # the keys joined with each namespace's sockets by tuple name the same entry.
        assert "(no sockmap iterator: needs sockmap_iter (the kernel refused" in dump, dump
        assert stale.startswith("each key joined by its 5-tuple"), stale
    else:
        assert stale.startswith("each key's socket (sockmap iterator)"), stale
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
    # Checked, not assumed: the live connections' entries were each matched to their socket.
    assert "all 4 sockmap entries belong to the live socket of their own 5-tuple" in findings.summary
    assert leftovers() == []


def test_the_map_has_ciliums_shape_and_refuses_user_space_lookups() -> None:
    with scenario(NAME) as params:
        shown = json.loads(NetnsTarget(params["node_netns"]).host().run(
            ["bpftool", "-j", "map", "show", "pinned", "/sys/fs/bpf/tc/globals/cilium_sock_ops"]).stdout)  # fmt: skip
        assert (shown["type"], shown["bytes_key"], shown["bytes_value"]) == ("sockhash", 44, 4)
        check = lab.verify(NAME)
        lookup = [c for c in check.checks if c.check == "a user-space lookup of a held key"]
        assert lookup and lookup[0].ok and "No space left on device" in lookup[0].observed
        progs = {p["name"]: p["type"] for p in json.loads(
            NetnsTarget(params["node_netns"]).host().run(["bpftool", "-j", "prog", "show"]).stdout)}  # fmt: skip
        assert progs.get("bpf_sockmap") == "sock_ops" and progs.get("bpf_redir_proxy") == "sk_msg"
    assert leftovers() == []
    assert not os.path.exists("/sys/fs/bpf/tc/globals/cilium_sock_ops")


def test_with_only_the_pods_address_it_finds_map_ports_and_stale_entry(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """No lab parameters: the map by Cilium's pin, the stale entries by their sockets,
    the poisoned ports from the keys."""
    with scenario(NAME) as params:
        argv = ["run", "stuck-tcp", "--target", f"netns://{params['node_netns']}", "-p", "pod_ip", "10.244.1.11",
                "-p", "pod_port", "8080", "--out", str(tmp_path), "--json"]  # fmt: skip
        assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "stale-sockmap-entry", data["summary"]
    assert (
        "they poison client ports 40120, 40121, 40122, 40123, 40124, 40125, 40126, 40127" in data["summary"]
    )
    poisoned = next(e for e in data["evidence"] if e["title"] == "poisoned client ports")
    assert [r["client_port"] for r in poisoned["rows"]] == list(range(40120, 40128))
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


def test_without_the_sockmap_iterator_keys_are_joined_by_tuple(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node where no BPF iterator can run (masked here; refused on some kernels): the
    keys alone, joined by their 5-tuple with the TCP sockets of every namespace on the
    node, still name the stale entries and the namespace that holds their sockets."""
    monkeypatch.setenv("NETLAB_MASK", "bpf_iter")
    with scenario(NAME):
        findings = investigate("stuck-tcp", NAME, healthy=False)
    assert findings.verdict == "stale-sockmap-entry", findings.summary
    assert findings.mechanisms["sockmap dump"].startswith("bpftool -j map dump id ")
    assert findings.mechanisms["stale entries"].startswith("each key joined by its 5-tuple")
    assert "(its namespace no longer has the address" in findings.summary
    assert "8 of 12 entries are stale" in findings.summary
    assert leftovers() == []


def test_a_namespace_that_goes_away_while_the_keys_are_joined_is_read_as_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pod deleted between the listing of the node's namespaces and their reading (the
    demo's other labs going down met this): the run goes on, says how many went away,
    and names the same stale entries."""
    monkeypatch.setenv("NETLAB_MASK", "bpf_iter")
    extra = f"{naming.PREFIX}-stk-gone"
    listed = netns.paths

    def listed_then_deleted(target):  # type: ignore[no-untyped-def]
        found = listed(target)
        subprocess.run(["ip", "netns", "delete", extra], capture_output=True, check=False)
        return found

    subprocess.run(["ip", "netns", "add", extra], check=True)
    try:
        with scenario(NAME):
            monkeypatch.setattr(netns, "paths", listed_then_deleted)
            findings = investigate("stuck-tcp", NAME, healthy=False)
    finally:
        subprocess.run(["ip", "netns", "delete", extra], capture_output=True, check=False)
    assert findings.verdict == "stale-sockmap-entry", findings.summary
    assert " gone while read" in findings.mechanisms["stale entries"]
    assert "8 of 12 entries are stale" in findings.summary
    assert leftovers() == []
