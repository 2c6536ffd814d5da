"""The sockmap iterator's output and the rules that judge each entry by its socket:
pure functions, checked here on hand-made lines and frames (the lab checks them on the
kernel, tests/kernel/test_stuck_tcp.py)."""

from __future__ import annotations

import struct

import pandas as pd
import pytest

from netlab.decoders import map_layout
from netlab.errors import NetlabError
from netlab.investigations.stuck_tcp import join_by_tuple, judge_by_socket, poisoned_ports, port_runs
from netlab.probes import sockmap_sockets, tcp_sockets

NODE, POD = "192.168.50.1", "10.244.1.11"


def _key(sip: str, sport: int, dip: str, dport: int) -> bytes:
    return map_layout("sock_ops", "G4").key.pack(
        {"sip": sip, "sport": sport, "dip": dip, "dport": dport, "family": 1}
    )


def _line(key: bytes, *, state: int = 1, local: str = POD, lport: int = 8080, peer: str = NODE, pport: int = 40120,
          orphan: int = 0, netns: int = 4026532315, handler: int = 0xFFFFFFFF81000000) -> str:  # fmt: skip
    words = [f"{w:x}" for w in struct.unpack(f"<{len(key) // 4}I", key)]
    v4 = [f"{struct.unpack('<I', bytes(int(x) for x in a.split('.')))[0]:x}" for a in (local, peer)]
    return " ".join([*words, "|", "2", str(state), str(lport), str(pport), str(orphan), str(netns), "0",
                     f"{handler:x}", "ffff888105b01280", *v4, *["0"] * 8])  # fmt: skip


def test_iterator_lines_parse_into_keys_and_sockets() -> None:
    key = _key(NODE, 40120, POD, 8080)
    frame = sockmap_sockets.parse(_line(key) + "\n", 11, {0xFFFFFFFF81000000: "tcp_bpf_recvmsg"})
    row = frame.iloc[0]
    assert bytes.fromhex(row["key_hex"]) == key
    assert (row["local"], row["local_port"], row["peer"], row["peer_port"]) == (POD, 8080, NODE, 40120)
    assert (row["state"], row["orphan"], row["netns"], row["handler"]) == (
        "ESTABLISHED",
        False,
        4026532315,
        "tcp_bpf_recvmsg",
    )


def test_a_dual_stack_socket_compares_as_the_ipv4_key_cilium_gave_it() -> None:
    """A Go server on :8080 accepts IPv4 clients as AF_INET6 sockets (::ffff:a.b.c.d);
    Cilium keys them as IPv4, and the entry is live, not "another 5-tuple"."""
    key = _key(NODE, 40120, POD, 8080)
    mapped = [
        f"{w:x}"
        for w in struct.unpack("<4I", bytes(10) + b"\xff\xff" + bytes(int(x) for x in POD.split(".")))
    ]
    peer = [
        f"{w:x}"
        for w in struct.unpack("<4I", bytes(10) + b"\xff\xff" + bytes(int(x) for x in NODE.split(".")))
    ]
    fields = _line(key).split()
    fields[12] = "10"  # AF_INET6
    fields[-8:] = mapped + peer
    frame = sockmap_sockets.parse(" ".join(fields) + "\n", 11)
    assert (frame.iloc[0]["local"], frame.iloc[0]["peer"]) == (POD, NODE)
    assert tcp_sockets.plain_address("::ffff:10.0.0.1") == "10.0.0.1"
    assert tcp_sockets.plain_address("fd00::1") == "fd00::1"


def test_an_entry_the_walk_printed_twice_is_one_entry() -> None:
    line = _line(_key(NODE, 40120, POD, 8080))
    assert len(sockmap_sockets.parse(f"{line}\n{line}\n", 11)) == 1


def test_an_unexpected_iterator_line_names_its_number() -> None:
    with pytest.raises(NetlabError, match="sockmap iterator line 2"):
        sockmap_sockets.parse(_line(_key(NODE, 1, POD, 2)) + "\nnot a line\n", 11)


def _entries(**socket: object) -> pd.DataFrame:
    row = {"sip": NODE, "sport": 40120, "dip": POD, "dport": 8080, "state": "ESTABLISHED", "local": POD,
           "local_port": 8080, "peer": NODE, "peer_port": 40120, "orphan": False, "netns": 7}  # fmt: skip
    return pd.DataFrame([{**row, **socket}])


@pytest.mark.parametrize(
    ("socket", "owners", "status"),
    [
        ({}, {7: {POD}}, "live, matches its key"),
        ({}, {}, "live, matches its key"),  # its namespace not read: nothing claimed
        ({"peer_port": 40999}, {7: {POD}}, "held by a socket of another 5-tuple"),
        ({"state": "CLOSE"}, {7: {POD}}, "socket closed"),
        ({"orphan": True}, {7: {POD}}, "orphaned socket"),
        ({}, {7: {"127.0.0.1"}}, "its namespace no longer has the address"),
        ({}, {7: None}, "its namespace is unreachable"),
    ],
)
def test_each_entry_is_judged_by_its_socket(socket: dict, owners: dict, status: str) -> None:
    judged = judge_by_socket(_entries(**socket), owners, {POD: 9})
    assert judged["status"].iloc[0] == status
    assert bool(judged["stale"].iloc[0]) is (status != "live, matches its key")


def test_poisoned_ports_come_from_stale_keys_of_the_pod() -> None:
    frame = pd.concat(
        [_entries(sport=p) for p in (40120, 40121, 40125)] + [_entries(dport=9090)], ignore_index=True
    )
    judged = frame.assign(stale=[True, True, True, True])
    assert poisoned_ports(judged, POD, 8080) == [40120, 40121, 40125]
    assert poisoned_ports(judged.assign(stale=False), POD, 8080) == []
    assert port_runs([40125, 40120, 40121]) == ["40120-40121", "40125"]


def test_keys_only_entries_are_joined_with_sockets_by_tuple() -> None:
    """No iterator and no cookies: a key's socket is found by its tuple (reversed, as
    Cilium keys it) among every namespace's sock_diag rows. Where the pod's new namespace
    and a deleted one's both hold one, the one without the address is the suspect; a key
    no namespace holds a socket of has no state."""
    entries = pd.DataFrame({"sip": ["192.168.50.1", "192.168.50.1", "192.168.50.1"], "sport": [40120, 40140, 40999],
                            "dip": ["10.244.1.11"] * 3, "dport": [8080] * 3})  # fmt: skip
    old, new, node = 4026532499, 4026532629, 4026531840
    sockets = pd.DataFrame([
        {"state": "ESTAB", "local": "10.244.1.11", "local_port": 8080, "peer": "192.168.50.1", "peer_port": 40120,
         "inode": 5, "netns": new},
        {"state": "ESTAB", "local": "::ffff:10.244.1.11", "local_port": 8080, "peer": "::ffff:192.168.50.1",
         "peer_port": 40120, "inode": 7, "netns": old},
        {"state": "ESTAB", "local": "10.244.1.11", "local_port": 8080, "peer": "192.168.50.1", "peer_port": 40140,
         "inode": 9, "netns": new},
    ])  # fmt: skip
    owners: dict[int, set[str] | None] = {old: {"127.0.0.1"}, new: {"10.244.1.11"}, node: {"192.168.50.1"}}
    joined = join_by_tuple(entries, sockets, owners)
    assert joined["netns"].tolist() == [old, new, 0]
    assert joined["state"].tolist()[:2] == ["ESTABLISHED", "ESTABLISHED"] and joined["state"].iloc[2] is None
    assert joined["local"].iloc[0] == "10.244.1.11"  # the dual-stack socket, as IPv4
    judged = judge_by_socket(joined, owners, {"10.244.1.11": new})
    assert judged["status"].tolist() == ["its namespace no longer has the address", "live, matches its key",
                                         "not verified"]  # fmt: skip
    assert "(netns 4026532629 has it now)" in judged["socket"].iloc[0]
