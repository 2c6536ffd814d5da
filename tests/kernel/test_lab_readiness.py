"""The lab waits for what it depends on and checks that its fault took effect, on the
real kernel: a link that never comes up is named, and a lab whose fault is gone is
rebuilt by ``up`` instead of being reused."""

from __future__ import annotations

import pytest

from netlab import lab, naming
from netlab.errors import NetlabError
from netlab.lab import ready
from netlab.lab.scenario import INCIDENT
from netlab.lab.scenarios.ipv6_route_cache import SCENARIO as ROUTE_CACHE
from netlab.lab.scenarios.ipv6_route_cache import dst_entries
from netlab.lab.topology import destroy_namespaces, host, sh
from tests.kernel.labtools import scenario

pytestmark = pytest.mark.kernel


def sh_out(argv: list[str]) -> str:
    return host.run(argv).stdout


def test_a_link_that_never_comes_up_is_named() -> None:
    a, b = f"{naming.PREFIX}-rdy-a", f"{naming.PREFIX}-rdy-b"
    try:
        for ns in (a, b):
            sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
        sh(["ip", "-n", a, "link", "set", "eth0", "up"])  # the peer stays down
        with pytest.raises(
            NetlabError, match=rf"links not ready after 1 s: {a}: links not up: eth0 \((LOWERLAYER)?DOWN\)"
        ):
            ready.network([a], {}, timeout=1)
        sh(["ip", "-n", b, "link", "set", "eth0", "up"])
        assert ready.network([a, b], {}, timeout=5)["links up"] < 5
    finally:
        destroy_namespaces([a, b])


def test_a_lab_whose_fault_is_gone_is_rebuilt_not_reused() -> None:
    name = ROUTE_CACHE.name
    with scenario(name) as params:
        assert ROUTE_CACHE.took_effect(params, INCIDENT) == []
        # Empty the route cache behind the lab's back, as an expiry or a reboot would.
        sh(["ip", "-n", params["node_netns"], "-6", "route", "flush", "cache"])
        missing = ROUTE_CACHE.took_effect(params, INCIDENT)
        assert missing and "expected more than max_size (64)" in missing[0], missing
        rebuilt = lab.up(name)
        assert dst_entries(rebuilt["node_netns"]) > 64
        assert lab.verify(name).ok


def test_the_route_cache_fault_persists() -> None:
    """The flood's PMTU exceptions stay: the node knows its gateway as a router (the
    route GC prunes gateway exceptions of a non-router), so an investigation started
    later still finds the count past max_size."""
    import time

    with scenario(ROUTE_CACHE.name) as params:
        node = params["node_netns"]
        neigh = sh_out(["ip", "-n", node, "-6", "neigh", "show", "fd00:50::2"])
        assert "router" in neigh, neigh
        time.sleep(12)  # past the route GC's first runs after the flood
        assert dst_entries(node) > 64
