"""The real-connect probe on the real kernel: in TCP repair mode it reports where
connect() went without sending a packet, even where the destination would answer a SYN
with an ICMP error at once (the flaky case of a gone pod behind a router); where repair
mode is refused, it sends a SYN and says so."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from netlab import naming
from netlab.lab.topology import destroy_namespaces, host, sh
from netlab.probes import connect_dest
from netlab.targets import NetnsTarget

pytestmark = pytest.mark.kernel

GONE = "10.9.9.9"  # rejected with ICMP host-unreachable as soon as a SYN leaves
LISTENING = "10.9.9.1"


@pytest.fixture
def netns() -> Iterator[NetnsTarget]:
    ns = f"{naming.PREFIX}-cdst-node"
    destroy_namespaces([ns])
    try:
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(["ip", "-n", ns, "addr", "add", f"{LISTENING}/24", "dev", "lo"])
        sh(["ip", "-n", ns, "route", "add", f"{GONE}/32", "dev", "lo"])
        sh(["ip", "netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT", "-d", GONE, "-p", "tcp",
            "-j", "REJECT", "--reject-with", "icmp-host-unreachable"])  # fmt: skip
        yield NetnsTarget(ns)
    finally:
        destroy_namespaces([ns])


def probe(node: NetnsTarget, address: str, *, unprivileged: bool = False) -> dict:
    argv = connect_dest.command(address, 80, "1")
    if unprivileged:  # still root (the node's python3 may live in root's home), minus CAP_NET_ADMIN
        argv = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", *argv]
    return json.loads(node.run(argv, timeout=10).stdout)


def rejected(node: NetnsTarget) -> int:
    """Packets the REJECT rule has seen: every SYN that left for GONE."""
    out = host.run(["ip", "netns", "exec", node.netns_name, "iptables", "-w", "-nvxL", "OUTPUT"]).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "REJECT" in line)


def test_repair_mode_reads_the_destination_and_sends_nothing(netns: NetnsTarget) -> None:
    for _ in range(3):
        seen = probe(netns, GONE)
        assert seen == {"asked": f"{GONE}:80", "actual": f"{GONE}:80", "how": "repair mode: no packet sent"}
    assert rejected(netns) == 0, "repair mode sent a SYN"


def test_without_repair_mode_a_syn_is_sent_and_a_fast_error_is_named(netns: NetnsTarget) -> None:
    seen = probe(netns, GONE, unprivileged=True)
    assert seen["how"].startswith("a real SYN (repair mode refused: Operation not permitted)"), seen
    # The ICMP error may close the socket before it is read: then the error is named;
    # never a silent wrong destination.
    assert seen.get("actual") == f"{GONE}:80" or seen.get("error") == "No route to host", seen
    # At least one SYN left. A second is the kernel's retransmit: an ICMP error that comes
    # while connect() still holds the socket is only noted (sk_err_soft), not fatal.
    assert rejected(netns) >= 1


def test_without_repair_mode_a_listening_destination_is_connected(netns: NetnsTarget) -> None:
    listen = "import socket, time; s = socket.socket(); s.bind(('%s', 80)); s.listen(); print(1, flush=True); time.sleep(30)"
    server = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns.netns_name}", "python3", "-c", listen % LISTENING],
                              stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline()
        seen = probe(netns, LISTENING, unprivileged=True)
    finally:
        server.kill()
        server.wait()
    assert seen["actual"] == f"{LISTENING}:80" and seen["connected"] is True, seen
