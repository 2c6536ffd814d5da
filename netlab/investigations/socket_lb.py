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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from netlab.decoders import lb_service_table

SERVICE_MAPS = ("cilium_lb4_serv", "cilium_lb4_services")
BACKEND_MAPS = ("cilium_lb4_back", "cilium_lb4_backends")
UNCHANGED = "(not a service here: unchanged)"


def is_service_map(name: object) -> bool:
    return str(name).startswith(SERVICE_MAPS)


def is_backend_map(name: object) -> bool:
    return str(name).startswith(BACKEND_MAPS)


@dataclass
class SocketLB:
    """One snapshot: ``progs`` (prog_id, name, loaded_at, map_ids), ``maps`` (map_id,
    name, pinned, ...) and ``decoded``: map id -> its decoded rows, for every LB map."""

    progs: pd.DataFrame
    maps: pd.DataFrame
    decoded: Mapping[int, pd.DataFrame]
    _tables: dict[int, pd.DataFrame] | None = field(default=None, repr=False)

    def _names(self) -> dict[int, str]:
        return {int(i): str(n) for i, n in zip(self.maps["map_id"], self.maps["name"], strict=False)}

    def agent_copy(self) -> int | None:
        """The service map the agent manages: pinned, non-empty, Cilium's own pin
        directory (tc/globals) before side copies pinned elsewhere."""
        ranked = sorted(
            (not any("/tc/globals/" in p for p in pins), int(map_id))
            for map_id, name, pins in zip(self.maps["map_id"], self.maps["name"], self.maps["pinned"], strict=False)
            if is_service_map(name) and pins and len(self.decoded.get(int(map_id), ()))
        )  # fmt: skip
        return ranked[0][1] if ranked else None

    def agent_maps(self) -> set[int]:
        """The agent's service map and the backend maps its programs pair with it."""
        agent = self.agent_copy()
        if agent is None:
            return set()
        names = self._names()
        paired = {int(i) for ids in self.progs["map_ids"] if agent in ids for i in ids
                  if is_backend_map(names.get(int(i), ""))}  # fmt: skip
        return {agent, *paired}

    def tables(self) -> dict[int, pd.DataFrame]:
        """prog id -> its service table (frontend -> slot -> backend), for the programs
        that use a service map and a backend map; one table per pair of maps."""
        if self._tables is not None:
            return self._tables
        names, agent = self._names(), self.agent_copy()
        pairs: dict[tuple[int, int], pd.DataFrame] = {}
        self._tables = {}
        for prog_id, map_ids in zip(self.progs["prog_id"], self.progs["map_ids"], strict=False):
            svc = [
                int(i) for i in map_ids if is_service_map(names.get(int(i), "")) and int(i) in self.decoded
            ]
            back = [
                int(i) for i in map_ids if is_backend_map(names.get(int(i), "")) and int(i) in self.decoded
            ]
            if not svc or not back:
                continue
            pair = (svc[0], back[0])
            if pair not in pairs:
                table = lb_service_table(self.decoded[svc[0]], self.decoded[back[0]])
                table.insert(0, "service_map_id", svc[0])
                table.insert(1, "pinned_copy", svc[0] == agent)
                pairs[pair] = table
            self._tables[int(prog_id)] = pairs[pair]
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
        for prog_id, table in tables.items():
            users.setdefault(int(table["service_map_id"].iloc[0]) if len(table) else -1, []).append(prog_id)
        frame["prog_ids"] = frame["service_map_id"].map(lambda i: ", ".join(map(str, users.get(int(i), []))))
        frame["copies_disagree"] = _copies_disagree(frame) if len(frame) else pd.Series(dtype=bool)
        return frame

    def walk(self, effective: pd.DataFrame, attached: pd.DataFrame, services: list[str] | None,
             cgroup_root: str) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
        """Each service through the connect4 programs of each walked cgroup in run order
        (``effective``: cgroup, hook, position, prog_id, name), against the agent's map.
        Returns every step and a summary (counts, the programs of each cgroup)."""
        tables = self.tables()
        hooks = effective[effective["hook"] == "connect4"]
        where = {int(p): str(c) for p, h, c in zip(attached["prog_id"], attached["hook"], attached["cgroup"],
                                                    strict=False) if h == "connect4"}  # fmt: skip
        loaded = {
            int(p): str(t) for p, t in zip(self.progs["prog_id"], self.progs["loaded_at"], strict=False)
        }
        # frontend -> the backends its slots point at, per table: one pass each, so the
        # walk over every service stays linear.
        index = {id(t): _backends_by_frontend(t) for t in tables.values()}
        agent = self.agent_copy()
        truth = next(
            (index[id(t)] for t in tables.values() if len(t) and t["service_map_id"].iloc[0] == agent), {}
        )
        if services is None:
            services = sorted({f for lookup in index.values() for f in lookup})
        rows: list[dict[str, Any]] = []
        order: dict[str, list[dict[str, Any]]] = {}
        for cgroup, group in hooks.groupby("cgroup"):
            programs: list[dict[str, Any]] = []
            for p in group.sort_values("position").itertuples():
                table = tables.get(int(p.prog_id))
                map_id = int(table["service_map_id"].iloc[0]) if table is not None and len(table) else None
                programs.append({"prog_id": int(p.prog_id), "position": int(p.position), "name": str(p.name),
                                 "attached_at": where.get(int(p.prog_id), f"above {cgroup_root}"),
                                 "loaded_at": loaded.get(int(p.prog_id), ""), "map_id": map_id,
                                 "agent_map": map_id is not None and map_id == agent,
                                 "lookup": index[id(table)] if table is not None else {}})  # fmt: skip
            order[str(cgroup)] = programs
            for service in services:
                dest, steps = service, []
                for prog in programs:
                    lookup: dict[str, list[str]] = prog["lookup"]
                    backends = lookup.get(dest, [])
                    steps.append({"cgroup": cgroup, "service": service, "position": prog["position"],
                                  "prog_id": prog["prog_id"], "name": prog["name"],
                                  "attached_at": prog["attached_at"], "loaded_at": prog["loaded_at"], "sees": dest,
                                  "rewrites_to": ", ".join(backends) or UNCHANGED,
                                  "map_id": prog["map_id"] if backends else None})  # fmt: skip
                    if len(backends) == 1:
                        dest = backends[0]
                expected = truth.get(service, [])
                for row in steps:
                    row.update(final=dest, pinned_map_says=", ".join(expected),
                               differs_from_pinned=bool(expected) and dest not in expected)  # fmt: skip
                rows += steps
        frame = pd.DataFrame(rows)
        if len(frame):
            frame["map_id"] = frame["map_id"].astype("Int64")
        differing = int(frame.loc[frame["differs_from_pinned"], "service"].nunique()) if len(frame) else 0
        summary = {
            "services": len(services), "steps": len(frame), "differing_services": differing,
            "programs_per_cgroup": {c: len(p) for c, p in order.items()},
            "programs": {c: [{k: v for k, v in p.items() if k != "lookup"} for p in progs] for c, progs in order.items()},
        }  # fmt: skip
        return frame, summary


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
