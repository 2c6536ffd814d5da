"""The run guard (netlab.guard) with plain processes: a killed session leader's children
are ended within seconds; a leader that exits normally leaves its children alone, and
so does a killed process that leads no session (a terminal's, say)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

OWNER = """
import subprocess, sys, time
from netlab import guard
guard.ensure()
child = subprocess.Popen(["sleep", "60"])
print(child.pid, flush=True)
if sys.argv[1] == "exit":
    sys.exit(0)
time.sleep(60)
"""


def _start(mode: str, *, leader: bool) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, mode], stdout=subprocess.PIPE, text=True,
                            start_new_session=leader)  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


@pytest.mark.parametrize("leader", [True, False], ids=["session-leader", "not-a-leader"])
def test_a_killed_owner_s_session_is_ended(leader: bool) -> None:
    proc, child = _start("sleep", leader=leader)
    try:
        proc.kill()
        proc.wait()
        assert _gone_within(child, 5) is leader
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_normal_exit_leaves_children_alone() -> None:
    proc, child = _start("exit", leader=True)
    try:
        proc.wait(timeout=10)
        assert not _gone_within(child, 2)
    finally:
        os.kill(child, signal.SIGKILL)
