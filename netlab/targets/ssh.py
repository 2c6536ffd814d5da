"""A remote node through real OpenSSH, host keys checked."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from netlab import params
from netlab.targets.base import CommandResult, Target

# ssh exits 255 for its own failures (no route, refused, host key, auth).
SSH_FAILURE = 255


class SshTarget(Target):
    """``ssh://[user@]host[:port]``: BatchMode (never prompts), StrictHostKeyChecking on.

    ``NETLAB_SSH_CONFIG`` names an ssh_config file to use instead of the user's (keys,
    known_hosts, jump hosts).

    Remote commands are quoted with :func:`shlex.join` and wrapped in ``timeout`` on the
    node, so a lost connection does not leave them running past their budget.
    """

    wraps_timeout = True

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        *,
        connect_timeout: float = 10,
        ssh_options: Sequence[str] = (),
    ):
        self.hostname = params.hostname(host, "target host")
        self.user = params.user(user, "target user") if user else None
        # Without an explicit port, ssh's own configuration decides (ssh_config Port).
        self.port = params.port(port, "target port") if port is not None else None
        self.connect_timeout = connect_timeout
        self.ssh_options = list(ssh_options)
        who = f"{self.user}@" if self.user else ""
        host_part = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.url = f"ssh://{who}{host_part}" + (f":{self.port}" if self.port else "")

    def _spawn_argv(self, argv: Sequence[str], timeout: float) -> list[str]:
        remote = shlex.join(["timeout", "-k", "2", f"{timeout:g}", *argv])
        dest = f"{self.user}@{self.hostname}" if self.user else self.hostname
        return [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={int(self.connect_timeout)}",
            "-o", "LogLevel=ERROR",
            *self.ssh_options,
            *(["-p", str(self.port)] if self.port else []),
            *(["-F", os.environ["NETLAB_SSH_CONFIG"]] if os.environ.get("NETLAB_SSH_CONFIG") else []),
            "--", dest, remote,
        ]  # fmt: skip

    def describe_failure(self, result: CommandResult) -> str | None:
        if result.returncode == SSH_FAILURE and (
            result.stderr.startswith("ssh:")
            or "Host key verification failed" in result.stderr
            or "Permission denied" in result.stderr
            or "Connection closed" in result.stderr
            or not result.stdout
        ):
            return f"{self.url}: cannot reach the node: {result.brief_error()}"
        return None
