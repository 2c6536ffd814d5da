"""The doctor on the second kernel, over ssh, without netlab on the node: each answer
checked against an independent fact of that kernel (its config file, its header tree),
and each step's plan follows from the answers."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from netlab import doctor
from netlab.lab import guest
from netlab.targets import open_target

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def report(booted_guest: guest.Guest) -> Iterator[doctor.Report]:
    mp = pytest.MonkeyPatch()
    mp.setenv("NETLAB_SSH_CONFIG", booted_guest.ssh_config)
    try:
        yield doctor.check(booted_guest.url)
    finally:
        mp.undo()


def _config(node: guest.Guest) -> dict[str, str]:
    text = open_target(node.url).read_text(f"/boot/config-{node.kernel}")
    return dict(re.findall(r"^(CONFIG_\w+)=(.*)$", text, re.M))


def test_the_doctor_ran_through_ssh_on_the_6_1_kernel(
    report: doctor.Report, booted_guest: guest.Guest
) -> None:
    assert report.kernel == booted_guest.kernel and report.via == f"probed through {booted_guest.url}"
    undecided = {n: c.detail for n, c in report.checks.items() if c.available is None}
    assert not undecided


def test_kprobes_fentry_and_bcc_match_the_kernel_config(
    report: doctor.Report, booted_guest: guest.Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETLAB_SSH_CONFIG", booted_guest.ssh_config)
    config = _config(booted_guest)
    assert report.ok("kprobes") == (config.get("CONFIG_KPROBES") == "y"), report.checks["kprobes"].detail
    assert report.ok("kprobes"), "Debian's 6.1 has kprobes"
    assert report.ok("fentry") == (config.get("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") == "y")
    assert report.ok("bcc_compile") and report.ok("btf") == (config.get("CONFIG_DEBUG_INFO_BTF") == "y")


def test_headers_match_by_their_content(
    report: doctor.Report, booted_guest: guest.Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETLAB_SSH_CONFIG", booted_guest.ssh_config)
    node = open_target(booted_guest.url)
    uts = node.read_text(f"/lib/modules/{booted_guest.kernel}/build/include/generated/utsrelease.h")
    assert f'"{booted_guest.kernel}"' in uts
    assert report.ok("kernel_headers"), report.checks["kernel_headers"].detail


def test_every_step_can_run_there(report: doctor.Report) -> None:
    """The CO-RE iterator is built on this machine against the guest's BTF and run there."""
    assert report.ok("bpf_iter"), report.checks["bpf_iter"].detail
    unavailable = {s: m for s, m in report.steps().items() if m.startswith("unavailable")}
    assert not unavailable
