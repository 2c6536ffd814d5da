"""The lab's scenarios, one module each."""

from netlab.lab.scenario import Scenario
from netlab.lab.scenarios import conntrack_reject, ipv6_route_cache, stale_cgroup_prog, stuck_tcp

ALL: list[Scenario] = [
    stuck_tcp.SCENARIO,
    conntrack_reject.SCENARIO,
    ipv6_route_cache.SCENARIO,
    stale_cgroup_prog.SCENARIO,
]
