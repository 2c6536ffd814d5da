"""Runs last: after the whole suite, nothing netlab made is left on the machine.

Every lab scenario, probe and test created objects named with netlab's prefix; each
was supposed to remove them on success, error, timeout and interrupt. This looks for
any survivor by name, the way ``netlab cleanup`` would.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from netlab import naming

pytestmark = pytest.mark.kernel
P = naming.PREFIX


def _names(path: str) -> list[str]:
    try:
        return [n for n in os.listdir(path) if n.startswith(P)]
    except FileNotFoundError:
        return []


def test_no_network_namespaces() -> None:
    assert _names("/run/netns") == []


def test_no_bpf_programs_or_pins() -> None:
    progs = json.loads(
        subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, check=True).stdout
    )
    assert [p for p in progs if p.get("name", "").startswith(P)] == []
    leftovers = []
    for root, dirs, files in os.walk("/sys/fs/bpf"):
        leftovers += [os.path.join(root, n) for n in dirs + files if n.startswith(P)]
    assert leftovers == []


def test_no_tracefs_instances_or_kprobes() -> None:
    assert _names("/sys/kernel/tracing/instances") == []
    events = "/sys/kernel/tracing/kprobe_events"
    if os.path.exists(events):
        assert P not in open(events).read()


def test_no_cgroups() -> None:
    leftovers = []
    for base in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        leftovers += _names(base)
    assert leftovers == []


def test_no_lab_processes() -> None:
    out = subprocess.run(["pgrep", "-f", "netlab.lab"], capture_output=True, text=True).stdout
    ours = []
    for pid in out.split():
        netns = subprocess.run(
            ["ip", "netns", "identify", pid], capture_output=True, text=True
        ).stdout.strip()
        # Lab processes of parallel runs with another prefix are not ours.
        if not netns or netns.startswith(P):
            ours.append((pid, netns))
    assert ours == []
