"""Where the guest's virtual CPUs are, read from outside the guest: what a guest that
stopped answering can still tell.

An emulated guest that stalls says nothing on its console before the kernel's own
detectors fire (20 s and more), and by then a test has given up on it. QEMU still knows:
each vCPU is a host thread whose CPU time shows whether it spins or sleeps, and its
monitor shows each vCPU's instruction pointer, which the kernel's symbols (read from the
guest's /proc/kallsyms while it answered) turn into a function. So the report says, for each vCPU, busy or
idle and the functions it was seen in.
"""

from __future__ import annotations

import bisect
import os
import re
import socket
import time
from collections import Counter
from pathlib import Path

from netlab import procfs

# In `info registers -a`: a CPU's header, and its instruction pointer.
_CPU = re.compile(r"^CPU#(\d+)", re.M)
_RIP = re.compile(r"\bRIP=([0-9a-f]{16})\b")
_PROMPT = b"(qemu) "
_KERNEL_SPACE = 0xFFFF800000000000  # x86-64: the canonical upper half


def monitor_args(path: Path) -> list[str]:
    """QEMU options for a human monitor on a unix socket at ``path``, beside the one
    virtme-ng puts on the console (which this process cannot reach)."""
    return [
        f"-chardev socket,id=nlabmon,path={path},server=on,wait=off",
        "-mon chardev=nlabmon,mode=readline",
    ]


def report(qemu: int, monitor: Path, symbols_file: Path, samples: int = 5) -> list[str]:
    """One line per vCPU: its host thread's CPU use over about a second and the kernel
    functions its instruction pointer was in, ``samples`` times over that second.
    ``symbols_file``: lines of ``ADDRESS NAME``, the kernel's functions as it runs them."""
    before = procfs.thread_cpu_ticks(qemu)
    seen: dict[int, Counter[str]] = {}
    problems: list[str] = []
    symbols = _Symbols(symbols_file)
    started = time.monotonic()
    for _ in range(samples):
        try:
            for cpu, rip in _instruction_pointers(monitor).items():
                seen.setdefault(cpu, Counter())[symbols.function(rip)] += 1
        except OSError as exc:
            problems.append(f"QEMU monitor {monitor}: {exc}")
            break
        time.sleep(1 / samples)
    elapsed = time.monotonic() - started
    after = procfs.thread_cpu_ticks(qemu)
    hz = os.sysconf("SC_CLK_TCK")
    lines = []
    for name in sorted(after):
        if "/TCG" not in name and "/KVM" not in name:
            continue  # QEMU's I/O and worker threads
        busy = (after[name] - before.get(name, after[name])) / hz / elapsed
        match = re.search(r"CPU (\d+)", name)
        where = seen.get(int(match.group(1)), Counter()) if match else Counter()
        places = ", ".join(f"{fn} ({n} of {samples} reads)" for fn, n in where.most_common(3))
        places = places or "no instruction pointer read"
        lines.append(f"vCPU thread {name!r}: {busy:.0%} of a host CPU; in {places}")
    if not lines:
        lines.append(f"no vCPU threads found in QEMU process {qemu}")
    return lines + problems + ([] if symbols.ready else [symbols.why])


def _instruction_pointers(monitor: Path) -> dict[int, int]:
    """Each vCPU's RIP from ``info registers -a``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(str(monitor))
        _until_prompt(sock)
        sock.sendall(b"info registers -a\n")
        text = _until_prompt(sock).decode(errors="replace")
    found: dict[int, int] = {}
    headers = list(_CPU.finditer(text))
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        rip = _RIP.search(text, header.end(), end)
        if rip:
            found[int(header.group(1))] = int(rip.group(1), 16)
    return found


def _until_prompt(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(_PROMPT):
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("the monitor closed the connection")
        data += chunk
        if len(data) > 1 << 20:
            raise OSError("the monitor sent more than 1 MiB without a prompt")
    return data


class _Symbols:
    """Kernel text addresses to function names."""

    def __init__(self, path: Path) -> None:
        self.why = ""
        try:
            rows = sorted(
                (int(a, 16), n) for a, n in (line.split()[:2] for line in path.read_text().splitlines())
            )
        except (OSError, ValueError) as exc:
            rows = []
            self.why = f"no symbols from {path}: {exc}"
        self.addresses = [a for a, _ in rows]
        self.names = [n for _, n in rows]

    @property
    def ready(self) -> bool:
        return bool(self.addresses)

    def function(self, address: int) -> str:
        if address < _KERNEL_SPACE:
            return "user space"
        i = bisect.bisect_right(self.addresses, address) - 1
        return self.names[i] if i >= 0 and self.ready else f"{address:#x}"
