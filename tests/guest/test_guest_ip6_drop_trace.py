"""The BCC kprobe trace of ip6_pkt_drop on Debian's 6.1 (kprobes, matching headers), over
ssh: a packet forwarded into a route with no way out ends in ip6_pkt_discard ->
ip6_pkt_drop, as a route-cache miss does on kernels that enforce max_size; the trace
counts it with its namespace, device, addresses and stack, and its probes are gone when
it returns or when the reproduction fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netlab import naming
from netlab.errors import NetlabError
from netlab.lab import guest
from netlab.probes import ip6_drop_trace
from netlab.targets import Target, open_target

pytestmark = pytest.mark.guest

CLIENT, ROUTER = f"{naming.PREFIX}_t6c", f"{naming.PREFIX}_t6r"
NOWHERE = "fd00:dead::1"  # routed "unreachable" on the router


def _ours(node: Target) -> list[str]:
    progs = node.run_json(["bpftool", "-j", "prog", "show"]) or []
    return [p.get("name", "") for p in progs if naming.owned(p.get("name", ""))]


@pytest.fixture
def forwarding_pair(node: guest.Guest) -> Iterator[Target]:
    """Two namespaces on the guest: a client whose default route is a router, and the
    router, which forwards IPv6 and has an unreachable route for fd00:dead::/64."""
    host = open_target(node.url)
    script = f"""
set -e
ip netns add {CLIENT}; ip netns add {ROUTER}
ip link add {CLIENT}_a netns {CLIENT} type veth peer name {CLIENT}_b netns {ROUTER}
ip -n {CLIENT} addr add fd00:77::2/64 dev {CLIENT}_a nodad
ip -n {ROUTER} addr add fd00:77::1/64 dev {CLIENT}_b nodad
ip -n {CLIENT} link set {CLIENT}_a up; ip -n {ROUTER} link set {CLIENT}_b up
ip -n {CLIENT} link set lo up; ip -n {ROUTER} link set lo up
ip netns exec {ROUTER} sysctl -qw net.ipv6.conf.all.forwarding=1
ip -n {CLIENT} -6 route add default via fd00:77::1
ip -n {ROUTER} -6 route add unreachable fd00:dead::/64
"""
    try:
        host.run(["sh", "-c", script])
        yield host
    finally:
        host.run(["sh", "-c", f"ip netns del {CLIENT}; ip netns del {ROUTER}"], check=False)


def test_trace_counts_a_forwarded_no_route_drop(node: guest.Guest, forwarding_pair: Target) -> None:
    host = forwarding_pair
    router_ns = int(host.run(["stat", "-Lc", "%i", f"/run/netns/{ROUTER}"]).stdout)

    def send() -> None:
        for _ in range(3):  # the first may wait for neighbour discovery
            host.run(
                ["ip", "netns", "exec", CLIENT, "ping", "-6", "-c", "1", "-W", "1", NOWHERE], check=False
            )

    traced = ip6_drop_trace.trace(host, 2, during=send)
    assert traced.attached == ["ip6_pkt_drop"], traced.attached
    ours = traced.drops[traced.drops["daddr"] == NOWHERE]
    assert len(ours) and ours["count"].sum() >= 2, traced.drops
    row = ours.iloc[0]
    assert (row["netns"], row["dev"], row["saddr"]) == (router_ns, f"{CLIENT}_b", "fd00:77::2")
    assert row["direction"].startswith("in") and row["icmpv6"] == "no route"
    # ip6_pkt_discard tail-calls ip6_pkt_drop: the stack goes on at the receive path.
    assert row["stack"].startswith("ip6_pkt_drop <- ") and "netif_receive_skb" in row["stack"], row["stack"]
    assert _ours(host) == []

    def fails() -> None:
        raise NetlabError("the reproduction broke")

    with pytest.raises(NetlabError, match="the reproduction broke"):
        ip6_drop_trace.trace(host, 2, during=fails)
    assert _ours(host) == []
