"""Batch reports over three targets: this machine, the same through real ssh, and an
unreachable node: two verdicts and one clear error row, with an index page."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from netlab.cli import main
from tests.conftest import need
from tests.kernel.sshd import free_port, sshd

pytestmark = pytest.mark.kernel


def test_batch_over_three_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    need(os.path.exists("/usr/sbin/sshd"), "openssh-server is not installed")
    need(shutil.which("netlab") is not None, "netlab is not on PATH (make setup links it)")
    (tmp_path / "ssh").mkdir()
    with sshd(tmp_path / "ssh") as config:
        monkeypatch.setenv("NETLAB_SSH_CONFIG", str(config))
        targets = tmp_path / "nodes.txt"
        targets.write_text(
            f"# three nodes\nlocal\nssh://root@127.0.0.1\nssh://root@127.0.0.1:{free_port()}\n"
        )
        out = tmp_path / "reports"
        assert (
            main(
                ["run", "cgroup-progs", "--targets", str(targets), "--out", str(out), "--json", "--jobs", "3"]
            )
            == 0
        )
    rows = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in rows][:2] == ["local", "ssh://root@127.0.0.1"]
    assert all(r["verdict"] for r in rows[:2]) and all(r["report"] for r in rows[:2])
    assert rows[2]["verdict"] is None and "cannot reach the node" in rows[2]["error"]
    index = (out / "index.html").read_text()
    assert "cannot reach the node" in index and index.count("report</a>") == 2
    for row in rows[:2]:
        assert (out / row["report"]).exists()
