"""Cilium views on published dumps (samples' DECODED headers) and on cases 000 and 003."""

from __future__ import annotations

import pytest

from netlab.decoders import (
    MapEntry,
    bpftool_key_hex,
    decode_entries,
    decode_lb_backends,
    decode_lb_services,
    decode_sockmap,
    encode,
    hex_to_port,
    hex_to_ports,
    ip_to_hex,
    lb_service_table,
    map_layout,
    parse_map_dump,
    sockmap_entries_per_ip,
)
from netlab.errors import DecodeError

from .conftest import sample_text


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def by_slot(frame):
    return frame.set_index("backend_slot").sort_index()


def test_clusterip_service_slots():
    svc = decode_lb_services(parse_map_dump(sample_text("bpftool_map_dump_lb4_services_01.txt")))
    rows = by_slot(svc)
    front = rows.loc[0]
    assert front["frontend"] == "10.96.32.28:80" and front["is_frontend"]
    assert (front["count"], front["rev_nat_index"], front["proto"], front["scope"]) == (3, 7, 0, 0)
    assert front["flags"] == 0 and front["flags2"] == 0
    assert rows.loc[[1, 2, 3], "backend_id"].tolist() == [9, 10, 11]
    assert set(rows["rev_nat_index"]) == {7}


def test_loadbalancer_and_nodeport_flags():
    svc = by_slot(decode_lb_services(parse_map_dump(sample_text("bpftool_map_dump_lb4_services_02.txt"))))
    assert svc.loc[0, "frontend"] == "198.51.100.0:80"
    assert svc.loc[0, "flags"] == 0x60 and svc.loc[0, "flag_names"] == "loadbalancer|routable"
    assert svc.loc[[1, 2, 3], "backend_id"].tolist() == [7, 8, 9]
    assert svc.loc[0, "count"] == 3 and set(svc["rev_nat_index"]) == {8}
    (np_front,) = decode_lb_services(
        parse_map_dump(sample_text("bpftool_map_lookup_lb4_services_03.txt"))
    ).itertuples()
    assert np_front.frontend == "172.18.0.6:30171" and np_front.count == 3
    assert np_front.flag_names == "nodeport|routable" and np_front.rev_nat_index == 8


def test_backend_lookup_and_join_with_its_service():
    entries = parse_map_dump(sample_text("bpftool_map_lookup_lb4_backends_01.txt"))
    backends = decode_lb_backends(entries, map_name="cilium_lb4_backends")
    (b,) = backends.itertuples()
    assert (b.backend_id, b.backend, b.proto, b.state) == (10, "10.0.0.27:80", 0, "active")
    services = decode_lb_services(parse_map_dump(sample_text("bpftool_map_dump_lb4_services_01.txt")))
    table = lb_service_table(services, backends)
    assert table["backend_slot"].tolist() == [1, 2, 3]
    assert table["backend"].tolist() == [None, "10.0.0.27:80", None]
    assert table["backend_missing"].tolist() == [True, False, True]  # only ID 10 was looked up
    assert table["in_count"].all()


# Case 003: the service map and backend map lines quoted in the write-up (Cilium >= v1.14,
# cilium_lb4_backends_v3, proto 6 written into the key).
CASE_003_SERVICES = """
key: ac 11 5d 04 46 50 00 00 06 00 00 00 value: 00 00 00 01 01 00 01 97 00 00 00 00
key: ac 11 5d 04 46 50 01 00 06 00 00 00 value: e3 03 00 00 00 00 01 97 00 00 00 00
key: ac 11 5d 04 1f 90 00 00 06 00 00 00 value: 00 00 00 01 01 00 01 98 00 00 00 00
key: ac 11 5d 04 1f 90 01 00 06 00 00 00 value: e4 03 00 00 00 00 01 98 00 00 00 00
"""
CASE_003_BACKENDS = "key: e3 03 00 00 value: ac 10 6d 7f 46 50 06 00 00 00 00 00\n"


def test_case_003_service_to_backend():
    services = decode_lb_services(parse_map_dump(CASE_003_SERVICES), map_name="cilium_lb4_serv")
    assert services.attrs["layout"].startswith("lb4_services/F")
    fronts = services[services["is_frontend"]].set_index("frontend")
    assert fronts.loc["172.17.93.4:18000", "rev_nat_index"] == 407  # 01 97, network order
    assert fronts.loc["172.17.93.4:8080", "rev_nat_index"] == 408
    assert set(fronts["count"]) == {1} and set(fronts["proto"]) == {6}
    # 00 00 00 01 little-endian = 1 << 24: LB algorithm 1 (random), affinity timeout 0.
    assert set(fronts["lb_algorithm"]) == {"random"} and set(fronts["affinity_timeout"]) == {0}
    backends = decode_lb_backends(parse_map_dump(CASE_003_BACKENDS), map_name="cilium_lb4_back")
    (b,) = backends.itertuples()
    assert (b.backend_id, b.address, b.port, b.proto, b.cluster_id) == (
        995,
        "172.16.109.127",
        18000,
        6,
        0,
    )
    table = lb_service_table(services, backends).set_index("frontend")
    assert table.loc["172.17.93.4:18000", "backend"] == "172.16.109.127:18000"
    assert table.loc["172.17.93.4:8080", "backend_id"] == 996
    assert table.loc["172.17.93.4:8080", "backend_missing"]  # not quoted in the write-up


def test_v14_and_v18_backends_differ_only_past_cluster_255():
    e, f = map_layout("lb4_backends", "E").value, map_layout("lb4_backends", "F").value
    raw = h("ac 10 6d 7f 46 50 06 00 01 01 00 00")
    assert decode_entries(e, None, raw)["cluster_id"].tolist() == [1]
    assert decode_entries(f, None, raw)["cluster_id"].tolist() == [257]


def test_sockmap_sample_and_case_000_keys():
    # The same two entries appear in the sample and in case 000's post.
    entries = parse_map_dump(sample_text("bpftool_map_dump_cilium_sock_ops_01.txt"), key_size=44)
    sm = decode_sockmap(entries)
    a, b = sm.itertuples()
    assert (a.sip, a.sport, a.dip, a.dport, a.family) == (
        "10.10.134.48",
        8080,
        "10.10.101.249",
        56184,
        "ipv4",
    )
    assert (b.sip, b.sport, b.dip, b.dport) == ("10.10.101.249", 56184, "10.10.134.48", 8080)
    assert sm["cookie"].isna().all()  # 4-byte sockhash values are not readable
    per_ip = sockmap_entries_per_ip(sm).set_index("ip")
    assert per_ip.loc["10.10.134.48"].tolist() == [2, 1, 1]
    assert ip_to_hex("10.10.134.48") == "0a 0a 86 30" and ip_to_hex("10.10.101.249") == "0a 0a 65 f9"
    assert hex_to_ports("1f 90 00 00  b6 8a 00 00") == [8080, 46730]  # the post's hex2port
    assert hex_to_port("db 78 00 00") == 56184 and hex_to_port("00 50") == 80
    assert bpftool_key_hex(a.key).startswith("key hex 0a 0a 86 30 00 00")
    assert len(bpftool_key_hex(a.key).split()) == 2 + 44


def test_sockmap_counts_stale_entries_per_node_ip():
    layout = map_layout("sock_ops", "cookie")
    rows = {
        "sip": ["10.10.134.48"] * 3 + ["10.10.140.202"],
        "dip": ["10.10.101.249", "10.10.101.249", "10.10.134.48", "10.10.101.249"],
        "family": ["ipv4"] * 4,
        "sport": [8080, 8080, 1, 2],
        "dport": [1, 2, 8080, 8080],
    }
    keys = encode(layout.key, rows)
    entries = [MapEntry(keys[i * 44 : (i + 1) * 44], (1000 + i).to_bytes(8, "little")) for i in range(4)]
    sm = decode_sockmap(entries)
    assert sm["cookie"].tolist() == [1000, 1001, 1002, 1003]
    counts = sockmap_entries_per_ip(sm)
    assert counts.iloc[0].tolist() == ["10.10.101.249", 3, 0, 3]
    assert counts.set_index("ip").loc["10.10.134.48", "entries"] == 3  # self-loop counted once


def test_demo_sockhash_json():
    entries = parse_map_dump(sample_text("bpftool_map_dump_json_sockhash_03.txt"))
    sm = decode_sockmap(entries, map_name="sock_ops_map")
    assert sm[["sip", "sport", "dip", "dport"]].values.tolist() == [
        ["127.0.0.1", 1000, "127.0.0.1", 41350],
        ["127.0.0.1", 41350, "127.0.0.1", 1000],
    ]
    assert sm["error"].tolist() == ["Operation not supported"] * 2


def test_ipv6_sock_key_and_service():
    layout = map_layout("sock_ops", "G4")
    raw = encode(
        layout.key,
        [{"sip": "fd00::1", "dip": "fd00::2", "family": "ipv6", "sport": 80, "dport": 5}],
    )
    assert raw[:2] == h("fd 00") and raw[32] == 2 and raw[36:40] == h("00 50 00 00")
    svc = map_layout("lb6_services", "D")
    k = encode(svc.key, [{"address": "fd00::10", "dport": 443, "backend_slot": 0}])
    v = encode(svc.value, [{"count": 2, "rev_nat_index": 3}])
    frame = decode_lb_services([MapEntry(k, v)], layout=svc)
    assert frame["frontend"].tolist() == ["[fd00::10]:443"]


def test_wrong_sizes_name_the_entry():
    svc = map_layout("lb4_services", "D")
    with pytest.raises(DecodeError, match="entry 1 has 11 bytes, expected 12"):
        decode_entries(svc.key, svc.value, [bytes(12), bytes(11)], [bytes(12), bytes(12)])
    with pytest.raises(DecodeError, match="25 bytes"):
        decode_entries(svc.key, None, bytes(25))
    with pytest.raises(DecodeError, match="row 0 field dport"):
        encode(svc.key, [{"address": "10.0.0.1", "dport": 70000}])
    with pytest.raises(DecodeError, match="row 1.*'10.0.0.300'"):
        encode(svc.key, {"address": ["10.0.0.1", "10.0.0.300"]})
    with pytest.raises(DecodeError, match="unknown field"):
        encode(svc.key, [{"adress": "10.0.0.1"}])
