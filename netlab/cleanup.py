"""Finding and removing what netlab left behind, by name.

Probes remove themselves in ``finally`` blocks; this sweep handles what survives a
``kill -9`` of their process (a restarted or killed Jupyter kernel): tracefs instances,
iterator pins and CO-RE objects copied to a node, named ``<prefix>_<kind>_<pid>``, whose
pid is dead. With
``everything`` it also removes live ones and tears the lab down. :func:`leftovers`
lists, by name, everything of netlab's still on a node: what tests assert empty after
each scenario and at the end of the suite.
"""

from __future__ import annotations

import json
import shutil

from netlab import mounts, naming, ship
from netlab.errors import NetlabError
from netlab.probes import bpf_iter, tracefs
from netlab.targets import LocalTarget, Target


def sweep_orphans(target: Target | None = None, *, everything: bool = False) -> list[str]:
    """Remove leftovers of dead netlab processes (all of them with ``everything``)."""
    target = (target or LocalTarget()).host()
    removed: list[str] = []
    instances = tracefs.orphan_instances(target)
    pins = bpf_iter.orphan_pins(target)
    if everything:
        instances = _all_owned(target, "instances")
        pins = [p for p in _list(target, mounts.BPFFS) if naming.probe_owner(p.rsplit("/", 1)[-1])]
    for path in instances:
        try:
            tracefs.remove_instance(target, path)
            removed.append(path)
        except NetlabError:
            pass
    # CO-RE objects copied to a remote node for one run (bpf_build.place).
    for obj in _list(target, "/tmp"):
        owner = naming.probe_owner("_".join(obj.rsplit("/", 1)[-1].split("_")[:3]))
        if "_obj_" in obj and (everything or owner is None or not naming.pid_alive(owner)):
            pins.append(obj)
    for pin in pins:
        if target.run(["rm", "-f", pin], check=False).ok:
            removed.append(pin)
    if isinstance(target, LocalTarget):
        removed += _kernel_runtime_orphans(everything)
    return removed


def _kernel_runtime_orphans(everything: bool) -> list[str]:
    """Private notebook-kernel directories (connection file with its key, IPC sockets)
    of runs that were killed before they could remove them."""
    base, removed = naming.runtime_base(), []
    for entry in base.glob(f"{naming.PREFIX}_kernel_*-*") if base.is_dir() else []:
        owner = naming.probe_owner(entry.name.split("-", 1)[0])
        if owner is not None and (everything or not naming.pid_alive(owner)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    return removed


def _list(target: Target, directory: str) -> list[str]:
    out = target.run(["ls", "-1", directory], check=False).stdout.split()
    return [f"{directory}/{n}" for n in out if naming.owned(n)]


def _all_owned(target: Target, sub: str) -> list[str]:
    try:
        base = mounts.tracefs(target, mount=False)
    except NetlabError:
        return []
    return _list(target, f"{base}/{sub}")


def leftovers(target: Target | None = None) -> list[str]:
    """Everything on the node named with netlab's prefix, live or orphaned: network
    namespaces, BPF programs and pins, CO-RE object copies, cgroups, tracefs instances, lab
    processes and private notebook-kernel directories."""
    host = (target or LocalTarget()).host()
    found = [f"netns {n.rsplit('/', 1)[-1]}" for n in _list(host, "/run/netns")]
    progs = host.run(["bpftool", "-j", "prog", "show"], check=False)
    if progs.ok:
        found += [f"prog {x['id']} {x.get('name')}" for x in json.loads(progs.stdout or "[]")
                  if naming.owned(x.get("name", ""))]  # fmt: skip
    pins = host.run(["find", mounts.BPFFS, "-name", f"{naming.PREFIX}*"], check=False).stdout.split()
    found += [f"pin {p}" for p in pins]
    # A lab map pinned where the real artifact pins it too (Cilium's tc/globals path):
    # netlab's, because the same map is pinned under netlab's name.
    maps = host.run(["bpftool", "-j", "-f", "map", "show"], check=False)
    for m in json.loads(maps.stdout or "[]") if maps.ok else []:
        paths = m.get("pinned") or []
        ours = [p for p in paths if any(naming.owned(part) for part in p.split("/"))]
        if ours:
            found += [f"pin {p} (map {m['id']}, also pinned at {ours[0]})" for p in paths if p not in ours]
    found += [f"object {o}" for o in _list(host, "/tmp") if "_obj_" in o]
    for base in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        found += [f"cgroup {c}" for c in _list(host, base)]
    found += [f"tracefs {i}" for i in _all_owned(host, "instances")]
    for pid in host.run(["pgrep", "-f", r"python.* -m netlab\.lab\.[a-z]"], check=False).stdout.split():
        netns = host.run(["ip", "netns", "identify", pid], check=False).stdout.strip()
        # Lab processes of a parallel run with another prefix are not ours.
        if not netns or naming.owned(netns):
            found.append(f"process {pid} (netns {netns or 'none'})")
    # The guest node's emulator, named on its command line (netlab.lab.guest). It runs
    # beside netlab, never on a node (where the `timeout` wrapper would match itself).
    if host.is_local:
        guest = host.run(["pgrep", "-f", f"process={naming.PREFIX}_guest"], check=False).stdout.split()
        found += [f"guest node process {pid}" for pid in guest]
    if not host.is_local and host.exists(ship.APP):
        found.append(f"shipped code {ship.APP}")
    runtime = naming.runtime_base()
    if isinstance(host, LocalTarget) and runtime.is_dir():
        found += [f"runtime {e}" for e in runtime.glob(f"{naming.PREFIX}_kernel_*")]
    return found


def sweep_everything(target: Target | None = None) -> list[str]:
    """``netlab cleanup --all``: every probe object and every lab scenario (on ``target``:
    with them netlab's code shipped there for the lab)."""
    from netlab import lab

    removed = sweep_orphans(target, everything=True)
    removed += lab.down(all=True, target=target)
    return removed
