"""This machine's processes as /proc shows them: the few readings netlab needs to find
its own (the guard ending a killed kernel's session, the guest launcher finding its
QEMU, tests following a run's children). Standard library only; every reading of a
process that is gone is None or empty, never an error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


def pids() -> Iterator[int]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def cmdline(pid: int) -> list[str] | None:
    """``pid``'s arguments, or None once it is gone (a zombie's are empty: gone too)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").rstrip("\0").split("\0") if raw else None


def comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (PROC / str(pid) / "comm").read_text().strip()
    return ""


def session(pid: int) -> int | None:
    """The session ``pid`` belongs to (zombies included)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command (which may hold spaces): state ppid pgrp session ...
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[3]) if len(fields) > 3 else None


def children(pid: int) -> list[int]:
    """``pid``'s children, from each of its threads' list."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in (PROC / str(pid) / "task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def thread_cpu_ticks(pid: int) -> dict[str, int]:
    """Each of ``pid``'s threads by name ("CPU 0/TCG"; threads of one name summed), and the
    clock ticks it has run, in user and system mode (``os.sysconf("SC_CLK_TCK")`` a second)."""
    ticks: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for task in (PROC / str(pid) / "task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # the thread ended
            # The name is in parentheses and may hold spaces; utime and stime are the 12th
            # and 13th fields after it.
            name, fields = stat[stat.find("(") + 1 : stat.rfind(")")], stat.rsplit(")", 1)[-1].split()
            if len(fields) > 12:
                ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
    return ticks


def rss_mib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0
