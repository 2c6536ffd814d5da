"""/proc readings on this machine's own processes: a live child, then the same child gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from netlab import procfs


def test_readings_of_a_live_process_then_of_a_gone_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while procfs.cmdline(child.pid) != [sys.executable, "-c", "import time; time.sleep(30)"]:
            assert time.monotonic() < deadline, procfs.cmdline(child.pid)  # until it has exec'd
            time.sleep(0.01)
        assert child.pid in set(procfs.pids()) and child.pid in procfs.children(os.getpid())
        assert procfs.cmdline(child.pid) == [sys.executable, "-c", "import time; time.sleep(30)"]
        assert procfs.session(child.pid) == os.getsid(0) and procfs.comm(child.pid).startswith("python")
        assert procfs.rss_mib(child.pid) >= 1
    finally:
        child.kill()
        child.wait()
    assert procfs.cmdline(child.pid) is None and procfs.session(child.pid) is None
    assert (
        procfs.comm(child.pid) == "" and procfs.children(child.pid) == [] and procfs.rss_mib(child.pid) == 0
    )
