"""Running BPF iterators: pin, read, unpin.

``bpftool iter pin OBJ PIN`` loads the iterator program, creates its link and pins it;
reading the pin runs the program once over the kernel objects (TCP sockets, tasks...)
and returns what it printed. The pin is named ``nlab_iter_<pid>`` and removed in all
cases, which frees the program and link; an orphan sweep removes pins of dead pids.
Reading happens inside the target's network namespace, because the TCP iterator walks
the sockets of the namespace of the process that opens it.
"""

from __future__ import annotations

from netlab import mounts, naming
from netlab.capability import Check, Node, capability
from netlab.collectors.bpf_objects import BPFTOOL
from netlab.errors import NetlabError
from netlab.probes import bpf_build
from netlab.targets import Target


def run(
    source: str,
    target: Target,
    *,
    timeout: float = 30,
    defines: dict[str, str] | None = None,
    map_id: int | None = None,
) -> str:
    """Build ``source`` (a ``netlab/probes/bpf`` file) for the node's kernel, run it once
    on the node, return its output. ``map_id`` is the map a map-element iterator
    (``iter/sockmap``, ``iter/bpf_map_elem``) walks."""
    host = target.host()
    obj = bpf_build.build(source, host, defines=defines)
    base = mounts.bpffs(host)
    pin = f"{base}/{naming.probe_name('iter')}"
    host.run(["rm", "-f", pin])
    placed = bpf_build.place(obj, host)
    try:
        over = ["map", "id", str(int(map_id))] if map_id is not None else []
        host.run(["bpftool", "iter", "pin", placed, pin, *over], timeout=timeout)
        return target.run(["cat", pin], timeout=timeout).stdout
    finally:
        host.run(["rm", "-f", pin, *([placed] if placed != obj else [])], check=False)


@capability("bpf_iter", requires=[bpf_build.BTF_FILE, BPFTOOL, bpf_build.CLANG])
def BPF_ITER(target: Target, node: Node) -> Check:
    """Build and run the smallest iterator (one line per task)."""
    try:
        out = run("iter_probe.bpf.c", target)
    except NetlabError as exc:
        return Check("bpf_iter", False, f"iterator failed: {exc.message}")
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        return Check("bpf_iter", False, "the iterator printed nothing")
    return Check("bpf_iter", True, f"built a CO-RE task iterator and ran it ({len(lines)} tasks seen)")


def orphan_pins(target: Target) -> list[str]:
    base = mounts.BPFFS
    listing = target.run(["ls", "-1", base], check=False).stdout.split()
    return [
        f"{base}/{name}"
        for name in listing
        if naming.owned(name)
        and (owner := naming.probe_owner(name)) is not None
        and not naming.pid_alive(owner)
    ]
