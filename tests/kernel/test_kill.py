"""Fault injection: each investigation's ``netlab run`` killed with SIGKILL during its
probe window, as ``kill -9 $!`` would. No cleanup is run afterwards: within 5 s every
process of that run (found by pid, recorded while it ran) is gone, and nothing named
with netlab's prefix is left that was not there before (BPF programs, pins, tracefs
instances, the kernel's runtime directory with its key). The notebook kernel follows
its parent out with ``os._exit``; what its ``finally`` blocks would have removed, the
run guard (:mod:`netlab.guard`) removes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import naming
from tests.kernel.labtools import command_line, descendants, leftovers, scenario

# Each investigation on its lab, and what shows that its probe window is open: a
# command it runs there, or a probe object it named.
CASES = [
    ("stuck-tcp", "stuck-tcp", "", r"^curl -sS .*--connect-timeout 4"),
    ("packet-drops", "conntrack-reject", "", r"^conntrack -E"),
    ("packet-drops", "conntrack-reject", "tp_btf,drop_kprobe", r"tracefs .*_drops_"),
    # Its probes are short; the drop counter lives for the whole trace.
    ("route-cache", "ipv6-route-cache", "", r"^prog .*_drop_count"),
    ("cgroup-progs", "stale-cgroup-prog", "", r"Where does ``connect\(\)`` really go"),
]


@pytest.mark.parametrize(("investigation", "scenario_name", "mask", "window"), CASES,
                         ids=["stuck-tcp", "packet-drops", "packet-drops-tracefs", "route-cache", "cgroup-progs"])  # fmt: skip
def test_sigkill_in_the_probe_window_leaves_nothing_within_5_s(
    investigation: str, scenario_name: str, mask: str, window: str, tmp_path: Path
) -> None:
    with scenario(scenario_name):
        before = set(leftovers())
        env = {**os.environ, "NETLAB_MASK": mask}
        proc = subprocess.Popen(
            [sys.executable, "-m", "netlab", "run", investigation, "--lab", scenario_name, "--out", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 120
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                seen.update(descendants(proc.pid))
                objects = [f"tracefs {n}" for n in _tracefs_instances()]
                if window.startswith("^prog "):
                    objects += [f"prog {p.get('name')}" for p in _programs()]
                if any(re.search(window, line) for line in [*seen.values(), *objects]):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"{investigation}: its probe window ({window}) never opened")
            proc.kill()
            proc.wait(timeout=10)
            killed = time.monotonic()
            alive: dict[int, str] = {}
            left: list[str] = []
            while time.monotonic() - killed < 5:
                alive = {pid: line for pid, line in seen.items() if command_line(pid) == line}
                left = sorted(set(leftovers()) - before)
                if not alive and not left:
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert alive == {}, f"processes of the killed run still alive after 5 s: {alive}"
        assert left == [], f"left behind after 5 s: {left}"


def _tracefs_instances() -> list[str]:
    try:
        return [n for n in os.listdir("/sys/kernel/tracing/instances") if naming.owned(n)]
    except OSError:
        return []


def _programs() -> list[dict]:
    shown = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True)
    return [p for p in json.loads(shown.stdout or "[]") if naming.owned(p.get("name") or "")]
