"""Case 000: TCP requests stuck after the connection is established — stale sockmap entries.

Cilium accelerates node-to-local-pod TCP with sockops and sk_msg programs: both ends of a
connection sit in a sockhash (``cilium_sock_ops``), each under the sock key its *peer*
sends with (sip/sport the peer, dip/dport the socket itself), and payload is redirected
socket to socket, bypassing the IP stack. When a stale entry already holds the key the
server side of a new connection needs, the server's insert fails (EEXIST): the client's
payload is redirected into the stale socket while the server, with the plain
``tcp_recvmsg`` handler, waits forever. The connection is ESTABLISHED, its segment
counters do not move, and only node-to-local-pod traffic is affected.

Steps: narrow the scope (probe matrix, also from the client ports stale keys poison);
socket counters of a stuck flow; which receive handler each socket of the flow uses (BPF
TCP iterator); the sockmap with the socket behind each key (BPF sockmap iterator, or keys
only from a dump); stale entries; verdict. Read-only: the probes are HTTP requests, BPF
iterators (pinned, read, unpinned), map dumps and ``ip addr`` in namespaces.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from netlab import mounts, params
from netlab.capability import Mechanism, Step
from netlab.collectors import bpf_objects, netns, reach, ss
from netlab.decoders import (
    MapEntry,
    bpftool_map_delete_argv,
    decode_sockmap,
    detect_layout,
    sockmap_entries_per_ip,
)
from netlab.errors import NetlabError
from netlab.findings import HEALTHY, Findings
from netlab.investigations.base import LIKELY, NOTHING, WORTH_A_LOOK, Evidence, Investigation, Param, Signal
from netlab.probes import recvmsg_trace, sockmap_sockets, tcp_sockets
from netlab.probes.tcp_sockets import plain_address
from netlab.targets import Target, open_target

VERDICT = "stale-sockmap-entry"
SOCKMAP_NAME = "cilium_sock_ops"
CILIUM_PIN = f"{mounts.BPFFS}/tc/globals/{SOCKMAP_NAME}"
PLAIN, ACCELERATED = "tcp_recvmsg", "tcp_bpf_recvmsg"
# Each entry's socket judged against its key, its state and its namespace.
BY_SOCKET = Mechanism("each key's socket (sockmap iterator) against the key, its TCP state and the addresses "
                      "of its namespace", (*sockmap_sockets.ITERATOR.needs, *netns.ADDRESSES.needs))  # fmt: skip
# Map entries joined with live sockets by cookie (8-byte values only; ss prints sk:<cookie>).
BY_COOKIE = Mechanism(
    "map cookies joined with live sockets (ss -tine, sk:<cookie>) and their 5-tuples", (ss.SS,)
)
# Keys only (no iterator, values not cookies): each key joined by its 5-tuple with the TCP
# sockets of every namespace reachable on the node, read by sock_diag there.
BY_TUPLE = Mechanism(
    "each key joined by its 5-tuple with the TCP sockets of every reachable namespace (nsenter ss -tine), "
    "and the addresses of theirs",
    (ss.SS, *netns.ADDRESSES.needs),
)
NAMESPACES_CHECKED = 64  # namespaces whose addresses are read, at most
STALE = ("held by a socket of another 5-tuple", "socket closed", "orphaned socket",
         "its namespace no longer has the address", "its namespace is unreachable", "socket gone")  # fmt: skip


def _target(value: Any, name: str) -> str:
    return open_target(value).url


def _holds_own_key(entry: Any, local: str, local_port: Any, peer: str, peer_port: Any) -> bool:
    """Cilium keys a socket by its peer's view: sip:sport is the peer, dip:dport itself."""
    return (peer, int(peer_port), local, int(local_port)) == (
        entry.sip,
        int(entry.sport),
        entry.dip,
        int(entry.dport),
    )


def judge_by_socket(
    entries: pd.DataFrame, owners: dict[int, set[str] | None], now: dict[str, int] | None = None
) -> pd.DataFrame:
    """Status of each entry from the socket that holds its key (iterator columns).

    Cilium keys a socket by its peer's view, so a live entry's key is the socket's own
    tuple reversed: sip/sport its peer, dip/dport itself. ``owners`` maps a namespace
    inode to the addresses it holds, or None when no path reaches it; namespaces not in
    it were not checked. ``now`` names the namespace that holds an address now (the
    pod's, when its target is known).
    """
    status, detail = [], []
    for e in entries.itertuples():
        tuple_text = f"{e.local}:{e.local_port} <- {e.peer}:{e.peer_port}"
        where = owners.get(int(e.netns), set()) if int(e.netns) in owners else "unchecked"
        if pd.isna(e.state):
            status.append("not verified")
            detail.append("no socket read for this key")
        elif not _holds_own_key(e, e.local, e.local_port, e.peer, e.peer_port):
            status.append("held by a socket of another 5-tuple")
            detail.append(f"the socket is {tuple_text}")
        elif e.state == "CLOSE":
            status.append("socket closed")
            detail.append(f"{tuple_text} is CLOSE")
        elif e.orphan:
            status.append("orphaned socket")
            detail.append(f"{tuple_text} ({e.state}) has no file: its process closed it")
        elif where is None:
            status.append("its namespace is unreachable")
            detail.append(f"{tuple_text} ({e.state}) lives in netns {e.netns}, which no process and no name "
                          "refers to (a deleted pod's, kept alive by its sockets)")  # fmt: skip
        elif where != "unchecked" and e.local not in where:
            status.append("its namespace no longer has the address")
            moved = f" (netns {now[e.local]} has it now)" if now and e.local in now else ""
            detail.append(
                f"{tuple_text} ({e.state}) lives in netns {e.netns}, which no longer has {e.local}{moved}"
            )
        else:
            status.append("live, matches its key")
            detail.append(f"{tuple_text} ({e.state}, netns {e.netns})")
    out = entries.assign(status=status, socket=detail)
    return out.assign(stale=out["status"].isin(STALE))


def _address(text: Any) -> str:
    return plain_address(str(text).strip("[]"))


def join_by_tuple(
    entries: pd.DataFrame, sockets: pd.DataFrame, owners: dict[int, set[str] | None]
) -> pd.DataFrame:
    """The iterator's columns for keys-only entries, from sockets read by sock_diag in each
    namespace (``sockets``: ss rows with ``netns``, the namespace's inode). A key's socket
    is the one whose own tuple is the key reversed (Cilium keys a socket by its peer's
    view); where several namespaces hold such a socket (the pod's new incarnation and a
    deleted one's leaked socket), the one in a namespace without the key's address is the
    suspect. A key no socket matches has state None."""
    # ss prints a dual-stack socket's IPv4 peer as ::ffff:a.b.c.d; Cilium keys it as IPv4.
    socks = pd.DataFrame({
        "dip": sockets["local"].map(_address), "dport": pd.to_numeric(sockets["local_port"]),
        "sip": sockets["peer"].map(_address), "sport": pd.to_numeric(sockets["peer_port"]),
        "state": sockets["state"].map(lambda v: ss.KERNEL_STATES.get(str(v), str(v))),
        "orphan": sockets["inode"].astype(str).isin(["0", "0.0"]), "netns": sockets["netns"].astype("int64"),
    })  # fmt: skip
    keys = entries.reset_index(drop=True)[["sip", "sport", "dip", "dport"]].assign(entry=lambda f: f.index)
    keys["dport"], keys["sport"] = pd.to_numeric(keys["dport"]), pd.to_numeric(keys["sport"])
    joined = keys.merge(socks, on=["sip", "sport", "dip", "dport"], how="left")
    # One socket per key: the suspect first (a namespace known not to hold the address).
    elsewhere = [owners.get(int(n)) is not None and d not in (owners.get(int(n)) or set()) if pd.notna(n) else False
                 for n, d in zip(joined["netns"], joined["dip"], strict=True)]  # fmt: skip
    joined = joined.assign(elsewhere=elsewhere).sort_values(["entry", "elsewhere"], ascending=[True, False])
    joined = joined.drop_duplicates("entry").set_index("entry").sort_index()
    found = joined["state"].notna()
    columns = pd.DataFrame({
        "local": joined["dip"], "local_port": joined["dport"], "peer": joined["sip"], "peer_port": joined["sport"],
        "state": joined["state"].where(found, None), "orphan": joined["orphan"].eq(True),
        "netns": joined["netns"].fillna(0).astype("int64"),
    })  # fmt: skip
    return pd.concat([entries.reset_index(drop=True), columns.reset_index(drop=True)], axis=1)


def judge_by_cookie(entries: pd.DataFrame, sockets: pd.DataFrame) -> pd.DataFrame:
    """Status of each entry from its cookie (a sockhash with 8-byte values), joined
    with live sockets (``ss`` rows, ``netns`` naming where each was read)."""
    by_cookie = sockets.dropna(subset=["cookie"]).drop_duplicates("cookie").set_index("cookie")
    status, detail = [], []
    for e in entries.itertuples():
        cookie = getattr(e, "cookie", None)
        if cookie is None or pd.isna(cookie):
            status.append("not verified")
            detail.append("the map gives no cookie and no iterator ran")
        elif cookie not in by_cookie.index:
            status.append("socket gone")
            detail.append(f"no live socket has cookie {cookie}")
        else:
            s = by_cookie.loc[cookie]
            mine = _holds_own_key(e, s["local"], s["local_port"], s["peer"], s["peer_port"])
            status.append("live, matches its key" if mine else "held by a socket of another 5-tuple")
            detail.append(f"{s['local']}:{int(s['local_port'])} <- {s['peer']}:{int(s['peer_port'])} "
                          f"({s['netns']}, {s['state']})")  # fmt: skip
    out = entries.assign(status=status, socket=detail)
    return out.assign(stale=out["status"].isin(STALE))


def poisoned_ports(stale: pd.DataFrame, pod_ip: str, pod_port: int) -> list[int]:
    """Client ports whose connections to pod_ip:pod_port will hang: the new server
    socket's key (client -> pod) is held by a stale entry."""
    if stale.empty:
        return []
    hit = stale[stale["stale"] & (stale["dip"] == pod_ip) & (stale["dport"] == pod_port)]
    return sorted({int(p) for p in hit["sport"]})


def port_runs(ports: list[int]) -> list[str]:
    """Consecutive ports as curl --local-port ranges (``40120-40127``), longest first:
    curl takes the first free port of a range, so a range may hold poisoned ports only."""
    runs: list[list[int]] = []
    for port in sorted(set(ports)):
        if runs and port == runs[-1][-1] + 1:
            runs[-1].append(port)
        else:
            runs.append([port])
    runs.sort(key=len, reverse=True)
    return [f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs]


def mismatched_flows(handlers: pd.DataFrame) -> pd.DataFrame:
    """Flows whose client end is accelerated (tcp_bpf_recvmsg) while the server end kept
    tcp_recvmsg: the server's insert failed. One row per client port."""
    if handlers.empty:
        return pd.DataFrame(columns=["client", "client_port", "server", "server_port"])
    client = handlers[(handlers["side"] == "client") & (handlers["handler"] == ACCELERATED)]
    server = handlers[(handlers["side"] == "server") & (handlers["handler"] == PLAIN)]
    flows = client.merge(server, left_on="local_port", right_on="peer_port", suffixes=("_c", "_s"))
    return pd.DataFrame({"client": flows["local_c"], "client_port": flows["local_port_c"],
                         "server": flows["local_s"], "server_port": flows["local_port_s"]}).drop_duplicates()  # fmt: skip


def traced_handlers(calls: pd.DataFrame, pod_ip: str, pod_port: int) -> pd.DataFrame:
    """Traced recvmsg calls as handler rows of the flow's sockets (the columns of the
    iterator's): the outermost function a socket's read entered. A ``tcp_recvmsg`` whose
    stack holds ``tcp_bpf_recvmsg`` is the accelerated handler falling back, not a plain
    socket."""
    columns = ["netns", "local", "local_port", "peer", "peer_port", "handler", "side", "pid", "comm"]
    if calls.empty:
        return pd.DataFrame(columns=columns)
    nested = (calls["function"] == PLAIN) & calls["stack"].str.contains(ACCELERATED, regex=False)
    rows = calls[~nested].assign(handler=calls["function"].str.replace("_parser", "", regex=False))
    server = (rows["local"] == pod_ip) & (rows["local_port"] == pod_port)
    client = (rows["peer"] == pod_ip) & (rows["peer_port"] == pod_port)
    rows = rows[server | client].assign(side=["server" if s else "client" for s in server[server | client]])
    return rows[columns].drop_duplicates(ignore_index=True)


def refused_keys(refused: pd.DataFrame, pod_ip: str, pod_port: int) -> pd.DataFrame:
    """Inserts of the pod's server sockets refused with EEXIST, as the Cilium keys they
    wanted (sip:sport the client, dip:dport the server): a key already held."""
    if refused.empty:
        return pd.DataFrame(columns=["sip", "sport", "dip", "dport", "pid", "comm", "stack"])
    hit = refused[
        (refused["error"] == "EEXIST") & (refused["local"] == pod_ip) & (refused["local_port"] == pod_port)
    ]
    return pd.DataFrame({"sip": hit["peer"], "sport": hit["peer_port"].astype(int), "dip": hit["local"],
                         "dport": hit["local_port"].astype(int), "pid": hit["pid"], "comm": hit["comm"],
                         "stack": hit["stack"]}).drop_duplicates(["sip", "sport", "dip", "dport"], ignore_index=True)  # fmt: skip


class StuckTcp(Investigation):
    name = "stuck-tcp"
    title = "TCP requests stuck after the connection is established (sockmap)"
    notebook = "stuck-tcp.ipynb"
    scenario = "stuck-tcp"
    params = (
        Param("pod_ip", str, "", "the pod whose requests hang", params.ip_address, lab="pod_ip", required=True),
        Param("pod_port", int, 8080, "its TCP port", params.port, lab="pod_port"),
        Param("path", str, "/health", "URL path the probes request", params.url_path),
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
              params.url_path, lab="hold_path"),
    )  # fmt: skip
    steps = (
        Step("scope", "scope", (reach.PROBES,)),
        Step("socket_counters", "socket counters", (ss.SOCK_DIAG,)),
        Step("receive_paths", "recvmsg handler per socket", (tcp_sockets.ITERATOR,)),
        Step(
            "recvmsg_trace",
            "recvmsg calls and refused sockmap inserts (kprobes)",
            (recvmsg_trace.KPROBE_TRACE,),
        ),
        Step("sockmap_entries", "sockmap dump", (sockmap_sockets.ITERATOR, bpf_objects.MAP_DUMP)),
        Step("stale_entries", "stale entries", (BY_SOCKET, BY_COOKIE, BY_TUPLE)),
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

    def _suspect_ports(self) -> None:
        """The client ports stale keys poison (those that hold the pod's address and
        port: a node -> pod request from one of them hangs), derived once. The probes
        use them unless client ports were given."""
        if "poisoned_ports" in self.results:
            return
        ports = poisoned_ports(self._judged(), self.pod_ip, self.pod_port)
        self.results["poisoned_ports"] = pd.DataFrame({"client_port": ports}, dtype="int64")
        runs = port_runs(ports)
        if runs and not self.client_ports:
            self.client_ports = runs[0]
            low, _, high = runs[0].partition("-")
            self.port_span = (int(low), int(high or low))

    def _hold_seconds(self) -> float:
        """How long a held request stays in flight: long enough for the sockets to be
        read while it is, which over ssh (several round trips per iterator) takes longer."""
        return max(4.0 if self.target.is_local else 12.0, self.timeout + 1)

    # --- 1. scope ------------------------------------------------------------------
    def scope(self) -> pd.DataFrame:
        """ping, TCP connect and HTTP from each vantage point, ``tries`` times each."""
        if self.mechanism("scope") is None:
            return pd.DataFrame()
        self._suspect_ports()
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
        import plotly.express as px  # only where a chart is drawn: ~0.06 s to import

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
        self._suspect_ports()
        samples = []
        with reach.HeldRequest(self.target, self.pod_ip, self.pod_port, self.hold_path, seconds=self._hold_seconds(),
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
        self._suspect_ports()
        with reach.HeldRequest(self.target, self.pod_ip, self.pod_port, self.hold_path, seconds=self._hold_seconds(),
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

    # --- 3b. recvmsg trace (kprobes) ------------------------------------------------
    def recvmsg_trace(self) -> pd.DataFrame:
        """Where kprobes and matching headers exist: which recvmsg each process of the
        flow enters (with stacks) during a request from the suspect ports, and the
        server's sockmap insert refused with EEXIST, the case's smoking gun."""
        if self.mechanism("recvmsg_trace") is None:
            return pd.DataFrame()
        self._suspect_ports()
        title = self.step("recvmsg_trace").title

        def request() -> Any:
            return reach.http(self.target, self.pod_ip, self.pod_port, self.path, timeout=self.timeout,
                              vantage="node -> pod", local_port=self.client_ports, cgroup=self.cgroup)  # fmt: skip

        try:
            traced = recvmsg_trace.trace(
                self.target, self.pod_port, seconds=max(4.0, self.timeout + 2), during=request
            )
        except NetlabError as exc:
            self.skipped(title, exc.message)
            return pd.DataFrame()
        self.results["recvmsg_calls"] = traced.calls
        self.results["refused_inserts"] = traced.refused
        notes = "".join(f"; {n}" for n in traced.notes)
        self.used(title, f"{recvmsg_trace.KPROBE_TRACE.name}: {', '.join(traced.attached)}; {traced.events} calls "
                         f"counted in {traced.seconds:g} s around one request from client ports "
                         f"{self.client_ports or 'any'}{notes}")  # fmt: skip
        self.evidence("recvmsg calls per process (kprobes)", traced.calls,
                      f"a server waiting in {PLAIN} on a flow whose client is on {ACCELERATED} is the case's hang")  # fmt: skip
        self.evidence("sockmap inserts the kernel refused (kprobes)", traced.refused,
                      "EEXIST: the key this socket needs is already held, by a stale entry when its owner is gone")  # fmt: skip
        return traced.calls

    # --- 4. sockmap ----------------------------------------------------------------
    def _find_map(self, host: Target) -> dict[str, Any] | None:
        """The sockops sockhash: the pin given, else Cilium's pin, else by name."""
        pin = self.sockmap or (CILIUM_PIN if host.exists(CILIUM_PIN) else "")
        if pin:
            info = host.run_json(["bpftool", "-j", "map", "show", "pinned", pin])
            if not info:
                raise NetlabError(f"parameter sockmap: nothing is pinned at {pin}")
            return {"id": int(info["id"]), "key_size": int(info["bytes_key"]),
                    "value_size": int(info["bytes_value"]), "where": f"pinned at {pin}"}  # fmt: skip
        maps = bpf_objects.maps(host)
        found = maps[(maps["name"] == SOCKMAP_NAME[:15]) & (maps["type"] == "sockhash")]
        if found.empty:
            return None
        m = found.iloc[0]
        return {"id": int(m["map_id"]), "key_size": int(m["key_size"]), "value_size": int(m["value_size"]),
                "where": f"found by name ({len(found)} sockhash(es) named {SOCKMAP_NAME})"}  # fmt: skip

    def _read_sockmap(self) -> pd.DataFrame:
        """Every key, decoded, with the socket that holds it when the iterator can run."""
        if "sockmap" in self.results:
            return self.results["sockmap"]
        self.results["sockmap"] = frame = pd.DataFrame()
        chosen = self.mechanism("sockmap_entries")
        if chosen is None:
            return frame
        host = self.target.host()
        found = self._find_map(host)
        if found is None:
            self.skipped(
                "sockmap dump",
                f"no sockhash named {SOCKMAP_NAME} (and no pin given): sockops acceleration is off",
            )
            return frame
        map_id, key_size = found["id"], found["key_size"]
        # The layout from the map's own sizes, so an empty map decodes too.
        layout = detect_layout(SOCKMAP_NAME, key_size, found["value_size"])[0]
        sockets, why = None, ""
        if chosen is not sockmap_sockets.ITERATOR:
            why = f" (no sockmap iterator: {sockmap_sockets.ITERATOR.can_run(self.node)})"
        else:
            try:
                sockets = sockmap_sockets.read(host, map_id, key_size)
            except NetlabError as exc:
                why = f" (the sockmap iterator failed: {exc.message})"
        if sockets is not None:
            entries = [
                MapEntry(key=bytes.fromhex(k), value=None, line=i) for i, k in enumerate(sockets["key_hex"])
            ]
            decoded = decode_sockmap(entries, layout=layout, map_name=SOCKMAP_NAME).drop(columns=["cookie"])
            frame = pd.concat(
                [decoded, sockets.drop(columns=["key_hex"]).rename(columns={"family": "sock_family"})], axis=1
            )
            how = f"{sockmap_sockets.ITERATOR.name} over map id {map_id}"
        else:
            frame = decode_sockmap(bpf_objects.keys(host, map_id), layout=layout, map_name=SOCKMAP_NAME)
            how = f"bpftool -j map dump id {map_id}{why}"
        frame.insert(0, "map_id", map_id)
        # Keys as hex: evidence is data (JSON), and the remediation needs the exact bytes.
        frame["key_hex"] = frame["key"].map(lambda k: bytes(k).hex())
        frame = frame.drop(columns=["key"])
        self.results["sockmap"] = frame
        self.used("sockmap dump", f"{how}, {found['where']}, keys decoded with Cilium's sock_key layout "
                                  f"(key {key_size} bytes, value {found['value_size']})")  # fmt: skip
        return frame

    def sockmap_entries(self) -> pd.DataFrame:
        """Cilium's sockops map, found by pin or name, every key decoded, with its socket."""
        frame = self._read_sockmap()
        if frame.empty:
            return frame
        per_ip = sockmap_entries_per_ip(frame)
        self.evidence("sockmap entries", frame)
        self.evidence(
            "sockmap entries per IP", per_ip, "thousands of entries for one node IP was the case's tell"
        )
        return frame

    # --- 5. stale entries ----------------------------------------------------------
    def _owners(self, entries: pd.DataFrame) -> dict[int, set[str] | None]:
        """The addresses of the namespaces the entries' sockets live in (None: no path
        reaches that namespace). Those of the pod's address first, at most
        :data:`NAMESPACES_CHECKED`."""
        host = self.target.host()
        mine = entries[entries["local"] == self.pod_ip]["netns"].tolist()
        wanted = list(dict.fromkeys([int(n) for n in mine + entries["netns"].tolist()]))[:NAMESPACES_CHECKED]
        paths = netns.paths(host)
        read = netns.each(
            host, {n: paths[n] for n in wanted if n in paths}, lambda path: netns.addresses(host, path)
        )
        return {n: read.get(n) for n in wanted}

    def _judged(self) -> pd.DataFrame:
        """Each entry with its status (cached; evidence is recorded by :meth:`stale_entries`)."""
        if "stale" in self.results:
            return self.results["stale"]
        entries = self._read_sockmap()
        self.results["stale"] = frame = pd.DataFrame()
        if entries.empty or self.mechanism("stale_entries") is None:
            return frame
        if "state" in entries:
            owners = self._owners(entries)
            pod_netns = netns.inode(self.pod) if self.pod is not None else None
            frame = judge_by_socket(entries, owners, {self.pod_ip: pod_netns} if pod_netns else None)
            unreachable = sum(v is None for v in owners.values())
            self.used(
                "stale entries", f"{BY_SOCKET.name}: {len(owners)} namespaces, {unreachable} unreachable"
            )
        elif entries["cookie"].isna().all() and BY_TUPLE.can_run(self.node) is None:
            frame = self._judged_by_tuple(entries)
        elif entries["cookie"].notna().any():
            live = [ss.sockets(t).assign(netns=where) for where, t in
                    (("node", self.target), ("pod", self.pod), ("peer pod", self.peer), ("remote", self.remote)) if t is not None]  # fmt: skip
            live = [f for f in live if len(f)]
            sockets = (
                pd.concat(live, ignore_index=True) if live else pd.DataFrame(columns=ss.COLUMNS + ["netns"])
            )
            frame = judge_by_cookie(entries, sockets)
            self.used("stale entries", BY_COOKIE.name)
        else:
            frame = judge_by_cookie(entries, pd.DataFrame(columns=ss.COLUMNS + ["netns"]))
            self.skipped("stale entries", "the sockmap iterator did not run and this map's values are not cookies: "
                                          "keys only, no entry could be verified")  # fmt: skip
        frame["key_text"] = [f"{a}:{p} -> {b}:{q}" for a, p, b, q in zip(frame["sip"], frame["sport"], frame["dip"], frame["dport"], strict=True)]  # fmt: skip
        self.results["stale"] = frame
        return frame

    def _judged_by_tuple(self, entries: pd.DataFrame) -> pd.DataFrame:
        """Keys only: each key's socket found by its tuple in the namespaces on the node."""
        host = self.target.host()
        paths = netns.paths(host)
        wanted = list(paths)[:NAMESPACES_CHECKED]
        ports = sorted({int(p) for p in entries["dport"]})
        keep = ["state", "local", "local_port", "peer", "peer_port", "inode"]
        local_ports = ports if len(ports) <= 64 else []

        def read(path: str) -> tuple[pd.DataFrame, set[str]] | None:
            tcp = ss.sockets_in(host, path, local_ports)
            addresses = netns.addresses(host, path) if tcp is not None else None
            return None if tcp is None or addresses is None else (tcp, addresses)

        found = netns.each(host, {n: paths[n] for n in wanted}, read)
        rows = [{**r, "netns": n} for n, got in found.items() if got for r in got[0][keep].to_dict("records")]
        sockets = pd.DataFrame(rows, columns=[*keep, "netns"])
        # A namespace gone while read (None) held no socket any more that a path reaches.
        owners: dict[int, set[str] | None] = {n: got[1] if got else None for n, got in found.items()}
        joined = join_by_tuple(entries, sockets, owners)
        every = len(wanted) == len(paths)
        pod_netns = netns.inode(self.pod) if self.pod is not None else None
        frame = judge_by_socket(joined, owners, {self.pod_ip: pod_netns} if pod_netns else None)
        # No reachable namespace holds the key's socket: closed, or in a namespace nothing
        # refers to any more (a deleted pod's). Said only when every namespace was read.
        gone = joined["state"].isna().to_numpy() & every
        frame.loc[gone, "status"] = "socket gone"
        frame.loc[gone, "socket"] = ("no reachable namespace has a socket of its tuple: closed, or kept in a "
                                     "namespace nothing refers to (a deleted pod's)")  # fmt: skip
        frame["stale"] = frame["status"].isin(STALE)
        vanished = sum(got is None for got in found.values())
        gone_text = f", {vanished} gone while read" if vanished else ""
        self.used("stale entries", f"{BY_TUPLE.name}: {len(wanted)} of {len(paths)} namespaces read{gone_text} "
                                   "(the sockmap iterator did not run and this map's values are not cookies)")  # fmt: skip
        return frame

    def stale_entries(self) -> pd.DataFrame:
        """Entries whose socket is not the live end of their own 5-tuple in the namespace
        that owns the address now, and the client ports they poison."""
        frame = self._judged()
        if frame.empty:
            return frame
        self._suspect_ports()
        flows = mismatched_flows(self.results.get("handlers", pd.DataFrame()))
        ports = {int(p) for p in flows["client_port"]}
        if self.port_span:
            ports |= set(range(self.port_span[0], self.port_span[1] + 1))
        probed = (
            (frame["dip"] == self.pod_ip) & (frame["dport"] == self.pod_port) & frame["sport"].isin(ports)
        )
        frame = frame.assign(blocks_probed_flow=probed)
        self.results["stale"] = frame
        shown = ["key_text", "status", "socket", "stale", "blocks_probed_flow"]
        self.evidence("sockmap entries against their sockets", frame[shown],
                      "Cilium keys a socket by its peer's view: key sip:sport -> dip:dport is held by the socket dip:dport")  # fmt: skip
        poisoned = self.results.get("poisoned_ports", pd.DataFrame({"client_port": []}))
        if len(poisoned):
            self.evidence("poisoned client ports", poisoned,
                          f"stale keys hold the server end of node -> {self.pod_ip}:{self.pod_port} from these ports: "
                          "a new connection from one is established but its server's insert fails (EEXIST)")  # fmt: skip
        return frame

    # --- 6. verdict ----------------------------------------------------------------
    @staticmethod
    def decide(evidence: Evidence) -> Findings:
        results = evidence.results
        if "scope" not in results:
            return evidence.inconclusive(["the probes (scope) did not run"])
        scope = results["scope"]
        stale = results.get("stale", pd.DataFrame())
        handlers = results.get("handlers", pd.DataFrame())
        node_http = scope[(scope["vantage"] == "node -> pod") & (scope["kind"] == "http")]["success"]
        others = scope[scope["vantage"] != "node -> pod"]["success"]
        if len(node_http) == 0 or pd.isna(node_http.iloc[0]):
            failures = scope[scope["vantage"] == "node -> pod"]["failures"]
            return evidence.inconclusive(["no node -> pod HTTP probe could run: " + "; ".join(failures)])
        node_rate = float(node_http.iloc[0])
        probes = f"node -> pod HTTP success {node_rate:.0%}" + (
            f", other vantage points {float(others.min()):.0%}" if len(others) else ""
        )
        pod_ip, pod_port = evidence.params.get("pod_ip", ""), int(evidence.params.get("pod_port", 0) or 0)
        traced = traced_handlers(results.get("recvmsg_calls", pd.DataFrame()), pod_ip, pod_port)
        flows = mismatched_flows(pd.concat([h for h in (handlers, traced) if len(h)], ignore_index=True)
                                 if len(handlers) or len(traced) else handlers)  # fmt: skip
        refused = refused_keys(results.get("refused_inserts", pd.DataFrame()), pod_ip, pod_port)
        bad = stale[stale["stale"]] if len(stale) else stale
        # A key of a mismatched flow (client accelerated, server plain) held in the map,
        # or one the server's insert was traced failing on (EEXIST): whatever socket
        # holds it, the new server socket could not have it.
        held_for_flow = stale.iloc[0:0]
        if len(stale) and (len(flows) or len(refused)):
            sport, dport = stale["sport"].astype(int), stale["dport"].astype(int)
            by_handlers = (stale["dip"].isin(flows["server"]) & dport.isin(flows["server_port"].astype(int))
                           & sport.isin(flows["client_port"].astype(int)))  # fmt: skip
            wanted = set(zip(refused["sip"], refused["sport"], refused["dip"], refused["dport"], strict=True))
            by_trace = pd.Series([k in wanted for k in zip(stale["sip"], sport, stale["dip"], dport, strict=True)],
                                 index=stale.index)  # fmt: skip
            held_for_flow = stale[by_handlers | by_trace]
        refused_text = "; ".join(f"insert of server socket {r.dip}:{r.dport} <- {r.sip}:{r.sport} refused with EEXIST"
                                 for r in refused.itertuples())  # fmt: skip
        if len(bad) == 0 and len(held_for_flow) == 0 and len(refused):
            return evidence.inconclusive([f"{refused_text} (kprobe trace), but no sockmap entry holding that key was "
                                          "read: " + probes])  # fmt: skip
        if len(bad) == 0 and len(held_for_flow) == 0:
            unverified = int((stale["status"] == "not verified").sum()) if len(stale) else 0
            if unverified:
                return evidence.inconclusive([f"{unverified} of {len(stale)} sockmap entries could not be verified "
                                              "(no iterator, no cookies); " + probes])  # fmt: skip
            if node_rate < 1.0:
                return evidence.inconclusive([f"node -> pod requests fail ({probes}) but no sockmap entry is stale"
                                              + ("" if "sockmap" in results and len(results["sockmap"]) else " (no sockmap entries)")])  # fmt: skip
            checked = (
                f"all {len(stale)} sockmap entries belong to the live socket of their own 5-tuple"
                if len(stale)
                else "the sockmap is empty"
            )
            return evidence.findings(HEALTHY, f"All probes succeed ({probes}) and {checked}.")
        # The entry that broke the flow we looked at first, then one blocking a probed port.
        ranked = pd.concat([held_for_flow.assign(rank=0), bad.assign(rank=1)])
        if "blocks_probed_flow" in ranked:
            ranked["rank"] += (~ranked["blocks_probed_flow"].astype(bool)).astype(int) * 0.5
        culprit = ranked.sort_values("rank", kind="stable").iloc[0]
        poisoned = (
            results.get("poisoned_ports", pd.DataFrame({"client_port": []}))["client_port"]
            .astype(int)
            .tolist()
        )
        flow_text = "; ".join(f"client {r.client}:{r.client_port} uses {ACCELERATED}, server {r.server}:{r.server_port} "
                              f"uses {PLAIN}" for r in flows.itertuples()) or "handlers not seen on a held flow"  # fmt: skip
        summary = (f"Stale sockmap entry {culprit['key_text']} ({culprit['status']}: {culprit['socket']}). "
                   f"{len(bad)} of {len(stale)} entries are stale"
                   + (f"; they poison client ports {', '.join(map(str, poisoned))}" if poisoned else "")
                   + f". {probes}. The stuck flow: {flow_text}."
                   + (f" Traced: {refused_text}." if refused_text else ""))  # fmt: skip
        remediation = []
        key = (
            bytes.fromhex(str(culprit["key_hex"]))
            if "key_hex" in culprit and isinstance(culprit["key_hex"], str)
            else b""
        )
        if key:
            argv = bpftool_map_delete_argv(key, map_id=int(culprit["map_id"]))
            remediation.append(
                " ".join(argv) + "   # removes the stale key; the next connection's insert then succeeds"
            )
        remediation.append(
            "or drain and restart the node's agent (the case's own fix) — never both while traffic flows"
        )
        reasons = [
            f"stale key {culprit['key_text']}",
            f"status: {culprit['status']}",
            f"socket: {culprit['socket']}",
        ]
        if len(flows):
            reasons.append(f"handler mismatch: {flow_text}")
        if len(refused):
            reasons.append(f"kprobe trace: {refused_text}")
        return evidence.findings(VERDICT, summary, remediation=remediation, reasons=reasons)

    @staticmethod
    def triage(target: Target) -> Signal:
        """Quick look: is there a sockops map, and does it hold more entries than the node
        has established TCP sockets (entries outliving their sockets)?"""
        maps = bpf_objects.maps(target.host())
        found = maps[maps["name"] == SOCKMAP_NAME[:15]]
        if found.empty:
            return Signal("stuck-tcp", NOTHING, "no sockops map: sockmap acceleration is not in use")
        entries = len(bpf_objects.keys(target.host(), int(found["map_id"].iloc[0])))
        established = len(ss.sockets(target).query("state == 'ESTAB'"))
        if entries > max(2 * established, 0):
            return Signal(
                "stuck-tcp", LIKELY, f"{entries} sockmap entries for {established} established sockets here"
            )
        return Signal("stuck-tcp", WORTH_A_LOOK if entries else NOTHING, f"{entries} sockmap entries")
