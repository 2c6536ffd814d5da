"""Turning a target URL into a :class:`Target`."""

from __future__ import annotations

import re

from netlab.errors import NetlabError
from netlab.targets.base import Target
from netlab.targets.local import LocalTarget, NetnsTarget
from netlab.targets.ssh import SshTarget

_SSH = re.compile(
    r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>\[[^\]/]+\]|[^:/@\[\]]+)(?::(?P<port>\d+))?(?:/netns/(?P<netns>[^/]+))?/?$"
)

SCHEMES = "local, netns://NAME, ssh://[user@]host[:port][/netns/NAME]"


def open_target(url: str | Target | None, *, node: Target | None = None) -> Target:
    """``local`` (also empty), ``netns://NAME`` or ``ssh://[user@]host[:port]``, the
    latter with ``/netns/NAME`` for a namespace on that node.

    With ``node`` (the node a run investigates), ``netns://NAME`` is that node's
    namespace: a lab built on a remote node names its pods that way.
    """
    if isinstance(url, Target):
        return url
    text = (url or "local").strip()
    if text in ("local", "local://", "localhost"):
        return LocalTarget()
    if text.startswith("netns://"):
        name = text[len("netns://") :]
        return node.host().netns(name) if node is not None else NetnsTarget(name)
    if text.startswith("ssh://"):
        match = _SSH.match(text)
        if not match:
            raise NetlabError(f"target {text!r} is not a valid ssh URL", f"use {SCHEMES}")
        host = match.group("host").strip("[]")
        port = int(match.group("port")) if match.group("port") else None
        try:
            return SshTarget(host, match.group("user"), port, netns=match.group("netns"))
        except NetlabError as exc:
            raise NetlabError(f"target {text!r}: {exc.message}", f"use {SCHEMES}") from None
    scheme = text.split("://", 1)[0] if "://" in text else text
    raise NetlabError(f"target {text!r}: unknown scheme {scheme!r}", f"use {SCHEMES}")
