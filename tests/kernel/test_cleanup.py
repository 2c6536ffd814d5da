"""Probes of a killed process (a Jupyter kernel restarted or killed mid-trace) are
found by their names and removed; probes of live processes are left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from netlab import cleanup, mounts, naming
from netlab.cli import main
from netlab.targets import LocalTarget

pytestmark = pytest.mark.kernel

HOLDER = """
import sys, time
from netlab.probes import tracefs, bpf_build
from netlab.targets import LocalTarget
from netlab import naming, mounts
t = LocalTarget()
inst = tracefs.Instance(t).__enter__()
inst.enable("skb", "kfree_skb", filter="reason > 2", stacktrace=True)
obj = bpf_build.build("iter_probe.bpf.c", t)
pin = mounts.bpffs(t) + "/" + naming.probe_name("iter")
t.run(["bpftool", "iter", "pin", obj, pin])
print(inst.path, pin, flush=True)
time.sleep(600)
"""


def start_holder() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert len(line) == 2, "the holder did not start its probes"
    return proc, line[0], line[1]


def test_sweep_removes_probes_of_a_killed_process() -> None:
    proc, instance, pin = start_holder()
    try:
        assert os.path.isdir(instance) and os.path.exists(pin)
        # While the owner lives, its probes are not orphans.
        assert instance not in cleanup.sweep_orphans()
        assert os.path.isdir(instance)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        removed = cleanup.sweep_orphans()
        assert instance in removed and pin in removed
        assert not os.path.exists(instance) and not os.path.exists(pin)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cleanup.sweep_orphans()


def test_cli_cleanup_all_removes_live_probes_too(capsys: pytest.CaptureFixture[str]) -> None:
    proc, instance, pin = start_holder()
    try:
        assert main(["cleanup", "--all"]) == 0
        assert not os.path.exists(instance) and not os.path.exists(pin)
    finally:
        proc.kill()
        proc.wait()


def test_tracefs_instance_is_removed_on_interrupt() -> None:
    from netlab.probes import control, tracefs

    seen: list[str] = []

    def interrupt(progress: control.Progress) -> None:
        if progress.elapsed > 0.3:
            raise KeyboardInterrupt

    control.add_listener(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            with tracefs.Instance(LocalTarget()) as inst:
                inst.enable("skb", "kfree_skb", stacktrace=True)
                seen.append(inst.path)
                inst.wait(30, max_events=10)
    finally:
        control.remove_listener(interrupt)
    assert seen and not os.path.exists(seen[0])


def test_cancel_detaches() -> None:
    from netlab.probes import control, tracefs

    paths: list[str] = []
    control.reset()
    start = time.monotonic()
    control.add_listener(lambda p: control.cancel() if p.elapsed > 0.2 else None)
    try:
        with pytest.raises(control.Cancelled):
            with tracefs.Instance(LocalTarget()) as inst:
                inst.enable("skb", "kfree_skb")
                paths.append(inst.path)
                inst.wait(30)
    finally:
        control._listeners.clear()
    assert time.monotonic() - start < 5
    assert not os.path.exists(paths[0])


def test_orphan_names_carry_the_pid() -> None:
    name = naming.probe_name("iter", 4242)
    assert naming.probe_owner(name) == 4242 and naming.owned(name)
    assert mounts.tracefs(LocalTarget())
