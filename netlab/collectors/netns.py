"""Network namespaces of a node, by inode, and the addresses each one holds.

A socket's namespace is known to the kernel by its inode (``ns.inum``, what
``/proc/PID/ns/net`` links to). This finds a path to each namespace, a name under
``/run/netns`` or a process inside it, and reads its addresses with ``ip -j addr``
there. A namespace with no path at all is one no process and no name refers to: kept
alive only by what is inside it, such as a deleted pod's leaked sockets.
"""

from __future__ import annotations

from netlab.capability import Mechanism, command
from netlab.collectors.counters import IP
from netlab.targets import Target

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


def addresses(target: Target, path: str) -> set[str]:
    """The addresses configured in the namespace at ``path``."""
    data = target.host().run_json(["nsenter", f"--net={path}", "ip", "-j", "addr", "show"]) or []
    return {a["local"] for link in data for a in link.get("addr_info", []) if "local" in a}


def inode(target: Target) -> int | None:
    """The inode of ``target``'s own namespace (a netns:// or ssh://.../netns/ target)."""
    out = target.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"], check=False).stdout.strip()
    return int(out) if out.isdigit() else None


ADDRESSES = Mechanism("each socket's namespace found by inode (/run/netns, /proc/PID/ns/net), its addresses "
                      "read there (nsenter ip -j addr)", (IP, NSENTER))  # fmt: skip
