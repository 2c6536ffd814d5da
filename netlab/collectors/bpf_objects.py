"""BPF programs, maps and cgroup attachments as tables, from ``bpftool -j``.

Read-only: ``bpftool prog/map show`` and ``cgroup tree`` only list. ``-f`` adds the
bpffs paths each object is pinned at, which is how the agent-managed copy of a map is
told from a copy held only by an old program.
"""

from __future__ import annotations

import base64
import inspect
import json
from typing import TYPE_CHECKING

from netlab.capability import Check, Mechanism, Node, capability, command
from netlab.decoders import MapEntry, parse_map_dump_json
from netlab.decoders.bpftool_show import HOOK_NAMES, cgroups_from_json, maps_from_json, programs_from_json
from netlab.errors import NetlabError
from netlab.targets import Target

if TYPE_CHECKING:
    import pandas as pd

    from netlab.collectors.bpfmap import MapData

__all__ = [
    "HOOK_NAMES",
    "cgroup_attachments",
    "dump",
    "effective_programs",
    "keys",
    "maps",
    "programs",
    "read",
]

# The columns the investigations read; bpftool_show has more.
_PROGRAMS = ["prog_id", "type", "name", "tag", "loaded_at", "map_ids", "pinned"]
_MAPS = ["map_id", "type", "name", "key_size", "value_size", "max_entries", "pinned"]
_ATTACHMENTS = ["cgroup", "hook", "position", "prog_id", "name", "attach_flags", "programs_on_hook"]


def programs(target: Target) -> pd.DataFrame:
    """Every loaded program: id, type, name, tag, load time, map ids, pins."""

    return programs_from_json(target.host().run_json(["bpftool", "-j", "-f", "prog", "show"]) or [])[
        _PROGRAMS
    ]


def maps(target: Target) -> pd.DataFrame:
    """Every map: id, type, name (15 characters at most), key/value sizes, pins."""

    return maps_from_json(target.host().run_json(["bpftool", "-j", "-f", "map", "show"]) or [])[_MAPS]


# bpftool walks the tree, then queries each cgroup; one removed in between (a pod gone)
# ends the walk with ENOENT: 82 of 4065 walks here while a cgroup was made and removed
# in a loop. Such a walk is repeated, up to this many in all.
TREE_TRIES = 5


def cgroup_attachments(target: Target, root: str) -> pd.DataFrame:
    """Programs attached to every cgroup under ``root``, per hook in run order.

    ``bpftool cgroup tree`` lists a cgroup's programs per attach type in the order the
    kernel keeps them; for multi-attach that is attach order, and the kernel runs them
    first to last (FIFO), so ``position`` 1 runs first.
    """

    host = target.host()
    argv = ["bpftool", "-j", "cgroup", "tree", root]
    for _ in range(TREE_TRIES):
        result = host.run(argv, check=False)
        churn = not result.ok and "No such file or directory" in result.brief_error() and host.exists(root)
        if not churn:
            break
    if not result.ok:
        error = host.failure(result)
        if churn:
            error.remedy = f"cgroups under it kept going away during {TREE_TRIES} walks; try again"
        raise error
    groups = host.parse_json(result) or []
    return cgroups_from_json(groups)[_ATTACHMENTS]


def effective_programs(target: Target, cgroup: str) -> pd.DataFrame:
    """The programs that run for sockets of ``cgroup``, per hook in run order: its own
    and those inherited from ancestors (``bpftool cgroup show CGROUP effective``). The
    kernel runs a cgroup's own programs first, then its parent's, up to the root."""
    rows = target.host().run_json(["bpftool", "-j", "cgroup", "show", cgroup, "effective"]) or []
    return cgroups_from_json([{**r, "cgroup": cgroup} for r in rows])[_ATTACHMENTS]


def read(target: Target, map_id: int, *, name: str, key_size: int, value_size: int,
         max_entries: int = 2_000_000) -> MapData:  # fmt: skip
    """Every entry of map ``map_id`` as raw keys and values, read once: the kernel's batch
    lookup (:mod:`netlab.probes.map_batch`, in this process or by the node's python3),
    else ``bpftool -j map dump``. The result names the mechanism and why the preferred
    one was not used; sizes come from ``map show``, so an empty map is still typed."""
    from netlab.collectors import bpfmap

    host = target.host()
    try:
        if host.is_local:
            data = bpfmap.read(map_id=map_id, max_entries=max_entries)
        else:
            data = _read_on_node(host, map_id, max_entries)
        if (data.key_size, data.value_size) != (key_size, value_size):
            raise NetlabError(f"map {map_id} ({name}): the kernel says key {data.key_size}, value "
                              f"{data.value_size}; map show said {key_size}, {value_size}")  # fmt: skip
        return data
    except NetlabError as exc:
        why = exc.message  # no batch lookup for this map type or kernel, no python3: bpftool reads it
    entries = dump(host, map_id)
    if any(e.value is None or len(e.value) != value_size or len(e.key) != key_size for e in entries):
        raise NetlabError(f"map {map_id} ({name}): bpftool printed entries of other sizes than the map's")
    return bpfmap.MapData(map_id, name, key_size, value_size, b"".join(e.key for e in entries),
                          b"".join(e.value or b"" for e in entries), len(entries),
                          f"bpftool -j map dump (JSON; batch lookup: {why})", False)  # fmt: skip


def _read_on_node(host: Target, map_id: int, max_entries: int) -> MapData:
    """The batch reader run by the node's python3 (standard library only), its buffers
    sent back as base64."""
    from netlab.collectors import bpfmap
    from netlab.probes import map_batch

    source = inspect.getsource(map_batch)
    result = host.run(["python3", "-c", source, str(int(map_id)), str(int(max_entries))], check=False,
                      timeout=120)  # fmt: skip
    lines = result.stdout.splitlines()
    try:
        info = json.loads(lines[0]) if lines else {"error": result.brief_error() or "no output"}
        if "error" in info:
            raise NetlabError(f"on {host.url}: {info['error']}")
        keys, values = base64.b64decode(lines[1], validate=True), base64.b64decode(lines[2], validate=True)
    except (ValueError, IndexError) as exc:
        raise NetlabError(f"map {map_id}: the node's batch reader printed something else ({exc})") from None
    return bpfmap.from_batch(info, keys, values)


def keys(target: Target, map_id: int) -> list[MapEntry]:
    """The keys of a map whose values user space cannot read (a sockhash holds
    sockets: bpftool prints each key with an error for its value, and batch lookup is
    not offered). The sockmap iterator reads the sockets themselves; this is its
    fallback."""
    return dump(target, map_id)


def dump(target: Target, map_id: int, *, timeout: float = 60) -> list[MapEntry]:
    """All entries of map ``map_id`` (``bpftool -j map dump``)."""
    result = target.host().run(["bpftool", "-j", "map", "dump", "id", str(int(map_id))], timeout=timeout)
    return parse_map_dump_json(result.stdout)


# --- capabilities and mechanisms -------------------------------------------------------
BPFTOOL = command("bpftool", ["bpftool", "version"], "bpftool is missing")


@capability("bpftool_json", requires=[BPFTOOL])
def BPFTOOL_JSON(target: Target, node: Node) -> Check:
    try:
        data = target.host().run_json(["bpftool", "-j", "prog", "show"])
    except NetlabError as exc:
        return Check("bpftool_json", False, exc.message)
    return Check(
        "bpftool_json", isinstance(data, list), f"`bpftool -j prog show` listed {len(data or [])} programs"
    )


LISTING = Mechanism("bpftool -j prog / map / cgroup tree (JSON)", (BPFTOOL_JSON,))
MAP_DUMP = Mechanism("bpftool -j map dump (JSON)", (BPFTOOL_JSON,))
