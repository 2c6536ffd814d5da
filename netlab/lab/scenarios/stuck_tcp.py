"""Case 000: TCP requests stuck after the connection is established — a stale sockmap entry.

Node-to-local-pod traffic is accelerated with Cilium's v1.11 shapes: a sockops program
``bpf_sockmap`` in the cgroup of the node's and pods' processes puts both ends of every
established connection into the sockhash ``cilium_sock_ops`` (key 44 bytes, value 4,
pinned at ``/sys/fs/bpf/tc/globals/cilium_sock_ops``), each under the key its peer sends
with, inserting with BPF_NOEXIST; the sk_msg program ``bpf_redir_proxy`` redirects each
payload straight into the peer socket.

The stale entry arises the way it does on a node: a pod's previous incarnation had
connections from the node's client ports 40120-40127 (several, because a port a probe
just closed sits in TIME_WAIT for a minute). The pod is deleted and created again with
the same address, but its old server process lives on in the old, now nameless network
namespace, and with its ESTABLISHED sockets their entries stay in the map. A new
connection from one of those ports is established, yet the new server socket's insert
fails with EEXIST, so it keeps the plain ``tcp_recvmsg`` handler while the client's has
``tcp_bpf_recvmsg``: the request is redirected into the old socket, and the server
waits forever. Ping works, other node-to-pod connections work, pod-to-pod and
remote-to-pod work. Healthy twin: the same restart, with the old process gone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from netlab import mounts, naming
from netlab.collectors import reach
from netlab.decoders import map_layout, parse_map_dump_json
from netlab.errors import NetlabError
from netlab.lab.scenario import Scenario, Twin, VerifyResult
from netlab.lab.topology import (
    HEALTH_PORT,
    NODE_V4,
    POD_V4,
    Topology,
    health_server_argv,
    host,
    module_argv,
    remove_cgroup,
    spawn,
    wait_listening,
    wait_programs_gone,
)
from netlab.probes import bpf_build, tcp_sockets
from netlab.targets import NetnsTarget

VICTIM_PORTS = range(40120, 40128)  # client ports whose connections meet stale entries
LIVE_PORTS = range(40140, 40142)  # the node's long-lived connections to the new pod
CILIUM_PIN = f"{mounts.BPFFS}/tc/globals/cilium_sock_ops"  # where Cilium pins it
PROGRAMS = ("bpf_sockmap", "bpf_redir_proxy")  # Cilium's program names


def _names() -> dict[str, str]:
    base = f"{naming.PREFIX}-stk"
    return {
        "lab": base,
        "cgroup": f"/sys/fs/cgroup/unified/{base}",
        "pins": f"{mounts.BPFFS}/{base}",
        "log": f"/run/netlab/{naming.PREFIX}/stale-socket.log",
    }


def server_key(pod_ip: str, client_ip: str, client_port: int) -> bytes:
    """The key the pod's server socket of client_ip:client_port -> pod:8080 is held
    under (Cilium keys a socket by its peer's view: sip/sport are the client)."""
    layout = map_layout("sock_ops", "G4")
    return layout.key.pack(
        {"sip": client_ip, "sport": client_port, "dip": pod_ip, "dport": HEALTH_PORT, "family": 1}
    )


def _map_id(pin: str) -> int | None:
    out = host.run(["bpftool", "-j", "map", "show", "pinned", pin], check=False)
    return int(json.loads(out.stdout)["id"]) if out.ok and out.stdout.strip() else None


def _cilium_pin_is_ours() -> bool:
    """Cilium's pin path holds this lab's map (also pinned under the lab's own name)."""
    theirs = _map_id(CILIUM_PIN) if os.path.exists(CILIUM_PIN) else None
    return theirs is not None and theirs == _map_id(f"{_names()['pins']}/maps/cilium_sock_ops")


def _wait_log(log: str, word: str, seconds: float = 10, count: int = 1) -> None:
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        text = open(log).read()
        if text.count(word) >= count or "Error" in text:
            break
        time.sleep(0.1)
    if text.count(word) < count:
        raise NetlabError(
            f"lab stuck-tcp: waiting for {word!r} from netlab.lab.stale_socket: {text.strip()[-300:]}"
        )


def _held_keys(sockmap: str) -> set[str]:
    # A 4-byte-value sockhash dumps its keys; each value is an error (ENOSPC).
    out = host.run(["bpftool", "-j", "map", "dump", "pinned", sockmap], check=False).stdout
    return {entry.key.hex() for entry in parse_map_dump_json(out)} if out.strip() else set()


class StuckTcp(Scenario):
    name = "stuck-tcp"
    short = "stk"
    investigation = "stuck-tcp"
    description = __doc__ or ""

    def build(self, topo: Topology, twin: Twin) -> dict[str, Any]:
        names = _names()
        cgroup, pins, log = names["cgroup"], names["pins"], names["log"]
        mounts.bpffs(host)
        if os.path.exists(CILIUM_PIN) and not _cilium_pin_is_ours():
            raise NetlabError(
                f"lab stuck-tcp: {CILIUM_PIN} exists and is not this lab's (is Cilium running here?)"
            )
        os.makedirs(cgroup, exist_ok=True)
        obj = bpf_build.build("sockmap_accel.bpf.c", package="netlab.lab")
        host.run(["mkdir", "-p", pins, os.path.dirname(CILIUM_PIN)])
        host.run(["bpftool", "prog", "loadall", obj, f"{pins}/progs", "pinmaps", f"{pins}/maps"])
        sockmap = f"{pins}/maps/cilium_sock_ops"
        if not os.path.exists(CILIUM_PIN):
            host.run(["bpftool", "map", "pin", "pinned", sockmap, CILIUM_PIN])
        host.run(["bpftool", "cgroup", "attach", cgroup, "sock_ops", "pinned", f"{pins}/progs/bpf_sockmap"])
        host.run(["bpftool", "prog", "attach", "pinned", f"{pins}/progs/bpf_redir_proxy", "msg_verdict",
                  "pinned", sockmap])  # fmt: skip
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w"):
            pass
        pod1, pod_ip = topo.pod("pod1"), POD_V4["pod1"]
        # pod2 serves as usual; pod1's first incarnation holds the node's connections.
        topo.processes.append(spawn(topo.pod("pod2"), health_server_argv(), cgroup=cgroup))
        old = spawn(pod1, module_argv("netlab.lab.stale_socket", "server", names["lab"], str(HEALTH_PORT)),
                    cgroup=cgroup, log=log)  # fmt: skip
        wait_listening(pod1, HEALTH_PORT)
        client = spawn(topo.node, module_argv("netlab.lab.stale_socket", "client", names["lab"], pod_ip,
                                              str(HEALTH_PORT), *map(str, VICTIM_PORTS)), cgroup=cgroup, log=log)  # fmt: skip
        _wait_log(log, "connected")
        wanted = {server_key(pod_ip, NODE_V4, port).hex() for port in VICTIM_PORTS}
        deadline = time.monotonic() + 5
        while not wanted <= _held_keys(sockmap) and time.monotonic() < deadline:
            time.sleep(0.1)
        if twin.healthy:
            os.kill(old, signal.SIGKILL)  # the old pod's process ends; its sockets close
        # The pod is deleted and created again with the same address; then the node's
        # client gives up on its connections (an RST nobody receives).
        topo.replace_pod("pod1", "lxc1")
        os.kill(client, signal.SIGTERM)
        _wait_log(log, "closed")
        # The new pod serves dual-stack (a Go server on :8080): its IPv4 connections are
        # AF_INET6 sockets with v4-mapped addresses, keyed as IPv4.
        topo.processes.append(spawn(pod1, health_server_argv(dual_stack=True), cgroup=cgroup))
        wait_listening(pod1, HEALTH_PORT)
        wait_listening(topo.pod("pod2"), HEALTH_PORT)
        topo.wait_ready()
        # Live, accelerated connections to the new pod (a kubelet's keep-alives): entries
        # that belong to their sockets, in both twins.
        topo.processes.append(spawn(topo.node, module_argv("netlab.lab.stale_socket", "client", names["lab"], pod_ip,
                                                           str(HEALTH_PORT), *map(str, LIVE_PORTS)),
                                    cgroup=cgroup, log=log))  # fmt: skip
        _wait_log(log, "connected", count=2)
        return {
            "cgroup": cgroup,
            "sockmap": CILIUM_PIN,
            "pod_ip": pod_ip,
            "pod_port": HEALTH_PORT,
            "client_ports": f"{VICTIM_PORTS[0]}-{VICTIM_PORTS[-1]}",
            "hold_path": "/slow/3",
        }

    def took_effect(self, params: dict[str, Any], twin: Twin) -> list[str]:
        names = _names()
        problems = []
        attached = host.run(["bpftool", "-j", "cgroup", "show", params["cgroup"]], check=False).stdout
        if PROGRAMS[0] not in attached:
            problems.append(f"the sockops program {PROGRAMS[0]} is not attached to {params['cgroup']}")
        if not _cilium_pin_is_ours():
            problems.append(f"{CILIUM_PIN} does not hold the lab's sockhash")
        held = _held_keys(f"{names['pins']}/maps/cilium_sock_ops")
        wanted = {server_key(params["pod_ip"], NODE_V4, port).hex() for port in VICTIM_PORTS}
        if not twin.healthy and not wanted <= held:
            problems.append(f"{len(wanted - held)} of {len(wanted)} stale sock keys are not in {CILIUM_PIN}")
        if twin.healthy and wanted & held:
            problems.append(f"the healthy twin's {CILIUM_PIN} holds a key of the victim ports")
        return problems

    def verify(self, params: dict[str, Any], twin: Twin) -> VerifyResult:
        result = VerifyResult(self.name, twin)
        node = NetnsTarget(params["node_netns"])
        pod_ip, port, cgroup = params["pod_ip"], params["pod_port"], params["cgroup"]
        ping = reach.ping(node, pod_ip)
        result.add("node -> pod ping", "reply", ping.detail, ping.ok)
        _, other = reach.http(node, pod_ip, port, "/health", timeout=2, cgroup=cgroup)
        result.add("node -> pod HTTP (another client port)", "answers", other.detail, other.ok)
        ports = params["client_ports"]
        tcp, victim = reach.http(node, pod_ip, port, "/health", timeout=3, cgroup=cgroup, local_port=ports)
        result.add(f"node -> pod TCP from ports {ports}", "established", tcp.detail, tcp.ok)
        want = "answers" if twin.healthy else "times out after connecting"
        result.add(f"node -> pod HTTP from ports {ports}", want, victim.detail, victim.ok == twin.healthy)
        for vantage in ("pod2", "remote"):
            _, web = reach.http(NetnsTarget(params["pod_netns"]["pod2"] if vantage == "pod2" else params["remote_netns"]),
                                pod_ip, port, "/health", timeout=2)  # fmt: skip
            result.add(f"{vantage} -> pod HTTP", "answers", web.detail, web.ok)
        # The receive handler of each end of a flow from those ports, read while it is stuck.
        with reach.HeldRequest(node, pod_ip, port, "/slow/3", seconds=4, local_port=ports, cgroup=cgroup):
            client = tcp_sockets.read(node, "node")
            server = tcp_sockets.read(NetnsTarget(params["pod_netns"]["pod1"]), "pod")
            held = sorted(_held_keys(params["sockmap"]))
        # Cilium's shape, as a real node shows it: key 44, value 4, and a user-space
        # lookup refused (only 8-byte values return a cookie).
        shown = json.loads(host.run(["bpftool", "-j", "map", "show", "pinned", params["sockmap"]]).stdout)
        shape = f"{shown.get('type')}, key {shown.get('bytes_key')}, value {shown.get('bytes_value')}"
        result.add(f"the map at {params['sockmap']}", "sockhash, key 44, value 4", shape,
                   shape == "sockhash, key 44, value 4")  # fmt: skip
        if held:
            key = bytes.fromhex(held[0])
            lookup = host.run(["bpftool", "map", "lookup", "pinned", params["sockmap"], "key", "hex",
                               *(f"{b:02x}" for b in key)], check=False)  # fmt: skip
            said = (lookup.stderr or lookup.stdout).strip().splitlines()[-1:] or ["nothing"]
            result.add("a user-space lookup of a held key", "No space left on device", said[0],
                       not lookup.ok and "No space left on device" in said[0])  # fmt: skip
        lo, hi = (int(x) for x in ports.split("-"))
        client_h = set(
            client[client["local_port"].between(lo, hi) & (client["peer_port"] == port)]["handler"]
        )
        server_h = set(
            server[server["peer_port"].between(lo, hi) & (server["local_port"] == port)]["handler"]
        )
        want_server = "tcp_bpf_recvmsg" if twin.healthy else "tcp_recvmsg"
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
        sockmap = f"{pins}/maps/cilium_sock_ops"
        if os.path.exists(f"{pins}/progs/bpf_redir_proxy") and os.path.exists(sockmap):
            host.run(["bpftool", "prog", "detach", "pinned", f"{pins}/progs/bpf_redir_proxy", "msg_verdict",
                      "pinned", sockmap], check=False)  # fmt: skip
        # The old pod's process is in the lab's cgroup: killed with it, wherever its
        # namespace went.
        remove_cgroup(cgroup)
        # Cilium's pin path first, and only when it holds this lab's map: the lab's own
        # pin is how it is recognised.
        if _cilium_pin_is_ours():
            host.run(["rm", "-f", CILIUM_PIN], check=False)
        for empty in (os.path.dirname(CILIUM_PIN), os.path.dirname(os.path.dirname(CILIUM_PIN))):
            host.run(["rmdir", empty], check=False)
        host.run(["rm", "-rf", pins, names["log"]], check=False)
        # The log's directory too, once nothing else of the prefix is in it.
        host.run(["rmdir", os.path.dirname(names["log"])], check=False)
        wait_programs_gone(list(PROGRAMS))


SCENARIO = StuckTcp()
