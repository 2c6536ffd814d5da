"""Case 000: TCP requests stuck after the connection is established — stale sockmap entries.

Cilium accelerates node-to-local-pod TCP with sockops and sk_msg programs: both ends of a
connection sit in a sockhash (``cilium_sock_ops``) under a 5-tuple sock key, and payload
is redirected socket to socket, bypassing the IP stack. When a stale entry already holds
the key the server side of a new connection needs, the server's insert fails (EEXIST):
the client's payload is redirected into the stale socket while the server, with the
plain ``tcp_recvmsg`` handler, waits forever. The connection is ESTABLISHED, its segment
counters do not move, and only node-to-local-pod traffic is affected.

Steps: narrow the scope (probe matrix); socket counters of a stuck flow; which receive
handler each socket of the flow uses (BPF TCP iterator); dump and decode the sockmap; find stale entries; verdict. Read-only: the probes
are HTTP requests, a BPF iterator (pinned, read, unpinned) and map dumps.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from netlab import mounts, params
from netlab.capability import Mechanism, Step
from netlab.collectors import bpf_objects, reach, ss
from netlab.decoders import bpftool_map_delete_argv, decode_sockmap, detect_layout, sockmap_entries_per_ip
from netlab.errors import NetlabError
from netlab.findings import HEALTHY, Findings
from netlab.investigations.base import LIKELY, NOTHING, WORTH_A_LOOK, Evidence, Investigation, Param, Signal
from netlab.probes import tcp_sockets
from netlab.targets import Target, open_target

VERDICT = "stale-sockmap-entry"
# Map entries joined with live sockets by cookie (ss prints each socket's as sk:<hex>).
STALE_JOIN = Mechanism(
    "map cookies joined with live sockets (ss -tine, sk:<cookie>) and their 5-tuples", (ss.SS,)
)
SOCKMAP_NAME = "cilium_sock_ops"
PLAIN, ACCELERATED = "tcp_recvmsg", "tcp_bpf_recvmsg"


def _target(value: Any, name: str) -> str:
    return open_target(value).url


def _url_path(value: Any, name: str) -> str:
    text = str(value)
    if not text.startswith("/") or any(c.isspace() or ord(c) < 32 for c in text):
        raise NetlabError(
            f"parameter {name}: {value!r} is not a URL path (it starts with / and has no spaces)"
        )
    return text


class StuckTcp(Investigation):
    name = "stuck-tcp"
    title = "TCP requests stuck after the connection is established (sockmap)"
    notebook = "stuck-tcp.ipynb"
    scenario = "stuck-tcp"
    params = (
        Param("pod_ip", str, "", "the pod whose requests hang", params.ip_address, lab="pod_ip", required=True),
        Param("pod_port", int, 8080, "its TCP port", params.port, lab="pod_port"),
        Param("path", str, "/health", "URL path the probes request", _url_path),
        Param("tries", int, 3, "probes per vantage point", params.up_to(100)),
        Param("timeout", float, 2.0, "seconds before a probe counts as hung", params.seconds_up_to(60)),
        Param("client_ports", str, "", "client ports under suspicion, N or N-M", reach.port_range, lab="client_ports"),
        Param("client_cgroup", str, "", "cgroup v2 directory the node-side probes run in", params.path, lab="cgroup"),
        Param("pod_target", str, "", "the pod's own vantage point (netns://, ssh://)", _target,
              lab="pod_netns.pod1", lab_format="netns://{}"),
        Param("peer_target", str, "", "another pod on the same node", _target,
              lab="pod_netns.pod2", lab_format="netns://{}"),
        Param("remote_target", str, "", "a remote node", _target, lab="remote_netns", lab_format="netns://{}"),
        Param("sockmap", str, "", "pinned sockmap path (default: found by name)", params.path, lab="sockmap"),
        Param("hold_path", str, "", "a slow URL path that keeps a flow open while it is read (default: path)",
              _url_path, lab="hold_path"),
    )  # fmt: skip
    steps = (
        Step("scope", "scope", (reach.PROBES,)),
        Step("socket_counters", "socket counters", (ss.SOCK_DIAG,)),
        Step("receive_paths", "recvmsg handler per socket", (tcp_sockets.ITERATOR,)),
        Step("sockmap_entries", "sockmap dump", (bpf_objects.MAP_DUMP,)),
        Step("stale_entries", "stale entries", (STALE_JOIN,)),
    )

    def prepare(self) -> None:
        v = self.values
        self.pod_ip, self.pod_port, self.path = v["pod_ip"], v["pod_port"], v["path"]
        # The request held open while the flow is examined; a slow URL keeps a healthy
        # flow alive long enough to be seen.
        self.hold_path = v["hold_path"] or self.path
        self.tries, self.timeout = v["tries"], v["timeout"]
        self.client_ports = v["client_ports"] or None
        low, _, high = (self.client_ports or "").partition("-")
        self.port_span = (int(low), int(high or low)) if self.client_ports else None
        if v["client_cgroup"]:
            mounts.require_cgroup2_dir(self.target.host(), v["client_cgroup"], "client_cgroup")
        self.cgroup = v["client_cgroup"] or None
        # netns://NAME is a namespace of the node this run investigates.
        self.pod = open_target(v["pod_target"], node=self.target) if v["pod_target"] else None
        self.peer = open_target(v["peer_target"], node=self.target) if v["peer_target"] else None
        self.remote = open_target(v["remote_target"], node=self.target) if v["remote_target"] else None
        self.sockmap = v["sockmap"]

    # --- 1. scope ------------------------------------------------------------------
    def scope(self) -> pd.DataFrame:
        """ping, TCP connect and HTTP from each vantage point, ``tries`` times each."""
        if self.mechanism("scope") is None:
            return pd.DataFrame()
        vantages: list[tuple[str, Target, str | None]] = [("node -> pod", self.target, self.cgroup)]
        if self.peer is not None:
            vantages.append(("pod -> pod (same node)", self.peer, None))
        if self.remote is not None:
            vantages.append(("remote node -> pod", self.remote, None))
        results: list[reach.ProbeResult] = []
        for name, target, cgroup in vantages:
            for attempt in range(self.tries):
                results.append(reach.ping(target, self.pod_ip, timeout=self.timeout, vantage=name))
                # The last node attempt uses the client ports under suspicion, if given.
                local = self.client_ports if name == "node -> pod" and attempt == self.tries - 1 else None
                results += reach.http(target, self.pod_ip, self.pod_port, self.path, timeout=self.timeout,
                                      vantage=name, local_port=local, cgroup=cgroup)  # fmt: skip
        raw = reach.frame(results)
        # Attempts our own tool could not make (a busy local port) are not the node's
        # failures: counted apart, left out of the success rate.
        ran = raw["ran"]
        matrix = raw.assign(ok_ran=raw["ok"].where(ran)).groupby(["vantage", "kind"], sort=False).agg(
            success=("ok_ran", "mean"), attempts=("ran", "sum"), not_run=("ran", lambda r: int((~r).sum())),
            median_ms=("latency_ms", lambda s: statistics.median(s.dropna()) if s.notna().any() else None),
            failures=("detail", lambda d: "; ".join(sorted({x for x, bad in zip(d, ~raw.loc[d.index, "ok"], strict=False) if bad}))),
        ).reset_index()  # fmt: skip
        self.results["scope"] = matrix
        self.evidence("probe matrix: success rate per vantage point", matrix,
                      "only node -> local pod failing points at the sockmap acceleration")  # fmt: skip
        return matrix

    def scope_chart(self) -> go.Figure:
        matrix = self.results.get("scope")
        if matrix is None:
            matrix = self.scope()
        grid = matrix.pivot(index="vantage", columns="kind", values="success")
        return px.imshow(grid, zmin=0, zmax=1, color_continuous_scale="RdYlGn", text_auto=".0%",
                         title=f"success rate to {self.pod_ip}:{self.pod_port}")  # fmt: skip

    # --- 2. counters -------------------------------------------------------------
    def socket_counters(self) -> pd.DataFrame:
        """The flow's socket on the node, sampled twice while a request is in flight."""
        if self.mechanism("socket_counters") is None:
            return pd.DataFrame()
        samples = []
        with reach.HeldRequest(self.target, self.pod_ip, self.pod_port, self.hold_path, seconds=max(4.0, self.timeout + 1),
                               local_port=self.client_ports, cgroup=self.cgroup):  # fmt: skip
            for label in ("after connect + request", "1.5 s later"):
                frame = ss.sockets(
                    self.target, peer=self.pod_ip, peer_port=self.pod_port, local_ports=self.port_span
                )
                samples.append(frame.assign(sample=label))
                time.sleep(1.5)
        frame = pd.concat(samples, ignore_index=True)
        frame = frame[frame["state"] == "ESTAB"]
        keep = ["sample", "state", "local", "local_port", "peer", "peer_port", "cookie", "segs_in", "segs_out",
                "bytes_acked", "bytes_received", "lastrcv"]  # fmt: skip
        frame = frame[keep]
        moved = (
            frame.groupby("local_port")[["segs_in", "segs_out", "bytes_received"]].nunique().gt(1).any(axis=1)
        )
        frame = frame.assign(counters_moved=frame["local_port"].map(moved))
        self.results["counters"] = frame
        self.used("socket counters", f"{ss.SOCK_DIAG.name}, two samples during a held request")
        self.evidence("the flow's socket counters during a request", frame,
                      "on a stuck flow segs_in/segs_out/bytes_received do not move: the payload went elsewhere")  # fmt: skip
        return frame

    # --- 3. receive paths ----------------------------------------------------------
    def receive_paths(self) -> pd.DataFrame:
        """Every socket of the flow with the recvmsg handler its protocol ops point at."""
        if self.pod is None:
            self.skipped("recvmsg handler per socket", "parameter pod_target (the pod's namespace) is needed")
            return pd.DataFrame()
        if self.mechanism("receive_paths") is None:
            return pd.DataFrame()
        with reach.HeldRequest(self.target, self.pod_ip, self.pod_port, self.hold_path, seconds=max(4.0, self.timeout + 1),
                               local_port=self.client_ports, cgroup=self.cgroup):  # fmt: skip
            try:
                node = tcp_sockets.read(self.target, "node")
                pod = tcp_sockets.read(self.pod, "pod")
            except NetlabError as exc:
                self.skipped("recvmsg handler per socket", exc.message)
                return pd.DataFrame()
        client = node[(node["peer"] == self.pod_ip) & (node["peer_port"] == self.pod_port)].assign(
            side="client"
        )
        server = pod[
            (pod["local"] == self.pod_ip) & (pod["local_port"] == self.pod_port) & (pod["peer_port"] != 0)
        ].assign(side="server")
        if self.port_span:
            client = client[client["local_port"].between(*self.port_span)]
            server = server[server["peer_port"].between(*self.port_span)]
        frame = pd.concat([client, server], ignore_index=True)
        self.results["handlers"] = frame
        self.evidence("receive handler of each socket of the flow", frame,
                      f"{ACCELERATED}: the socket is in the sockmap; {PLAIN} on one end only: that end was never inserted")  # fmt: skip
        return frame

    # --- 4. sockmap ----------------------------------------------------------------
    def sockmap_entries(self) -> pd.DataFrame:
        """Cilium's sockops map, found by name or pin, every key decoded."""
        if self.mechanism("sockmap_entries") is None:
            return pd.DataFrame()
        host = self.target.host()
        if self.sockmap:
            info = host.run_json(["bpftool", "-j", "map", "show", "pinned", self.sockmap])
            found = [info] if info else []
        else:
            maps = bpf_objects.maps(host)
            found = (
                maps[maps["name"] == SOCKMAP_NAME[:15]].rename(columns={"map_id": "id"}).to_dict("records")
            )
        if not found:
            self.skipped(
                "sockmap dump", f"no map named {SOCKMAP_NAME} (and no pin given): sockops acceleration is off"
            )
            return pd.DataFrame()
        entry = found[0]
        entries = bpf_objects.dump(host, int(entry["id"]))
        # The layout from the map's own sizes, so an empty map decodes too.
        layout = detect_layout(SOCKMAP_NAME, int(entry.get("key_size") or entry.get("bytes_key")),
                               int(entry.get("value_size") or entry.get("bytes_value")))[0]  # fmt: skip
        frame = decode_sockmap(entries, layout=layout, map_name=SOCKMAP_NAME)
        frame.insert(0, "map_id", int(entry["id"]))
        # Keys as hex: evidence is data (JSON), and the remediation needs the exact bytes.
        frame["key_hex"] = frame["key"].map(lambda k: bytes(k).hex())
        self.results["sockmap"] = frame.drop(columns=["key"])
        self.used(
            "sockmap dump", f"bpftool -j map dump id {entry['id']}, decoded with Cilium's sock_key layout"
        )
        per_ip = sockmap_entries_per_ip(frame) if len(frame) else pd.DataFrame()
        self.evidence("sockmap entries", frame.drop(columns=["key"], errors="ignore"))
        self.evidence(
            "sockmap entries per IP", per_ip, "thousands of entries for one node IP was the case's tell"
        )
        return frame.drop(columns=["key"], errors="ignore")

    # --- 5. stale entries ----------------------------------------------------------
    def stale_entries(self) -> pd.DataFrame:
        """Map entries whose socket is gone or belongs to another 5-tuple, and the entry
        that holds the probed flow's server key."""
        entries = self.results.get("sockmap")
        if entries is None:
            entries = self.sockmap_entries()
            entries = self.results.get("sockmap", pd.DataFrame())
        if entries.empty or self.mechanism("stale_entries") is None:
            return pd.DataFrame()
        live = []
        for where, target in (
            ("node", self.target),
            ("pod", self.pod),
            ("peer pod", self.peer),
            ("remote", self.remote),
        ):
            if target is not None:
                live.append(ss.sockets(target).assign(netns=where))
        live = [frame for frame in live if len(frame)]
        sockets = pd.concat(live, ignore_index=True) if live else pd.DataFrame(columns=ss.COLUMNS + ["netns"])
        by_cookie = sockets.dropna(subset=["cookie"]).drop_duplicates("cookie").set_index("cookie")
        rows = []
        for _, e in entries.iterrows():
            cookie = e.get("cookie")
            status, owner = "unknown (no cookie in this map)", ""
            if pd.notna(cookie):
                if cookie in by_cookie.index:
                    s = by_cookie.loc[cookie]
                    owner = f"{s['local']}:{int(s['local_port'])} -> {s['peer']}:{int(s['peer_port'])} ({s['netns']}, {s['state']})"
                    same = (s["local"], int(s["local_port"]), s["peer"], s["peer_port"]) == (
                        e["sip"],
                        int(e["sport"]),
                        e["dip"],
                        e["dport"],
                    )
                    status = "live, matches its key" if same else "belongs to a different 5-tuple"
                else:
                    status = "socket gone"
            rows.append({"key": f"{e['sip']}:{e['sport']} -> {e['dip']}:{e['dport']}", "cookie": cookie,
                         "status": status, "socket": owner, "sip": e["sip"], "sport": e["sport"], "dip": e["dip"],
                         "dport": e["dport"], "map_id": e["map_id"]})  # fmt: skip
        frame = pd.DataFrame(rows)
        handlers = self.results.get("handlers", pd.DataFrame())
        if self.port_span:
            frame["blocks_probed_flow"] = (
                (frame["sip"] == self.pod_ip)
                & (frame["sport"] == self.pod_port)
                & frame["dport"].between(*self.port_span)
            )
        elif not handlers.empty:
            plain = handlers[(handlers["side"] == "server") & (handlers["handler"] == PLAIN)]
            keys = {(self.pod_ip, self.pod_port, int(p)) for p in plain["peer_port"]}
            frame["blocks_probed_flow"] = [
                (a, b, c) in keys
                for a, b, c in zip(frame["sip"], frame["sport"], frame["dport"], strict=False)
            ]
        else:
            frame["blocks_probed_flow"] = False
        frame["stale"] = frame["status"].isin(["belongs to a different 5-tuple", "socket gone"])
        self.results["stale"] = frame
        self.evidence(
            "sockmap entries against live sockets",
            frame[["key", "cookie", "status", "socket", "stale", "blocks_probed_flow"]],
        )
        return frame

    # --- 6. verdict ----------------------------------------------------------------
    @staticmethod
    def decide(evidence: Evidence) -> Findings:
        results = evidence.results
        if "scope" not in results:
            return evidence.inconclusive(["the probes (scope) did not run"])
        stale = results.get("stale", pd.DataFrame())
        scope = results["scope"]
        node_http = scope[(scope["vantage"] == "node -> pod") & (scope["kind"] == "http")]["success"]
        others_ok = (
            scope[(scope["vantage"] != "node -> pod")]["success"].min()
            if (scope["vantage"] != "node -> pod").any()
            else 1.0
        )
        if len(node_http) == 0 or pd.isna(node_http.iloc[0]):
            failures = scope[scope["vantage"] == "node -> pod"]["failures"]
            return evidence.inconclusive(["no node -> pod HTTP probe could run: " + "; ".join(failures)])
        node_failing = float(node_http.iloc[0]) < 1.0
        bad = stale[stale["stale"]] if len(stale) else stale
        if len(bad) == 0:
            if node_failing:
                return evidence.inconclusive(["node -> pod requests fail but no sockmap entry is stale"
                                              + ("" if "sockmap" in results else " (no sockmap found)")])  # fmt: skip
            return evidence.findings(
                HEALTHY,
                "All probes succeed and every sockmap entry belongs to the live socket of its own 5-tuple.",
            )
        handlers = results.get("handlers", pd.DataFrame())
        # Prefer the entry holding the server key of the stuck flow we looked at.
        seen_ports = set(handlers[handlers["side"] == "server"]["peer_port"]) if len(handlers) else set()
        ranked = bad.assign(seen=bad["dport"].isin(seen_ports))
        culprit = ranked.sort_values(["seen", "blocks_probed_flow"], ascending=False).iloc[0]
        socket_text = "; ".join(f"{r.side} {r.local}:{r.local_port} -> {r.peer}:{r.peer_port} uses {r.handler}"
                                for r in handlers.itertuples()) if len(handlers) else "handlers not read"  # fmt: skip
        summary = (f"Stale sockmap entry {culprit['key']} (cookie {culprit['cookie']}: {culprit['status']}"
                   f"{', ' + culprit['socket'] if culprit['socket'] else ''}). "
                   f"{len(bad)} of {len(stale)} entries are stale. "
                   f"Node -> pod HTTP success {float(node_http.iloc[0]):.0%}, other vantage points {float(others_ok):.0%}. "
                   f"The stuck flow's sockets: {socket_text}.")  # fmt: skip
        sockmap = results.get("sockmap", pd.DataFrame())
        key = bytes.fromhex(str(sockmap["key_hex"].iloc[int(culprit.name)])) if "key_hex" in sockmap else b""
        remediation = []
        if key:
            argv = bpftool_map_delete_argv(key, map_id=int(culprit["map_id"]))
            remediation.append(
                " ".join(argv) + "   # removes the stale key; the next connection's insert then succeeds"
            )
        remediation.append(
            "or drain and restart the node's agent (the case's own fix) — never both while traffic flows"
        )
        reasons = [f"stale key {culprit['key']}", f"status: {culprit['status']}"]
        return evidence.findings(VERDICT, summary, remediation=remediation, reasons=reasons)

    @staticmethod
    def triage(target: Target) -> Signal:
        """Quick look: is there a sockops map, and does it hold more entries than the node
        has established TCP sockets (entries outliving their sockets)?"""
        maps = bpf_objects.maps(target.host())
        found = maps[maps["name"] == SOCKMAP_NAME[:15]]
        if found.empty:
            return Signal("stuck-tcp", NOTHING, "no sockops map: sockmap acceleration is not in use")
        entries = len(bpf_objects.dump(target.host(), int(found["map_id"].iloc[0])))
        established = len(ss.sockets(target).query("state == 'ESTAB'"))
        if entries > max(2 * established, 0):
            return Signal(
                "stuck-tcp", LIKELY, f"{entries} sockmap entries for {established} established sockets here"
            )
        return Signal("stuck-tcp", WORTH_A_LOOK if entries else NOTHING, f"{entries} sockmap entries")
