"""A probe that runs as one process on the node and talks in JSON lines.

The process holds its probes (BPF programs, links, perf events) as file descriptors and
stops when its standard input closes: :meth:`NodeProcess.stop` closes it, and so does
the caller's death (over ssh the end of input is passed on), so the probes never outlive
the run. Its stdout is read line by line, its stderr drained (a compiler's warnings can
fill a pipe) keeping the last lines for the error message.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import IO, Any

from netlab.errors import NetlabError
from netlab.targets import Target


class NodeProcess:
    def __init__(self, target: Target, argv: Sequence[str], *, timeout: float, what: str) -> None:
        self.url, self.what = target.url, what
        self.proc = target.start(argv, timeout=timeout)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: deque[str] = deque(maxlen=50)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._lines, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._tail, args=(self.proc.stderr,), daemon=True).start()

    def _lines(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode(errors="replace"))
        self.lines.put(None)

    def _tail(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.errors.append(raw.decode(errors="replace"))

    def message(self, key: str, timeout: float, doing: str) -> dict[str, Any]:
        """The next JSON message carrying ``key``. A message with ``error`` raises with
        it; so does the end of output, with stderr's telling line."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                raise NetlabError(f"{self.url}: {self.what} did not {doing} within {timeout:g} s") from None
            if line is None:
                time.sleep(0.2)  # the stderr reader's last lines
                raise NetlabError(
                    f"{self.url}: {self.what} ended before it could {doing}: {self.last_error()}"
                )
            if not line.startswith("{"):
                continue
            found = dict(json.loads(line))
            if "error" in found:
                detail = [ln.strip() for ln in self.errors if ln.strip()][-3:]
                raise NetlabError(f"{self.url}: {self.what}: {found['error']}"
                                  + (f" ({' / '.join(detail)})" if detail else ""))  # fmt: skip
            if key in found:
                return found

    def last_error(self) -> str:
        """A compile error's own line says what is wrong; Python's last line only that it
        failed."""
        lines = [ln.strip() for ln in self.errors if " error: " in ln] or [
            ln.strip() for ln in self.errors if ln.strip() and not ln.startswith((" ", "Traceback"))
        ]
        return lines[0][:300] if lines else f"exit status {self.proc.wait()}"

    def close_input(self) -> None:
        """Tell the process to stop (it reads the end of input as "stop now")."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        """End the process whatever state it is in (its probes go with it)."""
        self.close_input()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
