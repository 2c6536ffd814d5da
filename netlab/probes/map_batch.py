"""Read a whole BPF map with the kernel's batch lookup (``BPF_MAP_LOOKUP_BATCH``, 5.6+).

One reader for every node: imported here, and on a remote node passed to its
``python3 -c`` (standard library only, stand-alone on purpose). It calls the ``bpf()``
system call through libc, so the node needs neither libbpf nor netlab, and it writes
keys and values as two contiguous buffers: a million entries cost a few system calls and
no per-entry work, where ``bpftool -j map dump`` prints every byte as a JSON string. A
big hash map is walked by one thread per CPU, each over its own range of buckets.

On the command line: ``python3 -c SOURCE MAP_ID MAX_ENTRIES`` prints one JSON line (the
map's id, name, sizes, count, truncated, stripes; or ``error`` with ``unsupported`` when the
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
# Map types whose values are one per possible CPU (PERCPU_HASH, PERCPU_ARRAY,
# LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE).
_PERCPU = {5, 6, 10, 21}


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
         chunk: int = 65536, stripes: int | None = None) -> tuple[dict, memoryview, memoryview]:  # fmt: skip
    """``(info, keys, values)``: every entry of the map (by id or pin), at most
    ``max_entries``, as read-only views of the buffers the kernel wrote; ``info`` has id,
    name, key_size, value_size, count, truncated and stripes (the bucket ranges walked in
    parallel, 1 for one walk). ``stripes``: how many to walk at most (default: one per
    CPU this process may run on, for hash maps big enough to gain from it)."""
    fd = _open(map_id, pin)
    try:
        # struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16].
        info = ctypes.create_string_buffer(80)
        attr = ctypes.create_string_buffer(struct.pack("=IIQ", fd, len(info), ctypes.addressof(info)), 16)
        rc = _bpf(_OBJ_GET_INFO_BY_FD, attr)
        if rc < 0:
            raise BatchError(f"map {pin or map_id}: cannot read its info: {os.strerror(-rc)}")
        kind, ident, ks, vs, capacity, _ = struct.unpack_from("=6I", info.raw)
        name = info.raw[24:40].split(b"\0", 1)[0].decode(errors="replace")
        if kind in _PERCPU:
            # The kernel writes a value per possible CPU, each rounded to 8 bytes: more than
            # value_size per entry. bpftool's JSON names each CPU's value.
            raise BatchError(f"map {pin or map_id}: per-CPU values are not read by batch lookup here", True)
        meta = {"id": ident, "name": name, "key_size": ks, "value_size": vs}
        stripes = _stripes(kind, capacity, max_entries, stripes)
        if stripes > 1:
            try:
                done, keys, values = _read_striped(fd, ks, vs, capacity, stripes, chunk)
                meta.update(count=done, truncated=False, stripes=stripes)
                return meta, keys, values
            except _Unstriped:
                pass  # the kernel's cursor was not a bucket, or the map changed under the walk
        done, truncated, keys, values = _walk_all(
            fd, pin or map_id, ks, vs, min(max_entries, capacity), chunk
        )
        meta.update(count=done, truncated=truncated or done >= max_entries, stripes=1)
        return meta, keys, values
    finally:
        os.close(fd)


def _buffers(entries: int, ks: int, vs: int) -> tuple[mmap.mmap, mmap.mmap, int, int]:
    # Anonymous mappings: a page costs memory only once the kernel writes an entry into
    # it, so a big map with few entries stays small, and nothing is copied out.
    keys, values = mmap.mmap(-1, max(entries * ks, 1)), mmap.mmap(-1, max(entries * vs, 1))
    return keys, values, _address(keys), _address(values)


def _address(buffer: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def _lookup(fd: int, token_in: ctypes.Array | None, token_out: ctypes.Array, keys: int, values: int,
            want: int) -> tuple[int, int]:  # fmt: skip
    """One ``BPF_MAP_LOOKUP_BATCH``: (return code, entries written)."""
    attr = ctypes.create_string_buffer(struct.pack(
        "=QQQQIIQQ", 0 if token_in is None else ctypes.addressof(token_in), ctypes.addressof(token_out),
        keys, values, want, fd, 0, 0), 56)  # fmt: skip
    rc = _bpf(_MAP_LOOKUP_BATCH, attr)
    return rc, struct.unpack_from("=I", attr.raw, 32)[0]


def _walk_all(fd: int, what: object, ks: int, vs: int, limit: int,
              chunk: int) -> tuple[int, bool, memoryview, memoryview]:  # fmt: skip
    """The whole map in one walk, ``chunk`` entries per call (more for a bucket that holds more)."""
    keys, values, key_base, value_base = _buffers(limit, ks, vs)
    # The kernel's position between calls: a hash map's bucket (4 bytes), an array's key.
    token = ctypes.create_string_buffer(max(ks, 8))
    done, first, rc, ask = 0, True, 0, chunk
    while done < limit:
        want = min(ask, limit - done)
        rc, got = _lookup(fd, None if first else token, token, key_base + done * ks, value_base + done * vs,
                          want)  # fmt: skip
        if rc >= 0 or -rc == errno.ENOENT:
            done, first, ask = done + got, False, chunk
        if rc < 0:
            if -rc == errno.ENOENT:
                break  # the last batch
            if -rc == errno.ENOSPC and got == 0 and want < limit - done:
                ask = want * 2  # the next bucket holds more entries than one call asked for
                continue
            if -rc == errno.ENOSPC and done:
                break  # a hash bucket did not fit in what max_entries leaves: truncated here
            if -rc in _UNSUPPORTED and done == 0:
                raise BatchError(f"map {what}: batch lookup unsupported here ({os.strerror(-rc)})", True)
            raise BatchError(f"map {what}: batch lookup failed: {os.strerror(-rc)}")
    return done, rc == -errno.ENOSPC, memoryview(keys)[: done * ks].toreadonly(), \
        memoryview(values)[: done * vs].toreadonly()  # fmt: skip


# --- a hash map's buckets in parallel ranges ----------------------------------------
# A hash map's batch cursor is the index of the next bucket (kernel/bpf/hashtab.c, since
# 5.6), and a map has roundup_pow_of_two(max_entries) buckets. The walk is bound by cache
# misses in the kernel, about 200 ns a bucket on a cold map, so one walk per CPU over its
# own range of buckets reads a big map in a fraction of the time. A range's last call runs
# past its end into the next range; the entries read twice there are dropped.
_HASH = {1, 9}  # BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH
_RANGE_BUCKETS = 16384  # fewer buckets a range, and a thread costs more than it saves
_MAX_STRIPES = 8


class _Unstriped(Exception):
    """The parallel walk could not vouch for its result: walk the map once instead."""


def _stripes(kind: int, capacity: int, max_entries: int, wanted: int | None) -> int:
    if kind not in _HASH or max_entries < capacity:
        return 1  # an array's cursor is its key; a cap on entries is met by one walk
    if wanted is None:
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(wanted, _MAX_STRIPES, _buckets(capacity) // _RANGE_BUCKETS))


def _buckets(capacity: int) -> int:
    return 1 << max(capacity - 1, 0).bit_length()


class _Range:
    """One walk over buckets [start, end): its buffers and each call's (first bucket,
    next bucket, first row, rows)."""

    def __init__(self, start: int, end: int, capacity: int, ks: int, vs: int) -> None:
        self.start, self.end, self.capacity, self.ks, self.vs = start, end, capacity, ks, vs
        self.keys, self.values, self.key_base, self.value_base = _buffers(capacity, ks, vs)
        self.calls: list[tuple[int, int, int, int]] = []
        self.count, self.cursor = 0, start
        self.error: BaseException | None = None

    def walk(self, fd: int, buckets: int, chunk: int) -> None:
        try:
            self._walk(fd, buckets, chunk)
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc

    def _walk(self, fd: int, buckets: int, chunk: int) -> None:
        token_in = ctypes.create_string_buffer(struct.pack("=I", self.start), 8)
        token_out = ctypes.create_string_buffer(8)
        # A small first call measures how full the buckets are; the next reads a little
        # less than the rest of the range is expected to hold, the last a little more,
        # so what runs past the end stays small.
        want, cap = max(256, (self.end - self.start) // 32), chunk
        while self.cursor < self.end:
            room = self.capacity - self.count
            if room <= 0:
                raise _Unstriped("more entries than the map's max_entries")
            ask = min(want, cap, room)
            rc, got = _lookup(fd, token_in, token_out, self.key_base + self.count * self.ks,
                              self.value_base + self.count * self.vs, ask)  # fmt: skip
            if rc < 0 and -rc == errno.ENOSPC and got == 0:
                if ask >= room:
                    raise _Unstriped("a bucket larger than the buffer")
                want = cap = ask * 2  # one bucket holds more entries than asked for
                continue
            cap = chunk
            if rc < 0 and -rc != errno.ENOENT:
                raise _Unstriped(os.strerror(-rc))  # the single walk says what the kernel refused
            if rc < 0:
                after = buckets  # walked to the map's last bucket
            else:
                after, high = struct.unpack_from("=II", token_out.raw)
                # The kernel answers ENOENT once its cursor reaches the last bucket, so a
                # cursor at or past the buckets netlab counted, with entries still to come,
                # means the count is wrong: the ranges past it were never walked.
                if high or not self.cursor < after < buckets:
                    raise _Unstriped(f"the kernel's cursor {token_out.raw.hex()} is not a bucket index")
                token_in.raw = token_out.raw
            self.calls.append((self.cursor, after, self.count, got))
            self.count, self.cursor = self.count + got, after
            if rc < 0:
                return
            left = self.count * (self.end - self.cursor) // max(self.cursor - self.start, 1)
            slack = 32 + left // 64
            want = left - slack if left > 4 * slack else left + 32

    def key(self, row: int) -> bytes:
        return self.keys[row * self.ks : (row + 1) * self.ks]


def _read_striped(fd: int, ks: int, vs: int, capacity: int, stripes: int,
                  chunk: int) -> tuple[int, memoryview, memoryview]:  # fmt: skip
    import threading

    buckets = _buckets(capacity)
    bounds = [buckets * i // stripes for i in range(stripes + 1)]
    ranges = [_Range(bounds[i], bounds[i + 1], capacity, ks, vs) for i in range(stripes)]
    threads = [threading.Thread(target=r.walk, args=(fd, buckets, chunk), daemon=True) for r in ranges[1:]]
    for t in threads:
        t.start()
    ranges[0].walk(fd, buckets, chunk)
    for t in threads:
        t.join()
    for r in ranges:
        if r.error is not None:
            raise r.error
    for i, r in enumerate(ranges[:-1]):
        _drop_overrun(r, ranges[i + 1 :])
    # One contiguous result: the later ranges' rows moved in after the first range's.
    first, done = ranges[0], ranges[0].count
    for r in ranges[1:]:
        if done + r.count > capacity:
            raise _Unstriped("more entries than the map's max_entries")
        ctypes.memmove(first.key_base + done * ks, r.key_base, r.count * ks)
        ctypes.memmove(first.value_base + done * vs, r.value_base, r.count * vs)
        done += r.count
    keys, values = first.keys, first.values
    return done, memoryview(keys)[: done * ks].toreadonly(), memoryview(values)[: done * vs].toreadonly()


def _drop_overrun(r: _Range, later: list[_Range]) -> None:
    """Drop from ``r``'s last call the entries of buckets past its end that a later range
    read too: the later ranges' keys from the buckets ``r`` reached. A key lives in one
    bucket, so a key both read is one entry, kept once."""
    _, after, row, got = r.calls[-1]  # every walk makes at least one call
    if after <= r.end or not got:
        return
    shared = _shared_rows(r, row, got, later[0])
    if shared is not None:
        r.count = row + got - shared
        return
    seen: set[bytes] = set()
    for other in later:
        for first_bucket, _, other_row, other_got in other.calls:
            if first_bucket >= after:
                break
            seen.update(other.key(i) for i in range(other_row, other_row + other_got))
        if other.cursor >= after:
            break  # else this range ended before r's last call did: the next holds the rest
    kept = [i for i in range(row, row + got) if r.key(i) not in seen]
    if len(kept) == got:
        return
    for to, i in enumerate(kept, start=row):
        if to != i:
            r.keys[to * r.ks : (to + 1) * r.ks] = r.keys[i * r.ks : (i + 1) * r.ks]
            r.values[to * r.vs : (to + 1) * r.vs] = r.values[i * r.vs : (i + 1) * r.vs]
    r.count = row + len(kept)


def _shared_rows(r: _Range, row: int, got: int, nxt: _Range) -> int | None:
    """How many rows at the end of ``r``'s last call are ``nxt``'s first rows, byte for
    byte; None where that is not how they meet. The kernel walks buckets in order, so on a
    map that holds still the buckets both read are the end of one and the start of the
    other: a comparison of the two runs of bytes, where looking up each of the last call's
    keys (thousands, when one call read most of a range) cost more than the walk saved."""
    if not nxt.count:
        return None
    ks, first = r.ks, nxt.key(0)
    start, end = row * ks, (row + got) * ks
    at = r.keys.find(first, start, end)
    while at >= 0 and (at - start) % ks:
        at = r.keys.find(first, at + 1, end)
    shared = (end - at) // ks
    if at < 0 or shared > nxt.count or r.keys[at:end] != nxt.keys[: shared * ks]:
        return None
    return shared


if __name__ == "__main__":
    try:
        found, k, v = read(int(sys.argv[1]), max_entries=int(sys.argv[2]))
    except BatchError as exc:
        print(json.dumps({"error": str(exc), "unsupported": exc.unsupported}))
        sys.exit(3)
    sys.stdout.write(
        json.dumps(found) + "\n" + base64.b64encode(k).decode() + "\n" + base64.b64encode(v).decode() + "\n"
    )
