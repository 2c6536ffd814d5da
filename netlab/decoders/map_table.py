"""A bpftool map dump as a table: which layout it has, and which view shows it.

A pasted dump rarely says which map it is: the command line may name it (``pinned
/sys/fs/bpf/tc/globals/cilium_lb4_services_v2``) or only give an id (``map dump id 338``).
The layout is therefore taken, in this order, from the caller (``--layout``), from the map
name and the key/value sizes, or from the sizes alone when they fit one table only. When
several tables fit (a 24/12-byte map is an IPv6 service map or the ipcache) the dump is
shown as raw bytes with a note saying which layouts fit, rather than guessed. A layout of
Cilium's load-balancer or sockops maps gets its view from :mod:`netlab.decoders.cilium`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from netlab.decoders.bpftool import MapEntry
from netlab.decoders.cilium import decode_lb_backends, decode_lb_services, decode_map, decode_sockmap
from netlab.decoders.layout import MapLayout, detect_layout, map_layouts, name_matches
from netlab.errors import DecodeError

# Maps whose values user space cannot read (sockhash/sockmap with a 4-byte fd value).
_UNREADABLE_VALUE_TABLES = ("sock_ops",)


@dataclass
class MapTable:
    """A decoded dump: the rows, the layout used (None: raw bytes) and what was decided."""

    frame: pd.DataFrame
    layout: MapLayout | None
    notes: list[str] = field(default_factory=list)


def map_name_in(command: str) -> str | None:
    """The map a bpftool command line names: a pin path's last part, ``name X`` or a
    ``cilium_*`` word; None for ``id N``."""
    m = re.search(r"\bpinned\s+(\S+)", command)
    if m:
        return m.group(1).rstrip("/").rsplit("/", 1)[-1]
    m = re.search(r"\bname\s+(\S+)", command)
    if m:
        return m.group(1)
    m = re.search(r"\b(cilium_\w+)", command)
    return m.group(1) if m else None


def resolve_layout(spec: str, key_size: int, value_size: int | None) -> MapLayout:
    """The layout a person named: ``lb4_services/D`` exactly, or ``lb4_services`` (the
    newest variant whose sizes fit the dump)."""
    table, _, variant = spec.strip().partition("/")
    known = map_layouts(table)
    if not known:
        tables = sorted({m.table for m in map_layouts()})
        raise DecodeError(f"no layout {spec!r}; known tables: {', '.join(tables)}")
    if variant:
        chosen = [m for m in known if m.variant == variant]
        if not chosen:
            raise DecodeError(
                f"{table} has no variant {variant!r}; known: {', '.join(m.variant for m in known)}"
            )
    else:
        chosen = known
    fits = [m for m in chosen if m.key.size == key_size and value_size in (None, m.value.size)]
    if not fits:
        sizes = ", ".join(sorted({f"{m.key.size}/{m.value.size}" for m in chosen}))
        got = f"{key_size}/{value_size if value_size is not None else '?'}"
        raise DecodeError(f"layout {spec!r} has key/value sizes {sizes} B; the dump has {got} B")
    return fits[0]


def raw_frame(entries: Sequence[MapEntry]) -> pd.DataFrame:
    """Keys and values as bpftool prints them, plus their host-order integer reading for
    the sizes of an integer (a map keyed by port or index reads at a glance)."""
    frame = pd.DataFrame(
        {
            "key": [e.key.hex(" ") for e in entries],
            "value": [e.value.hex(" ") if e.value is not None else None for e in entries],
            "error": pd.Series([e.error for e in entries], dtype=object),
        }
    )
    for name, blobs in (("key", [e.key for e in entries]), ("value", [e.value for e in entries])):
        sizes = {len(b) for b in blobs if b is not None}
        if len(sizes) == 1 and sizes.pop() in (1, 2, 4, 8):
            ints = [int.from_bytes(b, "little") if b is not None else None for b in blobs]
            frame[f"{name}_int"] = pd.array(ints, dtype="UInt64")
    return frame


def _per_cpu_rows(entries: Sequence[MapEntry]) -> tuple[list[MapEntry], list[int] | None]:
    if not any(e.per_cpu for e in entries):
        return list(entries), None
    rows: list[MapEntry] = []
    cpus: list[int] = []
    for e in entries:
        for cpu, value in enumerate(e.per_cpu or (e.value,)):
            rows.append(MapEntry(e.key, value, error=e.error, line=e.line))
            cpus.append(cpu)
    return rows, cpus


def _choose(
    entries: Sequence[MapEntry], map_name: str | None, layout: str | None, notes: list[str]
) -> MapLayout | None:
    key_sizes = {len(e.key) for e in entries}
    value_sizes = {len(e.value) for e in entries if e.value is not None}
    if len(key_sizes) > 1 or len(value_sizes) > 1:
        raise DecodeError(f"keys or values of several sizes ({sorted(key_sizes)}, {sorted(value_sizes)})")
    key_size = key_sizes.pop()
    value_size = value_sizes.pop() if value_sizes else None
    if layout:
        return resolve_layout(layout, key_size, value_size)
    if value_size is None:
        # Nothing readable: a sockhash (its values are fds), or grep fragments of one.
        fits = [m for m in map_layouts() if m.table in _UNREADABLE_VALUE_TABLES and m.key.size == key_size]
        named = [m for m in fits if map_name and any(name_matches(map_name, n) for n in m.map_names)]
        fits = named or fits
        how = "the key size (values unreadable)"
    else:
        try:
            fits = detect_layout(map_name, key_size, value_size)
        except DecodeError as exc:
            notes.append(f"raw bytes: {exc}")
            return None
        how = "name and sizes" if map_name else "sizes"
    if not fits:
        notes.append(f"raw bytes: no known layout has a {key_size}-byte key and unreadable values")
        return None
    tables = list(dict.fromkeys(m.table for m in fits))
    if len(tables) > 1:
        notes.append(
            f"raw bytes: key {key_size} B / value {value_size} B fits {', '.join(tables)}; "
            f"name the map's layout (--layout {tables[0]}, ...)"
        )
        return None
    chosen = fits[0]
    others = [m.variant for m in fits[1:]]
    also = f"; also fits variant {', '.join(others)}" if others else ""
    notes.append(f"layout {chosen} chosen by {how}{also}")
    return chosen


def map_table(
    entries: Sequence[MapEntry], *, map_name: str | None = None, layout: str | None = None
) -> MapTable:
    """Decode parsed entries into a table, choosing the layout as the module doc says."""
    notes: list[str] = []
    if not entries:
        return MapTable(raw_frame([]), None, notes)
    rows, cpus = _per_cpu_rows(entries)
    chosen = _choose(rows, map_name, layout, notes)
    if chosen is None:
        frame = raw_frame(rows)
    elif chosen.table.endswith("_services"):
        frame = decode_lb_services(rows, layout=chosen)
    elif chosen.table.endswith("_backends"):
        frame = decode_lb_backends(rows, layout=chosen)
    elif chosen.table in _UNREADABLE_VALUE_TABLES:
        frame = decode_sockmap(rows, layout=chosen)
    else:
        frame = decode_map(rows, chosen)
    if cpus is not None:
        frame.insert(0, "cpu", np.asarray(cpus, dtype=np.int64))
    if "error" in frame and frame["error"].isna().all():
        frame = frame.drop(columns=["error"])
    return MapTable(frame, chosen, notes)
