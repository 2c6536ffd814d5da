"""Read a whole BPF map with the kernel's batch lookup (``BPF_MAP_LOOKUP_BATCH``, 5.6+).

One reader for every node: imported here, and on a remote node passed to its
``python3 -c`` (standard library only, stand-alone on purpose). It calls the ``bpf()``
system call through libc, so the node needs neither libbpf nor netlab, and it writes
keys and values as two contiguous buffers: a million entries cost one system call per
64k entries and no per-entry work, where ``bpftool -j map dump`` prints every byte as a
JSON string.

On the command line: ``python3 -c SOURCE MAP_ID MAX_ENTRIES`` prints one JSON line (the
map's id, name, sizes, count, truncated; or ``error`` with ``unsupported`` when the
kernel or map type has no batch lookup), then the keys and the values, each one line of
base64.
"""

import base64
import ctypes
import errno
import json
import mmap
import os
import platform
import struct
import sys

# bpf() commands and the system call's number (include/uapi/linux/bpf.h, the arch tables).
_OBJ_GET = 7
_MAP_GET_FD_BY_ID = 14
_OBJ_GET_INFO_BY_FD = 15
_MAP_LOOKUP_BATCH = 24
_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351, "riscv64": 280}
# The kernel's ENOTSUPP (524) is what batch lookup answers for a map type without it.
_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, 524}


class BatchError(Exception):
    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


_libc: list = []


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    number = _NR_BPF.get(platform.machine())
    if number is None:
        raise BatchError(f"no bpf() system call number known for {platform.machine()}", True)
    if not _libc:
        _libc.append(ctypes.CDLL(None, use_errno=True))
        _libc[0].syscall.restype = ctypes.c_long
    rc = _libc[0].syscall(ctypes.c_long(number), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    return int(rc) if rc >= 0 else -ctypes.get_errno()


def _open(map_id: int | None, pin: str | None) -> int:
    if pin is not None:
        path = ctypes.create_string_buffer(os.fsencode(pin))
        attr = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(path), 0, 0), 16)
        fd = _bpf(_OBJ_GET, attr)
    else:
        fd = _bpf(
            _MAP_GET_FD_BY_ID, ctypes.create_string_buffer(struct.pack("=III", int(map_id or 0), 0, 0), 12)
        )
    if fd < 0:
        raise BatchError(f"map {pin or map_id}: cannot open it: {os.strerror(-fd)}")
    return fd


def read(map_id: int | None = None, pin: str | None = None, max_entries: int = 2_000_000,
         chunk: int = 65536) -> tuple[dict, memoryview, memoryview]:  # fmt: skip
    """``(info, keys, values)``: every entry of the map (by id or pin), at most
    ``max_entries``, as read-only views of the buffers the kernel wrote; ``info`` has id,
    name, key_size, value_size, count and truncated."""
    fd = _open(map_id, pin)
    try:
        # struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16].
        info = ctypes.create_string_buffer(80)
        attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, len(info), ctypes.addressof(info)), 16)
        rc = _bpf(_OBJ_GET_INFO_BY_FD, attr)
        if rc < 0:
            raise BatchError(f"map {pin or map_id}: cannot read its info: {os.strerror(-rc)}")
        _, ident, ks, vs, capacity, _ = struct.unpack_from("=6I", info.raw)
        name = info.raw[24:40].split(b"\0", 1)[0].decode(errors="replace")
        limit = min(max_entries, capacity)
        # Anonymous mappings: a page costs memory only once the kernel writes an entry
        # into it, so a big map with few entries stays small, and nothing is copied out.
        keys, values = mmap.mmap(-1, max(limit * ks, 1)), mmap.mmap(-1, max(limit * vs, 1))
        key_base = ctypes.addressof(ctypes.c_char.from_buffer(keys))
        value_base = ctypes.addressof(ctypes.c_char.from_buffer(values))
        # The kernel's position between calls: a hash map's bucket (4 bytes), an array's key.
        token = ctypes.create_string_buffer(max(ks, 8))
        done, first = 0, True
        while done < limit:
            want = min(chunk, limit - done)
            attr = ctypes.create_string_buffer(struct.pack(
                "=QQQQIIQQ", 0 if first else ctypes.addressof(token), ctypes.addressof(token),
                key_base + done * ks, value_base + done * vs, want, fd, 0, 0), 56)  # fmt: skip
            rc = _bpf(_MAP_LOOKUP_BATCH, attr)
            first = False
            if rc >= 0 or -rc == errno.ENOENT:
                done += struct.unpack_from("=I", attr.raw, 32)[0]  # count: the entries written
            if rc < 0:
                if -rc == errno.ENOENT:
                    break  # the last batch
                if -rc == errno.ENOSPC and done:
                    break  # a hash bucket did not fit in what max_entries leaves: truncated here
                if -rc in _UNSUPPORTED and done == 0:
                    raise BatchError(f"map {pin or map_id}: batch lookup unsupported here ({os.strerror(-rc)})",
                                     True)  # fmt: skip
                raise BatchError(f"map {pin or map_id}: batch lookup failed: {os.strerror(-rc)}")
        meta = {"id": ident, "name": name, "key_size": ks, "value_size": vs, "count": done,
                "truncated": done >= max_entries or (rc == -errno.ENOSPC)}  # fmt: skip
        return meta, memoryview(keys)[: done * ks].toreadonly(), memoryview(values)[: done * vs].toreadonly()
    finally:
        os.close(fd)


if __name__ == "__main__":
    try:
        found, k, v = read(int(sys.argv[1]), max_entries=int(sys.argv[2]))
    except BatchError as exc:
        print(json.dumps({"error": str(exc), "unsupported": exc.unsupported}))
        sys.exit(3)
    sys.stdout.write(
        json.dumps(found) + "\n" + base64.b64encode(k).decode() + "\n" + base64.b64encode(v).decode() + "\n"
    )
