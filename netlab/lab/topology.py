"""A CNI-like node built from network namespaces.

::

    remote (192.168.50.2, fd00:50::2)
      | eth0
      | eth0
    node (192.168.50.1, fd00:50::1)   ip_forward on, host route per pod
      | lxc1            | lxc2          (proxy ARP; fe80::1 as the pods' IPv6 gateway)
      | eth0            | eth0
    pod1 10.244.1.11   pod2 10.244.1.12   (/32, default via 169.254.1.1, Calico style)
         fd00:244::11       fd00:244::12

Namespaces are named ``<prefix>-<scenario short name>-<role>``; every interface lives
inside them, so deleting the namespaces removes all links and routes. Addresses repeat
across scenarios: each scenario has its own namespaces, so they never meet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from netlab import naming
from netlab.errors import NetlabError
from netlab.lab import ready
from netlab.targets import LocalTarget, NetnsTarget

NODE_V4, REMOTE_V4 = "192.168.50.1", "192.168.50.2"
NODE_V6, REMOTE_V6 = "fd00:50::1", "fd00:50::2"
POD_V4 = {"pod1": "10.244.1.11", "pod2": "10.244.1.12"}
POD_V6 = {"pod1": "fd00:244::11", "pod2": "fd00:244::12"}
POD_CIDR_V4, POD_CIDR_V6 = "10.244.1.0/24", "fd00:244::/64"
HEALTH_PORT = 8080

host = LocalTarget()


def ns_name(short: str, role: str) -> str:
    return f"{naming.PREFIX}-{short}-{role}"


def sh(argv: list[str], **kw) -> None:  # noqa: ANN003
    host.run(argv, **kw)


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


@dataclass
class Topology:
    """The namespaces of one scenario; ``build()`` creates them, ``destroy()`` removes them."""

    short: str
    pods: tuple[str, ...] = ("pod1", "pod2")
    processes: list[int] = field(default_factory=list)

    @property
    def node(self) -> str:
        return ns_name(self.short, "node")

    @property
    def remote(self) -> str:
        return ns_name(self.short, "remote")

    def pod(self, pod: str) -> str:
        return ns_name(self.short, pod)

    def namespaces(self) -> list[str]:
        return [self.node, self.remote, *(self.pod(p) for p in self.pods)]

    def target(self, role: str) -> NetnsTarget:
        return NetnsTarget(ns_name(self.short, role))

    def params(self) -> dict[str, object]:
        return {
            "node_netns": self.node,
            "remote_netns": self.remote,
            "pod_netns": {p: self.pod(p) for p in self.pods},
            "node_ip": NODE_V4,
            "node_ip6": NODE_V6,
            "remote_ip": REMOTE_V4,
            "pod_ips": {p: POD_V4[p] for p in self.pods},
            "pod_ip6s": {p: POD_V6[p] for p in self.pods},
            "health_port": HEALTH_PORT,
        }

    def build(self) -> None:
        for name in self.namespaces():
            if not netns_exists(name):
                sh(["ip", "netns", "add", name])
            sh(["ip", "-n", name, "link", "set", "lo", "up"])
        node, remote = self.node, self.remote
        sysctl(node, "net.ipv4.ip_forward", "1")
        # Both sides route (the remote routes the pods' prefixes to the node). IPv6
        # forwarding must be on before the first neighbour exchange: the node records the
        # remote as a router only from an advertisement with the router flag, and the
        # route GC prunes gateway routes (PMTU exceptions among them) whose gateway is not.
        for ns in (node, remote):
            sysctl(ns, "net.ipv6.conf.all.forwarding", "1")
        # Uplink node <-> remote.
        if not link_exists(node, "eth0"):
            sh(
                [
                    "ip",
                    "-n",
                    node,
                    "link",
                    "add",
                    "eth0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    remote,
                ]
            )
        for ns, v4, v6 in ((node, NODE_V4, NODE_V6), (remote, REMOTE_V4, REMOTE_V6)):
            sysctl(ns, "net.ipv6.conf.eth0.accept_dad", "0")
            sh(["ip", "-n", ns, "addr", "replace", f"{v4}/24", "dev", "eth0"])
            sh(["ip", "-n", ns, "addr", "replace", f"{v6}/64", "dev", "eth0", "nodad"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        # The node's default route points at the remote side, as a node's uplink would;
        # proxy ARP on the pods' veths answers for 169.254.1.1 only because the node has
        # a route to it that leaves through another interface.
        sh(["ip", "-n", node, "route", "replace", "default", "via", REMOTE_V4])
        sh(["ip", "-n", remote, "route", "replace", POD_CIDR_V4, "via", NODE_V4])
        sh(["ip", "-n", remote, "-6", "route", "replace", POD_CIDR_V6, "via", NODE_V6])
        for index, pod in enumerate(self.pods, start=1):
            self._build_pod(pod, f"lxc{index}")

    def _build_pod(self, pod: str, lxc: str) -> None:
        node, ns = self.node, self.pod(pod)
        if not link_exists(node, lxc):
            sh(["ip", "-n", node, "link", "add", lxc, "type", "veth", "peer", "name", "eth0", "netns", ns])
        sysctl(node, f"net.ipv4.conf.{lxc}.proxy_arp", "1")
        sysctl(node, f"net.ipv6.conf.{lxc}.accept_dad", "0")
        sysctl(ns, "net.ipv6.conf.eth0.accept_dad", "0")
        sh(["ip", "-n", node, "addr", "replace", "fe80::1/64", "dev", lxc, "nodad"])
        sh(["ip", "-n", node, "link", "set", lxc, "up"])
        sh(["ip", "-n", ns, "addr", "replace", f"{POD_V4[pod]}/32", "dev", "eth0"])
        sh(["ip", "-n", ns, "addr", "replace", f"{POD_V6[pod]}/128", "dev", "eth0", "nodad"])
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        sh(["ip", "-n", ns, "route", "replace", "169.254.1.1", "dev", "eth0"])
        sh(["ip", "-n", ns, "route", "replace", "default", "via", "169.254.1.1", "dev", "eth0"])
        sh(["ip", "-n", ns, "-6", "route", "replace", "default", "via", "fe80::1", "dev", "eth0"])
        sh(["ip", "-n", node, "route", "replace", f"{POD_V4[pod]}/32", "dev", lxc])
        sh(["ip", "-n", node, "-6", "route", "replace", f"{POD_V6[pod]}/128", "dev", lxc])

    def replace_pod(self, pod: str, lxc: str) -> None:
        """Delete ``pod`` and create it again with the same address, as a restarted pod:
        its veth goes, its namespace loses its name (processes still inside keep it
        alive, unreachable), and a new namespace of the same name takes the address."""
        node, ns = self.node, self.pod(pod)
        sh(["ip", "-n", node, "link", "del", lxc], check=False)
        sh(["ip", "netns", "del", ns])
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        self._build_pod(pod, lxc)

    def wait_ready(self, *, timeout: float = 15.0) -> dict[str, float]:
        """Wait (bounded) until the node's links are up, no address is tentative and the
        node, the remote and every pod answer each other over IPv4 and IPv6."""
        pod_addresses = [a for p in self.pods for a in (POD_V4[p], POD_V6[p])]
        return ready.network(
            self.namespaces(),
            {self.node: [REMOTE_V4, REMOTE_V6, *pod_addresses], self.remote: [NODE_V4, NODE_V6]},
            timeout=timeout,
        )

    def start_health_servers(self, *, cgroup: str | None = None) -> None:
        """A small HTTP server in every pod answering ``GET /health`` with ``ok``."""
        for pod in self.pods:
            self.processes.append(spawn(self.pod(pod), health_server_argv(), cgroup=cgroup))
        for pod in self.pods:
            wait_listening(self.pod(pod), HEALTH_PORT)

    def destroy(self) -> None:
        destroy_namespaces(self.namespaces())


def module_argv(module: str, *args: str) -> list[str]:
    """Run one of the lab's modules (a server, a client) with this Python: also when
    netlab itself runs from the zipapp it ships to a node (:mod:`netlab.ship`)."""
    argv = [sys.executable, "-m", module, *args]
    package = Path(__file__).resolve().parents[2]
    return ["env", f"PYTHONPATH={package}", *argv] if package.suffix == ".pyz" else argv


def health_server_argv(port: int = HEALTH_PORT, *, dual_stack: bool = False) -> list[str]:
    return module_argv("netlab.lab.health_server", str(port), *(["dual-stack"] if dual_stack else []))


def sysctl(netns: str, key: str, value: str) -> None:
    NetnsTarget(netns).write_text("/proc/sys/" + key.replace(".", "/"), value)


def link_exists(netns: str, link: str) -> bool:
    return host.run(["ip", "-n", netns, "link", "show", "dev", link], check=False).ok


def spawn(netns: str, argv: list[str], *, cgroup: str | None = None, log: str = "/dev/null") -> int:
    """Start a long-running process inside ``netns`` (optionally in a cgroup), detached.

    The lab's servers outlive the ``netlab lab up`` process by design; ``down`` finds
    them by namespace (``ip netns pids``) and kills them.
    """
    prefix = ["nsenter", f"--net=/run/netns/{netns}", "--"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # the lab starts servers; investigations never do
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=(lambda: _join_cgroup(cgroup)) if cgroup else None,
        )
    return proc.pid


def _join_cgroup(cgroup: str) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as handle:
        handle.write(str(os.getpid()))


def wait_listening(netns: str, port: int, timeout: float = 30.0) -> None:
    # Generous: on a busy emulated node (the guest) a Python server can take over 10 s to
    # start; the wait ends as soon as the port listens.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = NetnsTarget(netns).run(["ss", "-Htln", f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise NetlabError(f"lab: nothing listens on port {port} in {netns} after {timeout:g} s")


def kill_netns_processes(netns: str) -> None:
    if not netns_exists(netns):
        return
    pids = host.run(["ip", "netns", "pids", netns], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_cgroup(cgroup: str) -> None:
    """Detach every program of a lab cgroup (each from its own hook), kill its
    processes, remove it.

    Works from the cgroup's name alone, so it also cleans up after a crashed ``up``.
    """
    import json

    from netlab.decoders.bpftool_show import HOOK_NAMES

    if not os.path.isdir(cgroup):
        return
    out = host.run(["bpftool", "-j", "cgroup", "show", cgroup], check=False).stdout
    for prog in json.loads(out) if out.strip() else []:
        hook = HOOK_NAMES.get(prog.get("attach_type", ""), prog.get("attach_type", ""))
        host.run(["bpftool", "cgroup", "detach", cgroup, hook, "id", str(prog["id"])], check=False)
    with open(f"{cgroup}/cgroup.procs") as handle:
        for pid in handle.read().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for _ in range(50):  # the killed processes leave the cgroup asynchronously
        try:
            os.rmdir(cgroup)
            return
        except OSError:
            time.sleep(0.1)


def wait_programs_gone(names: list[str], timeout: float = 10.0) -> None:
    """Wait until no loaded BPF program has one of ``names``: the kernel frees programs
    held by a map (an sk_msg verdict on a sockhash) asynchronously, after the map."""
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = host.run(["bpftool", "-j", "prog", "show"], check=False).stdout
        if not any(p.get("name") in names for p in (json.loads(out) if out.strip() else [])):
            return
        time.sleep(0.2)


def destroy_namespaces(names: list[str]) -> None:
    for name in names:
        kill_netns_processes(name)
    for name in names:
        if netns_exists(name):
            host.run(["ip", "netns", "del", name], check=False)


def owned_namespaces() -> list[str]:
    """Every network namespace with netlab's prefix (for ``down --all``)."""
    out = host.run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{naming.PREFIX}-")]
