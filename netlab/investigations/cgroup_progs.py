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

import json
from typing import Any

import pandas as pd

from netlab import mounts, params
from netlab.capability import Mechanism, Step, command
from netlab.collectors import bpf_objects
from netlab.decoders import decode_lb_backends, decode_lb_services
from netlab.errors import NetlabError
from netlab.findings import HEALTHY, Findings
from netlab.investigations.base import LIKELY, NOTHING, WORTH_A_LOOK, Evidence, Investigation, Param, Signal
from netlab.investigations.socket_lb import (
    CONNECT,
    SERVICE_MAPS,
    UNCHANGED,
    SocketLB,
    is_backend_map,
    is_service_map,
)
from netlab.probes import connect_dest
from netlab.targets import Target

VERDICT = "stale-cgroup-program"
# Rows of a table kept as evidence (a node holds tens of thousands of services).
MAX_KEPT = 2000
# The destination is the kernel's choice, known as connect() returns; the wait only says
# whether the handshake also completed, which a backend on the node's network does in
# well under this.
CONNECT_WAIT = "0.3"

# The walk is computed from what the inventory and the map dumps already read.
WALK = Mechanism("program order from the cgroup tree, each copy's decoded maps", (bpf_objects.BPFTOOL_JSON,))
# One real connect(): connect_dest's source, run by the node's python3 inside the cgroup.
PYTHON3 = command("python3", ["python3", "--version"], "python3 is missing on the node")
REAL_CONNECT = Mechanism("a probe process (python3) joins the cgroup, connects once and exits",
                         (PYTHON3, mounts.CGROUP2))  # fmt: skip


def parse_service(value: str, param: str = "service") -> tuple[str, int]:
    """``ADDRESS:PORT`` (``10.96.0.10:80``) or ``[ADDRESS]:PORT`` for IPv6
    (``[fd00::a]:80``) into its parts, validated."""
    text = str(value).strip()
    address, sep, port = text.rpartition(":")
    bracketed = address.startswith("[") and address.endswith("]")
    if not sep or (":" in address and not bracketed):
        raise NetlabError(f"parameter {param}: {value!r} is not ADDRESS:PORT (IPv6: [ADDRESS]:PORT)")
    return params.ip_address(address[1:-1] if bracketed else address, param), params.port(port, param)


def frontend(address: str, port: int) -> str:
    """A service as the decoders write frontends: ``10.96.0.10:80``, ``[fd00::a]:80``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _service_param(value: Any, name: str) -> str:
    return frontend(*parse_service(value, name))


class CgroupProgs(Investigation):
    name = "cgroup-progs"
    title = "cgroup BPF programs and map inventory: stale programs and duplicate maps"
    notebook = "cgroup-progs.ipynb"
    scenario = "stale-cgroup-prog"
    params = (
        Param("cgroup_root", str, "", "cgroup v2 directory to inventory (default: the whole hierarchy)",
              params.path, lab="attach_cgroup"),
        Param("cgroup", str, "", "the affected pods' cgroup: its effective programs are walked, and the real "
              "connect() probe runs in it",
              params.path, lab="cgroup"),
        Param("service", str, "", "the unreachable service, ADDRESS:PORT or [IPv6]:PORT (default: every service)",
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
        self._lb: SocketLB | None = None

    # --- step 1 ------------------------------------------------------------------
    def inventory(self) -> pd.DataFrame:
        """Every cgroup's BPF programs per hook in run order, with the maps they use."""
        if self.mechanism("inventory") is None:
            return pd.DataFrame()
        host = self.target.host()
        self._progs = bpf_objects.programs(host)
        self._maps = bpf_objects.maps(host)
        attached = bpf_objects.cgroup_attachments(host, self.cgroup_root)
        names = dict(zip(self._maps["map_id"], self._maps["name"], strict=False))
        frame = attached.merge(
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
        agent = self._socket_lb().agent_maps()
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
    def _socket_lb(self) -> SocketLB:
        """The node's socket-LB state: every LB map read once by id and decoded."""
        if self._lb is None:
            if self._maps is None:
                self.inventory()
            assert self._maps is not None and self._progs is not None
            decoded: dict[int, pd.DataFrame] = {}
            for row in self._maps.itertuples():
                if not (is_service_map(row.name) or is_backend_map(row.name)):
                    continue
                data = bpf_objects.read(self.target, int(row.map_id), name=str(row.name), key_size=int(row.key_size),
                                        value_size=int(row.value_size))  # fmt: skip
                # Typed by the map's own name (lb4 or lb6, as the kernel keeps it) and sizes.
                decode = decode_lb_services if is_service_map(row.name) else decode_lb_backends
                frame = decode(data, map_name=None)
                frame.attrs["mechanism"] = data.mechanism
                decoded[int(row.map_id)] = frame
            self._lb = SocketLB(self._progs, self._maps, decoded)
        return self._lb

    def lb_maps(self) -> pd.DataFrame:
        """Every copy of the service and backend maps (used, pinned or both), each read
        once and decoded; empty copies labelled; where copies disagree."""
        if self.mechanism("lb_maps") is None:
            return pd.DataFrame()
        lb = self._socket_lb()
        copies = lb.copies()
        if copies.empty:
            self.skipped("lb maps", "no Cilium LB service or backend map (lb4 or lb6) on the node")
            return pd.DataFrame()
        self.results["lb_copies"] = copies
        self.evidence("LB map copies", copies[["map_id", "name", "max_entries", "entries", "layout", "copy"]],
                      "each read once; an empty copy is evidence, not an error")  # fmt: skip
        mechanisms = sorted({str(f.attrs.get("mechanism", "")) for f in lb.decoded.values()})
        layouts = sorted(set(copies["layout"]))
        self.used(
            "lb maps", f"{', '.join(mechanisms)}; decoded with netlab's Cilium layouts ({', '.join(layouts)})"
        )
        self.results["lb_programs"] = len({prog_id for prog_id, _ in lb.tables()})
        frame = lb.service_rows()
        # The evidence keeps what matters (where copies disagree), bounded; the whole
        # table is what this step returns.
        disagree = frame[frame["copies_disagree"].astype(bool)]
        self.results["lb_maps"] = disagree.head(MAX_KEPT)
        self.results["lb_rows"] = {"rows": len(frame), "disagreeing": len(disagree)}
        if len(frame):
            self.evidence("service -> backend where map copies disagree", disagree[["frontend", "backend_slot",
                          "backend", "service_map_id", "pinned_copy", "prog_ids"]],
                          f"{len(disagree):,} of {len(frame):,} service slots; every copy agrees on the rest")  # fmt: skip
        return frame

    # --- step 4 ------------------------------------------------------------------
    def connect_walk(self) -> pd.DataFrame:
        """For the service(s), what each connect program of their family (connect4,
        connect6) rewrites them to in run order, compared with the agent-managed map."""
        if self.mechanism("connect_walk") is None:
            return pd.DataFrame()
        lb = self._socket_lb()
        attached = self.results.get("inventory")
        if attached is None:
            self.inventory()
            attached = self.results["inventory"]
        # The walk follows the run order the kernel uses for a socket of each cgroup:
        # the affected cgroup's effective programs when it is given, else those of every
        # cgroup with a connect program of its own (inherited ones included).
        walked = (
            [self.cgroup]
            if self.cgroup
            else sorted(set(attached.loc[attached["hook"].isin(list(CONNECT.values())), "cgroup"]))
        )
        host = self.target.host()
        effective = pd.concat([bpf_objects.effective_programs(host, c) for c in walked] or [attached.head(0)],
                              ignore_index=True)  # fmt: skip
        services = [frontend(*self.service)] if self.service else None
        frame, summary = lb.walk(effective, attached, services, self.cgroup_root)
        differing = frame[frame["differs_from_pinned"]] if len(frame) else frame
        # Evidence: every step of the services that end elsewhere than the agent's map
        # says (bounded), and how much was walked.
        self.results["walk"] = differing.head(MAX_KEPT)
        self.results["walk_summary"] = summary
        if len(frame):
            shown = differing if len(differing) else frame
            self.evidence("what connect() does, program by program", shown,
                          f"{summary['services']:,} services walked; {summary['differing_services']:,} end "
                          "elsewhere than the agent's map says" + ("" if len(differing) else
                          " (all agree: the first steps shown)"))  # fmt: skip
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
        address, port = self.service
        result = self.target.run(
            connect_dest.command(address, port, CONNECT_WAIT), cgroup=cgroup, check=False, timeout=15
        )
        if not result.ok:
            self.skipped("real connect", f"probe failed: {result.brief_error()}")
            return pd.DataFrame()
        seen = json.loads(result.stdout)
        self.used(
            "real connect",
            f"a probe process (python3) joined {cgroup}, connect()ed once "
            f"({seen.get('how', '?')}) and exited",
        )
        self.results["actual"] = seen
        self.evidence("a real connect() from the cgroup", [seen],
                      "actual is the destination the kernel chose after every connect program ran; "
                      "how says whether a SYN left")  # fmt: skip
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
                    "No cgroup program uses a Cilium LB service map; nothing rewrites connect() here.",
                )
            return evidence.inconclusive(
                [
                    "no connect program (connect4, connect6) for the services is attached under "
                    + results["cgroup_root"]
                ]
            )
        bad = walk[walk["differs_from_pinned"] & (walk["rewrites_to"] != UNCHANGED)]
        agent = copies[copies["copy"].str.startswith("agent-managed")] if len(copies) else copies
        stale = bad[~bad["map_id"].isin(set(agent["map_id"].astype(int)) if len(agent) else set())]
        actual = results.get("actual", {})
        hooks = walked.get("hooks", [])
        if stale.empty:
            return evidence.findings(HEALTHY, _agreeing(walked, results.get("lb_rows")))
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
        attached_at = str(first.get("attached_at") or first["cgroup"])
        hook = str(first.get("hook") or "connect4")
        inherited = "" if attached_at == first["cgroup"] else f" (attached at {attached_at})"
        summary = (
            f"Program {first['prog_id']} ({first['name']}{', loaded ' + str(first['loaded_at']) if first.get('loaded_at') else ''}) "
            f"runs at position {first['position']} of the {hook} programs of {first['cgroup']}{inherited} and rewrites "
            f"{first['service']} to {first['rewrites_to']} from its own map {first['map_id']}, while the "
            f"agent-managed map says {first['pinned_map_says']}."
        )
        agents = [p for h in hooks if (h["cgroup"], h["hook"]) == (first["cgroup"], hook) for p in h["programs"]
                  if p.get("agent_map")]  # fmt: skip
        if agents:
            summary += f" The program using the agent's map is {agents[0]['prog_id']}, loaded {agents[0]['loaded_at']}."
        if pair:
            summary += f" Maps with the same name: {pair}."
        if actual.get("actual"):
            summary += f" A real connect() from the cgroup went to {actual['actual']}."
        elif actual.get("error"):
            summary += f" A real connect() from the cgroup failed before its destination was read: {actual['error']}."
        remediation = [
            f"bpftool cgroup detach {attached_at} {hook} id {first['prog_id']}"
            if not attached_at.startswith("above ")
            else f"find the cgroup it is attached to (`bpftool cgroup tree` from the cgroup2 mount), then "
            f"bpftool cgroup detach CGROUP {hook} id {first['prog_id']}",
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


def _agreeing(walked: dict[str, Any], rows: dict[str, int] | None) -> str:
    """The healthy summary. The walked services end where the agent's map says; where
    several programs with LB maps run on one hook (as mid-rollout) they are named with
    their load times, and the summary says what was compared: the walked services, and
    the lb maps step's count of service slots on which copies disagree (``rows``)."""
    count = int(walked.get("services", 0))
    scope = f"the {count:,} service{'' if count == 1 else 's'} walked"
    summary = f"Every connect program agrees with the agent-managed service map for {scope}."
    hooks = walked.get("hooks", [])
    crowded = [h for h in hooks if len([p for p in h["programs"] if p.get("map_id") is not None]) > 1]
    for h in crowded[:1]:
        listed = ", ".join(
            f"{p['prog_id']} ({p['name']}, loaded {p['loaded_at'] or '?'})" for p in h["programs"]
        )
        others = [
            str(p["prog_id"]) for p in h["programs"] if p.get("map_id") is not None and not p.get("agent_map")
        ]
        summary += (
            f" Several {h['hook']} programs with LB maps run for {h['cgroup']}, in run order: {listed}."
        )
        if rows is not None and not rows.get("disagreeing"):
            summary += " The LB maps the programs rewrite from agree on every service they share"
            summary += ", as in the middle of an agent rollout." if others else "."
        else:
            differ = (
                f"{rows['disagreeing']:,} service slots differ between copies"
                if rows
                else "no others compared"
            )
            summary += f" Their maps agree on {scope} ({differ})."
        if others:
            summary += (f" Not using the agent-managed map: {', '.join(others)}. Still attached once the rollout is "
                        "over, such a program is a leftover that rewrites from maps the agent no longer changes.")  # fmt: skip
    if not crowded and any(len(h["programs"]) > 1 for h in hooks):
        summary += " Several programs share a hook, but their maps agree."
    return summary
