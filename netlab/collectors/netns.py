"""Network namespaces of a node, by inode, and the addresses each one holds.

A socket's namespace is known to the kernel by its inode (``ns.inum``, what
``/proc/PID/ns/net`` links to). This finds a path to each namespace, a name under
``/run/netns`` or a process inside it, and reads its addresses with ``ip -j addr``
there. A namespace with no path at all is one no process and no name refers to: kept
alive only by what is inside it, such as a deleted pod's leaked sockets.

Namespaces come and go while an investigation reads them (a pod deleted, the process
whose ``/proc`` path was listed exits): a read that finds its namespace gone says so
(None) rather than failing, and :func:`each` looks such a namespace up once more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from netlab import params
from netlab.capability import Mechanism, command
from netlab.collectors.counters import IP
from netlab.targets import CommandResult, Target

T = TypeVar("T")

NSENTER = command("nsenter", ["nsenter", "--version"], "nsenter (util-linux) is missing")
# Constant script (no parameter reaches it): the globs need a shell.
_LIST = "stat -L -c '%i %n' /run/netns/* /proc/[0-9]*/ns/net 2>/dev/null; true"


def paths(target: Target) -> dict[int, str]:
    """Namespace inode -> one path to it on the node (a /run/netns name preferred)."""
    found: dict[int, str] = {}
    for line in target.host().run(["sh", "-c", _LIST], check=False).stdout.splitlines():
        inode, _, path = line.partition(" ")
        if inode.isdigit() and path and (int(inode) not in found or path.startswith("/run/netns/")):
            found[int(inode)] = path
    return found


def enter(target: Target, path: str, argv: Sequence[str]) -> CommandResult | None:
    """``argv`` run inside the namespace at ``path`` on the node, or None when that
    namespace is gone by then (its path no longer exists)."""
    host = target.host()
    result = host.run(["nsenter", f"--net={params.path(path, 'netns path')}", *argv], check=False)
    if result.ok:
        return result
    if not host.exists(path):
        return None
    raise host.failure(result)


def each(target: Target, where: Mapping[int, str], read: Callable[[str], T | None]) -> dict[int, T | None]:
    """``read(path)`` for each namespace inode in ``where`` (inode -> path; None where
    ``read`` found the namespace gone). One gone is looked up once more by inode, since
    another process may still hold it; None then means no process and no name refers to
    it any more."""
    found = {n: read(path) for n, path in where.items()}
    gone = [n for n, got in found.items() if got is None]
    now = paths(target) if gone else {}
    for n in gone:
        if n in now and now[n] != where[n]:
            found[n] = read(now[n])
    return found


def addresses(target: Target, path: str) -> set[str] | None:
    """The addresses configured in the namespace at ``path`` (None: it is gone)."""
    result = enter(target, path, ["ip", "-j", "addr", "show"])
    if result is None:
        return None
    data = target.host().parse_json(result) or []
    return {a["local"] for link in data for a in link.get("addr_info", []) if "local" in a}


def inode(target: Target) -> int | None:
    """The inode of ``target``'s own namespace (a netns:// or ssh://.../netns/ target)."""
    out = target.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"], check=False).stdout.strip()
    return int(out) if out.isdigit() else None


ADDRESSES = Mechanism("each socket's namespace found by inode (/run/netns, /proc/PID/ns/net), its addresses "
                      "read there (nsenter ip -j addr)", (IP, NSENTER))  # fmt: skip
