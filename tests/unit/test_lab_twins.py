"""A lab scenario's twins without root: the incident, the healthy twin and the ones a
scenario declares (stale-cgroup-prog's ``rollout``) are chosen by name, recorded in the
saved parameters, shown by ``lab status``, asked of a remote node by name, and checked
before anything is built."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from netlab import lab, ship
from netlab.errors import NetlabError

NAME = "stale-cgroup-prog"


def test_scenarios_declare_their_twins() -> None:
    assert [t.name for t in lab.scenario(NAME).twins] == ["incident", "healthy", "rollout"]
    assert [t.name for t in lab.scenario("stuck-tcp").twins] == ["incident", "healthy"]
    rollout = lab.scenario(NAME).twin("rollout")
    assert rollout.healthy and rollout.label == "rollout twin"
    assert lab.scenario(NAME).twin("incident").label == "incident"
    with pytest.raises(NetlabError, match="no twin 'rollout'") as err:
        lab.scenario("stuck-tcp").twin("rollout")
    assert err.value.remedy == "choose one of: incident, healthy"


def test_a_remote_node_is_asked_for_the_twin_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []
    monkeypatch.setattr(lab, "_remote", lambda target: object())
    monkeypatch.setattr(lab, "_on_node", lambda node, *argv: asked.append(argv) or "")
    monkeypatch.setattr(lab, "load_params", lambda name, node=None: {})
    lab.up(NAME, twin="rollout", target="ssh://node")
    lab.up(NAME, healthy=True, target="ssh://node")
    lab.up(NAME, target="ssh://node")
    assert [a[2:] for a in asked] == [("--twin", "rollout"), ("--twin", "healthy"), ("--twin", "incident")]
    with pytest.raises(NetlabError, match="healthy and twin 'rollout' both given"):
        lab.up(NAME, healthy=True, twin="rollout", target="ssh://node")
    checks = {"scenario": NAME, "twin": "rollout", "healthy": True, "ok": True, "checks": []}
    monkeypatch.setattr(lab, "_on_node", lambda node, *argv: json.dumps(checks))
    assert lab.verify(NAME, target="ssh://node").twin.name == "rollout"


def test_status_shows_the_saved_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETLAB_STATE", str(tmp_path))
    (tmp_path / f"lab-{NAME}.json").write_text(json.dumps({"twin": "rollout", "healthy": True}))
    # Written before twins had names: only whether it is healthy.
    (tmp_path / "lab-stuck-tcp.json").write_text(json.dumps({"healthy": True}))
    states = {r["scenario"]: r["state"] for r in lab.status()}
    assert states[NAME] == "up (rollout twin)" and states["stuck-tcp"] == "up (healthy twin)"


def test_the_shipped_lab_refuses_an_unknown_twin_before_building(tmp_path: Path) -> None:
    """What a remote node runs: the zipapp with the OS Python, standard library only."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("/usr/bin/python3 is not here")
    app = tmp_path / "netlab.pyz"
    app.write_bytes(ship.build())
    env = {"PATH": os.environ["PATH"], "NETLAB_STATE": str(tmp_path / "state")}

    def shipped(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/usr/bin/python3", "-I", "-S", str(app), *argv], capture_output=True, text=True,
                              env=env)  # fmt: skip

    refused = shipped("lab", "up", "stuck-tcp", "--twin", "rollout")
    assert refused.returncode == 2 and "no twin 'rollout'" in refused.stderr, refused.stderr
    listed = json.loads(shipped("lab", "list", "--json").stdout)
    twins = {row["scenario"]: [t["name"] for t in row["twins"]] for row in listed}
    assert twins[NAME] == ["incident", "healthy", "rollout"]
    assert not (tmp_path / "state").exists()
