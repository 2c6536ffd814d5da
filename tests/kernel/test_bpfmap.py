"""The fast map reader on a real pinned map: what was written is what is read, in this
process and by a node's own python3 over real ssh (the same bytes, still the batch
lookup), with bpftool as the fallback for maps that have no batch lookup."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from netlab import naming
from netlab.collectors import bpf_objects, bpfmap
from netlab.decoders import encode, map_layout
from netlab.decoders.addresses import readable
from netlab.errors import NetlabError
from netlab.targets import open_target

pytestmark = pytest.mark.kernel


@contextmanager
def pinned_hash(suffix: str, name: str, keys: np.ndarray, values: np.ndarray, entries: int) -> Iterator[str]:
    """A hash map pinned under netlab's prefix, filled with one batch update; removed after."""
    with created(suffix, "hash", entries, 0, name, keys.shape[1], values.shape[1]) as pin:
        fill_pin(pin, keys, values)
        yield pin


@contextmanager
def created(suffix: str, kind: str, entries: int, flags: int = 1, name: str = "cilium_lb4_serv",
            key_size: int = 12, value_size: int = 12) -> Iterator[str]:  # fmt: skip
    """An empty map pinned under netlab's prefix (flags 1: BPF_F_NO_PREALLOC, as Cilium's
    lb maps); removed after."""
    pin = f"/sys/fs/bpf/{naming.PREFIX}_{suffix}"
    subprocess.run(["bpftool", "map", "create", pin, "type", kind, "key", str(key_size), "value", str(value_size),
                    "entries", str(entries), "name", name, "flags", str(flags)], check=True)  # fmt: skip
    try:
        yield pin
    finally:
        subprocess.run(["rm", "-f", pin], check=True)


def fill_pin(pin: str, keys: np.ndarray, values: np.ndarray) -> None:
    lib = bpfmap.libbpf()
    fd = lib.bpf_obj_get(pin.encode())
    try:
        count = ctypes.c_uint32(len(keys))
        assert (
            lib.bpf_map_update_batch(fd, keys.ctypes.data, values.ctypes.data, ctypes.byref(count), None) == 0
        )
    finally:
        os.close(fd)


def test_batch_read_round_trip() -> None:
    layout = map_layout("lb4_services", "D")
    rows = [
        {"address": f"10.96.{i // 256}.{i % 256}", "dport": 80 + i % 3, "backend_slot": i % 4}
        for i in range(3000)
    ]
    keys = np.frombuffer(encode(layout.key, rows), np.uint8).reshape(-1, 12)
    values = np.frombuffer(
        encode(layout.value, [{"backend_id": i, "count": 1} for i in range(3000)]), np.uint8
    ).reshape(-1, 12)
    with pinned_hash("test_lb4", "cilium_lb4_services_v2", keys, values, 4096) as pin:
        frame = bpfmap.frame(pin=pin, layout=layout)
    assert len(frame) == 3000 and frame.attrs["mechanism"].startswith("bpf_map_lookup_batch")
    # Compact by default: the address is an integer until it is shown.
    assert frame["address"].dtype == np.uint32 and frame.attrs["ipv4_columns"] == ["address"]
    assert frame["dport"].dtype == np.uint16
    shown = readable(frame)
    got = sorted(
        zip(shown["address"], shown["dport"], shown["backend_slot"], shown["backend_id"], strict=True)
    )
    want = sorted((r["address"], r["dport"], r["backend_slot"], i) for i, r in enumerate(rows))
    assert got == want


def test_missing_map_is_one_line() -> None:
    with pytest.raises(NetlabError, match="cannot open it"):
        bpfmap.read(pin=f"/sys/fs/bpf/{naming.PREFIX}_does_not_exist")


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A pinned hash map of Cilium's lb4 service shape with 100,000 entries: (pin, id)."""
    keys = np.zeros((100_000, 12), np.uint8)
    keys[:, :4] = np.arange(100_000, dtype=">u4").view(np.uint8).reshape(-1, 4)
    values = np.repeat(np.arange(12, dtype=np.uint8)[None, :], 100_000, axis=0)
    with pinned_hash("test_remote_lb4", "cilium_lb4_serv", keys, values, 131072) as pin:
        yield pin, bpfmap.read(pin=pin).map_id


def test_a_remote_node_reads_with_its_own_python_and_batch_lookup(
    filled: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import need
    from tests.kernel.sshd import sshd

    need(os.path.exists("/usr/sbin/sshd"), "openssh-server is not installed")
    pin, map_id = filled
    local = bpf_objects.read(open_target("local"), map_id, name="cilium_lb4_serv", key_size=12, value_size=12)
    with sshd(tmp_path) as config:
        monkeypatch.setenv("NETLAB_SSH_CONFIG", str(config))
        remote = bpf_objects.read(open_target("ssh://root@127.0.0.1"), map_id, name="cilium_lb4_serv",
                                  key_size=12, value_size=12)  # fmt: skip
    assert remote.count == local.count == 100_000
    assert remote.mechanism == local.mechanism and local.mechanism.startswith(bpfmap.BATCH)
    assert (remote.keys, remote.values) == (local.keys, local.values)


def random_entries(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, (n, 12), dtype=np.uint8)
    keys[:, :4] = np.arange(n, dtype=np.uint32).view(np.uint8).reshape(n, 4)  # every key distinct
    return keys, rng.integers(0, 256, (n, 12), dtype=np.uint8)


@pytest.mark.parametrize(
    ("kind", "capacity", "entries"),
    [
        ("hash", 131072, 100_000),
        ("hash", 100_000, 99_999),
        ("hash", 65536, 10),
        ("hash", 65536, 0),
        ("lru_hash", 70_000, 50_000),
    ],  # fmt: skip
)
def test_buckets_walked_in_parallel_read_what_one_walk_reads(kind: str, capacity: int, entries: int) -> None:
    """The ranges' walks stitched together are the single walk, byte for byte and in the
    same order: each entry once, where a range's last call ran into the next range."""
    from netlab.probes import map_batch

    keys, values = random_entries(entries, capacity)
    # An LRU map is always preallocated (the kernel refuses BPF_F_NO_PREALLOC for it).
    with created(f"test_stripes_{kind}_{entries}", kind, capacity, 0 if kind == "lru_hash" else 1) as pin:
        if entries:
            fill_pin(pin, keys, values)
        one = map_batch.read(pin=pin, stripes=1)
        assert one[0]["stripes"] == 1 and one[0]["count"] == entries
        for stripes in (2, 3, 4):
            info, got_keys, got_values = map_batch.read(pin=pin, stripes=stripes)
            buckets = 1 << (capacity - 1).bit_length()  # the kernel's roundup_pow_of_two
            assert info["stripes"] == min(stripes, buckets // 16384)
            assert info["count"] == entries and not info["truncated"]
            assert (bytes(got_keys), bytes(got_values)) == (bytes(one[1]), bytes(one[2]))
    want = {bytes(k): bytes(v) for k, v in zip(keys, values, strict=True)}
    got = {bytes(one[1][i * 12 : (i + 1) * 12]): bytes(one[2][i * 12 : (i + 1) * 12]) for i in range(entries)}
    assert got == want


def test_a_cursor_that_is_not_a_bucket_falls_back_to_one_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a kernel's hash-map cursor stop being a bucket index, the ranges cannot be
    trusted: here netlab believes in fewer buckets than the map has, the kernel's cursor
    runs past them, and the read is one walk, still complete."""
    from netlab.probes import map_batch

    keys, values = random_entries(60_000, 7)
    with created("test_stripes_cursor", "hash", 65536) as pin:
        fill_pin(pin, keys, values)
        monkeypatch.setattr(map_batch, "_buckets", lambda capacity: 32768)
        info, got, _ = map_batch.read(pin=pin, stripes=2)
    assert info["stripes"] == 1 and info["count"] == 60_000
    assert len({bytes(got[i * 12 : (i + 1) * 12]) for i in range(60_000)}) == 60_000


def test_a_range_that_ends_exactly_where_netlab_counts_the_last_bucket_is_not_the_map_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel answers ENOENT when its cursor reaches the map's last bucket; a cursor
    that lands exactly on the end netlab counted, with no ENOENT, means buckets past it
    were never read. One entry per call makes the cursor land on every occupied bucket, so
    this is the case the random test above meets only now and then."""
    from netlab.probes import map_batch

    keys, values = random_entries(2000, 11)  # some buckets hold two or more entries
    with created("test_stripes_exact", "hash", 65536) as pin:
        fill_pin(pin, keys, values)
        # A call asks for one entry, and for more only where a bucket holds more.
        assert map_batch.read(pin=pin, stripes=1, chunk=1)[0]["count"] == 2000
        occupied, entries = one_entry_per_bucket(pin)
        end = next(b for b in occupied if b >= 32768)  # a one-entry call lands on it
        monkeypatch.setattr(map_batch, "_buckets", lambda capacity: end)
        info, got, _ = map_batch.read(pin=pin, stripes=2, chunk=1)
    assert info["stripes"] == 1 and info["count"] == entries
    assert len({bytes(got[i * 12 : (i + 1) * 12]) for i in range(entries)}) == entries


def one_entry_per_bucket(pin: str) -> tuple[list[int], int]:
    """Delete all but one entry of each bucket, so that a call for one entry reads one
    bucket and lands on the next occupied one; the buckets landed on, and the entries left."""
    from netlab.probes import map_batch

    lib = bpfmap.libbpf()
    fd = lib.bpf_obj_get(pin.encode())
    keys, values, token = (ctypes.create_string_buffer(12 * 16) for _ in range(3))
    occupied: list[int] = []
    entries, first, rc = 0, True, 0
    try:
        while rc != -errno.ENOENT:
            for want in range(1, 17):  # the smallest count that reads the next bucket whole
                rc, got = map_batch._lookup(fd, None if first else token, token, ctypes.addressof(keys),
                                            ctypes.addressof(values), want)  # fmt: skip
                if rc != -errno.ENOSPC:
                    break
            assert rc in (0, -errno.ENOENT), os.strerror(-rc)
            first = False
            for extra in range(1, got):
                assert lib.bpf_map_delete_elem(fd, ctypes.c_void_p(ctypes.addressof(keys) + extra * 12)) == 0
            entries += min(got, 1)
            if rc == 0:
                occupied.append(int.from_bytes(token.raw[:4], "little"))
    finally:
        os.close(fd)
    return occupied, entries


def test_a_per_cpu_map_is_refused_before_the_kernel_writes_a_value_per_cpu() -> None:
    """A per-CPU map's batch lookup writes round_up(value_size, 8) bytes per possible CPU
    for each entry: more than value_size. The reader says so instead of reading."""
    from netlab.probes import map_batch

    with created("test_percpu", "percpu_hash", 1024, 0) as pin:
        with pytest.raises(map_batch.BatchError, match="per-CPU") as caught:
            map_batch.read(pin=pin)
    assert caught.value.unsupported


def test_a_map_without_batch_lookup_falls_back_to_bpftool_and_says_why() -> None:
    with created("test_sockhash", "sockhash", 16, 0, "cilium_sock_ops", 44, 4):
        map_id = int(
            bpf_objects.maps(open_target("local")).query("name == 'cilium_sock_ops'")["map_id"].max()
        )
        data = bpf_objects.read(
            open_target("local"), map_id, name="cilium_sock_ops", key_size=44, value_size=4
        )
    assert data.count == 0 and data.mechanism.startswith("bpftool -j map dump (JSON; batch lookup: ")
    assert "unsupported" in data.mechanism
