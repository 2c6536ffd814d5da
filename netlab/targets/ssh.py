"""A remote node through real OpenSSH, host keys checked."""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from netlab import naming, params
from netlab.targets.base import CommandResult, Target

# ssh exits 255 for its own failures (no route, refused, host key, auth).
SSH_FAILURE = 255
PERSIST = 30


class SshTarget(Target):
    """``ssh://[user@]host[:port]``: BatchMode (never prompts), StrictHostKeyChecking on.
    ``ssh://[user@]host[:port]/netns/NAME`` is network namespace NAME on that node
    (commands enter it with ``nsenter --net``, as :class:`NetnsTarget` does here).

    ``NETLAB_SSH_CONFIG`` names an ssh_config file to use instead of the user's (keys,
    known_hosts, jump hosts).

    Remote commands are quoted with :func:`shlex.join` and wrapped in ``timeout`` on the
    node, so a lost connection does not leave them running past their budget.

    Commands share one connection per node (OpenSSH multiplexing): a run sends hundreds
    of short commands, and a new connection costs a key exchange each time (about 1 s
    against an emulated node, 0.1 s through the shared one). The master connection's
    socket is named with netlab's prefix in netlab's runtime directory and the master
    exits on its own :data:`PERSIST` seconds after the last command. The socket's name
    also carries the ssh configuration in force (``NETLAB_SSH_CONFIG``, its contents and
    extra options): a connection authenticated under one set of keys and known hosts is
    never reused under another, so host-key checking is never skipped.
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
        netns: str | None = None,
    ):
        self.hostname = params.hostname(host, "target host")
        self.user = params.user(user, "target user") if user else None
        # Without an explicit port, ssh's own configuration decides (ssh_config Port).
        self.port = params.port(port, "target port") if port is not None else None
        self.connect_timeout = connect_timeout
        self.ssh_options = list(ssh_options)
        self.netns_name = params.name(netns, "netns") if netns else None
        who = f"{self.user}@" if self.user else ""
        host_part = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.url = f"ssh://{who}{host_part}" + (f":{self.port}" if self.port else "")
        if self.netns_name:
            self.url += f"/netns/{self.netns_name}"

    def _spawn_argv(self, argv: Sequence[str], timeout: float) -> list[str]:
        if self.netns_name:
            argv = ["nsenter", f"--net=/run/netns/{self.netns_name}", "--", *argv]
        remote = shlex.join(["timeout", "-k", "2", f"{timeout:g}", *argv])
        naming.runtime_base().mkdir(parents=True, exist_ok=True)
        dest = f"{self.user}@{self.hostname}" if self.user else self.hostname
        config = os.environ.get("NETLAB_SSH_CONFIG", "")
        return [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={int(self.connect_timeout)}",
            "-o", "LogLevel=ERROR",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={naming.runtime_base()}/{naming.PREFIX}_ssh_{_config_tag(config, self.ssh_options)}_%C",
            "-o", f"ControlPersist={PERSIST}",
            *self.ssh_options,
            *(["-p", str(self.port)] if self.port else []),
            *(["-F", config] if config else []),
            "--", dest, remote,
        ]  # fmt: skip

    def _with(self, netns: str | None) -> SshTarget:
        return SshTarget(self.hostname, self.user, self.port, connect_timeout=self.connect_timeout,
                         ssh_options=self.ssh_options, netns=netns)  # fmt: skip

    def host(self) -> Target:
        return self._with(None) if self.netns_name else self

    def netns(self, name: str) -> Target:
        return self._with(name)

    def describe_failure(self, result: CommandResult) -> str | None:
        if self.netns_name and result.returncode != 0 and f"/run/netns/{self.netns_name}" in result.stderr:
            return f"{self.url}: network namespace {self.netns_name!r} does not exist on the node"
        if result.returncode == SSH_FAILURE and (
            result.stderr.startswith("ssh:")
            or "Host key verification failed" in result.stderr
            or "Permission denied" in result.stderr
            or "Connection closed" in result.stderr
            or not result.stdout
        ):
            return f"{self.url}: cannot reach the node: {result.brief_error()}"
        return None


def _config_tag(config: str, options: Sequence[str]) -> str:
    """A short digest of the ssh configuration a shared connection was opened under."""
    digest = hashlib.sha256("\0".join([config, *options]).encode())
    try:
        digest.update(Path(config).read_bytes() if config else b"")
    except OSError:
        pass  # ssh itself reports an unreadable -F file
    return digest.hexdigest()[:8]
