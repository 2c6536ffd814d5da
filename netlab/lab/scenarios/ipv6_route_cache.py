"""Case 002: IPv6 probes fail — the route cache passes ``net.ipv6.route.max_size``.

The node's IPv6 route sysctls are lowered (``gc_thresh`` 16, ``max_size`` 64, in the
node's namespace only) and its route cache is filled: the remote side routes
fd00:99::/64 over a 1280-byte-MTU link, and the node sends 1400-byte don't-fragment UDP
datagrams to 200 addresses there, so every Packet Too Big answer leaves a PMTU exception
route — a dst entry — behind. The dst count (rt6_stats column 6) passes max_size, and its
percpu counter's fast and slow values move.

Which part reproduces where: on kernels that still enforce max_size (before Linux 6.3,
commit af6d10345ca7, unless a stable backport removed it) new routes then fail and the
node's probes to its pods drop intermittently, as in the case. From 6.3 on the check is
gone: the count passes max_size and nothing fails. This lab VM runs 6.18 and the guest
node Debian's 6.1, which carries the removal (its BTF's dst_ops.gc returns void), so on
both the counter moves and the probes keep working. Healthy twin: default sysctls, no
flood.
"""

from __future__ import annotations

from typing import Any

from netlab import naming
from netlab.collectors import reach, rt6
from netlab.lab import ready
from netlab.lab.scenario import Scenario, Twin, VerifyResult
from netlab.lab.topology import (
    POD_V6,
    REMOTE_V6,
    Topology,
    destroy_namespaces,
    host,
    module_argv,
    netns_exists,
    sh,
    sysctl,
)
from netlab.targets import NetnsTarget

FAR_PREFIX = "fd00:99::/64"
REMOTE_FAR_V6, FAR_V6 = "fd00:98::1", "fd00:98::2"
FLOOD = 200
SYSCTLS = {"gc_thresh": "16", "max_size": "64"}


def dst_entries(netns: str) -> int:
    """The namespace's IPv6 dst count (rt6_stats column 6, the counter's exact sum)."""
    return int(rt6.stats(NetnsTarget(netns))["dst_entries"])


def far_ns() -> str:
    return f"{naming.PREFIX}-r6c-far"


class Ipv6RouteCache(Scenario):
    name = "ipv6-route-cache"
    short = "r6c"
    investigation = "route-cache"
    description = __doc__ or ""

    def build(self, topo: Topology, twin: Twin) -> dict[str, Any]:
        remote, node, far = topo.remote, topo.node, far_ns()
        if not netns_exists(far):
            sh(["ip", "netns", "add", far])
        sh(["ip", "-n", far, "link", "set", "lo", "up"])
        if not host.run(["ip", "-n", remote, "link", "show", "dev", "eth1"], check=False).ok:
            sh(
                [
                    "ip",
                    "-n",
                    remote,
                    "link",
                    "add",
                    "eth1",
                    "mtu",
                    "1280",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    far,
                ]
            )
        sh(["ip", "-n", far, "link", "set", "eth0", "mtu", "1280"])
        for ns, addr in ((remote, f"{REMOTE_FAR_V6}/64"), (far, f"{FAR_V6}/64")):
            dev = "eth1" if ns == remote else "eth0"
            sysctl(ns, f"net.ipv6.conf.{dev}.accept_dad", "0")
            sh(["ip", "-n", ns, "addr", "replace", addr, "dev", dev, "nodad"])
            sh(["ip", "-n", ns, "link", "set", dev, "up"])
        sh(["ip", "-n", remote, "-6", "route", "replace", FAR_PREFIX, "via", FAR_V6])
        sh(["ip", "-n", node, "-6", "route", "replace", FAR_PREFIX, "via", REMOTE_V6])
        # The far link must carry packets before the flood: the remote forwards the
        # first datagram only once it has resolved the far side.
        ready.network([remote, far], {remote: [FAR_V6]})
        topo.start_health_servers()
        floods = 0
        if not twin.healthy:
            for key, value in SYSCTLS.items():
                sysctl(node, f"net.ipv6.route.{key}", value)
            max_size = int(SYSCTLS["max_size"])
            # Each exception needs a Packet Too Big to come back; a datagram lost to a
            # neighbour still being resolved leaves none. Flood until the count is past
            # max_size, a bounded number of times (took_effect then names the shortfall).
            while floods < 3:
                floods += 1
                NetnsTarget(node).run(
                    module_argv("netlab.lab.pmtu_flood", FAR_PREFIX, str(FLOOD), "1400"),
                    timeout=60,
                )
                if dst_entries(node) > max_size:
                    break
                ready.network([node, remote, far], {node: [REMOTE_V6], remote: [FAR_V6]})
        return {"pod_ip6": POD_V6["pod1"], "flood_prefix": FAR_PREFIX, "flooded": 0 if twin.healthy else FLOOD,
                "floods": floods, "lowered_sysctls": {} if twin.healthy else SYSCTLS}  # fmt: skip

    def took_effect(self, params: dict[str, Any], twin: Twin) -> list[str]:
        node = params["node_netns"]
        dst = dst_entries(node)
        max_size = int(rt6.route_sysctls(NetnsTarget(node))["max_size"])
        if twin.healthy:
            return [] if dst <= max_size else [f"{dst} IPv6 dst entries, past max_size {max_size}"]
        neigh = host.run(["ip", "-n", node, "-6", "neigh", "show", REMOTE_V6], check=False).stdout
        if "router" not in neigh:
            # The route GC prunes gateway exceptions whose gateway is not a known router.
            return [
                f"the node does not know its gateway {REMOTE_V6} as a router ({neigh.strip() or 'no entry'})"
            ]
        if dst > max_size:
            return []
        return [
            f"the route cache holds {dst} dst entries after {params.get('floods')} floods of {FLOOD} "
            f"don't-fragment datagrams to {FAR_PREFIX}; expected more than max_size ({max_size}): "
            "no Packet Too Big answers came back (is the far link up and the remote forwarding?)"
        ]

    def verify(self, params: dict[str, Any], twin: Twin) -> VerifyResult:
        result = VerifyResult(self.name, twin)
        node = NetnsTarget(params["node_netns"])
        stats = rt6.stats(node)
        dst = int(stats["dst_entries"])
        max_size = int(rt6.route_sysctls(node)["max_size"])
        want = f"> max_size ({max_size})" if not twin.healthy else f"<= max_size ({max_size})"
        result.add("dst entries in the node's namespace (rt6_stats column 6)", want, str(dst),
                   (dst > max_size) != twin.healthy)  # fmt: skip
        for attempt in range(3):
            _, web = reach.http(node, params["pod_ip6"], params["health_port"], "/health", timeout=2)
            result.add(f"node -> pod IPv6 HTTP #{attempt + 1}", "answers (max_size not enforced on this kernel)"
                       if not twin.healthy else "answers", web.detail, web.ok)  # fmt: skip
        return result

    def teardown(self) -> None:
        destroy_namespaces([far_ns()])


SCENARIO = Ipv6RouteCache()
