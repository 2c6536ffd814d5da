"""Cilium's socket load balancer as a node holds it: which programs use which copies of the
LB maps, which copy the agent manages, and what ``connect()`` becomes program by program.

Pure: it works on one snapshot of the node's BPF objects (``bpftool`` tables of programs,
maps and cgroup attachments, and the LB maps already read and decoded), so the
investigation does the reading and this module the reasoning, and a property test can
try any combination of programs and maps without a kernel.

Cilium attaches a family of ``cgroup_sock_addr`` programs that share the LB maps (named
``sock4_connect``... in v1.11, ``cil_sock4_connect``... from v1.13). Only the connect and
sendmsg programs use a service map *and* a backend map and rewrite a destination; the
post_bind ones read the service map alone, recvmsg and getpeername the reverse NAT maps.
IPv4 services live in the ``cilium_lb4_*`` maps and are rewritten on the connect4 hook,
IPv6 ones in ``cilium_lb6_*`` on connect6; a connect6 program that also serves
IPv4-mapped addresses uses both families' maps, one service table for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from netlab.decoders import lb_service_table

SERVICE_MAPS = ("cilium_lb4_serv", "cilium_lb4_services", "cilium_lb6_serv", "cilium_lb6_services")
BACKEND_MAPS = ("cilium_lb4_back", "cilium_lb4_backends", "cilium_lb6_back", "cilium_lb6_backends")
# The hook on which each family's services are rewritten.
CONNECT = {4: "connect4", 6: "connect6"}
UNCHANGED = "(not a service here: unchanged)"


def is_service_map(name: object) -> bool:
    return str(name).startswith(SERVICE_MAPS)


def is_backend_map(name: object) -> bool:
    return str(name).startswith(BACKEND_MAPS)


def map_family(name: object) -> int:
    return 6 if str(name).startswith("cilium_lb6_") else 4


def service_family(service: str) -> int:
    """4 or 6 for a frontend as the decoders write it (``10.96.0.10:80``, ``[fd00::a]:80``)."""
    return 6 if service.startswith("[") else 4


@dataclass
class SocketLB:
    """One snapshot: ``progs`` (prog_id, name, loaded_at, map_ids), ``maps`` (map_id,
    name, pinned, ...) and ``decoded``: map id -> its decoded rows, for every LB map."""

    progs: pd.DataFrame
    maps: pd.DataFrame
    decoded: Mapping[int, pd.DataFrame]
    _tables: dict[tuple[int, int], pd.DataFrame] | None = field(default=None, repr=False)

    def _names(self) -> dict[int, str]:
        return {int(i): str(n) for i, n in zip(self.maps["map_id"], self.maps["name"], strict=False)}

    def agent_copy(self, family: int = 4) -> int | None:
        """The family's service map the agent manages: pinned, non-empty, Cilium's own pin
        directory (tc/globals) before side copies pinned elsewhere."""
        ranked = sorted(
            (not any("/tc/globals/" in p for p in pins), int(map_id))
            for map_id, name, pins in zip(self.maps["map_id"], self.maps["name"], self.maps["pinned"], strict=False)
            if is_service_map(name) and map_family(name) == family and pins and len(self.decoded.get(int(map_id), ()))
        )  # fmt: skip
        return ranked[0][1] if ranked else None

    def agent_maps(self) -> set[int]:
        """The agent's service maps and the backend maps its programs pair with them."""
        names, out = self._names(), set()
        for family in CONNECT:
            agent = self.agent_copy(family)
            if agent is None:
                continue
            out.add(agent)
            out |= {int(i) for ids in self.progs["map_ids"] if agent in ids for i in ids
                    if is_backend_map(names.get(int(i), "")) and map_family(names[int(i)]) == family}  # fmt: skip
        return out

    def tables(self) -> dict[tuple[int, int], pd.DataFrame]:
        """(prog id, family) -> its service table (frontend -> slot -> backend), for the
        programs that use a service map and a backend map of that family; one table per
        pair of maps."""
        if self._tables is not None:
            return self._tables
        names = self._names()
        agents = {family: self.agent_copy(family) for family in CONNECT}
        pairs: dict[tuple[int, int], pd.DataFrame] = {}
        self._tables = {}
        for prog_id, map_ids in zip(self.progs["prog_id"], self.progs["map_ids"], strict=False):
            for family in CONNECT:
                usable = [int(i) for i in map_ids if int(i) in self.decoded
                          and map_family(names.get(int(i), "")) == family]  # fmt: skip
                svc = [i for i in usable if is_service_map(names.get(i, ""))]
                back = [i for i in usable if is_backend_map(names.get(i, ""))]
                if not svc or not back:
                    continue
                pair = (svc[0], back[0])
                if pair not in pairs:
                    table = lb_service_table(self.decoded[svc[0]], self.decoded[back[0]])
                    table.insert(0, "service_map_id", svc[0])
                    table.insert(1, "pinned_copy", svc[0] == agents[family])
                    pairs[pair] = table
                self._tables[(int(prog_id), family)] = pairs[pair]
        return self._tables

    def copies(self) -> pd.DataFrame:
        """Every LB map with its entries, layout and what kind of copy it is."""
        mask = np.array([is_service_map(n) or is_backend_map(n) for n in self.maps["name"]], dtype=bool)
        lb = self.maps.loc[mask].copy()
        agent = self.agent_maps()
        lb["entries"] = [len(self.decoded.get(int(i), ())) for i in lb["map_id"]]
        lb["layout"] = [self._attr(int(i), "layout") for i in lb["map_id"]]
        lb["copy"] = [
            "agent-managed (pinned)" if i in agent else
            ("empty copy" if not n else "pinned copy" if pins else "unpinned: reachable only through its programs")
            + (f", pinned at {', '.join(pins)}" if pins and i not in agent else "")
            for i, n, pins in zip(lb["map_id"], lb["entries"], lb["pinned"], strict=False)
        ]  # fmt: skip
        return lb.drop(columns=["pinned"])

    def _attr(self, map_id: int, name: str) -> str:
        frame = self.decoded.get(map_id)
        return str(frame.attrs.get(name, "")) if frame is not None else ""

    def service_rows(self) -> pd.DataFrame:
        """Every service slot of every table, with the programs using it and whether
        the copies disagree about its frontend."""
        tables = self.tables()
        unique = {id(t): t for t in tables.values()}
        if not unique:
            return pd.DataFrame(columns=["frontend", "backend_slot", "backend", "service_map_id", "pinned_copy",
                                         "prog_ids", "copies_disagree"])  # fmt: skip
        frame = pd.concat(list(unique.values()), ignore_index=True)
        users: dict[int, list[int]] = {}
        for (prog_id, _), table in tables.items():
            users.setdefault(int(table["service_map_id"].iloc[0]) if len(table) else -1, []).append(prog_id)
        frame["prog_ids"] = frame["service_map_id"].map(lambda i: ", ".join(map(str, users.get(int(i), []))))
        frame["copies_disagree"] = _copies_disagree(frame) if len(frame) else pd.Series(dtype=bool)
        return frame

    def walk(self, effective: pd.DataFrame, attached: pd.DataFrame, services: list[str] | None,
             cgroup_root: str) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
        """Each service through the connect programs of its family (connect4, connect6) of
        each walked cgroup in run order (``effective``: cgroup, hook, position, prog_id,
        name), against the agent's map. Returns every step and a summary (counts, the
        programs of each cgroup and hook)."""
        tables = self.tables()
        loaded = {
            int(p): str(t) for p, t in zip(self.progs["prog_id"], self.progs["loaded_at"], strict=False)
        }
        # frontend -> the backends its slots point at, per table: one pass each, so the
        # walk over every service stays linear.
        index = {id(t): _backends_by_frontend(t) for t in tables.values()}
        if services is None:
            services = sorted({f for lookup in index.values() for f in lookup})
        rows: list[dict[str, Any]] = []
        order: list[dict[str, Any]] = []
        for family, hook in CONNECT.items():
            wanted = [s for s in services if service_family(s) == family]
            if not wanted:
                continue
            where = {int(p): str(c) for p, h, c in zip(attached["prog_id"], attached["hook"], attached["cgroup"],
                                                        strict=False) if h == hook}  # fmt: skip
            agent = self.agent_copy(family)
            truth = next((index[id(t)] for (_, f), t in tables.items()
                          if f == family and len(t) and t["service_map_id"].iloc[0] == agent), {})  # fmt: skip
            for cgroup, group in effective[effective["hook"] == hook].groupby("cgroup"):
                programs: list[dict[str, Any]] = []
                for p in group.sort_values("position").itertuples():
                    table = tables.get((int(p.prog_id), family))
                    map_id = (
                        int(table["service_map_id"].iloc[0]) if table is not None and len(table) else None
                    )
                    programs.append({"prog_id": int(p.prog_id), "position": int(p.position), "name": str(p.name),
                                     "attached_at": where.get(int(p.prog_id), f"above {cgroup_root}"),
                                     "loaded_at": loaded.get(int(p.prog_id), ""), "map_id": map_id,
                                     "agent_map": map_id is not None and map_id == agent,
                                     "lookup": index[id(table)] if table is not None else {}})  # fmt: skip
                order.append({"cgroup": str(cgroup), "hook": hook, "programs": programs})
                for service in wanted:
                    rows += _steps(service, str(cgroup), hook, programs, truth.get(service, []))
        frame = pd.DataFrame(rows)
        if len(frame):
            frame["map_id"] = frame["map_id"].astype("Int64")
        differing = int(frame.loc[frame["differs_from_pinned"], "service"].nunique()) if len(frame) else 0
        summary = {
            "services": len(services), "steps": len(frame), "differing_services": differing,
            "hooks": [{"cgroup": o["cgroup"], "hook": o["hook"],
                       "programs": [{k: v for k, v in p.items() if k != "lookup"} for p in o["programs"]]}
                      for o in order],
        }  # fmt: skip
        return frame, summary


def _steps(service: str, cgroup: str, hook: str, programs: list[dict[str, Any]],
           expected: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """One service through one cgroup's programs on one hook: what each sees and
    rewrites it to, and where it ends against what the agent's map says."""
    dest, steps = service, []
    for prog in programs:
        backends = prog["lookup"].get(dest, [])
        steps.append({"cgroup": cgroup, "hook": hook, "service": service, "position": prog["position"],
                      "prog_id": prog["prog_id"], "name": prog["name"], "attached_at": prog["attached_at"],
                      "loaded_at": prog["loaded_at"], "sees": dest, "rewrites_to": ", ".join(backends) or UNCHANGED,
                      "map_id": prog["map_id"] if backends else None})  # fmt: skip
        if len(backends) == 1:
            dest = backends[0]
    for row in steps:
        row.update(final=dest, pinned_map_says=", ".join(expected),
                   differs_from_pinned=bool(expected) and dest not in expected)  # fmt: skip
    return steps


def _backends_by_frontend(table: pd.DataFrame) -> dict[str, list[str]]:
    """frontend -> the backends of its slots in the count (what the datapath picks from)."""
    live = table[table["in_count"].fillna(False).astype(bool) & table["backend"].notna()]
    live = live.sort_values(["frontend", "backend_slot"], kind="stable")
    fronts, backends = live["frontend"].to_numpy(dtype=object), live["backend"].to_numpy(dtype=object)
    if not len(fronts):
        return {}
    cuts = np.flatnonzero(fronts[1:] != fronts[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    return {str(f): list(map(str, b)) for f, b in zip(fronts[starts], np.split(backends, cuts), strict=True)}


def _copies_disagree(frame: pd.DataFrame) -> pd.Series:
    """Per row: do the map copies holding its frontend point it at different backends?
    Each copy's backends of a frontend are summed as random 64-bit codes (one pass, no
    Python per group); two copies agree when count and sums agree."""
    codes = pd.factorize(frame["backend"].astype(str))[0]
    noise = np.random.default_rng(0).integers(
        1, 2**62, size=(max(int(codes.max()) + 1, 1), 2), dtype=np.int64
    )
    keyed = frame[["frontend", "service_map_id"]].assign(h1=noise[codes, 0], h2=noise[codes, 1], n=1)
    sums = keyed.groupby(["frontend", "service_map_id"], sort=False)[["h1", "h2", "n"]].sum()
    variants = sums.reset_index().drop_duplicates(["frontend", "h1", "h2", "n"]).groupby("frontend").size()
    return frame["frontend"].map(variants > 1).fillna(False).astype(bool)
