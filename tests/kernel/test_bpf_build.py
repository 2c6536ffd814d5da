"""Building a CO-RE object into an empty cache from several processes and threads at
once (what `make demo` does on a fresh machine): every build gets the same whole object,
and no half-written file is left in the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import need

pytestmark = pytest.mark.kernel

BUILD = "from netlab.probes import bpf_build; print(bpf_build.build('tcp_sockets.bpf.c'))"


def test_concurrent_builds_into_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need(os.path.exists("/sys/kernel/btf/vmlinux"), "the kernel has no BTF")
    need(subprocess.run(["which", "clang"], capture_output=True).returncode == 0, "clang is missing")
    monkeypatch.setenv("NETLAB_CACHE", str(tmp_path))

    def one(_: int) -> str:
        done = subprocess.run([sys.executable, "-c", BUILD], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    with ThreadPoolExecutor(max_workers=4) as pool:
        objects = set(pool.map(one, range(4)))
    (obj,) = objects
    assert Path(obj).stat().st_size > 0
    files = sorted(p.name for p in Path(obj).parent.iterdir())
    assert not [f for f in files if f.endswith(".tmp") or f.count(".") > 2 and "vmlinux" not in f], files
    check = subprocess.run(["bpftool", "btf", "dump", "file", obj], capture_output=True)
    assert check.returncode == 0  # a whole ELF object with its BTF
