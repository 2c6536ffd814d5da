"""Case 003 on the real kernel: the stale-cgroup-prog lab and the cgroup-progs
investigation, each twin; read-only; nothing left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import lab, naming
from netlab.cli import main
from tests.kernel.labtools import bpf_state, investigate, leftovers, scenario

pytestmark = pytest.mark.kernel
NAME = "stale-cgroup-prog"


def test_broken_lab_reproduces_and_is_diagnosed() -> None:
    with scenario(NAME) as params:
        check = lab.verify(NAME)
        assert check.ok, check.text()
        before = bpf_state()
        findings = investigate("cgroup-progs", NAME, healthy=False)
        assert bpf_state() == before, "the investigation changed BPF state"
    assert findings.verdict == "stale-cgroup-program"
    assert f"Program {params['old_prog_id']} " in findings.summary and "position 1" in findings.summary
    assert params["stale_backend"] in findings.summary  # the wrong backend
    assert params["expected_backend"] in findings.summary
    dup = next(e for e in findings.evidence if e.title == "maps sharing a name")
    serv = {r["map_id"]: r["reachable"] for r in dup.rows if r["name"] == "cilium_lb4_serv"}
    # The agent's, the old generation's (held only by its programs), the empty side copy.
    assert sorted(v.split(" ")[0] for v in serv.values()) == ["agent-managed", "only", "pinned,"], serv
    copies = next(e for e in findings.evidence if e.title == "LB map copies")
    empty = [r for r in copies.rows if r["entries"] == 0]
    assert len(empty) == 1 and empty[0]["copy"].startswith("empty copy") and empty[0]["max_entries"] == 65536
    # The old generation's post_bind4 program uses its service map without a backend map.
    (old,) = [v for v in serv.values() if v.startswith("only")]
    assert f"{naming.PREFIX}_sock4_post_bind" in old and "cil_" not in old, old  # v1.11's name
    assert any(f"id {params['old_prog_id']}" in r for r in findings.remediation)
    assert findings.mechanisms["real connect"].startswith("a probe process (python3) joined")
    assert leftovers() == []


def test_healthy_twin_is_healthy() -> None:
    with scenario(NAME, healthy=True):
        assert lab.verify(NAME).ok
        findings = investigate("cgroup-progs", NAME, healthy=True)
    assert findings.verdict == "healthy", findings.summary
    assert leftovers() == []


def test_rollout_twin_is_healthy_with_a_note() -> None:
    """Both generations attached as in the incident, the old one's maps holding the
    agent's services and backends, as in the middle of an agent rollout: healthy, and the
    note names both connect4 programs with their load times."""
    with scenario(NAME, twin="rollout") as params:
        assert params["twin"] == "rollout" and params["healthy"] is True and params["stale_backend"] == ""
        assert {r["scenario"]: r["state"] for r in lab.status()}[NAME] == "up (rollout twin)"
        check = lab.verify(NAME)
        assert check.ok and check.twin.name == "rollout", check.text()
        before = bpf_state()
        findings = investigate("cgroup-progs", NAME, healthy=True, twin="rollout")
        assert bpf_state() == before, "the investigation changed BPF state"
    assert findings.verdict == "healthy", findings.summary
    old, new = params["old_prog_id"], params["new_prog_id"]
    for prog_id, name in (
        (old, f"{naming.PREFIX}_sock4_connect"),
        (new, f"{naming.PREFIX}_cil_sock4_connect"),
    ):
        assert re.search(rf"\b{prog_id} \({name}, loaded \d{{4}}-\d\d-\d\dT", findings.summary), (
            findings.summary
        )
    assert (
        f"in run order: {old} (" in findings.summary
        and "as in the middle of an agent rollout" in findings.summary
    )
    assert "agree on every service they share" in findings.summary
    assert f"Not using the agent-managed map: {old}." in findings.summary
    # Both generations in the inventory, the old one first on each connect hook.
    inventory = next(e for e in findings.evidence if e.title == "cgroup programs per hook, in run order")
    for hook in ("connect4", "connect6"):
        rows = sorted((r for r in inventory.rows if r["hook"] == hook), key=lambda r: r["position"])
        assert [r["name"].split("_", 1)[1] for r in rows] == [
            f"sock{hook[-1]}_connect",
            f"cil_sock{hook[-1]}_connect",
        ]
    assert findings.mechanisms["real connect"].startswith("a probe process (python3) joined")
    assert leftovers() == []


@pytest.mark.parametrize("healthy", [False, True], ids=["incident", "healthy"])
def test_an_ipv6_service_is_walked_through_connect6(healthy: bool) -> None:
    """The same fault on IPv6: the old generation's connect6 program, first, rewrites
    [fd00:10:96::a]:80 from its own lb6 maps; the healthy twin's single program agrees."""
    with scenario(NAME, healthy=healthy) as params:
        findings = investigate("cgroup-progs", NAME, healthy=healthy, service=params["service6"])
    if healthy:
        assert findings.verdict == "healthy", findings.summary
        assert "Every connect program agrees" in findings.summary
    else:
        assert findings.verdict == "stale-cgroup-program", findings.summary
        assert f"({naming.PREFIX}_sock6_connect, loaded" in findings.summary  # v1.11's connect6
        assert "position 1 of the connect6 programs" in findings.summary
        assert (
            params["stale_backend6"] in findings.summary and params["expected_backend6"] in findings.summary
        )
        assert f"A real connect() from the cgroup went to {params['stale_backend6']}" in findings.summary
        assert any(" connect6 id " in r for r in findings.remediation)
    copies = next(e for e in findings.evidence if e.title == "LB map copies")
    assert {r["name"] for r in copies.rows} >= {"cilium_lb6_serv", "cilium_lb6_back"}
    assert leftovers() == []


def test_netlab_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with scenario(NAME):
        assert main(["run", "cgroup-progs", "--lab", NAME, "--out", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "stale-cgroup-program" and data["investigation"] == "cgroup-progs"
    assert {"inventory", "lb maps", "connect walk", "real connect"} <= set(data["mechanisms"])
    assert list(tmp_path.glob("*.html")) and list(tmp_path.glob("*.ipynb"))


def test_down_all_after_kill_during_up() -> None:
    """``down --all`` cleans up after ``lab up`` was killed half-way (kill -9)."""
    lab.down(NAME)
    proc = subprocess.Popen([sys.executable, "-m", "netlab", "lab", "up", NAME])
    deadline = time.monotonic() + 30
    # Kill it once it has made something (a namespace or the cgroup) but before it is done.
    while time.monotonic() < deadline and proc.poll() is None:
        if (
            any(n.startswith(f"{naming.PREFIX}-scp") for n in os.listdir("/run/netns"))
            if os.path.isdir("/run/netns")
            else False
        ):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["lab", "down", "--all"]) == 0
    assert leftovers() == []
