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

Both twins also carry an innocent DROP rule that counts packets all the time, as real
nodes' firewalls do (kube-proxy's, a policy engine's): pod2 sends DNS queries to the
remote every 50 ms and a FORWARD rule drops them. It must never be blamed for the
flow's drops. The same rules are in ip6tables, so the incident reproduces over IPv6 too
(client fd00:244::11, server fd00:50::2).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from netlab import naming
from netlab.lab.scenario import Scenario, Twin, VerifyResult
from netlab.lab.topology import (
    POD_V4,
    POD_V6,
    REMOTE_V4,
    REMOTE_V6,
    Topology,
    module_argv,
    spawn,
    sysctl,
    wait_listening,
)
from netlab.targets import NetnsTarget

SERVER_PORT = 9418  # git's port
PULL_SECONDS = 3.0  # longer than the shortened CLOSE_WAIT timeout
# CLOSE_WAIT shortened so the late packet meets an expired entry; no mid-stream pickup.
SYSCTLS = {
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait": "2",
    "net.netfilter.nf_conntrack_tcp_loose": "0",
}


NOISE_PORT = 53  # pod2's other traffic, dropped by the innocent rule


def rules(healthy: bool, version: int = 4) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", f"{naming.PREFIX} case 001"]
    pod2 = POD_V4["pod2"] if version == 4 else POD_V6["pod2"]
    unreachable = "icmp-port-unreachable" if version == 4 else "icmp6-port-unreachable"
    chain = [
        ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *tag, "-j", "ACCEPT"],
        ["-A", "FORWARD", "-s", pod2, "-p", "udp", "--dport", str(NOISE_PORT), *tag, "-j", "DROP"],
        ["-A", "FORWARD", "-i", "lxc+", "-m", "conntrack", "--ctstate", "NEW", *tag, "-j", "ACCEPT"],
    ]
    if healthy:
        chain += [
            ["-A", "FORWARD", "-i", "lxc+", *tag, "-j", "ACCEPT"],
            ["-A", "FORWARD", "-o", "lxc+", *tag, "-j", "ACCEPT"],
        ]
    chain.append(["-A", "FORWARD", *tag, "-j", "REJECT", "--reject-with", unreachable])
    return chain


def pull(params: dict[str, Any], version: int, seconds: float = PULL_SECONDS) -> dict[str, Any]:
    """Run the client's pull once from pod1 over IPv4 or IPv6 (bounded); what it saw."""
    pod = NetnsTarget(params["pod_netns"]["pod1"])
    server = params["server"] if version == 4 else params.get("server6", REMOTE_V6)
    argv = module_argv("netlab.lab.halfclose", "client", server, str(params["server_port"]), str(seconds))
    result = pod.run(argv, timeout=seconds + 15, check=False)
    if not result.ok:
        return {"error": result.brief_error()}
    return dict(json.loads(result.stdout))


def reproduce(params: dict[str, Any], *, seconds: float = PULL_SECONDS) -> dict[str, Any]:
    """Both pulls at once, IPv4 and IPv6: the IPv4 one's result, the other's under "ipv6"."""
    with ThreadPoolExecutor(2) as pool:
        v4, v6 = pool.submit(pull, params, 4, seconds), pool.submit(pull, params, 6, seconds)
        return {**v4.result(), "ipv6": v6.result()}


class ConntrackReject(Scenario):
    name = "conntrack-reject"
    short = "ctr"
    investigation = "packet-drops"
    description = __doc__ or ""

    def build(self, topo: Topology, twin: Twin) -> dict[str, Any]:
        node = NetnsTarget(topo.node)
        for tool, version in (("iptables", 4), ("ip6tables", 6)):
            for rule in rules(twin.healthy, version):
                node.run([tool, *rule])
        for key, value in SYSCTLS.items():
            sysctl(topo.node, key, value)
        topo.processes.append(
            spawn(topo.remote, module_argv("netlab.lab.halfclose", "server", str(SERVER_PORT)))
        )
        wait_listening(topo.remote, SERVER_PORT)
        for remote in (REMOTE_V4, REMOTE_V6):
            topo.processes.append(
                spawn(topo.pod("pod2"), module_argv("netlab.lab.halfclose", "noise", remote, str(NOISE_PORT)))
            )
        return {
            "client": POD_V4["pod1"],
            "server": REMOTE_V4,
            "server_port": SERVER_PORT,
            "client6": POD_V6["pod1"],
            "server6": REMOTE_V6,
            "interfaces": {"uplink": "eth0", "host_veth": "lxc1", "pod_veth": "eth0"},
            "reproduce": "lab",
        }

    def reproduce(self, params: dict[str, Any]) -> dict[str, Any]:
        return reproduce(params)

    def took_effect(self, params: dict[str, Any], twin: Twin) -> list[str]:
        node = NetnsTarget(params["node_netns"])
        problems = []
        for tool in ("iptables", "ip6tables"):
            listed = node.run([tool, "-S", "FORWARD"], check=False).stdout.splitlines()
            ours = [line for line in listed if f"{naming.PREFIX} case 001" in line]
            if len(ours) != len(rules(twin.healthy)) or "-j REJECT" not in ours[-1]:
                problems.append(
                    f"{tool}: FORWARD holds {len(ours)} of the lab's {len(rules(twin.healthy))} rules, REJECT last"
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

    def verify(self, params: dict[str, Any], twin: Twin) -> VerifyResult:
        from netlab.collectors import iptables

        result = VerifyResult(self.name, twin)
        node = NetnsTarget(params["node_netns"])
        before = {f: iptables.rules(node, family=f) for f in ("ipv4", "ipv6")}
        seen = reproduce(params)
        after = {f: iptables.rules(node, family=f) for f in ("ipv4", "ipv6")}
        want = "ok" if twin.healthy else "ECONNREFUSED"
        for family, pulled in (("ipv4", seen), ("ipv6", seen["ipv6"])):
            delta = iptables.counter_deltas(before[family], after[family])
            reject = delta[delta["target"] == "REJECT"]
            moved = int(reject["packets_delta"].sum()) if len(reject) else 0
            result.add(f"{family}: the pull over the second connection", "completes",
                       f"{pulled.get('pulled_bytes', 0)} bytes" if "error" not in pulled else pulled["error"],
                       pulled.get("pulled_bytes", 0) > 0)  # fmt: skip
            result.add(f"{family}: late data on the half-closed connection", want,
                       str(pulled.get("half_closed_send", pulled.get("error"))), pulled.get("half_closed_send") == want)  # fmt: skip
            result.add(f"{family}: FORWARD REJECT counter", "stays" if twin.healthy else "moves", f"+{moved} packets",
                       (moved == 0) == twin.healthy)  # fmt: skip
            drop = delta[(delta["target"] == "DROP") & delta["rule"].str.contains(f"--dport {NOISE_PORT}")]
            noise = int(drop["packets_delta"].sum()) if len(drop) else 0
            result.add(f"{family}: the innocent DROP rule (pod2's other traffic)", "moves", f"+{noise} packets",
                       noise > 0)  # fmt: skip
        return result


SCENARIO = ConntrackReject()
