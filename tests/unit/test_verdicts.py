"""Every verdict replayed from evidence recorded on the lab (tests/data/evidence, written
by the kernel tests with NETLAB_RECORD_EVIDENCE=1): ``decide`` is a pure function, so the
broken and the healthy twin of each scenario give their verdicts here without root, and
removing the decisive evidence changes the answer. A scenario's other twins (the
rollout twin of cgroup-progs) are replayed by name."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from netlab.findings import Findings
from netlab.investigations import get
from netlab.investigations.base import Evidence

EVIDENCE = Path(__file__).resolve().parent.parent / "data" / "evidence"

EXPECTED = {
    "stuck-tcp": "stale-sockmap-entry",
    "packet-drops": "netfilter-drop",
    "route-cache": "percpu-counter-skew",  # recorded on 6.18: max_size is not enforced there
    "cgroup-progs": "stale-cgroup-program",
}


def replay(name: str, twin: str) -> tuple[Evidence, str]:
    evidence = Evidence.load(EVIDENCE / f"{name}-{twin}.json")
    assert evidence.investigation == name
    return evidence, get(name).decide(evidence).verdict


@pytest.mark.parametrize("name", list(EXPECTED))
def test_broken_twin_names_the_root_cause(name: str) -> None:
    assert replay(name, "broken")[1] == EXPECTED[name]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_healthy_twin_is_healthy(name: str) -> None:
    assert replay(name, "healthy")[1] == "healthy"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_missing_step_results_are_inconclusive_not_healthy(name: str) -> None:
    evidence, _ = replay(name, "broken")
    evidence.results = {}
    assert get(name).decide(evidence).verdict == "inconclusive"


def test_stuck_tcp_names_the_stale_key_and_its_removal() -> None:
    evidence, _ = replay("stuck-tcp", "broken")
    findings = get("stuck-tcp").decide(evidence)
    assert "Stale sockmap entry 192.168.50.1:4012" in findings.summary
    assert "its namespace no longer has the address" in findings.summary
    assert "they poison client ports 40120" in findings.summary
    assert any(r.startswith("bpftool map delete id") for r in findings.remediation)


def _successful_probes(evidence: Evidence) -> None:
    scope = evidence.results["scope"].copy()
    scope["success"] = 1.0
    evidence.results["scope"] = scope


def test_stuck_tcp_handler_mismatch_decides_even_when_the_probes_succeeded() -> None:
    """The client accelerated, the server plain, and the flow's key in the map: the
    server's insert failed, whatever the probes happened to hit."""
    evidence, _ = replay("stuck-tcp", "broken")
    _successful_probes(evidence)
    stale = evidence.results["stale"].copy()
    # Even with no entry judged stale (say the namespaces could not be read).
    evidence.results["stale"] = stale.assign(stale=False, status="live, matches its key")
    findings = get("stuck-tcp").decide(evidence)
    assert findings.verdict == "stale-sockmap-entry", findings.summary
    assert "uses tcp_bpf_recvmsg, server 10.244.1.11:8080 uses tcp_recvmsg" in findings.summary
    # Without the mismatch and without stale entries, the same probes are healthy.
    evidence.results["handlers"] = evidence.results["handlers"].assign(handler="tcp_bpf_recvmsg")
    assert get("stuck-tcp").decide(evidence).verdict == "healthy"


def test_stuck_tcp_on_61_the_kprobe_trace_shows_the_refused_insert() -> None:
    """Recorded on Debian's 6.1 guest (kprobes): the server's insert refused with EEXIST
    decides by itself, with every other sign removed, and names the entry holding it."""
    evidence = Evidence.load(EVIDENCE / "stuck-tcp-broken-6.1.json")
    findings = get("stuck-tcp").decide(evidence)
    assert findings.verdict == "stale-sockmap-entry", findings.summary
    assert any(r.startswith("kprobe trace: insert of server socket 10.244.1.11:8080 <- 192.168.50.1:4012")
               and r.endswith("refused with EEXIST") for r in findings.reasons)  # fmt: skip
    refused = evidence.results["refused_inserts"]
    assert "bpf_sock_hash_update" in refused["stack"].iloc[0]
    traced_port = int(refused["peer_port"].iloc[0])
    _successful_probes(evidence)
    evidence.results["stale"] = evidence.results["stale"].assign(stale=False, status="live, matches its key")
    evidence.results["handlers"] = evidence.results["handlers"].iloc[0:0]
    findings = get("stuck-tcp").decide(evidence)
    assert findings.verdict == "stale-sockmap-entry", findings.summary
    assert f"Stale sockmap entry 192.168.50.1:{traced_port} -> 10.244.1.11:8080" in findings.summary
    # The insert refused, but no entry holding its key was read: not enough to name one.
    live = evidence.results["stale"]
    evidence.results["stale"] = live.iloc[0:0]
    assert get("stuck-tcp").decide(evidence).verdict == "inconclusive"
    # Nothing refused, nothing stale, no mismatch: healthy.
    evidence.results["stale"] = live
    evidence.results["refused_inserts"] = refused.iloc[0:0]
    evidence.results["recvmsg_calls"] = evidence.results["recvmsg_calls"].iloc[0:0]
    assert get("stuck-tcp").decide(evidence).verdict == "healthy"


def test_stuck_tcp_unverified_entries_are_inconclusive_never_healthy() -> None:
    evidence, _ = replay("stuck-tcp", "healthy")
    stale = evidence.results["stale"]
    assert len(stale) and not stale["stale"].any()
    evidence.results["stale"] = stale.assign(status="not verified")
    findings = get("stuck-tcp").decide(evidence)
    assert findings.verdict == "inconclusive"
    assert "could not be verified" in findings.summary


def test_packet_drops_needs_both_the_rule_and_the_drop() -> None:
    evidence, _ = replay("packet-drops", "broken")
    rules = evidence.results["rules_moved"]
    evidence.results["rules_moved"] = rules[~rules["verdict_rule"]]
    assert get("packet-drops").decide(evidence).verdict == "inconclusive"


def test_packet_drops_blames_the_rule_that_can_match_the_flow_not_the_busiest() -> None:
    """The lab's innocent DROP rule moved more than the REJECT (other traffic, all the
    time); its source address cannot be the flow's, so it is named and not blamed."""
    evidence, verdict = replay("packet-drops", "broken")
    rules = evidence.results["rules_moved"]
    innocent = rules[rules["verdict_rule"] & (rules["excluded_by"] != "")]
    assert len(innocent) == 1 and innocent.iloc[0]["target"] == "DROP"
    assert innocent.iloc[0]["packets_delta"] > rules[rules["target"] == "REJECT"]["packets_delta"].max()
    findings = get("packet-drops").decide(evidence)
    assert "rule 4 (REJECT" in findings.summary and "rule 2" not in findings.summary
    assert any(r.startswith("not blamed:") and "rule 2 (DROP" in r for r in findings.reasons)
    # The flow: the client's own dropped packet and that connection's conntrack states.
    assert "packets of 10.244.1.11:" in findings.summary and "FIN_WAIT -> CLOSE_WAIT" in findings.summary
    # Were the innocent rule's matches unreadable, it would be a candidate too: the first
    # in chain order is named, and the REJECT is still listed.
    evidence.results["rules_moved"] = rules.assign(excluded_by="")
    again = get("packet-drops").decide(evidence)
    assert "rule 2 (DROP" in again.summary and any("rule 4 (REJECT" in r for r in again.reasons)


def test_packet_drops_a_rule_added_during_the_window_is_not_judged_on_its_history() -> None:
    evidence, _ = replay("packet-drops", "broken")
    rules = evidence.results["rules_moved"]
    evidence.results["rules_moved"] = rules.assign(new=rules["target"] == "REJECT")
    findings = get("packet-drops").decide(evidence)
    assert findings.verdict == "inconclusive"
    assert any("added during the window" in r for r in findings.reasons)


def test_packet_drops_a_moving_rule_without_the_flows_drops_is_healthy() -> None:
    """With the in-kernel flow filter, a REJECT that moved while none of the flow's packets
    were dropped by netfilter dropped other traffic: healthy, and the rule is named."""
    evidence, _ = replay("packet-drops", "broken")
    drops = evidence.results["drops"]
    assert evidence.results["flow_filtered"]
    evidence.results["drops"] = drops[drops["reason"] != "NETFILTER_DROP"]
    findings = get("packet-drops").decide(evidence)
    assert findings.verdict == "healthy"
    assert any("dropped none of the flow's packets" in r and "rule 4 (REJECT" in r for r in findings.reasons)
    # Without the flow filter the same evidence cannot tell: inconclusive, never healthy.
    evidence.results["flow_filtered"] = False
    assert get("packet-drops").decide(evidence).verdict == "inconclusive"


def test_packet_drops_without_drop_reasons_reads_the_netfilter_site() -> None:
    """Kernels before 5.17: no reason, the location and stack say netfilter."""
    evidence, _ = replay("packet-drops", "broken")
    drops = evidence.results["drops"]
    evidence.results["drops"] = drops.assign(reason="")
    findings = get("packet-drops").decide(evidence)
    assert findings.verdict == "netfilter-drop"
    assert "no reason (kernel < 5.17)" in findings.summary and "nft_do_chain" in findings.summary


def test_packet_drops_a_native_nft_rule_gets_an_nft_remediation() -> None:
    """A node whose firewall is native nftables (no iptables, a rule of an inet table):
    the rule is named by family, table, chain and handle, and the remediation is nft
    inserts before that handle, not iptables lines for a table iptables does not own."""
    evidence, _ = replay("packet-drops", "broken")
    moved = evidence.results["rules_moved"]
    reject = moved["target"] == "REJECT"
    evidence.results["rules_moved"] = moved.assign(
        family=["inet"] * len(moved), table="filter", chain="forward", handle=[7 if r else 3 for r in reject],
        rule=["ct state invalid,new reject" if r else "accept" for r in reject],
    )  # fmt: skip
    findings = get("packet-drops").decide(evidence)
    assert findings.verdict == "netfilter-drop", findings.summary
    assert "nft inet filter/forward rule 4 (handle 7, REJECT" in findings.summary
    assert findings.remediation[0].startswith(
        "nft insert rule inet filter forward handle 7 ip saddr 10.244.1.11 "
    )
    assert all("iptables" not in r for r in findings.remediation)
    # The same rule written by iptables-nft (an xt match, its own filter table) keeps iptables.
    evidence.results["rules_moved"] = moved.assign(family="ip", handle=7, chain="FORWARD")
    assert get("packet-drops").decide(evidence).remediation[0].startswith("iptables -t filter -I FORWARD 4 ")


def test_cgroup_progs_agreeing_copies_are_healthy() -> None:
    evidence, _ = replay("cgroup-progs", "broken")
    walk = evidence.results["walk"]
    evidence.results["walk"] = walk.assign(differs_from_pinned=False)
    assert get("cgroup-progs").decide(evidence).verdict == "healthy"


def test_cgroup_progs_real_connect_is_reported_as_it_went() -> None:
    """The real connect() adds to the verdict what it saw: where the kernel sent it, or
    the error that closed its socket before the destination was read; never a guess."""
    evidence, _ = replay("cgroup-progs", "broken")
    actual = evidence.results["actual"]
    assert actual["how"] == "repair mode: no packet sent"
    summary = get("cgroup-progs").decide(evidence).summary
    assert f"A real connect() from the cgroup went to {actual['actual']}." in summary
    evidence.results["actual"] = {"asked": actual["asked"], "error": "No route to host", "how": "a real SYN"}
    findings = get("cgroup-progs").decide(evidence)
    assert findings.verdict == "stale-cgroup-program"
    assert "A real connect() from the cgroup failed before its destination was read: No route to host." in (
        findings.summary
    )
    assert "went to" not in findings.summary


def test_cgroup_progs_rollout_twin_is_healthy_with_a_note() -> None:
    """The rollout twin: both generations attached in the incident's order, the old one's
    maps holding the agent's entries. Healthy; the note names both connect4 programs with
    their load times, and claims agreement on every service only while the lb maps step
    found no copies disagreeing."""
    evidence, verdict = replay("cgroup-progs", "rollout")
    assert verdict == "healthy"
    (hook,) = evidence.results["walk_summary"]["hooks"]
    old, new = hook["programs"]
    assert (old["agent_map"], new["agent_map"]) == (False, True)
    summary = get("cgroup-progs").decide(evidence).summary
    listed = ", ".join(f"{p['prog_id']} ({p['name']}, loaded {p['loaded_at']})" for p in (old, new))
    assert (
        f"Several connect4 programs with LB maps run for {hook['cgroup']}, in run order: {listed}." in summary
    )
    assert "agree on every service they share, as in the middle of an agent rollout" in summary
    assert f"Not using the agent-managed map: {old['prog_id']}." in summary
    evidence.results["lb_rows"] = {"rows": 8, "disagreeing": 2}
    summary = get("cgroup-progs").decide(evidence).summary
    assert "every service" not in summary
    assert "Their maps agree on the 1 service walked (2 service slots differ between copies)" in summary


def test_route_cache_without_skew_or_overflow_is_healthy() -> None:
    evidence, _ = replay("route-cache", "broken")
    state = evidence.results["state"].copy()
    state["dst_entries"] = 3
    evidence.results["state"] = state
    counter: pd.DataFrame = evidence.results["counter"].copy()
    counter["fast"] = counter["slow"]
    evidence.results["counter"] = counter
    assert get("route-cache").decide(evidence).verdict == "healthy"


def test_route_cache_over_max_size_where_the_kernel_enforces_it() -> None:
    """No lab kernel enforces max_size any more (6.18 and Debian's 6.1 both carry the
    removal), so this verdict is replayed from the broken lab's evidence with the rules of
    the case's 4.19 substituted: the same counts, a kernel that checks them."""
    from dataclasses import asdict

    from netlab.investigations.route_cache import kernel_rules

    evidence, _ = replay("route-cache", "broken")
    cpus = int(evidence.results["rules"]["worst_gap"] // max(evidence.results["rules"]["batch"] - 1, 1))
    evidence.results["rules"] = asdict(kernel_rules("4.19.0", max(cpus, 1)))
    findings = get("route-cache").decide(evidence)
    assert findings.verdict == "route-cache-over-max-size"
    assert "max_size 64" in findings.summary


def test_a_large_node_under_max_size_without_drops_is_not_over_max_size() -> None:
    """A 96-CPU node on a kernel that enforces max_size (4.19): the fast count may lag by
    96 x 31, but the kernel compares the exact count, which is under max_size, and no
    IPv6 route drop was seen: no evidence of the overflow. The same counts with drops
    seen, or with the exact count past max_size, are the overflow."""
    from dataclasses import asdict

    from netlab.investigations.route_cache import kernel_rules

    def node(exact: int, drops: int) -> str:
        evidence, _ = replay("route-cache", "broken")
        state = evidence.results["state"].copy()
        state.loc[0, ["dst_entries", "max_size", "gc_thresh"]] = [exact, 4096, 1024]
        evidence.results["state"] = state
        counter = evidence.results["counter"].copy()
        counter["slow"], counter["fast"] = exact, exact - 900
        evidence.results["counter"] = counter
        row = {
            "kind": "no route",
            "reason": "",
            "function": "ip6_pkt_drop",
            "location": "",
            "stack": "",
            "count": drops,
        }
        evidence.results["route_drops"] = pd.DataFrame([row] if drops else [], columns=list(row))
        evidence.results["rules"] = asdict(kernel_rules("4.19.0", 96))
        return get("route-cache").decide(evidence).verdict

    assert node(1200, 0) != "route-cache-over-max-size"
    assert node(3900, 0) != "route-cache-over-max-size"  # within the fast count's lag: no evidence
    assert node(3900, 12) == "route-cache-over-max-size"
    assert node(4200, 0) == "route-cache-over-max-size"


def _route_cache_node(exact: int, *, gc_returns: str | None, release: str = "4.19.0", counter: bool = True,
                      kprobe_drops: int = 0) -> Findings:  # fmt: skip
    """The broken lab's evidence as another node: max_size 4096, gc_thresh 1024, its
    exact count, its kernel (BTF or not), with or without the fast count and kprobe drops."""
    from dataclasses import asdict

    from netlab.investigations.route_cache import kernel_rules

    evidence, _ = replay("route-cache", "broken")
    state = evidence.results["state"].copy()
    state.loc[0, ["dst_entries", "max_size", "gc_thresh"]] = [exact, 4096, 1024]
    evidence.results["state"] = state
    if counter:
        frame = evidence.results["counter"].copy()
        frame["slow"], frame["fast"] = exact, exact - 40
        evidence.results["counter"] = frame
    else:
        del evidence.results["counter"]
        evidence.mechanisms["percpu fast vs slow"] = "skipped: no mechanism can run here: needs btf"
    evidence.results["route_drops"] = pd.DataFrame(columns=["reason", "count"])
    evidence.results["pkt_drops"] = pd.DataFrame(
        [{"netns": 4026531840, "dev": "eth0", "daddr": "fd00::1", "count": kprobe_drops}]
        if kprobe_drops
        else [],
        columns=["netns", "dev", "daddr", "count"],
    )
    evidence.results["rules"] = asdict(kernel_rules(release, 96, gc_returns))
    return get("route-cache").decide(evidence)


def test_route_cache_where_the_btf_says_max_size_is_not_checked() -> None:
    """Debian's 6.1: past max_size, but its BTF shows the check removed: skew, not
    overflow, and the summary says how that is known."""
    findings = _route_cache_node(4200, gc_returns="void", release="6.1.0-57-amd64")
    assert findings.verdict == "percpu-counter-skew"
    assert "does not enforce net.ipv6.route.max_size (certain: this kernel's BTF" in findings.summary
    assert (
        _route_cache_node(4200, gc_returns="int", release="6.1.0-57-amd64").verdict
        == "route-cache-over-max-size"
    )


def test_route_cache_ip6_pkt_drop_calls_are_drops_seen() -> None:
    assert _route_cache_node(3900, gc_returns="int").verdict != "route-cache-over-max-size"
    findings = _route_cache_node(3900, gc_returns="int", kprobe_drops=7)
    assert findings.verdict == "route-cache-over-max-size" and "7 IPv6 route drops" in findings.summary


def test_route_cache_without_the_fast_count_still_decides() -> None:
    """Case 002's own 4.19 without BTF: no iterator, so no fast count; rt6_stats, the
    sysctls and the kernel's rules still give a verdict where they can, and say what is
    not known where they cannot."""
    assert _route_cache_node(4200, gc_returns=None, counter=False).verdict == "route-cache-over-max-size"
    assert _route_cache_node(500, gc_returns=None, counter=False).verdict == "healthy"
    unsure = _route_cache_node(3900, gc_returns=None, counter=False)
    assert unsure.verdict == "inconclusive"
    assert "the fast count was not read (skipped: no mechanism can run here: needs btf)" in " ".join(
        unsure.reasons
    )


def test_route_cache_on_61_the_btf_and_the_kprobe_trace_decide() -> None:
    """Recorded on Debian's 6.1 guest: past max_size, but its BTF shows the check removed
    and the ip6_pkt_drop kprobe saw nothing while the node probed its pod: skew, not
    overflow. The same evidence from a kernel whose dst_ops.gc still returns int is the
    overflow; with the kprobe's drops alone (under max_size) too."""
    from dataclasses import asdict

    from netlab.investigations.route_cache import kernel_rules

    evidence = Evidence.load(EVIDENCE / "route-cache-broken-6.1.json")
    assert evidence.mechanisms["ip6_pkt_drop calls (kprobes)"].startswith("BCC kprobe on ip6_pkt_drop")
    findings = get("route-cache").decide(evidence)
    assert findings.verdict == "percpu-counter-skew", findings.summary
    assert "dst_ops.gc returning void" in findings.summary
    counter = evidence.results["counter"]
    assert (
        counter["fast"] + counter["cpu0"] + counter["cpu1"] == counter["slow"]
    ).all()  # per-CPU deltas read
    rules = evidence.results["rules"]
    evidence.results["rules"] = asdict(kernel_rules(rules["release"], 2, "int"))
    assert get("route-cache").decide(evidence).verdict == "route-cache-over-max-size"
    state = evidence.results["state"].copy()
    state["max_size"] = 4096
    evidence.results["state"] = state
    assert get("route-cache").decide(evidence).verdict == "percpu-counter-skew"
    drops = pd.DataFrame([{"netns": 1, "dev": "eth0", "daddr": "fd00:244::11", "count": 3}])
    evidence.results["pkt_drops"] = drops
    assert get("route-cache").decide(evidence).verdict == "route-cache-over-max-size"
