"""The guest node end to end: reached over real ssh with host-key checking, ready for
the lab (bpffs, tracefs, cgroup2, network namespaces), reused while it runs, and gone
without a trace after ``netlab lab guest down``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import naming
from netlab.errors import NetlabError
from netlab.lab import guest
from netlab.targets import SshTarget, open_target

pytestmark = pytest.mark.guest


def test_uname_over_the_ssh_target(node: guest.Guest) -> None:
    target = open_target(node.url)
    assert isinstance(target, SshTarget)
    release = target.run(["uname", "-r"]).stdout.strip()
    assert release == node.kernel and release.startswith(guest.KERNEL_SERIES)
    assert release != os.uname().release  # the other kernel, not this machine's


def test_the_guest_has_what_the_lab_needs(node: guest.Guest) -> None:
    target = open_target(node.url)
    mounts = {}
    for line in target.read_text("/proc/mounts").splitlines():
        _, where, fstype, options = line.split()[:4]
        mounts[(where, fstype)] = options.split(",")
    for where, fstype in (("/sys/fs/bpf", "bpf"), ("/sys/kernel/tracing", "tracefs"),
                          ("/sys/fs/cgroup", "cgroup2")):  # fmt: skip
        assert "rw" in mounts.get((where, fstype), []), f"no read-write {fstype} on {where}"
    probe = f"{naming.PREFIX}_probe"
    try:
        target.run(["ip", "netns", "add", probe])
        target.run(["ip", "-n", probe, "link", "set", "lo", "up"])
        # A pin proves bpffs is writable, not only mounted so.
        target.run(["bpftool", "map", "create", f"/sys/fs/bpf/{probe}", "type", "array",
                    "key", "4", "value", "4", "entries", "1", "name", probe])  # fmt: skip
        assert probe in target.run(["ip", "netns", "list"]).stdout.split()
        assert target.exists(f"/sys/fs/bpf/{probe}")
    finally:
        target.run(["ip", "netns", "del", probe], check=False)
        target.run(["rm", "-f", f"/sys/fs/bpf/{probe}"], check=False)
    assert probe not in target.run(["ip", "netns", "list"]).stdout


@pytest.mark.parametrize("known", ["another key", "no entry"])
def test_host_keys_are_checked(
    node: guest.Guest, known: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a known_hosts that lacks the guest's key, ssh refuses the node, and netlab
    says so in one line."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    if known == "another key":
        impostor = tmp_path / "impostor"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
        key_type, key = impostor.with_suffix(".pub").read_text().split()[:2]
        known_hosts.write_text(f"[127.0.0.1]:{node.port} {key_type} {key}\n")
    text = Path(node.ssh_config).read_text()
    config = tmp_path / "ssh_config"
    config.write_text(re.sub(r"UserKnownHostsFile \S+", f"UserKnownHostsFile {known_hosts}", text))
    assert config.read_text() != text
    monkeypatch.setenv("NETLAB_SSH_CONFIG", str(config))
    with pytest.raises(NetlabError) as refused:
        open_target(node.url).run(["uname", "-r"])
    message = str(refused.value)
    assert "\n" not in message
    assert (
        message.startswith(f"{node.url}: cannot reach the node") and "Host key verification failed" in message
    )


def test_up_reuses_the_running_guest(node: guest.Guest) -> None:
    started = time.monotonic()
    again = guest.up()
    assert (again.pid, again.port, again.ssh_config) == (node.pid, node.port, node.ssh_config)
    assert time.monotonic() - started < 15  # a health check, not a boot


def test_a_guest_that_stops_answering_is_replaced_and_its_console_said(
    node: guest.Guest, capsys: pytest.CaptureFixture[str]
) -> None:
    """A frozen guest (its QEMU stopped) is booted anew, and the end of its console, which
    goes with it, is printed first: the only record of why it hung."""
    last = guest.console_tail(1)[0]
    for pid in guest._qemu_pids():
        os.kill(pid, signal.SIGSTOP)
    fresh = guest.up(patience=5)
    said = capsys.readouterr().err
    assert f"{guest.NAME} at {node.url} stopped answering" in said and last in said
    # A stopped QEMU neither runs nor answers its monitor, and the report says both.
    assert re.search(r"vCPU thread 'CPU 0/TCG': 0% of a host CPU; in no instruction pointer read", said), said
    assert "QEMU monitor" in said
    assert (
        fresh.pid != node.pid and open_target(fresh.url).run(["uname", "-r"]).stdout.strip() == fresh.kernel
    )


def test_where_the_guests_cpus_are_is_read_from_qemu(node: guest.Guest) -> None:
    """Each vCPU's host thread and the kernel function its instruction pointer is in (an
    idle guest halts in its idle loop): the guest's own symbols, read while it answered."""
    kallsyms = open_target(node.url).read_text("/proc/kallsyms").splitlines()
    functions = {line.split()[2] for line in kallsyms if line.split()[1] in ("t", "T", "w", "W")}
    lines = guest.where_stuck()
    assert len(lines) == guest.CPUS, lines
    for cpu, line in enumerate(lines):
        found = re.fullmatch(rf"vCPU thread 'CPU {cpu}/TCG': \d+% of a host CPU; in (.+)", line)
        assert found, line
        seen = [re.fullmatch(r"(.+) \(\d of 5 reads\)", place) for place in found.group(1).split(", ")]
        assert seen and all(m and m.group(1) in {*functions, "user space"} for m in seen), line


def _guest_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, NotADirectoryError):
            continue
        if comm == guest.NAME or guest.MARK in cmdline:
            found.append(f"{entry.name} {comm}")
    return found


# Last in this module: it stops the session's guest (a later test would boot it again).
def test_down_leaves_no_process_and_no_files(node: guest.Guest) -> None:
    assert _guest_processes(), "the guest should be running before `down`"
    result = subprocess.run([sys.executable, "-m", "netlab", "lab", "guest", "down"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert guest.NAME in result.stdout
    assert _guest_processes() == []
    base = naming.runtime_base()
    assert [p.name for p in base.iterdir() if p.name.startswith(guest.NAME)] == []
    assert not Path(node.ssh_config).exists()
    assert guest.status()["state"] == "down"
