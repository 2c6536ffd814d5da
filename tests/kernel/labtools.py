"""What the lab tests share: bringing a scenario up for a test, snapshots of BPF state,
and (from :mod:`netlab.cleanup`) the list of everything left under netlab's prefix."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from netlab import lab, procfs
from netlab.cleanup import leftovers
from netlab.findings import Findings
from netlab.investigations import get

__all__ = ["bpf_state", "investigate", "leftovers", "scenario"]

EVIDENCE = os.path.join(os.path.dirname(__file__), "..", "data", "evidence")


def investigate(name: str, scenario: str, *, healthy: bool, twin: str = "", **params: Any) -> Findings:
    """Run investigation ``name`` against the lab scenario that is up, as its notebook does.
    With ``NETLAB_RECORD_EVIDENCE=1`` the evidence is saved into tests/data/evidence for
    the replay tests (tests/unit/test_verdicts.py), as NAME-broken, NAME-healthy or, for
    another twin, NAME-TWIN."""
    run = get(name).start(lab=scenario, **params)
    findings = run.run()
    if os.environ.get("NETLAB_RECORD_EVIDENCE") == "1":
        os.makedirs(EVIDENCE, exist_ok=True)
        kind = twin or ("healthy" if healthy else "broken")
        run.collected().save(os.path.join(EVIDENCE, f"{name}-{kind}.json"))
    return findings


@contextmanager
def scenario(name: str, *, healthy: bool = False, twin: str = "") -> Iterator[dict[str, Any]]:
    lab.down(name)
    try:
        yield lab.up(name, healthy=healthy, twin=twin)
    finally:
        lab.down(name)


def bpf_state() -> dict[str, Any]:
    """Programs, maps, cgroup attachments and pins: to prove a run changed nothing."""

    def j(*args: str) -> Any:
        return json.loads(
            subprocess.run(["bpftool", "-j", *args], capture_output=True, check=True).stdout or "null"
        )

    progs = sorted((p["id"], p.get("name")) for p in j("prog", "show") or [])
    maps = sorted((m["id"], m.get("name")) for m in j("map", "show") or [])
    tree = j("cgroup", "tree", "/sys/fs/cgroup/unified") or []
    pins = sorted(os.path.join(r, f) for r, _, fs in os.walk("/sys/fs/bpf") for f in fs)
    return {"progs": progs, "maps": maps, "cgroups": tree, "pins": pins}


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid`` with its command line."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in procfs.children(todo.pop()):
            if child not in found and (line := command_line(child)) is not None:
                found[child] = line
                todo.append(child)
    return found


def command_line(pid: int) -> str | None:
    """``pid``'s command line, or None once it is gone."""
    args = procfs.cmdline(pid)
    return " ".join(args).strip() or None if args else None


def drop_counters(url: str = "local") -> list[int]:
    """Loaded drop counter programs of this prefix on the node (the kernel keeps 15
    characters of the name; bpftool shows the whole one from BTF where it can)."""
    from netlab import naming
    from netlab.targets import open_target

    name = f"{naming.PREFIX}_drop_counter"
    progs = open_target(url).run_json(["bpftool", "-j", "prog", "show"]) or []
    return [p["id"] for p in progs if name.startswith(p.get("name") or "-")]
