"""The run guard: what a killed notebook kernel cannot clean up, removed within seconds.

A kernel that is killed (``kill -9``, a restart in JupyterLab, or the ``os._exit`` with
which ipykernel follows its parent ``netlab run`` when that is killed) runs none of its
``finally`` blocks. Its BPF programs held by file descriptors go with it, and node
scripts stop when their input closes, but its child processes (``curl`` probes,
``conntrack -E``, a capture-window trigger) live on, and what it named on a node (a
tracefs instance, an iterator pin, a CO-RE object copy) stays until a sweep.

So each kernel that attaches probes starts one guard: a process in a session of its own
that holds the read end of a pipe whose write end only the kernel has. When the kernel
exits normally it says so first and the guard leaves. When the pipe closes without
that, the kernel died: the guard ends the kernel's session (the kernel is a session
leader, as Jupyter starts kernels, so its children are the session's members), waits
for them, then sweeps orphans by netlab's naming here and on every remote node the
kernel announced. The sweep removes only what dead processes own, so it never races a
run that is still cleaning up.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import IO

from netlab import procfs

_pipe: IO[str] | None = None
_announced: set[str] = set()

EXITING = "exit"
TARGET = "target "


def ensure() -> None:
    """Start this process's guard once (a no-op when it runs)."""
    global _pipe
    if _pipe is not None:
        return
    proc = subprocess.Popen(
        # Whether this process leads its session is asked here: the guard may start
        # after this process is gone.
        [sys.executable, "-m", "netlab.guard", str(os.getpid()), str(int(os.getsid(0) == os.getpid()))],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # not in the session it ends, nor in a terminal's Ctrl-C
    )
    _pipe = proc.stdin
    atexit.register(_exiting)


def announce(url: str) -> None:
    """A remote node this process places probes on: swept too if this process dies."""
    if _pipe is None or url in _announced or url == "local" or url.startswith("netns://"):
        return
    _announced.add(url)
    with contextlib.suppress(OSError, ValueError):
        _pipe.write(f"{TARGET}{url}\n")
        _pipe.flush()


def _exiting() -> None:
    with contextlib.suppress(OSError, ValueError):
        assert _pipe is not None
        _pipe.write(f"{EXITING}\n")
        _pipe.close()


def session_members(sid: int) -> list[int]:
    """Processes whose session is ``sid`` (zombies included: they are gone soon)."""
    return [pid for pid in procfs.pids() if procfs.session(pid) == sid]


def end_session(sid: int, *, grace: float = 1.5) -> list[int]:
    """SIGTERM every member of session ``sid``, SIGKILL those left after ``grace``."""
    members = [p for p in session_members(sid) if p != os.getpid()]
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and session_members(sid):
        time.sleep(0.05)
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return members


def _watch(owner: int, leads: bool) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # it outlives what it guards
    targets: list[str] = []
    for line in sys.stdin:
        if line.strip() == EXITING:
            return
        if line.startswith(TARGET):
            targets.append(line[len(TARGET) :].strip())
    if leads:  # only a session the kernel leads is ended, never a terminal's
        end_session(owner)
    deadline = time.monotonic() + 3
    while os.path.exists(f"/proc/{owner}") and time.monotonic() < deadline:
        time.sleep(0.05)  # a zombie until its new parent reaps it
    from netlab import cleanup
    from netlab.errors import NetlabError
    from netlab.targets import open_target

    for url in ["local", *targets]:
        with contextlib.suppress(NetlabError, OSError):
            cleanup.sweep_orphans(open_target(url))


if __name__ == "__main__":
    _watch(int(sys.argv[1]), sys.argv[2] == "1")
