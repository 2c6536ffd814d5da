"""Case 001: where packets vanish — drop points, the netfilter rule, the conntrack state.

During a reproduction window the investigation samples packet counters on every hop of
the flow, traces ``skb:kfree_skb`` drops with reason, location and stack, snapshots the
netfilter counters and records the flow's conntrack events. A stateful FORWARD rule set
that accepts only ``RELATED,ESTABLISHED`` rejects the late packets of a half-closed flow
whose conntrack entry has moved on (FIN_WAIT, CLOSE_WAIT) or expired; the REJECT answers
with an ICMP error from the node's own address, invisible to a capture filtered on the
client and server addresses.

Read-only: the probes are a tracefs instance (removed afterwards), ``conntrack -E``,
``iptables-save -c`` and counters. In the lab the window also runs the lab's client, the
one thing that sends traffic.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from netlab import params
from netlab.capability import Mechanism, Step
from netlab.collectors import conntrack, counters, iptables, nft
from netlab.errors import NetlabError
from netlab.findings import HEALTHY, Findings
from netlab.investigations.base import LIKELY, NOTHING, WORTH_A_LOOK, Evidence, Investigation, Param, Signal
from netlab.probes import drops
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
        Param("duration", float, 8.0, "seconds of the capture window", params.seconds_up_to(3600)),
        Param("max_events", int, 20000, "drop events kept at most", params.up_to(10_000_000)),
        Param("pod_netns", str, "", "the client pod's network namespace (for its veth counters)", params.name,
              lab="pod_netns.pod1"),
        Param("uplink", str, "eth0", "the node's uplink interface", params.interface),
        Param("host_veth", str, "", "the host side of the pod's veth", params.interface, lab="interfaces.host_veth"),
        Param("reproduce", str, "", "'lab': run the lab scenario's client during the window", _reproduce,
              lab="reproduce"),
    )  # fmt: skip
    steps = (
        Step("capture", "window", (WINDOW,)),
        Step("path_counters", "along the path", (counters.LINK_COUNTERS,)),
        Step("drop_points", "drop points", (drops.KFREE_SKB,)),
        Step("netfilter_rule", "netfilter rules", (iptables.SAVE_COUNTERS, nft.RULESET)),
        Step("conntrack_timeline", "conntrack", (conntrack.EVENTS,)),
    )

    def prepare(self) -> None:
        v = self.values
        self.client, self.server, self.server_port = v["client"], v["server"], v["server_port"]
        self.duration, self.max_events = v["duration"], v["max_events"]
        self.pod = self.target.host().netns(v["pod_netns"]) if v["pod_netns"] else None
        self.uplink, self.host_veth = v["uplink"], v["host_veth"]
        self._window: dict[str, Any] = {}

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
        events: dict[str, pd.DataFrame] = {}

        def watch_conntrack() -> None:
            try:
                events["ct"] = conntrack.events(node, self.duration, port=self.server_port or None)
            except NetlabError as exc:  # recorded for the step, not lost in a thread
                events["ct_error"] = exc.message

        ct_thread = threading.Thread(target=watch_conntrack, daemon=True)
        if self._chosen["conntrack_timeline"] is not None:
            ct_thread.start()
        if self._chosen["drop_points"] is not None:
            trace = drops.trace(node, self.duration, max_events=self.max_events, during=self.during)
            self.results["drops"] = trace.summary
            self.used("drop points", trace.mechanism)
            outcome, dropped, capped = trace.during, int((trace.events["kind"] == "drop").sum()), trace.capped
        else:
            trace, dropped, capped = None, None, False
            outcome = self.during() if self.during is not None else None
        if ct_thread.is_alive():
            ct_thread.join(timeout=self.duration + 15)
        after = self._sample()
        if "ct_error" in events:
            self.skipped("conntrack", f"the conntrack -E watcher failed: {events['ct_error']}")
        self._window = {
            "before": before,
            "after": after,
            "trace": trace,
            "ct": events.get("ct", pd.DataFrame()),
        }
        summary = {"window_s": self.duration, "drop_events": dropped, "capped": capped,
                   "reproduction": str(outcome) if outcome is not None else "none"}  # fmt: skip
        self.results["window"] = pd.DataFrame([summary])
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
            sample["rules"] = iptables.rules(self.target)
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
        sent = icmp[(icmp["group"] == "Icmp") & (icmp["counter"] == "OutDestUnreachs")]["value"].sum()
        self.results["icmp_unreach_sent"] = int(sent)
        self.evidence("packets per hop during the window", d,
                      f"the node sent {int(sent)} ICMP destination-unreachable errors (Icmp OutDestUnreachs)")  # fmt: skip
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
            d = iptables.counter_deltas(before["rules"], after["rules"])
            moved = d[d["packets_delta"] > 0].copy()
        elif "nft" in after:
            # Without iptables the nft view stands in, every rule of it: verdict as target.
            moved = nft_moved.assign(target=nft_moved["verdict"].str.upper())
        else:
            return pd.DataFrame()
        moved["verdict_rule"] = moved["target"].isin(["REJECT", "DROP"])
        moved = moved.sort_values(["verdict_rule", "packets_delta"], ascending=False)
        self.results["rules_moved"] = moved
        if len(native):
            self.evidence(
                "native nftables rules whose counters moved", native.drop(columns=["packets_before"])
            )
        self.evidence("netfilter rules whose counters moved", moved, "REJECT and DROP rules first")
        return moved

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
        ct["flow"] = (
            ct["src"] + ":" + ct["sport"].astype(str) + " -> " + ct["dst"] + ":" + ct["dport"].astype(str)
        )
        ct["state"] = ct["state"].where(ct["state"] != "", ct["event"])
        self.results["ct_flows"] = ct
        self.evidence("conntrack events of the flow", ct[["time", "event", "state", "flow", "flags"]])
        return ct[["time", "event", "state", "flow", "timeout", "flags"]]

    def conntrack_chart(self) -> go.Figure:
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
        real = summary_[summary_["kind"] == "drop"] if len(summary_) else summary_
        nf = real[real["reason"] == "NETFILTER_DROP"] if len(real) else real
        rules = results["rules_moved"]
        blocking = rules[rules["verdict_rule"]] if len(rules) else rules
        flows = transitions(results.get("ct_flows"))
        half_closed = {
            f: s for f, s in flows.items() if any(x in ("FIN_WAIT", "CLOSE_WAIT", "LAST_ACK") for x in s)
        }
        if blocking.empty and nf.empty:
            # The trace is not flow-filtered: other traffic's drops are reported, not blamed.
            others = [
                f"{int(r['count'])} unrelated drops: {r['reason']} at {r['function'] or r['location']}"
                for _, r in real.iterrows()
            ]
            return evidence.findings(HEALTHY, f"No netfilter drop during the {given['duration']:g} s window and no "
                                 "REJECT/DROP rule matched.", reasons=others)  # fmt: skip
        if blocking.empty or nf.empty:
            reasons = [
                f"{int(r['count'])} drops: {r['reason']} at {r['function'] or r['location']}"
                for _, r in real.iterrows()
            ]
            return evidence.inconclusive(reasons or ["a REJECT/DROP rule matched but no drop was traced"])
        rule = blocking.iloc[0]
        # Prefer a row with its kernel stack (a stack can be lost when the buffer wraps).
        where = (
            nf.assign(has_stack=nf["stack"] != "")
            .sort_values(["has_stack", "count"], ascending=False)
            .iloc[0]
        )
        name = f"{rule['table']}/{rule['chain']} rule {rule['position']} ({rule['target']}: {rule['rule']})"
        flow_text = ""
        if half_closed:
            flow, states = next(iter(half_closed.items()))
            flow_text = f" The flow {flow} went {' -> '.join(states)} before its late packets were dropped."
        elif given.get("client") and given.get("server"):
            flow_text = f" The flow is {given['client']} -> {given['server']}:{given['server_port']}."
        stack = where["stack"] or where["function"]
        summary = (f"{int(rule['packets_delta'])} packets were rejected by {name} with reason NETFILTER_DROP at "
                   f"{where['function'] or where['location']} ({stack.split(' <- ')[:4] and ' <- '.join(stack.split(' <- ')[:4])})."
                   f"{flow_text} The node answered with {results.get('icmp_unreach_sent', 0)} ICMP "
                   "destination-unreachable errors from its own address.")  # fmt: skip
        position = int(rule["position"])
        remediation = [
            f"iptables -t {rule['table']} -I {rule['chain']} {position} -i lxc+ -j ACCEPT   # pods' traffic no longer depends on a live conntrack entry",
            f"iptables -t {rule['table']} -I {rule['chain']} {position} -o lxc+ -j ACCEPT",
            "or keep the stateful rules and raise net.netfilter.nf_conntrack_tcp_timeout_close_wait (and leave nf_conntrack_tcp_loose=1)",
        ]
        reasons = [f"rule: {name}", f"drop location: {where['function'] or where['location']}"]
        if half_closed:
            reasons.append(f"conntrack: {' -> '.join(next(iter(half_closed.values())))}")
        return evidence.findings(VERDICT, summary, remediation=remediation, reasons=reasons)

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
