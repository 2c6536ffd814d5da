"""The :class:`Target` interface and the result of running a command."""

from __future__ import annotations

import json
import shlex
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netlab import params
from netlab.errors import NetlabError

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def brief_error(self) -> str:
        """The last non-empty line of stderr (or stdout): what a person needs to see."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}"


class Target(ABC):
    """Where commands run. Subclasses implement :meth:`_spawn_argv` and may override
    the file helpers with something faster."""

    url: str
    is_local: bool = False

    @abstractmethod
    def _spawn_argv(self, argv: Sequence[str], timeout: float) -> list[str]:
        """The local argument vector that runs ``argv`` on the target."""

    def describe_failure(self, result: CommandResult) -> str | None:
        """A message when the transport (not the command) failed, else None."""
        return None

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | bytes | None = None,
        check: bool = True,
        cgroup: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` (a list, never a shell string) with a timeout.

        With ``check`` a non-zero exit raises :class:`NetlabError` naming the command and
        its last error line; a timeout always raises. With ``cgroup`` (a cgroup v2
        directory) the command runs as a short-lived member of that cgroup, so its
        sockets meet the cgroup's BPF programs; it leaves when it exits.
        """
        if isinstance(argv, str):
            raise TypeError("Target.run takes an argument vector, not a shell string")
        argv = [str(a) for a in argv]
        if cgroup:
            cgroup = params.path(cgroup, "cgroup")
            argv = ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh", cgroup, *argv]
        local_argv = self._spawn_argv(argv, timeout)
        data = input.encode() if isinstance(input, str) else input
        try:
            proc = subprocess.run(
                local_argv,
                input=data,
                capture_output=True,
                timeout=timeout + (5 if self.wraps_timeout else 0),
                check=False,
                stdin=None if data is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise NetlabError(
                f"{self.url}: command {argv[0]!r} not found", "install it or run `make setup`"
            ) from None
        except subprocess.TimeoutExpired:
            raise NetlabError(
                f"{self.url}: `{shlex.join(argv)}` did not finish within {timeout:g} s"
            ) from None
        result = CommandResult(
            tuple(argv),
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        transport = self.describe_failure(result)
        if transport:
            raise NetlabError(transport)
        if result.returncode == 124 and self.wraps_timeout:
            raise NetlabError(f"{self.url}: `{shlex.join(argv)}` did not finish within {timeout:g} s")
        if check and not result.ok:
            raise self.failure(result)
        return result

    def failure(self, result: CommandResult) -> NetlabError:
        """The error for a command that failed: what :meth:`run` raises with ``check``,
        for callers that looked at the result first."""
        if result.returncode == 127:
            return NetlabError(
                f"{self.url}: command {result.argv[0]!r} not found", "install it or run `make setup`"
            )
        return NetlabError(f"{self.url}: `{shlex.join(result.argv)}` failed: {result.brief_error()}")

    wraps_timeout: bool = False

    def start(self, argv: Sequence[str], *, timeout: float) -> subprocess.Popen[bytes]:
        """Start ``argv`` with pipes and return at once: a probe that runs while something
        else happens. Where the target wraps commands in ``timeout`` (ssh), the remote
        side is bounded by ``timeout``; over ssh, closing its stdin reaches the remote
        process as the end of input, also when this process dies."""
        if isinstance(argv, str):
            raise TypeError("Target.start takes an argument vector, not a shell string")
        local_argv = self._spawn_argv([str(a) for a in argv], timeout)
        try:
            return subprocess.Popen(
                local_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise NetlabError(f"{self.url}: command {argv[0]!r} not found") from None

    def read_text(self, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        return self.run(["cat", "--", path], timeout=timeout).stdout

    def try_read_text(self, path: str) -> str | None:
        """The file's text, or None if it does not exist or cannot be read."""
        result = self.run(["cat", "--", path], check=False)
        return result.stdout if result.ok else None

    def write_text(
        self, path: str, data: str, *, append: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Write ``data`` to ``path`` (tracefs and sysfs control files mostly).

        ``append`` matters for files such as ``kprobe_events``, where truncating clears
        every other user's definitions.
        """
        argv = ["dd", f"of={path}", "status=none"]
        if append:
            argv += ["oflag=append", "conv=notrunc"]
        self.run(argv, input=data, timeout=timeout)

    def host(self) -> Target:
        """The target for global kernel state (tracefs, bpffs, cgroups): for a network
        namespace that is the machine itself, everything else is its own host."""
        return self

    def netns(self, name: str) -> Target:
        """Network namespace ``name`` (``/run/netns/NAME``) on this target's machine."""
        raise NetlabError(f"{self.url}: network namespaces are not reachable through this target")

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).ok

    def which(self, program: str) -> str | None:
        result = self.run(["sh", "-c", 'command -v "$1"', "sh", program], check=False)
        return result.stdout.strip() or None

    def run_json(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run a command that prints JSON (bpftool -j, ip -j, nft -j) and parse it."""
        return self.parse_json(self.run(argv, timeout=timeout))

    def parse_json(self, result: CommandResult) -> Any:
        """A successful command's JSON output (None when it printed nothing)."""
        try:
            return json.loads(result.stdout) if result.stdout.strip() else None
        except json.JSONDecodeError as exc:
            raise NetlabError(
                f"{self.url}: `{shlex.join(result.argv)}` printed invalid JSON at line {exc.lineno}"
            ) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
