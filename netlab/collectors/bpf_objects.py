"""BPF programs, maps and cgroup attachments as tables, from ``bpftool -j``.

Read-only: ``bpftool prog/map show`` and ``cgroup tree`` only list. ``-f`` adds the
bpffs paths each object is pinned at, which is how the agent-managed copy of a map is
told from a copy held only by an old program.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pandas as pd

from netlab.decoders import MapEntry, parse_map_dump_json
from netlab.targets import Target

# bpftool's names for cgroup hooks, as the kernel's attach types.
HOOK_NAMES = {
    "cgroup_inet4_connect": "connect4",
    "cgroup_inet6_connect": "connect6",
    "cgroup_inet4_post_bind": "post_bind4",
    "cgroup_udp4_sendmsg": "sendmsg4",
    "cgroup_udp4_recvmsg": "recvmsg4",
    "cgroup_inet4_getpeername": "getpeername4",
    "cgroup_sock_ops": "sock_ops",
    "cgroup_inet_ingress": "ingress",
    "cgroup_inet_egress": "egress",
}


def programs(target: Target) -> pd.DataFrame:
    """Every loaded program: id, type, name, tag, load time, map ids, pins."""
    rows = []
    for p in target.host().run_json(["bpftool", "-j", "-f", "prog", "show"]) or []:
        loaded = p.get("loaded_at")
        rows.append({
            "prog_id": p["id"], "type": p.get("type"), "name": p.get("name", ""), "tag": p.get("tag"),
            "loaded_at": _dt.datetime.fromtimestamp(loaded, _dt.UTC).isoformat() if isinstance(loaded, int) else loaded,
            "map_ids": list(p.get("map_ids", [])), "pinned": list(p.get("pinned", [])),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["prog_id", "type", "name", "tag", "loaded_at", "map_ids", "pinned"])


def maps(target: Target) -> pd.DataFrame:
    """Every map: id, type, name (15 characters at most), key/value sizes, pins."""
    rows = [
        {"map_id": m["id"], "type": m.get("type"), "name": m.get("name", ""), "key_size": m.get("bytes_key"),
         "value_size": m.get("bytes_value"), "max_entries": m.get("max_entries"), "pinned": list(m.get("pinned", []))}
        for m in target.host().run_json(["bpftool", "-j", "-f", "map", "show"]) or []
    ]  # fmt: skip
    return pd.DataFrame(
        rows, columns=["map_id", "type", "name", "key_size", "value_size", "max_entries", "pinned"]
    )


def cgroup_attachments(target: Target, root: str) -> pd.DataFrame:
    """Programs attached to every cgroup under ``root``, per hook in run order.

    ``bpftool cgroup tree`` lists a cgroup's programs per attach type in the order the
    kernel keeps them; for multi-attach that is attach order, and the kernel runs them
    first to last (FIFO), so ``position`` 1 runs first.
    """
    rows: list[dict[str, Any]] = []
    for group in target.host().run_json(["bpftool", "-j", "cgroup", "tree", root]) or []:
        position: dict[str, int] = {}
        for p in group.get("programs", []):
            hook = HOOK_NAMES.get(p.get("attach_type", ""), p.get("attach_type", ""))
            position[hook] = position.get(hook, 0) + 1
            rows.append({"cgroup": group["cgroup"], "hook": hook, "position": position[hook],
                         "prog_id": p["id"], "name": p.get("name", ""), "attach_flags": p.get("attach_flags", "")})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["cgroup", "hook", "position", "prog_id", "name", "attach_flags"])
    counts = frame.groupby(["cgroup", "hook"])["prog_id"].transform("count") if len(frame) else []
    frame["programs_on_hook"] = counts
    return frame


def dump(target: Target, map_id: int, *, timeout: float = 60) -> list[MapEntry]:
    """All entries of map ``map_id`` (``bpftool -j map dump``)."""
    result = target.host().run(["bpftool", "-j", "map", "dump", "id", str(int(map_id))], timeout=timeout)
    return parse_map_dump_json(result.stdout)
