"""Reading whole BPF maps fast: the kernel's batch lookup into numpy buffers.

``bpftool -j map dump`` prints every byte as a JSON string ("0x0a"), which for a
million-entry Cilium map means gigabytes of text. Here the map is read with
``bpf_map_lookup_batch`` (libbpf, from the OS's libbpf.so.1) straight into contiguous key
and value buffers, which :func:`netlab.decoders.decode_entries` turns into a DataFrame
without a per-entry Python loop. Maps that do not support batch lookup (sockhash,
sockmap) fall back to ``bpftool -j map dump``; the result says which way was used.
Local only: on a remote node this runs through ``netlab`` there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from netlab import params
from netlab.decoders import MapLayout, decode_entries, detect_layout
from netlab.errors import NetlabError

_lib: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        path = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            _lib = ctypes.CDLL(path, use_errno=True)
        except OSError:
            raise NetlabError("libbpf.so.1 is missing", "apt-get install libbpf1") from None
        _lib.bpf_map_lookup_batch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                              ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]  # fmt: skip
        _lib.bpf_map_update_batch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                              ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]  # fmt: skip
        _lib.bpf_obj_get_info_by_fd.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint32),
        ]
        _lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
        _lib.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
    return _lib


class _MapInfo(ctypes.Structure):
    # struct bpf_map_info (include/uapi/linux/bpf.h), the fields up to the name.
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("rest", ctypes.c_uint8 * 64)]  # fmt: skip


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


@dataclass
class MapData:
    map_id: int
    name: str
    key_size: int
    value_size: int
    keys: bytes
    values: bytes
    count: int
    mechanism: str
    truncated: bool


def _open(pin: str | None, map_id: int | None) -> int:
    lib = libbpf()
    if pin:
        fd = lib.bpf_obj_get(params.path(pin, "pin").encode())
    elif map_id is not None:
        fd = lib.bpf_map_get_fd_by_id(ctypes.c_uint32(int(map_id)))
    else:
        raise NetlabError("read a map by pin or by id")
    if fd < 0:
        raise NetlabError(f"map {pin or map_id}: cannot open it: {os.strerror(-fd)}")
    return fd


def read(*, pin: str | None = None, map_id: int | None = None, max_entries: int = 2_000_000,
         chunk: int = 65536) -> MapData:  # fmt: skip
    """Every entry of a hash/array map with the kernel's batch lookup, at most
    ``max_entries`` (the result says when it stopped there)."""
    lib = libbpf()
    fd = _open(pin, map_id)
    try:
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) < 0:
            raise NetlabError(f"map {pin or map_id}: cannot read its info")
        ks, vs = info.key_size, info.value_size
        limit = min(max_entries, info.max_entries)
        keys = np.empty(limit * ks, np.uint8)
        values = np.empty(limit * vs, np.uint8)
        opts = _BatchOpts(ctypes.sizeof(_BatchOpts), 0, 0)
        batch_key = ctypes.create_string_buffer(max(ks, 8))
        done = 0
        first = True
        while done < limit:
            count = ctypes.c_uint32(min(chunk, limit - done))
            rc = lib.bpf_map_lookup_batch(fd, None if first else batch_key, batch_key,
                                          keys[done * ks:].ctypes.data, values[done * vs:].ctypes.data,
                                          ctypes.byref(count), ctypes.byref(opts))  # fmt: skip
            first = False
            done += count.value
            if rc < 0:
                if -rc == errno.ENOENT:
                    break  # the last batch
                if -rc in (errno.EINVAL, errno.ENOTSUP, 524) and done == 0:  # 524: the kernel's ENOTSUPP
                    raise NetlabError(f"map {pin or map_id}: batch lookup unsupported for this map type")
                raise NetlabError(f"map {pin or map_id}: batch lookup failed: {os.strerror(-rc)}")
        return MapData(info.id, info.name.decode(errors="replace"), ks, vs, keys[: done * ks].tobytes(),
                       values[: done * vs].tobytes(), done, "bpf_map_lookup_batch (libbpf)", done >= max_entries)  # fmt: skip
    finally:
        os.close(fd)


def frame(*, pin: str | None = None, map_id: int | None = None, layout: MapLayout | None = None,
          max_entries: int = 2_000_000) -> pd.DataFrame:  # fmt: skip
    """A map read and decoded into a DataFrame (layout detected from name and sizes)."""
    data = read(pin=pin, map_id=map_id, max_entries=max_entries)
    chosen = layout or detect_layout(data.name, data.key_size, data.value_size)[0]
    out = decode_entries(chosen.key, chosen.value, data.keys, data.values)
    out.attrs.update(layout=str(chosen), mechanism=data.mechanism, truncated=data.truncated)
    return out
