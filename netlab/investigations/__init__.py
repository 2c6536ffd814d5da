"""The investigations, one module per incident, each returning Findings.

``REGISTRY`` maps the name used by ``netlab run NAME`` to its module and notebook.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InvestigationInfo:
    name: str  # netlab run NAME
    module: str  # netlab.investigations.<module>
    notebook: str  # notebooks/<file>
    lab: str  # the lab scenario that reproduces it
    title: str


REGISTRY: dict[str, InvestigationInfo] = {
    info.name: info
    for info in (
        InvestigationInfo("stuck-tcp", "netlab.investigations.stuck_tcp", "stuck-tcp.ipynb", "stuck-tcp",
                          "TCP requests stuck after the connection is established (sockmap)"),
        InvestigationInfo("packet-drops", "netlab.investigations.packet_drops", "packet-drops.ipynb", "conntrack-reject",
                          "Where packets vanish: drop points, netfilter rules and conntrack states"),
        InvestigationInfo("route-cache", "netlab.investigations.route_cache", "route-cache.ipynb", "ipv6-route-cache",
                          "IPv6 route cache and percpu counters: fast vs slow"),
        InvestigationInfo("cgroup-progs", "netlab.investigations.cgroup_progs", "cgroup-progs.ipynb", "stale-cgroup-prog",
                          "cgroup BPF programs and map inventory: stale programs and duplicate maps"),
    )
}  # fmt: skip
