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
BACKEND_MAPS = ("cilium_lb4_back", "cilium_lb4_backends")

# The walk is computed from what the inventory and the map dumps already read.
WALK = Mechanism("program order from the cgroup tree, each copy's decoded maps", (bpf_objects.BPFTOOL_JSON,))
# One real connect(): connect_dest's source, run by the node's python3 inside the cgroup.
PYTHON3 = command("python3", ["python3", "--version"], "python3 is missing on the node")
REAL_CONNECT = Mechanism("a probe process (python3) joins the cgroup, connects once and exits",
                         (PYTHON3, mounts.CGROUP2))  # fmt: skip


def parse_service(value: str, param: str = "service") -> tuple[str, int]:
    """``ADDRESS:PORT`` (IPv4) into its parts, validated."""
    text = str(value).strip()
    address, sep, port = text.rpartition(":")
    if not sep:
        raise NetlabError(f"parameter {param}: {value!r} is not ADDRESS:PORT")
    return params.ip_address(address, param), params.port(port, param)


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
        maps["reachable"] = [
            "pinned (agent-managed)" if pinned else (f"only through program {used}" if used else "orphan")
            for pinned, used in zip(maps["pinned"], maps["used_by"], strict=False)
        ]
        dup = maps[maps.duplicated("name", keep=False) & (maps["name"] != "")]
        dup = dup.sort_values(["name", "map_id"]).drop(columns=["pinned"])
        self.results["duplicate_maps"] = dup
        self.evidence("maps sharing a name", dup, "the kernel keeps 15 characters of a map name")
        return dup

    # --- step 3 ------------------------------------------------------------------
    def _program_tables(self) -> dict[int, pd.DataFrame]:
        """prog id -> its service table (frontend -> slot -> backend), for LB programs."""
        if self._tables:
            return self._tables
        if self._maps is None:
            self.inventory()
        assert self._maps is not None and self._progs is not None
        by_id = self._maps.set_index("map_id")
        for _, prog in self._progs.iterrows():
            own = [i for i in prog["map_ids"] if i in by_id.index]
            svc = [i for i in own if by_id.loc[i, "name"].startswith(SERVICE_MAPS)]
            back = [i for i in own if by_id.loc[i, "name"].startswith(BACKEND_MAPS)]
            if not svc:
                continue
            host = self.target.host()
            services = decode_lb_services(bpf_objects.dump(host, svc[0]), map_name=by_id.loc[svc[0], "name"])
            backends = (
                decode_lb_backends(bpf_objects.dump(host, back[0]), map_name=by_id.loc[back[0], "name"])
                if back
                else None
            )
            table = lb_service_table(services, backends)
            table.insert(0, "service_map_id", svc[0])
            table.insert(1, "pinned_copy", bool(by_id.loc[svc[0], "pinned"]))
            table.attrs["layout"] = services.attrs.get("layout", "")
            self._tables[int(prog["prog_id"])] = table
        return self._tables

    def lb_maps(self) -> pd.DataFrame:
        """Every copy of the service and backend maps, decoded, and where copies differ."""
        if self.mechanism("lb_maps") is None:
            return pd.DataFrame()
        tables = self._program_tables()
        if not tables:
            self.skipped("lb maps", "no program uses a Cilium lb4 service map")
            return pd.DataFrame()
        layouts = sorted({t.attrs.get("layout", "") for t in tables.values()})
        self.used(
            "lb maps", f"bpftool -j map dump, decoded with netlab's Cilium layouts ({', '.join(layouts)})"
        )
        frame = pd.concat([t.assign(prog_id=p) for p, t in tables.items()], ignore_index=True)
        per_copy = frame.groupby(["frontend", "service_map_id"])["backend"].agg(
            lambda b: ", ".join(sorted(map(str, b)))
        )
        differs = per_copy.groupby(level=0).nunique() > 1
        frame["copies_disagree"] = frame["frontend"].map(differs).fillna(False)
        self.results["lb_maps"] = frame
        self.evidence("service -> backend, per map copy", frame[["frontend", "backend_slot", "backend", "service_map_id",
                      "pinned_copy", "prog_id", "copies_disagree"]], "rows where copies disagree matter")  # fmt: skip
        return frame

    # --- step 4 ------------------------------------------------------------------
    def connect_walk(self) -> pd.DataFrame:
        """For the service(s), what each connect4 program in run order rewrites them to,
        compared with the pinned (agent-managed) map."""
        if self.mechanism("connect_walk") is None:
            return pd.DataFrame()
        tables = self._program_tables()
        attached = self.results.get("inventory")
        if attached is None:
            attached = self.inventory()
            attached = self.results["inventory"]
        hooks = attached[attached["hook"] == "connect4"]
        pinned = [t for t in tables.values() if t["pinned_copy"].any()]
        truth = pinned[0] if pinned else None
        services = [f"{self.service[0]}:{self.service[1]}"] if self.service else sorted(
            {f for t in tables.values() for f in t["frontend"]})  # fmt: skip
        rows = []
        for (cgroup, _), group in hooks.groupby(["cgroup", "hook"]):
            for service in services:
                dest = service
                for _, prog in group.sort_values("position").iterrows():
                    table = tables.get(int(prog["prog_id"]))
                    hits = table[table["frontend"] == dest] if table is not None else pd.DataFrame()
                    rewrite = ", ".join(str(b) for b in hits["backend"]) if len(hits) else ""
                    rows.append({"cgroup": cgroup, "service": service, "position": prog["position"],
                                 "prog_id": prog["prog_id"], "name": prog["name"], "sees": dest,
                                 "rewrites_to": rewrite or "(not a service here: unchanged)",
                                 "map_id": int(hits["service_map_id"].iloc[0]) if len(hits) else None})  # fmt: skip
                    if len(hits) == 1:
                        dest = str(hits["backend"].iloc[0])
                agent = truth[truth["frontend"] == service] if truth is not None else pd.DataFrame()
                expected = ", ".join(str(b) for b in agent["backend"]) if len(agent) else ""
                for row in rows:
                    if row["service"] == service and row["cgroup"] == cgroup:
                        row["final"] = dest
                        row["pinned_map_says"] = expected
                        row["differs_from_pinned"] = bool(expected) and dest not in expected.split(", ")
        frame = pd.DataFrame(rows)
        if len(frame):
            frame["map_id"] = frame["map_id"].astype("Int64")
        self.results["walk"] = frame
        if len(frame):
            self.evidence("what connect() does, program by program", frame)
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
        lb = results.get("lb_maps", pd.DataFrame())
        if walk.empty:
            if lb.empty:
                return evidence.findings(
                    HEALTHY,
                    "No cgroup program uses a Cilium lb4 service map; nothing rewrites connect() here.",
                )
            return evidence.inconclusive(["no connect4 program is attached under " + results["cgroup_root"]])
        bad = walk[walk["differs_from_pinned"] & (walk["rewrites_to"] != "(not a service here: unchanged)")]
        pinned_maps = set(lb[lb["pinned_copy"]]["service_map_id"].astype(int)) if len(lb) else set()
        stale = bad[~bad["map_id"].isin(pinned_maps)]
        actual = results.get("actual", {})
        if stale.empty:
            summary = "Every connect4 program agrees with the pinned (agent-managed) service map."
            if len(walk.groupby(["cgroup"])["prog_id"].nunique().loc[lambda s: s > 1]):
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
