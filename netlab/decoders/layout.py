"""Struct layouts as data: loading, checking and detecting them.

The layouts live in ``layouts/cilium.json`` (one entry per C struct, each citing the Cilium
file and version it comes from, and one entry per map pairing a key struct with a value
struct). This module turns them into :class:`StructLayout` / :class:`MapLayout` objects,
checks them once at load time (fields inside the struct, no overlaps, sizes that match
their kind) and picks the layouts that fit a map by its name and key/value sizes.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from netlab.errors import DecodeError

#: Size in bytes of each field kind; ``pad`` takes any size.
KIND_SIZES: dict[str, int | None] = {
    "ipv4_be": 4,
    "ipv6": 16,
    "ip_union": 16,
    "be16": 2,
    "le16": 2,
    "be32": 4,
    "le32": 4,
    "le64": 8,
    "u8": 1,
    "be16_in_u32": 4,
    "sock_cookie": 8,
    "mac": 6,
    "pad": None,
}

#: The kernel keeps 15 visible characters of a BPF object name (BPF_OBJ_NAME_LEN = 16).
BPF_OBJ_NAME_VISIBLE = 15


@dataclass(frozen=True)
class Field:
    """One field of a struct: where it sits and how its bytes read."""

    name: str
    offset: int
    size: int
    kind: str
    enum: dict[int, str] | None = None
    flags: dict[str, int] | None = None
    family_field: str | None = None
    ipv4_family: int | None = None
    note: str = ""


@dataclass(frozen=True)
class StructLayout:
    """A fixed-size C struct as stored in a BPF map key or value."""

    name: str
    size: int
    fields: tuple[Field, ...]
    cilium: str
    source: str
    cilium_names: tuple[str, ...] = ()
    frontend_word: str | None = None
    note: str = ""
    #: For an LPM trie key: (prefix length field, address field, prefix bits before the address).
    lpm: tuple[str, str, int] | None = None

    @property
    def columns(self) -> list[str]:
        """Names of the decoded columns (every field but padding)."""
        return [f.name for f in self.fields if f.kind != "pad"]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    def pack(self, row: dict[str, Any]) -> bytes:
        """One row as struct bytes, with the standard library only.

        The same encoding as :func:`netlab.decoders.bulk.encode` (tested to agree), for
        code that runs where numpy does not: the lab on a node (:mod:`netlab.ship`).
        """
        unknown = sorted(set(row) - set(self.columns))
        if unknown:
            raise DecodeError(f"{self.name}: unknown field(s) {', '.join(unknown)}")
        out = bytearray(self.size)
        for f in self.fields:
            if f.kind != "pad" and f.name in row:
                out[f.offset : f.offset + f.size] = _pack_field(self, f, row)
        return bytes(out)


_INT_FORMS: dict[str, tuple[Literal["big", "little"], int]] = {"be16": ("big", 2), "le16": ("little", 2), "be32": ("big", 4), "le32": ("little", 4),
              "le64": ("little", 8), "u8": ("little", 1), "sock_cookie": ("little", 8),
              "be16_in_u32": ("big", 2)}  # fmt: skip


def _pack_field(layout: StructLayout, f: Field, row: dict[str, Any]) -> bytes:
    where, value = f"{layout.name} field {f.name}", row[f.name]
    if f.kind in ("ipv4_be", "ipv6", "ip_union"):
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            raise DecodeError(f"{where}: {value!r} is not an IP address") from None
        if f.kind == "ipv4_be":
            if address.version != 4:
                raise DecodeError(f"{where}: {value!r} is not IPv4")
            return address.packed
        if f.kind == "ipv6" and address.version != 6:
            raise DecodeError(f"{where}: {value!r} is not IPv6")
        if f.kind == "ip_union":
            family = layout.field(str(f.family_field))
            code = _pack_int(family, row.get(family.name, 0), f"{layout.name} field {family.name}")
            if (address.version == 4) != (code == f.ipv4_family):
                raise DecodeError(
                    f"{where}: address {value!r} does not match {family.name} {row.get(family.name)!r}"
                )
        return address.packed.ljust(f.size, b"\0")
    if f.kind == "mac":
        parts = str(value).split(":")
        try:
            packed = bytes(int(p, 16) for p in parts)
        except ValueError:
            packed = b""
        if len(packed) != 6 or any(len(p) != 2 for p in parts):
            raise DecodeError(f"{where}: {value!r} is not a MAC address")
        return packed
    order, width = _INT_FORMS[f.kind]
    return _pack_int(f, value, where).to_bytes(width, order).ljust(f.size, b"\0")


def _pack_int(f: Field, value: Any, where: str) -> int:
    if f.enum is not None and isinstance(value, str) and not value.strip().isdigit():
        codes = {name: code for code, name in f.enum.items()}
        if value not in codes:
            raise DecodeError(f"{where}: {value!r} is not one of {', '.join(codes)}")
        value = codes[value]
    try:
        number = int(value)
        if number != value and str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise DecodeError(f"{where}: {value!r} is not an integer") from None
    limit = (1 << (8 * _INT_FORMS[f.kind][1])) - 1
    if not 0 <= number <= limit:
        raise DecodeError(f"{where}: {number} does not fit in {f.kind} (0..{limit})")
    return number


@dataclass(frozen=True)
class MapLayout:
    """A key struct and a value struct for one BPF map in one Cilium version range."""

    table: str
    variant: str
    cilium: str
    map_names: tuple[str, ...]
    key: StructLayout
    value: StructLayout
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        sizes = f"key {self.key.size} B, value {self.value.size} B"
        return f"{self.table}/{self.variant} ({self.cilium}; {sizes})"


def _check_struct(name: str, struct: StructLayout) -> None:
    # Layout data is hand-written from LAYOUTS.md: catch typos before they mis-decode.
    covered = [False] * struct.size
    for f in struct.fields:
        want = KIND_SIZES.get(f.kind, -1)
        if want == -1:
            raise ValueError(f"layout {name}.{f.name}: unknown kind {f.kind!r}")
        if want is not None and want != f.size:
            raise ValueError(f"layout {name}.{f.name}: kind {f.kind} is {want} B, not {f.size}")
        if f.offset < 0 or f.offset + f.size > struct.size:
            raise ValueError(f"layout {name}.{f.name}: outside the {struct.size}-byte struct")
        for i in range(f.offset, f.offset + f.size):
            if covered[i]:
                raise ValueError(f"layout {name}.{f.name}: overlaps byte {i}")
            covered[i] = True
        if f.kind == "ip_union" and (f.family_field is None or f.ipv4_family is None):
            raise ValueError(f"layout {name}.{f.name}: ip_union needs family_field, ipv4_family")
    if not all(covered):
        raise ValueError(f"layout {name}: bytes {covered.index(False)}.. not described")


@cache
def _load() -> tuple[dict[str, StructLayout], tuple[MapLayout, ...], dict[str, dict[str, int]]]:
    # pkgutil asks the package's own loader (a directory or a zipapp) without importing
    # importlib.resources' readers: a millisecond on the first map a run decodes.
    data = pkgutil.get_data("netlab.decoders", "layouts/cilium.json")
    if data is None:
        raise DecodeError("netlab.decoders: the layouts file layouts/cilium.json is missing from the package")
    raw = json.loads(data)
    enums = {k: {int(n): v for n, v in e.items()} for k, e in raw["enums"].items()}
    flag_sets: dict[str, dict[str, int]] = raw["flag_sets"]
    structs: dict[str, StructLayout] = {}
    for name, s in raw["structs"].items():
        fields = tuple(
            Field(
                name=f["name"],
                offset=f["offset"],
                size=f["size"],
                kind=f["kind"],
                enum=enums[f["enum"]] if "enum" in f else None,
                flags=flag_sets[f["flags"]] if "flags" in f else None,
                family_field=f.get("family_field"),
                ipv4_family=f.get("ipv4_family"),
                note=f.get("note", ""),
            )
            for f in s["fields"]
        )
        struct = StructLayout(
            name=name,
            size=s["size"],
            fields=fields,
            cilium=s["cilium"],
            source=s["source"],
            cilium_names=tuple(s.get("cilium_names", ())),
            frontend_word=s.get("frontend_word"),
            note=s.get("note", ""),
            lpm=(s["lpm"]["prefixlen"], s["lpm"]["address"], s["lpm"]["bits_before"]) if "lpm" in s else None,
        )
        _check_struct(name, struct)
        structs[name] = struct
    maps = tuple(
        MapLayout(
            table=m["table"],
            variant=m["variant"],
            cilium=m["cilium"],
            map_names=tuple(m["map_names"]),
            key=structs[m["key"]],
            value=structs[m["value"]],
        )
        for m in raw["maps"]
    )
    return structs, maps, flag_sets


def struct_layout(name: str) -> StructLayout:
    """The struct layout called ``name`` in the data file, e.g. ``"lb4_key@D"``."""
    structs = _load()[0]
    if name not in structs:
        raise KeyError(f"no struct layout {name!r}; known: {', '.join(sorted(structs))}")
    return structs[name]


def map_layouts(table: str | None = None) -> list[MapLayout]:
    """Every known map layout (newest first within a table), optionally for one table."""
    return [m for m in _load()[1] if table is None or m.table == table]


def map_layout(table: str, variant: str) -> MapLayout:
    """The map layout for ``table`` (e.g. ``"lb4_services"``) and ``variant`` (e.g. ``"D"``)."""
    for m in _load()[1]:
        if m.table == table and m.variant == variant:
            return m
    raise KeyError(f"no map layout {table}/{variant}")


def flag_set(name: str) -> dict[str, int]:
    """A named set of flag bits from the data file (``svc_flags``, ``svc_flags2``...)."""
    return dict(_load()[2][name])


def name_matches(seen: str, full: str) -> bool:
    """Whether a map name as seen (maybe truncated to 15 characters) is the map ``full``."""
    # The kernel truncates object names to 15 characters, so `cilium_lb4_serv` stands for
    # both `cilium_lb4_services` and `cilium_lb4_services_v2`: a 15-character name is a
    # prefix, anything shorter must match exactly. Per-endpoint maps are named by a
    # pattern (`cilium_policy_*`).
    if "*" in full:
        return fnmatch.fnmatchcase(seen, full)
    if len(seen) >= BPF_OBJ_NAME_VISIBLE:
        return full[:BPF_OBJ_NAME_VISIBLE] == seen[:BPF_OBJ_NAME_VISIBLE]
    return full == seen


def detect_layout(map_name: str | None, key_size: int, value_size: int) -> list[MapLayout]:
    """The map layouts that fit a map, most recent Cilium version first.

    ``map_name`` may be the kernel's truncated object name (``cilium_lb4_serv``), the full
    name, a pin path (``/sys/fs/bpf/tc/globals/cilium_lb4_services_v2``), or empty/None
    for maps loaded without a name, in which case sizes alone decide. Several layouts can
    fit the same sizes (e.g. Cilium v1.8-v1.17 and v1.18+ service values are both 12 bytes);
    all are returned and the first is the newest. Raises :class:`DecodeError` naming the map
    and its sizes when nothing fits.
    """
    name = (map_name or "").strip().rstrip("/").rsplit("/", 1)[-1]
    by_name = [m for m in map_layouts() if not name or any(name_matches(name, n) for n in m.map_names)]
    fits = [m for m in by_name if m.key.size == key_size and m.value.size == value_size]
    if fits:
        return fits
    label = f"map {name!r}" if name else "unnamed map"
    if by_name and name:
        known = sorted({f"{m.key.size}/{m.value.size}" for m in by_name})
        raise DecodeError(
            f"{label}: no known layout has key {key_size} B / value {value_size} B "
            f"(known key/value sizes for this name: {', '.join(known)})"
        )
    raise DecodeError(f"{label} (key {key_size} B, value {value_size} B): no known layout")


# Kubernetes caps sessionAffinityConfig.clientIP.timeoutSeconds at 86400: a frontend word
# of 2**24 or more is no affinity timeout, it carries v1.18's LB algorithm in its top byte.
_MAX_AFFINITY_TIMEOUT = 1 << 24


def tell_apart(fits: list[MapLayout], keys: Any, values: Any) -> tuple[list[MapLayout], str]:
    """Of several layouts that fit one map's sizes (newest first), those its bytes allow,
    and a sentence saying what differs between them and what the bytes showed.

    A layout is ruled out when its padding holds data in any entry (the agent writes
    padding as zeros), or when it reads a frontend's word as an affinity timeout and a
    frontend's word is too large for one. When several remain, the bytes where they
    differ are zero in every entry and they read the map alike."""
    if len(fits) < 2:
        return fits, ""
    import numpy as np  # here: the lab, shipped to nodes without numpy, imports this module

    k = np.frombuffer(keys, np.uint8).reshape(-1, fits[0].key.size)
    v = np.frombuffer(values, np.uint8).reshape(-1, fits[0].value.size)
    allowed, why = [], []
    for m in fits:
        pads = [(side, f) for side, s, rows in (("key", m.key, k), ("value", m.value, v)) for f in s.fields
                if f.kind == "pad" and rows[:, f.offset:f.offset + f.size].any()]  # fmt: skip
        if pads:
            side, f = pads[0]
            why.append(f"not {m.variant}: its {side} padding at byte {f.offset} holds data")
            continue
        if m.value.frontend_word == "affinity_timeout" and _big_frontend_word(m, k, v):
            why.append(f"not {m.variant}: a frontend's word is too large for an affinity timeout")
            continue
        allowed.append(m)

    def fields(ms: list[MapLayout]) -> list[set[tuple[str, int, int, str, str]]]:
        return [{(side, f.offset, f.size, f.kind, f.name) for side, s in (("key", m.key), ("value", m.value))
                 for f in s.fields} for m in ms]  # fmt: skip

    shapes = fields(fits)
    differ = sorted({f[4] for shape in shapes for f in shape - shapes[0].intersection(*shapes[1:])})
    words = {m.value.frontend_word for m in fits}
    if len(words) > 1:
        differ.append("the frontend's word (" + " or ".join(sorted(w for w in words if w)) + ")")
    variants = "/".join(m.variant for m in fits)
    note = f"{variants} fit the sizes; they differ in {', '.join(differ) or 'names only'}"
    if len(allowed) > 1:
        left, rows = fields(allowed), {"key": k, "value": v}
        used = any(rows[side][:, off : off + size].any() for shape in left
                   for side, off, size, _, _ in shape - left[0].intersection(*left[1:]))  # fmt: skip
        # v1.18 keeps the affinity timeout in the word's low 24 bits: with no algorithm in
        # the top byte, both read a frontend's word alike.
        left_words = {m.value.frontend_word for m in allowed}
        same_word = len(left_words) == 1 or (
            left_words <= {"affinity_timeout", "lb_alg_affinity"} and not _big_frontend_word(allowed[0], k, v)
        )
        names = "/".join(m.variant for m in allowed)
        if not used and same_word:
            note += f": where {names} differ the bytes are zero in every entry, so they read this map alike"
        else:
            note += f"; the bytes rule out none of {names}, which read some fields differently: read as {allowed[0].variant}"
        if why:
            note += " (" + "; ".join(why) + ")"
    elif allowed:
        note += f"; the bytes say {allowed[0].variant} (" + "; ".join(why) + ")"
    else:
        note += "; the bytes fit none of them (" + "; ".join(why) + ")"
    return allowed or fits[:1], note


def _big_frontend_word(m: MapLayout, k: Any, v: Any) -> bool:
    slot = next((f for f in m.key.fields if f.name == "backend_slot"), None)
    word = next((f for f in m.value.fields if f.name == "backend_id"), None)
    if slot is None or word is None or not len(k):
        return False
    fronts = k[:, slot.offset : slot.offset + slot.size].any(axis=1) == 0
    import numpy as np

    words = np.ascontiguousarray(v[fronts, word.offset : word.offset + 4]).view("<u4").reshape(-1)
    return bool((words >= _MAX_AFFINITY_TIMEOUT).any())
