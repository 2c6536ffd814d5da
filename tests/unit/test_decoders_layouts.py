"""Layout data (layouts/cilium.json) and detection by map name and sizes."""

from __future__ import annotations

import pytest

from netlab.decoders import detect_layout, map_layout, map_layouts, struct_layout
from netlab.errors import DecodeError

# LAYOUTS.md section J: size fingerprints (key B / value B) per table and variant.
FINGERPRINTS = {
    ("lb4_services", "A"): (8, 12),
    ("lb4_services", "B"): (10, 8),
    ("lb4_services", "C"): (12, 12),
    ("lb4_services", "D"): (12, 12),
    ("lb4_services", "F"): (12, 12),
    ("lb6_services", "A"): (20, 24),
    ("lb6_services", "B"): (22, 8),
    ("lb6_services", "C"): (24, 12),
    ("lb6_services", "D"): (24, 12),
    ("lb6_services", "F"): (24, 12),
    ("lb4_backends", "B"): (2, 8),
    ("lb4_backends", "D"): (2, 8),
    ("lb4_backends", "D-v2"): (4, 8),
    ("lb4_backends", "E"): (4, 12),
    ("lb4_backends", "F"): (4, 12),
    ("lb6_backends", "B"): (2, 20),
    ("lb6_backends", "D-v2"): (4, 20),
    ("lb6_backends", "E"): (4, 24),
    ("lb6_backends", "F"): (4, 24),
    ("lb4_reverse_nat", "all"): (2, 6),
    ("sock_ops", "G1"): (20, 4),
    ("sock_ops", "G4"): (44, 4),
    ("sock_ops", "G3"): (44, 4),
}


@pytest.mark.parametrize(("table", "variant"), sorted(FINGERPRINTS))
def test_sizes_match_layouts_md_fingerprints(table, variant):
    m = map_layout(table, variant)
    assert (m.key.size, m.value.size) == FINGERPRINTS[(table, variant)]


def test_every_struct_cites_its_source():
    for m in map_layouts():
        for s in (m.key, m.value):
            assert s.source and s.cilium, s.name


def test_struct_offsets_from_layouts_md():
    key = struct_layout("lb4_key@D")
    assert [(f.name, f.offset, f.size, f.kind) for f in key.fields] == [
        ("address", 0, 4, "ipv4_be"),
        ("dport", 4, 2, "be16"),
        ("backend_slot", 6, 2, "le16"),
        ("proto", 8, 1, "u8"),
        ("scope", 9, 1, "u8"),
        ("pad", 10, 2, "pad"),
    ]
    sock = struct_layout("sock_key@G2")
    assert [(f.name, f.offset) for f in sock.fields if f.kind != "pad"] == [
        ("sip", 0),
        ("dip", 16),
        ("family", 32),
        ("sport", 36),
        ("dport", 40),
    ]
    assert struct_layout("lb4_backend@F").field("cluster_id").kind == "le16"
    assert struct_layout("lb4_backend@E").field("cluster_id").kind == "u8"


def test_truncated_name_picks_by_size_newest_first():
    # The kernel shows cilium_lb4_services_v2 as cilium_lb4_serv (case 003).
    found = detect_layout("cilium_lb4_serv", 12, 12)
    assert [m.variant for m in found] == ["F", "D", "C"]
    assert [m.variant for m in detect_layout("cilium_lb4_serv", 8, 12)] == ["A"]
    assert [m.variant for m in detect_layout("cilium_lb4_back", 4, 12)] == ["F", "E"]
    assert [m.variant for m in detect_layout("cilium_lb4_back", 4, 8)] == ["D-v2"]
    assert [m.variant for m in detect_layout("cilium_lb4_back", 2, 8)] == ["D", "B"]
    assert detect_layout("cilium_lb4_reve", 2, 6)[0].table == "lb4_reverse_nat"


def test_full_names_pin_paths_and_unnamed_maps():
    assert detect_layout("/sys/fs/bpf/tc/globals/cilium_lb4_services_v2", 12, 12)[0].variant == "F"
    assert detect_layout("cilium_lb4_backends", 2, 8)[0].variant == "D"
    assert detect_layout("cilium_sock_ops", 44, 4)[0].variant == "G4"
    # tkng's map list has no names at all: sizes decide.
    assert {m.table for m in detect_layout(None, 44, 4)} == {"sock_ops"}
    assert detect_layout("", 24, 12)[0].table == "lb6_services"


def test_full_name_must_match_exactly_when_short():
    with pytest.raises(DecodeError, match="cilium_lb4_svc"):
        detect_layout("cilium_lb4_svc", 12, 12)


def test_nothing_fits_names_map_and_sizes():
    with pytest.raises(DecodeError) as e:
        detect_layout("cilium_lb4_serv", 16, 12)
    assert "cilium_lb4_serv" in str(e.value) and "16" in str(e.value)
    assert "12/12" in str(e.value)  # tells which sizes would have fitted
    with pytest.raises(DecodeError, match="key 3 B, value 5 B"):
        detect_layout(None, 3, 5)
