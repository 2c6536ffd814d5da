"""Case 001: where packets vanish — drop points, the netfilter rule, the conntrack state.

During a reproduction window the investigation samples packet counters on every hop of
the flow, counts the flow's drops by reason, location and stack (in the kernel, filtered
by the flow, where the node allows it), snapshots the netfilter counters (iptables or
ip6tables, and nft) and records the flow's conntrack events. Only REJECT/DROP rules whose
matches can apply to the flow are blamed, on their counters' movement during the window. A stateful FORWARD rule set
that accepts only ``RELATED,ESTABLISHED`` rejects the late packets of a half-closed flow
whose conntrack entry has moved on (FIN_WAIT, CLOSE_WAIT) or expired; the REJECT answers
with an ICMP error from the node's own address, invisible to a capture filtered on the
client and server addresses.

Read-only: the probes are a BPF program held by one process (or a tracefs instance),
``conntrack -E``, ``iptables-save -c`` and counters, all gone afterwards. In the lab the
window also runs the lab's client; on a real node the user reproduces the failure during
the window, or gives the command that does (``trigger``).
"""

from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from netlab import params
from netlab.capability import Mechanism, Step
from netlab.collectors import conntrack, counters, iptables, nft
from netlab.errors import NetlabError
from netlab.findings import HEALTHY, Findings
from netlab.investigations.base import LIKELY, NOTHING, WORTH_A_LOOK, Evidence, Investigation, Param, Signal
from netlab.probes import control, drops
from netlab.targets import Target

VERDICT = "netfilter-drop"
# The window itself needs nothing: it runs whatever the other steps can collect here.
WINDOW = Mechanism("one bounded window: counters and rule sets before and after, drops and conntrack during")


def transitions(ct: pd.DataFrame | None) -> dict[str, list[str]]:
    """Each flow's conntrack states in order, repeats collapsed."""
    if ct is None or ct.empty:
        return {}
    out: dict[str, list[str]] = {}
    for flow, group in ct.sort_values("time").groupby("flow"):
        states: list[str] = []
        for state in group["state"]:
            if not states or states[-1] != state:
                states.append(state)
        out[str(flow)] = states
    return out


# Where a drop with no reason (kernels before 5.17) is netfilter's: the hook or a table.
NETFILTER_SITES = frozenset(
    {"nf_hook_slow", "nft_do_chain", "ipt_do_table", "ip6t_do_table", "nf_hook_slow_list"}
)
HALF_CLOSED = ("FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE")


def _protocol(value: Any, name: str) -> str:
    if value not in ("tcp", "udp"):
        raise NetlabError(f"parameter {name}: {value!r} must be tcp or udp")
    return str(value)


def netfilter_drops(summary: pd.DataFrame) -> pd.DataFrame:
    """Drops netfilter decided: reason NETFILTER_DROP, or, on kernels without drop
    reasons, a location or stack in netfilter's hook or tables."""
    if summary.empty:
        return summary
    real = summary[summary["kind"] == "drop"]
    by_reason = real["reason"] == "NETFILTER_DROP"
    by_site = (real["reason"] == "") & real.apply(
        lambda r: r["function"] in NETFILTER_SITES or any(f in NETFILTER_SITES for f in str(r["stack"]).split(" <- ")[:4]),
        axis=1,
    ) if len(real) else by_reason  # fmt: skip
    return real[by_reason | by_site]


def flow_states(ct: pd.DataFrame | None, packet: dict[str, Any]) -> tuple[str, list[str]]:
    """The conntrack flow of a dropped packet (either direction) and its states in order."""
    if ct is None or ct.empty:
        return "", []
    s, d = packet.get("src", ""), packet.get("dst", "")
    sp, dp = int(packet.get("sport") or 0), int(packet.get("dport") or 0)

    def same(row: pd.Series, a: str, ap: int, b: str, bp: int) -> bool:
        return row["src"] == a and row["dst"] == b and (not ap or int(row["sport"]) == ap) and (
            not bp or int(row["dport"]) == bp)  # fmt: skip

    mine = ct[ct.apply(lambda r: same(r, s, sp, d, dp) or same(r, d, dp, s, sp), axis=1)]
    if mine.empty:
        return "", []
    flows = transitions(mine)
    # Without the packet's ports (a trace that is not flow-filtered) the likeliest is a
    # connection conntrack saw half-closed that never finished closing (TIME_WAIT).
    flow, states = max(flows.items(), key=lambda kv: (
        any(x in HALF_CLOSED for x in kv[1]) and "TIME_WAIT" not in kv[1], len(kv[1])))  # fmt: skip
    return flow, states


_IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")


def _native_nft(rule: pd.Series) -> bool:
    """A rule from the nft view that iptables-nft did not write: only nft itself can
    change it. iptables-nft leaves xt matches, and keeps to its own tables of the ip and
    ip6 families."""
    if pd.isna(rule.get("handle")) or "xt " in str(rule.get("rule", "")):
        return False
    return not (rule.get("family") in ("ip", "ip6") and rule.get("table") in _IPTABLES_TABLES)


def _tool(rule: pd.Series) -> str:
    if _native_nft(rule):
        return "nft"
    return "ip6tables" if rule.get("family") in ("ipv6", "ip6") else "iptables"


def _rule_name(rule: pd.Series) -> str:
    if _native_nft(rule):
        return (f"nft {rule['family']} {rule['table']}/{rule['chain']} rule {rule['position']} "
                f"(handle {int(rule['handle'])}, {rule['target']}: {rule['rule']})")  # fmt: skip
    return f"{_tool(rule)} {rule['table']}/{rule['chain']} rule {rule['position']} ({rule['target']}: {rule['rule']})"


def _endpoint(packet: dict[str, Any], end: str) -> str:
    address, port = str(packet.get(end, "")), int(packet.get("sport" if end == "src" else "dport") or 0)
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port else host


def remediation(
    rule: pd.Series, packet: dict[str, Any], given: dict[str, Any], half_closed: bool
) -> list[str]:
    """Rule changes that let this flow's packets past ``rule`` (shown, never applied):
    stateless accepts for the flow, both directions, inserted just before it, written
    for the tool that owns the rule (iptables, ip6tables, or nft for a native rule)."""
    client, server = (
        given.get("client") or packet.get("src", ""),
        given.get("server") or packet.get("dst", ""),
    )
    proto, port = given.get("protocol", "tcp"), int(given.get("server_port") or 0)
    iface = str(packet.get("interface") or given.get("host_veth") or "")
    if _native_nft(rule):
        where = (
            f"nft insert rule {rule['family']} {rule['table']} {rule['chain']} handle {int(rule['handle'])}"
        )
        ip = "ip6" if ":" in f"{client}{server}" else "ip"
        forward = [f"{ip} saddr {client}" if client else "", f"{ip} daddr {server}" if server else "",
                   f"{proto} dport {port}" if port else f"meta l4proto {proto}"]  # fmt: skip
        backward = [f"{ip} saddr {server}" if server else "", f"{ip} daddr {client}" if client else "",
                    f"{proto} sport {port}" if port else f"meta l4proto {proto}"]  # fmt: skip
        accept, in_, out_ = "accept", "iifname", "oifname"
    else:
        where = f"{_tool(rule)} -t {rule['table']} -I {rule['chain']} {int(rule['position'])}"
        forward = [f"-s {client}" if client else "", f"-d {server}" if server else "", f"-p {proto}",
                   f"--dport {port}" if port else ""]  # fmt: skip
        backward = [f"-s {server}" if server else "", f"-d {client}" if client else "", f"-p {proto}",
                    f"--sport {port}" if port else ""]  # fmt: skip
        accept, in_, out_ = "-j ACCEPT", "-i", "-o"
    out = [
        f"{where} {' '.join(w for w in forward if w)} {accept}   # this flow no longer depends on a live conntrack entry",
        f"{where} {' '.join(w for w in backward if w)} {accept}",
    ]
    if iface and str(rule["chain"]).upper() == "FORWARD":
        out.append(f"or for everything the pod on {iface} sends and receives: {where} {in_} {iface} {accept}; "
                   f"{where} {out_} {iface} {accept}")  # fmt: skip
    if half_closed:
        out.append("or keep the stateful rule and raise net.netfilter.nf_conntrack_tcp_timeout_close_wait "
                   "(and keep nf_conntrack_tcp_loose=1) so half-closed flows keep their entry")  # fmt: skip
    return out


def _reproduce(value: Any, name: str) -> str:
    if value != "lab":
        raise NetlabError(f"parameter {name}: {value!r} must be 'lab' or empty")
    return "lab"


class PacketDrops(Investigation):
    name = "packet-drops"
    title = "Where packets vanish: drop points, netfilter rules and conntrack states"
    notebook = "packet-drops.ipynb"
    scenario = "conntrack-reject"
    params = (
        Param("client", str, "", "the client's address (a pod)", params.ip_address, lab="client"),
        Param("server", str, "", "the server's address", params.ip_address, lab="server"),
        Param("server_port", int, 0, "the server's port (0: any)", params.port, lab="server_port"),
        Param("protocol", str, "tcp", "the flow's protocol: tcp or udp", _protocol),
        Param("duration", float, 8.0, "seconds of the capture window", params.seconds_up_to(3600)),
        Param("max_events", int, 20000, "drop events kept at most", params.up_to(10_000_000)),
        Param("pod_netns", str, "", "the client pod's network namespace (for its veth counters)", params.name,
              lab="pod_netns.pod1"),
        Param("uplink", str, "eth0", "the node's uplink interface", params.interface),
        Param("host_veth", str, "", "the host side of the pod's veth", params.interface, lab="interfaces.host_veth"),
        Param("reproduce", str, "", "'lab': run the lab scenario's client during the window", _reproduce,
              lab="reproduce"),
        Param("trigger", str, "", "a command that reproduces the failure, run when the window opens (in the pod's "
              "namespace if pod_netns is given; no shell)", params.command_line),
    )  # fmt: skip
    steps = (
        Step("capture", "window", (WINDOW,)),
        Step("path_counters", "along the path", (counters.LINK_COUNTERS,)),
        Step("drop_points", "drop points", drops.MECHANISMS),
        Step("netfilter_rule", "netfilter rules", (iptables.SAVE_COUNTERS, nft.RULESET)),
        Step("conntrack_timeline", "conntrack", (conntrack.EVENTS,)),
    )

    def prepare(self) -> None:
        v = self.values
        self.client, self.server, self.server_port = v["client"], v["server"], v["server_port"]
        self.duration, self.max_events = v["duration"], v["max_events"]
        self.pod = self.target.host().netns(v["pod_netns"]) if v["pod_netns"] else None
        self.uplink, self.host_veth = v["uplink"], v["host_veth"]
        self.flow = drops.Flow(self.client, self.server, self.server_port, protocol=v["protocol"])
        self.family = "ipv6" if self.flow.version == 6 else "ipv4"
        self._window: dict[str, Any] = {}

    def _trigger(self) -> Any:
        """The user's reproduction command as the window's ``during``, or None."""
        if not self.values["trigger"]:
            return None
        where = self.pod or self.target
        argv = shlex.split(self.values["trigger"])

        def run() -> dict[str, Any]:
            result = where.run(argv, timeout=self.duration + drops.REPRODUCTION_GRACE, check=False)
            return {"trigger": self.values["trigger"], "exit": result.returncode,
                    "last line": (result.stderr or result.stdout).strip().splitlines()[-1:]}  # fmt: skip

        return run

    # --- the window ---------------------------------------------------------------
    def capture(self) -> pd.DataFrame:
        """The reproduction window: counters before, drop trace and conntrack events
        during (while the lab's client runs, in the lab), counters after."""
        if self.values["reproduce"] == "lab" and self.during is None:
            raise NetlabError("parameter reproduce: 'lab' needs a running lab scenario (the lab parameter)")
        self.mechanism("capture")
        # What this node can collect, chosen once for the window and recorded per step.
        self._chosen = {m: self.mechanism(m) for m in ("path_counters", "drop_points", "netfilter_rule",
                                                       "conntrack_timeline")}  # fmt: skip
        node = self.target
        before = self._sample()
        watch = None
        if self._chosen["conntrack_timeline"] is not None:
            watch = conntrack.EventWatch(node, self.duration + drops.REPRODUCTION_GRACE + 120,
                                         port=self.server_port or None)  # fmt: skip
        during = self.during if self.during is not None else self._trigger()
        if during is None:
            control.announce(f"packet-drops on {node.url}: reproduce the failure now; the capture window is open "
                             f"for {self.duration:g} s (or give the command that does: -p trigger '...')")  # fmt: skip
        try:
            chosen = self._chosen["drop_points"]
            self.results["flow_filtered"] = chosen in (drops.IN_KERNEL, drops.KPROBE_COUNTER)
            if chosen is not None:
                trace = drops.trace(node, self.duration, flow=self.flow, mechanism=chosen,
                                    has_reason=self.node.ok(drops.DROP_REASONS), max_events=self.max_events,
                                    during=during, step="capture window" if during else "capture window: reproduce now")  # fmt: skip
                self.results["drops"] = trace.summary
                self.used("drop points", trace.mechanism)
                outcome, dropped, capped = trace.during, int(trace.summary["count"].sum()), trace.capped
            else:
                trace, dropped, capped = None, None, False
                outcome = during() if during is not None else None
        except BaseException:
            if watch is not None:  # a watcher never outlives the window, whatever ended it
                try:
                    watch.stop()
                except NetlabError:
                    pass
            raise
        ct, ct_error = pd.DataFrame(), ""
        if watch is not None:
            try:
                ct = watch.stop()
            except NetlabError as exc:  # recorded for the step: the window's other evidence stands
                ct_error = exc.message
        after = self._sample()
        if ct_error:
            self.skipped("conntrack", f"the conntrack -E watcher failed: {ct_error}")
        self._window = {
            "before": before,
            "after": after,
            "trace": trace,
            "ct": ct,
        }
        summary = {"window_s": self.duration, "drop_events": dropped, "capped": capped,
                   "reproduction": str(outcome) if outcome is not None else "none"}  # fmt: skip
        self.results["window"] = pd.DataFrame([summary])
        how = ("the lab's reproduction" if self.during is not None else
               f"trigger: {self.values['trigger']}" if self.values["trigger"] else "reproduced by hand (prompted)")  # fmt: skip
        self.evidence("the capture window", self.results["window"], how)
        return self.results["window"]

    def _sample(self) -> dict[str, pd.DataFrame]:
        sample: dict[str, pd.DataFrame] = {}
        if self._chosen["path_counters"] is not None:
            links = [counters.links(self.target, "node")]
            if self.pod is not None:
                links.append(counters.links(self.pod, "pod"))
            sample["links"] = pd.concat(links, ignore_index=True)
            sample["snmp"] = counters.snmp(self.target)
        if self._chosen["netfilter_rule"] is iptables.SAVE_COUNTERS:
            sample["rules"] = iptables.rules(self.target, family=self.family)
        # Native nftables rules (not written by iptables-nft) only show in the nft view.
        if self._chosen["netfilter_rule"] is not None and self.node.ok(nft.NFT):
            sample["nft"] = nft.ruleset(self.target)
        return sample

    def _need_window(self) -> None:
        if not self._window:
            self.capture()

    # --- steps --------------------------------------------------------------------
    def path_counters(self) -> pd.DataFrame:
        """Per-hop packet counts over the window: where the counts diverge."""
        self._need_window()
        if "links" not in self._window["before"]:
            return pd.DataFrame()
        b, a = self._window["before"]["links"], self._window["after"]["links"]
        d = counters.delta(b, a, ["where", "interface"])
        hops = {
            ("node", self.uplink): "node uplink",
            ("node", self.host_veth): "host-side veth",
            ("pod", "eth0"): "pod-side veth",
        }
        d["hop"] = [hops.get((w, i), "") for w, i in zip(d["where"], d["interface"], strict=False)]
        d = d[(d["hop"] != "") | (d[["rx_packets", "tx_packets"]].sum(axis=1) > 0)].sort_values(
            "hop", ascending=False
        )
        icmp = counters.delta(
            self._window["before"]["snmp"], self._window["after"]["snmp"], ["group", "counter"]
        )
        group = "Icmp6" if self.flow.version == 6 else "Icmp"
        sent = icmp[(icmp["group"] == group) & (icmp["counter"] == "OutDestUnreachs")]["value"].sum()
        self.results["icmp_unreach_sent"] = int(sent)
        self.evidence("packets per hop during the window", d,
                      f"the node sent {int(sent)} ICMP destination-unreachable errors ({group} OutDestUnreachs)")  # fmt: skip
        return d

    def drop_points(self) -> pd.DataFrame:
        """Drops by (reason, location, stack), most frequent first."""
        self._need_window()
        trace: drops.DropTrace | None = self._window["trace"]
        if trace is None:
            return pd.DataFrame()
        self.evidence("drop points (skb:kfree_skb)", trace.summary, "; ".join(trace.notes) or trace.mechanism)
        return trace.summary

    def drop_chart(self) -> go.Figure:
        import plotly.express as px  # only where a chart is drawn: ~0.06 s to import

        self._need_window()
        trace = self._window["trace"]
        if trace is None or trace.summary.empty:
            return go.Figure().update_layout(title="no drops in the window")
        return px.bar(trace.summary, x="count", y="location", color="reason", orientation="h",
                      title="drops by location and reason", hover_data=["stack"])  # fmt: skip

    def netfilter_rule(self) -> pd.DataFrame:
        """Rules whose counters moved during the window; REJECT/DROP rules first."""
        self._need_window()
        before, after = self._window["before"], self._window["after"]
        nft_moved = pd.DataFrame()
        if "nft" in after:
            key = ["family", "table", "chain", "handle"]
            nft_moved = after["nft"].merge(
                before["nft"][key + ["packets"]], on=key, how="left", suffixes=("", "_before")
            )
            nft_moved["packets_delta"] = nft_moved["packets"].fillna(0) - nft_moved["packets_before"].fillna(
                0
            )
            nft_moved = nft_moved[nft_moved["packets_delta"] > 0]
        # Native nftables rules: those iptables-nft did not write (it leaves xt matches).
        native = (
            nft_moved[~nft_moved["rule"].str.contains("xt ", regex=False)] if len(nft_moved) else nft_moved
        )
        if "nft" in after:
            self.results["nft_moved"] = native
        if "rules" in after:
            moved = iptables.counter_deltas(before["rules"], after["rules"])
            moved = moved[moved["packets_delta"] > 0].copy()
            moved["excluded_by"] = [self._excluded(r) for r in moved["rule"]]
        elif "nft" in after:
            # Without iptables the nft view stands in, every rule of it: verdict as target.
            moved = nft_moved.assign(
                target=nft_moved["verdict"].str.upper(), new=nft_moved["packets_before"].isna()
            )
            moved["excluded_by"] = [self._excluded(r, family) for r, family in zip(moved["rule"], moved["family"],
                                                                                    strict=True)]  # fmt: skip
        else:
            return pd.DataFrame()
        moved["verdict_rule"] = moved["target"].isin(["REJECT", "DROP"])
        moved = moved.sort_values(["verdict_rule", "packets_delta"], ascending=False)
        self.results["rules_moved"] = moved
        if len(native):
            self.evidence(
                "native nftables rules whose counters moved", native.drop(columns=["packets_before"])
            )
        self.evidence("netfilter rules whose counters moved", moved,
                      f"REJECT and DROP rules first; excluded_by: why a rule cannot match {self.flow}; "
                      "new: added during the window (its counts are its whole history)")  # fmt: skip
        return moved

    def _dropped_packet(self) -> dict[str, Any]:
        """The flow's dropped packet as the drop trace saw it (netfilter's first), else
        the flow as given."""
        summary = self.results.get("drops")
        if summary is not None and len(summary) and self.results.get("flow_filtered"):
            nf = netfilter_drops(summary)
            if len(nf):
                return dict(nf.iloc[0])
        return {
            "src": self.client,
            "dst": self.server,
            "sport": 0,
            "dport": self.server_port,
            "interface": "",
        }

    def _excluded(self, rule: str, nft_family: str = "") -> str:
        """Why ``rule`` (iptables-save's, or with ``nft_family`` an nft rule of a table of
        that family) cannot match the flow's packets in either direction ("" if it may)."""
        p = self._dropped_packet()
        from_client = not self.client or p["src"] == self.client
        client_iface = str(p.get("interface") or self.host_veth) if from_client else ""

        def check(rule: str, **packet: Any) -> str:
            if nft_family:
                return nft.applies(rule, family=nft_family, **packet)
            return iptables.applies(rule, **packet)

        forward = check(rule, src=p["src"], dst=p["dst"], protocol=self.flow.protocol,
                                   sport=int(p["sport"] or 0), dport=int(p["dport"] or 0),
                                   in_iface=client_iface)  # fmt: skip
        backward = check(rule, src=p["dst"], dst=p["src"], protocol=self.flow.protocol,
                                    sport=int(p["dport"] or 0), dport=int(p["sport"] or 0),
                                    out_iface=client_iface)  # fmt: skip
        return forward if forward and backward else ""

    def conntrack_timeline(self) -> pd.DataFrame:
        """The flow's conntrack events in order: its state transitions."""
        self._need_window()
        ct: pd.DataFrame = self._window["ct"]
        if ct.empty:
            self.evidence(
                "conntrack events of the flow", ct, "no events (flow idle, or conntrack not in use)"
            )
            return ct
        ct = ct.copy()

        def end(address: pd.Series, port: pd.Series) -> pd.Series:
            host = address.where(~address.str.contains(":"), "[" + address + "]")
            return host + ":" + port.astype(str)

        ct["flow"] = end(ct["src"], ct["sport"]) + " -> " + end(ct["dst"], ct["dport"])
        ct["state"] = ct["state"].where(ct["state"] != "", ct["event"])
        self.results["ct_flows"] = ct
        self.evidence("conntrack events of the flow", ct[["time", "event", "state", "flow", "flags"]])
        return ct[["time", "event", "state", "flow", "timeout", "flags"]]

    def conntrack_chart(self) -> go.Figure:
        import plotly.express as px  # only where a chart is drawn: ~0.06 s to import

        ct = self.results.get("ct_flows")
        if ct is None:
            ct = self.conntrack_timeline()
        if ct.empty:
            return go.Figure().update_layout(title="no conntrack events")
        when = pd.to_datetime(ct["time"], unit="s")
        return px.scatter(ct.assign(when=when), x="when", y="flow", color="state", symbol="event",
                          title="conntrack state of each flow over the window")  # fmt: skip

    @staticmethod
    def decide(evidence: Evidence) -> Findings:
        results, given = evidence.results, evidence.params
        missing = [k for k in ("drops", "rules_moved") if k not in results]
        if missing:
            return evidence.inconclusive([f"step result {k!r} was not collected" for k in missing])
        summary_ = results["drops"]
        filtered = bool(results.get("flow_filtered", False))
        real = summary_[summary_["kind"] == "drop"] if len(summary_) else summary_
        nf = netfilter_drops(summary_)
        rules = results["rules_moved"].copy()
        for column, default in (("new", False), ("excluded_by", "")):
            if column not in rules:
                rules[column] = default
        rejecting = rules[rules["verdict_rule"]] if len(rules) else rules
        blocking = rejecting[~rejecting["new"].astype(bool) & (rejecting["excluded_by"].fillna("") == "")]
        innocent = [f"not blamed: {_rule_name(r)} ({r['excluded_by'] or 'added during the window'}; "
                    f"+{int(r['packets_delta'])} packets of other traffic)"
                    for _, r in rejecting.iterrows() if r["excluded_by"] or r["new"]]  # fmt: skip
        window = f"the {given['duration']:g} s window"
        what = "this flow's" if filtered else "the node's"

        def sites(frame: pd.DataFrame) -> list[str]:
            return [f"{int(r['count'])} drop(s): {r['reason'] or 'no reason (kernel < 5.17)'} at "
                    f"{r['function'] or r['location']}" for _, r in frame.iterrows()]  # fmt: skip

        if nf.empty and (blocking.empty or filtered):
            # With the flow filter, a rule that moved but dropped none of the flow's
            # packets dropped other traffic: it is named, not blamed.
            others = [f"REJECT/DROP rule moved but dropped none of the flow's packets: {_rule_name(r)}"
                      for _, r in blocking.iterrows()]  # fmt: skip
            label = "flow's drops (not netfilter)" if filtered else "unrelated drops"
            reasons = [f"{label}: {x}" for x in sites(real)] + others + innocent
            return evidence.findings(HEALTHY, f"No netfilter drop of {what} packets during {window} and no "
                                     "REJECT/DROP rule that can match the flow dropped it.", reasons=reasons)  # fmt: skip
        if blocking.empty or nf.empty:
            why = sites(real) + innocent
            if blocking.empty:
                why.insert(0, "netfilter dropped packets, but no REJECT/DROP rule that can match the flow moved "
                              "(a chain policy, or a rule outside iptables/nft's view)")  # fmt: skip
            else:
                why.insert(
                    0, "a REJECT/DROP rule that can match the flow moved, but no netfilter drop was traced"
                )
            return evidence.inconclusive(why)
        rule = blocking.sort_values(["table", "chain", "position"]).iloc[0]
        # Prefer a row with its kernel stack (a stack can be lost when the buffer wraps).
        where = (
            nf.assign(has_stack=nf["stack"] != "")
            .sort_values(["has_stack", "count"], ascending=False)
            .iloc[0]
        )
        packet = dict(where) if filtered else {"src": given.get("client", ""), "dst": given.get("server", ""),
                                               "sport": 0, "dport": given.get("server_port", 0)}  # fmt: skip
        flow, states = flow_states(results.get("ct_flows"), packet)
        site = where["function"] or where["location"]
        stack = " <- ".join(str(where["stack"] or site).split(" <- ")[:4])
        reason = where["reason"] or "no reason (kernel < 5.17), at a netfilter site"
        if filtered:
            same = nf[(nf["src"] == packet["src"]) & (nf["sport"] == packet["sport"]) & (nf["dst"] == packet["dst"])
                      & (nf["dport"] == packet["dport"])]  # fmt: skip
            dropped = f"{int(same['count'].sum())} packets of {_endpoint(packet, 'src')} -> {_endpoint(packet, 'dst')}"
            if len(same) < len(nf):
                dropped += (
                    f" (and {int(nf['count'].sum() - same['count'].sum())} of the flow's other connections)"
                )
        else:
            dropped = f"{int(rule['packets_delta'])} packets"
        summary = f"{dropped} were dropped by {_rule_name(rule)}, with {reason} at {site} ({stack})."
        if states:
            guess = "" if filtered else " (the likeliest: the trace saw no ports)"
            summary += f" Conntrack: the flow {flow}{guess} went {' -> '.join(states)} before its late packets were dropped."
        icmp = "ICMPv6" if ":" in str(packet.get("dst", "")) else "ICMP"
        summary += (f" The node sent {results.get('icmp_unreach_sent', 0)} {icmp} destination-unreachable errors "
                    "from its own address in the window (a node-wide count).")  # fmt: skip
        if not filtered:
            summary += (
                " The drop trace was not flow-filtered on this node: the site is the node's netfilter drops."
            )
        reasons = [f"rule: {_rule_name(rule)} (+{int(rule['packets_delta'])} packets in the window)",
                   f"drop site: {site} ({reason})"]  # fmt: skip
        if states:
            reasons.append(f"conntrack of {flow}: {' -> '.join(states)}")
        reasons += [
            f"also moved and may match the flow: {_rule_name(r)}" for _, r in blocking.iloc[1:].iterrows()
        ]
        reasons += innocent
        return evidence.findings(VERDICT, summary, remediation=remediation(rule, packet, given, bool(states)),
                                 reasons=reasons)  # fmt: skip

    @staticmethod
    def triage(target: Target) -> Signal:
        """Quick look: REJECT/DROP rules that have matched packets, and conntrack drops."""
        rules = iptables.rules(target)
        hit = rules[rules["target"].isin(["REJECT", "DROP"]) & (rules["packets"].fillna(0) > 0)]
        if len(hit):
            top = hit.sort_values("packets", ascending=False).iloc[0]
            return Signal("packet-drops", LIKELY if top["chain"] == "FORWARD" else WORTH_A_LOOK,
                          f"{top['table']}/{top['chain']} rule {top['position']} ({top['target']}) matched {top['packets']} packets")  # fmt: skip
        return Signal("packet-drops", NOTHING, "no REJECT/DROP rule has matched packets")
