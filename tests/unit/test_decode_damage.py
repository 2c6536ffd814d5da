"""Damaged pastes: the good rows come through, each damaged line is a warning naming it,
and what would give a wrong value (a width that contradicts the others) is an error."""

from __future__ import annotations

import pytest

from netlab.cli import main as cli
from netlab.collectors import conntrack, iptables, rt6, ss
from netlab.decoders import decode, parse_map_dump
from netlab.decoders.damage import Damage
from netlab.decoders.stacks import base_function, is_tracing_frame, parse_stacks, top_frame
from netlab.errors import DecodeError
from netlab.probes.drops import parse_trace

from .conftest import sample_text


def lines_of(name: str) -> list[str]:
    return sample_text(name).splitlines()


# --- bpftool map dumps --------------------------------------------------------------------


def test_a_cut_line_in_a_dump_loses_only_its_entry() -> None:
    text = lines_of("bpftool_map_dump_lb4_services_01.txt")
    text[2] = "key: 0a 60 20 1c 00 5"  # the paste lost the rest of line 3
    (block,) = decode("\n".join(text))
    assert sorted(block.table["backend_slot"]) == [1, 2, 3]
    assert block.warnings == ["line 3: key bytes are not hex: '0a 60 20 1c 00 5'"]


def test_a_dump_cut_by_head_keeps_the_whole_entries_before_the_cut() -> None:
    text = lines_of("bpftool_map_lookup_cilium_ipcache_lxc_02.txt")
    # Both lookups as one dump cut inside the second value (as `| head -n 12` would).
    entry = text[7:14]  # key:, two lines of key, value:, three lines of value
    dump = ["$ bpftool map dump pinned /sys/fs/bpf/tc/globals/cilium_lxc", *entry, *entry[:5]]
    (block,) = decode("\n".join(dump))
    assert block.table["ifindex"].tolist() == [11]
    assert block.warnings == ["line 9: the last entry is cut short (the output ends there); dropped"]


def test_a_lost_key_line_does_not_glue_two_entries_together() -> None:
    text = lines_of("bpftool_map_lookup_cilium_ipcache_lxc_02.txt")
    entry = text[7:14]
    dump = ["$ bpftool map dump pinned /sys/fs/bpf/tc/globals/cilium_lxc", *entry, *entry[1:], *entry]
    (block,) = decode("\n".join(dump))
    # The middle entry lost its "key:" line, so the first entry's value ran into its key:
    # neither can be told apart any more; the entry after them is whole.
    assert len(block.table) == 1
    assert block.warnings == [
        "line 11: a second 'value:' for the entry at line 2 (a 'key:' line lost?); dropped"
    ]


def test_an_elided_last_entry_does_not_lose_the_complete_ones() -> None:
    text = "key: 01 00  value: 0a 00 00 1b 00 50 00 00\nkey: 02 00\n...\n"
    (block,) = decode(text, layout="lb4_backends/D")
    assert block.table["backend_id"].tolist() == [1]
    assert block.warnings == ["line 2: entry has a key but no 'value:' (the output ends there: cut by head?)"]


def test_a_key_whose_width_contradicts_the_others_is_an_error() -> None:
    text = lines_of("bpftool_map_dump_lb4_services_02.txt")
    text[2] = text[2].replace("00 00 00 00  value", "00 00 00  value")  # a key byte lost mid-line
    with pytest.raises(DecodeError, match=r"line 3: key has 11 bytes but the entry at line 2 has 12"):
        decode("\n".join(text))


def test_a_sentence_after_a_dump_is_a_warning_not_the_end() -> None:
    text = (
        sample_text("bpftool_map_lookup_lb4_backends_01.txt")
        + "So backend 10 is 10.0.0.27:80, as expected.\n"
    )
    (block,) = decode(text)
    assert block.table["backend"].tolist() == ["10.0.0.27:80"]
    assert block.warnings[0].startswith("line 3: not bpftool map output")


def test_a_count_that_does_not_add_up_is_a_warning() -> None:
    (block,) = decode("key: 01  value: 02\nkey: 02  value: 02\nFound 3 elements\n")
    assert len(block.table) == 2 and block.warnings == ["line 3: bpftool says 3 elements but 2 were parsed"]


def test_only_damaged_lines_is_an_error_naming_what_was_expected() -> None:
    with pytest.raises(DecodeError, match=r"line 2: no bpftool map entries here"):
        decode("$ bpftool map dump id 5\nkey: zz zz  value: 01\n")


# --- netfilter ----------------------------------------------------------------------------

CONNTRACK = """\
tcp      6 115 TIME_WAIT src=10.244.1.11 dst=192.168.50.2 sport=48296 dport=9418 src=192.168.50.2 dst=10.244.1.11 sport=9418 dport=48296 [ASSURED] mark=3 zone=7 use=1
6 46 TIME_WAIT src=10.244.1.11 dst=192.168.50.2 sport=48282 dport=9418 src=192.168.50.2 dst=10.244.1.11 sport=9418 dport=48282 [ASSURED] mark=0 use=1
cp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 use=1
 TIME_WAIT src=10.244.1.11 dst=192.168.50.2 sport=48200 dport=9418
udp      17 29 src=10.0.0.1 dst=10.0.0.53 sport=5353 dport=53 [UNREPLIED] src=10.0.0.53 dst=10.0.0.1 sport=53 dport=5353 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.
"""


def test_conntrack_cut_line_starts_summary_and_extra_fields() -> None:
    (block,) = decode(CONNTRACK)
    table = block.table
    assert table["proto"].tolist() == ["tcp", "tcp", "tcp", "udp"]  # not "6", not "cp"
    assert table["timeout"].tolist() == [115, 46, 431999, 29]
    assert (
        table["mark"].tolist() == [3, 0, 0, 0]
        and table["zone"].iloc[0] == 7
        and table["use"].tolist() == [1] * 4
    )
    assert block.warnings == [
        "conntrack line 2: starts with '6 46': its beginning was cut; read as tcp (6)",
        "conntrack line 3: starts with 'cp 6 431999': its beginning was cut; read as tcp (6)",
        "conntrack line 4: 'TIME_WAIT src=10.244.1.11 dst=192.168.50.2 sport=48200 dport' does not "
        "start with 'PROTO NUMBER [TIMEOUT]'",
        "conntrack line 6: the tool showed 5 entries, 4 were read",
    ]


def test_conntrack_live_output_stays_strict() -> None:
    with pytest.raises(DecodeError, match="conntrack line 1: starts with '6 46'"):
        conntrack.parse("6 46 TIME_WAIT src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2\n")
    with pytest.raises(DecodeError, match="conntrack line 1: protocol tcp is number 6, not 17"):
        conntrack.parse("tcp 17 46 TIME_WAIT src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2\n")


def test_iptables_fragment_without_its_table_and_policy_counters() -> None:
    text = "\n".join(
        [
            "iptables-save -c | grep -B2 REJECT:",
            ":OUTPUT ACCEPT [30:1800]",
            "[53:9070] -A OUTPUT -j FOO",
            "--",
            "[1:60] -A FOO -d 1.2.3.4/32 -j REJECT --reject-with icmp-port-unreachable",
            "this line is garbage",
        ]
    )
    (block,) = decode(text)
    assert block.kind == "iptables-save"
    assert block.table[["table", "chain", "position", "packets", "target"]].values.tolist() == [
        ["", "OUTPUT", 1, 53, "FOO"],
        ["", "FOO", 1, 1, "REJECT"],
    ]
    policy = block.related["chain policies"].iloc[0].tolist()
    assert policy == ["", "OUTPUT", "ACCEPT", 30, 1800]
    assert block.warnings == [
        "iptables-save line 2: rules without their *table line: table unknown",
        "iptables-save line 6: expected '[pkts:bytes] -A CHAIN ...', got 'this line is garbage'",
    ]


def test_iptables_live_output_stays_strict() -> None:
    with pytest.raises(DecodeError, match="iptables-save line 1: .* is outside a"):
        iptables.parse_save("-A FORWARD -j ACCEPT")
    rules = iptables.parse_save("*filter\n:FORWARD DROP [7:420]\nCOMMIT\n")
    assert rules.attrs["policies"] == [iptables.ChainPolicy("filter", "FORWARD", "DROP", 7, 420)]


# --- ss, rt6_stats ------------------------------------------------------------------------


def test_ss_garbled_socket_line_takes_its_details_with_it() -> None:
    text = lines_of("ss_i_01.txt")
    text[1] = "tcp    ESTAB      0         0         NODE_IP:5050"  # the peer column was lost
    damage = Damage(tolerate=True)
    frame = ss.parse("\n".join(text), damage=damage)
    assert frame["local_port"].tolist() == [50504, 57424, 57424]
    assert damage.warnings == [
        "ss line 2: 'tcp    ESTAB      0         0         NODE_IP:5050' does not start with a TCP state",
        "ss line 3: details before any socket line",
    ]


def test_rt6_stats_inside_prose_and_a_reading_missing_a_column() -> None:
    text = (
        "Before the flood `cat /proc/net/rt6_stats` gave 0019 000e 00e0 0015 00c8 00c8 0000,\n"
        "after it 0019 000e 00e0 0015 0000 1f40 0000 (dst_entries way over max_size).\n"
        "A later reading was cut: 0019 000e 00e0 0015 1f40 0000\n"
    )
    (block,) = decode(text)
    assert block.kind == "rt6-stats"
    assert block.table[["line", "dst_entries"]].values.tolist() == [[1, 200], [2, 8000]]
    assert block.warnings == ["rt6_stats line 3: 6 hex columns, rt6_stats has 7"]
    with pytest.raises(DecodeError, match="rt6_stats line 1: 6 hex columns"):
        rt6.find_rt6_stats("0019 000e 00e0 0015 1f40 0000")


# --- kernel stacks and the drop trace -------------------------------------------------------


def test_a_damaged_frame_inside_a_stack_is_skipped_alone() -> None:
    text = lines_of("bpftrace_kstack_01.txt")
    text[2] = "        inet_recvm"  # cut mid-symbol, no offset
    (block,) = decode("\n".join(text))
    first = block.table.iloc[0]
    assert first["frames"] == ("tcp_bpf_recvmsg", "__sys_recvfrom", "__x64_sys_recvfrom", "do_syscall_64",
                               "entry_SYSCALL_64_after_hwframe")  # fmt: skip
    assert len(block.table) == 3
    assert block.warnings == ["stack line 3: 'inet_recvm' is not a frame, inside the stack at line 2"]


PERF_SCRIPT = """\
swapper     0 [001] 12345.678901: skb:kfree_skb: skbaddr=0xffff888003a1b200 protocol=2048 location=0xffffffff81b2c3d4 reason: NETFILTER_DROP
\tffffffff81a2b3c4 kfree_skb_reason+0x94 ([kernel.kallsyms])
\tffffffff81a2b3c4 kfree_skb_reason+0x94 ([kernel.kallsyms])
\tffffffffc0a1b2c3 nft_do_chain+0x3bc ([nf_tables])
\tffffffff81b00000 nf_hook_slow.isra.0+0x44 ([kernel.kallsyms])
\tffffffff81b10000 ip_forward+0x1a2 ([kernel.kallsyms])

curl  4242/4242 [000] 12345.700000: skb:kfree_skb: skbaddr=0xffff888003a1b300 protocol=2048 location=0xffffffff81b2c3d4 reason: NO_SOCKET
\tffffffff81a2b3c4 kfree_skb_reason+0x94 ([kernel.kallsyms])
\tffffffff81c00000 tcp_v4_rcv.part.0+0x1c ([kernel.kallsyms])
"""

BPFTRACE_MAP = """\
Attaching 1 probe...
^C

@[
    kfree_skb_reason+1
    sk_skb_reason_drop.cold+9
    tcp_v4_rcv+2491
    ip_protocol_deliver_rcu+62
]: 7
@[
    kfree_skb_reason+1
    nft_do_chain+956
]: 3
"""


def test_perf_script_stacks() -> None:
    parsed = parse_stacks(PERF_SCRIPT)
    table = parsed.stacks
    assert table["source"].tolist() == ["perf", "perf"]
    assert table[["task", "pid", "cpu", "event"]].values.tolist() == [
        ["swapper", 0, 1, "skb:kfree_skb"],
        ["curl", 4242, 0, "skb:kfree_skb"],
    ]
    assert table["top"].tolist() == ["nft_do_chain", "tcp_v4_rcv"]
    assert parsed.frames.loc[parsed.frames["function"] == "nft_do_chain", "module"].tolist() == ["nf_tables"]


def test_bpftrace_map_of_kstacks_keeps_the_counts() -> None:
    (block,) = decode(BPFTRACE_MAP)
    assert block.table[["top", "count"]].values.tolist() == [["tcp_v4_rcv", 7], ["nft_do_chain", 3]]


def test_clone_suffixes_and_tracing_frames() -> None:
    assert base_function("nf_hook_slow.isra.0+0x9c/0x110") == "nf_hook_slow"
    assert base_function("tcp_v4_rcv.part.0.cold") == "tcp_v4_rcv"
    assert is_tracing_frame("__traceiter_kfree_skb") and is_tracing_frame("kfree_skb_reason.part.0")
    assert is_tracing_frame("sk_skb_reason_drop.cold") and not is_tracing_frame("bpf_prog_7aa9a870410635af_x")
    assert (
        top_frame(["trace_event_raw_event_kfree_skb", "kfree_skb_list_reason.isra.0", "ip_rcv"]) == "ip_rcv"
    )


def test_drop_trace_names_the_function_when_the_location_is_a_hashed_pointer() -> None:
    trace = (
        "  <idle>-0  [001] ..s2.  1234.5678: kfree_skb: skbaddr=000000001234 protocol=2048 "
        "location=00000000db8dd81c reason: NETFILTER_DROP\n"
        "  <idle>-0  [001] ..s2.  1234.5679: <stack trace>\n"
        " => trace_event_raw_event_kfree_skb\n"
        " => kfree_skb_reason.part.0\n"
        " => sk_skb_reason_drop.cold\n"
        " => nf_hook_slow.isra.0+0x9c/0x110\n"
        " => ip_forward\n"
    )
    (event,) = parse_trace(trace).to_dict("records")
    assert event["location"] == "00000000db8dd81c"
    assert event["function"] == "nf_hook_slow" and event["stack"] == "nf_hook_slow <- ip_forward"


# --- the command ----------------------------------------------------------------------------


def test_cli_decodes_a_file_and_prints_json(tmp_path, capsys) -> None:
    import json

    paste = tmp_path / "ticket.txt"
    paste.write_text("> " + sample_text("bpftool_map_lookup_lb4_services_03.txt").replace("\n", "\n> "))
    assert cli(["decode", str(paste), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (block,) = out["blocks"]
    assert block["kind"] == "bpftool-map-dump" and block["rows"][0]["frontend"] == "172.18.0.6:30171"
    assert cli(["decode", str(paste)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("== line 2: bpftool-map-dump, 1 row") and "nodeport|routable" in text


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    assert cli(["decode", str(tmp_path / "missing.txt")]) == 2
    assert capsys.readouterr().err.startswith("netlab: cannot read")
    paste = tmp_path / "prose.txt"
    paste.write_text("nothing to see here\n")
    assert cli(["decode", str(paste), "--kind", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netlab: no kind 'nope'") and err.count("\n") == 1


def test_parsers_called_directly_never_return_nothing_from_text() -> None:
    with pytest.raises(DecodeError, match="line 2: no kernel stack frames here"):
        parse_stacks("\nAttaching 1 probe...\n")
    with pytest.raises(DecodeError, match="rt6_stats: no reading"):
        rt6.find_rt6_stats("the route cache looked fine\n")
    with pytest.raises(DecodeError, match="line 1: not bpftool map output"):
        parse_map_dump("> key: 01  value: 02\n")  # once zero entries; quoting is the paste decoder's job
