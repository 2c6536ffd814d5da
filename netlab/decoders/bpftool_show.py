"""``bpftool prog show``, ``map show`` and ``cgroup tree`` as tables, from text or JSON.

Live collection reads the JSON (:mod:`netlab.collectors.bpf_objects`); pasted output is
usually the plain text, so both are read into the same columns. Plain text puts one
object on a header line (``38: sock_ops  name bpf_sockmap  tag d9aec8c151998c9c  gpl``)
and indented lines after it (``loaded_at ...``, ``xlated 672B  jited 388B ...``);
``loaded_at`` is turned into UTC ISO time in both forms (the JSON gives epoch seconds,
the text the node's local time with its offset). A ``# comment`` an author added at the
end of a line is dropped. Old bpftool spells cgroup attach types ``connect4``, newer ones
``cgroup_inet4_connect``: ``hook`` is the short name in both.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from netlab.decoders.damage import Damage, strict
from netlab.decoders.paste import is_elision

if TYPE_CHECKING:
    import pandas as pd

PROGRAM_COLUMNS = ["prog_id", "type", "name", "tag", "gpl", "loaded_at", "uid", "run_time_ns", "run_cnt",
                   "bytes_xlated", "jited", "bytes_jited", "bytes_memlock", "map_ids", "btf_id", "pids", "pinned"]  # fmt: skip
MAP_COLUMNS = ["map_id", "type", "name", "flags", "key_size", "value_size", "max_entries", "bytes_memlock",
               "frozen", "btf_id", "pids", "pinned"]  # fmt: skip
CGROUP_COLUMNS = [
    "cgroup",
    "hook",
    "position",
    "prog_id",
    "name",
    "attach_flags",
    "attach_type",
    "programs_on_hook",
]

# bpftool's names for cgroup hooks (the kernel's attach types) -> the short names.
HOOK_NAMES = {
    "cgroup_inet4_connect": "connect4",
    "cgroup_inet6_connect": "connect6",
    "cgroup_inet4_post_bind": "post_bind4",
    "cgroup_inet6_post_bind": "post_bind6",
    "cgroup_udp4_sendmsg": "sendmsg4",
    "cgroup_udp6_sendmsg": "sendmsg6",
    "cgroup_udp4_recvmsg": "recvmsg4",
    "cgroup_udp6_recvmsg": "recvmsg6",
    "cgroup_inet4_getpeername": "getpeername4",
    "cgroup_inet6_getpeername": "getpeername6",
    "cgroup_inet4_getsockname": "getsockname4",
    "cgroup_inet6_getsockname": "getsockname6",
    "cgroup_inet4_bind": "bind4",
    "cgroup_inet6_bind": "bind6",
    "cgroup_sock_ops": "sock_ops",
    "cgroup_inet_ingress": "ingress",
    "cgroup_inet_egress": "egress",
    "cgroup_inet_sock_create": "sock_create",
    "cgroup_inet_sock_release": "sock_release",
    "cgroup_device": "device",
    "cgroup_sysctl": "sysctl",
    "cgroup_getsockopt": "getsockopt",
    "cgroup_setsockopt": "setsockopt",
}
_OBJECT = re.compile(r"^(\d+):\s+(?:type\s+)?(\S+)")
_COMMENT = re.compile(r"\s+#\s.*$")
_CGROUP_FLAGS = ("multi", "override")


def _loaded_at(value: object) -> str | None:
    if isinstance(value, int):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
    if isinstance(value, str):
        try:
            return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").astimezone(dt.UTC).isoformat()
        except ValueError:
            return value
    return None


def _pids(value: object) -> list[str]:
    if isinstance(value, list):
        return [f"{p.get('comm')}({p.get('pid')})" for p in value if isinstance(p, Mapping)]
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return []


def programs_from_json(objects: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """``bpftool -j prog show`` objects as rows."""
    import pandas as pd  # here: the lab runs these on nodes without pandas (netlab.ship)

    rows = [
        {"prog_id": p.get("id"), "type": p.get("type"), "name": p.get("name", ""), "tag": p.get("tag"),
         "gpl": p.get("gpl_compatible"), "loaded_at": _loaded_at(p.get("loaded_at")), "uid": p.get("uid"),
         "run_time_ns": p.get("run_time_ns"), "run_cnt": p.get("run_cnt"), "bytes_xlated": p.get("bytes_xlated"),
         "jited": p.get("jited"), "bytes_jited": p.get("bytes_jited"), "bytes_memlock": p.get("bytes_memlock"),
         "map_ids": list(p.get("map_ids", [])), "btf_id": p.get("btf_id"), "pids": _pids(p.get("pids")),
         "pinned": list(p.get("pinned", []))}
        for p in objects
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=PROGRAM_COLUMNS)


def maps_from_json(objects: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """``bpftool -j map show`` (or ``map list``) objects as rows."""
    import pandas as pd  # here: the lab runs these on nodes without pandas (netlab.ship)

    rows = [
        {"map_id": m.get("id"), "type": m.get("type"), "name": m.get("name", ""), "flags": m.get("flags"),
         "key_size": m.get("bytes_key"), "value_size": m.get("bytes_value"), "max_entries": m.get("max_entries"),
         "bytes_memlock": m.get("bytes_memlock"), "frozen": bool(m.get("frozen")) if "frozen" in m else None,
         "btf_id": m.get("btf_id"), "pids": _pids(m.get("pids")), "pinned": list(m.get("pinned", []))}
        for m in objects
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=MAP_COLUMNS)


def cgroup_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Attachments (``cgroup``, ``prog_id``, ``attach_type``, ``attach_flags``, ``name``) in
    the order bpftool listed them, with each hook's run ``position`` (1 runs first: the kernel
    keeps multi-attached programs in attach order and runs them first to last) and how many
    programs share the hook."""
    import pandas as pd  # here: the lab runs these on nodes without pandas (netlab.ship)

    out: list[dict[str, Any]] = []
    position: dict[tuple[str, str], int] = {}
    for r in rows:
        attach_type = str(r.get("attach_type", ""))
        hook = HOOK_NAMES.get(attach_type, attach_type)
        key = (str(r.get("cgroup", "")), hook)
        position[key] = position.get(key, 0) + 1
        out.append({"cgroup": key[0], "hook": hook, "position": position[key], "prog_id": r.get("id"),
                    "name": r.get("name", ""), "attach_flags": r.get("attach_flags", ""),
                    "attach_type": attach_type})  # fmt: skip
    frame = pd.DataFrame(out, columns=CGROUP_COLUMNS[:-1])
    frame["programs_on_hook"] = (
        frame.groupby(["cgroup", "hook"])["prog_id"].transform("count") if len(frame) else []
    )
    return frame


def cgroups_from_json(groups: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """``bpftool -j cgroup tree`` (cgroups with their programs) or ``cgroup show`` (programs)."""
    rows: list[dict[str, Any]] = []
    for group in groups:
        if "programs" in group:
            rows += [{**p, "cgroup": group.get("cgroup", "")} for p in group["programs"]]
        else:
            rows.append(dict(group))
    return cgroup_table(rows)


def _objects(text: str, what: str, damage: Damage) -> list[tuple[int, str, str]]:
    """(line, id and type, the object's text on one line) for each object of plain output."""
    objects: list[tuple[int, str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line or is_elision(line) or line == "--":
            continue
        if _OBJECT.match(line):
            objects.append((number, line, ""))
        elif objects:
            first, head, rest = objects[-1]
            objects[-1] = (first, head, f"{rest}  {line}")
        else:
            damage.report(f"{what} line {number}: {line[:60]!r} before any 'ID: TYPE' line")
    return objects


def _word(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    return m.group(1) if m else None


def _num(pattern: str, text: str) -> int | None:
    value = _word(pattern, text)
    return int(value) if value is not None else None


def parse_prog_show(text: str, *, damage: Damage | None = None) -> pd.DataFrame:
    """Plain ``bpftool prog show`` output as rows (the columns of :func:`programs_from_json`)."""
    rows = []
    for _, head, rest in _objects(text, "prog show", strict(damage)):
        m = _OBJECT.match(head)
        assert m is not None
        body = f"{head[m.end() :]}  {rest}"
        jited = None if "jited" not in body else "not jited" not in body
        map_ids = _word(r"\bmap_ids\s+([\d,]+)", body)
        rows.append({"id": int(m.group(1)), "type": m.group(2), "name": _word(r"\bname\s+(\S+)", body) or "",
                     "tag": _word(r"\btag\s+([0-9a-f]+)", body),
                     "gpl_compatible": bool(re.search(r"(?:^|\s)gpl(?:\s|$)", body)),
                     "loaded_at": _word(r"\bloaded_at\s+(\S+)", body), "uid": _num(r"\buid\s+(\d+)", body),
                     "run_time_ns": _num(r"\brun_time_ns\s+(\d+)", body), "run_cnt": _num(r"\brun_cnt\s+(\d+)", body),
                     "bytes_xlated": _num(r"\bxlated\s+(\d+)B", body), "jited": jited,
                     "bytes_jited": _num(r"\bjited\s+(\d+)B", body), "bytes_memlock": _num(r"\bmemlock\s+(\d+)B", body),
                     "map_ids": [int(i) for i in map_ids.split(",") if i] if map_ids else [],
                     "btf_id": _num(r"\bbtf_id\s+(\d+)", body), "pids": _word(r"\bpids\s+(.+?)(?:\s{2,}|$)", body),
                     "pinned": re.findall(r"\bpinned\s+(\S+)", body)})  # fmt: skip
    return programs_from_json(rows)


def parse_map_show(text: str, *, damage: Damage | None = None) -> pd.DataFrame:
    """Plain ``bpftool map show`` output as rows (the columns of :func:`maps_from_json`)."""
    rows = []
    for _, head, rest in _objects(text, "map show", strict(damage)):
        m = _OBJECT.match(head)
        assert m is not None
        body = f"{head[m.end() :]}  {rest}"
        flags = _word(r"\bflags\s+(0x[0-9a-fA-F]+)", body)
        row: dict[str, Any] = {"id": int(m.group(1)), "type": m.group(2), "name": _word(r"\bname\s+(\S+)", body) or "",
                               "flags": int(flags, 16) if flags else None,
                               "bytes_key": _num(r"\bkey\s+(\d+)B", body), "bytes_value": _num(r"\bvalue\s+(\d+)B", body),
                               "max_entries": _num(r"\bmax_entries\s+(\d+)", body),
                               "bytes_memlock": _num(r"\bmemlock\s+(\d+)B", body),
                               "btf_id": _num(r"\bbtf_id\s+(\d+)", body), "pids": _word(r"\bpids\s+(.+?)(?:\s{2,}|$)", body),
                               "pinned": re.findall(r"\bpinned\s+(\S+)", body)}  # fmt: skip
        if re.search(r"(?:^|\s)frozen(?:\s|$)", body):
            row["frozen"] = 1
        rows.append(row)
    return maps_from_json(rows)


def parse_cgroup_tree(text: str, *, cgroup: str = "", damage: Damage | None = None) -> pd.DataFrame:
    """Plain ``bpftool cgroup tree`` (or ``cgroup show``, whose cgroup is ``cgroup``) output.

    A line starting with ``/`` names the cgroup the program lines after it are attached
    to; a program line is ``ID  ATTACH_TYPE  [multi|override]  [NAME]``.
    """
    damage = strict(damage)
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line or is_elision(line) or line == "CgroupPath" or line.startswith("ID "):
            continue
        if line.startswith("/"):
            cgroup = line
            continue
        words = line.split()
        if not words[0].isdigit() or len(words) < 2:
            damage.report(f"cgroup tree line {number}: {line[:60]!r} is not 'ID ATTACH_TYPE [FLAGS] [NAME]'")
            continue
        flags = words[2] if len(words) > 2 and words[2] in _CGROUP_FLAGS else ""
        name = " ".join(words[3:] if flags else words[2:])
        rows.append({"cgroup": cgroup, "id": int(words[0]), "attach_type": words[1], "attach_flags": flags,
                     "name": name})  # fmt: skip
    return cgroup_table(rows)
