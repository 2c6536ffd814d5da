"""Case 001: pods' git pulls hang — a stateful FORWARD rule rejects a half-closed flow.

The node's FORWARD chain accepts ``--ctstate RELATED,ESTABLISHED``, new connections from
the pods, and rejects everything else with ``icmp-port-unreachable``. A client in pod1
pulls from a server on the remote node over two connections; the server half-closes the
first (FIN) early. Conntrack moves that flow through FIN_WAIT to CLOSE_WAIT, and when the
client finally sends on it, the entry has expired: the packet is no longer ESTABLISHED,
matches nothing but the REJECT, and the node answers with an ICMP error from its own
address. To make this deterministic the lab shortens the CLOSE_WAIT timeout to 2 s and
turns off mid-stream pickup (``nf_conntrack_tcp_loose=0``) — in the node namespace only.
Healthy twin: the same rules plus a stateless accept of the pods' traffic before the
REJECT (the fix the case arrived at), so the late packet passes.
"""

from __future__ import annotations

import json
from typing import Any

from netlab import naming
from netlab.lab.scenario import Scenario, VerifyResult
from netlab.lab.topology import POD_V4, REMOTE_V4, Topology, module_argv, spawn, sysctl, wait_listening
from netlab.targets import NetnsTarget

SERVER_PORT = 9418  # git's port
PULL_SECONDS = 3.0  # longer than the shortened CLOSE_WAIT timeout
# CLOSE_WAIT shortened so the late packet meets an expired entry; no mid-stream pickup.
SYSCTLS = {
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait": "2",
    "net.netfilter.nf_conntrack_tcp_loose": "0",
}


def rules(healthy: bool) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", f"{naming.PREFIX} case 001"]
    chain = [
        ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"],
        ["-A", "FORWARD", "-i", "lxc+", "-m", "conntrack", "--ctstate", "NEW", *tag, "-j", "ACCEPT"],
    ]
    if healthy:
        chain += [
            ["-A", "FORWARD", "-i", "lxc+", *tag, "-j", "ACCEPT"],
            ["-A", "FORWARD", "-o", "lxc+", *tag, "-j", "ACCEPT"],
        ]
    chain.append(["-A", "FORWARD", *tag, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"])
    return chain


def reproduce(params: dict[str, Any], *, seconds: float = PULL_SECONDS) -> dict[str, Any]:
    """Run the client's pull once from pod1 (bounded) and return what it saw."""
    pod = NetnsTarget(params["pod_netns"]["pod1"])
    argv = module_argv(
        "netlab.lab.halfclose",
        "client",
        params["server"],
        str(params["server_port"]),
        str(seconds),
    )
    result = pod.run(argv, timeout=seconds + 15, check=False)
    if not result.ok:
        return {"error": result.brief_error()}
    return json.loads(result.stdout)


class ConntrackReject(Scenario):
    name = "conntrack-reject"
    short = "ctr"
    investigation = "packet-drops"
    description = __doc__ or ""

    def build(self, topo: Topology, healthy: bool) -> dict[str, Any]:
        node = NetnsTarget(topo.node)
        for rule in rules(healthy):
            node.run(["iptables", *rule])
        for key, value in SYSCTLS.items():
            sysctl(topo.node, key, value)
        topo.processes.append(
            spawn(topo.remote, module_argv("netlab.lab.halfclose", "server", str(SERVER_PORT)))
        )
        wait_listening(topo.remote, SERVER_PORT)
        return {
            "client": POD_V4["pod1"],
            "server": REMOTE_V4,
            "server_port": SERVER_PORT,
            "interfaces": {"uplink": "eth0", "host_veth": "lxc1", "pod_veth": "eth0"},
            "reproduce": "lab",
        }

    def reproduce(self, params: dict[str, Any]) -> dict[str, Any]:
        return reproduce(params)

    def took_effect(self, params: dict[str, Any], healthy: bool) -> list[str]:
        node = NetnsTarget(params["node_netns"])
        problems = []
        listed = node.run(["iptables", "-S", "FORWARD"], check=False).stdout.splitlines()
        ours = [line for line in listed if f"{naming.PREFIX} case 001" in line]
        if len(ours) != len(rules(healthy)) or "-j REJECT" not in ours[-1]:
            problems.append(
                f"FORWARD holds {len(ours)} of the lab's {len(rules(healthy))} rules, REJECT last"
            )
        for key, want in SYSCTLS.items():
            seen = node.read_text("/proc/sys/" + key.replace(".", "/")).strip()
            if seen != want:
                problems.append(f"{key} is {seen}, not {want}")
        if (
            not NetnsTarget(params["remote_netns"])
            .run(["ss", "-Htln", f"sport = :{SERVER_PORT}"])
            .stdout.strip()
        ):
            problems.append(f"nothing listens on the remote's port {SERVER_PORT}")
        return problems

    def verify(self, params: dict[str, Any], healthy: bool) -> VerifyResult:
        from netlab.collectors import iptables

        result = VerifyResult(self.name, healthy)
        node = NetnsTarget(params["node_netns"])
        before = iptables.rules(node)
        seen = reproduce(params)
        after = iptables.rules(node)
        delta = iptables.counter_deltas(before, after)
        reject = delta[delta["target"] == "REJECT"]
        moved = int(reject["packets_delta"].sum()) if len(reject) else 0
        result.add("the pull over the second connection", "completes", f"{seen.get('pulled_bytes', 0)} bytes" if "error" not in seen else seen["error"],
                   seen.get("pulled_bytes", 0) > 0)  # fmt: skip
        want = "ok" if healthy else "ECONNREFUSED"
        result.add("late data on the half-closed connection", want, str(seen.get("half_closed_send", seen.get("error"))),
                   seen.get("half_closed_send") == want)  # fmt: skip
        result.add(
            "FORWARD REJECT counter",
            "stays" if healthy else "moves",
            f"+{moved} packets",
            (moved == 0) == healthy,
        )
        return result


SCENARIO = ConntrackReject()
