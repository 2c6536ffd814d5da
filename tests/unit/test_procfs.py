"""/proc readings on this machine's own processes: a live child, then the same child gone."""

from __future__ import annotations

import os
import subprocess
import sys

from netlab import procfs


def test_readings_of_a_live_process_then_of_a_gone_one() -> None:
    code = "import time; print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"  # started, its memory mapped
        assert child.pid in set(procfs.pids()) and child.pid in procfs.children(os.getpid())
        assert procfs.cmdline(child.pid) == [sys.executable, "-c", code]
        assert procfs.session(child.pid) == os.getsid(0) and procfs.comm(child.pid).startswith("python")
        assert procfs.rss_mib(child.pid) >= 1
    finally:
        child.kill()
        child.wait()
    assert procfs.cmdline(child.pid) is None and procfs.session(child.pid) is None
    assert (
        procfs.comm(child.pid) == "" and procfs.children(child.pid) == [] and procfs.rss_mib(child.pid) == 0
    )
