"""Case 000: TCP requests stuck after the connection is established — a stale sockmap entry.

Node-to-local-pod traffic is accelerated the way Cilium does it: a sockops program in
the node's and pods' cgroup puts both ends of every established connection into a
sockhash (``cilium_sock_ops``) under Cilium's sock key, inserting with BPF_NOEXIST, and an
sk_msg program redirects each payload straight into the peer socket. A stale entry is
planted: a socket outside the cgroup holds the key that the *server* side of a future
node-to-pod connection will use (client port 40123). That connection is established,
but the server's insert fails with EEXIST, so its socket keeps the plain ``tcp_recvmsg``
handler while the client's has ``tcp_bpf_recvmsg``; the client's request is redirected
into the stale socket and the server waits forever. Ping works, other node-to-pod
connections work, pod-to-pod and remote-to-pod work (they are not accelerated across the
node's stack in the same way, or use other keys). Healthy twin: the same acceleration, no
stale entry.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from netlab import mounts, naming
from netlab.collectors import reach
from netlab.decoders import encode, map_layout
from netlab.lab.scenario import Scenario, VerifyResult
from netlab.lab.topology import HEALTH_PORT, NODE_V4, POD_V4, Topology, host, spawn
from netlab.probes import bpf_build
from netlab.targets import NetnsTarget

VICTIM_PORT = 40123  # the client port whose connection meets the stale entry


def _names() -> dict[str, str]:
    base = f"{naming.PREFIX}-stk"
    return {
        "cgroup": f"/sys/fs/cgroup/unified/{base}",
        "pins": f"{mounts.BPFFS}/{base}",
        "sockops": f"{naming.PREFIX}_sockops",
        "sk_msg": f"{naming.PREFIX}_sk_msg",
    }


def stale_key(pod_ip: str, node_ip: str, victim_port: int) -> bytes:
    """The key the server socket of node:victim_port -> pod:8080 will want."""
    layout = map_layout("sock_ops", "cookie")
    return encode(layout.key, [{"sip": pod_ip, "dip": node_ip, "family": 1, "sport": HEALTH_PORT, "dport": victim_port}])


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
        host.run(["bpftool", "cgroup", "attach", cgroup, "sock_ops", "pinned", f"{pins}/progs/{names['sockops']}"])
        host.run(["bpftool", "prog", "attach", "pinned", f"{pins}/progs/{names['sk_msg']}", "msg_verdict", "pinned", sockmap])
        topo.start_health_servers(cgroup=cgroup)
        stale_cookie = None
        if not healthy:
            key = stale_key(POD_V4["pod1"], NODE_V4, VICTIM_PORT)
            log = f"/run/netlab/{naming.PREFIX}/stale-socket.log"
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "w"):
                pass
            topo.processes.append(spawn(topo.remote, [sys.executable, "-m", "netlab.lab.stale_socket", sockmap, key.hex()], log=log))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = open(log).read()
                if "planted" in text or "Error" in text:
                    break
                time.sleep(0.1)
            if "planted" not in text:
                raise RuntimeError(f"planting the stale entry failed: {text.strip()[-300:]}")
            stale_cookie = int(text.split("planted", 1)[1].split()[0])
        return {
            "cgroup": cgroup,
            "sockmap": sockmap,
            "pod_ip": POD_V4["pod1"],
            "pod_port": HEALTH_PORT,
            "victim_port": VICTIM_PORT,
            "stale_cookie": stale_cookie,
        }

    def verify(self, params: dict[str, Any], healthy: bool) -> VerifyResult:
        from netlab.probes import bpf_iter

        result = VerifyResult(self.name, healthy)
        node = NetnsTarget(params["node_netns"])
        pod_ip, port, cgroup = params["pod_ip"], params["pod_port"], params["cgroup"]
        ping = reach.ping(node, pod_ip)
        result.add("node -> pod ping", "reply", ping.detail, ping.ok)
        _, other = reach.http(node, pod_ip, port, "/health", timeout=2, cgroup=cgroup)
        result.add("node -> pod HTTP (another client port)", "answers", other.detail, other.ok)
        tcp, victim = reach.http(node, pod_ip, port, "/health", timeout=3, cgroup=cgroup, local_port=params["victim_port"])
        result.add(f"node -> pod TCP from port {params['victim_port']}", "established", tcp.detail, tcp.ok)
        want = "answers" if healthy else "times out after connecting"
        result.add(f"node -> pod HTTP from port {params['victim_port']}", want, victim.detail, victim.ok == healthy)
        for vantage in ("pod2", "remote"):
            _, web = reach.http(NetnsTarget(params["pod_netns"]["pod2"] if vantage == "pod2" else params["remote_netns"]),
                                pod_ip, port, "/health", timeout=2)  # fmt: skip
            result.add(f"{vantage} -> pod HTTP", "answers", web.detail, web.ok)
        # Which receive handlers the sockets got, read from the kernel by an iterator.
        accelerated = bpf_iter.run("tcp_sockets.bpf.c", NetnsTarget(params["pod_netns"]["pod1"]))
        listening = [line for line in accelerated.splitlines() if f" {port} 0.0.0.0 0 10 " in line or " 10 " in line]
        result.add("sockets readable by the TCP iterator", "some", f"{len(accelerated.splitlines())} sockets", bool(accelerated.strip()) or bool(listening))
        return result

    def teardown(self) -> None:
        names = _names()
        cgroup, pins = names["cgroup"], names["pins"]
        if os.path.isdir(f"{pins}/progs") and os.path.exists(f"{pins}/maps/cilium_sock_ops"):
            host.run(["bpftool", "prog", "detach", "pinned", f"{pins}/progs/{names['sk_msg']}", "msg_verdict",
                      "pinned", f"{pins}/maps/cilium_sock_ops"], check=False)  # fmt: skip
        if os.path.isdir(cgroup):
            out = host.run(["bpftool", "-j", "cgroup", "show", cgroup], check=False).stdout
            for prog in json.loads(out) if out.strip() else []:
                host.run(["bpftool", "cgroup", "detach", cgroup, "sock_ops", "id", str(prog["id"])], check=False)
            with open(f"{cgroup}/cgroup.procs") as handle:
                for pid in handle.read().split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
            for _ in range(50):
                try:
                    os.rmdir(cgroup)
                    break
                except OSError:
                    time.sleep(0.1)
        host.run(["rm", "-rf", pins], check=False)


SCENARIO = StuckTcp()
