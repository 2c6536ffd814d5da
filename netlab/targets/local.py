"""This machine, and a network namespace on it."""

from __future__ import annotations

import os
from collections.abc import Sequence

from netlab import params
from netlab.errors import NetlabError
from netlab.targets.base import DEFAULT_TIMEOUT, CommandResult, Target


class LocalTarget(Target):
    """Commands run here; files are read directly."""

    url = "local"
    is_local = True

    def _spawn_argv(self, argv: Sequence[str], timeout: float) -> list[str]:
        return list(argv)

    def read_text(self, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError as exc:
            raise NetlabError(f"{self.url}: cannot read {path}: {exc.strerror}") from None

    def try_read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return None

    def write_text(
        self, path: str, data: str, *, append: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        try:
            with open(path, "a" if append else "w", encoding="utf-8") as handle:
                handle.write(data)
        except OSError as exc:
            raise NetlabError(f"{self.url}: cannot write {path!r}: {exc.strerror}") from None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def netns(self, name: str) -> Target:
        return NetnsTarget(name)


class NetnsTarget(LocalTarget):
    """This machine inside network namespace ``name`` (``/run/netns/NAME``).

    Commands enter only the network namespace (``nsenter --net``), not a new mount
    namespace as ``ip netns exec`` does, so tracefs and bpffs pins stay visible. BPF
    objects, cgroups and tracefs are global; sockets, routes, netfilter, conntrack,
    ``/proc/net`` and ``/proc/sys/net`` are the namespace's.
    """

    def __init__(self, name: str):
        self.netns_name = params.name(name, "netns")
        self.url = f"netns://{self.netns_name}"

    def _spawn_argv(self, argv: Sequence[str], timeout: float) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns_name}", "--", *argv]

    def describe_failure(self, result: CommandResult) -> str | None:
        if result.returncode != 0 and f"/run/netns/{self.netns_name}" in result.stderr:
            return f"{self.url}: network namespace {self.netns_name!r} does not exist"
        return None

    # /proc/net and /proc/sys/net show the reading process's namespace: read inside.
    def read_text(self, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        return Target.read_text(self, path, timeout=timeout)

    def try_read_text(self, path: str) -> str | None:
        return Target.try_read_text(self, path)

    def write_text(
        self, path: str, data: str, *, append: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        Target.write_text(self, path, data, append=append, timeout=timeout)

    def host(self) -> Target:
        return LocalTarget()
