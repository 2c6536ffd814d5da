"""Reading whole BPF maps fast: the kernel's batch lookup into contiguous buffers.

``bpftool -j map dump`` prints every byte as a JSON string ("0x0a"), which for a
million-entry Cilium map means gigabytes of text. Here the map is read with
``BPF_MAP_LOOKUP_BATCH`` (:mod:`netlab.probes.map_batch`, which a remote node runs with
its own python3) straight into key and value buffers, which
:func:`netlab.decoders.decode_entries` turns into a DataFrame without a per-entry Python
loop. Maps that do not support batch lookup (sockhash, sockmap) fall back to ``bpftool
-j map dump``; the result says which way was used. :func:`libbpf` is for the writers
(the lab and the benchmarks fill maps with ``bpf_map_update_batch``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import pandas as pd

from netlab import params
from netlab.decoders import MapLayout, decode_entries, detect_layout
from netlab.errors import NetlabError
from netlab.probes import map_batch

#: How a map read by :mod:`netlab.probes.map_batch` was read (recorded in reports).
BATCH = "bpf_map_lookup_batch (the bpf() system call, up to 64k entries per call)"

_lib: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        path = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            _lib = ctypes.CDLL(path, use_errno=True)
        except OSError:
            raise NetlabError("libbpf.so.1 is missing", "apt-get install libbpf1") from None
        _lib.bpf_map_update_batch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                              ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]  # fmt: skip
        _lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
        _lib.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
    return _lib


@dataclass
class MapData:
    map_id: int
    name: str
    key_size: int
    value_size: int
    # The kernel's buffers as read (read-only views, not copies), or bpftool's bytes.
    keys: bytes | memoryview
    values: bytes | memoryview
    count: int
    mechanism: str
    truncated: bool


def read(*, pin: str | None = None, map_id: int | None = None, max_entries: int = 2_000_000,
         chunk: int = 65536, stripes: int | None = None) -> MapData:  # fmt: skip
    """Every entry of a hash/array map with the kernel's batch lookup, at most
    ``max_entries`` (the result says when it stopped there); ``stripes``: see
    :func:`netlab.probes.map_batch.read`."""
    try:
        info, keys, values = map_batch.read(map_id, None if pin is None else params.path(pin, "pin"),
                                            max_entries=max_entries, chunk=chunk, stripes=stripes)  # fmt: skip
    except map_batch.BatchError as exc:
        raise NetlabError(str(exc)) from None
    return from_batch(info, keys, values)


def from_batch(info: dict, keys: bytes | memoryview, values: bytes | memoryview) -> MapData:
    stripes = int(info.get("stripes", 1))
    mechanism = BATCH if stripes == 1 else f"{BATCH}; {stripes} ranges of buckets walked in parallel"
    return MapData(int(info["id"]), str(info["name"]), int(info["key_size"]), int(info["value_size"]), keys,
                   values, int(info["count"]), mechanism, bool(info["truncated"]))  # fmt: skip


def frame(*, pin: str | None = None, map_id: int | None = None, layout: MapLayout | None = None,
          max_entries: int = 2_000_000, compact: bool = True) -> pd.DataFrame:  # fmt: skip
    """A map read and decoded into a DataFrame (layout detected from name and sizes).

    ``compact`` (the default, for maps of a million entries): IPv4 addresses stay
    integers and enums categoricals, so the table costs about what the map's bytes do;
    :func:`netlab.decoders.addresses.readable` formats the rows you show."""
    data = read(pin=pin, map_id=map_id, max_entries=max_entries)
    chosen = layout or detect_layout(data.name, data.key_size, data.value_size)[0]
    out = decode_entries(chosen.key, chosen.value, data.keys, data.values, compact=compact)
    out.attrs.update(layout=str(chosen), mechanism=data.mechanism, truncated=data.truncated)
    return out
