"""Cilium map views: the sockops sockmap and the service load-balancer maps.

Each view takes the entries of one map (from :mod:`netlab.decoders.bpftool` or read
directly), picks the layout from the map name and sizes unless one is given, and returns
a DataFrame in the field's words: sock keys with local/remote address and port, service
frontends (backend slot 0, with the backend count and flags) and backend slots pointing
at backend IDs, and the join of those into service -> slot -> backend address:port.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from netlab.decoders.bpftool import MapEntry
from netlab.decoders.bulk import decode_entries
from netlab.decoders.layout import MapLayout, detect_layout, flag_set, map_layouts, tell_apart
from netlab.errors import DecodeError

#: LB algorithm in the top 8 bits of the frontend's union word (common.h LB_ALGORITHM_SHIFT).
LB_ALGORITHMS = {0: "default", 1: "random", 2: "maglev"}
_L7_LOADBALANCER = flag_set("svc_flags2")["l7loadbalancer"]


class RawMap(Protocol):
    """A whole map read as raw bytes (``collectors.bpfmap.MapData``): typed by its sizes
    even when empty."""

    name: str
    key_size: int
    value_size: int
    keys: bytes | memoryview
    values: bytes | memoryview


Entries = Sequence[MapEntry] | RawMap


def _decoded(
    entries: Entries, layout: MapLayout | None, map_name: str | None
) -> tuple[pd.DataFrame, MapLayout]:
    """Entries decoded with ``layout`` or the layout their map's name and sizes select."""
    if isinstance(entries, Sequence):
        chosen = _pick_layout(entries, layout, map_name)
        return decode_map(entries, chosen), chosen
    fits = (
        [layout] if layout else detect_layout(map_name or entries.name, entries.key_size, entries.value_size)
    )
    # Sizes alone cannot tell some versions apart (lb4 services D and F): the bytes may,
    # and the layout label says what they showed.
    fits, note = tell_apart(fits, entries.keys, entries.values)
    chosen = fits[0]
    frame = decode_entries(chosen.key, chosen.value, entries.keys, entries.values)
    if chosen.key.lpm is not None:
        frame["cidr"] = _lpm_cidr(frame, *chosen.key.lpm)
    frame.attrs["also_fits"] = [str(m) for m in fits[1:]]
    frame.attrs["layout_note"] = note
    return frame, chosen


def _pick_layout(entries: Sequence[MapEntry], layout: MapLayout | None, map_name: str | None) -> MapLayout:
    if layout is not None:
        return layout
    if not entries:
        raise DecodeError(f"map {map_name!r}: no entries, and no layout given")
    key_size = len(entries[0].key)
    sizes = {len(e.value) for e in entries if e.value is not None}
    if len(sizes) > 1:
        raise DecodeError(f"map {map_name!r}: values of several sizes {sorted(sizes)}")
    if sizes:
        return detect_layout(map_name, key_size, sizes.pop())[0]
    # No readable value (a sockhash dump): the key alone decides.
    fits = [m for m in _candidates(map_name) if m.key.size == key_size]
    if not fits:
        raise DecodeError(f"map {map_name!r}: no known layout has a {key_size}-byte key")
    return fits[0]


def _candidates(map_name: str | None) -> list[MapLayout]:
    name = (map_name or "").rsplit("/", 1)[-1]
    return [m for m in map_layouts() if not name or any(n[:15] == name[:15] for n in m.map_names)]


def decode_map(entries: Sequence[MapEntry], layout: MapLayout) -> pd.DataFrame:
    """Decode parsed entries with ``layout``; an ``error`` column says which values failed."""
    if any(e.per_cpu for e in entries):
        raise DecodeError(f"{layout}: per-CPU values; decode each CPU's values separately")
    keys = [e.key for e in entries]
    values = [e.value for e in entries]
    frame = decode_entries(layout.key, layout.value, keys, values)
    if layout.key.lpm is not None:
        frame["cidr"] = _lpm_cidr(frame, *layout.key.lpm)
    frame["error"] = pd.Series([e.error for e in entries], dtype=object)
    return frame


def _lpm_cidr(frame: pd.DataFrame, prefixlen: str, address: str, bits_before: int) -> pd.Series:
    # An LPM trie key's prefix length counts every bit after itself, so the address's own
    # prefix is what remains after the fields matched before it (ipcache: pad and family).
    addr = frame[address].astype(str)
    limit = np.where(addr.str.contains(":", regex=False), 128, 32)
    bits = np.clip(frame[prefixlen].to_numpy(dtype=np.int64) - bits_before, 0, limit)
    return addr + "/" + pd.Series(bits, index=frame.index).astype(str)


def _endpoint(address: pd.Series, port: pd.Series) -> pd.Series:
    addr = address.astype(str)
    v6 = addr.str.contains(":", regex=False)
    addr = addr.where(~v6, "[" + addr + "]")
    return addr + ":" + port.astype(str)


# --- sockops sockmap -------------------------------------------------------------------


def decode_sockmap(
    entries: Sequence[MapEntry],
    layout: MapLayout | None = None,
    map_name: str | None = "cilium_sock_ops",
) -> pd.DataFrame:
    """Sock keys of a sockops sockhash as rows: sip, sport, dip, dport, family, cookie.

    Cilium's C names: a socket is held under the key its peer sends with, so ``sip``/
    ``sport`` are the holding socket's remote end and ``dip``/``dport`` its own (the Go
    mirror calls offset 0 DIP). ``cookie`` is the socket cookie when the map has 8-byte values; Cilium's
    ``cilium_sock_ops`` has 4-byte values that user space cannot read, so it is missing
    there and ``error`` holds what bpftool printed. ``key`` keeps the raw sock key bytes
    (for :func:`~netlab.decoders.bpftool.bpftool_map_delete_argv`).
    """
    chosen = _pick_layout(entries, layout, map_name)
    frame = decode_map(entries, chosen)
    if "cookie" not in frame:
        frame["cookie"] = pd.array([pd.NA] * len(frame), dtype="UInt64")
    frame["key"] = pd.Series([e.key for e in entries], dtype=object)
    first = ["sip", "sport", "dip", "dport", "family", "cookie"]
    return frame[first + [c for c in frame.columns if c not in first]]


def sockmap_entries_per_ip(sockmap: pd.DataFrame) -> pd.DataFrame:
    """How many sock keys mention each IP (as sip, as dip, in total), most first.

    Case 000's check: thousands of entries for one node IP on an idle node are stale.
    An entry whose sip and dip are the same IP counts once in ``entries``.
    """
    sip = sockmap["sip"].value_counts()
    dip = sockmap["dip"].value_counts()
    same = sockmap.loc[sockmap["sip"] == sockmap["dip"], "sip"].value_counts()
    out = pd.DataFrame({"as_sip": sip, "as_dip": dip}).fillna(0).astype(np.int64)
    out["entries"] = out["as_sip"] + out["as_dip"] - same.reindex(out.index).fillna(0).astype(np.int64)
    out.index.name = "ip"
    out = out.reset_index()[["ip", "entries", "as_sip", "as_dip"]]
    return out.sort_values(["entries", "ip"], ascending=[False, True], ignore_index=True)


def hex_to_ports(text: str) -> list[int]:
    """Ports from sock key port fields as bpftool prints them, e.g. ``1f 90 00 00 b6 8a 00 00``.

    Each 4-byte field holds the port in network order in its first two bytes
    (``bpf_ntohl(local_port) >> 16`` stored little-endian): ``[8080, 46730]``.
    """
    try:
        data = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise DecodeError(f"{text!r} is not hex bytes") from None
    if not data or len(data) % 4:
        raise DecodeError(f"{text!r}: sock key port fields are 4 bytes each")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 4)]


def hex_to_port(text: str) -> int:
    """One port from 2 bytes (``00 50``) or one 4-byte sock key port field (``1f 90 00 00``)."""
    data = "".join(text.split())
    if len(data) == 4:
        data += "0000"
    ports = hex_to_ports(data)
    if len(ports) != 1:
        raise DecodeError(f"{text!r}: expected one port field")
    return ports[0]


# --- load balancer: services and backends ---------------------------------------------


def _flag_names(values: pd.Series, flags: dict[str, int]) -> pd.Series:
    codes, uniques = pd.factorize(values.astype(np.int64))
    names = ["|".join(n for n, bit in flags.items() if int(u) & bit) for u in uniques]
    table = np.array(names, dtype=object)
    return pd.Series(table[codes] if len(table) else [], index=values.index, dtype=object)


def decode_lb_services(
    entries: Entries,
    layout: MapLayout | None = None,
    map_name: str | None = "cilium_lb4_services_v2",
) -> pd.DataFrame:
    """Service map entries: frontends (backend slot 0) and backend slots, one row each.

    Columns: ``frontend`` (``address:dport``), the key fields, ``is_frontend``,
    ``backend_id`` (missing on frontends, where the word means something else), ``count``
    (the frontend's backend count), ``rev_nat_index``, ``flags``/``flag_names``, and for
    frontends the union word read per version: ``lb_algorithm`` and ``affinity_timeout``
    (v1.18+: algorithm in the top 8 bits), or ``l7_proxy_port`` for L7 load balancing.
    """
    frame, chosen = _decoded(entries, layout, map_name)
    frame.insert(0, "frontend", _endpoint(frame["address"], frame["dport"]))
    front = frame["backend_slot"] == 0
    frame.insert(1, "is_frontend", front)
    for col in ("flags", "flags2"):
        if col not in frame:
            frame[col] = np.uint8(0)
    frame["flag_names"] = _flag_names(frame["flags"], flag_set("svc_flags"))
    frame["flag2_names"] = _flag_names(frame["flags2"], flag_set("svc_flags2"))
    if "backend_id" in frame:
        word = frame["backend_id"].astype("UInt32")
        frame["backend_id"] = word.where(~front, pd.NA)
        l7 = front & ((frame["flags2"].astype(np.int64) & _L7_LOADBALANCER) != 0)
        frame["l7_proxy_port"] = word.where(l7, pd.NA)
        plain = front & ~l7
        if chosen.value.frontend_word == "lb_alg_affinity":
            raw = word.to_numpy(dtype=np.int64, na_value=0)
            alg = pd.Series([LB_ALGORITHMS.get(a, str(a)) for a in range(256)], dtype=object)
            frame["lb_algorithm"] = pd.Series(alg.to_numpy()[raw >> 24]).where(plain, None)
            frame["affinity_timeout"] = pd.Series(raw & 0xFFFFFF, dtype="UInt32").where(plain, pd.NA)
        elif chosen.value.frontend_word == "affinity_timeout":
            frame["lb_algorithm"] = None
            frame["affinity_timeout"] = word.where(plain, pd.NA)
    frame.attrs["layout"] = _layout_label(chosen, frame)
    return frame


def _layout_label(chosen: MapLayout, frame: pd.DataFrame) -> str:
    others = frame.attrs.get("also_fits") or []
    label = str(chosen) + (f"; the same sizes also fit {', '.join(others)}" if others else "")
    note = frame.attrs.get("layout_note")
    return f"{label} ({note})" if note else label


def decode_lb_backends(
    entries: Entries,
    layout: MapLayout | None = None,
    map_name: str | None = "cilium_lb4_backends_v3",
) -> pd.DataFrame:
    """Backend map entries: ``backend_id`` -> ``backend`` (``address:port``), proto, state.

    ``state`` names the backend flags (active, terminating, quarantined, maintenance);
    ``cluster_id`` and ``zone`` appear for the layouts that have them.
    """
    frame, chosen = _decoded(entries, layout, map_name)
    frame.insert(1, "backend", _endpoint(frame["address"], frame["port"]))
    if "flags" in frame:
        states = {v: k for k, v in flag_set("backend_state").items()}
        frame["state"] = frame["flags"].map(lambda f: states.get(int(f), str(int(f))))
    frame.attrs["layout"] = _layout_label(chosen, frame)
    return frame


def lb_service_table(services: pd.DataFrame, backends: pd.DataFrame | None) -> pd.DataFrame:
    """Join services and backends: one row per service backend slot.

    Columns: ``frontend``, ``proto``, ``scope``, ``backend_slot``, ``backend_id``,
    ``count`` (from the frontend), ``in_count`` (slot <= count: slots past the count are
    leftovers the datapath never picks), ``backend``, ``backend_address``, ``backend_port``
    and ``backend_missing`` (the ID is not in the backend map: a dangling slot). Legacy v1
    services (no backend map) take the backend from the slot's own ``target``/``port``.
    """
    key = ["frontend"] + [c for c in ("proto", "scope") if c in services]
    fronts = services.loc[services["is_frontend"], key + ["count"]]
    slots = services.loc[~services["is_frontend"]].drop(columns=["count"])
    table = slots.merge(fronts, on=key, how="left")
    if "target" in table:  # v1: the slot itself carries the backend
        table["backend_address"] = table["target"]
        table["backend_port"] = table["port"]
        table["backend_missing"] = False
    else:
        if backends is None:
            raise DecodeError("service slots refer to backend IDs: pass the backend map")
        b = backends[["backend_id", "address", "port"]].rename(
            columns={"address": "backend_address", "port": "backend_port"}
        )
        b = b.assign(
            backend_id=b["backend_id"].astype(np.int64),
            backend_port=b["backend_port"].astype("Int64"),
        )
        table = table.assign(backend_id=table["backend_id"].astype("Int64"))
        table = table.merge(b, on="backend_id", how="left")
        table["backend_missing"] = table["backend_address"].isna()
    table["backend"] = _endpoint(table["backend_address"], table["backend_port"].astype("Int64"))
    table.loc[table["backend_missing"], "backend"] = None
    table["in_count"] = table["backend_slot"].astype(np.int64) <= table["count"].astype("Int64")
    cols = key + [
        "backend_slot",
        "backend_id",
        "count",
        "in_count",
        "backend",
        "backend_address",
        "backend_port",
        "backend_missing",
    ]
    cols = [c for c in cols if c in table]
    return table[cols].sort_values(key + ["backend_slot"], ignore_index=True)
