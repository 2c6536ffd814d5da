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


def _raw(name: str, layout_variant: str, keys: list[dict], values: list[dict]):  # type: ignore[no-untyped-def]
    """A whole map's bytes, as the batch reader hands them to the decoders."""
    from netlab.collectors.bpfmap import MapData
    from netlab.decoders import encode

    table = "lb4_services" if "serv" in name else "lb4_backends"
    layout = map_layout(table, layout_variant)
    k, v = encode(layout.key, keys), encode(layout.value, values)
    return MapData(1, name, layout.key.size, layout.value.size, k, v, len(keys), "test", False)


def test_services_of_several_versions_say_what_differs_and_how_they_were_read() -> None:
    """A v1.14 service map (D) has the sizes of v1.18's (F) and v1.5's (C). Nothing in its
    bytes rules either out: the label names all three, what differs between them and
    which reading was used; the frontend's word reads as the same timeout in D and F."""
    from netlab.decoders import decode_lb_services

    keys = [{"address": "10.96.0.10", "dport": 80, "backend_slot": s} for s in (0, 1)]
    frame = decode_lb_services(_raw("cilium_lb4_serv", "D", keys, [{"backend_id": 3600, "count": 1},
                                                                   {"backend_id": 7, "count": 0}]))  # fmt: skip
    label = frame.attrs["layout"]
    assert label.startswith("lb4_services/F") and "also fit lb4_services/D" in label
    assert "they differ in" in label and "qcount" in label and "read as F" in label
    assert frame.loc[frame["is_frontend"], "affinity_timeout"].tolist() == [3600]


def test_services_bytes_rule_out_a_layout() -> None:
    from netlab.decoders import decode_lb_services

    keys = [{"address": "10.96.0.10", "dport": 80, "backend_slot": s} for s in (0, 1)]
    # v1.18: maglev in the frontend word's top byte, a quarantined slot counted in qcount.
    f = decode_lb_services(_raw("cilium_lb4_serv", "F", keys, [{"backend_id": (2 << 24) | 30, "count": 1, "qcount": 1},
                                                               {"backend_id": 7, "count": 0, "qcount": 0}]))  # fmt: skip
    assert "the bytes say F (not D: its value padding at byte 10 holds data" in f.attrs["layout"]
    assert "also fit" not in f.attrs["layout"]
    assert f.loc[f["is_frontend"], "lb_algorithm"].tolist() == ["maglev"]
    # Without the quarantine count, the frontend word alone rules D out.
    g = decode_lb_services(_raw("cilium_lb4_serv", "F", keys, [{"backend_id": (2 << 24) | 30, "count": 1},
                                                               {"backend_id": 7, "count": 0}]))  # fmt: skip
    assert "too large for an affinity timeout" in g.attrs["layout"]


def test_backends_e_and_f_told_apart_by_the_zone_byte() -> None:
    from netlab.decoders import decode_lb_backends

    rows = [{"backend_id": 1}]
    backend = [{"address": "10.244.1.11", "port": 8080, "proto": 6, "cluster_id": 1, "zone": 3}]
    frame = decode_lb_backends(_raw("cilium_lb4_back", "F", rows, backend))
    assert "the bytes say F (not E: its value padding at byte 9 holds data" in frame.attrs["layout"]
