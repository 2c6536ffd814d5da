"""Case 000: TCP requests stuck after the connection is established — a stale sockmap entry.

Node-to-local-pod traffic is accelerated the way Cilium does it: a sockops program in
the node's and pods' cgroup puts both ends of every established connection into a
sockhash (``cilium_sock_ops``) under Cilium's sock key, inserting with BPF_NOEXIST, and an
sk_msg program redirects each payload straight into the peer socket. A stale entry is
planted: sockets outside the cgroup hold the keys that the *server* side of future
node-to-pod connections will use (client ports 40120-40127; several, because a closed
client port sits in TIME_WAIT for a minute and the probes must be repeatable). That connection is established,
but the server's insert fails with EEXIST, so its socket keeps the plain ``tcp_recvmsg``
handler while the client's has ``tcp_bpf_recvmsg``; the client's request is redirected
into the stale socket and the server waits forever. Ping works, other node-to-pod
connections work, pod-to-pod and remote-to-pod work (they are not accelerated across the
node's stack in the same way, or use other keys). Healthy twin: the same acceleration, no
stale entry.
"""

from __future__ import annotations

import os
import time
from typing import Any

from netlab import mounts, naming
from netlab.collectors import reach
from netlab.decoders import map_layout, parse_map_dump_json
from netlab.lab.scenario import Scenario, VerifyResult
from netlab.lab.topology import (
    HEALTH_PORT,
    NODE_V4,
    POD_V4,
    Topology,
    host,
    module_argv,
    remove_cgroup,
    spawn,
    wait_programs_gone,
)
from netlab.probes import bpf_build, tcp_sockets
from netlab.targets import NetnsTarget

VICTIM_PORTS = range(40120, 40128)  # client ports whose connections meet stale entries


def _names() -> dict[str, str]:
    base = f"{naming.PREFIX}-stk"
    return {
        "cgroup": f"/sys/fs/cgroup/unified/{base}",
        "pins": f"{mounts.BPFFS}/{base}",
        "sockops": f"{naming.PREFIX}_sockops",
        "sk_msg": f"{naming.PREFIX}_sk_msg",
        "log": f"/run/netlab/{naming.PREFIX}/stale-socket.log",
    }


def stale_key(pod_ip: str, node_ip: str, victim_port: int) -> bytes:
    """The key the server socket of node:victim_port -> pod:8080 will want."""
    layout = map_layout("sock_ops", "cookie")
    return layout.key.pack(
        {"sip": pod_ip, "dip": node_ip, "family": 1, "sport": HEALTH_PORT, "dport": victim_port}
    )


class StuckTcp(Scenario):
    name = "stuck-tcp"
    short = "stk"
    investigation = "stuck-tcp"
    description = __doc__ or ""

    def build(self, topo: Topology, healthy: bool) -> dict[str, Any]:
        names = _names()
        cgroup, pins = names["cgroup"], names["pins"]
        mounts.bpffs(host)
        os.makedirs(cgroup, exist_ok=True)
        obj = bpf_build.build("sockmap_accel.bpf.c", package="netlab.lab",
                              defines={"SOCKOPS_NAME": names["sockops"], "SKMSG_NAME": names["sk_msg"]})  # fmt: skip
        host.run(["mkdir", "-p", pins])
        host.run(["bpftool", "prog", "loadall", obj, f"{pins}/progs", "pinmaps", f"{pins}/maps"])
        sockmap = f"{pins}/maps/cilium_sock_ops"
        host.run(
            ["bpftool", "cgroup", "attach", cgroup, "sock_ops", "pinned", f"{pins}/progs/{names['sockops']}"]
        )
        host.run(
            [
                "bpftool",
                "prog",
                "attach",
                "pinned",
                f"{pins}/progs/{names['sk_msg']}",
                "msg_verdict",
                "pinned",
                sockmap,
            ]
        )
        topo.start_health_servers(cgroup=cgroup)
        stale_cookies: list[int] = []
        if not healthy:
            keys = [stale_key(POD_V4["pod1"], NODE_V4, port).hex() for port in VICTIM_PORTS]
            log = _names()["log"]
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "w"):
                pass
            topo.processes.append(
                spawn(topo.remote, module_argv("netlab.lab.stale_socket", sockmap, *keys), log=log)
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = open(log).read()
                if "planted" in text or "Error" in text:
                    break
                time.sleep(0.1)
            if "planted" not in text:
                raise RuntimeError(f"planting the stale entry failed: {text.strip()[-300:]}")
            stale_cookies = [int(c) for c in text.split("planted", 1)[1].split()]
        return {
            "cgroup": cgroup,
            "sockmap": sockmap,
            "pod_ip": POD_V4["pod1"],
            "pod_port": HEALTH_PORT,
            "client_ports": f"{VICTIM_PORTS[0]}-{VICTIM_PORTS[-1]}",
            "hold_path": "/slow/3",
            "stale_cookies": stale_cookies,
        }

    def took_effect(self, params: dict[str, Any], healthy: bool) -> list[str]:
        names = _names()
        problems = []
        attached = host.run(["bpftool", "-j", "cgroup", "show", params["cgroup"]], check=False).stdout
        if names["sockops"] not in attached:
            problems.append(f"the sockops program {names['sockops']} is not attached to {params['cgroup']}")
        out = host.run(["bpftool", "-j", "map", "dump", "pinned", params["sockmap"]], check=False).stdout
        held = {entry.key.hex() for entry in parse_map_dump_json(out)} if out.strip() else set()
        wanted = {stale_key(params["pod_ip"], NODE_V4, port).hex() for port in VICTIM_PORTS}
        if not healthy and not wanted <= held:
            problems.append(
                f"{len(wanted - held)} of {len(wanted)} stale sock keys are not in {params['sockmap']}"
            )
        if healthy and wanted & held:
            problems.append(f"the healthy twin's {params['sockmap']} holds a key of the victim ports")
        return problems

    def verify(self, params: dict[str, Any], healthy: bool) -> VerifyResult:
        result = VerifyResult(self.name, healthy)
        node = NetnsTarget(params["node_netns"])
        pod_ip, port, cgroup = params["pod_ip"], params["pod_port"], params["cgroup"]
        ping = reach.ping(node, pod_ip)
        result.add("node -> pod ping", "reply", ping.detail, ping.ok)
        _, other = reach.http(node, pod_ip, port, "/health", timeout=2, cgroup=cgroup)
        result.add("node -> pod HTTP (another client port)", "answers", other.detail, other.ok)
        ports = params["client_ports"]
        tcp, victim = reach.http(node, pod_ip, port, "/health", timeout=3, cgroup=cgroup, local_port=ports)
        result.add(f"node -> pod TCP from ports {ports}", "established", tcp.detail, tcp.ok)
        want = "answers" if healthy else "times out after connecting"
        result.add(f"node -> pod HTTP from ports {ports}", want, victim.detail, victim.ok == healthy)
        for vantage in ("pod2", "remote"):
            _, web = reach.http(NetnsTarget(params["pod_netns"]["pod2"] if vantage == "pod2" else params["remote_netns"]),
                                pod_ip, port, "/health", timeout=2)  # fmt: skip
            result.add(f"{vantage} -> pod HTTP", "answers", web.detail, web.ok)
        # The receive handler of each end of a flow from those ports, read while it is stuck.
        with reach.HeldRequest(node, pod_ip, port, "/slow/3", seconds=4, local_port=ports, cgroup=cgroup):
            client = tcp_sockets.read(node, "node")
            server = tcp_sockets.read(NetnsTarget(params["pod_netns"]["pod1"]), "pod")
        lo, hi = (int(x) for x in ports.split("-"))
        client_h = set(
            client[client["local_port"].between(lo, hi) & (client["peer_port"] == port)]["handler"]
        )
        server_h = set(
            server[server["peer_port"].between(lo, hi) & (server["local_port"] == port)]["handler"]
        )
        want_server = "tcp_bpf_recvmsg" if healthy else "tcp_recvmsg"
        result.add(
            "client socket's receive handler",
            "tcp_bpf_recvmsg",
            ", ".join(client_h) or "none",
            client_h == {"tcp_bpf_recvmsg"},
        )
        result.add(
            "server socket's receive handler",
            want_server,
            ", ".join(server_h) or "none",
            server_h == {want_server},
        )
        return result

    def teardown(self) -> None:
        names = _names()
        cgroup, pins = names["cgroup"], names["pins"]
        if os.path.isdir(f"{pins}/progs") and os.path.exists(f"{pins}/maps/cilium_sock_ops"):
            host.run(["bpftool", "prog", "detach", "pinned", f"{pins}/progs/{names['sk_msg']}", "msg_verdict",
                      "pinned", f"{pins}/maps/cilium_sock_ops"], check=False)  # fmt: skip
        remove_cgroup(cgroup, "sock_ops")
        host.run(["rm", "-rf", pins, names["log"]], check=False)
        # The log's directory too, once nothing else of the prefix is in it.
        host.run(["rmdir", os.path.dirname(names["log"])], check=False)
        wait_programs_gone([names["sockops"], names["sk_msg"]])


SCENARIO = StuckTcp()
