"""Case 003: some service IPs unreachable — stale cgroup BPF programs and duplicate maps.

Cilium's socket load balancer rewrites a service address at ``connect()`` (cgroup
connect4 hook), before any packet exists, so tcpdump only ever shows the backend. When
an old copy of the program is still attached first (multi-attach runs programs in
attach order), it rewrites with its own, old map — a map with the same name as the one
the agent manages — and the current program then sees a pod address and does nothing.

Steps: inventory of cgroup programs per hook in run order and the maps they use;
duplicate maps by (15-character) name; the LB maps of every copy decoded and diffed;
what ``connect()`` will do, walked program by program and then tried for real; verdict.
Read-only: the only thing run on the node is a short-lived probe process that joins the
cgroup, starts one connection and exits.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import numpy as np
import pandas as pd

from netlab import mounts, params
from netlab.capability import Mechanism, Step, command
from netlab.collectors import bpf_objects
from netlab.decoders import decode_lb_backends, decode_lb_services, lb_service_table
from netlab.errors import NetlabError
from netlab.findings import HEALTHY, Findings
from netlab.investigations.base import LIKELY, NOTHING, WORTH_A_LOOK, Evidence, Investigation, Param, Signal
from netlab.probes import connect_dest
from netlab.targets import Target

VERDICT = "stale-cgroup-program"
SERVICE_MAPS = ("cilium_lb4_serv", "cilium_lb4_services")
# Rows of a table kept as evidence (a node holds tens of thousands of services).
MAX_KEPT = 2000
BACKEND_MAPS = ("cilium_lb4_back", "cilium_lb4_backends")

# The walk is computed from what the inventory and the map dumps already read.
WALK = Mechanism("program order from the cgroup tree, each copy's decoded maps", (bpf_objects.BPFTOOL_JSON,))
# One real connect(): connect_dest's source, run by the node's python3 inside the cgroup.
PYTHON3 = command("python3", ["python3", "--version"], "python3 is missing on the node")
REAL_CONNECT = Mechanism("a probe process (python3) joins the cgroup, connects once and exits",
                         (PYTHON3, mounts.CGROUP2))  # fmt: skip


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
    Each copy's backends of a frontend are summed as random 64-bit codes (one pass,
    no Python per group); two copies agree when count and sums agree."""
    codes = pd.factorize(frame["backend"].astype(str))[0]
    noise = np.random.default_rng(0).integers(1, 2**62, size=(max(codes.max() + 1, 1), 2), dtype=np.int64)
    keyed = frame[["frontend", "service_map_id"]].assign(h1=noise[codes, 0], h2=noise[codes, 1], n=1)
    sums = keyed.groupby(["frontend", "service_map_id"], sort=False)[["h1", "h2", "n"]].sum()
    variants = sums.reset_index().drop_duplicates(["frontend", "h1", "h2", "n"]).groupby("frontend").size()
    return frame["frontend"].map(variants > 1).fillna(False).astype(bool)


def parse_service(value: str, param: str = "service") -> tuple[str, int]:
    """``ADDRESS:PORT`` (IPv4) into its parts, validated.

    IPv6 services (``cilium_lb6_*`` maps, connect6 programs) are not walked yet, so an
    IPv6 address is refused rather than answered with a healthy verdict about lb4 maps."""
    text = str(value).strip()
    address, sep, port = text.rpartition(":")
    if not sep:
        raise NetlabError(f"parameter {param}: {value!r} is not ADDRESS:PORT")
    address = params.ip_address(address.strip("[]"), param)
    if ":" in address:
        raise NetlabError(f"parameter {param}: {value!r} is an IPv6 service; this investigation reads the IPv4 "
                          "socket-LB maps (cilium_lb4_*) only")  # fmt: skip
    return address, params.port(port, param)


def _service_param(value: Any, name: str) -> str:
    address, port = parse_service(value, name)
    return f"{address}:{port}"


class CgroupProgs(Investigation):
    name = "cgroup-progs"
    title = "cgroup BPF programs and map inventory: stale programs and duplicate maps"
    notebook = "cgroup-progs.ipynb"
    scenario = "stale-cgroup-prog"
    params = (
        Param("cgroup_root", str, "", "cgroup v2 directory to inventory (default: the whole hierarchy)",
              params.path, lab="cgroup"),
        Param("cgroup", str, "", "the affected pods' cgroup, for the real connect() probe",
              params.path, lab="cgroup"),
        Param("service", str, "", "the unreachable service, ADDRESS:PORT (default: every service)",
              _service_param, lab="service"),
    )  # fmt: skip
    steps = (
        Step("inventory", "inventory", (bpf_objects.LISTING,)),
        Step("duplicate_maps", "duplicate maps", (bpf_objects.LISTING,)),
        Step("lb_maps", "lb maps", (bpf_objects.MAP_DUMP,)),
        Step("connect_walk", "connect walk", (WALK,)),
        Step("real_connect", "real connect", (REAL_CONNECT,)),
    )

    def prepare(self) -> None:
        v = self.values
        for name in ("cgroup_root", "cgroup"):
            if v[name]:
                mounts.require_cgroup2_dir(self.target.host(), v[name], name)
        self.cgroup_root = v["cgroup_root"] or mounts.cgroup2(self.target.host())
        self.service = parse_service(v["service"]) if v["service"] else None
        self.cgroup = v["cgroup"]
        self._maps: pd.DataFrame | None = None
        self._progs: pd.DataFrame | None = None
        self._attached: pd.DataFrame | None = None
        self._tables: dict[int, pd.DataFrame] = {}
        self._decoded: dict[int, pd.DataFrame] = {}

    # --- step 1 ------------------------------------------------------------------
    def inventory(self) -> pd.DataFrame:
        """Every cgroup's BPF programs per hook in run order, with the maps they use."""
        if self.mechanism("inventory") is None:
            return pd.DataFrame()
        host = self.target.host()
        self._progs = bpf_objects.programs(host)
        self._maps = bpf_objects.maps(host)
        self._attached = bpf_objects.cgroup_attachments(host, self.cgroup_root)
        names = dict(zip(self._maps["map_id"], self._maps["name"], strict=False))
        frame = self._attached.merge(
            self._progs[["prog_id", "tag", "loaded_at", "map_ids", "pinned"]], on="prog_id", how="left"
        )
        frame["maps"] = frame["map_ids"].map(
            lambda ids: ", ".join(f"{i}:{names.get(i, '?')}" for i in ids or [])
        )
        frame["several_on_hook"] = frame["programs_on_hook"] > 1
        self.results["inventory"] = frame
        self.results["cgroup_root"] = self.cgroup_root
        shown = frame.drop(columns=["map_ids"])
        self.evidence("cgroup programs per hook, in run order", shown,
                      "position 1 runs first; several programs on one hook are marked")  # fmt: skip
        return shown

    # --- step 2 ------------------------------------------------------------------
    def duplicate_maps(self) -> pd.DataFrame:
        """Maps sharing a name: who uses each copy, which copy is pinned."""
        if self._maps is None:
            self.inventory()
        if self._maps is None or self._progs is None or self.mechanism("duplicate_maps") is None:
            return pd.DataFrame()
        users: dict[int, list[str]] = {}
        for _, p in self._progs.iterrows():
            for map_id in p["map_ids"]:
                users.setdefault(map_id, []).append(f"{p['prog_id']}:{p['name']}")
        maps = self._maps.copy()
        maps["used_by"] = maps["map_id"].map(lambda i: ", ".join(users.get(i, [])))
        maps["pinned_at"] = maps["pinned"].map(lambda p: ", ".join(p))
        agent = self._agent_maps()
        maps["reachable"] = [
            "agent-managed (pinned)" if map_id in agent
            else "pinned" + ("" if used else ", used by no program") if pinned
            else f"only through program {used}" if used else "orphan"
            for map_id, pinned, used in zip(maps["map_id"], maps["pinned"], maps["used_by"], strict=False)
        ]  # fmt: skip
        dup = maps[maps.duplicated("name", keep=False) & (maps["name"] != "")]
        dup = dup.sort_values(["name", "map_id"]).drop(columns=["pinned"])
        self.results["duplicate_maps"] = dup
        self.evidence("maps sharing a name", dup, "the kernel keeps 15 characters of a map name")
        return dup

    # --- step 3 ------------------------------------------------------------------
    def _lb_map(self, map_id: int) -> pd.DataFrame:
        """One LB map decoded, read once however many programs use it."""
        if map_id not in self._decoded:
            assert self._maps is not None
            row = self._maps.set_index("map_id").loc[map_id]
            data = bpf_objects.read(self.target, map_id, name=row["name"], key_size=int(row["key_size"]),
                                    value_size=int(row["value_size"]))  # fmt: skip
            decode = decode_lb_services if str(row["name"]).startswith(SERVICE_MAPS) else decode_lb_backends
            frame = decode(data)
            frame.attrs["mechanism"] = data.mechanism
            self._decoded[map_id] = frame
        return self._decoded[map_id]

    def _program_tables(self) -> dict[int, pd.DataFrame]:
        """prog id -> its service table (frontend -> slot -> backend), for programs that
        use a service map and a backend map (Cilium's connect and sendmsg programs). The
        family's others (post_bind: the service map alone; recvmsg, getpeername: the
        reverse NAT maps) rewrite no destination and get none."""
        if self._tables:
            return self._tables
        if self._maps is None:
            self.inventory()
        assert self._maps is not None and self._progs is not None
        names = dict(zip(self._maps["map_id"], self._maps["name"], strict=False))
        pairs: dict[tuple[int, int], pd.DataFrame] = {}
        for prog_id, map_ids in zip(self._progs["prog_id"], self._progs["map_ids"], strict=False):
            svc = [i for i in map_ids if str(names.get(i, "")).startswith(SERVICE_MAPS)]
            back = [i for i in map_ids if str(names.get(i, "")).startswith(BACKEND_MAPS)]
            if not svc or not back:
                continue
            pair = (svc[0], back[0])
            if pair not in pairs:
                table = lb_service_table(self._lb_map(svc[0]), self._lb_map(back[0]))
                table.insert(0, "service_map_id", svc[0])
                table.insert(1, "pinned_copy", svc[0] == self._agent_copy())
                table.attrs["layout"] = self._lb_map(svc[0]).attrs.get("layout", "")
                pairs[pair] = table
            self._tables[int(prog_id)] = pairs[pair]
        return self._tables

    def _agent_copy(self) -> int | None:
        """The service map the agent manages: pinned, non-empty, preferring Cilium's own
        pin directory (tc/globals) over side copies pinned elsewhere."""
        assert self._maps is not None
        lb = self._maps[self._maps["name"].str.startswith(SERVICE_MAPS)]
        ranked = sorted(
            (not any("/tc/globals/" in p for p in pins), int(map_id))
            for map_id, pins in zip(lb["map_id"], lb["pinned"], strict=False)
            if pins and len(self._lb_map(int(map_id)))
        )
        return ranked[0][1] if ranked else None

    def _agent_maps(self) -> set[int]:
        """The agent's service map and the backend maps its programs pair with it."""
        agent = self._agent_copy()
        if agent is None:
            return set()
        assert self._maps is not None and self._progs is not None
        names = dict(zip(self._maps["map_id"], self._maps["name"], strict=False))
        paired = {i for ids in self._progs["map_ids"] if agent in ids for i in ids
                  if str(names.get(i, "")).startswith(BACKEND_MAPS)}  # fmt: skip
        return {agent, *paired}

    def lb_maps(self) -> pd.DataFrame:
        """Every copy of the service and backend maps (used, pinned or both), each read
        once and decoded; empty copies labelled; where copies disagree."""
        if self.mechanism("lb_maps") is None:
            return pd.DataFrame()
        if self._maps is None:
            self.inventory()
        assert self._maps is not None
        copies = self._maps[self._maps["name"].str.startswith(SERVICE_MAPS + BACKEND_MAPS)].copy()
        if copies.empty:
            self.skipped("lb maps", "no Cilium lb4 service or backend map on the node")
            return pd.DataFrame()
        agent = self._agent_maps()
        copies["entries"] = [len(self._lb_map(int(i))) for i in copies["map_id"]]
        copies["layout"] = [self._lb_map(int(i)).attrs.get("layout", "") for i in copies["map_id"]]
        copies["copy"] = [
            "agent-managed (pinned)" if i in agent else
            ("empty copy" if not n else "pinned copy" if pins else "unpinned: reachable only through its programs")
            + (f", pinned at {', '.join(pins)}" if pins and i not in agent else "")
            for i, n, pins in zip(copies["map_id"], copies["entries"], copies["pinned"], strict=False)
        ]  # fmt: skip
        self.results["lb_copies"] = copies.drop(columns=["pinned"])
        self.evidence("LB map copies", self.results["lb_copies"][["map_id", "name", "max_entries", "entries", "layout",
                      "copy"]], "each read once; an empty copy is evidence, not an error")  # fmt: skip
        mechanisms = sorted({self._lb_map(int(i)).attrs["mechanism"] for i in copies["map_id"]})
        layouts = sorted(set(copies["layout"]))
        self.used(
            "lb maps", f"{', '.join(mechanisms)}; decoded with netlab's Cilium layouts ({', '.join(layouts)})"
        )
        tables = self._program_tables()
        self.results["lb_programs"] = len(tables)
        if not tables:
            return pd.DataFrame()
        unique = {id(t): t for t in tables.values()}
        frame = pd.concat(list(unique.values()), ignore_index=True)
        users: dict[int, list[int]] = {}
        for prog_id, table in tables.items():
            users.setdefault(int(table["service_map_id"].iloc[0]) if len(table) else -1, []).append(prog_id)
        frame["prog_ids"] = frame["service_map_id"].map(lambda i: ", ".join(map(str, users.get(int(i), []))))
        frame["copies_disagree"] = _copies_disagree(frame)
        # The evidence keeps what matters (where copies disagree), bounded; the whole
        # table is what this step returns.
        disagree = frame[frame["copies_disagree"]]
        self.results["lb_maps"] = disagree.head(MAX_KEPT)
        self.results["lb_rows"] = {"rows": len(frame), "disagreeing": len(disagree)}
        self.evidence("service -> backend where map copies disagree", disagree[["frontend", "backend_slot", "backend",
                      "service_map_id", "pinned_copy", "prog_ids"]],
                      f"{len(disagree):,} of {len(frame):,} service slots; every copy agrees on the rest")  # fmt: skip
        return frame

    # --- step 4 ------------------------------------------------------------------
    def connect_walk(self) -> pd.DataFrame:
        """For the service(s), what each connect4 program in run order rewrites them to,
        compared with the agent-managed map."""
        if self.mechanism("connect_walk") is None:
            return pd.DataFrame()
        tables = self._program_tables()
        attached = self.results.get("inventory")
        if attached is None:
            self.inventory()
            attached = self.results["inventory"]
        hooks = attached[attached["hook"] == "connect4"]
        # frontend -> the backends its slots point at, per table: one pass each, so the
        # walk over every service stays linear.
        index = {id(t): _backends_by_frontend(t) for t in tables.values()}
        agent = self._agent_copy()
        truth = next(
            (index[id(t)] for t in tables.values() if len(t) and t["service_map_id"].iloc[0] == agent), {}
        )
        services = [f"{self.service[0]}:{self.service[1]}"] if self.service else sorted(
            {f for lookup in index.values() for f in lookup})  # fmt: skip
        rows = []
        for cgroup, group in hooks.groupby("cgroup"):
            programs = [
                (int(p.prog_id), p.position, p.name, tables.get(int(p.prog_id)))
                for p in group.sort_values("position").itertuples()
            ]
            for service in services:
                dest, walked = service, []
                for prog_id, position, name, table in programs:
                    lookup = index[id(table)] if table is not None else {}
                    backends = lookup.get(dest, [])
                    walked.append({"cgroup": cgroup, "service": service, "position": position, "prog_id": prog_id,
                                   "name": name, "sees": dest,
                                   "rewrites_to": ", ".join(backends) or "(not a service here: unchanged)",
                                   "map_id": int(table["service_map_id"].iloc[0]) if backends and table is not None else None})  # fmt: skip
                    if len(backends) == 1:
                        dest = backends[0]
                expected = ", ".join(truth.get(service, []))
                for row in walked:
                    row.update(final=dest, pinned_map_says=expected,
                               differs_from_pinned=bool(expected) and dest not in truth.get(service, []))  # fmt: skip
                rows += walked
        frame = pd.DataFrame(rows)
        if len(frame):
            frame["map_id"] = frame["map_id"].astype("Int64")
        differing = frame[frame["differs_from_pinned"]] if len(frame) else frame
        # Evidence: every step of the services that end elsewhere than the agent's map
        # says (bounded), and how much was walked.
        self.results["walk"] = differing.head(MAX_KEPT)
        self.results["walk_summary"] = {
            "services": len(services), "steps": len(frame), "differing_services": int(differing["service"].nunique())
            if len(differing) else 0,
            "programs_per_cgroup": {str(c): int(n) for c, n in hooks.groupby("cgroup")["prog_id"].nunique().items()},
        }  # fmt: skip
        if len(frame):
            shown = differing if len(differing) else frame
            self.evidence("what connect() does, program by program", shown,
                          f"{len(services):,} services walked; {self.results['walk_summary']['differing_services']:,} "
                          "end elsewhere than the agent's map says" + ("" if len(differing) else " (all agree: the "
                          "first steps shown)"))  # fmt: skip
        return frame

    # --- step 5 ------------------------------------------------------------------
    def real_connect(self) -> pd.DataFrame:
        """One real connect() from the cgroup: where the kernel actually sends it."""
        walk = self.results.get("walk", pd.DataFrame())
        cgroup = self.cgroup or (str(walk["cgroup"].iloc[0]) if len(walk) else "")
        if not cgroup or not self.service:
            self.skipped("real connect", "needs parameters cgroup and service")
            return pd.DataFrame()
        if self.mechanism("real_connect") is None:
            return pd.DataFrame()
        code = inspect.getsource(connect_dest)
        address, port = self.service
        result = self.target.run(
            ["python3", "-c", code, address, str(port), "1"], cgroup=cgroup, check=False, timeout=15
        )
        if not result.ok:
            self.skipped("real connect", f"probe failed: {result.brief_error()}")
            return pd.DataFrame()
        seen = json.loads(result.stdout)
        self.used("real connect", f"a probe process (python3) joined {cgroup}, connected once and exited")
        self.results["actual"] = seen
        self.evidence("a real connect() from the cgroup", [seen],
                      "actual is the destination the kernel chose after every connect4 program ran")  # fmt: skip
        return pd.DataFrame([seen])

    # --- verdict -----------------------------------------------------------------
    @staticmethod
    def decide(evidence: Evidence) -> Findings:
        results = evidence.results
        if "walk" not in results:
            return evidence.inconclusive(["the connect walk did not run"])
        walk: pd.DataFrame = results["walk"]
        walked = results.get("walk_summary", {})
        copies = results.get("lb_copies", pd.DataFrame())
        if not walked.get("steps"):
            if not results.get("lb_programs"):
                return evidence.findings(
                    HEALTHY,
                    "No cgroup program uses a Cilium lb4 service map; nothing rewrites connect() here.",
                )
            return evidence.inconclusive(["no connect4 program is attached under " + results["cgroup_root"]])
        bad = walk[walk["differs_from_pinned"] & (walk["rewrites_to"] != "(not a service here: unchanged)")]
        agent = copies[copies["copy"].str.startswith("agent-managed")] if len(copies) else copies
        stale = bad[~bad["map_id"].isin(set(agent["map_id"].astype(int)) if len(agent) else set())]
        actual = results.get("actual", {})
        if stale.empty:
            summary = (f"Every connect4 program agrees with the agent-managed service map, for all "
                       f"{walked.get('services', 0):,} services walked.")  # fmt: skip
            if any(n > 1 for n in walked.get("programs_per_cgroup", {}).values()):
                summary += " Several programs share a hook, but their maps agree."
            return evidence.findings(HEALTHY, summary)
        first = stale.sort_values("position").iloc[0]
        dup = results.get("duplicate_maps")
        pair = ""
        if dup is not None and len(dup):
            same = (
                dup[dup["name"] == dup.loc[dup["map_id"] == first["map_id"], "name"].squeeze()]
                if (dup["map_id"] == first["map_id"]).any()
                else dup
            )
            pair = " and ".join(f"{r.map_id} ({r.reachable})" for r in same.itertuples())
        summary = (
            f"Program {first['prog_id']} ({first['name']}) runs at position {first['position']} of the "
            f"connect4 hook of {first['cgroup']} and rewrites {first['service']} to {first['rewrites_to']} from its own "
            f"map {first['map_id']}, while the pinned map says {first['pinned_map_says']}."
        )
        if pair:
            summary += f" Maps with the same name: {pair}."
        if actual.get("actual"):
            summary += f" A real connect() from the cgroup went to {actual['actual']}."
        remediation = [
            f"bpftool cgroup detach {first['cgroup']} connect4 id {first['prog_id']}",
            "if that fails (the program is held by a bpf_link of a process that is gone, or by a "
            "pinned link), drain the node and reboot it: nothing else detaches it",
        ]
        reasons = [f"stale program id {first['prog_id']} at position {first['position']}",
                   f"wrong backend {first['rewrites_to']}", f"expected {first['pinned_map_says']}"]  # fmt: skip
        return evidence.findings(VERDICT, summary, remediation=remediation, reasons=reasons)

    @staticmethod
    def triage(target: Target) -> Signal:
        """Quick look: several programs on one cgroup hook, and LB maps sharing a name."""
        host = target.host()
        attached = bpf_objects.cgroup_attachments(host, mounts.cgroup2(host))
        maps = bpf_objects.maps(host)
        lb = maps[maps["name"].str.startswith(SERVICE_MAPS)]
        crowded = attached[attached["programs_on_hook"] > 1]
        if len(lb) > 1 and len(crowded):
            return Signal("cgroup-progs", LIKELY, f"{len(lb)} copies of the LB service map and "
                          f"{crowded['prog_id'].nunique()} programs sharing a cgroup hook",
                          params={"cgroup": str(crowded["cgroup"].iloc[0])})  # fmt: skip
        if len(lb) > 1 or len(crowded):
            return Signal("cgroup-progs", WORTH_A_LOOK, "duplicate LB maps or several programs on one hook")
        return Signal("cgroup-progs", NOTHING, "one program per cgroup hook, no duplicate LB maps")
