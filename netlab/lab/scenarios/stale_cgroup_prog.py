"""Case 003: some pods cannot reach some service IPs — a stale cgroup connect4 program.

Two copies of Cilium's socket load balancer (cgroup/connect4) are attached to one cgroup
with multi-attach, the old one first; the pods' cgroup is nested below it and inherits
both. Each has its own service map named
``cilium_lb4_services_v2`` (the kernel keeps ``cilium_lb4_serv``) and backend map. The
old copy's maps send service 10.96.0.10:80 to 10.244.1.99:8080, a pod that no longer
exists; the new, pinned copy (the one "the agent" manages) is correct. Programs run in
attach order, so the old one rewrites first and the new one then sees a pod address and
does nothing: connections from the cgroup to 10.96.0.10 hang, while 10.96.0.11 works.
The old program's pins are gone, so it is reachable only through the cgroup, as on the
node in the case. Healthy twin: only the current program is attached. Rollout twin
(``--twin rollout``): both generations attached as in the incident, but the old one's
maps hold the agent's services and backends, as in the middle of an agent rollout;
every service reaches its live pod.

IPv6 is the same story on connect6 with the lb6 maps: service [fd00:10:96::a]:80 goes
to the gone pod fd00:244::99 through the old copy, [fd00:10:96::b]:80 works.

Cilium's shapes, beyond the fault: each generation attaches a family (connect4,
connect6, and post_bind4/post_bind6 programs that read a service map alone) named as
that Cilium version names them (the old one v1.11's ``sock4_connect``, the agent's
v1.13's ``cil_sock4_connect``), maps of 65536 entries, not preallocated, pinned under
``tc/globals``, and an empty copy of the service map with the same name pinned beside it
(every twin).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from netlab import mounts, naming
from netlab.collectors import reach
from netlab.decoders import map_layout
from netlab.lab.scenario import HEALTHY, INCIDENT, Scenario, Twin, VerifyResult
from netlab.lab.topology import (
    HEALTH_PORT,
    POD_V4,
    POD_V6,
    REMOTE_V6,
    Topology,
    health_server_argv,
    host,
    remove_cgroup,
    spawn,
    wait_listening,
)
from netlab.probes import bpf_build

SERVICES = {"10.96.0.10": "pod1", "10.96.0.11": "pod2"}
SERVICES6 = {"fd00:10:96::a": "pod1", "fd00:10:96::b": "pod2"}
SERVICE_PORT = 80
BACKEND_PORT = 8080
STALE_BACKEND = "10.244.1.99"  # the pod the old program still believes in
STALE_BACKEND6 = "fd00:244::99"
ROLLOUT = Twin(
    "rollout", True, "both generations attached in the incident's order, the old one's maps as the agent's"
)
SAME_ENTRIES, OTHER_ENTRIES = "the agent's entries", "other entries than the agent's"


def _names() -> dict[str, str]:
    base = f"{naming.PREFIX}-scp"
    cg_root = "/sys/fs/cgroup/unified"
    return {
        # Cilium attaches at the root of the cgroup2 tree it manages; pods live in
        # nested cgroups and inherit the programs (the kernel's effective set).
        "attach": f"{cg_root}/{base}",
        "cgroup": f"{cg_root}/{base}/kubepods/pod-client",
        "pins": f"{mounts.BPFFS}/{base}",
        # The old generation is Cilium v1.11's (sock4_connect...), the agent's is v1.13's
        # (cil_sock4_connect...), as after that upgrade; behind netlab's prefix. The
        # kernel keeps 15 characters, BTF the whole name.
        "old_prog": f"{naming.PREFIX}_sock4_connect",
        "new_prog": f"{naming.PREFIX}_cil_sock4_connect",
        "old_post_bind": f"{naming.PREFIX}_sock4_post_bind",
        "new_post_bind": f"{naming.PREFIX}_cil_sock4_post_bind",
        "old_prog6": f"{naming.PREFIX}_sock6_connect",
        "new_prog6": f"{naming.PREFIX}_cil_sock6_connect",
        "old_post_bind6": f"{naming.PREFIX}_sock6_post_bind",
        "new_post_bind6": f"{naming.PREFIX}_cil_sock6_post_bind",
    }


def _bpftool(*args: str) -> Any:
    out = host.run(["bpftool", "-j", *args]).stdout
    return json.loads(out) if out.strip() else None


def _fill(pins: str, services: dict[str, str], backends: dict[int, str], family: str = "lb4") -> None:
    """Write frontends, backend slots and backends in Cilium's layout (v1.14-1.17) into
    the ``family`` (lb4, lb6) maps."""
    svc = map_layout(f"{family}_services", "D")
    be = map_layout(f"{family}_backends", "E")
    ids = {addr: i for i, addr in backends.items()}
    for service, backend in services.items():
        frontend = {"address": service, "dport": SERVICE_PORT, "backend_slot": 0}
        slot = {"address": service, "dport": SERVICE_PORT, "backend_slot": 1}
        for key, value in (
            (frontend, {"count": 1, "rev_nat_index": 1}),
            (slot, {"backend_id": ids[backend]}),
        ):
            host.run(["bpftool", "map", "update", "pinned", f"{pins}/cilium_{family}_services_v2",
                      "key", "hex", *svc.key.pack(key).hex(" ").split(),
                      "value", "hex", *svc.value.pack(value).hex(" ").split()])  # fmt: skip
    for backend_id, address in backends.items():
        host.run(["bpftool", "map", "update", "pinned", f"{pins}/cilium_{family}_backends_v3",
                  "key", "hex", *backend_id.to_bytes(4, "little").hex(" ").split(),
                  "value", "hex", *be.value.pack({"address": address, "port": BACKEND_PORT, "proto": 6}).hex(" ").split()])  # fmt: skip


def _connect_order(cgroup: str, family: int = 4) -> list[str]:
    tree = _bpftool("cgroup", "show", cgroup) or []
    return [p["name"] for p in tree if p.get("attach_type") == f"cgroup_inet{family}_connect"]


def _connect_ids(cgroup: str, family: int) -> list[int]:
    tree = _bpftool("cgroup", "show", cgroup) or []
    return [int(p["id"]) for p in tree if p.get("attach_type") == f"cgroup_inet{family}_connect"]


def _expected_order(twin: Twin, family: int = 4) -> list[str]:
    names, six = _names(), "6" if family == 6 else ""
    return (
        [names[f"new_prog{six}"]] if twin == HEALTHY else [names[f"old_prog{six}"], names[f"new_prog{six}"]]
    )


def _lb_entries(prog_id: int) -> dict[str, list[tuple[str, str]]]:
    """The entries of the LB maps program ``prog_id`` uses, by map name, as raw bytes:
    what it rewrites a service to."""
    held: dict[str, list[tuple[str, str]]] = {}
    for map_id in (_bpftool("prog", "show", "id", str(prog_id)) or {}).get("map_ids", []):
        name = str((_bpftool("map", "show", "id", str(map_id)) or {}).get("name", ""))
        if name.startswith("cilium_lb"):
            dump = _bpftool("map", "dump", "id", str(map_id)) or []
            held[name] = sorted((" ".join(e["key"]), " ".join(e["value"])) for e in dump)
    return held


def _old_maps(attach: str, family: int) -> str:
    """What the first connect``family`` program's LB maps hold against the second's (the
    old generation's against the agent's), in words."""
    ids = _connect_ids(attach, family)
    if len(ids) != 2:
        return f"{len(ids)} connect{family} programs attached"
    old, agent = map(_lb_entries, ids)
    if not old or not all(old.values()):
        return f"empty LB maps ({', '.join(old) or 'none'})"
    return SAME_ENTRIES if old == agent else OTHER_ENTRIES


def _expected_old_maps(twin: Twin) -> str:
    return SAME_ENTRIES if twin == ROLLOUT else OTHER_ENTRIES


def _load(generation: str, pins: str, cgroup: str) -> int:
    """Load one generation (``old`` or ``new``) of the program family with fresh maps
    pinned under ``pins`` and attach each program to its hook (multi, as Cilium does);
    the connect4 program's id."""
    names = _names()
    hooks = {"connect4": names[f"{generation}_prog"], "post_bind4": names[f"{generation}_post_bind"],
             "connect6": names[f"{generation}_prog6"], "post_bind6": names[f"{generation}_post_bind6"]}  # fmt: skip
    obj = bpf_build.build("sock_lb.bpf.c", package="netlab.lab",
                          defines={"CONNECT_NAME": hooks["connect4"], "POST_BIND_NAME": hooks["post_bind4"],
                                   "CONNECT6_NAME": hooks["connect6"], "POST_BIND6_NAME": hooks["post_bind6"]})  # fmt: skip
    progs = f"{pins}/progs"
    host.run(["mkdir", "-p", pins])
    host.run(["bpftool", "prog", "loadall", obj, progs, "pinmaps", pins])
    for hook, name in hooks.items():
        host.run(["bpftool", "cgroup", "attach", cgroup, hook, "pinned", f"{progs}/{name}", "multi"])
    info = _bpftool("prog", "show", "pinned", f"{progs}/{hooks['connect4']}")
    host.run(["rm", "-rf", progs])  # the cgroup holds them, as Cilium's are held
    return int(info["id"])


def _empty_copy(path: str) -> None:
    """A service map of the same name and shape with no entries, pinned beside the
    agent's: what loading one Cilium object through bpftool without its pin root leaves."""
    svc = map_layout("lb4_services", "D")
    host.run(["bpftool", "map", "create", path, "type", "hash", "key", str(svc.key.size), "value",
              str(svc.value.size), "entries", "65536", "name", "cilium_lb4_services_v2", "flags", "1"])  # fmt: skip


class StaleCgroupProg(Scenario):
    name = "stale-cgroup-prog"
    short = "scp"
    investigation = "cgroup-progs"
    description = __doc__ or ""
    twins = (INCIDENT, HEALTHY, ROLLOUT)

    def build(self, topo: Topology, twin: Twin) -> dict[str, Any]:
        names = _names()
        attach, pins = names["attach"], names["pins"]
        mounts.bpffs(host)
        os.makedirs(names["cgroup"], exist_ok=True)
        # A dual-stack node's IPv6 uplink: a gone pod's IPv6 address is routed, as its
        # IPv4 one is, so a connect() to it is sent (and hangs) instead of failing at once.
        host.run(["ip", "-n", topo.node, "-6", "route", "replace", "default", "via", REMOTE_V6])
        backends = {1: POD_V4["pod1"], 2: POD_V4["pod2"]}
        services = {svc: POD_V4[pod] for svc, pod in SERVICES.items()}
        backends6 = {1: POD_V6["pod1"], 2: POD_V6["pod2"]}
        services6 = {svc: POD_V6[pod] for svc, pod in SERVICES6.items()}
        old_id = None
        if twin != HEALTHY:
            # The old agent's copy, attached first. In the incident its backend 1 is a pod
            # that is gone; mid-rollout it holds what the agent's holds.
            old_id = _load("old", f"{pins}/old", attach)
            # The old generation was loaded before the agent's: load times are kept in
            # seconds, so a pause makes the report's "loaded" times tell them apart.
            time.sleep(1.0)
            old4, old6 = (services, backends), (services6, backends6)
            if twin == INCIDENT:
                old4 = (
                    dict(services, **{"10.96.0.10": STALE_BACKEND}),
                    {1: STALE_BACKEND, 2: POD_V4["pod2"]},
                )
                old6 = (
                    dict(services6, **{"fd00:10:96::a": STALE_BACKEND6}),
                    {1: STALE_BACKEND6, 2: POD_V6["pod2"]},
                )
            _fill(f"{pins}/old", *old4)
            _fill(f"{pins}/old", *old6, "lb6")
            # Its pins are gone, as after an agent upgrade: only the cgroup holds it.
            host.run(["rm", "-rf", f"{pins}/old"])
        new_pins = f"{pins}/tc/globals"
        new_id = _load("new", new_pins, attach)
        _fill(new_pins, services, backends)
        _fill(new_pins, services6, backends6, "lb6")
        _empty_copy(f"{pins}/cilium_lb4_services_v2")
        # Dual-stack health servers: the IPv6 services' backends answer too.
        for pod in topo.pods:
            topo.processes.append(spawn(topo.pod(pod), health_server_argv(dual_stack=True)))
        for pod in topo.pods:
            wait_listening(topo.pod(pod), HEALTH_PORT)
        return {
            "cgroup": names["cgroup"],
            "attach_cgroup": attach,
            "service": f"10.96.0.10:{SERVICE_PORT}",
            "other_service": f"10.96.0.11:{SERVICE_PORT}",
            "expected_backend": f"{POD_V4['pod1']}:{BACKEND_PORT}",
            "stale_backend": f"{STALE_BACKEND}:{BACKEND_PORT}" if twin == INCIDENT else "",
            "service6": f"[fd00:10:96::a]:{SERVICE_PORT}",
            "expected_backend6": f"[{POD_V6['pod1']}]:{BACKEND_PORT}",
            "stale_backend6": f"[{STALE_BACKEND6}]:{BACKEND_PORT}" if twin == INCIDENT else "",
            "pinned_services": f"{new_pins}/cilium_lb4_services_v2",
            "old_prog_id": old_id,
            "new_prog_id": new_id,
        }

    def took_effect(self, params: dict[str, Any], twin: Twin) -> list[str]:
        problems = []
        for family in (4, 6):
            order, want = _connect_order(params["attach_cgroup"], family), _expected_order(twin, family)
            if order != want:
                problems.append(
                    f"connect{family} programs in run order are {order or 'none'}, expected {want}"
                )
            elif twin != HEALTHY:
                old_maps = _old_maps(params["attach_cgroup"], family)
                if old_maps != _expected_old_maps(twin):
                    problems.append(f"the old generation's connect{family} LB maps hold {old_maps}")
        held = _bpftool("map", "dump", "pinned", params["pinned_services"]) or []
        if len(held) != 2 * len(SERVICES):  # a frontend and one backend slot per service
            problems.append(
                f"{params['pinned_services']} holds {len(held)} entries, expected {2 * len(SERVICES)}"
            )
        return problems

    def verify(self, params: dict[str, Any], twin: Twin) -> VerifyResult:
        from netlab.probes import connect_dest
        from netlab.targets import NetnsTarget

        result = VerifyResult(self.name, twin)
        node = NetnsTarget(params["node_netns"])
        cgroup = params["cgroup"]
        for family in (4, 6):
            order, want = _connect_order(params["attach_cgroup"], family), _expected_order(twin, family)
            result.add(f"connect{family} programs in run order", " then ".join(want), " then ".join(order) or "none",
                       order == want)  # fmt: skip
            if twin != HEALTHY:
                held, want_held = _old_maps(params["attach_cgroup"], family), _expected_old_maps(twin)
                result.add(
                    f"the old generation's connect{family} LB maps hold", want_held, held, held == want_held
                )
        cases = [(s, POD_V4[p], STALE_BACKEND, "10.96.0.10") for s, p in SERVICES.items()]
        cases += [(s, POD_V6[p], STALE_BACKEND6, "fd00:10:96::a") for s, p in SERVICES6.items()]
        for service, backend, stale, faulty in cases:
            broken = service == faulty and twin == INCIDENT
            probe = node.run(connect_dest.command(service, SERVICE_PORT, "1"), cgroup=cgroup, check=False)
            seen = json.loads(probe.stdout) if probe.ok else {"actual": probe.brief_error()}
            dest = stale if broken else backend
            expect = f"[{dest}]:{BACKEND_PORT}" if ":" in dest else f"{dest}:{BACKEND_PORT}"
            shown = f"[{service}]" if ":" in service else service
            result.add(f"connect() to {shown}:{SERVICE_PORT} goes to", expect, seen.get("actual", "?"),
                       seen.get("actual") == expect)  # fmt: skip
            _, web = reach.http(node, service, SERVICE_PORT, "/health", timeout=2, cgroup=cgroup)
            result.add(f"HTTP to {shown} from the cgroup", "fails" if broken else "answers", web.detail,
                       web.ok != broken)  # fmt: skip
        _, outside = reach.http(node, POD_V4["pod1"], BACKEND_PORT, "/health", timeout=2)
        result.add("the real backend pod answers directly", "answers", outside.detail, outside.ok)
        return result

    def teardown(self) -> None:
        names = _names()
        # Innermost first: a cgroup with children cannot be removed.
        for cgroup in (names["cgroup"], os.path.dirname(names["cgroup"]), names["attach"]):
            remove_cgroup(cgroup)
        host.run(["rm", "-rf", names["pins"]], check=False)


SCENARIO = StaleCgroupProg()
