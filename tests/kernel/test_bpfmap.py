"""The fast map reader on a real pinned map: what was written is what is read."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from netlab import naming
from netlab.collectors import bpfmap
from netlab.decoders import encode, map_layout
from netlab.errors import NetlabError

pytestmark = pytest.mark.kernel


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
    pin = f"/sys/fs/bpf/{naming.PREFIX}_test_lb4"
    subprocess.run(["bpftool", "map", "create", pin, "type", "hash", "key", "12", "value", "12", "entries", "4096",
                    "name", "cilium_lb4_services_v2"], check=True)  # fmt: skip
    try:
        lib = bpfmap.libbpf()
        fd = lib.bpf_obj_get(pin.encode())
        import ctypes
        import os

        count = ctypes.c_uint32(len(keys))
        assert (
            lib.bpf_map_update_batch(fd, keys.ctypes.data, values.ctypes.data, ctypes.byref(count), None) == 0
        )
        os.close(fd)
        frame = bpfmap.frame(pin=pin, layout=layout)
    finally:
        subprocess.run(["rm", "-f", pin], check=True)
    assert len(frame) == 3000 and frame.attrs["mechanism"].startswith("bpf_map_lookup_batch")
    got = sorted(
        zip(frame["address"], frame["dport"], frame["backend_slot"], frame["backend_id"], strict=True)
    )
    want = sorted((r["address"], r["dport"], r["backend_slot"], i) for i, r in enumerate(rows))
    assert got == want


def test_missing_map_is_one_line() -> None:
    with pytest.raises(NetlabError, match="cannot open it"):
        bpfmap.read(pin=f"/sys/fs/bpf/{naming.PREFIX}_does_not_exist")
