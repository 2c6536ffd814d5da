"""netlab's shipped code (netlab.ship): the zipapp runs the lab's commands with a
Python that has only the standard library, as a node's python3 may."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from netlab import ship

OS_PYTHON = "/usr/bin/python3"


def test_the_zipapp_holds_sources_not_notebooks() -> None:
    names = zipfile.ZipFile(__import__("io").BytesIO(ship.build())).namelist()
    assert "__main__.py" in names and "netlab/lab/scenarios/stuck_tcp.py" in names
    assert "netlab/lab/bpf/sockmap_accel.bpf.c" in names
    assert not [n for n in names if "/kit/" in n or "__pycache__" in n]
    assert ship.build() == ship.build() and len(ship.digest()) == 64  # deterministic


def test_the_lab_commands_need_only_the_standard_library(tmp_path: Path) -> None:
    if not os.path.exists(OS_PYTHON):
        pytest.skip(f"{OS_PYTHON} is not here")
    app = tmp_path / "netlab.pyz"
    app.write_bytes(ship.build())
    # -I: no user site, no PYTHONPATH; -S: not even the OS site-packages (no pandas, numpy).
    env = {"PATH": os.environ["PATH"], "NETLAB_STATE": str(tmp_path / "state")}
    for argv in (["lab", "list"], ["lab", "status", "--json"]):
        result = subprocess.run(
            [OS_PYTHON, "-I", "-S", str(app), *argv], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
    listed = subprocess.run(
        [OS_PYTHON, "-I", "-S", str(app), "lab", "list"], capture_output=True, text=True, env=env
    )
    assert "stuck-tcp" in listed.stdout and "conntrack-reject" in listed.stdout
