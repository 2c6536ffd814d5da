"""iptables-save (nft and legacy backends) and conntrack parsers on published output and
on output captured from the conntrack-reject lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netlab.collectors import conntrack, iptables
from netlab.errors import DecodeError

DATA = Path(__file__).resolve().parents[1] / "data" / "netfilter"


def load(name: str) -> str:
    return "\n".join(
        line for line in (DATA / name).read_text().splitlines() if not line.startswith("# SOURCE")
    )


def test_nft_backend_with_counters_and_positions() -> None:
    rules = iptables.parse_save(load("iptables_save_nft_lab.txt"))
    assert set(rules["backend"]) == {"nft"}
    reject = rules[rules["target"] == "REJECT"].iloc[0]
    assert (reject["table"], reject["chain"], reject["position"], reject["packets"]) == (
        "filter",
        "FORWARD",
        3,
        2,
    )
    assert "icmp-port-unreachable" in reject["rule"] and reject["comment"] == "nlab case 001"


def test_legacy_published_without_counters() -> None:
    rules = iptables.parse_save(load("iptables_save_legacy_k8s_66454.txt"))
    assert set(rules["backend"]) == {"legacy"}
    nat = rules[(rules["table"] == "nat") & (rules["chain"] == "POSTROUTING")]
    assert list(nat["position"]) == [1, 2] and nat["packets"].isna().all()
    assert iptables.ChainPolicy("nat", "KUBE-SERVICES", "-", 0, 0) in rules.attrs["policies"]
    prerouting = rules.attrs["policies"][0]
    assert (prerouting.chain, prerouting.policy, prerouting.packets, prerouting.bytes) == (
        "PREROUTING",
        "ACCEPT",
        4397728,
        1947643879,
    )


def test_published_counters_and_deltas() -> None:
    before = iptables.parse_save(load("iptables_save_c_k8s_110328.txt"))
    after = iptables.parse_save(load("iptables_save_c_k8s_110328.txt").replace("[1:60]", "[4:240]"))
    moved = iptables.counter_deltas(before, after)
    row = moved[moved["target"] == "REJECT"].iloc[0]
    assert (row["chain"], row["packets_delta"], row["bytes_delta"]) == ("FOO", 3, 180)


@pytest.mark.parametrize(
    "bad", ["-A FORWARD -j ACCEPT", "*filter\n[1:2] garbage\nCOMMIT", "*filter\n:FORWARD\nCOMMIT"]
)
def test_malformed_iptables_names_the_line(bad: str) -> None:
    with pytest.raises(DecodeError, match="iptables-save line"):
        iptables.parse_save(bad)


def test_conntrack_events_show_the_half_close() -> None:
    events = conntrack.parse(load("conntrack_events_lab.txt"))
    first = events[events["sport"] == events["sport"].iloc[0]]
    assert list(first["state"][:4]) == ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT"]
    assert first["event"].iloc[0] == "NEW" and first["time"].iloc[0] > 1e9
    assert events.iloc[0]["reply_src"] == "192.168.50.2"


def test_conntrack_list() -> None:
    entries = conntrack.parse(load("conntrack_list_lab.txt"))
    assert set(entries["state"]) == {"TIME_WAIT"} and (entries["dport"] == 9418).all()
    assert entries["flags"].str.contains("ASSURED").all()


@given(st.text(max_size=120))
def test_conntrack_junk_only_raises_decode_error(text: str) -> None:
    try:
        conntrack.parse(text)
    except DecodeError:
        pass


def test_nft_json_ruleset() -> None:
    from netlab.collectors import nft

    rules = nft.parse_ruleset((DATA / "nft_list_ruleset_lab.json").read_text())
    native = rules[(rules["table"] == "filter") & (rules["family"] == "inet")]
    assert list(native["rule"]) == [
        "ct state established,related accept",
        "nfproto ipv4 reject with icmp port-unreachable",
    ]
    assert (native["hook"] == "forward").all() and list(native["position"]) == [1, 2]
    legacy_written = rules[(rules["family"] == "ip") & (rules["chain"] == "FORWARD")]
    assert list(legacy_written["verdict"]) == ["accept", "accept", "reject"]
    assert "xt match conntrack" in legacy_written["rule"].iloc[0]


@pytest.mark.parametrize("bad", ["", "{}", '{"nftables": [{"rule": {"family": "ip"}}]}', '{"nftables": [1]}'])
def test_nft_malformed(bad: str) -> None:
    from netlab.collectors import nft

    with pytest.raises(DecodeError, match="nft JSON"):
        nft.parse_ruleset(bad)
