"""Mounting tracefs, debugfs and bpffs when a step needs them.

Nothing is mounted for tracing at boot on some nodes (our lab VM among them). netlab
mounts what is missing, idempotently, and never unmounts a file system it did not
mount itself; mounting a pseudo file system is not a change to the node's networking.
"""

from __future__ import annotations

from collections.abc import Callable

from netlab.capability import Capability, Check, Node
from netlab.errors import CapabilityMissing, NetlabError
from netlab.targets import Target

TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BPFFS = "/sys/fs/bpf"


def _mounted(target: Target) -> dict[str, str]:
    """mount point -> file-system type, from /proc/self/mounts (host mount namespace)."""
    table: dict[str, str] = {}
    for line in (target.try_read_text("/proc/self/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 3:
            table[fields[1]] = fields[2]
    return table


def tracefs(target: Target, *, mount: bool = True) -> str:
    """The tracefs directory, mounting it at /sys/kernel/tracing if needed."""
    mounts = _mounted(target)
    for path in TRACEFS_PATHS:
        if mounts.get(path) == "tracefs" or target.exists(f"{path}/events"):
            return path
    if not mount:
        raise CapabilityMissing(f"{target.url}: tracefs is not mounted")
    result = target.run(["mount", "-t", "tracefs", "nodev", TRACEFS_PATHS[0]], check=False)
    if not result.ok:
        raise CapabilityMissing(
            f"{target.url}: cannot mount tracefs: {result.brief_error()}",
            "mount it by hand or run as root",
        )
    return TRACEFS_PATHS[0]


def bpffs(target: Target, *, mount: bool = True) -> str:
    """The bpffs mount point (/sys/fs/bpf), mounting it if needed."""
    if _mounted(target).get(BPFFS) == "bpf":
        return BPFFS
    if not mount:
        raise CapabilityMissing(f"{target.url}: bpffs is not mounted at {BPFFS}")
    result = target.run(["mount", "-t", "bpf", "bpf", BPFFS], check=False)
    if not result.ok:
        raise CapabilityMissing(f"{target.url}: cannot mount bpffs: {result.brief_error()}")
    return BPFFS


def cgroup2(target: Target) -> str:
    """Where the cgroup v2 hierarchy is mounted (unified or hybrid layout)."""
    mounts = _mounted(target)
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if mounts.get(path) == "cgroup2":
            return path
    for path, kind in mounts.items():
        if kind == "cgroup2":
            return path
    raise CapabilityMissing(f"{target.url}: no cgroup v2 hierarchy is mounted")


def require_cgroup2_dir(target: Target, path: str, param: str) -> None:
    """``path`` must be a directory of the cgroup v2 hierarchy on ``target`` (checked by
    file-system type): a probe process joins it by writing its ``cgroup.procs``, which in
    any other directory would just create a file there."""
    found = target.run(["stat", "-f", "-c", "%T", path], check=False)
    kind = found.stdout.strip()
    if not found.ok or kind != "cgroup2fs":
        seen = kind or "missing"
        raise NetlabError(f"parameter {param}: {path} is not a cgroup v2 directory ({seen})")


# --- capabilities --------------------------------------------------------------------
def _mount_capability(name: str, find: Callable[[Target], str]) -> Capability:
    """Holds when ``find`` locates (or mounts) the file system; the detail is where."""

    def probe(target: Target, node: Node) -> Check:
        try:
            return Check(name, True, find(target.host()))
        except NetlabError as exc:
            return Check(name, False, exc.message)

    return Capability(name, probe)


TRACEFS = _mount_capability("tracefs", tracefs)
BPFFS_MOUNT = _mount_capability("bpffs", bpffs)
CGROUP2 = _mount_capability("cgroup2", cgroup2)
