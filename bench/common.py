"""Shared by the benchmarks: real pinned maps with netlab's prefix, filled fast, always
removed."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from netlab import naming
from netlab.collectors import bpfmap


@contextmanager
def pinned_map(name: str, key_size: int, value_size: int, entries: int, kname: str) -> Iterator[str]:
    """A hash map as Cilium creates its lb maps: ``CONDITIONAL_PREALLOC`` is
    ``BPF_F_NO_PREALLOC`` unless the agent runs with ``--preallocate-bpf-maps``."""
    pin = f"/sys/fs/bpf/{naming.PREFIX}_bench_{name}"
    subprocess.run(["rm", "-f", pin], check=False)
    subprocess.run(["bpftool", "map", "create", pin, "type", "hash", "key", str(key_size), "value", str(value_size),
                    "entries", str(entries), "name", kname, "flags", "1"], check=True)  # fmt: skip
    try:
        yield pin
    finally:
        os.unlink(pin)


def fill(pin: str, keys: np.ndarray, values: np.ndarray) -> None:
    """bpf_map_update_batch in chunks (a million single updates would take minutes)."""
    lib = bpfmap.libbpf()
    fd = lib.bpf_obj_get(pin.encode())
    try:
        n = len(keys)
        step = 65536
        for start in range(0, n, step):
            count = ctypes.c_uint32(min(step, n - start))
            rc = lib.bpf_map_update_batch(
                fd, keys[start].ctypes.data, values[start].ctypes.data, ctypes.byref(count), None
            )
            if rc < 0:
                raise OSError(-rc, "bpf_map_update_batch")
    finally:
        os.close(fd)


def timed(func, repeat: int = 3):  # type: ignore[no-untyped-def]
    """Best of ``repeat`` wall-clock runs and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result
