"""The lab: each of the four incidents reproduced for real in network namespaces.

``netlab lab list | up NAME [--healthy | --twin TWIN] | verify NAME | status | down [NAME | --all]``
(``netlab lab guest up | status | down`` for the second node, :mod:`netlab.lab.guest`),
or from Python::

    from netlab import lab
    with lab.running("stuck-tcp") as params:
        ...

``up`` builds the incident, or with ``--healthy`` its healthy twin, or another twin the
scenario declares (``--twin rollout`` for stale-cgroup-prog; ``lab list`` names them). It
saves the scenario's parameters, the twin among them, in ``/run/netlab``
(``$NETLAB_STATE``), so ``netlab run INVESTIGATION --lab NAME`` and notebooks pick them
up; the lab stays up across processes until ``down``.

Every command takes ``--target ssh://NODE`` (every function ``target=``): the lab is
then built on that node, by netlab's own code shipped there for it (:mod:`netlab.ship`),
and ``netlab run ... --target ssh://NODE --lab NAME`` reads its parameters there. Everything it makes is named with netlab's prefix,
which is how ``down --all`` cleans up after a crashed or killed ``up``; it stops the
guest node too.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from netlab import naming, ship
from netlab.errors import NetlabError
from netlab.lab import guest
from netlab.lab.scenario import HEALTHY, INCIDENT, Scenario, Twin, VerifyResult
from netlab.lab.topology import destroy_namespaces, kill_netns_processes, netns_exists, owned_namespaces
from netlab.targets import Target, open_target

__all__ = [
    "SCENARIOS",
    "Scenario",
    "Twin",
    "VerifyResult",
    "down",
    "load_params",
    "node_target",
    "reproduction",
    "running",
    "status",
    "up",
    "verify",
]


def _registry() -> dict[str, Scenario]:
    from netlab.lab import scenarios

    return {s.name: s for s in scenarios.ALL}


SCENARIOS = _registry


def scenario(name: str) -> Scenario:
    found = _registry().get(name)
    if not found:
        raise NetlabError(f"no lab scenario {name!r}", f"choose one of: {', '.join(_registry())}")
    return found


def state_dir() -> str:
    return os.environ.get("NETLAB_STATE", f"/run/netlab/{naming.PREFIX}")


def _state_path(name: str) -> str:
    return os.path.join(state_dir(), f"lab-{name}.json")


# How long a lab command may take on a node: an emulated guest compiles BPF slowly.
NODE_TIMEOUT = 600.0


def _remote(target: str | Target | None) -> Target | None:
    """The remote machine ``target`` names, or None for this one."""
    if target is None:
        return None
    host = open_target(target).host()
    return None if host.is_local else host


def _on_node(node: Target, *argv: str) -> str:
    return ship.run(node, ["lab", *argv], timeout=NODE_TIMEOUT).stdout


def load_params(name: str, target: str | Target | None = None) -> dict[str, Any]:
    """The parameters saved by ``up`` (raises if the scenario is not up)."""
    scenario(name)
    node = _remote(target)
    if node is not None:
        text = node.try_read_text(f"{ship.NODE_DIR}/lab-{name}.json")
        if text is None:
            raise NetlabError(f"lab scenario {name!r} is not up on {node.url}",
                              f"run `netlab lab up {name} --target {node.url}` first")  # fmt: skip
        return json.loads(text)
    try:
        with open(_state_path(name)) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise NetlabError(f"lab scenario {name!r} is not up", f"run `netlab lab up {name}` first") from None


def node_target(name: str, target: str | Target) -> tuple[Target, dict[str, Any]]:
    """Where a run against lab ``name`` looks, and the lab's parameters: the lab's node
    namespace on ``target``'s machine, unless ``target`` already names a namespace."""
    tgt = open_target(target)
    params = load_params(name, tgt)
    if tgt.host().url == tgt.url:
        tgt = tgt.netns(params["node_netns"])
    return tgt, params


def up(
    name: str, *, healthy: bool = False, twin: str = "", target: str | Target | None = None
) -> dict[str, Any]:
    """Bring scenario ``name`` up as ``twin`` (idempotent) and return its parameters: the
    incident by default, ``healthy=True`` for the healthy twin, ``twin`` any twin the
    scenario declares."""
    scn = scenario(name)
    if healthy and twin not in ("", HEALTHY.name):
        raise NetlabError(f"lab up {name}: healthy and twin {twin!r} both given", "choose one")
    chosen = scn.twin(twin or (HEALTHY if healthy else INCIDENT).name)
    node = _remote(target)
    if node is not None:
        _on_node(node, "up", name, "--twin", chosen.name)
        return load_params(name, node)
    with contextlib.suppress(NetlabError):
        current = load_params(name)
        # Reuse only what is really there: a state file can outlive its lab (a reboot of
        # the namespaces, a partial ``down``, another test's leftovers).
        if _saved_twin(scn, current) == chosen and _intact(scn, current):
            return current
        down(name)  # another twin, or a damaged one, is up: replace it
    topo = scn.topology()
    try:
        topo.build()
        ready = topo.wait_ready()
        params = {
            "scenario": scn.name,
            "investigation": scn.investigation,
            "twin": chosen.name,
            "healthy": chosen.healthy,
            **topo.params(),
            **scn.build(topo, chosen),
            "ready_seconds": ready,
        }
        missing = scn.took_effect(params, chosen)
        if missing:
            what = "fault" if chosen == INCIDENT else chosen.label
            raise NetlabError(f"lab {name}: the {what} did not take effect: {'; '.join(missing)}",
                              "run `netlab lab down --all` and try again; if it persists, report it")  # fmt: skip
    except BaseException:
        # A half-built lab is worse than none.
        _teardown(scn)
        raise
    os.makedirs(state_dir(), exist_ok=True)
    with open(_state_path(name), "w") as handle:
        json.dump(params, handle, indent=2)
    return params


def _saved_twin(scn: Scenario, params: dict[str, Any]) -> Twin:
    """The twin a lab's saved parameters were built as."""
    # A state file written before twins had names says only whether it is healthy.
    return scn.twin(params.get("twin") or (HEALTHY if params.get("healthy") else INCIDENT).name)


def _intact(scn: Scenario, params: dict[str, Any]) -> bool:
    if not all(map(netns_exists, scn.topology().namespaces())):
        return False
    return not scn.took_effect(params, _saved_twin(scn, params))


def reproduction(name: str, target: str | Target | None = None) -> Callable[[], Any]:
    """Scenario ``name``'s reproduction with its saved parameters, to run in a window
    (on the node the lab was built on)."""
    node = _remote(target)
    if node is not None:
        load_params(name, node)  # fail now, not in the window, when the lab is not up there
        return lambda: json.loads(_on_node(node, "reproduce", name) or "null")
    scn, params = scenario(name), load_params(name)
    return lambda: scn.reproduce(params)


def verify(name: str, target: str | Target | None = None) -> VerifyResult:
    node = _remote(target)
    if node is not None:
        data = json.loads(_on_node(node, "verify", name, "--json"))
        result = VerifyResult(data["scenario"], scenario(data["scenario"]).twin(data["twin"]))
        for check in data["checks"]:
            result.add(check["check"], check["expected"], check["observed"], check["ok"])
        return result
    scn, params = scenario(name), load_params(name)
    return scn.verify(params, _saved_twin(scn, params))


def _teardown(scn: Scenario) -> None:
    # Processes first: sockets they hold can keep BPF programs and maps alive.
    for name in scn.topology().namespaces():
        kill_netns_processes(name)
    scn.teardown()
    destroy_namespaces(scn.topology().namespaces())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_state_path(scn.name))


def down(name: str | None = None, *, all: bool = False, target: str | Target | None = None) -> list[str]:
    """Tear down one scenario, or with ``all`` every scenario, any namespace with
    netlab's prefix (state file or not) and the guest node. Returns what was removed.
    On a remote node, ``all`` also removes netlab's shipped code there."""
    node = _remote(target)
    if node is not None:
        if not node.exists(ship.APP):
            if not all:
                return []
            # Nothing of netlab's code there: nothing it could have built either, except
            # namespaces by name (a lab whose code was removed by hand).
            stray = [
                n for n in node.run(["ls", "-1", "/run/netns"], check=False).stdout.split() if naming.owned(n)
            ]
            for n in stray:
                node.run(["ip", "netns", "delete", n], check=False)
            return stray
        out = _on_node(
            node,
            "down",
            *([name] if name and not all else []),
            *(["--all"] if all or not name else []),
            "--json",
        )
        gone = list(json.loads(out)["removed"])
        return gone + (ship.remove(node) if all or not name else [])
    removed: list[str] = []
    targets = list(_registry().values()) if all or name is None else [scenario(name)]
    for scn in targets:
        before = [n for n in scn.topology().namespaces() if os.path.exists(f"/run/netns/{n}")]
        _teardown(scn)
        removed += before
    if all:
        stray = owned_namespaces()
        destroy_namespaces(stray)
        removed += stray
        removed += guest.down()
    return removed


def status(target: str | Target | None = None) -> list[dict[str, Any]]:
    node = _remote(target)
    if node is not None:
        if not node.exists(ship.APP):
            return [{"scenario": s.name, "state": "down", "investigation": s.investigation,
                     "about": s.description.split("\n")[0]} for s in _registry().values()]  # fmt: skip
        return json.loads(_on_node(node, "status", "--json"))
    rows = []
    for scn in _registry().values():
        try:
            state = f"up ({_saved_twin(scn, load_params(scn.name)).label})"
        except NetlabError:
            live = [n for n in scn.topology().namespaces() if os.path.exists(f"/run/netns/{n}")]
            state = "leftovers: run `netlab lab down --all`" if live else "down"
        rows.append(
            {
                "scenario": scn.name,
                "state": state,
                "investigation": scn.investigation,
                "about": scn.description.split("\n")[0],
            }
        )
    return rows


@contextlib.contextmanager
def running(
    name: str, *, healthy: bool = False, twin: str = "", keep: bool = False
) -> Iterator[dict[str, Any]]:
    """Bring ``name`` up (as :func:`up` does) for the ``with`` block and down afterwards
    (unless ``keep``)."""
    params = up(name, healthy=healthy, twin=twin)
    try:
        yield params
    finally:
        if not keep:
            down(name)
