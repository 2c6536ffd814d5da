"""Two nodes in one batch (this machine and the guest), and a run killed with SIGKILL
in the middle of a trace on the guest: its probes stay there until the next run or
``netlab cleanup --target`` removes them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import cleanup, lab
from netlab.cli import main
from netlab.investigations import get
from netlab.lab import guest
from netlab.probes import tracefs
from netlab.targets import open_target
from tests.conftest import need
from tests.kernel.labtools import drop_counters

pytestmark = pytest.mark.guest


def test_one_index_for_this_machine_and_the_guest(node: guest.Guest, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    need(shutil.which("netlab") is not None, "netlab is not on PATH (make setup links it)")
    # The same lab name, the incident here and the healthy twin there: each row's verdict
    # comes from its own node's lab.
    lab.up("stale-cgroup-prog")
    lab.up("stale-cgroup-prog", healthy=True, target=node.url)
    try:
        nodes = tmp_path / "nodes.txt"
        nodes.write_text(f"# this machine and the guest\nlocal\n{node.url}\n")
        out = tmp_path / "reports"
        argv = [
            "run",
            "cgroup-progs",
            "--targets",
            str(nodes),
            "--lab",
            "stale-cgroup-prog",
            "--out",
            str(out),
            "--json",
        ]
        assert main(argv) == 0
    finally:
        lab.down("stale-cgroup-prog")
        lab.down(all=True, target=node.url)
    rows = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in rows] == ["local", node.url]
    assert [r["verdict"] for r in rows] == ["stale-cgroup-program", "healthy"], rows
    index = (out / "index.html").read_text()
    assert index.count("report</a>") == 2
    assert all((out / r["report"]).exists() for r in rows)


def _instances(url: str, kind: str = "") -> list[str]:
    found = [x.split()[-1] for x in cleanup.leftovers(open_target(url)) if x.startswith("tracefs ")]
    return [x for x in found if f"_{kind}_" in x.rsplit("/", 1)[-1]] if kind else found


def test_a_run_killed_mid_trace_leaves_nothing_and_cleanup_finds_nothing(
    node: guest.Guest, tmp_path: Path
) -> None:
    """The netlab process and its notebook kernel killed outright: the drop counter on
    the node goes with the node process that holds it (its ssh pipe closed), and
    ``cleanup --target`` then finds nothing of that run."""
    lab.up("conntrack-reject", target=node.url)
    argv = [sys.executable, "-m", "netlab", "run", "packet-drops", "--target", node.url, "--lab", "conntrack-reject",
            "-p", "duration", "120", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, since = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            if drop_counters(node.url):  # the window's, not a capability check's moment
                since = since or time.monotonic()
                if time.monotonic() - since > 5:
                    break
            else:
                since = None
            time.sleep(1)
        assert since is not None, (
            f"no drop counter started on the guest: {proc.stderr.read().decode() if proc.poll() is not None else ''}"
        )
        os.killpg(proc.pid, signal.SIGKILL)  # netlab and its notebook kernel
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while drop_counters(node.url) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert drop_counters(node.url) == []
        assert main(["cleanup", "--target", node.url]) == 0
        assert _instances(node.url) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        lab.down(all=True, target=node.url)
    assert cleanup.leftovers(open_target(node.url)) == []


HOLDER = """
import sys, time
from netlab.probes import tracefs
from netlab.targets import open_target
inst = tracefs.Instance(open_target(sys.argv[1])).__enter__()
print(inst.path, flush=True)
time.sleep(600)
"""


def test_the_next_run_sweeps_what_a_killed_one_left_on_the_node(node: guest.Guest) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, node.url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    instance = proc.stdout.readline().strip()
    try:
        assert instance in _instances(node.url)
        # While its owner lives, a run leaves it alone.
        get("cgroup-progs").start(node.url)
        assert instance in _instances(node.url)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        get("cgroup-progs").start(node.url)
        assert instance not in _instances(node.url)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if instance in _instances(node.url):
            tracefs.remove_instance(open_target(node.url), instance)
