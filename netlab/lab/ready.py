"""Bounded waits for what a lab scenario depends on, and the check that its fault took effect.

A namespace that was just built is not yet a network: a veth that says UP may still
have its noop qdisc (the kernel's linkwatch activates devices at most once a second, so
a burst of new links lags), a new IPv6 address may be tentative, and the first packets
to a neighbour wait on (or are dropped during) its resolution. A scenario that plants its
fault before all that is settled can plant nothing at all — on a fresh machine the route
cache stayed empty because the flood went out while neighbour discovery was still failing.
So scenarios wait, each wait bounded and failing with what it was still waiting for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from netlab.errors import NetlabError
from netlab.targets import LocalTarget, NetnsTarget

host = LocalTarget()


def wait_for(what: str, problem: Callable[[], str], *, timeout: float = 10.0, interval: float = 0.1) -> float:
    """Call ``problem`` until it returns ``""`` (ready); return the seconds waited.

    ``problem`` returns what is not ready yet, in words; after ``timeout`` that last answer
    becomes the error."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        left = problem()
        if not left:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise NetlabError(f"lab: {what} not ready after {timeout:g} s: {left}")
        time.sleep(interval)


def _ip_json(netns: str, *args: str) -> list[dict]:
    out = host.run(["ip", "-j", "-n", netns, *args], check=False).stdout
    return json.loads(out) if out.strip() else []


def links_down(netns: str) -> str:
    """The links of ``netns`` (other than lo) whose operational state is not UP.

    Operstate is set by the same linkwatch work that swaps a device's noop qdisc for its
    real one, so UP here means packets are really sent."""
    down = [
        f"{link['ifname']} ({link.get('operstate', '?')})"
        for link in _ip_json(netns, "link", "show")
        if link.get("ifname") != "lo" and link.get("operstate") != "UP"
    ]
    return f"{netns}: links not up: {', '.join(down)}" if down else ""


def tentative_addresses(netns: str) -> str:
    """IPv6 addresses of ``netns`` still in duplicate address detection (or failed it)."""
    found = []
    for link in _ip_json(netns, "-6", "addr", "show"):
        for addr in link.get("addr_info", []):
            if addr.get("tentative") or addr.get("dadfailed"):
                state = "dadfailed" if addr.get("dadfailed") else "tentative"
                found.append(f"{addr.get('local')} on {link.get('ifname')} ({state})")
    return f"{netns}: addresses {', '.join(found)}" if found else ""


def unreachable(netns: str, addresses: list[str]) -> str:
    """Which of ``addresses`` do not answer one ping from ``netns`` within a second.

    A reply proves both neighbour resolutions (there and back) completed."""
    vantage = NetnsTarget(netns)
    missing = [
        a for a in addresses if not vantage.run(["ping", "-n", "-c", "1", "-W", "1", a], check=False).ok
    ]
    return f"{netns} gets no ping reply from {', '.join(missing)}" if missing else ""


def network(namespaces: list[str], pings: dict[str, list[str]], *, timeout: float = 15.0) -> dict[str, float]:
    """Wait until every link is up, no address is tentative and each namespace in
    ``pings`` reaches its addresses; return the seconds each stage took."""
    took = {
        "links up": wait_for(
            "links", lambda: "; ".join(filter(None, map(links_down, namespaces))), timeout=timeout
        ),
        "no tentative addresses": wait_for(
            "IPv6 addresses", lambda: "; ".join(filter(None, map(tentative_addresses, namespaces))),
            timeout=timeout,
        ),
    }  # fmt: skip
    took["neighbours answer"] = wait_for(
        "neighbours",
        lambda: "; ".join(filter(None, (unreachable(ns, addrs) for ns, addrs in pings.items()))),
        timeout=timeout,
        interval=0.2,
    )
    return {k: round(v, 3) for k, v in took.items()}
