"""Every published sample, decoded through ``netlab.decoders.decode`` as pasted (prompts,
command lines, elisions and all), to the values its header's DECODED lines give.

The DECODED lines were re-checked against /work/shared/samples/LAYOUTS.md; where one is
wrong or imprecise, the check below says so in a comment and tests what the bytes say.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from netlab.decoders import DecodedPaste, decode
from netlab.errors import DecodeError

from .conftest import SAMPLES, sample_text

Check = Callable[[DecodedPaste], None]
CHECKS: dict[str, Check] = {}
#: Options a sample needs because the paste does not say which map it is.
OPTIONS: dict[str, dict[str, str]] = {"bpftool_map_dump_cilium_ipcache_01.txt": {"layout": "ipcache"}}


def check(name: str) -> Callable[[Check], Check]:
    def register(func: Check) -> Check:
        CHECKS[name] = func
        return func

    return register


def rows(frame: pd.DataFrame, *columns: str) -> list[tuple[object, ...]]:
    """The rows' values in ``columns``, missing values (NaN, NA) as None."""
    part = frame[list(columns)].astype(object)
    return [tuple(r) for r in part.where(part.notna(), None).itertuples(index=False, name=None)]


def only(paste: DecodedPaste, kind: str) -> pd.DataFrame:
    assert [d.kind for d in paste] == [kind], [d.kind for d in paste]
    return paste[0].table


# --- bpftool map dump / lookup ---------------------------------------------------------


@check("bpftool_map_dump_cilium_egress_v4_01.txt")
def _egress(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-map-dump")
    assert paste[0].layout.startswith("egress_v4/v1.10")
    # DECODED: prefixlen 48 (32-bit saddr + 16-bit daddr prefix), daddr 172.18.0.0/16,
    # value egress_ip 172.18.0.3 and tunnel endpoint 172.18.0.3. (The author's prose names
    # other sources; the bytes say 10.0.0.31, 10.0.1.209, 10.0.2.14.)
    assert rows(table, "prefixlen", "sip", "cidr", "egress_ip", "tunnel_endpoint") == [
        (48, "10.0.0.31", "172.18.0.0/16", "172.18.0.3", "172.18.0.3"),
        (48, "10.0.1.209", "172.18.0.0/16", "172.18.0.3", "172.18.0.3"),
        (48, "10.0.2.14", "172.18.0.0/16", "172.18.0.3", "172.18.0.3"),
    ]
    assert not paste[0].warnings


@check("bpftool_map_dump_cilium_ipcache_01.txt")
def _ipcache(paste: DecodedPaste) -> None:
    (row,) = only(paste, "bpftool-map-dump").to_dict("records")
    # prefixlen 0x40 = 64 = 32 bits of pad/family + a /32 host; family 1; 10.0.0.185;
    # sec_identity fe 6f 00 00 = 28670; tunnel endpoint 0.0.0.0 (local); key 0.
    assert (row["prefixlen"], row["family"], row["ip"], row["cidr"]) == (
        64,
        "ipv4",
        "10.0.0.185",
        "10.0.0.185/32",
    )
    assert (row["sec_identity"], row["tunnel_endpoint"], row["key"]) == (28670, "0.0.0.0", 0)


def test_an_ipcache_dump_by_id_is_ambiguous_without_a_layout() -> None:
    # 24-byte keys and 12-byte values fit both the ipcache and the IPv6 service map, and
    # "map dump id 338" does not say which: raw bytes and a note, not a guess.
    (block,) = decode(sample_text("bpftool_map_dump_cilium_ipcache_01.txt"))
    assert block.layout == "" and list(block.table.columns[:2]) == ["key", "value"]
    assert any("lb6_services, ipcache" in n for n in block.notes)


@check("bpftool_map_dump_cilium_policy_01.txt")
def _policy(paste: DecodedPaste) -> None:
    (row,) = only(paste, "bpftool-map-dump").to_dict("records")
    # identity 298951 (0x00048fc7 LE), dport 80 (BE), TCP, ingress; value all zero. The
    # author's "# 4B identity + ..." annotation on the key line is not data.
    assert (row["sec_label"], row["dport"], row["protocol"], row["egress"]) == (298951, 80, 6, 0)
    assert (row["proxy_port"], row["flags"], row["packets"], row["bytes"]) == (0, 0, 0, 0)
    assert paste[0].layout.startswith("policy/old8")


@check("bpftool_map_dump_cilium_sock_ops_01.txt")
def _sock_ops(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-map-dump")
    # Entry A: offset 0 (C name sip4) 10.10.134.48:8080, offset 16 10.10.101.249:56184; B
    # the reverse. Ports: first two bytes of each u32, big-endian. grep cut the 'key:'
    # labels, so both keys come with a warning saying they were taken as keys.
    assert rows(table, "sip", "sport", "dip", "dport", "family") == [
        ("10.10.134.48", 8080, "10.10.101.249", 56184, "ipv4"),
        ("10.10.101.249", 56184, "10.10.134.48", 8080, "ipv4"),
    ]
    assert paste[0].layout.startswith("sock_ops/")
    assert [w.split(":")[0] for w in paste[0].warnings] == ["line 2", "line 8"]


@check("bpftool_map_dump_hash_u16key_01.txt")
def _u16_keys(paste: DecodedPaste) -> None:
    assert [d.kind for d in paste] == ["bpftool-map-dump"] * 3
    empty_6, empty_7, port_map = paste
    assert len(empty_6.table) == len(empty_7.table) == 0 and "bpftool found 0 elements" in empty_7.notes
    # Host-order u16 keys 777, 7, 77 -> value 0 (index into socket_map).
    assert rows(port_map.table, "key_int", "value_int") == [(777, 0), (7, 0), (77, 0)]


@check("bpftool_map_dump_json_sockhash_03.txt")
def _json_sockhash(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-map-dump")
    # The blog's own 24-byte sock key; values unreadable ("Operation not supported").
    assert paste[0].layout.startswith("sock_ops/demo24")
    assert rows(table, "sip", "sport", "dip", "dport", "family", "error") == [
        ("127.0.0.1", 1000, "127.0.0.1", 41350, "ipv4", "Operation not supported"),
        ("127.0.0.1", 41350, "127.0.0.1", 1000, "ipv4", "Operation not supported"),
    ]


@check("bpftool_map_dump_lb4_services_01.txt")
def _lb4_services_01(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-map-dump")
    # Frontend 10.96.32.28:80 slot 0: count 3, rev_nat_index 7 (bytes 00 07, network
    # order); slots 3, 1, 2 -> backend IDs 11, 9, 10. NOTE: the DECODED line "backend_slot
    # values 0b/09/0a are backend IDs" is wrong per LAYOUTS.md D: 0b/09/0a sit at value
    # offset 0 (backend_id, LE u32); the backend_slot (key offset 6, LE u16) is 3/1/2.
    assert rows(
        table, "frontend", "backend_slot", "backend_id", "count", "rev_nat_index", "proto", "scope"
    ) == [
        ("10.96.32.28:80", 3, 11, 0, 7, 0, 0),
        ("10.96.32.28:80", 0, None, 3, 7, 0, 0),
        ("10.96.32.28:80", 1, 9, 0, 7, 0, 0),
        ("10.96.32.28:80", 2, 10, 0, 7, 0, 0),
    ]
    assert set(table["flags"]) == {0} and set(table["flags2"]) == {0}


@check("bpftool_map_dump_lb4_services_02.txt")
def _lb4_services_02(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-map-dump").sort_values("backend_slot")
    # 198.51.100.0:80: count 3, rev_nat 8, flags 0x60 = LOADBALANCER|ROUTABLE; slots 1-3
    # -> backend IDs 7, 8, 9.
    assert rows(table, "frontend", "backend_slot", "backend_id", "count", "rev_nat_index", "flag_names") == [
        ("198.51.100.0:80", 0, None, 3, 8, "loadbalancer|routable"),
        ("198.51.100.0:80", 1, 7, 0, 8, ""),
        ("198.51.100.0:80", 2, 8, 0, 8, ""),
        ("198.51.100.0:80", 3, 9, 0, 8, ""),
    ]


@check("bpftool_map_lookup_cilium_ipcache_lxc_02.txt")
def _ipcache_and_lxc(paste: DecodedPaste) -> None:
    assert [d.kind for d in paste] == ["bpftool-map-dump"] * 2
    ipcache, lxc = paste
    (ip,) = ipcache.table.to_dict("records")
    # 10.0.1.110/32 -> identity 53731 (0xd1e3), tunnel endpoint 172.18.0.5.
    assert (ip["ip"], ip["cidr"], ip["sec_identity"], ip["tunnel_endpoint"]) == (
        "10.0.1.110",
        "10.0.1.110/32",
        53731,
        "172.18.0.5",
    )
    (ep,) = lxc.table.to_dict("records")
    # endpoint_key 10.0.1.110 family 1; endpoint_info ifindex 11, lxc_id 2006 (d6 07 LE),
    # mac 6a:8c:ee:3a:73:d5, node_mac 3e:43:da:fb:c7:04 (the author dropped the :04).
    assert (ep["ip"], ep["family"], ep["key"], ep["ifindex"], ep["lxc_id"], ep["flags"]) == (
        "10.0.1.110",
        "ipv4",
        0,
        11,
        2006,
        0,
    )
    assert (ep["mac"], ep["node_mac"]) == ("6a:8c:ee:3a:73:d5", "3e:43:da:fb:c7:04")


@check("bpftool_map_lookup_lb4_backends_01.txt")
def _lb4_backend(paste: DecodedPaste) -> None:
    (row,) = only(paste, "bpftool-map-dump").to_dict("records")
    # u16 key 0a 00 = backend 10 -> 10.0.0.27:80 (port big-endian), proto 0.
    assert (row["backend_id"], row["backend"], row["proto"]) == (10, "10.0.0.27:80", 0)
    assert paste[0].layout.startswith("lb4_backends/")


@check("bpftool_map_lookup_lb4_services_03.txt")
def _lb4_nodeport(paste: DecodedPaste) -> None:
    (row,) = only(paste, "bpftool-map-dump").to_dict("records")
    # 172.18.0.6:30171 slot 0: count 3, rev_nat 8, flags 0x42 = NODEPORT|ROUTABLE.
    assert (row["frontend"], row["backend_slot"], row["count"], row["rev_nat_index"]) == (
        "172.18.0.6:30171",
        0,
        3,
        8,
    )
    assert (row["flags"], row["flag_names"]) == (0x42, "nodeport|routable")


# --- bpftool map/prog show, cgroup tree ------------------------------------------------


@check("bpftool_map_list_json_jq_01.txt")
def _map_list_jq(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-map-show")
    # Six lpm_trie maps, no names (jq stream); 168 pinned as cilium_lb4_source_range
    # (12/1 B, 65536), 338 as cilium_ipcache (24/12 B, 512000); flags 1 = BPF_F_NO_PREALLOC.
    assert list(table["map_id"]) == [168, 176, 222, 338, 368, 428]
    assert set(table["type"]) == {"lpm_trie"} and set(table["name"]) == {""} and set(table["flags"]) == {1}
    pinned = table[table["pinned"].map(len) > 0]
    assert rows(pinned, "map_id", "key_size", "value_size", "max_entries") == [
        (168, 12, 1, 65536),
        (338, 24, 12, 512000),
    ]
    assert pinned["pinned"].tolist() == [
        ["/sys/fs/bpf/tc/globals/cilium_lb4_source_range"],
        ["/sys/fs/bpf/tc/globals/cilium_ipcache"],
    ]


@check("bpftool_map_show_json_01.txt")
def _map_show_json(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-map-show")
    assert rows(
        table, "map_id", "type", "name", "key_size", "value_size", "max_entries", "bytes_memlock", "frozen"
    ) == [(13, "sockhash", "sock_ops_map", 24, 4, 65535, 5767168, False)]


@check("bpftool_map_show_text_01.txt")
def _map_show_text(paste: DecodedPaste) -> None:
    assert [d.kind for d in paste] == ["bpftool-map-show"] * 2
    table = pd.concat([d.table for d in paste], ignore_index=True)
    assert rows(
        table, "map_id", "type", "name", "key_size", "value_size", "max_entries", "bytes_memlock"
    ) == [
        (13, "sockhash", "sock_ops_map", 24, 4, 65535, 5767168),
        (6, "hash", "port_map", 2, 1, 1024, 8192),
        (7, "sockmap", "socket_map", 4, 8, 1, 4096),
    ]


PROG_10 = (
    "xdp",
    "005a3d2123620c8b",
    True,
    81632,
    10,
    "2017-09-29T20:11:00+00:00",
    0,
    528,
    True,
    370,
    4096,
    [10],
)


@check("bpftool_prog_show_json_01.txt")
def _prog_show_text_and_json(paste: DecodedPaste) -> None:
    assert [d.kind for d in paste] == ["bpftool-prog-show"] * 2
    text, as_json = (d.table.iloc[0] for d in paste)
    columns = ["type", "tag", "gpl", "run_time_ns", "run_cnt", "loaded_at", "uid", "bytes_xlated", "jited",
               "bytes_jited", "bytes_memlock", "map_ids"]  # fmt: skip
    # The man page's text and JSON forms are the same program (loaded_at 1506715860 is
    # 2017-09-29T20:11:00Z); only the JSON lacks the name, as the NOTE says.
    for form in (text, as_json):
        assert form["prog_id"] == 10 and tuple(form[columns]) == PROG_10
        assert form["pids"] == ["systemd(1)"]
    assert (text["name"], as_json["name"]) == ("some_prog", "")


@check("bpftool_prog_show_text_01.txt")
def _prog_show_cilium(paste: DecodedPaste) -> None:
    (row,) = only(paste, "bpftool-prog-show").to_dict("records")
    assert (row["prog_id"], row["type"], row["name"], row["tag"], row["gpl"]) == (
        2895,
        "sched_cls",
        "",
        "8ac62d31226a84ef",
        True,
    )
    assert (row["loaded_at"], row["uid"], row["bytes_xlated"], row["bytes_jited"], row["bytes_memlock"]) == (
        "2020-12-20T09:52:11+00:00",
        0,
        28984,
        16726,
        32768,
    )
    assert len(row["map_ids"]) == 18 and 338 in row["map_ids"]


@check("bpftool_prog_show_text_02.txt")
def _prog_show_sockops(paste: DecodedPaste) -> None:
    assert [d.kind for d in paste] == ["bpftool-prog-show"] * 2
    table = pd.concat([d.table for d in paste], ignore_index=True)
    # loaded_at is the node's +0800 time, shown in UTC; 60 has no 'gpl' token; the
    # author's "# maps used by this program" is not data.
    assert rows(table, "prog_id", "type", "name", "tag", "gpl", "btf_id", "bytes_xlated", "bytes_jited") == [
        (38, "sock_ops", "bpf_sockmap", "d9aec8c151998c9c", True, 20, 672, 388),
        (43, "sk_msg", "bpf_redir", "550f6d3cfcae2157", True, 24, 224, 156),
        (60, "sk_lookup", "echo_dispatch", "da043673afd29081", False, 104, 272, 159),
    ]
    assert table["map_ids"].tolist() == [[13], [13], [6, 7]]
    assert table["loaded_at"].iloc[0] == "2021-01-28T14:52:06+00:00"


@check("bpftool_cgroup_tree_text_01.txt")
def _cgroup_tree(paste: DecodedPaste) -> None:
    table = only(paste, "bpftool-cgroup-tree")
    assert set(table["cgroup"]) == {"/run/cilium/cgroupv2"}
    assert rows(table, "prog_id", "hook") == [
        (2005, "connect4"), (1970, "connect6"), (2007, "post_bind4"), (2002, "post_bind6"), (2008, "sendmsg4"),
        (2003, "sendmsg6"), (2009, "recvmsg4"), (2004, "recvmsg6"), (2006, "getpeername4"), (1991, "getpeername6"),
    ]  # fmt: skip
    assert set(table["attach_flags"]) == {""} and set(table["name"]) == {""}


# --- ss ---------------------------------------------------------------------------------


@check("ss_i_01.txt")
def _ss_sockmap_stuck(paste: DecodedPaste) -> None:
    assert [d.kind for d in paste] == ["ss"] * 4
    table = pd.concat([d.table for d in paste], ignore_index=True)
    assert rows(table, "local_port", "state", "bytes_acked", "bytes_received", "segs_out", "segs_in") == [
        (50504, "ESTAB", 1, None, 2, 1),
        (50504, "CLOSE-WAIT", 1, 1, 3, 2),
        (57424, "ESTAB", 1, None, 2, 1),
        (57424, "ESTAB", 1, None, 2, 1),  # counters did not move: the stale sockmap path
    ]
    # NOTE: DECODED gives "rtt 0.059/0.029, minrtt 0.059" for the sample; that holds for
    # port 50504 only; the 57424 records show 0.056/0.028 and minrtt 0.056.
    assert rows(table, "rtt", "rttvar", "minrtt") == [(0.059, 0.029, 0.059)] * 2 + [(0.056, 0.028, 0.056)] * 2
    assert set(table["rto"]) == {200} and set(table["mss"]) == {1448} and set(table["cwnd"]) == {10}
    assert table["peer_service"].tolist() == [
        "PORT",
        "http",
        "webcache",
        "webcache",
    ]  # anonymised by the author


@check("ss_i_02.txt")
def _ss_full_tcp_info(paste: DecodedPaste) -> None:
    (row,) = only(paste, "ss").to_dict("records")
    assert (row["state"], row["local"], row["local_service"], row["peer"], row["peer_port"]) == (
        "ESTAB",
        "10.0.2.15",
        "ssh",
        "10.0.2.2",
        50077,
    )
    expected = {"rto": 204, "rtt": 0.17, "rttvar": 0.039, "ato": 40, "mss": 1460, "cwnd": 10, "bytes_sent": 5433,
                "bytes_acked": 5433, "bytes_received": 83303, "segs_out": 35, "segs_in": 101, "data_segs_out": 25,
                "data_segs_in": 74, "delivered": 26, "busy": "12ms", "rcv_rtt": 206.938, "minrtt": 0.083,
                "cc": "cubic", "flags": "app_limited"}  # fmt: skip
    assert {k: row[k] for k in expected} == expected


@check("ss_tlpne_03.txt")
def _ss_listen(paste: DecodedPaste) -> None:
    (row,) = only(paste, "ss").to_dict("records")
    assert (row["state"], row["local"], row["local_port"], row["recv_q"], row["send_q"]) == (
        "LISTEN",
        "127.0.0.1",
        7777,
        0,
        10,
    )
    assert (row["process"], row["pid"], row["fd"], row["uid"], row["inode"], row["cookie"]) == (
        "ncat",
        122701,
        3,
        1000,
        896838,
        1,
    )


# --- kernel stacks and traces ------------------------------------------------------------


@check("bcc_tcpdrop_stack_01.txt")
def _tcpdrop(paste: DecodedPaste) -> None:
    (stack,) = only(paste, "kernel-stacks").to_dict("records")
    assert (stack["source"], stack["time"], stack["pid"]) == ("bcc", "14:46:49", 0)
    fields = stack["fields"]
    assert (fields["IP"], fields["SADDR:SPORT"], fields["DADDR:DPORT"]) == (
        "4",
        "39.156.66.10:80",
        "10.211.55.10:33280",
    )
    assert (fields["STATE (FLAGS)"], fields["REASON (CODE)"]) == ("SYN_SENT (SYN|ACK)", "NETFILTER_DROP (12)")
    # Dropped in nft_do_chain: the first frame past the tracing machinery (the duplicated
    # __traceiter_kfree_skb) and the drop API (sk_skb_reason_drop).
    assert stack["top"] == "nft_do_chain"
    assert stack["frames"][:2] == ("__traceiter_kfree_skb", "__traceiter_kfree_skb")
    assert {"el1h_64_irq", "virtnet_poll"} <= set(stack["frames"]) and stack["depth"] == 31
    frames = paste[0].related["frames"]
    assert frames.loc[frames["symbol"] == "nft_do_chain", "offset"].tolist() == [0x93C]


@check("bpftrace_kstack_01.txt")
def _bpftrace_recvmsg(paste: DecodedPaste) -> None:
    table = only(paste, "kernel-stacks")
    assert table["top"].tolist() == ["tcp_bpf_recvmsg", "tcp_bpf_recvmsg", "tcp_recvmsg"]
    assert set(table["source"]) == {"bpftrace"} and set(table["depth"]) == {6}
    frames = paste[0].related["frames"]
    # Offsets are decimal in bpftrace's kstack: inet_recvmsg+233 is 233, not 0x233.
    assert frames[(frames["stack"] == 1) & (frames["function"] == "inet_recvmsg")]["offset"].tolist() == [233]
    assert frames[(frames["stack"] == 3) & (frames["function"] == "inet_recvmsg")]["offset"].tolist() == [78]


@check("bpftrace_kstack_02.txt")
def _bpftrace_psock_drop(paste: DecodedPaste) -> None:
    assert [d.kind for d in paste] == ["kernel-stacks"] * 2
    ok, failed = (d.table.iloc[0] for d in paste)
    assert ok["frames"][:3] == ("sk_psock_drop", "sock_map_remove_links", "sock_map_close")
    # The failed case: sk_psock_drop <- sock_hash_update_common <- bpf_sock_hash_update <-
    # the sockops program <- _cgroup_bpf_run_filter_sock_ops <- tcp_init_transfer.
    assert failed["frames"][:6] == (
        "sk_psock_drop",
        "sock_hash_update_common",
        "bpf_sock_hash_update",
        "bpf_prog_7aa9a870410635af_bpf_sockmap",
        "_cgroup_bpf_run_filter_sock_ops",
        "tcp_init_transfer",
    )
    assert failed["elided"] and not ok["elided"]  # the author's "..."
    assert "0xffffffffacc65800" in failed["context"]
    assert any("0xffffffffac257300" in n for n in paste[1].notes)  # sk_prot replaced, after the stack


@check("ftrace_kprobe_stacktrace_01.txt")
def _ftrace_vxlan(paste: DecodedPaste) -> None:
    (stack,) = only(paste, "kernel-stacks").to_dict("records")
    assert (stack["task"], stack["cpu"], stack["flags"], stack["time"], stack["event"]) == (
        "<idle>",
        12,
        "d.s.",
        9005615.748751,
        "vxlan_udp_encap_recv",
    )
    path = ["__udp4_lib_rcv", "udp_rcv", "ip_local_deliver", "ip_rcv", "__netif_receive_skb_core",
            "netif_receive_skb", "napi_gro_receive", "ixgbe_poll"]  # fmt: skip
    frames = list(stack["frames"])
    assert [frames.index(f) for f in path] == sorted(frames.index(f) for f in path)  # innermost first
    assert stack["top"] == "__udp4_lib_rcv" and stack["depth"] == 24


@check("ftrace_kprobe_stacktrace_02.txt")
def _ftrace_put_net(paste: DecodedPaste) -> None:
    (stack,) = only(paste, "kernel-stacks").to_dict("records")
    assert (stack["cpu"], stack["flags"], stack["event"]) == (13, "dNs.", "__put_net")
    assert stack["frames"][:4] == ("sk_free", "tcp_write_timer", "call_timer_fn", "run_timer_softirq")


@check("trace_cmd_function_graph_01.txt")
def _function_graph(paste: DecodedPaste) -> None:
    table = only(paste, "trace-events")
    assert set(table["cpu"]) == {22} and "trace-cmd: cpus=64" in paste[0].notes
    assert rows(table, "graph", "function", "depth", "duration_us") == [
        ("leaf", "update_acpu.constprop.0", 0, 2.441),
        ("entry", "switch_mm_irqs_off", 0, None),
        ("leaf", "choose_new_asid", 1, 0.195),
        ("leaf", "load_new_mm_cr3", 1, 0.257),
        ("leaf", "switch_ldt", 1, 0.128),
        ("exit", "switch_mm_irqs_off", 0, 1.378),
    ]


@check("trace_pipe_bpf_printk_01.txt")
def _bpf_printk(paste: DecodedPaste) -> None:
    table = only(paste, "trace-events")
    # NOTE: DECODED calls '0:' "the old (pre-5.x?) prefix". It is the print event's
    # caller address, which bpf_trace_printk passed as 0 ("fake ip") until kernels got the
    # dedicated bpf_trace_printk event (5.9/5.10 era), so 5.0-5.8 print it too.
    assert rows(table, "task", "pid", "cpu", "flags", "event", "body") == [
        ("nc", 13227, 2, "....", "0", "sockmap: op 4, port 50932 --> 1001"),
        ("nc", 13227, 2, "..s1", "0", "sockmap: op 5, port 1001 --> 50932"),
    ]


# --- the tests ----------------------------------------------------------------------------


def test_every_sample_has_a_check() -> None:
    assert sorted(CHECKS) == sorted(p.name for p in SAMPLES.glob("*.txt"))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_sample_decodes_as_published(name: str) -> None:
    CHECKS[name](decode(sample_text(name), **OPTIONS.get(name, {})))


def test_the_sock_ops_grep_fragments_read_the_same_with_the_layout_named() -> None:
    text = sample_text("bpftool_map_dump_cilium_sock_ops_01.txt")
    named = decode(text, layout="sock_ops/G4")[0]
    pd.testing.assert_frame_equal(named.table, decode(text)[0].table)


def test_a_wrong_layout_is_refused_naming_the_sizes() -> None:
    with pytest.raises(DecodeError, match=r"layout 'lb4_services' has key/value sizes .*the dump has 24/12"):
        decode(sample_text("bpftool_map_dump_cilium_ipcache_01.txt"), layout="lb4_services")
