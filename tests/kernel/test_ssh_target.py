"""The ssh target against a real sshd on 127.0.0.1: the doctor runs through it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab import doctor
from netlab.errors import NetlabError
from netlab.targets import SshTarget, open_target
from tests.conftest import need
from tests.kernel.sshd import free_port, sshd

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def ssh_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    need(os.path.exists("/usr/sbin/sshd"), "openssh-server is not installed")
    need(shutil.which("netlab") is not None, "netlab is not on PATH (make setup links it)")
    with sshd(tmp_path_factory.mktemp("sshd")) as config:
        old = os.environ.get("NETLAB_SSH_CONFIG")
        os.environ["NETLAB_SSH_CONFIG"] = str(config)
        try:
            yield config
        finally:
            if old is None:
                os.environ.pop("NETLAB_SSH_CONFIG", None)
            else:
                os.environ["NETLAB_SSH_CONFIG"] = old


def test_commands_run_remotely(ssh_config: Path) -> None:
    target = open_target("ssh://root@127.0.0.1")
    assert target.run(["uname", "-r"]).stdout.strip() == os.uname().release
    assert target.run(["echo", "a b; echo injected"]).stdout == "a b; echo injected\n"


def test_doctor_through_ssh_matches_local(ssh_config: Path) -> None:
    """Every probe runs through the target (commands, and BCC programs run by the node's
    python3): the same answers as probing locally, without netlab on the node."""
    remote = doctor.check("ssh://root@127.0.0.1")
    local = doctor.check("local")
    assert remote.target == "ssh://root@127.0.0.1"
    assert remote.via == "probed through ssh://root@127.0.0.1"
    for name in ("btf", "kprobes", "fentry", "tracepoints", "bcc_compile", "kernel_headers", "bpf_iter"):
        assert remote.ok(name) == local.ok(name), (name, remote.checks[name].detail)
    assert remote.ok("bcc_compile")


def test_unreachable_host_is_one_line(ssh_config: Path) -> None:
    with pytest.raises(NetlabError) as info:
        open_target(f"ssh://root@127.0.0.1:{free_port()}").run(["true"])
    assert "cannot reach the node" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_host_key_is_refused(ssh_config: Path) -> None:
    # 127.0.0.2 reaches the same sshd, but its key is not in known_hosts for that name.
    with pytest.raises(NetlabError, match="cannot reach the node"):
        SshTarget("127.0.0.2", "root", port=int(ssh_config.read_text().split("Port ")[1].split()[0])).run(
            ["true"]
        )
