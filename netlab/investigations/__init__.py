"""The investigations, one class per incident (see :mod:`netlab.investigations.base` for
the contract each keeps).

``REGISTRY`` maps the name used by ``netlab run NAME`` to its class; :func:`get` is the
one lookup, with the error a user sees for a wrong name.
"""

from __future__ import annotations

from typing import Any

from netlab.errors import NetlabError
from netlab.findings import Findings
from netlab.investigations.base import Investigation
from netlab.investigations.cgroup_progs import CgroupProgs
from netlab.investigations.packet_drops import PacketDrops
from netlab.investigations.route_cache import RouteCache
from netlab.investigations.stuck_tcp import StuckTcp

REGISTRY: dict[str, type[Investigation]] = {
    cls.name: cls for cls in (StuckTcp, PacketDrops, RouteCache, CgroupProgs)
}


def get(name: str) -> type[Investigation]:
    found = REGISTRY.get(name)
    if found is None:
        raise NetlabError(f"no investigation {name!r}", f"choose one of: {', '.join(REGISTRY)}")
    return found


def investigate(name: str, target: str = "local", lab: str = "", **params: Any) -> Findings:
    """Run investigation ``name`` from start to verdict (what its notebook does, cell by cell)."""
    return get(name).start(target, lab, **params).run()
