"""Property tests: every layout round-trips, and bad input only ever raises DecodeError."""

from __future__ import annotations

import ipaddress

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab.decoders import (
    decode_struct,
    encode,
    map_layouts,
    parse_map_dump,
    parse_map_dump_json,
    parse_map_dump_text,
)
from netlab.decoders.layout import StructLayout
from netlab.errors import DecodeError

from .conftest import sample_text

STRUCTS = sorted({s.name: s for m in map_layouts() for s in (m.key, m.value)}.values(), key=lambda s: s.name)
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ipv4 = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))
# IPv6 values that would print as IPv4-looking strings (::ffff:a.b.c.d) are still IPv6
# but contain ':' so they stay unambiguous.


@st.composite
def row(draw, layout: StructLayout) -> dict:
    out: dict = {}
    for f in layout.fields:
        if f.kind in ("pad", "ip_union"):
            continue
        if f.kind == "ipv4_be":
            out[f.name] = draw(ipv4)
        elif f.kind == "ipv6":
            out[f.name] = draw(ipv6)
        elif f.kind == "mac":
            out[f.name] = ":".join(f"{b:02x}" for b in draw(st.binary(min_size=6, max_size=6)))
        elif f.enum is not None:
            code = draw(st.integers(0, 255))
            out[f.name] = f.enum.get(code, str(code))
        else:
            bits = 16 if f.kind == "be16_in_u32" else 8 * f.size
            out[f.name] = draw(st.integers(0, 2**bits - 1))
    for f in layout.fields:
        if f.kind == "ip_union":
            family = layout.field(f.family_field)
            is_v4 = out[f.family_field] == family.enum.get(f.ipv4_family)
            out[f.name] = draw(ipv4 if is_v4 else ipv6)
    return out


@pytest.mark.parametrize("layout", STRUCTS, ids=lambda s: s.name)
@FAST
@given(data=st.data())
def test_rows_round_trip(layout, data):
    rows = data.draw(st.lists(row(layout), min_size=1, max_size=5))
    raw = encode(layout, rows)
    assert len(raw) == layout.size * len(rows)
    decoded = decode_struct(layout, raw)
    expected = pd.DataFrame(rows)[layout.columns]
    assert decoded.astype(object).values.tolist() == expected.astype(object).values.tolist()
    assert encode(layout, decoded) == raw


@pytest.mark.parametrize("layout", STRUCTS, ids=lambda s: s.name)
@FAST
@given(data=st.data())
def test_the_standard_library_packer_agrees_with_encode(layout, data):
    # StructLayout.pack is what the lab uses on nodes without numpy (netlab.ship).
    one = data.draw(row(layout))
    assert layout.pack(one) == encode(layout, [one])


@pytest.mark.parametrize("layout", STRUCTS, ids=lambda s: s.name)
@FAST
@given(data=st.data())
def test_random_bytes_decode_or_name_the_problem(layout, data):
    raw = data.draw(st.binary(max_size=3 * layout.size + 1))
    try:
        frame = decode_struct(layout, raw)
    except DecodeError as e:
        assert layout.name in str(e)
        return
    assert len(frame) * layout.size == len(raw)


junk_lines = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.sampled_from(
            [
                "key:",
                "value:",
                "--",
                "...",
                "Found 1 elements",
                "key: 01 02",
                "value: 03 04",
                "value (CPU 00): 01",
                "0a 0b",
                "Error: x",
                "$ bpftool map dump id 1",
                "[",
                "{",
                '[{"key": ["0x01"], "value": ["0x02"]}]',
                '{"key": 1}',
                "<no entry>",
            ]
        ),
    ),
    max_size=12,
)


@FAST
@given(lines=junk_lines, key_size=st.one_of(st.none(), st.integers(1, 4)))
def test_garbage_dumps_only_raise_decode_error(lines, key_size):
    text = "\n".join(lines)
    for parse in (parse_map_dump, parse_map_dump_text, parse_map_dump_json):
        try:
            entries = parse(text, key_size=key_size)
        except DecodeError as e:
            assert "line" in str(e) or "entry" in str(e), str(e)
            continue
        for entry in entries:
            assert isinstance(entry.key, bytes)


SAMPLE_DUMPS = [
    ("bpftool_map_dump_lb4_services_01.txt", None),
    ("bpftool_map_dump_cilium_ipcache_01.txt", None),
    ("bpftool_map_dump_cilium_sock_ops_01.txt", 44),
    ("bpftool_map_dump_json_sockhash_03.txt", None),
    ("bpftool_map_lookup_cilium_ipcache_lxc_02.txt", None),
]


@pytest.mark.parametrize(("name", "key_size"), SAMPLE_DUMPS)
@FAST
@given(data=st.data())
def test_truncated_samples_parse_or_name_the_line(name, key_size, data):
    text = sample_text(name)
    cut = data.draw(st.integers(0, len(text)))
    try:
        entries = parse_map_dump(text[:cut], key_size=key_size)
    except DecodeError as e:
        assert "line" in str(e) or "entry" in str(e), str(e)
        return
    # Whatever was accepted is a prefix of the full parse, entry for entry, except that
    # the last entry may itself be cut short.
    full = parse_map_dump(text, key_size=key_size)
    assert len(entries) <= len(full)
    for got, want in zip(entries[:-1], full, strict=False):
        assert got.key == want.key


@pytest.mark.parametrize("layout", STRUCTS, ids=lambda s: s.name)
@FAST
@given(data=st.binary(min_size=0, max_size=64))
def test_compact_decode_shows_the_same_table(layout: StructLayout, data: bytes) -> None:
    """A compact decode (IPv4 as integers, enums as categoricals) formatted for display
    is the plain decode, for any bytes."""
    from netlab.decoders.addresses import readable

    seed = data or b"\0"
    blob = (seed * (3 * layout.size // len(seed) + 1))[: 3 * layout.size]
    plain = decode_struct(layout, blob)
    compact = decode_struct(layout, blob, compact=True)
    ipv4 = [f.name for f in layout.fields if f.kind == "ipv4_be"]
    assert compact.attrs["ipv4_columns"] == ipv4
    assert all(str(compact[c].dtype) == "uint32" for c in ipv4)
    shown = readable(compact)
    pd.testing.assert_frame_equal(shown.astype(object), plain.astype(object))
